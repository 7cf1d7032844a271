"""The rehearsal forecast of a database-only release adds nothing for an application tier that does not exist."""

from __future__ import annotations

from ansible_collections.pgshift.ops.plugins.module_utils import _rehearsal as rehearsal


def test_no_app_tier_adds_nothing_and_says_so() -> None:
    fc = rehearsal.forecast(20.0, 12.0, 1000, 2000, 0.0)
    assert fc["seconds"] == fc["database_seconds"] == 32.0
    text = rehearsal.describe_forecast(fc)
    assert "database only: no application tier" in text and "+ application tier" not in text


def test_an_app_tier_is_added_and_named() -> None:
    fc = rehearsal.forecast(20.0, 12.0, 1000, 2000, 15.0)
    assert fc["seconds"] == 47.0
    assert "+ application tier 15.0 s" in rehearsal.describe_forecast(fc)
