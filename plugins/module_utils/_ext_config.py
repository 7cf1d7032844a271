# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""Extension configuration tables: the rows users add to them are production's, carried as pg_dump carries them.

An extension marks a member table with ``pg_extension_config_dump(table, condition)``: the table is listed in
``pg_extension.extconfig`` and the condition (a ``WHERE`` clause, or empty for every row) at the same position of
``extcondition``. The table itself comes with ``CREATE EXTENSION`` (from dev's schema), with the extension's own
initial rows; the rows under the condition are the user's. Extension member tables are not in the data plan
(``_data.read_tables`` leaves them out), so they are handled here:

- :func:`plan` pairs every source configuration table with the target's (same schema and name, registered as a
  configuration table of an extension of the same name), with the columns both have (the target's non-generated
  columns that the source has, by name, in the target's order);
- :func:`copy` replaces, in one target transaction, the target's rows under the target's condition by the source's
  rows under the source's condition (``DELETE FROM ONLY t <condition>``, then a text ``COPY``), the source read in
  the caller's transaction (the copy's snapshot); the rows pass through a spooled temporary file (1 MiB in memory,
  the rest on disk), never as Python objects;
- :func:`prove` counts and checksums the rows under the condition on both sides (``_checksums`` row hash).

Conditions are SQL the extension registered (like a mapping expression, used verbatim); a condition that does not
start with ``WHERE`` is refused.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
import typing as t

from ansible_collections.pgshift.ops.plugins.module_utils import _checksums
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError
from ansible_collections.pgshift.ops.plugins.module_utils._identity import table_key

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # pragma: no cover - reported by _connection.connect
    pass

SPOOL_BYTES = 1 << 20
_CONDITION_RE = re.compile(r"^\s*(WHERE\b.*)?$", re.IGNORECASE | re.DOTALL)

_CONFIG_SQL = """
SELECT e.extname, n.nspname, c.relname, c.relkind::text, coalesce(cfg.cond, '')
FROM pg_extension e
CROSS JOIN LATERAL unnest(e.extconfig, e.extcondition) AS cfg(reloid, cond)
JOIN pg_class c ON c.oid = cfg.reloid
JOIN pg_namespace n ON n.oid = c.relnamespace
ORDER BY n.nspname, c.relname
"""

_COLUMNS_SQL = """
SELECT a.attname, a.atttypid::bigint, format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
ORDER BY a.attnum
"""


@dataclasses.dataclass
class ConfigTable:
    extension: str
    schema: str
    name: str
    kind: str
    condition: str

    @property
    def key(self) -> str:
        return table_key(self.schema, self.name)

    @property
    def ident(self) -> "sql.Composable":
        return sql.Identifier(self.schema, self.name)

    def where(self) -> "sql.Composable":
        if not _CONDITION_RE.match(self.condition):
            raise PgShiftError(
                "the configuration condition of %s (extension %s) is not a WHERE clause: %r"
                % (self.key, self.extension, self.condition),
                table=self.key,
            )
        return sql.SQL(self.condition)


@dataclasses.dataclass
class ConfigPlan:
    source: ConfigTable
    target: t.Optional[ConfigTable]
    columns: t.List[t.Tuple[str, int, str]]  # (name, target type oid, target type) carried
    not_carried_columns: t.List[str]
    reason: t.Optional[str] = None

    @property
    def carried(self) -> bool:
        return self.target is not None and self.reason is None

    def describe(self) -> t.Dict[str, t.Any]:
        return {
            "table": self.source.key,
            "extension": self.source.extension,
            "condition": self.source.condition,
            "target_condition": self.target.condition if self.target else None,
            "columns": [c[0] for c in self.columns],
            "not_carried_columns": self.not_carried_columns,
            "carried": self.carried,
            "reason": self.reason,
        }


