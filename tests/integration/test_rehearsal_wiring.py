"""The wiring proposed for prod_restore.yml, exercised on a throwaway world: the rehearsal gate in the preflight, a
perf_check baseline of production after the verified backup, and a perf_check after the swap inside the "API checks"
block (whose rescue swaps back).

prod_restore.yml belongs to the release area; this test inserts the proposed tasks (WIRING below, the same YAML as in
docs/rehearsal.md and the rehearsal report) into a copy of it, so that the proposal is proven before it is merged:
- a production inventory without a matching rehearsal is refused in the preflight, production untouched;
- with a passing rehearsal of the same inputs the gate lets the release through, and a regression injected after the
  swap (an index dropped in the new production) is caught by perf_check and production is swapped back.
"""

from __future__ import annotations

import contextlib
import os
import typing as t

import pgworld
import pytest
import yaml
from conftest import ROOT
from test_rehearsal_world import make_rehearsal

pytestmark = pytest.mark.slow

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
  when: pgshift_test_inject_regression | default(false) | bool
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


def columns(cluster: pgworld.Cluster, database: str, table: str) -> t.List[str]:
    with contextlib.closing(cluster.connect(database)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = %s",
            (table,),
        )
        return [r[0] for r in cur.fetchall()]


def has_constraint(cluster: pgworld.Cluster, database: str, name: str) -> bool:
    with contextlib.closing(cluster.connect(database)) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_constraint WHERE conname = %s", (name,))
        return cur.fetchone() is not None


def test_gate_and_post_swap_perf_check_in_the_release(
    world: pgworld.World, run_playbook: t.Callable[..., t.Any], tmp_path: t.Any
) -> None:
    playbook = wired_playbook(str(tmp_path))
    rehearsals = str(tmp_path / "rehearsals")
    production_like = {
        "pgshift_environment": "production",
        "pgshift_confirm": "shop",
        "pgshift_rehearsals_dir": rehearsals,
        "pgshift_perf_queries_file": os.path.join(ROOT, "sample_app", "queries.yml"),
        "pgshift_perf_runs": 3,
    }
    env = {"PGSHIFT_WORLD": world.state}
    prod = world.clusters["prod"]

    # no rehearsal: refused in the preflight, before anything changes
    refused = run_playbook(playbook, extra_vars=production_like, env=env)
    assert refused.rc != 0
    assert "no passing rehearsal of these inputs" in refused.output and "make rehearsal" in refused.output
    assert "full_name" in columns(prod, "shop", "customers")
    assert world.meta["password"] not in refused.output

    # a passing rehearsal of the same inputs
    rehearsal = make_rehearsal(world, str(tmp_path))
    assert rehearsal.rc == 0, rehearsal.output[-4000:]

    # the gate lets the release through; the regression after the swap is caught and production swapped back
    run = run_playbook(playbook, extra_vars=dict(production_like, pgshift_test_inject_regression=True), env=env)
    assert run.rc != 0, run.output[-4000:]
    assert "maintenance window" in run.output and "forecast" in run.output
    assert "no longer uses order_lines_pkey" in run.output
    assert "production was swapped back" in run.output
    assert "full_name" in columns(prod, "shop", "customers"), "production is the previous one again"
    assert has_constraint(prod, "shop", "order_lines_pkey")
    assert world.meta["password"] not in run.output
