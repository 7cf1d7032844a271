"""The plan an approver reads: prod_restore.yml --check --diff on a real local world writes plan.json and plan.html
and shows the plan in its diff output; nothing changes. The expectations are the test's own: what it changed in the
world, and the counts it reads from production's catalogs."""

from __future__ import annotations

import contextlib
import html
import json
import os
import stat
import typing as t

import pgworld
import pytest
import yaml
from psycopg2 import sql
from rehearsal_support import make_rehearsal

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT_TABLE = "<script>alert(1)</script>"


@pytest.fixture
def fresh(world: pgworld.World) -> pgworld.World:
    world.reset(scale=0.5)
    return world


def _execute(cluster: pgworld.Cluster, *statements: str) -> None:
    with contextlib.closing(cluster.connect("shop")) as conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def _counts(cluster: pgworld.Cluster) -> t.Dict[str, int]:
    """Exact row counts of production's tables (ANALYZE first, so the catalog's estimate the plan shows is exact)."""
    out = {}
    with contextlib.closing(cluster.connect("shop")) as conn, conn.cursor() as cur:
        cur.execute("ANALYZE")
        cur.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind = 'r' AND NOT c.relispartition"
        )
        for (name,) in cur.fetchall():
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name)))
            out[name] = cur.fetchone()[0]
    return out


def _mapping(tmp_path: t.Any, accept_columns: t.List[str]) -> str:
    path = tmp_path / "mapping.yml"
    path.write_text(
        yaml.safe_dump(
            {
                "tables": {"customers": {"columns": {"display_name": {"from": "full_name"}}}},
                "accept_loss": {"tables": [], "columns": accept_columns},
            }
        ),
        encoding="utf-8",
    )
    return str(path)


def _check_run(world: pgworld.World, run_playbook: t.Any, mapping: str, artifacts: str) -> t.Any:
    return run_playbook(
        "playbooks/prod_restore.yml",
        extra_vars={"pgshift_mapping_file": mapping},
        args=["--check", "--diff"],
        env={"PGSHIFT_WORLD": world.state, "PGSHIFT_ARTIFACTS": artifacts},
    )


def _fingerprint(cluster: pgworld.Cluster) -> t.Tuple[t.Any, ...]:
    with contextlib.closing(cluster.connect("shop")) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), coalesce(sum(hashtextextended(c::text, 0)), 0) FROM customers c")
        rows = cur.fetchone()
        cur.execute(
            "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = 'customers'"
        )
        return (rows, cur.fetchone()[0])


def test_check_diff_writes_the_plan(
    fresh: pgworld.World, run_playbook: t.Any, run_module: t.Any, tmp_path: t.Any
) -> None:
    world = fresh
    prod, dev = world.clusters["prod"], world.clusters["dev"]
    # production holds a column dev lacks (accepted as lost), dev has a new table whose name is markup
    _execute(prod, "ALTER TABLE customers ADD COLUMN fax text", "UPDATE customers SET fax = '555-' || id")
    _execute(dev, 'CREATE TABLE "%s" (id int PRIMARY KEY)' % SCRIPT_TABLE)
    counts = _counts(prod)
    before = _fingerprint(prod)
    mapping = _mapping(tmp_path, ["customers.fax"])
    artifacts = str(tmp_path / "artifacts")
    run = _check_run(world, run_playbook, mapping, artifacts)
    assert run.rc == 0, run.output[-5000:]
    assert _fingerprint(prod) == before, "a --check run changed production"

    plan_file = os.path.join(artifacts, "plan.json")
    plan = json.loads(open(plan_file, encoding="utf-8").read())
    assert stat.S_IMODE(os.stat(plan_file).st_mode) == 0o600

    # the schema difference, production -> dev
    sc = plan["schema"]
    added = {(d["kind"], d["name"]) for d in sc["added"]}
    assert {
        ("column", "public.customers.loyalty_points"),
        ("column", "public.customers.marketing_opt_in"),
        ("table", "public.product_reviews"),
        ("table", 'public."%s"' % SCRIPT_TABLE),
        ("index", "public.orders_customer_placed_idx"),
    } <= added, sc["added"]
    assert ("column", "public.customers.fax") in {(d["kind"], d["name"]) for d in sc["dropped"]}
    assert {"kind": "column", "from": "public.customers.full_name", "to": "public.customers.display_name"} in sc[
        "renamed"
    ]

    # the data plan per table
    tables = {e["table"]: e for e in plan["data"]["tables"]}
    customers = tables["customers"]
    assert customers["rows"] == counts["customers"] > 0
    assert customers["renamed"] == [{"from": "full_name", "to": "display_name"}]
    assert set(customers["defaulted"]) == {"loyalty_points", "marketing_opt_in"}
    assert "fax" not in customers["carried"] and "display_name" in customers["carried"]
    assert customers["cast"] == [] and customers["computed"] == []
    for name in ("products", "orders", "order_lines"):
        assert tables[name]["rows"] == counts[name], name
    assert tables[SCRIPT_TABLE]["new"] is True and tables[SCRIPT_TABLE]["rows"] == 0
    assert tables["product_reviews"]["new"] is True
    assert plan["data"]["accepted_losses"] == {"tables": [], "columns": ["customers.fax"]}
    assert plan["refused"] == []

    # the backup, the window, the hosts in order
    assert plan["backup"]["dir"] == os.path.join(world.state, "backups")
    assert plan["backup"]["verify_level"] == "restore"
    with contextlib.closing(prod.connect("shop")) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_database_size('shop')")
        size = cur.fetchone()[0]
    assert 0.5 * size < plan["backup"]["estimate_bytes"] < 2 * size
    assert plan["window"] is None  # the local world has no rehearsal
    phases = [(s["phase"], s["hosts"]) for s in plan["steps"]]
    order = [p for p, _h in phases]
    assert order.index("maintenance on") < order.index("rebuild") < order.index("swap") < order.index("restart")
    assert ("maintenance on", ["local-web1"]) in phases and ("restart", ["local-app1"]) in phases
    assert any("shop-api" in s["what"] for s in plan["steps"] if s["phase"] == "restart")
    assert order[-1] == "maintenance off"

    # the inputs' hashes are kept: release_inputs reads this plan and finds the inputs unchanged
    assert set(plan["inputs"]) == {"dev_schema", "migrations", "mapping"} and plan["inputs_hash"]
    verify = run_module(
        "release_inputs",
        dict(
            dev.conn("shop"),
            migrations_dir=os.path.join(ROOT, "sample_app", "migrations"),
            mapping_file=mapping,
            plan_file=plan_file,
        ),
    )
    assert not verify.failed, verify.output
    assert verify.result["inputs_hash"] == plan["inputs_hash"]

    # readable in the --diff output
    said = run.output
    assert "SCHEMA production -> dev" in said
    assert "customers: %d rows" % counts["customers"] in said
    assert "renamed full_name -> display_name" in said
    assert "default filled: " in said and "accepted losses: customers.fax" in said
    assert "REFUSED: nothing" in said

    # plan.html beside it, escaped
    page = open(os.path.join(artifacts, "plan.html"), encoding="utf-8").read()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "full_name -&gt; display_name" in page and "customers.fax" in page
    assert world.meta["password"] not in page + json.dumps(plan) + run.output


