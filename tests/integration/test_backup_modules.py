"""The backup, backup_verify and restore modules run for real through Ansible against real PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import os
import typing as t

import backup_support as bs
import pytest
from psycopg2 import sql


@pytest.fixture(scope="module")
def shopdb(pg: t.Any) -> t.Iterator[str]:
    from conftest import create_database

    name = "bk_modules"
    create_database(pg, name)
    bs.fill_sample(pg, name)
    yield name
    with contextlib.closing(pg.connect()) as conn, conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS bk_modules WITH (FORCE)")


def test_backup_check_mode_plans_and_writes_nothing(pg: t.Any, shopdb: str, run_module: t.Any, tmp_path: t.Any) -> None:
    dest = tmp_path / "plan"
    run = run_module("backup", dict(pg.conn(shopdb), dest_dir=str(dest)), check=True)
    assert not run.failed, run.output
    assert run.result["changed"] is True
    assert run.result["plan"]["estimated_size_bytes"] > 0
    assert run.result["path"].startswith(str(dest))
    assert not dest.exists()


def test_backup_verify_restore_round_trip(pg: t.Any, shopdb: str, run_module: t.Any, tmp_path: t.Any) -> None:
    dest = tmp_path / "backups"
    backup = run_module("backup", dict(pg.conn(shopdb), dest_dir=str(dest), format="directory", jobs=2), verbosity=4)
    assert not backup.failed, backup.output
    assert pg.password not in backup.output
    manifest = backup.result["manifest"]
    assert manifest["database"] == shopdb and manifest["globals"] == "globals.sql"
    assert manifest["clients"]["pg_dump"]["major"] >= int(manifest["server_version_num"]) // 10000
    assert {k: v["rows"] for k, v in manifest["tables"].items()} == bs.SAMPLE_TABLES
    assert manifest["checksum_algorithm"] == "values-v1"  # PostgreSQL 11+: the values are hashed, not the row text
    assert backup.result["size_bytes"] == sum(f["size"] for f in manifest["files"].values())
    # no file-stat noise beside size_bytes (AnsibleModule adds the stat of a result's path unless told not to)
    stat_keys = {"uid", "gid", "owner", "group", "mode", "state", "size", "secontext"}
    assert stat_keys & set(backup.result) == set(), sorted(backup.result)
    with open(backup.result["manifest_path"]) as handle:
        assert json.load(handle)["manifest_sha256"] == manifest["manifest_sha256"]

    verify = run_module(
        "backup_verify", dict(pg.conn(), manifest_path=backup.result["manifest_path"], level="restore"), verbosity=4
    )
    assert not verify.failed, verify.output
    assert pg.password not in verify.output
    assert verify.result["verified"] is True and verify.result["mismatches"] == []
    assert verify.result["checksum_algorithm"] == "values-v1"
    assert set(verify.result["tables"]) == set(bs.SAMPLE_TABLES)
    assert all(v["ok"] for v in verify.result["tables"].values())
    assert not bs.database_exists(pg, verify.result["throwaway_database"])

    target = "bk_restored_" + os.urandom(3).hex()
    restore = run_module(
        "restore", dict(pg.conn(), manifest_path=backup.result["manifest_path"], target_database=target)
    )
    assert not restore.failed, restore.output
    assert restore.result["verified"] is True and restore.result["replaced"] is False
    assert restore.result["checksum_algorithm"] == "values-v1"
    assert stat_keys & set(restore.result) == set(), sorted(restore.result)
    assert stat_keys & set(verify.result) == set(), sorted(verify.result)
    assert bs.counts(pg, target, [("public", "orders"), (bs.HOSTILE_SCHEMA, bs.HOSTILE_TABLE)]) == {
        "public.orders": 504,
        "%s.%s" % (bs.HOSTILE_SCHEMA, bs.HOSTILE_TABLE): 300,
    }

    # An existing database is never overwritten unless replace=true
    with contextlib.closing(pg.connect(target)) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM public.orders WHERE id < 10")
    refused = run_module(
        "restore", dict(pg.conn(), manifest_path=backup.result["manifest_path"], target_database=target)
    )
    assert refused.failed and "replace=true" in refused.result["msg"]
    assert bs.counts(pg, target, [("public", "orders")]) == {"public.orders": 495}

    check = run_module(
        "restore",
        dict(pg.conn(), manifest_path=backup.result["manifest_path"], target_database=target, replace=True),
        check=True,
    )
    assert not check.failed and check.result["replaced"] is True
    assert bs.counts(pg, target, [("public", "orders")]) == {"public.orders": 495}

    replaced = run_module(
        "restore",
        dict(pg.conn(target), manifest_path=backup.result["manifest_path"], target_database=target, replace=True),
    )
    assert not replaced.failed, replaced.output
    assert replaced.result["replaced"] is True
    assert bs.counts(pg, target, [("public", "orders")]) == {"public.orders": 504}
    assert not bs.databases_like(pg, "pgshift_restore_")
    with contextlib.closing(pg.connect()) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(target)))


def test_verify_module_fails_and_names_the_file(pg: t.Any, shopdb: str, run_module: t.Any, tmp_path: t.Any) -> None:
    backup = bs.take(pg, shopdb, tmp_path / "backups", format="custom", globals=False)
    with open(backup["path"], "r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    run = run_module("backup_verify", dict(manifest_path=backup["manifest_path"], level="checksum"))
    assert run.failed
    assert run.result["verified"] is False
    assert "database.dump" in run.result["msg"]
    assert not os.path.exists(os.path.join(os.path.dirname(backup["manifest_path"]), "verification.json"))


def test_restore_module_refuses_a_corrupt_backup_and_touches_nothing(
    pg: t.Any, shopdb: str, run_module: t.Any, tmp_path: t.Any
) -> None:
    backup = bs.take(pg, shopdb, tmp_path / "backups", format="directory", globals=False)
    os.unlink(os.path.join(backup["path"], "toc.dat"))
    run = run_module(
        "restore", dict(pg.conn(), manifest_path=backup["manifest_path"], target_database=shopdb, replace=True)
    )
    assert run.failed and "toc.dat" in run.result["msg"]
    assert bs.counts(pg, shopdb, [("public", "orders")]) == {"public.orders": 504}


def test_backup_of_an_unreachable_server_fails_without_the_password(run_module: t.Any, tmp_path: t.Any) -> None:
    import pgworld

    secret = "not-shown-" + os.urandom(4).hex()
    # The password comes from PGPASSWORD (the documented fallback): ad-hoc ansible itself echoes -a arguments on errors.
    run = run_module(
        "backup",
        dict(host="127.0.0.1", port=pgworld.free_port(), sslmode="disable", dest_dir=str(tmp_path / "b")),
        verbosity=4,
        env={"PGPASSWORD": secret},
    )
    assert run.failed and "cannot connect" in run.result["msg"]
    assert secret not in run.output


def test_retention_keeps_the_newest_verified_and_what_unfinished_runs_need(
    pg: t.Any, shopdb: str, run_module: t.Any, tmp_path: t.Any
) -> None:
    """keep=1 and max age 0 remove everything older, except the newest verified backup and the backup an unfinished
    run recorded in the journal (until that run is finished)."""
    from ansible_collections.pgshift.ops.plugins.module_utils import _journal
    from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams

    dest = tmp_path / "retention"
    journal_db = "bk_retention_journal"
    common = dict(pg.conn(shopdb), dest_dir=str(dest), label="ret", globals=False)

    def take(**extra: t.Any) -> t.Dict[str, t.Any]:
        run = run_module("backup", dict(common, **extra))
        assert not run.failed, run.output
        return run.result

    def aged(when: str) -> t.Callable[[t.Dict[str, t.Any]], None]:
        return lambda m: m.update(created=when + "T00:00:00.000000Z")

    first, second, third = take(), take(), take()
    for result, when in ((first, "2020-01-01"), (second, "2020-02-01"), (third, "2020-03-01")):
        bs.reseal(result["manifest_path"], refresh_files=False, edit=aged(when))
    verify = run_module("backup_verify", dict(pg.conn(), manifest_path=first["manifest_path"], level="checksum"))
    assert not verify.failed and verify.result["verified"] is True, verify.output

    cluster = ConnParams.from_params(dict(pg.conn("postgres")))
    with contextlib.closing(pg.connect()) as conn, conn.cursor() as cur:
        conn.autocommit = True
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(journal_db)))
    _journal.ensure_journal(cluster, journal_db)
    with contextlib.closing(pg.connect(journal_db)) as conn, conn.cursor() as cur:
        run_id = _journal.start_run(cur, shopdb, {})
        _journal.record_step(cur, run_id, "backup", "done", {"manifest": second["manifest_path"]})
        conn.commit()

    folder = os.path.dirname
    fourth = take(retention_keep=1, retention_days=0, journal_database=journal_db)
    assert fourth["removed"] == [folder(third["manifest_path"])]
    assert fourth["in_use"] == [folder(second["manifest_path"])]
    assert fourth["retention_kept"][folder(first["manifest_path"])] == "the newest verified backup"
    assert os.path.exists(first["manifest_path"]) and os.path.exists(second["manifest_path"])
    assert not os.path.exists(folder(third["manifest_path"]))

    with contextlib.closing(pg.connect(journal_db)) as conn, conn.cursor() as cur:
        _journal.finish_run(cur, run_id, "rolled_back")
        conn.commit()
    fifth = take(retention_keep=1, retention_days=0, journal_database=journal_db)
    assert sorted(fifth["removed"]) == sorted([folder(second["manifest_path"]), folder(fourth["manifest_path"])])
    kept = {os.path.basename(folder(r["manifest_path"])) for r in (first, fifth)}
    assert set(os.listdir(str(dest))) == kept
    with contextlib.closing(pg.connect()) as conn, conn.cursor() as cur:
        conn.autocommit = True
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(journal_db)))


def test_preflight_says_how_much_space_the_backups_already_there_take(
    pg: t.Any, shopdb: str, run_module: t.Any, tmp_path: t.Any
) -> None:
    dest = tmp_path / "kept"
    taken = []
    for label in (shopdb, shopdb, "another-series"):
        run = run_module("backup", dict(pg.conn(shopdb), dest_dir=str(dest), label=label))
        assert not run.failed, run.output
        taken.append(run.result)
    os.makedirs(str(dest / ".half.partial"))  # an interrupted backup is not a backup

    def on_disk(result: t.Dict[str, t.Any]) -> int:
        """The manifest's own account of the archive, plus the manifest itself."""
        size = sum(int(f["size"]) for f in result["manifest"]["files"].values())
        return size + os.path.getsize(result["manifest_path"])

    pre = run_module(
        "preflight",
        dict(
            pg.conn("postgres"),
            production_database=shopdb,
            schema_source=pg.conn(shopdb),
            backup_dir=str(dest),
            journal_database="bk_preflight_journal",
        ),
    )
    # (dev is production here, a refusal of its own: the facts are returned all the same)
    backups = pre.result["facts"]["backups"]
    assert backups["count"] == 2 and backups["all_count"] == 3
    assert backups["bytes"] == on_disk(taken[0]) + on_disk(taken[1])
    assert backups["all_bytes"] == sum(on_disk(r) for r in taken)
    assert backups["oldest"] == taken[0]["manifest"]["created"]
