#!/usr/bin/env python
"""Cost of the swap-back change capture (plugins/module_utils/_carry.py) on the applications' writes.

    .venv/bin/python bench/bench_capture.py [--rows 20000] [--repeat 3]

On a throwaway cluster: a table shaped like the shop's orders, with and without the capture installed, timed for
(a) single-row INSERT transactions, (b) single-row UPDATE transactions, (c) one INSERT ... SELECT of ROWS rows, and
then the carry back of the captured changes into a second database. Prints the best time of each side and the ratio.
No assertion: a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
import typing as t
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, ".build", "collections"))

import pgworld  # noqa: E402

from ansible_collections.pgshift.ops.plugins.module_utils import _carry as carry  # noqa: E402
from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams  # noqa: E402

SCHEMA = """
CREATE TYPE order_status AS ENUM ('pending', 'paid', 'shipped', 'cancelled');
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id integer NOT NULL,
                     status order_status NOT NULL DEFAULT 'pending', placed_at timestamptz NOT NULL DEFAULT now(),
                     note text);
"""


def timed(cluster: pgworld.Cluster, database: str, rows: int) -> t.Dict[str, float]:
    out: t.Dict[str, float] = {}
    conn = cluster.connect(database, autocommit=True)
    with contextlib.closing(conn), conn.cursor() as cur:
        cur.execute("TRUNCATE orders RESTART IDENTITY")
        start = time.perf_counter()
        for i in range(rows):
            cur.execute("INSERT INTO orders (customer_id, note) VALUES (%s, %s)", (i % 50, "w-%d" % i))
        out["insert (1 row per transaction)"] = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(1, rows + 1):
            cur.execute("UPDATE orders SET status = 'paid', note = %s WHERE id = %s", ("u-%d" % i, i))
        out["update (1 row per transaction)"] = time.perf_counter() - start
        start = time.perf_counter()
        cur.execute(
            "INSERT INTO orders (customer_id, note) SELECT g %% 50, 'bulk ' || g FROM generate_series(1, %s) g", (rows,)
        )
        out["insert ... select (%d rows)" % rows] = time.perf_counter() - start
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="pgshift-bench-capture-")
    os.chmod(base, 0o755)  # noqa: S103 - the server may run as another OS user
    cluster = pgworld.Cluster("bench", base, pgworld.free_port(), "pw-" + uuid.uuid4().hex)
    cluster.start()
    try:
        with contextlib.closing(cluster.connect()) as conn, conn.cursor() as cur:
            for name in ("plain", "captured", "previous"):
                cur.execute("CREATE DATABASE %s" % name)
        for name in ("plain", "captured", "previous"):
            with contextlib.closing(cluster.connect(name)) as conn, conn.cursor() as cur:
                cur.execute(SCHEMA)
        params = ConnParams.from_params(cluster.conn())
        carry.install_capture(params.with_database("previous"), params.with_database("captured"), "bench")
        best: t.Dict[str, t.Dict[str, float]] = {"plain": {}, "captured": {}}
        for _round in range(args.repeat):
            for side in ("plain", "captured"):  # interleaved, so that a busy machine hurts both sides alike
                for key, value in timed(cluster, side, args.rows).items():
                    best[side][key] = min(best[side].get(key, value), value)
        print("%-36s %10s %10s %7s %14s" % ("write", "plain s", "capture s", "ratio", "added us/row"))
        for key in best["plain"]:
            plain, captured = best["plain"][key], best["captured"][key]
            added = (captured - plain) / args.rows * 1e6
            print("%-36s %10.3f %10.3f %6.2fx %14.1f" % (key, plain, captured, captured / plain, added))
        with contextlib.closing(cluster.connect("captured")) as conn, conn.cursor() as cur:
            cur.execute(
                "DELETE FROM pgshift_capture.changes WHERE seq <= (SELECT max(seq) - %s FROM pgshift_capture.changes)",
                (args.rows * 3,),
            )
            cur.execute("SELECT count(*) FROM pgshift_capture.changes")
            changes = cur.fetchone()[0]
            cur.execute("SELECT pg_total_relation_size('pgshift_capture.changes')")
            size = cur.fetchone()[0]
        start = time.perf_counter()
        result = carry.carry_back(params, "captured", "previous", "bench")
        elapsed = time.perf_counter() - start
        print(
            "carry back of %d captured changes (log %.1f MB): %.2f s, %s"
            % (changes, size / 1e6, elapsed, "proven" if result["ok"] else "refused: %s" % result["message"][:200])
        )
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
