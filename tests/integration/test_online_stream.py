"""The online release's change stream (_online.py) against a real cluster with wal_level = logical: a slot taken at
the bulk copy's exact snapshot, production's changes applied through the mapping (a renamed column, a changed type, a
column dev adds filled by its default, an accepted loss), exactly once across a crash between the target's commit and
the feedback, the delta proof, and no slot, publication or origin left after success, failure or a killed holder."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import typing as t

import data_support as ds
import pytest

from ansible_collections.pgshift.ops.plugins.module_utils import _data, _data_check, _data_copy, _online, _release
from ansible_collections.pgshift.ops.plugins.module_utils import _journal as journal
from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, connect
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROD = """
CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL, qty integer, fax text, big text);
CREATE TABLE tags (k text PRIMARY KEY, v integer);
CREATE TABLE nokey (x integer, y text);
CREATE TABLE ids (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);
INSERT INTO items SELECT i, 'item ' || i, i, 'fax', NULL FROM generate_series(1, 500) i;
INSERT INTO tags SELECT 't' || i, i FROM generate_series(1, 20) i;
INSERT INTO nokey SELECT i, 'n' FROM generate_series(1, 5) i;
INSERT INTO ids (v) SELECT 'v' || i FROM generate_series(1, 10) i;
"""

DEV = """
CREATE TABLE items (id integer PRIMARY KEY, title text NOT NULL, qty bigint, big text,
                    status text NOT NULL DEFAULT 'fresh');
CREATE TABLE tags (k text PRIMARY KEY, v integer);
CREATE TABLE nokey (x integer, y text);
CREATE TABLE ids (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);
"""

MAPPING = """
tables:
  items:
    columns:
      title: {from: name}
accept_loss:
  columns: [items.fax]
