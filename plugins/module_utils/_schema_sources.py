# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""Where a schema to compare comes from: a live database, a snapshot file, or a migrations folder.

A migrations folder is applied, in node-pg-migrate's order and with node-pg-migrate's ledger rows, to a throwaway
database that is created for the purpose and always dropped afterwards. A folder of ``.sql`` migrations only is applied
by pgshift's ``sql`` engine; a folder with JavaScript or TypeScript migrations is applied by node-pg-migrate itself
(the ``node-pg-migrate`` engine of ``_migrations``, the CLI found through ``node_pg_migrate``), so the schema is the
one node-pg-migrate builds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import typing as t
import uuid

from ansible_collections.pgshift.ops.plugins.module_utils import _ledger, _migration_files, _migrations
from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, connect, db_error
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError
from ansible_collections.pgshift.ops.plugins.module_utils._identity import parse_table_key
from ansible_collections.pgshift.ops.plugins.module_utils._schema import Snapshot, read_snapshot_file, take_snapshot

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # pragma: no cover - depends on the target host
    pass

SCRATCH_PREFIX = "pgshift_scratch_"


@dataclasses.dataclass
class SourceSpec:
    """One side of a comparison: exactly one of ``connection``, ``snapshot_file``, ``migrations_dir``."""

    label: str
    connection: t.Optional[ConnParams] = None
    snapshot_file: t.Optional[str] = None
    migrations_dir: t.Optional[str] = None

    @property
    def kind(self) -> str:
        if self.connection is not None:
            return "database"
        if self.snapshot_file:
            return "snapshot"
        return "migrations"

    def describe(self) -> str:
        if self.connection is not None:
            return self.connection.describe()
        return (
            "snapshot file %s" % self.snapshot_file
            if self.snapshot_file
            else "migrations folder %s" % self.migrations_dir
        )


@dataclasses.dataclass
class Loaded:
    snapshot: Snapshot
    kind: str
    migrations_applied: t.List[str] = dataclasses.field(default_factory=list)
    scratch_database: t.Optional[str] = None


def snapshot_database(params: ConnParams, options: t.Mapping[str, t.Any]) -> Snapshot:
    conn = connect(params)
    try:
        return take_snapshot(conn, **options)
    finally:
        conn.close()


def select_migrations(folder: str, names: t.Optional[t.Sequence[str]]) -> t.List[_migration_files.MigrationFile]:
    """The migrations to apply: all of the folder, or exactly ``names`` (a ledger's list, in its order)."""
    files = _migration_files.list_migrations(folder)
    if names is None:
        chosen = files
    else:
        by_name = {m.name: m for m in files}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise PgShiftError(
                "the ledger lists migration(s) %s that the folder %s does not hold; the folder is not the one this "
                "database was migrated from, or files were removed" % (", ".join(missing), folder),
                missing_migrations=missing,
            )
        chosen = [by_name[n] for n in names]
    return chosen


@contextlib.contextmanager
def throwaway_database(scratch: ConnParams) -> t.Iterator[ConnParams]:
    """Create an empty database on the scratch server, yield its connection parameters, always drop it."""
    name = SCRATCH_PREFIX + uuid.uuid4().hex[:12]
    admin = connect(scratch, autocommit=True)
    try:
        with admin.cursor() as cur:
            try:
                cur.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(sql.Identifier(name))
                )
            except psycopg2.Error as exc:
                raise db_error(exc, "creating the throwaway database %s on %s" % (name, scratch.describe())) from None
        try:
            yield scratch.with_database(name)
        finally:
            with admin.cursor() as cur:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        admin.close()


def apply_migrations(
    params: ConnParams, migrations: t.Sequence[_migration_files.MigrationFile], ledger_schema: str
) -> t.List[str]:
    """Apply SQL migrations as node-pg-migrate does: one transaction each, with its ledger row."""
    conn = connect(params)
    applied: t.List[str] = []
    try:
        with conn.cursor() as cur:
            if ledger_schema != "public":
                cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(ledger_schema)))
            _ledger.ensure_ledger(cur, ledger_schema)
            conn.commit()
            for migration in migrations:
                up_sql, _down = _migration_files.split_sql(migration.read())
                try:
                    if up_sql.strip():
                        cur.execute(up_sql)
                    _ledger.record_up(cur, migration.name, ledger_schema)
                    conn.commit()
                except psycopg2.Error as exc:
                    conn.rollback()
                    raise db_error(
                        exc, "applying migration %s to the throwaway database" % migration.filename
                    ) from None
                applied.append(migration.name)
    finally:
        conn.close()
    return applied


def apply_with_node(
    params: ConnParams,
    folder: str,
    migrations: t.Sequence[_migration_files.MigrationFile],
    ledger_schema: str,
    node_pg_migrate: t.Optional[str],
) -> t.List[str]:
    """Apply the first ``len(migrations)`` migrations of ``folder`` with the node-pg-migrate CLI (JS/TS folders)."""
    files = _migration_files.list_migrations(folder)
    names = [m.name for m in migrations]
    if names != [m.name for m in files[: len(names)]]:
        raise PgShiftError(
            "the ledger's migrations are not the first %d of the folder %s in node-pg-migrate's order, and a folder "
            "with JavaScript or TypeScript migrations is applied by node-pg-migrate, which runs them in that order "
            "only" % (len(names), folder),
            ledger=names,
        )
    if not names:
        return []
    if ledger_schema != "public":
        conn = connect(params)
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(ledger_schema)))
            conn.commit()
        finally:
            conn.close()
    result = _migrations.migrate(
        params,
        folder,
        engine="node-pg-migrate",
        target=names[-1],
        schema=ledger_schema,
        node_pg_migrate=node_pg_migrate,
        lock_timeout=10,
    )
    return [d["name"] for d in result["applied"]]


