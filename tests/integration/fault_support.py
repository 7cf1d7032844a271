"""Shared by the fault-injection tests (test_faults_kill.py, test_faults_causes.py).

Fault injection into prod_restore.yml, step by step (real clusters, real ansible-playbook processes).

Three kinds of faults, each at several steps:
- kill: SIGKILL of the ansible-playbook process in the middle of a step (rescue cannot run), then rollback.yml;
- backend: every backend of production and of the new database terminated in the middle of a step;
- cause: a real cause that makes a step fail (a full disk, a file where a folder should be, a reconnecting session
  that blocks the swap, an application host that does not come back healthy, data the new schema refuses).
After each: production as it was (same content checksums, accepting connections, maintenance off, API healthy on the
old schema) or, where the fault could not stop the run, as intended (the dev schema, the data proven); never in
between; no __next database left; the run lock free; the journal closed. A summary table is printed at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import typing as t

import pgworld
import pytest
from conftest import FAULT_RESULTS, ROOT, VENV_BIN, ansible_env
from psycopg2 import sql
from test_prod_restore import api, checksums, closed_to_applications, columns, databases, journal_runs

FAST = {"pgshift_backup_verify_level": "read", "pgshift_swap_timeout": 5}


@pytest.fixture
def fresh(world: pgworld.World) -> pgworld.World:
    world.reset(scale=0.3)
    return world


def start(world: pgworld.World, playbook: str, extra: t.Dict[str, t.Any], tmp_path: t.Any) -> subprocess.Popen:
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps(dict(FAST, **extra)))
    os.chmod(vars_file, 0o600)
    log = open(tmp_path / (os.path.basename(playbook) + ".log"), "w")  # noqa: SIM115 - closed by the caller via proc
    return subprocess.Popen(
        [os.path.join(VENV_BIN, "ansible-playbook"), playbook, "-e", "@" + str(vars_file)],
        cwd=ROOT,
        env=ansible_env({"PGSHIFT_WORLD": world.state}),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def output(tmp_path: t.Any, playbook: str) -> str:
    return (tmp_path / (os.path.basename(playbook) + ".log")).read_text()


def wait_for(predicate: t.Callable[[], bool], proc: subprocess.Popen, timeout: float = 240) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def journal_step(world: pgworld.World, step: str, state: str) -> t.Callable[[], bool]:
    def check() -> bool:
        try:
            with contextlib.closing(world.clusters["prod"].connect("pgshift")) as conn, conn.cursor() as cur:
                cur.execute("SELECT to_regclass('pgshift.steps') IS NOT NULL")
                if not cur.fetchone()[0]:
                    return False
                cur.execute("SELECT 1 FROM pgshift.steps WHERE step = %s AND state = %s", (step, state))
                return cur.fetchone() is not None
        except Exception:  # noqa: BLE001 - the journal database may not exist yet
            return False

    return check


def activity(world: pgworld.World, database: str, like: str) -> t.Callable[[], bool]:
    def check() -> bool:
        with contextlib.closing(world.clusters["prod"].connect()) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND query ~* %s AND state = 'active'",
                (database, like),
            )
            return cur.fetchone() is not None

    return check


def new_backup(world: pgworld.World) -> t.Callable[[], bool]:
    folder = os.path.join(world.state, "backups")
    before = set(os.listdir(folder)) if os.path.isdir(folder) else set()

    def check() -> bool:
        return bool(set(os.listdir(folder)) - before - {"work"}) if os.path.isdir(folder) else False

    return check


def flag_on(world: pgworld.World) -> t.Callable[[], bool]:
    return lambda: os.path.exists(os.path.join(world.state, "web", "maintenance.flag"))


class _LockGate:
    """What the gates below share: the test's own session (``conn``; its pids are never counted as a fault) holds a
    lock the step under test must wait for; :meth:`waiting` says a session of the step waits; ``release()`` lets the
    step go on (after the fault is injected)."""

    def __init__(self, world: pgworld.World) -> None:
        self.world = world
        self.conn: t.Any = None
        self.pids: t.List[int] = []

    def waiting(self, column: str, value: str) -> bool:
        """True once a backend whose pg_stat_activity ``column`` is ``value`` waits for a lock."""
        with contextlib.closing(self.world.clusters["prod"].connect()) as conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE NOT l.granted AND {} = %s"
                ).format(sql.Identifier("a", column)),
                (value,),
            )
            return cur.fetchone() is not None

    def release(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None


class CopyGate(_LockGate):
    """A deterministic point in the middle of the copy step, whatever the machine's speed.

    As soon as the new database's tables exist (the pre-data load committed), a session of the test locks them all
    (ACCESS SHARE), so the copy workers' TRUNCATE waits; the predicate is true once a backend of the new database
    waits for a lock. ``release()`` lets the copy go on (after the fault is injected)."""

    def __call__(self) -> bool:
        prod = self.world.clusters["prod"]
        if self.conn is None:
            try:
                conn = prod.connect("shop__next", autocommit=False)
            except Exception:  # noqa: BLE001 - the database does not exist yet
                return False
            with conn.cursor() as cur:
                cur.execute("SELECT pg_backend_pid()")
                self.pids.append(cur.fetchone()[0])
                cur.execute("SELECT schemaname, tablename FROM pg_tables WHERE schemaname = 'public'")
                tables = cur.fetchall()
                if not tables:
                    conn.close()
                    return False
                cur.execute(
                    sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(
                        sql.SQL(", ").join(sql.Identifier(schema, name) for schema, name in tables)
                    )
                )
            self.conn = conn
            return False
        return self.waiting("datname", "shop__next")


class BackupGate(_LockGate):
    """A deterministic point in the middle of the backup step.

    The run lock is taken right after Preflight (which reads production's tables) and before the backup; as soon as it
    is held, a session of the test locks a production table (ACCESS EXCLUSIVE, NOWAIT), so pg_dump and the checksum
    workers of the backup wait on it; the predicate is true once a backend of production waits for a lock.
    ``missed`` says the lock could not be taken first (the backup had already begun): the fault is then not tried."""

    def __init__(self, world: pgworld.World) -> None:
        super().__init__(world)
        self.missed = False

    def __call__(self) -> bool:
        prod = self.world.clusters["prod"]
        if self.missed:
            return False
        if self.conn is None:
            if not lock_holders(self.world):
                return False
            conn = prod.connect("shop", autocommit=False)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_backend_pid()")
                    self.pids.append(cur.fetchone()[0])
                    cur.execute("LOCK TABLE public.orders IN ACCESS EXCLUSIVE MODE NOWAIT")
            except Exception:  # noqa: BLE001 - the backup holds it already: this point was missed
                conn.close()
                self.missed = True
                return False
            self.conn = conn
            return False
        return self.waiting("datname", "shop")


class IntegrityGate(_LockGate):
    """A deterministic point in the middle of the integrity check.

    Once every table of the new database holds as many rows as production's (the copy has read production for the
    last time), a session of the test locks every production table (ACCESS EXCLUSIVE): nothing reads production again
    until the integrity check, which then waits; the predicate is true once a session of the integrity check waits for
    a lock. Never after the build is done (the rebuilt database would be production by then)."""

    def _copied(self) -> t.List[t.Tuple[str, str]]:
        """Production's tables, once the new database has all their rows; [] before."""
        prod = self.world.clusters["prod"]
        try:
            nxt = prod.connect("shop__next")
        except Exception:  # noqa: BLE001 - not created yet
            return []
        with contextlib.closing(nxt) as conn, conn.cursor() as cur, contextlib.closing(prod.connect("shop")) as src:
            cur.execute("SET lock_timeout = '200ms'")
            with src.cursor() as scur:
                scur.execute(
                    "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.relkind IN ('r', 'p') AND n.nspname = 'public' AND c.relname <> 'pgmigrations' "
                    "AND NOT c.relispartition ORDER BY 1, 2"
                )
                tables = scur.fetchall()
                for schema, name in tables:
                    scur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name)))
                    want = scur.fetchone()[0]
                    try:
                        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name)))
                    except Exception:  # noqa: BLE001 - not there yet, or locked by the copy
                        return []
                    if cur.fetchone()[0] != want:
                        return []
            return list(tables)

    def __call__(self) -> bool:
        prod = self.world.clusters["prod"]
        if journal_step(self.world, "build", "done")():
            return False
        if self.conn is None:
            tables = self._copied()
            if not tables:
                return False
            conn = prod.connect("shop", autocommit=False)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_backend_pid()")
                    self.pids.append(cur.fetchone()[0])
                    cur.execute(
                        sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE NOWAIT").format(
                            sql.SQL(", ").join(sql.Identifier(schema, name) for schema, name in tables)
                        )
                    )
            except Exception:  # noqa: BLE001 - the copy still holds a table: try again at the next poll
                conn.close()
                return False
            self.conn = conn
            return False
        return self.waiting("application_name", "pgshift integrity_check")


