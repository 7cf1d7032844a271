"""The rows users add to an extension's configuration table (``pg_extension_config_dump``) are carried from
production, in the copy's snapshot, replacing what the new database holds under the same condition, and proven on
both sides; a configuration table dev's schema lacks is refused in the plan when production has rows in it.

The extension is the tests' own (``ext_support``): production and dev both have it (dev's schema dump brings it into
the new database with its two built-in rows); production adds three rows of its own, dev one that must not survive.
The assertions read the tables with the test's own SQL.
"""

from __future__ import annotations

import typing as t

import data_support as ds
import ext_support
import pytest

ROWS = "SELECT id, name, standard, settings::text, weight::text FROM cfg_entries ORDER BY id"
PRODUCTION_ROWS = [
    "INSERT INTO cfg_entries (id, name, settings, weight) VALUES "
    "(10, 'prod rule', '{\"a\": [1, 2]}', 1.50), (11, 'ünïcode ''quoted''', NULL, NULL), (12, E'tab\\there', '{}', 0)",
    # a built-in row production edited: under pg_dump's rule it is the extension's, not carried
    "UPDATE cfg_entries SET name = 'edited builtin' WHERE id = 2",
]


class World(t.NamedTuple):
    carry: ds.Carry
    extension: str


@pytest.fixture(scope="module")
def world(pg: t.Any, tmp_path_factory: t.Any) -> t.Iterator[World]:
    with ext_support.config_extension(pg) as extension:
        source = ds.create_db(pg)
        dev = ds.create_db(pg)
        for database in (source, dev):
            ds.execute(pg, database, "CREATE EXTENSION " + extension)
            ds.execute(pg, database, "CREATE TABLE items (id int PRIMARY KEY, label text)")
        ds.execute(pg, source, "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 20) g")
        for statement in PRODUCTION_ROWS:
            ds.execute(pg, source, statement)
        ds.execute(pg, dev, "INSERT INTO cfg_entries (id, name) VALUES (99, 'dev only')")
        carry = ds.prepare(pg, source, dev, str(tmp_path_factory.mktemp("extcfg")))
        yield World(carry, extension)
        for name in (carry.target, source, dev):
            ds.drop_db(pg, name)


def _rows(carry: ds.Carry, database: str) -> t.List[t.Tuple[t.Any, ...]]:
    return ds.execute(carry.cluster, database, ROWS)


def test_plan_copy_and_proof_carry_the_configuration_rows(world: World, run_module: t.Callable[..., t.Any]) -> None:
    carry = world.carry
    target_before = _rows(carry, carry.target)
    # the new database has the extension's built-in rows (from CREATE EXTENSION), and no user row
    assert [r[0] for r in target_before] == [1, 2]

    plan = run_module("data_plan", carry.common_args(mapping=None), check=True)
    assert not plan.failed, plan.output
    (entry,) = plan.result["extension_config_tables"]
    assert entry["table"] == "cfg_entries" and entry["extension"] == world.extension
    assert entry["carried"] and entry["condition"] == ext_support.CONDITION
    assert entry["columns"] == ["id", "name", "standard", "settings", "weight"]

    # dev's own row under the condition is in the target first: the copy replaces it
    ds.execute(carry.cluster, carry.target, "INSERT INTO cfg_entries (id, name) VALUES (99, 'dev only')")
    copy = run_module("data_copy", carry.common_args(mapping=None))
    assert not copy.failed, copy.output
    info = copy.result["extension_config_tables"]["cfg_entries"]
    assert (info["deleted"], info["copied"]) == (1, 3)

    source_rows = _rows(carry, carry.source)
    target_rows = _rows(carry, carry.target)
    user = [r for r in source_rows if not r[2]]
    assert [r[0] for r in user] == [10, 11, 12]
    assert [r for r in target_rows if not r[2]] == user, "production's rows, exactly"
    assert [r for r in target_rows if r[2]] == [r for r in target_before if r[2]], "the extension's own rows stay"
    assert 99 not in [r[0] for r in target_rows]

    carry.post_data()
    check = run_module("integrity_check", carry.common_args(mapping=None))
    assert not check.failed, check.output
    proof = check.result["extension_config_tables"]["cfg_entries"]
    assert proof["match"] and proof["source_rows"] == proof["target_rows"] == 3

    # a changed value under the condition fails the proof and is named; a change outside it does not count
    ds.execute(carry.cluster, carry.target, "UPDATE cfg_entries SET weight = 1.5000001 WHERE id = 10")
    try:
        bad = run_module("integrity_check", carry.common_args(mapping=None))
    finally:
        ds.execute(carry.cluster, carry.target, "UPDATE cfg_entries SET weight = 1.50 WHERE id = 10")
    assert bad.failed
    assert not bad.result["extension_config_tables"]["cfg_entries"]["match"]
    assert "extension configuration table cfg_entries" in bad.result["msg"]
    ds.execute(carry.cluster, carry.target, "DELETE FROM cfg_entries WHERE id = 11")
    try:
        short = run_module("integrity_check", carry.common_args(mapping=None))
    finally:
        ds.execute(
            carry.cluster, carry.target, "INSERT INTO cfg_entries (id, name) VALUES (11, %s)", ["ünïcode 'quoted'"]
        )
    assert short.failed
    assert short.result["extension_config_tables"]["cfg_entries"]["target_rows"] == 2


