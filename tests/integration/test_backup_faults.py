"""Verified backups against real PostgreSQL: each corruption is caught by the right level, the restore drill catches
content that differs, locks and unsupported versions fail cleanly, files are private, the password never leaks."""

from __future__ import annotations

import contextlib
import glob
import gzip
import json
import os
import stat
import threading
import time
import typing as t

import backup_support as bs
import pytest

from ansible_collections.pgshift.ops.plugins.module_utils import _backup
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError


@pytest.fixture(scope="module")
def sample_db(pg: t.Any) -> t.Iterator[str]:
    name = "bk_faults"
    from conftest import create_database

    create_database(pg, name)
    bs.fill_sample(pg, name)
    yield name
    with contextlib.closing(pg.connect()) as conn, conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS bk_faults WITH (FORCE)")


def _fresh(pg: t.Any, db: str, tmp_path: t.Any, fmt: str = "directory", **options: t.Any) -> t.Dict[str, t.Any]:
    return bs.take(pg, db, tmp_path / "backups", format=fmt, jobs=2, globals=False, **options)


def _table_file(manifest: t.Dict[str, t.Any], folder: str) -> str:
    """The biggest data file of a directory-format archive."""
    files = [f for f in manifest["files"] if f.startswith("database.dir/") and f != "database.dir/toc.dat"]
    return os.path.join(folder, max(files, key=lambda f: manifest["files"][f]["size"]))


def test_clean_backup_passes_every_level_and_names_all_tables(pg: t.Any, sample_db: str, tmp_path: t.Any) -> None:
    backup = _fresh(pg, sample_db, tmp_path)
    manifest = backup["manifest"]
    assert {k: v["rows"] for k, v in manifest["tables"].items()} == bs.SAMPLE_TABLES
    assert "public.measures" not in manifest["tables"]  # partitioned parent: its leaves carry the rows
    assert [r["name"] for r in manifest["ledger"]] == ["001_init", "002_more"]
    assert manifest["snapshot_id"] and manifest["snapshot_time"].endswith("Z")
    for level in ("checksum", "read", "restore"):
        result = bs.verify(backup["manifest_path"], level, pg)
        assert result["verified"] is True, (level, result["mismatches"])
    assert not bs.databases_like(pg, "pgshift_verify_")


