"""Data carry-over on the sample shop: prod = migrations 1..2 with rows, dev = all 6, target = dev's pre-data.

One world per module (building it costs seconds); the fault tests inject a fault, prove it is caught and named, then
undo it, so that the order of the tests does not matter.
"""

from __future__ import annotations

import contextlib
import threading
import time
import typing as t

import data_support as ds
import pytest
from psycopg2 import sql


@pytest.fixture(scope="module")
def shop(pg: t.Any, tmp_path_factory: t.Any) -> t.Iterator[ds.Carry]:
    source = ds.shop(pg, 2, 0.5)
    dev = ds.shop(pg, None, 0)
    carry = ds.prepare(pg, source, dev, str(tmp_path_factory.mktemp("dump")))
    yield carry
    for name in (carry.target, source, dev):
        ds.drop_db(pg, name)


def _args(carry: ds.Carry, **extra: t.Any) -> t.Dict[str, t.Any]:
    args = carry.common_args()
    args.update(extra)
    return args


def _count(carry: ds.Carry, table: str) -> int:
    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
    with contextlib.closing(carry.cluster.connect(carry.target)) as conn, conn.cursor() as cur:
        cur.execute(query)
        return int(cur.fetchone()[0])


def test_plan_copy_and_prove(shop: ds.Carry, run_module: t.Callable[..., t.Any]) -> None:
    plan = run_module("data_plan", _args(shop, schema_source=shop.conn("dev")), check=True)
    assert not plan.failed, plan.output
    res = plan.result
    assert res["problems"] == [] and res["lost"]["tables"] == [] and res["lost"]["columns"] == []
    by_table = {p["table"]: p for p in res["plan"]}
    customers = by_table["customers"]
    assert {
        "name": "display_name",
        "from": "full_name",
        "source_type": "text",
        "target_type": "text",
        "cast": False,
    } in customers["columns"]
    assert customers["defaulted"] == ["marketing_opt_in", "loyalty_points"]
    assert by_table["product_reviews"]["new"] is True and by_table["product_reviews"]["source"] is None
    assert by_table["order_events"]["partitioned"] is True
    assert "order_events_2024" not in by_table  # leaves are reached through their root, never copied twice
    assert res["constraints_checked"] >= 10  # dev's PK/UNIQUE/FK definitions were checked against the data

    # check mode: the plan and statements, nothing written
    dry = run_module("data_copy", _args(shop, ledger_from=shop.conn("dev")), check=True)
    assert not dry.failed, dry.output
    assert dry.result["changed"] is False and "orders" in dry.result["statements"]
    assert _count(shop, "orders") == 0

    done = run_module("data_copy", _args(shop, ledger_from=shop.conn("dev"), jobs=2))
    assert not done.failed, done.output
    tables = done.result["tables"]
    source_rows = ds.execute(
        shop.cluster, shop.source, "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM order_events)"
    )[0]
    assert tables["orders"]["rows"] == source_rows[0] and tables["order_events"]["rows"] == source_rows[1]
    assert tables["orders"]["format"] == "binary"
    assert "product_reviews" in done.result["not_copied"]
    # the ledger lists exactly dev's migrations
    assert _count(shop, "pgmigrations") == 6
    # identity (GENERATED ALWAYS) and serial sequences continue after the copied rows
    seqs = {s["sequence"]: s for s in done.result["sequences"]}
    assert (
        seqs["products_id_seq"]["last_value"]
        == ds.execute(shop.cluster, shop.source, "SELECT max(id) FROM products")[0][0]
    )
    shop.post_data()
    ds.execute(
        shop.cluster, shop.target, "INSERT INTO products (sku, name, price_cents) VALUES ('NEW-1', 'n', 1) RETURNING id"
    )

    proof = run_module("integrity_check", _args(shop, ledger_from=shop.conn("dev"), amcheck=True))
    assert proof.failed, "the product inserted above is a difference that must be found"
    assert proof.result["mismatches"][0]["table"] == "products"
    assert proof.result["mismatches"][0]["first_differing_keys"][0]["difference"] == "only in target"
    ds.execute(shop.cluster, shop.target, "DELETE FROM products WHERE sku = 'NEW-1'")
    proof = run_module("integrity_check", _args(shop, ledger_from=shop.conn("dev"), amcheck=True))
    assert not proof.failed, proof.output
    assert (
        proof.result["ok"] is True
        and proof.result["amcheck"]["checked"] > 5
        and proof.result["amcheck"]["errors"] == []
    )
    assert all(v["match"] for v in proof.result["tables"].values())
    assert proof.result["tables"]["customers"]["source_rows"] == 100


