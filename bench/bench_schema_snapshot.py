#!/usr/bin/env python
"""Benchmark: schema snapshot of 1,000 tables, 10,000 columns and 3,000 indexes, side by side with
``pg_dump --schema-only`` of the same database (the peer), on a throwaway cluster.

Prints the time of each (best and median of N runs), the number of catalog queries the snapshot ran, and the ratio.
Run with ``make bench-schema`` (or ``.venv/bin/python bench/bench_schema_snapshot.py --tables 1000 --runs 5``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
import typing as t
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, ".build", "collections"))

import pgworld  # noqa: E402

from ansible_collections.pgshift.ops.plugins.module_utils import _clients, _connection, _schema  # noqa: E402

COLUMN_TYPES = ["integer", "text", "bigint", "numeric(12,2)", "timestamptz", "boolean", "jsonb", "varchar(80)", "date"]


def build(cluster: pgworld.Cluster, database: str, tables: int) -> None:
    """``tables`` tables of 10 columns (id + 9) and 3 indexes each (primary key + two)."""
    conn = cluster.connect(database, autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TYPE bench_state AS ENUM ('new', 'done')")
            for number in range(tables):
                columns = ", ".join("c%d %s" % (i + 1, typ) for i, typ in enumerate(COLUMN_TYPES))
                cur.execute(
                    "CREATE TABLE bench_%04d (id integer PRIMARY KEY, %s);"
                    " CREATE INDEX bench_%04d_c1 ON bench_%04d (c1);"
                    " CREATE INDEX bench_%04d_c2_c3 ON bench_%04d (c2, c3);"
                    " COMMENT ON TABLE bench_%04d IS 'table %d'"
                    % (number, columns, number, number, number, number, number, number)
                )
        conn.commit()
    finally:
        conn.close()


def timed(fn: t.Callable[[], t.Any], runs: int) -> t.Tuple[float, float, t.Any]:
    times = []
    result = None
    for _run in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    base = tempfile.mkdtemp(prefix="pgshift-bench-schema-")
    os.chmod(base, 0o755)  # noqa: S103 - the postgres OS user must traverse it (as in tests/conftest.py)
    cluster = pgworld.Cluster("bench", base, pgworld.free_port(), "bench-" + uuid.uuid4().hex)
    try:
        cluster.start()
        database = "bench"
        with contextlib.closing(cluster.connect()) as admin, admin.cursor() as cur:
            cur.execute("CREATE DATABASE bench TEMPLATE template0 ENCODING 'UTF8'")
        t0 = time.perf_counter()
        build(cluster, database, args.tables)
        print("built %d tables in %.1f s" % (args.tables, time.perf_counter() - t0))
        params = _connection.ConnParams.from_params(cluster.conn(database))

        def snapshot(write: bool = True) -> t.Tuple[t.Dict[str, t.Any], int]:
            stats: t.Dict[str, t.Any] = {}
            conn = _connection.connect(params)
            try:
                snap = _schema.take_snapshot(conn, with_owners=True, with_grants=True, stats=stats)
            finally:
                conn.close()
            if write:
                _schema.serialize(snap)
            return snap, stats["queries"]

        with contextlib.closing(_connection.connect(params)) as probe:
            major = _connection.server_major(probe)
        pg_dump, dump_major = _clients.find_client("pg_dump", major)

        def dump() -> int:
            with open(os.devnull, "wb") as sink:
                result = _clients.run_client([pg_dump, "--schema-only", "--no-password"], params, stdout=sink)
            _clients.check_client(result, "pg_dump --schema-only")
            return result.rc

        snap_best, snap_median, (snap, queries) = timed(snapshot, args.runs)
        read_best, read_median, _snap = timed(lambda: snapshot(False), args.runs)
        dump_best, dump_median, _rc = timed(dump, args.runs)
        counts = _schema.counts(snap)
        print(
            "objects: %d tables, %d columns, %d indexes, %d constraints"
            % (counts["tables"], counts["columns"], counts["indexes"], counts["constraints"])
        )
        print("PostgreSQL %d, %s (%d), %d runs each" % (major, pg_dump, dump_major, args.runs))
        print(
            "%-40s best %7.3f s   median %7.3f s   catalog queries: %d"
            % ("pgshift take_snapshot + serialize", snap_best, snap_median, queries)
        )
        print(
            "%-40s best %7.3f s   median %7.3f s"
            % ("  of which catalog reads (connect+queries)", read_best, read_median)
        )
        print("%-40s best %7.3f s   median %7.3f s" % ("pg_dump --schema-only > /dev/null", dump_best, dump_median))
        print(
            "ratio snapshot / pg_dump: %.2f (best), %.2f (median)" % (snap_best / dump_best, snap_median / dump_median)
        )
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
