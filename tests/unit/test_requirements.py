"""requirements.txt (run time: users' controllers, the execution environment) and requirements-dev.txt (make venv).

Both are pinned and closed: every package that a pinned package requires (its metadata, markers evaluated for this
Python) is pinned in the same file (the runtime file) or in either (the dev file), at the version installed here;
`make venv` installs the dev file, which includes the runtime one, and reinstalls when either changes.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import typing as t

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNTIME = os.path.join(ROOT, "requirements.txt")
DEV = os.path.join(ROOT, "requirements-dev.txt")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)$")


def lines(path: str) -> t.List[str]:
    with open(path, encoding="utf-8") as handle:
        return [raw.split("#", 1)[0].strip() for raw in handle if raw.split("#", 1)[0].strip()]


def pins(path: str) -> t.Dict[str, str]:
    found: t.Dict[str, str] = {}
    for line in lines(path):
        if line.startswith("-r "):
            continue
        match = PIN.match(line)
        assert match, "%s: not pinned with ==: %r" % (os.path.basename(path), line)
        name = canonicalize_name(match.group(1))
        assert name not in found, "%s: %s twice" % (os.path.basename(path), name)
        found[name] = match.group(2)
    return found


def requires(name: str) -> t.Set[str]:
    needed: t.Set[str] = set()
    for spec in importlib.metadata.requires(name) or []:
        req = Requirement(spec)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            needed.add(canonicalize_name(req.name))
    return needed


def test_both_files_are_pinned_and_split() -> None:
    runtime, dev = pins(RUNTIME), pins(DEV)
    assert lines(DEV).count("-r requirements.txt") == 1, "the dev file includes the runtime file"
    assert not set(runtime) & set(dev), "a package is pinned in one file only"
    for package in ("ansible-core", "psycopg2-binary", "pglast", "squawk-cli", "pyyaml"):
        assert package in runtime, package
    # what only develops or tests pgshift stays out of what users and the image install
    dev_only = ("pytest", "ruff", "mypy", "ansible-lint", "molecule", "ansible-builder", "awxkit", "ansible-runner")
    for package in dev_only:
        assert package in dev and package not in runtime, package
    assert "antsibull-changelog" in dev


@pytest.mark.parametrize("path", [RUNTIME, DEV])
def test_pins_are_installed_and_closed(path: str) -> None:
    """The venv (make venv) holds exactly these versions, and nothing a pinned package needs is left unpinned."""
    closed = pins(RUNTIME) if path == RUNTIME else {**pins(RUNTIME), **pins(DEV)}
    for name, version in closed.items():
        assert importlib.metadata.version(name) == version, (name, "make venv installs the pinned version")
        missing = requires(name) - set(closed)
        assert not missing, "%s needs %s, not pinned in %s" % (name, sorted(missing), os.path.basename(path))


def make_n(folder: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKEFLAGS", "MFLAGS"))}
    proc = subprocess.run(
        ["make", "-n", "--no-print-directory", "venv"], cwd=folder, env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_make_venv_installs_the_dev_file_and_follows_both(tmp_path: t.Any) -> None:
    """A fresh clone's `make venv` (behind demo and test) installs both files; a change to either reinstalls."""
    clone = str(tmp_path / "clone")
    os.makedirs(clone)
    for name in ("Makefile", "requirements.txt", "requirements-dev.txt"):
        shutil.copy2(os.path.join(ROOT, name), clone)
    shutil.copytree(os.path.join(ROOT, "mk"), os.path.join(clone, "mk"))
    fresh = make_n(clone)
    assert "pip install --quiet --disable-pip-version-check -r requirements-dev.txt" in fresh
    os.makedirs(os.path.join(clone, ".venv"))
    stamp = os.path.join(clone, ".venv", ".installed")
    for changed in ("requirements.txt", "requirements-dev.txt"):
        with open(stamp, "w"):
            pass
        os.utime(os.path.join(clone, "requirements.txt"), (1_000_000_000, 1_000_000_000))
        os.utime(os.path.join(clone, "requirements-dev.txt"), (1_000_000_000, 1_000_000_000))
        assert "pip install" not in make_n(clone), "an up-to-date venv is not reinstalled"
        os.utime(os.path.join(clone, changed), None)
        os.utime(stamp, (1_000_000_001, 1_000_000_001))
        assert "-r requirements-dev.txt" in make_n(clone), "%s changed: make venv reinstalls" % changed
