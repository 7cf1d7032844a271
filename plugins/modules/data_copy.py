#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: data_copy
short_description: Stream production's data into a database built from the dev schema
description:
  - Executes the carry-over plan of M(pgshift.ops.data_plan) - streams every carried table from O(source) into
    O(target) with C(COPY), binary where every column keeps its type, text where a type changed (the target's input
    functions convert), O(jobs) tables at a time, largest first, all reading the source from one exported snapshot.
  - Each table is loaded with C(TRUNCATE) and C(COPY ... FREEZE) in one transaction (partitioned tables are loaded
    through their root, without FREEZE). A table whose copy fails is rolled back and stays empty, and the module fails
    naming it.
  - Identity columns are copied as they are; generated columns are left to the target. Sequences are then set from
    the source and advanced past C(max(column)) when needed.
  - Large objects are copied beside the tables, read in the same snapshot, with their OIDs (so C(oid) columns that
    reference them stay valid), owners, ACLs and comments; the target's own large objects, if any, are replaced.
  - The ledger tables are copied from O(ledger_from) (the dev database) when given, so that the new database lists
    exactly dev's migrations.
  - Fails without copying anything when production data would be lost without being accepted in the mapping file.
version_added: 0.1.0
author:
  - pgshift contributors (!UNKNOWN)
extends_documentation_fragment:
  - pgshift.ops.attributes
  - pgshift.ops.connection.endpoints
  - pgshift.ops.connection.ledger_from
  - pgshift.ops.connection.schema_source
options:
  mapping_file:
    description:
      - Mapping file, as for M(pgshift.ops.data_plan).
    type: path
  jobs:
    description:
      - Tables copied at the same time.
    type: int
    default: 2
  ledger_tables:
    description:
      - The migration ledger tables.
    type: list
    elements: str
    default: [pgmigrations, pgshift_migration_meta]
  archive:
    description:
      - The dev schema archive that M(pgshift.ops.database_build) C(step=create) returned as C(archive), with
        O(schema_source), the dev database it was dumped from. Each table's indexes and primary key, unique,
        exclusion and NOT VALID check constraints are then created from it (the archive's DDL as C(pg_restore) writes
        it, after its session settings; one transaction per table) as soon as the table's rows are in, and each
        foreign key once both its tables are, by the same O(jobs) workers as the copy, the largest tables first.
        The post-data step of M(pgshift.ops.database_build) then restores only what is left.
      - Entries the dev catalogs do not confirm (a dev schema changed since the dump), of partitioned tables or
        partitions, of tables not copied, or with a blank in a name are left to the post-data step.
    type: path
  min_client_major:
    description: Lowest major version of pg_restore to use with O(archive) (C(client_major) of the create step).
    type: int
    default: 0
  split_bytes:
    description:
      - A table at least this large on the source (C(pg_total_relation_size)) is copied by O(jobs) workers at once,
        each a range of its blocks (C(ctid) ranges read by TID range scans, on source servers 14 and later), all in
        the same snapshot; the parts commit together. C(0) splits every table.
    type: int
    default: 67108864
  snapshot:
    description:
      - Snapshot id exported on the source (C(pg_export_snapshot())) by a transaction the caller keeps open; every
        reader imports it. Without it the module exports and holds one of its own.
    type: str
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
seealso:
  - module: pgshift.ops.data_plan
  - module: pgshift.ops.integrity_check
"""

EXAMPLES = r"""
- name: Copy production's rows into the new database
  pgshift.ops.data_copy:
    source: {host: 127.0.0.1, port: 5432, database: shop, password: "{{ prod_password }}"}
    target: {host: 127.0.0.1, port: 5432, database: shop__next, password: "{{ prod_password }}"}
    ledger_from: {host: 127.0.0.1, port: 5433, database: shop, password: "{{ dev_password }}"}
    mapping_file: "{{ playbook_dir }}/../sample_app/mapping.yml"
    jobs: 2
  async: 7200
  poll: 10
  register: data_copy
"""

RETURN = r"""
tables:
  description: Per copied table, what was moved.
  returned: success, not in check mode
  type: dict
  sample: {orders: {source: orders, rows: 1000, bytes: 61234, seconds: 0.08, format: binary}}
total_rows:
  description: Rows copied in all.
  returned: always
  type: int
  sample: 5731
