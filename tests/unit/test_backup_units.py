"""Unit tests of the backup helpers that need no server: compression choice, manifest seal, file checks, retention."""

from __future__ import annotations

import datetime
import json
import os
import stat
import typing as t

import pytest

from ansible_collections.pgshift.ops.plugins.module_utils import _backup, _backup_verify
from ansible_collections.pgshift.ops.plugins.module_utils._checksums import TableRef, checksum_query, compare_checksums
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError


@pytest.mark.parametrize(
    "value,major,expected",
    [
        ("light", 15, ["--compress=1"]),
        ("light", 16, ["--compress=lz4"]),
        ("none", 15, ["--compress=0"]),
        ("1", 15, ["--compress=1"]),
        ("gzip:3", 15, ["--compress=3"]),
        ("gzip", 15, ["--compress=6"]),
        ("zstd:3", 17, ["--compress=zstd:3"]),
        ("lz4", 16, ["--compress=lz4"]),
    ],
)
def test_compress_args(value: str, major: int, expected: t.List[str]) -> None:
    assert _backup.compress_args(value, major) == expected


@pytest.mark.parametrize("value", ["lz4", "zstd:5"])
def test_lz4_and_zstd_need_a_16_client(value: str) -> None:
    with pytest.raises(PgShiftError, match="needs pg_dump 16"):
        _backup.compress_args(value, 15)


@pytest.mark.parametrize("value", ["fast", "1; rm -rf /", "gzip:", "brotli"])
def test_unknown_compression_is_refused(value: str) -> None:
    with pytest.raises(PgShiftError, match="not understood"):
        _backup.compress_args(value, 16)


def test_libpq_dbname_keeps_hostile_names_a_name() -> None:
    assert _backup.libpq_dbname("shop") == "dbname='shop'"
    assert _backup.libpq_dbname("a b=c'd\\e") == "dbname='a b=c\\'d\\\\e'"


def test_safe_label() -> None:
    assert _backup.safe_label("shop") == "shop"
    assert _backup.safe_label("../we ird/Ünï") == "_we_ird__n_"
    assert _backup.safe_label("") == "backup"


def _fake_backup(folder: str, created: str, label: str = "shop") -> str:
    os.makedirs(os.path.join(folder, "database.dir"), mode=0o700)
    for name, data in (
        ("database.dir/toc.dat", b"toc"),
        ("database.dir/1.dat.gz", b"rows" * 100),
        ("globals.sql", b"--"),
    ):
        _backup.write_file_atomic(os.path.join(folder, name), data)
    manifest = {
        "manifest_format": _backup.MANIFEST_FORMAT,
        "backup_id": os.path.basename(folder),
        "label": label,
        "created": created,
        "archive": "database.dir",
        "files": _backup.file_digests(folder),
        "tables": {"public.t": {"rows": 1, "checksum": "42"}},
    }
    path = os.path.join(folder, _backup.MANIFEST_NAME)
    _backup.write_manifest(path, manifest)
    return path


def test_manifest_seal_detects_edits(tmp_path: t.Any) -> None:
    path = _fake_backup(str(tmp_path / "b1"), "2026-01-01T00:00:00Z")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert _backup.load_manifest(path)["tables"]["public.t"]["rows"] == 1
    with open(path) as handle:
        manifest = json.load(handle)
    manifest["tables"]["public.t"]["checksum"] = "43"
    with open(path, "w") as handle:
        json.dump(manifest, handle)
    with pytest.raises(PgShiftError, match="modified after it was written"):
        _backup.load_manifest(path)


def test_not_a_manifest(tmp_path: t.Any) -> None:
    path = tmp_path / "m.json"
    path.write_text('{"hello": 1}')
    with pytest.raises(PgShiftError, match="not a pgshift backup manifest"):
        _backup.load_manifest(str(path))
    with pytest.raises(PgShiftError, match="does not exist"):
        _backup.load_manifest(str(tmp_path / "absent.json"))


def test_verify_files_names_each_problem(tmp_path: t.Any) -> None:
    folder = str(tmp_path / "b1")
    path = _fake_backup(folder, "2026-01-01T00:00:00Z")
    manifest = _backup.load_manifest(path)
    assert _backup_verify.verify_files(path, manifest) == []
    with open(os.path.join(folder, "globals.sql"), "wb") as handle:
        handle.write(b"-!")  # same size, other bytes
    os.truncate(os.path.join(folder, "database.dir", "1.dat.gz"), 10)
    os.unlink(os.path.join(folder, "database.dir", "toc.dat"))
    with open(os.path.join(folder, "database.dir", "2.dat.gz"), "wb") as handle:
        handle.write(b"extra")
    problems = {m["file"]: m["reason"] for m in _backup_verify.verify_files(path, manifest)}
    assert set(problems) == {"globals.sql", "database.dir/1.dat.gz", "database.dir/toc.dat", "database.dir/2.dat.gz"}
    assert "sha256" in problems["globals.sql"]
    assert "truncated" in problems["database.dir/1.dat.gz"]
    assert "missing" in problems["database.dir/toc.dat"]
    assert "not in the manifest" in problems["database.dir/2.dat.gz"]


