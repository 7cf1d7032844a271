"""prod_restore.yml and rollback.yml run unchanged under ansible-runner, the engine AWX runs jobs with; and the
release workflow of awx/pgshift.yml runs node by node from the user's project (examples/user-project), as AWX
launches its jobs, with this repository out of every search path (see the second half of this file).

Each job gets a private data dir laid out as AWX lays it out:

- ``project/``: the project checkout (the files git knows, as AWX's project update clones them);
- ``inventory/``: the inventory (here the local one: hosts.yml and group_vars/);
- ``env/envvars``: the job's environment (the world, the collection path of the execution environment, the progress
  callback enabled through ``ANSIBLE_CALLBACKS_ENABLED``);
- ``env/extravars``: the extra variables, with the survey's answer (``pgshift_confirm``) as AWX passes it.

The collection is not taken from the repository: it is built into a tarball and installed with ansible-galaxy into a
collections folder of its own, as the execution environment's build does (execution-environment.yml), so the test
also proves that the built collection is complete. Real clusters, real ansible-playbook (through ansible-runner).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import typing as t

import ansible_runner  # type: ignore[import-untyped]
import pgworld
import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")


def tracked_files() -> t.List[str]:
    """The files of a checkout: tracked and untracked-but-not-ignored, without what npm installs in the tree."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    return [f for f in out.split("\0") if f and "node_modules/" not in f and os.path.isfile(os.path.join(ROOT, f))]


def copy_files(files: t.Sequence[str], dest: str) -> None:
    for rel in files:
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), target)


