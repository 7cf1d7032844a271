"""pgshift.ops.rebuild_swap, the window in one call, refuses each inner step once the run should stop: its run lock let
go (the controller died, or an operator ended the holder's session), its watched controller gone, or the journal
saying it is rolled back. Real modules against a real cluster; the whole release runs it in test_prod_restore.py and
the fault tests (test_faults_kill.py, test_faults_causes.py)."""

from __future__ import annotations

import contextlib
import subprocess
import typing as t
import uuid

import pgworld
import pytest
from psycopg2 import sql


@pytest.fixture
def release_db(pg: pgworld.Cluster, new_db: t.Callable[..., str]) -> t.Iterator[t.Dict[str, str]]:
    """A production database with one table, a dev database, and a journal database of its own."""
    prod, dev = new_db(), new_db()
    for name in (prod, dev):
        with contextlib.closing(pg.connect(name)) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE items (id int PRIMARY KEY, label text)")
            cur.execute("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 50) g")
    journal_db = "j_" + uuid.uuid4().hex[:10]
    yield {"prod": prod, "dev": dev, "journal": journal_db}
    with contextlib.closing(pg.connect()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT datname FROM pg_database WHERE datname = %s OR datname LIKE %s", (journal_db, prod + "\\_\\_%")
        )
        for (name,) in cur.fetchall():
            cur.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _steps(pg: pgworld.Cluster, journal_db: str, run_id: str) -> t.List[t.Tuple[str, str]]:
    with contextlib.closing(pg.connect(journal_db)) as conn, conn.cursor() as cur:
        cur.execute("SELECT step, state FROM pgshift.steps WHERE run_id = %s ORDER BY id", (run_id,))
        return list(cur.fetchall())


