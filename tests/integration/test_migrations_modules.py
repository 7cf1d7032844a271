"""pgshift.ops.migrate / migrations_info / migrations_validate through real Ansible runs: bad input, check mode,
validation findings, a down that does not restore, and Pagila as a first migration."""

from __future__ import annotations

import os

import pytest
from conftest import require_pagila
from migrations_helpers import copy_sample, ledger, query, require_node, table_exists, write_folder


def _databases(pg):
    return {r[0] for r in query(pg, "postgres", "SELECT datname FROM pg_database")}


@pytest.mark.parametrize(
    "case, extra, expected",
    [
        ("missing folder", {"migrations_dir": "/nonexistent/migrations"}, "does not exist"),
        (
            "no numeric prefix",
            {"files": {"1000_ok.sql": "SELECT 1;", "add-users.sql": "SELECT 1;"}},
            "cannot determine numeric prefix",
        ),
        ("unknown engine", {"engine": "flyway"}, "value of engine must be one of: sql, node-pg-migrate"),
        ("unknown target", {"target": "1700000009999_nope"}, "target '1700000009999_nope' names no migration"),
    ],
)
def test_bad_input_is_a_clear_error_and_nothing_is_applied(pg, new_db, run_module, tmp_path, case, extra, expected):
    db = new_db()
    folder = copy_sample(str(tmp_path / "migrations"))
    extra = dict(extra)
    if "files" in extra:
        folder = write_folder(str(tmp_path / "bad"), extra.pop("files"))
    args = dict(pg.conn(db), migrations_dir=folder)
    args.update(extra)
    run = run_module("migrate", args)
    assert run.failed, case
    assert expected in run.result["msg"], run.result["msg"]
    assert pg.password not in run.output
    assert not table_exists(pg, db, "public.pgmigrations")
    assert not table_exists(pg, db, "public.customers")


def test_check_mode_writes_nothing(pg, new_db, run_module, tmp_path):
    db = new_db()
    folder = copy_sample(str(tmp_path / "migrations"))
    run = run_module("migrate", dict(pg.conn(db), migrations_dir=folder), check=True, diff=True)
    assert not run.failed, run.output
    assert run.result["changed"] is True
    assert run.result["plan"][0] == "1700000000000_init-shop" and len(run.result["plan"]) == 6
    assert "lock_waited_s" not in run.result
    assert not table_exists(pg, db, "public.pgmigrations")
    assert not table_exists(pg, db, "public.pgshift_migration_meta")
    assert not table_exists(pg, db, "public.customers")

    # four-step protocol: apply, then check and apply again report nothing to do
    assert run_module("migrate", dict(pg.conn(db), migrations_dir=folder)).result["changed"] is True
    again_check = run_module("migrate", dict(pg.conn(db), migrations_dir=folder), check=True)
    again = run_module("migrate", dict(pg.conn(db), migrations_dir=folder))
    assert again_check.result["changed"] is False and again.result["changed"] is False

    # down in check mode: plan only
    down = run_module("migrate", dict(pg.conn(db), migrations_dir=folder, direction="down", count=2), check=True)
    assert down.result["plan"] == ["1700000005000_rename-full-name", "1700000004000_orders-customer-index"]
    assert len(ledger(pg, db)) == 6


def test_info_adopts_nothing_and_migrate_adopts_foreign_history(pg, new_db, run_module, tmp_path):
    node = require_node()
    db = new_db()
    folder = copy_sample(str(tmp_path / "migrations"))
    # applied by node-pg-migrate directly (no pgshift metadata)
    from migrations_helpers import params

    from ansible_collections.pgshift.ops.plugins.module_utils._clients import run_client

    cli = run_client([node, "up", "2", "--migrations-dir", folder], params(pg, db), timeout=120)
    assert cli.rc == 0, cli.stderr
    info = run_module("migrations_info", dict(pg.conn(db), migrations_dir=folder), check=True)
    assert info.result["applied"] == ["1700000000000_init-shop", "1700000001000_order-events"]
    assert info.result["unrecorded"] == info.result["applied"] and info.result["meta_exists"] is False
    assert [m["sha256"] for m in info.result["migrations"]][0] == info.result["migrations"][0]["sha256"]
    run = run_module("migrate", dict(pg.conn(db), migrations_dir=folder, count=1))
    assert run.result["adopted"] == ["1700000000000_init-shop", "1700000001000_order-events"]
    assert [m["name"] for m in run.result["applied"]] == ["1700000002000_customer-loyalty"]
    engines = dict(query(pg, db, "SELECT name, engine FROM pgshift_migration_meta"))
    assert engines == {
        "1700000000000_init-shop": "adopted",
        "1700000001000_order-events": "adopted",
        "1700000002000_customer-loyalty": "sql",
    }


