"""Fault injection into prod_restore.yml, step by step (real clusters, real ansible-playbook processes).

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
import http.server
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import typing as t

import pgworld
import pytest
from conftest import FAULT_RESULTS, ROOT, VENV_BIN, ansible_env
from test_prod_restore import api, checksums, columns, databases, journal_runs

pytestmark = pytest.mark.slow

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


TRIGGERS: t.Dict[str, t.Callable[[pgworld.World], t.Callable[[], bool]]] = {
    "backup": new_backup,
    "maintenance on": flag_on,
    "block access": lambda w: journal_step(w, "block_access", "started"),
    "build": lambda w: journal_step(w, "build", "started"),
    "copy": lambda w: activity(w, "shop__next", "^\\s*COPY"),
    "before swap": lambda w: journal_step(w, "build", "done"),
    "after swap": lambda w: journal_step(w, "swap", "done"),
}


def lock_holders(world: pgworld.World) -> int:
    with contextlib.closing(world.clusters["prod"].connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pgshift-lock:%'")
        return int(cur.fetchone()[0])


def outcome(world: pgworld.World, before: t.Dict[str, t.Any]) -> str:
    """'intact' or 'released', or an AssertionError saying what is in between."""
    prod = world.clusters["prod"]
    dbs = databases(prod)
    assert dbs.get("shop") == (-1, True), "production must exist and accept connections: %s" % dbs
    assert not [d for d in dbs if d.startswith("shop__next") or d.startswith("shop__failed")], dbs
    assert not os.path.exists(os.path.join(world.state, "web", "maintenance.flag")), "maintenance left on"
    deadline = time.monotonic() + 10
    while lock_holders(world) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert lock_holders(world) == 0, "the run lock is still held"
    runs = journal_runs(prod) if "pgshift" in dbs else []
    assert all(status != "running" for _, status in runs), "the journal left a run open: %s" % runs
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


def record(kind: str, step: str, result: str, detail: str = "") -> None:
    FAULT_RESULTS.append({"fault": kind, "step": step, "outcome": result, "detail": detail})


@pytest.mark.parametrize("step", list(TRIGGERS))
def test_sigkill_of_the_controller_then_rollback(fresh: pgworld.World, tmp_path: t.Any, step: str) -> None:
    world = fresh
    before = checksums(world.clusters["prod"], "shop")
    proc = start(world, "playbooks/prod_restore.yml", {}, tmp_path)
    reached = wait_for(TRIGGERS[step](world), proc)
    assert reached, "the run never reached %r:\n%s" % (step, output(tmp_path, "prod_restore.yml")[-3000:])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # the controller's orphaned workers finish or die with it; give them time, as an operator would
    with contextlib.suppress(ProcessLookupError):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            os.killpg(proc.pid, 0)
            time.sleep(0.2)
    rollback = start(world, "playbooks/rollback.yml", {}, tmp_path)
    assert rollback.wait(timeout=300) == 0, output(tmp_path, "rollback.yml")[-3000:]
    result = outcome(world, before)
    assert result == "intact", "rollback.yml must put production back as it was"
    record("SIGKILL ansible-playbook + rollback.yml", step, result)


@pytest.mark.parametrize("step", ["backup", "copy", "integrity check"])
def test_backends_killed_in_the_middle_of_a_step(fresh: pgworld.World, tmp_path: t.Any, step: str) -> None:
    world = fresh
    before = checksums(world.clusters["prod"], "shop")
    proc = start(world, "playbooks/prod_restore.yml", {}, tmp_path)
    trigger = TRIGGERS.get(step) or (lambda w: activity(w, "shop__next", "extended\\("))
    reached = wait_for(trigger(world), proc)
    with contextlib.closing(world.clusters["prod"].connect()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname IN ('shop', 'shop__next') "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        killed = cur.fetchone()[0]
    rc = proc.wait(timeout=600)
    result = outcome(world, before)
    if result == "intact":
        assert rc != 0, "production is unchanged but the run claims success"
    else:
        assert rc == 0, "production was released but the run failed"
    record("backends terminated (%d)" % killed, step, result, "reached" if reached else "ended before the trigger")


def _mount_tmpfs(path: str, size: str) -> None:
    os.makedirs(path, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; the full-disk faults need it")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", path], capture_output=True, check=False
    )
    if proc.returncode != 0:
        pytest.skip("this machine does not allow mounting a tmpfs: %s" % proc.stderr.decode().strip())


@pytest.fixture
def tiny_fs(tmp_path: t.Any) -> t.Iterator[str]:
    base = tempfile.mkdtemp(prefix="pgshift-tinyfs-")
    os.chmod(base, 0o755)  # noqa: S103 - the PostgreSQL server user must reach the tablespace below it
    path = os.path.join(base, "fs")
    _mount_tmpfs(path, "600k")
    yield path
    subprocess.run(["umount", "-l", path], check=False)
    shutil.rmtree(base, ignore_errors=True)


def test_full_disk_for_the_backup_is_refused_by_the_preflight(
    fresh: pgworld.World, tmp_path: t.Any, tiny_fs: str
) -> None:
    world = fresh
    before = checksums(world.clusters["prod"], "shop")
    proc = start(world, "playbooks/prod_restore.yml", {"pgshift_backup_dir": tiny_fs}, tmp_path)
    assert proc.wait(timeout=300) != 0
    assert "not enough space for the backup" in output(tmp_path, "prod_restore.yml")
    assert outcome(world, before) == "intact"
    record("disk too small (preflight)", "preflight", "intact", "refused before any change")


def test_disk_fills_up_during_the_backup(fresh: pgworld.World, tmp_path: t.Any, tiny_fs: str) -> None:
    world = fresh
    before = checksums(world.clusters["prod"], "shop")
    proc = start(
        world, "playbooks/prod_restore.yml", {"pgshift_backup_dir": tiny_fs, "pgshift_space_factor": 0}, tmp_path
    )
    assert proc.wait(timeout=300) != 0
    assert "production was not" in output(tmp_path, "prod_restore.yml")
    assert outcome(world, before) == "intact"
    assert journal_runs(world.clusters["prod"])[-1][1] == "aborted"
    record("ENOSPC", "backup", "intact")


def test_disk_fills_up_during_the_copy(fresh: pgworld.World, tmp_path: t.Any, tiny_fs: str) -> None:
    world = fresh
    prod = world.clusters["prod"]
    before = checksums(prod, "shop")
    user = pgworld.server_user()
    if user:
        entry = pwd.getpwnam(user)
        os.chown(tiny_fs, entry.pw_uid, entry.pw_gid)
    with contextlib.closing(prod.connect()) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLESPACE tiny LOCATION %s", (tiny_fs,))
    try:
        proc = start(world, "playbooks/prod_restore.yml", {"pgshift_next_tablespace": "tiny"}, tmp_path)
        assert proc.wait(timeout=300) != 0
        text = output(tmp_path, "prod_restore.yml")
        assert "The rebuild failed" in text and "Production was left as it was" in text
        assert outcome(world, before) == "intact"
        record("ENOSPC (tablespace of the new database)", "copy", "intact")
    finally:
        with contextlib.closing(prod.connect()) as conn, conn.cursor() as cur:
            cur.execute("DROP TABLESPACE IF EXISTS tiny")


def test_folder_for_the_maintenance_flag_is_a_file(fresh: pgworld.World, tmp_path: t.Any) -> None:
    world = fresh
    before = checksums(world.clusters["prod"], "shop")
    blocker = os.path.join(world.state, "blocker")
    with open(blocker, "w") as handle:
        handle.write("x\n")
    proc = start(
        world, "playbooks/prod_restore.yml", {"pgshift_maintenance_flag": os.path.join(blocker, "flag")}, tmp_path
    )
    assert proc.wait(timeout=300) != 0
    assert "Maintenance could not be switched on" in output(tmp_path, "prod_restore.yml"), output(
        tmp_path, "prod_restore.yml"
    )[-4000:]
    assert outcome(world, before) == "intact"
    assert journal_runs(world.clusters["prod"])[-1][1] == "rolled_back"
    record("failing task (flag folder is a file)", "maintenance on", "intact")


def test_reconnecting_superuser_session_blocks_the_swap(fresh: pgworld.World, tmp_path: t.Any) -> None:
    """A client that reconnects in a loop (superusers pass the connection limit) keeps the rename from happening."""
    world = fresh
    prod = world.clusters["prod"]
    before = checksums(prod, "shop")
    stop = threading.Event()

    def reconnect_loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception), contextlib.closing(prod.connect("shop")) as conn, conn.cursor() as cur:
                cur.execute("SELECT pg_sleep(0.3)")

    proc = start(world, "playbooks/prod_restore.yml", {}, tmp_path)
    reached = wait_for(journal_step(world, "build", "done"), proc)
    thread = threading.Thread(target=reconnect_loop, daemon=True)
    thread.start()
    try:
        rc = proc.wait(timeout=600)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert reached
    text = output(tmp_path, "prod_restore.yml")
    result = outcome(world, before)
    if result == "intact":
        assert rc != 0, text[-3000:]
        assert "survive termination" in text or "being accessed by other users" in text, text[-3000:]
    else:
        assert rc == 0, "production was released but the run failed:\n" + text[-3000:]
    record("reconnect loop of a superuser session", "swap", result, "swap completed or undone, never half")


def test_an_app_host_that_does_not_come_back_swaps_back(fresh: pgworld.World, tmp_path: t.Any) -> None:
    """The service's health check fails its first calls (the app is not healthy in time on the new release): the
    restart phase fails, production is swapped back, and the service comes back healthy on the old schema."""
    world = fresh
    before = checksums(world.clusters["prod"], "shop")
    calls = {"n": 0}

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            calls["n"] += 1
            self.send_response(503 if calls["n"] <= 3 else 200)
            self.end_headers()

        def log_message(self, *args: t.Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    services = [
        {
            "name": "shop-api",
            "script": os.path.join(ROOT, "sample_app", "shop-api.sh"),
            "environment": {
                "PGSHIFT_API_CONFIG": os.path.join(world.state, "api", "api.json"),
                "PGSHIFT_API_PYTHON": os.path.join(VENV_BIN, "python"),
            },
            "health_url": "http://127.0.0.1:%d/health" % server.server_address[1],
        }
    ]
    try:
        proc = start(
            world, "playbooks/prod_restore.yml", {"pgshift_services": services, "services_health_retries": 2}, tmp_path
        )
        rc = proc.wait(timeout=600)
    finally:
        server.shutdown()
    text = output(tmp_path, "prod_restore.yml")
    assert rc != 0, text[-5000:]
    assert "production was swapped back" in text, text[-4000:]
    assert calls["n"] > 3, "recovery must have checked the service again"
    assert outcome(world, before) == "intact"
    record("service unhealthy after restart", "restart", "intact")


def test_two_runs_at_once(fresh: pgworld.World, tmp_path: t.Any) -> None:
    world = fresh
    before = checksums(world.clusters["prod"], "shop")
    first_dir = tmp_path / "first"
    first_dir.mkdir()
    first = start(world, "playbooks/prod_restore.yml", {}, first_dir)
    assert wait_for(lambda: lock_holders(world) > 0, first), "the first run never took the lock"
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    second = start(world, "playbooks/prod_restore.yml", {}, second_dir)
    assert second.wait(timeout=300) != 0
    assert "another pgshift run on 'shop' is in progress" in output(second_dir, "prod_restore.yml"), output(
        second_dir, "prod_restore.yml"
    )[-4000:]
    assert first.wait(timeout=600) == 0, output(first_dir, "prod_restore.yml")[-3000:]
    assert outcome(world, before) == "released"
    record("a second run started during the first", "backup", "released", "second refused on the lock")


def test_a_run_refuses_while_a_dead_run_is_not_rolled_back(fresh: pgworld.World, tmp_path: t.Any) -> None:
    world = fresh
    before = checksums(world.clusters["prod"], "shop")
    proc = start(world, "playbooks/prod_restore.yml", {}, tmp_path)
    assert wait_for(journal_step(world, "build", "started"), proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(3)
    again_dir = tmp_path / "again"
    again_dir.mkdir()
    again = start(world, "playbooks/prod_restore.yml", {}, again_dir)
    assert again.wait(timeout=300) != 0
    assert "was not rolled back: run `make rollback`" in output(again_dir, "prod_restore.yml")
    rollback = start(world, "playbooks/rollback.yml", {}, tmp_path)
    assert rollback.wait(timeout=300) == 0
    assert outcome(world, before) == "intact"
    record("re-run after a crash", "build", "intact", "refused until rollback.yml")


def test_changed_inputs_between_plan_and_apply_are_refused(fresh: pgworld.World, tmp_path: t.Any) -> None:
    world = fresh
    before = checksums(world.clusters["prod"], "shop")
    check_dir = tmp_path / "check"
    check_dir.mkdir()
    vars_file = check_dir / "vars.json"
    vars_file.write_text(json.dumps(FAST))
    proc = subprocess.run(
        [
            os.path.join(VENV_BIN, "ansible-playbook"),
            "playbooks/prod_restore.yml",
            "--check",
            "-e",
            "@" + str(vars_file),
        ],
        cwd=ROOT,
        env=ansible_env({"PGSHIFT_WORLD": world.state}),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    plan_file = os.path.join(os.path.dirname(world.state), "artifacts", "plan.json")
    assert os.path.exists(plan_file)
    with contextlib.closing(world.clusters["dev"].connect("shop")) as conn, conn.cursor() as cur:
        cur.execute("ALTER TABLE product_reviews ADD COLUMN helpful_votes integer")
    apply_dir = tmp_path / "apply"
    apply_dir.mkdir()
    run = start(world, "playbooks/prod_restore.yml", {"pgshift_plan": plan_file}, apply_dir)
    assert run.wait(timeout=300) != 0
    assert "the dev schema changed" in output(apply_dir, "prod_restore.yml")
    assert outcome(world, before) == "intact"
    record("dev schema changed between plan and apply", "preflight", "intact", "refused")