def test_verify_backup_checksum_level_without_a_server(tmp_path: t.Any) -> None:
    path = _fake_backup(str(tmp_path / "b1"), "2026-01-01T00:00:00Z")
    result = _backup_verify.verify_backup(path, "checksum")
    assert result["verified"] is True and result["checks"] == ["manifest", "checksum"]
    record = os.path.join(str(tmp_path / "b1"), _backup.VERIFICATION_NAME)
    assert stat.S_IMODE(os.stat(record).st_mode) == 0o600
    # the verification record is not a file of the backup: verifying again still passes
    assert _backup_verify.verify_backup(path, "checksum")["verified"] is True


def test_retention_keeps_newest_n_and_everything_young(tmp_path: t.Any) -> None:
    dest = str(tmp_path)
    now = datetime.datetime(2026, 6, 30, tzinfo=datetime.UTC)
    dates = ["2026-01-01", "2026-02-01", "2026-03-01", "2026-06-20", "2026-06-25", "2026-06-29"]
    folders = {}
    for day in dates:
        folder = os.path.join(dest, "shop-" + day)
        _fake_backup(folder, day + "T00:00:00.000000Z")
        folders[day] = folder
    _fake_backup(os.path.join(dest, "other-1"), "2020-01-01T00:00:00Z", label="other")
    os.makedirs(os.path.join(dest, ".shop-partial.partial"))
    # keep 2 newest (06-29, 06-25) and everything younger than 14 days (06-20): the three old ones go
    plan = _backup.retention_plan(dest, "shop", keep=2, days=14, now=now)
    assert sorted(plan) == sorted(folders[d] for d in dates[:3])
    # keep 4: 03-01 is kept as one of the 4 newest
    assert sorted(_backup.retention_plan(dest, "shop", keep=4, days=14, now=now)) == sorted(
        folders[d] for d in dates[:2]
    )
    # a protected folder is never removed
    assert folders["2026-01-01"] not in _backup.retention_plan(
        dest, "shop", 0, 0, now=now, protect=[folders["2026-01-01"]]
    )


def test_checksum_query_quotes_identifiers() -> None:
    query = checksum_query(TableRef("We ird", 'ta"b'), ["a", "Col Umn"])
    text = repr(query)
    assert "We ird" in text and 'ta"b' in text and "Col Umn" in text


def test_compare_checksums_names_tables() -> None:
    expected = {
        "public.a": {"rows": 1, "checksum": "5"},
        "public.b": {"rows": 2, "checksum": "6"},
        "public.c": {"rows": 0, "checksum": "0"},
    }
    actual = {
        "public.a": {"rows": 1, "checksum": "5"},
        "public.b": {"rows": 2, "checksum": "7"},
        "public.d": {"rows": 0, "checksum": "0"},
    }
    tables, mismatches = compare_checksums(expected, actual)
    assert tables["public.a"]["ok"] is True
    assert {m["table"] for m in mismatches} == {"public.b", "public.c", "public.d"}
    reasons = {m["table"]: m["reason"] for m in mismatches}
    assert "different content" in reasons["public.b"]
    assert "missing" in reasons["public.c"]
    assert "not in the manifest" in reasons["public.d"]


def test_table_refs_from_pairs_and_keys() -> None:
    from ansible_collections.pgshift.ops.plugins.module_utils._checksums import as_ref

    assert as_ref(("a.b", "c")).key == '"a.b".c'  # never the same key as schema a, table b.c
    assert as_ref(("a", "b.c")).key == 'a."b.c"'
    assert as_ref('"a.b".c') == TableRef("a.b", "c")
    assert as_ref("public.orders") == TableRef("public", "orders")
    assert as_ref(TableRef("s", "t")) == TableRef("s", "t")
    with pytest.raises(PgShiftError, match="schema.table"):
        as_ref("orders")


def test_values_checksum_hashes_builtin_types_by_value_and_the_rest_as_text() -> None:
    from ansible_collections.pgshift.ops.plugins.module_utils._checksums import ColumnType

    query = checksum_query(
        TableRef("public", "t"),
        [ColumnType("id", 23), ColumnType("label", 25), ColumnType("amount", 1700), ColumnType("at", 1184)],
        "values-v1",
    )
    text = repr(query)
    assert "hashint4extended(" in text  # integer: by value
    assert 'COLLATE "C"' in text  # text: bytes, whatever the column's collation
    assert "::text, " in text  # numeric: the documented text fallback (display scale counts)
    assert "AT TIME ZONE 'UTC'" in text  # timestamptz: never the session's TimeZone
    assert " # " in text and "ROW(" not in text
    legacy = repr(checksum_query(TableRef("public", "t"), ["id", "label"], "row-text-v1"))
    assert "hashtextextended(ROW(" in legacy


def test_checksum_algorithms_are_checked() -> None:
    from ansible_collections.pgshift.ops.plugins.module_utils import _checksums

    assert _checksums.algorithm_for(150004) == "values-v1"
    assert _checksums.algorithm_for(100023) == "row-text-v1"
    with pytest.raises(PgShiftError, match="needs PostgreSQL 11"):
        _checksums.check_algorithm("values-v1", 100023)
    with pytest.raises(PgShiftError, match="take a new backup"):
        _checksums.check_algorithm("md5-v0")
    assert _backup_verify.manifest_algorithm({"backup_id": "x"}) == "row-text-v1"  # before it was recorded
    assert _backup_verify.manifest_algorithm({"checksum_algorithm": "values-v1"}) == "values-v1"
    with pytest.raises(PgShiftError, match="'md5-v0'.*take a new backup"):
        _backup_verify.manifest_algorithm({"backup_id": "x", "checksum_algorithm": "md5-v0"})
