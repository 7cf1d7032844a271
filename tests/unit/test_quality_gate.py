"""Tests of the quality gate's own moving parts (mk/quality.mk, tools/ansible_test_get_pip.py, lint settings).

`make sanity` works offline only because of a stand-in for the pip bootstrap script that ansible-test downloads;
these tests check that the stand-in really bootstraps pip in an empty virtualenv, and that it sits under the file
name the pinned ansible-test looks for (an ansible-core upgrade that changes the pip version must not silently
break `make sanity`).
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import types
import typing as t

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STAND_IN = os.path.join(ROOT, "tools", "ansible_test_get_pip.py")


def _read(*parts: str) -> str:
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as handle:
        return handle.read()


def test_stand_in_has_the_file_name_the_pinned_ansible_test_wants() -> None:
    from ansible_test._internal import python_requirements  # noqa: PLC2701 - the fact lives only there

    pip_version = python_requirements.get_venv_packages(types.SimpleNamespace(version="3.11"))["pip"]
    wanted = "get_pip_%s.py" % pip_version.replace(".", "_")
    targets = re.findall(r"^SANITY_GET_PIP := .*/(get_pip_[0-9_]+\.py)$", _read("mk", "quality.mk"), re.MULTILINE)
    assert targets == [wanted]


def _bundled_pip_wheel() -> str:
    import ensurepip

    candidates = glob.glob(os.path.join(os.path.dirname(ensurepip.__file__), "_bundled", "pip-*.whl"))
    candidates += glob.glob("/usr/share/python-wheels/pip-*.whl")
    if not candidates:
        pytest.skip("this Python ships no pip wheel for ensurepip (ensurepip would not work either)")
    return sorted(candidates)[-1]


@pytest.mark.slow  # a virtualenv and two bootstraps: 10 to 20 s on a busy 2-core machine
def test_stand_in_bootstraps_pip_in_an_empty_virtualenv_offline(tmp_path: t.Any) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    assert subprocess.run([python, "-m", "pip", "--version"], capture_output=True, check=False).returncode != 0
    env = dict(os.environ, PIP_CONFIG_FILE=os.devnull)

    # A package that cannot be installed: ansible-test must see the failure, not a virtualenv without its packages.
    failed = subprocess.run(
        [python, STAND_IN, "--no-index", "--find-links", str(tmp_path), "no-such-package==1"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert failed.returncode != 0
    assert "no-such-package" in failed.stdout + failed.stderr

    wheel = _bundled_pip_wheel()
    version = os.path.basename(wheel).split("-")[1]
    # The arguments ansible-test's bootstrap passes (get-pip.py options included), with a local index so that the
    # test needs no network: --no-setuptools/--no-wheel must be dropped, or pip install would reject them.
    args = [
        "--disable-pip-version-check",
        "--no-index",
        "--find-links",
        os.path.dirname(wheel),
        "pip==%s" % version,
        "--no-setuptools",
        "--no-wheel",
    ]
    run = subprocess.run([python, STAND_IN, *args], capture_output=True, text=True, env=env, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    shown = subprocess.run([python, "-m", "pip", "--version"], capture_output=True, text=True, check=True).stdout
    assert shown.startswith("pip %s from %s" % (version, venv))


def test_ansible_lint_is_offline_with_the_production_profile() -> None:
    settings = yaml.safe_load(_read(".ansible-lint"))
    assert settings["profile"] == "production"
    assert settings["offline"] is True
    assert {".venv/", ".build/", ".cache/", "node_modules/"} <= set(settings["exclude_paths"])


def test_yamllint_settings_are_the_ones_ansible_lint_requires() -> None:
    rules = yaml.safe_load(_read(".yamllint"))["rules"]
    assert rules["comments"]["min-spaces-from-content"] == 1
    assert rules["comments-indentation"] is False
    assert rules["braces"]["max-spaces-inside"] == 1
    assert rules["octal-values"] == {"forbid-implicit-octal": True, "forbid-explicit-octal": True}
    assert rules["truthy"]["allowed-values"] == ["true", "false"]


def test_every_changelog_fragment_uses_a_configured_section() -> None:
    config = yaml.safe_load(_read("changelogs", "config.yaml"))
    sections = {name for name, _title in config["sections"]}
    sections |= {config["prelude_section_name"], config["trivial_section_name"]}
    fragments = sorted(glob.glob(os.path.join(ROOT, "changelogs", "fragments", "*.yml")))
    assert fragments
    for path in fragments:
        with open(path, encoding="utf-8") as handle:
            fragment = yaml.safe_load(handle)
        assert isinstance(fragment, dict), path
        assert set(fragment) <= sections, path
        for section, entries in fragment.items():
            if section == config["prelude_section_name"]:
                assert isinstance(entries, str), path
            else:
                assert isinstance(entries, list) and all(isinstance(e, str) and e for e in entries), path
