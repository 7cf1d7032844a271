#!/usr/bin/env python
"""Overhead of the pgshift.ops.progress callback: the same playbook with and without it, side by side.

    .venv/bin/python bench/bench_progress.py [--tasks 300] [--repeat 3]

The playbook runs TASKS ansible.builtin.debug tasks on localhost (the callback's work per step is what is measured,
not the tasks'); with the callback on, it writes the report and a JSON-lines notification file. Prints the best wall
time of each side and their ratio. No assertion: a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".venv", "bin")


def playbook(tasks: int) -> str:
    lines = ["---", "- name: Bench", "  hosts: localhost", "  gather_facts: false", "  tasks:"]
    for i in range(tasks):
        lines += ["    - name: Step %d" % i, "      ansible.builtin.debug:", "        msg: step %d" % i]
    return "\n".join(lines) + "\n"


def run(path: str, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of ansible-playbook and its children): CPU time is the steadier figure on a busy
    machine."""
    argv = [os.path.join(BIN, "ansible-playbook"), path, "-i", "localhost,", "-c", "local"]
    argv += ["-e", "ansible_python_interpreter=" + os.path.join(BIN, "python")]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pgshift-bench-progress-") as tmp:
        path = os.path.join(tmp, "bench.yml")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(playbook(args.tasks))
        # A config of its own, so that the baseline has no callback enabled whatever the project's ansible.cfg says.
        config = os.path.join(tmp, "ansible.cfg")
        with open(config, "w", encoding="utf-8") as handle:
            handle.write(
                "[defaults]\ncollections_path = %s\nretry_files_enabled = false\n"
                % os.path.join(ROOT, ".build", "collections")
            )
        base = dict(os.environ, ANSIBLE_CONFIG=config)
        base.pop("ANSIBLE_CALLBACKS_ENABLED", None)
        with_cb = dict(
            base,
            ANSIBLE_CALLBACKS_ENABLED="pgshift.ops.progress",
            PGSHIFT_REPORT_DIR=os.path.join(tmp, "runs"),
            PGSHIFT_PROGRESS_JSONL=os.path.join(tmp, "events.jsonl"),
        )
        plain_runs, progress_runs = [], []
        for _round in range(args.repeat):  # interleaved, so that a load change hits both sides
            plain_runs.append(run(path, base))
            progress_runs.append(run(path, with_cb))
        report = os.path.join(tmp, "runs", "last-run.json")
        size = os.path.getsize(report)
    print(
        "tasks: %d, best of %d interleaved runs each (load average %.1f)"
        % (args.tasks, args.repeat, os.getloadavg()[0])
    )
    for label, index in (("wall", 0), ("CPU", 1)):
        plain = min(r[index] for r in plain_runs)
        progress = min(r[index] for r in progress_runs)
        print(
            "  %-4s without the callback %.2f s, with pgshift.ops.progress (report + JSON-lines) %.2f s: "
            "ratio %.3f, %.1f ms per task"
            % (label, plain, progress, progress / plain, (progress - plain) * 1000 / args.tasks)
        )
    print("  last-run.json: %d bytes" % size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
