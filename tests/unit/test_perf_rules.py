"""Unit tests of the pure parts of perf_check and of the rehearsal forecast (no database)."""

from __future__ import annotations

import json
import os
import typing as t

import pytest

from ansible_collections.pgshift.ops.plugins.module_utils import _perf as perf
from ansible_collections.pgshift.ops.plugins.module_utils import _rehearsal as rehearsal
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PLAN = {
    "Node Type": "Sort",
    "Plans": [
        {
            "Node Type": "Bitmap Heap Scan",
            "Relation Name": "order_lines",
            "Plans": [{"Node Type": "Bitmap Index Scan", "Index Name": "order_lines_pkey"}],
        },
        {"Node Type": "Index Scan", "Relation Name": "orders", "Index Name": "orders_pkey"},
    ],
}


def test_plan_shape_lists_node_types_relations_and_indexes() -> None:
    shape = perf.plan_shape(PLAN)
    assert shape["node_types"] == ["Sort", "Bitmap Heap Scan", "Bitmap Index Scan", "Index Scan"]
    assert shape["relations"] == ["order_lines", "orders"]
    assert shape["indexes"] == ["order_lines_pkey", "orders_pkey"]


def test_summarize_runs_median_and_spread() -> None:
    assert perf.summarize_runs([3.0, 1.0, 2.0, 10.0, 2.0]) == {
        "median_ms": 2.0,
        "min_ms": 1.0,
        "max_ms": 10.0,
        "spread_ms": 9.0,
        "mad_ms": 1.0,
    }


def _q(median: float, indexes: t.Sequence[str] = ()) -> t.Dict[str, t.Any]:
    return {"median_ms": median, "indexes": list(indexes), "node_types": ["Index Scan" if indexes else "Seq Scan"]}


def test_compare_warns_fails_and_names_lost_indexes() -> None:
    baseline = {"a": _q(10.0), "b": _q(10.0), "c": _q(5.0, ["c_idx"]), "d": _q(0.02), "gone": {"error": "no column"}}
    current = {"a": _q(16.0), "b": _q(31.0), "c": _q(5.0), "d": _q(0.9), "gone": _q(1.0), "new": _q(1.0)}
    findings, notes = perf.compare(current, baseline, warn_ratio=1.5, fail_ratio=3.0, noise_floor_ms=1.0)
    by = {(f["query"], f["kind"]): f for f in findings}
    assert by[("a", "slower")]["severity"] == "warning" and by[("a", "slower")]["ratio"] == 1.6
    assert by[("b", "slower")]["severity"] == "error"
    assert by[("c", "index_lost")]["indexes"] == ["c_idx"] and by[("c", "index_lost")]["severity"] == "error"
    assert ("d", "slower") not in by, "0.02 ms -> 0.9 ms is under the noise floor of 1 ms"
    assert len(findings) == 3
    assert any(n.startswith("gone: failed on the baseline") for n in notes)
    assert any(n.startswith("new: not in the baseline") for n in notes)


def test_not_analyzed_rules() -> None:
    stats: t.List[t.Dict[str, t.Any]] = [
        {
            "table": "public.never",
            "last_analyzed": None,
            "live_rows": 10,
            "modified_since_analyze": 10,
            "reltuples": -1,
        },
        {"table": "public.empty", "last_analyzed": None, "live_rows": 0, "modified_since_analyze": 0, "reltuples": -1},
        {
            "table": "public.fresh",
            "last_analyzed": "2026-01-02T00:00:00+00:00",
            "live_rows": 1000,
            "modified_since_analyze": 20,
            "reltuples": 1000,
        },
        {
            "table": "public.stale",
            "last_analyzed": "2026-01-02T00:00:00+00:00",
            "live_rows": 1000,
            "modified_since_analyze": 900,
            "reltuples": 1000,
        },
        {
            "table": "public.early",
            "last_analyzed": "2025-12-31T00:00:00+00:00",
            "live_rows": 5,
            "modified_since_analyze": 0,
            "reltuples": 5,
        },
    ]
    assert perf.not_analyzed(stats) == ["public.never", "public.stale"]
    assert perf.not_analyzed(stats, since="2026-01-01T00:00:00Z") == ["public.never", "public.stale", "public.early"]


