"""The carry-over plan's pure logic: mapping file validation, matching of tables and columns, losses, COPY format."""

from __future__ import annotations

import typing as t

import pytest

from ansible_collections.pgshift.ops.plugins.module_utils import _data
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError


def col(name: str, typ: str = "integer", oid: int = 23, **kw: t.Any) -> _data.Column:
    base: t.Dict[str, t.Any] = dict(
        typmod=-1, notnull=False, default=None, generated=False, identity="", typtype="b", base_oid=oid
    )
    base.update(kw)
    return _data.Column(name, typ, oid, **base)


def table(name: str, *columns: _data.Column, schema: str = "public", kind: str = "r", size: int = 0) -> _data.Table:
    return _data.Table(schema, name, abs(hash(name)) % 100000, kind, 10, size, list(columns))


def tables(*items: _data.Table) -> t.Dict[str, _data.Table]:
    return {tb.key: tb for tb in items}


def write(tmp_path: t.Any, text: str) -> str:
    path = tmp_path / "mapping.yml"
    path.write_text(text)
    return str(path)


def test_sample_mapping_loads() -> None:
    import os

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    mapping = _data.load_mapping(os.path.join(root, "sample_app", "mapping.yml"))
    assert mapping.column_spec("customers", "display_name") == {"from": "full_name"}
    assert mapping.accept_tables == set() and mapping.accept_columns == set()


@pytest.mark.parametrize(
    "text,message",
    [
        ("tables: [a]\n", "tables must be a mapping"),
        ("tablez: {}\n", "unknown top-level keys"),
        ("tables:\n  t:\n    columns:\n      c: {from: a, expression: b}\n", "exactly one of"),
        ("tables:\n  t:\n    rename: x\n", "takes only 'from' and 'columns'"),
        ("accept_loss:\n  tables: [a]\n  rows: [b]\n", "accept_loss takes only"),
        ("tables: {t: [unclosed\n", "not valid YAML"),
        ("accept_change: {t.c: yes}\n", "accept_change must be a list"),
    ],
)
def test_bad_mapping_files_are_refused(tmp_path: t.Any, text: str, message: str) -> None:
    with pytest.raises(PgShiftError, match=message):
        _data.load_mapping(write(tmp_path, text))


def test_missing_mapping_file_is_a_clear_error(tmp_path: t.Any) -> None:
    with pytest.raises(PgShiftError, match="cannot read mapping_file"):
        _data.load_mapping(str(tmp_path / "absent.yml"))


def test_plan_renames_casts_defaults_and_losses(tmp_path: t.Any) -> None:
    source = tables(
        table("people", col("id"), col("name", "text", 25), col("age"), col("fax", "text", 25), size=100),
        table("old_people", col("id"), size=1000),
        table("gone", col("x")),
        table("pgmigrations", col("id")),
    )
    target = tables(
        table("people", col("id"), col("full_name", "text", 25), col("age", "bigint", 20), col("vip", "boolean", 16)),
        table("persons", col("id"), col("total", "integer", 23, generated=True)),
        table("pgmigrations", col("id")),
        table("new_table", col("id")),
    )
    mapping = _data.load_mapping(
        write(
            tmp_path,
            "tables:\n  people:\n    columns:\n      full_name: {from: name}\n"
            "  persons:\n    from: old_people\n"
            "accept_loss:\n  tables: [gone, never]\n  columns: []\n",
        )
    )
    plan = _data.build_plan(source, target, mapping)
    by_key = plan.by_key()
    people = by_key["people"]
    assert [(c.target.name, c.source.name if c.source else None, c.changed) for c in people.carried] == [
        ("id", "id", False),
        ("full_name", "name", False),
        ("age", "age", True),
    ]
    assert [c.name for c in people.defaulted] == ["vip"]
    assert people.format == "text"  # a changed type forces text with the target's input conversion
    assert by_key["persons"].source is not None and by_key["persons"].source.key == "old_people"
    assert by_key["persons"].generated == ["total"] and by_key["persons"].format == "binary"
    assert by_key["new_table"].source is None
    assert by_key["pgmigrations"].ledger is True
    assert plan.lost_columns == ["people.fax"] and plan.lost_tables == []
    assert plan.accepted_tables == ["gone"]
    assert any("'never'" in w for w in plan.warnings)
    assert [tp.key for tp in plan.tables][0] == "persons"  # largest source first


