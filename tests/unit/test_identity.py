"""A table's identity is (schema, name): the one string encoding of it is injective and reads back what it wrote."""

from __future__ import annotations

import itertools
import typing as t

import pytest

from ansible_collections.pgshift.ops.plugins.module_utils import _checksums, _data
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError
from ansible_collections.pgshift.ops.plugins.module_utils._identity import (
    column_key,
    legacy_qualified_key,
    normalize_column_key,
    normalize_table_key,
    parse_column_key,
    parse_qualified_key,
    parse_table_key,
    qualified_key,
    quote_part,
    split_parts,
    table_key,
)

HOSTILE = [
    "public",
    "a",
    "b",
    "a.b",
    "b.c",
    ".",
    "..",
    ".a",
    "a.",
    '"',
    '""',
    'we"ird',
    '"a.b"',
    '"quoted"',
    'a"."b',
    "With a space",
    " lead",
    "trail ",
    "ünï.cödé",
    "x" * 63,
    "",
]


def test_round_trip_of_hostile_pairs() -> None:
    for schema, name in itertools.product(HOSTILE, HOSTILE):
        assert parse_table_key(table_key(schema, name)) == (schema, name)
        assert parse_qualified_key(qualified_key(schema, name)) == (schema, name)
        assert normalize_table_key(table_key(schema, name)) == table_key(schema, name)
        for column in HOSTILE:
            assert parse_column_key(column_key(table_key(schema, name), column)) == (schema, name, column)


def test_keys_are_injective_over_every_hostile_pair() -> None:
    pairs = list(itertools.product(HOSTILE, HOSTILE))
    assert len({table_key(s, n) for s, n in pairs}) == len(pairs)
    assert len({qualified_key(s, n) for s, n in pairs}) == len(pairs)
    columns = [(s, n, c) for s, n in pairs for c in HOSTILE]
    assert len({column_key(table_key(s, n), c) for s, n, c in columns}) == len(columns)


def test_ordinary_names_keep_their_keys() -> None:
    assert table_key("public", "customers") == "customers"
    assert table_key("sales", "orders") == "sales.orders"
    assert qualified_key("public", "customers") == "public.customers"
    assert table_key("public", "With a space") == "With a space"
    assert column_key("customers", "email") == "customers.email"


def test_the_colliding_pair_gets_two_keys() -> None:
    assert table_key("a", "b") == "a.b"
    assert table_key("public", "a.b") == '"a.b"'
    assert table_key("public", 'we"ird') == '"we""ird"'
    assert qualified_key("public", "a.b") == 'public."a.b"'
    assert qualified_key("a.b", "c") != qualified_key("a", "b.c")
    assert quote_part("plain") == "plain" and quote_part("") == '""'


def test_hand_written_names_are_normalized() -> None:
    assert normalize_table_key("public.orders") == "orders"
    assert normalize_table_key('public."a.b"') == '"a.b"'
    assert normalize_table_key('"public".orders') == "orders"
    assert normalize_table_key('"a"."b"') == "a.b"
    assert normalize_column_key("public.customers.email") == "customers.email"
    assert normalize_column_key('"a.b"."x.y"') == '"a.b"."x.y"'
    assert parse_column_key("a.b.c") == ("a", "b", "c")


@pytest.mark.parametrize(
    "text,message",
    [
        ('"a.b', "unclosed double quote"),
        ('"a"b', "followed by a dot"),
        ("a..b", "empty part"),
        ("a.", "ends with a dot"),
        (".a", "empty part"),
        ("", "empty part"),
        ('we"ird', "must be double-quoted"),
    ],
)
def test_malformed_names_are_refused(text: str, message: str) -> None:
    with pytest.raises(PgShiftError, match=message):
        split_parts(text)


def test_too_many_parts_are_refused() -> None:
    with pytest.raises(PgShiftError, match="more than two unquoted dots"):
        parse_table_key("a.b.c")
    with pytest.raises(PgShiftError, match="schema.table"):
        parse_qualified_key("orders")
    with pytest.raises(PgShiftError, match="table.column"):
        parse_column_key("a.b.c.d")


