#!/usr/bin/env python
"""Lint the changelog fragments and render the next release's notes, as `antsibull-changelog release` will.

    tools/changelog_check.py [--root ROOT] [--out FILE]

antsibull-changelog's own `lint` (every fragment) and `lint-changelog-yaml` (changelogs/changelog.yaml) run first.
Then the collection (galaxy.yml, meta/, plugins/, changelogs/) is copied to a temporary
ansible_collections/pgshift/ops, where `antsibull-changelog release` renders the release of galaxy.yml's version
(it lists the new modules and plugins itself, through ansible-doc). The rendered notes must have a release summary
and no entry twice: no fragment line repeated, and no fragment announcing a module or plugin that the generated
"New Modules" / "New Plugins" lists already name. Exit status 1 with the problems listed; --out keeps the notes.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import typing as t

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(os.path.abspath(sys.executable))
COPIED = ("galaxy.yml", "meta", "plugins", "changelogs")


def tool(name: str) -> str:
    found = os.path.join(BIN, name)
    return found if os.path.exists(found) else name


def run(argv: t.Sequence[str], cwd: str, env: t.Optional[t.Dict[str, str]] = None) -> str:
    proc = subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError("%s failed (rc %d):\n%s%s" % (" ".join(argv), proc.returncode, proc.stdout, proc.stderr))
    return proc.stdout + proc.stderr


def lint(root: str) -> None:
    run([tool("antsibull-changelog"), "lint"], root)
    run([tool("antsibull-changelog"), "lint-changelog-yaml", os.path.join("changelogs", "changelog.yaml")], root)


def render(root: str) -> str:
    """The release notes of galaxy.yml's version, rendered in a copy (the fragments of root are left alone)."""
    with open(os.path.join(root, "galaxy.yml"), encoding="utf-8") as handle:
        galaxy = yaml.safe_load(handle)
    with tempfile.TemporaryDirectory(prefix="pgshift-changelog-") as tmp:
        copy = os.path.join(tmp, "ansible_collections", galaxy["namespace"], galaxy["name"])
        os.makedirs(copy)
        for name in COPIED:
            source = os.path.join(root, name)
            if os.path.isdir(source):
                shutil.copytree(source, os.path.join(copy, name), ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source, os.path.join(copy, name))
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        env.update(
            ANSIBLE_COLLECTIONS_PATH=tmp,
            ANSIBLE_HOME=os.path.join(tmp, "ansible-home"),
            PATH=BIN + os.pathsep + env.get("PATH", ""),
        )
        run([tool("antsibull-changelog"), "release", "--version", str(galaxy["version"])], copy, env)
        with open(os.path.join(copy, "CHANGELOG.md"), encoding="utf-8") as handle:
            return handle.read()


def unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", re.sub(r"</?code>", "", text))


def sections(notes: str) -> t.Dict[str, t.List[str]]:
    """Entries ("* ...") per section heading of the rendered notes, unescaped."""
    found: t.Dict[str, t.List[str]] = {}
    current = ""
    for line in notes.splitlines():
        heading = re.match(r"^#{3,4} (.+)$", line)
        if heading:
            current = unescape(heading.group(1)).strip()
            found.setdefault(current, [])
        elif line.startswith("* ") and current:
            found[current].append(unescape(line[2:]).strip())
    return found


def problems(notes: str) -> t.List[str]:
    found = sections(notes)
    wrong = []
    if not re.search(r"^### Release Summary\n\n\S", notes, re.M):
        wrong.append("no release summary (a fragment with release_summary)")
    generated = {"New Modules", "Callback", "Filter", "Lookup", "Action", "Inventory", "Connection", "Test"}
    new_names = set()
    for title, entries in found.items():
        if title in generated:
            for entry in entries:
                full = entry.split(" - ", 1)[0].strip()
                new_names.add(full.rsplit(".", 1)[-1])
    seen: t.Dict[str, str] = {}
    for title, entries in found.items():
        if title in generated:
            continue
        for entry in entries:
            if entry in seen:
                wrong.append("entry twice (%s, %s): %s" % (seen[entry], title, entry[:100]))
            seen.setdefault(entry, title)
            subject = entry.split(" - ", 1)
            if len(subject) == 2 and re.match(r"new (module|\w+ plugin)\b", subject[1]):
                names = {s.strip() for s in subject[0].split(",")}
                for name in names & new_names:
                    wrong.append("%s is announced by a fragment and listed as new by antsibull-changelog" % name)
    return wrong


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=ROOT)
    parser.add_argument("--out")
    args = parser.parse_args()
    try:
        lint(args.root)
        notes = render(args.root)
    except RuntimeError as exc:
        print(exc)
        return 1
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(notes)
    wrong = problems(notes)
    for line in wrong:
        print("changelog: " + line)
    if not wrong:
        entries = sum(len(v) for v in sections(notes).values())
        print("changelog: fragments lint clean; the release renders with a summary, %d entries, none twice" % entries)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