class JournalGate(_LockGate):
    """A deterministic point at one journal entry, whatever the machine's speed and however close the run's steps
    follow each other (the window's steps run in one module call, milliseconds apart).

    As soon as the journal exists (the run started, long before the window), the test's session takes an advisory lock
    and puts a trigger on pgshift.steps that makes the entry ``step`` ``state`` wait for it: the run holds right as it
    records that entry (not committed yet), everything before it done. The predicate is true once it waits.
    ``release()`` lets it go on (the entry is committed) and removes the trigger."""

    KEY = 7241019

    def __init__(self, world: pgworld.World, step: str, state: str) -> None:
        super().__init__(world)
        self.step, self.state = step, state

    def __call__(self) -> bool:
        if self.conn is None:
            try:
                conn = self.world.clusters["prod"].connect("pgshift")
            except Exception:  # noqa: BLE001 - the journal database does not exist yet
                return False
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass('pgshift.steps') IS NOT NULL")
                if not cur.fetchone()[0]:
                    conn.close()
                    return False
                cur.execute("SELECT pg_backend_pid()")
                self.pids.append(cur.fetchone()[0])
                cur.execute("SELECT pg_advisory_lock(%s)", (self.KEY,))
                cur.execute(
                    sql.SQL(
                        "CREATE OR REPLACE FUNCTION pgshift.test_gate() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                        "IF NEW.step = {} AND NEW.state = {} THEN PERFORM pg_advisory_xact_lock({}); END IF; "
                        "RETURN NEW; END $$"
                    ).format(sql.Literal(self.step), sql.Literal(self.state), sql.Literal(self.KEY))
                )
                cur.execute("DROP TRIGGER IF EXISTS test_gate ON pgshift.steps")
                cur.execute(
                    "CREATE TRIGGER test_gate BEFORE INSERT ON pgshift.steps FOR EACH ROW EXECUTE FUNCTION "
                    "pgshift.test_gate()"
                )
            self.conn = conn
            return False
        with contextlib.closing(self.world.clusters["prod"].connect()) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE NOT l.granted "
                "AND l.locktype = 'advisory' AND l.objid = %s AND a.datname = 'pgshift'",
                (self.KEY,),
            )
            return cur.fetchone() is not None

    def release(self) -> None:
        if self.conn is not None:
            # the run first (it waits for the lock), then the trigger (its removal waits for the run's entry)
            with contextlib.suppress(Exception), self.conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (self.KEY,))
                cur.execute("DROP TRIGGER IF EXISTS test_gate ON pgshift.steps")
                cur.execute("DROP FUNCTION IF EXISTS pgshift.test_gate()")
        super().release()


