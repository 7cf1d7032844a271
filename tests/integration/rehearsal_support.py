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


GATE = yaml.safe_load(
    """
- name: Preflight | a passing staging rehearsal of these very inputs (make rehearsal), recent enough
  pgshift.ops.rehearsal:
    action: gate
    host: "{{ pgshift_prod_connection.host | default(omit) }}"
    port: "{{ pgshift_prod_connection.port | default(omit) }}"
    user: "{{ pgshift_prod_connection.user | default(omit) }}"
    password: "{{ pgshift_prod_connection.password | default(omit) }}"
    sslmode: "{{ pgshift_prod_connection.sslmode | default(omit) }}"
    sslrootcert: "{{ pgshift_prod_connection.sslrootcert | default(omit) }}"
    production_database: "{{ pgshift_prod_connection.database }}"
    rehearsals_dir: >-
      {{ pgshift_rehearsals_dir | default((pgshift_artifacts_dir | default(playbook_dir ~ '/../artifacts'))
      ~ '/rehearsals') }}
    inputs: "{{ pgshift_inputs }}"
    max_age_hours: "{{ pgshift_rehearsal_max_age_hours | default(168) }}"
    required: "{{ (pgshift_environment | default('')) != 'local' }}"
    override_reason: "{{ pgshift_rehearsal_override | default(omit) }}"
  delegate_to: "{{ groups['pgshift_db'][0] }}"
  run_once: true
  register: pgshift_rehearsal_gate

- name: Preflight | the maintenance window, as the rehearsal forecasts it
  ansible.builtin.debug:
    msg: "{{ pgshift_rehearsal_gate.forecast.text | default('no rehearsal forecast') }}"
  run_once: true
"""
)

BASELINE = yaml.safe_load(
    """
- name: Backup | performance baseline of production before the window (read only, no ANALYZE)
  pgshift.ops.perf_check:
    host: "{{ pgshift_prod_connection.host | default(omit) }}"
    port: "{{ pgshift_prod_connection.port | default(omit) }}"
    user: "{{ pgshift_prod_connection.user | default(omit) }}"
    password: "{{ pgshift_prod_connection.password | default(omit) }}"
    sslmode: "{{ pgshift_prod_connection.sslmode | default(omit) }}"
    sslrootcert: "{{ pgshift_prod_connection.sslrootcert | default(omit) }}"
    database: "{{ pgshift_prod_connection.database }}"
    queries_file: "{{ pgshift_perf_queries_file }}"
    analyze: false
    runs: "{{ pgshift_perf_runs | default(5) }}"
    baseline_out: "{{ pgshift_backup_dir }}/perf/{{ pgshift_run.run_id }}-baseline.json"
    fail_on_findings: false
  register: pgshift_perf_baseline
  when: pgshift_perf_queries_file is defined and not ansible_check_mode
"""
)

AFTER = yaml.safe_load(
    """
- name: API checks | the query set on the new production, against the baseline (ANALYZE first)
  pgshift.ops.perf_check:
    host: "{{ pgshift_prod_connection.host | default(omit) }}"
    port: "{{ pgshift_prod_connection.port | default(omit) }}"
    user: "{{ pgshift_prod_connection.user | default(omit) }}"
    password: "{{ pgshift_prod_connection.password | default(omit) }}"
    sslmode: "{{ pgshift_prod_connection.sslmode | default(omit) }}"
    sslrootcert: "{{ pgshift_prod_connection.sslrootcert | default(omit) }}"
    database: "{{ pgshift_prod_connection.database }}"
    queries_file: "{{ pgshift_perf_queries_file }}"
    baseline: "{{ pgshift_perf_baseline.files_written[0] }}"
    runs: "{{ pgshift_perf_runs | default(5) }}"
    warn_ratio: "{{ pgshift_perf_warn_ratio | default(1.5) }}"
    fail_ratio: "{{ pgshift_perf_fail_ratio | default(3.0) }}"
  register: pgshift_perf_after
  when: pgshift_perf_baseline.files_written | default([]) | length > 0 and not ansible_check_mode
"""
)

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


def _play(plays: t.List[t.Dict[str, t.Any]], name: str) -> t.Dict[str, t.Any]:
    return next(p for p in plays if p.get("name") == name)


def _block(play: t.Dict[str, t.Any]) -> t.List[t.Dict[str, t.Any]]:
    return next(task["block"] for task in play["tasks"] if "block" in task)


def wired_playbook(folder: str) -> str:
    with open(os.path.join(ROOT, "playbooks", "prod_restore.yml")) as handle:
        plays = yaml.safe_load(handle)
    preflight = _play(plays, "Preflight")["tasks"]
    after_inputs = next(i for i, task in enumerate(preflight) if task.get("register") == "pgshift_inputs") + 1
    preflight[after_inputs:after_inputs] = GATE
    backup = _block(_play(plays, "Backup"))
    verified = next(i for i, task in enumerate(backup) if "ansible.builtin.assert" in task) + 1
    backup[verified:verified] = BASELINE
    api = _block(_play(plays, "API checks"))
    api[:0] = INJECT + AFTER
    path = os.path.join(folder, "prod_restore_wired.yml")
    with open(path, "w") as handle:
        yaml.safe_dump(plays, handle, sort_keys=False, allow_unicode=True, width=200)
    return path


def has_constraint(cluster: pgworld.Cluster, database: str, name: str) -> bool:
    with contextlib.closing(cluster.connect(database)) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_constraint WHERE conname = %s", (name,))
        return cur.fetchone() is not None
