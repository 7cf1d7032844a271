"""The list of known pgshift variables stays in step with what the playbooks and roles read."""

from __future__ import annotations

import glob
import os
import re

import yaml

from ansible_collections.pgshift.ops.plugins.action.vars_check import collection_role_variables
from ansible_collections.pgshift.ops.plugins.module_utils import _variables as v

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GROUPS = {"pgshift_db", "pgshift_app", "pgshift_web"}


def _files() -> list:
    out = []
    for pattern in (
        "playbooks/*.yml",
        "roles/*/tasks/*.yml",
        "roles/*/defaults/*.yml",
        "roles/*/vars/*.yml",
        "inventories/*/group_vars/*",
    ):
        out += glob.glob(os.path.join(ROOT, pattern))
    return sorted(out)


def _reads(paths: list) -> tuple:
    """The pgshift_* names the YAML files read, and those they register or set with now()."""
    read, registered = set(), set()
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            # comments name schemas and tables too (pgshift_capture): only what the YAML itself reads counts
            text = "\n".join(line for line in handle.read().splitlines() if not line.lstrip().startswith("#"))
        read |= set(re.findall(r"(?<![\w&*])pgshift_[a-z0-9_]+", text))
        registered |= set(re.findall(r"register: (pgshift_[a-z0-9_]+)", text))
        registered |= set(re.findall(r"^\s+(pgshift_[a-z0-9_]+): .*now\(", text, re.M))
    return read, registered


def _set_facts(paths: list) -> set:
    """The names the tasks files set with set_fact (a role's outputs for a later play, not its inputs)."""
    names: set = set()

    def walk(node: object) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            facts = node.get("ansible.builtin.set_fact")
            if isinstance(facts, dict):
                names.update(facts)
            for key in ("block", "rescue", "always"):
                walk(node.get(key))

    for path in paths:
        with open(path, encoding="utf-8") as handle:
            walk(yaml.safe_load(handle))
    return names


