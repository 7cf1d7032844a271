# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""Per-table row counts and order-independent content checksums, read in one shared snapshot.

A table's checksum is ``count(*)`` plus ``sum(hashtextextended(ROW(cols)::text, 0))`` summed as ``numeric`` (a 64-bit
hash per row; the sum never overflows and, unlike XOR, duplicate rows do not cancel). The text form of a row depends
on session settings, so every connection used here must come from ``_connection.connect`` (which pins them).

Consistent multi-connection reads: one connection calls :func:`export_snapshot` (a ``REPEATABLE READ`` transaction
that stays open), every worker calls :func:`set_snapshot` with the id, and all of them see the same data.
``pg_dump --snapshot=<id>`` joins the same snapshot.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import typing as t

from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # pragma: no cover - reported by _connection.connect
    pass

SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


class TableRef(t.NamedTuple):
    """A table by schema and name; ``key`` is the ``schema.table`` form used in manifests and results."""

    schema: str
    name: str

    @property
    def key(self) -> str:
        return "%s.%s" % (self.schema, self.name)


TableLike = t.Union[TableRef, t.Tuple[str, str], str]


def as_ref(table: TableLike) -> TableRef:
    """A TableRef from a TableRef, a (schema, name) pair, or a ``schema.table`` key (split at its first dot: use a
    pair for a schema name that holds a dot)."""
    if isinstance(table, str):
        schema, dot, name = table.partition(".")
        if not dot or not schema or not name:
            raise PgShiftError("table %r is not of the form schema.table" % table)
        return TableRef(schema, name)
    return TableRef(*table)


_LIST_TABLES = """
SELECT n.nspname, c.relname, c.relpages::bigint AS pages
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND n.nspname NOT LIKE 'pg\\_temp\\_%'
  AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
  AND NOT EXISTS (
      SELECT 1 FROM pg_depend d
      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY pages DESC, c.reltuples DESC, n.nspname, c.relname
"""


def list_user_tables(conn: t.Any) -> t.List[TableRef]:
    """User tables whose rows hold data, largest first (by the planner's page count: reading it takes no lock).

    Ordinary tables and the leaf partitions of partitioned tables (``relkind = 'r'``); partitioned parents are left
    out, so a partitioned table's rows are counted once, in its leaves (which is also how pg_dump writes them).
    System schemas, temporary schemas and tables that belong to extensions are excluded.
    """
    with conn.cursor() as cur:
        cur.execute(_LIST_TABLES)
        return [TableRef(r[0], r[1]) for r in cur.fetchall()]


def table_columns(conn: t.Any, table: TableLike) -> t.List[str]:
    """Column names of a table in their physical order (dropped columns left out)."""
    ref = as_ref(table)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT a.attname FROM pg_attribute a WHERE a.attrelid = %s::regclass AND a.attnum > 0 "
            "AND NOT a.attisdropped ORDER BY a.attnum",
            (sql.Identifier(ref.schema, ref.name).as_string(cur),),
        )
        return [r[0] for r in cur.fetchall()]


def checksum_query(table: TableLike, columns: t.Sequence[str]) -> "sql.Composed":
    """The one checksum statement: rows and the numeric sum of the 64-bit hashes of each row's text."""
    ref = as_ref(table)
    row = sql.SQL("ROW({})").format(sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in columns))
    return sql.SQL(
        "SELECT count(*), coalesce(sum(hashtextextended({}::text, 0)::numeric), 0)::text FROM {} AS t"
    ).format(row, sql.Identifier(ref.schema, ref.name))


def checksum_one(conn: t.Any, table: TableLike, columns: t.Optional[t.Sequence[str]] = None) -> t.Dict[str, t.Any]:
    """Row count and checksum of one table on ``conn`` (in whatever transaction/snapshot it is in)."""
    ref = as_ref(table)
    cols = list(columns) if columns is not None else table_columns(conn, ref)
    try:
        with conn.cursor() as cur:
            cur.execute(checksum_query(ref, cols))
            rows, checksum = cur.fetchone()
    except psycopg2.Error as exc:
        raise PgShiftError(
            "checksum of table %s failed: %s" % (ref.key, str(exc).strip().splitlines()[0]),
            sqlstate=getattr(exc, "pgcode", None),
            table=ref.key,
        ) from None
    return {"rows": int(rows), "checksum": str(checksum)}


def _disable_row_security(conn: t.Any) -> None:
    # With row_security off, a policy that would hide rows raises an error instead of giving a silently short count.
    with conn.cursor() as cur:
        cur.execute("SELECT set_config('row_security', 'off', false)")


