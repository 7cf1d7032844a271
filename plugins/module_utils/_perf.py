# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""Performance validation: a team's named queries, timed with EXPLAIN ANALYZE, compared with a baseline.

The query set is a YAML file the team keeps beside its application::

    queries:
      - name: customer by id
        sql: SELECT to_jsonb(c) FROM customers c WHERE id = %(id)s
        params: {id: 7}
        expect_rows: 1

Each query runs ``warmup + runs`` times as ``EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)`` inside a transaction that is
always rolled back (``READ ONLY`` unless writes are allowed, never under check mode). The server's own execution time
of each run gives the median and spread; the plan gives its shape (node types, relations, the indexes used).

Against a baseline (the same file format, taken from production before the release or from the rehearsal), a query
slower than ``warn_ratio`` is a warning, slower than ``fail_ratio`` an error, and an index the baseline plan used
that the new plan does not use is an error. Times below ``noise_floor_ms`` are compared as that floor, so that
sub-millisecond jitter is never a finding. The database itself is checked too: invalid indexes, and tables with no
statistics since their data was loaded (``pg_stat_user_tables``), which are then analyzed when ``analyze`` is on.
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import typing as t

from ansible_collections.pgshift.ops.plugins.module_utils._backup import make_private_dir, write_file_atomic
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError
from ansible_collections.pgshift.ops.plugins.module_utils._identity import qualified_key

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # pragma: no cover - reported by the connection layer
    psycopg2 = None  # type: ignore[assignment]

BASELINE_FORMAT = "pgshift.perf-baseline/1"
_INDEX_NODES = ("Index Scan", "Index Only Scan", "Bitmap Index Scan")


class Query(t.NamedTuple):
    name: str
    sql: str
    params: t.Any
    expect_rows: t.Optional[int]
    description: str


# --------------------------------------------------------------------------------------------- the query file
def load_queries(path: str, only: t.Optional[t.Sequence[str]] = None) -> t.List[Query]:
    """Read and check the query file; ``only`` keeps the named queries (all of them must exist)."""
    import yaml  # noqa: PLC0415 - ansible-core depends on PyYAML

    try:
        with open(path, "rb") as handle:
            data = yaml.safe_load(handle.read().decode("utf-8"))
    except OSError as exc:
        raise PgShiftError("cannot read the query file %r: %s" % (path, exc.strerror)) from None
    except yaml.YAMLError as exc:
        raise PgShiftError("the query file %r is not valid YAML: %s" % (path, str(exc).splitlines()[0])) from None
    entries = data.get("queries") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise PgShiftError("the query file %r must have a non-empty list under 'queries'" % path)
    queries: t.List[Query] = []
    seen: t.Set[str] = set()
    for index, entry in enumerate(entries, 1):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("name"), str)
            or not isinstance(entry.get("sql"), str)
        ):
            raise PgShiftError("query #%d of %r needs a 'name' and an 'sql' (strings)" % (index, path))
        name = entry["name"]
        if name in seen:
            raise PgShiftError("query name %r appears twice in %r" % (name, path))
        seen.add(name)
        params = entry.get("params")
        if params is not None and not isinstance(params, (list, dict)):
            raise PgShiftError("query %r: 'params' must be a list (for %%s) or a mapping (for %%(name)s)" % name)
        expect = entry.get("expect_rows")
        if expect is not None and (isinstance(expect, bool) or not isinstance(expect, int) or expect < 0):
            raise PgShiftError("query %r: 'expect_rows' must be a whole number" % name)
        queries.append(Query(name, entry["sql"].strip().rstrip(";"), params, expect, str(entry.get("description", ""))))
    if only:
        missing = sorted(set(only) - seen)
        if missing:
            raise PgShiftError("queries not in %r: %s" % (path, ", ".join(missing)))
        queries = [q for q in queries if q.name in set(only)]
    return queries


# --------------------------------------------------------------------------------------------- plans
def plan_shape(plan: t.Mapping[str, t.Any]) -> t.Dict[str, t.Any]:
    """Node types (in plan order, without repeats), relations and indexes of an EXPLAIN (FORMAT JSON) plan."""
    node_types: t.List[str] = []
    relations: t.Set[str] = set()
    indexes: t.Set[str] = set()
    stack = [plan]
    while stack:
        node = stack.pop()
        kind = str(node.get("Node Type", "?"))
        if kind not in node_types:
            node_types.append(kind)
        if node.get("Relation Name"):
            relations.add(str(node["Relation Name"]))
        if node.get("Index Name") and kind in _INDEX_NODES:
            indexes.add(str(node["Index Name"]))
        stack.extend(reversed(list(node.get("Plans", []) or [])))
    return {"node_types": node_types, "relations": sorted(relations), "indexes": sorted(indexes)}