def read_config_tables(conn: t.Any) -> t.List[ConfigTable]:
    with conn.cursor() as cur:
        cur.execute(_CONFIG_SQL)
        return [ConfigTable(r[0], r[1], r[2], r[3], r[4]) for r in cur.fetchall()]


def _columns(conn: t.Any, table: ConfigTable) -> t.List[t.Tuple[str, int, str]]:
    with conn.cursor() as cur:
        cur.execute(_COLUMNS_SQL, (table.ident.as_string(cur),))
        return [(r[0], int(r[1]), r[2]) for r in cur.fetchall()]


def plan(source_conn: t.Any, target_conn: t.Any) -> t.List[ConfigPlan]:
    """Every configuration table of the source's extensions, paired with the target's."""
    try:
        targets = {(ct.extension, ct.schema, ct.name): ct for ct in read_config_tables(target_conn)}
        plans = []
        for src in read_config_tables(source_conn):
            tgt = targets.get((src.extension, src.schema, src.name))
            if src.kind not in ("r", "p"):
                plans.append(ConfigPlan(src, tgt, [], [], "a configuration sequence is not carried"))
                continue
            if tgt is None:
                plans.append(
                    ConfigPlan(
                        src,
                        None,
                        [],
                        [],
                        "the new database has no such configuration table of extension %s" % src.extension,
                    )
                )
                continue
            src_cols = {c[0] for c in _columns(source_conn, src)}
            tgt_cols = _columns(target_conn, tgt)
            carried = [c for c in tgt_cols if c[0] in src_cols]
            missing = sorted(src_cols - {c[0] for c in tgt_cols})
            entry = ConfigPlan(src, tgt, carried, missing)
            if not carried:
                entry.reason = "no column in common"
            plans.append(entry)
    except psycopg2.Error as exc:
        raise PgShiftError("reading the extension configuration tables failed: %s" % str(exc).strip()) from None
    return plans


def _select(cp: ConfigPlan, table: ConfigTable) -> "sql.Composable":
    cols = sql.SQL(", ").join(sql.Identifier(c[0]) for c in cp.columns)
    return sql.SQL("SELECT {} FROM ONLY {} {}").format(cols, table.ident, table.where())


def copy(source_conn: t.Any, target_conn: t.Any, plans: t.Sequence[ConfigPlan]) -> t.Dict[str, t.Dict[str, t.Any]]:
    """Replace the target's rows under the condition by the source's (read in ``source_conn``'s transaction), one
    target transaction for all the tables; returns rows per table (``deleted`` from the target, ``copied``)."""
    out: t.Dict[str, t.Dict[str, t.Any]] = {}
    carried = [cp for cp in plans if cp.carried and cp.target is not None]
    if not carried:
        return out
    current = ""
    try:
        with target_conn.cursor() as tcur, source_conn.cursor() as scur:
            for cp in carried:
                if cp.target is None:  # pragma: no cover - filtered above
                    continue
                current = cp.source.key
                tcur.execute(sql.SQL("DELETE FROM ONLY {} {}").format(cp.target.ident, cp.target.where()))
                deleted = tcur.rowcount
                with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
                    scur.copy_expert(
                        sql.SQL("COPY ({}) TO STDOUT").format(_select(cp, cp.source)).as_string(scur), spool
                    )
                    spool.seek(0)
                    cols = sql.SQL(", ").join(sql.Identifier(c[0]) for c in cp.columns)
                    tcur.copy_expert(
                        sql.SQL("COPY {} ({}) FROM STDIN").format(cp.target.ident, cols).as_string(tcur), spool
                    )
                    copied = tcur.rowcount
                out[cp.source.key] = {"extension": cp.source.extension, "deleted": deleted, "copied": copied}
        target_conn.commit()
    except psycopg2.Error as exc:
        target_conn.rollback()
        raise PgShiftError(
            "copy of extension configuration table %s failed: %s" % (current, str(exc).strip().splitlines()[0]),
            table=current,
        ) from None
    return out


