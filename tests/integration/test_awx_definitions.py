"""awx/pgshift.yml, the AWX / Automation Platform definitions that `awx import` (awxkit) loads.

No AWX server runs here, so the export is checked against awxkit itself (the pinned version `make awx-import` uses):
it is read with the loader `awx import -f yaml` uses, every section is one awxkit exports and imports, every natural
key has exactly the fields of awxkit's page class for that type, and every reference resolves to an object of the
file. Then what the issue asks: the six job templates and their playbooks (which pass ansible-playbook's syntax
check with the collection), the prod restore survey, no simultaneous releases, and the workflow graph
rehearsal -> approval -> prod restore -> (failure) rollback -> release failed.
"""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
import textwrap
import typing as t

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPORT = os.path.join(ROOT, "awx", "pgshift.yml")
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
sys.path.insert(0, os.path.join(ROOT, "tools"))

# awxkit is installed by `make awxkit` (part of make test-deps), pinned in mk/awx.mk
import awxkit.api.pages.api as awxkit_api  # type: ignore[import-untyped]  # noqa: E402
import deploy_ci  # noqa: E402
from awxkit.api import pages  # noqa: E402
from awxkit.yaml_file import Loader  # type: ignore[import-untyped]  # noqa: E402

# section of the export -> (awxkit page class, natural key type)
SECTIONS = {
    "organizations": (pages.Organization, "organization"),
    "execution_environments": (pages.ExecutionEnvironment, "execution_environment"),
    "credential_types": (pages.CredentialType, "credential_type"),
    "credentials": (pages.Credential, "credential"),
    "projects": (pages.Project, "project"),
    "inventory": (pages.Inventory, "inventory"),
    "inventory_sources": (pages.InventorySource, "inventory_source"),
    "job_templates": (pages.JobTemplate, "job_template"),
    "workflow_job_templates": (pages.WorkflowJobTemplate, "workflow_job_template"),
}
RESOURCE_TYPES = {entry[1] for entry in SECTIONS.values()} | {"workflow_job_template_node"}
NODE_KEY = pages.WorkflowJobTemplateNode.NATURAL_KEY
TEMPLATES = {
    "pgshift: validate migrations": "playbooks/validate_migrations.yml",
    "pgshift: drift check": "playbooks/drift_check.yml",
    "pgshift: verified backup": "playbooks/backup.yml",
    "pgshift: staging rehearsal": "playbooks/staging_rehearsal.yml",
    "pgshift: prod restore": "playbooks/prod_restore.yml",
    "pgshift: rollback": "playbooks/rollback.yml",
    "pgshift: release failed": "awx/playbooks/release_failed.yml",
}


@pytest.fixture(scope="module")
def export() -> t.Dict[str, t.Any]:
    with open(EXPORT, encoding="utf-8") as handle:
        # what `awx import -f yaml < awx/pgshift.yml` does with its stdin (awxkit/cli/resource.py, Import.handle)
        data = yaml.load(handle, Loader=Loader)  # noqa: S506 - awxkit's Loader is a SafeLoader subclass
    with open(EXPORT) as handle:
        assert data == yaml.safe_load(handle), "plain YAML: nothing that only awxkit's loader understands"
    return t.cast(t.Dict[str, t.Any], data)


def by_name(export: t.Dict[str, t.Any], section: str) -> t.Dict[str, t.Dict[str, t.Any]]:
    return {asset["name"]: asset for asset in export[section]}


def references(value: t.Any) -> t.Iterator[t.Dict[str, t.Any]]:
    """Every natural key used as a reference inside an asset (dicts with a `type`)."""
    if isinstance(value, dict):
        if value.get("type") in RESOURCE_TYPES:
            yield value
        for key, item in value.items():
            if key not in ("natural_key", "inputs", "injectors", "survey_spec"):
                yield from references(item)
    elif isinstance(value, list):
        for item in value:
            yield from references(item)


