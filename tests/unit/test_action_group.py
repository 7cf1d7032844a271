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
