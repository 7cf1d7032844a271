# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""Validation of a migrations folder (module migrations_validate).

Static checks (naming, order, parse, dangerous operations) always run. With a cluster to work in, the migrations are
applied from empty in a throwaway database that is created and dropped here, and every migration with a down is run
up -> down -> up, comparing catalog snapshots (not text) after each step.

Schemas are compared as catalog snapshots: the schema area's ``_schema.take_snapshot``/``diff_snapshots`` when that
module is present, else the small ``catalog_snapshot`` here (definitions as the server prints them, ``pg_get_*def``,
``format_type``, keyed by name, so that OIDs and creation order do not matter).
"""

from __future__ import annotations

import contextlib
import os
import time
import typing as t
import uuid

from ansible_collections.pgshift.ops.plugins.module_utils import _migrations, _migrations_lint
from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, connect, db_error
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError
from ansible_collections.pgshift.ops.plugins.module_utils._migration_files import (
    DEFAULT_IGNORE_PATTERN,
    LEDGER_TABLE,
    MigrationFile,
    list_migrations,
)

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # pragma: no cover - connect() reports it
    psycopg2 = None  # type: ignore[assignment]

try:  # the project's catalog snapshot (schema area); the small one below is the fallback
    from ansible_collections.pgshift.ops.plugins.module_utils._schema import (
        diff_snapshots,
        read_snapshot_file,
        take_snapshot,
    )

    HAS_SCHEMA_SNAPSHOT = True
except ImportError:  # pragma: no cover - only when _schema.py is absent
    HAS_SCHEMA_SNAPSHOT = False

LEDGER_TABLES = (
    LEDGER_TABLE,
    LEDGER_TABLE + "_id_seq",
    LEDGER_TABLE + "_pkey",
    _migrations.META_TABLE,
    _migrations.META_TABLE + "_pkey",
)

# category -> query returning (key, definition) rows; ledger tables and extension members are left out
_CATALOG_QUERIES: t.Dict[str, str] = {
    "schemas": (
        "SELECT n.nspname, coalesce(n.nspacl::text, '') FROM pg_namespace n WHERE n.nspname NOT IN "
        "('pg_catalog', 'information_schema', 'pg_toast') AND n.nspname NOT LIKE 'pg_temp_%%' "
        "AND n.nspname NOT LIKE 'pg_toast_temp_%%'"
    ),
    "extensions": (
        "SELECT e.extname, e.extversion || ' in ' || n.nspname FROM pg_extension e "
        "JOIN pg_namespace n ON n.oid = e.extnamespace"
    ),
    "relations": (
        "SELECT n.nspname || '.' || c.relname, c.relkind::text || ' ' || c.relpersistence::text "
        "|| coalesce(' PARTITION ' || pg_get_expr(c.relpartbound, c.oid), '') "
        "|| coalesce(' BY ' || pg_get_partkeydef(c.oid), '') || coalesce(' WITH ' || c.reloptions::text, '') "
        "|| coalesce(' ACL ' || c.relacl::text, '') "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S', 'c') AND c.relname <> ALL(%(ledger)s) AND n.nspname NOT "
        "IN ('pg_catalog', 'information_schema', 'pg_toast') AND n.nspname NOT LIKE 'pg_temp_%%' AND n.nspname NOT "
        "LIKE 'pg_toast_temp_%%'"
    ),
    "columns": (
        "SELECT n.nspname || '.' || c.relname || '.' || a.attname, "
        "(row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum))::text || ' ' || format_type(a.atttypid, "
        "a.atttypmod) "
        "|| CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END "
        "|| coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '') "
        "|| CASE a.attidentity WHEN 'a' THEN ' IDENTITY ALWAYS' WHEN 'd' THEN ' IDENTITY BY DEFAULT' ELSE '' END "
        "|| CASE a.attgenerated WHEN 's' THEN ' GENERATED' ELSE '' END "
        "|| coalesce(' COLLATE ' || co.collname, '') "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> 100 "
        "WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c') "
        "AND c.relname <> ALL(%(ledger)s) AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND "
        "n.nspname NOT LIKE 'pg_temp_%%' AND n.nspname NOT LIKE 'pg_toast_temp_%%'"
    ),
    "constraints": (
        "SELECT n.nspname || '.' || coalesce(c.relname, t.typname) || '.' || k.conname, "
        "pg_get_constraintdef(k.oid) || CASE WHEN k.convalidated THEN '' ELSE ' (not validated)' END "
        "FROM pg_constraint k JOIN pg_namespace n ON n.oid = k.connamespace "
        "LEFT JOIN pg_class c ON c.oid = k.conrelid LEFT JOIN pg_type t ON t.oid = k.contypid "
        "WHERE coalesce(c.relname, '') <> ALL(%(ledger)s) AND n.nspname NOT IN ('pg_catalog', 'information_schema', "
        "'pg_toast') AND n.nspname NOT LIKE 'pg_temp_%%' AND n.nspname NOT LIKE 'pg_toast_temp_%%'"
    ),
    "indexes": (
        "SELECT n.nspname || '.' || c.relname, pg_get_indexdef(c.oid) "
        "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_class tbl ON tbl.oid = i.indrelid WHERE tbl.relname <> ALL(%(ledger)s) AND n.nspname NOT IN "
        "('pg_catalog', 'information_schema', 'pg_toast') AND n.nspname NOT LIKE 'pg_temp_%%' AND n.nspname NOT LIKE "
        "'pg_toast_temp_%%'"
    ),
    "views": (
        "SELECT n.nspname || '.' || c.relname, pg_get_viewdef(c.oid) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('v', 'm') AND n.nspname NOT IN "
        "('pg_catalog', 'information_schema', 'pg_toast') AND n.nspname NOT LIKE 'pg_temp_%%' AND n.nspname NOT LIKE "
        "'pg_toast_temp_%%'"
    ),
    "sequences": (
        "SELECT n.nspname || '.' || c.relname, format_type(s.seqtypid, NULL) || ' ' || s.seqstart || ' ' "
        "|| s.seqincrement || ' ' || s.seqmin || ' ' || s.seqmax || ' ' || s.seqcache || ' ' || s.seqcycle "
        "|| coalesce(' OWNED BY ' || (SELECT dc.relname || '.' || da.attname FROM pg_depend dp "
        "JOIN pg_class dc ON dc.oid = dp.refobjid JOIN pg_attribute da ON da.attrelid = dp.refobjid "
        "AND da.attnum = dp.refobjsubid WHERE dp.objid = c.oid AND dp.classid = 'pg_class'::regclass "
        "AND dp.refclassid = 'pg_class'::regclass AND dp.deptype IN ('a', 'i') LIMIT 1), '') "
        "FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname <> ALL(%(ledger)s) AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') "
        "AND n.nspname NOT LIKE 'pg_temp_%%' AND n.nspname NOT LIKE 'pg_toast_temp_%%'"
    ),
    "functions": (
        "SELECT n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')', "
        "CASE WHEN p.prokind IN ('f', 'p', 'w') THEN pg_get_functiondef(p.oid) ELSE p.prokind::text END "
        "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE NOT EXISTS (SELECT 1 FROM pg_depend dp WHERE dp.objid = p.oid AND dp.deptype = 'e') AND n.nspname NOT "
        "IN ('pg_catalog', 'information_schema', 'pg_toast') AND n.nspname NOT LIKE 'pg_temp_%%' AND n.nspname NOT "
        "LIKE 'pg_toast_temp_%%'"
    ),
    "triggers": (
        "SELECT n.nspname || '.' || c.relname || '.' || g.tgname, pg_get_triggerdef(g.oid) "
        "FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE NOT g.tgisinternal AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND "
        "n.nspname NOT LIKE 'pg_temp_%%' AND n.nspname NOT LIKE 'pg_toast_temp_%%'"
    ),
    "types": (
        "SELECT n.nspname || '.' || t.typname, t.typtype::text || ' ' || CASE t.typtype "
        "WHEN 'e' THEN (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_enum e WHERE "
        "e.enumtypid = t.oid) "
        "WHEN 'd' THEN format_type(t.typbasetype, t.typtypmod) || CASE WHEN t.typnotnull THEN ' NOT NULL' ELSE '' END "
        "|| coalesce(' DEFAULT ' || t.typdefault, '') ELSE '' END "
        "FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
        "WHERE t.typtype IN ('e', 'd', 'r', 'm') "
        "AND NOT EXISTS (SELECT 1 FROM pg_depend dp WHERE dp.objid = t.oid AND dp.deptype = 'e') AND n.nspname NOT "
        "IN ('pg_catalog', 'information_schema', 'pg_toast') AND n.nspname NOT LIKE 'pg_temp_%%' AND n.nspname NOT "
        "LIKE 'pg_toast_temp_%%'"
    ),
    "policies": (
        "SELECT schemaname || '.' || tablename || '.' || policyname, permissive || ' ' || cmd || ' ' || roles::text "
        "|| coalesce(' USING ' || qual, '') || coalesce(' CHECK ' || with_check, '') FROM pg_policies"
    ),
    "rules": (
        "SELECT schemaname || '.' || tablename || '.' || rulename, definition FROM pg_rules "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
    ),
    "comments": (
        "SELECT n.nspname || '.' || c.relname || coalesce('.' || a.attname, ''), d.description FROM pg_description d "
        "JOIN pg_class c ON d.classoid = 'pg_class'::regclass AND d.objoid = c.oid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.objsubid AND d.objsubid > 0 WHERE n.nspname "
        "NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND n.nspname NOT LIKE 'pg_temp_%%' AND n.nspname "
        "NOT LIKE 'pg_toast_temp_%%'"
    ),
}


def catalog_snapshot(cur: t.Any) -> t.Dict[str, t.Dict[str, str]]:
    """The user-visible schema of the database ``cur`` reads, as {category: {name: definition}}."""
    snapshot: t.Dict[str, t.Dict[str, str]] = {}
    for category, query in _CATALOG_QUERIES.items():
        cur.execute(query, {"ledger": list(LEDGER_TABLES)})
        snapshot[category] = {str(k): str(v) for k, v in cur.fetchall()}
    return snapshot


def schema_snapshot(conn: t.Any) -> t.Dict[str, t.Any]:
    """The schema of the database behind ``conn``, ledger tables left out: ``_schema.take_snapshot`` when present."""
    if HAS_SCHEMA_SNAPSHOT:
        return dict(take_snapshot(conn))
    try:
        with conn.cursor() as cur:
            return {"objects": catalog_snapshot(cur)}
    finally:
        conn.rollback()


def compare_snapshots(before: t.Dict[str, t.Any], after: t.Dict[str, t.Any], limit: int = 20) -> t.List[str]:
    """Readable differences between two ``schema_snapshot`` results (empty when equal)."""
    if HAS_SCHEMA_SNAPSHOT and "format" in before and "format" in after:
        out = []
        for d in diff_snapshots(before, after):
            what = "%s %s: %s" % (d["kind"], d["name"], d["change"])
            if d.get("attribute"):
                what += " %s %s -> %s" % (d["attribute"], str(d.get("before"))[:120], str(d.get("after"))[:120])
            out.append(what)
            if len(out) >= limit:
                out.append("... more differences left out")
                break
        return out
    return _compare_catalogs(before["objects"], after["objects"], limit)


def _compare_catalogs(
    before: t.Dict[str, t.Dict[str, str]], after: t.Dict[str, t.Dict[str, str]], limit: int = 20
) -> t.List[str]:
    out: t.List[str] = []
    for category in sorted(set(before) | set(after)):
        a, b = before.get(category, {}), after.get(category, {})
        for name in sorted(set(a) | set(b)):
            if name not in b:
                out.append("%s %s: gone (was %s)" % (category, name, a[name][:160]))
            elif name not in a:
                out.append("%s %s: new (%s)" % (category, name, b[name][:160]))
            elif a[name] != b[name]:
                out.append("%s %s: %s -> %s" % (category, name, a[name][:160], b[name][:160]))
            if len(out) >= limit:
                out.append("... more differences left out")
                return out
    return out


# ------------------------------------------------------------------------------------------------------------ static
def static_checks(
    folder: str,
    ignore_pattern: str,
    *,
    squawk: bool,
    squawk_path: t.Optional[str],
    pg_version: t.Optional[str] = None,
) -> t.Tuple[t.List[MigrationFile], t.List[t.Dict[str, t.Any]], t.List[str]]:
    """Naming and parse checks plus dangerous operations. Naming errors raise (nothing else can be checked)."""
    files = list_migrations(folder, ignore_pattern)
    findings: t.List[t.Dict[str, t.Any]] = []
    notes: t.List[str] = []
    if not files:
        raise PgShiftError("migrations folder %s holds no migration" % folder, path=folder)
    if not _migrations_lint.HAS_PGLAST:
        raise PgShiftError("pglast is required on the host that runs migrations_validate: pip install pglast")
    squawk_bin = _migrations_lint.find_squawk(squawk_path) if squawk else None
    if squawk and not squawk_bin:
        notes.append("squawk not found: only pgshift's own rules ran (pip install squawk-cli)")
    prefixes: t.Dict[int, str] = {}
    for m in files:
        if m.prefix in prefixes:
            findings.append(
                {
                    "severity": _migrations_lint.WARNING,
                    "rule": "duplicate-prefix",
                    "migration": m.name,
                    "file": m.filename,
                    "line": None,
                    "statement": "",
                    "message": "same numeric prefix as %s: the order between them depends on the names only"
                    % prefixes[m.prefix],
                    "source": "pgshift",
                }
            )
        prefixes.setdefault(m.prefix, m.name)
        if m.kind != "sql":
            notes.append(
                "%s is a .%s migration: linted from the SQL node-pg-migrate runs for it in the throwaway database "
                "(engine node-pg-migrate, not in check mode)" % (m.filename, m.kind)
            )
            continue
        parts = _migrations.sql_parts(m)
        own, new_spans = _migrations_lint.lint_sql_migration(m, parts)
        findings.extend(own)
        if squawk_bin:
            findings.extend(_migrations_lint.squawk_findings(squawk_bin, m, parts, new_spans, pg_version))
    return files, findings, notes


def _finding(
    severity: str, rule: str, m: t.Optional[MigrationFile], message: str, name: t.Optional[str] = None
) -> t.Dict[str, t.Any]:
    return {
        "severity": severity,
        "rule": rule,
        "migration": m.name if m else name,
        "file": m.filename if m else None,
        "line": None,
        "statement": "",
        "message": message,
        "source": "pgshift",
    }


def compare_with_database(
    params: ConnParams, files: t.Sequence[MigrationFile], schema: str
) -> t.Tuple[t.Dict[str, t.Any], t.List[t.Dict[str, t.Any]]]:
    """New files must sort after every migration applied in the compared database; applied ones must be unchanged."""
    conn = connect(params)
    try:
        conn.set_session(readonly=True)
        with conn.cursor() as cur:
            status = _migrations.read_status(cur, files, schema)
        conn.rollback()
    except psycopg2.Error as exc:
        raise db_error(exc, "reading the ledger of %s" % params.describe()) from None
    finally:
        conn.close()
    by_name = {m.name: m for m in files}
    findings = []
    for name in status["out_of_order"]:
        findings.append(
            _finding(
                _migrations_lint.ERROR,
                "new-before-applied",
                by_name[name],
                "new migration sorts before migrations already applied in database %r (%s): node-pg-migrate will "
                "refuse it; give it a later prefix" % (params.database, status["order_error"] or ""),
            )
        )
    for name in status["missing"]:
        findings.append(
            _finding(
                _migrations_lint.ERROR,
                "applied-file-missing",
                None,
                "applied in database %r but its file is gone" % params.database,
                name,
            )
        )
    for name in status["modified"]:
        findings.append(
            _finding(
                _migrations_lint.ERROR,
                "applied-file-modified",
                by_name[name],
                "changed since it was applied in database %r" % params.database,
            )
        )
    summary = {k: status[k] for k in ("applied", "pending", "missing", "modified", "out_of_order", "unrecorded")}
    summary["database"] = params.database
    return summary, findings


# ------------------------------------------------------------------------------------------------------------ dynamic
@contextlib.contextmanager
def throwaway_database(params: ConnParams, prefix: str = "pgshift_validate_") -> t.Iterator[ConnParams]:
    name = prefix + uuid.uuid4().hex[:12]
    admin = connect(params, autocommit=True)
    try:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(sql.Identifier(name)))
    except psycopg2.Error as exc:
        admin.close()
        raise db_error(exc, "creating the throwaway database %s (the role needs CREATEDB)" % name) from None
    try:
        yield params.with_database(name)
    finally:
        try:
            with admin.cursor() as cur:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        finally:
            admin.close()


def _database_exists(params: ConnParams, name: str) -> bool:
    conn = connect(params)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            found = cur.fetchone() is not None
        conn.rollback()
        return found
    except psycopg2.Error as exc:
        raise db_error(exc, "looking for database %s" % name) from None
    finally:
        conn.close()


def _stdout(ran: t.Dict[str, t.Any]) -> str:
    return str((ran.get("command") or {}).get("stdout") or "")


def _no_down_reason(message: str) -> t.Optional[str]:
    """Why node-pg-migrate refused a JS/TS migration's down, when it is the migration's own choice (else None)."""
    if "User has disabled down migration" in message:
        return "down = false"
    if "Impossible to automatically infer down migration" in message:
        return "not-inferable"
    return None


def lint_rendered(m: MigrationFile, ran: t.Dict[str, t.Any]) -> t.List[t.Dict[str, t.Any]]:
    """The lint rules of .sql migrations on the SQL node-pg-migrate ran for a JS/TS migration's up.

    The SQL comes from node-pg-migrate's own output of the run in the throwaway database (the steps it sends to the
    server, printed before it runs them), so it is exactly what production would run. Lines refer to that SQL, not to
    the file, so findings carry no line; a migration that called ``pgm.noTransaction()`` may use CONCURRENTLY.
    """
    shown = _migrations.rendered_sql(_stdout(ran), m.name, "up")
    if shown is None:
        return [
            _finding(
                _migrations_lint.WARNING,
                "not-linted",
                m,
                "node-pg-migrate's output does not show the SQL of this migration: it was not linted",
            )
        ]
    parts = {"up": shown["sql"], "up_line": 1, "down": None, "down_line": None}
    own, _spans = _migrations_lint.lint_sql_migration(m, parts)
    out = []
    for f in own:
        if f["rule"] == "concurrently-in-transaction" and not shown["transaction"]:
            continue
        if f["rule"] == "concurrently-in-transaction":
            f["message"] = (
                "CONCURRENTLY cannot run inside a transaction block, and this migration runs in one; call "
                "pgm.noTransaction() in it"
            )
        f["line"] = None
        f["message"] += " (in the SQL node-pg-migrate runs for this .%s migration)" % m.kind
        out.append(f)
    return out


def dynamic_checks(
    params: ConnParams,
    folder: str,
    files: t.Sequence[MigrationFile],
    *,
    engine: str,
    ignore_pattern: str,
    node_pg_migrate: t.Optional[str],
    round_trip: bool,
    expected: t.Optional[t.Dict[str, t.Any]] = None,
) -> t.Tuple[t.Dict[str, t.Any], t.List[t.Dict[str, t.Any]]]:
    """Up from empty, one migration at a time, with up -> down -> up for each migration that has a down; then the
    final schema against ``expected`` (a committed schema snapshot) when given."""
    findings: t.List[t.Dict[str, t.Any]] = []
    steps: t.List[t.Dict[str, t.Any]] = []
    started = time.monotonic()

    def run(db: ConnParams, direction: str) -> t.Dict[str, t.Any]:
        return _migrations.migrate(
            db,
            folder,
            engine=engine,
            direction=direction,
            count=1,
            ignore_pattern=ignore_pattern,
            node_pg_migrate=node_pg_migrate,
            lock_timeout=10,
        )

    with throwaway_database(params) as db, contextlib.closing(connect(db)) as snap_conn:
        result: t.Dict[str, t.Any] = {"database": db.database, "up_from_empty": False, "round_trips": steps}
        current = schema_snapshot(snap_conn)
        for m in files:
            try:
                ran = run(db, "up")
            except PgShiftError as exc:
                findings.append(_finding(_migrations_lint.ERROR, "up-failed", m, "up from empty failed: %s" % exc.msg))
                if m.kind != "sql" and _stdout(exc.details):
                    # node-pg-migrate prints the steps before it runs them: lint what it tried (it may say why)
                    findings.extend(f for f in lint_rendered(m, exc.details) if f["rule"] != "not-linted")
                result["failed_at"] = m.name
                break
            after_up = schema_snapshot(snap_conn)
            down = _migrations.has_down(m)
            step: t.Dict[str, t.Any] = {"migration": m.name, "has_down": down}
            if m.kind != "sql":
                findings.extend(lint_rendered(m, ran))
            down_done = False
            if round_trip and down is None:
                # JS/TS: whether it has a down (its own, or one node-pg-migrate infers) shows only when it runs; a
                # failed down is rolled back in its transaction, so the database stays as after up
                try:
                    ran_down = run(db, "down")
                    down = step["has_down"] = down_done = True
                    shown = _migrations.rendered_sql(_stdout(ran_down), m.name, "down")
                    if shown is not None:
                        step["down_sql"] = shown["sql"]
                except PgShiftError as exc:
                    reason = _no_down_reason(exc.msg)
                    if reason is None:
                        findings.append(
                            _finding(
                                _migrations_lint.ERROR, "round-trip-failed", m, "up -> down -> up failed: %s" % exc.msg
                            )
                        )
                        step["error"] = exc.msg
                        steps.append(step)
                        result["failed_at"] = m.name
                        break
                    step["has_down"] = False
                    step["no_down"] = reason
                    if reason == "not-inferable":
                        findings.append(
                            _finding(
                                _migrations_lint.WARNING,
                                "down-not-inferable",
                                m,
                                "no down function, and node-pg-migrate cannot infer one for its operations: "
                                "node-pg-migrate down fails on it; export a down (or down = false to say so)",
                            )
                        )
                    down = False
            if round_trip and down:
                try:
                    if not down_done:
                        run(db, "down")
                    after_down = schema_snapshot(snap_conn)
                    diff = compare_snapshots(current, after_down)
                    step["down_restores"] = not diff
                    if diff:
                        step["down_differences"] = diff
                        findings.append(
                            _finding(
                                _migrations_lint.ERROR,
                                "down-does-not-restore",
                                m,
                                "down does not give back the schema before up: " + "; ".join(diff[:5]),
                            )
                        )
                    run(db, "up")
                    again = schema_snapshot(snap_conn)
                    diff2 = compare_snapshots(after_up, again)
                    step["up_again_same"] = not diff2
                    if diff2:
                        step["up_again_differences"] = diff2
                        findings.append(
                            _finding(
                                _migrations_lint.ERROR,
                                "up-down-up-differs",
                                m,
                                "up after down gives a different schema than the first up: " + "; ".join(diff2[:5]),
                            )
                        )
                    after_up = again
                except PgShiftError as exc:
                    findings.append(
                        _finding(
                            _migrations_lint.ERROR, "round-trip-failed", m, "up -> down -> up failed: %s" % exc.msg
                        )
                    )
                    step["error"] = exc.msg
                    steps.append(step)
                    result["failed_at"] = m.name
                    break
            steps.append(step)
            current = after_up
        else:
            result["up_from_empty"] = True
        result["final_schema"] = {k: len(v or {}) for k, v in current["objects"].items()}
        if expected is not None and result["up_from_empty"]:
            differences = _against_committed(db, expected)
            result["matches_schema_snapshot"] = not differences
            if differences:
                findings.append(
                    _finding(
                        _migrations_lint.ERROR,
                        "final-schema-differs",
                        files[-1],
                        "the schema the migrations build differs from the committed schema snapshot: "
                        + "; ".join(differences[:8]),
                    )
                )
        result["seconds"] = round(time.monotonic() - started, 2)
    return result, findings


def _against_committed(db: ConnParams, expected: t.Dict[str, t.Any]) -> t.List[str]:
    """Differences from a committed snapshot to the throwaway database, taken with the snapshot's own filters."""
    filters = expected.get("filters") or {}
    conn = connect(db)
    try:
        actual = take_snapshot(
            conn,
            include_schemas=filters.get("include_schemas"),
            exclude_schemas=filters.get("exclude_schemas"),
            with_owners=bool(filters.get("with_owners")),
            with_grants=bool(filters.get("with_grants")),
            with_comments=bool(filters.get("with_comments", True)),
        )
    finally:
        conn.close()
    return compare_snapshots(expected, actual)


