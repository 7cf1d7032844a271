#!/usr/bin/env python
"""Migrations: pgshift's engines side by side with the node-pg-migrate 9 CLI on the same folder and machine.

A throwaway cluster; the folder is Pagila's schema as the first migration (when ../shared/data/pagila exists) plus
N small migrations of ours. Each runner applies everything from empty into a fresh database, ROUNDS times:

- peer: ``node-pg-migrate up`` run directly (what a project does today);
- pgshift ``sql`` engine (pgshift.ops.migrate's native runner, same ledger rows);
- pgshift ``node-pg-migrate`` engine (the same CLI under pgshift's lock, checks and metadata).

Then ``migrations_validate`` (static checks, up from empty and up -> down -> up) on the same folder, which has no peer
(node-pg-migrate has no validate command): its time is printed beside one plain ``up`` for scale.

    .venv/bin/python bench/bench_migrations.py [--small 40] [--rounds 3]      (make bench-migrations)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import typing as t
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, ".build", "collections"))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import pgworld  # noqa: E402

from ansible_collections.pgshift.ops.plugins.module_utils._clients import check_client, run_client  # noqa: E402
from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams  # noqa: E402
from ansible_collections.pgshift.ops.plugins.module_utils._migrations import migrate  # noqa: E402
from ansible_collections.pgshift.ops.plugins.module_utils._migrations_validate import validate  # noqa: E402

NODE_BIN = os.path.join(ROOT, "tools", "node", "node_modules", ".bin", "node-pg-migrate")
PAGILA = os.path.abspath(os.path.join(ROOT, "..", "shared", "data", "pagila", "pagila-schema.sql"))


def build_folder(folder: str, small: int) -> int:
    os.makedirs(folder)
    files = {}
    if os.path.exists(PAGILA):
        with open(PAGILA, encoding="utf-8") as handle:
            files["1700000000000_pagila.sql"] = (
                "-- Up Migration\n"
                + handle.read()
                + "\nSELECT pg_catalog.set_config('search_path', 'public', false);\n"
            )
    for i in range(small):
        files["17000000%05d_step-%d.sql" % (i + 1, i)] = (
            "-- Up Migration\nSET lock_timeout = '5s';\n"
            "CREATE TABLE public.bench_%d (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text);\n"
            "ALTER TABLE public.bench_%d ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();\n"
            "CREATE INDEX bench_%d_created_idx ON public.bench_%d (created_at);\n"
            "-- Down Migration\nDROP TABLE public.bench_%d;\n" % (i, i, i, i, i)
        )
    for name, content in files.items():
        with open(os.path.join(folder, name), "w", encoding="utf-8") as handle:
            handle.write(content)
    return len(files)


def fresh_db(cluster: pgworld.Cluster) -> ConnParams:
    name = "b_" + uuid.uuid4().hex[:10]
    conn = cluster.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE %s TEMPLATE template0" % name)
    finally:
        conn.close()
    return ConnParams.from_params(cluster.conn(name))


def timed(fn: t.Callable[[], t.Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=40, help="small migrations after Pagila (default 40)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not os.access(NODE_BIN, os.X_OK):
        raise SystemExit("node-pg-migrate is not installed: run 'make node-deps'")
    base = tempfile.mkdtemp(prefix="pgshift-bench-mig-")  # Cluster.init makes the path traversable for postgres
    cluster = pgworld.Cluster("bench", os.path.join(base, "pg"), pgworld.free_port(), "pw-" + uuid.uuid4().hex)
    cluster.start()
    try:
        folder = os.path.join(base, "migrations")
        count = build_folder(folder, args.small)
        print(
            "folder: %d migrations (%s)"
            % (count, "Pagila + %d small" % args.small if os.path.exists(PAGILA) else "no Pagila")
        )

        def peer_up(p: ConnParams) -> t.Any:
            return check_client(
                run_client([NODE_BIN, "up", "--migrations-dir", folder], p, timeout=600), "node-pg-migrate up"
            )

        def sql_engine(p: ConnParams) -> t.Any:
            return migrate(p, folder, engine="sql")

        def node_engine(p: ConnParams) -> t.Any:
            return migrate(p, folder, engine="node-pg-migrate", node_pg_migrate=NODE_BIN)

        runners: t.Dict[str, t.Callable[[ConnParams], t.Any]] = {
            "node-pg-migrate CLI (peer)": peer_up,
            "pgshift engine sql": sql_engine,
            "pgshift engine node-pg-migrate": node_engine,
        }
        results: t.Dict[str, t.List[float]] = {name: [] for name in runners}
        for _round in range(args.rounds):
            for name, fn in runners.items():  # interleaved, so that machine noise spreads over all of them
                params = fresh_db(cluster)
                started = time.perf_counter()
                fn(params)
                results[name].append(time.perf_counter() - started)
        peer = statistics.median(results["node-pg-migrate CLI (peer)"])
        print("\n%-34s %9s %9s %9s  %s" % ("apply all from empty", "median s", "min s", "max s", "ratio to peer"))
        for name, values in results.items():
            med = statistics.median(values)
            print("%-34s %9.2f %9.2f %9.2f  %.2f" % (name, med, min(values), max(values), med / peer))
        admin = ConnParams.from_params(cluster.conn("postgres"))
        validation = timed(lambda: validate(admin, folder, squawk=True))
        print(
            "\nmigrations_validate (lint + squawk + up from empty + up->down->up of %d downs): %.2f s "
            "= %.1f x one plain up by the peer (no peer has this)" % (args.small, validation, validation / peer)
        )
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
