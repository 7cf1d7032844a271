"""awx/pgshift.yml, the AWX / Automation Platform definitions that `awx import` (awxkit) loads.

No AWX server runs here, so the export is checked against awxkit itself (the pinned version `make awx-import` uses):
it is read with the loader `awx import -f yaml` uses, every section is one awxkit exports and imports, every natural
key has exactly the fields of awxkit's page class for that type, every field is one awxkit's page class sends, and
every reference resolves to an object of the file. What AWX itself checks on import is checked the way AWX does it:
the credential type's input schema (field ids, types, required fields), the credential's inputs against it (every
required field present, no unknown one: AWX rejects `inputs: {}`), its injectors rendered with those inputs, and every
job template's playbook found in the project the way AWX lists a project's playbooks.

The project is the user's repository, laid out as examples/user-project: its playbooks import the collection's by
FQCN, its inventory folder is the inventory source, its collections/requirements.yml names the version the
execution environment image carries. Then the prod restore survey, no simultaneous releases, and the workflow graph
backup -> rehearsal -> (always) record -> approval -> prod restore -> (failure) rollback -> release failed.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import subprocess
import sys
import textwrap
import typing as t

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPORT = os.path.join(ROOT, "awx", "pgshift.yml")
# the user's project that the AWX project checks out (its layout; AWX runs its playbooks from its root)
PROJECT = os.path.join(ROOT, "examples", "user-project")
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
# job template -> (playbook in the user's project, the collection playbook it imports)
TEMPLATES = {
    "pgshift: validate migrations": ("playbooks/validate_migrations.yml", "pgshift.ops.validate_migrations"),
    "pgshift: drift check": ("playbooks/drift_check.yml", "pgshift.ops.drift_check"),
    "pgshift: verified backup": ("playbooks/backup.yml", "pgshift.ops.backup"),
    "pgshift: staging rehearsal": ("playbooks/staging_rehearsal.yml", "pgshift.ops.staging_rehearsal"),
    "pgshift: rehearsal record": ("playbooks/rehearsal_record.yml", "pgshift.ops.rehearsal_record"),
    "pgshift: prod restore": ("playbooks/prod_restore.yml", "pgshift.ops.prod_restore"),
    "pgshift: rollback": ("playbooks/rollback.yml", "pgshift.ops.rollback"),
    "pgshift: release failed": ("playbooks/release_failed.yml", "pgshift.ops.release_failed"),
}
# How AWX lists a project's playbooks (awx/main/utils/ansible.py, could_be_playbook): a .yml/.yaml file outside
# roles/, tasks/, group_vars/, host_vars/ and dot folders with a line that starts a play with `hosts:`, `include:` or
# `import_playbook:` (the short name only), or a vault-encrypted file. A job template naming another file is refused.
AWX_PLAYBOOK_LINE = re.compile(r"^\s*?-?\s*?(?:hosts|include|import_playbook):\s*?.*?$")
AWX_SKIPPED_FOLDERS = ("roles", "tasks", "group_vars", "host_vars")


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


def awx_playbooks(project: str) -> t.Set[str]:
    """The playbooks AWX offers for a project checkout, as its project update lists them."""
    found = set()
    for folder, _dirs, files in os.walk(project):
        rel = os.path.relpath(folder, project)
        parts = [] if rel == "." else rel.split(os.sep)
        if any(p.startswith(".") or p in AWX_SKIPPED_FOLDERS for p in parts):
            continue
        for name in files:
            if os.path.splitext(name)[1] not in (".yml", ".yaml"):
                continue
            with open(os.path.join(folder, name), encoding="utf-8", errors="ignore") as handle:
                lines = handle.read().splitlines()
            if any(AWX_PLAYBOOK_LINE.match(line) for line in lines) or (
                lines and lines[0].startswith("$ANSIBLE_VAULT;")
            ):
                found.add(os.path.normpath(os.path.join(rel, name)))
    return found


def test_awx_playbook_rule() -> None:
    """The rule above, on what it must tell apart: the FQCN key alone is not found; group_vars are never playbooks."""
    assert AWX_PLAYBOOK_LINE.match("- import_playbook: pgshift.ops.backup  # noqa")
    assert AWX_PLAYBOOK_LINE.match("  hosts: pgshift_db")
    assert not AWX_PLAYBOOK_LINE.match("- ansible.builtin.import_playbook: pgshift.ops.backup")
    assert "inventory/group_vars/all/main.yml" not in awx_playbooks(PROJECT)


def test_job_templates(export: t.Dict[str, t.Any]) -> None:
    templates = by_name(export, "job_templates")
    assert {name: jt["playbook"] for name, jt in templates.items()} == {n: p for n, (p, _c) in TEMPLATES.items()}
    offered = awx_playbooks(PROJECT)
    for name, jt in templates.items():
        path = os.path.join(PROJECT, jt["playbook"])
        assert os.path.isfile(path), "%s: %s is missing in the user project" % (name, jt["playbook"])
        assert jt["playbook"] in offered, "%s: AWX would not list %s as a playbook" % (name, jt["playbook"])
        # a thin file of the user's project: it imports the collection's playbook, the logic stays in the collection
        with open(path, encoding="utf-8") as handle:
            plays = yaml.safe_load(handle)
        assert [p.get("import_playbook") for p in plays] == [TEMPLATES[name][1]], name
        assert jt["project"]["name"] == "pgshift" and jt["execution_environment"]["name"] == "pgshift EE"
        assert jt["job_type"] == "run"
    restore = templates["pgshift: prod restore"]
    assert restore["allow_simultaneous"] is False and restore["survey_enabled"] is True
    question = restore["related"]["survey_spec"]["spec"]
    assert [(q["variable"], q["required"], q["type"]) for q in question] == [("pgshift_confirm", True, "text")]
    assert templates["pgshift: rollback"]["allow_simultaneous"] is False
    assert templates["pgshift: rollback"]["related"]["survey_spec"]["spec"][0]["variable"] == "pgshift_confirm"
    assert templates["pgshift: staging rehearsal"]["limit"] == "pgshift_db", "as make rehearsal: database host only"
    assert templates["pgshift: rehearsal record"]["limit"] == "pgshift_db"
    for name in TEMPLATES:
        if name != "pgshift: release failed":
            assert templates[name]["related"]["credentials"][0]["name"] == "pgshift databases", name


def test_the_project_is_the_users_repository(export: t.Dict[str, t.Any]) -> None:
    """The AWX project is the user's release repository, the inventory comes from its inventory/ folder, and the
    execution environment image carries the collection version that the project's collections/requirements.yml pins."""
    (project,) = export["projects"]
    assert project["scm_type"] == "git" and "pgshift" not in project["scm_url"].split("/")[-1]
    assert project["default_environment"]["name"] == "pgshift EE"
    (source,) = export["inventory_sources"]
    assert source["source"] == "scm" and source["source_project"]["name"] == project["name"]
    assert os.path.isdir(os.path.join(PROJECT, source["source_path"])), "the inventory folder of the user project"
    assert os.path.isfile(os.path.join(PROJECT, source["source_path"], "hosts.yml"))
    with open(os.path.join(ROOT, "galaxy.yml"), encoding="utf-8") as handle:
        version = str(yaml.safe_load(handle)["version"])
    with open(os.path.join(PROJECT, "collections", "requirements.yml"), encoding="utf-8") as handle:
        wanted = yaml.safe_load(handle)["collections"]
    assert wanted == [{"name": "pgshift.ops", "version": version}], "one exact version, this collection's"
    (ee,) = export["execution_environments"]
    assert ee["image"].rsplit(":", 1)[1] == version, "the image is tagged with the version the project pins"


