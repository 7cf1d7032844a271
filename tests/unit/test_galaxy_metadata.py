"""galaxy.yml as Galaxy shows it: real links from one repository, valid tags, the licence file it names."""

from __future__ import annotations

import os
import re
import typing as t

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def galaxy() -> t.Dict[str, t.Any]:
    with open(os.path.join(ROOT, "galaxy.yml"), encoding="utf-8") as handle:
        return t.cast(t.Dict[str, t.Any], yaml.safe_load(handle))


def test_links_are_real_and_of_one_repository() -> None:
    meta = galaxy()
    repository = meta["repository"]
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repository), repository
    for key in ("documentation", "homepage", "issues"):
        assert meta[key] == repository or meta[key].startswith(repository + "/"), (key, meta[key])
    assert meta["issues"] == repository + "/issues"
    links = " ".join(str(meta[k]) for k in ("repository", "documentation", "homepage", "issues"))
    assert not re.search(r"example\.(invalid|com|org)|placeholder|TODO|<|>", links), links


def test_tags_license_and_dependencies() -> None:
    meta = galaxy()
    tags = meta["tags"]
    # Galaxy's rules: lowercase letters, digits and underscores, at most 64 characters, at most 20 tags
    assert tags and len(tags) <= 20 and len(set(tags)) == len(tags)
    assert all(re.fullmatch(r"[a-z0-9_]{1,64}", tag) for tag in tags), tags
    assert "postgresql" in tags and "database" in tags
    assert meta["license"] == ["GPL-3.0-or-later"] and os.path.isfile(os.path.join(ROOT, "COPYING"))
    # everything pgshift.ops uses is ansible.builtin or its own: no collection dependency to install
    assert meta["dependencies"] == {}
    used = set()
    for folder in ("plugins", "roles", "playbooks"):
        for here, _dirs, files in os.walk(os.path.join(ROOT, folder)):
            for name in files:
                if name.endswith((".yml", ".yaml")):
                    with open(os.path.join(here, name), encoding="utf-8") as handle:
                        text = handle.read()
                    # the collections of task keys (modules, import_*, include_*) in playbooks and roles
                    used |= set(re.findall(r"^\s*-?\s*([a-z_]+\.[a-z_]+)\.[a-z_]+:", text, re.M))
    assert "ansible.builtin" in used and "pgshift.ops" in used
    assert used <= {"ansible.builtin", "pgshift.ops"}, used - {"ansible.builtin", "pgshift.ops"}
