# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""The run journal: what a release run did to a production database, kept on the production cluster itself.

Why a database on the production cluster rather than a file: the journal must be readable by whichever host runs the
rollback (the controller may be gone), and the swap must update it in the same transaction as the two renames, so
that the journal can never disagree with which database carries the production name. The journal lives in the
database ``pgshift`` (configurable), schema ``pgshift``; it holds no secrets.
"""

from __future__ import annotations

import datetime
import getpass
import json
import os
import re
import socket
import typing as t
import uuid

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover - the module reports it: _connection.connect() checks HAS_PSYCOPG2 first
    pass

from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, connect
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError

DEFAULT_JOURNAL_DB = "pgshift"
OPEN_STATES = ("running", "failed")
# how long journal writes wait for a server that is restarting (crash recovery takes seconds)
RETRY_SECONDS = 120.0

_DDL = [
    "CREATE SCHEMA IF NOT EXISTS pgshift",
    """CREATE TABLE IF NOT EXISTS pgshift.runs (
        run_id       text PRIMARY KEY,
        database     text NOT NULL,
        status       text NOT NULL,
        started_at   timestamptz NOT NULL DEFAULT now(),
        finished_at  timestamptz,
        started_by   text NOT NULL,
        inputs       jsonb NOT NULL DEFAULT '{}'::jsonb,
        message      text
    )""",
    """CREATE TABLE IF NOT EXISTS pgshift.steps (
        id      bigserial PRIMARY KEY,
        run_id  text NOT NULL REFERENCES pgshift.runs (run_id),
        step    text NOT NULL,
        state   text NOT NULL CHECK (state IN ('started', 'done', 'failed', 'undone')),
        detail  jsonb NOT NULL DEFAULT '{}'::jsonb,
        at      timestamptz NOT NULL DEFAULT clock_timestamp()
    )""",
    "CREATE INDEX IF NOT EXISTS steps_run_idx ON pgshift.steps (run_id, id)",
]


def journal_params(cluster: ConnParams, journal_db: str = DEFAULT_JOURNAL_DB) -> ConnParams:
    return cluster.with_database(journal_db)


def ensure_journal(
    cluster: ConnParams, journal_db: str = DEFAULT_JOURNAL_DB, check_mode: bool = False, retry_seconds: float = 0.0
) -> bool:
    """Create the journal database and tables when missing. Returns True when something was created.
    ``retry_seconds`` waits for a restarting server (the way back passes it)."""
    admin = connect(cluster.with_database("postgres"), autocommit=True, retry_seconds=retry_seconds)
    created = False
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (journal_db,))
            if not cur.fetchone():
                if check_mode:
                    return True
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(journal_db)))
                created = True
    finally:
        admin.close()
    if check_mode:
        return created
    conn = connect(journal_params(cluster, journal_db), retry_seconds=retry_seconds)
    try:
        with conn.cursor() as cur:
            for statement in _DDL:
                cur.execute(statement)
        conn.commit()
    finally:
        conn.close()
    return created


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return "%s@%s" % (user, socket.gethostname())


def open_runs(cur: t.Any, database: str) -> t.List[t.Dict[str, t.Any]]:
    cur.execute(
        "SELECT run_id, status, started_at, started_by FROM pgshift.runs WHERE database = %s AND status = ANY(%s) "
        "ORDER BY started_at",
        (database, list(OPEN_STATES)),
    )
    return [
        {"run_id": r[0], "status": r[1], "started_at": r[2].isoformat(), "started_by": r[3]} for r in cur.fetchall()
    ]


RUN_ID_ENV = "PGSHIFT_RUN_ID"
RUN_ID_PATTERN = r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6,32}$"
WINDOW_STEP = "window"


def new_run_id() -> str:
    """A run id: UTC time of the start, then random hex (sorts by time, unique across controllers)."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def open_run_ids(cur: t.Any) -> t.List[str]:
    """Every unfinished run of the journal, whatever its database."""
    cur.execute("SELECT run_id FROM pgshift.runs WHERE status = ANY(%s)", (list(OPEN_STATES),))
    return [r[0] for r in cur.fetchall()]


