"""Reading production at one exported snapshot; the text-form row hash (servers before 14); no secret in output."""

from __future__ import annotations

import contextlib
import typing as t

import data_support as ds
import pytest

from ansible_collections.pgshift.ops.plugins.module_utils import _checksums
from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams
from ansible_collections.pgshift.ops.plugins.module_utils._data_check import integrity_check


@pytest.fixture(scope="module")
def shop(pg: t.Any, tmp_path_factory: t.Any) -> t.Iterator[ds.Carry]:
    source = ds.shop(pg, 2, 0.2)
    dev = ds.shop(pg, None, 0)
    carry = ds.prepare(pg, source, dev, str(tmp_path_factory.mktemp("snap")))
    yield carry
    for name in (carry.target, source, dev):
        ds.drop_db(pg, name)


def test_copy_and_check_at_an_exported_snapshot(shop: ds.Carry, run_module: t.Callable[..., t.Any]) -> None:
    """Rows written to production after the snapshot was exported are neither copied nor compared (F3)."""
    with contextlib.closing(shop.cluster.connect(shop.source, autocommit=False)) as holder:
        holder.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with holder.cursor() as cur:
            cur.execute("SELECT pg_export_snapshot(), (SELECT count(*) FROM orders)")
            snapshot, before = cur.fetchone()
        ds.execute(shop.cluster, shop.source, "INSERT INTO orders (customer_id, note) VALUES (1, 'after the snapshot')")
        args = dict(shop.common_args(), ledger_from=shop.conn("dev"), snapshot=snapshot)
        copy = run_module("data_copy", args)
        assert not copy.failed, copy.output
        assert copy.result["snapshot"] == snapshot and copy.result["tables"]["orders"]["rows"] == before
        shop.post_data()
        check = run_module("integrity_check", args)
        assert not check.failed, check.output
        assert check.result["tables"]["orders"]["source_rows"] == before
    # Without the snapshot, today's production has one more order: caught and named.
    res = run_module("integrity_check", dict(shop.common_args(), ledger_from=shop.conn("dev")))
    assert res.failed
    [mismatch] = res.result["mismatches"]
    assert mismatch["table"] == "orders" and mismatch["first_differing_keys"][0]["difference"] == "missing in target"
    ds.execute(shop.cluster, shop.source, "DELETE FROM orders WHERE note = 'after the snapshot'")


def test_text_row_hash_for_older_servers(shop: ds.Carry, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hashtextextended(ROW(...)::text) path (servers before 14) proves and narrows down the same way."""
    if not ds.execute(shop.cluster, shop.target, "SELECT count(*) FROM orders")[0][0]:
        pytest.fail("run with test_copy_and_check_at_an_exported_snapshot first (module order)")
    monkeypatch.setattr(_checksums, "MIN_HASH_BY_VALUE_SERVER", 10**9)
    src = ConnParams.from_params(shop.conn("source"))
    tgt = ConnParams.from_params(shop.conn("target"))
    led = ConnParams.from_params(shop.conn("dev"))
    result = integrity_check(src, tgt, ds.MAPPING, ledger_from=led)
    assert result["ok"] and result["row_hash"] == "row text"
    assert result["checksum_algorithm"] == _checksums.ALGORITHM_ROW_TEXT
    ds.execute(shop.cluster, shop.target, "UPDATE customers SET display_name = 'x' WHERE id = 5")
    try:
        result = integrity_check(src, tgt, ds.MAPPING, ledger_from=led)
        assert not result["ok"]
        assert result["mismatches"][0]["first_differing_keys"] == [{"key": "(5)", "difference": "changed"}]
    finally:
        # the target has dev's trigger that touches updated_at: put both columns back as production has them
        name, updated = ds.execute(
            shop.cluster, shop.source, "SELECT full_name, updated_at FROM customers WHERE id = 5"
        )[0]
        ds.execute(
            shop.cluster,
            shop.target,
            "SET session_replication_role = replica; "
            "UPDATE customers SET display_name = %s, updated_at = %s WHERE id = 5",
            [name, updated],
        )


def test_no_secret_in_output_on_failure(shop: ds.Carry, run_module: t.Callable[..., t.Any]) -> None:
    args = shop.common_args()
    args["target"] = dict(args["target"], database="no_such_db")
    for module in ("data_plan", "data_copy", "integrity_check"):
        res = run_module(module, args, verbosity=4)
        assert res.failed and "no_such_db" in res.result["msg"]
        assert shop.cluster.password not in res.output


def test_integrity_check_mode_does_not_create_amcheck(shop: ds.Carry, run_module: t.Callable[..., t.Any]) -> None:
    ds.execute(shop.cluster, shop.target, "DROP EXTENSION IF EXISTS amcheck")
    res = run_module(
        "integrity_check", dict(shop.common_args(), ledger_from=shop.conn("dev"), amcheck=True), check=True
    )
    assert not res.failed, res.output
    assert res.result["changed"] is False and "would be created" in res.result["amcheck"]["note"]
    assert ds.execute(shop.cluster, shop.target, "SELECT count(*) FROM pg_extension WHERE extname = 'amcheck'") == [
        (0,)
    ]
