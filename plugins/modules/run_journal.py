#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: run_journal
short_description: Record a release run and its steps in the journal on the production cluster
version_added: 0.1.0
description:
  - Keeps the journal of a C(prod_restore) run in the database O(journal_database) of the production cluster
    (created when missing). It holds the run, its inputs, and every step with its state.
  - A new run is refused while an earlier run on the same production database is unfinished; the message says to
    roll back first.
  - The journal is what C(playbooks/rollback.yml) reads to put production back, whatever step was reached.
  - O(action=step) and O(action=finish) refuse once the run is no longer C(running) (rolled back by C(rollback.yml),
    being rolled back, or closed), so that a run stops at its next step.
  - Connections wait up to two minutes for a server that is restarting (journal writes in a rescue must not be lost
    to crash recovery).
  - The maintenance window is measured once, by the journal - O(step=window) V(started) when maintenance goes on
    (or application access is blocked, when there is no app tier), V(done) when it goes off (or access is restored);
    recording V(done) returns RV(window_seconds).
extends_documentation_fragment:
  - pgshift.ops.attributes
  - pgshift.ops.attributes.action_group
  - pgshift.ops.connection
attributes:
  check_mode:
    support: full
    details: In check mode nothing is written; O(action=start) returns a placeholder run id.
  diff_mode:
    support: none
options:
  action:
    description:
      - V(start) registers a run, V(step) records a step state, V(finish) closes the run, V(show) returns a run.
      - V(final) closes the latest release (or O(run_id)) as final - its swap-back change capture is removed from
        production (triggers, function, log), writes stop paying for it, and the release can no longer be swapped
        back with its writes carried; recorded as step C(final).
    type: str
    required: true
    choices: [start, step, finish, show, final]
  production_database:
    description: Name of the production database the run releases to.
    type: str
    required: true
  journal_database:
    description: Database of the production cluster that holds the journal.
    type: str
    default: pgshift
  run_id:
    description:
      - The run, for O(action=step), O(action=finish) and O(action=show) (default for show is the latest run).
      - For O(action=start), the id the run already has (the pgshift.ops.progress callback mints one at playbook
        start and exports it to the controller as C(PGSHIFT_RUN_ID); C(prod_restore.yml) passes it here), so the
        journal, the run report, its folder and the notifications name the run alike. Without it an id is minted.
        An id already in the journal is refused.
    type: str
  step:
    description: Name of the step, for O(action=step).
    type: str
  state:
    description: State of the step, for O(action=step).
    type: str
    choices: [started, done, failed, undone]
  detail:
    description: What the step did and what undoing it needs (no secrets).
    type: dict
    default: {}
  status:
    description: Final status, for O(action=finish).
    type: str
    choices: [succeeded, failed, rolled_back, aborted]
  note:
    description: A note stored with the final status.
    type: str
  inputs:
    description: Inputs of the run and their hashes, for O(action=start).
    type: dict
    default: {}
  workdir:
    description:
      - For O(action=finish), the work folder of the builds (M(pgshift.ops.database_build) O(workdir)). Once the run is
        closed, its C(pgshift-build-*) folder and those of every other finished run are removed; the folders of
        unfinished runs stay.
    type: path
author:
  - pgshift contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Start a run
  pgshift.ops.run_journal:
    action: start
    production_database: shop
    inputs: "{{ pgshift_inputs }}"
    host: db.internal
    password: "{{ vault_pg_password }}"
  register: run

- name: Record a step
  pgshift.ops.run_journal:
    action: step
    production_database: shop
    run_id: "{{ run.run_id }}"
    step: backup
    state: done
    detail:
      path: /var/backups/pgshift/shop.dump
"""

RETURN = r"""
run_id:
  description: The run.
  returned: always
  type: str
  sample: 20261125T231500Z-1a2b3c
run:
  description: The run with its steps, for O(action=show).
  returned: when action is show
  type: dict
