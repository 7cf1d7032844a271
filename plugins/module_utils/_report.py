# -*- coding: utf-8 -*-
# PRIVATE to the pgshift.ops collection: no compatibility promise outside it.
# Copyright: (c) 2026, pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The run report: what the pgshift.ops.progress callback keeps from a run, and how it renders it.

Everything here is a pure function of plain data (dicts, lists, strings, numbers): no Ansible objects, no files, no
clock. The callback feeds it and writes what it returns. The JSON schema is documented in docs/progress.md.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import html
import json
import re
import typing as t

SCHEMA = "pgshift.run-report/1"
ACTION_PREFIX = "pgshift.ops."
MAX_DIFFERENCES = 200
MAX_TABLES = 2000
MAX_MSG = 400

# Result keys kept per pgshift module (short name after "pgshift.ops."). Nothing else of a result is ever kept.
MODULE_KEYS = {
    "data_copy": ("tables", "total_rows"),
    "integrity_check": ("ok", "tables", "mismatches"),
    "backup": ("backup_id", "path", "manifest_path", "size_bytes"),
    "schema_diff": ("differences",),
    "swap": ("previous", "swapped"),
    "rollback": ("run_id", "actions", "refused", "kept", "message"),
    "backup_verify": ("verified", "level"),
    "run_journal": ("window_seconds",),
    "rebuild_swap": ("steps", "window_seconds"),
}
# A module that runs several others' steps in one call returns each one's result under a key: the report keeps
# those as results of the module they stand for, so that copies, proofs and swaps read the same either way.
INNER_RESULTS = {
    "rebuild_swap": (
        ("access", "db_access"),
        ("copy", "data_copy"),
        ("integrity", "integrity_check"),
        ("swap", "swap"),
    ),
}
# Kept from any pgshift.ops.* result (swap, rollback, ...).
ANY_PGSHIFT_KEYS = ("swapped", "undone", "journal")
SWAP_KEYS = ANY_PGSHIFT_KEYS + ("previous", "actions", "run_id", "refused", "kept", "message")
SHORT_HASH = 12
# Kept from any task whatsoever (a module or a set_fact task can publish it).
REPORT_KEY = "pgshift_report"
HTTP_ACTIONS = ("ansible.builtin.uri", "uri", "ansible.legacy.uri")

STATUS_ORDER = ("failed", "unreachable", "interrupted", "rescued", "ignored", "changed", "ok", "skipped")
STATUS_COLOURS = {
    "ok": "#2e7d32",
    "changed": "#c77700",
    "failed": "#c62828",
    "unreachable": "#6a1b9a",
    "skipped": "#9e9e9e",
    "ignored": "#ad5d5d",
    "rescued": "#1565c0",
    "interrupted": "#37474f",
    "running": "#607d8b",
}

_SECRET_PATTERNS = (
    # key=value / key: value pairs whose key names a secret
    re.compile(
        r"(?i)((?:password|passwd|pwd|secret|token|api[_-]?key|authorization)\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|\S+)"
    ),
    # user:password@ in URLs and libpq URIs
    re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^/\s:@]+:)([^@\s/]+)(@)"),
    # bearer tokens
    re.compile(r"(?i)(bearer\s+)([a-z0-9._~+/=-]+)"),
)


def scrub_text(text: t.Any, limit: int = MAX_MSG) -> str:
    """A message fit for a notification or the report: secret-looking values masked, length capped."""
    out = str(text)
    for pattern in _SECRET_PATTERNS:
        out = pattern.sub(
            lambda m: m.group(1) + "********" + (m.group(3) if m.lastindex and m.lastindex >= 3 else ""), out
        )
    if len(out) > limit:
        out = out[: limit - 1] + "\u2026"
    return out


