"""The changelog fragments as antsibull-changelog (pinned in requirements-dev.txt) lints and renders them.

tools/changelog_check.py (`make changelog-lint`, part of `make lint`) runs antsibull-changelog's lint, renders the
next release in a copy and refuses notes without a release summary or with an entry twice. Here: the repository's
fragments pass, and the check goes red on a copy with a duplicated entry, a fragment announcing a module that
antsibull-changelog lists as new by itself, no release summary, or a fragment antsibull-changelog's lint refuses.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import typing as t

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import changelog_check  # noqa: E402

FRAGMENTS = os.path.join(ROOT, "changelogs", "fragments")


def fragment_entries() -> t.List[str]:
    entries: t.List[str] = []
    for name in sorted(os.listdir(FRAGMENTS)):
        with open(os.path.join(FRAGMENTS, name), encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
        for section, items in data.items():
            if section not in ("release_summary", "trivial"):  # trivial entries are not rendered
                entries.extend(" ".join(item.replace("``", "").split()) for item in items)
    return entries


@pytest.fixture
def copy(tmp_path: t.Any) -> str:
    root = str(tmp_path / "root")
    os.makedirs(root)
    for name in changelog_check.COPIED:
        source = os.path.join(ROOT, name)
        if os.path.isdir(source):
            shutil.copytree(source, os.path.join(root, name), ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, os.path.join(root, name))
    return root


def write_fragment(root: str, name: str, data: t.Dict[str, t.Any]) -> None:
    with open(os.path.join(root, "changelogs", "fragments", name), "w", encoding="utf-8") as handle:
        yaml.safe_dump(data, handle)


def test_the_repository_changelog_lints_and_renders_clean(tmp_path: t.Any) -> None:
    out = str(tmp_path / "CHANGELOG.md")
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "changelog_check.py"), "--out", out],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(out, encoding="utf-8") as handle:
        notes = handle.read()
    with open(os.path.join(ROOT, "galaxy.yml"), encoding="utf-8") as handle:
        version = str(yaml.safe_load(handle)["version"])
    assert "## v" + version.replace(".", "\\.") in notes
    assert "### Release Summary" in notes and "### New Modules" in notes
    rendered = [e for entries in changelog_check.sections(notes).values() for e in entries]
    for entry in fragment_entries():
        # every fragment entry is in the notes exactly once
        assert sum(1 for r in rendered if " ".join(r.split()) == entry) == 1, entry[:120]
    modules = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "plugins", "modules")) if f.endswith(".py"))
    listed = changelog_check.sections(notes)["New Modules"]
    assert [e.split(" - ")[0] for e in listed] == ["pgshift.ops." + m for m in modules]


def test_a_duplicated_entry_is_refused(copy: str) -> None:
    write_fragment(copy, "again.yml", {"minor_changes": [fragment_entries()[0]]})
    wrong = changelog_check.problems(changelog_check.render(copy))
    assert [w for w in wrong if w.startswith("entry twice")], wrong


def test_a_fragment_announcing_a_new_module_is_refused(copy: str) -> None:
    write_fragment(copy, "swap-new.yml", {"minor_changes": ["swap - new module that swaps databases."]})
    wrong = changelog_check.problems(changelog_check.render(copy))
    assert wrong == ["swap is announced by a fragment and listed as new by antsibull-changelog"]


def test_notes_without_a_release_summary_are_refused(copy: str) -> None:
    os.remove(os.path.join(copy, "changelogs", "fragments", "release-summary.yml"))
    wrong = changelog_check.problems(changelog_check.render(copy))
    assert wrong == ["no release summary (a fragment with release_summary)"]


def test_antsibull_changelog_lint_runs(copy: str) -> None:
    write_fragment(copy, "bad.yml", {"minor_chnages": ["a section antsibull-changelog does not know."]})
    with pytest.raises(RuntimeError, match="minor_chnages"):
        changelog_check.lint(copy)
