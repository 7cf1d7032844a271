"""The online release end to end (pgshift_mode=online) on a throwaway world, with an application writing the whole time.

The run is held (JournalGate) right as the stream holder records that the bulk part is in and proven: production is
live and the slot collects what follows. Meanwhile the test writes what only the window can carry (rows of a table
without a key, a large object) and changes rows the stream must carry; the application writer commits orders and
updates throughout. Afterwards every committed write is in production (the writer's own record), the window copied
what the stream could not, the proof covers bulk and delta, and no slot, publication or origin is left.
"""

from __future__ import annotations

import contextlib
import typing as t

import pgworld
import psycopg2
import pytest
from fault_support import JournalGate, output, start, wait_for
from test_swap_back_carry import Writer, assert_every_write_is_in_production, execute, shop_columns

from ansible_collections.pgshift.ops.plugins.module_utils import _online

pytestmark = pytest.mark.slow

ONLINE = {"pgshift_mode": "online"}


def leftovers(world: pgworld.World) -> t.Dict[str, t.List[str]]:
    """Slots, publications and origins of pgshift's change stream still on production's cluster."""
    prod = world.clusters["prod"]
    out = {
        "slots": [r[0] for r in execute(prod, "postgres", "SELECT slot_name FROM pg_replication_slots")],
        "origins": [r[0] for r in execute(prod, "postgres", "SELECT roname FROM pg_replication_origin")],
        "publications": [],
    }
    for (db,) in execute(prod, "postgres", "SELECT datname FROM pg_database WHERE datname LIKE 'shop%'"):
        out["publications"] += [db + "." + r[0] for r in execute(prod, db, "SELECT pubname FROM pg_publication")]
    return out


def journal_detail(world: pgworld.World, step: str, state: str) -> t.Dict[str, t.Any]:
    rows = execute(
        world.clusters["prod"],
        "pgshift",
        "SELECT detail FROM pgshift.steps WHERE run_id = (SELECT run_id FROM pgshift.runs ORDER BY started_at DESC "
        "LIMIT 1) AND step = %s AND state = %s ORDER BY id DESC LIMIT 1",
        (step, state),
    )
    return rows[0][0] if rows else {}


def add_keyless_table(world: pgworld.World) -> None:
    """A table without a key on both sides (the stream cannot carry its updates: it goes in the window)."""
    for env in ("prod", "dev"):
        execute(world.clusters[env], "shop", "CREATE TABLE audit_log (at timestamptz DEFAULT now(), msg text)")
    execute(
        world.clusters["prod"],
        "shop",
        "INSERT INTO audit_log (msg) SELECT 'before ' || g FROM generate_series(1, 50) g",
    )


@pytest.fixture
def shop(world: pgworld.World) -> pgworld.World:
    world.reset(scale=0.3)
    add_keyless_table(world)
    return world


