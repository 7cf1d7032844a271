"""The progress callback on a failing run: the report is still written, the rescue is reported as a rollback, a
webhook that does not answer is logged and never fails the run, and no secret reaches a notification or the report."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import typing as t
import uuid

from conftest import VENV_BIN, PlaybookRun
from multihost.harness import WebhookReceiver

PLAYBOOK = """---
- name: Preflight
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Secret work
      ansible.builtin.command: echo {{ db_password }}
      no_log: true
      changed_when: false
    - name: Optional probe
      ansible.builtin.command: /bin/false
      changed_when: false
      ignore_errors: true
    - name: Publish for the report
      ansible.builtin.set_fact:
        pgshift_report:
          api_checks: [{name: health, status: 200, ok: true}]

- name: Maintenance on
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Flag on
      ansible.builtin.debug:
        msg: maintenance on

- name: Swap
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Guarded swap
      block:
        - name: Swap databases
          ansible.builtin.fail:
            msg: "could not connect with password={{ db_password }}"
        - name: Never reached
          ansible.builtin.debug:
            msg: unreachable
      rescue:
        - name: Swap back
          ansible.builtin.debug:
            msg: undoing
        - name: Fail after the rollback
          ansible.builtin.fail:
            msg: swap failed and was rolled back

- name: Maintenance off
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Flag off
      ansible.builtin.debug:
        msg: maintenance off
"""


@contextlib.contextmanager
def silent_listener() -> t.Iterator[str]:
    """A TCP port that accepts connections and never answers: a webhook that hangs."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield "http://127.0.0.1:%d/hook" % sock.getsockname()[1]
    finally:
        sock.close()


def test_failed_run_reports_rollback_and_survives_a_dead_webhook(
    run_playbook: t.Callable[..., PlaybookRun], tmp_path: t.Any
) -> None:
    secret = "pw-" + uuid.uuid4().hex
    playbook = tmp_path / "failing.yml"
    playbook.write_text(PLAYBOOK)
    report_dir = tmp_path / "runs"
    jsonl = tmp_path / "notify" / "events.jsonl"
    with silent_listener() as dead_url, WebhookReceiver() as slack:
        run = run_playbook(
            str(playbook),
            inventory="localhost,",
            extra_vars={
                "db_password": secret,
                "ansible_connection": "local",
                "ansible_python_interpreter": os.path.join(VENV_BIN, "python"),
            },
            env={
                "ANSIBLE_CALLBACKS_ENABLED": "pgshift.ops.progress",
                "PGSHIFT_REPORT_DIR": str(report_dir),
                "PGSHIFT_PROGRESS_WEBHOOK_URL": dead_url,
                "PGSHIFT_PROGRESS_SLACK_URL": slack.url,
                "PGSHIFT_PROGRESS_JSONL": str(jsonl),
                "PGSHIFT_PROGRESS_TIMEOUT": "1",
                "PGSHIFT_PROGRESS_MAX_FAILURES": "2",
            },
            timeout=300,
        )
        slack_bodies = slack.events()

    # The playbook's own failure decides the exit code; the dead webhook only produced warnings.
    assert run.rc == 2, run.output
    assert "notification to webhook http://127.0.0.1:" in run.output
    assert "no more notifications to it in this run" in run.output
    assert run.output.count("[WARNING]: pgshift.ops.progress") == 3  # two failures, then given up

    events = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [(e["event"], e.get("phase"), e.get("step")) for e in events] == [
        ("run_started", None, None),
        ("phase_started", "Preflight", None),
        ("phase_finished", "Preflight", None),
        ("phase_started", "Maintenance on", None),
        ("phase_finished", "Maintenance on", None),
        ("phase_started", "Swap", None),
        ("step_failed", "Swap", "Swap databases"),
        ("rescue_entered", "Swap", "Swap back"),
        ("step_failed", "Swap", "Fail after the rollback"),
        ("phase_finished", "Swap", None),
        ("run_finished", None, None),
    ]
    assert events[-1]["status"] == "failed"
    assert events[-1]["rolled_back"] == ["Swap back", "Fail after the rollback"]
    assert events[9]["status"] == "failed"
    # Slack-compatible: {"text": ...} only, the same events in the same order
    assert [set(b) for b in slack_bodies] == [{"text"}] * len(events)
    assert [b["text"] for b in slack_bodies] == [e["text"] for e in events]
    assert oct(os.stat(jsonl).st_mode & 0o777) == "0o600"

    report = json.loads((report_dir / "last-run.json").read_text())
    assert report["status"] == "failed"
    names = [s["name"] for s in report["steps"]]
    assert names == [
        "Secret work",
        "Optional probe",
        "Publish for the report",
        "Flag on",
        "Swap databases",
        "Swap back",
        "Fail after the rollback",
    ]
    by_name = {s["name"]: s for s in report["steps"]}
    assert by_name["Optional probe"]["status"] == "ignored"
    assert by_name["Swap databases"]["status"] == "rescued"
    assert by_name["Swap back"]["rescue"] is True and by_name["Swap databases"]["rescue"] is False
    assert report["rollback"]["rescue_entered"] is True
    assert [s["name"] for s in report["rollback"]["steps"]] == ["Swap back", "Fail after the rollback"]
    assert report["maintenance_window"]["open"] is True  # "Maintenance off" never ran: the host had failed
    assert [r["data"] for r in report["results"]] == [
        {"pgshift_report": {"api_checks": [{"name": "health", "status": 200, "ok": True}]}}
    ]
    failures = {f["step"]: f for f in report["failures"]}
    assert failures["Swap databases"]["rescued"] is True
    assert "********" in failures["Swap databases"]["msg"]
    page = (report_dir / os.path.basename(report["files"]["folder"]) / "report.html").read_text()
    assert "Rolled back" in page

    # No secret anywhere we wrote or printed.
    ours = "\n".join(line for line in run.output.splitlines() if line.startswith("[pgshift]"))
    for text in (ours, jsonl.read_text(), json.dumps(slack_bodies), json.dumps(report), page):
        assert secret not in text
    assert "Swap databases FAILED on localhost: could not connect with password=********" in ours
