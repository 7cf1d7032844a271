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
  - O(state=blocked) keeps applications out, then terminates the open sessions and waits until they are gone. When
    the connecting role is a superuser, the database's connection limit goes to 0, which every other role obeys.
    Otherwise (managed services such as RDS, Cloud SQL, Azure), the CONNECT privilege is revoked from PUBLIC and
    from every role that has it but the connecting one (which must own the database), since a connection limit
    would keep the pipeline out too; ending other roles' sessions needs membership in C(pg_signal_backend).
  - O(state=restored) puts back exactly what O(state=blocked) changed (O(previous), as it returned it; without it,
    the connection limit O(connlimit)) and makes sure the database accepts connections.
  - The previous settings are returned so a playbook or the journal can restore them; with O(run_id) they are
    recorded in the run journal before anything changes.
extends_documentation_fragment:
  - pgshift.ops.attributes
  - pgshift.ops.attributes.action_group
  - pgshift.ops.connection
attributes:
  check_mode:
    support: full
  diff_mode:
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
  previous:
    description: For O(state=restored), the RV(previous) a O(state=blocked) call returned.
    type: dict
  timeout:
    description: Seconds to wait for terminated sessions to go away.
    type: int
    default: 30
  run_id:
    description: The release run whose journal (step C(block_access)) records the previous settings first.
    type: str
  journal_database:
    description: Database of the run journal, with O(run_id).
    type: str
    default: pgshift
notes:
  - A superuser's sessions are never kept out by either method; the release's Preflight refuses while there are.
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
    previous: "{{ access.previous }}"
    host: db.internal
    password: "{{ vault_pg_password }}"
"""

RETURN = r"""
previous:
  description: Settings before the change.
  returned: when state is blocked
  type: dict
  sample: {"method": "acl", "connlimit": -1, "allowconn": true, "connect": [["PUBLIC", false], ["shop_admin", false]]}
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
        previous=dict(type="dict"),
        timeout=dict(type="int", default=30),
        run_id=dict(type="str"),
        journal_database=dict(type="str", default="pgshift"),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    cluster = ConnParams.from_params(p)
    try:
        if p["state"] == "blocked":
            result = release.block_access(
                cluster,
                p["target_database"],
                module.check_mode,
                float(p["timeout"]),
                run_id=p["run_id"],
                journal_db=p["journal_database"],
            )
            result["diff"] = release.block_access_diff(p["target_database"], result)
        else:
            changed = release.restore_access(
                cluster, p["target_database"], p["connlimit"], module.check_mode, previous=p["previous"]
            )
            result = {"changed": changed, "database": p["target_database"], "connlimit": p["connlimit"]}
    except PgShiftError as exc:
        fail_from(module, exc)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
