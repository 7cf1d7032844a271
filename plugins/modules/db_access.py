#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: db_access
short_description: Block application connections to a database for maintenance, and restore them
version_added: 0.1.0
description:
  - O(state=blocked) sets the database's connection limit to 0, which refuses every new non-superuser connection
    while the pipeline (a superuser) keeps working, then terminates the open sessions and waits until they are gone.
  - O(state=restored) puts the connection limit back (O(connlimit)) and makes sure the database accepts connections.
  - The previous settings are returned so a playbook or the journal can restore them.
extends_documentation_fragment:
  - pgshift.ops.connection
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in diff mode).
    support: full
options:
  target_database:
    description: The database to block or restore (the connection itself goes to O(database)).
    type: str
    required: true
  state:
    description: V(blocked) or V(restored).
    type: str
    required: true
    choices: [blocked, restored]
  connlimit:
    description: Connection limit to restore, for O(state=restored); -1 means no limit.
    type: int
    default: -1
  timeout:
    description: Seconds to wait for terminated sessions to go away.
    type: int
    default: 30
notes:
  - The connecting role must be a superuser, since a connection limit does not apply to superusers only.
author:
  - pgshift contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Maintenance on for the database
  pgshift.ops.db_access:
    target_database: shop
    state: blocked
    host: db.internal
    password: "{{ vault_pg_password }}"
  register: access

- name: Maintenance off for the database
  pgshift.ops.db_access:
    target_database: shop
    state: restored
    connlimit: "{{ access.previous.connlimit }}"
    host: db.internal
    password: "{{ vault_pg_password }}"
"""

RETURN = r"""
previous:
  description: Settings before the change.
  returned: when state is blocked
  type: dict
  sample: {"connlimit": -1, "allowconn": true}
terminated:
  description: Sessions that were terminated.
  returned: when state is blocked and not in check mode
  type: list
  elements: dict
sessions:
  description: Sessions open before the change.
  returned: when state is blocked
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgshift.ops.plugins.module_utils import _release as release
from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, connection_argument_spec
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError, fail_from


def main() -> None:
    spec = connection_argument_spec()
    spec.update(
        target_database=dict(type="str", required=True),
        state=dict(type="str", required=True, choices=["blocked", "restored"]),
        connlimit=dict(type="int", default=-1),
        timeout=dict(type="int", default=30),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    cluster = ConnParams.from_params(p)
    try:
        if p["state"] == "blocked":
            result = release.block_access(cluster, p["target_database"], module.check_mode, float(p["timeout"]))
            result["diff"] = release.block_access_diff(p["target_database"], result)
        else:
            changed = release.restore_access(cluster, p["target_database"], p["connlimit"], module.check_mode)
            result = {"changed": changed, "database": p["target_database"], "connlimit": p["connlimit"]}
    except PgShiftError as exc:
        fail_from(module, exc)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
