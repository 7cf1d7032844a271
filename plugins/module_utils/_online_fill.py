# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""The online release around the change stream (``_online``): the fill while production serves, and the window's
part of it.

**Fill** (``_rebuild.fill`` and :func:`hold`, module ``online_fill``, before maintenance): ``build started`` in the
journal, the inputs re-checked, ``<prod>__next`` created with the dev schema's pre-data, then a detached **stream
holder** process on the database host (a module's process ends with its task; the stream must outlive it). The
holder records ``online_fill started`` (its pid), opens the stream (``_online.open_stream``: journal first,
publication, slot with its exported snapshot), reads production's schema hash inside that snapshot, copies the data
in it (``copy_data(snapshot=...)``, indexes built as tables load), restores the rest of post-data, proves the bulk
part against the same snapshot (``integrity_check(snapshot=...)``) and records ``online_fill done``. Then it applies
the stream continuously until the window asks for the cut-over, and records ``online_follow done``. The module
returns once ``online_fill`` is done (or fails with the holder's error).

A watchdog thread of the holder checks four times a second that the run goes on: the journal says it runs (not rolled
back), the run lock is held (its holder lets go when the controller dies), the watched controller lives, the slot
exists and retains less WAL than the limit. Otherwise it records why (``online_fill``/``online_follow`` failed),
drops the slot, the publication and the origin, and ends the holder's process group: a stream never outlives its
run, and production's disk is never put at risk by it. The rollback drops whatever the journal recorded in any case.

**Window** (:func:`window_steps`, called by ``_rebuild`` with ``online``): applications blocked, it writes
``online_cutover started`` (the request), waits until the holder has stopped applying (or is gone: the slot keeps
every change it did not confirm), refuses when production's schema changed since the snapshot (DDL during the
fill), then applies the rest of the stream in its own process (``_online.cut_over``: catch-up to production's final
position, sequences, delta proof, slot/publication/origin dropped); then copies the tables the stream could not
carry and the large objects again, production being closed, and proves them (``integrity_check(only_tables=...)``,
which also proves large objects, constraints, sequences and database state).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sys
import threading
import time
import typing as t

from ansible_collections.pgshift.ops.plugins.module_utils import _data, _ext_config, _online
from ansible_collections.pgshift.ops.plugins.module_utils import _journal as journal
from ansible_collections.pgshift.ops.plugins.module_utils import _release as release
from ansible_collections.pgshift.ops.plugins.module_utils import _run_lock as run_lock
from ansible_collections.pgshift.ops.plugins.module_utils import _schema as schema
from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, connect
from ansible_collections.pgshift.ops.plugins.module_utils._data_check import fail_if_not_ok, integrity_check
from ansible_collections.pgshift.ops.plugins.module_utils._data_copy import (
    CopyJob,
    copy_data,
    export_snapshot,
    find_client,
    run_large_objects,
    run_pipeline,
    server_major,
)
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # pragma: no cover - reported by the connection layer
    pass

FILL_STEP = "online_fill"
FOLLOW_STEP = "online_follow"
CUTOVER_STEP = "online_cutover"
DEFAULT_WAL_LIMIT_BYTES = 4096 * 1024 * 1024
# how long the main thread waits for the watchdog's drop of the stream (drop_stream waits 30 s for a WAL sender, the
# journal's connections wait for a restarting server)
ABORT_WAIT_SECONDS = 300.0
LogFn = t.Callable[[str], None]

_BOOT = (
    "import sys\n"
    "sys.path.insert(0, sys.argv[1])\n"
    "from ansible_collections.pgshift.ops.plugins.module_utils import _online_fill\n"
    "_online_fill.holder_main()\n"
)


# ------------------------------------------------------------------------------------------------ parameters
def params_doc(params: ConnParams) -> t.Dict[str, t.Any]:
    doc = dataclasses.asdict(params)
    doc["connect_params"] = [list(p) for p in params.connect_params]
    return doc


def params_from(doc: t.Mapping[str, t.Any]) -> ConnParams:
    values = dict(doc)
    values["connect_params"] = tuple(tuple(p) for p in values.get("connect_params") or ())
    return ConnParams(**values)


def schema_hash(conn: t.Any) -> str:
    """Production's schema (owners and grants included) as one hash, read in the caller's open transaction (the
    exported snapshot) or in one of its own."""
    return schema.snapshot_hash(schema.take_snapshot(conn, with_owners=True, with_grants=True))


def _payload_root() -> str:
    """Where ``ansible_collections`` is imported from: a folder, or the module's AnsiballZ zip (removed when the
    module exits, so the holder gets a private copy)."""
    here = os.path.abspath(__file__)
    marker = os.sep + "ansible_collections" + os.sep
    return here[: here.rindex(marker)]


# ------------------------------------------------------------------------------------------------ the holder
class _Holder:
    """The detached process: fill, then follow until the cut-over request (see the module's docstring)."""

    def __init__(self, cfg: t.Dict[str, t.Any]) -> None:
        self.cfg = cfg
        self.cluster = params_from(cfg["cluster"])
        self.prod = cfg["production_database"]
        self.nxt = release.next_name(self.prod)
        self.source = self.cluster.with_database(self.prod)
        self.target = self.cluster.with_database(self.nxt)
        self.dev = params_from(cfg["schema_source"])
        self.run_id = cfg["run_id"]
        self.journal_db = cfg["journal_database"]
        self.name = _online.stream_name(self.run_id)
        self.phase = FILL_STEP
        self.stream: t.Optional[_online.Stream] = None
        self.cutover = threading.Event()
        self.lock = threading.Lock()
        self.finished = False
        # set once the watchdog's abort has dropped the stream (it then ends the process group): the main thread,
        # whose apply fails as soon as that drop ends its WAL sender, must not exit the process before (the
        # interpreter would kill the watchdog, a daemon thread, in the middle of the drop)
        self.aborted = threading.Event()
        self.jconn: t.Any = None
        self.last_lag = 0.0
        self.unreachable_since: t.Optional[float] = None

    def log(self, msg: str) -> None:
        sys.stdout.write("%s %s\n" % (time.strftime("%H:%M:%S"), msg))
        sys.stdout.flush()

    def record(self, step: str, state: str, detail: t.Dict[str, t.Any], checked: bool = True) -> None:
        conn = connect(journal.journal_params(self.cluster, self.journal_db), retry_seconds=journal.RETRY_SECONDS)
        try:
            with conn.cursor() as cur:
                if checked:
                    journal.step(cur, self.run_id, step, state, detail)
                else:
                    journal.record_step(cur, self.run_id, step, state, detail)
            conn.commit()
        finally:
            conn.close()

    # -- the watchdog
    def _check(self) -> t.Optional[str]:
        cfg = self.cfg
        if cfg.get("watch_pid") and not run_lock.process_alive(int(cfg["watch_pid"])):
            return "the controller (process %s) is gone" % cfg["watch_pid"]
        if self.jconn is None or self.jconn.closed:
            self.jconn = connect(journal.journal_params(self.cluster, self.journal_db), autocommit=True)
        with self.jconn.cursor() as cur:
            try:
                journal.assert_running(cur, self.run_id, "the change stream")
            except PgShiftError as exc:
                return exc.msg
            if cfg.get("require_lock", True) and not run_lock.holders(cur, self.prod):
                return "the run lock of %r is no longer held (the controller died, or its session was ended)" % (
                    self.prod
                )
            cur.execute(
                "SELECT 1 FROM pgshift.steps WHERE run_id = %s AND step = %s AND state = 'started'",
                (self.run_id, CUTOVER_STEP),
            )
            if cur.fetchone():
                return "cutover"
        if self.stream is not None and time.monotonic() - self.last_lag >= 2.0:
            self.last_lag = time.monotonic()
            try:
                lag = _online.lag(self.source, self.name)
            except PgShiftError as exc:
                return exc.msg
            limit = int(cfg.get("wal_limit_bytes") or 0)
            if lag["wal_status"] == "lost":
                return "replication slot %s lost the WAL it needed (max_slot_wal_keep_size)" % self.name
            if limit and lag["wal_retained_bytes"] > limit:
                return (
                    "the slot retains %.1f MB of production's WAL, over the limit of %.1f MB "
                    "(pgshift_online_wal_limit_mb): the stream was dropped before production's disk is at risk; "
                    "release offline "
                    "(pgshift_mode=offline) or with a higher limit"
                    % (lag["wal_retained_bytes"] / 1048576.0, limit / 1048576.0)
                )
        return None

    def watchdog(self) -> None:
        while True:
            time.sleep(0.25)  # the window waits for the cut-over request to be seen: keep that short
            try:
                reason = self._check()
                self.unreachable_since = None
            except (psycopg2.Error, PgShiftError) as exc:
                # a restarting server: wait for it (as the journal's writes do), then give up
                with contextlib.suppress(Exception):
                    self.jconn.close()
                self.jconn = None
                self.unreachable_since = self.unreachable_since or time.monotonic()
                if time.monotonic() - self.unreachable_since < journal.RETRY_SECONDS:
                    continue
                reason = "the journal could not be read for %d s: %s" % (journal.RETRY_SECONDS, exc)
            if reason == "cutover":
                self.cutover.set()
            elif reason:
                self.abort(reason)

    def _finish(self) -> bool:
        """The first of the main thread and the watchdog to end the holder says so; the other then leaves it be."""
        with self.lock:
            first = not self.finished
            self.finished = True
        return first

    def abort(self, reason: str) -> None:
        if not self._finish():
            return
        self.log("stopping: " + reason)
        with contextlib.suppress(Exception):
            self.record(self.phase, "failed", {"error": reason}, checked=False)
        try:
            self.cleanup()
        finally:
            self.aborted.set()
        # the copy's psql processes and worker threads end with the process group (the holder leads its session)
        os.killpg(os.getpgid(0), signal.SIGKILL)

    def slot_gone(self) -> bool:
        """The stream's slot is known not to exist (False when that cannot be read)."""
        with contextlib.suppress(Exception):
            with contextlib.closing(connect(self.source, application_name="pgshift online")) as conn:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (self.name,))
                    return cur.fetchone() is None
        return False

    def wait_abort(self) -> int:
        """The watchdog stops the holder: let its drop of the stream finish (its abort then ends the process)."""
        self.aborted.wait(ABORT_WAIT_SECONDS)
        return 1

    def cleanup(self) -> None:
        try:
            dropped = _online.drop_stream(self.source, self.prod, self.name, self.nxt)
            _online.record(self.cluster, self.journal_db, self.run_id, "undone", {"dropped": dropped})
            self.log("dropped %s" % ", ".join(dropped))
        except Exception as exc:  # noqa: BLE001 - the rollback drops it from the journal's record
            self.log("could not drop the stream: %s" % exc)

    # -- the work
    def fill(self) -> t.Tuple[_online.Eligibility, t.Dict[str, t.Any]]:
        cfg = self.cfg
        began = time.monotonic()
        with contextlib.ExitStack() as stack:
            src = stack.enter_context(contextlib.closing(connect(self.source, application_name="pgshift online")))
            tgt = stack.enter_context(contextlib.closing(connect(self.target, application_name="pgshift online")))
            led = stack.enter_context(contextlib.closing(connect(self.dev, application_name="pgshift online")))
            plan = _data.prepare_plan(src, tgt, cfg.get("mapping_file"), _data.DEFAULT_LEDGER_TABLES, led)
            eligible = _online.eligibility(src, plan)
        self.log("streamed: %s; in the window: %s" % (len(eligible.streamed), sorted(eligible.in_window)))
        self.stream = _online.open_stream(self.source, eligible, self.run_id, self.nxt, self.journal_db)
        snapshot = self.stream.snapshot
        with contextlib.closing(connect(self.source, application_name="pgshift online schema")) as conn:
            with conn.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))
            hashed = schema_hash(conn)
            conn.rollback()
        copied = copy_data(
            self.source,
            self.target,
            cfg.get("mapping_file"),
            jobs=int(cfg.get("jobs") or 2),
            ledger_from=self.dev,
            snapshot=snapshot,
            log=self.log,
            archive=cfg["archive"],
            min_client_major=int(cfg.get("client_major") or 0),
            schema_source=self.dev,
        )
        post = release.build_post_data(self.cluster, self.prod, cfg["archive"], int(cfg.get("client_major") or 0))
        proof = integrity_check(
            self.source,
            self.target,
            cfg.get("mapping_file"),
            jobs=int(cfg.get("jobs") or 2),
            ledger_from=self.dev,
            snapshot=snapshot,
        )
        fail_if_not_ok(proof)
        detail = {
            "eligibility": eligible.describe(),
            "schema_hash": hashed,
            "stream": self.stream.describe(),
            "copy": _trim_copy(copied),
            "post_data": {k: v for k, v in post.items() if k != "diff"},
            "integrity": _trim_proof(proof),
            "seconds": round(time.monotonic() - began, 3),
        }
        return eligible, detail

    def follow(self, stream: _online.Stream, eligible: _online.Eligibility) -> t.Dict[str, t.Any]:
        """Apply the stream until the cut-over is requested. A lost connection (production's WAL sender or the apply
        session ended, a restarting server) is opened again and the stream resumed from the slot: the replication
        origin's position makes the resumed apply skip what was already committed. A failure that persists ends it."""
        total: t.Dict[str, t.Any] = {"rows": {}, "transactions": 0, "skipped_transactions": 0, "reconnects": 0}
        conn = stream.conn
        failures: t.List[str] = []
        while True:
            applier = None
            try:
                if conn is None:
                    conn = _online.replication_connect(self.source)
                with self.lock:
                    # the watchdog may have stopped the run meanwhile: then nothing more is made (the journal's
                    # failure stands, _states); otherwise its abort waits for the apply's replication origin to
                    # exist, and drops it with the rest
                    if self.finished:
                        raise _Stopped()
                    applier = _online.Applier(
                        conn,
                        stream.slot,
                        stream.publication,
                        stream.origin,
                        self.source,
                        self.target,
                        eligible,
                        log=self.log,
                        status_file=self.cfg.get("status_file"),
                    )
                part = applier.run(stop=self.cutover.is_set)
                _add(total, part)
                total["applied_lsn"] = part.get("applied_lsn") or total.get("applied_lsn")
                return total
            except (psycopg2.Error, PgShiftError) as exc:
                text = str(getattr(exc, "msg", None) or exc).strip().splitlines()
                failures.append(text[0] if text else type(exc).__name__)
                if applier is not None:
                    _add(total, applier.status())
                if self.finished:
                    raise _Stopped() from None  # the watchdog's abort (it dropped the slot, ending this stream)
                if self.cutover.is_set() or len(failures) > RECONNECTS:
                    raise PgShiftError(
                        "the change stream failed %d times: %s" % (len(failures), "; ".join(failures[-3:]))
                    ) from None
                total["reconnects"] += 1
                self.log("the stream was interrupted (%s): resuming from the slot" % failures[-1])
                time.sleep(1.0)
            finally:
                if applier is not None:
                    applier.close()
                with contextlib.suppress(Exception):
                    conn.close()
                conn = None

    def run(self) -> int:
        threading.Thread(target=self.watchdog, name="watchdog", daemon=True).start()
        try:
            self.record(FILL_STEP, "started", {"pid": os.getpid()})
            eligible, detail = self.fill()
            stream = t.cast(_online.Stream, self.stream)
            self.record(FILL_STEP, "done", detail)
            self.log("bulk part done and proven in %.1f s; following the stream" % detail["seconds"])
            self.phase = FOLLOW_STEP
            status = self.follow(stream, eligible)
            if not self._finish():
                return self.wait_abort()
            self.record(FOLLOW_STEP, "done", {"applied": status}, checked=False)
            self.log("stopped for the cut-over: %s" % json.dumps(status))
            return 0
        except BaseException as exc:  # noqa: BLE001 - every failure is recorded and the stream dropped
            if not self._finish():
                return self.wait_abort()
            text = getattr(exc, "msg", None) or ("%s: %s" % (type(exc).__name__, str(exc).strip()))
            if self.stream is not None and self.slot_gone():
                # dropping a slot in use ends its WAL sender first: the apply only sees its connection end
                text = "replication slot %s no longer exists (dropped by someone else?); %s" % (self.name, text)
            self.log("failed: %s" % text)
            with contextlib.suppress(Exception):
                self.record(self.phase, "failed", {"error": text}, checked=False)
            self.cleanup()
            return 1


