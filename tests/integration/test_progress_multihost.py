"""Several hosts over real SSH, a real nginx, and the progress callback watching the run.

A tiny playbook (tests/multihost/playbooks/flag.yml) pings every host, sets the maintenance flag on the web host,
waits on the database host until the test says go, and removes the flag. Meanwhile the test asks nginx (urllib on
the web host's loopback address) and gets the 503 maintenance page; after the run the backends answer again. A local
webhook receiver gets the callback's notifications in order, and the run report's step count matches the playbook.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import typing as t

import pytest
from conftest import ROOT, VENV_BIN, ansible_env
from multihost.harness import MultiHost, WebhookReceiver, http_get, multihost  # noqa: F401  # pylint: disable=unused-import

PLAYBOOK = os.path.join(ROOT, "tests", "multihost", "playbooks", "flag.yml")
PLAYBOOK_TASKS = 4  # ping, flag on, wait, flag off


def _events(kinds: t.List[t.Dict[str, t.Any]]) -> t.List[t.Tuple[str, t.Optional[str]]]:
    return [(e["event"], e.get("phase")) for e in kinds]


def test_maintenance_page_over_ssh_with_notifications_and_report(multihost: MultiHost, tmp_path: t.Any) -> None:  # noqa: F811
    web = multihost.web_url
    status, body = http_get(web + "/health")
    assert status == 200 and json.loads(body)["host"] in ("app1", "app2")

    go_file = tmp_path / "go"
    report_dir = tmp_path / "runs"
    jsonl = tmp_path / "events.jsonl"
    with WebhookReceiver() as hook:
        env = ansible_env(
            {
                "ANSIBLE_CALLBACKS_ENABLED": "pgshift.ops.progress",
                "PGSHIFT_REPORT_DIR": str(report_dir),
                "PGSHIFT_PROGRESS_WEBHOOK_URL": hook.url,
                "PGSHIFT_PROGRESS_WEBHOOK_TOKEN": "tok-" + "s3cr3t",
                "PGSHIFT_PROGRESS_JSONL": str(jsonl),
                "PGSHIFT_PROGRESS_INTERVAL": "1",
            }
        )
        argv = [
            os.path.join(VENV_BIN, "ansible-playbook"),
            PLAYBOOK,
            "-i",
            multihost.inventory,
            "-e",
            "multihost_go_file=%s" % go_file,
        ]
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: t.List[str] = []
        progress_line = threading.Event()

        def read_output() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if "Wait for the test to say go still running" in line:
                    progress_line.set()

        reader = threading.Thread(target=read_output, daemon=True)
        reader.start()
        try:
            # The run is inside its "work" phase: the flag is set, so nginx serves the maintenance page.
            hook.wait_for(
                lambda e: e["event"] == "phase_started" and e["phase"] == "Work while in maintenance", timeout=120
            )
            assert os.path.exists(multihost.maintenance_flag)
            for _attempt in range(3):  # both upstreams are behind the flag
                status, body = http_get(web + "/customers/7")
                assert status == 503
                assert "Down for maintenance" in body
            # the long step gets its "still running" line (interval 1 s) before the test lets it finish
            assert progress_line.wait(timeout=60), "".join(lines)
            go_file.write_text("go\n")
            proc.wait(timeout=180)
            reader.join(timeout=30)
            output = "".join(lines)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, output
        events = hook.events()
        headers = hook.headers

    # After the run: the flag is gone and the real backends answer through nginx, both of them.
    assert not os.path.exists(multihost.maintenance_flag)
    seen = set()
    for _attempt in range(4):
        status, body = http_get(web + "/customers/7")
        assert status == 200, body
        seen.add(json.loads(body)["host"])
    assert seen == {"app1", "app2"}

    # Every notification, in order, to the webhook and the JSON-lines file alike.
    phases = ["Preflight", "Maintenance on", "Work while in maintenance", "Maintenance off"]
    expected: t.List[t.Tuple[str, t.Optional[str]]] = [("run_started", None)]
    for phase in phases:
        expected += [("phase_started", phase), ("phase_finished", phase)]
    expected.append(("run_finished", None))
    assert _events(events) == expected
    assert [e["seq"] for e in events] == list(range(1, len(expected) + 1))
    jsonl_events = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert jsonl_events == events
    assert events[-1]["status"] == "ok" and events[-1]["totals"]["steps"] == PLAYBOOK_TASKS
    assert all(h.get("Authorization") == "Bearer tok-s3cr3t" for h in headers)
    assert all(e["status"] == "ok" for e in events if e["event"] == "phase_finished")

    # Terminal progress: one line per phase and step, and a progress line on the long step.
    assert "[pgshift]" in output
    assert "tok-s3cr3t" not in output and "s3cr3t" not in jsonl.read_text()

    # The report: both files, last-run.json a copy, one step per task with the hosts that ran it.
    report = json.loads((report_dir / "last-run.json").read_text())
    folder = report["files"]["folder"]
    assert os.path.dirname(folder) == str(report_dir)
    assert json.loads(open(os.path.join(folder, "report.json"), encoding="utf-8").read()) == report
    page = open(os.path.join(folder, "report.html"), encoding="utf-8").read()
    assert "<svg" in page and "Maintenance window" in page
    assert report["status"] == "ok"
    assert len(report["steps"]) == PLAYBOOK_TASKS == report["totals"]["steps"]
    assert [s["play"] for s in report["steps"]] == phases
    assert set(report["steps"][0]["hosts"]) == {"db1", "app1", "app2", "web1"}
    assert report["steps"][1]["hosts"] == {"web1": "changed"}
    assert sorted(report["hosts"]) == ["app1", "app2", "db1", "web1"]
    window = report["maintenance_window"]
    wait_step = report["steps"][2]
    assert window["open"] is False
    assert window["started"] <= wait_step["started"]
    assert window["finished"] >= wait_step["started"] + wait_step["duration_s"]
    assert wait_step["duration_s"] >= 1.0
    assert oct(os.stat(os.path.join(folder, "report.json")).st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("name", ["db1", "app1", "app2", "web1"])
def test_each_host_is_its_own_sshd(multihost: MultiHost, name: str) -> None:  # noqa: F811
    host = multihost.host(name)
    argv = [
        "ssh",
        "-i",
        multihost.key,
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "BatchMode=yes",
        "-p",
        str(host.port),
        "root@" + host.address,
        "echo $SSH_CONNECTION",
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    # SSH_CONNECTION: client_ip client_port server_ip server_port
    assert proc.stdout.split()[2:] == [host.address, str(host.port)]


def test_backends_on_127_0_0_1_and_everything_stopped_by_pid(tmp_path: t.Any) -> None:
    """app_address="127.0.0.1" (for services that bind only there, like the sample shop API); stop() ends every
    process the harness started."""
    from multihost.harness import ensure_packages

    reason = ensure_packages()
    if reason:
        pytest.skip(reason)
    mh = MultiHost(str(tmp_path / "mh"), app_address="127.0.0.1")
    with mh:
        pids = [mh.pid(name) for name in ("sshd-db1", "sshd-app1", "sshd-app2", "sshd-web1", "nginx", "backend-app1")]
        pids.append(mh.pid("backend-app2"))
        assert {mh.app_listen("app1"), mh.app_listen("app2")} == {"127.0.0.1"}
        assert mh.app_port("app1") != mh.app_port("app2")
        hosts = {json.loads(http_get(mh.web_url + "/x")[1])["host"] for _attempt in range(4)}
        assert hosts == {"app1", "app2"}
        mh.stop_backend("app1")
        hosts = {json.loads(http_get(mh.web_url + "/x")[1])["host"] for _attempt in range(4)}
        assert hosts == {"app2"}  # nginx passes over the stopped upstream
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
