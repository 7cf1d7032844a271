"""Names pgshift derives from a production database name fit PostgreSQL's 63 bytes, stably (plugins/module_utils/
_names.py, used by _release.py and _run_lock.py). No database here; tests/integration/test_long_names.py releases
and rolls back a production database whose name has 63 bytes."""

from __future__ import annotations

import re

import pytest

from ansible_collections.pgshift.ops.plugins.module_utils import _names as names
from ansible_collections.pgshift.ops.plugins.module_utils import _release as release
from ansible_collections.pgshift.ops.plugins.module_utils import _run_lock as run_lock

LONG = [
    "s" * 41,
    "shop_" + "x" * 58,  # 63 bytes
    "Ünïcode_" + "é" * 26,  # 62 bytes, multi-byte characters at the cut
    'with a space and "quotes" ' + "y" * 36,
]


@pytest.mark.parametrize("prod", ["shop", "a" * 41] + LONG)
def test_every_derived_name_fits_in_63_bytes(prod: str) -> None:
    for name in [release.next_name(prod), release.prev_name(prod), release.failed_name(prod)]:
        assert 0 < len(name.encode("utf-8")) <= 63, name
        name.encode("utf-8").decode("utf-8")  # never a character cut in two
    assert len(run_lock.application_name(prod).encode("utf-8")) <= 63
    assert run_lock.application_name(prod).isascii()


def test_short_names_are_unchanged() -> None:
    assert release.next_name("shop") == "shop__next"
    assert re.fullmatch(r"shop__prev_\d{14}", release.prev_name("shop"))
    assert re.fullmatch(r"shop__failed_\d{14}", release.failed_name("shop"))
    assert run_lock.application_name("shop") == "pgshift-lock:shop"


@pytest.mark.parametrize("prod", LONG)
def test_long_names_are_stable_readable_and_distinct(prod: str) -> None:
    assert release.next_name(prod) == release.next_name(prod)
    assert release.next_name(prod).endswith("__next")
    assert release.next_name(prod)[:20] == prod[:20]
    twin = prod[:-1] + ("z" if prod[-1] != "z" else "w")  # same long prefix, other name
    assert release.next_name(twin) != release.next_name(prod)
    assert release.prev_stem(twin) != release.prev_stem(prod)


@pytest.mark.parametrize("prod", ["shop"] + LONG)
def test_previous_and_failed_copies_are_found_by_their_stem(prod: str) -> None:
    prev = release.prev_name(prod)
    failed = release.failed_name(prod)
    assert prev.startswith(release.prev_stem(prod) + release.PREV_INFIX)
    assert re.fullmatch(re.escape(release.prev_stem(prod) + release.PREV_INFIX) + r"\d{14}", prev)
    assert failed.startswith(release.failed_stem(prod) + release.FAILED_INFIX)
    # a copy of another production database that shares the prefix is never taken for one of prod's
    other = prod + "x" if len((prod + "x").encode()) <= 63 else prod[:-1] + "q"
    assert not release.prev_name(other).startswith(release.prev_stem(prod) + release.PREV_INFIX)
    assert not release.failed_name(other).startswith(release.failed_stem(prod) + release.FAILED_INFIX)


def test_like_prefix_escapes_wildcards() -> None:
    assert release._like_prefix("a_b%c\\") == "a\\_b\\%c\\\\%"


def test_stem_refuses_a_suffix_without_room() -> None:
    with pytest.raises(ValueError):
        names.stem("x" * 80, 60)
