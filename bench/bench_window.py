#!/usr/bin/env python
"""Benchmark: the maintenance window of prod_restore.yml on a throwaway local world, and where it goes.

Starts its own world (tools/pgworld.World in a temporary folder, free ports), fills it at ``--scale``, and runs the
release ``--runs`` times (the world reset before each). Per run it prints, from the run journal (one clock, the
production server's): the window as the release records it (``window_seconds``), the database part of it (access
blocked to the swap done) and the time between consecutive journal entries of the Rebuild play, so that the fixed
cost (journal writes, the input re-check, blocking) shows beside the data-dependent steps (create, copy, post-data,
integrity check, swap). ``--no-app-tier`` runs the database steps only (the window is then access blocked to swap).

    .venv/bin/python bench/bench_window.py --scale 1 --runs 3
    .venv/bin/python bench/bench_window.py --scale 1 --runs 3 --no-app-tier
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import typing as t

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import pgworld  # noqa: E402

VENV_BIN = os.path.join(ROOT, ".venv", "bin")


def _env(world: pgworld.World) -> t.Dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
            "ANSIBLE_HOME": os.path.join(ROOT, ".cache", "ansible"),
            "ANSIBLE_LOCAL_TEMP": os.path.join(ROOT, ".cache", "ansible", "tmp"),
            "ANSIBLE_COLLECTIONS_PATH": os.path.join(ROOT, ".build", "collections"),
            "ANSIBLE_NOCOLOR": "1",
            "PGSHIFT_REPORT_DIR": os.path.join(os.path.dirname(world.state), "reports"),
            "PGSHIFT_WORLD": world.state,
            "PGSHIFT_ARTIFACTS": os.path.join(os.path.dirname(world.state), "artifacts"),
            "PATH": VENV_BIN + os.pathsep + env.get("PATH", ""),
        }
    )
    env.pop("PGPASSWORD", None)
    return env


def journal(world: pgworld.World) -> t.List[t.Tuple[str, str, float]]:
    """(step, state, epoch seconds) of the latest run, in order."""
    with contextlib.closing(world.clusters["prod"].connect("pgshift")) as conn, conn.cursor() as cur:
        cur.execute("SELECT run_id FROM pgshift.runs ORDER BY started_at DESC LIMIT 1")
        run_id = cur.fetchone()[0]
        cur.execute(
            "SELECT step, state, extract(epoch FROM at)::float8 FROM pgshift.steps WHERE run_id = %s ORDER BY id",
            (run_id,),
        )
        return [(r[0], r[1], float(r[2])) for r in cur.fetchall()]


def one_run(world: pgworld.World, scale: float, app_tier: bool, tmp: str) -> t.Dict[str, t.Any]:
    world.reset(scale=scale)
    vars_file = os.path.join(tmp, "vars.json")
    with open(os.open(vars_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        json.dump({"pgshift_app_tier": app_tier}, handle)
    started = time.monotonic()
    proc = subprocess.run(
        [os.path.join(VENV_BIN, "ansible-playbook"), "playbooks/prod_restore.yml", "-e", "@" + vars_file],
        cwd=ROOT,
        env=_env(world),
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit("the release failed:\n" + (proc.stdout + proc.stderr)[-4000:])
    with open(os.path.join(os.path.dirname(world.state), "artifacts", "last-summary.json")) as handle:
        summary = json.load(handle)
    steps = journal(world)
    first_block = next(at for step, state, at in steps if step == "block_access" and state == "started")
    swapped = next(at for step, state, at in steps if step == "swap" and state == "done")
    gaps = []
    previous: t.Optional[t.Tuple[str, str, float]] = None
    for entry in steps:
        if previous is not None and entry[2] >= first_block - 1e-6 and entry[2] <= swapped + 1e-6:
            gaps.append(("%s %s -> %s %s" % (previous[0], previous[1], entry[0], entry[1]), entry[2] - previous[2]))
        previous = entry
    # the per-step timings of rebuild_swap, from the run report (a release with one task per step has none)
    reports = os.path.join(os.path.dirname(world.state), "reports")
    latest = max(
        (os.path.join(reports, d, "report.json") for d in os.listdir(reports) if d != "last-run.json"),
        key=os.path.getmtime,
    )
    with open(latest) as handle:
        results = json.load(handle).get("results", [])
    inner = [r["data"]["steps"] for r in results if r["action"].endswith("rebuild_swap") and "steps" in r["data"]]
    return {
        "where": ", ".join("%s %.3f" % (s["name"], s["seconds"]) for s in inner[0]) if inner else None,
        "window_seconds": float(summary["maintenance_seconds"]),
        "blocked_to_swap": round(swapped - first_block, 3),
        "gaps": gaps,
        "playbook_seconds": round(wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-app-tier", action="store_true")
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="pgshift-bench-window-")
    os.chmod(base, 0o755)  # noqa: S103 - the server runs as another OS user and must reach its cluster folder
    world = pgworld.World(os.path.join(base, "world"))
    results = []
    try:
        for n in range(args.runs):
            result = one_run(world, args.scale, not args.no_app_tier, base)
            results.append(result)
            print(
                "run %d: window %.3f s (journal), access blocked to swap %.3f s, playbook %.1f s"
                % (n + 1, result["window_seconds"], result["blocked_to_swap"], result["playbook_seconds"])
            )
            for label, seconds in result["gaps"]:
                print("    %-58s %7.3f s" % (label, seconds))
            if result["where"]:
                print("    rebuild_swap: " + result["where"])
    finally:
        world.destroy()
        shutil.rmtree(base, ignore_errors=True)
    windows = [r["window_seconds"] for r in results]
    blocked = [r["blocked_to_swap"] for r in results]
    print(
        "scale %s, %s: window median %.3f s (min %.3f), access blocked to swap median %.3f s (min %.3f)"
        % (
            args.scale,
            "database steps only" if args.no_app_tier else "with the app tier",
            statistics.median(windows),
            min(windows),
            statistics.median(blocked),
            min(blocked),
        )
    )


if __name__ == "__main__":
    main()
