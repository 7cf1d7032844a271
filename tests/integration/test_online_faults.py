"""Fault injection into the online release (pgshift_mode=online): the fill, the stream holder that follows production,
and the window's cut-over. Real clusters, real ansible-playbook processes, deterministic gates (fault_support.py).

After each fault: production as it was (content checksums from the catalogs' own tables, accepting connections,
maintenance off, API healthy on the old schema: fault_support.outcome), no replication slot, publication or
replication origin named pgshift_* left anywhere, the stream holder gone; and where it is cheap, a following online
release succeeds. Each case first proves its fault fired (the gate reached with the stream open, the slot dropped by
the test itself, the run failed with the expected message), so that it fails when the fault did not happen.

The cases (fault, where, who cleans up):
- SIGKILL of ansible-playbook as the holder records ``online_fill done``: the holder's watchdog (controller gone, run
  lock let go) drops the stream by itself; rollback.yml puts production back.
- SIGKILL of ansible-playbook in the window (``online_cutover started``, applications blocked): the same; then a
  following online release succeeds.
- the slot dropped by someone else while the holder follows: the holder fails naming the slot, the window refuses,
  the rescue rolls back.
- DDL on production while the holder follows: the window refuses at cut-over (schema hash), the rescue rolls back;
  production keeps its column.
- WAL retained over pgshift_online_wal_limit_mb during the fill: the watchdog drops the stream, the fill fails naming
  the limit, the rescue rolls back.
"""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import subprocess
import time
import typing as t

import pgworld
import pytest
from fault_support import (
    JournalGate,
    fault_log,
    fresh,
    lock_holders,
    outcome,
    output,
    record,
    start,
    wait_for,
)
from test_prod_restore import checksums, columns

pytestmark = pytest.mark.slow

__all__ = ["fault_log", "fresh"]

PLAYBOOK = "playbooks/prod_restore.yml"
# the online mode; no query performance baseline (before the window) nor query check (after the swap): neither is
# what these faults are about, and each costs seconds a run
ONLINE: t.Dict[str, t.Any] = {"pgshift_mode": "online", "pgshift_perf_queries_file": ""}
# the WAL limit of the WAL case, in MB: above what the fill itself writes into the new database (same cluster) while
# the slot retains it, below what the test writes
WAL_LIMIT_MB = 4
BOUND = 30.0  # seconds the holder may take to notice and drop the stream (its watchdog polls every second)


