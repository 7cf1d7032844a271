# -*- coding: utf-8 -*-
# Copyright: (c) 2026, pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: progress
type: notification
short_description: Progress of a pgshift run on the terminal, as notifications, and as a run report
description:
  - Prints one line per phase (play) and per step (task) with the elapsed time; on long steps a periodic line with the
    time spent, the rows copied so far when loop results carry them, and an estimated time left from the same step of
    the previous run.
  - Sends notifications (run started, phase started and finished, step failed, rescue entered, run finished with
    totals) to any of a generic JSON webhook, a Slack-compatible incoming webhook and a JSON-lines file. A notification
    that fails is logged as a warning and never fails the run.
  - Writes a run report at the end of every run, successful or not, as
    C(<report_dir>/<run_id>-<playbook>/report.json) and a self-contained C(report.html) (timeline chart,
    maintenance window, pgshift module results, what was rolled back), and copies the JSON to
    C(<report_dir>/last-run.json).
  - Never sends or prints task arguments; keeps only whitelisted result keys, and nothing of a C(no_log) result.
  - One run id for the whole run - mints it at start (C(YYYYMMDDTHHMMSSZ-<hex>), the journal's format) and exports it
    to the controller's environment as C(PGSHIFT_RUN_ID) before any task runs; C(prod_restore.yml) passes
    C(lookup('env', 'PGSHIFT_RUN_ID')) to C(run_journal action=start), so the journal, the progress lines, the
    notifications, the report and its folder C(<run_id>-<playbook>) all carry the same id. (A callback cannot set a
    variable; the environment is inherited by the task workers, which are forked after the playbook starts.)
  - The maintenance window is the journal's (C(run_journal step=window), measured once by the database clock, see
    the module) when the run recorded it. Otherwise it runs from the first step of the first play whose name
    contains C(maintenance on) to the end of the last later play whose name contains C(maintenance off)
    (case-insensitive).
version_added: 0.1.0
author:
  - pgshift maintainers (!UNKNOWN)
requirements:
  - enable it in C(ansible.cfg) with C(callbacks_enabled = pgshift.ops.progress)
options:
  report_dir:
    description:
      - Folder of the run reports. A relative path is taken from the project root, the folder holding the
        C(ansible.cfg) in use (or the current directory without one).
    type: path
    default: artifacts/runs
    ini:
      - section: callback_pgshift_progress
        key: report_dir
    env:
      - name: PGSHIFT_REPORT_DIR
  report:
    description: Write the run report.
    type: bool
    default: true
    ini:
      - section: callback_pgshift_progress
        key: report
    env:
      - name: PGSHIFT_REPORT
  keep_runs:
    description: How many run folders to keep in O(report_dir); older ones are removed. V(0) keeps them all.
    type: int
    default: 50
    ini:
      - section: callback_pgshift_progress
        key: keep_runs
    env:
      - name: PGSHIFT_REPORT_KEEP_RUNS
  webhook_url:
    description: Generic webhook; every event is POSTed to it as one JSON object.
    type: str
    ini:
      - section: callback_pgshift_progress
        key: webhook_url
    env:
      - name: PGSHIFT_PROGRESS_WEBHOOK_URL
  webhook_token:
    description: "Sent to the generic webhook as C(Authorization: Bearer <token>). Never printed."
    type: str
    ini:
      - section: callback_pgshift_progress
        key: webhook_token
    env:
      - name: PGSHIFT_PROGRESS_WEBHOOK_TOKEN
  slack_webhook_url:
    description: 'Slack-compatible incoming webhook; every event is POSTed as C({"text": "..."}). Never printed.'
    type: str
    ini:
      - section: callback_pgshift_progress
        key: slack_webhook_url
    env:
      - name: PGSHIFT_PROGRESS_SLACK_URL
  jsonl_file:
    description: Append every event as one JSON line to this file (mode 0600). Relative to the project root.
    type: path
    ini:
      - section: callback_pgshift_progress
        key: jsonl_file
    env:
      - name: PGSHIFT_PROGRESS_JSONL
  timeout:
    description: Seconds to wait for a webhook to answer.
    type: float
    default: 5
    ini:
      - section: callback_pgshift_progress
        key: timeout
    env:
      - name: PGSHIFT_PROGRESS_TIMEOUT
  max_failures:
    description: After this many notification failures in a row, a sink is given up for the rest of the run.
    type: int
    default: 3
    ini:
      - section: callback_pgshift_progress
        key: max_failures
    env:
      - name: PGSHIFT_PROGRESS_MAX_FAILURES
  interval:
    description: Seconds between two progress lines of a step that is still running. V(0) turns them off.
    type: float
    default: 30
    ini:
      - section: callback_pgshift_progress
        key: interval
    env:
      - name: PGSHIFT_PROGRESS_INTERVAL
  terminal:
    description: Print the progress lines on the terminal.
    type: bool
    default: true
    ini:
      - section: callback_pgshift_progress
        key: terminal
    env:
      - name: PGSHIFT_PROGRESS_TERMINAL
