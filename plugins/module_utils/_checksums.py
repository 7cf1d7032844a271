# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""Per-table row counts and order-independent content checksums, read in one shared snapshot.

This is the one content-checksum implementation of the collection: the backup (``_backup``), its verification and
restore (``_backup_verify``) and the data copy's proof (``_data_check``) all build their statements here.

A table's checksum is ``count(*)`` plus the sum, as ``numeric`` (it never overflows and, unlike XOR, duplicate rows
do not cancel), of a 64-bit hash per row. Two algorithms, recorded by name in every backup manifest
(``checksum_algorithm``) so that a verification only ever compares like with like:

``values-v1`` (PostgreSQL 11+, the default)
    A row's hash is the XOR of one seeded 64-bit hash per column (seed = column position + 1). Built-in types whose
    hash equality is value identity go through the type's own extended hash function, with no text conversion
    (see :data:`_HASH_FUNCTIONS`, :data:`_HASH_ARRAY_OIDS`); text-like values are hashed under ``COLLATE "C"`` so a
    nondeterministic collation cannot make different strings hash equal. Every other column (numeric and floats,
    whose hashes ignore display scale and the sign of zero; interval; date; bytea; user types, whose OIDs differ
    between databases) falls back to ``hashtextextended(value::text, seed)``; ``xml`` is hashed in its output form
    (``xml_out``: what pg_dump and COPY write, without the ``<?xml ...?>`` declaration that a cast to text keeps), so
    a correct restore always hashes like the original. A NULL gets a constant of its own
    per column. Only built-in OIDs (below 16384, fixed across databases and versions) pick a hash function, so both
    sides of a comparison always choose the same hashing for a column.
``row-text-v1`` (any version; backups taken before the algorithm was recorded used it)
    ``hashtextextended(ROW(cols)::text, 0)``: the text form of the whole row.

Text forms depend on session settings (TimeZone, DateStyle, IntervalStyle, extra_float_digits, bytea_output), so
every connection used here must come from ``_connection.connect``, which pins them; ``timestamptz`` values are hashed
at UTC, so they never depend on TimeZone.

Consistent multi-connection reads: one connection calls :func:`export_snapshot` (a ``REPEATABLE READ`` transaction
that stays open), every worker calls :func:`set_snapshot` with the id, and all of them see the same data.
``pg_dump --snapshot=<id>`` joins the same snapshot.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import typing as t

from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError
from ansible_collections.pgshift.ops.plugins.module_utils._identity import (
    legacy_qualified_key,
    parse_qualified_key,
    qualified_key,
)

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # pragma: no cover - reported by _connection.connect
    pass

SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


class TableRef(t.NamedTuple):
    """A table by schema and name; ``key`` is the ``schema.table`` form used in manifests and results
    (``_identity.qualified_key``: a part holding a dot or a double quote is double-quoted, so keys never collide)."""

    schema: str
    name: str

    @property
    def key(self) -> str:
        return qualified_key(self.schema, self.name)


TableLike = t.Union[TableRef, t.Tuple[str, str], str]
# How a manifest's ``tables`` keys are written: ``_identity.qualified_key``. A manifest without ``table_keys`` was
# written before: its keys are ``schema || '.' || table`` (equal to today's for every name without a dot or quote).
TABLE_KEYS = "qualified-v1"


def as_ref(table: TableLike) -> TableRef:
    """A TableRef from a TableRef, a (schema, name) pair, or a ``schema.table`` key (``_identity.qualified_key``)."""
    if isinstance(table, str):
        return TableRef(*parse_qualified_key(table))
    return TableRef(*table)


def manifest_tables(manifest: t.Mapping[str, t.Any]) -> t.Dict[str, t.Any]:
    """A manifest's per-table entries keyed as :attr:`TableRef.key` keys them, whichever version wrote it."""
    tables = manifest.get("tables") or {}
    if manifest.get("table_keys") == TABLE_KEYS:
        return dict(tables)
    if manifest.get("table_keys") is not None:
        raise PgShiftError(
            "backup manifest writes table keys as %r, which this version of pgshift does not know (it knows %s)"
            % (manifest.get("table_keys"), TABLE_KEYS)
        )
    out: t.Dict[str, t.Any] = {}
    for key, entry in tables.items():
        new = legacy_qualified_key(key)
        if new in out:
            raise PgShiftError(
                "backup manifest lists table %s twice (written before table keys were quoted): take a new backup" % new
            )
        out[new] = entry
    return out


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