def test_online_release_with_a_writer_loses_nothing(shop: pgworld.World, tmp_path: t.Any) -> None:
    world = shop
    prod = world.clusters["prod"]
    writer = Writer(world)
    writer.start()
    gate = JournalGate(world, "online_fill", "done")
    proc = start(world, "playbooks/prod_restore.yml", ONLINE, tmp_path)
    try:
        assert writer.wait_commits(20), "the writer did not start"
        assert wait_for(gate, proc), (
            "the run never reached the end of the fill: " + output(tmp_path, "prod_restore.yml")[-3000:]
        )
        commits_at_gate = writer.commits
        # production live, the bulk part in: what only the window carries, and changes the stream must carry
        execute(
            prod, "shop", "INSERT INTO audit_log (msg) SELECT 'during the fill ' || g FROM generate_series(1, 30) g"
        )
        execute(prod, "shop", "UPDATE audit_log SET msg = msg || ' (edited)' WHERE msg = 'before 1'")
        (lo_oid,) = execute(prod, "shop", "SELECT lo_from_bytea(0, %s::bytea)", (b"written during the fill",))[0]
        execute(prod, "shop", "UPDATE customers SET email = 'moved-' || email WHERE id <= 10")
        execute(prod, "shop", "DELETE FROM order_events WHERE id IN (SELECT id FROM order_events ORDER BY id LIMIT 5)")
        gate.release()
        rc = proc.wait(timeout=600)
        notes = writer.finish()
    finally:
        gate.release()
        writer.stop.set()
        if proc.poll() is None:
            proc.kill()
    log = output(tmp_path, "prod_restore.yml")
    assert rc == 0, log[-4000:]
    assert "mode online" in log
    assert writer.commits > commits_at_gate, "the writer committed nothing while the stream followed production"
    # the stream carried rows (the writer's and the test's): the fault-free path did happen
    follow = journal_detail(world, "online_follow", "done").get("applied", {})
    cut = journal_detail(world, "online_cutover", "done").get("stream", {})
    streamed = sum((follow.get("rows") or {}).values()) + sum((cut.get("rows") or {}).values())
    assert streamed >= 15, (follow, cut)
    # production is the new schema, with every committed write of the application
    assert "display_name" in shop_columns(world)
    assert_every_write_is_in_production(world, notes)
    # the window carried the keyless table and the large object
    msgs = [r[0] for r in execute(prod, "shop", "SELECT msg FROM audit_log ORDER BY msg")]
    assert len(msgs) == 80 and "before 1 (edited)" in msgs and "during the fill 30" in msgs, msgs[:5]
    assert execute(prod, "shop", "SELECT lo_get(%s)", (lo_oid,))[0][0].tobytes() == b"written during the fill"
    emails = execute(prod, "shop", "SELECT count(*) FROM customers WHERE email LIKE 'moved-%%'")[0][0]
    assert emails == 10
    # the proof covers both parts; nothing of the stream is left
    fill = journal_detail(world, "online_fill", "done")
    assert fill["integrity"]["ok"] and "audit_log" in fill["eligibility"]["in_window"]
    assert leftovers(world) == {"slots": [], "origins": [], "publications": []}
    assert not execute(prod, "shop", "SELECT nspname FROM pg_namespace WHERE nspname = 'pgshift_online'")


def test_online_check_mode_changes_nothing(shop: pgworld.World, tmp_path: t.Any, run_playbook: t.Any) -> None:
    world = shop
    before = execute(world.clusters["prod"], "postgres", "SELECT datname FROM pg_database ORDER BY 1")
    run = run_playbook(
        "playbooks/prod_restore.yml",
        extra_vars=dict(ONLINE, pgshift_backup_verify_level="read"),
        args=["--check", "--diff"],
        env={"PGSHIFT_WORLD": world.state},
    )
    assert run.rc == 0, run.output[-3000:]
    assert "mode online" in run.output and "audit_log" in run.output  # carried in the window, with the reason
    assert "Fill | build and fill" in run.output
    assert execute(world.clusters["prod"], "postgres", "SELECT datname FROM pg_database ORDER BY 1") == before
    assert leftovers(world) == {"slots": [], "origins": [], "publications": []}


