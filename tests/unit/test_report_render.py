"""The run report's pure functions: whitelisting, scrubbing, the maintenance window, estimates and the HTML page."""

from __future__ import annotations

import json
import re
import typing as t
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

from ansible_collections.pgshift.ops.plugins.module_utils import _report as rpt


def _step(
    index: int,
    play_index: int,
    play: str,
    name: str,
    started: float,
    duration: float,
    status: str = "ok",
    **extra: t.Any,
) -> t.Dict[str, t.Any]:
    step = {
        "index": index,
        "play": play,
        "play_index": play_index,
        "name": name,
        "action": "ansible.builtin.command",
        "started": started,
        "duration_s": duration,
        "status": status,
        "hosts": {"db1": status},
        "rescue": False,
        "handler": False,
        "rows": None,
    }
    step.update(extra)
    return step


def sample_report() -> t.Dict[str, t.Any]:
    plays = [
        {"index": 1, "name": "Preflight", "started": 0.0, "finished": 2.0, "duration_s": 2.0, "status": "ok"},
        {"index": 2, "name": "Maintenance on", "started": 2.0, "finished": 3.0, "duration_s": 1.0, "status": "ok"},
        {
            "index": 3,
            "name": "Copy <data> & swap",
            "started": 3.0,
            "finished": 20.0,
            "duration_s": 17.0,
            "status": "failed",
        },
        {"index": 4, "name": "Maintenance off", "started": 20.0, "finished": 21.5, "duration_s": 1.5, "status": "ok"},
    ]
    steps = [
        _step(1, 1, "Preflight", "check inputs", 0.1, 1.8),
        _step(2, 2, "Maintenance on", "flag on", 2.2, 0.7, "changed"),
        _step(
            3,
            3,
            "Copy <data> & swap",
            "copy <script>alert(1)</script>",
            3.1,
            10.0,
            "changed",
            rows=3000,
            action="pgshift.ops.data_copy",
        ),
        _step(4, 3, "Copy <data> & swap", "swap", 13.2, 2.0, "failed", action="pgshift.ops.swap"),
        _step(5, 3, "Copy <data> & swap", "swap back", 15.3, 1.0, "ok", rescue=True, action="pgshift.ops.rollback"),
        _step(6, 4, "Maintenance off", "flag off", 20.1, 1.2, "changed"),
    ]
    copy_result = {
        "changed": True,
        "tables": {"orders": {"source": "orders", "rows": 1000, "bytes": 61234}, "customers": {"rows": 2000}},
        "total_rows": 3000,
        "statements": ["COPY ..."],
        "invocation": {"module_args": {"password": "hunter2"}},
    }
    results = [
        {
            "step": "copy",
            "step_index": 3,
            "action": "pgshift.ops.data_copy",
            "host": "db1",
            "data": rpt.extract_results("pgshift.ops.data_copy", copy_result),
        },
        {
            "step": "swap back",
            "step_index": 5,
            "action": "pgshift.ops.rollback",
            "host": "db1",
            "data": {"run_id": "r1", "actions": ["swap back"]},
        },
        {
            "step": "api",
            "step_index": 6,
            "action": "ansible.builtin.set_fact",
            "host": "web1",
            "data": {"pgshift_report": {"api_checks": [{"name": "health", "ok": True}]}},
        },
    ]
    return {
        "schema": rpt.SCHEMA,
        "run_id": "abc",
        "playbook": "prod_restore",
        "started": "2026-11-25T23:00:00Z",
        "finished": "2026-11-25T23:00:21Z",
        "duration_s": 21.5,
        "status": "failed",
        "check_mode": False,
        "totals": rpt.totals(steps),
        "hosts": {"db1": {"ok": 5, "failures": 1}},
        "plays": plays,
        "steps": steps,
        "maintenance_window": rpt.maintenance_window(plays, steps),
        "results": results,
        "failures": [{"step": "swap", "host": "db1", "msg": "blocked", "status": "failed"}],
        "rollback": {
            "rescue_entered": True,
            "steps": [{"index": 5, "name": "swap back", "play": "Copy", "status": "ok", "hosts": {"db1": "ok"}}],
        },
    }


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: t.List[str] = []
        self.refs: t.List[str] = []
        self.rects = 0

    def handle_starttag(self, tag: str, attrs: t.List[t.Tuple[str, t.Optional[str]]]) -> None:
        self.tags.append(tag)
        if tag == "rect":
            self.rects += 1
        for key, value in attrs:
            if key in ("src", "href", "xlink:href", "action", "data") and value:
                self.refs.append(value)


