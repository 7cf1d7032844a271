"""The list of known pgshift variables stays in step with what the playbooks and roles read."""

from __future__ import annotations

import glob
import os
import re
import typing as t

import yaml

from ansible_collections.pgshift.ops.plugins.module_utils import _variables as v

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GROUPS = {"pgshift_db", "pgshift_app", "pgshift_web"}


def _files() -> list:
    out = []
    for pattern in ("playbooks/*.yml", "roles/*/tasks/*.yml", "roles/*/defaults/*.yml", "inventories/*/group_vars/*"):
        out += glob.glob(os.path.join(ROOT, pattern))
    return sorted(out)


def _set_facts(node: t.Any) -> t.Set[str]:
    """The names ansible.builtin.set_fact tasks set, anywhere in a playbook or task file (blocks included)."""
    out: t.Set[str] = set()
    if isinstance(node, list):
        for item in node:
            out |= _set_facts(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in ("ansible.builtin.set_fact", "set_fact") and isinstance(value, dict):
                out |= {name for name in value if name.startswith("pgshift_")}
            elif isinstance(value, (list, dict)):
                out |= _set_facts(value)
    return out


def test_every_variable_the_playbooks_read_is_known() -> None:
    read, registered, facts = set(), set(), set()
    for path in _files():
        if path.endswith(".yml"):
            with open(path, encoding="utf-8") as handle:
                facts |= _set_facts(yaml.safe_load(handle))
        with open(path, encoding="utf-8") as handle:
            # comments name schemas and tables too (pgshift_capture): only what the YAML itself reads counts
            text = "\n".join(line for line in handle.read().splitlines() if not line.lstrip().startswith("#"))
        read |= set(re.findall(r"(?<![\w&*])pgshift_[a-z0-9_]+", text))
        registered |= set(re.findall(r"register: (pgshift_[a-z0-9_]+)", text))
        registered |= set(re.findall(r"^\s+(pgshift_[a-z0-9_]+): .*now\(", text, re.M))
    unknown = sorted(
        name
        # set by a set_fact of the playbooks (not a variable a user sets): listed in SET_BY_PLAYBOOKS
        for name in read - registered - (facts & set(v.SET_BY_PLAYBOOKS)) - GROUPS
        if name not in v.KNOWN_VARIABLES and not v.CONNECTION_VARIABLE.match(name) and not v.SECRET_VARIABLE.match(name)
    )
    assert not unknown, "add these to plugins/module_utils/_variables.py KNOWN_VARIABLES: %s" % unknown
    assert registered <= set(v.SET_BY_PLAYBOOKS), "SET_BY_PLAYBOOKS must list what the playbooks register or set"
    assert set(v.SET_BY_PLAYBOOKS) <= read, "SET_BY_PLAYBOOKS lists names no playbook sets any more"


def test_a_typo_is_named_with_the_closest_known_name() -> None:
    problems = v.unknown_variables(["pgshift_backup_verify_levle", "pgshift_jobs", "pgshift_prod_connection"])
    assert problems == ["unknown variable pgshift_backup_verify_levle (did you mean pgshift_backup_verify_level?)"]


def test_a_name_far_from_every_known_one_gets_no_suggestion() -> None:
    assert v.unknown_variables(["pgshift_zzzzzz"]) == ["unknown variable pgshift_zzzzzz"]


def test_secrets_and_connections_of_any_environment_are_accepted() -> None:
    assert v.unknown_variables(["pgshift_secret_prod_password", "pgshift_qa_connection"]) == []
    assert v.unknown_variables(["pgshift_mine"], extra_known=["pgshift_mine"]) == []


def test_connection_keys_are_checked() -> None:
    assert v.connection_problems("pgshift_prod_connection", {"host": "h", "pasword": "x"}) == [
        "pgshift_prod_connection: unknown key pasword (did you mean password?)"
    ]
    assert v.connection_problems("pgshift_prod_connection", {"login_user": "u"}) == [
        "pgshift_prod_connection: write user instead of login_user"
    ]
    (problem,) = v.connection_problems("pgshift_prod_connection", "host=x")
    assert problem.startswith("pgshift_prod_connection must be a dictionary with keys database, host, password")
    assert v.connection_problems("pgshift_prod_connection", dict.fromkeys(v.CONNECTION_KEYS, "x")) == []


def test_the_awx_placeholder_password_is_refused() -> None:
    conn = {"host": "h", "password": v.PLACEHOLDER_PASSWORD}
    assert v.connection_problems("pgshift_dev_connection", conn) == [
        "pgshift_dev_connection: the password is still the placeholder of the AWX import; set it in AWX"
    ]
