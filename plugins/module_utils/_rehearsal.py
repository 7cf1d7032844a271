# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""Staging rehearsals: their record, the forecast of production's maintenance window, and the gate.

A rehearsal runs the very release (prod_restore.yml, database steps) against staging after staging received
production's latest verified backup. Its record (``<rehearsals_dir>/<id>/rehearsal.json``, 0600 in a 0700 folder)
holds the inputs' hashes (the same ``_inputs.compute`` the release checks), the backup it started from, every step's
duration, rows and bytes carried, the problems found and the checks passed, the performance figures and a forecast.

Where the durations come from: the run journal of the staging cluster is the authority for the window (timestamps
taken by the database server with ``clock_timestamp()`` in the same transactions as the steps, so they exist whatever
happened to the controller and need no callback); the run report of the progress callback, when given, adds the
per-task breakdown (which steps scale with the data: copy, index build, integrity check) and rows and bytes per table.

The forecast: the window measured on staging from "connections blocked" to the swap (the journal's window step; in
older journals, to "run closed"), split into a part that grows with the data and a fixed part; the growing part is
multiplied by production's size now over the size that was rehearsed (never below 1), and the application tier's
allowance (services stopped and started, API checks, which a rehearsal does not touch) is added - none for a
database-only production release.
"""

from __future__ import annotations

import datetime
import getpass
import glob
import json
import os
import re
import secrets
import socket
import typing as t

from ansible_collections.pgshift.ops.plugins.module_utils._backup import (
    MANIFEST_NAME,
    VERIFICATION_NAME,
    list_backups,
    make_private_dir,
    write_file_atomic,
)
from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, connect
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError

RECORD_FORMAT = "pgshift.rehearsal/1"
RECORD_NAME = "rehearsal.json"
STATE_NAME = "state.json"
OVERRIDES_NAME = "overrides.jsonl"
_ID_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}$")

# Tasks of the release whose duration grows with the data (matched on the module name in the run report).
SCALING_ACTIONS = ("data_copy", "integrity_check", "database_build")
# database_build has two steps: creating bare tables does not grow with the data, the post-data step (index builds,
# FK validation) does. The report does not carry task arguments, so the step is told by its task name.
_FIXED_BUILD_WORDS = ("create the next database", "tables bare")
# pgshift.ops.rebuild_swap runs the whole window in one task: its result says how long each inner step took, and the
# steps that grow with the data are those of the separate tasks above (copy, post-data, integrity check).
COMBINED_ACTIONS = ("rebuild_swap",)
SCALING_INNER_STEPS = ("copy", "post-data", "integrity check")


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str) -> datetime.datetime:
    parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed


def new_rehearsal_id() -> str:
    return now_utc().strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return "%s@%s" % (user, socket.gethostname())


def folder_of(rehearsals_dir: str, rehearsal_id: str) -> str:
    if not _ID_RE.match(rehearsal_id):
        raise PgShiftError("rehearsal id %r is not of the form YYYYMMDDThhmmssZ-xxxxxx" % rehearsal_id)
    return os.path.join(rehearsals_dir, rehearsal_id)


def write_json(path: str, data: t.Mapping[str, t.Any]) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        make_private_dir(folder)
    write_file_atomic(path, (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8"))


def read_json(path: str, what: str) -> t.Dict[str, t.Any]:
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read().decode("utf-8"))
    except OSError as exc:
        raise PgShiftError("cannot read the %s %r: %s" % (what, path, exc.strerror)) from None
    except ValueError as exc:
        raise PgShiftError("the %s %r is not valid JSON: %s" % (what, path, exc)) from None
    if not isinstance(data, dict):
        raise PgShiftError("the %s %r is not a JSON object" % (what, path))
    return data


# --------------------------------------------------------------------------------------------- sizes and backups
def database_size(params: ConnParams, database: str) -> t.Optional[int]:
    """pg_database_size of ``database`` (read only), None when it does not exist."""
    conn = connect(params.with_database("postgres"), autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_database_size(oid) FROM pg_database WHERE datname = %s", (database,))
            row = cur.fetchone()
    finally:
        conn.close()
    return int(row[0]) if row else None


def latest_verified_backup(
    backup_dir: str, database: str, host: t.Optional[str] = None, port: t.Optional[int] = None
) -> t.Optional[t.Dict[str, t.Any]]:
    """The newest backup of ``database`` (taken from ``host``/``port`` when given) whose verification was recorded."""
    for entry in list_backups(backup_dir):
        folder = entry["folder"]
        try:
            manifest = read_json(os.path.join(folder, MANIFEST_NAME), "manifest")
            verification = read_json(os.path.join(folder, VERIFICATION_NAME), "verification")
        except PgShiftError:
            continue
        if manifest.get("database") != database:
            continue
        if host is not None and manifest.get("host") != host:
            continue
        if port is not None and int(manifest.get("port") or 0) != int(port):
            continue
        if verification.get("manifest_sha256") != manifest.get("manifest_sha256"):
            continue
        return {
            "manifest_path": os.path.join(folder, MANIFEST_NAME),
            "backup_id": manifest.get("backup_id"),
            "created": manifest.get("created"),
            "database": database,
            "database_size": manifest.get("database_size"),
            "verified_level": verification.get("level"),
            "verified_at": verification.get("verified_at"),
        }
    return None


# --------------------------------------------------------------------------------------------- begin
def begin(
    rehearsals_dir: str,
    inputs: t.Mapping[str, t.Any],
    production: t.Mapping[str, t.Any],
    staging: t.Mapping[str, t.Any],
    backup: t.Optional[t.Mapping[str, t.Any]],
    settings: t.Mapping[str, t.Any],
    rehearsal_id: t.Optional[str] = None,
    check_mode: bool = False,
) -> t.Dict[str, t.Any]:
    """Open a rehearsal: its folder and state file (what the record step needs later)."""
    rid = rehearsal_id or new_rehearsal_id()
    folder = folder_of(rehearsals_dir, rid)
    state = {
        "format": RECORD_FORMAT,
        "rehearsal_id": rid,
        "started_at": iso(now_utc()),
        "started_by": who(),
        "inputs": dict(inputs),
        "production": dict(production),
        "staging": dict(staging),
        "backup": dict(backup) if backup else None,
        "settings": dict(settings),
    }
    if not check_mode:
        if not os.path.isdir(rehearsals_dir):
            make_private_dir(rehearsals_dir)
        make_private_dir(folder)
        write_json(os.path.join(folder, STATE_NAME), state)
    return {"rehearsal_id": rid, "folder": folder, "state": state}


# --------------------------------------------------------------------------------------------- the journal
def staging_run(
    staging: ConnParams, database: str, journal_db: str, since: str, run_id: t.Optional[str] = None
) -> t.Optional[t.Dict[str, t.Any]]:
    """The release run on staging that this rehearsal started (the latest one started after ``since``)."""
    from ansible_collections.pgshift.ops.plugins.module_utils import _journal as journal  # noqa: PLC0415 - psycopg2

    conn = connect(staging.with_database("postgres"), autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (journal_db,))
            exists = cur.fetchone() is not None
    finally:
        conn.close()
    if not exists:
        return None
    conn = connect(journal.journal_params(staging, journal_db))
    try:
        with conn.cursor() as cur:
            if run_id is None:
                cur.execute(
                    "SELECT run_id FROM pgshift.runs WHERE database = %s AND started_at >= %s "
                    "ORDER BY started_at DESC LIMIT 1",
                    (database, since),
                )
                row = cur.fetchone()
                if not row:
                    return None
                run_id = row[0]
            return journal.get_run(cur, run_id)
    finally:
        conn.rollback()
        conn.close()


def journal_timings(run: t.Mapping[str, t.Any]) -> t.Dict[str, t.Any]:
    """Per journal step, when it started and ended; the window as the release recorded it (``window`` started to
    done: connections blocked to the swap, for the database-only release a rehearsal runs), else, for a journal from
    before that step existed, from blocking connections to closing the run."""
    steps: t.Dict[str, t.Dict[str, t.Any]] = {}
    previous: t.Optional[str] = None
    for entry in run.get("steps", []):
        at = entry["at"]
        current = steps.setdefault(entry["step"], {"step": entry["step"], "started": None, "ended": None})
        if entry["state"] == "started":
            current["started"] = current["started"] or at
        else:
            if current["started"] is None:
                current["started"] = previous  # a step recorded only when done began after the previous event
            current["ended"] = at
            current["state"] = entry["state"]
        previous = at
    for item in steps.values():
        item["seconds"] = (
            round((parse_time(item["ended"]) - parse_time(item["started"])).total_seconds(), 3)
            if item["started"] and item["ended"]
            else None
        )
    window: t.Dict[str, t.Any] = {"from": None, "to": None, "seconds": None}
    blocked = steps.get("block_access")
    recorded = steps.get("window")  # the release's own window (run_journal step=window), the one definition
    if recorded and recorded["started"] and recorded["ended"] and recorded.get("state") == "done":
        window["from"], window["to"], window["seconds"] = recorded["started"], recorded["ended"], recorded["seconds"]
    elif blocked and blocked["started"]:
        window["from"] = blocked["started"]
        end = run.get("finished_at") or (steps.get("swap") or {}).get("ended")
        if end:
            window["to"] = end
            window["seconds"] = round((parse_time(end) - parse_time(blocked["started"])).total_seconds(), 3)
    return {"steps": list(steps.values()), "window": window}


# --------------------------------------------------------------------------------------------- the run report
def report_breakdown(report: t.Mapping[str, t.Any], window_play: str = "rebuild") -> t.Dict[str, t.Any]:
    """Task durations, rows and bytes carried, failures and checks from a run report (pgshift.run-report/1)."""
    tasks = []
    scaling = fixed = 0.0
    for step in report.get("steps", []):
        if step.get("status") == "skipped" or step.get("rescue"):
            continue
        action = str(step.get("action") or "")
        short = action.rsplit(".", 1)[-1]
        name = str(step.get("name") or "")
        duration = float(step.get("duration_s") or 0.0)
        in_window = window_play in str(step.get("play") or "").lower()
        grows = short in SCALING_ACTIONS and not any(w in name.lower() for w in _FIXED_BUILD_WORDS)
        inner = _inner_scaling(report, step) if short in COMBINED_ACTIONS else None
        tasks.append(
            {
                "play": step.get("play"),
                "name": name,
                "action": action,
                "seconds": round(duration, 3),
                "status": step.get("status"),
                "rows": step.get("rows"),
                "in_window": in_window,
                "grows_with_data": grows,
            }
        )
        if in_window:
            if inner is not None:
                grown = min(inner, duration)
                scaling += grown
                fixed += duration - grown
                tasks[-1]["grows_with_data"] = True
                tasks[-1]["scaling_seconds"] = round(grown, 3)
            elif grows:
                scaling += duration
            else:
                fixed += duration
    tables: t.Dict[str, t.Dict[str, t.Any]] = {}
    integrity: t.Optional[bool] = None
    for result in report.get("results", []):
        short = str(result.get("action") or "").rsplit(".", 1)[-1]
        data = result.get("data") or {}
        if short == "data_copy" and isinstance(data.get("tables"), dict):
            for table, info in data["tables"].items():
                if isinstance(info, dict):
                    tables[table] = {
                        "rows": info.get("rows"),
                        "bytes": info.get("bytes"),
                        "seconds": info.get("seconds"),
                    }
        if short == "integrity_check" and "ok" in data:
            integrity = bool(data["ok"])
    failures = [
        "%s: %s" % (f.get("step"), f.get("msg")) for f in report.get("failures", []) if not f.get("rescued_ignored")
    ]
    checks = sorted(
        {
            str(s.get("name"))
            for s in report.get("steps", [])
            if s.get("status") in ("ok", "changed")
            and not s.get("rescue")
            and any(w in str(s.get("name") or "").lower() for w in ("preflight |", "verified", "prove", "check"))
        }
    )
    if integrity:
        # the proof is an inner step of rebuild_swap, not a task of its own: named from its result
        checks = sorted(set(checks) | {"prove the data identical (integrity check: counts, checksums, constraints)"})
    return {
        "status": report.get("status"),
        "tasks": tasks,
        "scaling_seconds": round(scaling, 3),
        "fixed_seconds": round(fixed, 3),
        "tables": tables,
        "integrity_ok": integrity,
        "failures": failures,
        "checks_passed": checks,
    }


def _inner_scaling(report: t.Mapping[str, t.Any], step: t.Mapping[str, t.Any]) -> t.Optional[float]:
    """Seconds of the inner steps that grow with the data, from the combined task's result; None without one."""
    for result in report.get("results", []):
        short = str(result.get("action") or "").rsplit(".", 1)[-1]
        if short not in COMBINED_ACTIONS or result.get("step") != step.get("name"):
            continue
        if "step_index" in result and "index" in step and result["step_index"] != step["index"]:
            continue
        inner = (result.get("data") or {}).get("steps")
        if isinstance(inner, list):
            return sum(
                float(s.get("seconds") or 0.0)
                for s in inner
                if isinstance(s, dict) and s.get("name") in SCALING_INNER_STEPS
            )
    return None