def strip_url(url: t.Any) -> str:
    """scheme://host:port/path of a URL: no user info, no query string, no fragment (they may carry secrets)."""
    text = str(url)
    match = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^/@]*@)?([^/?#]*)([^?#]*)", text)
    if not match:
        return scrub_text(text.split("?", 1)[0], 200)
    return match.group(1) + match.group(2) + match.group(3)


def short_action(action: str) -> str:
    return action[len(ACTION_PREFIX) :] if action.startswith(ACTION_PREFIX) else action


def _cap_list(value: t.Any, limit: int) -> t.Any:
    if isinstance(value, list) and len(value) > limit:
        return value[:limit]
    if isinstance(value, dict) and len(value) > limit:
        return dict(list(value.items())[:limit])
    return value


def table_rows(tables: t.Any) -> t.List[t.Tuple[str, t.Dict[str, t.Any]]]:
    """(name, details) pairs from a ``tables`` result in either shape: a dict keyed by table name (data_copy) or a
    list of dicts with a ``name`` (or ``table``) key."""
    out = []  # type: t.List[t.Tuple[str, t.Dict[str, t.Any]]]
    if isinstance(tables, dict):
        for name, details in tables.items():
            out.append((str(name), details if isinstance(details, dict) else {"value": details}))
    elif isinstance(tables, list):
        for details in tables:
            if isinstance(details, dict):
                out.append((str(details.get("name", details.get("table", ""))), details))
            else:
                out.append((str(details), {}))
    return out


def result_parts(action: str, result: t.Any) -> t.List[t.Tuple[str, t.Any]]:
    """(action, result) of a task result and of the inner results it carries (see INNER_RESULTS)."""
    parts = [(action, result)]  # type: t.List[t.Tuple[str, t.Any]]
    if not isinstance(result, dict) or result.get("censored") or result.get("_ansible_no_log"):
        return parts
    for key, inner in INNER_RESULTS.get(short_action(action), ()):
        if isinstance(result.get(key), dict):
            parts.append((ACTION_PREFIX + inner, result[key]))
    return parts


def extract_results(action: str, result: t.Mapping[str, t.Any]) -> t.Dict[str, t.Any]:
    """The whitelisted part of one task result (one host, or one loop item); {} when nothing is kept.

    A result censored by ``no_log`` keeps nothing. Task arguments are never looked at.
    """
    if not isinstance(result, dict) or result.get("censored") or result.get("_ansible_no_log"):
        return {}
    kept = {}  # type: t.Dict[str, t.Any]
    if action.startswith(ACTION_PREFIX):
        short = short_action(action)
        for key in MODULE_KEYS.get(short, ()) + ANY_PGSHIFT_KEYS:
            if key in result:
                kept[key] = result[key]
        if "differences" in kept and isinstance(kept["differences"], list):
            total = len(kept["differences"])
            kept["differences"] = _cap_list(kept["differences"], MAX_DIFFERENCES)
            if total > MAX_DIFFERENCES:
                kept["differences_total"] = total
        if "tables" in kept:
            kept["tables"] = _cap_list(kept["tables"], MAX_TABLES)
        if "mismatches" in kept:
            kept["mismatches"] = _cap_list(kept["mismatches"], MAX_TABLES)
        if "message" in kept:
            kept["message"] = scrub_text(kept["message"])
        facts = result.get("facts")
        if short == "preflight" and isinstance(facts, dict):
            migrations = facts.get("migrations")
            if isinstance(migrations, dict) and isinstance(migrations.get("to_apply"), list):
                kept["migrations_to_apply"] = [str(m) for m in migrations["to_apply"]][:MAX_TABLES]
            if facts.get("production_database"):
                kept["production_database"] = str(facts["production_database"])
    if action in HTTP_ACTIONS and "status" in result:
        kept["http"] = {
            "url": strip_url(result.get("url", "")),
            "status": result.get("status"),
            "elapsed": result.get("elapsed"),
        }
    published = result.get(REPORT_KEY)
    facts = result.get("ansible_facts")
    if published is None and isinstance(facts, dict):
        published = facts.get(REPORT_KEY)
    if isinstance(published, dict):
        kept[REPORT_KEY] = published
    return kept


def rows_of(result: t.Mapping[str, t.Any]) -> t.Optional[int]:
    """Rows a result reports having copied: ``total_rows``, else the sum of ``tables[].rows``, else ``rows``."""
    if not isinstance(result, dict) or result.get("censored"):
        return None
    total = result.get("total_rows")
    if isinstance(total, int) and not isinstance(total, bool):
        return total
    tables = table_rows(result.get("tables"))
    if tables:
        counted = [details.get("rows") for _name, details in tables]
        numbers = [n for n in counted if isinstance(n, int) and not isinstance(n, bool)]
        if numbers:
            return sum(numbers)
    rows = result.get("rows")
    if isinstance(rows, int) and not isinstance(rows, bool):
        return rows
    return None


def step_status(host_statuses: t.Iterable[str]) -> str:
    """The status of a step from its hosts' statuses: the worst one wins."""
    seen = set(host_statuses)
    for status in STATUS_ORDER:
        if status in seen:
            return status
    return "skipped" if not seen else sorted(seen)[0]


def eta_seconds(
    elapsed: float, rows_done: t.Optional[int], previous: t.Optional[t.Mapping[str, t.Any]]
) -> t.Optional[float]:
    """Estimated seconds left for a running step, from the same step in the previous run (``duration_s`` and, when
    both runs report rows, ``rows``): by rows when rows are known, else by duration. None when nothing is known."""
    if not previous:
        return None
    prev_duration = previous.get("duration_s")
    prev_rows = previous.get("rows")
    if rows_done and isinstance(prev_rows, int) and prev_rows > rows_done and elapsed > 0:
        return (prev_rows - rows_done) / (rows_done / elapsed)
    if isinstance(prev_duration, (int, float)) and prev_duration > elapsed:
        return float(prev_duration) - elapsed
    return None


def format_duration(seconds: t.Optional[float]) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return "%.1fs" % seconds
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return "%dm%02ds" % (minutes, secs)
    hours, minutes = divmod(minutes, 60)
    return "%dh%02dm%02ds" % (hours, minutes, secs)


def maintenance_window(
    plays: t.Sequence[t.Mapping[str, t.Any]], steps: t.Sequence[t.Mapping[str, t.Any]]
) -> t.Optional[t.Dict[str, t.Any]]:
    """From the start of the first step of the first play named like "... maintenance on ..." to the end of the last
    play named like "... maintenance off ..." that ran after it (case-insensitive). None when no such play ran.
    ``open`` is true when maintenance was switched on and no "maintenance off" play ran after it."""
    on_play = None
    for play in plays:
        if "maintenance on" in str(play.get("name", "")).lower():
            on_play = play
            break
    if on_play is None:
        return None
    on_steps = [s for s in steps if s.get("play_index") == on_play.get("index")]
    started = on_steps[0]["started"] if on_steps else on_play.get("started")
    off_end = None
    for play in plays:
        if play.get("index", 0) > on_play.get("index", 0) and "maintenance off" in str(play.get("name", "")).lower():
            play_steps = [s for s in steps if s.get("play_index") == play.get("index")]
            ends = [s["started"] + (s.get("duration_s") or 0.0) for s in play_steps]
            off_end = round(max(ends), 3) if ends else play.get("finished")
    window = {"started": started, "finished": off_end, "open": off_end is None}  # type: t.Dict[str, t.Any]
    window["duration_s"] = round(off_end - started, 3) if off_end is not None and started is not None else None
    return window


def totals(steps: t.Sequence[t.Mapping[str, t.Any]]) -> t.Dict[str, int]:
    out = {"steps": len(steps)}
    for status in STATUS_ORDER:
        out[status] = sum(1 for s in steps if s.get("status") == status)
    return out


def to_json(report: t.Mapping[str, t.Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=True, default=str) + "\n"


# ------------------------------------------------------------------------------------------------------ HTML
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#212121;background:#fafafa}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555;font-size:13px}.badge{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;
font-weight:600;font-size:13px}table{border-collapse:collapse;font-size:13px;margin:6px 0;background:#fff}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f0f0f0}
td.num{text-align:right;font-variant-numeric:tabular-nums}.s{font-weight:600}
svg{background:#fff;border:1px solid #ddd}pre{background:#fff;border:1px solid #ddd;padding:8px;font-size:12px;
overflow:auto;max-height:360px}.legend span{display:inline-block;margin-right:12px;font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
"""


def _e(value: t.Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _badge(status: str) -> str:
    return '<span class="badge" style="background:%s">%s</span>' % (STATUS_COLOURS.get(status, "#607d8b"), _e(status))


def timeline_svg(
    steps: t.Sequence[t.Mapping[str, t.Any]], duration: float, window: t.Optional[t.Mapping[str, t.Any]] = None
) -> str:
    """An inline SVG Gantt chart: one row per step, a bar from its start for its duration, coloured by result."""
    label_w, chart_w, row_h, top = 330, 640, 16, 24
    ends = [s["started"] + (s.get("duration_s") or 0.0) for s in steps]
    total = max([float(duration or 0.0), 0.001] + ends)
    height = top + row_h * max(len(steps), 1) + 10
    width = label_w + chart_w + 70
    scale = chart_w / total
    parts = [
        '<svg width="%d" height="%d" viewBox="0 0 %d %d" role="img" '
        'aria-label="timeline of the run">' % (width, height, width, height)
    ]
    if window and window.get("started") is not None:
        end = window.get("finished") if window.get("finished") is not None else total
        x = label_w + window["started"] * scale
        w = max((end - window["started"]) * scale, 1.0)
        parts.append(
            '<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="#fff3e0" stroke="#ffb74d">'
            "<title>maintenance window %s</title></rect>"
            % (x, top - 6, w, height - top, _e(format_duration(end - window["started"])))
        )
        parts.append('<text x="%.1f" y="%d" font-size="10" fill="#e65100">maintenance</text>' % (x + 2, top - 8))
    for tick in range(5):
        seconds = total * tick / 4
        x = label_w + seconds * scale
        parts.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#eee"/>' % (x, top - 4, x, height - 6))
        parts.append(
            '<text x="%.1f" y="12" font-size="10" fill="#777" text-anchor="middle">%s</text>'
            % (x, _e(format_duration(seconds)))
        )
    for i, step in enumerate(steps):
        y = top + i * row_h
        name = "%s / %s" % (step.get("play", ""), step.get("name", ""))
        label = name if len(name) <= 52 else name[:51] + "\u2026"
        status = str(step.get("status", "ok"))
        start = float(step.get("started") or 0.0)
        dur = float(step.get("duration_s") or 0.0)
        x = label_w + start * scale
        w = max(dur * scale, 1.5)
        parts.append('<text x="4" y="%d" font-size="11" fill="#333">%s</text>' % (y + 11, _e(label)))
        parts.append(
            '<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s">'
            "<title>%s: %s, started +%s, took %s</title></rect>"
            % (
                x,
                y + 2,
                w,
                row_h - 4,
                STATUS_COLOURS.get(status, "#607d8b"),
                _e(name),
                _e(status),
                _e(format_duration(start)),
                _e(format_duration(dur)),
            )
        )
        parts.append(
            '<text x="%.1f" y="%d" font-size="10" fill="#555">%s</text>' % (x + w + 3, y + 11, _e(format_duration(dur)))
        )
    parts.append("</svg>")
    return "".join(parts)


def _table(headers: t.Sequence[str], rows: t.Iterable[t.Sequence[t.Any]], numeric: t.Sequence[int] = ()) -> str:
    out = ["<table><tr>", "".join("<th>%s</th>" % _e(h) for h in headers), "</tr>"]
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = ' class="num"' if i in numeric else ""
            cells.append("<td%s>%s</td>" % (cls, cell))
        out.append("<tr>%s</tr>" % "".join(cells))
    out.append("</table>")
    return "".join(out)


def _json_block(value: t.Any) -> str:
    return "<pre>%s</pre>" % _e(json.dumps(value, indent=2, sort_keys=True, default=str))


def _looks_like_hash(key: str, value: t.Any) -> bool:
    if not isinstance(value, str) or len(value) <= SHORT_HASH:
        return False
    named = any(word in key.lower() for word in ("checksum", "hash", "digest", "sha"))
    return named or bool(re.match(r"^[0-9a-fA-F]{24,}$", value))


def short_hash(value: t.Any) -> str:
    """A checksum shortened to its first characters, the full value on hover (HTML)."""
    text = "" if value is None else str(value)
    if len(text) <= SHORT_HASH:
        return "<code>%s</code>" % _e(text)
    return '<code title="%s">%s\u2026</code>' % (_e(text), _e(text[:SHORT_HASH]))


def _cell(key: str, value: t.Any) -> str:
    return short_hash(value) if _looks_like_hash(key, value) else _e(value)


def _details_table(tables: t.Sequence[t.Tuple[str, t.Dict[str, t.Any]]]) -> str:
    """One row per table, one column per detail key (rows, checksum, seconds, ...)."""
    keys = []  # type: t.List[str]
    for _name, details in tables:
        for key in details:
            if key not in keys and key not in ("name", "table"):
                keys.append(key)
    numeric = [i + 1 for i, key in enumerate(keys) if key in ("rows", "bytes", "seconds", "source_rows", "target_rows")]
    return _table(
        ["table"] + keys,
        ([_e(name)] + [_cell(k, details.get(k, "")) for k in keys] for name, details in tables),
        numeric=numeric,
    )


def _results_html(results: t.Sequence[t.Mapping[str, t.Any]]) -> str:
    parts = []
    copies = [
        r
        for r in results
        if "total_rows" in r["data"] or (short_action(r.get("action", "")) == "data_copy" and "tables" in r["data"])
    ]
    checks = [r for r in results if short_action(r.get("action", "")) == "integrity_check"]
    diffs = [r for r in results if "differences" in r["data"]]
    backups = [r for r in results if "backup_id" in r["data"] or short_action(r.get("action", "")) == "backup"]
    http = [r for r in results if "http" in r["data"]]
    published = [r for r in results if REPORT_KEY in r["data"]]
    swaps = [
        r
        for r in results
        if any(k in r["data"] for k in ANY_PGSHIFT_KEYS) or short_action(r.get("action", "")) in ("swap", "rollback")
    ]
    if diffs:
        parts.append("<h2>Schema changes</h2>")
        for r in diffs:
            data = r["data"]
            more = data.get("differences_total")
            parts.append(
                "<p>%s on %s: %d difference(s)%s</p>"
                % (
                    _e(r["step"]),
                    _e(r["host"]),
                    more or len(data["differences"]),
                    " (first %d shown)" % MAX_DIFFERENCES if more else "",
                )
            )
            parts.append(_json_block(data["differences"]))
    if copies:
        parts.append("<h2>Rows copied</h2>")
        for r in copies:
            data = r["data"]
            parts.append(
                "<p>%s on %s: <b>%s</b> rows in total</p>"
                % (_e(r["step"]), _e(r["host"]), _e(data.get("total_rows", "-")))
            )
            tables = table_rows(data.get("tables"))
            if tables:
                parts.append(_details_table(tables))
    if checks:
        parts.append("<h2>Integrity checks</h2>")
        for r in checks:
            data = r["data"]
            ok = data.get("ok")
            parts.append(
                "<p>%s on %s: %s</p>"
                % (_e(r["step"]), _e(r["host"]), _badge("ok" if ok else "failed") if ok is not None else "-")
            )
            tables = table_rows(data.get("tables"))
            if tables:
                parts.append(_details_table(tables))
            if data.get("mismatches"):
                parts.append("<p>Mismatches:</p>" + _json_block(data["mismatches"]))
    if backups:
        parts.append("<h2>Backups</h2>")
        parts.append(
            _table(
                ("step", "host", "backup id", "path", "manifest", "size (bytes)"),
                (
                    (
                        _e(r["step"]),
                        _e(r["host"]),
                        _e(r["data"].get("backup_id")),
                        _e(r["data"].get("path")),
                        _e(r["data"].get("manifest_path")),
                        _e(r["data"].get("size_bytes")),
                    )
                    for r in backups
                ),
                numeric=(5,),
            )
        )
    if http:
        parts.append("<h2>HTTP checks</h2>")
        parts.append(
            _table(
                ("step", "host", "url", "status", "elapsed (s)"),
                (
                    (
                        _e(r["step"]),
                        _e(r["host"]),
                        _e(r["data"]["http"]["url"]),
                        _e(r["data"]["http"]["status"]),
                        _e(r["data"]["http"]["elapsed"]),
                    )
                    for r in http
                ),
            )
        )
    if swaps:
        parts.append("<h2>Swap and rollback</h2>")
        for r in swaps:
            data = {k: r["data"][k] for k in SWAP_KEYS if k in r["data"]}
            parts.append(
                "<p><b>%s</b> on %s: %s</p>"
                % (_e(r["step"]), _e(r["host"]), _e(swap_sentence(short_action(r.get("action", "")), data)))
            )
    if published:
        parts.append("<h2>Published by the playbook</h2>")
        for r in published:
            parts.append("<p>%s on %s</p>%s" % (_e(r["step"]), _e(r["host"]), _json_block(r["data"][REPORT_KEY])))
    return "".join(parts)


def swap_sentence(action: str, data: t.Mapping[str, t.Any]) -> str:
    """What a swap or rollback result says, as a sentence for people."""
    out = []  # type: t.List[str]
    if action == "swap" or "swapped" in data:
        if data.get("swapped"):
            out.append("The rebuilt database became production")
            if data.get("previous"):
                out[-1] += "; the previous production database is kept as %s" % data["previous"]
            out[-1] += "."
        elif "swapped" in data:
            out.append("The swap did not happen: production was not renamed.")
    if action == "rollback" or "actions" in data:
        run = " of run %s" % data["run_id"] if data.get("run_id") else ""
        actions = [str(a) for a in data.get("actions") or []]
        if data.get("refused"):
            out.append("The swap-back%s was refused: the new database stays production." % run)
        elif actions:
            who = "Run %s rolled back" % data["run_id"] if data.get("run_id") else "Rolled back"
            out.append("%s: %s." % (who, "; ".join(actions)))
        elif "actions" in data:
            out.append("Nothing to roll back%s: production had not been changed." % run)
        if data.get("kept"):
            out.append("The new database is kept as %s." % data["kept"])
        if data.get("message"):
            out.append(str(data["message"]).rstrip(".") + ".")
    if "undone" in data and not out:
        undone = data["undone"]
        if isinstance(undone, list):
            out.append("Undone: %s." % ("; ".join(str(u) for u in undone) or "nothing"))
        else:
            out.append("Undone." if undone else "Nothing was undone.")
    if "journal" in data and not out:
        out.append("Recorded in the run journal.")
    return " ".join(out) or "No change reported."


def _last(results: t.Sequence[t.Mapping[str, t.Any]], action: str, key: str) -> t.Any:
    for r in reversed(results):
        if short_action(str(r.get("action", ""))) == action and key in (r.get("data") or {}):
            return r["data"][key]
    return None


def headline(report: t.Mapping[str, t.Any]) -> t.Dict[str, t.Any]:
    """The figures a person asks first: migrations applied, rows carried, backup and its verification, the previous
    database kept as, the window. The playbook's published summary (``pgshift_report``) wins, so the report and the
    printed summary cannot disagree; otherwise the module results; the window is the report's (the journal's)."""
    results = report.get("results") or []
    published = {}  # type: t.Dict[str, t.Any]
    for r in results:
        if isinstance((r.get("data") or {}).get(REPORT_KEY), dict):
            published = r["data"][REPORT_KEY]

    def pick(key: str, action: str, result_key: str) -> t.Any:
        value = published.get(key)
        return value if value not in (None, "") else _last(results, action, result_key)

    verified = published.get("backup_verified") or (
        _last(results, "backup_verify", "level") if _last(results, "backup_verify", "verified") else None
    )
    window = report.get("maintenance_window") or {}
    return {
        "production_database": pick("production_database", "preflight", "production_database"),
        "migrations_applied": pick("migrations_applied", "preflight", "migrations_to_apply"),
        "total_rows": pick("total_rows", "data_copy", "total_rows"),
        "backup": pick("backup", "backup", "path"),
        "backup_verified": verified or None,
        "previous_database": pick("previous_database", "swap", "previous"),
        "window_seconds": window.get("duration_s"),
        "window_source": window.get("source", "plays") if window else None,
        "window_open": bool(window.get("open")) if window else False,
    }


def rollback_command(report: t.Mapping[str, t.Any], database: t.Any) -> str:
    """The exact command that puts production back from the journal after this run."""
    parts = ["ansible-playbook", "playbooks/rollback.yml"]
    for inventory in report.get("inventory") or []:
        parts += ["-i", str(inventory)]
    parts += ["-e", "pgshift_run_id=%s" % report.get("run_id")]
    if database:
        parts += ["-e", "pgshift_confirm=%s" % database]
    return " ".join(parts)


def next_steps(report: t.Mapping[str, t.Any], head: t.Mapping[str, t.Any]) -> t.List[str]:
    """What to do after a run that did not succeed; [] after a successful one."""
    if report.get("status") == "ok" or report.get("check_mode"):
        return []
    results = report.get("results") or []
    failures = [f for f in report.get("failures") or [] if not f.get("rescued")]
    rescued = [f for f in report.get("failures") or [] if f.get("rescued")]
    first = (rescued or failures or [{}])[0]
    out = []  # type: t.List[str]
    if first:
        out.append("It failed at %r on %s: %s" % (first.get("step"), first.get("host"), first.get("msg")))
    refused = _last(results, "rollback", "refused")
    actions = _last(results, "rollback", "actions")
    rollback_failed = any(
        short_action(str(s.get("action", ""))) == "rollback" and s.get("status") in ("failed", "unreachable")
        for s in report.get("steps") or []
    )
    command = rollback_command(report, head.get("production_database"))
    if refused:
        out.append(
            "The swap-back was refused, so the new database stays production (see the rollback message above). "
            "Fix forward, or swap back deliberately with: %s -e pgshift_swap_back_force=true" % command
        )
    elif actions is not None and not rollback_failed:
        undone = "; ".join(str(a) for a in actions) or "nothing had changed"
        out.append(
            "Production was put back (%s). Fix the cause above and run the release again. To check that nothing is "
            "left to undo (it is idempotent): %s" % (undone, command)
        )
    else:
        out.append("Put production back from the run journal now: %s" % command)
        out.append("When even that fails, restore the verified backup: playbooks/restore_backup.yml (see README.md).")
    return out


def _headline_html(report: t.Mapping[str, t.Any]) -> str:
    head = headline(report)
    migrations = head["migrations_applied"]
    if isinstance(migrations, list):
        migrations_text = "%d (%s)" % (len(migrations), ", ".join(str(m) for m in migrations)) if migrations else "none"
    else:
        migrations_text = str(migrations) if migrations not in (None, "") else "-"
    rows = head["total_rows"]
    try:
        rows_text = format(int(rows), ",")
    except (TypeError, ValueError):
        rows_text = "-"
    backup = head["backup"] or "-"
    if head["backup"]:
        backup += " (verified: %s)" % head["backup_verified"] if head["backup_verified"] else " (NOT verified)"
    window = head["window_seconds"]
    if window is not None:
        source = "measured by the run journal" if head["window_source"] == "journal" else "from the plays' timings"
        window_text = "%s (%s)" % (format_duration(float(window)), source)
    elif head["window_open"]:
        window_text = "opened and not closed by this run (see the failures and what to do next)"
    else:
        window_text = "-"
    items = [
        ("production database", head["production_database"] or "-"),
        ("migrations applied", migrations_text),
        ("rows carried", rows_text),
        ("backup", backup),
        ("previous database kept as", head["previous_database"] or "-"),
        ("window", window_text),
    ]
    parts = ['<h2>Headline</h2><table class="headline">']
    parts += ["<tr><th>%s</th><td>%s</td></tr>" % (_e(k), _e(v)) for k, v in items]
    parts.append("</table>")
    steps = next_steps(report, head)
    if steps:
        parts.append("<h2>What to do next</h2><ol>")
        for step in steps:
            if "ansible-playbook " in step:
                text, _sep, command = step.partition(": ansible-playbook ")
                if _sep:
                    step_html = "%s:<br><code>ansible-playbook %s</code>" % (_e(text), _e(command))
                else:
                    step_html = _e(step)
            else:
                step_html = _e(step)
            parts.append("<li>%s</li>" % step_html)
        parts.append("</ol>")
    return "".join(parts)


def render_html(report: t.Mapping[str, t.Any]) -> str:
    """The report as one self-contained HTML page: inline CSS and SVG, no script, no external reference."""
    steps = report.get("steps") or []
    status = str(report.get("status", "unknown"))
    window = report.get("maintenance_window")
    title = "pgshift run: %s" % report.get("playbook", "")
    parts = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        "<title>%s</title><style>%s</style></head><body>" % (_e(title), _CSS),
        "<h1>%s %s</h1>" % (_e(title), _badge("ok" if status == "ok" else "failed")),
        '<p class="meta">run %s &middot; started %s &middot; finished %s &middot; took %s%s</p>'
        % (
            _e(report.get("run_id")),
            _e(report.get("started")),
            _e(report.get("finished")),
            _e(format_duration(report.get("duration_s"))),
            " &middot; check mode" if report.get("check_mode") else "",
        ),
    ]
    tot = report.get("totals") or {}
    parts.append(
        "<p>%s</p>" % " &middot; ".join("%s %s" % (_e(k), _e(tot.get(k, 0))) for k in ("steps",) + STATUS_ORDER)
    )
    if window:
        if window.get("open"):
            parts.append(
                '<p><b>Maintenance window:</b> opened at +%s and <b>not closed</b> by a "maintenance off" play.</p>'
                % _e(format_duration(window.get("started")))
            )
        else:
            parts.append(
                "<p><b>Maintenance window:</b> +%s to +%s, <b>%s</b>.</p>"
                % (
                    _e(format_duration(window.get("started"))),
                    _e(format_duration(window.get("finished"))),
                    _e(format_duration(window.get("duration_s"))),
                )
            )
    parts.append(_headline_html(report))
    parts.append("<h2>Timeline</h2>")
    parts.append(
        '<p class="legend">%s</p>'
        % "".join(
            '<span><i style="background:%s"></i>%s</span>' % (c, _e(s))
            for s, c in STATUS_COLOURS.items()
            if s != "running"
        )
    )
    parts.append(timeline_svg(steps, float(report.get("duration_s") or 0.0), window))
    failures = report.get("failures") or []
    if failures:
        parts.append("<h2>Failures</h2>")
        parts.append(
            _table(
                ("step", "host", "message"),
                ((_e(f.get("step")), _e(f.get("host")), _e(f.get("msg"))) for f in failures),
            )
        )
    rollback = report.get("rollback") or {}
    if rollback.get("rescue_entered"):
        parts.append("<h2>Rolled back</h2>")
        parts.append(
            _table(
                ("rescue step", "play", "status", "hosts"),
                (
                    (
                        _e(s.get("name")),
                        _e(s.get("play")),
                        _badge(str(s.get("status"))),
                        _e(", ".join(sorted(s.get("hosts") or {}))),
                    )
                    for s in rollback.get("steps") or []
                ),
            )
        )
    parts.append(_results_html(report.get("results") or []))
    parts.append("<h2>Plays</h2>")
    parts.append(
        _table(
            ("#", "play", "status", "started", "took"),
            (
                (
                    _e(p.get("index")),
                    _e(p.get("name")),
                    _badge(str(p.get("status"))),
                    "+" + _e(format_duration(p.get("started"))),
                    _e(format_duration(p.get("duration_s"))),
                )
                for p in report.get("plays") or []
            ),
            numeric=(0,),
        )
    )
    parts.append("<h2>Steps</h2>")
    parts.append(
        _table(
            ("#", "play", "step", "action", "status", "started", "took", "rows"),
            (
                (
                    _e(s.get("index")),
                    _e(s.get("play")),
                    _e(s.get("name"))
                    + (" <i>(rescue)</i>" if s.get("rescue") else "")
                    + (" <i>(handler)</i>" if s.get("handler") else ""),
                    _e(s.get("action")),
                    _badge(str(s.get("status"))),
                    "+" + _e(format_duration(s.get("started"))),
                    _e(format_duration(s.get("duration_s"))),
                    _e(s.get("rows") if s.get("rows") is not None else ""),
                )
                for s in steps
            ),
            numeric=(0, 7),
        )
    )
    hosts = report.get("hosts") or {}
    if hosts:
        keys = ("ok", "changed", "failures", "unreachable", "skipped", "rescued", "ignored")
        parts.append("<h2>Hosts</h2>")
        parts.append(
            _table(
                ("host",) + keys,
                ([_e(h)] + [_e(hosts[h].get(k, 0)) for k in keys] for h in sorted(hosts)),
                numeric=range(1, 8),
            )
        )
    parts.append('<p class="meta">%s</p></body></html>\n' % _e(SCHEMA))
    return "".join(parts)