def validate(
    params: ConnParams,
    folder: str,
    *,
    engine: str = "sql",
    compare_database: t.Optional[str] = None,
    schema: str = "public",
    ignore_pattern: str = DEFAULT_IGNORE_PATTERN,
    round_trip: bool = True,
    squawk: bool = True,
    squawk_path: t.Optional[str] = None,
    node_pg_migrate: t.Optional[str] = None,
    compare_missing_ok: bool = False,
    schema_snapshot: t.Optional[str] = None,
    check_mode: bool = False,
) -> t.Dict[str, t.Any]:
    if engine not in _migrations.ENGINES:
        raise PgShiftError(
            "unknown engine %r: choose one of %s" % (engine, ", ".join(_migrations.ENGINES)), engine=engine
        )
    expected = None
    if schema_snapshot:
        if not HAS_SCHEMA_SNAPSHOT:
            raise PgShiftError("schema_snapshot needs the schema snapshot helpers (_schema.py), absent here")
        expected = read_snapshot_file(schema_snapshot)
    files, findings, notes = static_checks(folder, ignore_pattern, squawk=squawk, squawk_path=squawk_path)
    result: t.Dict[str, t.Any] = {
        "folder": os.path.abspath(folder),
        "engine": engine,
        "migrations": [m.to_dict() for m in files],
        "notes": notes,
    }
    if engine == "sql":
        others = [m.filename for m in files if m.kind != "sql"]
        if others:
            raise PgShiftError(
                "the sql engine runs .sql migrations only (%s are not): use engine: node-pg-migrate" % ", ".join(others)
            )
    if compare_database and compare_missing_ok and not _database_exists(params, compare_database):
        notes.append(
            "database %r does not exist on %s: the folder was not compared with a ledger"
            % (compare_database, params.describe())
        )
    elif compare_database:
        result["compared"], more = compare_with_database(params.with_database(compare_database), files, schema)
        findings.extend(more)
    static_errors = any(f["severity"] == _migrations_lint.ERROR and f["rule"] == "syntax-error" for f in findings)
    if check_mode:
        notes.append("check mode: no throwaway database was created, so up from empty and the round trips did not run")
    elif static_errors:
        notes.append("syntax errors: up from empty and the round trips did not run")
    else:
        try:
            result["run"], more = dynamic_checks(
                params,
                folder,
                files,
                engine=engine,
                ignore_pattern=ignore_pattern,
                node_pg_migrate=node_pg_migrate,
                round_trip=round_trip,
                expected=expected,
            )
        except psycopg2.Error as exc:
            raise db_error(exc, "validating in a throwaway database on %s" % params.describe()) from None
        findings.extend(more)
    order = {m.name: i for i, m in enumerate(files)}
    findings.sort(key=lambda f: (0 if f["severity"] == "error" else 1, order.get(f["migration"], -1), f["line"] or 0))
    result["findings"] = findings
    result["error_count"] = sum(1 for f in findings if f["severity"] == _migrations_lint.ERROR)
    result["warning_count"] = sum(1 for f in findings if f["severity"] == _migrations_lint.WARNING)
    result["valid"] = result["error_count"] == 0
    result["report"] = report_lines(result)
    return result