def summarize_runs(times: t.Sequence[float]) -> t.Dict[str, float]:
    """Median, spread (max - min) and median absolute deviation of execution times in ms."""
    median = statistics.median(times)
    return {
        "median_ms": round(median, 4),
        "min_ms": round(min(times), 4),
        "max_ms": round(max(times), 4),
        "spread_ms": round(max(times) - min(times), 4),
        "mad_ms": round(statistics.median(abs(x - median) for x in times), 4),
    }


# --------------------------------------------------------------------------------------------- the database
def table_statistics(cur: t.Any) -> t.List[t.Dict[str, t.Any]]:
    """Ordinary tables and materialized views of user schemas, with when they were last analyzed."""
    cur.execute(
        "SELECT s.schemaname, s.relname, s.last_analyze, s.last_autoanalyze, s.n_live_tup, s.n_mod_since_analyze, "
        "c.reltuples FROM pg_catalog.pg_stat_user_tables s JOIN pg_catalog.pg_class c ON c.oid = s.relid "
        "WHERE c.relkind IN ('r', 'm') ORDER BY 1, 2"
    )
    out = []
    for schema, name, manual, auto, live, modified, reltuples in cur.fetchall():
        last = max([x for x in (manual, auto) if x is not None], default=None)
        out.append(
            {
                "table": qualified_key(schema, name),
                "last_analyzed": last.isoformat() if last else None,
                "live_rows": int(live or 0),
                "modified_since_analyze": int(modified or 0),
                "reltuples": float(reltuples),
            }
        )
    return out


def not_analyzed(stats: t.Sequence[t.Mapping[str, t.Any]], since: t.Optional[str] = None) -> t.List[str]:
    """Tables with no statistics for their current data.

    A table needs statistics when it was never analyzed, or analyzed before ``since`` (the load), or when more rows
    changed since its last analyze than autovacuum's default threshold (50 + 10%% of the rows) allows. A table that
    was never analyzed and holds no rows is fine.
    """
    cutoff = _parse_time(since) if since else None
    out = []
    for entry in stats:
        last = entry["last_analyzed"]
        modified = entry["modified_since_analyze"]
        if last is None:
            if entry["live_rows"] > 0 or modified > 0:
                out.append(entry["table"])
            continue
        if cutoff is not None and _parse_time(last) < cutoff:
            out.append(entry["table"])
        elif modified > 50 + 0.1 * max(entry["reltuples"], entry["live_rows"], 0):
            out.append(entry["table"])
    return out


def invalid_indexes(cur: t.Any) -> t.List[str]:
    cur.execute(
        "SELECT n.nspname, c.relname FROM pg_catalog.pg_index i"
        " JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE NOT i.indisvalid OR NOT i.indisready ORDER BY 1, 2"
    )
    return [qualified_key(r[0], r[1]) for r in cur.fetchall()]


def _parse_time(value: str) -> datetime.datetime:
    parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed


def measure(cur: t.Any, query: Query, runs: int, warmup: int, read_only: bool, timeout_ms: int) -> t.Dict[str, t.Any]:
    """Run one query ``warmup + runs`` times under EXPLAIN ANALYZE; every run in its own rolled-back transaction."""
    statement = sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}").format(sql.SQL(query.sql))
    times: t.List[float] = []
    planning: t.List[float] = []
    plan: t.Dict[str, t.Any] = {}
    conn = cur.connection
    for attempt in range(warmup + runs):
        try:
            cur.execute("SET TRANSACTION READ ONLY" if read_only else "SET TRANSACTION READ WRITE")
            cur.execute("SET LOCAL statement_timeout = %s", (str(int(timeout_ms)),))
            cur.execute(statement, query.params)
            document = cur.fetchone()[0]
        except psycopg2.Error as exc:
            conn.rollback()
            diag = getattr(exc, "diag", None)
            message = getattr(diag, "message_primary", None) or str(exc).strip().splitlines()[0]
            return {"error": message, "sqlstate": getattr(exc, "pgcode", None)}
        finally:
            if conn.status != psycopg2.extensions.STATUS_READY:
                conn.rollback()
        if isinstance(document, str):
            document = json.loads(document)
        top = document[0]
        if attempt >= warmup:
            times.append(float(top["Execution Time"]))
            planning.append(float(top.get("Planning Time", 0.0)))
            plan = top["Plan"]
    result: t.Dict[str, t.Any] = summarize_runs(times)
    result["runs_ms"] = [round(x, 4) for x in times]
    result["planning_median_ms"] = round(statistics.median(planning), 4)
    result["rows"] = int(plan.get("Actual Rows", 0))
    result["shared_hit_blocks"] = int(plan.get("Shared Hit Blocks", 0))
    result["shared_read_blocks"] = int(plan.get("Shared Read Blocks", 0))
    result["total_cost"] = float(plan.get("Total Cost", 0.0))
    result.update(plan_shape(plan))
    return result