def test_expression_columns_count_their_source_columns_as_used(tmp_path: t.Any) -> None:
    source = tables(table("t", col("id"), col("first", "text", 25), col("Last Name", "text", 25)))
    target = tables(table("t", col("id"), col("full", "text", 25)))
    mapping = _data.load_mapping(
        write(tmp_path, 'tables:\n  t:\n    columns:\n      full: {expression: "first || \' \' || \\"Last Name\\""}\n')
    )
    plan = _data.build_plan(source, target, mapping)
    assert plan.lost_columns == []
    assert plan.tables[0].carried[1].expression is not None and plan.tables[0].format == "text"


def test_mapping_errors_name_what_is_wrong(tmp_path: t.Any) -> None:
    source = tables(table("t", col("id")))
    target = tables(table("t", col("id"), col("b")))
    with pytest.raises(PgShiftError, match="dev schema does not have"):
        _data.build_plan(source, target, _data.load_mapping(write(tmp_path, "tables:\n  nope: {from: t}\n")))
    with pytest.raises(PgShiftError, match="source database does not have"):
        _data.build_plan(source, target, _data.load_mapping(write(tmp_path, "tables:\n  t: {from: nope}\n")))
    with pytest.raises(PgShiftError, match="does not have"):
        _data.build_plan(
            source, target, _data.load_mapping(write(tmp_path, "tables:\n  t:\n    columns:\n      b: {from: zz}\n"))
        )


def test_ledger_tables_come_from_the_ledger_database() -> None:
    source = tables(table("t", col("id")), table("pgmigrations", col("id"), col("name", "text", 25)))
    target = tables(table("t", col("id")), table("pgmigrations", col("id"), col("name", "text", 25)))
    ledger = tables(table("pgmigrations", col("id"), col("name", "text", 25)))
    plan = _data.build_plan(source, target, _data.Mapping(), ledger_source_tables=ledger)
    assert plan.by_key()["pgmigrations"].source is ledger["pgmigrations"]
    empty = _data.build_plan(source, target, _data.Mapping(), ledger_source_tables={})
    assert empty.by_key()["pgmigrations"].source is None and empty.unaccepted == []


def test_binary_only_for_oid_free_types() -> None:
    enum = col("e", "mood", 70000, typtype="e")
    array_of_enum = col("ea", "mood[]", 70001)
    plan = _data.build_plan(tables(table("t", enum)), tables(table("t", enum)), _data.Mapping())
    assert plan.tables[0].format == "binary"
    plan = _data.build_plan(tables(table("t", array_of_enum)), tables(table("t", array_of_enum)), _data.Mapping())
    assert plan.tables[0].format == "text"  # binary arrays carry element type OIDs, which differ between databases


def test_post_data_constraints_are_validated() -> None:
    out = _data.normalize_constraints([{"table": "t", "type": "u", "columns": ["a"]}])
    assert out[0].ident() == ("t", "u", ("a",), None, ())
    with pytest.raises(PgShiftError, match="ref_table and ref_columns"):
        _data.normalize_constraints([{"table": "t", "type": "f", "columns": ["a"]}])


def test_accept_change_marks_carried_columns_and_generated_columns_over_stored_ones(tmp_path: t.Any) -> None:
    source = tables(
        table("p", col("id"), col("amount", "numeric(10,4)", 1700), col("even", "numeric(10,4)", 1700), col("total")),
        table("q", col("id"), col("sum"), col("twice", generated=True)),
    )
    target = tables(
        table(
            "p",
            col("id"),
            col("amount", "numeric(10,2)", 1700),
            col("even", "numeric(10,2)", 1700),
            col("total", generated=True, default="(id * 2)"),
        ),
        table("q", col("id"), col("total", generated=True), col("twice", generated=True)),
    )
    mapping = _data.load_mapping(
        write(
            tmp_path,
            "tables:\n  q:\n    columns:\n      total: {from: sum}\n"
            "accept_change: [p.amount]\naccept_loss:\n  columns: [q.sum]\n",
        )
    )
    assert mapping.accept_change == {"p.amount"}
    plan = _data.build_plan(source, target, mapping)
    p, q = plan.by_key()["p"], plan.by_key()["q"]
    amount, even = p.carried[1], p.carried[2]
    assert amount.accepted and amount.type_change and not amount.compared_as_source
    assert not even.accepted and even.compared_as_source and even.proof_source()[1:] == (1700, True)
    assert [(g.name, s.name) for g, s in p.overwritten] == [("total", "total")]
    # a stored source column mapped to a generated one is replaced, not lost; a generated source column is neither
    assert [(g.name, s.name) for g, s in q.overwritten] == [("total", "sum")]
    assert plan.lost_columns == [] and plan.warnings == []