def test_plan_refuses_configuration_rows_dev_drops(world: World, run_module: t.Callable[..., t.Any], pg: t.Any) -> None:
    carry = world.carry
    target = ds.create_db(pg)
    try:
        ds.execute(pg, target, "CREATE TABLE items (id int PRIMARY KEY, label text)")
        args = {"source": carry.conn("source"), "target": pg.conn(target)}
        refused = run_module("data_plan", args, check=True)
        assert refused.failed
        (problem,) = [p for p in refused.result["problems"] if p["kind"] == "extension_config"]
        assert problem["table"] == "cfg_entries" and problem["count"] == 3
        assert (
            "cfg_entries: 3 row(s) of extension %s's configuration table would be lost" % world.extension
            in (refused.result["msg"])
        )
    finally:
        ds.drop_db(pg, target)


def test_swap_back_refuses_configuration_rows_written_after_the_swap(pg: t.Any, tmp_path: t.Any) -> None:
    """Configuration tables are not captured: a swap-back that finds their rows changed since the swap refuses, naming
    the table, and commits nothing in the previous database; unchanged rows do not stop it."""
    from ansible_collections.pgshift.ops.plugins.module_utils import _carry
    from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams

    with ext_support.config_extension(pg) as extension:
        old, new = ds.create_db(pg), ds.create_db(pg)
        try:
            for database in (old, new):
                ds.execute(pg, database, "CREATE EXTENSION " + extension)
                ds.execute(pg, database, "CREATE TABLE items (id int PRIMARY KEY, label text)")
                ds.execute(pg, database, PRODUCTION_ROWS[0])
            mapping = tmp_path / "mapping.yml"
            mapping.write_text("tables: {}\n")
            params = ConnParams.from_params(pg.conn())
            run_id = "test-" + new
            _carry.install_capture(params.with_database(old), params.with_database(new), run_id, str(mapping))
            # a row the application wrote after the swap, in a captured table and in the configuration table
            ds.execute(pg, new, "INSERT INTO items VALUES (1, 'after the swap')")
            ds.execute(pg, new, "INSERT INTO cfg_entries (id, name) VALUES (20, 'after the swap')")
            refused = _carry.carry_back(params, new, old, run_id)
            assert not refused["ok"]
            assert (
                "cfg_entries: rows of extension %s's configuration table were written after the swap" % (extension)
                in refused["message"]
            )
            assert ds.execute(pg, old, "SELECT count(*) FROM items") == [(0,)], "nothing committed"
            ds.execute(pg, new, "DELETE FROM cfg_entries WHERE id = 20")
            carried = _carry.carry_back(params, new, old, run_id)
            assert carried["ok"], carried["message"]
            assert ds.execute(pg, old, "SELECT id, label FROM items") == [(1, "after the swap")]
        finally:
            for database in (old, new):
                ds.drop_db(pg, database)


def test_the_online_window_copies_configuration_rows_keyless_tables_and_large_objects_again(world: World) -> None:
    """What the change stream does not carry (rows of extension configuration tables, a table without a key, large
    objects) is copied again in the online window, production closed: changes made after the bulk copy arrive."""
    import contextlib

    from ansible_collections.pgshift.ops.plugins.module_utils import _data, _online, _online_fill
    from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams

    carry = world.carry
    pg = carry.cluster
    for database in (carry.source, carry.target):
        ds.execute(pg, database, "CREATE TABLE IF NOT EXISTS notes (body text)")
    ds.execute(pg, carry.target, "INSERT INTO notes VALUES ('a stale row of the bulk copy')")
    ds.execute(pg, carry.source, "INSERT INTO notes SELECT 'note ' || g FROM generate_series(1, 3) g")
    ds.execute(pg, carry.source, "INSERT INTO cfg_entries (id, name) VALUES (13, 'added during the fill')")
    (lo,) = ds.execute(pg, carry.source, "SELECT lo_from_bytea(0, 'during the fill'::bytea)")[0]
    source = ConnParams.from_params(carry.conn("source"))
    target = ConnParams.from_params(carry.conn("target"))
    try:
        with (
            contextlib.closing(pg.connect(carry.source, autocommit=False)) as src,
            contextlib.closing(pg.connect(carry.target, autocommit=False)) as tgt,
        ):
            plan = _data.prepare_plan(src, tgt, None, _data.DEFAULT_LEDGER_TABLES, None)
            eligible = _online.eligibility(src, plan)
        assert "notes" in eligible.in_window and eligible.large_objects == 1
        out = _online_fill.copy_window_tables(source, target, plan, eligible)
        assert out["tables"]["notes"]["rows"] == 3
        assert out["extension_config_tables"]["cfg_entries"]["copied"] == 4
        assert sorted(r[0] for r in ds.execute(pg, carry.target, "SELECT body FROM notes")) == [
            "note 1",
            "note 2",
            "note 3",
        ]
        user = [r for r in _rows(carry, carry.target) if not r[2]]
        assert [r[0] for r in user] == [10, 11, 12, 13], "production's rows, the new one included"
        assert ds.execute(pg, carry.target, "SELECT lo_get(%s)", (lo,))[0][0].tobytes() == b"during the fill"
    finally:
        ds.execute(pg, carry.source, "DELETE FROM cfg_entries WHERE id = 13")
        ds.execute(pg, carry.source, "SELECT lo_unlink(%s)", (lo,))
        for database in (carry.source, carry.target):
            ds.execute(pg, database, "DROP TABLE IF EXISTS notes")
            ds.execute(pg, database, "SELECT lo_unlink(oid) FROM pg_largeobject_metadata")
