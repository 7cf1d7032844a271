#!/usr/bin/env python
"""Benchmark: pgshift's data_copy + integrity_check against pgcopydb and pg_dump/pg_restore, side by side.

Not a test: it prints times and ratios. One throwaway cluster (free port, temp folder), one source database
(``pgbench -i -s SCALE``, and Pagila when ../shared/data/pagila exists), and for each tool a fresh target database.

    .venv/bin/python bench/bench_data_copy.py --scales 1,10,50 --jobs 2   # 50: about 750 MB
    .venv/bin/python bench/bench_data_copy.py --scale 5                   # quick

Per scale (``--scales 1,10,50``), in rounds (``--repeat``, best total of each kept, because the machine may be
shared), each a fresh target database:
- pgshift's whole rebuild, the way the release runs it: pre-data restore, ``data_copy``, the post-data step of
  ``database_build`` (one transaction, what the copy did not build, then VALIDATE of NOT VALID constraints and
  ANALYZE) and ``integrity_check`` (the proof), in three
  variants: ``today`` (copy, then the whole post-data section), ``overlap`` (the dev archive given to data_copy:
  indexes, constraints and foreign keys built during the copy) and ``overlap+split`` (and, as shipped, every table of
  at least 64 MiB split across the workers by ctid ranges). Each pgshift step runs in a fresh Python process
  that reports its peak memory.
  While the copy runs, the target backends' wait events are sampled (``Lock/extend``: the relation extension lock
  that parallel writers of one table contend for).
- ``pgcopydb clone`` (schema + data + indexes, same --table-jobs and --index-jobs), in the same rounds.
- once: ``pg_dump -Fd -j N -Z1`` + ``pg_restore -j N``, and ``COPY <table> TO '/dev/null'`` over every table.
It prints, per scale, each step, the ratio rebuild / pgcopydb clone and where the time goes (the longest tasks of
the copy's timeline).
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
import threading
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
    from ansible_collections.pgshift.ops.plugins.module_utils import _post_data, _release  # noqa: PLC0415
    from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams  # noqa: PLC0415
    from ansible_collections.pgshift.ops.plugins.module_utils._data_check import integrity_check  # noqa: PLC0415
    from ansible_collections.pgshift.ops.plugins.module_utils._data_copy import copy_data  # noqa: PLC0415

    src = ConnParams.from_params(spec["source"])
    tgt = ConnParams.from_params(spec["target"])
    started = time.monotonic()
    summary: t.Dict[str, t.Any] = {}
    if spec["step"] == "copy":
        result = copy_data(
            src,
            tgt,
            None,
            jobs=spec["jobs"],
            archive=spec.get("archive"),
            schema_source=src if spec.get("archive") else None,
            **({"split_bytes": spec.get("split_bytes", 1 << 62)} if spec.get("split_bytes", 0) is not None else {}),
        )
        summary = {"rows": result["total_rows"], "bytes": result["total_bytes"], "timeline": result["timeline"]}
        summary["built"] = sum(len(v) for v in result["built_during_copy"].values())
        summary["prepare"] = result["prepare_seconds"]
        summary["tasks"] = result["seconds"]
    elif spec["step"] == "post":
        # what database_build step=post-data does to the tables: the rest of the section, the NOT VALID
        # constraints validated, ANALYZE (pgcopydb clone analyzes too)
        done = _post_data.restore_remaining(tgt, spec["archive"], 0)
        _release.validate_constraints(tgt)
        _release.analyze(tgt)
        summary = {"skipped": len(done["built_during_copy"])}
    else:
        result = integrity_check(src, tgt, None, jobs=spec["jobs"])
        summary = {"ok": result["ok"], "mismatches": len(result["mismatches"])}
    summary["seconds"] = time.monotonic() - started
    summary["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return summary


def step(name: str, cluster: t.Any, source: str, target: str, jobs: int, **extra: t.Any) -> t.Dict[str, t.Any]:
    spec = {"step": name, "source": cluster.conn(source), "target": cluster.conn(target), "jobs": jobs}
    spec.update(extra)
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


class WaitSampler:
    """Samples the wait events of pgshift's target backends every 20 ms while a copy runs (how often they wait for
    the relation extension lock: ``Lock/extend``)."""

    def __init__(self, cluster: t.Any, database: str) -> None:
        self.cluster = cluster
        self.database = database
        self.counts: t.Dict[str, int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "WaitSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: t.Any) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with contextlib.closing(self.cluster.connect("postgres")) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                while not self._stop.wait(0.02):
                    cur.execute(
                        "SELECT coalesce(wait_event_type || '/' || wait_event, 'CPU') FROM pg_stat_activity "
                        "WHERE datname = %s AND application_name = 'pgshift data_copy target' AND state = 'active'",
                        (self.database,),
                    )
                    for (event,) in cur.fetchall():
                        self.counts[event] = self.counts.get(event, 0) + 1
                        self.samples += 1

    def share(self, event: str) -> float:
        return self.counts.get(event, 0) / self.samples if self.samples else 0.0


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

    VARIANTS: t.Tuple[t.Tuple[str, t.Dict[str, t.Any]], ...] = (
        ("today", {}),  # copy, then the whole post-data section
        ("overlap", {"archive": True}),  # indexes/constraints/FKs built during the copy, no split
        ("overlap+split", {"archive": True, "split_bytes": None}),  # and tables >= 64 MiB split (the default)
    )

    def rebuild(self, source: str, dump: str, variant: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
        """One whole pgshift rebuild into a fresh database: pre-data, data_copy, post-data (the module's step: one
        transaction, what is left), integrity_check; each pgshift step in a fresh process."""
        target = self.new_db("pgshift")
        try:
            out: t.Dict[str, t.Any] = {}
            out["pre"] = self.run([self.bin("pg_restore"), "--section=pre-data", "-d", target, dump], target)
            extra: t.Dict[str, t.Any] = {}
            if variant.get("archive"):
                extra["archive"] = dump
            if "split_bytes" in variant:
                extra["split_bytes"] = variant["split_bytes"]  # None: data_copy's default
            with WaitSampler(self.cluster, target) as waits:
                copy = step("copy", self.cluster, source, target, self.jobs, **extra)
            out.update(
                copy=copy["seconds"],
                timeline=copy["timeline"],
                rows=copy["rows"],
                bytes=copy["bytes"],
                built=copy["built"],
                prepare=copy["prepare"],
                tasks=copy["tasks"],
                copy_rss_mb=copy["maxrss_mb"],
                extend_share=waits.share("Lock/extend"),
                waits=dict(sorted(waits.counts.items(), key=lambda kv: -kv[1])[:4]),
            )
            post = step("post", self.cluster, source, target, self.jobs, archive=dump)
            out["post"] = post["seconds"]
            check = step("check", self.cluster, source, target, self.jobs)
            if not check["ok"]:
                raise SystemExit("integrity_check found differences after the copy: %s" % check)
            out["check"] = check["seconds"]
            out["check_rss_mb"] = check["maxrss_mb"]
            out["total"] = out["pre"] + out["copy"] + out["post"] + out["check"]
            return out
        finally:
            self.drop(target)

    def pgshift(self, source: str) -> t.Dict[str, t.Any]:
        """Every variant and pgcopydb clone, alternately, ``repeat`` rounds; the best total of each is kept."""
        dump = os.path.join(self.work, "schema-%s.dump" % source)
        self.run([self.bin("pg_dump"), "-Fc", "--schema-only", "-f", dump, "-d", source], source)
        best: t.Dict[str, t.Dict[str, t.Any]] = {}
        clones: t.List[float] = []
        for _round in range(self.repeat):
            for name, variant in self.VARIANTS:
                got = self.rebuild(source, dump, variant)
                if name not in best or got["total"] < best[name]["total"]:
                    best[name] = got
            clone = self.pgcopydb_clone(source)
            if clone is not None:
                clones.append(clone)
        return {"variants": best, "clone": min(clones) if clones else None, "dump": dump}

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


def where(timeline: t.Sequence[t.Dict[str, t.Any]], top: int = 6) -> str:
    spans = sorted(timeline, key=lambda r: -(r["end"] - r["start"]))[:top]
    return ", ".join(
        "%s %.2f-%.2f s%s" % (r["task"], r["start"], r["end"], " (x%d)" % r["workers"] if r["workers"] > 1 else "")
        for r in spans
    )


def report(bench: Bench, label: str, source: str) -> t.Dict[str, t.Any]:
    print("\n== %s (%s, jobs=%d)" % (label, bench.size(source), bench.jobs), flush=True)
    bench.sql(source, "VACUUM ANALYZE")
    mine = bench.pgshift(source)
    clone = mine["clone"]
    dump_restore = bench.dump_restore(source)
    devnull = bench.copy_to_devnull(source)
    print("%-15s %6s %6s %6s %6s %7s %7s  %s" % ("pgshift", "pre", "copy", "post", "proof", "total", "/clone", "notes"))
    for name, _variant in bench.VARIANTS:
        v = mine["variants"][name]
        print(
            "%-15s %6.2f %6.2f %6.2f %6.2f %7.2f %7s  built during copy %d, extend waits %.0f%%, peak RSS %.0f/%.0f MB"
            % (
                name,
                v["pre"],
                v["copy"],
                v["post"],
                v["check"],
                v["total"],
                ratio(v["total"], clone),
                v["built"],
                100 * v["extend_share"],
                v["copy_rss_mb"],
                v["check_rss_mb"],
            ),
            flush=True,
        )
    if clone is not None:
        print("pgcopydb clone --table-jobs %d --index-jobs %d   %7.2f s" % (bench.jobs, bench.jobs, clone))
    else:
        print("pgcopydb: not installed (make bench-deps), skipped")
    print("pg_dump -Fd -j %d -Z1 + pg_restore -j %d      %7.2f s" % (bench.jobs, bench.jobs, dump_restore))
    print("COPY TO /dev/null, every source table        %7.2f s" % devnull)
    for name, _variant in bench.VARIANTS:
        v = mine["variants"][name]
        print(
            "where the time goes (%s): copy step %.2f s = plan %.2f + tasks %.2f + sequences etc.; longest tasks: %s"
            % (name, v["copy"], v["prepare"], v["tasks"], where(v["timeline"]))
        )
        print("  target backends' wait samples (%s): %s" % (name, v["waits"]))
    return {"label": label, "variants": mine["variants"], "clone": clone, "dump_restore": dump_restore}


def main() -> None:
    if "--run-step" in sys.argv:
        print(json.dumps(run_step(json.loads(sys.stdin.read()))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, action="append", help="pgbench scale (50: about 750 MB); repeatable")
    parser.add_argument("--scales", default="", help="comma-separated pgbench scales, e.g. 1,10,50")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--no-pagila", action="store_true")
    parser.add_argument(
        "--repeat", type=int, default=2, help="rounds of every variant and pgcopydb clone (best of each kept)"
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
        scales = (args.scale or []) + [int(x) for x in args.scales.split(",") if x.strip()]
        for scale in scales or [50]:
            source = bench.new_db("pgbench")
            spent = bench.run([bench.bin("pgbench"), "-i", "-q", "-s", str(scale), source], source)
            print("pgbench -i -s %d: %.1f s" % (scale, spent), flush=True)
            results.append(report(bench, "pgbench -i -s %d" % scale, source))
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
        print("\nrebuild (pre-data + copy + post-data + proof) / pgcopydb clone, best of %d:" % bench.repeat)
        for r in results:
            print(
                "  %-20s " % r["label"]
                + ", ".join(
                    "%s %.2f s (%s)"
                    % (name, r["variants"][name]["total"], ratio(r["variants"][name]["total"], r["clone"]))
                    for name, _v in bench.VARIANTS
                )
                + (", pgcopydb clone %.2f s" % r["clone"] if r["clone"] else "")
            )
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
