"""pgshift.ops.perf_check for real: baseline, a regression (an index dropped after the swap), check mode, writes."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import typing as t

import pgworld

QUERIES = """
queries:
  - name: lines of an order
    sql: SELECT * FROM lines WHERE order_id = %(id)s ORDER BY line_no
    params: {id: 42}
    expect_rows: 3
  - name: count
    sql: SELECT count(*) FROM lines
    expect_rows: 1
"""


def _setup(pg: pgworld.Cluster, database: str) -> None:
    with contextlib.closing(pg.connect(database)) as conn, conn.cursor() as cur:
        cur.execute(
            # autovacuum off on the test table: its statistics change only at the fixed points the tests choose
            # (the module's ANALYZE), never when autovacuum happens to run on a loaded machine
            "CREATE TABLE lines (order_id int NOT NULL, line_no int NOT NULL, qty int NOT NULL,"
            " CONSTRAINT lines_pkey PRIMARY KEY (order_id, line_no))"
            " WITH (autovacuum_enabled = false, toast.autovacuum_enabled = false);"
            "INSERT INTO lines SELECT o, l, 1 FROM generate_series(1, 5000) o, generate_series(1, 3) l;"
        )


def _args(pg: pgworld.Cluster, database: str, queries_file: str, **extra: t.Any) -> t.Dict[str, t.Any]:
    return dict(pg.conn(database), queries_file=queries_file, runs=3, **extra)


def test_baseline_then_index_dropped_after_the_swap_is_an_error(
    pg: pgworld.Cluster, new_db: t.Callable[..., str], run_module: t.Callable[..., t.Any], tmp_path: t.Any
) -> None:
    database = new_db()
    _setup(pg, database)
    queries = tmp_path / "queries.yml"
    queries.write_text(QUERIES)
    baseline = tmp_path / "perf" / "baseline.json"

    taken = run_module("perf_check", _args(pg, database, str(queries), baseline_out=str(baseline)))
    assert not taken.failed, taken.output[-3000:]
    assert taken.result["analyzed"] is True and taken.result["statements"] == ["ANALYZE"]
    assert "public.lines" in taken.result["not_analyzed"], "freshly loaded, never analyzed"
    lines = taken.result["queries"]["lines of an order"]
    assert lines["rows"] == 3 and "lines_pkey" in lines["indexes"] and len(lines["runs_ms"]) == 3
    assert lines["min_ms"] <= lines["median_ms"] <= lines["max_ms"]
    assert stat.S_IMODE(os.stat(baseline).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(baseline.parent).st_mode) == 0o700
    assert json.loads(baseline.read_text())["format"] == "pgshift.perf-baseline/1"
    assert pg.password not in taken.output

    # same database, same plans: no finding
    same = run_module("perf_check", _args(pg, database, str(queries), baseline=str(baseline)))
    assert not same.failed and same.result["ok"], same.output[-3000:]
    assert not [f for f in same.result["findings"] if f["severity"] == "error"]

    # the regression: the index the plan used is gone
    with contextlib.closing(pg.connect(database)) as conn, conn.cursor() as cur:
        cur.execute("ALTER TABLE lines DROP CONSTRAINT lines_pkey")
    regressed = run_module("perf_check", _args(pg, database, str(queries), baseline=str(baseline)))
    assert regressed.failed
    lost = [f for f in regressed.result["findings"] if f["kind"] == "index_lost"]
    assert lost and lost[0]["query"] == "lines of an order" and lost[0]["indexes"] == ["lines_pkey"]
    assert "no longer uses lines_pkey" in regressed.result["msg"]

    # only reported, when asked not to fail
    reported = run_module(
        "perf_check", _args(pg, database, str(queries), baseline=str(baseline), fail_on_findings=False)
    )
    assert not reported.failed and reported.result["ok"] is False and reported.result["error_count"] >= 1


def test_writes_are_refused_and_check_mode_changes_nothing(
    pg: pgworld.Cluster, new_db: t.Callable[..., str], run_module: t.Callable[..., t.Any], tmp_path: t.Any
) -> None:
    database = new_db()
    _setup(pg, database)
    queries = tmp_path / "queries.yml"
    queries.write_text(
        "queries:\n"
        "  - {name: sneaky write, sql: 'INSERT INTO lines VALUES (99999, 1, 1) RETURNING 1'}\n"
        "  - {name: wrong count, sql: SELECT 1 FROM lines WHERE order_id = 7, expect_rows: 5}\n"
    )
    out = tmp_path / "out.json"

    refused = run_module("perf_check", _args(pg, database, str(queries), output_file=str(out)))
    assert refused.failed
    kinds = {f["query"]: f["kind"] for f in refused.result["findings"] if "query" in f}
    assert kinds == {"sneaky write": "error", "wrong count": "rows"}
    assert "read-only" in refused.result["msg"]
    assert json.loads(out.read_text())["ok"] is False, "the result file is written also when the check fails"

    allowed = run_module("perf_check", _args(pg, database, str(queries), allow_writes=True, queries=["sneaky write"]))
    assert not allowed.failed, allowed.output[-2000:]

    check = run_module(
        "perf_check",
        _args(pg, database, str(queries), allow_writes=True, analyze=True, baseline_out=str(tmp_path / "b.json")),
        check=True,
    )
    assert check.result["analyzed"] is False and check.result["read_only"] is True
    assert not (tmp_path / "b.json").exists()
    with contextlib.closing(pg.connect(database)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM lines WHERE order_id = 99999")
        assert cur.fetchone()[0] == 0, "every run was rolled back"
        cur.execute("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'lines'")
        assert cur.fetchone()[0] is not None  # analyzed by the first (real) run, not by check mode