def test_legacy_manifest_keys_are_read_as_they_were_written() -> None:
    # Before quoting, a manifest key was schema || '.' || table, split at its first dot.
    assert legacy_qualified_key("public.orders") == "public.orders"
    assert legacy_qualified_key("public.a.b") == 'public."a.b"'
    assert legacy_qualified_key('public.we"ird') == 'public."we""ird"'
    old = {"manifest_format": 1, "tables": {"public.orders": {"rows": 1}, "public.a.b": {"rows": 2}, "a.b": {}}}
    assert _checksums.manifest_tables(old) == {
        "public.orders": {"rows": 1},
        'public."a.b"': {"rows": 2},
        "a.b": {},
    }
    new = {"table_keys": _checksums.TABLE_KEYS, "tables": {'public."a.b"': {"rows": 2}, "a.b": {"rows": 3}}}
    assert _checksums.manifest_tables(new) == new["tables"]
    with pytest.raises(PgShiftError, match="does not know"):
        _checksums.manifest_tables({"table_keys": "future-v9", "tables": {}})


def _write(tmp_path: t.Any, text: str) -> str:
    path = tmp_path / "mapping.yml"
    path.write_text(text)
    return str(path)


def test_mapping_names_dotted_tables_apart(tmp_path: t.Any) -> None:
    mapping = _data.load_mapping(
        _write(
            tmp_path,
            "tables:\n"
            "  '\"a.b\"':\n"
            "    from: '\"old.ab\"'\n"
            "  a.b:\n"
            "    columns:\n"
            "      x.y: {from: z}\n"
            "  public.customers:\n"
            "    from: public.people\n"
            "accept_loss:\n"
            "  tables: ['public.\"gone.table\"', a.gone]\n"
            '  columns: [\'"a.b"."c.d"\', a.b.e, public.customers.f]\n',
        )
    )
    assert mapping.table_from('"a.b"') == '"old.ab"'
    assert mapping.table_from("a.b") is None
    assert mapping.column_spec("a.b", "x.y") == {"from": "z"}
    assert mapping.table_from("customers") == "people"
    assert mapping.accept_tables == {'"gone.table"', "a.gone"}
    assert mapping.accept_columns == {'"a.b"."c.d"', "a.b.e", "customers.f"}


@pytest.mark.parametrize(
    "text,message",
    [
        ("tables:\n  orders: {}\n  public.orders: {}\n", "twice"),
        ("tables:\n  a.b.c: {}\n", "more than two unquoted dots"),
        ("tables:\n  t:\n    from: '\"open'\n", "unclosed double quote"),
        ("accept_loss:\n  columns: [orders]\n", "table.column"),
    ],
)
def test_mapping_refuses_ambiguous_names(tmp_path: t.Any, text: str, message: str) -> None:
    with pytest.raises(PgShiftError, match="mapping_file: .*" + message):
        _data.load_mapping(_write(tmp_path, text))


def _table(schema: str, name: str, *columns: str) -> _data.Table:
    cols = [_data.Column(c, "integer", 23, -1, False, None, False, "", "b", 23) for c in columns]
    return _data.Table(schema, name, abs(hash((schema, name))) % 100000, "r", 10, 0, cols)


def test_plan_keeps_both_tables_and_their_losses_apart() -> None:
    source = [_table("a", "b", "id", "gone"), _table("public", "a.b", "id", "gone"), _table("public", "x", "id")]
    target = [_table("a", "b", "id"), _table("public", "a.b", "id")]
    mapping = _data.Mapping(accept_tables={"x"}, accept_columns={'"a.b".gone'})
    plan = _data.build_plan({tb.key: tb for tb in source}, {tb.key: tb for tb in target}, mapping)
    pairs = {tp.key: (tp.source.schema, tp.source.name) for tp in plan.tables if tp.source is not None}
    assert pairs == {"a.b": ("a", "b"), '"a.b"': ("public", "a.b")}
    assert plan.accepted_columns == ['"a.b".gone'] and plan.lost_columns == ["a.b.gone"]
    assert plan.accepted_tables == ["x"] and plan.lost_tables == []


def test_schema_diff_reads_dotted_renames_from_the_mapping(tmp_path: t.Any) -> None:
    from ansible_collections.pgshift.ops.plugins.module_utils._schema_sources import renames_from_mapping

    # Snapshot names are quote_ident-qualified; the mapping names the same tables by _identity keys.
    source: t.Dict[str, t.Any] = {
        "objects": {"tables": {'public."a.b"': {}, "a.b": {}}, "columns": {'public."a.b".v': {}}}
    }
    target: t.Dict[str, t.Any] = {
        "objects": {"tables": {'public."x.y"': {}, "a.b": {}}, "columns": {'public."x.y".w': {}}}
    }
    path = _write(tmp_path, "tables:\n  '\"x.y\"':\n    from: '\"a.b\"'\n    columns:\n      w: {from: v}\n")
    assert renames_from_mapping(path, source, target) == {
        'public."a.b"': 'public."x.y"',
        'public."a.b".v': 'public."x.y".w',
    }
