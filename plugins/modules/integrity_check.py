#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: integrity_check
short_description: Prove that the new database holds exactly production's carried data, and is healthy
description:
  - For every table of the carry-over plan (see M(pgshift.ops.data_plan)), compares row counts and content checksums
    (C(count(*)) and the sum of a 64-bit hash per row) over the carried columns between O(source) and O(target);
    the source side is computed on its values converted to the target types through the same mapping, except for a
    changed type the mapping does not accept (C(accept_change)), where production's original values are compared with
    the target's converted back to the source type, so a copy that changed a value is caught.
    Source and target queries run at the same time; every source reader shares one snapshot.
  - Compares the large objects the same way, from the catalogs of both sides - their number and a fingerprint over
    each one's OID, data (page by page), comment, owner and ACL - and names the large object OIDs that are missing,
    extra or changed in the target.
  - On a mismatch, narrows the table down by buckets of its primary key and names the first differing keys.
  - Checks that every constraint of the target is validated, that no index is invalid, and that every owned sequence
    and identity column is past C(max(column)); optionally runs C(amcheck) on every B-tree index.
  - With O(database_state) (the default), compares the database-level state of O(source) and O(target), read from
    the catalogs on each side - the ACL as a set of (grantee, privilege, grantable), the C(ALTER DATABASE .. SET)
    settings, the C(ALTER ROLE .. IN DATABASE .. SET) settings per role, the comment, the owner, encoding,
    collation, ctype and locale provider (not the name nor the connection limit) - and checks that every grant the
    source has on a table, view, sequence or column (and every default privilege) is held in the target wherever the
    target has the object. See docs/data.md.
  - Fails on any finding. Session settings are pinned on every connection, so a differing C(TimeZone) or float output
    setting between the two servers does not cause a false alarm.
version_added: 0.1.0
author:
  - pgshift contributors (!UNKNOWN)
extends_documentation_fragment:
  - pgshift.ops.attributes
  - pgshift.ops.connection.endpoints
  - pgshift.ops.connection.ledger_from
options:
  mapping_file:
    description:
      - Mapping file, as for M(pgshift.ops.data_plan).
    type: path
  jobs:
    description:
      - Tables compared at the same time (each uses one source and one target connection).
    type: int
    default: 2
  ledger_tables:
    description:
      - The migration ledger tables.
    type: list
    elements: str
    default: [pgmigrations, pgshift_migration_meta]
  snapshot:
    description:
      - Snapshot id exported on the source by a transaction the caller keeps open. Without it the module exports one.
    type: str
  amcheck:
    description:
      - Also run C(bt_index_check(index, heapallindexed => true)) on every B-tree index of the target, creating the
        C(amcheck) extension in the target when it is missing (reported as a change).
    type: bool
    default: false
  database_state:
    description:
      - Compare the database-level state and the carried object privileges (see above).
    type: bool
    default: true
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
seealso:
  - module: pgshift.ops.data_copy
"""

EXAMPLES = r"""
- name: Prove the copy before anything is swapped
  pgshift.ops.integrity_check:
    source: {host: 127.0.0.1, port: 5432, database: shop, password: "{{ prod_password }}"}
    target: {host: 127.0.0.1, port: 5432, database: shop__next, password: "{{ prod_password }}"}
    ledger_from: {host: 127.0.0.1, port: 5433, database: shop, password: "{{ dev_password }}"}
    mapping_file: "{{ playbook_dir }}/../sample_app/mapping.yml"
    amcheck: true
  register: integrity
"""

RETURN = r"""
ok:
  description: True when every table matches and the target is healthy (the module fails otherwise).
  returned: always
  type: bool
  sample: true
tables:
  description: Per table of the plan, rows and checksums on both sides.
  returned: always
  type: dict
  sample:
    orders: {source: orders, source_rows: 1000, target_rows: 1000, source_checksum: "-12345", target_checksum: "-12345",
             match: true, seconds: 0.02}
mismatches:
  description: Tables that differ, with the first differing keys.
  returned: always
  type: list
  elements: dict
  sample:
    - table: orders
      source_rows: 1000
      target_rows: 999
      keyed_by: (id)
      first_differing_keys: [{key: "(42)", difference: missing in target}]
