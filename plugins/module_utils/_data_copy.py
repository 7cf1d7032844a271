# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""Execute a carry-over plan: stream every table from the source into the target with COPY, in parallel.

Each table is one pipeline of two ``psql`` processes: ``COPY (SELECT ...) TO STDOUT`` on the source, inside a
``REPEATABLE READ`` transaction that imports the shared exported snapshot, and ``TRUNCATE`` + ``COPY ... FROM STDIN
(FREEZE)`` on the target in one transaction. Between them a relay thread moves the bytes in 1 MiB chunks (rows never
become Python objects; the controller's memory stays flat). Binary format when every carried column keeps its type,
text otherwise (the target's input functions convert). The target commits only after the source side has exited
cleanly: if the source fails the target psql is killed, its transaction rolls back and the table stays empty.

Large objects (``_large_objects``) are copied beside the tables by one more worker, in the same snapshot, with their
OIDs, owners, ACLs and comments.

Sequences are then set from the source and checked to be past ``max(column)`` of the column that owns them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import os
import re
import subprocess
import tempfile
import threading
import time
import typing as t

from ansible_collections.pgshift.ops.plugins.module_utils import _data, _ext_config, _large_objects, _post_data
from ansible_collections.pgshift.ops.plugins.module_utils._clients import find_client
from ansible_collections.pgshift.ops.plugins.module_utils._connection import (
    ConnParams,
    client_environment,
    connect,
    conninfo,
    db_error,
    scrub,
    server_major,
)
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError
from ansible_collections.pgshift.ops.plugins.module_utils._identity import table_key

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # pragma: no cover - reported by _connection.connect
    pass

CHUNK = 1 << 20
_SNAPSHOT_RE = re.compile(r"^[0-9A-Fa-f]+-[0-9A-Fa-f]+(-[0-9]+)?$")

LogFn = t.Callable[[str], None]


def export_snapshot(conn: t.Any) -> str:
    """Open a REPEATABLE READ READ ONLY transaction on ``conn`` and export its snapshot; keep ``conn`` open."""
    conn.autocommit = False
    try:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with conn.cursor() as cur:
            cur.execute("SELECT pg_export_snapshot()")
            return str(cur.fetchone()[0])
    except psycopg2.Error as exc:
        raise db_error(exc, "exporting a snapshot of the source") from None


def check_snapshot_id(snapshot: str) -> str:
    if not _SNAPSHOT_RE.match(snapshot):
        raise PgShiftError("snapshot %r is not a snapshot id as pg_export_snapshot() returns it" % snapshot)
    return snapshot


def join_snapshot(conn: t.Any, snapshot: t.Optional[str]) -> None:
    """Start a REPEATABLE READ READ ONLY transaction on ``conn`` that sees ``snapshot`` (when given)."""
    conn.autocommit = False
    conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
    if snapshot:
        with conn.cursor() as cur:
            try:
                cur.execute("SET TRANSACTION SNAPSHOT %s", (check_snapshot_id(snapshot),))
            except psycopg2.Error as exc:
                raise db_error(exc, "importing snapshot %s" % snapshot) from None


class CopyJob(t.NamedTuple):
    plan: _data.TablePlan
    source: ConnParams
    snapshot: t.Optional[str]
    source_sql: t.List[str]
    target_sql: t.List[str]


def _statements(
    tp: _data.TablePlan, snapshot: t.Optional[str], src_conn: t.Any, tgt_conn: t.Any
) -> t.Tuple[t.List[str], t.List[str]]:
    fmt = sql.SQL(tp.format)
    source = ["BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"]
    if snapshot:
        source.append(
            sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(check_snapshot_id(snapshot))).as_string(src_conn)
        )
    source.append(sql.SQL("COPY ({}) TO STDOUT (FORMAT {})").format(tp.select_sql(), fmt).as_string(src_conn))
    source.append("COMMIT")
    if tp.target.partitioned:
        truncate = sql.SQL("TRUNCATE {}").format(tp.target.ident)
        options = sql.SQL("FORMAT {}").format(fmt)
    else:
        truncate = sql.SQL("TRUNCATE ONLY {}").format(tp.target.ident)
        options = sql.SQL("FORMAT {}, FREEZE").format(fmt)
    target = [
        truncate.as_string(tgt_conn),
        sql.SQL("COPY {} ({}) FROM STDIN ({})")
        .format(tp.target.ident, tp.target_columns(), options)
        .as_string(tgt_conn),
    ]
    return source, target


def _psql_argv(psql: str, statements: t.Sequence[str], quiet: bool, dsn: str) -> t.List[str]:
    argv = [psql, "-X", "-v", "ON_ERROR_STOP=1", "--no-psqlrc", "--dbname=" + dsn]
    if quiet:
        argv.append("-q")
    for statement in statements:
        argv += ["-c", statement]
    return argv


def _tail(handle: t.IO[bytes], secret: t.Optional[str]) -> str:
    handle.seek(0)
    text = handle.read().decode("utf-8", "replace").strip()
    return scrub("\n".join(text.splitlines()[-6:]), secret)


class _Reader:
    """File-like view of the source psql's stdout for ``copy_expert``: counts bytes, stops when told to."""

    def __init__(self, fd: int, stop: threading.Event) -> None:
        self.fd = fd
        self.stop = stop
        self.bytes = 0

    def read(self, size: int = CHUNK) -> bytes:
        if self.stop.is_set():
            raise PgShiftError("stopped because another table failed")
        chunk = os.read(self.fd, size)
        self.bytes += len(chunk)
        return chunk

    def readline(self, size: int = -1) -> bytes:  # pragma: no cover - copy_expert only calls read()
        return self.read(CHUNK if size < 0 else size)


def run_pipeline(
    job: CopyJob,
    target: ConnParams,
    psql_source: str,
    stop: threading.Event,
    gate: t.Optional[t.Callable[[bool], bool]] = None,
) -> t.Dict[str, t.Any]:
    """Stream one table; returns {source, rows, bytes, seconds, format}. Raises PgShiftError naming the table.

    Source: a psql process running COPY TO STDOUT in the shared snapshot. Target: this thread's own connection, which
    reads the psql's stdout in 1 MiB blocks (``copy_expert``) inside one transaction (TRUNCATE + COPY ... FREEZE), and
    commits only after the source psql exited cleanly. ``gate`` (the parts of a split table) is told whether this
    part may commit and answers whether every part may: the parts commit together or not at all.
    """
    tp = job.plan
    if stop.is_set():
        raise PgShiftError("copy of table %s was not started because another table failed" % tp.key, table=tp.key)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        src_env = stack.enter_context(client_environment(job.source))
        src_err = stack.enter_context(tempfile.TemporaryFile())
        src_env["PGAPPNAME"] = "pgshift data_copy source"
        tgt = stack.enter_context(contextlib.closing(connect(target, application_name="pgshift data_copy target")))
        src_proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
            _psql_argv(psql_source, job.source_sql, quiet=True, dsn=conninfo(job.source, "pgshift data_copy source")),
            env=src_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=src_err,
        )
        if src_proc.stdout is None:  # pragma: no cover - stdout=PIPE always gives one
            raise PgShiftError("internal error: no pipe from psql")
        reader = _Reader(src_proc.stdout.fileno(), stop)
        rows = -1
        failure: t.Optional[str] = None
        try:
            with tgt.cursor() as cur:
                for statement in job.target_sql[:-1]:
                    cur.execute(statement)
                cur.copy_expert(job.target_sql[-1], reader, size=CHUNK)
                rows = cur.rowcount
        except (psycopg2.Error, PgShiftError) as exc:
            failure = (
                str(getattr(exc, "msg", None) or str(exc)).strip().splitlines()[0]
                if str(exc).strip()
                else type(exc).__name__
            )
            primary = getattr(getattr(exc, "diag", None), "message_primary", None)
            if primary:
                failure = str(primary)
            src_proc.kill()
        src_rc = src_proc.wait()
        src_proc.stdout.close()
        seconds = round(time.monotonic() - started, 3)
        commit = failure is None and src_rc == 0
        if gate is not None and not gate(commit) and commit:
            with contextlib.suppress(psycopg2.Error):
                tgt.rollback()
            raise PgShiftError(
                "copy of table %s was rolled back because another part of it failed" % tp.key, table=tp.key
            )
        if commit:
            try:
                tgt.commit()
            except psycopg2.Error as exc:
                failure = str(exc).strip().splitlines()[0]
        else:
            with contextlib.suppress(psycopg2.Error):
                tgt.rollback()
        if stop.is_set() and (failure or src_rc):
            raise PgShiftError("copy of table %s was stopped because another table failed" % tp.key, table=tp.key)
        if failure is not None and src_rc in (0, -9):
            raise PgShiftError(
                "copy of table %s failed writing the target: %s; the target table was rolled back and stays empty"
                % (tp.key, scrub(failure, target.password)),
                table=tp.key,
            )
        if src_rc != 0:
            raise PgShiftError(
                "copy of table %s failed reading the source (psql exit %d): %s; the target table was rolled back and "
                "stays empty" % (tp.key, src_rc, _tail(src_err, job.source.password)),
                table=tp.key,
            )
    return {
        "source": tp.source.key if tp.source else None,
        "rows": rows,
        "bytes": reader.bytes,
        "seconds": seconds,
        "format": tp.format,
    }