# --------------------------------------------------------------------------------------------- comparing
def compare(
    current: t.Mapping[str, t.Mapping[str, t.Any]],
    baseline: t.Mapping[str, t.Mapping[str, t.Any]],
    warn_ratio: float,
    fail_ratio: float,
    noise_floor_ms: float,
) -> t.Tuple[t.List[t.Dict[str, t.Any]], t.List[str]]:
    """Findings of ``current`` against ``baseline`` (per query), and notes on what could not be compared."""
    findings: t.List[t.Dict[str, t.Any]] = []
    notes: t.List[str] = []
    for name, now in current.items():
        before = baseline.get(name)
        if before is None:
            notes.append("%s: not in the baseline, nothing to compare" % name)
            continue
        if before.get("error"):
            notes.append("%s: failed on the baseline (%s), nothing to compare" % (name, before["error"]))
            continue
        if now.get("error"):
            continue  # reported as an error finding already
        ratio = float(now["median_ms"]) / max(float(before["median_ms"]), noise_floor_ms)
        entry = {
            "query": name,
            "baseline_median_ms": before["median_ms"],
            "median_ms": now["median_ms"],
            "ratio": round(ratio, 3),
        }
        if ratio > fail_ratio:
            findings.append(dict(entry, kind="slower", severity="error", message=_slower(name, entry, fail_ratio)))
        elif ratio > warn_ratio:
            findings.append(dict(entry, kind="slower", severity="warning", message=_slower(name, entry, warn_ratio)))
        lost = sorted(set(before.get("indexes", [])) - set(now.get("indexes", [])))
        if lost:
            findings.append(
                {
                    "query": name,
                    "kind": "index_lost",
                    "severity": "error",
                    "indexes": lost,
                    "baseline_node_types": before.get("node_types", []),
                    "node_types": now.get("node_types", []),
                    "message": "%s: the plan no longer uses %s (baseline plan: %s; now: %s)"
                    % (
                        name,
                        ", ".join(lost),
                        " > ".join(before.get("node_types", [])),
                        " > ".join(now.get("node_types", [])),
                    ),
                }
            )
    return findings, notes


def _slower(name: str, entry: t.Mapping[str, t.Any], limit: float) -> str:
    return "%s: median %.3f ms against %.3f ms in the baseline (x%.2f, limit x%.2f)" % (
        name,
        entry["median_ms"],
        entry["baseline_median_ms"],
        entry["ratio"],
        limit,
    )


# --------------------------------------------------------------------------------------------- files
def read_baseline(path: str) -> t.Dict[str, t.Any]:
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read().decode("utf-8"))
    except OSError as exc:
        raise PgShiftError("cannot read the baseline %r: %s" % (path, exc.strerror)) from None
    except ValueError as exc:
        raise PgShiftError("the baseline %r is not valid JSON: %s" % (path, exc)) from None
    if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT or not isinstance(data.get("queries"), dict):
        raise PgShiftError("%r is not a perf_check baseline (format %s)" % (path, BASELINE_FORMAT))
    return data


