# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""Prove that the target holds exactly the source's carried data, and that it is healthy.

Per carried table: ``count(*)`` and the sum of a 64-bit hash of every row over the carried columns, computed by the
collection's one checksum implementation (``_checksums``: algorithm ``values-v1``, the XOR of per-column extended
hashes of the values or of their text form, on PostgreSQL 11+; ``row-text-v1`` when a server is older), the source side
computed on its values converted to the target types through the same mapping the copy used. The source and target
queries of a table run at the same time (threads, one connection per thread and side), ``jobs`` tables at a
time; every source connection reads one exported snapshot. On a mismatch the table is narrowed down by buckets of its
key (the hash of the target's primary key, or of the whole row when it has none), recursively, and the first
differing keys are named. Then the target's health: every constraint validated, every index valid and ready, every
owned sequence and identity past ``max(column)``, and optionally ``amcheck`` on every B-tree index.

Large objects are proven apart from the tables (``_large_objects.fingerprint``, computed from the catalogs on each
side: count, data per page, comment, owner and ACL); on a mismatch the differing large object OIDs are named.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import functools
import threading
import time
import typing as t

from ansible_collections.pgshift.ops.plugins.module_utils import (
    _checksums,
    _data,
    _db_state,
    _ext_config,
    _large_objects,
)
from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, connect, db_error
from ansible_collections.pgshift.ops.plugins.module_utils._data_copy import (
    column_max,
    export_snapshot,
    join_snapshot,
    next_value,
    read_sequences,
    sequence_state,
)
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # pragma: no cover - reported by _connection.connect
    pass

BUCKETS = 1024
ROWS_PER_FETCH = 5000
MAX_KEYS = 10
MAX_DEPTH = 4


class Sides:
    """One connection per thread and side; source connections join the shared snapshot."""

    def __init__(self, params: t.Dict[str, ConnParams], snapshot: t.Optional[str]) -> None:
        self.params = params
        self.snapshot = snapshot
        self.local = threading.local()
        self.opened: t.List[t.Any] = []
        self.lock = threading.Lock()

    def conn(self, side: str) -> t.Any:
        conns = getattr(self.local, "conns", None)
        if conns is None:
            conns = self.local.conns = {}
        if side not in conns:
            conn = connect(self.params[side], application_name="pgshift integrity_check")
            if side == "source":
                join_snapshot(conn, self.snapshot)
            else:
                conn.set_session(readonly=True)
            with conn.cursor() as cur:
                cur.execute("SELECT set_config('row_security', 'off', false)")
            conns[side] = conn
            with self.lock:
                self.opened.append(conn)
        return conns[side]

    def close(self) -> None:
        for conn in self.opened:
            with contextlib.suppress(Exception):
                conn.close()


def _row(items: t.Sequence[t.Tuple["sql.Composable", int, bool]], algorithm: str) -> t.List["sql.Composable"]:
    return _checksums.row_items([i[0] for i in items], [i[1] for i in items], algorithm, [i[2] for i in items])


def source_row(tp: _data.TablePlan, algorithm: str) -> t.List["sql.Composable"]:
    """The source side's carried row as ``_checksums.row_items``: production's original values for a type change
    that is not accepted (``CarriedColumn.proof_source``), else the values converted as the copy converts them."""
    return _row([c.proof_source() for c in tp.carried], algorithm)


def target_row(tp: _data.TablePlan, algorithm: str) -> t.List["sql.Composable"]:
    """The target side's carried row as ``_checksums.row_items``: its values, converted back to the source type for
    a type change that is not accepted (``CarriedColumn.proof_target``), computed from the target alone."""
    return _row([c.proof_target() for c in tp.carried], algorithm)


class Side(t.NamedTuple):
    name: str
    from_item: "sql.Composable"
    row: t.List["sql.Composable"]
    key: t.List["sql.Composable"]


def _sides(
    tp: _data.TablePlan, key_columns: t.Optional[t.List[str]], source_side: str, algorithm: str
) -> t.Tuple[Side, Side]:
    by_target = {c.target.name: c for c in tp.carried}
    src_row = source_row(tp, algorithm)
    tgt_row = target_row(tp, algorithm)
    src_key: t.List["sql.Composable"]
    tgt_key: t.List["sql.Composable"]
    if key_columns and all(k in by_target for k in key_columns):
        src_key = [by_target[k].proof_source()[0] for k in key_columns]
        tgt_key = [by_target[k].proof_target()[0] for k in key_columns]
    else:
        src_key = source_row(tp, _checksums.ALGORITHM_ROW_TEXT)
        tgt_key = target_row(tp, _checksums.ALGORITHM_ROW_TEXT)
    if tp.source is None:
        raise PgShiftError("internal error: table %s has no source to compare with" % tp.key)
    return (
        Side(source_side, tp.source.from_clause(), src_row, src_key),
        Side("target", tp.target.from_clause(), tgt_row, tgt_key),
    )


def _row_text(items: t.Sequence["sql.Composable"]) -> "sql.Composable":
    return sql.SQL("ROW({})::text").format(sql.SQL(", ").join(items))


def _conditions(path: t.Sequence[t.Tuple[int, int]], key: "sql.Composable") -> "sql.Composable":
    if not path:
        return sql.SQL("true")
    return sql.SQL(" AND ").join(
        sql.SQL("(hashtextextended({}, {}) & {}) = {}").format(
            key, sql.Literal(seed), sql.Literal(BUCKETS - 1), sql.Literal(bucket)
        )
        for seed, bucket in path
    )


def _both(pool: concurrent.futures.Executor, fn: t.Callable[[Side], t.Any], a: Side, b: Side) -> t.Tuple[t.Any, t.Any]:
    fa = pool.submit(fn, a)
    fb = pool.submit(fn, b)
    return fa.result(), fb.result()


class Checker:
    def __init__(
        self, sides: Sides, plan: _data.Plan, jobs: int, key_by_table: t.Dict[str, t.List[str]], algorithm: str
    ) -> None:
        self.algorithm = algorithm
        self.sides = sides
        self.plan = plan
        self.jobs = jobs
        self.keys = key_by_table

    def _run(self, side: Side, query: "sql.Composable") -> t.List[t.Tuple[t.Any, ...]]:
        conn = self.sides.conn(side.name)
        try:
            with conn.cursor() as cur:
                cur.execute(query)
                return cur.fetchall()
        except psycopg2.Error as exc:
            if side.name == "target":  # read-only, no snapshot to keep: the next query on it starts afresh
                with contextlib.suppress(psycopg2.Error):
                    conn.rollback()
            raise db_error(exc, "reading %s on the %s side" % (query.as_string(conn)[:200], side.name)) from None

    def checksum(self, side: Side) -> t.Tuple[int, str]:
        rows = self._run(side, _checksums.checksum_sql(side.from_item, side.row, self.algorithm))
        return int(rows[0][0]), str(rows[0][1])

    def compare_table(self, pool: concurrent.futures.Executor, tp: _data.TablePlan) -> t.Dict[str, t.Any]:
        source_side = "ledger" if tp.ledger and "ledger" in self.sides.params else "source"
        if tp.source is None:
            # A new table (or a ledger table the ledger database lacks): it must be empty.
            target = Side("target", tp.target.from_clause(), target_row(tp, self.algorithm), [])
            rows, checksum = self.checksum(target) if tp.carried else self._count(target)
            return {
                "source": None,
                "source_rows": 0,
                "target_rows": rows,
                "source_checksum": "0",
                "target_checksum": checksum,
                "match": rows == 0,
                "seconds": 0.0,
            }
        started = time.monotonic()
        src, tgt = _sides(tp, self.keys.get(tp.key), source_side, self.algorithm)
        src_future = pool.submit(self.checksum, src)
        tgt_future = pool.submit(self.checksum, tgt)
        try:
            t_rows, t_sum = tgt_future.result()
        except PgShiftError as exc:
            src_future.result()
            if not any(c.compared_as_source for c in tp.carried):
                raise
            # A target value that does not read back as production's type (bigint -> real: 1.2345679e+11) is a
            # changed value, reported as this table's difference.
            return {
                "source": tp.source.key,
                "source_rows": None,
                "target_rows": None,
                "source_checksum": None,
                "target_checksum": None,
                "match": False,
                "error": "target values do not read back as production's types: %s" % exc.msg,
                "seconds": round(time.monotonic() - started, 3),
            }
        s_rows, s_sum = src_future.result()
        return {
            "source": tp.source.key,
            "source_rows": s_rows,
            "target_rows": t_rows,
            "source_checksum": s_sum,
            "target_checksum": t_sum,
            "match": s_rows == t_rows and s_sum == t_sum,
            "seconds": round(time.monotonic() - started, 3),
        }

    def _count(self, side: Side) -> t.Tuple[int, str]:
        rows = self._run(side, sql.SQL("SELECT count(*) FROM {} AS t").format(side.from_item))
        return int(rows[0][0]), "0"

    # -------------------------------------------------------------------------------------- narrowing down
    def _buckets(self, side: Side, path: t.Sequence[t.Tuple[int, int]], seed: int) -> t.Dict[int, t.Tuple[int, str]]:
        key = _row_text(side.key)
        query = sql.SQL(
            "SELECT (hashtextextended({key}, {seed}) & {mask})::int, count(*), "
            "sum({row})::text FROM {src} AS t WHERE {cond} GROUP BY 1"
        ).format(
            key=key,
            seed=sql.Literal(seed),
            mask=sql.Literal(BUCKETS - 1),
            row=_checksums.row_hash(side.row, self.algorithm),
            src=side.from_item,
            cond=_conditions(path, key),
        )
        return {int(r[0]): (int(r[1]), str(r[2])) for r in self._run(side, query)}

    def _rows(self, side: Side, path: t.Sequence[t.Tuple[int, int]]) -> t.Dict[str, t.Counter[int]]:
        key = _row_text(side.key)
        query = sql.SQL("SELECT {}, {} FROM {} AS t WHERE {}").format(
            key, _checksums.row_hash(side.row, self.algorithm), side.from_item, _conditions(path, key)
        )
        out: t.Dict[str, t.Counter[int]] = collections.defaultdict(collections.Counter)
        for k, h in self._run(side, query):
            out[k][int(h)] += 1
        return out

    def narrow(self, pool: concurrent.futures.Executor, tp: _data.TablePlan) -> t.Dict[str, t.Any]:
        source_side = "ledger" if tp.ledger and "ledger" in self.sides.params else "source"
        key_cols = self.keys.get(tp.key)
        src, tgt = _sides(tp, key_cols, source_side, self.algorithm)
        keyed = bool(key_cols) and all(k in {c.target.name for c in tp.carried} for k in key_cols or [])
        found: t.List[t.Dict[str, str]] = []

        def walk(path: t.List[t.Tuple[int, int]], depth: int) -> None:
            seed = depth + 1
            a, b = _both(pool, functools.partial(self._buckets, path=path, seed=seed), src, tgt)
            for bucket in sorted(set(a) | set(b)):
                if len(found) >= MAX_KEYS:
                    return
                if a.get(bucket) == b.get(bucket):
                    continue
                here = path + [(seed, bucket)]
                size = max(a.get(bucket, (0, ""))[0], b.get(bucket, (0, ""))[0])
                if size > ROWS_PER_FETCH and depth + 1 < MAX_DEPTH:
                    walk(here, depth + 1)
                    continue
                ra, rb = _both(pool, functools.partial(self._rows, path=here), src, tgt)
                for k in sorted(set(ra) | set(rb)):
                    if ra.get(k) == rb.get(k):
                        continue
                    na, nb = sum(ra.get(k, {}).values()), sum(rb.get(k, {}).values())
                    if not na:
                        what = "only in target"
                    elif not nb:
                        what = "missing in target"
                    elif nb > na:
                        what = "duplicated in target (%d rows for %d)" % (nb, na)
                    elif nb < na:
                        what = "fewer copies in target (%d rows for %d)" % (nb, na)
                    else:
                        what = "changed"
                    found.append({"key": k if len(k) <= 200 else k[:197] + "...", "difference": what})
                    if len(found) >= MAX_KEYS:
                        return

        walk([], 0)
        found.sort(key=lambda d: d["key"])
        return {
            "table": tp.key,
            "keyed_by": ("(%s)" % ", ".join(key_cols or [])) if keyed else "whole row (no primary key)",
            "first_differing_keys": found,
        }


def _key_columns(tgt_conn: t.Any) -> t.Dict[str, t.List[str]]:
    keys: t.Dict[str, t.List[str]] = {}
    for kc in _data.read_key_constraints(tgt_conn):
        if kc.type == "p" or (kc.type == "u" and kc.table not in keys):
            keys[kc.table] = kc.columns
    return keys


def target_health(conn: t.Any, amcheck: bool, check_mode: bool) -> t.Dict[str, t.Any]:
    out: t.Dict[str, t.Any] = {"changed": False}
    system = ("pg_catalog", "information_schema")
    with conn.cursor() as cur:
        cur.execute(
            "SELECT c.conrelid::regclass::text, c.conname FROM pg_constraint c "
            "JOIN pg_namespace n ON n.oid = c.connamespace "
            "WHERE NOT c.convalidated AND n.nspname <> ALL(%s) ORDER BY 1, 2",
            (list(system),),
        )
        out["unvalidated_constraints"] = ["%s.%s" % (r[0], r[1]) for r in cur.fetchall()]
        cur.execute(
            "SELECT i.indexrelid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT (i.indisvalid AND i.indisready AND i.indislive) "
            "AND n.nspname <> ALL(%s) ORDER BY 1",
            (list(system),),
        )
        out["invalid_indexes"] = [r[0] for r in cur.fetchall()]
    behind = []
    for seq in read_sequences(conn):
        if not (seq.table_schema and seq.table_name and seq.column):
            continue
        last, called = sequence_state(conn, seq.schema, seq.name)
        top = column_max(conn, seq.table_schema, seq.table_name, seq.column, seq.increment)
        nxt = next_value(last, called, seq.increment)
        if top is not None and (nxt <= top if seq.increment > 0 else nxt >= top):
            behind.append(
                {"sequence": seq.key, "table": seq.table, "column": seq.column, "next_value": nxt, "column_max": top}
            )
    out["sequences_behind"] = behind
    out["amcheck"] = None
    if amcheck:
        with conn.cursor() as cur:
            cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'amcheck'")
            installed = cur.fetchone() is not None
        if not installed and check_mode:
            out["amcheck"] = {"checked": 0, "errors": [], "note": "extension amcheck would be created"}
            return out
        if not installed:
            conn.rollback()
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
            conn.autocommit = False
            out["changed"] = True
        errors = []
        checked = 0
        with conn.cursor() as cur:
            cur.execute(
                "SELECT i.indexrelid, i.indexrelid::regclass::text FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid "
                "JOIN pg_am am ON am.oid = c.relam JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE am.amname = 'btree' AND c.relkind = 'i' AND i.indisvalid AND c.relpersistence <> 't' "
                "AND n.nspname <> ALL(%s) "
                "AND n.nspname NOT LIKE 'pg\\_toast%%' ORDER BY 2",
                (list(system),),
            )
            for oid, name in cur.fetchall():
                cur.execute("SAVEPOINT pgshift_amcheck")
                try:
                    cur.execute("SELECT bt_index_check(%s::regclass, true)", (oid,))
                    checked += 1
                    cur.execute("RELEASE SAVEPOINT pgshift_amcheck")
                except psycopg2.Error as exc:
                    cur.execute("ROLLBACK TO SAVEPOINT pgshift_amcheck")
                    errors.append("%s: %s" % (name, str(exc).strip().splitlines()[0]))
        out["amcheck"] = {"checked": checked, "errors": errors}
    return out


def integrity_check(
    source: ConnParams,
    target: ConnParams,
    mapping_file: t.Optional[str],
    jobs: int = 2,
    ledger_tables: t.Sequence[str] = _data.DEFAULT_LEDGER_TABLES,
    ledger_from: t.Optional[ConnParams] = None,
    snapshot: t.Optional[str] = None,
    amcheck: bool = False,
    check_mode: bool = False,
    database_state: bool = True,
    only_tables: t.Optional[t.Collection[str]] = None,
) -> t.Dict[str, t.Any]:
    """Prove the target equal to the source (see the module). ``only_tables`` (target table keys) compares those
    tables' rows only; everything else (large objects, extension configuration, constraints, sequences, database
    state) is still proven: the online window proves the tables carried in it that way, the stream's delta proof
    the others."""
    jobs = max(1, int(jobs))
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        src_conn = stack.enter_context(contextlib.closing(connect(source, application_name="pgshift integrity_check")))
        tgt_conn = stack.enter_context(contextlib.closing(connect(target, application_name="pgshift integrity_check")))
        led_conn = None
        if ledger_from is not None:
            led_conn = stack.enter_context(
                contextlib.closing(connect(ledger_from, application_name="pgshift integrity_check"))
            )
        plan = _data.prepare_plan(src_conn, tgt_conn, mapping_file, ledger_tables, led_conn)
        if led_conn is not None:
            led_conn.rollback()
        key_by_table = _key_columns(tgt_conn)
        ext_config = _ext_config.plan(src_conn, tgt_conn)
        tgt_conn.rollback()
        src_conn.rollback()
        used_snapshot = snapshot if snapshot else export_snapshot(src_conn)
        params = {"source": source, "target": target}
        if ledger_from is not None:
            params["ledger"] = ledger_from
        sides = Sides(params, used_snapshot)
        stack.callback(sides.close)
        # One algorithm for every side: the one the oldest server involved can compute.
        servers = [int(c.server_version) for c in (src_conn, tgt_conn, led_conn) if c is not None]
        algorithm = _checksums.algorithm_for(min(servers))
        checker = Checker(sides, plan, jobs, key_by_table, algorithm)
        tables: t.Dict[str, t.Dict[str, t.Any]] = {}
        # Two threads per table (source and target side at once), ``jobs`` tables at a time.
        with concurrent.futures.ThreadPoolExecutor(
            max_workers=2 * jobs
        ) as sides_pool, concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as table_pool:
            compared = [tp for tp in plan.tables if only_tables is None or tp.key in only_tables]
            futures = {table_pool.submit(checker.compare_table, sides_pool, tp): tp for tp in compared}
            for fut in concurrent.futures.as_completed(futures):
                tables[futures[fut].key] = fut.result()
            mismatches = []
            for tp in compared:
                info = tables[tp.key]
                if info["match"]:
                    continue
                entry: t.Dict[str, t.Any] = {
                    "table": tp.key,
                    "source_rows": info["source_rows"],
                    "target_rows": info["target_rows"],
                }
                if info.get("error"):
                    entry["error"] = info["error"]
                elif tp.source is not None and tp.carried:
                    entry.update(checker.narrow(sides_pool, tp))
                mismatches.append(entry)
            large_objects = compare_large_objects(sides, sides_pool)
        ext_tables = _ext_config.prove(sides.conn("source"), sides.conn("target"), ext_config, algorithm)
        try:
            accepted_changes = _data.accepted_change_counts(sides.conn("source"), tgt_conn, plan)
        except psycopg2.Error as exc:
            raise db_error(exc, "counting the accepted value changes on the source") from None
        tgt_conn.rollback()
        try:
            health = target_health(tgt_conn, amcheck, check_mode)
        except psycopg2.Error as exc:
            raise db_error(exc, "checking the target's constraints, indexes and sequences") from None
        state: t.Dict[str, t.Any] = {"differences": [], "privileges_not_carried": []}
        if database_state:
            # production's database-level state and object privileges, read from the catalogs on both sides
            src_conn.rollback()
            tgt_conn.rollback()
            state = _db_state.prove(src_conn, tgt_conn)
        with contextlib.suppress(psycopg2.Error):
            src_conn.rollback()
    amcheck_errors = (health["amcheck"] or {}).get("errors") or []
    ok = not (
        mismatches
        or not large_objects["match"]
        or not all(v["match"] for v in ext_tables.values())
        or health["invalid_indexes"]
        or health["unvalidated_constraints"]
        or health["sequences_behind"]
        or amcheck_errors
        or plan.unaccepted
        or state["differences"]
    )
    return {
        "ok": ok,
        "changed": health.pop("changed"),
        "snapshot": used_snapshot,
        "row_hash": "column hashes" if checker.algorithm == _checksums.ALGORITHM_VALUES else "row text",
        "checksum_algorithm": checker.algorithm,
        "tables": tables,
        "mismatches": mismatches,
        "large_objects": large_objects,
        "extension_config_tables": ext_tables,
        "lost": plan.lost(),
        "accepted_changes": accepted_changes,
        "seconds": round(time.monotonic() - started, 3),
        "database_state_differences": state["differences"],
        "privileges_not_carried": state["privileges_not_carried"],
        **health,
    }


def compare_large_objects(sides: Sides, pool: concurrent.futures.Executor) -> t.Dict[str, t.Any]:
    """Large object fingerprints of both sides (the source in the snapshot); on a mismatch, the OIDs that differ."""
    fa = pool.submit(lambda: _large_objects.fingerprint(sides.conn("source")))
    fb = pool.submit(lambda: _large_objects.fingerprint(sides.conn("target")))
    source, target = fa.result(), fb.result()
    match = _large_objects.compare_fingerprints(source, target) is None
    out: t.Dict[str, t.Any] = {"source": source, "target": target, "match": match}
    if not match:
        try:
            out["differences"] = _large_objects.differences(sides.conn("source"), sides.conn("target"))
        except psycopg2.Error as exc:
            raise db_error(exc, "naming the large objects that differ") from None
    return out


def summary(result: t.Dict[str, t.Any]) -> str:
    parts = []
    large_objects = result.get("large_objects") or {}
    if large_objects and not large_objects.get("match"):
        parts.append(
            "large objects differ (source %d, target %d)%s"
            % (
                large_objects["source"]["count"],
                large_objects["target"]["count"],
                ": " + _large_objects.describe_differences(large_objects["differences"])
                if large_objects.get("differences")
                else "",
            )
        )
    for key, ext in sorted((result.get("extension_config_tables") or {}).items()):
        if not ext["match"]:
            parts.append(
                "extension configuration table %s (extension %s): source %d rows, target %d rows, checksums %s"
                % (
                    key,
                    ext["extension"],
                    ext["source_rows"],
                    ext["target_rows"],
                    "equal" if ext["source_checksum"] == ext["target_checksum"] else "differ",
                )
            )
    for m in result["mismatches"]:
        if m.get("error"):
            parts.append("table %s differs: %s" % (m["table"], m["error"]))
            continue
        keys = ", ".join("%s %s" % (k["key"], k["difference"]) for k in m.get("first_differing_keys", [])[:5])
        parts.append(
            "table %s differs (source %d rows, target %d rows)%s"
            % (m["table"], m["source_rows"], m["target_rows"], (": " + keys) if keys else "")
        )
    if result["invalid_indexes"]:
        parts.append("invalid indexes: %s" % ", ".join(result["invalid_indexes"]))
    if result["unvalidated_constraints"]:
        parts.append("constraints not validated: %s" % ", ".join(result["unvalidated_constraints"]))
    for s in result["sequences_behind"]:
        parts.append(
            "sequence %s would return %d, not past max(%s.%s) = %d"
            % (s["sequence"], s["next_value"], s["table"], s["column"], s["column_max"])
        )
    for e in (result.get("amcheck") or {}).get("errors") or []:
        parts.append("amcheck: %s" % e)
    parts += result.get("database_state_differences") or []
    if result["lost"]["tables"] or result["lost"]["columns"]:
        parts.append("unaccepted loss: %s" % ", ".join(result["lost"]["tables"] + result["lost"]["columns"]))
    return "; ".join(parts)


def fail_if_not_ok(result: t.Dict[str, t.Any]) -> None:
    if not result["ok"]:
        raise PgShiftError("integrity check failed: %s" % summary(result), **result)