@pytest.mark.parametrize(
    "fault,undo,table,difference",
    [
        (
            "UPDATE orders SET note = 'tampered' WHERE id = 42",
            "UPDATE orders t SET note = NULL WHERE id = 42",
            "orders",
            "changed",
        ),
        (
            "DELETE FROM order_lines WHERE order_id = 7 AND line_no = 1",
            "INSERT INTO order_lines SELECT * FROM tmp_saved",
            "order_lines",
            "missing in target",
        ),
    ],
    ids=["value-changed", "row-deleted"],
)
def test_fault_caught_and_named(
    shop: ds.Carry, run_module: t.Callable[..., t.Any], fault: str, undo: str, table: str, difference: str
) -> None:
    if _count(shop, "orders") == 0:
        test_plan_copy_and_prove(shop, run_module)
    cluster, target = shop.cluster, shop.target
    original = ds.execute(cluster, target, "SELECT note FROM orders WHERE id = 42")[0][0]
    saved = ds.execute(cluster, target, "SELECT * FROM order_lines WHERE order_id = 7 AND line_no = 1")
    ds.execute(cluster, target, fault)
    try:
        res = run_module("integrity_check", _args(shop, ledger_from=shop.conn("dev")))
        assert res.failed
        assert "integrity check failed" in res.result["msg"] and table in res.result["msg"]
        [mismatch] = res.result["mismatches"]
        assert mismatch["table"] == table
        assert mismatch["first_differing_keys"][0]["difference"] == difference
        assert mismatch["first_differing_keys"][0]["key"] in ("(42)", "(7,1)")
    finally:
        if table == "orders":
            ds.execute(cluster, target, "UPDATE orders SET note = %s WHERE id = 42", [original])
        else:
            ds.execute(cluster, target, "INSERT INTO order_lines VALUES (%s, %s, %s, %s, %s)", list(saved[0]))
    assert not run_module("integrity_check", _args(shop, ledger_from=shop.conn("dev"))).failed


def test_duplicate_row_caught(shop: ds.Carry, run_module: t.Callable[..., t.Any]) -> None:
    """A duplicated row in a table without a key: the whole row is the key, the count names it."""
    if _count(shop, "orders") == 0:
        test_plan_copy_and_prove(shop, run_module)
    cluster, target = shop.cluster, shop.target
    ds.execute(cluster, target, "ALTER TABLE order_lines DROP CONSTRAINT order_lines_pkey")
    ds.execute(cluster, target, "INSERT INTO order_lines SELECT * FROM order_lines WHERE order_id = 9 AND line_no = 1")
    try:
        res = run_module("integrity_check", _args(shop, ledger_from=shop.conn("dev")))
        assert res.failed
        [mismatch] = res.result["mismatches"]
        assert mismatch["table"] == "order_lines" and mismatch["target_rows"] == mismatch["source_rows"] + 1
        assert mismatch["keyed_by"].startswith("whole row")
        assert mismatch["first_differing_keys"][0]["difference"].startswith("duplicated in target")
        assert mismatch["first_differing_keys"][0]["key"].startswith("(9,1,")
    finally:
        ds.execute(
            cluster,
            target,
            "DELETE FROM order_lines WHERE ctid IN "
            "(SELECT max(ctid) FROM order_lines WHERE order_id = 9 AND line_no = 1)",
        )
        ds.execute(cluster, target, "ALTER TABLE order_lines ADD PRIMARY KEY (order_id, line_no)")


def test_sequence_behind_and_unvalidated_constraint_caught(shop: ds.Carry, run_module: t.Callable[..., t.Any]) -> None:
    if _count(shop, "orders") == 0:
        test_plan_copy_and_prove(shop, run_module)
    cluster, target = shop.cluster, shop.target
    ds.execute(cluster, target, "SELECT setval('orders_id_seq', 3)")
    ds.execute(cluster, target, "ALTER TABLE order_lines ADD CONSTRAINT qty_small CHECK (quantity < 100) NOT VALID")
    try:
        res = run_module("integrity_check", _args(shop, ledger_from=shop.conn("dev")))
        assert res.failed
        assert [s["sequence"] for s in res.result["sequences_behind"]] == ["orders_id_seq"]
        assert res.result["unvalidated_constraints"] == ["order_lines.qty_small"]
        assert "orders_id_seq" in res.result["msg"] and "qty_small" in res.result["msg"]
    finally:
        ds.execute(cluster, target, "ALTER TABLE order_lines DROP CONSTRAINT qty_small")
        ds.execute(cluster, target, "SELECT setval('orders_id_seq', (SELECT max(id) FROM orders))")