def test_load_queries_checks_the_file(tmp_path: t.Any) -> None:
    good = perf.load_queries(os.path.join(ROOT, "sample_app", "queries.yml"))
    assert len(good) >= 5 and all(q.sql and q.name for q in good)
    assert {q.name for q in perf.load_queries(os.path.join(ROOT, "sample_app", "queries.yml"), ["customer by id"])} == {
        "customer by id"
    }
    cases = {
        "queries: []\n": "non-empty list",
        "queries:\n  - {name: a}\n": "needs a 'name' and an 'sql'",
        "queries:\n  - {name: a, sql: SELECT 1}\n  - {name: a, sql: SELECT 2}\n": "appears twice",
        "queries:\n  - {name: a, sql: SELECT 1, params: 3}\n": "'params' must be",
        "queries:\n  - {name: a, sql: SELECT 1, expect_rows: many}\n": "'expect_rows'",
        "queries: [\n": "not valid YAML",
    }
    for text, message in cases.items():
        path = tmp_path / "q.yml"
        path.write_text(text)
        with pytest.raises(PgShiftError, match=message):
            perf.load_queries(str(path))
    path = tmp_path / "q.yml"
    path.write_text("queries:\n  - {name: a, sql: SELECT 1}\n")
    with pytest.raises(PgShiftError, match="queries not in"):
        perf.load_queries(str(path), ["b"])


def test_forecast_scales_only_the_data_part_and_never_shrinks() -> None:
    fc = rehearsal.forecast(20.0, 8.0, rehearsed_size=1000, production_size=3000, app_tier_seconds=10.0)
    assert fc["size_ratio"] == 3.0
    assert fc["database_seconds"] == 12.0 + 24.0
    assert fc["seconds"] == 46.0 and fc["low_seconds"] < fc["seconds"] < fc["high_seconds"]
    smaller = rehearsal.forecast(20.0, 8.0, rehearsed_size=1000, production_size=500, app_tier_seconds=0.0)
    assert smaller["size_ratio"] == 1.0 and smaller["seconds"] == 20.0
    assert "x 3.00" in rehearsal.describe_forecast(fc) and "production is 3.00x" in rehearsal.describe_forecast(fc)


def test_journal_timings_window_from_blocking_to_the_end_of_the_run() -> None:
    run = {
        "run_id": "r",
        "status": "succeeded",
        "finished_at": "2026-01-01T00:00:30+00:00",
        "steps": [
            {"step": "start", "state": "done", "detail": {}, "at": "2026-01-01T00:00:00+00:00"},
            {"step": "backup", "state": "done", "detail": {}, "at": "2026-01-01T00:00:05+00:00"},
            {"step": "block_access", "state": "started", "detail": {}, "at": "2026-01-01T00:00:10+00:00"},
            {"step": "block_access", "state": "done", "detail": {}, "at": "2026-01-01T00:00:11+00:00"},
            {"step": "build", "state": "started", "detail": {}, "at": "2026-01-01T00:00:12+00:00"},
            {"step": "build", "state": "done", "detail": {}, "at": "2026-01-01T00:00:25+00:00"},
            {"step": "swap", "state": "done", "detail": {}, "at": "2026-01-01T00:00:26+00:00"},
        ],
    }
    timings = rehearsal.journal_timings(run)
    steps = {s["step"]: s["seconds"] for s in timings["steps"]}
    assert steps == {"start": None, "backup": 5.0, "block_access": 1.0, "build": 13.0, "swap": 1.0}
    assert timings["window"]["seconds"] == 20.0


def test_journal_timings_window_is_the_releases_own_window_step() -> None:
    """A database-only release records its window (access blocked to the swap): the query check after the swap and
    the closing of the run are not in it."""
    run = {
        "run_id": "r",
        "status": "succeeded",
        "finished_at": "2026-01-01T00:00:40+00:00",
        "steps": [
            {"step": "window", "state": "started", "detail": {}, "at": "2026-01-01T00:00:09+00:00"},
            {"step": "block_access", "state": "started", "detail": {}, "at": "2026-01-01T00:00:10+00:00"},
            {"step": "block_access", "state": "done", "detail": {}, "at": "2026-01-01T00:00:11+00:00"},
            {"step": "swap", "state": "done", "detail": {}, "at": "2026-01-01T00:00:26+00:00"},
            {"step": "window", "state": "done", "detail": {}, "at": "2026-01-01T00:00:27+00:00"},
        ],
    }
    window = rehearsal.journal_timings(run)["window"]
    assert window == {"from": "2026-01-01T00:00:09+00:00", "to": "2026-01-01T00:00:27+00:00", "seconds": 18.0}


