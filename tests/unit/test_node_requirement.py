"""The README's Node.js requirement is what the pinned node-pg-migrate tree needs (tools/node/package-lock.json).

Every package of the lock that declares `engines.node` must accept the lowest version of each release line the
README names ("Node.js 20.19+ or 22.12+"), and the README's lowest version must be no lower than needed: one patch
release below it is refused by some package of the tree.
"""

from __future__ import annotations

import json
import os
import re
import typing as t

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
Version = t.Tuple[int, int, int]


def parse(text: str) -> Version:
    parts = [int(p) for p in re.findall(r"\d+", text)[:3]]
    return t.cast(Version, tuple(parts + [0] * (3 - len(parts))))


def comparator(term: str, version: Version) -> bool:
    """One npm semver comparator: >=, >, <=, <, =, ^, ~, x-ranges (20, 20.x, 6.*)."""
    match = re.fullmatch(r"(>=|<=|>|<|=|\^|~)?\s*v?([\dx*]+(?:\.[\dx*]+){0,2})", term)
    assert match, "unknown engines term %r" % term
    op, raw = match.group(1) or "", match.group(2)
    fixed = [p for p in raw.split(".") if p not in ("x", "*")]
    base = parse(".".join(fixed))
    if op in ("", "=") and len(fixed) < 3:
        return version[: len(fixed)] == base[: len(fixed)]
    if op == "^":
        upper = (base[0] + 1, 0, 0) if base[0] else (0, base[1] + 1, 0)
        return base <= version < upper
    if op == "~":
        return base <= version < (base[0], base[1] + 1, 0)
    return {">=": version >= base, ">": version > base, "<=": version <= base, "<": version < base}.get(
        op, version == base
    )


def satisfies(spec: str, version: Version) -> bool:
    for alternative in spec.split("||"):
        terms = re.findall(r"(?:>=|<=|>|<|=|\^|~)?\s*v?[\dx*]+(?:\.[\dx*]+){0,2}", alternative)
        if terms and all(comparator(term.strip(), version) for term in terms):
            return True
    return False


def engines() -> t.Dict[str, str]:
    with open(os.path.join(ROOT, "tools", "node", "package-lock.json"), encoding="utf-8") as handle:
        lock = json.load(handle)
    return {
        name: info["engines"]["node"]
        for name, info in lock["packages"].items()
        if isinstance(info.get("engines"), dict) and "node" in info["engines"]
    }


def readme_minimums() -> t.List[Version]:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    match = re.search(r"Node\.js ((?:\d+\.\d+\+)(?: or \d+\.\d+\+)*)", text)
    assert match, "the README states the Node.js version make test needs"
    return [parse(v) for v in re.findall(r"\d+\.\d+", match.group(1))]


def test_range_evaluator() -> None:
    assert satisfies("^20.19.0 || ^22.12.0 || >=23", (20, 19, 0)) and not satisfies("^20.19.0", (20, 18, 9))
    assert satisfies("18 || 20 || >=22", (20, 1, 0)) and not satisfies("18 || 20 || >=22", (21, 0, 0))
    assert satisfies(">=16 || 14 >=14.17", (14, 17, 0)) and not satisfies(">=16 || 14 >=14.17", (14, 16, 0))
    assert satisfies("6.* || 8.* || >= 10.*", (8, 1, 0)) and satisfies(">= 10.x", (20, 0, 0))


def test_readme_names_the_node_version_the_tree_needs() -> None:
    needs = engines()
    assert "node_modules/node-pg-migrate" in needs
    minimums = readme_minimums()
    for minimum in minimums:
        refused = {name: spec for name, spec in needs.items() if not satisfies(spec, minimum)}
        assert not refused, "Node.js %s is refused by %s" % (".".join(map(str, minimum)), refused)
    lowest = min(minimums)
    below = (lowest[0], lowest[1] - 1, 99) if lowest[1] else (lowest[0] - 1, 99, 99)
    assert [n for n, spec in needs.items() if not satisfies(spec, below)], "the README asks for more than needed"
