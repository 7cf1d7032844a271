"""The build's work folders (pgshift-build-*) go with their run: run_journal finish and rollback, given the work
folder, remove those of finished runs and keep those of unfinished ones; real journal, real modules."""

from __future__ import annotations

import contextlib
import os
import typing as t

from psycopg2 import sql

JOURNAL = "wf_journal"


def _folder(base: str, name: str) -> str:
    path = os.path.join(base, name)
    os.makedirs(path, mode=0o700)
    with open(os.path.join(path, "dev-schema.dump"), "w") as handle:
        handle.write("an archive left behind\n")
    return path


def test_finish_and_rollback_remove_the_work_folders_of_finished_runs(
    pg: t.Any, run_module: t.Any, tmp_path: t.Any
) -> None:
    with contextlib.closing(pg.connect()) as conn, conn.cursor() as cur:
        conn.autocommit = True
        for name in (JOURNAL, "wf_two"):
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        cur.execute("CREATE DATABASE wf_two")  # the rollback of its run checks that production is there
    conn_args = dict(pg.conn("postgres"), journal_database=JOURNAL)

    def journal(**args: t.Any) -> t.Dict[str, t.Any]:
        run = run_module("run_journal", dict(conn_args, **args))
        assert not run.failed, run.output
        return run.result

    base = str(tmp_path / "work")
    os.makedirs(base)
    first = journal(action="start", production_database="wf_one")["run_id"]
    # a second database's run, unfinished: its folder must survive everything below
    other = journal(action="start", production_database="wf_two")["run_id"]
    mine = _folder(base, "pgshift-build-%s-a1b2" % first)
    theirs = _folder(base, "pgshift-build-%s-c3d4" % other)
    stale = _folder(base, "pgshift-build-20200101T000000Z-abcdef-e5f6")  # a run the journal no longer has open
    legacy = _folder(base, "pgshift-build-x7y8z9")  # an older pgshift's folder: its run is unknown
    unrelated = _folder(base, "notes")
    with open(os.path.join(base, "pgshift-build-a-file"), "w") as handle:
        handle.write("not a folder\n")

    done = journal(action="finish", production_database="wf_one", run_id=first, status="succeeded", workdir=base)
    assert sorted(done["workdirs_removed"]) == sorted([mine, stale])
    assert not os.path.exists(mine) and not os.path.exists(stale)
    # a run is still open: the folder it may own (unknown owner) and its own stay
    assert os.path.isdir(theirs) and os.path.isdir(legacy) and os.path.isdir(unrelated)

    planned = run_module(
        "rollback", dict(conn_args, production_database="wf_two", run_id=other, workdir=base), check=True
    )
    assert not planned.failed, planned.output
    assert planned.result["workdirs_removed"] == [], "in check mode the run is still open: nothing to remove"
    rolled = run_module("rollback", dict(conn_args, production_database="wf_two", run_id=other, workdir=base))
    assert not rolled.failed, rolled.output
    assert sorted(rolled.result["workdirs_removed"]) == sorted([theirs, legacy])
    assert sorted(os.listdir(base)) == ["notes", "pgshift-build-a-file"]
    with contextlib.closing(pg.connect(JOURNAL)) as conn, conn.cursor() as cur:
        cur.execute("SELECT run_id, status FROM pgshift.runs ORDER BY run_id")
        assert dict(cur.fetchall()) == {first: "succeeded", other: "rolled_back"}
    with contextlib.closing(pg.connect()) as conn, conn.cursor() as cur:
        conn.autocommit = True
        for name in (JOURNAL, "wf_two"):
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