def test_report_breakdown_splits_growing_and_fixed_steps() -> None:
    report = {
        "status": "ok",
        "steps": [
            {
                "play": "Preflight",
                "name": "Preflight | x",
                "action": "pgshift.ops.preflight",
                "duration_s": 2,
                "status": "ok",
            },
            {
                "play": "Rebuild and swap",
                "name": "Rebuild | create the next database with the dev schema, tables bare",
                "action": "pgshift.ops.database_build",
                "duration_s": 1.0,
                "status": "changed",
            },
            {
                "play": "Rebuild and swap",
                "name": "Rebuild | copy",
                "action": "pgshift.ops.data_copy",
                "duration_s": 4.0,
                "status": "changed",
                "rows": 10,
            },
            {
                "play": "Rebuild and swap",
                "name": "Rebuild | indexes",
                "action": "pgshift.ops.database_build",
                "duration_s": 2.0,
                "status": "changed",
            },
            {
                "play": "Rebuild and swap",
                "name": "Swap | swap",
                "action": "pgshift.ops.swap",
                "duration_s": 0.5,
                "status": "changed",
            },
            {
                "play": "API checks",
                "name": "API checks | x",
                "action": "include_role",
                "duration_s": 0.1,
                "status": "skipped",
            },
        ],
        "results": [
            {"action": "pgshift.ops.data_copy", "data": {"tables": {"t": {"rows": 10, "bytes": 300, "seconds": 0.1}}}},
            {"action": "pgshift.ops.integrity_check", "data": {"ok": True}},
        ],
        "failures": [],
    }
    out = rehearsal.report_breakdown(report)
    assert out["scaling_seconds"] == 6.0 and out["fixed_seconds"] == 1.5
    assert out["tables"] == {"t": {"rows": 10, "bytes": 300, "seconds": 0.1}} and out["integrity_ok"] is True
    assert "Preflight | x" in out["checks_passed"]
    assert json.dumps(out)


def test_app_tier_allowance_from_production_run_report() -> None:
    def step(play: str, seconds: float, status: str = "ok", role: t.Optional[str] = None) -> t.Dict[str, t.Any]:
        return {"play": play, "name": play + " | x", "duration_s": seconds, "status": status, "role": role}

    report = {
        "playbook": "prod_restore",
        "status": "ok",
        "check_mode": False,
        "maintenance_window": {"started": 5.0, "finished": 47.7, "duration_s": 42.7, "open": False},
        "steps": [
            step("Preflight", 5.0),
            step("Maintenance on", 2.0),
            step("Rebuild and swap", 30.0),
            step("Restart", 3.0),
            step("API checks", 1.5),
            step("API checks", 9.0, status="skipped"),
            step("Maintenance off", 0.5, role="pgshift.ops.maintenance_mode"),
            step("Maintenance off", 0.7),
        ],
    }
    assert rehearsal.app_tier_from_report(report) == 7.0
    assert rehearsal.app_tier_from_report(dict(report, status="failed")) is None
    assert rehearsal.app_tier_from_report(dict(report, playbook="staging_rehearsal")) is None
    assert rehearsal.app_tier_from_report(dict(report, check_mode=True)) is None
    assert rehearsal.app_tier_from_report(None) is None
    assert rehearsal.app_tier_from_report(dict(report, maintenance_window={"open": True})) is None
    steps: t.List[t.Dict[str, t.Any]] = list(t.cast(t.List[t.Dict[str, t.Any]], report["steps"]))
    rescued = dict(report, steps=[*steps, step("Restart", 1.0, status="rescued")])
    assert rehearsal.app_tier_from_report(rescued) is None
