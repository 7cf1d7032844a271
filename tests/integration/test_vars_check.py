"""A mistyped variable or connection key stops the playbook in its first task, before anything is touched."""

from __future__ import annotations

import os
import typing as t

import pytest

INVENTORY = """\
all:
  vars:
    ansible_connection: local
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
    pgshift_environment: local
    pgshift_backup_dir: %(backups)s
    pgshift_prod_connection: {host: 127.0.0.1, port: 1, user: postgres, password: not-shown-anywhere, database: shop}
    pgshift_dev_connection: {host: 127.0.0.1, port: 1, user: postgres, password: not-shown-anywhere, database: shop}
  children:
    pgshift_db: {hosts: {db1: {}}}
    pgshift_app: {hosts: {}}
    pgshift_web: {hosts: {}}
"""


@pytest.fixture
def inventory(tmp_path: t.Any) -> str:
    path = tmp_path / "hosts.yml"
    path.write_text(INVENTORY % {"backups": tmp_path / "backups"})
    return str(path)


@pytest.mark.parametrize("playbook", ["playbooks/prod_restore.yml", "playbooks/rollback.yml", "playbooks/backup.yml"])
def test_a_mistyped_variable_is_refused_with_a_suggestion(
    run_playbook: t.Callable[..., t.Any], inventory: str, tmp_path: t.Any, playbook: str
) -> None:
    run = run_playbook(playbook, inventory=inventory, extra_vars={"pgshift_backup_verify_levle": "checksum"})
    assert run.rc != 0
    assert "unknown variable pgshift_backup_verify_levle (did you mean pgshift_backup_verify_level?)" in run.output
    # it stopped in the first task: nothing tried to reach the (unreachable) database, no backup folder exists
    assert "no mistyped or unknown pgshift variable" in run.output
    assert "connection refused" not in run.output.lower()
    assert not os.path.exists(tmp_path / "backups")


def test_a_mistyped_connection_key_is_refused_and_no_value_is_shown(
    run_playbook: t.Callable[..., t.Any], inventory: str
) -> None:
    conn = {"host": "127.0.0.1", "port": 1, "user": "postgres", "pasword": "secret-value-x1", "database": "shop"}
    run = run_playbook("playbooks/prod_restore.yml", inventory=inventory, extra_vars={"pgshift_prod_connection": conn})
    assert run.rc != 0
    assert "pgshift_prod_connection: unknown key pasword (did you mean password?)" in run.output
    assert "secret-value-x1" not in run.output
    assert "fe_sendauth" not in run.output


def test_known_variables_pass_the_check(run_playbook: t.Callable[..., t.Any], inventory: str) -> None:
    run = run_playbook(
        "playbooks/prod_restore.yml", inventory=inventory, extra_vars={"pgshift_backup_verify_level": "checksum"}
    )
    # the check passes and the run goes on to the next Preflight task (and fails later: there is no database)
    assert "unknown variable" not in run.output
    assert "inputs are complete and consistent" in run.output


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("pgshift_backup_verify_level", "full", "value of pgshift_backup_verify_level must be one of: read, checksum"),
        ("pgshift_app_tier", "maybe", "pgshift_app_tier"),
        ("pgshift_backup_keep", "five", "pgshift_backup_keep"),
    ],
)
def test_a_value_of_the_wrong_kind_is_refused_by_the_release_role_spec(
    run_playbook: t.Callable[..., t.Any], inventory: str, tmp_path: t.Any, variable: str, value: str, expected: str
) -> None:
    """The release role's argument specs (roles/release/meta/argument_specs.yml) validate every phase's variables: a
    wrong choice or type stops the first phase, Preflight, before any host or database is touched."""
    run = run_playbook("playbooks/prod_restore.yml", inventory=inventory, extra_vars={variable: value})
    assert run.rc != 0
    assert "Validation of arguments failed" in run.output and expected in run.output, run.output[-2000:]
    assert "every host answers" not in run.output, "it went past the argument check"
    assert not os.path.exists(tmp_path / "backups")
    assert "not-shown-anywhere" not in run.output