def app_tier_from_report(report: t.Optional[t.Mapping[str, t.Any]]) -> t.Optional[float]:
    """Seconds production's last successful release spent on what a rehearsal does not run.

    The steps of the plays "Maintenance on", "Restart" and "API checks", and the maintenance page step of
    "Maintenance off", in a run report of prod_restore.yml that succeeded (not a check run). None without one.
    """
    if not report or not str(report.get("playbook", "")).startswith("prod_restore"):
        return None
    if report.get("status") != "ok" or report.get("check_mode"):
        return None
    window = report.get("maintenance_window") or {}
    if window.get("open", True) or any(s.get("status") in ("failed", "rescued") for s in report.get("steps", [])):
        return None  # a run that went wrong or never closed its window says nothing about a normal window
    total = 0.0
    seen = False
    for step in report.get("steps", []):
        if step.get("status") == "skipped" or step.get("rescue"):
            continue
        play = str(step.get("play") or "").lower()
        role = str(step.get("role") or "")
        if any(word in play for word in ("maintenance on", "restart", "api checks")) or (
            "maintenance off" in play and "maintenance_mode" in role
        ):
            total += float(step.get("duration_s") or 0.0)
            seen = True
    return round(total, 3) if seen else None


# --------------------------------------------------------------------------------------------- forecast
def forecast(
    window_seconds: float,
    scaling_seconds: float,
    rehearsed_size: t.Optional[int],
    production_size: t.Optional[int],
    app_tier_seconds: float,
) -> t.Dict[str, t.Any]:
    """Production's maintenance window from the rehearsal's measured database window."""
    scaling_seconds = min(max(scaling_seconds, 0.0), window_seconds)
    ratio = 1.0
    if rehearsed_size and production_size:
        ratio = max(1.0, float(production_size) / float(rehearsed_size))
    fixed = window_seconds - scaling_seconds
    database = fixed + scaling_seconds * ratio
    total = database + app_tier_seconds
    return {
        "seconds": round(total, 1),
        "database_seconds": round(database, 1),
        "fixed_seconds": round(fixed, 1),
        "scaling_seconds_rehearsed": round(scaling_seconds, 1),
        "size_ratio": round(ratio, 3),
        "rehearsed_size_bytes": rehearsed_size,
        "production_size_bytes": production_size,
        "app_tier_seconds": round(app_tier_seconds, 1),
        "low_seconds": round(total * 0.8, 1),
        "high_seconds": round(total * 1.5, 1),
    }


