# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""The release plan an approver reads: what a run would do, built from what Preflight already found.

Parts, in the order they are shown: the schema difference production -> dev (``_schema.diff_snapshots`` with the
mapping's renames, as ``schema_diff`` computes it), the data plan per table (the ``data_plan`` module's result: rows,
columns carried, renamed, cast, computed, filled with a default, accepted losses and changes), what is refused and
why, the backup that will be taken, the forecast window (the rehearsal gate's, when there is one) and the hosts and
services touched, in order.

``render_text`` is the ``--diff`` form, ``render_html`` the page written beside ``plan.json`` (every value escaped).
The plan file keeps the release inputs' hashes (``inputs``, ``inputs_hash``) that ``release_inputs`` compares on a
later real run.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import typing as t

from ansible_collections.pgshift.ops.plugins.module_utils import _schema as schema
from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, connect
from ansible_collections.pgshift.ops.plugins.module_utils._schema_sources import renames_from_mapping

PLAN_VERSION = 1
Plan = t.Dict[str, t.Any]

# diff_snapshots' change names, as the approver reads them (production -> dev)
_CHANGE_GROUPS = (("added", "added"), ("changed", "changed"), ("removed", "dropped"), ("renamed", "renamed"))


# ---------------------------------------------------------------------------------------------------------- schema
def schema_changes(prod: ConnParams, dev: ConnParams, mapping_file: t.Optional[str]) -> t.Dict[str, t.Any]:
    """The schema difference production -> dev, grouped as added / changed / dropped / renamed objects."""
    snaps = []
    for params in (prod, dev):
        with contextlib.closing(connect(params, application_name="pgshift release_plan")) as conn:
            snaps.append(schema.take_snapshot(conn))
    renames: t.Dict[str, str] = {}
    if mapping_file:
        renames = renames_from_mapping(mapping_file, snaps[0], snaps[1])
    differences = schema.diff_snapshots(snaps[0], snaps[1], ignore=("owners", "grants"), renames=renames)
    return group_differences(differences)


def group_differences(differences: t.Sequence[t.Dict[str, t.Any]]) -> t.Dict[str, t.Any]:
    out: t.Dict[str, t.Any] = {group: [] for _change, group in _CHANGE_GROUPS}
    group_of = dict(_CHANGE_GROUPS)
    for d in differences:
        group = group_of[d["change"]]
        if group == "renamed":
            out[group].append({"kind": d["kind"], "from": d["before"], "to": d["after"]})
        elif group == "changed":
            out[group].append(
                {
                    "kind": d["kind"],
                    "name": d["name"],
                    "attribute": d["attribute"],
                    "before": schema._short(d["before"]),
                    "after": schema._short(d["after"]),
                }
            )
        else:
            entry = d["after"] if group == "added" else d["before"]
            detail = schema._describe(d["kind"], entry)
            out[group].append({"kind": d["kind"], "name": d["name"], "detail": "" if detail == d["kind"] else detail})
    out["report"] = schema.render_report(differences, "production", "dev")
    out["count"] = len(differences)
    return out


# ------------------------------------------------------------------------------------------------------------ data
def data_tables(data_plan: t.Mapping[str, t.Any]) -> t.List[t.Dict[str, t.Any]]:
    """One entry per table of the new database, from the data_plan module's ``plan``."""
    tables = []
    for entry in data_plan.get("plan") or []:
        carried, renamed, cast, computed = [], [], [], []
        for column in entry.get("columns") or []:
            carried.append(column["name"])
            if "expression" in column:
                computed.append({"column": column["name"], "expression": column["expression"]})
                continue
            if column.get("from") is not None and column["from"] != column["name"]:
                renamed.append({"from": column["from"], "to": column["name"]})
            if column.get("cast"):
                cast.append(
                    {"column": column["name"], "from_type": column.get("source_type"), "to_type": column["target_type"]}
                )
        tables.append(
            {
                "table": entry["table"],
                "source": entry.get("source"),
                "new": bool(entry.get("new")),
                "ledger": bool(entry.get("ledger")),
                "rows": max(int(entry.get("rows_estimate") or 0), 0) if entry.get("source") else 0,
                "bytes": int(entry.get("bytes_estimate") or 0),
                "carried": carried,
                "renamed": renamed,
                "cast": cast,
                "computed": computed,
                "defaulted": list(entry.get("defaulted") or []),
                "generated": list(entry.get("generated") or []),
            }
        )
    tables.sort(key=lambda e: e["table"])
    return tables


def refusals(data_plan: t.Mapping[str, t.Any]) -> t.List[t.Dict[str, t.Any]]:
    """What stops the release, and why: the data plan's problems and its unaccepted losses (or its failure)."""
    out: t.List[t.Dict[str, t.Any]] = []
    lost = data_plan.get("lost") or {}
    for table in lost.get("tables") or []:
        out.append(
            {
                "kind": "lost_table",
                "table": table,
                "column": None,
                "count": None,
                "reason": "production table %s has no destination in the dev schema; map it (tables.<t>.from) or "
                "list it under accept_loss.tables" % table,
            }
        )
    for column in lost.get("columns") or []:
        out.append(
            {
                "kind": "lost_column",
                "table": column.rsplit(".", 1)[0] if "." in column else None,
                "column": column,
                "count": None,
                "reason": "production column %s has no destination in the dev schema; map it (columns.<c>.from) or "
                "list it under accept_loss.columns" % column,
            }
        )
    for problem in data_plan.get("problems") or []:
        out.append(
            {
                "kind": problem.get("kind"),
                "table": problem.get("table"),
                "column": problem.get("column"),
                "count": problem.get("count"),
                "reason": problem.get("message") or str(problem),
            }
        )
    if data_plan.get("failed") and not out:
        out.append({"kind": "data_plan", "table": None, "column": None, "count": None, "reason": data_plan.get("msg")})
    return out


# ------------------------------------------------------------------------------------------------------------ steps
def steps(
    *,
    db_host: str,
    production: str,
    next_database: str,
    web_hosts: t.Sequence[str],
    app_services: t.Mapping[str, t.Sequence[str]],
    restart_batch: int,
    api_checks: t.Sequence[str],
    app_tier: bool,
) -> t.List[t.Dict[str, t.Any]]:
    """The hosts and services a run touches, in the order it touches them."""
    out: t.List[t.Dict[str, t.Any]] = []

    def add(phase: str, hosts: t.Sequence[str], what: str) -> None:
        out.append({"order": len(out) + 1, "phase": phase, "hosts": list(hosts), "what": what})

    add(
        "backup",
        [db_host],
        "verified backup of %s (pg_dump, restored into a throwaway database and compared)" % production,
    )
    apps = sorted(app_services)
    if app_tier:
        if web_hosts:
            add("maintenance on", web_hosts, "maintenance page on")
        for host in apps:
            add("maintenance on", [host], "stop %s" % (", ".join(app_services[host]) or "no service"))
    add(
        "maintenance on", [db_host], "application connections to %s blocked (connection limit 0) and ended" % production
    )
    add(
        "rebuild", [db_host], "%s built from the dev schema, production's rows copied, integrity proven" % next_database
    )
    add(
        "swap",
        [db_host],
        "%s becomes the previous copy, %s becomes %s (one transaction)" % (production, next_database, production),
    )
    if app_tier:
        batch = max(int(restart_batch), 1)
        for start in range(0, len(apps), batch):
            group = apps[start : start + batch]
            services = ["%s: %s" % (h, ", ".join(app_services[h]) or "no service") for h in group]
            add("restart", group, "start %s, health checked" % "; ".join(services))
        if api_checks:
            add("checks", [db_host], "API checks: %s" % ", ".join(api_checks))
    add("checks", [db_host], "query check against the baseline (when a query file is given)")
    if app_tier and web_hosts:
        add("maintenance off", web_hosts, "maintenance page off")
    return out


# ------------------------------------------------------------------------------------------------------------ build
def build(
    *,
    inputs: t.Mapping[str, t.Any],
    data_plan: t.Mapping[str, t.Any],
    schema_part: t.Mapping[str, t.Any],
    production: t.Mapping[str, t.Any],
    backup: t.Mapping[str, t.Any],
    forecast: t.Optional[t.Mapping[str, t.Any]],
    step_list: t.Sequence[t.Mapping[str, t.Any]],
) -> Plan:
    tables = data_tables(data_plan)
    lost = data_plan.get("lost") or {}
    return {
        "plan_version": PLAN_VERSION,
        "inputs": dict(inputs.get("inputs") or {}),
        "inputs_hash": inputs.get("inputs_hash"),
        "production": dict(production),
        "schema": dict(schema_part),
        "data": {
            "tables": tables,
            "rows": sum(e["rows"] for e in tables),
            "accepted_losses": {
                "tables": list(lost.get("accepted_tables") or []),
                "columns": list(lost.get("accepted_columns") or []),
            },
            "accepted_changes": [
                {
                    "table": c.get("table"),
                    "column": c.get("column"),
                    "kind": c.get("kind"),
                    "count": c.get("count"),
                    "accepted_by": c.get("accepted_by"),
                    "sample": list(c.get("sample") or [])[:3],
                }
                for c in data_plan.get("accepted_changes") or []
            ],
            "only_in_production": dict(data_plan.get("only_in_production") or {}),
            "notes": list(data_plan.get("notes") or []),
        },
        "refused": refusals(data_plan),
        "backup": dict(backup),
        "window": dict(forecast) if forecast else None,
        "steps": [dict(s) for s in step_list],
    }


# ------------------------------------------------------------------------------------------------------------ render
def _mb(value: t.Any) -> str:
    return "%.1f MB" % (int(value or 0) / 1048576.0)


def _table_line(e: t.Mapping[str, t.Any]) -> str:
    parts = []
    if e["new"]:
        parts.append("new table, no rows")
    elif e["source"] != e["table"]:
        parts.append("from %s" % e["source"])
    if not e["new"]:
        parts.append("%d rows" % e["rows"])
        parts.append("%d columns carried" % len(e["carried"]))
    parts += ["renamed %s -> %s" % (r["from"], r["to"]) for r in e["renamed"]]
    parts += ["cast %s %s -> %s" % (c["column"], c["from_type"], c["to_type"]) for c in e["cast"]]
    parts += ["computed %s = %s" % (c["column"], c["expression"]) for c in e["computed"]]
    if e["defaulted"] and not e["new"]:
        parts.append("default filled: %s" % ", ".join(e["defaulted"]))
    if e["generated"]:
        parts.append("generated: %s" % ", ".join(e["generated"]))
    return "%s: %s" % (e["table"], "; ".join(parts))


def render_text(plan: Plan) -> str:
    """The plan as the --diff output shows it."""
    out = ["pgshift release plan for production %s" % plan["production"].get("database", "?"), ""]
    sc = plan["schema"]
    out.append("SCHEMA production -> dev: %d difference(s)" % sc.get("count", 0))
    for d in sc.get("added", []):
        out.append(("  + %s %s %s" % (d["kind"], d["name"], d["detail"])).rstrip())
    for d in sc.get("changed", []):
        out.append("  ~ %s %s: %s %s -> %s" % (d["kind"], d["name"], d["attribute"], d["before"], d["after"]))
    for d in sc.get("dropped", []):
        out.append(("  - %s %s %s" % (d["kind"], d["name"], d["detail"])).rstrip())
    for d in sc.get("renamed", []):
        out.append("  > %s %s renamed to %s" % (d["kind"], d["from"], d["to"]))
    data = plan["data"]
    out += ["", "DATA per table (%d rows in all, estimated from the catalog):" % data["rows"]]
    out += ["  " + _table_line(e) for e in data["tables"]]
    losses = data["accepted_losses"]
    out.append("  accepted losses: %s" % (", ".join(losses["tables"] + losses["columns"]) or "none"))
    changes = [
        "%s.%s (%s, %s rows, %s)" % (c["table"], c["column"], c["kind"], c["count"], c["accepted_by"])
        for c in data["accepted_changes"]
    ]
    out.append("  accepted value changes: %s" % (", ".join(changes) or "none"))
    for kind, names in sorted(data["only_in_production"].items()):
        if names:
            out.append("  only in production, not carried (%s): %s" % (kind, ", ".join(str(n) for n in names)))
    out += [
        "",
        "REFUSED: %s" % ("nothing" if not plan["refused"] else "%d problem(s), the run stops" % len(plan["refused"])),
    ]
    out += ["  ! %s" % r["reason"] for r in plan["refused"]]
    b = plan["backup"]
    out += [
        "",
        "BACKUP: up to %s (production's size) in %s, format directory, verified by %s"
        % (_mb(b.get("estimate_bytes")), b.get("dir"), b.get("verify_level")),
    ]
    window = plan["window"]
    out.append(
        "WINDOW: %s" % (window.get("text") or json.dumps(window, sort_keys=True) if window else "no rehearsal forecast")
    )
    out += ["", "STEPS (hosts and services, in order):"]
    out += ["  %d. %s [%s]: %s" % (s["order"], s["phase"], ", ".join(s["hosts"]), s["what"]) for s in plan["steps"]]
    return "\n".join(out) + "\n"


def _cell(value: t.Any) -> str:
    return "<td>%s</td>" % html.escape(str(value), quote=True)


def render_html(plan: Plan) -> str:
    """A self-contained page; every value from the databases or the inventory is escaped."""
    e = html.escape
    title = "pgshift plan: production %s" % plan["production"].get("database", "?")
    body = ["<h1>%s</h1>" % e(title)]
    if plan["refused"]:
        body.append('<h2 class="refused">Refused: the run stops</h2><ul>')
        body += ["<li>%s</li>" % e(str(r["reason"])) for r in plan["refused"]]
        body.append("</ul>")
    sc = plan["schema"]
    body.append("<h2>Schema, production to dev (%d differences)</h2><table>" % int(sc.get("count", 0)))
    body.append("<tr><th>change</th><th>kind</th><th>object</th><th>detail</th></tr>")
    for d in sc.get("added", []):
        body.append("<tr>" + "".join(_cell(v) for v in ("added", d["kind"], d["name"], d["detail"])) + "</tr>")
    for d in sc.get("changed", []):
        detail = "%s: %s -> %s" % (d["attribute"], d["before"], d["after"])
        body.append("<tr>" + "".join(_cell(v) for v in ("changed", d["kind"], d["name"], detail)) + "</tr>")
    for d in sc.get("dropped", []):
        body.append("<tr>" + "".join(_cell(v) for v in ("dropped", d["kind"], d["name"], d["detail"])) + "</tr>")
    for d in sc.get("renamed", []):
        body.append("<tr>" + "".join(_cell(v) for v in ("renamed", d["kind"], d["from"], "to " + d["to"])) + "</tr>")
    body.append("</table>")
    data = plan["data"]
    body.append("<h2>Data per table (%d rows)</h2><table>" % data["rows"])
    body.append(
        "<tr><th>table</th><th>from</th><th>rows</th><th>columns carried</th><th>renamed</th><th>cast</th>"
        "<th>computed</th><th>default filled</th></tr>"
    )
    for t_ in data["tables"]:
        cells = (
            t_["table"],
            "(new)" if t_["new"] else t_["source"],
            t_["rows"],
            ", ".join(t_["carried"]),
            ", ".join("%s -> %s" % (r["from"], r["to"]) for r in t_["renamed"]),
            ", ".join("%s %s -> %s" % (c["column"], c["from_type"], c["to_type"]) for c in t_["cast"]),
            ", ".join("%s = %s" % (c["column"], c["expression"]) for c in t_["computed"]),
            ", ".join(t_["defaulted"]),
        )
        body.append("<tr>" + "".join(_cell(v) for v in cells) + "</tr>")
    body.append("</table>")
    losses = data["accepted_losses"]
    body.append("<p>Accepted losses: %s</p>" % e(", ".join(losses["tables"] + losses["columns"]) or "none"))
    changes = [
        "%s.%s (%s, %s rows)" % (c["table"], c["column"], c["kind"], c["count"]) for c in data["accepted_changes"]
    ]
    body.append("<p>Accepted value changes: %s</p>" % e(", ".join(changes) or "none"))
    b = plan["backup"]
    body.append(
        "<h2>Backup</h2><p>up to %s in %s, verified by %s</p>"
        % (e(_mb(b.get("estimate_bytes"))), e(str(b.get("dir"))), e(str(b.get("verify_level"))))
    )
    window = plan["window"]
    body.append("<h2>Window</h2><p>%s</p>" % e(str(window.get("text")) if window else "no rehearsal forecast"))
    body.append("<h2>Steps</h2><ol>")
    body += ["<li>%s [%s]: %s</li>" % (e(s["phase"]), e(", ".join(s["hosts"])), e(s["what"])) for s in plan["steps"]]
    body.append("</ol>")
    body.append("<h2>Inputs</h2><p>inputs hash %s</p>" % e(str(plan.get("inputs_hash"))))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>%s</title>'
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}.refused{color:#a00}</style>"
        "</head><body>\n%s\n</body></html>\n" % (e(title), "\n".join(body))
    )


# ------------------------------------------------------------------------------------------------------------ files
def _write_private(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def write(plan: Plan, plan_file: str) -> t.List[str]:
    """plan.json (the inputs' hashes kept for release_inputs) and plan.html beside it (same name), both 0600."""
    html_file = os.path.splitext(os.path.abspath(plan_file))[0] + ".html"
    _write_private(plan_file, json.dumps(plan, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    _write_private(html_file, render_html(plan))
    return [plan_file, html_file]
