"""A rollback never acts on a live run, a rolled-back run stops at its next step, and the way back waits for a server
that restarts (plugins/module_utils/_run_lock.py, _journal.py, _release.py rollback(), _connection.py connect()).
Real modules against a real cluster; tests/integration/test_faults_causes.py does the same with whole playbooks."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
import typing as t
import uuid

import pgworld
import pytest
from conftest import _tmp_base
from psycopg2 import sql

from ansible_collections.pgshift.ops.plugins.module_utils import _connection as connection
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError


@pytest.fixture
def release_db(pg: pgworld.Cluster, new_db: t.Callable[..., str]) -> t.Iterator[t.Dict[str, str]]:
    """A production database and a journal database of its own (dropped afterwards)."""
    prod = new_db()
    journal_db = "j_" + uuid.uuid4().hex[:10]
    yield {"prod": prod, "journal": journal_db}
    with contextlib.closing(pg.connect()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT datname FROM pg_database WHERE datname = %s OR datname LIKE %s", (journal_db, prod + "\\_\\_%")
        )
        for (name,) in cur.fetchall():
            cur.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _connlimit(pg: pgworld.Cluster, name: str) -> t.Optional[int]:
    with contextlib.closing(pg.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT datconnlimit FROM pg_database WHERE datname = %s", (name,))
        row = cur.fetchone()
        return row[0] if row else None


def _run(pg: pgworld.Cluster, journal_db: str, run_id: str) -> t.Tuple[str, t.List[t.Tuple[str, str]]]:
    with contextlib.closing(pg.connect(journal_db)) as conn, conn.cursor() as cur:
        cur.execute("SELECT status FROM pgshift.runs WHERE run_id = %s", (run_id,))
        status = cur.fetchone()[0]
        cur.execute("SELECT step, state FROM pgshift.steps WHERE run_id = %s ORDER BY id", (run_id,))
        return status, cur.fetchall()


def _start_blocked_run(
    pg: pgworld.Cluster, run_module: t.Callable[..., t.Any], db: t.Dict[str, str]
) -> t.Tuple[int, str, t.Dict[str, t.Any]]:
    """Lock, journal, production blocked: a run in the middle of its window."""
    base = dict(pg.conn("postgres"), production_database=db["prod"], journal_database=db["journal"])
    lock = run_module("run_lock", dict(base, action="acquire"))
    assert lock.rc == 0, lock.output
    run = run_module("run_journal", dict(base, action="start"))
    assert run.rc == 0, run.output
    run_id = run.result["run_id"]
    step = dict(base, action="step", run_id=run_id, step="block_access", state="started")
    assert run_module("run_journal", dict(step, detail={"previous": {"connlimit": -1, "allowconn": True}})).rc == 0
    blocked = run_module("db_access", dict(pg.conn("postgres"), target_database=db["prod"], state="blocked"))
    assert blocked.rc == 0, blocked.output
    assert _connlimit(pg, db["prod"]) == 0
    return int(lock.result["holder_pid"]), run_id, base


def _gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped counts as exited)."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _holders(run_module: t.Callable[..., t.Any], base: t.Dict[str, t.Any]) -> t.List[t.Any]:
    status = run_module("run_lock", dict(base, action="status"))
    assert status.rc == 0, status.output
    return list(status.result["holders"])


def test_rollback_refuses_a_live_run_and_the_run_stops_once_rolled_back(
    pg: pgworld.Cluster, run_module: t.Callable[..., t.Any], release_db: t.Dict[str, str], tmp_path: t.Any
) -> None:
    holder_pid, run_id, base = _start_blocked_run(pg, run_module, release_db)
    prod = release_db["prod"]
    rollback = dict(base, reason="test")

    # rollback.yml's call: no holder identity, the holder is alive -> refused, nothing done, the holder named
    refused = run_module("rollback", rollback)
    assert refused.rc != 0
    assert "run %s on %r" % (run_id, prod) in refused.result["msg"], refused.result
    assert "is live: its run lock is held by session" in refused.result["msg"]
    assert "holder process %d" % holder_pid in refused.result["msg"]
    assert _connlimit(pg, prod) == 0, "a refused rollback must not touch production"
    status, steps = _run(pg, release_db["journal"], run_id)
    assert status == "running" and ("rollback", "started") not in steps

    # another pid is not the holder
    assert run_module("rollback", dict(rollback, lock_holder_pid=holder_pid + 100000)).rc != 0

    # the run's own rescue: it names its holder -> rolled back
    own = run_module("rollback", dict(rollback, lock_holder_pid=holder_pid))
    assert own.rc == 0, own.output
    assert _connlimit(pg, prod) == -1
    status, steps = _run(pg, release_db["journal"], run_id)
    assert status == "rolled_back"
    assert steps[-2:] == [("rollback", "started"), ("rollback", "done")]

    # the run goes on as if nothing happened: every next step refuses
    step = run_module("run_journal", dict(base, action="step", run_id=run_id, step="build", state="started"))
    assert step.rc != 0 and "is rolled_back in the journal" in step.result["msg"], step.result
    assert "this run stops here" in step.result["msg"]
    build = run_module(
        "database_build",
        dict(base, step="create", schema_source=pg.conn(prod), run_id=run_id, workdir=str(tmp_path / "w")),
    )
    assert build.rc != 0 and "this run stops here" in build.result["msg"], build.result
    assert _connlimit(pg, prod + "__next") is None, "a rolled-back run must not build"
    swap = run_module("swap", dict(base, run_id=run_id))
    assert swap.rc != 0 and "this run stops here" in swap.result["msg"], swap.result
    finish = run_module("run_journal", dict(base, action="finish", run_id=run_id, status="succeeded"))
    assert finish.rc != 0, "a rolled-back run must never be closed as succeeded"
    assert _run(pg, release_db["journal"], run_id)[0] == "rolled_back"

    # the holder lets go once its run is no longer running
    deadline = time.monotonic() + 15
    while _holders(run_module, base) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not _holders(run_module, base)


@pytest.mark.parametrize("how", ["holder killed", "its session terminated"])
def test_rollback_goes_on_once_the_holder_is_gone(
    pg: pgworld.Cluster, run_module: t.Callable[..., t.Any], release_db: t.Dict[str, str], how: str
) -> None:
    """A dead run's lock dies with its holder; when the controller is gone for good, an operator ends the holder's
    session (as the refusal says) and the holder lets go instead of taking the lock again."""
    holder_pid, run_id, base = _start_blocked_run(pg, run_module, release_db)
    if how == "holder killed":
        os.kill(holder_pid, signal.SIGKILL)
    else:
        with contextlib.closing(pg.connect()) as conn, conn.cursor() as cur:
            for holder in _holders(run_module, base):
                cur.execute("SELECT pg_terminate_backend(%s)", (holder["backend_pid"],))
    deadline = time.monotonic() + 30
    while not _gone(holder_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _gone(holder_pid), "the holder must let go, not take the lock again"
    assert not _holders(run_module, base)
    done = run_module("rollback", dict(base, reason="the run died"))
    assert done.rc == 0, done.output
    assert _connlimit(pg, release_db["prod"]) == -1
    assert _run(pg, release_db["journal"], run_id)[0] == "rolled_back"


def test_a_rollback_under_way_stops_the_next_step(
    pg: pgworld.Cluster, run_module: t.Callable[..., t.Any], release_db: t.Dict[str, str]
) -> None:
    """Between the rollback's claim (committed first) and its end, the run's next step already refuses."""
    base = dict(pg.conn("postgres"), production_database=release_db["prod"], journal_database=release_db["journal"])
    run_id = run_module("run_journal", dict(base, action="start")).result["run_id"]
    with contextlib.closing(pg.connect(release_db["journal"])) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO pgshift.steps (run_id, step, state) VALUES (%s, 'rollback', 'started')", (run_id,))
    step = run_module("run_journal", dict(base, action="step", run_id=run_id, step="build", state="started"))
    assert step.rc != 0 and "is being rolled back" in step.result["msg"], step.result


def test_connect_waits_for_a_restarting_server_with_a_deadline() -> None:
    base = _tmp_base("pgshift-restart-")
    cluster = pgworld.Cluster("restart", base, pgworld.free_port(), "pw-" + uuid.uuid4().hex)
    cluster.start()
    try:
        params = connection.ConnParams.from_params(cluster.conn())
        cluster.stop()
        with pytest.raises(PgShiftError):
            connection.connect(params)  # no retry: fails at once
        started = time.monotonic()
        with pytest.raises(PgShiftError, match="still so after waiting 2 s"):
            connection.connect(params, retry_seconds=2)
        assert time.monotonic() - started >= 1.5
        # the server comes back while connect() waits for it
        restart = threading.Timer(2.0, cluster.start)
        restart.start()
        conn = connection.connect(params, retry_seconds=60)
        restart.join()
        with contextlib.closing(conn), conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
        # any other error is not waited for
        started = time.monotonic()
        with pytest.raises(PgShiftError, match="password authentication failed"):
            connection.connect(dataclass_replace(params, password="wrong"), retry_seconds=30)
        assert time.monotonic() - started < 10
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


def dataclass_replace(params: connection.ConnParams, **changes: t.Any) -> connection.ConnParams:
    import dataclasses  # noqa: PLC0415

    return dataclasses.replace(params, **changes)
