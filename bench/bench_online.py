#!/usr/bin/env python
"""Apply rate and lag of the online release's change stream (plugins/module_utils/_online.py).

    .venv/bin/python bench/bench_online.py [--rows 100000] [--changes 50000]

On a throwaway cluster (wal_level = logical): production holds ROWS rows in a table, the dev schema renames a column,
widens a type and adds a NOT NULL column with a default (the mapping). The slot is opened at the bulk copy's snapshot,
the copy runs; then production commits CHANGES row changes (half inserts in one statement, half single-row updates,
10 per transaction), and the apply catches up. Prints the bytes behind before and after, the apply rate in rows/s,
the cut-over (catch-up, sequences, delta proof over every touched key, clean-up), and for comparison the rate of
plain client-side single-row UPDATEs over one connection (the round trip bound). No assertion: a benchmark.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, ".build", "collections"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import data_support as ds  # noqa: E402
import pgworld  # noqa: E402

from ansible_collections.pgshift.ops.plugins.module_utils import _data, _data_copy, _online  # noqa: E402
from ansible_collections.pgshift.ops.plugins.module_utils import _journal as journal  # noqa: E402
from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, connect  # noqa: E402

MAPPING = "tables:\n  items:\n    columns:\n      title: {from: name}\n"


def raw_updates(pg: pgworld.Cluster, database: str, count: int) -> float:
    with contextlib.closing(pg.connect(database, autocommit=False)) as conn, conn.cursor() as cur:
        started = time.monotonic()
        for i in range(1, count + 1):
            cur.execute("UPDATE items SET qty = %s WHERE id = %s", (str(i), str(i)))
            if i % 10 == 0:
                conn.commit()
        conn.commit()
        return count / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100000)
    parser.add_argument("--changes", type=int, default=50000)
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="pgshift-bench-online-")
    os.chmod(base, 0o755)  # noqa: S103 - the server runs as another OS user
    pg = pgworld.Cluster("bench", base, pgworld.free_port(), "pw-" + uuid.uuid4().hex)
    pg.start()
    try:
        src_db, dev = ds.create_db(pg), ds.create_db(pg)
        ds.run_sql(pg, src_db, "CREATE TABLE items (id integer PRIMARY KEY, name text, qty integer);")
        ds.execute(pg, src_db, "INSERT INTO items SELECT i, 'n' || i, i FROM generate_series(1, %s) i", (args.rows,))
        ds.run_sql(
            pg,
            dev,
            "CREATE TABLE items (id integer PRIMARY KEY, title text, qty bigint, status text NOT NULL DEFAULT 'x');",
        )
        carry = ds.prepare(pg, src_db, dev, base)
        mapping = os.path.join(base, "mapping.yml")
        with open(mapping, "w", encoding="utf-8") as handle:
            handle.write(MAPPING)
        source = ConnParams.from_params(pg.conn(src_db))
        target = ConnParams.from_params(pg.conn(carry.target))
        journal.ensure_journal(source)
        with contextlib.closing(connect(source.with_database(journal.DEFAULT_JOURNAL_DB))) as conn, conn.cursor() as c:
            run_id = journal.start_run(c, src_db, {})
            conn.commit()
        with contextlib.closing(connect(source)) as src, contextlib.closing(connect(target)) as tgt:
            plan = _data.prepare_plan(src, tgt, mapping)
            eligible = _online.eligibility(src, plan)
        stream = _online.open_stream(source, eligible, run_id, carry.target)
        started = time.monotonic()
        _data_copy.copy_data(source, target, mapping, snapshot=stream.snapshot)
        carry.post_data()
        print("bulk copy + post-data of %d rows: %.2f s" % (args.rows, time.monotonic() - started))
        half = args.changes // 2
        ds.execute(
            pg,
            src_db,
            "INSERT INTO items SELECT i, 'a' || i, i FROM generate_series(%s, %s) i",
            (args.rows + 1, args.rows + args.changes - half),
        )
        ds.run_sql(
            pg,
            src_db,
            "CREATE PROCEDURE bump(n integer) LANGUAGE plpgsql AS $$ BEGIN FOR i IN 1..n LOOP "
            "UPDATE items SET qty = qty + 1 WHERE id = i; IF i % 10 = 0 THEN COMMIT; END IF; END LOOP; END $$;",
        )
        ds.execute(pg, src_db, "CALL bump(%s)", (half,))
        print("behind before the apply:", _online.lag(source, stream.slot))
        app = _online.Applier(stream.conn, stream.slot, stream.publication, stream.origin, source, target, eligible)
        started = time.monotonic()
        applied = app.run(until_lsn=_online.current_lsn(source), timeout=3600)
        seconds = time.monotonic() - started
        rows = sum(applied["rows"].values())
        print(
            "applied %d rows in %d transactions in %.2f s: %.0f rows/s"
            % (rows, applied["transactions"], seconds, rows / seconds)
        )
        print("behind after the apply:", _online.lag(source, stream.slot))
        started = time.monotonic()
        cut = _online.cut_over(source, target, app, stream, eligible, plan, run_id)
        proof = cut["delta_proof"]
        print(
            "cut-over %.2f s: catch-up %.3f s, delta proof %.2f s over %d keys (ok: %s), dropped %s"
            % (
                time.monotonic() - started,
                cut["catch_up_seconds"],
                proof["seconds"],
                sum(v["keys"] for v in proof["tables"].values()),
                proof["ok"],
                ", ".join(cut["dropped"]),
            )
        )
        print("plain client single-row UPDATEs, 10 per commit: %.0f rows/s" % raw_updates(pg, src_db, 10000))
    finally:
        pg.destroy()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
