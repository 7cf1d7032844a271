"""Unit tests of plugins/module_utils/_migration_files.py: a migrations folder read the way node-pg-migrate reads it.

The expected values follow node-pg-migrate 9 (its getNumericPrefix, compareMigrationFileNames, getMigrationFilePaths
and the SQL loader's getActions; ../shared/notes/node-pg-migrate.md); every case below gives the same answer there.
"""

from __future__ import annotations

import calendar
import hashlib
import os
import typing as t

import pytest

from ansible_collections.pgshift.ops.plugins.module_utils import _migration_files as mf
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError


def _utc_ms(year: int, month: int, day: int, hour: int, minute: int, second: int, ms: int) -> int:
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) * 1000 + ms


def _folder(tmp_path: t.Any, files: t.Mapping[str, str]) -> str:
    for name, content in files.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
    return str(tmp_path)


def _names(folder: str, **kwargs: t.Any) -> t.List[str]:
    return [m.filename for m in mf.list_migrations(folder, **kwargs)]


# ---------------------------------------------------------------------------------------------------- prefixes
@pytest.mark.parametrize(
    ("filename", "value"),
    [
        ("1_init.sql", 1),
        ("0001_init.sql", 1),  # index naming: leading zeros do not count
        ("1391877300255_add-users.js", 1391877300255),  # 13 digits: milliseconds since the epoch, as they are
        ("1234567890123456_long.sql", 1234567890123456),  # 16 digits: a plain number
        ("20200513070724505_utc.sql", _utc_ms(2020, 5, 13, 7, 7, 24, 505)),  # 17 digits: UTC YYYYMMDDhhmmssSSS
        ("20231114221320000_same-instant.sql", 1700000000000),
        ("20200231000000000_feb-31.sql", _utc_ms(2020, 3, 2, 0, 0, 0, 0)),  # rolls over like JavaScript's Date
        ("7-dash.sql", 7),
        ("42", 42),
    ],
)
def test_numeric_prefix(filename: str, value: int) -> None:
    assert mf.numeric_prefix(filename) == value


@pytest.mark.parametrize("filename", ["init.sql", "_1_init.sql", "v1_init.sql", " 1_init.sql", "README.md"])
def test_a_file_without_numeric_prefix_is_an_error(filename: str) -> None:
    with pytest.raises(PgShiftError) as caught:
        mf.numeric_prefix(filename)
    assert "cannot determine numeric prefix" in caught.value.msg
    assert repr(filename) in caught.value.msg
    assert caught.value.details == {"file": filename}


# ---------------------------------------------------------------------------------------------------- order
def test_order_is_numeric_not_lexicographic(tmp_path: t.Any) -> None:
    folder = _folder(tmp_path, {"1000_c.sql": "", "999_b.sql": "", "2_a.sql": "", "10_d.sql": ""})
    assert _names(folder) == ["2_a.sql", "10_d.sql", "999_b.sql", "1000_c.sql"]


def test_17_digit_utc_prefixes_sort_among_millisecond_prefixes(tmp_path: t.Any) -> None:
    # 20231114221320000 is 2023-11-14T22:13:20.000Z, that is 1700000000000 ms: it sorts by instant, not by digits
    folder = _folder(
        tmp_path,
        {
            "1700000000001_b.sql": "",
            "20231114221320000_a.sql": "",
            "1699999999999_c.sql": "",
            "1700000000002_d.sql": "",
        },
    )
    assert _names(folder) == [
        "1699999999999_c.sql",
        "20231114221320000_a.sql",
        "1700000000001_b.sql",
        "1700000000002_d.sql",
    ]


def test_equal_prefixes_fall_back_to_the_name_with_numeric_collation(tmp_path: t.Any) -> None:
    folder = _folder(
        tmp_path,
        {"5_step10.sql": "", "5_step9.sql": "", "5_step2.sql": "", "0005_alpha.sql": "", "4_zulu.sql": ""},
    )
    assert _names(folder) == ["4_zulu.sql", "0005_alpha.sql", "5_step2.sql", "5_step9.sql", "5_step10.sql"]


