"""Type changes that alter production's values, and columns dev makes GENERATED: the data plan counts every changed
row and refuses unless the mapping accepts the change; the proof compares production's original values, so a copy
that changed a value is caught; values that do not convert at all are all counted."""

from __future__ import annotations

import os
import typing as t

import data_support as ds
import pytest

PROD = r"""
CREATE SCHEMA shop;
CREATE TABLE shop.prices (id integer PRIMARY KEY, amount numeric(10,4), even numeric(10,4));
INSERT INTO shop.prices SELECT i, CASE WHEN i % 10 = 0 THEN i + 0.1234 ELSE i + 0.25 END, i + 0.5
  FROM generate_series(1, 50) i;
INSERT INTO shop.prices VALUES (51, NULL, NULL);
CREATE TABLE events (id integer PRIMARY KEY, at timestamptz, day timestamptz);
INSERT INTO events SELECT i,
  timestamptz '2024-05-01 00:00+00' + i * interval '1 day'
    + CASE WHEN i % 6 = 0 THEN interval '3 hours 5 minutes' ELSE interval '0' END,
  timestamptz '2024-05-01 00:00+00' + i * interval '1 day'
  FROM generate_series(1, 40) i;
CREATE TABLE measures (id integer PRIMARY KEY, x double precision, y double precision);
INSERT INTO measures SELECT i, CASE WHEN i % 7 = 0 THEN i + 0.123456789012 ELSE i + 0.5 END, i + 0.25
  FROM generate_series(1, 30) i;
CREATE TABLE docs (id integer PRIMARY KEY, body json, clean json);
INSERT INTO docs SELECT i, CASE i
    WHEN 1 THEN '{"a":1,"a":1}'
    WHEN 2 THEN '[{"k":1},{"k":1,"k":2}]'
    WHEN 3 THEN '{"x":{"y":{"k":1, "k" : 2}}}'
    ELSE '{"b": 1,   "a": [1, 2, {"c": "d", "e": 1.50}]}' END::json,
  '{  "z":1, "a" : {"b":2, "c": [ {"k": 1}, {"k": 2} ]}}'::json
  FROM generate_series(1, 20) i;
CREATE TABLE stamps (id integer PRIMARY KEY, at timestamp(6), plain timestamp(6));
INSERT INTO stamps SELECT i,
  timestamp '2024-01-01 10:00:00' + i * interval '1 minute'
    + CASE WHEN i % 5 = 0 THEN interval '0.123456 seconds' ELSE interval '0' END,
  timestamp '2024-01-01 10:00:00' + i * interval '1 minute'
  FROM generate_series(1, 25) i;
CREATE TABLE flags (id integer PRIMARY KEY, answer text, tf text);
INSERT INTO flags SELECT i, CASE i WHEN 1 THEN 'yes' WHEN 2 THEN 'yes' WHEN 3 THEN 'no' WHEN 4 THEN 'on'
  ELSE (ARRAY['t', 'f'])[1 + i % 2] END, (ARRAY['t', 'f'])[1 + i % 2]
  FROM generate_series(1, 20) i;
CREATE TABLE lines (id integer PRIMARY KEY, qty integer, price numeric(8,2), total numeric);
INSERT INTO lines SELECT i, i, 2.50, i * 2.50 + CASE WHEN i % 8 = 0 THEN 1 ELSE 0 END FROM generate_series(1, 30) i;
CREATE TABLE lines_ok (id integer PRIMARY KEY, qty integer, price numeric(8,2), total numeric);
INSERT INTO lines_ok SELECT i, i, 2.50, i * 2.50 FROM generate_series(1, 30) i;
CREATE TABLE names (id integer PRIMARY KEY, n varchar(10));
INSERT INTO names SELECT i, 'name ' || i FROM generate_series(1, 30) i;
CREATE TABLE tags (id integer PRIMARY KEY, label text);
CREATE TABLE doubled (id integer PRIMARY KEY, v numeric, w numeric);
CREATE TABLE counters (id integer PRIMARY KEY, n bigint);
INSERT INTO counters SELECT i, CASE WHEN i = 3 THEN 123456789012 ELSE i END FROM generate_series(1, 10) i;
INSERT INTO doubled SELECT i, i, 2 * i FROM generate_series(1, 10) i;
INSERT INTO tags SELECT i, (ARRAY['ab', 'abc', 'x', 'abcde'])[1 + i % 4] FROM generate_series(1, 12) i;
"""

