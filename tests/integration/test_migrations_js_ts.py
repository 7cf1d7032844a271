"""JS and TypeScript migrations on par with SQL: migrations_validate and schema_diff on a mixed SQL/JS/TS history
(tests/fixtures/migrations-mixed), through the pinned node-pg-migrate, against real PostgreSQL."""

from __future__ import annotations

import os
import shutil

from migrations_helpers import ROOT, query, require_node, write_folder

MIXED = os.path.join(ROOT, "tests", "fixtures", "migrations-mixed")
NAMES = [
    "1700000000000_init",
    "1700000001000_customers-email-index",
    "1700000002000_products",
    "1700000003000_drop-legacy-code",
    "1700000004000_audit",
]


def _throwaway(pg):
    return [
        r[0]
        for r in query(pg, "postgres", "SELECT datname FROM pg_database WHERE datname ~ '^pgshift_(validate|scratch)_'")
    ]


def test_validate_runs_round_trips_and_lints_the_sql_of_js_and_ts(pg, run_module):
    node = require_node()
    run = run_module(
        "migrations_validate",
        dict(pg.conn("postgres"), migrations_dir=MIXED, engine="node-pg-migrate", node_pg_migrate=node),
    )
    assert not run.failed, run.output
    result = run.result
    assert result["valid"] is True, result["report"]
    steps = {s["migration"]: s for s in result["run"]["round_trips"]}
    assert list(steps) == NAMES
    # the SQL file, the JS file with its own down, the JS file whose down node-pg-migrate infers, the TS file
    for name in NAMES[:4]:
        assert steps[name]["has_down"] is True, steps[name]
        assert steps[name]["down_restores"] is True and steps[name]["up_again_same"] is True, steps[name]
    assert steps["1700000002000_products"]["down_sql"].startswith('DROP TABLE "products"')
    assert steps["1700000004000_audit"]["has_down"] is False
    assert steps["1700000004000_audit"]["no_down"] == "down = false"
    assert "up -> down -> up: 4 migration(s) with a down, 0 not restoring" in result["report"]
    assert result["run"]["up_from_empty"] is True
    found = {(f["rule"], f["file"], f["severity"]) for f in result["findings"]}
    # linted from the SQL node-pg-migrate ran: the index on the existing table, the dropped column (TS)
    assert ("index-without-concurrently", "1700000001000_customers-email-index.js", "warning") in found
    assert ("drop-column", "1700000003000_drop-legacy-code.ts", "warning") in found
    assert ("missing-lock-timeout", "1700000003000_drop-legacy-code.ts", "warning") in found
    index = next(f for f in result["findings"] if f["rule"] == "index-without-concurrently")
    assert index["statement"] == 'CREATE INDEX "customers_email_index" ON "customers" ("email")'
    # tables the migration creates itself are new and empty: nothing to say about them
    assert not any(f["file"] in ("1700000002000_products.js", "1700000004000_audit.js") for f in result["findings"])
    assert _throwaway(pg) == []
    assert pg.password not in run.output


def test_validate_finds_a_js_down_that_does_not_restore_and_an_uninferable_down(pg, run_module, tmp_path):
    node = require_node()
    folder = str(tmp_path / "migrations")
    shutil.copytree(MIXED, folder)
    write_folder(
        folder,
        {
            # raw SQL cannot be reversed by node-pg-migrate
            "1700000005000_raw.ts": "export const up = (pgm: any) => { pgm.sql('CREATE TABLE raw_t (id int)'); };\n",
            # the down forgets the column (so up again fails too)
            "1700000006000_nickname.js": "exports.up = (pgm) => { pgm.addColumn('customers', { nickname: 'text' }); };"
            "\nexports.down = () => {};\n",
        },
    )
    run = run_module(
        "migrations_validate",
        dict(pg.conn("postgres"), migrations_dir=folder, engine="node-pg-migrate", node_pg_migrate=node),
    )
    assert run.failed
    found = {(f["rule"], f["migration"], f["severity"]) for f in run.result["findings"]}
    assert ("down-does-not-restore", "1700000006000_nickname", "error") in found
    assert ("down-not-inferable", "1700000005000_raw", "warning") in found
    steps = {s["migration"]: s for s in run.result["run"]["round_trips"]}
    assert steps["1700000006000_nickname"]["down_restores"] is False
    assert any("customers.nickname" in d for d in steps["1700000006000_nickname"]["down_differences"])
    assert steps["1700000005000_raw"]["has_down"] is False
    assert ("round-trip-failed", "1700000006000_nickname", "error") in found
    assert run.result["run"]["failed_at"] == "1700000006000_nickname"
    assert _throwaway(pg) == []


