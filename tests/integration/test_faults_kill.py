"""Fault injection, part 1: the controller SIGKILLed in the middle of each step (then rollback.yml), and the database
backends terminated in the middle of a step. See fault_support.py for what is asserted after each fault."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import typing as t

import pgworld
import pytest
from fault_support import (
    TRIGGERS,
    BackupGate,
    CopyGate,
    IntegrityGate,
    backends_of_the_run,
    fault_log,
    fresh,
    gate_pids,
    kill_then_roll_back,
    outcome,
    output,
    record,
    start,
    wait_for,
)
from test_prod_restore import checksums

pytestmark = pytest.mark.slow

__all__ = ["fault_log", "fresh"]


@pytest.mark.parametrize("step", list(TRIGGERS))
def test_sigkill_of_the_controller_then_rollback(fresh: pgworld.World, tmp_path: t.Any, step: str) -> None:
    world = fresh
    before = checksums(world.clusters["prod"], "shop")
    kill_then_roll_back(world, step, tmp_path)
    result = outcome(world, before)
    assert result == "intact", "rollback.yml must put production back as it was"
    if step != "after swap":
        # the run stopped where its controller died: nothing of it went on to swap (the window's steps run in one
        # module call, which must stop at its next step once the controller is gone)
        swaps = [entry for entry in latest_steps(world) if entry[0] == "swap"]
        assert swaps == [], "the run went on without its controller: %s" % swaps
    record("SIGKILL ansible-playbook + rollback.yml", step, result)


def latest_steps(world: pgworld.World) -> t.List[t.Tuple[str, str]]:
    """(step, state) of the latest run in the journal, in order."""
    with contextlib.closing(world.clusters["prod"].connect("pgshift")) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT step, state FROM pgshift.steps WHERE run_id = (SELECT run_id FROM pgshift.runs "
            "ORDER BY started_at DESC LIMIT 1) ORDER BY id"
        )
        return list(cur.fetchall())


# Deterministic points in the middle of a step for the database faults: the step waits on a lock the test holds.
GATES: t.Dict[str, t.Callable[[pgworld.World], t.Any]] = {
    "backup": BackupGate,
    "copy": CopyGate,
    "integrity check": IntegrityGate,
}


def waiting_backends(world: pgworld.World, exclude: t.Sequence[int]) -> t.List[int]:
    """Backends of the run that wait on the test's lock (the step's own sessions, held at the gate)."""
    with contextlib.closing(world.clusters["prod"].connect()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT DISTINCT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE NOT l.granted AND a.backend_type = 'client backend' AND NOT (l.pid = ANY(%s)) ORDER BY 1",
            (list(exclude),),
        )
        return [r[0] for r in cur.fetchall()]


@pytest.mark.parametrize("step", list(GATES))
def test_backends_killed_in_the_middle_of_a_step(fresh: pgworld.World, tmp_path: t.Any, step: str) -> None:
    world = fresh
    before = checksums(world.clusters["prod"], "shop")
    proc = start(world, "playbooks/prod_restore.yml", {}, tmp_path)
    gate = GATES[step](world)
    try:
        reached = wait_for(gate, proc)
        killed = []
        if reached:
            with contextlib.closing(world.clusters["prod"].connect()) as conn, conn.cursor() as cur:
                for pid in backends_of_the_run(world, gate_pids(gate)):
                    cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
                    if cur.fetchone()[0]:
                        killed.append(pid)
    finally:
        gate.release()
    rc = proc.wait(timeout=600)
    result = outcome(world, before)
    if result == "intact":
        assert rc != 0, "production is unchanged but the run claims success"
    else:
        assert rc == 0, "production was released but the run failed"
    record(
        "backends terminated (%d)" % len(killed),
        step,
        result,
        "the step held at a lock, its sessions terminated" if killed else "the point was never reached",
        injected=bool(killed),
    )


@pytest.mark.parametrize("step", ["copy", "integrity check"])
def test_backend_sigkill_is_waited_out(fresh: pgworld.World, tmp_path: t.Any, step: str) -> None:
    """kill -9 of a backend of the step: the server ends every session and runs crash recovery; the run's rescue
    (rollback, journal, access restored) waits for it and leaves production as it was, accepting connections.

    Crash recovery of a small test cluster is over in well under a second, before the rescue's first connection; so
    that the rescue meets a server that does not accept connections yet (as a large one would, for seconds), the test
    keeps the server down after the crash until the rescue's rollback task has started, and two seconds more."""
    world = fresh
    prod = world.clusters["prod"]
    before = checksums(prod, "shop")
    log_size = os.path.getsize(prod.log_file) if os.path.exists(prod.log_file) else 0
    proc = start(world, "playbooks/prod_restore.yml", {}, tmp_path)
    gate = GATES[step](world)
    victim = None
    try:
        if wait_for(gate, proc):
            waiting = waiting_backends(world, gate_pids(gate))
            if waiting:
                victim = waiting[0]
                os.kill(victim, signal.SIGKILL)
    finally:
        gate.release()
    if victim is not None:
        try:
            prod.stop()
            rescue_started = wait_for(
                lambda: "Recover | roll the database back from the journal" in output(tmp_path, "prod_restore.yml"),
                proc,
            )
            assert rescue_started, "the run never reached its rescue"
            time.sleep(2.0)
        finally:
            prod.start()
    rc = proc.wait(timeout=600)
    text = output(tmp_path, "prod_restore.yml")
    assert rc != 0, text[-3000:]
    with open(prod.log_file, errors="replace") as handle:
        handle.seek(log_size)
        server_log = handle.read()
    crashed = victim is not None and ("(PID %d) was terminated by signal 9" % victim) in server_log
    result = outcome(world, before)
    assert result == "intact", "the rescue must put production back after crash recovery"
    with contextlib.closing(prod.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT datconnlimit, datallowconn FROM pg_database WHERE datname = 'shop'")
        assert cur.fetchone() == (-1, True)
    record(
        "backend SIGKILL (server crash recovery)",
        step,
        result,
        "pid %s killed; the server restarted, the rescue waited" % victim,
        injected=crashed,
    )