def start_run(cur: t.Any, database: str, inputs: t.Dict[str, t.Any], run_id: t.Optional[str] = None) -> str:
    """Register a new run; refuses while an earlier run on the same database is unfinished.

    ``run_id`` is the id the run already has (minted by the pgshift.ops.progress callback at playbook start, so that
    the journal, the report and the notifications name the run alike); without one a new id is minted here."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 7241))", ("pgshift-journal:" + database,))
    pending = open_runs(cur, database)
    if pending:
        first = pending[0]
        raise PgShiftError(
            "run %s on database %r (started %s by %s) is %s and was not rolled back: run `make rollback` "
            "(playbooks/rollback.yml) to put production back first"
            % (first["run_id"], database, first["started_at"], first["started_by"], first["status"]),
            open_runs=pending,
        )
    if run_id:
        if not re.match(RUN_ID_PATTERN, run_id):
            raise PgShiftError(
                "run id %r is not of the form YYYYMMDDTHHMMSSZ-<hex> (the pgshift.ops.progress callback mints it)"
                % run_id
            )
        cur.execute("SELECT status, started_at FROM pgshift.runs WHERE run_id = %s", (run_id,))
        used = cur.fetchone()
        if used:
            raise PgShiftError(
                "run id %s is already in the journal (a run %s, started %s): each run needs its own id; unset %s "
                "if you exported it" % (run_id, used[0], used[1].isoformat(), RUN_ID_ENV)
            )
    else:
        run_id = new_run_id()
    cur.execute(
        "INSERT INTO pgshift.runs (run_id, database, status, started_by, inputs) VALUES (%s, %s, 'running', %s, %s)",
        (run_id, database, _who(), json.dumps(inputs, sort_keys=True, default=str)),
    )
    return run_id


def record_step(cur: t.Any, run_id: str, step: str, state: str, detail: t.Optional[t.Dict[str, t.Any]] = None) -> None:
    cur.execute(
        "INSERT INTO pgshift.steps (run_id, step, state, detail) VALUES (%s, %s, %s, %s)",
        (run_id, step, state, json.dumps(detail or {}, sort_keys=True, default=str)),
    )


def step(
    cur: t.Any, run_id: str, name: str, state: str, detail: t.Optional[t.Dict[str, t.Any]] = None
) -> t.Optional[float]:
    """Record one step of a running run (refused once the run is no longer running, see ``assert_running``), in the
    caller's transaction. Returns the window's seconds when this closes the window (``window`` ``done``), else None."""
    assert_running(cur, run_id, "step %s (%s)" % (name, state))
    record_step(cur, run_id, name, state, detail)
    if name == WINDOW_STEP and state == "done":
        return window_seconds(cur, run_id)
    return None


def window_seconds(cur: t.Any, run_id: str) -> t.Optional[float]:
    """The maintenance window of a run, measured once, by the journal's clock: from the first ``window`` step
    ``started`` (maintenance on, or access blocked when there is no app tier) to the last ``window`` ``done``
    (maintenance off, or access restored). None while either end is missing."""
    cur.execute(
        "SELECT min(at) FILTER (WHERE state = 'started'), max(at) FILTER (WHERE state = 'done') "
        "FROM pgshift.steps WHERE run_id = %s AND step = %s",
        (run_id, WINDOW_STEP),
    )
    row = cur.fetchone()
    if not row or row[0] is None or row[1] is None:
        return None
    return round(max((row[1] - row[0]).total_seconds(), 0.0), 3)


def finish_run(cur: t.Any, run_id: str, status: str, message: t.Optional[str] = None) -> None:
    cur.execute(
        "UPDATE pgshift.runs SET status = %s, finished_at = now(), message = %s WHERE run_id = %s",
        (status, message, run_id),
    )


def get_run(cur: t.Any, run_id: str) -> t.Optional[t.Dict[str, t.Any]]:
    cur.execute(
        "SELECT run_id, database, status, started_at, finished_at, started_by, inputs, message FROM pgshift.runs "
        "WHERE run_id = %s",
        (run_id,),
    )
    row = cur.fetchone()
    if not row:
        return None
    run = {
        "run_id": row[0],
        "database": row[1],
        "status": row[2],
        "started_at": row[3].isoformat(),
        "finished_at": row[4].isoformat() if row[4] else None,
        "started_by": row[5],
        "inputs": row[6],
        "message": row[7],
    }
    cur.execute("SELECT step, state, detail, at FROM pgshift.steps WHERE run_id = %s ORDER BY id", (run_id,))
    run["steps"] = [{"step": r[0], "state": r[1], "detail": r[2], "at": r[3].isoformat()} for r in cur.fetchall()]
    return run


def step_states(run: t.Dict[str, t.Any]) -> t.Dict[str, t.Dict[str, t.Any]]:
    """The last state of every step of a run, with the detail recorded when it was done."""
    states: t.Dict[str, t.Dict[str, t.Any]] = {}
    for entry in run.get("steps", []):
        current = states.setdefault(entry["step"], {"state": entry["state"], "detail": {}})
        current["state"] = entry["state"]
        if entry["state"] in ("started", "done"):
            current["detail"].update(entry["detail"] or {})
    return states


def latest_run(cur: t.Any, database: str, only_open: bool = True) -> t.Optional[str]:
    if only_open:
        cur.execute(
            "SELECT run_id FROM pgshift.runs WHERE database = %s AND status = ANY(%s) ORDER BY started_at DESC LIMIT 1",
            (database, list(OPEN_STATES)),
        )
    else:
        cur.execute(
            "SELECT run_id FROM pgshift.runs WHERE database = %s ORDER BY started_at DESC LIMIT 1",
            (database,),
        )
    row = cur.fetchone()
    return row[0] if row else None


def lock_run(cur: t.Any, run_id: str) -> t.Optional[t.Dict[str, t.Any]]:
    """Lock the run's row until the transaction ends (a rollback and a swap of the same run serialise on it)."""
    cur.execute(
        "SELECT run_id, database, status, started_at, started_by FROM pgshift.runs WHERE run_id = %s FOR UPDATE",
        (run_id,),
    )
    row = cur.fetchone()
    if not row:
        return None
    return {
        "run_id": row[0],
        "database": row[1],
        "status": row[2],
        "started_at": row[3].isoformat(),
        "started_by": row[4],
    }


