#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: online_check
short_description: Tell whether production's data can be carried online, table by table
description:
  - Reads, without writing anything, what an online release needs from the O(source) server (production)
    (C(wal_level = logical), a free replication slot and WAL sender, the REPLICATION attribute, a superuser - the
    apply sets C(session_replication_role) and uses the replication origin functions) and sorts the
    tables of the carry-over plan (O(source) into O(target), the dev schema's pre-data section) into those the
    change stream carries and those carried in the window, with the reason (no primary key or replica identity
    index, a key column the mapping does not carry, a mapping C(expression)); large objects are always carried
    in the window (logical decoding does not carry them).
  - Never fails on what it finds; Preflight decides (C(pgshift_mode) C(online) refuses when RV(possible) is
    false, C(auto) goes offline and prints RV(reasons)). See docs/online.md.
version_added: 0.1.0
author:
  - pgshift contributors (!UNKNOWN)
extends_documentation_fragment:
  - pgshift.ops.attributes
  - pgshift.ops.connection.endpoints
options:
  mapping_file:
    description:
      - The release's mapping file (see docs/data.md), the same the copy uses.
    type: path
  ledger_tables:
    description:
      - The migration ledger tables (copied from dev, never streamed).
    type: list
    elements: str
    default: [pgmigrations, pgshift_migration_meta]
attributes:
  check_mode:
    support: full
    details: The module only reads; it runs the same way in check mode.
  diff_mode:
    support: none
    details: Nothing is changed that a diff could show.
seealso:
  - module: pgshift.ops.data_plan
"""

EXAMPLES = r"""
- name: Can production be released online?
  pgshift.ops.online_check:
    source: {host: 127.0.0.1, port: 5432, database: shop, password: "{{ prod_password }}"}
    target: {host: 127.0.0.1, port: 5432, database: shop__next, password: "{{ prod_password }}"}
    mapping_file: "{{ pgshift_mapping_file }}"
  register: online
"""

RETURN = r"""
possible:
  description: True when the server offers a change stream (RV(reasons) empty); tables in RV(in_window) do not
    make it impossible, they are carried in the window.
  returned: always
  type: bool
reasons:
  description: What the server lacks for a change stream, each with what to change.
  returned: always
  type: list
  elements: str
  sample: ["wal_level is replica: set wal_level = logical in postgresql.conf ... and restart the server"]
server:
  description: C(wal_level), C(replication_slots) and C(wal_senders) (C(used), C(max)), C(replication_role),
    C(superuser).
  returned: always
  type: dict
  sample: {wal_level: logical, replication_slots: {used: 0, max: 10}, wal_senders: {used: 0, max: 10},
           replication_role: true, superuser: true}
streamed:
  description: Target tables the change stream carries.
  returned: always
  type: list
  elements: str
  sample: [customers, orders]
in_window:
  description: Target tables carried in the window, with the reason.
  returned: always
  type: dict
  sample: {audit: "source table audit has no primary key or replica identity index ..."}
large_objects_in_window:
  description: Large objects of production, carried in the window.
  returned: always
  type: int
  sample: 0
"""

import contextlib

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgshift.ops.plugins.module_utils import _data, _online
from ansible_collections.pgshift.ops.plugins.module_utils._connection import (
    ConnParams,
    connect,
    endpoint_argument_spec,
)
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError, fail_from


def run(params):
    source = ConnParams.from_params(params["source"])
    target = ConnParams.from_params(params["target"])
    with contextlib.closing(connect(source, application_name="pgshift online_check")) as src, contextlib.closing(
        connect(target, application_name="pgshift online_check")
    ) as tgt:
        server = _online.server_readiness(src)
        plan = _data.prepare_plan(src, tgt, params["mapping_file"], params["ledger_tables"])
        eligible = _online.eligibility(src, plan)
    result = eligible.describe()
    result.update(possible=not server["reasons"], reasons=server.pop("reasons"), server=server)
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            source=endpoint_argument_spec(),
            target=endpoint_argument_spec(),
            mapping_file=dict(type="path"),
            ledger_tables=dict(type="list", elements="str", default=list(_data.DEFAULT_LEDGER_TABLES)),
        ),
        supports_check_mode=True,
    )
    try:
        result = run(module.params)
    except PgShiftError as exc:
        fail_from(module, exc)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
