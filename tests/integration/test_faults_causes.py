"""Fault injection, part 2: real causes (full disk, a file where a folder should be, a reconnecting session at the
swap, an unhealthy service after the restart), two runs at once, a re-run after a crash, inputs changed between plan
and apply. See fault_support.py for what is asserted after each fault."""

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
from conftest import ROOT, VENV_BIN, ansible_env
from fault_support import (
    FAST,
    CopyGate,
    JournalGate,
    fault_log,
    fresh,
    journal_step,
    lock_holders,
    outcome,
    output,
    record,
    start,
    wait_for,
)
from test_prod_restore import checksums, journal_runs

pytestmark = pytest.mark.slow

__all__ = ["fault_log", "fresh"]


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
    # the run held right before the swap (the build proven, its journal entry waiting), the loop started, then let go:
    # the swap, which follows in the same module call within milliseconds, meets the reconnecting session
    gate = JournalGate(world, "build", "done")
    thread = threading.Thread(target=reconnect_loop, daemon=True)
    try:
        reached = wait_for(gate, proc)
        if reached:
            thread.start()  # it reconnects for as long as the swap waits for sessions to end (swap_timeout)
    finally:
        gate.release()
    try:
        rc = proc.wait(timeout=600)
    finally:
        stop.set()
        if thread.is_alive():
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


def test_rollback_during_a_live_run_is_refused(fresh: pgworld.World, tmp_path: t.Any) -> None:
    """rollback.yml started while a release is live (held in its copy step): refused, naming the lock holder, nothing
    touched; the live run then finishes as intended."""
    world = fresh
    prod = world.clusters["prod"]
    before = checksums(prod, "shop")
    live_dir = tmp_path / "live"
    live_dir.mkdir()
    proc = start(world, "playbooks/prod_restore.yml", {}, live_dir)
    gate = CopyGate(world)
    try:
        reached = wait_for(gate, proc)
        assert reached, output(live_dir, "prod_restore.yml")[-3000:]
        rollback = start(world, "playbooks/rollback.yml", {}, tmp_path)
        rc = rollback.wait(timeout=300)
        text = output(tmp_path, "rollback.yml")
        with contextlib.closing(prod.connect()) as conn, conn.cursor() as cur:
            cur.execute("SELECT datconnlimit FROM pg_database WHERE datname = 'shop'")
            connlimit = cur.fetchone()[0]
            cur.execute("SELECT 1 FROM pg_database WHERE datname = 'shop__next'")
            next_kept = cur.fetchone() is not None
    finally:
        gate.release()
    assert rc != 0, text[-3000:]
    assert "is live: its run lock is held by session" in text, text[-3000:]
    assert connlimit == 0 and next_kept, "a refused rollback must leave the live run's window alone"
    assert proc.wait(timeout=600) == 0, output(live_dir, "prod_restore.yml")[-3000:]
    result = outcome(world, before)
    assert result == "released"
    steps = [step for step, _state in journal_steps(prod)]
    assert "rollback" not in steps, steps
    record("rollback.yml during a live run", "copy", result, "refused, naming the lock holder", injected=reached)


def journal_steps(cluster: pgworld.Cluster) -> t.List[t.Tuple[str, str]]:
    with contextlib.closing(cluster.connect("pgshift")) as conn, conn.cursor() as cur:
        cur.execute("SELECT step, state FROM pgshift.steps ORDER BY id")
        return list(cur.fetchall())
