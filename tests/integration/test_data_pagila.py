"""Pagila (partitioned payment, enum and domain types, arrays, tsvector, bytea) carried into a dev schema of our own:
renamed column, widened type, narrowed types (one fits, one does not), new NOT NULL column with a default, new table,
a dropped column accepted and one not accepted."""

from __future__ import annotations

import os
import typing as t

import data_support as ds
import pytest
from conftest import require_pagila

DEV_CHANGES = r"""
ALTER TABLE customer RENAME COLUMN email TO email_address;
ALTER TABLE film ALTER COLUMN rental_duration TYPE integer;
ALTER TABLE film ALTER COLUMN replacement_cost TYPE numeric(4,2);
ALTER TABLE language ALTER COLUMN name TYPE varchar(5);
ALTER TABLE customer ADD COLUMN vip boolean NOT NULL DEFAULT false;
ALTER TABLE customer DROP COLUMN active;
ALTER TABLE staff DROP COLUMN picture;
CREATE TABLE film_review (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  film_id integer NOT NULL REFERENCES film (film_id), stars smallint NOT NULL CHECK (stars BETWEEN 1 AND 5));
"""

MAPPING = """
tables:
  customer:
    columns:
      email_address: {from: email}
%s
accept_loss:
  columns: [staff.picture%s]
"""
FIX_LANGUAGE = """  language:
    columns:
      name: {expression: "left(rtrim(name), 5)"}"""


def _load(cluster: t.Any, database: str, path: str) -> None:
    with open(path, encoding="utf-8") as handle:
        ds.run_sql(cluster, database, handle.read())


@pytest.mark.pagila
@pytest.mark.slow
def test_pagila_carry_over(pg: t.Any, run_module: t.Callable[..., t.Any], tmp_path: t.Any) -> None:
    pagila = require_pagila()
    source = ds.create_db(pg)
    dev = ds.create_db(pg)
    carry = None
    try:
        _load(pg, source, os.path.join(pagila, "pagila-schema.sql"))
        _load(pg, source, os.path.join(pagila, "pagila-data.sql"))
        _load(pg, dev, os.path.join(pagila, "pagila-schema.sql"))
        ds.run_sql(pg, dev, DEV_CHANGES)
        carry = ds.prepare(pg, source, dev, str(tmp_path))
        mappings = {}
        for name, fix, accept in (
            ("strict", "", ""),
            ("unfixed", "", ", customer.active"),
            ("good", FIX_LANGUAGE, ", customer.active"),
        ):
            mappings[name] = str(tmp_path / (name + ".yml"))
            with open(mappings[name], "w") as handle:
                handle.write(MAPPING % (fix, accept))

        strict = run_module("data_plan", dict(carry.common_args(mappings["strict"]), schema_source=carry.conn("dev")))
        assert strict.failed and strict.result["lost"]["columns"] == ["customer.active"]

        unfixed = run_module("data_plan", dict(carry.common_args(mappings["unfixed"]), schema_source=carry.conn("dev")))
        assert unfixed.failed
        assert [(p["table"], p["column"], p["kind"]) for p in unfixed.result["problems"]] == [
            ("language", "name", "too_long")
        ]
        assert unfixed.result["problems"][0]["count"] == 6

        good = run_module("data_plan", dict(carry.common_args(mappings["good"]), schema_source=carry.conn("dev")))
        assert not good.failed, good.output
        plan = {p["table"]: p for p in good.result["plan"]}
        assert plan["payment"]["partitioned"] and not any(k.startswith("payment_p") for k in plan)
        assert plan["film"]["format"] == "text" and plan["actor"]["format"] == "binary"
        assert plan["customer"]["defaulted"] == ["vip"]
        assert plan["film_review"]["new"] is True
        assert good.result["lost"]["accepted_columns"] == ["customer.active", "staff.picture"]

        copy = run_module("data_copy", dict(carry.common_args(mappings["good"]), jobs=2))
        assert not copy.failed, copy.output
        source_counts = ds.execute(
            pg,
            source,
            "SELECT (SELECT count(*) FROM payment), (SELECT count(*) FROM rental), (SELECT count(*) FROM film)",
        )[0]
        assert (
            copy.result["tables"]["payment"]["rows"],
            copy.result["tables"]["rental"]["rows"],
            copy.result["tables"]["film"]["rows"],
        ) == source_counts
        assert ds.execute(pg, carry.target, "SELECT name FROM language ORDER BY language_id LIMIT 1") == [("Engli",)]
        carry.post_data()
        proof = run_module("integrity_check", dict(carry.common_args(mappings["good"]), jobs=2, amcheck=True))
        assert not proof.failed, proof.output
        assert proof.result["ok"] and proof.result["tables"]["payment"]["source_rows"] == source_counts[0]
        assert proof.result["amcheck"]["errors"] == []
        assert ds.execute(
            pg, carry.target, "SELECT nextval('payment_payment_id_seq') > (SELECT max(payment_id) FROM payment)"
        ) == [(True,)]
    finally:
        for name in ([carry.target] if carry else []) + [source, dev]:
            ds.drop_db(pg, name)