def run_large_objects(
    source: ConnParams, target: ConnParams, snapshot: str, stop: threading.Event, log: t.Optional[LogFn] = None
) -> t.Dict[str, t.Any]:
    """Copy every large object of the source, read in ``snapshot``, on connections of its own."""
    with contextlib.closing(
        connect(source, application_name="pgshift data_copy large objects")
    ) as src, contextlib.closing(connect(target, application_name="pgshift data_copy large objects")) as tgt:
        join_snapshot(src, snapshot)
        try:
            return _large_objects.copy_large_objects(src, tgt, stop=stop.is_set, log=log)
        finally:
            with contextlib.suppress(psycopg2.Error):
                src.rollback()


# ------------------------------------------------------------------------------------------------ split tables
# A table at least this large (source, pg_total_relation_size) is copied by several workers, one range of its
# blocks each (see docs/data.md, "Split tables").
SPLIT_BYTES = 64 << 20
SPLIT_MIN_SERVER = 14  # TID range scans: each part reads only its blocks


def block_ranges(blocks: int, parts: int) -> t.List[t.Tuple[t.Optional[int], t.Optional[int]]]:
    """``parts`` ranges of block numbers covering every block, the first open below and the last open above (rows
    the snapshot sees cannot lie past the size measured after it, but the last range does not rely on that)."""
    parts = max(1, min(parts, blocks))
    bounds = [blocks * i // parts for i in range(1, parts)]
    lows: t.List[t.Optional[int]] = [None] + list(bounds)
    highs: t.List[t.Optional[int]] = list(bounds) + [None]
    return list(zip(lows, highs))


def source_blocks(conn: t.Any, table: _data.Table) -> int:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::bigint",
            (table.ident.as_string(cur),),
        )
        return int(cur.fetchone()[0])