RECONNECTS = 5


class _Stopped(Exception):
    """The watchdog is stopping the holder: the main thread makes nothing more and waits for its clean-up."""


def _add(total: t.Dict[str, t.Any], part: t.Mapping[str, t.Any]) -> None:
    for kind, count in (part.get("rows") or {}).items():
        total["rows"][kind] = total["rows"].get(kind, 0) + int(count)
    total["transactions"] += int(part.get("transactions") or 0)
    total["skipped_transactions"] += int(part.get("skipped_transactions") or 0)


def holder_main() -> None:
    cfg = json.loads(sys.stdin.read())
    sys.stdin.close()
    raise SystemExit(_Holder(cfg).run())


def _trim_copy(copied: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
    keep = ("jobs", "total_rows", "total_bytes", "seconds", "not_copied", "large_objects", "sequences", "notes")
    out = {k: copied.get(k) for k in keep if k in copied}
    out["tables"] = {
        k: {"rows": v.get("rows"), "bytes": v.get("bytes"), "seconds": v.get("seconds"), "format": v.get("format")}
        for k, v in copied["tables"].items()
    }
    return out


def _trim_proof(proof: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
    drop = ("large_objects",)
    out = {k: v for k, v in proof.items() if k not in drop}
    out["large_objects_match"] = bool((proof.get("large_objects") or {}).get("match", True))
    return out


# ------------------------------------------------------------------------------------------------ the fill (module)
def spawn_holder(cfg: t.Dict[str, t.Any], folder: str) -> int:
    """Start the detached holder with ``cfg`` on its standard input (passwords never in argv or its environment)."""
    root = _payload_root()
    if os.path.isfile(root):  # the module's zip: removed when the module exits
        copy = os.path.join(folder, "payload.zip")
        shutil.copyfile(root, copy)
        os.chmod(copy, 0o600)
        root = copy
    proc = run_lock.spawn_detached(
        [sys.executable, "-c", _BOOT, root], cfg, os.path.join(folder, "holder.log"), "change stream holder"
    )
    return proc.pid


def holder_log_tail(folder: str, lines: int = 8) -> str:
    with contextlib.suppress(OSError):
        with open(os.path.join(folder, "holder.log"), encoding="utf-8", errors="replace") as handle:
            return " | ".join(line.strip() for line in handle.readlines()[-lines:] if line.strip())
    return ""


def _states(book: t.Any, run_id: str) -> t.Dict[str, t.Dict[str, t.Any]]:
    def read(cur: t.Any) -> t.Dict[str, t.Dict[str, t.Any]]:
        run = journal.get_run(cur, run_id) or {}
        out: t.Dict[str, t.Dict[str, t.Any]] = {}
        for entry in run.get("steps", []):
            # the latest entry of each step, but a failure stands: the holder never goes on after one (an entry its
            # main thread was writing when the watchdog stopped the run may come after it)
            if (out.get(entry["step"]) or {}).get("state") != "failed":
                out[entry["step"]] = {"state": entry["state"], "detail": entry["detail"] or {}}
        return out

    return t.cast(t.Dict[str, t.Dict[str, t.Any]], book.run(read))


def wait_fill(book: t.Any, run_id: str, pid: int, folder: str, timeout: float) -> t.Dict[str, t.Any]:
    """Until the holder recorded ``online_fill done`` (its detail), or raise with its error."""
    deadline = time.monotonic() + timeout
    while True:
        states = _states(book, run_id)
        fill = states.get(FILL_STEP)
        if fill and fill["state"] == "done":
            return t.cast(t.Dict[str, t.Any], fill["detail"])
        if fill and fill["state"] == "failed":
            raise PgShiftError("the fill failed: %s" % fill["detail"].get("error"), holder_log=holder_log_tail(folder))
        if not run_lock.process_alive(pid):
            time.sleep(0.5)  # its last journal entry may be on its way
            again = _states(book, run_id).get(FILL_STEP)
            if again and again["state"] in ("done", "failed"):
                continue
            raise PgShiftError(
                "the change stream holder (process %d) ended before the fill was done: %s"
                % (pid, holder_log_tail(folder) or "no log")
            )
        if time.monotonic() > deadline:
            raise PgShiftError("the fill did not finish within %.0f s (online_fill's fill_timeout)" % timeout)
        time.sleep(0.5)


def hold(spec: t.Any, book: t.Any, steps: t.Any, build: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
    """The fill's second half, once ``<prod>__next`` has dev's pre-data (``_rebuild.fill``): the holder started, and
    its ``online_fill`` record awaited. ``spec`` is a ``_rebuild.RebuildSpec``."""
    folder = os.path.join(os.path.dirname(build["archive"]), "online")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    cfg = {
        "cluster": params_doc(spec.cluster),
        "production_database": spec.production_database,
        "schema_source": params_doc(spec.schema_source),
        "run_id": spec.run_id,
        "journal_database": spec.journal_database,
        "mapping_file": spec.mapping_file,
        "jobs": spec.jobs,
        "archive": build["archive"],
        "client_major": build.get("client_major", 0),
        "status_file": os.path.join(folder, "status.json"),
        "watch_pid": spec.watch_pid,
        "require_lock": spec.require_lock,
        "wal_limit_bytes": spec.wal_limit_bytes,
    }
    pid = steps.run("start the stream holder", lambda: spawn_holder(cfg, folder))
    result: t.Dict[str, t.Any] = {"holder": {"pid": pid, "folder": folder, "status_file": cfg["status_file"]}}
    result.update(
        steps.run(
            "bulk copy, post-data and proof in the stream's snapshot",
            lambda: wait_fill(book, spec.run_id, pid, folder, spec.fill_timeout),
        )
    )
    result["caught_up"] = steps.run(
        "stream caught up", lambda: wait_caught_up(spec, book, pid, folder, spec.max_lag_bytes, spec.catch_up_timeout)
    )
    return result


def wait_caught_up(
    spec: t.Any, book: t.Any, pid: int, folder: str, max_lag: int, timeout: float, log: t.Optional[LogFn] = None
) -> t.Dict[str, t.Any]:
    """Until the stream is at most ``max_lag`` bytes behind production (the changes made during the copy applied),
    so that the window's catch-up is short; or raise, before any window, when it does not get there in ``timeout``
    seconds (the applications write faster than the stream applies) or the holder stopped."""
    source = spec.cluster.with_database(spec.production_database)
    name = _online.stream_name(spec.run_id)
    began = time.monotonic()
    first: t.Optional[int] = None
    while True:
        states = _states(book, spec.run_id)
        for step in (FILL_STEP, FOLLOW_STEP):
            if (states.get(step) or {}).get("state") == "failed":
                raise PgShiftError("the change stream stopped: %s" % states[step]["detail"].get("error"))
        if not run_lock.process_alive(pid):
            raise PgShiftError(
                "the change stream holder (process %d) ended: %s" % (pid, holder_log_tail(folder) or "no log")
            )
        lag = _online.lag(source, name)
        behind = int(lag["bytes_behind"])
        first = behind if first is None else first
        applied = status(folder)
        if behind <= max_lag:
            return {
                "bytes_behind": behind,
                "bytes_behind_at_start": first,
                "seconds": round(time.monotonic() - began, 3),
                "applied": applied,
                "wal_retained_bytes": lag["wal_retained_bytes"],
            }
        if time.monotonic() - began > timeout:
            raise PgShiftError(
                "the change stream did not catch up within %.0f s: %.1f MB behind production (%.1f MB at the start), "
                "applying %s rows/s; the applications write faster than the stream applies. Release in a quieter "
                "hour, raise pgshift_online_max_lag_mb, or release offline (pgshift_mode=offline)"
                % (timeout, behind / 1048576.0, first / 1048576.0, applied.get("rows_per_second", "?"))
            )
        if log:
            log("online: %.1f MB behind, %s rows/s" % (behind / 1048576.0, applied.get("rows_per_second", "?")))
        time.sleep(0.5)


def status(folder: str) -> t.Dict[str, t.Any]:
    """What the holder's applier last wrote (rows, rows/s, bytes behind), or {}."""
    with contextlib.suppress(OSError, ValueError):
        with open(os.path.join(folder, "status.json"), encoding="utf-8") as handle:
            return t.cast(t.Dict[str, t.Any], json.load(handle))
    return {}


# ------------------------------------------------------------------------------------------------ the window
def fill_record(book: t.Any, run_id: str) -> t.Dict[str, t.Any]:
    """The fill's record, or raise: the window needs a finished fill whose stream is still there."""
    states = _states(book, run_id)
    fill = states.get(FILL_STEP)
    if not fill or fill["state"] != "done":
        if fill and fill["state"] == "failed":
            raise PgShiftError("the online fill failed: %s" % fill["detail"].get("error"))
        raise PgShiftError("the online fill of this run is not done (run the fill phase before the window)")
    follow = states.get(FOLLOW_STEP)
    if follow and follow["state"] == "failed":
        raise PgShiftError("the change stream stopped during the fill: %s" % follow["detail"].get("error"))
    stream = states.get(_online.STEP)
    if not stream or stream["state"] == "undone":
        raise PgShiftError("the change stream of this run was dropped before the window")
    detail = dict(fill["detail"])
    detail["holder_pid"] = (states.get(FILL_STEP) or {}).get("detail", {}).get("pid")
    return detail


def _holder_pid(book: t.Any, run_id: str) -> t.Optional[int]:
    def read(cur: t.Any) -> t.Optional[int]:
        cur.execute(
            "SELECT detail->>'pid' FROM pgshift.steps WHERE run_id = %s AND step = %s AND state = 'started' "
            "ORDER BY id DESC LIMIT 1",
            (run_id, FILL_STEP),
        )
        row = cur.fetchone()
        return int(row[0]) if row and row[0] else None

    return t.cast(t.Optional[int], book.run(read))


def stop_holder(book: t.Any, spec: t.Any, timeout: float = 60.0) -> t.Dict[str, t.Any]:
    """Ask the holder to stop applying (``online_cutover started``) and wait until it has, or is gone, and the slot
    is free."""
    book.record(CUTOVER_STEP, "started", {})
    pid = _holder_pid(book, spec.run_id)
    deadline = time.monotonic() + timeout
    name = _online.stream_name(spec.run_id)
    while True:
        states = _states(book, spec.run_id)
        follow = states.get(FOLLOW_STEP)
        if follow and follow["state"] == "failed":
            raise PgShiftError("the change stream stopped: %s" % follow["detail"].get("error"))
        fill = states.get(FILL_STEP)
        if fill and fill["state"] == "failed":
            raise PgShiftError("the change stream stopped: %s" % fill["detail"].get("error"))
        stopped = bool(follow and follow["state"] == "done")
        gone = pid is not None and not run_lock.process_alive(pid)
        if stopped or gone:
            break
        if time.monotonic() > deadline:
            raise PgShiftError("the change stream holder did not stop within %.0f s" % timeout)
        time.sleep(0.1)
    # the slot is free once its WAL sender ended (the holder's connection closed or its process gone)
    conn = release.admin(spec.cluster)
    try:
        with conn.cursor() as cur:
            while True:
                cur.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (name,))
                row = cur.fetchone()
                if row is None:
                    raise PgShiftError(
                        "replication slot %s no longer exists (dropped by someone else?): the changes made since the "
                        "fill cannot be carried" % name
                    )
                if row[0] is None:
                    break
                if time.monotonic() > deadline:
                    raise PgShiftError("replication slot %s is still in use by process %s" % (name, row[0]))
                time.sleep(0.1)
    finally:
        conn.close()
    return {"holder": "stopped" if stopped else "gone", "holder_pid": pid}


def window_cut_over(spec: t.Any, book: t.Any, fill: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
    """The stream's part of the window: the holder stopped, DDL refused, catch-up, sequences, delta proof."""
    prod = spec.production_database
    nxt = release.next_name(prod)
    source = spec.cluster.with_database(prod)
    target = spec.cluster.with_database(nxt)
    out = stop_holder(book, spec)
    with contextlib.closing(connect(source, application_name="pgshift online cut-over")) as conn:
        now = schema_hash(conn)
    if now != fill.get("schema_hash"):
        raise PgShiftError(
            "production's schema changed during the fill (DDL since the stream's snapshot): the stream cannot carry "
            "it; the release is undone: run it again once the schema is stable, or offline (pgshift_mode=offline)"
        )
    with contextlib.ExitStack() as stack:
        src = stack.enter_context(contextlib.closing(connect(source, application_name="pgshift online cut-over")))
        tgt = stack.enter_context(contextlib.closing(connect(target, application_name="pgshift online cut-over")))
        led = stack.enter_context(contextlib.closing(connect(spec.schema_source, application_name="pgshift online")))
        plan = _data.prepare_plan(src, tgt, spec.mapping_file, _data.DEFAULT_LEDGER_TABLES, led)
        eligible = _online.eligibility(src, plan)
    name = _online.stream_name(spec.run_id)
    repl = _online.replication_connect(source)
    stream = _online.Stream(name, name, name, fill["stream"]["consistent_point"], fill["stream"]["snapshot"], repl)
    applier = _online.Applier(repl, name, name, name, source, target, eligible, log=spec.log)
    result = _online.cut_over(
        source,
        target,
        applier,
        stream,
        eligible,
        plan,
        spec.run_id,
        spec.journal_database,
        timeout=spec.cutover_timeout,
        ledger_from=spec.schema_source,
    )
    result.update(out)
    book.record(CUTOVER_STEP, "done", {k: v for k, v in result.items() if k != "delta_proof"})
    result["plan"] = plan
    result["eligible"] = eligible
    return result


def copy_window_tables(
    source: ConnParams,
    target: ConnParams,
    plan: _data.Plan,
    eligible: _online.Eligibility,
    log: t.Optional[LogFn] = None,
) -> t.Dict[str, t.Any]:
    """Production closed: the tables the stream did not carry, emptied and copied again, the large objects and the
    rows of extension configuration tables."""
    out: t.Dict[str, t.Any] = {"tables": {}, "large_objects": None}
    wanted = [tp for tp in plan.tables if tp.key in eligible.in_window]
    stop = threading.Event()
    with contextlib.ExitStack() as stack:
        src = stack.enter_context(contextlib.closing(connect(source, application_name="pgshift online window")))
        tgt = stack.enter_context(contextlib.closing(connect(target, application_name="pgshift online window")))
        snapshot = export_snapshot(src)  # held while the tables and large objects are read
        psql = find_client("psql", server_major(src))[0]
        for tp in wanted:
            delete = sql.SQL("DELETE FROM {} {}").format(
                sql.SQL("") if tp.target.partitioned else sql.SQL("ONLY"), tp.target.ident
            )
            source_sql = [
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)).as_string(src),
                sql.SQL("COPY ({}) TO STDOUT (FORMAT {})").format(tp.select_sql(), sql.SQL(tp.format)).as_string(src),
                "COMMIT",
            ]
            target_sql = [
                # production's triggers and foreign keys ran when these rows were written: not again
                "SET LOCAL session_replication_role = replica",
                delete.as_string(tgt),
                sql.SQL("COPY {} ({}) FROM STDIN (FORMAT {})")
                .format(tp.target.ident, tp.target_columns(), sql.SQL(tp.format))
                .as_string(tgt),
            ]
            job = CopyJob(tp, source, snapshot, source_sql, target_sql)
            out["tables"][tp.key] = run_pipeline(job, target, psql, stop)
            if log:
                log("online window: %s copied again (%d rows)" % (tp.key, out["tables"][tp.key]["rows"]))
        with tgt.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_largeobject_metadata")
            target_objects = int(t.cast(t.Tuple[int], cur.fetchone())[0])
        tgt.rollback()
        if eligible.large_objects or target_objects:
            out["large_objects"] = run_large_objects(source, target, snapshot, stop, log)
        # the rows users keep in extension configuration tables are not streamed either: replaced again, production
        # closed (src is still in its snapshot)
        ext_config = _ext_config.plan(src, tgt)
        tgt.rollback()
        out["extension_config_tables"] = _ext_config.copy(src, tgt, ext_config)
        with contextlib.suppress(psycopg2.Error):
            src.rollback()
    return out


def window_proof(
    spec: t.Any, fill: t.Dict[str, t.Any], cut: t.Dict[str, t.Any], eligible: _online.Eligibility
) -> t.Dict[str, t.Any]:
    """The online proof: the bulk part (the fill, against its snapshot), the delta (every key the stream touched,
    and every streamed table's count) and, production closed, the tables carried in the window with the large
    objects, constraints, sequences and database state."""
    prod = spec.production_database
    source = spec.cluster.with_database(prod)
    target = spec.cluster.with_database(release.next_name(prod))
    window = integrity_check(
        source,
        target,
        spec.mapping_file,
        jobs=spec.jobs,
        ledger_from=spec.schema_source,
        only_tables=set(eligible.in_window),
    )
    bulk = fill.get("integrity") or {}
    delta = cut.get("delta_proof") or {}
    tables = dict(bulk.get("tables") or {})
    tables.update(window["tables"])
    proof = dict(window)
    proof.update(
        tables=tables,
        online=True,
        bulk={"ok": bool(bulk.get("ok")), "snapshot": bulk.get("snapshot"), "seconds": bulk.get("seconds")},
        delta=delta,
        window_tables=sorted(eligible.in_window),
    )
    proof["ok"] = bool(window["ok"]) and bool(bulk.get("ok")) and bool(delta.get("ok"))
    fail_if_not_ok(proof)
    return proof
