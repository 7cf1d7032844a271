"""Long steps: a "still running" line with the time left, estimated from the same step in the previous run."""

from __future__ import annotations

import json
import os
import typing as t

from conftest import VENV_BIN, PlaybookRun

PLAYBOOK = """---
- name: Copy
  hosts: localhost
  gather_facts: false
  tasks:
    - name: A long step
      ansible.builtin.wait_for:
        timeout: 4
"""


def test_time_left_comes_from_the_previous_run(run_playbook: t.Callable[..., PlaybookRun], tmp_path: t.Any) -> None:
    playbook = tmp_path / "long.yml"
    playbook.write_text(PLAYBOOK)
    env = {
        "ANSIBLE_CALLBACKS_ENABLED": "pgshift.ops.progress",
        "PGSHIFT_REPORT_DIR": str(tmp_path / "runs"),
        "PGSHIFT_PROGRESS_INTERVAL": "1",
    }
    extra = {"ansible_connection": "local", "ansible_python_interpreter": os.path.join(VENV_BIN, "python")}
    first = run_playbook(str(playbook), inventory="localhost,", extra_vars=extra, env=env)
    assert first.rc == 0, first.output
    assert "A long step still running" in first.output
    assert "left (from the previous run)" not in first.output  # no previous run: no estimate
    previous = json.loads((tmp_path / "runs" / "last-run.json").read_text())
    assert previous["steps"][0]["duration_s"] >= 4.0

    second = run_playbook(str(playbook), inventory="localhost,", extra_vars=extra, env=env)
    assert second.rc == 0, second.output
    lines = [line for line in second.output.splitlines() if "A long step still running" in line]
    # the first progress line comes 1-2 s into a step that took 4 s last time
    assert lines and "left (from the previous run)" in lines[0], second.output
    runs = [d for d in os.listdir(tmp_path / "runs") if d != "last-run.json"]
    assert len(runs) == 2


SERIAL = """---
- name: Restart services
  hosts: all
  gather_facts: false
  serial: 1
  tasks:
    - name: Stop
      ansible.builtin.debug:
        msg: stop {{ inventory_hostname }}
    - name: Start
      ansible.builtin.debug:
        msg: start {{ inventory_hostname }}
"""


def test_serial_batches_stay_in_one_phase(run_playbook: t.Callable[..., PlaybookRun], tmp_path: t.Any) -> None:
    playbook = tmp_path / "serial.yml"
    playbook.write_text(SERIAL)
    jsonl = tmp_path / "events.jsonl"
    env = {
        "ANSIBLE_CALLBACKS_ENABLED": "pgshift.ops.progress",
        "PGSHIFT_REPORT_DIR": str(tmp_path / "runs"),
        "PGSHIFT_PROGRESS_JSONL": str(jsonl),
    }
    extra = {"ansible_connection": "local", "ansible_python_interpreter": os.path.join(VENV_BIN, "python")}
    run = run_playbook(str(playbook), inventory="app1,app2,app3,", extra_vars=extra, env=env)
    assert run.rc == 0, run.output
    report = json.loads((tmp_path / "runs" / "last-run.json").read_text())
    assert [p["batches"] for p in report["plays"]] == [3]
    assert [(s["batch"], s["name"], list(s["hosts"])) for s in report["steps"]] == [
        (1, "Stop", ["app1"]),
        (1, "Start", ["app1"]),
        (2, "Stop", ["app2"]),
        (2, "Start", ["app2"]),
        (3, "Stop", ["app3"]),
        (3, "Start", ["app3"]),
    ]
    events = [json.loads(line)["event"] for line in jsonl.read_text().splitlines()]
    assert events == ["run_started", "phase_started", "phase_finished", "run_finished"]
    assert "batch 3" in run.output
