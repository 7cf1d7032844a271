"""Helpers of the rehearsal tests: `make rehearsal` as a user runs it, gate arguments, and the wiring proposed for
prod_restore.yml inserted into a copy of it (prod_restore.yml belongs to the release area: the proposal is proven
here before it is merged; the same YAML is in docs/rehearsal.md)."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import subprocess
import typing as t

import pgworld
import yaml
from conftest import ROOT, ansible_env


class Rehearsal(t.NamedTuple):
    rc: int
    output: str
    record: t.Optional[t.Dict[str, t.Any]]
    record_path: t.Optional[str]
    rehearsals_dir: str


def make_rehearsal(world: pgworld.World, base: str, *extra: str) -> Rehearsal:
    """`make rehearsal` as a user runs it, with the rehearsals and run reports kept in ``base``."""
    rehearsals = os.path.join(base, "rehearsals")
    args = [
        "-e pgshift_rehearsals_dir=" + rehearsals,
        "-e pgshift_rehearsal_fresh_backup=true",
        # hermetic: no production run report of this repository's artifacts/ feeds the application tier allowance
        "-e pgshift_rehearsal_production_report=" + os.path.join(base, "no-production-report.json"),
        *extra,
    ]
    proc = subprocess.run(
        [
            "make",
            "-s",
            "rehearsal",
            "REHEARSAL_REPORTS=" + os.path.join(base, "runs"),
            "REHEARSAL_ARGS=" + " ".join(args),
        ],
        cwd=ROOT,
        env=ansible_env({"PGSHIFT_WORLD": world.state}),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    records = sorted(glob.glob(os.path.join(rehearsals, "*", "rehearsal.json")))
    record = json.loads(open(records[-1]).read()) if records else None
    return Rehearsal(proc.returncode, proc.stdout + proc.stderr, record, records[-1] if records else None, rehearsals)


def columns(cluster: pgworld.Cluster, database: str, table: str) -> t.List[str]:
    with contextlib.closing(cluster.connect(database)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = %s",
            (table,),
        )
        return [r[0] for r in cur.fetchall()]


def databases(cluster: pgworld.Cluster) -> t.List[str]:
    with contextlib.closing(cluster.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database")
        return [r[0] for r in cur.fetchall()]


def gate_args(world: pgworld.World, rehearsals_dir: str, **extra: t.Any) -> t.Dict[str, t.Any]:
    args = dict(
        world.clusters["prod"].conn("postgres"),
        action="gate",
        rehearsals_dir=rehearsals_dir,
        production_database="shop",
        schema_source=world.clusters["dev"].conn("shop"),
        migrations_dir=os.path.join(ROOT, "sample_app", "migrations"),
        mapping_file=os.path.join(ROOT, "sample_app", "mapping.yml"),
    )
    args.update(extra)
    return args


# test only: the regression, injected in the new production right after the swap
INJECT = yaml.safe_load(
    """
- name: TEST ONLY | an index the queries need disappears from the new production
  ansible.builtin.command:
    argv: [psql, -X, -q, -v, ON_ERROR_STOP=1, -c, "ALTER TABLE order_lines DROP CONSTRAINT order_lines_pkey"]
  environment:
    PGHOST: "{{ pgshift_prod_connection.host }}"
    PGPORT: "{{ pgshift_prod_connection.port }}"
    PGUSER: "{{ pgshift_prod_connection.user }}"
    PGDATABASE: "{{ pgshift_prod_connection.database }}"
    PGPASSWORD: "{{ pgshift_prod_connection.password }}"
  changed_when: true
  no_log: true
  when: test_inject_regression | default(false) | bool
"""
)


def wired_playbook(folder: str) -> str:
    """prod_restore.yml (the rehearsal gate, the query baseline and the query check after the swap are its own) with
    one test-only play between the restart and the API checks: the regression, injected into the new production."""
    with open(os.path.join(ROOT, "playbooks", "prod_restore.yml")) as handle:
        plays = yaml.safe_load(handle)
    api = next(i for i, p in enumerate(plays) if p.get("name") == "API checks")
    plays[api:api] = [{"name": "TEST ONLY", "hosts": "pgshift_db", "gather_facts": False, "tasks": INJECT}]
    path = os.path.join(folder, "prod_restore_wired.yml")
    with open(path, "w") as handle:
        yaml.safe_dump(plays, handle, sort_keys=False, allow_unicode=True, width=200)
    return path


def has_constraint(cluster: pgworld.Cluster, database: str, name: str) -> bool:
    with contextlib.closing(cluster.connect(database)) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_constraint WHERE conname = %s", (name,))
        return cur.fetchone() is not None