total_bytes:
  description: Bytes streamed in all (COPY format).
  returned: always
  type: int
  sample: 402113
sequences:
  description: Each target sequence, where its value came from and whether it had to be advanced past its column.
  returned: always
  type: list
  elements: dict
  sample:
    - {sequence: orders_id_seq, table: orders, column: id, from: orders_id_seq, last_value: 1000, is_called: true,
       column_max: 1000, advanced_to_column_max: false, statements: ["setval(orders_id_seq, 1000, True)"]}
large_objects:
  description:
    - Large objects copied - C(count), C(bytes) of data, C(seconds), and C(removed_from_target) (large objects the
      target held before, replaced). In check mode only C(count), the large objects that would be copied.
  returned: always
  type: dict
  sample: {count: 3, bytes: 1310720, seconds: 0.21, removed_from_target: 0}
not_copied:
  description: Target tables not copied, with the reason (new table, no carried column).
  returned: always
  type: dict
  sample: {product_reviews: new table (no source rows)}
statements:
  description: The source and target statements run for each table.
  returned: always
  type: dict
snapshot:
  description: The snapshot id the source was read at.
  returned: always
  type: str
  sample: 00000004-00000012-1
plan:
  description: The plan, as M(pgshift.ops.data_plan) returns it.
  returned: always
  type: list
  elements: dict
extension_config_tables:
  description:
    - Per configuration table of an extension, its plan (as M(pgshift.ops.data_plan) returns it) and, once copied,
      C(deleted) (rows the new database held under the condition) and C(copied) (production's rows).
  returned: always
  type: dict
  sample: {cfg_entries: {extension: myext, condition: WHERE NOT standard, carried: true, deleted: 0, copied: 3}}
lost:
  description: Lost tables and columns, as M(pgshift.ops.data_plan) returns them.
  returned: always
  type: dict
notes:
  description: Notes about the plan.
  returned: always
  type: list
  elements: str
jobs:
  description: Parallel copies used.
  returned: always
  type: int
  sample: 2
built_during_copy:
  description: Per table, the indexes and constraints built from O(archive) during the copy (kind, schema, name).
  returned: success, not in check mode
  type: dict
  sample: {orders: ["CONSTRAINT public orders orders_pkey", "INDEX public orders_customer_placed_idx"]}
timeline:
  description: Every task of the copy (table copies, builds, foreign keys, large objects) with its workers and its
    start and end in seconds from the start of the copy.
  returned: success, not in check mode
  type: list
  elements: dict
prepare_seconds:
  description: Wall time before the first copy started (the plan, the snapshot, the archive's entries).
  returned: success, not in check mode
  type: float
  sample: 0.21
seconds:
  description: Wall time of the table copies.
  returned: success, not in check mode
  type: float
  sample: 1.52
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgshift.ops.plugins.module_utils import _data, _data_copy
from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, endpoint_argument_spec
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
            ledger_from=endpoint_argument_spec(required=False),
            schema_source=endpoint_argument_spec(required=False),
            archive=dict(type="path"),
            min_client_major=dict(type="int", default=0),
            split_bytes=dict(type="int", default=_data_copy.SPLIT_BYTES),
        ),
        supports_check_mode=True,
        required_by={"archive": ("schema_source",)},
    )
    params = module.params
    try:
        result = _data_copy.copy_data(
            ConnParams.from_params(params["source"]),
            ConnParams.from_params(params["target"]),
            params["mapping_file"],
            jobs=params["jobs"],
            ledger_tables=params["ledger_tables"],
            ledger_from=ConnParams.from_params(params["ledger_from"]) if params["ledger_from"] else None,
            snapshot=params["snapshot"],
            check_mode=module.check_mode,
            log=module.log,
            archive=params["archive"],
            min_client_major=params["min_client_major"],
            schema_source=ConnParams.from_params(params["schema_source"]) if params["schema_source"] else None,
            split_bytes=params["split_bytes"],
        )
    except PgShiftError as exc:
        fail_from(module, exc)
    module.exit_json(
        changed=not module.check_mode
        and bool(
            result["tables"]
            or result["sequences"]
            or result["large_objects"]["count"]
            or any("copied" in v for v in result["extension_config_tables"].values())
        ),
        **result,
    )


if __name__ == "__main__":
    main()
