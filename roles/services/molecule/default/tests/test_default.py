"""Host state after the services role started, then restarted, the demo service (testinfra)."""

# ruff: noqa: S101  (testinfra checks are asserts)

import json
import os

STATE = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "service")


def _port(host):
    return int(host.file(os.path.join(STATE, "port")).content_string.strip())


def test_the_service_runs_from_its_pidfile(host):
    pid = int(host.file(os.path.join(STATE, "service.pid")).content_string.strip())
    proc = host.process.get(pid=pid)
    assert "http.server" in proc.args


def test_it_listens_on_loopback_only(host):
    port = _port(host)
    assert host.socket("tcp://127.0.0.1:%d" % port).is_listening
    assert not host.socket("tcp://0.0.0.0:%d" % port).is_listening


def test_it_answers_its_health_check(host):
    url = "http://127.0.0.1:%d/health.json" % _port(host)
    out = host.check_output(
        "python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' %s" % url
    )
    assert json.loads(out)["status"] == "ok"


def test_started_then_restarted_in_order(host):
    actions = host.file(os.path.join(STATE, "actions.log")).content_string.split("\n")
    assert [a for a in actions if a] == ["started", "stopped", "started"]
