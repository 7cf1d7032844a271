"""The GitHub workflows of the release (deploy.yml, reusable-validate-migrations.yml) and the make targets they run.

GitHub itself cannot run here, so the tests check what can be checked without it: the structure the issue asks for
(approval environment, needs, rollback on failure, artifacts, pinned actions, secrets only in step environments, no
expression pasted into a shell line), that every command is a make target that exists (``make -n`` of the exact line),
and then they run the workflow's own targets for real: the input checks refuse injection, the vars file is 0600 and
never printed, and the release job's sequence (release fails -> rollback -> manifests) runs on a throwaway world.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import subprocess
import typing as t

import pgworld
import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKFLOWS = os.path.join(ROOT, ".github", "workflows")
SHA_PIN = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")


def load(name: str) -> t.Dict[t.Any, t.Any]:
    with open(os.path.join(WORKFLOWS, name)) as handle:
        return t.cast(t.Dict[t.Any, t.Any], yaml.safe_load(handle))


def triggers(workflow: t.Dict[t.Any, t.Any]) -> t.Dict[str, t.Any]:
    # YAML 1.1 reads the key `on` as True
    return t.cast(t.Dict[str, t.Any], workflow.get("on", workflow.get(True)))


def steps(workflow: t.Dict[t.Any, t.Any]) -> t.Iterator[t.Tuple[str, t.Dict[str, t.Any]]]:
    for job_id, job in workflow["jobs"].items():
        for step in job["steps"]:
            yield job_id, step


def make_env(extra: t.Optional[t.Dict[str, str]] = None) -> t.Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGSHIFT_", "DEPLOY_", "MAKEFLAGS", "MFLAGS"))}
    env.update(extra or {})
    return env


def make(args: t.Sequence[str], env: t.Dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("name", ["deploy.yml", "reusable-validate-migrations.yml"])
def test_every_step_is_pinned_and_every_command_a_make_target(name: str) -> None:
    workflow = load(name)
    assert workflow["permissions"] == {}, "no permission unless a job asks for it"
    runs = []
    for job_id, step in steps(workflow):
        if "uses" in step:
            assert SHA_PIN.match(step["uses"]), "%s: %s is not pinned to a commit" % (job_id, step["uses"])
        else:
            command = step["run"]
            assert command.startswith("make "), "%s: %r is not a make target" % (job_id, command)
            assert "${{" not in command, "%s: expression pasted into a shell line: %r" % (job_id, command)
            assert "\n" not in command.strip()
            runs.append(command)
        for key, value in (step.get("env") or {}).items():
            if "secrets." in str(value):
                assert re.fullmatch(r"\$\{\{ secrets\.[A-Z_]+ \}\}", value) and key.startswith("PGSHIFT_SECRET_")
    assert runs
    # secrets appear nowhere but in step environments
    with open(os.path.join(WORKFLOWS, name)) as handle:
        secret_lines = [line for line in handle if "secrets." in line and not line.strip().startswith("#")]
    assert all(re.match(r"^\s+PGSHIFT_SECRET_[A-Z_]+: \$\{\{ secrets\.", line) for line in secret_lines)

    # each command, exactly as written, names targets and variables make knows (dry run, nothing executed)
    env = make_env(
        {
            "DEPLOY_INVENTORY": "inventories/local",
            "DEPLOY_MIGRATIONS": "sample_app/migrations",
            "PGSHIFT_VARS_FILE": "/nonexistent/vars.json",
            "GITHUB_WORKSPACE": ROOT,
        }
    )
    for command in runs:
        argv = ["bash", "-c", command.replace("make ", "make --dry-run --no-print-directory ", 1)]
        proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, "%s: %s" % (command, proc.stderr)
        assert "No rule to make target" not in proc.stderr


def test_deploy_workflow_shape() -> None:
    workflow = load("deploy.yml")
    on = triggers(workflow)
    assert set(on["workflow_dispatch"]["inputs"]) == {"confirmation", "inventory"}
    assert on["push"]["tags"]
    assert workflow["concurrency"]["cancel-in-progress"] is False
    rehearsal, release = workflow["jobs"]["rehearsal"], workflow["jobs"]["release"]
    assert any(s.get("run", "").startswith("make rehearsal ") for s in rehearsal["steps"])
    assert release["needs"] == "rehearsal" and release["environment"] == "production"
    by_id = {s.get("id"): s for s in release["steps"] if s.get("id")}
    assert by_id["release"]["run"].startswith("make prod-restore-from-dev INVENTORY=")
    assert "-e @$PGSHIFT_VARS_FILE" in by_id["release"]["run"]
    assert by_id["rollback"]["if"] == "failure() && steps.release.outcome == 'failure'"
    assert by_id["rollback"]["run"].startswith("make rollback INVENTORY=")
    # the rollback step does not hide the failure: nothing after the release step swallows it
    assert not [s for s in release["steps"] if s.get("continue-on-error")]
    uploads = [s for s in release["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert len(uploads) == 1 and uploads[0]["if"] == "always()"
    paths = uploads[0]["with"]["path"].split()
    assert {"artifacts/runs/**", "artifacts/last-summary.json", "artifacts/backup-manifests/**"} <= set(paths)
    # the confirmation reaches ansible only through the environment and the vars file
    assert workflow["env"]["DEPLOY_CONFIRMATION"].startswith("${{ inputs.confirmation")
    forget = [s for s in release["steps"] if s.get("run") == "make deploy-forget-vars"]
    assert forget and forget[0]["if"] == "always()"


def test_reusable_workflow_shape() -> None:
    workflow = load("reusable-validate-migrations.yml")
    call = triggers(workflow)["workflow_call"]
    assert {"migrations", "postgres-image", "pgshift-ref"} <= set(call["inputs"])
    job = workflow["jobs"]["validate"]
    assert job["services"]["postgres"]["env"]["POSTGRES_HOST_AUTH_METHOD"] == "trust"
    commands = [s["run"] for s in job["steps"] if "run" in s]
    assert any(c.startswith("make validate-migrations VALIDATE_FROM_ENV=1") for c in commands)
    assert commands.index("make deploy-check-inputs") < [i for i, c in enumerate(commands) if "validate-" in c][0]


@pytest.mark.parametrize(
    "env",
    [
        {"DEPLOY_INVENTORY": "inventories/local; touch /tmp/pgshift-pwned"},
        {"DEPLOY_INVENTORY": "../../etc"},
        {"DEPLOY_INVENTORY": "inventories/does-not-exist"},
        {"DEPLOY_CONFIRMATION": "shop$(id)"},
        {"DEPLOY_CONFIRMATION": "shop -e pgshift_environment=local"},
        {"DEPLOY_MIGRATIONS": "../other/migrations"},
        {"DEPLOY_MIGRATIONS": "db/`id`"},
        {},
    ],
)
def test_input_check_refuses(env: t.Dict[str, str]) -> None:
    proc = make(["deploy-check-inputs"], make_env(env))
    assert proc.returncode != 0
    assert "deploy input refused" in proc.stderr
    assert not os.path.exists("/tmp/pgshift-pwned")


def test_input_check_accepts() -> None:
    env = make_env(
        {"DEPLOY_INVENTORY": "inventories/local", "DEPLOY_CONFIRMATION": "shop", "DEPLOY_MIGRATIONS": "db/migrations"}
    )
    proc = make(["deploy-check-inputs"], env)
    assert proc.returncode == 0, proc.stderr
    assert "ok: inventory: inventories/local" in proc.stdout and "ok: confirmation: shop" in proc.stdout


def test_vars_file_is_private_and_never_printed(tmp_path: t.Any) -> None:
    path = str(tmp_path / "secret-dir" / "vars.json")
    secret = "s3cr3t-" + os.urandom(6).hex()
    env = make_env(
        {
            "PGSHIFT_VARS_FILE": path,
            "DEPLOY_CONFIRMATION": "shop",
            "PGSHIFT_SECRET_PROD_PASSWORD": secret,
            "PGSHIFT_SECRET_DEV_PASSWORD": secret + "-dev",
        }
    )
    proc = make(["deploy-vars-file"], env)
    assert proc.returncode == 0, proc.stderr
    assert secret not in proc.stdout + proc.stderr
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    with open(path) as handle:
        data = json.load(handle)
    assert data == {
        "pgshift_confirm": "shop",
        "pgshift_secret_prod_password": secret,
        "pgshift_secret_dev_password": secret + "-dev",
    }
    assert not [f for f in os.listdir(os.path.dirname(path)) if f != "vars.json"], "no temp file left"
    # a bad confirmation never reaches the file
    proc = make(["deploy-vars-file"], dict(env, DEPLOY_CONFIRMATION="shop'; drop"))
    assert proc.returncode != 0
    with open(path) as handle:
        assert json.load(handle)["pgshift_confirm"] == "shop"
    assert make(["deploy-forget-vars"], env).returncode == 0
    assert not os.path.exists(path)


def test_summary_goes_to_the_job_summary(tmp_path: t.Any) -> None:
    report = tmp_path / "report.txt"
    report.write_text("3 migrations valid\n")
    target = tmp_path / "summary.md"
    env = make_env({"GITHUB_STEP_SUMMARY": str(target)})
    proc = make(["ci-summary", "CI_SUMMARY_TITLE=Migrations validation", "CI_SUMMARY_FILE=%s" % report], env)
    assert proc.returncode == 0, proc.stderr
    assert target.read_text() == "## Migrations validation\n\n```\n3 migrations valid\n```\n"


def journal(cluster: pgworld.Cluster) -> t.List[str]:
    with contextlib.closing(cluster.connect("pgshift")) as conn, conn.cursor() as cur:
        cur.execute("SELECT status FROM pgshift.runs ORDER BY started_at")
        return [r[0] for r in cur.fetchall()]


@pytest.mark.slow
def test_release_job_sequence_on_a_local_world(world: pgworld.World, tmp_path: t.Any) -> None:
    """The release job's steps, as make commands, on a throwaway world: the release fails after the swap (an API
    check that cannot pass), `make rollback` runs as the workflow's failure step does, production is as before, and
    the backup manifest named in the run report is collected for the artifacts."""
    world.reset(scale=0.5)
    vars_file = str(tmp_path / "job" / "vars.json")
    reports = str(tmp_path / "runs")
    bad_checks = str(tmp_path / "bad-checks.json")
    with open(bad_checks, "w") as handle:
        url = "http://127.0.0.1:%d/health" % world.meta["ports"]["api"]
        json.dump(
            {"pgshift_api_checks": [{"name": "cannot pass", "url": url, "json_path": "status", "expect": "x"}]}, handle
        )
    env = make_env(
        {
            "PGSHIFT_WORLD": world.state,
            "DEPLOY_INVENTORY": "inventories/local",
            "DEPLOY_CONFIRMATION": "shop",
            "PGSHIFT_VARS_FILE": vars_file,
            "PGSHIFT_SECRET_PROD_PASSWORD": world.meta["password"],
            "ANSIBLE_CALLBACKS_ENABLED": "pgshift.ops.progress",
            "PGSHIFT_REPORT_DIR": reports,
            "PGSHIFT_ARTIFACTS": str(tmp_path / "artifacts"),
            "PGSHIFT_SUMMARY": str(tmp_path / "no-summary.json"),
        }
    )
    assert make(["deploy-check-inputs"], env).returncode == 0
    assert make(["deploy-vars-file"], env).returncode == 0
    release = make(
        [
            "prod-restore-from-dev",
            "INVENTORY=inventories/local",
            "ANSIBLE_ARGS=-e @%s -e @%s" % (vars_file, bad_checks),
        ],
        env,
    )
    assert release.returncode != 0, "the release must fail on the API check"
    assert "production was swapped back" in release.stdout + release.stderr
    rollback = make(["rollback", "INVENTORY=inventories/local", "ANSIBLE_ARGS=-e @%s" % vars_file], env)
    assert rollback.returncode == 0, rollback.stdout[-3000:] + rollback.stderr[-2000:]
    prod = world.clusters["prod"]
    with contextlib.closing(prod.connect("shop")) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_name = 'customers' AND column_name = 'full_name'"
        )
        assert cur.fetchone()[0] == 1, "production keeps its old schema"
    assert journal(prod)[-1] == "rolled_back"
    manifests_dir = str(tmp_path / "manifests")
    collected = make(["deploy-manifests", "DEPLOY_MANIFESTS=%s" % manifests_dir], env)
    assert collected.returncode == 0, collected.stderr
    files = os.listdir(manifests_dir)
    assert len(files) == 1 and files[0].endswith(".manifest.json")
    assert stat.S_IMODE(os.stat(os.path.join(manifests_dir, files[0])).st_mode) == 0o600
    with open(os.path.join(manifests_dir, files[0])) as handle:
        assert json.load(handle)
    for output in (release, rollback, collected):
        assert world.meta["password"] not in output.stdout + output.stderr
    assert make(["deploy-forget-vars"], env).returncode == 0