def _checksum(conn: t.Any, cp: ConfigPlan, table: ConfigTable, algorithm: str) -> t.Dict[str, t.Any]:
    values = [sql.SQL("t.{}").format(sql.Identifier(c[0])) for c in cp.columns]
    # builtin types by value; a type of the extension (its OID differs between databases) by its text form
    oids = [c[1] if c[1] < _checksums.FIRST_USER_OID else 0 for c in cp.columns]
    items = _checksums.row_items(values, oids, algorithm)
    query = _checksums.checksum_sql(sql.SQL("({})").format(_select(cp, table)), items, algorithm)
    with conn.cursor() as cur:
        cur.execute(query)
        rows, checksum = cur.fetchone()
    return {"rows": int(rows), "checksum": str(checksum)}


def prove(
    source_conn: t.Any, target_conn: t.Any, plans: t.Sequence[ConfigPlan], algorithm: str
) -> t.Dict[str, t.Dict[str, t.Any]]:
    """Count and checksum of the rows under the condition on both sides (the source in its caller's snapshot)."""
    out: t.Dict[str, t.Dict[str, t.Any]] = {}
    for cp in plans:
        if not cp.carried or cp.target is None:
            continue
        try:
            src = _checksum(source_conn, cp, cp.source, algorithm)
            tgt = _checksum(target_conn, cp, cp.target, algorithm)
        except psycopg2.Error as exc:
            raise PgShiftError(
                "checksum of extension configuration table %s failed: %s"
                % (cp.source.key, str(exc).strip().splitlines()[0]),
                table=cp.source.key,
            ) from None
        out[cp.source.key] = {
            "extension": cp.source.extension,
            "source_rows": src["rows"],
            "target_rows": tgt["rows"],
            "source_checksum": src["checksum"],
            "target_checksum": tgt["checksum"],
            "match": src == tgt,
        }
    return out


def source_rows(source_conn: t.Any, cp: ConfigPlan) -> int:
    """Rows of the source table under its condition (what the release must carry)."""
    with source_conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM ONLY {} {}").format(cp.source.ident, cp.source.where()))
        return int(cur.fetchone()[0])


def problems(
    source_conn: t.Any, plans: t.Sequence[ConfigPlan], accept_tables: t.Container[str]
) -> t.List[t.Dict[str, t.Any]]:
    """Rows under the condition of a configuration table the new database does not carry: lost unless the table is
    listed under ``accept_loss.tables``."""
    out: t.List[t.Dict[str, t.Any]] = []
    for cp in plans:
        if cp.carried or cp.source.kind not in ("r", "p") or cp.source.key in accept_tables:
            continue
        try:
            count = source_rows(source_conn, cp)
        except psycopg2.Error as exc:
            raise PgShiftError(
                "counting the rows of extension configuration table %s failed: %s"
                % (cp.source.key, str(exc).strip().splitlines()[0])
            ) from None
        if count:
            out.append(
                {
                    "table": cp.source.key,
                    "column": None,
                    "kind": "extension_config",
                    "count": count,
                    "sample": [],
                    "message": "%s: %d row(s) of extension %s's configuration table would be lost (%s); create the "
                    "extension in dev, or list %s under accept_loss.tables"
                    % (cp.source.key, count, cp.source.extension, cp.reason, cp.source.key),
                }
            )
    return out


def notes(plans: t.Sequence[ConfigPlan]) -> t.List[str]:
    out: t.List[str] = []
    for cp in plans:
        if cp.reason:
            out.append(
                "extension configuration table %s (extension %s): rows not carried: %s"
                % (cp.source.key, cp.source.extension, cp.reason)
            )
        elif cp.not_carried_columns:
            out.append(
                "extension configuration table %s (extension %s): columns the new database lacks are not carried: %s"
                % (cp.source.key, cp.source.extension, ", ".join(cp.not_carried_columns))
            )
    return out