# ------------------------------------------------------------------------------------------------ row hashes
ALGORITHM_VALUES = "values-v1"
ALGORITHM_ROW_TEXT = "row-text-v1"
ALGORITHMS = (ALGORITHM_VALUES, ALGORITHM_ROW_TEXT)
# Manifests written before the algorithm was recorded hashed the row's text (the same statement as row-text-v1).
LEGACY_ALGORITHM = ALGORITHM_ROW_TEXT
MIN_HASH_BY_VALUE_SERVER = 110000  # the extended (64-bit, seeded) hash functions exist from PostgreSQL 11
FIRST_USER_OID = 16384

# Built-in types hashed by value: type OID -> call of the type's extended hash function ({v} value, {s} seed).
_HASH_FUNCTIONS: t.Dict[int, str] = {
    16: "hashint4extended(({v})::integer, {s})",  # boolean
    18: "hashcharextended({v}, {s})",  # "char"
    19: "hashnameextended({v}, {s})",  # name
    20: "hashint8extended({v}, {s})",  # bigint
    21: "hashint2extended({v}, {s})",  # smallint
    23: "hashint4extended({v}, {s})",  # integer
    25: 'hashtextextended(({v}) COLLATE "C", {s})',  # text
    26: "hashoidextended({v}, {s})",  # oid
    829: "hashmacaddrextended({v}, {s})",  # macaddr
    869: "hashinetextended({v}, {s})",  # inet
    1042: 'hashbpcharextended(({v}) COLLATE "C", {s})',  # character(n)
    1043: 'hashtextextended(({v}) COLLATE "C", {s})',  # character varying
    1083: "time_hash_extended({v}, {s})",  # time
    1114: "timestamp_hash_extended({v}, {s})",  # timestamp
    1184: "timestamp_hash_extended(({v}) AT TIME ZONE 'UTC', {s})",  # timestamptz, at UTC whatever TimeZone says
    2950: "uuid_hash_extended({v}, {s})",  # uuid
    3802: "jsonb_hash_extended({v}, {s})",  # jsonb
}
# Types hashed through their output function (the form pg_dump and COPY write) rather than a cast to text: xml's cast
# to text returns the stored text, while its output drops the XML declaration (and one newline after it), so a
# correct restore of an xml value holding ``<?xml ...?>`` would otherwise hash differently from the original.
_HASH_OUTPUT_FORM: t.Dict[int, str] = {
    142: "hashtextextended((xml_out({v}))::text, {s})",  # xml
}
# Arrays hashed element by element by the server (hash_array_extended): of the types above and of bytea, date, ...
_HASH_ARRAY_OIDS = frozenset({1000, 1001, 1002, 1003, 1005, 1007, 1016, 1028, 1041, 1115, 1182, 1183, 1185, 2951, 3807})
# Arrays of text-like types: hashed under COLLATE "C" as well.
_HASH_TEXT_ARRAY_OIDS = frozenset({1009, 1014, 1015})
HASH_BY_VALUE_OIDS = frozenset(_HASH_FUNCTIONS) | _HASH_ARRAY_OIDS | _HASH_TEXT_ARRAY_OIDS
_NULL_BASE = 0x2545F4914F6CDD1D
# Types whose equality is not identity of the text form, hashed by the type's own (equality-consistent) extended hash
# when a comparison is by equality (the data proof of a changed type: 1.50 = 1.5, -0 = 0, '1 day' = '24 hours').
_EQUALITY_HASH_FUNCTIONS: t.Dict[int, str] = {
    700: "hashfloat4extended({v}, {s})",  # real
    701: "hashfloat8extended({v}, {s})",  # double precision
    1186: "interval_hash_extended({v}, {s})",  # interval
    1700: "hash_numeric_extended({v}, {s})",  # numeric
}


