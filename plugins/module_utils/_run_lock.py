# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""One release run at a time per production database: a session advisory lock held by a small detached process.

A module's process ends with its task, so the lock lives in a holder process started on the database host. Its
session holds ``pg_advisory_lock(hashtextextended('pgshift-run:<database>', 0))`` in the journal database, so
whatever kills the run (the holder, its session, the server) releases the lock with it. The holder lets go when:
the watched controller process is gone (when the controller runs on the database host), the run it guards is no
longer ``running`` in the journal (finished or rolled back), a release is requested, or its deadline passes. When its
session is lost because the server restarted (crash recovery after a killed backend), it takes the lock again; when
the server did not restart (its session was terminated on purpose, to free a dead run's lock), it lets go.
The password reaches the holder on its standard input, never in argv or its environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import typing as t

from ansible_collections.pgshift.ops.plugins.module_utils import _names as names
from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, connect
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError

LOCK_PREFIX = "pgshift-run:"
APP_PREFIX = "pgshift-lock:"
RECONNECT_SECONDS = 120


def application_name(database: str) -> str:
    """The holder session's application_name: the prefix and the database, within 63 bytes and printable ASCII
    (the server truncates longer names and replaces other characters, and holders() must find it again)."""
    if database.isascii() and database.isprintable() and names.valid_name(APP_PREFIX + database):
        return APP_PREFIX + database
    readable = "".join(ch if ch.isascii() and ch.isprintable() else "_" for ch in database)
    digest = hashlib.sha256(database.encode("utf-8")).hexdigest()[:8]
    return APP_PREFIX + readable[: names.MAX_NAME - len(APP_PREFIX) - 9] + "_" + digest


# The holder program: standard library and psycopg2 only, parameters on stdin.
_HOLDER = r"""
import json, os, sys, time
import psycopg2
cfg = json.loads(sys.stdin.read())
sys.stdin.close()
status_path = cfg["status_path"]
def status(**kw):
    tmp = status_path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(kw, f)
    os.replace(tmp, status_path)
def take():
    conn = psycopg2.connect(**cfg["libpq"])
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0)), pg_backend_pid()", (cfg["key"],))
    got, backend = cur.fetchone()
    return conn, cur, got, backend
def server_epoch(cur):
    # when the server's processes last (re)started: a crash (or a restart) starts a new checkpointer
    cur.execute("SELECT backend_start::text FROM pg_stat_activity WHERE backend_type = 'checkpointer' LIMIT 1")
    row = cur.fetchone()
    return row[0] if row else None
try:
    conn, cur, got, backend = take()
    epoch = server_epoch(cur) if got else None
except Exception as exc:
    status(ok=False, error=type(exc).__name__ + ": " + str(exc).strip().splitlines()[0])
    sys.exit(1)
if not got:
    status(ok=False, error="locked")
    sys.exit(2)
status(ok=True, pid=os.getpid(), backend_pid=backend, since=time.time())
deadline = time.time() + cfg["max_seconds"]
seen_running = False
started = time.time()
def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
def wanted():
    if cfg.get("watch_pid") and not alive(cfg["watch_pid"]):
        return False
    return time.time() <= deadline and not os.path.exists(cfg["release_path"])
def retake():
    # the session was lost: after a server restart (a crashed backend), take the lock again within the deadline,
    # unless another run took it meanwhile
    give_up = time.time() + cfg["reconnect_seconds"]
    while time.time() < give_up and wanted():
        try:
            conn, cur, got, backend = take()
            now = server_epoch(cur)
        except Exception:
            time.sleep(1.0)
            continue
        if not got or (epoch is not None and now == epoch):
            # another run took the lock, or the server did not restart: the session was ended on purpose
            # (pg_terminate_backend, to free the lock of a dead run), so let go
            conn.close()
            return None
        status(ok=True, pid=os.getpid(), backend_pid=backend, since=time.time(), reconnected=True)
        return conn, cur, now
    return None
while True:
    time.sleep(1.0)
    if not wanted():
        break
    try:
        cur.execute("SELECT to_regclass('pgshift.runs') IS NOT NULL")
        if cur.fetchone()[0]:
            cur.execute(
                "SELECT count(*) FROM pgshift.runs WHERE database = %s AND status = 'running'", (cfg["database"],)
            )
            running = cur.fetchone()[0] > 0
            if running:
                seen_running = True
            elif seen_running or time.time() - started > cfg["grace_seconds"]:
                break
    except Exception:
        try:
            conn.close()
        except Exception:
            pass
        again = retake()
        if again is None:
            sys.exit(3)
        conn, cur, epoch = again
conn.close()
"""


def spawn_detached(argv: t.List[str], cfg: t.Dict[str, t.Any], log_path: str, what: str) -> "subprocess.Popen[bytes]":
    """Start ``argv`` in a session of its own (it outlives the module that starts it), its output appended to
    ``log_path``, ``cfg`` as JSON on its standard input: passwords never in its argv or environment (no ``PG*``)."""
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the detached child
    try:
        proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
            argv,
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("PG")},
        )
        if proc.stdin is None:  # pragma: no cover - stdin=PIPE always gives one
            raise PgShiftError("cannot start the %s" % what)
        proc.stdin.write(json.dumps(cfg).encode())
        proc.stdin.close()
    finally:
        log.close()
    return proc