DEV = r"""
CREATE SCHEMA shop;
CREATE TABLE shop.prices (id integer PRIMARY KEY, amount numeric(10,2), even numeric(10,2));
CREATE TABLE events (id integer PRIMARY KEY, at date, day date);
CREATE TABLE measures (id integer PRIMARY KEY, x real, y real);
CREATE TABLE docs (id integer PRIMARY KEY, body jsonb, clean jsonb);
CREATE TABLE stamps (id integer PRIMARY KEY, at timestamp(0), plain timestamp(0));
CREATE TABLE flags (id integer PRIMARY KEY, answer boolean, tf boolean);
CREATE TABLE lines (id integer PRIMARY KEY, qty integer, price numeric(8,2),
  total numeric GENERATED ALWAYS AS (qty * price) STORED);
CREATE TABLE lines_ok (id integer PRIMARY KEY, qty integer, price numeric(8,2),
  total numeric GENERATED ALWAYS AS (qty * price) STORED);
CREATE TABLE names (id integer PRIMARY KEY, n text);
CREATE TABLE tags (id integer PRIMARY KEY, label character(5));  -- blank-padded: the padding is no change
-- a generation expression the source cannot evaluate (the function exists in dev only): refused, count unknown
CREATE FUNCTION twice(numeric) RETURNS numeric IMMUTABLE LANGUAGE sql AS 'SELECT $1 * 2';
CREATE TABLE doubled (id integer PRIMARY KEY, v numeric, w numeric GENERATED ALWAYS AS (twice(v)) STORED);
-- bigint -> real: 123456789012 becomes 1.2345679e+11, which does not read back as bigint: refused, count unknown
CREATE TABLE counters (id integer PRIMARY KEY, n real);
"""

# (table key, column, kind, rows seeded to change, the qualified name the message gives)
LOSSY = [
    ("shop.prices", "amount", "value_change", 5, "shop.prices.amount"),
    ("events", "at", "value_change", 6, "public.events.at"),
    ("measures", "x", "value_change", 4, "public.measures.x"),
    ("docs", "body", "value_change", 3, "public.docs.body"),
    ("stamps", "at", "value_change", 5, "public.stamps.at"),
    ("flags", "answer", "value_change", 4, "public.flags.answer"),
    ("lines", "total", "generated", 3, "public.lines.total"),
]
ACCEPTED = "accept_change: [doubled.w, counters.n, %s]\n" % ", ".join(
    "%s.%s" % (tb, col) for tb, col, _k, _n, _w in LOSSY
)


@pytest.fixture(scope="module")
def world(pg: t.Any, tmp_path_factory: t.Any) -> t.Iterator[t.Tuple[ds.Carry, str, str]]:
    tmp = str(tmp_path_factory.mktemp("values"))
    source = ds.create_db(pg)
    dev = ds.create_db(pg)
    ds.run_sql(pg, source, PROD)
    ds.run_sql(pg, dev, DEV)
    carry = ds.prepare(pg, source, dev, tmp)
    # The pinned sessions must hide servers that disagree about TimeZone and float output.
    ds.execute(pg, "postgres", "ALTER DATABASE \"%s\" SET TimeZone = 'America/New_York'" % source)
    ds.execute(pg, "postgres", "ALTER DATABASE \"%s\" SET TimeZone = 'Asia/Kolkata'" % carry.target)
    # (the two databases' settings differ on purpose: integrity_check runs without database_state comparison here)
    ds.execute(pg, "postgres", 'ALTER DATABASE "%s" SET extra_float_digits = 0' % carry.target)
    strict = os.path.join(tmp, "strict.yml")
    accepted = os.path.join(tmp, "accepted.yml")
    with open(strict, "w", encoding="utf-8") as handle:
        handle.write("tables: {}\n")
    with open(accepted, "w", encoding="utf-8") as handle:
        handle.write(ACCEPTED)
    yield carry, strict, accepted
    for name in (carry.target, source, dev):
        ds.drop_db(pg, name)