def test_refused_plan_lists_the_refusal(fresh: pgworld.World, run_playbook: t.Any, tmp_path: t.Any) -> None:
    world = fresh
    prod = world.clusters["prod"]
    _execute(prod, "ALTER TABLE customers ADD COLUMN fax text", "UPDATE customers SET fax = '555-' || id")
    # and a value too long for a column dev narrows: a data problem, counted on production
    _execute(world.clusters["dev"], "ALTER TABLE products ALTER COLUMN sku TYPE varchar(3)")
    with contextlib.closing(prod.connect("shop")) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM products WHERE length(sku) > 3")
        too_long = cur.fetchone()[0]
    assert too_long > 0
    before = _fingerprint(prod)
    artifacts = str(tmp_path / "artifacts")
    run = _check_run(world, run_playbook, _mapping(tmp_path, []), artifacts)
    assert run.rc != 0
    assert _fingerprint(prod) == before
    plan = json.loads(open(os.path.join(artifacts, "plan.json"), encoding="utf-8").read())
    refused = {(r["kind"], r["column"]): r for r in plan["refused"]}
    assert ("lost_column", "customers.fax") in refused, plan["refused"]
    assert "accept_loss.columns" in refused[("lost_column", "customers.fax")]["reason"]
    sku = [r for r in plan["refused"] if r["table"] == "products" and r["column"] == "sku"]
    assert sku and sku[0]["count"] == too_long, plan["refused"]
    assert "the release is refused" in run.output and "customers.fax" in run.output
    page = open(os.path.join(artifacts, "plan.html"), encoding="utf-8").read()
    assert "Refused" in page and "customers.fax" in page


def test_plan_window_is_the_rehearsal_forecast(fresh: pgworld.World, run_playbook: t.Any, tmp_path: t.Any) -> None:
    world = fresh
    done = make_rehearsal(world, str(tmp_path))
    assert done.rc == 0, done.output[-4000:]
    assert done.record is not None and done.record["passed"] is True and done.record["forecast"], done.record
    artifacts = str(tmp_path / "artifacts")
    run = run_playbook(
        "playbooks/prod_restore.yml",
        extra_vars={"pgshift_rehearsals_dir": done.rehearsals_dir},
        args=["--check", "--diff"],
        env={"PGSHIFT_WORLD": world.state, "PGSHIFT_ARTIFACTS": artifacts},
    )
    assert run.rc == 0, run.output[-4000:]
    plan = json.loads(open(os.path.join(artifacts, "plan.json"), encoding="utf-8").read())
    window = plan["window"]
    recorded = done.record["forecast"]
    # the rehearsal's measured window, split as it recorded it: the fixed part, the part that scales with the data
    assert window["fixed_seconds"] == round(done.record["window"]["seconds"] - recorded["scaling_seconds_rehearsed"], 1)
    assert window["scaling_seconds_rehearsed"] == recorded["scaling_seconds_rehearsed"]
    assert window["app_tier_seconds"] == recorded["app_tier_seconds"]
    assert window["seconds"] >= window["database_seconds"] >= window["fixed_seconds"]
    assert window["text"].startswith("forecast of production's maintenance window")
    assert "WINDOW: " + window["text"] in run.output, "the --diff output shows the forecast window"
    page = open(os.path.join(artifacts, "plan.html"), encoding="utf-8").read()
    assert html.escape(window["text"]) in page