def test_sections_are_what_awx_import_reads(export: t.Dict[str, t.Any]) -> None:
    assert set(export) <= set(awxkit_api.EXPORTABLE_RESOURCES)
    assert set(export) == set(SECTIONS)
    for section, (cls, type_name) in SECTIONS.items():
        for asset in export[section]:
            key = asset["natural_key"]
            assert key["type"] == type_name, (section, asset["name"])
            # exactly the fields awxkit builds the natural key from (a field the object has not is left out)
            assert set(key) - {"type"} <= set(cls.NATURAL_KEY), (section, key)
            assert key["name"] == asset["name"]
            for field in cls.NATURAL_KEY:
                if field in asset:
                    assert key.get(field) == asset[field], (section, asset["name"], field)


def test_every_reference_resolves(export: t.Dict[str, t.Any]) -> None:
    keys = [asset["natural_key"] for section in SECTIONS for asset in export[section]]
    nodes = [n["natural_key"] for w in export["workflow_job_templates"] for n in w["related"]["workflow_nodes"]]
    known = keys + nodes
    for section in SECTIONS:
        for asset in export[section]:
            refs = list(references({k: v for k, v in asset.items() if k != "natural_key"}))
            for ref in refs:
                assert ref in known, (section, asset["name"], ref)
            if section not in ("organizations", "credential_types"):
                assert refs, "%s %r refers to nothing" % (section, asset["name"])


def test_job_templates(export: t.Dict[str, t.Any]) -> None:
    templates = by_name(export, "job_templates")
    assert {name: jt["playbook"] for name, jt in templates.items()} == TEMPLATES
    for name, jt in templates.items():
        assert os.path.isfile(os.path.join(ROOT, jt["playbook"])), "%s: %s is missing" % (name, jt["playbook"])
        assert jt["project"]["name"] == "pgshift" and jt["execution_environment"]["name"] == "pgshift EE"
        assert jt["job_type"] == "run"
    restore = templates["pgshift: prod restore"]
    assert restore["allow_simultaneous"] is False and restore["survey_enabled"] is True
    question = restore["related"]["survey_spec"]["spec"]
    assert [(q["variable"], q["required"], q["type"]) for q in question] == [("pgshift_confirm", True, "text")]
    assert templates["pgshift: rollback"]["allow_simultaneous"] is False
    assert templates["pgshift: rollback"]["related"]["survey_spec"]["spec"][0]["variable"] == "pgshift_confirm"
    assert templates["pgshift: staging rehearsal"]["limit"] == "pgshift_db", "as make rehearsal: database host only"
    for name in ("pgshift: prod restore", "pgshift: rollback", "pgshift: verified backup"):
        assert templates[name]["related"]["credentials"][0]["name"] == "pgshift databases"