"""

import atexit  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import typing as t  # noqa: E402
import urllib.parse  # noqa: E402
import uuid  # noqa: E402

from ansible import constants as C  # noqa: E402
from ansible import context  # noqa: E402
from ansible.module_utils.urls import open_url  # noqa: E402
from ansible.plugins.callback import CallbackBase  # noqa: E402

from ansible_collections.pgshift.ops.plugins.module_utils import _report as rpt  # noqa: E402

RUN_ID_ENV = "PGSHIFT_RUN_ID"
EVENTS = ("run_started", "phase_started", "phase_finished", "step_failed", "rescue_entered", "run_finished")


def _now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _new_run_id() -> str:
    """Same form as the journal's ids (plugins/module_utils/_journal.py new_run_id): UTC start time, random hex."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def _mkdir_private(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)


def _write_atomic(path: str, text: str) -> None:
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _in_rescue(task: t.Any) -> bool:
    """True when the task sits (at any depth) in the rescue section of a block."""
    child = task
    parent = getattr(task, "_parent", None)
    while parent is not None:
        rescue = getattr(parent, "rescue", None)
        if isinstance(rescue, list) and any(
            getattr(x, "_uuid", None) == getattr(child, "_uuid", object()) for x in rescue
        ):
            return True
        child = parent
        parent = getattr(parent, "_parent", None)
    return False