DANGEROUS = {
    "1000_base.sql": (
        "-- Up Migration\nCREATE TABLE items (id int PRIMARY KEY, name text, price int);\n"
        "-- Down Migration\nDROP TABLE items;\n"
    ),
    "2000_danger.sql": (
        "-- Up Migration\n"
        "CREATE INDEX items_name_idx ON items (name);\n"
        "ALTER TABLE items ADD COLUMN sku text NOT NULL;\n"
        "ALTER TABLE items ALTER COLUMN price TYPE bigint;\n"
        "ALTER TABLE items ALTER COLUMN name SET NOT NULL;\n"
        "ALTER TABLE items DROP COLUMN price;\n"
        "CREATE INDEX CONCURRENTLY items_sku_idx ON items (sku);\n"
        "-- Down Migration\n"
        "DROP INDEX items_name_idx;\n"
    ),
    "3000_dropper.sql": "-- Up Migration\nSET lock_timeout = '5s';\nDROP TABLE items;\n",
}


def test_validate_reports_dangerous_operations_with_line_and_statement(pg, run_module, tmp_path):
    folder = write_folder(str(tmp_path / "m"), DANGEROUS)
    before = _databases(pg)
    run = run_module("migrations_validate", dict(pg.conn("postgres"), migrations_dir=folder))
    assert run.failed
    found = {(f["rule"], f["file"], f["line"], f["severity"]) for f in run.result["findings"]}
    assert ("index-without-concurrently", "2000_danger.sql", 2, "warning") in found
    assert ("missing-lock-timeout", "2000_danger.sql", 2, "warning") in found
    assert ("not-null-column-without-default", "2000_danger.sql", 3, "error") in found
    assert ("type-change-rewrite", "2000_danger.sql", 4, "warning") in found
    assert ("set-not-null", "2000_danger.sql", 5, "warning") in found
    assert ("drop-column", "2000_danger.sql", 6, "warning") in found
    assert ("concurrently-in-transaction", "2000_danger.sql", 7, "error") in found
    assert ("drop-table", "3000_dropper.sql", 3, "warning") in found
    # lock_timeout set before the drop: no missing-lock-timeout for 3000
    assert not any(r == "missing-lock-timeout" and f == "3000_dropper.sql" for r, f, _line, _severity in found)
    stmt = next(f["statement"] for f in run.result["findings"] if f["rule"] == "concurrently-in-transaction")
    assert stmt.startswith("CREATE INDEX CONCURRENTLY items_sku_idx")
    assert any(
        line.startswith("ERROR 2000_danger.sql:7 [concurrently-in-transaction]") for line in run.result["report"]
    )
    # the up of 2000 really fails in the throwaway database (NOT NULL... works on an empty table, CONCURRENTLY does not)
    assert run.result["run"]["failed_at"] == "2000_danger"
    assert _databases(pg) == before  # the throwaway database is gone


@pytest.mark.slow
def test_validate_sample_app_is_valid_with_warnings(pg, run_module):
    node = require_node()
    before = _databases(pg)
    run = run_module("migrations_validate", dict(pg.conn("postgres"), migrations_dir="sample_app/migrations"))
    assert not run.failed, run.output
    assert run.result["valid"] and run.result["error_count"] == 0 and run.result["warning_count"] >= 2
    assert run.result["run"]["up_from_empty"] is True
    trips = run.result["run"]["round_trips"]
    assert len(trips) == 6 and all(s["down_restores"] and s["up_again_same"] for s in trips)
    # same result with node-pg-migrate doing the work
    run2 = run_module(
        "migrations_validate",
        dict(
            pg.conn("postgres"),
            migrations_dir="sample_app/migrations",
            engine="node-pg-migrate",
            node_pg_migrate=node,
            squawk=False,
        ),
    )
    assert not run2.failed, run2.output
    assert all(s["down_restores"] and s["up_again_same"] for s in run2.result["run"]["round_trips"])
    assert _databases(pg) == before
    # check mode: static checks only, no database created
    check = run_module(
        "migrations_validate", dict(pg.conn("postgres"), migrations_dir="sample_app/migrations"), check=True
    )
    assert not check.failed and "run" not in check.result
    assert any("check mode" in n for n in check.result["notes"])


def test_down_that_does_not_restore_the_schema_fails_validation(pg, run_module, tmp_path):
    folder = write_folder(
        str(tmp_path / "m"),
        {
            "1000_t.sql": "-- Up Migration\nCREATE TABLE t (id int);\n-- Down Migration\nDROP TABLE t;\n",
            "2000_cols.sql": (
                "-- Up Migration\nALTER TABLE t ADD COLUMN a int, ADD COLUMN b text DEFAULT 'x';\n"
                "-- Down Migration\nALTER TABLE t DROP COLUMN a;\n"
            ),
        },
    )
    run = run_module("migrations_validate", dict(pg.conn("postgres"), migrations_dir=folder, squawk=False))
    assert run.failed
    bad = [f for f in run.result["findings"] if f["rule"] == "down-does-not-restore"]
    assert len(bad) == 1 and bad[0]["migration"] == "2000_cols"
    assert "column public.t.b: added" in bad[0]["message"]
    trips = {s["migration"]: s for s in run.result["run"]["round_trips"]}
    assert trips["1000_t"]["down_restores"] is True and trips["2000_cols"]["down_restores"] is False