def algorithm_for(server_version_num: int) -> str:
    """The checksum algorithm a server of that ``server_version_num`` computes by default."""
    return ALGORITHM_VALUES if int(server_version_num) >= MIN_HASH_BY_VALUE_SERVER else ALGORITHM_ROW_TEXT


def check_algorithm(algorithm: t.Optional[str], server_version_num: t.Optional[int] = None) -> str:
    """``algorithm`` if this code knows it (and the server can compute it), else a PgShiftError that says why."""
    if algorithm not in ALGORITHMS:
        raise PgShiftError(
            "checksum algorithm %r is not known to this version of pgshift (it knows %s): the checksums cannot be "
            "compared; take a new backup with this version" % (algorithm, ", ".join(ALGORITHMS)),
            checksum_algorithm=algorithm,
        )
    if (
        algorithm == ALGORITHM_VALUES
        and server_version_num is not None
        and int(server_version_num) < MIN_HASH_BY_VALUE_SERVER
    ):
        raise PgShiftError(
            "checksum algorithm %s needs PostgreSQL 11 or newer; this server is %s: verify on a newer server"
            % (algorithm, server_version_num),
            checksum_algorithm=algorithm,
        )
    return str(algorithm)


def by_value(algorithm: str) -> bool:
    return check_algorithm(algorithm) == ALGORITHM_VALUES


def hash_term(value: "sql.Composable", type_oid: int, index: int, equality: bool = False) -> "sql.Composable":
    """The ``values-v1`` hash of one column's value (``type_oid`` its type, ``index`` its 0-based position);
    ``equality``: values equal by the type's ``=`` hash the same (numeric, floats, interval: not their text form)."""
    seed = sql.Literal(index + 1)
    template = _HASH_FUNCTIONS.get(int(type_oid))
    if equality and template is None:
        template = _EQUALITY_HASH_FUNCTIONS.get(int(type_oid))
    if template is None:
        template = _HASH_OUTPUT_FORM.get(int(type_oid))
    if template is not None:
        expr = sql.SQL(template).format(v=value, s=seed)
    elif type_oid in _HASH_ARRAY_OIDS:
        expr = sql.SQL("hash_array_extended({}, {})").format(value, seed)
    elif type_oid in _HASH_TEXT_ARRAY_OIDS:
        expr = sql.SQL('hash_array_extended(({}) COLLATE "C", {})').format(value, seed)
    else:  # the documented fallback: the value's text form
        expr = sql.SQL("hashtextextended(({})::text, {})").format(value, seed)
    marker = (_NULL_BASE * (index + 1)) % (1 << 63)
    return sql.SQL("coalesce({}, {})").format(expr, sql.Literal(marker))


def row_items(
    values: t.Sequence["sql.Composable"],
    type_oids: t.Sequence[int],
    algorithm: str,
    equality: t.Optional[t.Sequence[bool]] = None,
) -> t.List["sql.Composable"]:
    """What :func:`row_hash` combines: hash terms (``values-v1``) or the values themselves (``row-text-v1``);
    ``equality`` per column, see :func:`hash_term`."""
    if by_value(algorithm):
        flags = list(equality) if equality is not None else [False] * len(values)
        return [hash_term(v, oid, i, eq) for i, (v, oid, eq) in enumerate(zip(values, type_oids, flags))]
    return list(values)


def row_hash(items: t.Sequence["sql.Composable"], algorithm: str) -> "sql.Composable":
    """A 64-bit hash of one row from :func:`row_items` items of the same algorithm."""
    if not items:
        return sql.SQL("0::bigint")
    if by_value(algorithm):
        return sql.SQL("({})").format(sql.SQL(" # ").join(items))
    return sql.SQL("hashtextextended(ROW({})::text, 0)").format(sql.SQL(", ").join(items))