@pytest.fixture(scope="module")
def awx_base(tmp_path_factory: pytest.TempPathFactory) -> t.Dict[str, str]:
    """The project checkout and the collection installed as the execution environment installs it."""
    base = tmp_path_factory.mktemp("awx")
    files = tracked_files()
    project = str(base / "project")
    copy_files(files, project)
    source = str(base / "src" / "ansible_collections" / "pgshift" / "ops")
    copy_files(files, source)
    env = dict(os.environ, ANSIBLE_HOME=str(base / "ansible-home"), PATH=VENV_BIN + os.pathsep + os.environ["PATH"])
    env.pop("ANSIBLE_CONFIG", None)
    build = subprocess.run(
        [os.path.join(VENV_BIN, "ansible-galaxy"), "collection", "build", "--output-path", str(base), source],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(base),
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    tarball = [str(base / f) for f in os.listdir(base) if f.startswith("pgshift-ops-") and f.endswith(".tar.gz")]
    collections = str(base / "ee-collections")
    install = subprocess.run(
        [os.path.join(VENV_BIN, "ansible-galaxy"), "collection", "install", "--offline", "-p", collections, tarball[0]],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(base),
        check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    installed = os.path.join(collections, "ansible_collections", "pgshift", "ops")
    assert os.path.isfile(os.path.join(installed, "MANIFEST.json"))
    assert not os.path.islink(installed), "the collection must be a real install, not the repository"
    return {"base": str(base), "project": project, "collections": collections}


def private_data_dir(
    awx: t.Dict[str, str], name: str, world: pgworld.World, extravars: t.Dict[str, t.Any]
) -> t.Tuple[str, str]:
    """One job's private data dir, as AWX writes it; returns (dir, folder of the progress output)."""
    pdd = os.path.join(awx["base"], name)
    os.makedirs(os.path.join(pdd, "env"), mode=0o700)
    os.symlink(awx["project"], os.path.join(pdd, "project"))
    shutil.copytree(os.path.join(ROOT, "inventories", "local"), os.path.join(pdd, "inventory"))
    progress = os.path.join(pdd, "progress")
    os.makedirs(progress, mode=0o700)
    envvars = {
        "PGSHIFT_WORLD": world.state,
        # the execution environment's collections folder; AWX puts its own paths after the project's
        "ANSIBLE_COLLECTIONS_PATH": awx["collections"],
        "ANSIBLE_CONFIG": os.path.join(pdd, "project", "ansible.cfg"),
        "ANSIBLE_HOME": os.path.join(pdd, "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": os.path.join(pdd, "ansible-home", "tmp"),
        "ANSIBLE_CALLBACKS_ENABLED": "pgshift.ops.progress",
        "PGSHIFT_REPORT_DIR": os.path.join(progress, "runs"),
        "PGSHIFT_ARTIFACTS": os.path.join(pdd, "artifacts"),
        "PGSHIFT_PROGRESS_JSONL": os.path.join(progress, "events.jsonl"),
        "PGSHIFT_PROGRESS_INTERVAL": "0",
        "PATH": VENV_BIN + os.pathsep + os.environ["PATH"],
    }
    for file_name, content in (("envvars", envvars), ("extravars", extravars)):
        fd = os.open(os.path.join(pdd, "env", file_name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            yaml.safe_dump(content, handle)
    return pdd, progress


def run_job(pdd: str, playbook: str) -> t.Tuple[t.Any, t.List[t.Dict[str, t.Any]], str]:
    runner = ansible_runner.run(private_data_dir=pdd, playbook=playbook, quiet=True, timeout=600)
    events = list(runner.events)
    stdout = runner.stdout.read()
    return runner, events, stdout


def columns(cluster: pgworld.Cluster, table: str) -> t.List[str]:
    with contextlib.closing(cluster.connect("shop")) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = %s",
            (table,),
        )
        return [r[0] for r in cur.fetchall()]


def journal(cluster: pgworld.Cluster) -> t.List[t.Tuple[str, str]]:
    with contextlib.closing(cluster.connect("pgshift")) as conn, conn.cursor() as cur:
        cur.execute("SELECT run_id, status FROM pgshift.runs ORDER BY started_at")
        return [(r[0], r[1]) for r in cur.fetchall()]


def progress_events(folder: str) -> t.List[t.Dict[str, t.Any]]:
    with open(os.path.join(folder, "events.jsonl")) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def real_failures(events: t.Sequence[t.Dict[str, t.Any]]) -> t.List[t.Dict[str, t.Any]]:
    return [
        e
        for e in events
        if e["event"] in ("runner_on_failed", "runner_on_unreachable")
        and not e.get("event_data", {}).get("ignore_errors")
    ]


def ok_results(events: t.Sequence[t.Dict[str, t.Any]], action: str) -> t.List[t.Dict[str, t.Any]]:
    return [
        e["event_data"]["res"]
        for e in events
        if e["event"] == "runner_on_ok"
        and e["event_data"].get("resolved_action", e["event_data"]["task_action"]) == action
    ]


def stats_of(events: t.Sequence[t.Dict[str, t.Any]]) -> t.Dict[str, t.Any]:
    return next(e["event_data"] for e in events if e["event"] == "playbook_on_stats")


def test_prod_restore_then_rollback_under_ansible_runner(world: pgworld.World, awx_base: t.Dict[str, str]) -> None:
    prod = world.clusters["prod"]
    assert "display_name" not in columns(prod, "customers"), "the world starts with production's old schema"
    artifacts = os.path.join(awx_base["base"], "artifacts")

    # the prod restore job template: a production-like run, confirmed by the survey's answer
    survey = {
        "pgshift_environment": "production",
        "pgshift_confirm": "shop",
        "pgshift_artifacts_dir": artifacts,
        # this throwaway world has no staging rehearsal: the explicit, logged override of the rehearsal gate
        "pgshift_rehearsal_override": "ansible-runner test on a throwaway world",
    }
    pdd, progress = private_data_dir(awx_base, "job-prod-restore", world, survey)
    runner, events, stdout = run_job(pdd, "playbooks/prod_restore.yml")
    assert runner.status == "successful" and runner.rc == 0, stdout[-4000:]

    # production got dev's schema, with the renamed column carried over, and the journal closed the run
    assert "display_name" in columns(prod, "customers") and "full_name" not in columns(prod, "customers")
    assert columns(prod, "customers") == columns(world.clusters["dev"], "customers")
    assert journal(prod)[-1][1] == "succeeded"

    # the events ansible-runner emits, as AWX stores them for the job
    names = [e["event"] for e in events]
    for expected in ("playbook_on_start", "playbook_on_play_start", "playbook_on_task_start", "runner_on_ok"):
        assert expected in names, expected
    assert names.count("playbook_on_stats") == 1
    assert real_failures(events) == []
    assert all(e["event_data"].get("playbook") == "playbooks/prod_restore.yml" for e in events if "event_data" in e)
    # the window is one call (pgshift.ops.rebuild_swap): its inner results are those of the copy and the swap
    (window,) = ok_results(events, "pgshift.ops.rebuild_swap")
    assert window["changed"] and window["swap"]["swapped"] is True, "the swap ran and changed production"
    assert window["copy"]["total_rows"] > 0
    plays = [e["event_data"]["play"] for e in events if e["event"] == "playbook_on_play_start"]
    assert plays[0] == "Preflight" and "Backup" in plays
    stats = stats_of(events)
    assert not stats["failures"] and not stats["dark"] and stats["changed"]
    # no secret in anything the job recorded
    password = world.meta["password"]
    assert password not in stdout
    assert not [e for e in events if password in json.dumps(e)]
    # the run summary went where the job said
    assert os.path.exists(os.path.join(artifacts, "last-summary.json"))

    # the progress callback, enabled by the job's environment, ran inside the runner job
    assert "[pgshift]" in stdout
    pevents = progress_events(progress)
    kinds = [e["event"] for e in pevents]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert "phase_started" in kinds and "phase_finished" in kinds and "step_failed" not in kinds
    assert pevents[-1]["status"] == "ok" and pevents[-1]["playbook"] == "prod_restore"
    assert [e["seq"] for e in pevents] == list(range(1, len(pevents) + 1))
    with open(os.path.join(progress, "runs", "last-run.json")) as handle:
        report = json.load(handle)
    assert report["status"] == "ok" and report["run_id"] == pevents[0]["run_id"]
    assert report["maintenance_window"] and report["maintenance_window"]["open"] is False
    assert not [p for p in pevents if password in json.dumps(p)]

    # the rollback job template afterwards: the release is not final yet, so rollback swaps it back (carrying any
    # write made since the swap, docs/data.md "Swap-back") and closes it as rolled back
    pdd, progress = private_data_dir(
        awx_base, "job-rollback", world, {"pgshift_environment": "production", "pgshift_confirm": "shop"}
    )
    runner, events, stdout = run_job(pdd, "playbooks/rollback.yml")
    assert runner.status == "successful" and runner.rc == 0, stdout[-4000:]
    assert real_failures(events) == []
    assert not stats_of(events)["failures"]
    assert "full_name" in columns(prod, "customers"), "rollback after a release that is not final swaps it back"
    assert journal(prod)[-1][1] == "rolled_back"
    pevents = progress_events(progress)
    assert pevents[-1]["event"] == "run_finished" and pevents[-1]["status"] == "ok"
    assert pevents[-1]["playbook"] == "rollback"


def test_prod_restore_without_the_survey_answer_changes_nothing(
    world: pgworld.World, awx_base: t.Dict[str, str]
) -> None:
    """A production job launched without the confirmation stops in preflight: the job fails, nothing changes."""
    prod = world.clusters["prod"]
    before = journal(prod)
    pdd, progress = private_data_dir(
        awx_base,
        "job-unconfirmed",
        world,
        {"pgshift_environment": "production", "pgshift_rehearsal_override": "ansible-runner test on a throwaway world"},
    )
    runner, events, stdout = run_job(pdd, "playbooks/prod_restore.yml")
    assert runner.status == "failed" and runner.rc != 0
    failed = real_failures(events)
    assert failed and "pgshift_confirm" in failed[0]["event_data"]["res"]["msg"]
    assert failed[0]["event_data"]["play"] == "Preflight"
    assert journal(prod) == before, "no run was started"
    pevents = progress_events(progress)
    assert pevents[-1]["event"] == "run_finished" and pevents[-1]["status"] == "failed"
    assert "step_failed" in [e["event"] for e in pevents]


# ---- The release workflow of awx/pgshift.yml, node by node, from the user's project (examples/user-project) ----

EXAMPLE = os.path.join(ROOT, "examples", "user-project")
EXPORT = os.path.join(ROOT, "awx", "pgshift.yml")
FIRST_MIGRATION = "1710000000000_create-books"


def awx_export() -> t.Dict[str, t.Any]:
    with open(EXPORT, encoding="utf-8") as handle:
        return t.cast(t.Dict[str, t.Any], yaml.safe_load(handle))


def injected_extra_vars(inputs: t.Dict[str, str]) -> t.Dict[str, str]:
    """The extra variables AWX gives a job from the "pgshift databases" credential: the credential type's injectors
    of awx/pgshift.yml, rendered as AWX renders them (a sandboxed Jinja template over the credential's inputs)."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    (ctype,) = awx_export()["credential_types"]
    fields = [f["id"] for f in ctype["inputs"]["fields"]]
    values = {field: inputs.get(field, "") for field in fields}
    sandbox = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
    return {name: sandbox.from_string(tmpl).render(**values) for name, tmpl in ctype["injectors"]["extra_vars"].items()}


@pytest.fixture(scope="module")
def library_world() -> t.Iterator[pgworld.World]:
    """Throwaway dev, staging and prod clusters without demo data: the example project brings its own database."""
    from conftest import _tmp_base

    base = _tmp_base("pgshift-awxproj-")
    world = pgworld.World(os.path.join(base, "world"))
    world.up()
    yield world
    world.destroy()
    shutil.rmtree(base, ignore_errors=True)


class UserProjectJobs:
    """AWX jobs of the user's project: the project checkout, its inventory as AWX imported it, the credential."""

    def __init__(self, awx: t.Dict[str, str], world: pgworld.World, password: str) -> None:
        self.base = os.path.join(awx["base"], "user-project")
        self.collections = awx["collections"]
        self.world = world
        # the project update: a checkout of the user's repository (here: a copy of the example)
        self.project = os.path.join(self.base, "checkout")
        shutil.copytree(EXAMPLE, self.project)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PGSHIFT_"))}
        self.env.update(
            ANSIBLE_HOME=os.path.join(self.base, "ansible-home"), PATH=VENV_BIN + os.pathsep + os.environ["PATH"]
        )
        # ... which installs collections/requirements.yml: resolved against the execution environment's collections
        # only (offline), it must find the very version installed there ("Nothing to do")
        sync = subprocess.run(
            [os.path.join(VENV_BIN, "ansible-galaxy"), "collection", "install", "--offline", "-p", self.collections]
            + ["-r", os.path.join("collections", "requirements.yml")],
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert sync.returncode == 0 and "Nothing to do" in sync.stdout, sync.stdout + sync.stderr
        # the inventory source update: `ansible-inventory --list --export` of the project's inventory/ folder, with
        # no vault password (its encrypted values are kept encrypted), as AWX imports an SCM inventory source
        (source,) = awx_export()["inventory_sources"]
        listed = subprocess.run(
            [os.path.join(VENV_BIN, "ansible-inventory"), "-i", source["source_path"], "--list", "--export"],
            cwd=self.project,
            env=dict(self.env, ANSIBLE_COLLECTIONS_PATH=self.collections),
            capture_output=True,
            text=True,
            check=False,
        )
        assert listed.returncode == 0, listed.stdout + listed.stderr
        self.inventory = json.loads(listed.stdout)
        assert sorted(self.inventory["all"]["children"]) == ["pgshift_app", "pgshift_db", "pgshift_web", "ungrouped"]
        self.credential = injected_extra_vars(
            {"prod_password": password, "dev_password": password, "staging_password": password}
        )
        self.jobs = 0

    def run(self, template: str, extravars: t.Dict[str, t.Any]) -> t.Tuple[t.Any, t.List[t.Dict[str, t.Any]], str]:
        """One job of the job template named so in awx/pgshift.yml (its playbook and limit), as AWX launches it."""
        (jt,) = [j for j in awx_export()["job_templates"] if j["name"] == template]
        self.jobs += 1
        pdd = os.path.join(self.base, "job-%d" % self.jobs)
        os.makedirs(os.path.join(pdd, "env"), mode=0o700)
        os.makedirs(os.path.join(pdd, "inventory"))
        os.symlink(self.project, os.path.join(pdd, "project"))
        # AWX hands the job its imported inventory as an executable inventory script printing it
        script = os.path.join(pdd, "inventory", "hosts")
        with open(script, "w", encoding="utf-8") as handle:
            handle.write("#!%s\nimport sys\nsys.stdout.write(%r)\n" % (sys.executable, json.dumps(self.inventory)))
        os.chmod(script, 0o700)
        envvars = {
            "PGSHIFT_WORLD": self.world.state,
            # the execution environment's collections only: neither the repository nor its .build/ link
            "ANSIBLE_COLLECTIONS_PATH": self.collections,
            # AWX runs the job in the project checkout, whose ansible.cfg applies (never the repository's, which the
            # Makefile exports to the tests)
            "ANSIBLE_CONFIG": os.path.join(pdd, "project", "ansible.cfg"),
            "ANSIBLE_HOME": os.path.join(pdd, "ansible-home"),
            "ANSIBLE_LOCAL_TEMP": os.path.join(pdd, "ansible-home", "tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "PATH": VENV_BIN + os.pathsep + os.environ["PATH"],
        }
        # the survey's answers, AWX's own job variables and the credential's injected variables
        job_vars = {"awx_job_id": 1000 + self.jobs, "awx_workflow_job_id": 77, **extravars, **self.credential}
        for file_name, content in (("envvars", envvars), ("extravars", job_vars)):
            fd = os.open(os.path.join(pdd, "env", file_name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                yaml.safe_dump(content, handle)
        runner = ansible_runner.run(
            private_data_dir=pdd,
            playbook=jt["playbook"],
            limit=jt.get("limit") or None,
            envvars=None,
            quiet=True,
            timeout=900,
        )
        events = list(runner.events)
        return runner, events, runner.stdout.read()


def library_columns(cluster: pgworld.Cluster) -> t.List[str]:
    with contextlib.closing(cluster.connect("library")) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT a.attname FROM pg_attribute a WHERE a.attrelid = 'public.books'::regclass AND a.attnum > 0"
            " AND NOT a.attisdropped ORDER BY a.attnum"
        )
        return [r[0] for r in cur.fetchall()]


def library_books(cluster: pgworld.Cluster, author: str) -> t.List[t.Tuple[t.Any, ...]]:
    from psycopg2 import sql

    with contextlib.closing(cluster.connect("library")) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT id, title, {}, added_at FROM books ORDER BY id").format(sql.Identifier(author)))
        return list(cur.fetchall())


def library_journal(cluster: pgworld.Cluster) -> t.List[t.Tuple[str, str]]:
    with contextlib.closing(cluster.connect("pgshift")) as conn, conn.cursor() as cur:
        cur.execute("SELECT run_id, status FROM pgshift.runs WHERE database = 'library' ORDER BY started_at")
        return [(r[0], r[1]) for r in cur.fetchall()]


def test_release_workflow_nodes_from_the_user_project(awx_base: t.Dict[str, str], library_world: pgworld.World) -> None:
    """backup -> staging rehearsal -> rehearsal record -> (approval) -> prod restore -> rollback -> release failed,
    each the job AWX launches from the user's project, with the rehearsal gate of a production run satisfied by the
    workflow's own rehearsal (no override) and the passwords only from the credential."""
    prod, dev, staging = (library_world.clusters[n] for n in ("prod", "dev", "staging"))
    password = "awx-credential-%s" % os.urandom(6).hex()
    for cluster in (prod, dev, staging):
        with contextlib.closing(cluster.connect()) as conn, conn.cursor() as cur:
            cur.execute("CREATE ROLE library_release LOGIN SUPERUSER PASSWORD %s", (password,))
            if cluster is not staging:
                cur.execute("CREATE DATABASE library OWNER library_release")
    jobs = UserProjectJobs(awx_base, library_world, password)
    outputs: t.List[str] = []
    installed = os.path.join(awx_base["collections"], "ansible_collections", "pgshift", "ops")

    def job(template: str, extravars: t.Dict[str, t.Any], status: str = "successful") -> t.List[t.Dict[str, t.Any]]:
        runner, events, stdout = jobs.run(template, extravars)
        outputs.append(stdout)
        assert runner.status == status, "%s: %s\n%s" % (template, runner.status, stdout[-5000:])
        # every task came from the installed collection or the project, never from the repository
        paths = {e["event_data"].get("task_path", "") for e in events if e["event"] == "playbook_on_task_start"}
        assert paths, (template, sorted({e["event"] for e in events}), stdout[-3000:])
        assert not [p for p in paths if p.startswith(ROOT + os.sep) and not p.startswith(awx_base["base"])]
        assert [p for p in paths if p.startswith(installed)], "the collection's tasks ran from its installed copy"
        return events

    # the schema: dev has both migrations, production the first, with rows (pgshift.ops.migrate, as a user would;
    # the passwords through a 0600 vars file, never on the command line)
    secrets = os.path.join(jobs.base, "secrets.json")
    fd = os.open(secrets, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(jobs.credential, handle)
    for target in (
        {"pgshift_migrate_env": "dev"},
        {"pgshift_migrate_env": "prod", "pgshift_migrate_target": FIRST_MIGRATION},
    ):
        proc = subprocess.run(
            [os.path.join(VENV_BIN, "ansible-playbook"), "pgshift.ops.migrate", "-e", json.dumps(target)]
            + ["-e", "@" + secrets],
            cwd=jobs.project,
            env=dict(jobs.env, ANSIBLE_COLLECTIONS_PATH=jobs.collections, PGSHIFT_WORLD=library_world.state),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    with contextlib.closing(prod.connect("library")) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO books (title, author, added_at) SELECT 'Book ' || i, 'Author ' || (i % 7),"
            " timestamptz '2024-01-01 00:00+00' + i * interval '1 day' FROM generate_series(1, 120) AS i"
        )
    original = library_books(prod, "author")
    # what a production inventory sets (docs/awx.md): folders that outlive a job's checkout, and the environment
    # (the example inventory says local); then the survey's answer
    persistent = os.path.join(jobs.base, "persistent")
    site = {
        "pgshift_environment": "production",
        "pgshift_artifacts_dir": os.path.join(persistent, "artifacts"),
        "pgshift_backup_dir": os.path.join(persistent, "backups"),
    }
    production = {**site, "pgshift_confirm": "library"}

    job("pgshift: verified backup", site)
    job("pgshift: staging rehearsal", production)
    assert library_columns(staging) == library_columns(dev), "the release was rehearsed on staging"
    job("pgshift: rehearsal record", production)
    rehearsals = os.path.join(persistent, "artifacts", "rehearsals")
    (record,) = [d for d in os.listdir(rehearsals) if os.path.isdir(os.path.join(rehearsals, d))]
    with open(os.path.join(rehearsals, record, "rehearsal.json"), encoding="utf-8") as handle:
        assert json.load(handle)["passed"] is True, "the record of the workflow's rehearsal, in the persistent folder"
    assert library_columns(prod) == ["id", "title", "author", "added_at"], "production untouched so far"

    # (the approval node) then the prod restore: the gate finds the workflow's passing rehearsal, no override
    events = job("pgshift: prod restore", production)
    assert library_columns(prod) == library_columns(dev)
    assert library_books(prod, "author_name") == original
    assert library_journal(prod)[-1][1] == "succeeded"
    assert "pgshift_rehearsal_override" not in json.dumps([e.get("event_data", {}).get("res", {}) for e in events])

    # the failure path: rollback (the release is not final: it swaps back), then "release failed" fails on purpose
    job("pgshift: rollback", production)
    assert library_columns(prod) == ["id", "title", "author", "added_at"]
    assert library_books(prod, "author") == original
    assert library_journal(prod)[-1][1] == "rolled_back"
    runner, _events, stdout = jobs.run("pgshift: release failed", {})
    assert runner.status == "failed" and "The production release failed and the rollback job ran" in stdout

    # no password in any job's output
    assert not [o for o in outputs if password in o]