def part_jobs(
    job: CopyJob, ranges: t.Sequence[t.Tuple[t.Optional[int], t.Optional[int]]], src_conn: t.Any, tgt_conn: t.Any
) -> t.List[CopyJob]:
    """One job per block range: ``COPY (SELECT .. WHERE ctid >= '(lo,0)' AND ctid < '(hi,0)')`` in the same
    snapshot on the source; a plain COPY on the target (the table is emptied once before, not in each part, so
    no FREEZE), committed together with the other parts."""
    tp = job.plan
    fmt = sql.SQL(tp.format)
    out = []
    for low, high in ranges:
        conds = []
        if low is not None:
            conds.append(sql.SQL("ctid >= {}::tid").format(sql.Literal("(%d,0)" % low)))
        if high is not None:
            conds.append(sql.SQL("ctid < {}::tid").format(sql.Literal("(%d,0)" % high)))
        select = tp.select_sql()
        if conds:
            select = sql.SQL("{} WHERE {}").format(select, sql.SQL(" AND ").join(conds))
        source_sql = list(job.source_sql)
        source_sql[-2] = sql.SQL("COPY ({}) TO STDOUT (FORMAT {})").format(select, fmt).as_string(src_conn)
        target_sql = [
            sql.SQL("COPY {} ({}) FROM STDIN (FORMAT {})")
            .format(tp.target.ident, tp.target_columns(), fmt)
            .as_string(tgt_conn)
        ]
        out.append(CopyJob(tp, job.source, job.snapshot, source_sql, target_sql))
    return out


