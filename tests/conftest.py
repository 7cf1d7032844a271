"""Shared fixtures: real PostgreSQL clusters started and stopped by the harness, and real ansible-playbook runs.

- ``pg``: one throwaway cluster for the session (free port, temp folder); use ``new_db`` for an empty database of your
  own in it, so tests do not see each other's objects.
- ``pg2``: a second cluster, for cross-cluster tests.
- ``world``: a throwaway local world (dev, staging, prod clusters, the shop and its API), reset per test module.
- ``run_playbook``: runs ansible-playbook as a separate process with this repository's ansible.cfg.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import typing as t
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, ".build", "collections"))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import pgworld  # noqa: E402

# The release's existing tests pin the offline mode they were written for; the online mode (pgshift_mode, default
# auto, which the local world makes possible) has its own tests, which ask for it explicitly (pgshift_mode=online).
os.environ.setdefault("PGSHIFT_MODE", "offline")

# Faults tried by tests/integration/test_faults.py, printed as a table at the end of the run.
FAULT_RESULTS: t.List[t.Dict[str, str]] = []

SHARED = os.path.abspath(os.path.join(ROOT, "..", "shared"))
PAGILA = os.path.join(SHARED, "data", "pagila")
VENV_BIN = os.path.join(ROOT, ".venv", "bin")


def _tmp_base(prefix: str) -> str:
    base = tempfile.mkdtemp(prefix=prefix)
    os.chmod(base, 0o755)  # noqa: S103 - the server runs as another OS user and must reach its cluster folder
    return base


@pytest.fixture(scope="session")
def pg() -> t.Iterator[pgworld.Cluster]:
    base = _tmp_base("pgshift-pg-")
    cluster = pgworld.Cluster("test", base, pgworld.free_port(), "pw-" + uuid.uuid4().hex)
    cluster.start()
    yield cluster
    cluster.destroy()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg2() -> t.Iterator[pgworld.Cluster]:
    base = _tmp_base("pgshift-pg2-")
    cluster = pgworld.Cluster("test2", base, pgworld.free_port(), "pw2-" + uuid.uuid4().hex)
    cluster.start()
    yield cluster
    cluster.destroy()
    shutil.rmtree(base, ignore_errors=True)


def create_database(cluster: pgworld.Cluster, name: t.Optional[str] = None) -> str:
    from psycopg2 import sql

    name = name or "t_" + uuid.uuid4().hex[:10]
    with contextlib.closing(cluster.connect()) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(sql.Identifier(name)))
    return name


@pytest.fixture
def new_db(pg: pgworld.Cluster) -> t.Iterator[t.Callable[..., str]]:
    """Factory: an empty database in the session cluster, dropped after the test."""
    from psycopg2 import sql

    made: t.List[str] = []

    def factory(name: t.Optional[str] = None) -> str:
        made.append(create_database(pg, name))
        return made[-1]

    yield factory
    with contextlib.closing(pg.connect()) as conn, conn.cursor() as cur:
        for name in made:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def world() -> t.Iterator[pgworld.World]:
    base = _tmp_base("pgshift-world-")
    w = pgworld.World(os.path.join(base, "world"))
    w.reset(scale=0.5)
    yield w
    w.destroy()
    shutil.rmtree(base, ignore_errors=True)


def ansible_env(extra: t.Optional[t.Dict[str, str]] = None) -> t.Dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
            "ANSIBLE_HOME": os.path.join(ROOT, ".cache", "ansible"),
            "ANSIBLE_LOCAL_TEMP": os.path.join(ROOT, ".cache", "ansible", "tmp"),
            "ANSIBLE_COLLECTIONS_PATH": os.path.join(ROOT, ".build", "collections"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            # test runs keep their reports away from the last-run.json that `make demo` reads
            "PGSHIFT_REPORT_DIR": os.path.join(ROOT, ".cache", "test-runs"),
            "PATH": VENV_BIN + os.pathsep + env.get("PATH", ""),
        }
    )
    env.pop("PGPASSWORD", None)
    if extra:
        env.update(extra)
    if "PGSHIFT_WORLD" in env and "PGSHIFT_ARTIFACTS" not in env:
        # each throwaway world keeps its own run summary, plan and reports
        env["PGSHIFT_ARTIFACTS"] = os.path.join(os.path.dirname(env["PGSHIFT_WORLD"]), "artifacts")
    return env


class PlaybookRun(t.NamedTuple):
    rc: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture
def run_playbook() -> t.Callable[..., PlaybookRun]:
    def runner(
        playbook: str,
        inventory: str = "inventories/local",
        extra_vars: t.Optional[t.Dict[str, t.Any]] = None,
        args: t.Sequence[str] = (),
        env: t.Optional[t.Dict[str, str]] = None,
        timeout: int = 900,
    ) -> PlaybookRun:
        argv = [os.path.join(VENV_BIN, "ansible-playbook"), playbook, "-i", inventory]
        vars_file = None
        if extra_vars:
            # through a 0600 file, as secrets must be: ansible-playbook echoes its argv at -vvvv
            fd, vars_file = tempfile.mkstemp(prefix="pgshift-vars-", suffix=".json")
            with os.fdopen(fd, "w") as handle:
                json.dump(extra_vars, handle)
            argv += ["-e", "@" + vars_file]
        argv += list(args)
        proc = subprocess.run(
            argv, cwd=ROOT, env=ansible_env(env), capture_output=True, text=True, timeout=timeout, check=False
        )
        if vars_file:
            os.unlink(vars_file)
        return PlaybookRun(proc.returncode, proc.stdout, proc.stderr)

    return runner


def module_args_conn(cluster: pgworld.Cluster, database: str = "postgres") -> t.Dict[str, t.Any]:
    return cluster.conn(database)


def require_pagila() -> str:
    if not os.path.exists(os.path.join(PAGILA, "pagila-schema.sql")):
        pytest.skip("../shared/data/pagila is absent (only the project's own clone has it): Pagila tests skipped")
    return PAGILA


class ModuleRun(t.NamedTuple):
    rc: int
    result: t.Dict[str, t.Any]
    output: str

    @property
    def failed(self) -> bool:
        return bool(self.result.get("failed")) or self.rc != 0


@pytest.fixture
def run_module(tmp_path: t.Any) -> t.Callable[..., ModuleRun]:
    """Run one pgshift module for real, through ``ansible localhost -m`` (ad-hoc), and return its result.

    ``check=True`` adds --check, ``diff=True`` --diff, ``verbosity`` adds -v flags. The result comes from the
    ``tree`` callback; ``output`` is everything ansible printed (to assert that no secret appears).
    """

    def runner(
        module: str,
        args: t.Dict[str, t.Any],
        check: bool = False,
        diff: bool = False,
        verbosity: int = 0,
        env: t.Optional[t.Dict[str, str]] = None,
        timeout: int = 600,
    ) -> ModuleRun:
        tree = tmp_path / ("tree-" + uuid.uuid4().hex[:8])
        name = module if "." in module else "pgshift.ops." + module
        argv = [
            os.path.join(VENV_BIN, "ansible"),
            "localhost",
            "-c",
            "local",
            "-e",
            "ansible_python_interpreter=" + os.path.join(VENV_BIN, "python"),
            "-m",
            name,
            "-a",
            json.dumps(args),
            "-t",
            str(tree),
        ]
        if check:
            argv.append("--check")
        if diff:
            argv.append("--diff")
        if verbosity:
            argv.append("-" + "v" * verbosity)
        proc = subprocess.run(
            argv, cwd=ROOT, env=ansible_env(env), capture_output=True, text=True, timeout=timeout, check=False
        )
        result: t.Dict[str, t.Any] = {}
        result_file = tree / "localhost"
        if result_file.exists():
            result = json.loads(result_file.read_text())
        return ModuleRun(proc.returncode, result, proc.stdout + proc.stderr)

    return runner


def pytest_terminal_summary(terminalreporter: t.Any) -> None:
    """The table of faults tried (rows come back in the test reports, also from pytest-xdist workers).

    A row whose test failed is marked FAILED, a fault that was never injected NOT INJECTED (its test failed too); the
    last line then says the matrix failed, and counts only the faults injected and survived as such."""
    rows = [
        dict(value, test=outcome)
        for outcome in ("passed", "failed")
        for report in terminalreporter.stats.get(outcome, [])
        if getattr(report, "when", "call") == "call"
        for key, value in getattr(report, "user_properties", [])
        if key == "fault"
    ]
    if not rows:
        return
    terminalreporter.section("faults tried")
    terminalreporter.write_line("%-45s %-18s %-12s %s" % ("fault", "step", "outcome", "detail"))
    survived = 0
    bad = 0
    for row in rows:
        outcome = row["outcome"]
        if row["test"] != "passed" and outcome != "NOT INJECTED":
            outcome = "FAILED"
        if outcome in ("FAILED", "NOT INJECTED"):
            bad += 1
        else:
            survived += 1
        terminalreporter.write_line(
            "%-45s %-18s %-12s %s" % (row["fault"], row["step"], outcome, row["detail"]),
            red=outcome != row["outcome"] or outcome == "NOT INJECTED",
        )
    if bad:
        terminalreporter.write_line(
            "THE FAULT MATRIX FAILED: %d of %d faults not injected or not survived; %d injected and survived"
            % (bad, len(rows), survived),
            red=True,
            bold=True,
        )
    else:
        terminalreporter.write_line(
            "%d faults injected; production intact or released as intended after every one" % survived
        )
