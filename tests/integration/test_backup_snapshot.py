"""A backup taken while a writer keeps inserting and updating holds the state of its snapshot, not a later one; Pagila
round-trips with identical counts and checksums."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import typing as t

import backup_support as bs
import pytest
from psycopg2 import sql

from ansible_collections.pgshift.ops.plugins.module_utils import _checksums
from ansible_collections.pgshift.ops.plugins.module_utils._connection import connect


def test_backup_during_concurrent_writes_matches_its_snapshot(pg: t.Any, new_db: t.Any, tmp_path: t.Any) -> None:
    db = new_db()
    with contextlib.closing(pg.connect(db)) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, amount int, status text)")
        cur.execute("CREATE TABLE order_lines (id bigserial PRIMARY KEY, order_id bigint, qty int)")
        cur.execute("CREATE TABLE counter (n bigint NOT NULL)")
        cur.execute("INSERT INTO counter VALUES (0)")
        cur.execute("INSERT INTO orders (amount, status) SELECT g, 'new' FROM generate_series(1, 20000) g")
        cur.execute("INSERT INTO order_lines (order_id, qty) SELECT g, 1 FROM generate_series(1, 20000) g")
        cur.execute("UPDATE counter SET n = 20000")
    stop = threading.Event()
    commits = {"n": 0}

    def writer() -> None:
        # Every transaction adds one order and one line, updates an older order and bumps the counter: in any
        # consistent snapshot count(orders) = count(order_lines) = counter.n.
        with contextlib.closing(pg.connect(db, autocommit=False)) as conn, conn.cursor() as cur:
            while not stop.is_set():
                cur.execute("INSERT INTO orders (amount, status) VALUES (1, 'new') RETURNING id")
                new_id = cur.fetchone()[0]
                cur.execute("INSERT INTO order_lines (order_id, qty) VALUES (%s, 2)", (new_id,))
                cur.execute("UPDATE orders SET status = 'paid', amount = amount + 1 WHERE id = %s", (new_id // 2,))
                cur.execute("UPDATE counter SET n = n + 1")
                conn.commit()
                commits["n"] += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while commits["n"] < 50:
            threading.Event().wait(0.02)
        backup = bs.take(pg, db, tmp_path / "backups", format="directory", jobs=2, globals=False, checksum_jobs=2)
        floor = commits["n"] + 20  # let the writer go on a little, so that the live state surely differs
        while commits["n"] < floor:
            threading.Event().wait(0.02)
    finally:
        stop.set()
        thread.join(30)
    manifest = backup["manifest"]
    orders = manifest["tables"]["public.orders"]["rows"]
    # The checksums (computed on their own connections) saw one consistent snapshot...
    assert orders == manifest["tables"]["public.order_lines"]["rows"] > 20000
    # ...which is not the later state of the live database...
    with contextlib.closing(connect(bs.params(pg, db))) as conn:
        live = _checksums.table_checksums(conn, [("public", "orders"), ("public", "order_lines")])
    assert live["public.orders"]["rows"] > orders
    assert live["public.orders"]["checksum"] != manifest["tables"]["public.orders"]["checksum"]
    # ...and pg_dump wrote that same snapshot: the restore drill matches every table, counter included.
    drill = bs.verify(backup["manifest_path"], "restore", pg)
    assert drill["verified"] is True, drill["mismatches"]
    assert drill["tables"]["public.counter"]["ok"] is True
    target = "bk_snap_" + os.urandom(3).hex()
    from ansible_collections.pgshift.ops.plugins.module_utils._backup_verify import restore_backup

    restore_backup(backup["manifest_path"], bs.params(pg), target)
    try:
        with contextlib.closing(pg.connect(target)) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM order_lines), (SELECT n FROM counter)"
            )
            assert cur.fetchone() == (orders, orders, orders)
    finally:
        with contextlib.closing(pg.connect()) as conn, conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(target)))


@pytest.mark.pagila
@pytest.mark.slow
def test_pagila_round_trips_with_identical_counts_and_checksums(pg: t.Any, new_db: t.Any, tmp_path: t.Any) -> None:
    from conftest import require_pagila

    folder = require_pagila()
    db = new_db()
    env = dict(os.environ, PGPASSWORD=pg.password)  # test set-up only; pgshift itself uses a 0600 PGPASSFILE
    for name in ("pagila-schema.sql", "pagila-data.sql"):
        subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", pg.dsn(db), "-f", os.path.join(folder, name)],
            check=True,
            env=env,
            capture_output=True,
        )
    backup = bs.take(pg, db, tmp_path / "backups", format="custom")
    manifest = backup["manifest"]
    assert manifest["tables"]["public.rental"]["rows"] == 16044
    assert manifest["tables"]["public.film"]["rows"] == 1000
    assert "public.payment" not in manifest["tables"]  # partitioned parent: its leaves are counted
    assert sum(v["rows"] for k, v in manifest["tables"].items() if k.startswith("public.payment_p")) == 16049
    drill = bs.verify(backup["manifest_path"], "restore", pg)
    assert drill["verified"] is True, drill["mismatches"]
    assert len(drill["tables"]) == len(manifest["tables"]) and all(v["ok"] for v in drill["tables"].values())