def _state_dir(journal: ConnParams, database: str) -> str:
    """Private folder of the holder for one production database of one cluster."""
    base = os.path.join(tempfile.gettempdir(), "pgshift-locks")
    os.makedirs(base, mode=0o700, exist_ok=True)
    os.chmod(base, 0o700)
    where = "%s-%s-%s" % (journal.host or "socket", journal.port, database)
    safe = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_.") else "_" for ch in where)
    if len(safe) > 100:  # a file name has at most 255 bytes: a long host name plus a 63-byte database would not fit
        safe = safe[:80] + "_" + hashlib.sha256(where.encode("utf-8")).hexdigest()[:16]
    return os.path.join(base, safe)


def holders(cur: t.Any, database: str) -> t.List[t.Dict[str, t.Any]]:
    """Sessions holding the run lock of ``database`` (the holder's application_name carries the database)."""
    cur.execute(
        "SELECT a.pid, a.application_name, a.client_addr::text, a.backend_start FROM pg_locks l "
        "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
        "AND a.application_name = %s",
        (application_name(database),),
    )
    return [
        {"backend_pid": r[0], "application": r[1], "client": r[2] or "local socket", "since": r[3].isoformat()}
        for r in cur.fetchall()
    ]


def acquire(
    journal: ConnParams,
    database: str,
    watch_pid: t.Optional[int] = None,
    max_seconds: int = 6 * 3600,
    grace_seconds: int = 300,
    wait: float = 15.0,
) -> t.Dict[str, t.Any]:
    """Start the holder; return once it holds the lock, or raise naming the run that holds it."""
    folder = _state_dir(journal, database)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    status_path = os.path.join(folder, "status.json")
    release_path = os.path.join(folder, "release")
    for path in (status_path, release_path):
        if os.path.exists(path):
            os.unlink(path)
    libpq = journal.libpq_kwargs(application_name=application_name(database), pin=False)
    cfg = {
        "libpq": libpq,
        "key": LOCK_PREFIX + database,
        "database": database,
        "status_path": status_path,
        "release_path": release_path,
        "watch_pid": watch_pid,
        "max_seconds": max_seconds,
        "grace_seconds": grace_seconds,
        "reconnect_seconds": RECONNECT_SECONDS,
    }
    proc = spawn_detached([sys.executable, "-c", _HOLDER], cfg, os.path.join(folder, "holder.log"), "run lock holder")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if os.path.exists(status_path):
            with open(status_path) as handle:
                state = json.load(handle)
            if state.get("ok"):
                return {"holder_pid": proc.pid, "backend_pid": state["backend_pid"], "state_dir": folder}
            if state.get("error") == "locked":
                conn = connect(journal, autocommit=True)
                try:
                    with conn.cursor() as cur:
                        owners = holders(cur, database)
                finally:
                    conn.close()
                who = owners[0] if owners else {}
                raise PgShiftError(
                    "another pgshift run on %r is in progress (its lock is held by session %s from %s since %s); "
                    "wait for it to finish, or if it is dead, end that session"
                    % (database, who.get("backend_pid", "?"), who.get("client", "?"), who.get("since", "?")),
                    holders=owners,
                )
            raise PgShiftError("the run lock could not be taken: %s" % state.get("error"))
        if proc.poll() is not None and not os.path.exists(status_path):
            raise PgShiftError("the run lock holder exited with %s before taking the lock" % proc.returncode)
        time.sleep(0.1)
    proc.kill()
    raise PgShiftError("the run lock holder did not answer within %.0f s" % wait)


