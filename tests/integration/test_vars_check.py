"""A mistyped variable or connection key stops the playbook in its first task, before anything is touched."""

from __future__ import annotations

import os
import typing as t

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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


ALIASES_INVENTORY = """\
all:
  vars:
    ansible_connection: local
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
    pgshift_environment: local
    pgshift_backup_dir: %(backups)s
  children:
    pgshift_db: {hosts: {db1: {}}}
    pgshift_app: {hosts: {}}
    pgshift_web: {hosts: {}}
"""


def _community_names(cluster: t.Any, database: str) -> t.Dict[str, t.Any]:
    return {
        "login_host": "127.0.0.1",
        "login_port": cluster.port,
        "login_user": "postgres",
        "login_password": cluster.password,
        "login_db": database,
        "ssl_mode": "disable",
    }


def test_a_connection_in_community_postgresql_names_drives_the_backup_playbook(
    run_playbook: t.Callable[..., t.Any], pg: t.Any, new_db: t.Callable[..., str], tmp_path: t.Any
) -> None:
    """backup.yml reads its connection through pgshift.ops.connection: login_* keys reach the modules."""
    database = new_db()
    path = tmp_path / "hosts.yml"
    path.write_text(ALIASES_INVENTORY % {"backups": tmp_path / "backups"})
    run = run_playbook(
        "playbooks/backup.yml",
        inventory=str(path),
        extra_vars={
            "pgshift_prod_connection": _community_names(pg, database),
            "pgshift_backup_verify_level": "checksum",
        },
        args=["-vvvv"],
    )
    assert run.rc == 0, run.output[-3000:]
    assert pg.password not in run.output
    (folder,) = os.listdir(tmp_path / "backups")
    assert folder.startswith("prod-%s-" % database), folder  # the label names login_db's database


def test_a_name_and_its_alias_with_different_values_are_refused_before_anything_runs(
    run_playbook: t.Callable[..., t.Any], inventory: str, tmp_path: t.Any
) -> None:
    conn = {"host": "127.0.0.1", "port": 1, "user": "postgres", "password": "pw-x2", "database": "shop"}
    conn["login_db"] = "shop_other"
    run = run_playbook("playbooks/backup.yml", inventory=inventory, extra_vars={"pgshift_prod_connection": conn})
    assert run.rc != 0
    assert (
        "pgshift_prod_connection: database and login_db are the same setting (database) with different values;"
        " keep one of them"
    ) in " ".join(run.output.split())
    assert "shop_other" not in run.output and "pw-x2" not in run.output
    assert not os.path.exists(tmp_path / "backups")


def test_prod_restore_reads_community_postgresql_names(run_playbook: t.Callable[..., t.Any], inventory: str) -> None:
    """The release reads its connections through pgshift.ops.connection: login_host is production's host (an alias
    the playbook ignored would fall back to the local socket), checked by where the connection attempt went."""
    conn = {"login_host": "127.0.0.1", "login_port": 1, "user": "postgres", "password": "pw-x3", "login_db": "shop"}
    run = run_playbook("playbooks/prod_restore.yml", inventory=inventory, extra_vars={"pgshift_prod_connection": conn})
    assert run.rc != 0
    said = " ".join(run.output.split())
    assert "instead of login_host" not in said and "unknown variable" not in said
    assert "inputs are complete and consistent" in said, "the database name came through login_db"
    assert "127.0.0.1" in said and "port 1" in said, said[-2000:]
    assert "pw-x3" not in run.output


def test_module_defaults_of_the_group_in_community_postgresql_names_reach_the_modules(
    run_playbook: t.Callable[..., t.Any], pg: t.Any, new_db: t.Callable[..., str], tmp_path: t.Any
) -> None:
    """A user's play sets the connection once, in community.postgresql's names, for group/pgshift.ops.postgres."""
    database = new_db()
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        """\
- name: module_defaults in community.postgresql's names
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  module_defaults:
    group/pgshift.ops.postgres:
      login_host: 127.0.0.1
      login_port: %(port)d
      login_user: postgres
      login_password: "{{ secret }}"
      login_db: %(database)s
      ssl_mode: disable
  tasks:
    - name: migrations_info over the group's defaults
      pgshift.ops.migrations_info:
        migrations_dir: %(migrations)s
      register: info
    - name: it read the database named by login_db
      ansible.builtin.assert:
        that: info.applied | length == 0 and info.pending | length == 6
"""
        % {
            "port": pg.port,
            "database": database,
            "migrations": os.path.join(
                os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "sample_app", "migrations"
            ),
        }
    )
    run = run_playbook(str(playbook), inventory="localhost,", extra_vars={"secret": pg.password}, args=["-vvvv"])
    assert run.rc == 0, run.output[-3000:]
    assert pg.password not in run.output


def test_a_module_refuses_a_name_and_its_alias_with_different_values(
    run_module: t.Callable[..., t.Any], pg: t.Any, new_db: t.Callable[..., str], tmp_path: t.Any
) -> None:
    """Ansible alone would let login_db win over database (with a warning): the wrong database would be read."""
    database = new_db()
    args = dict(pg.conn(database), login_db="postgres", dest_dir=str(tmp_path / "backups"))
    run = run_module("backup", args)
    assert run.failed
    assert run.result["msg"] == (
        "the module's connection options gives database twice with different values (database and login_db): keep"
        " one of the two keys"
    )
    assert not (tmp_path / "backups").exists()
    # a dictionary option (the way prod_restore.yml builds the new database's connection with combine)
    target = dict(pg.conn(database), login_db="postgres")
    plan = run_module("data_plan", dict(source=pg.conn(database), target=target))
    assert plan.failed
    assert "option target gives database twice with different values (database and login_db)" in plan.result["msg"]
