"""playbooks/drift_check.yml and playbooks/snapshot.yml on a throwaway local world (real clusters, real ansible)."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import typing as t

import pgworld
import pytest

pytestmark = pytest.mark.slow


def _world_env(world: pgworld.World) -> t.Dict[str, str]:
    return {"PGSHIFT_WORLD": world.state}


def test_drift_check_passes_then_catches_staging_drift(
    world: pgworld.World, run_playbook: t.Any, tmp_path: t.Any
) -> None:
    artifacts = tmp_path / "artifacts"
    extra = {"pgshift_artifacts_dir": str(artifacts)}
    checked = run_playbook(
        "playbooks/drift_check.yml", extra_vars=extra, env=_world_env(world), args=["--check", "--diff"]
    )
    assert checked.rc == 0, checked.output
    assert not artifacts.exists()

    # the rename comes from the inventory's data mapping (pgshift_mapping_file)
    run = run_playbook("playbooks/drift_check.yml", extra_vars=extra, env=_world_env(world))
    assert run.rc == 0, run.output
    drift = artifacts / "drift"
    assert stat.S_IMODE(drift.stat().st_mode) == 0o700
    files = sorted(os.listdir(drift))
    assert "migrations-vs-prod.report.txt" in files and "prod-vs-staging.report.txt" in files
    assert "prod-vs-dev.report.txt" in files and "prod.schema.json" in files and "dev.schema.json" in files
    assert (drift / "migrations-vs-prod.report.txt").read_text().startswith("No schema differences")
    release = (drift / "prod-vs-dev.report.txt").read_text()
    assert "renamed to public.customers.display_name" in release and "public.product_reviews" in release
    assert world.meta["password"] not in run.output

    # someone adds a column on staging by hand: unexpected drift, non-zero exit, and the report names it
    with contextlib.closing(world.clusters["staging"].connect("shop")) as conn, conn.cursor() as cur:
        cur.execute('ALTER TABLE public.orders ADD COLUMN "hot fix" text')
    try:
        failed = run_playbook("playbooks/drift_check.yml", extra_vars=extra, env=_world_env(world))
        assert failed.rc != 0
        assert "staging differs from production" in failed.output
        differences = json.loads((drift / "prod-vs-staging.diff.json").read_text())
        assert [(d["kind"], d["name"], d["change"]) for d in differences] == [
            ("column", 'public.orders."hot fix"', "added")
        ]
    finally:
        with contextlib.closing(world.clusters["staging"].connect("shop")) as conn, conn.cursor() as cur:
            cur.execute('ALTER TABLE public.orders DROP COLUMN "hot fix"')


def test_snapshot_playbook_writes_a_committable_file(
    world: pgworld.World, run_playbook: t.Any, tmp_path: t.Any
) -> None:
    path = tmp_path / "snap" / "dev.yml"
    extra = {"pgshift_snapshot_env": "dev", "pgshift_snapshot_path": str(path)}
    run = run_playbook("playbooks/snapshot.yml", extra_vars=extra, env=_world_env(world))
    assert run.rc == 0, run.output
    first = path.read_bytes()
    again = run_playbook("playbooks/snapshot.yml", extra_vars=extra, env=_world_env(world))
    assert again.rc == 0 and path.read_bytes() == first
    assert "changed=0" in again.output
    bad = run_playbook("playbooks/snapshot.yml", extra_vars={"pgshift_snapshot_env": "qa"}, env=_world_env(world))
    assert bad.rc != 0 and "pgshift_snapshot_env must be prod, staging or dev" in bad.output