def assert_running(cur: t.Any, run_id: str, doing: str, lock: bool = False) -> None:
    """A run goes on only while the journal says it runs: once it was rolled back (by rollback.yml, or while a
    rollback is under way) or closed, its next step stops here. ``lock`` keeps the run's row locked until the caller's
    transaction ends (the swap does, so that a rollback cannot start between this check and its commit)."""
    if lock:
        cur.execute("SELECT status, message FROM pgshift.runs WHERE run_id = %s FOR NO KEY UPDATE", (run_id,))
    else:
        cur.execute("SELECT status, message FROM pgshift.runs WHERE run_id = %s", (run_id,))
    row = cur.fetchone()
    if row is None:
        raise PgShiftError("run %r is not in the journal: %s refused" % (run_id, doing))
    status, message = row
    if status == "running":
        cur.execute(
            "SELECT at FROM pgshift.steps WHERE run_id = %s AND step = 'rollback' ORDER BY id DESC LIMIT 1", (run_id,)
        )
        rolling = cur.fetchone()
        if rolling is None:
            return
        raise PgShiftError(
            "run %s is being rolled back (since %s): %s refused; this run stops here" % (run_id, rolling[0], doing),
            run_status="rolling_back",
        )
    raise PgShiftError(
        "run %s is %s in the journal%s: %s refused; this run stops here (production is as the rollback left it)"
        % (run_id, status, " (%s)" % message if message else "", doing),
        run_status=status,
    )
