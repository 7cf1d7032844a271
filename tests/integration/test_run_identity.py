"""One run, one id, one set of figures: prod_restore.yml end to end on a throwaway local world.

The run id must be the same in the journal, the progress lines, the notifications, the run report and its folder, the
perf baseline file and the run summary; the maintenance window is measured once (by the journal) and the summary and
the report give that same figure. The report's headline and the summary's figures are checked against the databases
themselves (catalogs and count(*) on production), not against what the run says about itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import typing as t

import pgworld
import pytest
from psycopg2 import sql

pytestmark = pytest.mark.slow


def _journal(cluster: pgworld.Cluster) -> t.Tuple[t.List[str], t.Dict[str, t.Any]]:
    """All run ids in the journal, and the window of the last run as the journal's timestamps give it."""
    with contextlib.closing(cluster.connect("pgshift")) as conn, conn.cursor() as cur:
        cur.execute("SELECT run_id FROM pgshift.runs ORDER BY started_at")
        runs = [r[0] for r in cur.fetchall()]
        cur.execute(
            "SELECT state, at, detail FROM pgshift.steps WHERE run_id = %s AND step = 'window' ORDER BY id",
            (runs[-1],),
        )
        rows = cur.fetchall()
    started = [r for r in rows if r[0] == "started"]
    done = [r for r in rows if r[0] == "done"]
    assert len(started) == 1 and len(done) == 1, rows
    seconds = (done[0][1] - started[0][1]).total_seconds()
    return runs, {"seconds": seconds, "from": started[0][2], "to": done[0][2]}


def _rows_in(cluster: pgworld.Cluster, database: str) -> t.Tuple[int, t.Dict[str, int]]:
    """count(*) of every user table of the database, enumerated from the catalog; the total without the ledger."""
    out: t.Dict[str, int] = {}
    with contextlib.closing(cluster.connect(database)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname NOT IN ('pg_catalog', "
            "'information_schema') AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pgshift%%'"
        )
        for schema, table in cur.fetchall():
            cur.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))
            out["%s.%s" % (schema, table)] = cur.fetchone()[0]
    return sum(n for name, n in out.items() if not name.endswith(".pgmigrations")), out


def _ledger(cluster: pgworld.Cluster, database: str) -> t.List[str]:
    with contextlib.closing(cluster.connect(database)) as conn, conn.cursor() as cur:
        cur.execute("SELECT name FROM pgmigrations ORDER BY run_on, id")
        return [r[0] for r in cur.fetchall()]