# ------------------------------------------------------------------------------------------------ what is left
def stream_leftovers(world: pgworld.World) -> t.List[str]:
    """Every replication slot, replication origin and publication (in any database of the shop) named pgshift_*."""
    prod = world.clusters["prod"]
    found: t.List[str] = []
    with contextlib.closing(prod.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'pgshift\\_%' ORDER BY 1")
        found += ["slot " + r[0] for r in cur.fetchall()]
        cur.execute("SELECT roname FROM pg_replication_origin WHERE roname LIKE 'pgshift\\_%' ORDER BY 1")
        found += ["origin " + r[0] for r in cur.fetchall()]
        cur.execute("SELECT datname FROM pg_database WHERE datallowconn AND datname LIKE 'shop%' ORDER BY 1")
        shop_databases = [r[0] for r in cur.fetchall()]
    for name in shop_databases:
        with contextlib.closing(prod.connect(name)) as conn, conn.cursor() as cur:
            cur.execute("SELECT pubname FROM pg_publication WHERE pubname LIKE 'pgshift\\_%' ORDER BY 1")
            found += ["publication %s in %s" % (r[0], name) for r in cur.fetchall()]
    return found


def latest_run(world: pgworld.World) -> t.List[t.Tuple[str, str, t.Dict[str, t.Any]]]:
    """(step, state, detail) of the latest run in the journal, in order."""
    with contextlib.closing(world.clusters["prod"].connect("pgshift")) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT step, state, detail FROM pgshift.steps WHERE run_id = (SELECT run_id FROM pgshift.runs "
            "ORDER BY started_at DESC LIMIT 1) ORDER BY id"
        )
        return [(r[0], r[1], r[2] or {}) for r in cur.fetchall()]


def entry(world: pgworld.World, step: str, state: str) -> t.Optional[t.Dict[str, t.Any]]:
    """The detail of the latest run's last ``step`` ``state`` entry, or None."""
    found = [detail for name, st, detail in latest_run(world) if (name, st) == (step, state)]
    return found[-1] if found else None


def holder_pid(world: pgworld.World) -> int:
    detail = entry(world, "online_fill", "started")
    assert detail and detail.get("pid"), "the stream holder never started: %s" % latest_run(world)
    return int(detail["pid"])


def holder_alive(pid: int) -> bool:
    """The stream holder (not a zombie, not a process that reused its pid) still runs."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return b"_online_fill" in handle.read()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def slot(world: pgworld.World) -> t.Optional[t.Tuple[str, t.Optional[int]]]:
    """The run's slot (name, active_pid), or None."""
    with contextlib.closing(world.clusters["prod"].connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT slot_name, active_pid FROM pg_replication_slots WHERE slot_name LIKE 'pgshift\\_%'")
        rows = cur.fetchall()
    assert len(rows) <= 1, rows
    return (rows[0][0], rows[0][1]) if rows else None


def holder_log(world: pgworld.World) -> str:
    """The holders' logs (in the work folders of the world's runs), for a failure's message."""
    out = []
    for path in sorted(glob.glob(os.path.join(world.state, "backups", "work", "*", "online", "holder.log"))):
        with open(path, errors="replace") as handle:
            out.append("%s:\n%s" % (path, handle.read()[-3000:]))
    return "\n".join(out) or "(no holder log)"


def until(predicate: t.Callable[[], bool], timeout: float = BOUND) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def assert_nothing_left(world: pgworld.World, before: t.Dict[str, t.Any], pid: int) -> str:
    result = outcome(world, before)
    assert result == "intact", "production must be as it was"
    assert stream_leftovers(world) == [], "the change stream was left on production"
    assert not holder_alive(pid), "the stream holder (process %d) still runs" % pid
    return result


def holder_stopped_by_itself(world: pgworld.World, pid: int) -> t.Dict[str, t.Any]:
    """Wait (bounded) until the holder is gone and the stream with it, no rollback having run; return what the holder
    recorded as the reason it stopped."""
    gone = until(lambda: not holder_alive(pid) and not stream_leftovers(world))
    assert gone, "the holder did not drop the stream by itself within %.0f s: %s; alive: %s; its log:\n%s" % (
        BOUND,
        stream_leftovers(world),
        holder_alive(pid),
        holder_log(world),
    )
    steps = latest_run(world)
    assert ("rollback", "done") not in [(s, st) for s, st, _d in steps], "a rollback ran: not the holder's doing"
    undone = entry(world, "online_stream", "undone")
    assert undone and undone.get("dropped"), "the holder did not record what it dropped: %s" % steps
    failed = [d for s, st, d in steps if s in ("online_fill", "online_follow") and st == "failed"]
    assert failed, "the holder recorded no reason: %s" % steps
    return failed[-1]


def wait_group_gone(proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """The SIGKILLed controller's orphaned workers finish (or die) as they do for an operator."""
    with contextlib.suppress(ProcessLookupError):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            os.killpg(proc.pid, 0)
            time.sleep(0.2)


def roll_back(world: pgworld.World, tmp_path: t.Any) -> str:
    assert until(lambda: lock_holders(world) == 0), "the run lock holder did not let go"
    rollback = start(world, "playbooks/rollback.yml", {}, tmp_path)
    assert rollback.wait(timeout=300) == 0, output(tmp_path, "rollback.yml")[-3000:]
    return output(tmp_path, "rollback.yml")


def one_line(text: str) -> str:
    return " ".join(text.split())


def kill_controller_at(
    world: pgworld.World, step: str, state: str, tmp_path: t.Any
) -> t.Tuple[subprocess.Popen, int, t.List[str]]:
    """Start the online release, hold it at the journal entry ``step`` ``state``, SIGKILL ansible-playbook there, then
    let the entry go. Returns the controller, the holder's pid and the stream that was open when it died."""
    gate = JournalGate(world, step, state)
    proc = start(world, PLAYBOOK, ONLINE, tmp_path)
    try:
        reached = wait_for(gate, proc)
        assert reached, "the run never reached %s %s:\n%s" % (step, state, output(tmp_path, PLAYBOOK)[-3000:])
        pid = holder_pid(world)
        assert holder_alive(pid), "the stream holder is not running at the fault"
        open_stream = stream_leftovers(world)
        assert [x for x in open_stream if x.startswith("slot ")], "no stream open at the fault: %s" % open_stream
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        gate.release()
    return proc, pid, open_stream


# ------------------------------------------------------------------------------------------------ the cases
def test_sigkill_of_the_controller_during_the_fill(fresh: pgworld.World, tmp_path: t.Any) -> None:
    """The controller dies while the holder records the fill done: the holder's watchdog sees the controller gone
    (and its run lock let go) and drops the stream by itself; rollback.yml then puts everything back."""
    world = fresh
    before = checksums(world.clusters["prod"], "shop")
    proc, pid, open_stream = kill_controller_at(world, "online_fill", "done", tmp_path)
    reason = holder_stopped_by_itself(world, pid)
    assert "controller" in reason["error"] or "run lock" in reason["error"], reason
    wait_group_gone(proc)
    roll_back(world, tmp_path)
    assert_nothing_left(world, before, pid)
    record(
        "SIGKILL ansible-playbook + rollback.yml",
        "online fill (online_fill done)",
        "intact",
        "the holder dropped the stream by itself (%s), then rollback.yml" % reason["error"][:60],
    )


def test_sigkill_of_the_controller_in_the_window(fresh: pgworld.World, tmp_path: t.Any) -> None:
    """The controller dies as the window asks the holder to stop (applications blocked): the holder drops the stream
    by itself, nothing is swapped, rollback.yml opens production again; a following online release succeeds."""
    world = fresh
    prod = world.clusters["prod"]
    before = checksums(prod, "shop")
    proc, pid, open_stream = kill_controller_at(world, "online_cutover", "started", tmp_path)
    assert entry(world, "block_access", "done") is not None, "the window had not blocked applications"
    reason = holder_stopped_by_itself(world, pid)
    assert "controller" in reason["error"] or "run lock" in reason["error"], reason
    wait_group_gone(proc)
    assert [s for s, _st, _d in latest_run(world) if s == "swap"] == [], "the run went on without its controller"
    roll_back(world, tmp_path)
    assert_nothing_left(world, before, pid)

    # nothing of the killed run is in the way of the next one
    again = tmp_path / "again"
    again.mkdir()
    follow = start(world, PLAYBOOK, ONLINE, again)
    assert follow.wait(timeout=600) == 0, output(again, PLAYBOOK)[-4000:]
    assert entry(world, "online_cutover", "done") is not None, "the following release did not go online"
    assert outcome(world, before) == "released"
    assert stream_leftovers(world) == []
    record(
        "SIGKILL ansible-playbook + rollback.yml",
        "online window (online_cutover started)",
        "intact",
        "holder dropped %s by itself; the following online release succeeded" % ", ".join(open_stream),
    )


def test_slot_dropped_by_someone_else_during_the_fill(fresh: pgworld.World, tmp_path: t.Any) -> None:
    """While the holder follows production (the run held as the window starts), someone ends its WAL sender and drops
    its slot. The holder is stopped (SIGSTOP) while that happens so that the test, not the holder's own clean-up, is
    who drops the slot. The release must fail, roll back and leave nothing."""
    world = fresh
    prod = world.clusters["prod"]
    before = checksums(prod, "shop")
    gate = JournalGate(world, "window", "started")
    proc = start(world, PLAYBOOK, ONLINE, tmp_path)
    dropped = None
    try:
        reached = wait_for(gate, proc)
        assert reached, "the run never reached the window:\n%s" % output(tmp_path, PLAYBOOK)[-3000:]
        assert entry(world, "online_fill", "done") is not None
        pid = holder_pid(world)
        # the holder follows: its apply holds the slot (START_REPLICATION)
        assert until(lambda: bool((slot(world) or ("", None))[1])), "the holder's apply never held the slot"
        name = t.cast(t.Tuple[str, int], slot(world))[0]
        os.kill(pid, signal.SIGSTOP)
        try:
            with contextlib.closing(prod.connect()) as conn, conn.cursor() as cur:
                cur.execute(
                    "SELECT pg_terminate_backend(active_pid, 10000) FROM pg_replication_slots "
                    "WHERE slot_name = %s AND active_pid IS NOT NULL",
                    (name,),
                )
                cur.execute("SELECT pg_drop_replication_slot(%s)", (name,))
                dropped = name
        finally:
            os.kill(pid, signal.SIGCONT)
        # the holder notices (its apply loses the stream, its watchdog finds no slot) and records why
        assert until(lambda: entry(world, "online_follow", "failed") is not None), latest_run(world)
    finally:
        gate.release()
    rc = proc.wait(timeout=600)
    text = one_line(output(tmp_path, PLAYBOOK))
    assert rc != 0, "the release succeeded without its slot:\n" + text[-3000:]
    assert "change stream stopped" in text and "dropped by someone else?" in text, text[-3000:]
    assert [s for s, _st, _d in latest_run(world) if s == "swap"] == []
    assert entry(world, "rollback", "done") is not None, "the rescue did not roll back"
    assert_nothing_left(world, before, pid)
    reason = t.cast(t.Dict[str, t.Any], entry(world, "online_follow", "failed"))["error"]
    record(
        "slot dropped by someone else",
        "online fill (following)",
        "intact",
        "slot %s dropped by the test; the holder said: %s" % (dropped, reason[:100]),
        injected=dropped is not None,
    )


def test_ddl_on_production_during_the_fill_is_refused_at_cut_over(fresh: pgworld.World, tmp_path: t.Any) -> None:
    """Production's own DDL while the holder follows (a column added, then a row written with it): the stream cannot
    carry it; the window refuses at cut-over naming the DDL and rolls back; production keeps its column and rows."""
    world = fresh
    prod = world.clusters["prod"]
    before = checksums(prod, "shop")
    gate = JournalGate(world, "window", "started")
    proc = start(world, PLAYBOOK, ONLINE, tmp_path)
    try:
        reached = wait_for(gate, proc)
        assert reached, "the run never reached the window:\n%s" % output(tmp_path, PLAYBOOK)[-3000:]
        assert entry(world, "online_fill", "done") is not None
        pid = holder_pid(world)
        assert holder_alive(pid)
        with contextlib.closing(prod.connect("shop")) as conn, conn.cursor() as cur:
            cur.execute("ALTER TABLE customers ADD COLUMN referral_code text")
            cur.execute(
                "INSERT INTO customers (email, full_name, referral_code) VALUES ('ddl@example.test', 'DDL', 'R-1')"
            )
        ours = checksums(prod, "shop")  # production as its own writes left it
        assert ours["customers"][0] == before["customers"][0] + 1
    finally:
        gate.release()
    rc = proc.wait(timeout=600)
    text = one_line(output(tmp_path, PLAYBOOK))
    assert rc != 0, "the release carried a schema the stream did not know:\n" + text[-3000:]
    assert "production's schema changed during the fill (DDL since the stream's snapshot)" in text, text[-3000:]
    assert entry(world, "online_cutover", "started") is not None, "the refusal did not come at cut-over"
    assert entry(world, "online_cutover", "done") is None
    assert entry(world, "rollback", "done") is not None, "the rescue did not roll back"
    assert "referral_code" in columns(prod, "shop", "customers"), "production's own column was lost"
    assert checksums(prod, "shop") == ours, "production's rows changed"
    assert_nothing_left(world, ours, pid)
    record("DDL on production (ADD COLUMN + INSERT)", "online fill (following)", "intact", "refused at cut-over")


def test_wal_limit_drops_the_stream_and_fails_the_fill(fresh: pgworld.World, tmp_path: t.Any) -> None:
    """pgshift_online_wal_limit_mb: while the holder records the fill done (it confirms nothing then), production
    writes more WAL than the limit; the watchdog drops the stream, the fill fails naming the limit, and rolls back."""
    world = fresh
    prod = world.clusters["prod"]
    before = checksums(prod, "shop")
    limit_mb = WAL_LIMIT_MB
    gate = JournalGate(world, "online_fill", "done")
    proc = start(world, PLAYBOOK, dict(ONLINE, pgshift_online_wal_limit_mb=limit_mb), tmp_path)
    written = at_gate = 0
    try:
        reached = wait_for(gate, proc)
        assert reached, "the run never reached the fill's end:\n%s" % output(tmp_path, PLAYBOOK)[-3000:]
        pid = holder_pid(world)
        name = t.cast(t.Tuple[str, t.Optional[int]], slot(world))[0]
        with contextlib.closing(prod.connect()) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, pg_current_wal_lsn()::text "
                "FROM pg_replication_slots WHERE slot_name = %s",
                (name,),
            )
            at_gate, lsn = cur.fetchone()
            assert at_gate < limit_mb * 1048576, "the fill alone retained %d bytes: WAL_LIMIT_MB is too low" % at_gate
            # WAL that no table keeps: non-transactional logical messages (1 MB each), in another database
            for _i in range(limit_mb * 2 + 1):
                cur.execute("SELECT pg_logical_emit_message(false, 'pgshift-test', repeat('x', 1048576))")
            cur.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)::bigint", (lsn,))
            written = int(cur.fetchone()[0])
        assert at_gate + written > limit_mb * 1048576, (at_gate, written)
        # the watchdog reads the slot every two seconds; the holder is held at its entry meanwhile
        reason = holder_stopped_by_itself(world, pid)
        assert "pgshift_online_wal_limit_mb" in reason["error"], reason
    finally:
        gate.release()
    rc = proc.wait(timeout=600)
    text = one_line(output(tmp_path, PLAYBOOK))
    assert rc != 0, text[-3000:]
    assert "pgshift_online_wal_limit_mb" in text and "over the limit of %.1f MB" % limit_mb in text, text[-3000:]
    assert entry(world, "rollback", "done") is not None, "the rescue did not roll back"
    assert_nothing_left(world, before, pid)
    record(
        "WAL retained over pgshift_online_wal_limit_mb",
        "online fill (online_fill done)",
        "intact",
        "%.1f MB retained at the gate, %.1f MB written, limit %d MB: the holder dropped the stream"
        % (at_gate / 1048576.0, written / 1048576.0, limit_mb),
    )
