#!/usr/bin/env python
"""How good is the rehearsal's forecast when production has grown since the rehearsal?

On a throwaway local world: `make rehearsal` with production (and staging) at --small scale, then production grows
to --large scale (the same dev schema, so the rehearsal still matches), the gate recomputes the forecast with
production's size now, and a real release (prod_restore.yml, with the application tier) measures the window.
Printed side by side: the rehearsal's model (fixed part + data part x size ratio) and the naive one (the whole
measured window x size ratio), for the whole window and for its database part (from the journal).

    python bench/bench_rehearsal_forecast.py --small 20 --large 60
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import typing as t

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, ".build", "collections"))

import pgworld  # noqa: E402

from ansible_collections.pgshift.ops.plugins.module_utils import _rehearsal as rehearsal  # noqa: E402
from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams  # noqa: E402

BIN = os.path.join(ROOT, ".venv", "bin")


def env(world: pgworld.World, extra: t.Optional[t.Dict[str, str]] = None) -> t.Dict[str, str]:
    out = dict(os.environ, PGSHIFT_WORLD=world.state, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"))
    out["PATH"] = BIN + os.pathsep + out.get("PATH", "")
    out.pop("PGPASSWORD", None)
    out.update(extra or {})
    return out


def run(argv: t.Sequence[str], environment: t.Dict[str, str]) -> None:
    proc = subprocess.run(argv, cwd=ROOT, env=environment, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-2000:])
        raise SystemExit("failed: %s" % " ".join(argv[:3]))


def size_mb(world: pgworld.World, name: str) -> float:
    size = rehearsal.database_size(ConnParams.from_params(world.clusters[name].conn()), "shop")
    return (size or 0) / 1048576.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=float, default=20.0, help="scale rehearsed (datagen scale)")
    parser.add_argument("--large", type=float, default=60.0, help="scale production grows to")
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="pgshift-bench-rehearsal-")
    os.chmod(base, 0o755)  # noqa: S103 - the server runs as another OS user and must reach its cluster folder
    world = pgworld.World(os.path.join(base, "world"))
    rehearsals = os.path.join(base, "rehearsals")
    try:
        started = time.monotonic()
        world.reset(scale=args.small)
        small_mb = size_mb(world, "prod")
        run(
            [
                "make",
                "-s",
                "rehearsal",
                "REHEARSAL_REPORTS=" + os.path.join(base, "runs"),
                "REHEARSAL_ARGS=-e pgshift_rehearsals_dir=%s -e pgshift_rehearsal_fresh_backup=true" % rehearsals,
            ],
            env(world),
        )
        record = rehearsal.list_records(rehearsals)[0]
        world.reset(scale=args.large)
        large_mb = size_mb(world, "prod")
        inputs = rehearsal_inputs(world)
        prod = ConnParams.from_params(world.clusters["prod"].conn())
        gate = rehearsal.gate(rehearsals, inputs, "shop", 24, rehearsal.database_size(prod, "shop"))
        if not gate["ok"]:
            raise SystemExit("the gate did not accept the rehearsal: %s" % gate["rejected"])
        forecast = gate["forecast"]
        since = rehearsal.iso(rehearsal.now_utc())
        reports = os.path.join(base, "prod-runs")
        run(
            [os.path.join(BIN, "ansible-playbook"), "playbooks/prod_restore.yml", "-i", "inventories/local"],
            env(world, {"ANSIBLE_CALLBACKS_ENABLED": "pgshift.ops.progress", "PGSHIFT_REPORT_DIR": reports}),
        )
        with open(os.path.join(reports, "last-run.json")) as handle:
            report = json.load(handle)
        measured_total = float(report["maintenance_window"]["duration_s"])
        journal_run = rehearsal.staging_run(prod, "shop", "pgshift", since)
        measured_db = float(rehearsal.journal_timings(journal_run or {})["window"]["seconds"] or 0.0)
        app_tier = rehearsal.app_tier_from_report(report) or 0.0
        ratio = float(forecast["size_ratio"])
        naive_db = float(record["window"]["seconds"]) * ratio
        print(
            "rehearsed at scale %g (%.0f MB), production grown to scale %g (%.0f MB): size ratio %.2f"
            % (args.small, small_mb, args.large, large_mb, ratio)
        )
        print("%-38s %10s %10s %8s" % ("", "forecast", "measured", "f/m"))
        rows = [
            ("database window, rehearsal's model", forecast["database_seconds"], measured_db),
            ("database window, naive (all x ratio)", naive_db, measured_db),
            ("whole window, rehearsal's model", forecast["seconds"], measured_total),
            ("whole window, model + measured app tier", forecast["database_seconds"] + app_tier, measured_total),
        ]
        for label, fc, measured in rows:
            print("%-38s %9.1fs %9.1fs %8.2f" % (label, fc, measured, fc / measured if measured else float("nan")))
        print(
            "(app tier allowance in the record %.1f s; measured in the release %.1f s; bench took %.0f s)"
            % (forecast["app_tier_seconds"], app_tier, time.monotonic() - started)
        )
    finally:
        world.destroy()
        shutil.rmtree(base, ignore_errors=True)


def rehearsal_inputs(world: pgworld.World) -> t.Dict[str, t.Any]:
    from ansible_collections.pgshift.ops.plugins.module_utils import _inputs  # noqa: PLC0415

    return _inputs.compute(
        ConnParams.from_params(world.clusters["dev"].conn("shop")),
        os.path.join(ROOT, "sample_app", "migrations"),
        os.path.join(ROOT, "sample_app", "mapping.yml"),
    )


if __name__ == "__main__":
    main()
