"""pgshift as its users install it: examples/user-project with the built tarball, nothing from the repository.

The collection is built from the files git knows (as ``make ee-collection`` does) and installed with
``ansible-galaxy collection install`` into a temporary collections folder, the only one on ANSIBLE_COLLECTIONS_PATH.
From a copy of the example project (the working directory; no ANSIBLE_CONFIG, so the project's own ansible.cfg), the
playbooks run by FQCN against a throwaway world of local clusters whose ports the example's inventory reads from
``$PGSHIFT_WORLD/world.json``; the release role's password comes from the example's vault. The test:

- migrates dev (both migrations) and production (the first), then fills production with rows;
- crashes a release after its swap (a service script that SIGKILLs the controller's process group when started),
  then ``pgshift.ops.rollback`` puts production back as it was, with its original rows;
- plans the release (``--check``: plan.json) and runs it: the dev schema, the rows carried over (renamed column);
- runs ``pgshift.ops.drift_check``, then ``validate_migrations`` (the project's folder) and ``perf_check`` (refused:
  the project names no query set);
- every path written (plan, run summary, run reports, drift reports, backups) is in the project copy, and the
  installed collection is unchanged.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import typing as t

import pgworld
import pytest
import yaml
from conftest import ROOT, VENV_BIN, _tmp_base
from psycopg2 import sql

pytestmark = pytest.mark.slow

EXAMPLE = os.path.join(ROOT, "examples", "user-project")
VAULT_PASSWORD_FILE = "vault-password.txt"
FIRST_MIGRATION = "1710000000000_create-books"


def tracked_files() -> t.List[str]:
    """The files git knows (tracked, and untracked but not ignored), without what npm installs in the tree."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    return [f for f in out.split("\0") if f and "node_modules/" not in f and os.path.isfile(os.path.join(ROOT, f))]


def tree(folder: str) -> t.Dict[str, int]:
    """Every file below folder with its size (what a run could have added or changed)."""
    found = {}
    for here, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(here, name)
            found[os.path.relpath(path, folder)] = os.path.getsize(path)
    return found


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> t.Dict[str, str]:
    """The collection tarball built from the files git knows, installed into a collections folder of its own."""
    base = tmp_path_factory.mktemp("user-project")
    source = base / "src" / "ansible_collections" / "pgshift" / "ops"
    for rel in tracked_files():
        target = source / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), target)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_HOME=str(base / "ansible-home"), PATH=VENV_BIN + os.pathsep + os.environ["PATH"])
    galaxy = os.path.join(VENV_BIN, "ansible-galaxy")
    build = subprocess.run(
        [galaxy, "collection", "build", "--output-path", str(base), str(source)],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(base),
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (tarball,) = [str(base / f) for f in os.listdir(base) if f.startswith("pgshift-ops-") and f.endswith(".tar.gz")]
    collections = str(base / "collections")
    install = subprocess.run(
        [galaxy, "collection", "install", "--offline", "-p", collections, tarball],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(base),
        check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    ops = os.path.join(collections, "ansible_collections", "pgshift", "ops")
    assert os.path.isfile(os.path.join(ops, "MANIFEST.json")) and not os.path.islink(ops)
    assert not os.path.exists(os.path.join(ops, "sample_app")) and not os.path.exists(os.path.join(ops, "tools"))
    return {"base": str(base), "collections": collections, "ops": ops}


@pytest.fixture(scope="module")
def library_world() -> t.Iterator[pgworld.World]:
    """Throwaway local clusters (dev, staging, prod), no demo data: the example brings its own database."""
    base = _tmp_base("pgshift-userproj-")
    world = pgworld.World(os.path.join(base, "world"))
    world.up()
    yield world
    world.destroy()
    shutil.rmtree(base, ignore_errors=True)


class Project:
    """A copy of the example project and how its user runs ansible-playbook in it."""

    def __init__(self, base: str, collections: str, world: pgworld.World) -> None:
        self.dir = os.path.join(base, "project")
        shutil.copytree(EXAMPLE, self.dir)
        home = os.path.join(base, "ansible-home")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PGSHIFT_"))}
        self.env.pop("PGPASSWORD", None)
        self.env.update(
            {
                "ANSIBLE_COLLECTIONS_PATH": collections,  # only the installed tarball; the repository is not there
                "ANSIBLE_HOME": home,
                "ANSIBLE_LOCAL_TEMP": os.path.join(home, "tmp"),
                "ANSIBLE_NOCOLOR": "1",
                "PGSHIFT_WORLD": world.state,
                "PATH": VENV_BIN + os.pathsep + os.environ["PATH"],
            }
        )

    def argv(self, playbook: str, *args: str) -> t.List[str]:
        return [
            os.path.join(VENV_BIN, "ansible-playbook"),
            playbook,
            "--vault-password-file",
            VAULT_PASSWORD_FILE,
            *args,
        ]

    def run(self, playbook: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.argv(playbook, *args),
            cwd=self.dir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )

    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)


def vault_password(project: Project) -> str:
    """The release role's password, decrypted from the example's vault.yml (encrypt_string values) with ansible's
    own vault code and the example's vault password file."""
    from ansible.parsing.vault import VaultLib, VaultSecret

    class VaultLoader(yaml.SafeLoader):
        pass

    def ciphertext(loader: yaml.SafeLoader, node: yaml.Node) -> str:
        return str(loader.construct_scalar(t.cast(yaml.ScalarNode, node)))

    VaultLoader.add_constructor("!vault", ciphertext)
    with open(project.path(VAULT_PASSWORD_FILE), "rb") as secret:
        vault = VaultLib([("default", VaultSecret(secret.read().strip()))])
    with open(project.path("inventory", "group_vars", "all", "vault.yml"), encoding="utf-8") as handle:
        encrypted = yaml.load(handle, Loader=VaultLoader)  # noqa: S506 - a SafeLoader with one tag added
    values = {name: vault.decrypt(text).decode() for name, text in encrypted.items()}
    assert set(values) == {
        "pgshift_secret_prod_password",
        "pgshift_secret_dev_password",
        "pgshift_secret_staging_password",
    }
    assert len(set(values.values())) == 1, "the example's one release role"
    return values["pgshift_secret_prod_password"]


def books(cluster: pgworld.Cluster, author_column: str) -> t.List[t.Tuple[t.Any, ...]]:
    with contextlib.closing(cluster.connect("library")) as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT id, title, {}, added_at FROM books ORDER BY id").format(sql.Identifier(author_column))
        )
        return list(cur.fetchall())


