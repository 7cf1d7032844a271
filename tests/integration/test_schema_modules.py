"""pgshift.ops.schema_snapshot and pgshift.ops.schema_diff run for real through ansible, against real PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import typing as t

import pgworld
import pytest
from conftest import ROOT

MIGRATIONS = os.path.join(ROOT, "sample_app", "migrations")


def _exec(cluster: pgworld.Cluster, database: str, statements: str) -> None:
    with contextlib.closing(cluster.connect(database)) as conn, conn.cursor() as cur:
        cur.execute(statements)


def _scratch_databases(cluster: pgworld.Cluster) -> t.List[str]:
    with contextlib.closing(cluster.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE 'pgshift\\_scratch\\_%'")
        return [r[0] for r in cur.fetchall()]


@pytest.fixture
def shop_pair(pg: pgworld.Cluster, new_db: t.Callable[..., str]) -> t.Tuple[str, str]:
    """(prod-like: the first two migrations, dev-like: all of them)."""
    prod, dev = new_db(), new_db()
    pgworld.apply_migrations(pg, prod, 2)
    pgworld.apply_migrations(pg, dev)
    return prod, dev


def test_snapshot_module_writes_once_and_is_idempotent(
    pg: pgworld.Cluster, shop_pair: t.Tuple[str, str], run_module: t.Any, tmp_path: t.Any
) -> None:
    prod, _dev = shop_pair
    path = tmp_path / "out" / "prod.schema.json"
    args = dict(pg.conn(prod), path=str(path))
    checked = run_module("schema_snapshot", args, check=True)
    assert not checked.failed, checked.output
    assert checked.result["changed"] is True and not path.exists()
    first = run_module("schema_snapshot", args)
    assert not first.failed, first.output
    assert first.result["changed"] is True
    assert first.result["sha256"] == checked.result["sha256"]
    assert first.result["ledger"] == ["1700000000000_init-shop", "1700000001000_order-events"]
    assert first.result["counts"]["tables"] == 8
    assert first.result["queries"] <= 12
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    content = path.read_bytes()
    assert json.loads(content)["sha256"] == first.result["sha256"]
    again = run_module("schema_snapshot", args, check=True)
    assert again.result["changed"] is False
    second = run_module("schema_snapshot", args, diff=True)
    assert second.result["changed"] is False and path.read_bytes() == content
    assert pg.password not in first.output + second.output


def test_snapshot_module_yaml_with_owners(
    pg: pgworld.Cluster, shop_pair: t.Tuple[str, str], run_module: t.Any, tmp_path: t.Any
) -> None:
    _prod, dev = shop_pair
    path = tmp_path / "dev.yml"
    run = run_module("schema_snapshot", dict(pg.conn(dev), path=str(path), with_owners=True, with_grants=True))
    assert not run.failed, run.output
    assert run.result["format"] == "yaml"
    text = path.read_text(encoding="utf-8")
    assert "owner: postgres" in text and "public.customers.display_name:" in text


def test_diff_prod_against_its_migrations_is_clean(
    pg: pgworld.Cluster, shop_pair: t.Tuple[str, str], run_module: t.Any
) -> None:
    prod, _dev = shop_pair
    run = run_module(
        "schema_diff",
        dict(
            source_migrations=MIGRATIONS,
            migrations_from_ledger=True,
            target=pg.conn(prod),
            source_name="migrations",
            target_name="prod",
        ),
    )
    assert not run.failed, run.output
    assert run.result["drift"] is False, run.result["report"]
    assert run.result["migrations_applied"]["source"] == ["1700000000000_init-shop", "1700000001000_order-events"]
    assert run.result["scratch_databases"]["source"].startswith("pgshift_scratch_")
    assert _scratch_databases(pg) == []
    # the whole folder is what dev has: against prod that is drift
    full = run_module("schema_diff", dict(source_migrations=MIGRATIONS, target=pg.conn(prod)))
    assert full.result["drift"] is True
    assert full.result["summary"]["table"] == {"removed": 1}
    assert pg.password not in run.output + full.output


def test_diff_dev_against_prod_reports_the_release(
    pg: pgworld.Cluster, shop_pair: t.Tuple[str, str], run_module: t.Any, tmp_path: t.Any
) -> None:
    prod, dev = shop_pair
    out = tmp_path / "drift"
    args = dict(
        source=pg.conn(prod),
        target=pg.conn(dev),
        source_name="prod",
        target_name="dev",
        renames={"public.customers.full_name": "public.customers.display_name"},
        ignore_objects=["table:public.product_reviews", "sequence:public.product_reviews_*"],
        output_dir=str(out),
        propose_ddl=True,
    )
    checked = run_module("schema_diff", args, check=True, diff=True)
    assert not checked.failed, checked.output
    assert not out.exists()
    run = run_module("schema_diff", args)
    assert not run.failed, run.output
    assert run.result["drift"] is True and run.result["changed"] is True
    names = {(d["kind"], d["name"], d["change"]) for d in run.result["differences"]}
    assert names == {
        ("column", "public.customers.display_name", "renamed"),
        ("column", "public.customers.loyalty_points", "added"),
        ("column", "public.customers.marketing_opt_in", "added"),
        ("index", "public.orders_customer_placed_idx", "added"),
        ("view", "public.customer_directory", "added"),
    }
    assert "renamed to public.customers.display_name" in run.result["report"]
    assert "ALTER TABLE public.customers RENAME COLUMN full_name TO display_name;" in run.result["ddl"]
    written = sorted(os.listdir(out))
    assert written == ["dev.schema.json", "prod-vs-dev.diff.json", "prod-vs-dev.report.txt", "prod.schema.json"]
    for name in written:
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600
    assert run_module("schema_diff", args).result["changed"] is False
    # a snapshot file on one side works the same as the live database
    snap_args = {k: v for k, v in args.items() if k not in ("source", "output_dir")}
    snap = run_module("schema_diff", dict(snap_args, source_snapshot=str(out / "prod.schema.json")))
    assert not snap.failed, snap.output
    assert snap.result["differences"] == run.result["differences"]


def test_diff_refuses_what_it_cannot_apply(
    pg: pgworld.Cluster, shop_pair: t.Tuple[str, str], run_module: t.Any, tmp_path: t.Any
) -> None:
    prod, _dev = shop_pair
    folder = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, folder)
    (folder / "1700000009000_add-thing.js").write_text("exports.up = (pgm) => { pgm.sql('SELECT 1'); };\n")
    # a JavaScript migration is applied by node-pg-migrate: without one to find, a clear error before any database
    run = run_module(
        "schema_diff",
        dict(source_migrations=str(folder), target=pg.conn(prod), node_pg_migrate=str(tmp_path / "no-such-cli")),
    )
    assert run.failed
    assert "1700000009000_add-thing.js" in run.result["msg"] and "node-pg-migrate" in run.result["msg"]
    assert _scratch_databases(pg) == []
    # limited to production's ledger, the JavaScript migration is not needed
    limited = run_module(
        "schema_diff", dict(source_migrations=str(folder), migrations_from_ledger=True, target=pg.conn(prod))
    )
    assert not limited.failed, limited.output
    assert limited.result["drift"] is False
    # a ledger entry without its file
    os.unlink(folder / "1700000001000_order-events.sql")
    missing = run_module(
        "schema_diff", dict(source_migrations=str(folder), migrations_from_ledger=True, target=pg.conn(prod))
    )
    assert missing.failed and "1700000001000_order-events" in missing.result["msg"]
    # a migration that fails on the throwaway database names the file, and the database is dropped
    (folder / "1700000001000_order-events.sql").write_text("-- Up Migration\nCREATE TABLE broken (;\n")
    broken = run_module(
        "schema_diff", dict(source_migrations=str(folder), migrations_from_ledger=True, target=pg.conn(prod))
    )
    assert broken.failed and "1700000001000_order-events.sql" in broken.result["msg"]
    assert broken.result.get("sqlstate") == "42601"
    assert _scratch_databases(pg) == []
    assert pg.password not in run.output + missing.output + broken.output


def test_diff_detects_a_tampered_snapshot(
    pg: pgworld.Cluster, shop_pair: t.Tuple[str, str], run_module: t.Any, tmp_path: t.Any
) -> None:
    prod, _dev = shop_pair
    path = tmp_path / "prod.json"
    assert not run_module("schema_snapshot", dict(pg.conn(prod), path=str(path))).failed
    document = json.loads(path.read_text())
    document["objects"]["tables"].pop("public.orders")
    path.write_text(json.dumps(document))
    run = run_module("schema_diff", dict(source_snapshot=str(path), target=pg.conn(prod)))
    assert run.failed and "changed after it was written" in run.result["msg"]


def test_diff_takes_renames_from_the_data_mapping(
    pg: pgworld.Cluster, shop_pair: t.Tuple[str, str], run_module: t.Any
) -> None:
    prod, dev = shop_pair
    run = run_module(
        "schema_diff",
        dict(source=pg.conn(prod), target=pg.conn(dev), mapping_file=os.path.join(ROOT, "sample_app", "mapping.yml")),
    )
    assert not run.failed, run.output
    assert run.result["renames"] == {"public.customers.full_name": "public.customers.display_name"}
    changes = {(d["name"], d["change"]) for d in run.result["differences"] if d["kind"] == "column"}
    assert ("public.customers.display_name", "renamed") in changes
    assert ("public.customers.full_name", "removed") not in changes