"""


class Setup(t.NamedTuple):
    carry: ds.Carry
    mapping: str
    source: ConnParams
    target: ConnParams
    run_id: str


@pytest.fixture
def online(pg: t.Any, tmp_path: t.Any) -> t.Iterator[Setup]:
    source_db = ds.create_db(pg)
    dev = ds.create_db(pg)
    ds.run_sql(pg, source_db, PROD)
    ds.run_sql(pg, dev, DEV)
    carry = ds.prepare(pg, source_db, dev, str(tmp_path))
    mapping = str(tmp_path / "mapping.yml")
    with open(mapping, "w", encoding="utf-8") as handle:
        handle.write(MAPPING)
    source = ConnParams.from_params(pg.conn(source_db))
    journal_db = "j_" + source_db
    journal.ensure_journal(source, journal_db)
    conn = connect(source.with_database(journal_db))
    with conn.cursor() as cur:
        run_id = journal.start_run(cur, source_db, {})
    conn.commit()
    conn.close()
    yield Setup(carry, mapping, source, ConnParams.from_params(pg.conn(carry.target)), run_id)
    with contextlib.suppress(Exception):
        _online.drop_stream(source, source_db, _online.stream_name(run_id), carry.target)
    for name in (carry.target, source_db, dev, journal_db):
        ds.drop_db(pg, name)


def leftovers(pg: t.Any, setup: Setup) -> t.Dict[str, t.Any]:
    name = _online.stream_name(setup.run_id)
    return {
        "slots": ds.execute(pg, "postgres", "SELECT slot_name FROM pg_replication_slots WHERE slot_name = %s", (name,)),
        "origins": ds.execute(pg, "postgres", "SELECT roname FROM pg_replication_origin WHERE roname = %s", (name,)),
        "publications": ds.execute(pg, setup.carry.source, "SELECT pubname FROM pg_publication"),
    }


NOTHING_LEFT: t.Dict[str, t.Any] = {"slots": [], "origins": [], "publications": []}


def prod(pg: t.Any, setup: Setup, statement: str) -> None:
    ds.run_sql(pg, setup.carry.source, statement)


def open_and_copy(
    pg: t.Any, setup: Setup
) -> t.Tuple[_data.Plan, _online.Eligibility, _online.Stream, t.Dict[str, t.Any]]:
    with contextlib.closing(connect(setup.source)) as src, contextlib.closing(connect(setup.target)) as tgt:
        plan = _data.prepare_plan(src, tgt, setup.mapping)
        eligible = _online.eligibility(src, plan)
    journal_db = "j_" + setup.carry.source
    stream = _online.open_stream(setup.source, eligible, setup.run_id, setup.carry.target, journal_db)
    # Written after the snapshot and before the copy reads: in the stream, not in the bulk copy.
    prod(pg, setup, "INSERT INTO items VALUES (1001, 'during', 7, 'x', NULL); UPDATE items SET qty = 70 WHERE id = 1;")
    prod(pg, setup, "BEGIN; INSERT INTO items VALUES (5000, 'rolled back', 1, 'x', NULL); ROLLBACK;")
    copied = _data_copy.copy_data(setup.source, setup.target, setup.mapping, snapshot=stream.snapshot)
    setup.carry.post_data()
    # the bulk part's proof reads production at the same snapshot, while production has moved on
    bulk = _data_check.integrity_check(setup.source, setup.target, setup.mapping, snapshot=stream.snapshot)
    assert bulk["ok"], bulk["mismatches"]
    assert bulk["tables"]["items"]["source_rows"] == 500
    return plan, eligible, stream, copied


def applier(setup: Setup, stream: _online.Stream, eligible: _online.Eligibility, **kw: t.Any) -> _online.Applier:
    return _online.Applier(
        stream.conn, stream.slot, stream.publication, stream.origin, setup.source, setup.target, eligible, **kw
    )


AFTER_COPY = """
INSERT INTO items SELECT i, 'after ' || i, i, 'x', repeat('z', 5000) FROM generate_series(2001, 2300) i;
UPDATE items SET name = 'renamed', qty = qty + 1 WHERE id BETWEEN 10 AND 60;
DELETE FROM items WHERE id BETWEEN 100 AND 119;
UPDATE items SET id = 9999 WHERE id = 2;
UPDATE items SET qty = 1 WHERE id = 2001;
BEGIN; INSERT INTO items VALUES (5001, 'rolled back too', 1, 'x', NULL); ROLLBACK;
TRUNCATE tags;
INSERT INTO tags VALUES ('after', 1), ('t3', 33);
UPDATE tags SET k = 'moved' WHERE k = 'after';
INSERT INTO ids (v) VALUES ('eleven');
"""


def test_changes_during_and_after_the_copy_arrive_exactly_once_through_the_mapping(pg: t.Any, online: Setup) -> None:
    setup = online
    plan, eligible, stream, _copied = open_and_copy(pg, setup)
    assert "nokey" in eligible.in_window and "no primary key" in eligible.in_window["nokey"]
    assert sorted(tp.key for tp in eligible.streamed) == ["ids", "items", "tags"]
    prod(pg, setup, AFTER_COPY)
    app = applier(setup, stream, eligible)
    result = _online.cut_over(
        setup.source, setup.target, app, stream, eligible, plan, setup.run_id, "j_" + setup.carry.source
    )
    assert result["delta_proof"]["ok"], result["delta_proof"]
    items = result["delta_proof"]["tables"]["items"]
    assert items["source_count"] == items["target_count"] == 500 + 1 + 300 - 20
    rows = result["stream"]["rows"]
    assert rows["insert"] == 1 + 300 + 2 + 1 and rows["delete"] == 20 and rows["truncate"] == 1
    tgt = setup.carry.target
    assert ds.execute(pg, tgt, "SELECT title, qty, status FROM items WHERE id = 1001") == [("during", 7, "fresh")]
    assert ds.execute(pg, tgt, "SELECT qty FROM items WHERE id = 1") == [(70,)]
    assert ds.execute(pg, tgt, "SELECT title, qty FROM items WHERE id = 10") == [("renamed", 11)]
    assert ds.execute(pg, tgt, "SELECT count(*) FROM items WHERE id IN (2, 5000, 5001)") == [(0,)]
    assert ds.execute(pg, tgt, "SELECT title FROM items WHERE id = 9999") == [("item 2",)]
    assert ds.execute(pg, tgt, "SELECT length(big), qty FROM items WHERE id = 2001") == [(5000, 1)]
    assert ds.execute(pg, tgt, "SELECT k, v FROM tags ORDER BY k") == [("moved", 1), ("t3", 33)]
    # sequences set from production at cut-over
    assert ds.execute(pg, tgt, "SELECT nextval('ids_id_seq')") == [(12,)]
    assert leftovers(pg, setup) == NOTHING_LEFT
    assert ds.execute(pg, tgt, "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgshift_online'") == [(0,)]
    # and the whole new database equals production now, by the integrity check's own enumeration
    final = _data_check.integrity_check(setup.source, setup.target, setup.mapping)
    assert final["ok"], final["mismatches"]


def test_replay_after_a_crash_between_commit_and_feedback_applies_once(pg: t.Any, online: Setup) -> None:
    setup = online
    plan, eligible, stream, _copied = open_and_copy(pg, setup)

    class Crash(Exception):
        pass

    def crash(_lsn: int) -> None:
        raise Crash()

    first = applier(setup, stream, eligible, after_target_commit=crash)
    with pytest.raises(Crash):
        first.run(until_lsn=_online.current_lsn(setup.source), timeout=60)
    first.close()
    stream.conn.close()  # the process died: its feedback for that transaction was never sent
    assert ds.execute(pg, setup.carry.target, "SELECT title FROM items WHERE id = 1001") == [("during",)]
    stream.conn = _online.replication_connect(setup.source)
    prod(pg, setup, AFTER_COPY)
    second = applier(setup, stream, eligible)
    result = _online.cut_over(
        setup.source, setup.target, second, stream, eligible, plan, setup.run_id, "j_" + setup.carry.source
    )
    # the slot resent the committed transaction; the origin's position made the apply skip it: exactly once
    assert result["stream"]["skipped_transactions"] == 1
    assert result["delta_proof"]["ok"], result["delta_proof"]
    assert ds.execute(pg, setup.carry.target, "SELECT count(*) FROM items WHERE id = 1001") == [(1,)]
    assert leftovers(pg, setup) == NOTHING_LEFT


def test_delta_proof_catches_a_row_changed_behind_the_streams_back(pg: t.Any, online: Setup) -> None:
    setup = online
    plan, eligible, stream, _copied = open_and_copy(pg, setup)
    prod(pg, setup, AFTER_COPY)
    app = applier(setup, stream, eligible)
    app.run(until_lsn=_online.current_lsn(setup.source), timeout=60)
    ds.execute(pg, setup.carry.target, "UPDATE items SET title = 'tampered' WHERE id = 10")
    with pytest.raises(PgShiftError) as err:
        _online.cut_over(
            setup.source, setup.target, app, stream, eligible, plan, setup.run_id, "j_" + setup.carry.source
        )
    assert "delta proof failed" in err.value.msg and "items" in err.value.msg
    items = err.value.details["delta_proof"]["tables"]["items"]
    assert items["differing_keys"] == [{"key": ["10"], "difference": "changed"}]
    # a failed cut-over leaves no slot, publication or origin behind
    assert leftovers(pg, setup) == NOTHING_LEFT


HOLDER = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from ansible_collections.pgshift.ops.plugins.module_utils import _data, _online
    from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, connect
    args = json.loads(sys.stdin.readline())
    source, target = ConnParams.from_params(args["source"]), ConnParams.from_params(args["target"])
    with connect(source) as src, connect(target) as tgt:
        eligible = _online.eligibility(src, _data.prepare_plan(src, tgt, args["mapping"]))
    stream = _online.open_stream(source, eligible, args["run_id"], target.database, args["journal_db"])
    app = _online.Applier(stream.conn, stream.slot, stream.publication, stream.origin, source, target, eligible)
    app.run(until_lsn=_online.current_lsn(source), timeout=60)
    print("streaming", flush=True)
    app.run(stop=lambda: False)
    """
)