def run_split(
    job: CopyJob,
    parts: t.Sequence[CopyJob],
    ranges: t.Sequence[t.Tuple[t.Optional[int], t.Optional[int]]],
    target: ConnParams,
    psql_source: str,
    stop: threading.Event,
) -> t.Dict[str, t.Any]:
    """Copy one table by ``len(parts)`` workers at once; the parts commit together (a barrier: each waits until
    every part has streamed its rows), so a failing part leaves the table empty as a single pipeline would."""
    tp = job.plan
    started = time.monotonic()
    with contextlib.closing(connect(target, autocommit=True, application_name="pgshift data_copy target")) as conn:
        with conn.cursor() as cur:
            cur.execute(job.target_sql[0])  # TRUNCATE ONLY, committed before the parts start
    barrier = threading.Barrier(len(parts))

    def gate(ok: bool) -> bool:
        if not ok:
            barrier.abort()
            return False
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return False
        return True

    results: t.List[t.Optional[t.Dict[str, t.Any]]] = [None] * len(parts)
    errors: t.List[t.Tuple[int, BaseException]] = []

    def one(i: int) -> None:
        try:
            results[i] = run_pipeline(parts[i], target, psql_source, stop, gate)
        except BaseException as exc:  # noqa: BLE001 - collected, the first one is raised
            barrier.abort()
            errors.append((i, exc))

    threads = [threading.Thread(target=one, args=(i,), name="pgshift-part-%d" % i) for i in range(len(parts))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        # a part may have committed before another's commit failed: empty the table again, as promised
        with contextlib.suppress(Exception), contextlib.closing(connect(target, autocommit=True)) as conn:
            with conn.cursor() as cur:
                cur.execute(job.target_sql[0])
        first = sorted(errors, key=lambda e: isinstance(e[1], PgShiftError) and "another part" in str(e[1]))[0][1]
        if isinstance(first, PgShiftError):
            raise first
        raise PgShiftError("copy of table %s failed: %s" % (tp.key, first), table=tp.key)
    done = [r for r in results if r is not None]
    return {
        "source": tp.source.key if tp.source else None,
        "rows": sum(r["rows"] for r in done),
        "bytes": sum(r["bytes"] for r in done),
        "seconds": round(time.monotonic() - started, 3),
        "format": tp.format,
        "parts": len(parts),
        "ranges": [list(r) for r in ranges],
    }


# ------------------------------------------------------------------------------------------------ the scheduler
class Task:
    """One unit of work for the worker budget: a table's copy (``width`` workers when split), a table's indexes and
    constraints, a foreign key, the large objects. ``locks``: the tables it writes or locks; two tasks that share
    one never run at once (two foreign keys between the same tables would deadlock)."""

    def __init__(
        self,
        name: str,
        run: t.Callable[[], t.Dict[str, t.Any]],
        priority: float,
        locks: t.Iterable[str] = (),
        width: int = 1,
        after: t.Iterable[t.Optional["Task"]] = (),
    ) -> None:
        self.name = name
        self.run = run
        self.priority = priority
        self.locks = frozenset(locks)
        self.width = width
        self.after = [a for a in after if a is not None]
        self.state = "waiting"
        self.result: t.Optional[t.Dict[str, t.Any]] = None
        self.error: t.Optional[BaseException] = None
        self.started = 0.0
        self.ended = 0.0


def run_tasks(tasks: t.Sequence[Task], jobs: int, stop: threading.Event) -> t.List[Task]:
    """Run ``tasks`` with at most ``jobs`` workers busy: the highest priority first among those whose dependencies
    are done and whose tables are free (a task wider than the free workers waits for them while the smaller ones
    behind it use the free workers). The first failure stops the rest (``stop``: running copies stop
    reading, running builds are killed); returns the failed tasks, the first failure first."""
    import queue  # noqa: PLC0415

    done_q: "queue.Queue[Task]" = queue.Queue()
    order = {id(task): i for i, task in enumerate(tasks)}
    pending = list(tasks)
    running: t.List[Task] = []
    failed: t.List[Task] = []

    def work(task: Task) -> None:
        try:
            task.result = task.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the caller, with the task's name
            task.error = exc
        task.ended = time.monotonic()
        done_q.put(task)

    while pending or running:
        if not stop.is_set():
            free = jobs - sum(r.width for r in running)
            busy = set().union(*(r.locks for r in running)) if running else set()
            ready = sorted(
                (p for p in pending if all(a.state == "done" for a in p.after)),
                key=lambda p: (-p.priority, order[id(p)]),
            )
            for task in ready:
                if task.locks & busy:
                    continue
                width = min(task.width, jobs)
                if width > free:
                    # a split table waits for enough workers; smaller tasks behind it may use the free ones
                    # meanwhile (they are all smaller, and finitely many: it gets its workers)
                    continue
                task.width = width
                task.state = "running"
                task.started = time.monotonic()
                pending.remove(task)
                running.append(task)
                free -= width
                busy |= task.locks
                threading.Thread(target=work, args=(task,), name="pgshift-" + task.name, daemon=True).start()
        else:
            for task in pending:
                task.state = "skipped"
            pending = []
        if not running:
            if pending:  # pragma: no cover - a dependency that can never be met is a programming error
                raise PgShiftError("internal error: tasks left that cannot start: %s" % [p.name for p in pending])
            break
        task = done_q.get()
        running.remove(task)
        if task.error is not None:
            task.state = "failed"
            if not stop.is_set():
                failed.insert(0, task)
                stop.set()
            else:
                failed.append(task)
        else:
            task.state = "done"
    return failed


def run_builds(
    table: str,
    entries: t.Sequence[_post_data.TocEntry],
    script: _post_data.Script,
    target: ConnParams,
    stop: threading.Event,
) -> t.Dict[str, t.Any]:
    """Run the archive's DDL of ``entries`` (one table's indexes and constraints, or one foreign key) on the target
    in one transaction, after pg_restore's own session settings; cancelled when ``stop`` is set."""
    started = time.monotonic()
    what = ", ".join(_post_data.describe(e) for e in entries)
    if stop.is_set():
        raise PgShiftError("building %s was not started because another table failed" % what, table=table)
    conn = connect(target, application_name="pgshift data_copy build")
    finished = threading.Event()

    def watch() -> None:
        while not finished.wait(0.2):
            if stop.is_set():
                with contextlib.suppress(Exception):
                    conn.cancel()
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with conn.cursor() as cur:
            cur.execute(script.preamble)
            for entry in entries:
                cur.execute(script.statements[entry.dump_id])
        conn.commit()
    except psycopg2.Error as exc:
        with contextlib.suppress(psycopg2.Error):
            conn.rollback()
        if stop.is_set():
            raise PgShiftError("building %s was stopped because another table failed" % what, table=table) from None
        message = getattr(getattr(exc, "diag", None), "message_primary", None) or str(exc).strip()
        raise PgShiftError(
            "building %s of table %s during the copy failed: %s" % (what, table, scrub(message, target.password)),
            table=table,
        ) from None
    finally:
        finished.set()
        watcher.join()
        conn.close()
    return {
        "table": table,
        "built": [_post_data.describe(e) for e in entries],
        "seconds": round(time.monotonic() - started, 3),
    }


# ------------------------------------------------------------------------------------------------ sequences
_SEQUENCES_SQL = """
SELECT sn.nspname, s.relname, tn.nspname, t.relname, a.attname, seq.seqincrement
FROM pg_class s
JOIN pg_namespace sn ON sn.oid = s.relnamespace
JOIN pg_sequence seq ON seq.seqrelid = s.oid
LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid
     AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i')
LEFT JOIN pg_class t ON t.oid = d.refobjid
LEFT JOIN pg_namespace tn ON tn.oid = t.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE s.relkind = 'S' AND sn.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY 1, 2
"""


class SequenceInfo(t.NamedTuple):
    schema: str
    name: str
    table: t.Optional[str]
    table_schema: t.Optional[str]
    table_name: t.Optional[str]
    column: t.Optional[str]
    increment: int

    @property
    def key(self) -> str:
        return table_key(self.schema, self.name)


def read_sequences(conn: t.Any) -> t.List[SequenceInfo]:
    with conn.cursor() as cur:
        cur.execute(_SEQUENCES_SQL)
        out = []
        for r in cur.fetchall():
            table = None
            if r[3] is not None:
                table = table_key(r[2], r[3])
            out.append(SequenceInfo(r[0], r[1], table, r[2], r[3], r[4], int(r[5])))
        return out


def sequence_state(conn: t.Any, schema: str, name: str) -> t.Tuple[int, bool]:
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(schema, name)))
        row = cur.fetchone()
        return int(row[0]), bool(row[1])


