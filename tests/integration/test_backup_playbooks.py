"""playbooks/backup.yml and playbooks/restore_backup.yml on a throwaway local world (real clusters, real Ansible)."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import typing as t

import backup_support as bs
import pytest

pytestmark = pytest.mark.slow


def test_backup_playbook_check_then_verified_backup_then_restore(world: t.Any, run_playbook: t.Any) -> None:
    env = {"PGSHIFT_WORLD": world.state}
    backups = os.path.join(world.state, "backups")
    prod = world.clusters["prod"]

    check = run_playbook("playbooks/backup.yml", extra_vars={"pgshift_backup_env": "prod"}, args=["--check"], env=env)
    assert check.rc == 0, check.output
    assert "check mode: planned only" in check.output
    assert not glob.glob(os.path.join(backups, "*", "manifest.json"))

    run = run_playbook("playbooks/backup.yml", extra_vars={"pgshift_backup_env": "prod"}, args=["-vvv"], env=env)
    assert run.rc == 0, run.output
    assert world.meta["password"] not in run.output
    manifests = glob.glob(os.path.join(backups, "prod-shop-*", "manifest.json"))
    assert len(manifests) == 1
    folder = os.path.dirname(manifests[0])
    with open(os.path.join(folder, "verification.json")) as handle:
        assert json.load(handle)["level"] == "restore"
    with open(manifests[0]) as handle:
        manifest = json.load(handle)
    assert manifest["ledger"] and manifest["tables"]

    # Replacing needs no confirmation on the local inventory only; a new name needs none anywhere.
    restored = run_playbook(
        "playbooks/restore_backup.yml",
        extra_vars={"pgshift_restore_manifest": manifests[0], "pgshift_restore_target": "shop_copy"},
        env=env,
    )
    assert restored.rc == 0, restored.output
    assert "restored and verified" in restored.output
    table = next(k for k in manifest["tables"] if manifest["tables"][k]["rows"] > 0)
    schema, name = table.split(".", 1)
    assert bs.counts(prod, "shop_copy", [(schema, name)]) == {table: manifest["tables"][table]["rows"]}

    refused = run_playbook(
        "playbooks/restore_backup.yml",
        extra_vars={"pgshift_restore_manifest": manifests[0], "pgshift_restore_target": "shop_copy"},
        env=env,
    )
    assert refused.rc != 0 and "replace=true" in refused.output

    unconfirmed = run_playbook(
        "playbooks/restore_backup.yml",
        extra_vars={
            "pgshift_restore_manifest": manifests[0],
            "pgshift_restore_target": "shop_copy",
            "pgshift_restore_replace": True,
            "pgshift_environment": "production",
        },
        env=env,
    )
    assert unconfirmed.rc != 0 and "pgshift_restore_confirm=shop_copy" in unconfirmed.output
    with contextlib.closing(prod.connect()) as conn, conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS shop_copy WITH (FORCE)")
