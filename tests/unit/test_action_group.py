"""module_defaults for group/pgshift.ops.postgres reach every module that takes the top-level connection options."""

from __future__ import annotations

import glob
import os

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _documentation(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    start = text.index('DOCUMENTATION = r"""') + len('DOCUMENTATION = r"""')
    return yaml.safe_load(text[start : text.index('"""', start)])


def test_the_postgres_group_is_exactly_the_modules_with_top_level_connection_options() -> None:
    with open(os.path.join(ROOT, "meta", "runtime.yml"), encoding="utf-8") as handle:
        group = set(yaml.safe_load(handle)["action_groups"]["postgres"])
    takes_connection = set()
    for path in glob.glob(os.path.join(ROOT, "plugins", "modules", "*.py")):
        doc = _documentation(path)
        if "pgshift.ops.connection" in (doc.get("extends_documentation_fragment") or []):
            takes_connection.add(doc["module"])
    assert takes_connection - group == set(), "add to meta/runtime.yml action_groups.postgres"
    assert group - takes_connection == set(), "these group members do not take the top-level connection options"


def test_modules_document_their_attributes_and_group_members_their_action_group() -> None:
    """Every module states check_mode and diff_mode support through the pgshift.ops.attributes fragment; exactly the
    members of the postgres group document the action_group attribute (its fragment names the group)."""
    with open(os.path.join(ROOT, "meta", "runtime.yml"), encoding="utf-8") as handle:
        group = set(yaml.safe_load(handle)["action_groups"]["postgres"])
    from ansible_collections.pgshift.ops.plugins.doc_fragments.attributes import ModuleDocFragment

    membership = yaml.safe_load(ModuleDocFragment.ACTION_GROUP)["attributes"]["action_group"]["membership"]
    assert membership == ["pgshift.ops.postgres"]
    for path in glob.glob(os.path.join(ROOT, "plugins", "modules", "*.py")):
        doc = _documentation(path)
        fragments = doc.get("extends_documentation_fragment") or []
        assert "pgshift.ops.attributes" in fragments, doc["module"]
        attributes = doc.get("attributes") or {}
        for name in ("check_mode", "diff_mode"):
            assert attributes.get(name, {}).get("support") in ("full", "partial", "none"), (doc["module"], name)
        in_group = "pgshift.ops.attributes.action_group" in fragments
        assert in_group == (doc["module"] in group), doc["module"]


def test_the_group_takes_community_postgresql_names() -> None:
    """module_defaults for the group may use the aliases: every member's options are the connection layer's."""
    from ansible_collections.pgshift.ops.plugins.module_utils._connection import connection_argument_spec

    spec = connection_argument_spec()
    for alias in ("login_host", "login_unix_socket", "login_user", "login_password", "login_port", "login_db"):
        assert any(alias in option.get("aliases", []) for option in spec.values()), alias
    for alias in ("ssl_mode", "ca_cert", "ssl_cert", "ssl_key"):
        assert any(alias in option.get("aliases", []) for option in spec.values()), alias
    assert "connect_params" in spec