def test_rollback_after_the_stream_holder_was_killed_drops_slot_publication_and_origin(
    pg: t.Any, online: Setup
) -> None:
    import json

    setup = online
    journal_db = "j_" + setup.carry.source
    proc = subprocess.Popen(  # noqa: S603 - argv list
        [sys.executable, "-c", HOLDER, os.path.join(ROOT, ".build", "collections")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(
        json.dumps(
            {
                "source": pg.conn(setup.carry.source),
                "target": pg.conn(setup.carry.target),
                "mapping": setup.mapping,
                "run_id": setup.run_id,
                "journal_db": journal_db,
            }
        )
        + "\n"
    )
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "streaming"
    name = _online.stream_name(setup.run_id)
    active = ds.execute(pg, "postgres", "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (name,))
    assert active == [(True,)]
    os.kill(proc.pid, signal.SIGKILL)  # the controller dies: no rescue, no cut-over
    proc.wait()
    assert leftovers(pg, setup)["slots"] == [(name,)]
    result = _release.rollback(setup.source.with_database("postgres"), setup.carry.source, setup.run_id, journal_db)
    assert any("replication slot" in a for a in result["actions"]), result["actions"]
    assert leftovers(pg, setup) == NOTHING_LEFT
    # idempotent: a second rollback finds nothing to do for the stream
    again = _release.rollback(setup.source.with_database("postgres"), setup.carry.source, setup.run_id, journal_db)
    assert not any("slot" in a for a in again.get("actions", []))


def test_online_check_reports_tables_carried_in_the_window(pg: t.Any, online: Setup, run_module: t.Any) -> None:
    setup = online
    expression = setup.mapping + ".expr.yml"
    with open(expression, "w", encoding="utf-8") as handle:
        handle.write(MAPPING.replace("title: {from: name}", "title: {expression: upper(name)}"))
    res = run_module(
        "online_check",
        {"source": pg.conn(setup.carry.source), "target": pg.conn(setup.carry.target), "mapping_file": expression},
        check=True,
    )
    assert not res.failed, res.output
    assert res.result["possible"] is True and res.result["reasons"] == []
    assert res.result["server"]["wal_level"] == "logical"
    assert res.result["streamed"] == ["ids", "tags"]
    assert "no primary key" in res.result["in_window"]["nokey"]
    assert "mapping expression" in res.result["in_window"]["items"]
    assert res.result["large_objects_in_window"] == 0
    # it only reads: nothing was created on production
    assert leftovers(pg, setup) == NOTHING_LEFT


def test_a_writer_running_through_the_copy_and_the_apply_loses_nothing(
    pg: t.Any, online: Setup, tmp_path: t.Any
) -> None:
    import json
    import threading

    setup = online
    with contextlib.closing(connect(setup.source)) as src, contextlib.closing(connect(setup.target)) as tgt:
        plan = _data.prepare_plan(src, tgt, setup.mapping)
        eligible = _online.eligibility(src, plan)
    journal_db = "j_" + setup.carry.source
    stream = _online.open_stream(setup.source, eligible, setup.run_id, setup.carry.target, journal_db)
    committed: t.List[int] = []
    copy_done = threading.Event()

    def writer() -> None:
        # numbered writes, each committed one recorded by the writer itself; half of them after the copy ended
        with contextlib.closing(pg.connect(setup.carry.source, autocommit=False)) as conn, conn.cursor() as cur:
            for n in range(1, 401):
                if n == 201:
                    copy_done.wait(120)
                cur.execute("INSERT INTO items VALUES (%s, %s, %s, 'w', NULL)", (10000 + n, "w%d" % n, n))
                cur.execute("UPDATE items SET qty = qty + 1 WHERE id = %s", (1 + n % 50,))
                if n % 7 == 0:
                    conn.rollback()  # never committed: must never appear
                    continue
                conn.commit()
                committed.append(10000 + n)

    thread = threading.Thread(target=writer)
    thread.start()
    _data_copy.copy_data(setup.source, setup.target, setup.mapping, snapshot=stream.snapshot)
    setup.carry.post_data()
    copy_done.set()
    status = str(tmp_path / "online-status.json")
    app = applier(setup, stream, eligible, status_file=status)
    app.run(until_lsn=_online.current_lsn(setup.source), timeout=120)
    thread.join(120)
    assert not thread.is_alive() and len(committed) == 400 - 400 // 7
    with open(status, encoding="utf-8") as handle:
        shown = json.load(handle)
    assert {"rows", "rows_per_second", "bytes_behind", "wal_retained_bytes"} <= set(shown)
    result = _online.cut_over(setup.source, setup.target, app, stream, eligible, plan, setup.run_id, journal_db)
    assert result["delta_proof"]["ok"], result["delta_proof"]
    got = ds.execute(pg, setup.carry.target, "SELECT id FROM items WHERE id > 10000 ORDER BY id")
    assert [r[0] for r in got] == sorted(committed)
    final = _data_check.integrity_check(setup.source, setup.target, setup.mapping)
    assert final["ok"], final["mismatches"]
    assert leftovers(pg, setup) == NOTHING_LEFT


def test_a_slot_that_cannot_be_created_leaves_no_publication(pg: t.Any, online: Setup) -> None:
    setup = online
    name = _online.stream_name(setup.run_id)
    # the slot name is taken (say by a killed earlier attempt of the same run): the slot creation fails
    ds.execute(pg, setup.carry.source, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (name,))
    with contextlib.closing(connect(setup.source)) as src, contextlib.closing(connect(setup.target)) as tgt:
        eligible = _online.eligibility(src, _data.prepare_plan(src, tgt, setup.mapping))
    journal_db = "j_" + setup.carry.source
    with pytest.raises(PgShiftError) as err:
        _online.open_stream(setup.source, eligible, setup.run_id, setup.carry.target, journal_db)
    assert "creating replication slot" in err.value.msg
    assert leftovers(pg, setup) == NOTHING_LEFT
    steps = ds.execute(
        pg,
        journal_db,
        "SELECT state FROM pgshift.steps WHERE run_id = %s AND step = %s ORDER BY id",
        (setup.run_id, _online.STEP),
    )
    assert steps == [("started",), ("undone",)]
