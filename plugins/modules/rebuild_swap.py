#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: rebuild_swap
short_description: The release's window in one call - block access, rebuild side by side, prove, swap
version_added: 0.1.0
description:
  - Runs, in one module call and in this order, what the rebuild of a release does inside the maintenance window,
    recording each step in the run journal as the separate modules and journal steps do - with O(window), the
    journal's C(window) V(started) (from C(block_access)); C(block_access) V(started) with the C(previous) connection
    limit; applications blocked and their sessions ended (M(pgshift.ops.db_access)); C(block_access) V(done);
    C(build) V(started); the inputs checked again against O(expect_inputs) (M(pgshift.ops.release_inputs)); the new
    database created with bare tables, production's data copied, the keys, indexes, constraints and triggers built
    and production's database-level state carried (M(pgshift.ops.database_build), M(pgshift.ops.data_copy)); the
    integrity proof (M(pgshift.ops.integrity_check)); C(build) V(done) with C(total_rows); the atomic swap with its
    journal entry, then retention of previous copies (M(pgshift.ops.swap)); with O(window), C(window) V(done) (to
    C(swap)), which returns RV(window_seconds).
  - One call pays Ansible's per-task overhead once instead of about ten times, so the fixed cost of the window goes
    down; RV(steps) says where the time went.
  - The journal stays the way back at every step - each entry is committed as it is recorded, so
    M(pgshift.ops.rollback) (C(playbooks/rollback.yml), the C(pgshift.ops.recover) role) undoes whatever step was
    reached, also when the controller was killed in the middle of one.
  - Before each step the run must still go on - the journal says it runs (not rolled back, nor being rolled back),
    the run lock of production (M(pgshift.ops.run_lock)) is still held, unless O(require_lock=false), and the process
    O(watch_pid) is alive; otherwise the call stops there, naming the step it refused.
  - A failing step fails the call with a message that starts with the step's name, and RV(failed_step); nothing after
    it runs.
extends_documentation_fragment:
  - pgshift.ops.attributes
  - pgshift.ops.attributes.action_group
  - pgshift.ops.connection
  - pgshift.ops.connection.schema_source
  - pgshift.ops.rebuild
attributes:
  check_mode:
    support: full
    details:
      - Nothing is written and the journal is not touched (it may not exist yet). Each step says what it would do -
        the sessions that would be ended, the inputs compared, the C(CREATE DATABASE) statement, the copy's plan and
        statements (made against the dev database, whose schema the new one would get), the swap's names and the
        copies retention would remove; the integrity check is skipped (there is no new database to prove).
  diff_mode:
    support: full
    details: The diff shows production's connection limit and the databases of the cluster before and after.