def test_html_is_self_contained_and_charts_every_step() -> None:
    report = sample_report()
    page = rpt.render_html(report)
    parsed = _Collector()
    parsed.feed(page)
    assert parsed.refs == []  # no src/href at all: nothing to fetch
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "script" not in parsed.tags and "link" not in parsed.tags and "iframe" not in parsed.tags
    assert "@import" not in page and "url(" not in page
    assert "style" in parsed.tags and "svg" in parsed.tags
    # one bar per step plus the maintenance window band
    assert parsed.rects == len(report["steps"]) + 1
    # the chart is well-formed XML with one <title> per bar (the tooltip: start, duration, result)
    svg = ET.fromstring(page[page.index("<svg") : page.index("</svg>") + 6])  # noqa: S314 (our own output)
    bars = [r for r in svg.iter("rect") if "took" in (r.findtext("title") or "")]
    assert len(bars) == len(report["steps"])
    assert "Copy <data> & swap / swap: failed, started +13.2s, took 2.0s" in [r.findtext("title") for r in bars]
    # names are escaped, never markup
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Copy &lt;data&gt; &amp; swap" in page
    # the content the report promises
    for text in (
        "Maintenance window",
        "Rows copied",
        "orders",
        "61234",
        "Rolled back",
        "swap back",
        "api_checks",
        "blocked",
    ):
        assert text in page, text


def test_json_round_trip() -> None:
    report = sample_report()
    assert json.loads(rpt.to_json(report)) == json.loads(json.dumps(report))


def test_whitelist_keeps_only_named_keys() -> None:
    result = {
        "changed": True,
        "tables": {"t": {"rows": 1}},
        "total_rows": 1,
        "dsn": "postgresql://u:pw@h/db",
        "invocation": {"module_args": {"password": "pw"}},
    }
    assert rpt.extract_results("pgshift.ops.data_copy", result) == {"tables": {"t": {"rows": 1}}, "total_rows": 1}
    backup = {
        "backup_id": "b1",
        "path": "/b",
        "manifest_path": "/b/m",
        "size_bytes": 10,
        "cmd": ["pg_dump"],
        "stdout": "x",
    }
    assert rpt.extract_results("pgshift.ops.backup", backup) == {
        "backup_id": "b1",
        "path": "/b",
        "manifest_path": "/b/m",
        "size_bytes": 10,
    }
    assert rpt.extract_results("pgshift.ops.swap", {"swapped": True, "journal": "/j", "statements": ["ALTER"]}) == {
        "swapped": True,
        "journal": "/j",
    }
    # other collections' results: nothing, unless they publish pgshift_report
    assert rpt.extract_results("ansible.builtin.command", {"stdout": "password=x", "total_rows": 5}) == {}
    fact = {"ansible_facts": {"pgshift_report": {"k": 1}, "other": 2}}
    assert rpt.extract_results("ansible.builtin.set_fact", fact) == {"pgshift_report": {"k": 1}}
    # no_log results keep nothing
    censored = {"censored": "the output has been hidden", "changed": True}
    assert rpt.extract_results("pgshift.ops.data_copy", censored) == {}
    # uri: no query string, no user info
    uri = {"status": 200, "url": "https://user:pw@api.example/health?token=abc", "elapsed": 0, "json": {"x": 1}}
    assert rpt.extract_results("ansible.builtin.uri", uri) == {
        "http": {"url": "https://api.example/health", "status": 200, "elapsed": 0}
    }


def test_differences_are_capped() -> None:
    kept = rpt.extract_results("pgshift.ops.schema_diff", {"differences": list(range(450))})
    assert kept["differences"] == list(range(rpt.MAX_DIFFERENCES))
    assert kept["differences_total"] == 450


def test_scrub_masks_secrets() -> None:
    text = rpt.scrub_text(
        "connect failed: password=hunter2 uri postgresql://app:s3cret@db/shop Bearer abc.def token: xyz"
    )
    for secret in ("hunter2", "s3cret", "abc.def", "xyz"):
        assert secret not in text
    assert "postgresql://app:********@db/shop" in text
    assert len(rpt.scrub_text("x" * 1000)) == rpt.MAX_MSG


