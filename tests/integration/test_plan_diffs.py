"""What --check --diff shows for migrate and schema_snapshot, on real PostgreSQL through real ansible runs:
migrate names each pending migration with the SQL it would run and applies nothing; schema_snapshot names the objects
that changed; schema_diff returns its report as the diff."""

from __future__ import annotations

import os
import typing as t

import pgworld
from migrations_helpers import ROOT, SAMPLE, copy_sample, ledger, query, require_node, table_exists

MIXED = os.path.join(ROOT, "tests", "fixtures", "migrations-mixed")
PENDING = [
    "1700000002000_customer-loyalty",
    "1700000003000_product-reviews",
    "1700000004000_orders-customer-index",
    "1700000005000_rename-full-name",
]


def _up_sql(name: str) -> str:
    """The up section of a sample migration, read from the file here (not through pgshift)."""
    with open(os.path.join(SAMPLE, name + ".sql"), encoding="utf-8") as handle:
        text = handle.read()
    start = text.lower().find("-- up migration")
    end = text.lower().find("-- down migration")
    return text[start if start >= 0 else 0 : end if end > start else None].strip()


def test_migrate_check_diff_shows_the_sql_and_applies_nothing(
    pg: pgworld.Cluster, new_db: t.Any, run_module: t.Any, tmp_path: t.Any
) -> None:
    db = new_db()
    folder = copy_sample(str(tmp_path / "migrations"))
    first = run_module("migrate", dict(pg.conn(db), migrations_dir=folder, target="1700000001000_order-events"))
    assert not first.failed, first.output
    before = ledger(pg, db)
    assert [name for _id, name in before] == ["1700000000000_init-shop", "1700000001000_order-events"]

    run = run_module("migrate", dict(pg.conn(db), migrations_dir=folder), check=True, diff=True)
    assert not run.failed, run.output
    assert run.result["plan"] == PENDING
    shown = run.output  # the --diff output (the tree callback keeps no diff in the result)
    positions = []
    for name in PENDING:
        body = _up_sql(name)
        assert body and body in shown, (name, shown)
        positions.append(shown.index("-- migration %s (up)" % name))
    assert positions == sorted(positions), "in the order they would run"
    assert [e["name"] for e in run.result["sql"]] == PENDING
    # nothing was applied
    assert ledger(pg, db) == before
    assert not table_exists(pg, db, "public.product_reviews")
    assert (
        query(
            pg,
            db,
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'customers'::regclass AND attname = %s",
            ("display_name",),
        )[0][0]
        == 0
    )
    assert pg.password not in run.output


def test_schema_snapshot_diff_names_the_objects(
    pg: pgworld.Cluster, new_db: t.Any, run_module: t.Any, tmp_path: t.Any
) -> None:
    db = new_db()
    query(pg, db, "CREATE TABLE kept (id int PRIMARY KEY, note text)")
    query(pg, db, "CREATE TABLE going (id int)")
    path = tmp_path / "snap.json"
    args = dict(pg.conn(db), path=str(path))
    first = run_module("schema_snapshot", args, diff=True)
    assert not first.failed, first.output
    assert "new snapshot file" in first.output
    query(pg, db, "ALTER TABLE kept ADD COLUMN added_col integer NOT NULL DEFAULT 7")
    query(pg, db, "ALTER TABLE kept ALTER COLUMN note TYPE varchar(20)")
    query(pg, db, "DROP TABLE going")
    query(pg, db, "CREATE INDEX kept_note_idx ON kept (note)")
    checked = run_module("schema_snapshot", args, check=True, diff=True)
    assert not checked.failed, checked.output
    assert checked.result["changed"] is True
    shown = checked.output
    assert "+ column public.kept.added_col" in shown
    assert "- table public.going" in shown
    assert "~ column public.kept.note: type text -> character varying(20)" in shown
    assert "+ index public.kept_note_idx" in shown
    assert "+sha256: " not in shown and "-sha256: " not in shown  # no longer two hashes
    assert pg.password not in checked.output


def test_schema_diff_report_is_the_diff(pg: pgworld.Cluster, new_db: t.Any, run_module: t.Any) -> None:
    a, b = new_db(), new_db()
    query(pg, a, "CREATE TABLE t1 (id int)")
    query(pg, b, "CREATE TABLE t1 (id int, extra text)")
    run = run_module(
        "schema_diff", dict(source=pg.conn(a), target=pg.conn(b), source_name="a", target_name="b"), diff=True
    )
    assert not run.failed, run.output
    assert "+ column public.t1.extra" in run.result["report"]
    for line in run.result["report"].splitlines():
        assert line in run.output, "the --diff output is the report"


def test_migrate_check_diff_shows_the_sql_of_js_and_ts(pg: pgworld.Cluster, new_db: t.Any, run_module: t.Any) -> None:
    node = require_node()
    db = new_db()
    base = dict(pg.conn(db), migrations_dir=MIXED, engine="node-pg-migrate", node_pg_migrate=node)
    first = run_module("migrate", dict(base, target="1700000000000_init"))
    assert not first.failed, first.output
    before = ledger(pg, db)
    run = run_module("migrate", base, check=True, diff=True)
    assert not run.failed, run.output
    entries = {e["name"]: e for e in run.result["sql"]}
    assert list(entries) == [
        "1700000001000_customers-email-index",
        "1700000002000_products",
        "1700000003000_drop-legacy-code",
        "1700000004000_audit",
    ]
    # the SQL node-pg-migrate renders for the JS and TS files, shown by its read-only dry run
    assert (
        'CREATE INDEX "customers_email_index" ON "customers" ("email")'
        in entries["1700000001000_customers-email-index"]["sql"]
    )
    assert 'CREATE TABLE "products"' in entries["1700000002000_products"]["sql"]
    assert 'DROP "legacy_code"' in entries["1700000003000_drop-legacy-code"]["sql"]
    assert all(e["shown_by"] == "node-pg-migrate --dry-run" for e in entries.values())
    assert 'CREATE TABLE "products"' in run.output and "-- migration 1700000003000_drop-legacy-code (up)" in run.output
    # nothing was applied, nothing written
    assert ledger(pg, db) == before
    assert not table_exists(pg, db, "public.products")
    assert (
        query(
            pg,
            db,
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'customers'::regclass AND attname = 'legacy_code'",
        )[0][0]
        == 1
    )
    assert pg.password not in run.output