def column_max(conn: t.Any, schema: str, table: str, column: str, increment: int) -> t.Optional[int]:
    agg = sql.SQL("max") if increment > 0 else sql.SQL("min")
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT {}({})::bigint FROM {}").format(agg, sql.Identifier(column), sql.Identifier(schema, table))
        )
        value = cur.fetchone()[0]
        return None if value is None else int(value)


def next_value(last_value: int, is_called: bool, increment: int) -> int:
    return last_value + increment if is_called else last_value


def set_sequences(
    plan: _data.Plan, src_conn: t.Any, tgt_conn: t.Any, ledger_conn: t.Any, check_mode: bool
) -> t.List[t.Dict[str, t.Any]]:
    """Set every target sequence from its source counterpart, then make sure each is past its column's max."""
    plans = plan.by_key()
    src_seqs = read_sequences(src_conn)
    led_seqs = read_sequences(ledger_conn) if ledger_conn is not None else []
    by_owner: t.Dict[t.Tuple[t.Optional[str], t.Optional[str]], SequenceInfo] = {
        (s.table, s.column): s for s in src_seqs if s.table
    }
    by_name = {s.key: s for s in src_seqs}
    led_owner: t.Dict[t.Tuple[t.Optional[str], t.Optional[str]], SequenceInfo] = {
        (s.table, s.column): s for s in led_seqs if s.table
    }
    results: t.List[t.Dict[str, t.Any]] = []
    for seq in read_sequences(tgt_conn):
        entry: t.Dict[str, t.Any] = {"sequence": seq.key, "table": seq.table, "column": seq.column}
        origin: t.Optional[SequenceInfo] = None
        origin_conn = src_conn
        tp = plans.get(seq.table or "")
        if tp is not None and seq.column:
            if tp.ledger and ledger_conn is not None:
                origin = led_owner.get((seq.table, seq.column))
                origin_conn = ledger_conn
            elif tp.source is not None:
                carried = next(
                    (
                        c
                        for c in tp.carried
                        if c.target.name == seq.column and c.source is not None and c.expression is None
                    ),
                    None,
                )
                if carried is not None and carried.source is not None:
                    origin = by_owner.get((tp.source.key, carried.source.name))
        elif seq.table is None:
            origin = by_name.get(seq.key)
        statements: t.List[str] = []
        if origin is not None:
            last, called = sequence_state(origin_conn, origin.schema, origin.name)
            entry.update({"from": "%s" % origin.key, "last_value": last, "is_called": called})
        else:
            last, called = sequence_state(tgt_conn, seq.schema, seq.name)
            entry.update({"from": None, "last_value": last, "is_called": called})
        if origin is not None:
            statements.append("setval(%s, %d, %s)" % (seq.key, last, called))
            if not check_mode:
                with tgt_conn.cursor() as cur:
                    cur.execute(
                        "SELECT setval(%s::regclass, %s, %s)",
                        (sql.Identifier(seq.schema, seq.name).as_string(cur), last, called),
                    )
        if seq.table_schema and seq.table_name and seq.column and not check_mode:
            top = column_max(tgt_conn, seq.table_schema, seq.table_name, seq.column, seq.increment)
            entry["column_max"] = top
            nxt = next_value(last, called, seq.increment)
            behind = top is not None and (nxt <= top if seq.increment > 0 else nxt >= top)
            if behind and top is not None:
                with tgt_conn.cursor() as cur:
                    cur.execute(
                        "SELECT setval(%s::regclass, %s, true)",
                        (sql.Identifier(seq.schema, seq.name).as_string(cur), top),
                    )
                statements.append("setval(%s, %d, true)" % (seq.key, top))
                entry.update({"last_value": top, "is_called": True, "advanced_to_column_max": True})
            else:
                entry["advanced_to_column_max"] = False
        entry["statements"] = statements
        results.append(entry)
    return results


