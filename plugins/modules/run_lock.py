#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: run_lock
short_description: One release run at a time per production database
version_added: 0.1.0
description:
  - O(action=acquire) starts a small detached process on the database host whose session holds a PostgreSQL session
    advisory lock for the production database, in the journal database. A second run fails fast and names the session
    that holds the lock. Whatever kills the run kills the lock with it.
  - The holder lets go when the run is no longer C(running) in the journal (finished or rolled back), when the
    controller process named by O(watch_pid) is gone, when O(action=release) asks, or after O(max_seconds).
  - O(action=release) asks the holder to let go and waits until the lock is free; O(action=status) reports holders.
extends_documentation_fragment:
  - pgshift.ops.attributes
  - pgshift.ops.attributes.action_group
  - pgshift.ops.connection
attributes:
  check_mode:
    support: full
    details: In check mode O(action=acquire) only reports whether the lock is free.
  diff_mode:
    support: none
options:
  action:
    description: What to do.
    type: str
    required: true
    choices: [acquire, release, status]
  production_database:
    description: The production database the lock is for.
    type: str
    required: true
  journal_database:
    description: Database of the production cluster that holds the journal (the lock's session connects there).
    type: str
    default: pgshift
  watch_pid:
    description:
      - Pid of the controller process on this host (C(lookup('pgshift.ops.controller_pid'))); the lock is released
        when it dies. Leave unset when the controller runs on another machine.
    type: int
  max_seconds:
    description: Longest time the lock is held.
    type: int
    default: 21600
seealso:
  - module: pgshift.ops.run_journal
author:
  - pgshift contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Take the run lock
  pgshift.ops.run_lock:
    action: acquire
    production_database: shop
    watch_pid: "{{ lookup('pgshift.ops.controller_pid') }}"
    host: db.internal
    password: "{{ vault_pg_password }}"
"""

RETURN = r"""
holder_pid:
  description: Pid of the holder process on the database host.
  returned: when action is acquire and not in check mode
  type: int
holders:
  description: Sessions that hold the lock.
  returned: when action is status, or acquire in check mode
  type: list
  elements: dict
released:
  description: Whether a holder was running and let go.
  returned: when action is release
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgshift.ops.plugins.module_utils import _journal as journal
from ansible_collections.pgshift.ops.plugins.module_utils import _run_lock as run_lock
from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, connection_argument_spec
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError, fail_from


def main() -> None:
    spec = connection_argument_spec()
    spec.update(
        action=dict(type="str", required=True, choices=["acquire", "release", "status"]),
        production_database=dict(type="str", required=True),
        journal_database=dict(type="str", default="pgshift"),
        watch_pid=dict(type="int"),
        max_seconds=dict(type="int", default=21600),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    cluster = ConnParams.from_params(p)
    target = journal.journal_params(cluster, p["journal_database"])
    database = p["production_database"]
    try:
        missing = journal.ensure_journal(cluster, p["journal_database"], module.check_mode)
        if p["action"] == "status" or (p["action"] == "acquire" and module.check_mode):
            owners = [] if missing else run_lock.is_locked(target, database)
            if owners and p["action"] == "acquire":
                raise PgShiftError("another pgshift run on %r is in progress (lock held by %s)" % (database, owners[0]))
            module.exit_json(changed=p["action"] == "acquire", holders=owners)
        if p["action"] == "acquire":
            result = run_lock.acquire(target, database, p["watch_pid"], p["max_seconds"])
            module.exit_json(changed=True, **result)
        released = False if module.check_mode else run_lock.release(target, database)
        module.exit_json(changed=released, released=released)
    except PgShiftError as exc:
        fail_from(module, exc)


if __name__ == "__main__":
    main()
