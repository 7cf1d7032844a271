"""A run stopped with Ctrl-C (SIGINT) still leaves a report, marked interrupted, with the step that was running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import typing as t

from conftest import ROOT, VENV_BIN, ansible_env

PLAYBOOK = """---
- name: Long
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Quick
      ansible.builtin.debug:
        msg: quick
    - name: Never finishes
      ansible.builtin.command: sleep 60
      changed_when: false
"""


def test_ctrl_c_leaves_an_interrupted_report(tmp_path: t.Any) -> None:
    playbook = tmp_path / "long.yml"
    playbook.write_text(PLAYBOOK)
    jsonl = tmp_path / "events.jsonl"
    report_dir = tmp_path / "runs"
    env = ansible_env(
        {
            "ANSIBLE_CALLBACKS_ENABLED": "pgshift.ops.progress",
            "PGSHIFT_REPORT_DIR": str(report_dir),
            "PGSHIFT_PROGRESS_JSONL": str(jsonl),
        }
    )
    argv = [os.path.join(VENV_BIN, "ansible-playbook"), str(playbook), "-i", "localhost,", "-c", "local"]
    argv += ["-e", "ansible_python_interpreter=" + os.path.join(VENV_BIN, "python")]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (jsonl.exists() and "phase_started" in jsonl.read_text()):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        time.sleep(2.0)  # well into "Never finishes"
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, output
    report = json.loads((report_dir / "last-run.json").read_text())
    assert report["status"] == "interrupted"
    assert [(s["name"], s["status"]) for s in report["steps"]] == [("Quick", "ok"), ("Never finishes", "interrupted")]
    assert report["plays"][0]["status"] == "interrupted"
    events = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [e["event"] for e in events][-1] == "run_finished"
    assert events[-1]["status"] == "interrupted"
    assert os.path.exists(report["files"]["html"])