def _databases(cluster: pgworld.Cluster) -> t.List[str]:
    with contextlib.closing(cluster.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database")
        return [r[0] for r in cur.fetchall()]


def _release(world: pgworld.World, run_playbook: t.Callable[..., t.Any], tmp_path: t.Any, **extra: t.Any) -> t.Any:
    reports, events = tmp_path / "runs", tmp_path / "events.jsonl"
    run = run_playbook(
        "playbooks/prod_restore.yml",
        extra_vars=extra or None,
        env={
            "PGSHIFT_WORLD": world.state,
            "PGSHIFT_REPORT_DIR": str(reports),
            "PGSHIFT_PROGRESS_JSONL": str(events),
            "PGSHIFT_ARTIFACTS": str(tmp_path / "artifacts"),
        },
    )
    assert run.rc == 0, run.output[-4000:]
    folders = [d for d in os.listdir(reports) if d != "last-run.json"]
    assert len(folders) == 1, folders
    report = json.loads((reports / folders[0] / "report.json").read_text())
    html = (reports / folders[0] / "report.html").read_text()
    summary = json.loads((tmp_path / "artifacts" / "last-summary.json").read_text())
    notifications = [json.loads(line) for line in events.read_text().splitlines()]
    return run, folders[0], report, html, summary, notifications


def _one_id(
    world: pgworld.World, run: t.Any, folder: str, report: t.Any, summary: t.Any, notifications: t.Any
) -> t.Tuple[str, t.Dict[str, t.Any]]:
    prod = world.clusters["prod"]
    runs, window = _journal(prod)
    run_id = runs[-1]
    assert re.match(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$", run_id), run_id
    assert report["run_id"] == run_id
    assert folder == run_id + "-prod_restore"
    assert summary["run_id"] == run_id
    assert "[pgshift] " in run.output and ("run %s started" % run_id) in run.output
    assert notifications and {n["run_id"] for n in notifications} == {run_id}
    assert os.path.exists(os.path.join(world.state, "backups", "perf", run_id + "-baseline.json"))
    return run_id, window


def _figures_match_the_databases(world: pgworld.World, summary: t.Any, report: t.Any, html: str) -> None:
    prod, dev = world.clusters["prod"], world.clusters["dev"]
    previous = summary["previous_database"]
    assert previous in _databases(prod) and previous.startswith("shop__prev_")
    # rows carried, table by table, are what the new production holds (its ledger is dev's, written by the carry),
    # and every data table holds what the old production (kept as the previous database) held
    _total, source = _rows_in(prod, previous)
    _total, target = _rows_in(prod, "shop")
    reported = {(n if "." in n else "public." + n): int(d["rows"]) for n, d in summary["rows"].items()}
    assert reported == {n: target[n] for n in reported}, (reported, target)
    assert {n: c for n, c in reported.items() if not n.endswith(".pgmigrations")} == {
        n: c for n, c in source.items() if not n.endswith(".pgmigrations")
    }
    carried = sum(reported.values())
    assert int(summary["total_rows"]) == carried
    applied = [m for m in _ledger(dev, "shop") if m not in _ledger(prod, previous)]
    assert applied and summary["migrations_applied"] == applied
    assert os.path.isdir(summary["backup"]) and summary["backup_verified"] == "restore"
    # the report's headline gives the same figures
    assert "<h2>Headline</h2>" in html
    assert "<th>rows carried</th><td>%s</td>" % format(carried, ",") in html
    assert "<th>previous database kept as</th><td>%s</td>" % previous in html
    assert "%d (%s)" % (len(applied), ", ".join(applied)) in html
    assert "%s (verified: restore)" % summary["backup"] in html
    assert "The rebuilt database became production; the previous production database is kept as %s." % previous in (
        html
    )
    assert "What to do next" not in html, "a successful run needs no next steps"


def test_one_id_and_one_window_for_a_release(
    world: pgworld.World, run_playbook: t.Callable[..., t.Any], tmp_path: t.Any
) -> None:
    world.reset(scale=0.5)
    run, folder, report, html, summary, notifications = _release(world, run_playbook, tmp_path)
    _run_id, window = _one_id(world, run, folder, report, summary, notifications)
    assert window["from"] == {"from": "maintenance on"} and window["to"] == {"to": "maintenance off"}
    # one window figure: the journal's, in the summary and in the report
    assert summary["maintenance_seconds"] == pytest.approx(window["seconds"], abs=0.002)
    assert report["maintenance_window"]["duration_s"] == summary["maintenance_seconds"]
    assert report["maintenance_window"]["source"] == "journal"
    assert ("production was in maintenance for %s s (run journal)" % summary["maintenance_seconds"]) in run.output
    assert window["seconds"] > 0
    _figures_match_the_databases(world, summary, report, html)
    # preflight names the release as people write it
    with contextlib.closing(world.clusters["prod"].connect()) as conn:
        number = conn.server_version
    assert "PostgreSQL %d.%d," % (number // 10000, number % 10000) in run.output
    assert "PostgreSQL %d," % number not in run.output


def test_a_database_only_run_is_reported_and_checked(
    world: pgworld.World, run_playbook: t.Callable[..., t.Any], tmp_path: t.Any
) -> None:
    world.reset(scale=0.5)
    run, folder, report, html, summary, notifications = _release(world, run_playbook, tmp_path, pgshift_app_tier=False)
    _run_id, window = _one_id(world, run, folder, report, summary, notifications)
    # the window of a database-only run: access blocked to access restored by the swap
    assert window["from"] == {"from": "block_access"} and window["to"] == {"to": "swap"}
    assert summary["maintenance_seconds"] == pytest.approx(window["seconds"], abs=0.002)
    assert summary["maintenance_seconds"] > 0
    assert report["maintenance_window"]["duration_s"] == summary["maintenance_seconds"]
    assert "application access was blocked for %s s (run journal)" % summary["maintenance_seconds"] in run.output
    # the query check after the swap ran against the baseline taken before the window
    after = summary["perf_check_after_swap"]
    assert isinstance(after, dict) and after["ok"] is True and after["queries"] > 0, after
    assert "query check after the swap: %d queries, " % after["queries"] in " ".join(run.output.split())
    checked = [s for s in report["steps"] if s["action"] == "pgshift.ops.perf_check" and s["play"] == "API checks"]
    assert checked and checked[0]["status"] in ("ok", "changed"), checked
    _figures_match_the_databases(world, summary, report, html)


def test_a_failed_run_says_what_to_do_next_with_its_own_run_id(
    world: pgworld.World, run_playbook: t.Callable[..., t.Any], tmp_path: t.Any
) -> None:
    """The rebuild fails (a file where the work folder should be): the report names the run the journal rolled back
    and gives the exact rollback command for it."""
    world.reset(scale=0.5)
    blocker = os.path.join(world.state, "not-a-folder")
    with open(blocker, "w") as handle:
        handle.write("a file where the work folder should be\n")
    reports = tmp_path / "runs"
    run = run_playbook(
        "playbooks/prod_restore.yml",
        extra_vars={"pgshift_work_dir": os.path.join(blocker, "work")},
        env={"PGSHIFT_WORLD": world.state, "PGSHIFT_REPORT_DIR": str(reports)},
    )
    os.unlink(blocker)
    assert run.rc != 0 and "The rebuild failed" in run.output
    with contextlib.closing(world.clusters["prod"].connect("pgshift")) as conn, conn.cursor() as cur:
        cur.execute("SELECT run_id, status FROM pgshift.runs ORDER BY started_at DESC LIMIT 1")
        run_id, status = cur.fetchone()
    assert status == "rolled_back"
    folder = reports / (run_id + "-prod_restore")
    report = json.loads((folder / "report.json").read_text())
    html = (folder / "report.html").read_text()
    assert report["run_id"] == run_id and report["status"] == "failed"
    assert "<h2>What to do next</h2>" in html
    assert "Production was put back (" in html
    command = (
        "ansible-playbook playbooks/rollback.yml -i inventories/local -e pgshift_run_id=%s -e pgshift_confirm=shop"
    )
    assert "<code>%s</code>" % (command % run_id) in html
    assert "Run %s rolled back: " % run_id in html, "the rollback result as a sentence"