def gate_pids(gate: t.Any) -> t.List[int]:
    """Backends of the test's own gate (never counted as a fault injected into the run)."""
    return list(getattr(gate, "pids", []))


def backends_of_the_run(world: pgworld.World, exclude: t.Sequence[int]) -> t.List[int]:
    """Client backends on production and on the new database, but the test's own."""
    with contextlib.closing(world.clusters["prod"].connect()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname IN ('shop', 'shop__next') AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend' AND NOT (pid = ANY(%s)) ORDER BY pid",
            (list(exclude),),
        )
        return [r[0] for r in cur.fetchall()]


TRIGGERS: t.Dict[str, t.Callable[[pgworld.World], t.Callable[[], bool]]] = {
    "backup": new_backup,
    "maintenance on": flag_on,
    # applications blocked, the step not recorded as done yet
    "block access": lambda w: JournalGate(w, "block_access", "done"),
    "build": lambda w: journal_step(w, "build", "started"),
    "copy": CopyGate,
    # the new database built and proven, the swap not begun
    "before swap": lambda w: JournalGate(w, "build", "done"),
    "after swap": lambda w: journal_step(w, "swap", "done"),
}


def kill_then_roll_back(world: pgworld.World, step: str, tmp_path: t.Any) -> None:
    """Start the release, SIGKILL ansible-playbook once it reaches ``step`` (TRIGGERS), wait as an operator would for
    its orphaned workers and for the lock holder to let go, then run rollback.yml, which must succeed."""
    proc = start(world, "playbooks/prod_restore.yml", {}, tmp_path)
    trigger = TRIGGERS[step](world)
    try:
        reached = wait_for(trigger, proc)
        assert reached, "the run never reached %r:\n%s" % (step, output(tmp_path, "prod_restore.yml")[-3000:])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if isinstance(trigger, _LockGate):
            trigger.release()
    # the controller's orphaned workers finish or die with it; give them time, as an operator would
    with contextlib.suppress(ProcessLookupError):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            os.killpg(proc.pid, 0)
            time.sleep(0.2)
    # the lock holder watches the controller and lets go within a second of its death (rollback.yml refuses while
    # a holder lives): wait for that, as the refusal tells an operator to
    deadline = time.monotonic() + 30
    while lock_holders(world) and time.monotonic() < deadline:
        time.sleep(0.2)
    rollback = start(world, "playbooks/rollback.yml", {}, tmp_path)
    assert rollback.wait(timeout=300) == 0, output(tmp_path, "rollback.yml")[-3000:]