def columns(cluster: pgworld.Cluster) -> t.List[str]:
    with contextlib.closing(cluster.connect("library")) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT a.attname FROM pg_attribute a WHERE a.attrelid = 'public.books'::regclass AND a.attnum > 0"
            " AND NOT a.attisdropped ORDER BY a.attnum"
        )
        return [r[0] for r in cur.fetchall()]


def journal(cluster: pgworld.Cluster) -> t.List[t.Tuple[str, str]]:
    with contextlib.closing(cluster.connect("pgshift")) as conn, conn.cursor() as cur:
        cur.execute("SELECT run_id, status FROM pgshift.runs WHERE database = 'library' ORDER BY started_at")
        return [(r[0], r[1]) for r in cur.fetchall()]


def killer_script(folder: str) -> str:
    """A service script whose start SIGKILLs the controller's whole process group: a crash right after the swap.

    The controller's pid comes from the service's environment (lookup pgshift.ops.controller_pid); it leads its own
    process group (the test starts it in a new session), so its workers die with it.
    """
    path = os.path.join(folder, "library-api.sh")
    marker = os.path.join(folder, "killed")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(
            "#!/usr/bin/env bash\n"
            'case "$1" in\n'
            '  stop) echo "library-api stopped" ;;\n'
            '  start|restart) touch "%s"; kill -KILL -- "-$CONTROLLER_PID" ;;\n'
            '  *) echo "library-api running" ;;\n'
            "esac\n" % marker
        )
    os.chmod(path, 0o700)
    return path


