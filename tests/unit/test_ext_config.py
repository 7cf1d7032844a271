"""Extension configuration conditions: a WHERE clause (or nothing) is used as registered; anything else is refused."""

from __future__ import annotations

import pytest
from psycopg2 import sql

from ansible_collections.pgshift.ops.plugins.module_utils import _ext_config
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError


def _table(condition: str) -> _ext_config.ConfigTable:
    return _ext_config.ConfigTable("myext", "public", "cfg", "r", condition)


@pytest.mark.parametrize("condition", ["", "  ", "WHERE NOT standard", "where id > 100", " WHERE\n  a AND b"])
def test_where_clauses_are_used_as_registered(condition: str) -> None:
    where = _table(condition).where()
    assert isinstance(where, sql.SQL) and where.string == condition


@pytest.mark.parametrize("condition", ["NOT standard", "; DELETE FROM cfg", "WHEREVER", "ORDER BY id"])
def test_other_conditions_are_refused(condition: str) -> None:
    with pytest.raises(PgShiftError, match="is not a WHERE clause"):
        _table(condition).where()


def test_keys_follow_the_table_identity() -> None:
    assert _ext_config.ConfigTable("e", "public", "a.b", "r", "").key == '"a.b"'
    assert _ext_config.ConfigTable("e", "a", "b", "r", "").key == "a.b"