def describe_forecast(fc: t.Mapping[str, t.Any]) -> str:
    grown = (
        " (production is %.2fx the rehearsed size: the data part was scaled)" % fc["size_ratio"]
        if fc["size_ratio"] > 1.0
        else ""
    )
    app_tier = (
        " + application tier %s" % _duration(fc["app_tier_seconds"])
        if fc["app_tier_seconds"] > 0
        else " (database only: no application tier)"
    )
    return (
        "forecast of production's maintenance window: %s (range %s to %s): database %s (fixed %s + data %s x %.2f)"
        "%s%s"
        % (
            _duration(fc["seconds"]),
            _duration(fc["low_seconds"]),
            _duration(fc["high_seconds"]),
            _duration(fc["database_seconds"]),
            _duration(fc["fixed_seconds"]),
            _duration(fc["scaling_seconds_rehearsed"]),
            fc["size_ratio"],
            app_tier,
            grown,
        )
    )


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 90:
        return "%.1f s" % seconds
    minutes, rest = divmod(int(round(seconds)), 60)
    if minutes < 90:
        return "%d min %02d s" % (minutes, rest)
    hours, minutes = divmod(minutes, 60)
    return "%d h %02d min" % (hours, minutes)


# --------------------------------------------------------------------------------------------- the record
def build_record(
    state: t.Mapping[str, t.Any],
    run: t.Optional[t.Mapping[str, t.Any]],
    report: t.Optional[t.Mapping[str, t.Any]],
    perf_before: t.Optional[t.Mapping[str, t.Any]],
    perf_after: t.Optional[t.Mapping[str, t.Any]],
    release_rc: t.Optional[int],
    production_size: t.Optional[int],
    app_tier_seconds: float,
    app_tier_from: str = "app_tier_seconds",
) -> t.Dict[str, t.Any]:
    problems: t.List[str] = []
    warnings: t.List[str] = []
    checks: t.List[str] = []
    timings: t.Dict[str, t.Any] = (
        journal_timings(run) if run else {"steps": [], "window": {"from": None, "to": None, "seconds": None}}
    )
    if run is None:
        problems.append("no release run was found in the staging cluster's journal: the release did not start")
    elif run.get("status") != "succeeded":
        problems.append(
            "the release run %s ended %s%s"
            % (run.get("run_id"), run.get("status"), (": " + str(run["message"])) if run.get("message") else "")
        )
    else:
        checks.append("release run %s succeeded on staging" % run.get("run_id"))
    if release_rc not in (None, 0):
        problems.append("the release playbook exited with status %s" % release_rc)
    breakdown = report_breakdown(report) if report else None
    if breakdown:
        problems.extend("failed: %s" % f for f in breakdown["failures"])
        checks.extend(breakdown["checks_passed"])
        if breakdown["integrity_ok"] is False:
            problems.append("the integrity check found differences")
    for label, result in (("before", perf_before), ("after", perf_after)):
        if result is None:
            continue
        for finding in result.get("findings", []):
            text = "perf_check %s: %s" % (label, finding.get("message"))
            (problems if finding.get("severity") == "error" else warnings).append(text)
    queries_file = (state.get("settings") or {}).get("queries_file") or ""
    query_check = query_check_summary(queries_file, perf_after)
    if perf_after is not None:
        if perf_after.get("ok"):
            checks.append(
                "perf_check after the release: %d queries, no error finding" % len(perf_after.get("queries", {}))
            )
    elif not queries_file:
        warnings.append(query_check["text"])
    elif run is not None and run.get("status") == "succeeded":
        problems.append("perf_check did not run after the release")
    window = timings["window"]
    rehearsed_size = None
    if state.get("backup"):
        rehearsed_size = state["backup"].get("database_size")
    rehearsed_size = rehearsed_size or state.get("staging", {}).get("size_bytes")
    fc = None
    if window["seconds"] is not None:
        scaling = breakdown["scaling_seconds"] if breakdown else _journal_step_seconds(timings, "build")
        fc = forecast(window["seconds"], scaling, rehearsed_size, production_size, app_tier_seconds)
        fc["scaling_from"] = "run report (copy, index build, integrity check)" if breakdown else "journal (build step)"
        fc["app_tier_from"] = app_tier_from
        fc["text"] = describe_forecast(fc)
    tables = breakdown["tables"] if breakdown else {}
    record = {
        "format": RECORD_FORMAT,
        "rehearsal_id": state["rehearsal_id"],
        "started_at": state["started_at"],
        "started_by": state.get("started_by"),
        "finished_at": iso(now_utc()),
        "passed": not problems,
        "inputs": state["inputs"],
        "inputs_hash": state["inputs"].get("inputs_hash"),
        "production": dict(state.get("production", {}), size_bytes_now=production_size),
        "staging": state.get("staging"),
        "backup": state.get("backup"),
        "settings": state.get("settings", {}),
        "run_id": run.get("run_id") if run else None,
        "run_status": run.get("status") if run else None,
        "journal_steps": timings["steps"],
        "window": window,
        "tasks": breakdown["tasks"] if breakdown else [],
        "tables": tables,
        "total_rows": sum(int(v.get("rows") or 0) for v in tables.values()),
        "total_bytes": sum(int(v.get("bytes") or 0) for v in tables.values()),
        "problems": problems,
        "warnings": warnings,
        "checks_passed": checks,
        "perf": {
            "before": _perf_summary(perf_before),
            "after": _perf_summary(perf_after),
        },
        "query_check": query_check,
        "forecast": fc,
    }
    return record


