"""The one conninfo builder (quoting as libpq needs it) and the mapping's names checked against the dev schema."""

from __future__ import annotations

import typing as t

import pytest

from ansible_collections.pgshift.ops.plugins.module_utils import _data
from ansible_collections.pgshift.ops.plugins.module_utils._connection import (
    ConnParams,
    conninfo,
    conninfo_quote,
    dbname_option,
    libpq_dbname,
)
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError


def test_every_value_is_quoted_and_the_password_never_appears() -> None:
    params = ConnParams(host="db.internal", port=6432, user="o'neil", database="shop=x a\\b", password="s3cr=t")
    text = conninfo(params)
    assert "dbname='shop=x a\\\\b'" in text and "user='o\\'neil'" in text and "port='6432'" in text
    assert "host='db.internal'" in text and "s3cr=t" not in text and "password" not in text
    assert dbname_option(params) == "--dbname=" + text
    assert conninfo_quote("a'b\\c") == "'a\\'b\\\\c'"
    assert libpq_dbname("a b=c'd\\e") == "dbname='a b=c\\'d\\\\e'"
    assert "application_name='pgshift data_copy source'" in conninfo(params, "pgshift data_copy source")


def _col(name: str) -> _data.Column:
    return _data.Column(name, "text", 25, -1, False, None, False, "", "b", 25)


def _tables(**tables: t.Sequence[str]) -> t.Dict[str, _data.Table]:
    return {
        k: _data.Table("public", k, i + 1, "r", 1, 1, [_col(c) for c in cols])
        for i, (k, cols) in enumerate(tables.items())
    }


def test_an_empty_dev_schema_is_named_so() -> None:
    with pytest.raises(PgShiftError, match=r"^the dev schema is empty: .* production has 2 \(a, b\)"):
        _data.build_plan(_tables(a=["x"], b=["y"]), _tables(pgmigrations=["id"]), _data.Mapping())


def test_unknown_mapping_names_come_with_the_closest_names() -> None:
    source = _tables(customers=["id", "full_name"])
    target = _tables(customers=["id", "display_name"])
    typo = _data.Mapping({"customers": {"columns": {"dispaly_name": {"from": "full_name"}}}})
    with pytest.raises(PgShiftError, match=r"column customers.dispaly_name.*did you mean 'display_name'\?$"):
        _data.build_plan(source, target, typo)
    with pytest.raises(PgShiftError, match=r"table 'customer', .*did you mean 'customers'\?$"):
        _data.build_plan(source, target, _data.Mapping({"customer": {}}))
    far = _data.Mapping({"customers": {"columns": {"zzz": {"from": "full_name"}}}})
    with pytest.raises(PgShiftError, match=r"\(its columns: id, display_name\)$"):
        _data.build_plan(source, target, far)


def test_unknown_source_names_in_the_mapping_come_with_the_closest_names() -> None:
    source = _tables(persons=["id", "full_name"])
    target = _tables(people=["id", "display_name"])
    with pytest.raises(PgShiftError, match=r"names 'person', which the source database does not have; did you mean"):
        _data.build_plan(source, target, _data.Mapping({"people": {"from": "person"}}))
    column = _data.Mapping({"people": {"from": "persons", "columns": {"display_name": {"from": "fullname"}}}})
    with pytest.raises(PgShiftError, match=r"names 'fullname', which source table persons does not have; did you mean"):
        _data.build_plan(source, target, column)
