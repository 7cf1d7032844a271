"""The database-level state's pure logic: list settings split as the server flattened them, and the comparison."""

from __future__ import annotations

import typing as t

import pytest

from ansible_collections.pgshift.ops.plugins.module_utils import _db_state
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError


@pytest.mark.parametrize(
    "value,items",
    [
        ('"$user", public', ["$user", "public"]),
        ('"$user", public, "odd ""sch\'ema"', ["$user", "public", "odd \"sch'ema"]),
        ('""', [""]),
        ("public", ["public"]),
        ("MixedCase,other", ["MixedCase", "other"]),
        ('"a,b" , c', ["a,b", "c"]),
    ],
)
def test_split_name_list(value: str, items: list) -> None:
    assert _db_state.split_name_list(value) == items


@pytest.mark.parametrize("value", ['"unterminated', "a b", "a,,"])
def test_split_name_list_refuses_what_the_server_never_writes(value: str) -> None:
    with pytest.raises(PgShiftError):
        _db_state.split_name_list(value)


def test_split_setting_keeps_equal_signs_in_the_value() -> None:
    assert _db_state.split_setting("myapp.expr=a=b") == ("myapp.expr", "a=b")
    with pytest.raises(PgShiftError):
        _db_state.split_setting("no_value")


def state(**kw: t.Any) -> _db_state.DatabaseState:
    base: t.Dict[str, t.Any] = dict(
        name="shop",
        owner="postgres",
        encoding="UTF8",
        collate="C.UTF-8",
        ctype="C.UTF-8",
        locale_provider="c",
        locale=None,
        acl=frozenset({_db_state.AclItem("app", "CONNECT", False)}),
        settings=("work_mem=8MB",),
        role_settings={"app": ("statement_timeout=5s",)},
        comment="c",
    )
    base.update(kw)
    return _db_state.DatabaseState(**base)


def test_compare_names_every_difference_and_ignores_the_name() -> None:
    assert _db_state.compare_database_state(state(), state(name="shop__next")) == []
    found = _db_state.compare_database_state(
        state(),
        state(
            acl=frozenset({_db_state.AclItem("PUBLIC", "CONNECT", False)}),
            settings=("work_mem=4MB",),
            role_settings={},
            comment=None,
        ),
    )
    assert found == [
        "database comment: 'c' in production, None in the new database",
        "database privilege CONNECT to app: missing in the new database",
        "database privilege CONNECT to PUBLIC: only in the new database",
        "database setting work_mem: '8MB' in production, '4MB' in the new database",
        "setting of role app in the database statement_timeout: '5s' in production, absent in the new database",
    ]


def test_statements_refuse_a_locale_that_cannot_change() -> None:
    with pytest.raises(PgShiftError, match="locale_provider"):
        _db_state.database_statements(state(locale_provider="i", locale="de-DE"), state(name="shop__next"))