def awx_injector_render(template: str, inputs: t.Dict[str, t.Any]) -> str:
    """How AWX renders a credential type's injector: a sandboxed Jinja template over the credential's inputs."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment(undefined=StrictUndefined).from_string(template).render(**inputs)


def test_credential_type_and_credential_pass_awx_input_validation(export: t.Dict[str, t.Any]) -> None:
    """What AWX checks when the import posts the type and the credential (CredentialTypeInputField and
    CredentialInputField of awx/main/fields.py): no unknown keys, string/boolean fields with ids, required fields a
    subset of them; the credential's inputs hold every required field (AWX rejects `inputs: {}`) and no unknown one."""
    import jsonschema  # type: ignore[import-untyped]

    (ctype,) = export["credential_types"]
    assert ctype["kind"] == "cloud" and set(ctype["inputs"]) <= {"fields", "required"}
    fields = {f["id"]: f for f in ctype["inputs"]["fields"]}
    for field in fields.values():
        assert re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", field["id"]) and field.get("label")
        assert set(field) <= {
            "id",
            "label",
            "type",
            "secret",
            "help_text",
            "multiline",
            "format",
            "choices",
            "ask_at_runtime",
        }
        assert field.get("type", "string") in ("string", "boolean")
    required = ctype["inputs"]["required"]
    assert set(required) <= set(fields)
    assert set(ctype["injectors"]) <= {"env", "extra_vars", "file"}
    schema = {
        "type": "object",
        "properties": {i: {"type": f.get("type", "string")} for i, f in fields.items()},
        "required": required,
        "additionalProperties": False,
    }
    (credential,) = export["credentials"]
    jsonschema.validate(credential["inputs"], schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({}, schema)  # what AWX refused in the old export
    # every injector renders with the imported inputs (fields left out render empty, as AWX does)
    inputs = {i: credential["inputs"].get(i, "") for i in fields}
    for kind in ("env", "extra_vars"):
        for value in ctype["injectors"].get(kind, {}).values():
            awx_injector_render(value, inputs)
    assert set(ctype["injectors"]["extra_vars"]) >= {
        "pgshift_secret_prod_password",
        "pgshift_secret_dev_password",
        "pgshift_secret_staging_password",
    }


def payload_fields(cls: t.Any) -> t.Set[str]:
    """The fields awxkit's page class sends when it creates the object (its payload method): the optional ones it
    copies from its arguments, the ones it sets on the payload, its keyword parameters."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls.payload)))
    found: t.Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            getattr(x, "id", "") in ("optional_fields", "fields") for x in node.targets
        ):
            found |= {str(t.cast(ast.Constant, elt).value) for elt in t.cast(ast.Tuple, node.value).elts}
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") in (
            "PseudoNamespace",
            "set_payload_foreign_key_args",
        ):
            found |= {k.arg for k in node.keywords if k.arg}
            for arg in node.args:
                if isinstance(arg, ast.Tuple):
                    found |= {str(t.cast(ast.Constant, e).value) for e in arg.elts}
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and getattr(node.value, "id", "") == "payload"
        ):
            found.add(node.attr)
        if isinstance(node, ast.arguments):
            found |= {a.arg for a in node.args + node.kwonlyargs if a.arg not in ("self", "kwargs")}
    assert found, "no fields in %s.payload" % cls.__name__
    return found


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
        # AWX fields that awxkit's payload leaves to its callers (set in the import from the export's keys)
        ("projects", pages.Project, {"organization", "default_environment"}),
        ("inventory", pages.Inventory, {"name", "description", "organization"}),
        ("inventory_sources", pages.InventorySource, {"source_project", "execution_environment", "inventory"}),
        ("credential_types", pages.CredentialType, set()),
        ("credentials", pages.Credential, set()),
        ("execution_environments", pages.ExecutionEnvironment, {"description"}),  # its payload passes **kwargs on
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
    assert template["backup"] == "pgshift: verified backup"
    assert edges("backup", "success_nodes") == ["rehearsal"] and edges("backup", "failure_nodes") == []
    assert template["rehearsal"] == "pgshift: staging rehearsal"
    # the record is written whatever the rehearsal's outcome; the approval only after a record that passed
    assert edges("rehearsal", "always_nodes") == ["rehearsal-record"] and edges("rehearsal", "success_nodes") == []
    assert template["rehearsal-record"] == "pgshift: rehearsal record"
    assert edges("rehearsal-record", "success_nodes") == ["approval"]
    assert edges("rehearsal-record", "failure_nodes") == [] and edges("rehearsal-record", "always_nodes") == []
    assert template["approval"] is None and nodes["approval"]["related"]["create_approval_template"]["timeout"] > 0
    assert edges("approval", "success_nodes") == ["prod-restore"]
    assert template["prod-restore"] == "pgshift: prod restore"
    assert edges("prod-restore", "failure_nodes") == ["rollback"] and edges("prod-restore", "success_nodes") == []
    assert template["rollback"] == "pgshift: rollback"
    assert edges("rollback", "always_nodes") == ["release-failed"]
    assert template["release-failed"] == "pgshift: release failed"
    # every node is reached from the root exactly once
    reached = [e for i in nodes for kind in ("success_nodes", "failure_nodes", "always_nodes") for e in edges(i, kind)]
    assert sorted(reached) == sorted(set(nodes) - {"backup"})


def test_credential_type_matches_the_github_vars_file(export: t.Dict[str, t.Any]) -> None:
    (ctype,) = export["credential_types"]
    injected = set(ctype["injectors"]["extra_vars"])
    github = {name for name in deploy_ci.SECRETS.values() if "password" in name}
    assert injected == github, "AWX and the GitHub workflow hand the same variables to the inventory"
    assert all(field["secret"] for field in ctype["inputs"]["fields"])
    (credential,) = export["credentials"]
    assert set(credential["inputs"].values()) == {"REPLACE-ME-IN-AWX"}, "no secret in the export, placeholders only"


def test_playbooks_pass_the_syntax_check() -> None:
    """From the user project, with its own ansible.cfg and inventory (tests/integration/test_runner_awx_layout.py runs
    them with the collection installed from the tarball)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".build", "collections"),
        ANSIBLE_HOME=os.path.join(ROOT, ".cache", "ansible"),
    )
    argv = [os.path.join(VENV_BIN, "ansible-playbook"), "--syntax-check"]
    playbooks = sorted(p for p, _c in TEMPLATES.values())
    proc = subprocess.run(argv + playbooks, cwd=PROJECT, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_release_failed_node_fails(run_playbook: t.Callable[..., t.Any]) -> None:
    run = run_playbook("playbooks/release_failed.yml")
    assert run.rc == 2
    assert "The production release failed and the rollback job ran" in run.output
    check = run_playbook("playbooks/release_failed.yml", args=["--check"])
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