def write_json(path: str, data: t.Mapping[str, t.Any]) -> None:
    """Write a JSON file 0600 (atomically) in a 0700 folder."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        make_private_dir(folder)
    write_file_atomic(path, (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8"))


# --------------------------------------------------------------------------------------------- the check
class Options(t.NamedTuple):
    queries_file: str
    only: t.Optional[t.Sequence[str]] = None
    runs: int = 5
    warmup: int = 1
    analyze: bool = True
    analyzed_since: t.Optional[str] = None
    baseline: t.Optional[str] = None
    baseline_out: t.Optional[str] = None
    output_file: t.Optional[str] = None
    warn_ratio: float = 1.5
    fail_ratio: float = 3.0
    noise_floor_ms: float = 1.0
    timeout_ms: int = 30000
    allow_writes: bool = False


def run_check(conn: t.Any, opts: Options, check_mode: bool = False) -> t.Dict[str, t.Any]:
    """The whole check on an open connection (autocommit off). Returns the result; never commits anything."""
    if opts.runs < 1 or opts.warmup < 0:
        raise PgShiftError("runs must be at least 1 and warmup at least 0")
    if not 1.0 <= opts.warn_ratio <= opts.fail_ratio:
        raise PgShiftError("ratios must satisfy 1 <= warn_ratio <= fail_ratio")
    queries = load_queries(opts.queries_file, opts.only)
    baseline = read_baseline(opts.baseline) if opts.baseline else None
    read_only = check_mode or not opts.allow_writes
    findings: t.List[t.Dict[str, t.Any]] = []
    statements: t.List[str] = []
    with conn.cursor() as cur:
        cur.execute("SELECT current_database(), current_setting('server_version')")
        database, version = cur.fetchone()
        conn.rollback()
        stats = table_statistics(cur)
        conn.rollback()
        missing_stats = not_analyzed(stats, opts.analyzed_since)
        analyzed = False
        if opts.analyze and not check_mode:
            autocommit = conn.autocommit
            conn.autocommit = True
            try:
                cur.execute("ANALYZE")
            finally:
                conn.autocommit = autocommit
            statements.append("ANALYZE")
            analyzed = True
        for table in missing_stats:
            findings.append(
                {
                    "kind": "not_analyzed",
                    "table": table,
                    "severity": "warning" if analyzed else "error",
                    "message": "%s had no statistics for its data%s"
                    % (table, ": analyzed now (the build should ANALYZE after the load)" if analyzed else ""),
                }
            )
        invalid = invalid_indexes(cur)
        conn.rollback()
        for index in invalid:
            findings.append(
                {"kind": "invalid_index", "index": index, "severity": "error", "message": "%s is not valid" % index}
            )
        results: t.Dict[str, t.Dict[str, t.Any]] = {}
        for query in queries:
            result = measure(cur, query, opts.runs, opts.warmup, read_only, opts.timeout_ms)
            result["sql"] = query.sql
            if query.description:
                result["description"] = query.description
            results[query.name] = result
            if result.get("error"):
                hint = " (writes are refused here: read-only run)" if result.get("sqlstate") == "25006" else ""
                findings.append(
                    {
                        "query": query.name,
                        "kind": "error",
                        "severity": "error",
                        "message": "%s failed: %s%s" % (query.name, result["error"], hint),
                    }
                )
            elif query.expect_rows is not None and result["rows"] != query.expect_rows:
                result["expect_rows"] = query.expect_rows
                findings.append(
                    {
                        "query": query.name,
                        "kind": "rows",
                        "severity": "error",
                        "expected": query.expect_rows,
                        "rows": result["rows"],
                        "message": "%s returned %d rows, %d expected" % (query.name, result["rows"], query.expect_rows),
                    }
                )
        conn.rollback()
    notes: t.List[str] = []
    if baseline is not None:
        compared, notes = compare(results, baseline["queries"], opts.warn_ratio, opts.fail_ratio, opts.noise_floor_ms)
        findings.extend(compared)
    errors = [f for f in findings if f["severity"] == "error"]
    taken = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    out: t.Dict[str, t.Any] = {
        "database": database,
        "server_version": version,
        "taken_at": taken,
        "queries": results,
        "findings": findings,
        "error_count": len(errors),
        "warning_count": len(findings) - len(errors),
        "ok": not errors,
        "notes": notes,
        "not_analyzed": missing_stats,
        "analyzed": analyzed,
        "invalid_indexes": invalid,
        "statements": statements,
        "read_only": read_only,
        "baseline": opts.baseline,
        "files_written": [],
    }
    files = []
    if opts.baseline_out:
        files.append(
            (
                opts.baseline_out,
                {
                    "format": BASELINE_FORMAT,
                    "database": database,
                    "server_version": version,
                    "taken_at": taken,
                    "runs": opts.runs,
                    "queries": results,
                },
            )
        )
    if opts.output_file:
        files.append((opts.output_file, dict(out, format="pgshift.perf-result/1")))
    for path, data in files:
        if not check_mode:
            write_json(path, data)
        out["files_written"].append(path)
    return out