def report_lines(result: t.Dict[str, t.Any]) -> t.List[str]:
    """A readable report, one line per item (what the playbook prints)."""
    lines = [
        "migrations in %s: %d (engine %s)" % (result["folder"], len(result["migrations"]), result["engine"]),
        "result: %s, %d error(s), %d warning(s)"
        % ("VALID" if result["valid"] else "INVALID", result["error_count"], result["warning_count"]),
    ]
    compared = result.get("compared")
    if compared:
        lines.append(
            "compared with database %r: %d applied, %d new"
            % (compared["database"], len(compared["applied"]), len(compared["pending"]))
        )
    run = result.get("run")
    if run:
        lines.append(
            "up from empty: %s (%ss)"
            % ("ok" if run["up_from_empty"] else "FAILED at %s" % run.get("failed_at"), run["seconds"])
        )
        trips = [s for s in run["round_trips"] if s.get("has_down")]
        bad = [s["migration"] for s in trips if not (s.get("down_restores") and s.get("up_again_same"))]
        lines.append("up -> down -> up: %d migration(s) with a down, %d not restoring" % (len(trips), len(bad)))
        if "matches_schema_snapshot" in run:
            lines.append("committed schema snapshot: %s" % ("same" if run["matches_schema_snapshot"] else "DIFFERS"))
    for f in result["findings"]:
        where = f["file"] or f["migration"] or ""
        if f["line"]:
            where += ":%d" % f["line"]
        lines.append(
            "%s %s [%s] %s%s"
            % (
                f["severity"].upper(),
                where,
                f["rule"],
                f["message"],
                (" | " + f["statement"]) if f["statement"] else "",
            )
        )
    lines.extend("note: " + n for n in result["notes"])
    return lines
