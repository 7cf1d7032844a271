"""`make rehearsal` for a database that is not the sample shop's: no query file (the rehearsal runs and passes
without the query check, and says so in its output and its record; the release's gate accepts it), and a staging
connection given only in a vault-encrypted vars file (-e @file, --vault-password-file), as a real project keeps it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import typing as t
import uuid

import pgworld
import pytest
import yaml
from conftest import ROOT, ansible_env
from rehearsal_support import columns, gate_args, make_rehearsal

pytestmark = pytest.mark.slow

STAGING_DB = "shop_rehearsal"


def test_rehearsal_without_a_query_file_and_with_a_vaulted_staging_connection(
    world: pgworld.World, run_module: t.Callable[..., t.Any], tmp_path: t.Any
) -> None:
    staging = world.clusters["staging"]
    role, secret = "rehearser_%s" % uuid.uuid4().hex[:6], "vaulted-" + uuid.uuid4().hex
    with contextlib.closing(staging.connect()) as conn, conn.cursor() as cur:
        # a role and a password that only the vault file knows: the inventory's staging connection cannot be used
        cur.execute("CREATE ROLE %s LOGIN SUPERUSER PASSWORD %%s" % role, (secret,))
    vault_pw = tmp_path / "vault-password.txt"
    vault_pw.write_text("a vault password of this test only\n")
    vars_file = tmp_path / "staging.yml"
    vars_file.write_text(
        yaml.safe_dump(
            {
                "pgshift_staging_connection": {
                    "host": "127.0.0.1",
                    "port": staging.port,
                    "user": role,
                    "password": secret,
                    "database": STAGING_DB,
                    "sslmode": "disable",
                }
            }
        )
    )
    subprocess.run(
        [
            os.path.join(ROOT, ".venv", "bin", "ansible-vault"),
            "encrypt",
            "--vault-password-file",
            str(vault_pw),
            str(vars_file),
        ],
        cwd=ROOT,
        env=ansible_env({}),
        check=True,
        capture_output=True,
    )
    assert secret not in vars_file.read_text()

    done = make_rehearsal(
        world,
        str(tmp_path),
        "-e pgshift_perf_queries_file=",
        "-e @" + str(vars_file),
        "--vault-password-file " + str(vault_pw),
    )
    assert done.rc == 0, done.output[-5000:]
    said = " ".join(done.output.split())
    assert "No pgshift_perf_queries_file: this rehearsal proves the release on staging" in said
    assert "query check not run: no query file (pgshift_perf_queries_file) was given" in said
    assert secret not in done.output and world.meta["password"] not in done.output
    record = done.record
    assert record is not None and done.record_path is not None
    assert record["passed"] is True and record["problems"] == [], record["problems"]
    assert record["query_check"]["ran"] is False and record["query_check"]["queries_file"] is None
    assert any(w.startswith("query check not run") for w in record["warnings"])
    assert record["perf"] == {"before": None, "after": None}
    folder = os.path.dirname(done.record_path)
    assert not [n for n in os.listdir(folder) if n.startswith("perf-")]
    assert secret not in open(done.record_path).read()
    # the release ran on the staging database the vault names, as the role only the vault knows
    assert record["staging"]["database"] == STAGING_DB and record["run_status"] == "succeeded"
    assert "display_name" in columns(staging, STAGING_DB, "customers")
    with contextlib.closing(staging.connect(STAGING_DB)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM customers")
        assert cur.fetchone()[0] == 100

    # the release's gate accepts it, and says that its query check was not run
    gate = run_module("rehearsal", gate_args(world, done.rehearsals_dir))
    assert not gate.failed, gate.output[-3000:]
    assert gate.result["ok"] is True and gate.result["overridden"] is False
    assert gate.result["rehearsal_id"] == record["rehearsal_id"]
    assert gate.result["query_check"]["ran"] is False
    assert "its query check not run" in " ".join(gate.output.split())