def test_schema_diff_builds_a_js_ts_folder_with_node_pg_migrate(pg, new_db, run_module):
    node = require_node()
    live = new_db()
    migrated = run_module(
        "migrate", dict(pg.conn(live), migrations_dir=MIXED, engine="node-pg-migrate", node_pg_migrate=node)
    )
    assert not migrated.failed, migrated.output
    args = dict(source_migrations=MIXED, target=pg.conn(live), node_pg_migrate=node)
    clean = run_module("schema_diff", args)
    assert not clean.failed, clean.output
    assert clean.result["drift"] is False, clean.result["report"]
    assert clean.result["migrations_applied"]["source"] == NAMES
    assert clean.result["scratch_databases"]["source"].startswith("pgshift_scratch_")

    # the live database drifts: a column added by hand, the legacy column put back
    with pg.connect(live) as conn, conn.cursor() as cur:
        cur.execute("ALTER TABLE customers ADD COLUMN nickname text")
    drift = run_module("schema_diff", args)
    assert not drift.failed, drift.output
    assert drift.result["drift"] is True
    changed = {(d["kind"], d["name"], d["change"]) for d in drift.result["differences"]}
    assert ("column", "public.customers.nickname", "added") in changed, drift.result["differences"]

    # limited to a ledger that lists the first three: products exists in the migrations, legacy_code is still there
    partial = new_db()
    run_module(
        "migrate",
        dict(pg.conn(partial), migrations_dir=MIXED, engine="node-pg-migrate", node_pg_migrate=node, count=3),
    )
    limited = run_module("schema_diff", dict(args, target=pg.conn(partial), migrations_from_ledger=True))
    assert not limited.failed, limited.output
    assert limited.result["drift"] is False, limited.result["report"]
    assert limited.result["migrations_applied"]["source"] == NAMES[:3]
    assert _throwaway(pg) == []
    assert pg.password not in clean.output + drift.output + limited.output


def test_concurrently_is_flagged_only_where_node_pg_migrate_keeps_the_transaction(pg, run_module, tmp_path):
    node = require_node()
    folder = write_folder(
        str(tmp_path / "migrations"),
        {
            "1000_init.sql": "-- Up Migration\nCREATE TABLE items (id int, sku text, name text);\n",
            # out of the transaction: CONCURRENTLY is right here
            "2000_sku-index.js": "exports.up = (pgm) => {\n  pgm.noTransaction();\n"
            "  pgm.createIndex('items', 'sku', { concurrently: true });\n};\n",
            # in node-pg-migrate's transaction: fails, and the lint says why
            "3000_name-index.ts": "export const up = (pgm: any) => {\n"
            "  pgm.createIndex('items', 'name', { concurrently: true });\n};\n",
        },
    )
    run = run_module(
        "migrations_validate",
        dict(pg.conn("postgres"), migrations_dir=folder, engine="node-pg-migrate", node_pg_migrate=node),
    )
    assert run.failed
    found = {(f["rule"], f["migration"]) for f in run.result["findings"]}
    assert ("concurrently-in-transaction", "3000_name-index") in found, run.result["report"]
    assert ("up-failed", "3000_name-index") in found
    assert not any(m == "2000_sku-index" and r == "concurrently-in-transaction" for r, m in found)
    steps = {s["migration"]: s for s in run.result["run"]["round_trips"]}
    assert steps["2000_sku-index"]["has_down"] is True and steps["2000_sku-index"]["down_restores"] is True
    assert run.result["run"]["failed_at"] == "3000_name-index"
    assert _throwaway(pg) == []
