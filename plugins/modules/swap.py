#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: swap
short_description: Atomically put the rebuilt database in place of production
version_added: 0.1.0
description:
  - Renames production to C(<production>__prev_<UTC timestamp>) and C(<production>__next) to production in one
    transaction, together with the journal entry, so exactly one database carries the production name at any instant
    and the journal always knows which one.
  - Sessions on both databases are refused (connection limit 0) and terminated first; the new production gets the
    connection limit production had before the run (O(connlimit)).
  - Production is never dropped; previous databases beyond O(retention_keep) (at least one is always kept) are
    removed after a successful swap.
  - Right before the renames, with both databases blocked, a change capture (row triggers writing to the schema
    C(pgshift_capture)) is installed on every carried table of the rebuilt database, with the inverse of the
    release's mapping, so that a swap-back (M(pgshift.ops.rollback)) carries every write made after the swap back
    into the previous production. The capture of an earlier release is removed from the outgoing production, as that
    release is final once a new one swaps.
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
  production_database:
    description: Name of the production database.
    type: str
    required: true
  run_id:
    description: The journal's run id.
    type: str
    required: true
  connlimit:
    description: Connection limit of production before the run (from M(pgshift.ops.db_access)).
    type: int
    default: -1
  journal_database:
    description: Database of the production cluster that holds the journal.
    type: str
    default: pgshift
  retention_keep:
    description: How many previous production databases to keep (at least 1).
    type: int
    default: 2
  timeout:
    description: Seconds to wait for terminated sessions to go away.
    type: int
    default: 30
  mapping_file:
    description:
      - The release's mapping file (renamed tables and columns), the one M(pgshift.ops.data_copy) used; its inverse
        is stored with the change capture.
    type: path
  capture:
    description:
      - Install the change capture in the rebuilt database. Without it, a swap-back cannot find the writes made after
        the swap and refuses unless forced.
    type: bool
    default: true
seealso:
  - module: pgshift.ops.rollback
author:
  - pgshift contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Swap
  pgshift.ops.swap:
    production_database: shop
    run_id: "{{ run.run_id }}"
    connlimit: "{{ access.previous.connlimit }}"
    host: db.internal
    password: "{{ vault_pg_password }}"
"""

RETURN = r"""
swapped:
  description: Whether the rename happened.
  returned: always
  type: bool
previous:
  description: New name of the former production database.
  returned: always
  type: str
  sample: shop__prev_20261125231500
capture:
  description: The change capture installed in the new production (its database and the tables captured).
  returned: when the swap happened with O(capture)
  type: dict
removed:
  description: Previous databases removed by retention.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgshift.ops.plugins.module_utils import _release as release
from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, connection_argument_spec
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError, fail_from


def main() -> None:
    spec = connection_argument_spec()
    spec.update(
        production_database=dict(type="str", required=True),
        run_id=dict(type="str", required=True),
        connlimit=dict(type="int", default=-1),
        journal_database=dict(type="str", default="pgshift"),
        retention_keep=dict(type="int", default=2),
        timeout=dict(type="int", default=30),
        mapping_file=dict(type="path"),
        capture=dict(type="bool", default=True),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    cluster = ConnParams.from_params(p)
    try:
        result = release.swap_release(
            cluster,
            p["production_database"],
            p["run_id"],
            p["connlimit"],
            p["journal_database"],
            module.check_mode,
            float(p["timeout"]),
            p["mapping_file"],
            p["capture"],
            p["retention_keep"],
        )
    except PgShiftError as exc:
        fail_from(module, exc)
    module.exit_json(changed=True, **result)


if __name__ == "__main__":
    main()
