#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: rollback
short_description: Put the production database back as it was before a release run, from the journal
version_added: 0.1.0
description:
  - Reads the run journal on the production cluster and undoes what the run did to the databases, whatever step it
    reached. It swaps back when the swap was done (one transaction), drops the half-built C(<production>__next), and
    restores production's previous connection limit so it accepts connections again.
  - Without O(run_id) it undoes the latest unfinished run or, when there is none, the latest release if it
    succeeded and is not final yet (its change capture is still in production).
  - After the swap the new production has served the applications. The swap-back first carries every row inserted,
    updated or deleted there since the swap back into the previous production (through the inverse of the
    release's mapping, in one transaction, applications blocked), sets its sequences past what the new one issued,
    and proves the carried rows equal on both sides (counts and checksums). The new database is kept as
    C(<production>__failed_<timestamp>); pgshift never drops a database that served.
  - When a write cannot go back (a table or a column value the previous schema lacks, a row an old constraint
    refuses) nothing is swapped - the new database stays production, access is restored - and the result says per
    table how many rows were written and which cannot go back (RV(refused) true), unless O(force_swap_back).
  - Idempotent, since every action looks at the actual state first; running it twice is harmless.
  - Refuses while the run's lock holder is alive (a live run), naming its session, unless O(lock_holder_pid) is the
    pid of that holder (the run's own rescue passes what M(pgshift.ops.run_lock) returned at acquire). The run is
    claimed in the journal first, so that a live run's next step stops.
  - Connections wait up to two minutes for a server that is restarting (crash recovery after a killed backend).
  - Services and maintenance pages are restored by the C(pgshift.ops.recover) role around this module.
  - When neither production nor its previous copy exists, it stops and says to restore from the verified backup
    (C(playbooks/restore_backup.yml)), which needs its own confirmation.
extends_documentation_fragment:
  - pgshift.ops.attributes
  - pgshift.ops.attributes.action_group
  - pgshift.ops.connection
attributes:
  check_mode:
    support: full
    details: Check mode lists the actions it would take.
  diff_mode:
    support: none
options:
  production_database:
    description: Name of the production database.
    type: str
    required: true
  run_id:
    description: The run to undo; default the latest unfinished run of O(production_database).
    type: str
  journal_database:
    description: Database of the production cluster that holds the journal.
    type: str
    default: pgshift
  reason:
    description: Why, recorded in the journal.
    type: str
    default: rollback requested
  force_swap_back:
    description:
      - Swap back even when some writes made after the swap cannot go back; what can go back is carried, and the new
        database, which still holds the rest, is kept as C(<production>__kept_<timestamp>), a name retention never
        removes.
    type: bool
    default: false
  lock_holder_pid:
    description:
      - Pid of the run lock holder of the run being undone (RV(pgshift.ops.run_lock#module:holder_pid)), given by
        that run's own rescue. Without it, a run whose lock holder is alive is not rolled back.
    type: int
  workdir:
    description:
      - The work folder of the builds (M(pgshift.ops.database_build) O(workdir)). After the rollback, the
        C(pgshift-build-*) folders of finished runs (the rolled-back one included) are removed; those of unfinished
        runs stay. In check mode, listed only.
    type: path
seealso:
  - module: pgshift.ops.swap
author:
  - pgshift contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Roll back the last unfinished run
  pgshift.ops.rollback:
    production_database: shop
    reason: API checks failed after the swap
    host: db.internal
    password: "{{ vault_pg_password }}"
"""

RETURN = r"""
run_id:
  description: The run that was rolled back (null when there was none).
  returned: always
  type: str
actions:
  description: What was undone, in order.
  returned: always
  type: list
  elements: str
  sample: ["carry back: ...", "swap back: shop -> shop__failed_20261125101500 (kept), shop__prev_20261125 -> shop"]
refused:
  description: True when the swap-back was refused because writes made after the swap cannot go back.
  returned: always
  type: bool
carried:
  description: Per table, rows written after the swap (inserted, updated, deleted, truncated) and the proof.
  returned: when a swap-back was attempted
  type: dict
workdirs_removed:
  description: Work folders of finished runs removed (in check mode, those that would be).
  returned: always
  type: list
  elements: str
kept:
  description: Name under which the new database is kept after a swap-back.
  returned: when the swap was undone
  type: str
message:
  description: What was done (or why not), for people.
  returned: when there is something to say
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgshift.ops.plugins.module_utils import _journal as journal
from ansible_collections.pgshift.ops.plugins.module_utils import _release as release
from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, connection_argument_spec
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError, fail_from


def main() -> None:
    spec = connection_argument_spec()
    spec.update(
        production_database=dict(type="str", required=True),
        run_id=dict(type="str"),
        journal_database=dict(type="str", default="pgshift"),
        reason=dict(type="str", default="rollback requested"),
        force_swap_back=dict(type="bool", default=False),
        lock_holder_pid=dict(type="int"),
        workdir=dict(type="path"),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    cluster = ConnParams.from_params(p)
    try:
        missing = journal.ensure_journal(
            cluster, p["journal_database"], module.check_mode, retry_seconds=release.RECOVERY_RETRY_SECONDS
        )
        if module.check_mode and missing:
            module.exit_json(
                changed=False, run_id=None, actions=[], refused=False, message="no journal yet: nothing to roll back"
            )
        result = release.rollback(
            cluster,
            p["production_database"],
            p["run_id"],
            p["journal_database"],
            module.check_mode,
            p["reason"],
            force_swap_back=p["force_swap_back"],
            holder_pid=p["lock_holder_pid"],
        )
        result["workdirs_removed"] = (
            []
            if missing
            else release.clean_finished_workdirs(cluster, p["journal_database"], p["workdir"], module.check_mode)
        )
    except PgShiftError as exc:
        fail_from(module, exc)
    result.setdefault("refused", False)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