@pytest.mark.parametrize("fault", ["flip", "truncate", "toc_missing", "table_file_missing", "extra_file"])
def test_file_faults_are_caught_by_checksum_level(pg: t.Any, sample_db: str, tmp_path: t.Any, fault: str) -> None:
    backup = _fresh(pg, sample_db, tmp_path)
    folder = os.path.dirname(backup["manifest_path"])
    target = _table_file(backup["manifest"], folder)
    rel = os.path.relpath(target, folder)
    if fault == "flip":
        with open(target, "r+b") as handle:
            handle.seek(os.path.getsize(target) // 2)
            byte = handle.read(1)
            handle.seek(-1, os.SEEK_CUR)
            handle.write(bytes([byte[0] ^ 0x01]))
    elif fault == "truncate":
        os.truncate(target, os.path.getsize(target) - 10)
    elif fault == "toc_missing":
        rel = "database.dir/toc.dat"
        os.unlink(os.path.join(folder, rel))
    elif fault == "table_file_missing":
        os.unlink(target)
    else:
        rel = "database.dir/stray.dat"
        with open(os.path.join(folder, rel), "wb") as handle:
            handle.write(b"x")
    result = bs.verify(backup["manifest_path"], "checksum")
    assert result["verified"] is False
    assert [m["file"] for m in result["mismatches"]] == [rel]
    # The restore level reports the same file (the sha256 check runs beside the drill) and leaves no database behind.
    deeper = bs.verify(backup["manifest_path"], "restore", pg)
    assert deeper["verified"] is False
    assert [m["file"] for m in deeper["mismatches"]] == [rel]
    if fault != "flip":  # found by the quick size/presence check: no restore is even attempted
        assert deeper["checks"] == ["manifest", "checksum"]
    assert not bs.databases_like(pg, "pgshift_verify_")


def test_hand_edited_manifest_is_refused_at_every_level(pg: t.Any, sample_db: str, tmp_path: t.Any) -> None:
    backup = _fresh(pg, sample_db, tmp_path, fmt="custom")
    path = backup["manifest_path"]
    with open(path) as handle:
        manifest = json.load(handle)
    manifest["tables"]["public.orders"]["rows"] = 505  # somebody "fixes" a count by hand
    with open(path, "w") as handle:
        json.dump(manifest, handle)
    for level in ("checksum", "read", "restore"):
        result = bs.verify(path, level, pg)
        assert result["verified"] is False
        assert result["mismatches"][0]["file"] == "manifest.json"
        assert "seal" in result["mismatches"][0]["reason"]


def test_truncated_custom_archive_written_that_way_is_caught_by_read(
    pg: t.Any, sample_db: str, tmp_path: t.Any
) -> None:
    """An archive truncated before its manifest was made passes the checksum level; pg_restore's full read fails."""
    backup = _fresh(pg, sample_db, tmp_path, fmt="custom")
    archive = backup["path"]
    os.truncate(archive, os.path.getsize(archive) * 2 // 3)
    bs.reseal(backup["manifest_path"])
    assert bs.verify(backup["manifest_path"], "checksum")["verified"] is True
    read = bs.verify(backup["manifest_path"], "read")
    assert read["verified"] is False
    assert read["mismatches"][0]["file"] == "database.dump"
    assert "pg_restore cannot read" in read["mismatches"][0]["reason"]


def test_restore_drill_catches_a_table_that_restores_differently(pg: t.Any, sample_db: str, tmp_path: t.Any) -> None:
    """A data file whose content differs from production (yet is a valid archive) passes checksum and read levels."""
    backup = _fresh(pg, sample_db, tmp_path, compress="none")
    folder = os.path.dirname(backup["manifest_path"])
    changed = None
    for path in glob.glob(os.path.join(folder, "database.dir", "*.dat")):
        with open(path, "rb") as handle:
            text = handle.read()
        if b"duplicate" in text:
            with open(path, "wb") as handle:
                handle.write(text.replace(b"duplicate", b"dupl1cate", 1))
            changed = path
    assert changed, "the orders data file was not found"
    bs.reseal(backup["manifest_path"])
    assert bs.verify(backup["manifest_path"], "read")["verified"] is True
    drill = bs.verify(backup["manifest_path"], "restore", pg)
    assert drill["verified"] is False
    assert [m["table"] for m in drill["mismatches"]] == ["public.orders"]
    assert drill["tables"]["public.orders"]["ok"] is False
    assert drill["tables"]["public.orders"]["rows"] == 504  # same count, different content
    assert all(v["ok"] for k, v in drill["tables"].items() if k != "public.orders")
    assert not bs.databases_like(pg, "pgshift_verify_")


def test_restore_drill_catches_a_missing_row_in_a_gzip_archive(pg: t.Any, sample_db: str, tmp_path: t.Any) -> None:
    backup = _fresh(pg, sample_db, tmp_path, compress="1")
    folder = os.path.dirname(backup["manifest_path"])
    for path in glob.glob(os.path.join(folder, "database.dir", "*.dat.gz")):
        with gzip.open(path, "rb") as handle:
            lines = handle.read().split(b"\n")
        if any(b"2023-06-01" in line for line in lines):
            lines = [line for line in lines if b"2023-06-01" not in line]
            with gzip.open(path, "wb") as handle:
                handle.write(b"\n".join(lines))
    bs.reseal(backup["manifest_path"])
    drill = bs.verify(backup["manifest_path"], "restore", pg)
    assert [m["table"] for m in drill["mismatches"]] == ["public.measures_2023"]
    assert drill["tables"]["public.measures_2023"]["rows"] == 213


def test_files_are_private(pg: t.Any, sample_db: str, tmp_path: t.Any) -> None:
    backup = _fresh(pg, sample_db, tmp_path)
    backup_custom = bs.take(pg, sample_db, tmp_path / "backups", format="custom", globals=True)
    root = str(tmp_path / "backups")
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o700
    seen = 0
    for result in (backup, backup_custom):
        folder = os.path.dirname(result["manifest_path"])
        for base, _dirs, files in os.walk(folder):
            assert stat.S_IMODE(os.stat(base).st_mode) == 0o700, base
            for name in files:
                assert stat.S_IMODE(os.stat(os.path.join(base, name)).st_mode) == 0o600, name
                seen += 1
    assert os.path.exists(os.path.join(os.path.dirname(backup_custom["manifest_path"]), "globals.sql"))
    assert seen >= 6
    assert not [n for n in os.listdir(root) if n.startswith(".")]  # no partial folder left


def _find_child(name: str, marker: str, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as handle:
                    argv = handle.read().split(b"\0")
            except OSError:
                continue
            if argv and os.path.basename(argv[0]) == name.encode() and any(marker.encode() in a for a in argv):
                return int(entry)
        time.sleep(0.05)
    raise AssertionError("no %s process appeared" % name)


def test_password_never_in_argv_or_environment_of_pg_dump(pg: t.Any, sample_db: str, tmp_path: t.Any) -> None:
    dest = tmp_path / "backups"
    holder = pg.connect(sample_db, autocommit=False)
    outcome: t.Dict[str, t.Any] = {}
    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE public.empty_one IN ACCESS EXCLUSIVE MODE")  # pg_dump will wait on it

        def run() -> None:
            try:
                outcome["result"] = bs.take(pg, sample_db, dest, format="directory", jobs=2, globals=False)
            except Exception as exc:  # noqa: BLE001
                outcome["error"] = exc

        worker = threading.Thread(target=run)
        worker.start()
        pid = _find_child("pg_dump", str(dest))
        time.sleep(0.3)
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            cmdline = handle.read()
        with open("/proc/%d/environ" % pid, "rb") as handle:
            environ = dict(item.split(b"=", 1) for item in handle.read().split(b"\0") if b"=" in item)
        passfile = environ[b"PGPASSFILE"].decode()
        passfile_mode = stat.S_IMODE(os.stat(passfile).st_mode)
        folder_mode = stat.S_IMODE(os.stat(os.path.dirname(passfile)).st_mode)
    finally:
        holder.rollback()
        holder.close()
    worker.join(120)
    assert "error" not in outcome, outcome.get("error")
    secret = pg.password.encode()
    assert secret not in cmdline
    assert b"PGPASSWORD" not in environ
    assert all(secret not in v for v in environ.values())
    assert (passfile_mode, folder_mode) == (0o600, 0o700)
    assert not os.path.exists(passfile)  # removed once pg_dump is done
    assert outcome["result"]["manifest"]["tables"]["public.empty_one"]["rows"] == 0


def test_exclusive_lock_during_dump_fails_cleanly(pg: t.Any, sample_db: str, tmp_path: t.Any) -> None:
    dest = tmp_path / "backups"
    holder = pg.connect(sample_db, autocommit=False)
    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE public.orders IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(PgShiftError) as caught:
            bs.take(pg, sample_db, dest, format="custom", globals=False, lock_wait_timeout="1s")
    finally:
        holder.rollback()
        holder.close()
    assert "lock" in caught.value.msg.lower()
    assert pg.password not in caught.value.msg
    assert os.listdir(str(dest)) == []  # nothing half-written, no manifest, nothing to verify


def test_server_newer_than_every_client_gets_a_clear_error(pg: t.Any, sample_db: str, tmp_path: t.Any) -> None:
    with pytest.raises(PgShiftError) as caught:
        bs.take(pg, sample_db, tmp_path / "backups", min_client_major=99)
    assert "no pg_dump of major version 99 or newer found" in caught.value.msg
    assert not os.path.exists(str(tmp_path / "backups"))


def test_retention_keeps_the_newest_and_the_young(pg: t.Any, sample_db: str, tmp_path: t.Any) -> None:
    dest = tmp_path / "backups"
    first = bs.take(pg, sample_db, dest, format="custom", globals=False, label="ret")
    second = bs.take(pg, sample_db, dest, format="custom", globals=False, label="ret")

    # Age the first two by rewriting their creation date (resealed: a consistent, older backup)
    def aged(when: str) -> t.Callable[[t.Dict[str, t.Any]], None]:
        return lambda m: m.update(created=when + "T00:00:00.000000Z")

    for result, when in ((first, "2020-01-01"), (second, "2020-02-01")):
        bs.reseal(result["manifest_path"], refresh_files=False, edit=aged(when))
    other = bs.take(pg, sample_db, dest, format="custom", globals=False, label="other")
    bs.reseal(
        other["manifest_path"], refresh_files=False, edit=lambda m: m.update(created="2020-01-01T00:00:00.000000Z")
    )
    third = bs.take(
        pg, sample_db, dest, format="custom", globals=False, label="ret", retention_keep=2, retention_days=14
    )
    # the two newest are kept (third, second); the first is both beyond 2 and older than 14 days
    assert third["removed"] == [os.path.dirname(first["manifest_path"])]
    assert not os.path.exists(first["manifest_path"])
    assert os.path.exists(second["manifest_path"]) and os.path.exists(other["manifest_path"])
    young = bs.take(
        pg, sample_db, dest, format="custom", globals=False, label="ret", retention_keep=1, retention_days=14
    )
    assert young["removed"] == [os.path.dirname(second["manifest_path"])]  # third is young: kept despite keep=1
    assert os.path.exists(third["manifest_path"])


def test_check_mode_writes_nothing(pg: t.Any, sample_db: str, tmp_path: t.Any) -> None:
    dest = tmp_path / "not-yet"
    plan = _backup.take_backup(bs.params(pg, sample_db), _backup.BackupOptions(dest_dir=str(dest)), check_mode=True)
    assert not os.path.exists(str(dest))
    assert plan["plan"]["estimated_size_bytes"] > 0 and plan["plan"]["free_bytes"] > 0
    assert plan["path"].startswith(str(dest)) and plan["manifest"] is None