# ------------------------------------------------------------------------------------------------ the copy
_ArchiveEntries = t.Tuple[t.List[_post_data.TocEntry], t.Optional[_post_data.Script], _post_data.DevCatalog]


def _archive_entries(archive: str, min_major: int, dev: ConnParams) -> _ArchiveEntries:
    """The archive's entries of the overlap kinds, their DDL and the dev catalogs' rows for them: ``pg_restore -l``
    and ``pg_restore -f`` at once, then the dev database."""
    pg_restore = find_client("pg_restore", min_major)[0]
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        text = pool.submit(_post_data.render_text, archive, pg_restore)
        entries = _post_data.read_toc(archive, pg_restore)[1]
        with contextlib.closing(connect(dev, autocommit=True, application_name="pgshift data_copy")) as conn:
            catalog = _post_data.read_dev(conn, entries)
        script = _post_data.split_script(text.result(), entries)
    return entries, script, catalog


def copy_data(
    source: ConnParams,
    target: ConnParams,
    mapping_file: t.Optional[str],
    jobs: int = 2,
    ledger_tables: t.Sequence[str] = _data.DEFAULT_LEDGER_TABLES,
    ledger_from: t.Optional[ConnParams] = None,
    snapshot: t.Optional[str] = None,
    check_mode: bool = False,
    log: t.Optional[LogFn] = None,
    archive: t.Optional[str] = None,
    min_client_major: int = 0,
    schema_source: t.Optional[ConnParams] = None,
    split_bytes: int = SPLIT_BYTES,
) -> t.Dict[str, t.Any]:
    """Copy every carried table (largest first, ``jobs`` workers, a table above ``split_bytes`` by several) and the
    large objects, then the sequences. With ``archive`` (the dev schema archive of ``database_build``) and
    ``schema_source`` (the dev database it was dumped from), each table's indexes and key constraints are built from
    the archive as soon as its rows are in, and each foreign key once both its tables are, in the same budget."""
    say = log or (lambda _msg: None)
    jobs = max(1, int(jobs))
    called = time.monotonic()
    with contextlib.ExitStack() as stack:
        toc: t.Optional["concurrent.futures.Future[_ArchiveEntries]"] = None
        if archive and schema_source is not None and not check_mode:
            # the archive's entries, listed and rendered by pg_restore while the plan is read
            reader = stack.enter_context(concurrent.futures.ThreadPoolExecutor(max_workers=1))
            toc = reader.submit(_archive_entries, archive, min_client_major, schema_source)
        src_conn = stack.enter_context(contextlib.closing(connect(source, application_name="pgshift data_copy")))
        tgt_conn = stack.enter_context(
            contextlib.closing(connect(target, autocommit=True, application_name="pgshift data_copy"))
        )
        led_conn = None
        if ledger_from is not None:
            led_conn = stack.enter_context(
                contextlib.closing(connect(ledger_from, autocommit=True, application_name="pgshift data_copy"))
            )
        plan = _data.prepare_plan(src_conn, tgt_conn, mapping_file, ledger_tables, led_conn)
        if plan.unaccepted:
            raise _data.loss_error(plan)
        src_conn.rollback()
        if snapshot:
            join_snapshot(src_conn, snapshot)
            used_snapshot = snapshot
        else:
            used_snapshot = export_snapshot(src_conn)  # held open (src_conn idle in it) until every copy is done
        work: t.List[CopyJob] = []
        skipped: t.Dict[str, str] = {}
        for tp in plan.tables:
            if tp.source is None:
                skipped[tp.key] = (
                    "new table (no source rows)" if not tp.ledger else "ledger table absent in ledger_from"
                )
                continue
            if not tp.carried:
                skipped[tp.key] = "no carried column"
                continue
            from_ledger = tp.ledger and ledger_from is not None
            snap = None if from_ledger else used_snapshot
            src_stmts, tgt_stmts = _statements(tp, snap, src_conn, tgt_conn)
            work.append(CopyJob(tp, ledger_from if from_ledger and ledger_from else source, snap, src_stmts, tgt_stmts))
        result: t.Dict[str, t.Any] = {
            "snapshot": used_snapshot,
            "jobs": jobs,
            "tables": {},
            "not_copied": skipped,
            "statements": {job.plan.key: {"source": job.source_sql, "target": job.target_sql} for job in work},
            "total_rows": 0,
            "total_bytes": 0,
            "sequences": [],
        }
        result.update(_data.plan_result(plan))
        result["large_objects"] = {"count": _large_objects.count(src_conn)}
        ext_config = _ext_config.plan(src_conn, tgt_conn)
        result["extension_config_tables"] = {cp.source.key: cp.describe() for cp in ext_config}
        result["notes"] = result["notes"] + _ext_config.notes(ext_config)
        if check_mode:
            result["sequences"] = set_sequences(plan, src_conn, tgt_conn, led_conn, check_mode=True)
            return result
        psql_src = find_client("psql", server_major(src_conn))[0]
        stop = threading.Event()
        errors: t.List[PgShiftError] = []
        builds: t.List[_post_data.Build] = []
        script: t.Optional[_post_data.Script] = None
        if toc is not None:
            entries, script, catalog = toc.result()
            if script is not None:
                rendered = [e for e in entries if e.dump_id in script.statements]
                builds = _post_data.assign(catalog, rendered, {job.plan.key for job in work})
        split_ok = jobs > 1 and server_major(src_conn) >= SPLIT_MIN_SERVER
        tasks: t.List[Task] = []
        copies: t.Dict[str, Task] = {}
        started = time.monotonic()
        top = float(max([job.plan.source.bytes for job in work if job.plan.source] + [0]) + 1)
        if result["large_objects"]["count"]:
            tasks.append(
                Task("large objects", lambda: run_large_objects(source, target, used_snapshot, stop, say), top + 1)
            )
        for job in work:
            size = float(job.plan.source.bytes if job.plan.source else 0)
            src_table = job.plan.source
            parts: t.List[CopyJob] = []
            ranges: t.List[t.Tuple[t.Optional[int], t.Optional[int]]] = []
            if (
                split_ok
                and src_table is not None
                and not src_table.partitioned
                and not job.plan.target.partitioned
                and job.snapshot is not None
                and size >= split_bytes
            ):
                ranges = block_ranges(source_blocks(src_conn, src_table), jobs)
                parts = part_jobs(job, ranges, src_conn, tgt_conn)
            if len(parts) > 1:
                run = functools.partial(run_split, job, parts, ranges, target, psql_src, stop)
            else:
                run = functools.partial(run_pipeline, job, target, psql_src, stop)
            copies[job.plan.key] = Task("copy " + job.plan.key, run, size, {job.plan.key}, max(1, len(parts)))
            tasks.append(copies[job.plan.key])
        per_table: t.Dict[str, t.List[_post_data.TocEntry]] = {}
        for b in builds:
            if b.references is None:
                per_table.setdefault(b.table, []).append(b.entry)
        index_tasks: t.Dict[str, Task] = {}
        for key, entries_ in per_table.items():
            index_tasks[key] = Task(
                "build " + key,
                functools.partial(run_builds, key, entries_, t.cast(_post_data.Script, script), target, stop),
                copies[key].priority,
                {key},
                after=[copies[key]],
            )
            tasks.append(index_tasks[key])
        for b in builds:
            if b.references is None:
                continue
            ref = b.references
            tasks.append(
                Task(
                    "fk " + _post_data.describe(b.entry),
                    functools.partial(run_builds, b.table, [b.entry], t.cast(_post_data.Script, script), target, stop),
                    copies[b.table].priority,
                    {b.table, ref},
                    after=[copies[b.table], copies[ref], index_tasks.get(b.table), index_tasks.get(ref)],
                )
            )
        result["prepare_seconds"] = round(started - called, 3)
        failed = run_tasks(tasks, jobs, stop)
        for task in failed:
            exc = task.error
            if isinstance(exc, PgShiftError):
                errors.append(exc)
            else:
                errors.append(PgShiftError("%s failed: %s" % (task.name, exc)))
        for key, task in copies.items():
            if task.state == "done" and task.result is not None:
                info = task.result
                result["tables"][key] = info
                say(
                    "data_copy: %s: %d rows, %d bytes, %.2f s (%s%s)"
                    % (
                        key,
                        info["rows"],
                        info["bytes"],
                        info["seconds"],
                        info["format"],
                        ", %d parts" % info["parts"] if info.get("parts") else "",
                    )
                )
        for task in tasks:
            if task.name == "large objects" and task.state == "done" and task.result is not None:
                result["large_objects"] = task.result
        result["built_during_copy"] = {}
        for task in tasks:
            if task.state == "done" and task.result is not None and "built" in task.result:
                result["built_during_copy"].setdefault(task.result["table"], []).extend(task.result["built"])
        result["timeline"] = [
            {
                "task": task.name,
                "workers": task.width,
                "start": round(task.started - started, 3),
                "end": round(task.ended - started, 3),
            }
            for task in sorted(tasks, key=lambda x: x.started)
            if task.state in ("done", "failed")
        ]
        if errors:
            first = errors[0]
            first.details.setdefault("tables_done", sorted(result["tables"]))
            raise first
        # the rows users added to extension configuration tables, in the same snapshot (src_conn is in it)
        ext_tgt = stack.enter_context(
            contextlib.closing(connect(target, application_name="pgshift data_copy extension configuration"))
        )
        for key, info in _ext_config.copy(src_conn, ext_tgt, ext_config).items():
            result["extension_config_tables"][key].update(info)
            say("data_copy: extension configuration table %s: %d rows" % (key, info["copied"]))
        result["seconds"] = round(time.monotonic() - started, 3)
        result["total_rows"] = sum(v["rows"] for v in result["tables"].values())
        result["total_bytes"] = sum(v["bytes"] for v in result["tables"].values())
        try:
            result["sequences"] = set_sequences(plan, src_conn, tgt_conn, led_conn, check_mode=False)
        except psycopg2.Error as exc:
            raise db_error(exc, "setting sequences") from None
        with contextlib.suppress(psycopg2.Error):
            src_conn.rollback()
        return result