def test_a_name_sorts_before_its_longer_variants(tmp_path: t.Any) -> None:
    folder = _folder(tmp_path, {"062_view_test.js": "", "062_view.js": ""})
    assert _names(folder) == ["062_view.js", "062_view_test.js"]


def test_the_order_does_not_depend_on_the_order_files_were_created(tmp_path: t.Any) -> None:
    names = ["3_c.sql", "1_a.sql", "20_e.sql", "2_b.sql", "10_d.sql"]
    first = tmp_path / "first"
    second = tmp_path / "second"
    first.mkdir()
    second.mkdir()
    assert _names(_folder(first, dict.fromkeys(names, ""))) == _names(_folder(second, dict.fromkeys(names[::-1], "")))


# ---------------------------------------------------------------------------------------------------- what counts
def test_dotfiles_and_subfolders_are_not_migrations(tmp_path: t.Any) -> None:
    folder = _folder(tmp_path, {"1_a.sql": "", ".keep": "", ".DS_Store": "", ".2_hidden.sql": ""})
    (tmp_path / "2_subfolder").mkdir()
    (tmp_path / "2_subfolder" / "3_inside.sql").write_text("", encoding="utf-8")
    assert _names(folder) == ["1_a.sql"]


def test_every_other_regular_file_is_a_migration_and_needs_a_prefix(tmp_path: t.Any) -> None:
    folder = _folder(tmp_path, {"1_a.sql": "", "README.md": "# notes"})
    with pytest.raises(PgShiftError) as caught:
        mf.list_migrations(folder)
    assert "'README.md'" in caught.value.msg


def test_ignore_pattern_leaves_out_matching_files(tmp_path: t.Any) -> None:
    folder = _folder(tmp_path, {"1_a.sql": "", "README.md": "", "notes.md": "", ".keep": "", "2_b.sql": ""})
    assert _names(folder, ignore_pattern=r"^(\..*|.*\.md)$") == ["1_a.sql", "2_b.sql"]


def test_a_custom_ignore_pattern_replaces_the_default(tmp_path: t.Any) -> None:
    # node-pg-migrate uses the given pattern instead of ^\..*, so dotfiles count again
    folder = _folder(tmp_path, {"1_a.sql": "", "README.md": "", ".3_dot.sql": ""})
    with pytest.raises(PgShiftError):
        mf.list_migrations(folder, ignore_pattern=r".*\.md")


def test_two_files_with_one_name_are_an_error(tmp_path: t.Any) -> None:
    folder = _folder(tmp_path, {"1_a.sql": "", "1_a.js": "", "2_b.sql": "", "2_b.ts": "", "3_c.sql": ""})
    with pytest.raises(PgShiftError) as caught:
        mf.list_migrations(folder)
    assert "1_a, 2_b" in caught.value.msg


def test_a_missing_folder_is_an_error(tmp_path: t.Any) -> None:
    with pytest.raises(PgShiftError) as caught:
        mf.list_migrations(str(tmp_path / "nope"))
    assert caught.value.details == {"path": str(tmp_path / "nope")}
    (tmp_path / "file").write_text("", encoding="utf-8")
    with pytest.raises(PgShiftError):
        mf.list_migrations(str(tmp_path / "file"))


def test_migration_file_facts(tmp_path: t.Any) -> None:
    sql_text = "-- Up Migration\nCREATE TABLE t (id int);\n-- Down Migration\nDROP TABLE t;\n"
    folder = _folder(tmp_path, {"1700000000000_create-t.sql": sql_text, "1700000000001_seed.JS": "exports.up = 1;"})
    first, second = mf.list_migrations(folder)
    assert first.name == "1700000000000_create-t"  # the ledger name: basename without extension
    assert first.filename == "1700000000000_create-t.sql"
    assert first.path == os.path.join(folder, "1700000000000_create-t.sql")
    assert first.prefix == 1700000000000
    assert first.kind == "sql"
    assert first.sha256 == hashlib.sha256(sql_text.encode("utf-8")).hexdigest()
    assert first.read() == sql_text
    assert first.to_dict() == {
        "name": "1700000000000_create-t",
        "file": "1700000000000_create-t.sql",
        "sha256": first.sha256,
        "kind": "sql",
    }
    assert second.kind == "js"


