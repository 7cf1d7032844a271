"""A dev schema of our own on top of a production one: renamed column, widened and narrowed types, new NOT NULL
column with a default, new table, dropped columns accepted and not accepted, a new foreign key, hostile identifiers,
and servers whose TimeZone differs."""

from __future__ import annotations

import os
import typing as t

import data_support as ds
import pytest

PROD = r"""
CREATE TABLE people (
  id integer PRIMARY KEY, name text, nick varchar(30), age integer, legacy_fax text, secret_note text,
  born timestamptz, score numeric(12,3), kind text
);
CREATE TABLE "we""ird" ("a.b" integer PRIMARY KEY, "With a space" text, "Ünïcode" text, "select" integer);
CREATE SCHEMA "a.b";
CREATE TABLE "a.b"."select" (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v double precision);
CREATE TABLE log (at timestamptz, msg text);
CREATE TABLE old_stuff (x integer);
CREATE TABLE "With a space" ("Ünïcode" text PRIMARY KEY, n integer);
INSERT INTO "With a space" SELECT 'k' || i, i FROM generate_series(1, 50) i;
INSERT INTO people SELECT i, 'Person ' || i, 'n' || i, 20 + i % 50, 'fax' || i, 'secret',
  timestamptz '2024-03-01 10:00+00' + i * interval '7 hours', i / 7.0, (ARRAY['a','b'])[1 + i % 2]
  FROM generate_series(1, 300) i;
INSERT INTO "we""ird" SELECT i, 'space ' || i, 'ü' || i || E' \\ "q" ''s', 1 + i % 300 FROM generate_series(1, 200) i;
INSERT INTO "a.b"."select" (v) SELECT i / 3.0 FROM generate_series(1, 150) i;
INSERT INTO log SELECT timestamptz '2024-01-01 00:00+00' + i * interval '1 minute', 'line ' || (i % 20)
  FROM generate_series(1, 400) i;
INSERT INTO old_stuff SELECT generate_series(1, 10);
"""

DEV = r"""
CREATE TYPE person_kind AS ENUM ('a', 'b', 'c');
CREATE TABLE people (
  id integer PRIMARY KEY, full_name text NOT NULL, nick varchar(10), age bigint, born timestamp,
  score numeric(10,4) CHECK (score < 100), kind person_kind, status text NOT NULL DEFAULT 'active',
  -- evaluated on the source with the value status will get (its default), not NULL
  CONSTRAINT status_known CHECK (status IS NOT NULL AND status IN ('active', 'gone'))
);
CREATE TABLE "we""ird" ("a.b" integer PRIMARY KEY, "With a space" text, "Ünïcode" text,
  "select" integer REFERENCES people (id));
CREATE SCHEMA "a.b";
CREATE TABLE "a.b"."select" (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v double precision,
  doubled double precision GENERATED ALWAYS AS (v * 2) STORED);
CREATE TABLE log (at timestamptz, msg text);
CREATE TABLE "Ünïcode" ("Ünïcode" text PRIMARY KEY, n integer);
CREATE TABLE badges (id serial PRIMARY KEY, person_id integer NOT NULL REFERENCES people (id), label text);
"""

MAPPING = """
tables:
  Ünïcode: {from: With a space}
  people:
    columns:
      full_name: {from: name}
accept_loss:
  tables: [old_stuff]
  columns: [people.legacy_fax%s]
"""


@pytest.fixture(scope="module")
def world(pg: t.Any, tmp_path_factory: t.Any) -> t.Iterator[t.Tuple[ds.Carry, str, str]]:
    tmp = str(tmp_path_factory.mktemp("schema"))
    source = ds.create_db(pg)
    dev = ds.create_db(pg)
    ds.run_sql(pg, source, PROD)
    ds.run_sql(pg, dev, DEV)
    carry = ds.prepare(pg, source, dev, tmp)
    # Servers that disagree about TimeZone and float output: the pinned sessions must hide it.
    ds.execute(pg, "postgres", "ALTER DATABASE \"%s\" SET TimeZone = 'America/New_York'" % source)
    ds.execute(pg, "postgres", "ALTER DATABASE \"%s\" SET TimeZone = 'Asia/Kolkata'" % carry.target)
    ds.execute(pg, "postgres", 'ALTER DATABASE "%s" SET extra_float_digits = 0' % carry.target)
    accepted = os.path.join(tmp, "accepted.yml")
    strict = os.path.join(tmp, "strict.yml")
    with open(accepted, "w", encoding="utf-8") as handle:
        handle.write(MAPPING % ", people.secret_note")
    with open(strict, "w", encoding="utf-8") as handle:
        handle.write(MAPPING % "")
    yield carry, accepted, strict
    for name in (carry.target, source, dev):
        ds.drop_db(pg, name)