def release(journal: ConnParams, database: str, wait: float = 15.0) -> bool:
    """Ask the holder to let go and wait until the lock is free. Returns True when a holder was running."""
    folder = _state_dir(journal, database)
    had_holder = False
    if os.path.isdir(folder):
        fd = os.open(os.path.join(folder, "release"), os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
    conn = connect(journal, autocommit=True)
    try:
        with conn.cursor() as cur:
            deadline = time.monotonic() + wait
            while holders(cur, database):
                had_holder = True
                if time.monotonic() > deadline:
                    raise PgShiftError("the run lock of %r was not released within %.0f s" % (database, wait))
                time.sleep(0.2)
    finally:
        conn.close()
    # the lock is free: the holder's private folder (status, release flag, log) has served its purpose
    shutil.rmtree(folder, ignore_errors=True)
    return had_holder


def is_locked(journal: ConnParams, database: str) -> t.List[t.Dict[str, t.Any]]:
    conn = connect(journal, autocommit=True)
    try:
        with conn.cursor() as cur:
            return holders(cur, database)
    finally:
        conn.close()


def holder_state(journal: ConnParams, database: str) -> t.Dict[str, t.Any]:
    """What the holder of this host wrote about itself (pid, session), or {} when there is none."""
    path = os.path.join(_state_dir(journal, database), "status.json")
    try:
        with open(path) as handle:
            state = json.load(handle)
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) and state.get("ok") else {}


def refuse_if_live(
    cur: t.Any, journal: ConnParams, database: str, run: t.Dict[str, t.Any], own_holder_pid: t.Optional[int]
) -> None:
    """Refuse to act on ``run`` while a run lock holder of ``database`` is alive, unless the caller is the run that
    holds it (its rescue passes the holder's pid it got at acquire)."""
    owners = holders(cur, database)
    if not owners:
        return
    state = holder_state(journal, database)
    if own_holder_pid and state.get("pid") == int(own_holder_pid) and process_alive(int(own_holder_pid)):
        return
    who = owners[0]
    raise PgShiftError(
        "run %s on %r (started %s by %s) is live: its run lock is held by session %s from %s since %s%s; a rollback "
        "now would race it. Wait for it to end (it rolls itself back if a step fails), or stop it first (end its "
        "ansible-playbook; if its controller is gone, end that session with pg_terminate_backend(%s) and the holder "
        "lets go) and run the rollback again"
        % (
            run.get("run_id", "?"),
            database,
            run.get("started_at", "?"),
            run.get("started_by", "?"),
            who["backend_pid"],
            who["client"],
            who["since"],
            " (holder process %s on this host)" % state["pid"] if state.get("pid") else "",
            who["backend_pid"],
        ),
        holders=owners,
    )


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs (one of another user counts as running)."""
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