large_objects:
  description:
    - The large objects' fingerprints on both sides (C(algorithm), C(count), C(content_checksum) over OIDs, data and
      comments, C(checksum) adding owners and ACLs), C(match), and on a mismatch C(differences) -
      C(missing_in_target), C(only_in_target), C(changed) (first OIDs of each) and C(total).
  returned: always
  type: dict
  sample:
    source: {algorithm: lo-pages-v1, count: 3, content_checksum: "-1234", checksum: "5678"}
    target: {algorithm: lo-pages-v1, count: 3, content_checksum: "-1234", checksum: "5678"}
    match: true
invalid_indexes:
  description: Indexes of the target that are not valid and ready.
  returned: always
  type: list
  elements: str
unvalidated_constraints:
  description: Constraints of the target with C(convalidated = false), as C(table.constraint).
  returned: always
  type: list
  elements: str
sequences_behind:
  description: Owned sequences and identity columns whose next value is not past the column's maximum.
  returned: always
  type: list
  elements: dict
amcheck:
  description: Indexes checked by amcheck and the errors found (null when O(amcheck=false)).
  returned: always
  type: dict
extension_config_tables:
  description:
    - Per carried configuration table of an extension, the rows under its condition counted and checksummed on both
      sides (C(source_rows), C(target_rows), C(source_checksum), C(target_checksum), C(match)).
  returned: always
  type: dict
  sample: {cfg_entries: {extension: myext, source_rows: 3, target_rows: 3, source_checksum: "12", target_checksum: "12",
           match: true}}
lost:
  description: Lost tables and columns of the plan.
  returned: always
  type: dict
accepted_changes:
  description:
    - The value changes the mapping accepts (accept_change, or accept_loss of a stored column dev makes GENERATED),
      with the number of source rows whose value the conversion changes, counted in the proof's snapshot.
    - For those columns the target is compared with the accepted conversion; for every other changed type the
      proof compares production's original values with the target's converted back to the source type.
  returned: always
  type: list
  elements: dict
  sample: [{table: prices, column: amount, kind: value_change, count: 5, sample: ["10.1234 -> 10.12"],
            accepted_by: accept_change}]
row_hash:
  description:
    - How rows were hashed - C(column hashes) (XOR of one extended hash per column, of the value for builtin types,
      of the text form otherwise; PostgreSQL 11+) or C(row text) (C(hashtextextended) of the row's text form).
  returned: always
  type: str
  sample: column hashes
checksum_algorithm:
  description:
    - The content-checksum algorithm used on every side (the collection's one implementation, shared with
      backups) - C(values-v1) (PostgreSQL 11+) or C(row-text-v1).
  returned: always
  type: str
  sample: values-v1
database_state_differences:
  description: Differences of database-level state and missing privileges, named (empty when they match).
  returned: always
  type: list
  elements: str
  sample: ["database privilege CONNECT to shop_app: missing in the new database"]
privileges_not_carried:
  description: Grants of the source on objects the target does not have (dropped or renamed by the dev schema).
  returned: always
  type: list
  elements: dict
snapshot:
  description: The snapshot id the source was read at.
  returned: always
  type: str
seconds:
  description: Wall time of the check.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgshift.ops.plugins.module_utils import _data
from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, endpoint_argument_spec
from ansible_collections.pgshift.ops.plugins.module_utils._data_check import fail_if_not_ok, integrity_check
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError, fail_from


def main():
    module = AnsibleModule(
        argument_spec=dict(
            source=endpoint_argument_spec(),
            target=endpoint_argument_spec(),
            mapping_file=dict(type="path"),
            jobs=dict(type="int", default=2),
            ledger_tables=dict(type="list", elements="str", default=list(_data.DEFAULT_LEDGER_TABLES)),
            snapshot=dict(type="str"),
            amcheck=dict(type="bool", default=False),
            database_state=dict(type="bool", default=True),
            ledger_from=endpoint_argument_spec(required=False),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        result = integrity_check(
            ConnParams.from_params(params["source"]),
            ConnParams.from_params(params["target"]),
            params["mapping_file"],
            jobs=params["jobs"],
            ledger_tables=params["ledger_tables"],
            ledger_from=ConnParams.from_params(params["ledger_from"]) if params["ledger_from"] else None,
            snapshot=params["snapshot"],
            amcheck=params["amcheck"],
            check_mode=module.check_mode,
            database_state=params["database_state"],
        )
        fail_if_not_ok(result)
    except PgShiftError as exc:
        fail_from(module, exc)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