def test_rows_of_both_shapes() -> None:
    assert rpt.rows_of({"total_rows": 7, "tables": {"a": {"rows": 1}}}) == 7
    assert rpt.rows_of({"tables": {"a": {"rows": 1}, "b": {"rows": 2}}}) == 3
    assert rpt.rows_of({"tables": [{"name": "a", "rows": 4}, {"name": "b", "rows": 5}]}) == 9
    assert rpt.rows_of({"rows": 3}) == 3
    assert rpt.rows_of({"msg": "x"}) is None
    assert rpt.rows_of({"censored": "x", "rows": 3}) is None


def test_maintenance_window_convention() -> None:
    report = sample_report()
    window = report["maintenance_window"]
    assert window == {"started": 2.2, "finished": 21.3, "open": False, "duration_s": 19.1}
    # switched on, never off (the run died): open
    plays = report["plays"][:3]
    steps = [s for s in report["steps"] if s["play_index"] <= 3]
    window = rpt.maintenance_window(plays, steps)
    assert window is not None and window["open"] is True and window["finished"] is None
    # no maintenance plays: no window
    assert rpt.maintenance_window(report["plays"][:1], report["steps"][:1]) is None


def test_eta_from_previous_run() -> None:
    assert rpt.eta_seconds(10.0, None, None) is None
    assert rpt.eta_seconds(10.0, None, {"duration_s": 30.0}) == 20.0
    assert rpt.eta_seconds(40.0, None, {"duration_s": 30.0}) is None
    # by rows: 1000 rows in 10 s, 3000 to go at 100 rows/s
    assert rpt.eta_seconds(10.0, 1000, {"duration_s": 30.0, "rows": 4000}) == 30.0


def test_step_status_worst_wins() -> None:
    assert rpt.step_status(["ok", "changed"]) == "changed"
    assert rpt.step_status(["ok", "failed", "skipped"]) == "failed"
    assert rpt.step_status(["skipped"]) == "skipped"
    assert rpt.step_status([]) == "skipped"
    assert rpt.format_duration(75) == "1m15s"


def _released(**summary: t.Any) -> t.Dict[str, t.Any]:
    """A successful release: the playbook's published summary, and the window measured by the journal."""
    report = sample_report()
    report.update(status="ok", failures=[], rollback={"rescue_entered": False, "steps": []})
    published = {
        "production_database": "shop",
        "migrations_applied": ["1700000002000_customer-loyalty"],
        "total_rows": "3000",
        "backup": "/var/backups/shop-20261125T230000Z",
        "backup_verified": "restore",
        "previous_database": "shop__prev_20261125T230015Z",
        "maintenance_seconds": 20.7,
    }
    published.update(summary)
    report["results"] = [
        {
            "step": "swap",
            "step_index": 4,
            "action": "pgshift.ops.swap",
            "host": "db1",
            "data": rpt.extract_results(
                "pgshift.ops.swap", {"swapped": True, "previous": "shop__prev_20261125T230015Z", "statements": ["x"]}
            ),
        },
        {
            "step": "figures",
            "step_index": 6,
            "action": "ansible.builtin.set_fact",
            "host": "db1",
            "data": rpt.extract_results("ansible.builtin.set_fact", {"ansible_facts": {"pgshift_report": published}}),
        },
    ]
    report["maintenance_window"] = {"started": 2.2, "finished": 22.9, "open": False, "duration_s": 20.7}
    report["maintenance_window"]["source"] = "journal"
    return report


def test_headline_gives_the_published_figures_and_the_journal_window() -> None:
    report = _released()
    head = rpt.headline(report)
    assert head["migrations_applied"] == ["1700000002000_customer-loyalty"]
    assert head["total_rows"] == "3000" and head["backup_verified"] == "restore"
    assert head["previous_database"] == "shop__prev_20261125T230015Z"
    assert head["window_seconds"] == 20.7 == report["results"][1]["data"]["pgshift_report"]["maintenance_seconds"]
    page = rpt.render_html(report)
    assert "<th>migrations applied</th><td>1 (1700000002000_customer-loyalty)</td>" in page
    assert "<th>rows carried</th><td>3,000</td>" in page
    assert "<th>backup</th><td>/var/backups/shop-20261125T230000Z (verified: restore)</td>" in page
    assert "<th>previous database kept as</th><td>shop__prev_20261125T230015Z</td>" in page
    assert "<th>window</th><td>20.7s (measured by the run journal)</td>" in page
    # the swap as a sentence, not JSON
    assert (
        "The rebuilt database became production; the previous production database is kept as "
        "shop__prev_20261125T230015Z." in page
    )
    assert "&quot;swapped&quot;" not in page and '"swapped": true' not in page
    assert "What to do next" not in page