def test_orphan_for_new_foreign_key_reported_before_copy(
    pg: t.Any, run_module: t.Callable[..., t.Any], tmp_path: t.Any
) -> None:
    """Production lacks the FK dev has: an orphan row is found by data_plan, before anything is copied."""
    source = ds.shop(pg, 2, 0.1)
    dev = ds.shop(pg, None, 0)
    carry = ds.prepare(pg, source, dev, str(tmp_path))
    try:
        ds.execute(pg, source, "ALTER TABLE orders DROP CONSTRAINT orders_customer_id_fkey")
        ds.execute(pg, source, "UPDATE orders SET customer_id = 99999 WHERE id = 3")
        res = run_module("data_plan", _args(carry, schema_source=carry.conn("dev")))
        assert res.failed
        orphans = [p for p in res.result["problems"] if p["kind"] == "orphan"]
        assert orphans == [
            {
                "table": "orders",
                "column": "customer_id",
                "kind": "orphan",
                "count": 1,
                "sample": ["(99999)"],
                "message": orphans[0]["message"],
            }
        ]
        assert "customers(id)" in orphans[0]["message"] and "orders" in res.result["msg"]
        # the same, with the constraints given as a list instead of a dev connection
        res = run_module(
            "data_plan",
            _args(
                carry,
                post_data_constraints=[
                    {
                        "table": "orders",
                        "type": "f",
                        "columns": ["customer_id"],
                        "ref_table": "customers",
                        "ref_columns": ["id"],
                    }
                ],
            ),
        )
        assert res.failed and [p["kind"] for p in res.result["problems"]] == ["orphan"]
        assert _count(carry, "orders") == 0
    finally:
        for name in (carry.target, source, dev):
            ds.drop_db(pg, name)


def test_worker_killed_half_way(pg: t.Any, run_module: t.Callable[..., t.Any], tmp_path: t.Any) -> None:
    """pg_terminate_backend of a copy's target backend mid-table: the module fails naming the table, nothing of it is
    committed, and integrity_check does not call the half-done copy ok."""
    source = ds.shop(pg, 2, 0.5)
    dev = ds.shop(pg, None, 0)
    carry = ds.prepare(pg, source, dev, str(tmp_path))
    try:
        # a CHECK that sleeps on one row of order_lines: the COPY is provably half way when it is killed
        ds.run_sql(
            pg,
            carry.target,
            """
            CREATE FUNCTION pgshift_slow(bigint) RETURNS boolean LANGUAGE plpgsql AS
              $$ BEGIN IF $1 = 300 THEN PERFORM pg_sleep(60); END IF; RETURN true; END $$;
            ALTER TABLE order_lines ADD CONSTRAINT slow CHECK (pgshift_slow(order_id));
        """,
        )
        outcome: t.Dict[str, t.Any] = {}
        worker = threading.Thread(target=lambda: outcome.update(run=run_module("data_copy", _args(carry, jobs=2))))
        worker.start()
        killed: t.List[t.Tuple[t.Any, ...]] = []
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline:
            killed = ds.execute(
                pg,
                "postgres",
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                "AND wait_event = 'PgSleep' AND application_name = 'pgshift data_copy target'",
                [carry.target],
            )
            time.sleep(0.1)
        worker.join(120)
        assert killed, "the copy never reached the sleeping row"
        run = outcome["run"]
        assert run.failed
        assert "order_lines" in run.result["msg"] and "rolled back" in run.result["msg"]
        assert run.result["table"] == "order_lines"
        assert _count(carry, "order_lines") == 0
        check = run_module("integrity_check", _args(carry))
        assert check.failed and any(m["table"] == "order_lines" for m in check.result["mismatches"])
    finally:
        for name in (carry.target, source, dev):
            ds.drop_db(pg, name)


def test_source_backend_killed(pg: t.Any, run_module: t.Callable[..., t.Any], tmp_path: t.Any) -> None:
    """pg_terminate_backend of a copy's source backend half way (a mapping expression sleeps on one row): the
    target transaction is rolled back, the module fails naming the table and the side that failed."""
    source = ds.shop(pg, 2, 0.2)
    dev = ds.shop(pg, None, 0)
    carry = ds.prepare(pg, source, dev, str(tmp_path))
    mapping = tmp_path / "slow.yml"
    with open(ds.MAPPING) as handle:
        text = handle.read()
    mapping.write_text(
        text.replace(
            "tables:\n",
            "tables:\n  orders:\n    columns:\n      note:\n        expression: >-\n"
            "          (SELECT note FROM pg_sleep(CASE WHEN id = 100 THEN 60 ELSE 0 END))\n",
            1,
        )
    )
    try:
        outcome: t.Dict[str, t.Any] = {}
        args = dict(carry.common_args(str(mapping)), jobs=2)
        worker = threading.Thread(target=lambda: outcome.update(run=run_module("data_copy", args)))
        worker.start()
        killed: t.List[t.Tuple[t.Any, ...]] = []
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline:
            killed = ds.execute(
                pg,
                "postgres",
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                "AND wait_event = 'PgSleep' AND application_name = 'pgshift data_copy source'",
                [source],
            )
            time.sleep(0.1)
        worker.join(120)
        assert killed, "the source COPY never reached the sleeping row"
        run = outcome["run"]
        assert run.failed and run.result["table"] == "orders"
        assert "reading the source" in run.result["msg"] and "rolled back" in run.result["msg"]
        assert _count(carry, "orders") == 0
    finally:
        for name in (carry.target, source, dev):
            ds.drop_db(pg, name)