def test_example_project_releases_rolls_back_and_checks_drift_from_the_installed_tarball(
    installed: t.Dict[str, str], library_world: pgworld.World
) -> None:
    prod, dev, staging = (library_world.clusters[n] for n in ("prod", "dev", "staging"))
    project = Project(installed["base"], installed["collections"], library_world)
    collection_before = tree(installed["ops"])
    outputs: t.List[str] = []

    # the release role of the example's inventory, with the password its vault holds, and an empty database on each
    # cluster (the example names a staging database too: the drift check compares it with production)
    password = vault_password(project)
    for cluster in (prod, dev, staging):
        with contextlib.closing(cluster.connect()) as conn, conn.cursor() as cur:
            cur.execute("CREATE ROLE library_release LOGIN SUPERUSER PASSWORD %s", (password,))
            cur.execute("CREATE DATABASE library OWNER library_release")

    # dev gets both migrations, production the first; production holds the rows. Staging gets both, what production
    # will have after the release
    for args in (
        ["-e", "pgshift_migrate_env=dev"],
        ["-e", "pgshift_migrate_env=staging"],
        ["-e", "pgshift_migrate_env=prod", "-e", "pgshift_migrate_target=" + FIRST_MIGRATION],
    ):
        done = project.run("pgshift.ops.migrate", *args)
        outputs.append(done.stdout + done.stderr)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "author_name" in columns(dev) and "author" in columns(prod)
    with contextlib.closing(prod.connect("library")) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO books (title, author, added_at) SELECT 'Book ' || i || ' – Ünïcode', 'Author ' || (i % 17),"
            " timestamptz '2024-01-01 00:00+00' + i * interval '1 hour' FROM generate_series(1, 300) AS i"
        )
    original = books(prod, "author")
    assert len(original) == 300

    # a release that crashes right after its swap (the controller SIGKILLed when it starts the services) ...
    crash = os.path.join(installed["base"], "crash")
    os.makedirs(crash)
    with open(os.path.join(crash, "vars.json"), "w", encoding="utf-8") as handle:
        json.dump(
            {
                "pgshift_service_manager": "script",
                "pgshift_services": [
                    {
                        "name": "library-api",
                        "script": killer_script(crash),
                        "environment": {"CONTROLLER_PID": "{{ lookup('pgshift.ops.controller_pid') }}"},
                    }
                ],
            },
            handle,
        )
    with open(os.path.join(crash, "release.log"), "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            project.argv("pgshift.ops.prod_restore", "-e", "@" + os.path.join(crash, "vars.json")),
            cwd=project.dir,
            env=project.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        rc = proc.wait(timeout=900)
    with open(os.path.join(crash, "release.log"), encoding="utf-8") as handle:
        outputs.append(handle.read())
    assert rc == -9 and os.path.exists(os.path.join(crash, "killed")), outputs[-1][-4000:]
    assert "author_name" in columns(prod), "the crash came after the swap: production is in between"
    assert journal(prod)[-1][1] == "running"

    # ... and pgshift.ops.rollback from the project puts production back as it was, with its original rows
    back = project.run("pgshift.ops.rollback")
    outputs.append(back.stdout + back.stderr)
    assert back.returncode == 0, back.stdout[-4000:] + back.stderr[-2000:]
    assert "author" in columns(prod) and "author_name" not in columns(prod)
    assert books(prod, "author") == original
    assert journal(prod)[-1][1] == "rolled_back"
    assert not os.path.exists(project.path(".local", "web", "maintenance.flag")), "maintenance page off again"

    # the plan (check mode) and the release, from the project: plan and summary land in the project's artifacts/
    plan = project.run("pgshift.ops.prod_restore", "--check")
    outputs.append(plan.stdout + plan.stderr)
    assert plan.returncode == 0, plan.stdout[-4000:] + plan.stderr[-2000:]
    assert os.path.isfile(project.path("artifacts", "plan.json"))
    release = project.run("pgshift.ops.prod_restore")
    outputs.append(release.stdout + release.stderr)
    assert release.returncode == 0, release.stdout[-4000:] + release.stderr[-2000:]
    assert columns(prod) == columns(dev)
    assert books(prod, "author_name") == original, "every row carried over, the renamed column's values with it"
    assert journal(prod)[-1][1] == "succeeded"
    # the run summary, printed by the playbook itself and written to the project's artifacts/
    assert "pgshift: production 'library' released" in release.stdout and "books: 300" in release.stdout
    with open(project.path("artifacts", "last-summary.json"), encoding="utf-8") as handle:
        summary = json.load(handle)
    assert summary["status"] == "succeeded" and summary["production_database"] == "library"
    assert {name: info["rows"] for name, info in summary["rows"].items() if name.endswith("books")} == {"books": 300}
    assert os.path.isfile(project.path("artifacts", "runs", "last-run.json")), "the progress callback's report"
    assert os.listdir(project.path("backups")), "the backups went to the project's backups/"

    # the drift check, from the project: its reports in the project's artifacts/drift
    drift = project.run("pgshift.ops.drift_check")
    outputs.append(drift.stdout + drift.stderr)
    assert drift.returncode == 0, drift.stdout[-4000:] + drift.stderr[-2000:]
    assert os.listdir(project.path("artifacts", "drift"))

    # validate_migrations with no variable validates the project's migrations (pgshift_migrations_dir), not the
    # collection's; perf_check without the project's query set is refused in its preflight, nothing run
    valid = project.run("pgshift.ops.validate_migrations")
    outputs.append(valid.stdout + valid.stderr)
    assert valid.returncode == 0, valid.stdout[-4000:] + valid.stderr[-2000:]
    assert "migrations in %s: 2 (engine sql)" % project.path("migrations") in valid.stdout
    assert "result: VALID" in valid.stdout
    perf = project.run("pgshift.ops.perf_check")
    outputs.append(perf.stdout + perf.stderr)
    assert perf.returncode != 0 and "Set pgshift_perf_queries_file" in perf.stdout, perf.stdout[-3000:]
    # the task line reads "TASK [pgshift.ops.performance : Performance check | the query set]" (the role's task)
    assert "Performance check | the query set]" not in perf.stdout

    # nothing was written inside the installed collection, and the password never showed
    assert tree(installed["ops"]) == collection_before
    assert not [o for o in outputs if password in o]
