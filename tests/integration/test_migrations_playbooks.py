"""playbooks/validate_migrations.yml and playbooks/migrate.yml, run for real with ansible-playbook."""

from __future__ import annotations

import pytest
from migrations_helpers import copy_sample, ledger, require_node, table_exists, write_folder


def test_validate_playbook_prints_the_report_and_fails_on_errors(pg, new_db, run_playbook, tmp_path):
    db = new_db()
    good = run_playbook(
        "playbooks/validate_migrations.yml",
        extra_vars={
            "pgshift_validate_connection": pg.conn(db),
            "pgshift_validate_report_file": str(tmp_path / "report.txt"),
        },
    )
    assert good.rc == 0, good.output
    assert "result: VALID" in good.stdout and "index-without-concurrently" in good.stdout
    # the compared database (the connection's) has no ledger yet: every file is new, nothing out of order
    assert "compared with database" in good.stdout
    assert (tmp_path / "report.txt").read_text().startswith("migrations in ")
    assert oct((tmp_path / "report.txt").stat().st_mode & 0o777) == "0o600"
    assert pg.password not in good.output

    bad_dir = write_folder(
        str(tmp_path / "bad"),
        {
            "1000_a.sql": "-- Up Migration\nCREATE TABLE a (id int);\n",
            "2000_b.sql": "-- Up Migration\nCREATE INDEX CONCURRENTLY a_idx ON a (id);\n",
        },
    )
    bad = run_playbook(
        "playbooks/validate_migrations.yml",
        extra_vars={"pgshift_validate_connection": pg.conn(db), "pgshift_validate_migrations_dir": bad_dir},
    )
    assert bad.rc != 0
    assert "ERROR 2000_b.sql:2 [concurrently-in-transaction]" in bad.stdout
    assert "Migrations are not valid" in bad.output
    assert pg.password not in bad.output


@pytest.mark.slow
def test_migrate_playbook_check_then_apply(pg, new_db, run_playbook, tmp_path):
    require_node()
    db = new_db()
    folder = copy_sample(str(tmp_path / "migrations"))
    extra = {"pgshift_migrate_env": "dev", "pgshift_dev_connection": pg.conn(db), "pgshift_migrations_dir": folder}
    check = run_playbook(
        "playbooks/migrate.yml",
        extra_vars=dict(extra, pgshift_migrate_engine="node-pg-migrate"),
        args=["--check", "--diff"],
    )
    assert check.rc == 0, check.output
    assert "plan (check mode, nothing written): 1700000000000_init-shop" in check.stdout
    assert not table_exists(pg, db, "public.pgmigrations")

    real = run_playbook("playbooks/migrate.yml", extra_vars=dict(extra, pgshift_migrate_engine="node-pg-migrate"))
    assert real.rc == 0, real.output
    assert len(ledger(pg, db)) == 6
    assert pg.password not in real.output

    # outside the local world, an explicit confirmation is required
    refused = run_playbook("playbooks/migrate.yml", extra_vars=dict(extra, pgshift_environment="production"))
    assert refused.rc != 0 and "needs -e pgshift_migrate_confirm=dev" in refused.output

    # a failing migration: the rescue ends in an explicit failure naming it
    write_folder(folder, {"1700000009000_broken.sql": "-- Up Migration\nALTER TABLE nope ADD COLUMN x int;\n"})
    broken = run_playbook("playbooks/migrate.yml", extra_vars=extra)
    assert broken.rc != 0
    assert "Migrating dev failed" in broken.output and "1700000009000_broken" in broken.output
    assert len(ledger(pg, db)) == 6
