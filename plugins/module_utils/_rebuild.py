# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""The Rebuild play's window in one call: block access, rebuild side by side, prove, swap.

The steps are those the play ran as separate tasks, in the same order, each recorded in the run journal as they were
(the same step names, states and details), so that ``rollback`` undoes whatever inner step was reached and a fault
test can stop the run at any of them:

    window started (database-only run)   journal: window started, {from: block_access}
    block_access started                 journal: block_access started, {previous: production's limit}
    block access                         _release.block_access
    block_access done                    journal
    build started                        journal: build started, {database: <prod>__next}
    inputs re-check                      _inputs.verify (the dev schema, migrations and mapping of the plan)
    create                               _release.build_create (tables bare)
    copy                                 _data_copy.copy_data
    post-data                            _release.build_post_data (keys, indexes, FKs validated, triggers, state)
    integrity check                      _data_check.integrity_check
    build done                           journal: build done, {database, total_rows}
    swap                                 _release.swap_release (journal entry in the rename's transaction)
    window done (database-only run)      journal: window done, {to: swap}

What the separate tasks cost in Ansible per-task overhead, this pays once. Before every inner step the run must still
go on: the journal says it runs (not rolled back, not being rolled back), the run lock of production is still held
(its holder lets go when the controller dies, or when an operator ends its session), and the watched controller
process is alive; otherwise the call stops there, and the journal says what to undo. Check mode records nothing (the
journal may not even exist) and returns what each step would do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import typing as t

from ansible_collections.pgshift.ops.plugins.module_utils import _inputs as inputs
from ansible_collections.pgshift.ops.plugins.module_utils import _journal as journal
from ansible_collections.pgshift.ops.plugins.module_utils import _online_fill as online_fill
from ansible_collections.pgshift.ops.plugins.module_utils import _release as release
from ansible_collections.pgshift.ops.plugins.module_utils import _run_lock as run_lock
from ansible_collections.pgshift.ops.plugins.module_utils._connection import (
    ConnParams,
    connect,
    connection_argument_spec,
    endpoint_argument_spec,
)
from ansible_collections.pgshift.ops.plugins.module_utils._data_check import fail_if_not_ok, integrity_check
from ansible_collections.pgshift.ops.plugins.module_utils._data_copy import copy_data
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError

try:
    import psycopg2
except ImportError:  # pragma: no cover - reported by the connection layer
    pass


@dataclasses.dataclass
class RebuildSpec:
    """What the call needs: the production cluster (its maintenance connection), the run, the dev database."""

    cluster: ConnParams
    production_database: str
    run_id: str
    schema_source: ConnParams
    expect_inputs: t.Dict[str, t.Any]
    previous_access: t.Optional[t.Dict[str, t.Any]] = None
    journal_database: str = journal.DEFAULT_JOURNAL_DB
    migrations_dir: t.Optional[str] = None
    mapping_file: t.Optional[str] = None
    workdir: t.Optional[str] = None
    tablespace: t.Optional[str] = None
    jobs: int = 2
    window: bool = False
    retention_keep: int = 2
    swap_timeout: float = 30.0
    access_timeout: float = 30.0
    watch_pid: t.Optional[int] = None
    require_lock: bool = True
    check_mode: bool = False
    log: t.Optional[t.Callable[[str], None]] = None
    # the online release (docs/online.md): the fill ran before the window; the window cuts the stream over
    online: bool = False
    wal_limit_bytes: int = 4096 * 1024 * 1024
    fill_timeout: float = 6 * 3600.0
    max_lag_bytes: int = 16 * 1024 * 1024
    catch_up_timeout: float = 1800.0
    cutover_timeout: float = 120.0


class Journal:
    """One connection to the journal for the whole call. Each entry is committed as it is recorded (a rollback, or a
    test, sees it at once); a lost connection is opened again, waiting for a restarting server as the journal's writes
    always do."""

    def __init__(self, spec: RebuildSpec) -> None:
        self.spec = spec
        self.params = journal.journal_params(spec.cluster, spec.journal_database)
        self.conn: t.Any = None

    def run(self, work: t.Callable[[t.Any], t.Any]) -> t.Any:
        for attempt in (1, 2):
            if self.conn is None or self.conn.closed:
                self.conn = connect(self.params, retry_seconds=journal.RETRY_SECONDS)
            try:
                with self.conn.cursor() as cur:
                    out = work(cur)
                self.conn.commit()
                return out
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                self.close()
                if attempt == 2:
                    raise
            except BaseException:
                if self.conn is not None and not self.conn.closed:
                    self.conn.rollback()
                raise
        return None  # pragma: no cover - the loop returns or raises

    def record(self, step: str, state: str, detail: t.Dict[str, t.Any]) -> t.Optional[float]:
        run_id = self.spec.run_id
        return t.cast(t.Optional[float], self.run(lambda cur: journal.step(cur, run_id, step, state, detail)))

    def goes_on(self, doing: str, journal_checks: bool = True) -> None:
        """Refuse ``doing`` once the run should stop: its controller gone, its run lock let go, or the journal says it
        no longer runs."""
        spec = self.spec
        if spec.watch_pid and not run_lock.process_alive(spec.watch_pid):
            raise PgShiftError(
                "the controller (process %d) is gone: %s refused; this run stops here, and `make rollback` "
                "(playbooks/rollback.yml) puts production back from the journal" % (spec.watch_pid, doing),
                controller_gone=True,
            )

        def check(cur: t.Any) -> None:
            if spec.require_lock and not run_lock.holders(cur, spec.production_database):
                raise PgShiftError(
                    "the run lock of %r is no longer held (its holder let go: the controller died, or its session was "
                    "ended): %s refused; this run stops here, and `make rollback` (playbooks/rollback.yml) puts "
                    "production back from the journal" % (spec.production_database, doing),
                    lock_lost=True,
                )
            if journal_checks:
                journal.assert_running(cur, spec.run_id, doing)

        if spec.require_lock or journal_checks:
            self.run(check)

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None


class Steps:
    """Runs the inner steps in order, timing each; a failing step raises PgShiftError naming it, with the steps
    so far."""

    def __init__(self, spec: RebuildSpec, book: t.Optional[Journal]) -> None:
        self.spec = spec
        self.book = book
        self.done: t.List[t.Dict[str, t.Any]] = []
        self.started = time.monotonic()

    def run(self, name: str, work: t.Callable[[], t.Any], journal_entry: bool = False) -> t.Any:
        began = time.monotonic()
        try:
            if self.book is not None:
                # a journal entry checks the run itself (journal.step): here only the controller and the lock
                self.book.goes_on("step %r of the rebuild" % name, journal_checks=not journal_entry)
            out = work()
        except PgShiftError as exc:
            self._note(name, began, "failed")
            raise PgShiftError(
                "%s failed: %s" % (name, exc.msg), sqlstate=exc.sqlstate, **self._failure(name, exc.details)
            ) from None
        except Exception as exc:  # noqa: BLE001 - every failure names its step, for the rescue and the operator
            self._note(name, began, "failed")
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise PgShiftError(
                "%s failed: %s%s" % (name, type(exc).__name__, ": " + text if text else ""), **self._failure(name, {})
            ) from None
        self._note(name, began, "planned" if self.spec.check_mode else "done")
        return out

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def skip(self, name: str, why: str) -> None:
        self.done.append({"name": name, "state": "skipped", "seconds": 0.0, "why": why})

    def _note(self, name: str, began: float, state: str) -> None:
        self.done.append({"name": name, "state": state, "seconds": round(time.monotonic() - began, 3)})

    def _failure(self, name: str, details: t.Mapping[str, t.Any]) -> t.Dict[str, t.Any]:
        out = dict(details)
        out.update(failed_step=name, steps=list(self.done), seconds=round(time.monotonic() - self.started, 3))
        return out


def rebuild_and_swap(spec: RebuildSpec) -> t.Dict[str, t.Any]:
    """Every step of the window, in order (see the module's docstring); returns what each step returned."""
    prod = spec.production_database
    nxt = release.next_name(prod)
    source = spec.cluster.with_database(prod)
    book: t.Optional[Journal] = None
    if not spec.check_mode:
        journal.ensure_journal(spec.cluster, spec.journal_database, retry_seconds=journal.RETRY_SECONDS)
        book = Journal(spec)
    steps = Steps(spec, book)
    result: t.Dict[str, t.Any] = {"run_id": spec.run_id, "database": nxt}
    previous = spec.previous_access if spec.previous_access is not None else _current_access(spec.cluster, prod)

    def entry(name: str, step: str, state: str, detail: t.Dict[str, t.Any]) -> t.Optional[float]:
        if book is None:
            steps.run(name, lambda: None, journal_entry=True)
            return None
        return t.cast(t.Optional[float], steps.run(name, lambda: book.record(step, state, detail), journal_entry=True))

    fill: t.Dict[str, t.Any] = {}
    try:
        if spec.online and book is not None:
            # before anything is blocked: the fill ran and its stream still follows production
            fill = steps.run("fill record", lambda: online_fill.fill_record(book, spec.run_id))
        if spec.window:
            entry("window started", journal.WINDOW_STEP, "started", {"from": "block_access"})
        entry("block_access started", "block_access", "started", {"previous": previous})
        access = steps.run(
            "block access",
            # the previous access (method, CONNECT grants) is in the journal entry just above
            lambda: release.block_access(spec.cluster, prod, spec.check_mode, spec.access_timeout),
        )
        access["diff"] = release.block_access_diff(prod, access)
        result["access"] = access
        entry("block_access done", "block_access", "done", {})
        if spec.online:
            _online_window(spec, steps, book, result, fill)
        else:
            _offline_build(spec, steps, entry, result, source)
        entry("build done", "build", "done", {"database": nxt, "total_rows": result["copy"].get("total_rows", 0)})
        connlimit = int(access["previous"].get("connlimit", -1))
        result["swap"] = steps.run(
            "swap",
            lambda: release.swap_release(
                spec.cluster,
                prod,
                spec.run_id,
                connlimit,
                spec.journal_database,
                spec.check_mode,
                spec.swap_timeout,
                spec.mapping_file,
                True,
                spec.retention_keep,
            ),
        )
        result["window_seconds"] = None
        if spec.window:
            result["window_seconds"] = entry("window done", journal.WINDOW_STEP, "done", {"to": "swap"})
    finally:
        if book is not None:
            book.close()
    result.update(
        changed=True,
        steps=steps.done,
        seconds=round(time.monotonic() - steps.started, 3),
        total_rows=result["copy"].get("total_rows", 0),
        diff={
            "before": result["access"]["diff"]["before"] + result["build"]["diff"]["before"],
            "after": result["access"]["diff"]["after"]
            + result["build"]["diff"]["after"]
            + result["swap"]["diff"]["after"],
        },
    )
    return result


def _current_access(cluster: ConnParams, prod: str) -> t.Dict[str, t.Any]:
    conn = release.admin(cluster)
    try:
        with conn.cursor() as cur:
            info = release.database_info(cur, prod)
            if info is None:
                raise PgShiftError("database %r does not exist on %s" % (prod, cluster.describe()))
            return release.access_state(cur, prod, info)
    finally:
        conn.close()


def _prove(spec: RebuildSpec, source: ConnParams, target: ConnParams) -> t.Dict[str, t.Any]:
    proof = integrity_check(source, target, spec.mapping_file, jobs=spec.jobs, ledger_from=spec.schema_source)
    fail_if_not_ok(proof)
    return proof


def _offline_build(
    spec: RebuildSpec, steps: Steps, entry: t.Callable[..., t.Any], result: t.Dict[str, t.Any], source: ConnParams
) -> None:
    """The offline build, applications blocked: create, copy, post-data, proof."""
    prod = spec.production_database
    nxt = release.next_name(prod)
    entry("build started", "build", "started", {"database": nxt})
    build = _inputs_and_create(spec, steps, result)
    result["build"] = build
    # check mode built nothing: the plan of the copy is made against the dev database, whose schema it would get
    target = spec.schema_source if spec.check_mode else spec.cluster.with_database(nxt)
    copied = steps.run(
        "copy",
        lambda: copy_data(
            source,
            target,
            spec.mapping_file,
            jobs=spec.jobs,
            ledger_from=spec.schema_source,
            check_mode=spec.check_mode,
            log=spec.log,
            # indexes and constraints built as each table is in (post-data then does only what is left)
            archive=None if spec.check_mode else build.get("archive"),
            min_client_major=int(build.get("client_major", 0)),
            schema_source=spec.schema_source,
        ),
    )
    result["copy"] = copied
    result["post_data"] = steps.run(
        "post-data",
        lambda: release.build_post_data(
            spec.cluster,
            prod,
            build.get("archive", "check-mode"),
            int(build.get("client_major", 0)),
            spec.check_mode,
        ),
    )
    if spec.check_mode:
        steps.skip("integrity check", "check mode: the new database is not built")
        result["integrity"] = {"skipped": True, "msg": "check mode: the new database is not built"}
    else:
        result["integrity"] = steps.run("integrity check", lambda: _prove(spec, source, target))


def _online_window(
    spec: RebuildSpec, steps: Steps, book: t.Optional[Journal], result: t.Dict[str, t.Any], fill: t.Dict[str, t.Any]
) -> None:
    """The online window, applications blocked: the fill ran before it with production live (``_online_fill``);
    here the stream is cut over (catch-up, sequences, delta proof), the tables it could not carry and the large
    objects are copied again, and those are proven."""
    result["inputs"] = steps.run(
        "inputs re-check",
        lambda: inputs.verify(spec.schema_source, spec.migrations_dir, spec.mapping_file, spec.expect_inputs),
    )
    empty_diff = {"before": "", "after": ""}
    if spec.check_mode or book is None:
        for name in ("online cut-over", "window tables", "integrity check"):
            steps.skip(name, "check mode: the online fill did not run")
        result["build"] = {"diff": empty_diff, "database": release.next_name(spec.production_database)}
        result["copy"] = {"total_rows": 0}
        result["post_data"] = {}
        result["integrity"] = {"skipped": True, "msg": "check mode: the new database is not built"}
        return
    result["build"] = {
        "diff": {
            "before": "",
            "after": "%s: built and filled online, production live\n" % release.next_name(spec.production_database),
        },
        "database": release.next_name(spec.production_database),
        "online": True,
    }
    result["copy"] = fill.get("copy") or {"total_rows": 0}
    result["post_data"] = fill.get("post_data") or {}
    cut = steps.run("online cut-over", lambda: online_fill.window_cut_over(spec, book, fill))
    plan, eligible = cut.pop("plan"), cut.pop("eligible")
    result["online"] = {
        "cut_over": {k: v for k, v in cut.items() if k != "delta_proof"},
        "eligibility": eligible.describe(),
    }
    result["online"]["window_tables"] = steps.run(
        "window tables",
        lambda: online_fill.copy_window_tables(
            spec.cluster.with_database(spec.production_database),
            spec.cluster.with_database(release.next_name(spec.production_database)),
            plan,
            eligible,
            spec.log,
        ),
    )
    result["integrity"] = steps.run("integrity check", lambda: online_fill.window_proof(spec, fill, cut, eligible))


def _inputs_and_create(spec: RebuildSpec, steps: Steps, result: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
    """The inputs checked again, then ``<prod>__next`` created with dev's pre-data (tables bare)."""
    result["inputs"] = steps.run(
        "inputs re-check",
        lambda: inputs.verify(spec.schema_source, spec.migrations_dir, spec.mapping_file, spec.expect_inputs),
    )
    return t.cast(
        t.Dict[str, t.Any],
        steps.run(
            "create",
            lambda: release.build_create(
                spec.cluster,
                spec.production_database,
                spec.schema_source,
                spec.workdir,
                spec.tablespace,
                spec.run_id,
                spec.check_mode,
            ),
        ),
    )


def fill(spec: RebuildSpec) -> t.Dict[str, t.Any]:
    """The online release's fill, production live (module ``online_fill``, see ``_online_fill``): ``build started``,
    the inputs re-checked, ``<prod>__next`` created with dev's pre-data, then the stream holder started and its bulk
    part awaited. Check mode creates, starts and records nothing."""
    book: t.Optional[Journal] = None
    if not spec.check_mode:
        journal.ensure_journal(spec.cluster, spec.journal_database, retry_seconds=journal.RETRY_SECONDS)
        book = Journal(spec)
    steps = Steps(spec, book)
    result: t.Dict[str, t.Any] = {"run_id": spec.run_id, "database": release.next_name(spec.production_database)}
    try:
        if book is None:
            steps.run("build started", lambda: None, journal_entry=True)
        else:
            steps.run(
                "build started",
                lambda: book.record("build", "started", {"database": result["database"]}),
                journal_entry=True,
            )
        build = _inputs_and_create(spec, steps, result)
        result["build"] = {k: v for k, v in build.items() if k != "archive"}
        if spec.check_mode or book is None:
            for name in (
                "start the stream holder",
                "bulk copy, post-data and proof in the stream's snapshot",
                "stream caught up",
            ):
                steps.skip(name, "check mode: nothing is started")
        else:
            result.update(online_fill.hold(spec, book, steps, build))
    finally:
        if book is not None:
            book.close()
    result.update(steps=steps.done, seconds=round(steps.elapsed(), 3), changed=True, diff=build["diff"])
    return result


def argument_spec() -> t.Dict[str, t.Any]:
    """The options ``rebuild_swap`` and ``online_fill`` share (the production cluster's connection included)."""
    spec = connection_argument_spec()
    spec.update(
        production_database=dict(type="str", required=True),
        run_id=dict(type="str", required=True),
        journal_database=dict(type="str", default=journal.DEFAULT_JOURNAL_DB),
        schema_source=endpoint_argument_spec(required=False),
        expect_inputs=dict(type="dict", required=True),
        migrations_dir=dict(type="path"),
        mapping_file=dict(type="path"),
        workdir=dict(type="path"),
        tablespace=dict(type="str"),
        jobs=dict(type="int", default=2),
        watch_pid=dict(type="int"),
        require_lock=dict(type="bool", default=True),
    )
    return spec


def spec_from(
    params: t.Mapping[str, t.Any], check_mode: bool, log: t.Callable[[str], None], **extra: t.Any
) -> RebuildSpec:
    """A RebuildSpec from the shared options (:func:`argument_spec`) and the module's own (``extra``)."""
    if not params["schema_source"]:
        raise PgShiftError("schema_source is required: the dev database whose schema production gets")
    return RebuildSpec(
        cluster=ConnParams.from_params(params),
        production_database=params["production_database"],
        run_id=params["run_id"],
        schema_source=ConnParams.from_params(params["schema_source"]),
        expect_inputs=params["expect_inputs"],
        journal_database=params["journal_database"],
        migrations_dir=params["migrations_dir"],
        mapping_file=params["mapping_file"],
        workdir=params["workdir"],
        tablespace=params["tablespace"],
        jobs=params["jobs"],
        watch_pid=params["watch_pid"],
        require_lock=params["require_lock"],
        check_mode=check_mode,
        log=log,
        **extra,
    )
