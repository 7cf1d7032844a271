"""The collection's one content checksum (_checksums) on real PostgreSQL: what it sees, what it must not depend on,
and how backups record it (``checksum_algorithm``) so that a verification only compares like with like."""

from __future__ import annotations

import contextlib
import json
import typing as t

import backup_support as bs
import pytest

from ansible_collections.pgshift.ops.plugins.module_utils import _backup_verify, _checksums
from ansible_collections.pgshift.ops.plugins.module_utils._connection import connect
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError

WIDE_SQL = [
    "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')",
    "CREATE DOMAIN posint AS integer CHECK (VALUE > 0)",
    "CREATE TYPE pair AS (a int, b text)",
    "CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)",
    "CREATE TABLE wide (id int PRIMARY KEY, flag boolean, small smallint, big bigint, label text,"
    " ci_label text COLLATE ci, code char(6), name varchar(40), at timestamp, at_tz timestamptz, day date,"
    " t time, span interval, amount numeric, ratio float8, ratio4 float4, raw bytea, doc jsonb, js json,"
    " u uuid, addr inet, mac macaddr, tags text[], nums int[], stamps timestamptz[], m mood, p posint,"
    ' pr pair, ch "char")',
    "INSERT INTO wide SELECT g, g % 2 = 0, g::smallint, g * 1000000007::bigint, 'row ' || g, 'Case ' || g,"
    " 'c' || g, 'name ' || g, timestamp '2024-01-01' + g * interval '1 min',"
    " timestamptz '2024-03-31 01:30:00+00' + g * interval '7 min', date '2024-01-01' + g, time '00:00' + g * interval"
    " '1 s', g * interval '1 day 2 hours', g / 7.0, g / 3.0, (g / 3.0)::float4, decode(md5(g::text), 'hex'),"
    " jsonb_build_object('g', g), json_build_object('g', g), md5(g::text)::uuid, ('10.0.0.' || (g % 250))::inet,"
    " '08:00:2b:01:02:03', ARRAY['x' || g, NULL], ARRAY[g, g + 1], ARRAY[timestamptz '2024-01-01 00:00+00'],"
    " (ARRAY['sad', 'ok', 'happy'])[g % 3 + 1]::mood, g, ROW(g, 'p' || g)::pair, 'a'"
    " FROM generate_series(1, 200) g",
    "INSERT INTO wide (id) VALUES (1000)",  # a row of NULLs
]

# Every change below keeps the rows' count; values-v1 must see each one (types hashed by value and by text alike).
CHANGES = [
    ("UPDATE wide SET amount = 1.00 WHERE id = 7", "numeric display scale (1 -> 1.00)"),
    ("UPDATE wide SET ratio = '-0' WHERE id = 1000", "float8 -0 instead of NULL"),
    ("UPDATE wide SET ci_label = upper(ci_label) WHERE id = 3", "case under a nondeterministic collation"),
    ("UPDATE wide SET code = 'c4' WHERE id = 5", "char(n) value"),
    ("UPDATE wide SET at_tz = at_tz + interval '1 microsecond' WHERE id = 9", "timestamptz by 1 us"),
    ("UPDATE wide SET tags = ARRAY['x11', 'y'] WHERE id = 11", "text[] element"),
    ("UPDATE wide SET m = 'happy' WHERE id = 3", "enum value"),
    ("UPDATE wide SET pr = ROW(12, 'q')::pair WHERE id = 12", "composite value"),
    ("UPDATE wide SET flag = NULL WHERE id = 2", "boolean to NULL"),
    ("UPDATE wide SET label = NULL, name = label WHERE id = 13", "a value moved to another column"),
]


@pytest.fixture(scope="module")
def wide_db(pg: t.Any) -> t.Iterator[str]:
    name = "bk_checksums"
    from conftest import create_database

    create_database(pg, name)
    with contextlib.closing(pg.connect(name)) as conn, conn.cursor() as cur:
        for statement in WIDE_SQL:
            cur.execute(statement)
        # Odd defaults for every session of this database: the checksums must not depend on them.
        for setting, value in (
            ("TimeZone", "Pacific/Chatham"),
            ("DateStyle", "SQL, DMY"),
            ("IntervalStyle", "iso_8601"),
            ("extra_float_digits", "0"),
            ("bytea_output", "escape"),
        ):
            cur.execute("ALTER DATABASE bk_checksums SET %s = '%s'" % (setting, value))
    yield name
    with contextlib.closing(pg.connect()) as conn, conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS bk_checksums WITH (FORCE)")


def _sums(pg: t.Any, db: str, algorithm: str) -> t.Dict[str, t.Dict[str, t.Any]]:
    with contextlib.closing(connect(bs.params(pg, db))) as conn:
        return _checksums.table_checksums(conn, [("public", "wide")], algorithm=algorithm)


