"""The release plan's order of hosts and its HTML page (pure logic of _plan, no database)."""

from __future__ import annotations

from ansible_collections.pgshift.ops.plugins.module_utils import _plan


def _steps(app_tier: bool, batch: int = 1) -> list:
    return _plan.steps(
        db_host="db1",
        production="shop",
        next_database="shop__next",
        web_hosts=["web1"],
        app_services={"app2": ["api"], "app1": ["api", "worker"], "app3": []},
        restart_batch=batch,
        api_checks=["health"],
        app_tier=app_tier,
    )


def test_hosts_in_the_order_a_run_touches_them() -> None:
    steps = _steps(True, batch=2)
    assert [s["order"] for s in steps] == list(range(1, len(steps) + 1))
    phases = [(s["phase"], s["hosts"]) for s in steps]
    assert phases[:4] == [
        ("backup", ["db1"]),
        ("maintenance on", ["web1"]),
        ("maintenance on", ["app1"]),
        ("maintenance on", ["app2"]),
    ]
    restarts = [s for s in steps if s["phase"] == "restart"]
    assert [s["hosts"] for s in restarts] == [["app1", "app2"], ["app3"]]
    assert "app1: api, worker" in restarts[0]["what"]
    assert steps[-1] == {
        "order": len(steps),
        "phase": "maintenance off",
        "hosts": ["web1"],
        "what": "maintenance page off",
    }


def test_database_only_release_touches_no_web_or_app_host() -> None:
    steps = _steps(False)
    assert {h for s in steps for h in s["hosts"]} == {"db1"}
    assert not [s for s in steps if s["phase"] in ("restart", "maintenance off")]


def test_html_escapes_every_value() -> None:
    plan = _plan.build(
        inputs={"inputs": {"dev_schema": "x"}, "inputs_hash": "h"},
        data_plan={
            "failed": True,
            "problems": [{"table": "<b>t</b>", "column": "c", "kind": "null", "count": 2, "message": "<img src=x>"}],
        },
        schema_part=_plan.group_differences([]),
        production={"database": "<shop>"},
        backup={"dir": "/b&b", "estimate_bytes": 0, "verify_level": "restore"},
        forecast=None,
        step_list=_steps(True),
    )
    assert plan["refused"] == [
        {"kind": "null", "table": "<b>t</b>", "column": "c", "count": 2, "reason": "<img src=x>"}
    ]
    page = _plan.render_html(plan)
    assert "<img" not in page and "<shop>" not in page and "<b>" not in page
    assert "&lt;img src=x&gt;" in page and "/b&amp;b" in page
    assert "REFUSED: 1 problem(s)" in _plan.render_text(plan)
