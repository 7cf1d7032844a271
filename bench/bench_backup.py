#!/usr/bin/env python
"""Benchmark: a verified backup against the bare pg_dump + pg_restore pair, same machine, same run.

pgshift side: ``backup`` (directory format, 2 jobs, light compression, checksums in the dump's snapshot) plus
``backup_verify level=restore`` (restore into a throwaway database with 2 jobs, recompute and compare checksums,
drop). Bare side: ``pg_dump -Fd -j 2`` (default compression) plus ``pg_restore -j 2`` into a new database; also
with ``-Z1`` for reference. The goal is a ratio of at most 1.3 against the bare pair. The pgshift side runs once per
checksum algorithm (``--algorithms``, default both: ``values-v1`` and the older ``row-text-v1``), interleaved with
the bare runs, so the two are compared under the same load.

The bench starts its own cluster (tools/pgworld.Cluster) in a temporary folder and stops it at the end.

    .venv/bin/python bench/bench_backup.py --scale 50        # pgbench -i -s 50 (about 750 MB) and Pagila
    .venv/bin/python bench/bench_backup.py --quick           # pgbench -s 5, for a fast look
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import typing as t

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, ".build", "collections"))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import pgworld  # noqa: E402

from ansible_collections.pgshift.ops.plugins.module_utils import _backup, _backup_verify, _checksums  # noqa: E402
from ansible_collections.pgshift.ops.plugins.module_utils._clients import find_client  # noqa: E402
from ansible_collections.pgshift.ops.plugins.module_utils._connection import (  # noqa: E402
    ConnParams,
    client_environment,
)

PAGILA = os.path.abspath(os.path.join(ROOT, "..", "shared", "data", "pagila"))


def run(argv: t.List[str], params: ConnParams) -> None:
    with client_environment(params) as env:
        proc = subprocess.run(argv, env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit("%s failed: %s" % (os.path.basename(argv[0]), proc.stderr.strip()[-2000:]))


def sql(cluster: pgworld.Cluster, statement: str, database: str = "postgres") -> None:
    with contextlib.closing(cluster.connect(database)) as conn, conn.cursor() as cur:
        cur.execute(statement)


def load_pgbench(cluster: pgworld.Cluster, params: ConnParams, scale: int) -> None:
    sql(cluster, "CREATE DATABASE bench")
    pgbench, _major = find_client("pgbench", 0)
    run([pgbench, "-i", "-q", "-s", str(scale)], params.with_database("bench"))


def load_pagila(cluster: pgworld.Cluster, params: ConnParams) -> bool:
    if not os.path.exists(os.path.join(PAGILA, "pagila-schema.sql")):
        return False
    sql(cluster, "CREATE DATABASE pagila")
    psql, _major = find_client("psql", 0)
    for name in ("pagila-schema.sql", "pagila-data.sql"):
        run(
            [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", os.path.join(PAGILA, name)],
            params.with_database("pagila"),
        )
    sql(cluster, "VACUUM ANALYZE", "pagila")
    return True


def bare_pair(cluster: pgworld.Cluster, params: ConnParams, database: str, work: str, extra: t.List[str]) -> float:
    pg_dump, _m = find_client("pg_dump", 0)
    pg_restore, _m = find_client("pg_restore", 0)
    folder = os.path.join(work, "bare-%s" % database)
    shutil.rmtree(folder, ignore_errors=True)
    started = time.monotonic()
    run([pg_dump, "-Fd", "-j", "2", *extra, "-f", folder], params.with_database(database))
    print(
        "  bare pg_dump -Fd -j 2 %s: %.2f s" % (" ".join(extra) or "(default gzip)", time.monotonic() - started),
        flush=True,
    )
    sql(cluster, "CREATE DATABASE bare_restore TEMPLATE template0")
    run([pg_restore, "-j", "2", "--dbname=bare_restore", folder], params.with_database("bare_restore"))
    elapsed = time.monotonic() - started
    sql(cluster, "DROP DATABASE bare_restore")
    shutil.rmtree(folder, ignore_errors=True)
    return elapsed


def pgshift_pair(
    params: ConnParams, database: str, work: str, algorithm: str
) -> t.Tuple[float, float, t.Dict[str, t.Any]]:
    dest = os.path.join(work, "pgshift-backups")
    started = time.monotonic()
    backup = _backup.take_backup(
        params.with_database(database),
        _backup.BackupOptions(
            dest_dir=dest, format="directory", jobs=2, globals=True, label=database, checksum_algorithm=algorithm
        ),
    )
    after_backup = time.monotonic()
    verify = _backup_verify.verify_backup(backup["manifest_path"], "restore", params, jobs=2)
    done = time.monotonic()
    print(
        "  pgshift [%s] backup %.2f s, backup_verify level=restore %.2f s %s"
        % (algorithm, after_backup - started, done - after_backup, verify.get("timings")),
        flush=True,
    )
    if not verify["verified"]:
        raise SystemExit("verification failed: %s" % verify["mismatches"])
    shutil.rmtree(os.path.dirname(backup["manifest_path"]), ignore_errors=True)
    return (
        after_backup - started,
        done - after_backup,
        {"timings": verify.get("timings"), "tables": len(verify["tables"])},
    )


def bench(
    cluster: pgworld.Cluster,
    params: ConnParams,
    database: str,
    work: str,
    repeat: int,
    algorithms: t.Sequence[str],
) -> t.List[t.Dict[str, t.Any]]:
    """Interleaved runs (bare, then pgshift with each checksum algorithm, then bare -Z1), best of ``repeat``."""
    runs: t.Dict[str, t.List[t.Dict[str, t.Any]]] = {a: [] for a in algorithms}
    bares: t.List[float] = []
    bares_z1: t.List[float] = []
    for index in range(repeat):
        bares.append(bare_pair(cluster, params, database, work, []))
        # Alternate the order of the algorithms from one run to the next: neither always goes first.
        for algorithm in algorithms if index % 2 == 0 else list(reversed(algorithms)):
            backup_s, verify_s, info = pgshift_pair(params, database, work, algorithm)
            runs[algorithm].append(
                {"backup": backup_s, "verify_restore": verify_s, "pgshift": backup_s + verify_s, "info": info}
            )
        bares_z1.append(bare_pair(cluster, params, database, work, ["-Z1"]))
    out = []
    for algorithm in algorithms:
        best = {k: min(r[k] for r in runs[algorithm]) for k in ("backup", "verify_restore", "pgshift")}
        best.update({"bare": min(bares), "bare_z1": min(bares_z1)})
        out.append(
            {
                "database": database,
                "algorithm": algorithm,
                "runs": runs[algorithm],
                "bare_runs": bares,
                "bare_z1_runs": bares_z1,
                "best": best,
                "ratio": best["pgshift"] / best["bare"],
                "ratio_vs_z1": best["pgshift"] / best["bare_z1"],
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=50, help="pgbench scale (50 = about 750 MB)")
    parser.add_argument("--quick", action="store_true", help="pgbench scale 5")
    parser.add_argument("--repeat", type=int, default=1, help="runs per database (the best time counts)")
    parser.add_argument("--no-pagila", action="store_true")
    parser.add_argument(
        "--algorithms",
        default=",".join(_checksums.ALGORITHMS),
        help="checksum algorithms to time, comma-separated (default: %(default)s; the first is the default one)",
    )
    args = parser.parse_args()
    algorithms = [a for a in args.algorithms.split(",") if a]
    for algorithm in algorithms:
        _checksums.check_algorithm(algorithm)
    scale = 5 if args.quick else args.scale
    base = tempfile.mkdtemp(prefix="pgshift-bench-backup-")
    cluster = pgworld.Cluster("bench", os.path.join(base, "pg"), pgworld.free_port(), "bench-" + os.urandom(8).hex())
    work = os.path.join(base, "work")
    os.makedirs(work, mode=0o700)
    results = []
    try:
        cluster.start()
        params = ConnParams.from_params(cluster.conn())
        t0 = time.monotonic()
        load_pgbench(cluster, params, scale)
        print("pgbench -i -s %d loaded in %.1f s" % (scale, time.monotonic() - t0), flush=True)
        results.extend(bench(cluster, params, "bench", work, args.repeat, algorithms))
        if not args.no_pagila and load_pagila(cluster, params):
            results.extend(bench(cluster, params, "pagila", work, args.repeat, algorithms))
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)
    print()
    print(
        "%-8s %-12s %9s %9s %9s %9s %9s %7s %7s"
        % ("db", "checksum", "bare", "bare-Z1", "backup", "verify", "pgshift", "ratio", "vs-Z1")
    )
    for r in results:
        b = r["best"]
        name = r["database"] if r["database"] != "bench" else "pgb-s%d" % scale
        print(
            "%-8s %-12s %8.2fs %8.2fs %8.2fs %8.2fs %8.2fs %7.2f %7.2f"
            % (
                name,
                r["algorithm"],
                b["bare"],
                b["bare_z1"],
                b["backup"],
                b["verify_restore"],
                b["pgshift"],
                r["ratio"],
                r["ratio_vs_z1"],
            )
        )
    print("goal: ratio (pgshift backup + restore drill) / (bare pg_dump -Fd -j2 + pg_restore -j2) <= 1.3")
    print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