def test_validate_compares_with_an_applied_database(pg, new_db, run_module, tmp_path):
    db = new_db()
    folder = copy_sample(str(tmp_path / "migrations"))
    assert not run_module("migrate", dict(pg.conn(db), migrations_dir=folder, count=3)).failed
    write_folder(folder, {"1700000001500_from-a-branch.sql": "-- Up Migration\nCREATE TABLE branch (id int);\n"})
    run = run_module(
        "migrations_validate", dict(pg.conn("postgres"), migrations_dir=folder, compare_database=db, round_trip=False)
    )
    assert run.failed
    rules = {(f["rule"], f["migration"]) for f in run.result["findings"]}
    assert ("new-before-applied", "1700000001500_from-a-branch") in rules
    assert run.result["compared"]["applied"][-1] == "1700000002000_customer-loyalty"


@pytest.mark.pagila
@pytest.mark.slow
def test_pagila_as_first_migration_validates(pg, run_module, tmp_path):
    pagila = require_pagila()
    with open(os.path.join(pagila, "pagila-schema.sql"), encoding="utf-8") as handle:
        schema = handle.read()
    folder = write_folder(
        str(tmp_path / "pagila"),
        {
            # pg_dump output empties search_path for the session: put it back for the migrations after it
            "1700000000000_pagila.sql": "-- Up Migration\n"
            + schema
            + "\nSELECT pg_catalog.set_config('search_path', 'public', false);\n",
            "1700000001000_film-ratings.sql": (
                "-- Up Migration\nSET lock_timeout = '5s';\n"
                "CREATE TABLE public.film_rating (film_id integer NOT NULL REFERENCES public.film (film_id),"
                " customer_id integer NOT NULL REFERENCES public.customer (customer_id), stars smallint NOT NULL"
                " CHECK (stars BETWEEN 1 AND 5), PRIMARY KEY (film_id, customer_id));\n"
                "-- Down Migration\nDROP TABLE public.film_rating;\n"
            ),
            "1700000002000_customer-nickname.sql": (
                "-- Up Migration\nSET lock_timeout = '5s';\nALTER TABLE public.customer ADD COLUMN nickname text;\n"
                "CREATE VIEW public.customer_nicknames AS SELECT customer_id, coalesce(nickname, first_name) AS "
                "nickname FROM public.customer;\n"
                "-- Down Migration\nDROP VIEW public.customer_nicknames;\nALTER TABLE public.customer DROP COLUMN "
                "nickname;\n"
            ),
            "1700000003000_rental-index.sql": (
                "-- Up Migration\nSET lock_timeout = '5s';\nCREATE INDEX rental_return_date_idx ON public.rental "
                "(return_date);\n"
                "-- Down Migration\nDROP INDEX public.rental_return_date_idx;\n"
            ),
        },
    )
    run = run_module("migrations_validate", dict(pg.conn("postgres"), migrations_dir=folder))
    assert not run.failed, "\n".join(run.result.get("report", [])) or run.output
    assert run.result["run"]["up_from_empty"] is True
    trips = {s["migration"]: s for s in run.result["run"]["round_trips"]}
    assert trips["1700000000000_pagila"]["has_down"] is False
    for name in ("1700000001000_film-ratings", "1700000002000_customer-nickname", "1700000003000_rental-index"):
        assert trips[name]["down_restores"] and trips[name]["up_again_same"], trips[name]
    assert run.result["run"]["final_schema"]["tables"] > 20
    rules = {(f["rule"], f["migration"]) for f in run.result["findings"]}
    assert ("index-without-concurrently", "1700000003000_rental-index") in rules
    assert not any(r == "missing-lock-timeout" for r, _name in rules)


def test_validate_against_a_committed_schema_snapshot(pg, new_db, run_module, tmp_path):
    db = new_db()
    folder = copy_sample(str(tmp_path / "migrations"))
    assert not run_module("migrate", dict(pg.conn(db), migrations_dir=folder)).failed
    committed = str(tmp_path / "schema" / "dev.json")
    snap = run_module("schema_snapshot", dict(pg.conn(db), path=committed))
    assert not snap.failed, snap.output
    same = run_module(
        "migrations_validate",
        dict(pg.conn("postgres"), migrations_dir=folder, schema_snapshot=committed, round_trip=False, squawk=False),
    )
    assert not same.failed, same.output
    assert same.result["run"]["matches_schema_snapshot"] is True
    assert "committed schema snapshot: same" in same.result["report"]

    write_folder(folder, {"1700000009000_extra.sql": "-- Up Migration\nCREATE TABLE extra (id int);\n"})
    drift = run_module(
        "migrations_validate",
        dict(pg.conn("postgres"), migrations_dir=folder, schema_snapshot=committed, round_trip=False, squawk=False),
    )
    assert drift.failed
    bad = [f for f in drift.result["findings"] if f["rule"] == "final-schema-differs"]
    assert len(bad) == 1 and "table public.extra: added" in bad[0]["message"]