def payload_fields(cls: t.Any) -> t.Set[str]:
    """The optional fields awxkit's page class sends when it creates the object (its payload method)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls.payload)))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(x, "id", "") == "optional_fields" for x in node.targets):
            return {str(t.cast(ast.Constant, elt).value) for elt in t.cast(ast.Tuple, node.value).elts}
    raise AssertionError("no optional_fields in %s.payload" % cls.__name__)


@pytest.mark.parametrize(
    ("section", "cls", "base"),
    [
        (
            "job_templates",
            pages.JobTemplate,
            {
                "name",
                "description",
                "job_type",
                "playbook",
                "project",
                "inventory",
                "execution_environment",
                "extra_vars",
            },
        ),
        (
            "workflow_job_templates",
            pages.WorkflowJobTemplate,
            {"name", "description", "organization", "inventory", "extra_vars"},
        ),
    ],
)
def test_template_fields_are_awx_fields(export: t.Dict[str, t.Any], section: str, cls: t.Any, base: t.Set[str]) -> None:
    """No misspelt field: AWX ignores fields it does not know, so a typo would silently drop a setting."""
    known = payload_fields(cls) | base | {"related", "natural_key"}
    for asset in export[section]:
        assert set(asset) <= known, (asset["name"], set(asset) - known)


def test_release_workflow_graph(export: t.Dict[str, t.Any]) -> None:
    (workflow,) = export["workflow_job_templates"]
    assert workflow["name"] == "pgshift: release" and workflow["allow_simultaneous"] is False
    assert workflow["related"]["survey_spec"]["spec"][0]["variable"] == "pgshift_confirm"
    nodes = {n["identifier"]: n for n in workflow["related"]["workflow_nodes"]}
    for ident, node in nodes.items():
        assert set(node["natural_key"]) - {"type"} == set(NODE_KEY)
        assert node["natural_key"]["identifier"] == ident
        assert node["natural_key"]["workflow_job_template"] == workflow["natural_key"]

    def edges(ident: str, kind: str) -> t.List[str]:
        return [ref["identifier"] for ref in nodes[ident]["related"].get(kind, [])]

    template = {i: n.get("unified_job_template", {}).get("name") for i, n in nodes.items()}
    assert template["rehearsal"] == "pgshift: staging rehearsal"
    assert edges("rehearsal", "success_nodes") == ["approval"] and edges("rehearsal", "failure_nodes") == []
    assert template["approval"] is None and nodes["approval"]["related"]["create_approval_template"]["timeout"] > 0
    assert edges("approval", "success_nodes") == ["prod-restore"]
    assert template["prod-restore"] == "pgshift: prod restore"
    assert edges("prod-restore", "failure_nodes") == ["rollback"] and edges("prod-restore", "success_nodes") == []
    assert template["rollback"] == "pgshift: rollback"
    assert edges("rollback", "always_nodes") == ["release-failed"]
    assert template["release-failed"] == "pgshift: release failed"
    # every node is reached from the root exactly once
    reached = [e for i in nodes for kind in ("success_nodes", "failure_nodes", "always_nodes") for e in edges(i, kind)]
    assert sorted(reached) == sorted(set(nodes) - {"rehearsal"})


def test_credential_type_matches_the_github_vars_file(export: t.Dict[str, t.Any]) -> None:
    (ctype,) = export["credential_types"]
    injected = set(ctype["injectors"]["extra_vars"])
    github = {name for name in deploy_ci.SECRETS.values() if "password" in name}
    assert injected == github, "AWX and the GitHub workflow hand the same variables to the inventory"
    assert all(field["secret"] for field in ctype["inputs"]["fields"])
    (credential,) = export["credentials"]
    assert set(credential["inputs"].values()) == {"REPLACE-ME-IN-AWX"}, "no secret in the export, placeholders only"


def test_playbooks_pass_the_syntax_check() -> None:
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".build", "collections"),
        ANSIBLE_HOME=os.path.join(ROOT, ".cache", "ansible"),
    )
    argv = [os.path.join(VENV_BIN, "ansible-playbook"), "--syntax-check", "-i", "inventories/local"]
    proc = subprocess.run(
        argv + sorted(set(TEMPLATES.values())), cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_release_failed_node_fails(run_playbook: t.Callable[..., t.Any]) -> None:
    run = run_playbook("awx/playbooks/release_failed.yml")
    assert run.rc == 2
    assert "The production release failed and the rollback job ran" in run.output
    check = run_playbook("awx/playbooks/release_failed.yml", args=["--check"])
    assert check.rc == 2, "the node fails in check mode too"


def test_every_credential_has_its_types_required_inputs(export: t.Dict[str, t.Any]) -> None:
    from ansible_collections.pgshift.ops.plugins.module_utils._variables import PLACEHOLDER_PASSWORD

    types = {ct["name"]: ct for ct in export["credential_types"]}
    for cred in export["credentials"]:
        ctype = types[cred["credential_type"]["name"]]
        required = set(ctype["inputs"].get("required") or [])
        assert required <= set(cred["inputs"]), cred["name"]
        # placeholders only, which vars_check refuses as passwords: no secret is ever in this file
        assert set(cred["inputs"].values()) == {PLACEHOLDER_PASSWORD}
