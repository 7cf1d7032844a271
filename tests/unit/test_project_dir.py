"""lookup('pgshift.ops.project_dir'): the base of every path default is the user's project, never the collection."""

from __future__ import annotations

import os

import pytest

from ansible_collections.pgshift.ops.plugins.lookup import project_dir


def test_the_working_directory_without_ansible_config(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANSIBLE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    lookup = project_dir.LookupModule()
    assert lookup.run([]) == [str(tmp_path)]
    assert lookup.run(["artifacts", "artifacts/runs/last-run.json"]) == [
        os.path.join(str(tmp_path), "artifacts"),
        os.path.join(str(tmp_path), "artifacts", "runs", "last-run.json"),
    ]


def test_the_folder_of_the_ansible_cfg_named_by_ansible_config(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "ansible.cfg").write_text("[defaults]\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("ANSIBLE_CONFIG", str(project / "ansible.cfg"))
    assert project_dir.LookupModule().run(["artifacts"]) == [str(project / "artifacts")]
    # ANSIBLE_CONFIG may name the folder itself
    monkeypatch.setenv("ANSIBLE_CONFIG", str(project))
    assert project_dir.project_dir() == str(project)


def test_an_absolute_term_stays_as_it_is(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANSIBLE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert project_dir.LookupModule().run(["/srv/pgshift/artifacts"]) == ["/srv/pgshift/artifacts"]