def test_headline_without_a_summary_comes_from_the_module_results() -> None:
    report = sample_report()
    report["results"].insert(
        0,
        {
            "step": "preflight",
            "step_index": 1,
            "action": "pgshift.ops.preflight",
            "host": "db1",
            "data": rpt.extract_results(
                "pgshift.ops.preflight",
                {"facts": {"production_database": "shop", "migrations": {"to_apply": ["m2", "m3"]}}, "ok": True},
            ),
        },
    )
    head = rpt.headline(report)
    assert head["migrations_applied"] == ["m2", "m3"] and head["production_database"] == "shop"
    assert head["total_rows"] == 3000 and head["backup"] is None


def test_checksums_are_shortened_with_the_full_value_on_hover() -> None:
    full = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    report = sample_report()
    report["results"].append(
        {
            "step": "prove",
            "step_index": 4,
            "action": "pgshift.ops.integrity_check",
            "host": "db1",
            "data": {
                "ok": True,
                "tables": {"orders": {"rows": 1000, "source_checksum": full, "target_checksum": full}},
            },
        }
    )
    page = rpt.render_html(report)
    assert '<code title="%s">%s\u2026</code>' % (full, full[: rpt.SHORT_HASH]) in page
    assert ">%s<" % full not in page, "the full checksum is only in the tooltip"
    assert rpt.short_hash("abc") == "<code>abc</code>"


def test_swap_and_rollback_results_are_sentences() -> None:
    assert rpt.swap_sentence("swap", {"swapped": False}) == "The swap did not happen: production was not renamed."
    assert (
        rpt.swap_sentence("rollback", {"run_id": "r1", "actions": ["swapped back", "dropped shop__next"]})
        == "Run r1 rolled back: swapped back; dropped shop__next."
    )
    refused = rpt.swap_sentence(
        "rollback", {"run_id": "r1", "actions": [], "refused": True, "message": "writes after the swap"}
    )
    assert refused == "The swap-back of run r1 was refused: the new database stays production. writes after the swap."
    assert rpt.swap_sentence("rollback", {"run_id": None, "actions": []}).startswith("Nothing to roll back")
    page = rpt.render_html(sample_report())
    assert "Run r1 rolled back: swap back." in page and "&quot;actions&quot;" not in page


def test_a_failed_run_says_what_to_do_next_with_the_exact_rollback_command() -> None:
    report = sample_report()
    report["run_id"] = "20261125T230000Z-1a2b3c"
    report["inventory"] = ["inventories/prod"]
    report["results"][1]["data"] = {"run_id": report["run_id"], "actions": ["swap back"]}
    report["results"].append(
        {
            "step": "figures",
            "step_index": 1,
            "action": "pgshift.ops.preflight",
            "host": "db1",
            "data": {"production_database": "shop"},
        }
    )
    command = (
        "ansible-playbook playbooks/rollback.yml -i inventories/prod -e pgshift_run_id=20261125T230000Z-1a2b3c "
        "-e pgshift_confirm=shop"
    )
    head = rpt.headline(report)
    steps = rpt.next_steps(report, head)
    assert steps[0] == "It failed at 'swap' on db1: blocked"
    assert "Production was put back (swap back)" in steps[1] and steps[1].endswith(command)
    page = rpt.render_html(report)
    assert "What to do next" in page and "<code>%s</code>" % command in page
    # the rollback itself failed: put production back now, with the same command
    report["steps"][4]["status"] = "failed"
    steps = rpt.next_steps(report, head)
    assert steps[1] == "Put production back from the run journal now: " + command
    # a swap-back refused: the command with the override, and why
    report["steps"][4]["status"] = "ok"
    report["results"][1]["data"] = {"run_id": report["run_id"], "actions": [], "refused": True}
    steps = rpt.next_steps(report, head)
    assert "refused" in steps[1] and steps[1].endswith(command + " -e pgshift_swap_back_force=true")


def test_a_window_left_open_is_said_so_in_the_headline() -> None:
    report = sample_report()
    report["maintenance_window"] = rpt.maintenance_window(report["plays"][:3], report["steps"][:5])
    assert report["maintenance_window"]["open"] is True
    page = rpt.render_html(report)
    assert "<th>window</th><td>opened and not closed by this run" in page