def _connlimit(pg: pgworld.Cluster, name: str) -> t.Optional[int]:
    with contextlib.closing(pg.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT datconnlimit FROM pg_database WHERE datname = %s", (name,))
        row = cur.fetchone()
        return row[0] if row else None


class Run(t.NamedTuple):
    run_id: str
    base: t.Dict[str, t.Any]  # the connection, production and journal: what every module of the run takes
    args: t.Dict[str, t.Any]  # rebuild_swap's arguments
    holder_pid: int


def _start(
    pg: pgworld.Cluster, run_module: t.Callable[..., t.Any], db: t.Dict[str, str], tmp_path: t.Any, lock: bool
) -> Run:
    base = dict(pg.conn("postgres"), production_database=db["prod"], journal_database=db["journal"])
    holder_pid = 0
    if lock:
        acquired = run_module("run_lock", dict(base, action="acquire"))
        assert acquired.rc == 0, acquired.output
        holder_pid = int(acquired.result["holder_pid"])
    run = run_module("run_journal", dict(base, action="start"))
    assert run.rc == 0, run.output
    inputs = run_module("release_inputs", pg.conn(db["dev"]))
    assert inputs.rc == 0, inputs.output
    args = dict(
        base,
        run_id=run.result["run_id"],
        schema_source=pg.conn(db["dev"]),
        expect_inputs=inputs.result["inputs"],
        workdir=str(tmp_path / "work"),
    )
    return Run(run.result["run_id"], base, args, holder_pid)


def test_check_mode_plans_every_step_and_writes_nothing(
    pg: pgworld.Cluster, run_module: t.Callable[..., t.Any], release_db: t.Dict[str, str], tmp_path: t.Any
) -> None:
    run_id, _base, args, _pid = _start(pg, run_module, release_db, tmp_path, lock=False)
    planned = run_module("rebuild_swap", dict(args, require_lock=False, window=True), check=True, diff=True)
    assert planned.rc == 0, planned.output
    names = [s["name"] for s in planned.result["steps"]]
    assert names == [
        "window started",
        "block_access started",
        "block access",
        "block_access done",
        "build started",
        "inputs re-check",
        "create",
        "copy",
        "post-data",
        "integrity check",
        "build done",
        "swap",
        "window done",
    ]
    assert {s["state"] for s in planned.result["steps"]} == {"planned", "skipped"}
    assert "CREATE DATABASE" in planned.result["build"]["statements"][0]
    assert planned.result["swap"]["swapped"] is False
    assert "connection limit 0 (applications refused)" in planned.output, planned.output[-2000:]
    assert _steps(pg, release_db["journal"], run_id) == [("start", "done")]
    assert _connlimit(pg, release_db["prod"]) == -1
    assert _connlimit(pg, release_db["prod"] + "__next") is None


def test_the_whole_window_in_one_call_with_the_journal_of_the_separate_steps(
    pg: pgworld.Cluster, run_module: t.Callable[..., t.Any], release_db: t.Dict[str, str], tmp_path: t.Any
) -> None:
    run_id, base, args, _pid = _start(pg, run_module, release_db, tmp_path, lock=True)
    done = run_module("rebuild_swap", dict(args, window=True))
    assert done.rc == 0, done.output
    assert _steps(pg, release_db["journal"], run_id) == [
        ("start", "done"),
        ("window", "started"),
        ("block_access", "started"),
        ("block_access", "done"),
        ("build", "started"),
        ("build", "done"),
        ("swap", "done"),
        ("window", "done"),
    ]
    assert done.result["copy"]["total_rows"] == 50 and done.result["integrity"]["ok"] is True
    assert done.result["access"]["previous"] == {"method": "connlimit", "connlimit": -1, "allowconn": True}
    assert done.result["swap"]["swapped"] is True and done.result["swap"]["previous"].startswith(release_db["prod"])
    assert isinstance(done.result["window_seconds"], float)
    assert all(s["state"] == "done" for s in done.result["steps"])
    assert _connlimit(pg, release_db["prod"]) == -1
    with contextlib.closing(pg.connect(release_db["journal"])) as conn, conn.cursor() as cur:
        cur.execute("SELECT detail FROM pgshift.steps WHERE run_id = %s AND step = 'block_access'", (run_id,))
        assert cur.fetchone()[0] == {"previous": {"method": "connlimit", "connlimit": -1, "allowconn": True}}
        cur.execute("SELECT detail FROM pgshift.steps WHERE run_id = %s AND step = 'build' ORDER BY id", (run_id,))
        assert [r[0] for r in cur.fetchall()] == [
            {"database": release_db["prod"] + "__next"},
            {"database": release_db["prod"] + "__next", "total_rows": 50},
        ]
    assert run_module("run_lock", dict(base, action="release")).rc == 0


@pytest.mark.parametrize("why", ["run lock let go", "controller gone", "rolled back"])
def test_a_run_that_should_stop_stops_before_its_next_step(
    pg: pgworld.Cluster,
    run_module: t.Callable[..., t.Any],
    release_db: t.Dict[str, str],
    tmp_path: t.Any,
    why: str,
) -> None:
    run_id, base, args, holder_pid = _start(pg, run_module, release_db, tmp_path, lock=why != "run lock let go")
    if why == "controller gone":
        dead = subprocess.Popen(["true"])  # noqa: S607 - a process that is gone once reaped
        dead.wait()
        args["watch_pid"] = dead.pid
    elif why == "rolled back":
        rolled = run_module("rollback", dict(base, reason="test", lock_holder_pid=holder_pid, run_id=run_id))
        assert rolled.rc == 0, rolled.output
        # the holder lets go of a run that no longer runs, at its next poll: the journal is what must stop it here
        args["require_lock"] = False
    refused = run_module("rebuild_swap", args)
    assert refused.rc != 0
    expected = {
        "run lock let go": "the run lock of %r is no longer held" % release_db["prod"],
        "controller gone": "the controller (process %d) is gone" % args.get("watch_pid", 0),
        "rolled back": "is rolled_back in the journal",
    }[why]
    assert expected in refused.result["msg"], refused.result
    assert "this run stops here" in refused.result["msg"]
    # nothing was blocked nor built: the call stopped before the first step that changes anything
    assert _connlimit(pg, release_db["prod"]) == -1
    assert _connlimit(pg, release_db["prod"] + "__next") is None
    assert refused.result["failed_step"] == "block_access started"
    assert ("block_access", "started") not in _steps(pg, release_db["journal"], run_id)
    if why != "rolled back":
        rolled = run_module("rollback", dict(base, reason="test", run_id=run_id, lock_holder_pid=holder_pid or None))
        assert rolled.rc == 0, rolled.output
    if holder_pid:
        assert run_module("run_lock", dict(base, action="release")).rc == 0