NO_QUERY_FILE = (
    "query check not run: no query file (pgshift_perf_queries_file) was given, so the rehearsal proves the release "
    "and measures its window but not the speed of the application's queries"
)


def query_check_summary(queries_file: str, perf_after: t.Optional[t.Mapping[str, t.Any]]) -> t.Dict[str, t.Any]:
    """Whether the rehearsal timed a query set, which one and how it went, as data and as one line for people."""
    if not queries_file:
        return {"ran": False, "queries_file": None, "text": NO_QUERY_FILE}
    if perf_after is None:
        return {"ran": False, "queries_file": queries_file, "text": "query check of %s did not run" % queries_file}
    count = len(perf_after.get("queries", {}))
    return {
        "ran": True,
        "queries_file": queries_file,
        "ok": bool(perf_after.get("ok")),
        "text": "query check of %s: %d queries, %s"
        % (queries_file, count, "no error finding" if perf_after.get("ok") else "error findings (see problems)"),
    }


def _journal_step_seconds(timings: t.Mapping[str, t.Any], name: str) -> float:
    for step in timings["steps"]:
        if step["step"] == name and step["seconds"] is not None:
            return float(step["seconds"])
    return 0.0


def _perf_summary(result: t.Optional[t.Mapping[str, t.Any]]) -> t.Optional[t.Dict[str, t.Any]]:
    if result is None:
        return None
    return {
        "ok": result.get("ok"),
        "queries": {
            name: {k: q.get(k) for k in ("median_ms", "spread_ms", "rows", "node_types", "indexes", "error") if k in q}
            for name, q in result.get("queries", {}).items()
        },
        "findings": result.get("findings", []),
        "notes": result.get("notes", []),
    }