def test_lossy_type_changes_and_generated_columns_are_refused(world: t.Any, run_module: t.Callable[..., t.Any]) -> None:
    carry, strict, _accepted = world
    res = run_module("data_plan", carry.common_args(strict))
    assert res.failed
    found = {(p["table"], p["column"]): p for p in res.result["problems"]}
    unknowns = {("doubled", "w"), ("counters", "n")}
    assert set(found) == {(tb, col) for tb, col, _k, _n, _w in LOSSY} | unknowns, res.result["problems"]
    unknown = found.pop(("doubled", "w"))
    assert unknown["kind"] == "generated" and unknown["count"] is None
    assert "twice(v)" in unknown["message"] and "public.doubled.w" in unknown["message"]
    unknown = found.pop(("counters", "n"))
    assert unknown["kind"] == "value_change" and unknown["count"] is None
    assert "public.counters.n" in unknown["message"] and "do not read back as bigint" in unknown["message"]
    for table, column, kind, rows, where in LOSSY:
        problem = found[(table, column)]
        assert problem["kind"] == kind and problem["count"] == rows, problem
        assert problem["message"].startswith("%d source rows of %s " % (rows, where)), problem
        assert len(problem["sample"]) == min(rows, 5) and all(" -> " in s for s in problem["sample"])
        assert problem["message"] in res.result["msg"]
    assert "1.1234 -> 1.12" not in found[("shop.prices", "amount")]["sample"]  # only id % 10 = 0 were seeded
    assert "10.1234 -> 10.12" in found[("shop.prices", "amount")]["sample"]
    assert "2024-05-07 03:05:00+00 -> 2024-05-07" in found[("events", "at")]["sample"]
    assert "yes -> t" in found[("flags", "answer")]["sample"] and "no -> f" in found[("flags", "answer")]["sample"]
    assert '{"a":1,"a":1} -> {"a": 1}' in found[("docs", "body")]["sample"]
    assert "21.00 -> 20.00" in found[("lines", "total")]["sample"]  # stored -> what the expression computes
    # lossless changes of the same kinds are not refused, and a generated column equal to production is listed
    assert res.result["accepted_changes"] == [
        {
            "table": "lines_ok",
            "column": "total",
            "kind": "generated",
            "count": 0,
            "sample": [],
            "accepted_by": "no row differs",
        }
    ]
    assert res.result["notes"] == []


def test_accepted_changes_copy_and_prove_and_the_proof_compares_original_values(
    world: t.Any, run_module: t.Callable[..., t.Any]
) -> None:
    carry, strict, accepted = world
    cluster, target = carry.cluster, carry.target
    plan = run_module("data_plan", carry.common_args(accepted))
    assert not plan.failed, plan.output
    changes = {(c["table"], c["column"]): c for c in plan.result["accepted_changes"]}
    for table, column, kind, rows, _where in LOSSY:
        assert changes[(table, column)]["count"] == rows and changes[(table, column)]["kind"] == kind
        assert changes[(table, column)]["accepted_by"] == "accept_change"
    assert changes[("lines_ok", "total")]["accepted_by"] == "no row differs"
    for unknown in [("doubled", "w"), ("counters", "n")]:
        assert changes[unknown]["count"] is None and changes[unknown]["accepted_by"] == "accept_change"
    assert plan.result["notes"] == []
    # production's stored values of a column dev makes generated may also be accepted as a loss of that column
    by_loss = os.path.join(os.path.dirname(accepted), "by_loss.yml")
    with open(by_loss, "w", encoding="utf-8") as handle:
        handle.write(ACCEPTED.replace(", lines.total", "") + "accept_loss:\n  columns: [lines.total]\n")
    plan = run_module("data_plan", carry.common_args(by_loss))
    assert not plan.failed, plan.output
    lines = [c for c in plan.result["accepted_changes"] if c["table"] == "lines"]
    assert lines == [dict(changes[("lines", "total")], accepted_by="accept_loss")]
    assert plan.result["notes"] == [] and plan.result["lost"]["columns"] == []

    copy = run_module("data_copy", dict(carry.common_args(accepted), jobs=2))
    assert not copy.failed, copy.output
    assert ds.execute(cluster, target, "SELECT amount, even FROM shop.prices WHERE id = 10") == [
        (ds_decimal("10.12"), ds_decimal("10.50"))
    ]
    assert ds.execute(cluster, target, "SELECT total FROM lines WHERE id = 8") == [(ds_decimal("20.00"),)]
    carry.post_data()

    proof = run_module("integrity_check", dict(carry.common_args(accepted), jobs=2, database_state=False))
    assert not proof.failed, proof.output
    assert all(v["match"] for v in proof.result["tables"].values())
    proved = {(c["table"], c["column"]): c["count"] for c in proof.result["accepted_changes"]}
    expected: t.Dict[t.Tuple[str, str], t.Optional[int]] = {(tb, col): n for tb, col, _k, n, _w in LOSSY}
    assert proved == {**expected, ("doubled", "w"): None, ("counters", "n"): None}

    # Without the acceptance the same copy is caught: production's original values differ from the target's.
    res = run_module("integrity_check", dict(carry.common_args(strict), database_state=False))
    assert res.failed
    differing = {m["table"]: m for m in res.result["mismatches"]}
    assert set(differing) == {"shop.prices", "events", "measures", "docs", "stamps", "flags", "counters"}
    assert "do not read back" in differing["counters"]["error"] and "table counters differs" in res.result["msg"]
    assert {"key": "(10)", "difference": "changed"} in differing["shop.prices"]["first_differing_keys"]
    assert [k["key"] for k in differing["docs"]["first_differing_keys"]] == ["(1)", "(2)", "(3)"]
    assert len(differing["measures"]["first_differing_keys"]) == 4

    # A value changed in the target after the copy, in a cast column, is caught (lossless and accepted columns).
    for statement, restore, table, key in [
        (
            "UPDATE shop.prices SET even = 3.49 WHERE id = 3",
            "UPDATE shop.prices SET even = 3.50 WHERE id = 3",
            "shop.prices",
            "(3)",
        ),
        (
            "UPDATE shop.prices SET amount = 20.13 WHERE id = 20",
            "UPDATE shop.prices SET amount = 20.12 WHERE id = 20",
            "shop.prices",
            "(20)",
        ),
        (
            "UPDATE docs SET clean = clean || '{\"z\": 2}' WHERE id = 7",
            "UPDATE docs SET clean = clean || '{\"z\": 1}' WHERE id = 7",
            "docs",
            "(7)",
        ),
        (
            "UPDATE events SET day = day + 1 WHERE id = 9",
            "UPDATE events SET day = day - 1 WHERE id = 9",
            "events",
            "(9)",
        ),
    ]:
        ds.execute(cluster, target, statement)
        try:
            res = run_module("integrity_check", dict(carry.common_args(accepted), database_state=False))
            assert res.failed, statement
            [mismatch] = res.result["mismatches"]
            assert mismatch["table"] == table
            assert mismatch["first_differing_keys"] == [{"key": key, "difference": "changed"}]
        finally:
            ds.execute(cluster, target, restore)
    assert not run_module("integrity_check", dict(carry.common_args(accepted), database_state=False)).failed


