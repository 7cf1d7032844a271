"""The window in one task (pgshift.ops.rebuild_swap): the run report keeps its inner results as those of the modules
they stand for, and the rehearsal forecast still tells the steps that grow with the data from the fixed cost."""

from __future__ import annotations

import typing as t

from ansible_collections.pgshift.ops.plugins.module_utils import _rehearsal as rehearsal
from ansible_collections.pgshift.ops.plugins.module_utils import _report as rpt

RESULT: t.Dict[str, t.Any] = {
    "changed": True,
    "steps": [
        {"name": "block_access started", "state": "done", "seconds": 0.01},
        {"name": "block access", "state": "done", "seconds": 0.2},
        {"name": "create", "state": "done", "seconds": 0.5},
        {"name": "copy", "state": "done", "seconds": 4.0},
        {"name": "post-data", "state": "done", "seconds": 2.0},
        {"name": "integrity check", "state": "done", "seconds": 1.0},
        {"name": "swap", "state": "done", "seconds": 0.3},
    ],
    "access": {"previous": {"connlimit": -1, "allowconn": True}, "sessions": []},
    "copy": {"tables": {"t": {"rows": 10, "bytes": 300, "seconds": 0.1}}, "total_rows": 10, "sequences": []},
    "integrity": {"ok": True, "tables": {"t": {"match": True}}, "mismatches": []},
    "swap": {"swapped": True, "previous": "shop__prev_20260101000000", "removed": []},
    "window_seconds": None,
    "total_rows": 10,
}


def test_inner_results_are_kept_as_those_of_their_modules() -> None:
    parts = rpt.result_parts("pgshift.ops.rebuild_swap", RESULT)
    kept = {action: rpt.extract_results(action, part) for action, part in parts}
    assert kept["pgshift.ops.data_copy"] == {"tables": RESULT["copy"]["tables"], "total_rows": 10}
    assert kept["pgshift.ops.integrity_check"]["ok"] is True
    assert kept["pgshift.ops.swap"] == {"previous": "shop__prev_20260101000000", "swapped": True}
    assert kept["pgshift.ops.rebuild_swap"]["steps"] == RESULT["steps"]
    # an ordinary module's result is one part; a censored one keeps nothing inside
    assert rpt.result_parts("pgshift.ops.swap", RESULT["swap"]) == [("pgshift.ops.swap", RESULT["swap"])]
    assert len(rpt.result_parts("pgshift.ops.rebuild_swap", {"censored": "no_log"})) == 1


def test_the_forecast_splits_the_combined_task_by_its_inner_steps() -> None:
    name = "Rebuild | block access, build, copy, prove and swap (one call, every step in the journal)"
    report = {
        "status": "ok",
        "steps": [
            {
                "index": 1,
                "play": "Preflight",
                "name": "Preflight | x",
                "action": "pgshift.ops.preflight",
                "duration_s": 2.0,
                "status": "ok",
            },
            {
                "index": 2,
                "play": "Rebuild and swap",
                "name": name,
                "action": "pgshift.ops.rebuild_swap",
                "duration_s": 9.0,
                "status": "changed",
            },
        ],
        "results": [
            {"step": name, "step_index": 2, "action": action, "host": "db", "data": rpt.extract_results(action, part)}
            for action, part in rpt.result_parts("pgshift.ops.rebuild_swap", RESULT)
        ],
        "failures": [],
    }
    out = rehearsal.report_breakdown(report)
    # copy 4 + post-data 2 + integrity check 1 grow with the data; the rest of the task's 9 s is fixed
    assert out["scaling_seconds"] == 7.0 and out["fixed_seconds"] == 2.0
    assert out["tables"] == {"t": {"rows": 10, "bytes": 300, "seconds": 0.1}} and out["integrity_ok"] is True