def finish(
    rehearsals_dir: str,
    rehearsal_id: t.Optional[str],
    staging: ConnParams,
    journal_db: str,
    report: t.Optional[t.Mapping[str, t.Any]],
    release_rc: t.Optional[int],
    production_size: t.Optional[int],
    app_tier_seconds: float,
    check_mode: bool = False,
    app_tier_from: str = "app_tier_seconds",
) -> t.Dict[str, t.Any]:
    """Write the record of an open rehearsal (the given one, or the newest one without a record)."""
    if rehearsal_id is None:
        rehearsal_id = _newest_open(rehearsals_dir)
    folder = folder_of(rehearsals_dir, rehearsal_id)
    state = read_json(os.path.join(folder, STATE_NAME), "rehearsal state")
    run = staging_run(staging, state["staging"]["database"], journal_db, state["started_at"])
    perf_before = _optional_json(os.path.join(folder, "perf-before.json"))
    perf_after = _optional_json(os.path.join(folder, "perf-after.json"))
    record = build_record(
        state, run, report, perf_before, perf_after, release_rc, production_size, app_tier_seconds, app_tier_from
    )
    path = os.path.join(folder, RECORD_NAME)
    if not check_mode:
        write_json(path, record)
    return {"record": record, "path": path}


def _optional_json(path: str) -> t.Optional[t.Dict[str, t.Any]]:
    return read_json(path, "file") if os.path.exists(path) else None