def ds_decimal(text: str) -> t.Any:
    import decimal

    return decimal.Decimal(text)


CAST_PROD = r"""
CREATE SCHEMA sales;
CREATE TABLE sales.codes (id integer PRIMARY KEY, code text);
INSERT INTO sales.codes SELECT i, CASE
    WHEN i IN (17, 1400, 2999) THEN ''
    WHEN i % 397 = 0 THEN 'x' || i
    ELSE i::text END
  FROM generate_series(1, 3000) i;
"""
CAST_DEV = "CREATE SCHEMA sales; CREATE TABLE sales.codes (id integer PRIMARY KEY, code integer);"


def test_every_value_that_does_not_convert_is_counted(
    pg: t.Any, tmp_path: t.Any, run_module: t.Callable[..., t.Any]
) -> None:
    source = ds.create_db(pg)
    dev = ds.create_db(pg)
    carry = None
    try:
        ds.run_sql(pg, source, CAST_PROD)
        ds.run_sql(pg, dev, CAST_DEV)
        carry = ds.prepare(pg, source, dev, str(tmp_path))
        mapping = str(tmp_path / "mapping.yml")
        with open(mapping, "w", encoding="utf-8") as handle:
            handle.write("tables: {}\n")
        res = run_module("data_plan", carry.common_args(mapping))
        assert res.failed
        [problem] = res.result["problems"]
        # 3 empty strings and 7 'x<n>' (n = 397 ... 2779): 10 rows, 8 distinct values, over three probe batches
        assert problem["kind"] == "cast" and problem["count"] == 10, problem
        assert problem["table"] == "sales.codes" and problem["column"] == "code"
        assert problem["message"].startswith("10 source rows of sales.codes.code (8 distinct values) do not convert")
        assert len(problem["sample"]) == 5 and set(problem["sample"]) <= {""} | {"x%d" % (397 * k) for k in range(1, 8)}
        assert "invalid input syntax for type integer" in problem["message"]
    finally:
        for name in ([carry.target] if carry else []) + [source, dev]:
            ds.drop_db(pg, name)