def test_unaccepted_loss_fails_the_plan(world: t.Any, run_module: t.Callable[..., t.Any]) -> None:
    carry, _accepted, strict = world
    res = run_module("data_plan", carry.common_args(strict))
    assert res.failed
    assert res.result["lost"]["columns"] == ["people.secret_note"]
    assert res.result["lost"]["accepted_columns"] == ["people.legacy_fax"]
    assert res.result["lost"]["accepted_tables"] == ["old_stuff"]
    assert "people.secret_note" in res.result["msg"]
    copy = run_module("data_copy", carry.common_args(strict))
    assert copy.failed and "people.secret_note" in copy.result["msg"]
    assert int(ds.execute(carry.cluster, carry.target, "SELECT count(*) FROM people")[0][0]) == 0


def test_problems_reported_before_copy(world: t.Any, run_module: t.Callable[..., t.Any]) -> None:
    carry, accepted, _strict = world
    cluster, source = carry.cluster, carry.source
    bad = [
        "UPDATE people SET nick = 'much-too-long-nick' WHERE id = 5",
        "UPDATE people SET name = NULL WHERE id = 6",
        "UPDATE people SET score = 150 WHERE id = 7",
        "UPDATE people SET score = 1234567.125 WHERE id = 8",
        "UPDATE people SET kind = 'zzz' WHERE id = 9",
        'UPDATE "we""ird" SET "select" = 4242 WHERE "a.b" = 10',
        "INSERT INTO people VALUES (301, 'Person 1', 'd', 1, NULL, NULL, NULL, 1, 'a')",
    ]
    saved = ds.execute(cluster, source, "SELECT * FROM people WHERE id BETWEEN 5 AND 9 ORDER BY id")
    for statement in bad:
        ds.execute(cluster, source, statement)
    try:
        res = run_module(
            "data_plan",
            dict(
                carry.common_args(accepted),
                schema_source=carry.conn("dev"),
                post_data_constraints=[{"table": "people", "type": "u", "columns": ["full_name"]}],
            ),
        )
        assert res.failed
        found = {(p["table"], p["column"], p["kind"]) for p in res.result["problems"]}
        assert ("people", "nick", "too_long") in found
        assert ("people", "full_name", "not_null") in found
        assert ("people", None, "check") in found  # score < 100 evaluated on the mapped source values
        assert ("people", "score", "out_of_range") in found  # 1234567.125 does not fit numeric(10,4)
        assert ("people", "kind", "enum") in found
        assert ('"we""ird"', "select", "orphan") in found
        assert ("people", "full_name", "duplicate") in found  # from post_data_constraints
        assert res.result["notes"] == []
        too_long = next(p for p in res.result["problems"] if p["kind"] == "too_long")
        assert too_long["count"] == 1 and too_long["sample"] == ["much-too-long-nick"]
        enum = next(p for p in res.result["problems"] if p["kind"] == "enum")
        assert enum["sample"] == ["zzz"]
        orphan = next(p for p in res.result["problems"] if p["kind"] == "orphan")
        assert orphan["sample"] == ["(4242)"]
        assert int(ds.execute(cluster, carry.target, "SELECT count(*) FROM people")[0][0]) == 0
    finally:
        ds.execute(cluster, source, "DELETE FROM people WHERE id = 301")
        for row in saved:
            ds.execute(
                cluster,
                source,
                "UPDATE people SET name = %s, nick = %s, score = %s, kind = %s WHERE id = %s",
                [row[1], row[2], row[7], row[8], row[0]],
            )
        ds.execute(cluster, source, 'UPDATE "we""ird" SET "select" = 11 WHERE "a.b" = 10')