window_seconds:
  description: The maintenance window of the run, from the journal (O(step=window) started to done).
  returned: for O(action=step) with O(step=window) and O(state=done); null while the start is not recorded
  type: float
  sample: 20.7
workdirs_removed:
  description: Work folders removed, for O(action=finish) with O(workdir).
  returned: when action is finish
  type: list
  elements: str
capture_removed:
  description: Whether production had a swap-back change capture that was removed, for O(action=final).
  returned: when action is final
  type: bool
"""

import typing as t

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgshift.ops.plugins.module_utils import _journal as journal
from ansible_collections.pgshift.ops.plugins.module_utils import _release as release
from ansible_collections.pgshift.ops.plugins.module_utils._connection import (
    ConnParams,
    connect,
    connection_argument_spec,
)
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError, fail_from


def main() -> None:
    spec = connection_argument_spec()
    spec.update(
        action=dict(type="str", required=True, choices=["start", "step", "finish", "show", "final"]),
        production_database=dict(type="str", required=True),
        journal_database=dict(type="str", default=journal.DEFAULT_JOURNAL_DB),
        run_id=dict(type="str"),
        step=dict(type="str"),
        state=dict(type="str", choices=["started", "done", "failed", "undone"]),
        detail=dict(type="dict", default={}),
        status=dict(type="str", choices=["succeeded", "failed", "rolled_back", "aborted"]),
        note=dict(type="str"),
        inputs=dict(type="dict", default={}),
        workdir=dict(type="path"),
    )
    module = AnsibleModule(
        argument_spec=spec,
        supports_check_mode=True,
        required_if=[
            ("action", "step", ("run_id", "step", "state")),
            ("action", "finish", ("run_id", "status")),
        ],
    )
    p = module.params
    cluster = ConnParams.from_params(p)
    result: t.Dict[str, t.Any] = {}
    try:
        if module.check_mode and p["action"] != "show":
            module.exit_json(changed=True, run_id=p["run_id"] or "check-mode-run", window_seconds=None)
        journal.ensure_journal(cluster, p["journal_database"], retry_seconds=journal.RETRY_SECONDS)
        conn = connect(journal.journal_params(cluster, p["journal_database"]), retry_seconds=journal.RETRY_SECONDS)
        try:
            with conn.cursor() as cur:
                if p["action"] == "start":
                    run_id = journal.start_run(cur, p["production_database"], p["inputs"], p["run_id"] or None)
                    journal.record_step(cur, run_id, "start", "done", {"inputs": p["inputs"]})
                    result = dict(changed=True, run_id=run_id)
                elif p["action"] == "step":
                    window = journal.step(cur, p["run_id"], p["step"], p["state"], p["detail"])
                    result = dict(changed=True, run_id=p["run_id"])
                    if p["step"] == journal.WINDOW_STEP and p["state"] == "done":
                        result["window_seconds"] = window
                elif p["action"] == "finish":
                    journal.assert_running(cur, p["run_id"], "closing the run as %s" % p["status"], lock=True)
                    journal.finish_run(cur, p["run_id"], p["status"], p["note"])
                    result = dict(
                        changed=True, run_id=p["run_id"], window_seconds=journal.window_seconds(cur, p["run_id"])
                    )
                elif p["action"] == "final":
                    final_run = p["run_id"] or journal.latest_run(cur, p["production_database"], only_open=False)
                    removed = release.close_as_final(cluster, p["production_database"])
                    if final_run:
                        journal.record_step(cur, final_run, "final", "done", {"capture_removed": removed})
                    result = dict(changed=removed, run_id=final_run, capture_removed=removed)
                else:
                    shown = p["run_id"] or journal.latest_run(cur, p["production_database"], only_open=False)
                    run = journal.get_run(cur, shown) if shown else None
                    result = dict(changed=False, run_id=shown, run=run)
            conn.commit()
        finally:
            conn.close()
        if p["action"] == "finish":
            result["workdirs_removed"] = release.clean_finished_workdirs(cluster, p["journal_database"], p["workdir"])
    except PgShiftError as exc:
        fail_from(module, exc)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