def checksum_sql(from_item: "sql.Composable", items: t.Sequence["sql.Composable"], algorithm: str) -> "sql.Composed":
    """``count(*)`` and the numeric sum, as text, of the rows' 64-bit hashes (``from_item`` aliased ``t``)."""
    return sql.SQL("SELECT count(*), coalesce(sum({}), 0)::text FROM {} AS t").format(
        row_hash(items, algorithm), from_item
    )


class ColumnType(t.NamedTuple):
    name: str
    type_oid: int


def table_column_types(conn: t.Any, table: TableLike) -> t.List[ColumnType]:
    """Columns of a table with their type OIDs, in physical order (dropped columns left out)."""
    ref = as_ref(table)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT a.attname, a.atttypid::bigint FROM pg_attribute a WHERE a.attrelid = %s::regclass "
            "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (sql.Identifier(ref.schema, ref.name).as_string(cur),),
        )
        return [ColumnType(r[0], int(r[1])) for r in cur.fetchall()]


def table_columns(conn: t.Any, table: TableLike) -> t.List[str]:
    """Column names of a table in their physical order (dropped columns left out)."""
    return [c.name for c in table_column_types(conn, table)]


def checksum_query(
    table: TableLike,
    columns: t.Sequence[t.Union[str, ColumnType]],
    algorithm: str = ALGORITHM_ROW_TEXT,
) -> "sql.Composed":
    """The checksum statement of a whole table; ``values-v1`` needs :class:`ColumnType` columns (a bare name is
    hashed through its text form)."""
    ref = as_ref(table)
    cols = [c if isinstance(c, ColumnType) else ColumnType(c, 0) for c in columns]
    values = [sql.SQL("t.{}").format(sql.Identifier(c.name)) for c in cols]
    items = row_items(values, [c.type_oid for c in cols], algorithm)
    return checksum_sql(sql.Identifier(ref.schema, ref.name), items, algorithm)


def checksum_one(
    conn: t.Any,
    table: TableLike,
    columns: t.Optional[t.Sequence[t.Union[str, ColumnType]]] = None,
    algorithm: t.Optional[str] = None,
) -> t.Dict[str, t.Any]:
    """Row count and checksum of one table on ``conn`` (in whatever transaction/snapshot it is in).

    ``algorithm`` defaults to :func:`algorithm_for` the server; ``columns`` to every column (with its type).
    """
    ref = as_ref(table)
    algorithm = check_algorithm(algorithm or algorithm_for(conn.server_version), conn.server_version)
    try:
        cols = list(columns) if columns is not None else table_column_types(conn, ref)
        with conn.cursor() as cur:
            cur.execute(checksum_query(ref, cols, algorithm))
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
    columns_by_table: t.Optional[t.Mapping[str, t.Sequence[t.Union[str, ColumnType]]]] = None,
    algorithm: t.Optional[str] = None,
) -> t.Dict[str, t.Dict[str, t.Any]]:
    """``{"schema.table": {"rows": int, "checksum": str}}`` for the given tables (default: :func:`list_user_tables`).

    ``columns_by_table`` maps a ``schema.table`` key to the columns to hash (default: every column). Everything runs
    on ``conn``, in its current transaction: call :func:`set_snapshot` first to read a shared snapshot.
    ``algorithm`` defaults to :func:`algorithm_for` the server.
    """
    refs = [as_ref(x) for x in tables] if tables is not None else list_user_tables(conn)
    _disable_row_security(conn)
    columns_by_table = columns_by_table or {}
    return {ref.key: checksum_one(conn, ref, columns_by_table.get(ref.key), algorithm) for ref in refs}


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
    columns_by_table: t.Optional[t.Mapping[str, t.Sequence[t.Union[str, ColumnType]]]] = None,
    algorithm: t.Optional[str] = None,
) -> t.Dict[str, t.Dict[str, t.Any]]:
    """Checksums of ``tables`` over ``jobs`` connections made by ``connect()``, largest tables first.

    With ``snapshot_id`` every connection imports that snapshot first. Connections are closed afterwards.
    ``algorithm`` defaults to :func:`algorithm_for` the server (pass the manifest's to compare with it).
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
                results[ref.key] = checksum_one(conn, ref, columns_by_table.get(ref.key), algorithm)

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
