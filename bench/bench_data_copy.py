#!/usr/bin/env python
"""Benchmark: pgshift's data_copy + integrity_check against pgcopydb and pg_dump/pg_restore, side by side.

Not a test: it prints times and ratios. One throwaway cluster (free port, temp folder), one source database
(``pgbench -i -s SCALE``, and Pagila when ../shared/data/pagila exists), and for each tool a fresh target database.

    .venv/bin/python bench/bench_data_copy.py --scale 50 --jobs 2      # about 750 MB, the reference in the issue
    .venv/bin/python bench/bench_data_copy.py --scale 5                # quick

Rows measured (each pgshift measure and its yardstick run alternately, --repeat times, best kept, because the
machine may be shared):
- ``COPY <table> TO '/dev/null'`` over every source table, one after the other: the cost of turning every row into
  text once (the yardstick of integrity_check, goal <= 1.2x).
- pgshift: pre-data restore, data_copy, post-data restore, integrity_check (each step in a fresh Python process
  that reports its own peak memory, ru_maxrss).
- ``pgcopydb copy table-data`` into the same pre-data schema (data only, same --table-jobs): the data_copy peer.
- ``pgcopydb clone`` (schema + data + indexes) and ``pg_dump -Fd -j N -Z1`` + ``pg_restore -j N``: whole-database peers
  for pgshift's pre-data + data_copy + post-data.
Passwords reach child processes only through a 0600 PGPASSFILE (pgshift's client_environment).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import typing as t
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, ".build", "collections"))
PAGILA = os.path.abspath(os.path.join(ROOT, "..", "shared", "data", "pagila"))


def _conn_params(cluster: t.Any, database: str) -> t.Any:
    from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams  # noqa: PLC0415

    return ConnParams.from_params(cluster.conn(database))


def run_step(spec: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
    """Run one pgshift step in this (fresh) process; report its result and this process's peak memory."""
    from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams  # noqa: PLC0415
    from ansible_collections.pgshift.ops.plugins.module_utils._data_check import integrity_check  # noqa: PLC0415
    from ansible_collections.pgshift.ops.plugins.module_utils._data_copy import copy_data  # noqa: PLC0415

    src = ConnParams.from_params(spec["source"])
    tgt = ConnParams.from_params(spec["target"])
    started = time.monotonic()
    if spec["step"] == "copy":
        result = copy_data(src, tgt, None, jobs=spec["jobs"])
        summary = {"rows": result["total_rows"], "bytes": result["total_bytes"]}
    else:
        result = integrity_check(src, tgt, None, jobs=spec["jobs"])
        summary = {"ok": result["ok"], "mismatches": len(result["mismatches"])}
    summary["seconds"] = time.monotonic() - started
    summary["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return summary


def step(name: str, cluster: t.Any, source: str, target: str, jobs: int) -> t.Dict[str, t.Any]:
    spec = {"step": name, "source": cluster.conn(source), "target": cluster.conn(target), "jobs": jobs}
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--run-step"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit("pgshift %s failed:\n%s" % (name, proc.stderr[-3000:]))
    return t.cast(t.Dict[str, t.Any], json.loads(proc.stdout.strip().splitlines()[-1]))


class Bench:
    def __init__(self, cluster: t.Any, jobs: int, work: str, repeat: int = 2) -> None:
        self.repeat = max(1, repeat)
        self.cluster = cluster
        self.jobs = jobs
        self.work = work

    def env(self, database: str = "postgres") -> t.ContextManager[t.Dict[str, str]]:
        from ansible_collections.pgshift.ops.plugins.module_utils._connection import client_environment  # noqa: PLC0415

        return client_environment(_conn_params(self.cluster, database))

    def run(self, argv: t.Sequence[str], database: str = "postgres", stdin: t.Optional[str] = None) -> float:
        started = time.monotonic()
        with self.env(database) as env:
            proc = subprocess.run(list(argv), env=env, capture_output=True, text=True, input=stdin, check=False)
        if proc.returncode != 0:
            raise SystemExit("%s failed: %s" % (argv[0], proc.stderr[-2000:]))
        return time.monotonic() - started

    def sql(self, database: str, statement: str) -> t.List[t.Tuple[t.Any, ...]]:
        with contextlib.closing(self.cluster.connect(database)) as conn, conn.cursor() as cur:
            cur.execute(statement)
            return cur.fetchall() if cur.description else []

    def new_db(self, prefix: str) -> str:
        name = "%s_%s" % (prefix, uuid.uuid4().hex[:6])
        self.sql("postgres", "CREATE DATABASE \"%s\" TEMPLATE template0 ENCODING 'UTF8'" % name)
        return name

    def drop(self, name: str) -> None:
        self.sql("postgres", 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)

    def bin(self, name: str) -> str:
        path = os.path.join(self.cluster.bindir, name)
        return path if os.access(path, os.X_OK) else (shutil.which(name) or name)

    # ----------------------------------------------------------------------------------------------- measures
    def copy_to_devnull(self, database: str) -> float:
        tables = self.sql(
            database,
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname NOT IN "
            "('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'",
        )
        started = time.monotonic()
        with contextlib.closing(self.cluster.connect(database)) as conn, conn.cursor() as cur:
            for (name,) in tables:
                cur.execute("COPY %s TO '/dev/null'" % name)
        return time.monotonic() - started

    def pgshift(self, source: str) -> t.Dict[str, t.Any]:
        dump = os.path.join(self.work, "schema-%s.dump" % source)
        self.run([self.bin("pg_dump"), "-Fc", "--schema-only", "-f", dump, "-d", source], source)
        target = self.new_db("pgshift")
        out: t.Dict[str, t.Any] = {"target": target}
        out["pre_data"] = self.run([self.bin("pg_restore"), "--section=pre-data", "-d", target, dump], target)
        # data_copy and its peer run alternately, `repeat` times each, so that both see the same machine load; the
        # best time of each is kept (data_copy truncates and reloads on every run).
        copies, peers = [], []
        for _round in range(self.repeat):
            copy = step("copy", self.cluster, source, target, self.jobs)
            copies.append(copy["seconds"])
            peer = self.pgcopydb_table_data(source, dump)
            if peer is not None:
                peers.append(peer)
        out["copy"] = min(copies)
        out["table_data"] = min(peers) if peers else None
        out["copy_rss_mb"] = copy["maxrss_mb"]
        out["rows"] = copy["rows"]
        out["bytes"] = copy["bytes"]
        out["post_data"] = self.run(
            [self.bin("pg_restore"), "--section=post-data", "-j", str(self.jobs), "-d", target, dump], target
        )
        checks, devnulls = [], []
        for _round in range(self.repeat):
            devnulls.append(self.copy_to_devnull(source))
            check = step("check", self.cluster, source, target, self.jobs)
            if not check["ok"]:
                raise SystemExit("integrity_check found differences after the copy: %s" % check)
            checks.append(check["seconds"])
        out["check"] = min(checks)
        out["devnull"] = min(devnulls)
        out["check_rss_mb"] = check["maxrss_mb"]
        out["dump"] = dump
        return out

    def pgcopydb_table_data(self, source: str, dump: str) -> t.Optional[float]:
        if not shutil.which("pgcopydb"):
            return None
        target = self.new_db("pgcopydb_data")
        self.run([self.bin("pg_restore"), "--section=pre-data", "-d", target, dump], target)
        folder = tempfile.mkdtemp(prefix="pgcopydb-", dir=self.work)
        try:
            return self.run(
                [
                    "pgcopydb",
                    "copy",
                    "table-data",
                    "--source",
                    self.uri(source),
                    "--target",
                    self.uri(target),
                    "--table-jobs",
                    str(self.jobs),
                    "--dir",
                    folder,
                    "--no-role-passwords",
                ],
                source,
            )
        finally:
            self.drop(target)

    def pgcopydb_clone(self, source: str) -> t.Optional[float]:
        if not shutil.which("pgcopydb"):
            return None
        target = self.new_db("pgcopydb_clone")
        folder = tempfile.mkdtemp(prefix="pgcopydb-", dir=self.work)
        try:
            return self.run(
                [
                    "pgcopydb",
                    "clone",
                    "--source",
                    self.uri(source),
                    "--target",
                    self.uri(target),
                    "--table-jobs",
                    str(self.jobs),
                    "--index-jobs",
                    str(self.jobs),
                    "--dir",
                    folder,
                    "--no-owner",
                    "--no-acl",
                    "--no-role-passwords",
                ],
                source,
            )
        finally:
            self.drop(target)

    def dump_restore(self, source: str) -> float:
        folder = os.path.join(self.work, "dump-%s" % uuid.uuid4().hex[:6])
        target = self.new_db("pgrestore")
        try:
            spent = self.run(
                [self.bin("pg_dump"), "-Fd", "-j", str(self.jobs), "-Z1", "-f", folder, "-d", source], source
            )
            spent += self.run([self.bin("pg_restore"), "-j", str(self.jobs), "-d", target, folder], target)
            return spent
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            self.drop(target)

    def uri(self, database: str) -> str:
        return "postgresql://postgres@127.0.0.1:%d/%s?sslmode=disable" % (self.cluster.port, database)

    def size(self, database: str) -> str:
        return str(self.sql(database, "SELECT pg_size_pretty(pg_database_size(current_database()))")[0][0])


def ratio(a: t.Optional[float], b: t.Optional[float]) -> str:
    return "n/a" if not a or not b else "%.2f" % (a / b)


def report(bench: Bench, label: str, source: str) -> t.Dict[str, t.Any]:
    print("\n== %s (%s, jobs=%d)" % (label, bench.size(source), bench.jobs), flush=True)
    bench.sql(source, "VACUUM ANALYZE")
    mine = bench.pgshift(source)
    devnull = mine["devnull"]
    print("COPY TO /dev/null, every source table   %7.2f s" % devnull, flush=True)
    print("pgshift pre-data restore                 %7.2f s" % mine["pre_data"])
    print(
        "pgshift data_copy                        %7.2f s  (%d rows, %.0f MB streamed, peak RSS %.1f MB)"
        % (mine["copy"], mine["rows"], mine["bytes"] / 1e6, mine["copy_rss_mb"])
    )
    print("pgshift post-data restore (-j %d)         %7.2f s" % (bench.jobs, mine["post_data"]))
    print(
        "pgshift integrity_check                  %7.2f s  (peak RSS %.1f MB)" % (mine["check"], mine["check_rss_mb"]),
        flush=True,
    )
    table_data = mine["table_data"]
    bench.drop(mine["target"])
    clone = bench.pgcopydb_clone(source)
    dump_restore = bench.dump_restore(source)
    whole = mine["pre_data"] + mine["copy"] + mine["post_data"]
    if table_data is not None:
        print("pgcopydb copy table-data                 %7.2f s" % table_data)
    if clone is not None:
        print("pgcopydb clone                           %7.2f s" % clone)
    else:
        print("pgcopydb: not installed (make bench-deps), skipped")
    print("pg_dump -Fd -j %d -Z1 + pg_restore -j %d    %7.2f s" % (bench.jobs, bench.jobs, dump_restore))
    print("ratios:")
    print("  data_copy / pgcopydb copy table-data   %s   (goal <= 1.0)" % ratio(mine["copy"], table_data))
    print("  pgshift pre+copy+post / pgcopydb clone %s" % ratio(whole, clone))
    print("  pgshift pre+copy+post / dump+restore   %s" % ratio(whole, dump_restore))
    print("  integrity_check / COPY TO /dev/null    %s   (goal <= 1.2)" % ratio(mine["check"], devnull), flush=True)
    return {
        "label": label,
        "devnull": devnull,
        "pgshift": {k: v for k, v in mine.items() if k not in ("dump", "target")},
        "pgcopydb_table_data": table_data,
        "pgcopydb_clone": clone,
        "dump_restore": dump_restore,
    }


def main() -> None:
    if "--run-step" in sys.argv:
        print(json.dumps(run_step(json.loads(sys.stdin.read()))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=50, help="pgbench scale (50: about 750 MB)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--no-pagila", action="store_true")
    parser.add_argument(
        "--repeat", type=int, default=2, help="runs of each measure (best kept), interleaved with its peer"
    )
    args = parser.parse_args()
    import pgworld  # noqa: PLC0415

    base = tempfile.mkdtemp(prefix="pgshift-bench-")
    os.chmod(base, 0o755)  # noqa: S103 - the server runs as another OS user and must reach its data folder
    cluster = pgworld.Cluster("bench", os.path.join(base, "pg"), pgworld.free_port(), "bench-" + uuid.uuid4().hex)
    cluster.start()
    bench = Bench(cluster, args.jobs, base, args.repeat)
    results = []
    try:
        source = bench.new_db("pgbench")
        spent = bench.run([bench.bin("pgbench"), "-i", "-q", "-s", str(args.scale), source], source)
        print("pgbench -i -s %d: %.1f s" % (args.scale, spent))
        results.append(report(bench, "pgbench -i -s %d" % args.scale, source))
        bench.drop(source)
        if not args.no_pagila and os.path.exists(os.path.join(PAGILA, "pagila-schema.sql")):
            pagila = bench.new_db("pagila")
            for part in ("pagila-schema.sql", "pagila-data.sql"):
                bench.run(
                    [
                        bench.bin("psql"),
                        "-X",
                        "-q",
                        "-v",
                        "ON_ERROR_STOP=0",
                        "-d",
                        pagila,
                        "-f",
                        os.path.join(PAGILA, part),
                    ],
                    pagila,
                )
            results.append(report(bench, "Pagila", pagila))
        print(
            "\ncontroller peak memory (ru_maxrss of the Python process running each pgshift step): "
            + ", ".join(
                "%s copy %.1f MB / check %.1f MB"
                % (r["label"], r["pgshift"]["copy_rss_mb"], r["pgshift"]["check_rss_mb"])
                for r in results
            )
        )
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