def lock_holders(world: pgworld.World) -> int:
    with contextlib.closing(world.clusters["prod"].connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pgshift-lock:%'")
        return int(cur.fetchone()[0])


def outcome(world: pgworld.World, before: t.Dict[str, t.Any]) -> str:
    """'intact' or 'released', or an AssertionError saying what is in between."""
    prod = world.clusters["prod"]
    dbs = databases(prod)
    assert dbs.get("shop") == (-1, True), "production must exist and accept connections: %s" % dbs
    assert not [d for d in dbs if d.startswith("shop__next")], dbs
    # a new database that served after a swap is kept by the swap-back (never dropped), closed to applications
    assert all(closed_to_applications(prod, d) for d in dbs if d.startswith("shop__failed_")), dbs
    assert not os.path.exists(os.path.join(world.state, "web", "maintenance.flag")), "maintenance left on"
    deadline = time.monotonic() + 10
    while lock_holders(world) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert lock_holders(world) == 0, "the run lock is still held"
    runs = journal_runs(prod) if "pgshift" in dbs else []
    assert all(status != "running" for _run_id, status in runs), "the journal left a run open: %s" % runs
    status, body = api(world, "/health")
    assert status == 200, "the API is not healthy"
    if "full_name" in columns(prod, "shop", "customers"):
        assert checksums(prod, "shop") == before, "production content changed"
        assert body["schema_version"] == "1700000001000_order-events"
        return "intact"
    after = checksums(prod, "shop", renames={"customers": {"full_name": "display_name"}})
    assert after == before, "released, but the carried data differs"
    assert body["schema_version"] == "1700000005000_rename-full-name"
    return "released"


_CURRENT: t.Dict[str, t.Any] = {}


@pytest.fixture(autouse=True)
def fault_log(request: t.Any) -> t.Iterator[None]:
    """The test being run, so that record() can attach its row to the test's report (pytest-xdist carries it back)."""
    _CURRENT["node"] = request.node
    yield
    _CURRENT.pop("node", None)


NOT_INJECTED = "NOT INJECTED"


def record(kind: str, step: str, result: str, detail: str = "", injected: bool = True) -> None:
    """One row of the fault table. A fault that was not injected for real (its point never reached, nothing to kill)
    is a row marked NOT INJECTED and fails the test: the table never counts a fault that was not tried."""
    row = {"fault": kind, "step": step, "outcome": result if injected else NOT_INJECTED, "detail": detail}
    FAULT_RESULTS.append(row)
    if "node" in _CURRENT:
        _CURRENT["node"].user_properties.append(("fault", row))
    if not injected:
        pytest.fail("fault %r at step %r was not injected (%s): the test proves nothing" % (kind, step, detail))
