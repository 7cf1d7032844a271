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
    CopyGate,
    activity,
    fault_log,
    fresh,
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
    proc = start(world, "playbooks/prod_restore.yml", {}, tmp_path)
    trigger = TRIGGERS[step](world)
    try:
        reached = wait_for(trigger, proc)
        assert reached, "the run never reached %r:\n%s" % (step, output(tmp_path, "prod_restore.yml")[-3000:])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if isinstance(trigger, CopyGate):
            trigger.release()
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
    gate = trigger(world)
    reached = wait_for(gate, proc)
    with contextlib.closing(world.clusters["prod"].connect()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname IN ('shop', 'shop__next') "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        killed = cur.fetchone()[0]
    if isinstance(gate, CopyGate):
        gate.release()
    rc = proc.wait(timeout=600)
    result = outcome(world, before)
    if result == "intact":
        assert rc != 0, "production is unchanged but the run claims success"
    else:
        assert rc == 0, "production was released but the run failed"
    record("backends terminated (%d)" % killed, step, result, "reached" if reached else "ended before the trigger")