def _newest_open(rehearsals_dir: str) -> str:
    for folder in sorted(glob.glob(os.path.join(glob.escape(rehearsals_dir), "*")), reverse=True):
        name = os.path.basename(folder)
        if _ID_RE.match(name) and os.path.exists(os.path.join(folder, STATE_NAME)):
            if not os.path.exists(os.path.join(folder, RECORD_NAME)):
                return name
    raise PgShiftError("no open rehearsal in %r: start one with action=begin" % rehearsals_dir)


# --------------------------------------------------------------------------------------------- the gate
def list_records(rehearsals_dir: str) -> t.List[t.Dict[str, t.Any]]:
    """Every readable rehearsal record, newest first."""
    out = []
    for path in glob.glob(os.path.join(glob.escape(rehearsals_dir), "*", RECORD_NAME)):
        try:
            record = read_json(path, "rehearsal record")
        except PgShiftError:
            continue
        if record.get("format") == RECORD_FORMAT:
            record["_path"] = path
            out.append(record)
    out.sort(key=lambda r: str(r.get("finished_at") or ""), reverse=True)
    return out


def gate(
    rehearsals_dir: str,
    inputs: t.Mapping[str, t.Any],
    production_database: str,
    max_age_hours: float,
    production_size: t.Optional[int],
    app_tier_seconds: t.Optional[float] = None,
) -> t.Dict[str, t.Any]:
    """Find the newest passing rehearsal of the same inputs and production database, younger than the max age.

    Returns ``ok``, the matching rehearsal and its forecast rescaled to production's size now, or the reasons each
    recent record was rejected.
    """
    from ansible_collections.pgshift.ops.plugins.module_utils._inputs import changes  # noqa: PLC0415

    rejected: t.List[str] = []
    moment = now_utc()
    for record in list_records(rehearsals_dir):
        rid = record.get("rehearsal_id")
        reasons = []
        if record.get("production", {}).get("database") != production_database:
            reasons.append("it rehearsed production database %r" % record.get("production", {}).get("database"))
        if record.get("inputs_hash") != inputs.get("inputs_hash"):
            differences = changes(record.get("inputs", {}).get("inputs", {}), inputs.get("inputs", {}))
            reasons.append("its inputs differ (%s)" % ("; ".join(differences) or "inputs hash differs"))
        age_hours = (moment - parse_time(str(record.get("finished_at")))).total_seconds() / 3600.0
        if age_hours > max_age_hours:
            reasons.append("it is %.1f h old (max %.1f h)" % (age_hours, max_age_hours))
        if not record.get("passed"):
            reasons.append("it did not pass (%s)" % "; ".join(record.get("problems", [])[:3]))
        if reasons:
            rejected.append("rehearsal %s: %s" % (rid, ", ".join(reasons)))
            continue
        fc = None
        window = (record.get("forecast") or {}) if record.get("forecast") else None
        if window:
            fc = forecast(
                float(record["window"]["seconds"]),
                float(window["scaling_seconds_rehearsed"]),
                window.get("rehearsed_size_bytes"),
                production_size,
                float(window["app_tier_seconds"] if app_tier_seconds is None else app_tier_seconds),
            )
            fc["text"] = describe_forecast(fc)
        return {
            "ok": True,
            "rehearsal_id": rid,
            "query_check": record.get("query_check"),
            "record_path": record["_path"],
            "age_hours": round(age_hours, 2),
            "forecast": fc,
            "rejected": rejected,
        }
    return {"ok": False, "rehearsal_id": None, "record_path": None, "forecast": None, "rejected": rejected[:10]}


def log_override(
    rehearsals_dir: str,
    reason: str,
    production: t.Mapping[str, t.Any],
    inputs_hash: t.Optional[str],
    rejected: t.Sequence[str],
) -> str:
    """Append the override to ``overrides.jsonl`` (0600) beside the records: who, when, why, against what."""
    if not os.path.isdir(rehearsals_dir):
        make_private_dir(rehearsals_dir)
    path = os.path.join(rehearsals_dir, OVERRIDES_NAME)
    entry = {
        "at": iso(now_utc()),
        "by": who(),
        "reason": reason,
        "production": dict(production),
        "inputs_hash": inputs_hash,
        "rejected": list(rejected),
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, sort_keys=True) + "\n")
    os.chmod(path, 0o600)
    return path