def table_checksums(
    conn: t.Any,
    tables: t.Optional[t.Sequence[TableLike]] = None,
    columns_by_table: t.Optional[t.Mapping[str, t.Sequence[str]]] = None,
) -> t.Dict[str, t.Dict[str, t.Any]]:
    """``{"schema.table": {"rows": int, "checksum": str}}`` for the given tables (default: :func:`list_user_tables`).

    ``columns_by_table`` maps a ``schema.table`` key to the columns to hash (default: every column). Everything runs
    on ``conn``, in its current transaction: call :func:`set_snapshot` first to read a shared snapshot.
    """
    refs = [as_ref(x) for x in tables] if tables is not None else list_user_tables(conn)
    _disable_row_security(conn)
    columns_by_table = columns_by_table or {}
    return {ref.key: checksum_one(conn, ref, columns_by_table.get(ref.key)) for ref in refs}


def export_snapshot(conn: t.Any) -> t.Tuple[str, str]:
    """Open a ``REPEATABLE READ, READ ONLY`` transaction on ``conn`` and export its snapshot.

    Returns ``(snapshot_id, snapshot_time)`` (ISO 8601, UTC). Keep ``conn`` open and idle in that transaction until
    every reader (workers, pg_dump) has imported the snapshot.
    """
    conn.autocommit = False
    try:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_export_snapshot(),"
                " to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
            )
            snapshot_id, snapshot_time = cur.fetchone()
    except psycopg2.Error as exc:
        raise PgShiftError("exporting a snapshot failed: %s" % str(exc).strip().splitlines()[0]) from None
    return str(snapshot_id), str(snapshot_time)


def set_snapshot(conn: t.Any, snapshot_id: str) -> None:
    """Make ``conn`` read the exported snapshot ``snapshot_id`` (its own REPEATABLE READ, READ ONLY transaction)."""
    conn.autocommit = False
    try:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot_id,))
    except psycopg2.Error as exc:
        raise PgShiftError(
            "importing snapshot %s failed (the exporting transaction must still be open): %s"
            % (snapshot_id, str(exc).strip().splitlines()[0])
        ) from None


def parallel_checksums(
    connect: t.Callable[[], t.Any],
    tables: t.Sequence[TableLike],
    jobs: int = 1,
    snapshot_id: t.Optional[str] = None,
    columns_by_table: t.Optional[t.Mapping[str, t.Sequence[str]]] = None,
) -> t.Dict[str, t.Dict[str, t.Any]]:
    """Checksums of ``tables`` over ``jobs`` connections made by ``connect()``, largest tables first.

    With ``snapshot_id`` every connection imports that snapshot first. Connections are closed afterwards.
    """
    refs = [as_ref(x) for x in tables]
    jobs = max(1, min(jobs, len(refs) or 1))
    columns_by_table = columns_by_table or {}
    conns: t.List[t.Any] = []
    try:
        for _index in range(jobs):
            conn = connect()
            conns.append(conn)
            if snapshot_id:
                set_snapshot(conn, snapshot_id)
            _disable_row_security(conn)
        queue = list(refs)
        results: t.Dict[str, t.Dict[str, t.Any]] = {}

        def worker(conn: t.Any) -> None:
            while queue:
                try:
                    ref = queue.pop(0)
                except IndexError:
                    return
                results[ref.key] = checksum_one(conn, ref, columns_by_table.get(ref.key))

        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(worker, c) for c in conns]
            for future in futures:
                future.result()
        return {ref.key: results[ref.key] for ref in refs}
    finally:
        for conn in conns:
            with contextlib.suppress(Exception):  # closing is best effort
                conn.rollback()
                conn.close()


def compare_checksums(
    expected: t.Mapping[str, t.Mapping[str, t.Any]], actual: t.Mapping[str, t.Mapping[str, t.Any]]
) -> t.Tuple[t.Dict[str, t.Dict[str, t.Any]], t.List[t.Dict[str, t.Any]]]:
    """Per-table comparison: ``(tables, mismatches)``; every mismatch names its table."""
    tables: t.Dict[str, t.Dict[str, t.Any]] = {}
    mismatches: t.List[t.Dict[str, t.Any]] = []
    for key in sorted(set(expected) | set(actual)):
        exp = expected.get(key)
        act = actual.get(key)
        entry: t.Dict[str, t.Any] = {
            "expected_rows": exp["rows"] if exp else None,
            "rows": act["rows"] if act else None,
            "expected_checksum": exp["checksum"] if exp else None,
            "checksum": act["checksum"] if act else None,
        }
        if exp is None:
            reason = "table %s is not in the manifest" % key
        elif act is None:
            reason = "table %s is missing" % key
        elif int(exp["rows"]) != int(act["rows"]):
            reason = "table %s has %s rows, the manifest says %s" % (key, act["rows"], exp["rows"])
        elif str(exp["checksum"]) != str(act["checksum"]):
            reason = "table %s has different content (checksum %s, the manifest says %s)" % (
                key,
                act["checksum"],
                exp["checksum"],
            )
        else:
            reason = ""
        entry["ok"] = not reason
        tables[key] = entry
        if reason:
            mismatches.append({"table": key, "reason": reason})
    return tables, mismatches