def test_copy_and_prove_with_changed_schema(world: t.Any, run_module: t.Callable[..., t.Any]) -> None:
    carry, accepted, _strict = world
    plan = run_module("data_plan", dict(carry.common_args(accepted), schema_source=carry.conn("dev")))
    assert not plan.failed, plan.output
    by_table = {p["table"]: p for p in plan.result["plan"]}
    people = {c["name"]: c for c in by_table["people"]["columns"]}
    assert people["full_name"]["from"] == "name" and people["full_name"]["cast"] is False
    assert people["age"] == {
        "name": "age",
        "from": "age",
        "source_type": "integer",
        "target_type": "bigint",
        "cast": True,
    }
    assert people["nick"]["target_type"] == "character varying(10)" and people["nick"]["cast"] is True
    assert by_table["people"]["defaulted"] == ["status"] and by_table["people"]["format"] == "text"
    assert by_table["badges"]["new"] is True
    assert by_table['"we""ird"']["format"] == "binary"
    assert by_table['"a.b".select']["generated"] == ["doubled"]
    assert plan.result["lost"] == {
        "tables": [],
        "columns": [],
        "accepted_tables": ["old_stuff"],
        "accepted_columns": ["people.legacy_fax", "people.secret_note"],
    }

    copy = run_module("data_copy", dict(carry.common_args(accepted), jobs=3))
    assert not copy.failed, copy.output
    assert copy.result["tables"]["people"]["rows"] == 300
    assert copy.result["tables"]['"we""ird"']["rows"] == 200
    assert copy.result["tables"]['"a.b".select']["rows"] == 150
    cluster, target = carry.cluster, carry.target
    assert ds.execute(
        cluster, target, 'SELECT "Ünïcode", doubled FROM "we""ird", "a.b"."select" WHERE "a.b" = 3 AND id = 3'
    ) == [('ü3 \\ "q" \'s', 2.0)]
    # born: timestamptz -> timestamp converted in UTC whatever the servers' TimeZone
    assert str(ds.execute(cluster, target, "SELECT born FROM people WHERE id = 1")[0][0]) == "2024-03-01 17:00:00"
    carry.post_data()
    # The two databases' TimeZone/extra_float_digits differ on purpose (above) and nothing carried the source's
    # database-level state here: this proves the data only (test_database_state.py proves the state).
    proof = run_module("integrity_check", dict(carry.common_args(accepted), jobs=2, database_state=False))
    assert not proof.failed, proof.output
    assert set(proof.result["tables"]) == {"people", '"we""ird"', '"a.b".select', "log", "badges", "Ünïcode"}
    assert proof.result["tables"]["Ünïcode"]["source"] == "With a space"
    assert proof.result["tables"]["Ünïcode"]["target_rows"] == 50
    assert all(v["match"] for v in proof.result["tables"].values())
    identity = ds.execute(cluster, target, 'INSERT INTO "a.b"."select" (v) VALUES (1) RETURNING id')[0][0]
    assert identity == 151
    ds.execute(cluster, target, 'DELETE FROM "a.b"."select" WHERE id = 151')

    # a duplicated row in log (no key): caught and named by its whole row
    ds.execute(cluster, target, "INSERT INTO log SELECT * FROM log WHERE msg = 'line 3' ORDER BY at LIMIT 1")
    try:
        res = run_module("integrity_check", carry.common_args(accepted))
        assert res.failed
        [mismatch] = res.result["mismatches"]
        assert mismatch["table"] == "log" and mismatch["target_rows"] == 401
        assert "line 3" in mismatch["first_differing_keys"][0]["key"]
        assert mismatch["first_differing_keys"][0]["difference"].startswith("duplicated in target")
        # a changed value in a hostile table is named by its key
        ds.execute(cluster, target, "DELETE FROM log WHERE ctid = (SELECT max(ctid) FROM log WHERE msg = 'line 3')")
        ds.execute(cluster, target, 'UPDATE "we""ird" SET "With a space" = \'x\' WHERE "a.b" = 17')
        res = run_module("integrity_check", carry.common_args(accepted))
        assert res.failed
        [mismatch] = res.result["mismatches"]
        assert mismatch["table"] == '"we""ird"' and mismatch["keyed_by"] == "(a.b)"
        assert mismatch["first_differing_keys"] == [{"key": "(17)", "difference": "changed"}]
    finally:
        ds.execute(cluster, target, 'UPDATE "we""ird" SET "With a space" = \'space 17\' WHERE "a.b" = 17')