def test_values_checksum_sees_every_change(pg: t.Any, wide_db: str) -> None:
    before = _sums(pg, wide_db, _checksums.ALGORITHM_VALUES)["public.wide"]
    assert before["rows"] == 201
    with contextlib.closing(pg.connect(wide_db)) as conn:
        conn.autocommit = True
        for statement, what in CHANGES:
            with conn.cursor() as cur:
                cur.execute(statement)
            after = _sums(pg, wide_db, _checksums.ALGORITHM_VALUES)["public.wide"]
            assert after["rows"] == 201
            assert after["checksum"] != before["checksum"], what
            before = after


def test_pinned_sessions_give_identical_checksums_whatever_the_defaults(
    pg: t.Any, wide_db: str, tmp_path: t.Any
) -> None:
    """The database's odd defaults (TimeZone, DateStyle, ...) and a copy without them give the same checksums."""
    backup = bs.take(pg, wide_db, tmp_path / "b", format="custom", globals=False)
    assert backup["manifest"]["checksum_algorithm"] == _checksums.ALGORITHM_VALUES
    result = bs.verify(backup["manifest_path"], "restore", pg)
    assert result["verified"] is True, result["mismatches"]
    assert result["checksum_algorithm"] == _checksums.ALGORITHM_VALUES
    assert result["tables"]["public.wide"]["rows"] == 201


def test_each_algorithm_round_trips_and_is_recorded(pg: t.Any, wide_db: str, tmp_path: t.Any) -> None:
    for algorithm in _checksums.ALGORITHMS:
        backup = bs.take(
            pg, wide_db, tmp_path / algorithm, format="directory", jobs=2, globals=False, checksum_algorithm=algorithm
        )
        manifest = backup["manifest"]
        assert manifest["checksum_algorithm"] == algorithm
        assert manifest["tables"]["public.wide"] == _sums(pg, wide_db, algorithm)["public.wide"]
        result = bs.verify(backup["manifest_path"], "restore", pg)
        assert result["verified"] is True, (algorithm, result["mismatches"])
        assert result["checksum_algorithm"] == algorithm
    values = _sums(pg, wide_db, _checksums.ALGORITHM_VALUES)["public.wide"]["checksum"]
    text = _sums(pg, wide_db, _checksums.ALGORITHM_ROW_TEXT)["public.wide"]["checksum"]
    assert values != text  # two different algorithms: comparing one with the other would prove nothing


def test_legacy_manifest_is_verified_with_the_row_text_algorithm(pg: t.Any, wide_db: str, tmp_path: t.Any) -> None:
    """A manifest from before the algorithm was recorded hashed row text: it is verified that way, and only that way."""
    old = bs.take(pg, wide_db, tmp_path / "old", format="custom", globals=False, checksum_algorithm="row-text-v1")
    bs.reseal(old["manifest_path"], edit=lambda m: m.pop("checksum_algorithm"))
    result = bs.verify(old["manifest_path"], "restore", pg)
    assert result["verified"] is True, result["mismatches"]
    assert result["checksum_algorithm"] == _checksums.ALGORITHM_ROW_TEXT
    # The same doctoring on a values-v1 manifest: its checksums are then read as row text and cannot match.
    new = bs.take(pg, wide_db, tmp_path / "new", format="custom", globals=False)
    bs.reseal(new["manifest_path"], edit=lambda m: m.pop("checksum_algorithm"))
    result = bs.verify(new["manifest_path"], "restore", pg)
    assert result["verified"] is False
    assert "public.wide" in {m["table"] for m in result["mismatches"]}
    assert not bs.databases_like(pg, "pgshift_verify_")


def test_unknown_algorithm_is_refused_with_a_clear_message(pg: t.Any, wide_db: str, tmp_path: t.Any) -> None:
    backup = bs.take(pg, wide_db, tmp_path / "b", format="custom", globals=False)
    bs.reseal(backup["manifest_path"], edit=lambda m: m.update(checksum_algorithm="blake9-v7"))
    for level in ("checksum", "restore"):
        with pytest.raises(PgShiftError, match="checksum algorithm 'blake9-v7'.*take a new backup"):
            bs.verify(backup["manifest_path"], level, pg)
    with pytest.raises(PgShiftError, match="take a new backup"):
        _backup_verify.restore_backup(backup["manifest_path"], bs.params(pg), "bk_never_created")
    assert not bs.database_exists(pg, "bk_never_created")
    assert not bs.databases_like(pg, "pgshift_restore_")
    with open(backup["manifest_path"]) as handle:
        assert json.load(handle)["checksum_algorithm"] == "blake9-v7"