def test_online_refused_in_preflight_names_what_to_change(shop: pgworld.World, run_playbook: t.Any) -> None:
    """Without a superuser the stream cannot be applied, and without a free slot it cannot be opened: online is
    refused in Preflight, naming what to change; auto goes offline and says why."""
    world = shop
    prod = world.clusters["prod"]
    execute(prod, "postgres", "CREATE ROLE pgshift_nosu LOGIN CREATEDB REPLICATION PASSWORD %s", (prod.password,))

    def readiness() -> t.Dict[str, t.Any]:
        with contextlib.closing(
            psycopg2.connect(
                host="127.0.0.1", port=prod.port, user="pgshift_nosu", password=prod.password, dbname="shop"
            )
        ) as conn:
            return _online.server_readiness(conn)

    try:
        found = readiness()
        assert any("is not a superuser" in r and "session_replication_role" in r for r in found["reasons"]), found
    finally:
        execute(prod, "postgres", "DROP ROLE pgshift_nosu")
    # no room for the WAL the slot may retain: refused too, naming the variable
    run = run_playbook(
        "playbooks/prod_restore.yml",
        extra_vars=dict(ONLINE, pgshift_online_wal_limit_mb=10**9),
        env={"PGSHIFT_WORLD": world.state},
    )
    assert run.rc != 0 and "not enough space for the new database and the WAL" in run.output, run.output[-3000:]
    assert "pgshift_online_wal_limit_mb" in run.output and "PLAY [Backup]" not in run.output
    # and in the playbook: pgshift_mode=online without a free replication slot is refused in Preflight (physical
    # slots, not pinned to production's database, take every free one)
    (free,) = execute(
        prod, "postgres", "SELECT current_setting('max_replication_slots')::int - count(*) FROM pg_replication_slots"
    )[0]
    names = ["pgshift_test_full_%d" % i for i in range(int(free))]
    for name in names:
        execute(prod, "postgres", "SELECT pg_create_physical_replication_slot(%s)", (name,))
    try:
        run = run_playbook("playbooks/prod_restore.yml", extra_vars=ONLINE, env={"PGSHIFT_WORLD": world.state})
        assert run.rc != 0
        assert "pgshift_mode=online, but production cannot give a change stream" in run.output
        assert "no free replication slot" in run.output
        assert "PLAY [Backup]" not in run.output
        assert "shop__next" not in [r[0] for r in execute(prod, "postgres", "SELECT datname FROM pg_database")]
        auto = run_playbook(
            "playbooks/prod_restore.yml",
            extra_vars={"pgshift_mode": "auto", "pgshift_backup_verify_level": "read"},
            args=["--check"],
            env={"PGSHIFT_WORLD": world.state},
        )
        assert auto.rc == 0, auto.output[-3000:]
        assert "mode offline (auto): no free replication slot" in auto.output
    finally:
        for name in names:
            execute(prod, "postgres", "SELECT pg_drop_replication_slot(%s)", (name,))


def slot_pid(world: pgworld.World) -> t.Optional[int]:
    rows = execute(
        world.clusters["prod"],
        "postgres",
        "SELECT active_pid FROM pg_replication_slots WHERE slot_name LIKE 'pgshift_%%'",
    )
    return rows[0][0] if rows else None


def test_the_stream_resumes_after_its_wal_sender_is_ended(shop: pgworld.World, tmp_path: t.Any) -> None:
    """Production's backend of the stream (its WAL sender) ended mid-stream: the holder connects again and resumes
    from the slot, exactly once; the release succeeds with every write."""
    world = shop
    writer = Writer(world)
    writer.start()
    # held as the window asks for the cut-over: the holder is still following, the window waits
    gate = JournalGate(world, "online_cutover", "started")
    proc = start(world, "playbooks/prod_restore.yml", ONLINE, tmp_path)
    try:
        assert writer.wait_commits(20), "the writer did not start"
        assert wait_for(gate, proc), (
            "the run never reached the cut-over: " + output(tmp_path, "prod_restore.yml")[-3000:]
        )
        first = slot_pid(world)
        assert first, "no WAL sender streams the slot while the holder follows"
        execute(world.clusters["prod"], "postgres", "SELECT pg_terminate_backend(%s, 5000)", (first,))
        assert wait_for(lambda: slot_pid(world) not in (None, first), proc, timeout=60), "the holder did not resume"
        gate.release()
        rc = proc.wait(timeout=600)
        notes = writer.finish()
    finally:
        gate.release()
        writer.stop.set()
        if proc.poll() is None:
            proc.kill()
    log = output(tmp_path, "prod_restore.yml")
    assert rc == 0, log[-4000:]
    follow = journal_detail(world, "online_follow", "done").get("applied", {})
    assert follow.get("reconnects", 0) >= 1, follow
    assert_every_write_is_in_production(world, notes)
    assert leftovers(world) == {"slots": [], "origins": [], "publications": []}