class _Sink:
    """One notification target; failures are counted and reported, never raised."""

    def __init__(
        self, kind: str, target: str, timeout: float, max_failures: int, token: t.Optional[str] = None
    ) -> None:
        self.kind = kind
        self.target = target
        self.timeout = timeout
        self.max_failures = max_failures
        self.token = token
        self.failures = 0
        self.disabled = False

    def label(self) -> str:
        """Where it sends, without anything secret: a webhook's scheme://host:port only."""
        if self.kind == "jsonl":
            return "jsonl file %s" % self.target
        parsed = urllib.parse.urlsplit(self.target)
        return "%s %s://%s" % (self.kind, parsed.scheme, parsed.hostname or "?") + (
            ":%d" % parsed.port if parsed.port else ""
        )

    def send(self, event: t.Mapping[str, t.Any]) -> None:
        if self.kind == "jsonl":
            _mkdir_private(os.path.dirname(self.target) or ".")
            fd = os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(event, sort_keys=True, default=str) + "\n")
            return
        scheme = urllib.parse.urlsplit(self.target).scheme
        if scheme not in ("http", "https"):
            raise ValueError("only http and https webhooks are supported")
        body = event if self.kind == "webhook" else {"text": event.get("text", "")}
        headers = {"Content-Type": "application/json", "User-Agent": "pgshift-progress/1"}
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        # http or https only (checked above); certificates are verified
        with open_url(
            self.target,
            data=json.dumps(body, default=str).encode("utf-8"),
            headers=headers,
            method="POST",
            timeout=self.timeout,
            follow_redirects="none",
            use_netrc=False,
        ) as response:
            response.read(1024)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "pgshift.ops.progress"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, display: t.Any = None) -> None:
        super().__init__(display=display)
        self._lock = threading.RLock()
        self._t0 = time.monotonic()
        self._started_iso = _now_iso()
        self._run_id = _new_run_id()
        os.environ[RUN_ID_ENV] = self._run_id  # the task workers, forked later, inherit it
        self._journal_window: t.Optional[t.Dict[str, t.Any]] = None
        self._playbook = "adhoc"
        self._playbook_path = ""
        self._plays: t.List[t.Dict[str, t.Any]] = []
        self._steps: t.List[t.Dict[str, t.Any]] = []
        self._step_by_uuid: t.Dict[str, t.Dict[str, t.Any]] = {}
        self._results: t.List[t.Dict[str, t.Any]] = []
        self._failures: t.List[t.Dict[str, t.Any]] = []
        self._rescue_steps: t.List[t.Dict[str, t.Any]] = []
        self._previous: t.Dict[str, t.Dict[str, t.Any]] = {}
        self._sinks: t.List[_Sink] = []
        self._seq = 0
        self._configured = False
        self._finished = False
        self._interrupted = False
        self._report_files: t.Dict[str, str] = {}
        self._stop = threading.Event()
        self._ticker: t.Optional[threading.Thread] = None
        atexit.register(self._at_exit)

    # ----------------------------------------------------------------------------------------------- set-up
    def set_options(self, task_keys: t.Any = None, var_options: t.Any = None, direct: t.Any = None) -> None:
        super().set_options(task_keys=task_keys, var_options=var_options, direct=direct)
        self._configure()

    def _opt(self, name: str, default: t.Any = None) -> t.Any:
        try:
            value = self.get_option(name)
        except KeyError:
            return default
        return default if value is None else value

    def _project_root(self) -> str:
        config = getattr(C, "CONFIG_FILE", None)
        return os.path.dirname(os.path.abspath(config)) if config else os.getcwd()

    def _path(self, value: str) -> str:
        value = os.path.expanduser(value)
        return value if os.path.isabs(value) else os.path.join(self._project_root(), value)

    def _configure(self) -> None:
        self._configured = True
        self._report_dir = self._path(str(self._opt("report_dir", "artifacts/runs")))
        self._write_report = bool(self._opt("report", True))
        self._keep_runs = int(self._opt("keep_runs", 50))
        self._interval = float(self._opt("interval", 30))
        self._terminal = bool(self._opt("terminal", True))
        timeout = float(self._opt("timeout", 5))
        max_failures = int(self._opt("max_failures", 3))
        self._sinks = []
        if self._opt("webhook_url"):
            self._sinks.append(
                _Sink("webhook", str(self._opt("webhook_url")), timeout, max_failures, self._opt("webhook_token"))
            )
        if self._opt("slack_webhook_url"):
            self._sinks.append(_Sink("slack", str(self._opt("slack_webhook_url")), timeout, max_failures))
        if self._opt("jsonl_file"):
            self._sinks.append(_Sink("jsonl", self._path(str(self._opt("jsonl_file"))), timeout, max_failures))

    # ----------------------------------------------------------------------------------------------- helpers
    def _elapsed(self) -> float:
        return round(time.monotonic() - self._t0, 3)

    def _say(self, text: str, color: t.Optional[str] = None) -> None:
        if self._terminal:
            self._display.display("[pgshift] +%s %s" % (rpt.format_duration(self._elapsed()), text), color=color)

    def _notify(self, event: str, text: str, **data: t.Any) -> None:
        self._seq += 1
        payload: t.Dict[str, t.Any] = {
            "source": "pgshift",
            "event": event,
            "seq": self._seq,
            "run_id": self._run_id,
            "playbook": self._playbook,
            "time": _now_iso(),
            "elapsed_s": self._elapsed(),
            "text": "pgshift %s: %s" % (self._playbook, text),
        }
        payload.update(data)
        for sink in self._sinks:
            if sink.disabled:
                continue
            try:
                sink.send(payload)
                sink.failures = 0
            except Exception as exc:  # a notification must never fail the run
                sink.failures += 1
                reason = rpt.scrub_text(getattr(exc, "reason", None) or exc, 200)
                self._display.warning(
                    "pgshift.ops.progress: %s notification to %s failed: %s" % (event, sink.label(), reason)
                )
                if sink.failures >= sink.max_failures:
                    sink.disabled = True
                    self._display.warning(
                        "pgshift.ops.progress: %s failed %d times in a row; no more notifications to it in this run"
                        % (sink.label(), sink.failures)
                    )

    def _load_previous(self) -> None:
        """Step durations and rows of the previous run, for estimates of time left."""
        try:
            with open(os.path.join(self._report_dir, "last-run.json"), encoding="utf-8") as handle:
                previous = json.load(handle)
            for step in previous.get("steps") or []:
                if step.get("status") in ("ok", "changed"):
                    self._previous["%s\x00%s" % (step.get("play"), step.get("name"))] = step
        except (OSError, ValueError, AttributeError):
            self._previous = {}

    # ----------------------------------------------------------------------------------------------- steps
    def _current_play(self) -> t.Optional[t.Dict[str, t.Any]]:
        return self._plays[-1] if self._plays else None

    def _close_step(self, step: t.Dict[str, t.Any]) -> None:
        if step.get("closed"):
            return
        step["closed"] = True
        end = step.pop("_last_result", None)
        if end is None:
            end = self._elapsed()
        step["duration_s"] = round(max(end - step["started"], 0.0), 3)
        step["status"] = rpt.step_status(step["hosts"].values())
        if self._interrupted and not step["hosts"]:
            step["status"] = "interrupted"  # still running when the run was stopped
        line = "  %s %s (%s)" % (step["name"], step["status"], rpt.format_duration(step["duration_s"]))
        if step.get("rows") is not None:
            rate = step["rows"] / step["duration_s"] if step["duration_s"] > 0 else 0.0
            line += ", %s rows (%s rows/s)" % (format(step["rows"], ","), format(int(rate), ","))
        if step["status"] != "skipped":
            color = C.COLOR_ERROR if step["status"] in ("failed", "unreachable") else None
            self._say(line, color=color)

    def _close_open_step(self) -> None:
        with self._lock:
            if self._steps and not self._steps[-1].get("closed"):
                self._close_step(self._steps[-1])

    def _close_play(self) -> None:
        self._close_open_step()
        play = self._current_play()
        if play is None or play.get("finished") is not None:
            return
        play["finished"] = self._elapsed()
        play["duration_s"] = round(play["finished"] - play["started"], 3)
        mine = [s for s in self._steps if s["play_index"] == play["index"]]
        bad = [s for s in mine if s["status"] in ("failed", "unreachable")]
        play["status"] = "failed" if bad else ("rescued" if any(s["status"] == "rescued" for s in mine) else "ok")
        if self._interrupted and play["status"] == "ok":
            play["status"] = "interrupted"
        play["steps"] = len(mine)
        self._say(
            "phase %d %r %s in %s"
            % (play["index"], play["name"], play["status"], rpt.format_duration(play["duration_s"]))
        )
        self._notify(
            "phase_finished",
            "phase %r %s in %s" % (play["name"], play["status"], rpt.format_duration(play["duration_s"])),
            phase=play["name"],
            phase_index=play["index"],
            status=play["status"],
            duration_s=play["duration_s"],
            steps=len(mine),
        )

    def _start_step(self, task: t.Any, handler: bool) -> None:
        with self._lock:
            play = self._current_play()
            key = self._step_key(task)
            if key in self._step_by_uuid:  # free strategy: one start per host
                return
            if self._steps and not self._steps[-1].get("closed"):
                self._close_step(self._steps[-1])
            role = getattr(task, "_role", None)
            step: t.Dict[str, t.Any] = {
                "index": len(self._steps) + 1,
                "play": play["name"] if play else "",
                "play_index": play["index"] if play else 0,
                "batch": play["batches"] if play else 1,
                "name": task.get_name().strip(),
                "action": str(getattr(task, "action", "") or ""),
                "role": role.get_name() if role is not None else None,
                "started": self._elapsed(),
                "duration_s": None,
                "status": "running",
                "hosts": {},
                "rescue": _in_rescue(task),
                "handler": handler,
                "rows": None,
            }
            self._steps.append(step)
            self._step_by_uuid[key] = step
            if step["rescue"]:
                self._rescue_steps.append(step)

    def _step_key(self, task: t.Any) -> str:
        """A task runs once per serial batch of its play: one step each time."""
        play = self._current_play()
        where = "%s:%s" % (play["index"], play["batches"]) if play else "0:1"
        return "%s:%s" % (where, getattr(task, "_uuid", id(task)))

    def _step_for(self, task: t.Any) -> t.Optional[t.Dict[str, t.Any]]:
        return self._step_by_uuid.get(self._step_key(task))

    def _record(self, result: t.Any, status: str) -> None:
        task = result.task
        host = result.host.get_name()
        data = result.result
        with self._lock:
            step = self._step_for(task)
            if step is None:
                self._start_step(task, handler=False)
                step = self._step_for(task)
            if step is None:  # pragma: no cover - _start_step always registers it
                return
            step["hosts"][host] = status
            step["_last_result"] = self._elapsed()
            rows = rpt.rows_of(data)
            if rows is None and isinstance(data.get("results"), list):
                numbers = [rpt.rows_of(item) for item in data["results"]]
                rows = sum(n for n in numbers if n is not None) if any(n is not None for n in numbers) else None
            if (
                rpt.short_action(step["action"]) in ("run_journal", "rebuild_swap")
                and status in ("ok", "changed")
                and isinstance(data.get("window_seconds"), (int, float))
                and not isinstance(data.get("window_seconds"), bool)
            ):
                # the window as the journal measured it; placed on the timeline ending now
                seconds = float(data["window_seconds"])
                end = self._elapsed()
                self._journal_window = {
                    "started": round(max(end - seconds, 0.0), 3),
                    "finished": end,
                    "open": False,
                    "duration_s": round(seconds, 3),
                    "source": "journal",
                }
            if rows is not None:
                step["rows"] = rows if len(step["hosts"]) == 1 else (step["rows"] or 0) + rows
            items = data["results"] if isinstance(data.get("results"), list) else [data]
            for item in items:
                for action, part in rpt.result_parts(step["action"], item):
                    kept = rpt.extract_results(action, part)
                    if kept:
                        self._results.append(
                            {
                                "step": step["name"],
                                "step_index": step["index"],
                                "action": action,
                                "host": host,
                                "data": kept,
                            }
                        )
            if step["rescue"]:
                self._mark_rescued(host, step)
        if status in ("failed", "unreachable"):
            msg = (
                "(output hidden: no_log)"
                if data.get("censored")
                else rpt.scrub_text(data.get("msg") or data.get("stderr") or status)
            )
            self._failures.append(
                {
                    "step": step["name"],
                    "step_index": step["index"],
                    "play": step["play"],
                    "host": host,
                    "status": status,
                    "msg": msg,
                }
            )
            self._say("  %s FAILED on %s: %s" % (step["name"], host, msg), color=C.COLOR_ERROR)
            self._notify(
                "step_failed",
                "step %r %s on %s: %s" % (step["name"], status, host, msg),
                phase=step["play"],
                step=step["name"],
                host=host,
                status=status,
                msg=msg,
            )

    def _mark_rescued(self, host: str, rescue_step: t.Dict[str, t.Any]) -> None:
        """The first rescue step that runs for a host turns that host's last failure in the play into "rescued"."""
        if rescue_step.get("_rescue_seen", set()) and host in rescue_step["_rescue_seen"]:
            return
        for step in reversed(self._steps):
            if step is rescue_step or step["play_index"] != rescue_step["play_index"]:
                continue
            if step["rescue"]:
                if step["hosts"].get(host):  # an earlier rescue step already handled it
                    break
                continue
            if step["hosts"].get(host) == "failed":
                step["hosts"][host] = "rescued"
                if step.get("closed"):
                    step["status"] = rpt.step_status(step["hosts"].values())
                for failure in self._failures:
                    if failure["step_index"] == step["index"] and failure["host"] == host:
                        failure["rescued"] = True
                self._notify(
                    "rescue_entered",
                    "rescue %r entered on %s after %r failed" % (rescue_step["name"], host, step["name"]),
                    phase=rescue_step["play"],
                    step=rescue_step["name"],
                    failed_step=step["name"],
                    host=host,
                )
                break
        rescue_step.setdefault("_rescue_seen", set()).add(host)

    # ----------------------------------------------------------------------------------------------- ticker
    def _tick(self) -> None:
        last_line = time.monotonic()
        while not self._stop.wait(1.0):
            with self._lock:
                if not self._steps or self._steps[-1].get("closed"):
                    continue
                step = self._steps[-1]
                now = time.monotonic()
                elapsed = self._elapsed() - step["started"]
                if elapsed < self._interval or now - last_line < self._interval:
                    continue
                last_line = now
                line = "  %s still running: %s" % (step["name"], rpt.format_duration(elapsed))
                if step.get("rows"):
                    line += ", %s rows so far" % format(step["rows"], ",")
                previous = self._previous.get("%s\x00%s" % (step["play"], step["name"]))
                eta = rpt.eta_seconds(elapsed, step.get("rows"), previous)
                if eta is not None:
                    line += ", about %s left (from the previous run)" % rpt.format_duration(eta)
                elif previous and previous.get("duration_s") is not None:
                    line += ", longer than in the previous run (%s)" % rpt.format_duration(previous["duration_s"])
                self._say(line)

    # ----------------------------------------------------------------------------------------------- events
    def v2_playbook_on_start(self, playbook: t.Any) -> None:
        if not self._configured:
            self._configure()
        self._playbook_path = str(getattr(playbook, "_file_name", "") or "")
        base = os.path.basename(self._playbook_path) or "playbook"
        self._playbook = re.sub(r"\.ya?ml$", "", base)
        self._load_previous()
        self._say("run %s started: %s" % (self._run_id, base))
        self._notify("run_started", "run started", check_mode=bool(context.CLIARGS.get("check")))
        if self._interval > 0:
            self._ticker = threading.Thread(target=self._tick, name="pgshift-progress", daemon=True)
            self._ticker.start()

    def v2_playbook_on_play_start(self, play: t.Any) -> None:
        """Called once per serial batch: the second and later batches of a play stay in its phase."""
        play_uuid = str(getattr(play, "_uuid", id(play)))
        with self._lock:
            current = self._current_play()
            if current is not None and current["uuid"] == play_uuid and current["finished"] is None:
                self._close_open_step()
                current["batches"] += 1
                self._say("phase %d %r: batch %d" % (current["index"], current["name"], current["batches"]))
                return
            self._close_play()
            entry: t.Dict[str, t.Any] = {
                "index": len(self._plays) + 1,
                "name": (play.get_name() or "").strip(),
                "uuid": play_uuid,
                "batches": 1,
                "started": self._elapsed(),
                "finished": None,
                "duration_s": None,
                "status": "running",
            }
            self._plays.append(entry)
        self._say("phase %d %r started" % (entry["index"], entry["name"]))
        self._notify(
            "phase_started", "phase %r started" % entry["name"], phase=entry["name"], phase_index=entry["index"]
        )

    def v2_playbook_on_task_start(self, task: t.Any, is_conditional: t.Any) -> None:
        self._start_step(task, handler=False)

    def v2_playbook_on_handler_task_start(self, task: t.Any) -> None:
        self._start_step(task, handler=True)

    def v2_runner_on_ok(self, result: t.Any) -> None:
        self._record(result, "changed" if result.result.get("changed") else "ok")

    def v2_runner_on_failed(self, result: t.Any, ignore_errors: bool = False) -> None:
        if ignore_errors:
            self._record(result, "ignored")
        else:
            self._record(result, "failed")

    def v2_runner_on_skipped(self, result: t.Any) -> None:
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result: t.Any) -> None:
        self._record(result, "unreachable")

    def v2_runner_item_on_ok(self, result: t.Any) -> None:
        """Loop items: rows copied so far, for the progress lines of long steps."""
        rows = rpt.rows_of(result.result)
        if rows is None:
            return
        with self._lock:
            step = self._step_for(result.task)
            if step is not None:
                step["_item_rows"] = step.get("_item_rows", 0) + rows
                step["rows"] = step["_item_rows"]

    def v2_playbook_on_stats(self, stats: t.Any) -> None:
        self._finish(stats, interrupted=False)

    def _at_exit(self) -> None:
        if not self._finished and self._plays:
            self._finish(None, interrupted=True)

    # ----------------------------------------------------------------------------------------------- the end
    def _finish(self, stats: t.Any, interrupted: bool) -> None:
        self._stop.set()
        with self._lock:
            if self._finished:
                return
            self._finished = True
            self._interrupted = interrupted
            self._close_play()
        hosts: t.Dict[str, t.Dict[str, int]] = {}
        if stats is not None:
            for host in sorted(stats.processed.keys()):
                hosts[host] = dict(stats.summarize(host))
        failed = interrupted or any(h.get("failures", 0) or h.get("unreachable", 0) for h in hosts.values())
        failed = failed or any(s["status"] in ("failed", "unreachable") for s in self._steps)
        status = "interrupted" if interrupted else ("failed" if failed else "ok")
        report = self._build_report(status, hosts)
        if self._write_report:
            try:
                self._write(report)
            except Exception as exc:  # the report must never fail the run either
                self._display.warning(
                    "pgshift.ops.progress: could not write the run report: %s" % rpt.scrub_text(exc, 300)
                )
        tot = report["totals"]
        summary = "run %s in %s: %d steps, %d changed, %d failed, %d rescued" % (
            status,
            rpt.format_duration(report["duration_s"]),
            tot["steps"],
            tot["changed"],
            tot["failed"] + tot["unreachable"],
            tot["rescued"],
        )
        self._say(summary + (" - report: %s" % self._report_files["html"] if self._report_files else ""))
        self._notify(
            "run_finished",
            summary,
            status=status,
            duration_s=report["duration_s"],
            totals=tot,
            maintenance_window=report["maintenance_window"],
            rolled_back=[s["name"] for s in report["rollback"]["steps"]],
            report=self._report_files.get("html"),
        )

    def _build_report(self, status: str, hosts: t.Dict[str, t.Dict[str, int]]) -> t.Dict[str, t.Any]:
        steps = []
        for step in self._steps:
            clean = {k: v for k, v in step.items() if not k.startswith("_") and k != "closed"}
            steps.append(clean)
        duration = self._elapsed()
        return {
            "schema": rpt.SCHEMA,
            "run_id": self._run_id,
            "playbook": self._playbook,
            "playbook_path": self._playbook_path,
            "started": self._started_iso,
            "finished": _now_iso(),
            "duration_s": duration,
            "status": status,
            "check_mode": bool(context.CLIARGS.get("check")),
            "inventory": self._inventories(),
            "totals": rpt.totals(steps),
            "hosts": hosts,
            "plays": [{k: v for k, v in p.items() if k != "uuid"} for p in self._plays],
            "steps": steps,
            "maintenance_window": self._journal_window or rpt.maintenance_window(self._plays, steps),
            "results": self._results,
            "failures": self._failures,
            "rollback": {
                "rescue_entered": bool([s for s in self._rescue_steps if s["hosts"]]),
                "steps": [
                    {
                        "index": s["index"],
                        "name": s["name"],
                        "play": s["play"],
                        "status": s["status"],
                        "hosts": dict(s["hosts"]),
                    }
                    for s in self._rescue_steps
                    if s["hosts"]
                ],
            },
            "files": {},
        }

    def _inventories(self) -> t.List[str]:
        """The inventories of the run, relative to the project root when inside it (for the rollback command)."""
        root = self._project_root()
        out = []
        for inventory in context.CLIARGS.get("inventory") or ():
            path = os.path.abspath(os.path.expanduser(str(inventory)))
            out.append(os.path.relpath(path, root) if path.startswith(root + os.sep) else str(inventory))
        return out

    def _write(self, report: t.Dict[str, t.Any]) -> None:
        _mkdir_private(self._report_dir)
        stamp = re.sub(r"[^A-Za-z0-9_.-]+", "_", self._run_id)  # the run id starts with the UTC start time
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", self._playbook) or "playbook"
        folder = os.path.join(self._report_dir, "%s-%s" % (stamp, name))
        suffix = 1
        while True:
            try:
                os.mkdir(folder, 0o700)
                break
            except FileExistsError:
                suffix += 1
                folder = os.path.join(self._report_dir, "%s-%s-%d" % (stamp, name, suffix))
        self._report_files = {
            "folder": folder,
            "json": os.path.join(folder, "report.json"),
            "html": os.path.join(folder, "report.html"),
        }
        report["files"] = dict(self._report_files)
        text = rpt.to_json(report)
        _write_atomic(self._report_files["html"], rpt.render_html(report))
        _write_atomic(self._report_files["json"], text)
        _write_atomic(os.path.join(self._report_dir, "last-run.json"), text)
        self._prune()

    def _prune(self) -> None:
        if self._keep_runs <= 0:
            return
        runs = sorted(
            entry
            for entry in os.listdir(self._report_dir)
            if re.match(r"^\d{8}T\d{6}Z-", entry)
            and os.path.isfile(os.path.join(self._report_dir, entry, "report.json"))
        )
        for entry in runs[: max(len(runs) - self._keep_runs, 0)]:
            shutil.rmtree(os.path.join(self._report_dir, entry), ignore_errors=True)