def snapshot_migrations(
    folder: str,
    scratch: ConnParams,
    options: t.Mapping[str, t.Any],
    names: t.Optional[t.Sequence[str]] = None,
    node_pg_migrate: t.Optional[str] = None,
) -> Loaded:
    migrations = select_migrations(folder, names)
    ledger_schema = str(options.get("ledger_schema", "public"))
    not_sql = [m.filename for m in migrations if m.kind != "sql"]
    if not_sql:
        try:  # before the throwaway database: a missing CLI is an input error
            node_pg_migrate = _migrations.find_node_pg_migrate(node_pg_migrate, folder)
        except PgShiftError as exc:
            raise PgShiftError(
                "%s %s not SQL, so the folder is applied by node-pg-migrate: %s"
                % (", ".join(not_sql), "is" if len(not_sql) == 1 else "are", exc.msg),
                unsupported_migrations=not_sql,
            ) from None
    with throwaway_database(scratch) as params:
        if not_sql:
            applied = apply_with_node(params, folder, migrations, ledger_schema, node_pg_migrate)
        else:
            applied = apply_migrations(params, migrations, ledger_schema)
        snapshot = snapshot_database(params, options)
        database = params.database
    return Loaded(snapshot, "migrations", applied, database)


def load(
    spec: SourceSpec,
    options: t.Mapping[str, t.Any],
    scratch: t.Optional[ConnParams] = None,
    ledger_names: t.Optional[t.Sequence[str]] = None,
    node_pg_migrate: t.Optional[str] = None,
) -> Loaded:
    """Snapshot one side. ``ledger_names`` limits a migrations folder to those migrations (in that order)."""
    if spec.connection is not None:
        return Loaded(snapshot_database(spec.connection, options), "database")
    if spec.snapshot_file:
        return Loaded(read_snapshot_file(spec.snapshot_file), "snapshot")
    if not spec.migrations_dir:
        raise PgShiftError("%s: give a database connection, a snapshot file or a migrations folder" % spec.label)
    if scratch is None:
        raise PgShiftError(
            "%s is a migrations folder: it is applied to a throwaway database, so give a live database on the other "
            "side or the scratch option (a server where pgshift may create and drop a database)" % spec.label
        )
    if not os.path.isdir(spec.migrations_dir):
        raise PgShiftError("migrations folder %s does not exist" % spec.migrations_dir, path=spec.migrations_dir)
    return snapshot_migrations(spec.migrations_dir, scratch, options, ledger_names, node_pg_migrate)


def _unquote(part: str) -> str:
    if len(part) >= 2 and part.startswith('"') and part.endswith('"'):
        return part[1:-1].replace('""', '"')
    return part


def _raw_index(snapshot: Snapshot, plural: str) -> t.Dict[t.Tuple[str, ...], str]:
    from ansible_collections.pgshift.ops.plugins.module_utils._schema_ddl import split_name

    objects = snapshot.get("objects", {}).get(plural, {}) or {}
    return {tuple(_unquote(p) for p in split_name(name)): name for name in objects}


def renames_from_mapping(path: str, source: Snapshot, target: Snapshot) -> t.Dict[str, str]:
    """Renames declared by a data mapping file (``tables.<new>.from``, ``tables.<t>.columns.<new>.from``).

    The file names tables by ``_identity`` keys (``customers``, ``schema.table``, ``"a.b"``; no schema means
    ``public``), read back into (schema, name) and matched against the snapshots' raw names, so quoting never gets in
    the way. A declared rename that neither snapshot shows is left out (the data mapping may describe an older
    release).
    """
    from ansible_collections.pgshift.ops.plugins.module_utils._data import load_mapping

    mapping = load_mapping(path)
    source_tables, target_tables = _raw_index(source, "tables"), _raw_index(target, "tables")
    source_columns, target_columns = _raw_index(source, "columns"), _raw_index(target, "columns")

    def table_parts(name: str) -> t.Tuple[str, ...]:
        return parse_table_key(name)

    renames: t.Dict[str, str] = {}
    for new_name, spec in mapping.tables.items():
        new_table = table_parts(new_name)
        old_table = table_parts(spec["from"]) if spec.get("from") else new_table
        if old_table != new_table and old_table in source_tables and new_table in target_tables:
            renames[source_tables[old_table]] = target_tables[new_table]
        for column, cspec in (spec.get("columns") or {}).items():
            old_column = cspec.get("from")
            if not old_column:
                continue
            old_key = old_table + (str(old_column),)
            new_key = new_table + (str(column),)
            if old_key != new_key and old_key in source_columns and new_key in target_columns:
                renames[source_columns[old_key]] = target_columns[new_key]
    return renames