def test_an_empty_folder_has_no_migrations(tmp_path: t.Any) -> None:
    assert mf.list_migrations(str(tmp_path)) == []


def test_sha256_file_reads_large_files_in_blocks(tmp_path: t.Any) -> None:
    data = os.urandom(3 * (1 << 20) + 17)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert mf.sha256_file(str(path)) == hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------------- SQL markers
UP = "-- Up Migration\nCREATE TABLE t (id int);\n"
DOWN = "-- Down Migration\nDROP TABLE t;\n"


def test_split_up_then_down() -> None:
    assert mf.split_sql(UP + DOWN) == (UP, DOWN)


def test_split_down_then_up() -> None:
    assert mf.split_sql(DOWN + UP) == (UP, DOWN)


def test_no_marker_means_all_up_and_no_down() -> None:
    content = "CREATE TABLE t (id int);\n"
    assert mf.split_sql(content) == (content, None)


def test_down_marker_only_runs_the_whole_file_up_as_node_pg_migrate_does() -> None:
    # node-pg-migrate 9, src/sqlMigration.ts: no up marker -> the whole content is the up migration
    content = "CREATE TABLE t (id int);\n" + DOWN
    assert mf.split_sql(content) == (content, DOWN)


def test_ignore_pattern_must_match_the_whole_name(tmp_path: t.Any) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("1_cmd.sql", "2_b.md"):
        (folder / name).write_text("SELECT 1;\n")
    # node-pg-migrate builds new RegExp(`^${ignorePattern}$`): "md" alone matches no whole name
    assert [m.filename for m in mf.list_migrations(str(folder), ignore_pattern="md")] == ["1_cmd.sql", "2_b.md"]
    assert [m.filename for m in mf.list_migrations(str(folder), ignore_pattern=r".*\.md")] == ["1_cmd.sql"]


def test_up_marker_only_means_no_down() -> None:
    assert mf.split_sql(UP) == (UP, None)


def test_text_before_the_up_marker_is_not_part_of_the_migration() -> None:
    assert mf.split_sql("-- created by hand\n" + UP + DOWN) == (UP, DOWN)


@pytest.mark.parametrize(
    "marker",
    [
        "-- Up Migration",
        "-- up migration",
        "--UP MIGRATION",
        "---- Up Migration ----",
        "-- - up\tmigration",
        "   -- Up Migration",  # leading whitespace
        "\t-- -- up  migration",
        "-- Up Migrations",  # no word boundary after "migration" in node-pg-migrate's expression
        "-- up migration: create the table",
    ],
)
def test_up_marker_spellings(marker: str) -> None:
    assert mf.split_sql("SELECT 0;\n%s\nSELECT 1;\n" % marker) == ("%s\nSELECT 1;\n" % marker, None)


@pytest.mark.parametrize(
    "line",
    [
        "SELECT 1; -- Up Migration",  # not at the start of a line
        "-- this sets up migration",  # something between the dashes and "up"
        "-- upmigration",  # no whitespace between the words
        "-- up: migration",
        "# Up Migration",
        "- Up Migration",
    ],
)
def test_lines_that_are_not_markers(line: str) -> None:
    content = "%s\nSELECT 1;\n" % line
    assert mf.split_sql(content) == (content, None)


def test_blank_lines_before_a_marker_go_with_it() -> None:
    # node-pg-migrate's ^\s* (multiline) starts the match at the first blank line before the marker
    assert mf.split_sql("-- Up Migration\nA;\n\n-- Down Migration\nB;\n") == (
        "-- Up Migration\nA;\n",
        "\n-- Down Migration\nB;\n",
    )


def test_the_first_marker_of_each_kind_wins() -> None:
    content = "-- Up Migration\nA;\n-- Down Migration\nB;\n-- Down Migration\nC;\n"
    assert mf.split_sql(content) == ("-- Up Migration\nA;\n", "-- Down Migration\nB;\n-- Down Migration\nC;\n")


def test_empty_sections() -> None:
    assert mf.split_sql("-- Up Migration\n-- Down Migration\n") == ("-- Up Migration\n", "-- Down Migration\n")
