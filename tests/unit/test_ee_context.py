"""The execution environment's build context, as `ansible-builder create` writes it (no container engine needed).

The test builds the collection tarball from the files git knows (as `make ee-collection` does), lays it out beside a
copy of execution-environment.yml, runs the real `ansible-builder create`, and checks what an image build would get:
the Containerfile, the collection, its Python and system requirements as ansible-builder's own introspection (the
script that runs inside the image build) reads them, and node-pg-migrate pinned by the package lock.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import typing as t

import pytest
import yaml
from bindep.depends import Depends  # type: ignore[import-untyped]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
SUPPORTED_MAJORS = [14, 15, 16, 17, 18]


def tracked_files() -> t.List[str]:
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    return [f for f in out.split("\0") if f and "node_modules/" not in f and os.path.isfile(os.path.join(ROOT, f))]


def run(argv: t.Sequence[str], cwd: str) -> str:
    env = dict(os.environ, ANSIBLE_HOME=os.path.join(cwd, ".ansible-home"))
    env.pop("ANSIBLE_CONFIG", None)
    proc = subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> t.Dict[str, str]:
    base = str(tmp_path_factory.mktemp("ee"))
    source = os.path.join(base, "src", "ansible_collections", "pgshift", "ops")
    for rel in tracked_files():
        os.makedirs(os.path.dirname(os.path.join(source, rel)), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), os.path.join(source, rel))
    run([os.path.join(VENV_BIN, "ansible-galaxy"), "collection", "build", "--output-path", base, source], base)
    # the layout execution-environment.yml expects, relative to itself (make ee-context writes the same)
    work = os.path.join(base, "work")
    os.makedirs(os.path.join(work, ".build", "ee", "collections"))
    os.makedirs(os.path.join(work, "tools", "node"))
    built = [f for f in os.listdir(base) if f.startswith("pgshift-ops-") and f.endswith(".tar.gz")]
    assert len(built) == 1
    shutil.copy(os.path.join(base, built[0]), os.path.join(work, ".build", "ee", "collections", "pgshift-ops.tar.gz"))
    for name in ("package.json", "package-lock.json"):
        shutil.copy(os.path.join(ROOT, "tools", "node", name), os.path.join(work, "tools", "node", name))
    shutil.copy(os.path.join(ROOT, "execution-environment.yml"), work)
    shutil.copy(os.path.join(ROOT, "requirements.txt"), work)
    out = os.path.join(base, "context")
    run(
        [
            os.path.join(VENV_BIN, "ansible-builder"),
            "create",
            "-f",
            "execution-environment.yml",
            "-c",
            out,
            "--output-filename",
            "Containerfile",
        ],
        work,
    )
    return {"base": base, "context": out}


def read(path: str) -> str:
    with open(path) as handle:
        return handle.read()


def requirement_pins(path: str) -> t.Dict[str, str]:
    pins = {}
    for raw in read(path).splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("-r "):
            pins.update(requirement_pins(os.path.join(os.path.dirname(path), line[3:].strip())))
        elif line:
            name, _sep, version = line.partition("==")
            pins[name.lower()] = version
    return pins


def test_definition_is_schema_version_3() -> None:
    with open(os.path.join(ROOT, "execution-environment.yml")) as handle:
        definition = yaml.safe_load(handle)
    assert definition["version"] == 3
    deps = definition["dependencies"]
    pins = requirement_pins(os.path.join(ROOT, "requirements.txt"))
    assert deps["ansible_core"]["package_pip"] == "ansible-core==" + pins["ansible-core"]
    # ansible-runner runs jobs in the image and tests here; users' controllers do not need it
    assert "ansible-runner" not in pins
    dev = requirement_pins(os.path.join(ROOT, "requirements-dev.txt"))
    assert deps["ansible_runner"]["package_pip"] == "ansible-runner==" + dev["ansible-runner"]
    # the image gets the runtime requirements, never the development ones
    assert deps["python"] == "requirements.txt"
    with open(os.path.join(ROOT, "meta", "execution-environment.yml")) as handle:
        meta = yaml.safe_load(handle)
    assert meta["dependencies"] == {"python": "meta/ee-requirements.txt", "system": "meta/ee-bindep.txt"}


def test_containerfile(context: t.Dict[str, str]) -> None:
    text = read(os.path.join(context["context"], "Containerfile"))
    assert 'ARG EE_BASE_IMAGE="quay.io/centos/centos:stream9"' in text
    assert re.search(r'ARG ANSIBLE_INSTALL_REFS="ansible-core==2\.19\.\d+ ansible-runner==2\.4\.3"', text)
    assert 'ARG PYCMD="/usr/bin/python3.11"' in text
    # the PGDG repository is set up in the base stage, which the final stage (where bindep installs) derives from
    base_stage = text.split("FROM base AS galaxy")[0]
    assert "download.postgresql.org/pub/repos/yum/reporpms/EL-9-" in base_stage
    assert "module disable postgresql" in base_stage and "module enable nodejs:20" in base_stage
    assert re.search(r"FROM base AS final", text)
    final = text.split("FROM base AS final")[1]
    assert "/output/scripts/install-from-bindep" in final
    # the builder stage reads the requirements of every installed collection (see the introspection test)
    assert (
        "introspect.py introspect --user-pip=requirements.txt --write-bindep=/tmp/src/bindep.txt"
        " --write-pip=/tmp/src/requirements.txt" in text
    )
    assert read(os.path.join(context["context"], "_build", "requirements.txt")) == read(
        os.path.join(ROOT, "requirements.txt")
    ), "the image installs the runtime requirements file as it is"
    assert "COPY _build/node /opt/pgshift/node" in final
    assert "ENV ANSIBLE_CALLBACKS_ENABLED=pgshift.ops.progress" in final
    assert "npm ci --omit=dev" in final and "/usr/local/bin/node-pg-migrate" in final
    assert "ansible-galaxy collection install $ANSIBLE_GALAXY_CLI_COLLECTION_OPTS -r requirements.yml" in text
    assert 'ANSIBLE_GALAXY_CLI_COLLECTION_OPTS="--offline"' in text


def test_collection_in_the_context(context: t.Dict[str, str]) -> None:
    build = os.path.join(context["context"], "_build")
    with open(os.path.join(build, "requirements.yml")) as handle:
        galaxy = yaml.safe_load(handle)
    # relative to WORKDIR /build, where the galaxy stage copies _build/
    assert galaxy["collections"] == [{"name": "collections/pgshift-ops.tar.gz", "type": "file"}]
    tarball = os.path.join(build, "collections", "pgshift-ops.tar.gz")
    with tarfile.open(tarball) as archive:
        names = archive.getnames()
        manifest = json.load(t.cast(t.IO[bytes], archive.extractfile("MANIFEST.json")))
    assert manifest["collection_info"]["namespace"] == "pgshift" and manifest["collection_info"]["name"] == "ops"
    modules = sorted(f for f in os.listdir(os.path.join(ROOT, "plugins", "modules")) if f.endswith(".py"))
    for module in modules:
        assert "plugins/modules/" + module in names, module
    for needed in (
        "meta/runtime.yml",
        "meta/execution-environment.yml",
        "meta/ee-requirements.txt",
        "meta/ee-bindep.txt",
        "plugins/callback/progress.py",
        "plugins/doc_fragments/connection.py",
        "playbooks/prod_restore.yml",
        "playbooks/rollback.yml",
        "roles/recover/tasks/main.yml",
    ):
        assert needed in names, needed
    assert not [n for n in names if "node_modules" in n or n.startswith((".venv", ".build", ".local", "artifacts"))]
    # only what users run: no tests, benchmarks, repository tooling, sample app, local inventory, molecule or caches
    assert "COPYING" in names
    left_out = ("tests", "bench", ".github", ".ci", "mk", "Makefile", "tools", "sample_app", "inventories/local")
    assert not [n for n in names if n in left_out or n.startswith(tuple(p + "/" for p in left_out))]
    assert not [n for n in names if n.startswith("examples/")], "the example user project is not in the tarball"
    assert not [n for n in names if "/molecule/" in n or "_cache" in n or "__pycache__" in n]
    for name in ("package.json", "package-lock.json"):
        assert read(os.path.join(build, "node", name)) == read(os.path.join(ROOT, "tools", "node", name))
    lock = json.loads(read(os.path.join(build, "node", "package-lock.json")))
    assert lock["packages"]["node_modules/node-pg-migrate"]["version"] == "9.0.0"


def test_introspection_finds_what_the_collection_needs(context: t.Dict[str, str]) -> None:
    """The galaxy stage's install command and ansible-builder's introspect script, as the image build runs them."""
    build = os.path.join(context["context"], "_build")
    collections = os.path.join(context["base"], "installed")
    # the galaxy stage: in /build (the context's _build/), offline, from requirements.yml
    run(
        [
            os.path.join(VENV_BIN, "ansible-galaxy"),
            "collection",
            "install",
            "--offline",
            "-r",
            "requirements.yml",
            "--collections-path",
            collections,
        ],
        build,
    )
    assert os.path.isfile(os.path.join(collections, "ansible_collections", "pgshift", "ops", "MANIFEST.json"))
    pip_out = os.path.join(context["base"], "pip.txt")
    bindep_out = os.path.join(context["base"], "bindep.txt")
    run(
        [
            sys.executable,
            os.path.join(build, "scripts", "introspect.py"),
            "introspect",
            "--write-pip",
            pip_out,
            "--write-bindep",
            bindep_out,
            collections,
        ],
        context["base"],
    )
    python = read(pip_out)
    pins = requirement_pins(os.path.join(ROOT, "requirements.txt"))
    for package in ("psycopg2-binary", "pglast", "squawk-cli"):
        assert "%s==%s  # from collection pgshift.ops" % (package, pins[package.lower()]) in python, python
    # ansible-builder leaves out what ansible-core itself requires (PyYAML comes with ansible-core in the image)
    assert "PyYAML" not in python
    system = Depends(read(bindep_out))
    rpm = [rule[0] for rule in system.active_rules(["platform:rpm"])]
    assert rpm == ["postgresql%d" % v for v in SUPPORTED_MAJORS] + ["nodejs", "npm"], rpm
    dpkg = [rule[0] for rule in system.active_rules(["platform:dpkg"])]
    assert dpkg == ["postgresql-client-%d" % v for v in SUPPORTED_MAJORS] + ["nodejs", "npm"], dpkg

    # and as the image build runs it, with the runtime requirements file (--user-pip): every package pinned to one
    # version, the collection's pin and requirements.txt's the same (two versions of one package fail pip in the image)
    merged = os.path.join(context["base"], "pip-merged.txt")
    run(
        [
            sys.executable,
            os.path.join(build, "scripts", "introspect.py"),
            "introspect",
            "--user-pip",
            os.path.join(build, "requirements.txt"),
            "--write-pip",
            merged,
            collections,
        ],
        context["base"],
    )
    lines = [line.split("#", 1)[0].strip() for line in read(merged).splitlines()]
    versions: t.Dict[str, t.Set[str]] = {}
    for line in lines:
        if line:
            name, _sep, version = line.partition("==")
            versions.setdefault(name.lower(), set()).add(version)
    assert all(len(v) == 1 for v in versions.values()), read(merged)
    for package, version in requirement_pins(os.path.join(build, "requirements.txt")).items():
        if package not in ("ansible-core", "pyyaml"):  # ansible-builder installs these itself (base stage)
            assert package + "==" + version in [line.lower() for line in lines], (package, read(merged))


def test_python_requirements_cover_the_imports() -> None:
    """Every third-party package the plugins import is in meta/ee-requirements.txt, pinned as in requirements.txt."""
    imported: t.Set[str] = set()
    for folder, _dirs, files in os.walk(os.path.join(ROOT, "plugins")):
        for name in files:
            if name.endswith(".py"):
                text = read(os.path.join(folder, name))
                imported.update(re.findall(r"^\s*(?:import|from) (psycopg2|pglast|yaml)\b", text, re.M))
    packages = {"psycopg2": "psycopg2-binary", "pglast": "pglast", "yaml": "pyyaml"}
    ee = requirement_pins(os.path.join(ROOT, "meta", "ee-requirements.txt"))
    pins = requirement_pins(os.path.join(ROOT, "requirements.txt"))
    assert imported, "the plugins import psycopg2 at least"
    for module in imported:
        assert ee.get(packages[module]) == pins[packages[module]], module
    for package, version in ee.items():
        assert pins.get(package) == version, package