options:
  previous_access:
    description:
      - Production's C(connlimit) and C(allowconn) before the window, recorded with C(block_access) V(started) so that
        a rollback puts them back. Default - as production has them when the call starts.
    type: dict
  window:
    description:
      - Record both ends of the maintenance window in the journal - V(started) before access is blocked, V(done) once
        the swap restored access. For a run without an application tier; with one, the window opens with the maintenance
        page and closes when it goes off (M(pgshift.ops.run_journal)).
    type: bool
    default: false
  retention_keep:
    description: Previous production databases kept after the swap (never fewer than 1).
    type: int
    default: 2
  swap_timeout:
    description: Seconds the swap waits for sessions on the two databases to end.
    type: int
    default: 30
  online:
    description:
      - The online release (docs/online.md) - the new database was built and filled by M(pgshift.ops.online_fill)
        while production served, and its change stream follows production. Instead of create, copy, post-data and
        the whole proof, the window then stops the stream's holder, refuses if production's schema changed during
        the fill, applies the rest of the stream (catch-up to production's final position), sets the sequences,
        proves the delta (every key the stream touched, on both sides, and every streamed table's count), drops the
        slot, publication and origin, copies again the tables the stream could not carry and the large objects, and
        proves those with the large objects, constraints, sequences and database state; then the swap as usual.
    type: bool
    default: false
  cutover_timeout:
    description: Seconds the catch-up of the change stream may take, applications blocked (O(online)).
    type: int
    default: 120
notes:
  - The connection options point at the production cluster, as a superuser (as for M(pgshift.ops.swap)); the journal
    database must exist (M(pgshift.ops.run_journal) C(action=start) creates it).
seealso:
  - module: pgshift.ops.db_access
  - module: pgshift.ops.release_inputs
  - module: pgshift.ops.database_build
  - module: pgshift.ops.data_copy
  - module: pgshift.ops.integrity_check
  - module: pgshift.ops.swap
  - module: pgshift.ops.rollback
author:
  - pgshift contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Block access, build, copy, prove and swap, each step in the journal
  pgshift.ops.rebuild_swap:
    production_database: shop
    run_id: "{{ run.run_id }}"
    schema_source: "{{ pgshift_dev_connection }}"
    expect_inputs: "{{ inputs.inputs }}"
    migrations_dir: /srv/shop/migrations
    mapping_file: /srv/shop/mapping.yml
    workdir: /var/lib/pgshift/work
    host: db.internal
    password: "{{ vault_pg_password }}"
  register: rebuild
"""

RETURN = r"""
steps:
  description:
    - Each step in order with its C(name), C(state) (V(done), V(planned) in check mode, V(skipped), V(failed)) and its
      C(seconds) - where the window's time went.
  returned: always
  type: list
  elements: dict
  sample: [{name: block_access started, state: done, seconds: 0.004}, {name: copy, state: done, seconds: 1.52}]
seconds:
  description: Wall time of the call.
  returned: always
  type: float
access:
  description: What M(pgshift.ops.db_access) C(state=blocked) returns (C(previous), C(sessions), C(terminated)).
  returned: always
  type: dict
inputs:
  description: What M(pgshift.ops.release_inputs) returns (C(inputs), C(inputs_hash)).
  returned: always
  type: dict
build:
  description: What M(pgshift.ops.database_build) C(step=create) returns (C(database), C(archive), C(statements)).
  returned: always
  type: dict
copy:
  description: What M(pgshift.ops.data_copy) returns (C(tables), C(total_rows), C(sequences), ...).
  returned: always
  type: dict
post_data:
  description: What M(pgshift.ops.database_build) C(step=post-data) returns.
  returned: always
  type: dict
integrity:
  description:
    - What M(pgshift.ops.integrity_check) returns (C(ok), C(tables), ...); C(skipped) in check mode.
    - With O(online), also C(bulk) (the fill's proof against the stream's snapshot), C(delta) (the delta proof per
      streamed table) and C(window_tables).
  returned: always
  type: dict
online:
  description: With O(online) - C(cut_over) (final position, catch-up seconds, sequences, what was dropped),
    C(eligibility) (streamed tables, tables carried in the window with the reason) and C(window_tables) (copied again).
  returned: when online
  type: dict
swap:
  description: What M(pgshift.ops.swap) returns (C(swapped), C(previous), C(removed), ...).
  returned: always
  type: dict
total_rows:
  description: Rows copied in all.
  returned: always
  type: int
window_seconds:
  description: The maintenance window from the journal, when O(window) closed it; null otherwise.
  returned: always
  type: float
  sample: 1.7
failed_step:
  description: The step that failed.
  returned: failure
  type: str
  sample: copy
"""

import typing as t

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgshift.ops.plugins.module_utils import _rebuild as rebuild
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError, fail_from


def main() -> None:
    spec = rebuild.argument_spec()
    spec.update(
        previous_access=dict(type="dict"),
        window=dict(type="bool", default=False),
        retention_keep=dict(type="int", default=2),
        swap_timeout=dict(type="int", default=30),
        online=dict(type="bool", default=False),
        cutover_timeout=dict(type="int", default=120),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    result: t.Dict[str, t.Any] = {}
    try:
        result = rebuild.rebuild_and_swap(
            rebuild.spec_from(
                p,
                module.check_mode,
                module.log,
                previous_access=p["previous_access"],
                window=p["window"],
                retention_keep=p["retention_keep"],
                swap_timeout=float(p["swap_timeout"]),
                online=p["online"],
                cutover_timeout=float(p["cutover_timeout"]),
            )
        )
    except PgShiftError as exc:
        fail_from(module, exc)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