def _spec(role: str) -> dict:
    with open(os.path.join(ROOT, "roles", role, "meta", "argument_specs.yml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)["argument_specs"]


def test_every_variable_the_playbooks_read_is_known() -> None:
    read, registered = _reads(_files())
    facts = {n for n in _set_facts([p for p in _files() if p.endswith(".yml")]) if n.startswith("pgshift_")}
    known = v.KNOWN_VARIABLES | collection_role_variables()
    unknown = sorted(
        name
        # set by a set_fact of the playbooks (not a variable a user sets): listed in SET_BY_PLAYBOOKS
        for name in read - registered - (facts & set(v.SET_BY_PLAYBOOKS)) - GROUPS
        if name not in known and not v.CONNECTION_VARIABLE.match(name) and not v.SECRET_VARIABLE.match(name)
    )
    assert not unknown, (
        "declare these in the argument specs of the role that reads them (roles/<role>/meta/argument_specs.yml) or, "
        "for a name no role reads, in plugins/module_utils/_variables.py KNOWN_VARIABLES: %s" % unknown
    )
    assert registered <= set(v.SET_BY_PLAYBOOKS), "SET_BY_PLAYBOOKS must list what the playbooks register or set"
    assert set(v.SET_BY_PLAYBOOKS) <= read, "SET_BY_PLAYBOOKS lists names no playbook sets any more"


def test_a_typo_is_named_with_the_closest_known_name() -> None:
    problems = v.unknown_variables(
        ["pgshift_backup_verify_levle", "pgshift_jobs", "pgshift_prod_connection"], collection_role_variables()
    )
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
    assert v.connection_problems("pgshift_prod_connection", {"dbname": "u"}) == [
        "pgshift_prod_connection: write database instead of dbname"
    ]
    (problem,) = v.connection_problems("pgshift_prod_connection", "host=x")
    assert problem.startswith("pgshift_prod_connection must be a dictionary with keys connect_params, database, host")
    assert v.connection_problems("pgshift_prod_connection", dict.fromkeys(v.CONNECTION_KEYS, "x")) == []


def test_the_awx_placeholder_password_is_refused() -> None:
    conn = {"host": "h", "password": v.PLACEHOLDER_PASSWORD}
    assert v.connection_problems("pgshift_dev_connection", conn) == [
        "pgshift_dev_connection: the password is still the placeholder of the AWX import; set it in AWX"
    ]


def test_the_release_role_spec_is_the_one_list_of_its_variables() -> None:
    """Each release variable is declared once: in the role's argument specs, not again in KNOWN_VARIABLES; every entry
    point (phase) validates all of them, so a wrong type stops Preflight, before anything changes."""
    spec = collection_role_variables()
    assert {"pgshift_prod_connection", "pgshift_backup_verify_level", "pgshift_jobs"} <= spec
    assert not spec & v.KNOWN_VARIABLES, "declared twice: %s" % sorted(spec & v.KNOWN_VARIABLES)
    assert v.unknown_variables(["pgshift_backup_verify_levle"], sorted(spec)) == [
        "unknown variable pgshift_backup_verify_levle (did you mean pgshift_backup_verify_level?)"
    ]
    entries = _spec("release")
    tasks = {os.path.basename(p)[:-4] for p in glob.glob(os.path.join(ROOT, "roles", "release", "tasks", "*.yml"))}
    assert set(entries) == tasks, "one entry point per phase (tasks file)"
    release = set(entries["preflight"]["options"])
    assert release <= spec
    assert all(set(e["options"]) == release for e in entries.values())


def test_community_postgresql_names_are_accepted_and_their_typos_get_a_suggestion() -> None:
    aliases = {
        "login_host": "h",
        "login_port": 5432,
        "login_user": "u",
        "login_password": "p",
        "login_db": "shop",
        "ssl_mode": "verify-full",
        "ca_cert": "/ca.crt",
        "ssl_cert": "/c.crt",
        "ssl_key": "/c.key",
        "connect_params": {"target_session_attrs": "read-write"},
    }
    assert v.connection_problems("pgshift_prod_connection", aliases) == []
    assert v.connection_problems("pgshift_prod_connection", {"login_unix_socket": "/run/postgresql"}) == []
    assert v.connection_problems("pgshift_prod_connection", {"login_pasword": "x"}) == [
        "pgshift_prod_connection: unknown key login_pasword (did you mean login_password?)"
    ]
    assert v.connection_problems("pgshift_prod_connection", {"ssl_mod": "x"}) == [
        "pgshift_prod_connection: unknown key ssl_mod (did you mean ssl_mode?)"
    ]


def test_a_name_and_its_alias_with_different_values_are_refused_without_showing_them() -> None:
    same = {"host": "db1", "login_host": "db1", "database": "shop", "login_db": "shop"}
    assert v.connection_problems("pgshift_prod_connection", same) == []
    (problem,) = v.connection_problems("pgshift_prod_connection", {"database": "shop", "login_db": "shop_old"})
    assert problem == (
        "pgshift_prod_connection: database and login_db are the same setting (database) with different values;"
        " keep one of them"
    )
    assert "shop_old" not in problem
    (problem,) = v.connection_problems("pgshift_prod_connection", {"password": "a-secret", "login_password": "b"})
    assert "password and login_password" in problem and "a-secret" not in problem
    (problem,) = v.connection_problems("pgshift_prod_connection", {"login_host": "a", "login_unix_socket": "/run"})
    assert "login_host and login_unix_socket are the same setting (host)" in problem


def test_the_aliases_are_the_connection_layers() -> None:
    from ansible_collections.pgshift.ops.plugins.module_utils import _connection

    assert v.CONNECTION_ALIASES == {
        alias: name for alias, name in _connection.CONNECTION_ALIASES.items() if name in v.CONNECTION_KEYS
    }
    assert set(v.CONNECTION_ALIASES.values()) <= v.CONNECTION_KEYS


def test_a_playbook_that_reads_pgshifts_names_refuses_the_aliases() -> None:
    assert v.connection_problems("pgshift_prod_connection", {"login_host": "h", "port": 1}, aliases=False) == [
        "pgshift_prod_connection: write host instead of login_host (this playbook reads pgshift's names)"
    ]


# Read by a role only as another variable's fallback, so left out of its argument specs (every option is templated
# when an entry point starts; a fallback must stay lazy): each is an option of the release role.
FALLBACKS = {"pgshift_artifacts_dir", "pgshift_dev_connection"}


def test_each_role_declares_the_variables_it_reads() -> None:
    """A role's argument specs list the pgshift_* variables the role reads, and only those: each entry point (tasks
    file) has its spec, the names the role reads are options of its specs (the recover role's main entry point reads
    the release's, the variables of the run it undoes), and no option is a name nothing reads."""
    release = set(_spec("release")["preflight"]["options"])
    for path in sorted(glob.glob(os.path.join(ROOT, "roles", "*", "meta", "argument_specs.yml"))):
        role = path.split(os.sep)[-3]
        entries = _spec(role)
        tasks = {os.path.basename(p)[:-4] for p in glob.glob(os.path.join(ROOT, "roles", role, "tasks", "*.yml"))}
        assert set(entries) == tasks, "%s: one entry point per tasks file" % role
        files = [f for d in ("tasks", "vars", "defaults") for f in glob.glob(os.path.join(ROOT, "roles", role, d, "*"))]
        read, registered = _reads(files)
        options = {n for e in entries.values() for n in (e.get("options") or {}) if n.startswith("pgshift_")}
        facts = _set_facts(glob.glob(os.path.join(ROOT, "roles", role, "tasks", "*.yml")))
        inputs = read - registered - facts - GROUPS - set(v.SET_BY_PLAYBOOKS) - set(v.KNOWN_VARIABLES)
        allowed = options | FALLBACKS | (release if role == "recover" else set())
        assert inputs <= allowed, "%s reads variables its argument specs do not declare: %s" % (
            role,
            sorted(inputs - allowed),
        )
        # rollback.yml hands two of the recover role's preflight options to its main entry point itself
        read |= _reads(glob.glob(os.path.join(ROOT, "playbooks", "*.yml")))[0]
        assert options <= read, "%s declares variables it never reads: %s" % (role, sorted(options - read))
