#!/usr/bin/env python
"""Steps of the GitHub deploy workflow that are more than one make command (behind mk/awx.mk targets).

``check-inputs``   validate the workflow's inputs (from the environment, never from argv) before any of them reaches
                   a command line: the inventory is a folder under inventories/, the confirmation a database name, a
                   migrations path a plain relative path.
``vars-file``      write the job's secrets and the confirmation to a 0600 JSON file (in a 0700 folder, atomically) for
                   ``ANSIBLE_ARGS=-e @file``; nothing of it is printed.
``summary``        append a report file, in a code block under a title, to $GITHUB_STEP_SUMMARY (stdout elsewhere).
``manifests``      copy the backup manifests named in the run reports (artifacts/runs) into artifacts/backup-manifests
                   when they are readable here (the runner is the database host), for the workflow's artifacts.

Inputs come from environment variables so that the workflow never pastes an expression into a shell line:
DEPLOY_INVENTORY, DEPLOY_CONFIRMATION, DEPLOY_MIGRATIONS; secrets from PGSHIFT_SECRET_* (see docs/awx.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import typing as t

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INVENTORY_RE = re.compile(r"^inventories/[A-Za-z0-9_.-]+/?$")
# a PostgreSQL database name as pgshift's inventories use them (no quoting needed anywhere)
CONFIRMATION_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$")
PATH_RE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_./-]*$")
# environment variable -> extra variable of the vars file
SECRETS = {
    "PGSHIFT_SECRET_PROD_PASSWORD": "pgshift_secret_prod_password",
    "PGSHIFT_SECRET_DEV_PASSWORD": "pgshift_secret_dev_password",
    "PGSHIFT_SECRET_STAGING_PASSWORD": "pgshift_secret_staging_password",
    "PGSHIFT_SECRET_WEBHOOK_URL": "pgshift_secret_webhook_url",
}


class InputError(Exception):
    pass


def check_inputs(env: t.Mapping[str, str], root: str = ROOT) -> t.List[str]:
    """Validated inputs, one line each; raises InputError on the first bad one."""
    seen = []
    inventory = env.get("DEPLOY_INVENTORY")
    if inventory is not None:
        if not INVENTORY_RE.match(inventory) or not os.path.isdir(os.path.join(root, inventory)):
            raise InputError("inventory must be an existing folder inventories/<name> of this repository")
        seen.append("inventory: " + inventory)
    confirmation = env.get("DEPLOY_CONFIRMATION")
    if confirmation is not None:
        if not CONFIRMATION_RE.match(confirmation):
            raise InputError("confirmation must be the production database's name (letters, digits, _ $ -)")
        seen.append("confirmation: " + confirmation)
    migrations = env.get("DEPLOY_MIGRATIONS")
    if migrations is not None:
        parts = migrations.split("/")
        if not PATH_RE.match(migrations) or ".." in parts:
            raise InputError("migrations must be a relative path inside the repository (letters, digits, _ . / -)")
        seen.append("migrations: " + migrations)
    if not seen:
        raise InputError("nothing to check: set DEPLOY_INVENTORY, DEPLOY_CONFIRMATION or DEPLOY_MIGRATIONS")
    return seen


def write_private_json(path: str, data: t.Mapping[str, t.Any]) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".vars-", dir=folder)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def vars_file(path: str, env: t.Mapping[str, str]) -> t.List[str]:
    """Write the vars file; returns the names of the variables written (never their values)."""
    data: t.Dict[str, t.Any] = {}
    confirmation = env.get("DEPLOY_CONFIRMATION")
    if confirmation:
        check_inputs({"DEPLOY_CONFIRMATION": confirmation})
        data["pgshift_confirm"] = confirmation
    for variable, name in SECRETS.items():
        if env.get(variable):
            data[name] = env[variable]
    write_private_json(path, data)
    return sorted(data)


def manifests(runs_dir: str, dest: str) -> t.List[str]:
    """Copy the manifests of the backups the reports name; returns the files written."""
    found: t.Dict[str, str] = {}
    for folder, _dirs, files in os.walk(runs_dir):
        for name in files:
            if name != "report.json":
                continue
            try:
                with open(os.path.join(folder, name)) as handle:
                    report = json.load(handle)
            except (OSError, ValueError):
                continue
            for result in report.get("results", []):
                data = result.get("data") or {}
                path = data.get("manifest_path")
                if result.get("action") == "pgshift.ops.backup" and path and os.path.isfile(path):
                    found[str(data.get("backup_id") or os.path.basename(os.path.dirname(path)))] = path
    written = []
    for backup_id, path in sorted(found.items()):
        target = os.path.join(dest, re.sub(r"[^A-Za-z0-9_.-]", "_", backup_id) + ".manifest.json")
        os.makedirs(dest, mode=0o700, exist_ok=True)
        tmp = target + ".tmp"
        shutil.copyfile(path, tmp)
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
        written.append(target)
    return written


def summary(title: str, report: str, env: t.Mapping[str, str]) -> str:
    """The Markdown block appended to the job summary; returns it."""
    if os.path.isfile(report):
        with open(report, encoding="utf-8", errors="replace") as handle:
            body = handle.read().rstrip("\n")
    else:
        body = "no report: the step did not get that far (see the log)"
    fence = "~~~~" if "```" in body else "```"
    block = "## %s\n\n%s\n%s\n%s\n" % (title, fence, body, fence)
    target = env.get("GITHUB_STEP_SUMMARY")
    if target:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(block)
    else:
        sys.stdout.write(block)
    return block


def main(argv: t.Optional[t.Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check-inputs", help="validate DEPLOY_INVENTORY, DEPLOY_CONFIRMATION, DEPLOY_MIGRATIONS")
    write = sub.add_parser("vars-file", help="write the secrets and the confirmation to a 0600 JSON vars file")
    write.add_argument("path")
    report = sub.add_parser("summary", help="append a report file to the job summary")
    report.add_argument("--title", required=True)
    report.add_argument("file")
    collect = sub.add_parser("manifests", help="copy the backup manifests named in the run reports")
    collect.add_argument("--runs", default=os.path.join(ROOT, "artifacts", "runs"))
    collect.add_argument("--dest", default=os.path.join(ROOT, "artifacts", "backup-manifests"))
    args = parser.parse_args(argv)
    try:
        if args.command == "check-inputs":
            for line in check_inputs(os.environ):
                print("ok: " + line)
        elif args.command == "vars-file":
            names = vars_file(args.path, os.environ)
            print("vars file written (0600): %s" % (", ".join(names) or "no variables"))
        elif args.command == "summary":
            summary(args.title, args.file, os.environ)
        else:
            written = manifests(args.runs, args.dest)
            print("backup manifests: %s" % (", ".join(written) or "none readable here"))
    except InputError as exc:
        print("deploy input refused: %s" % exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
