#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: schema_snapshot
short_description: Write a deterministic snapshot of a PostgreSQL schema to a file
version_added: 0.1.0
description:
  - Reads the schema of a live database from the system catalogs, with one query per object kind, and writes it to a
    JSON or YAML file that is sorted, holds no OIDs and no timestamps, and carries the sha256 of its content.
  - Snapshots of the same schema are byte-identical, so they can be committed and compared in CI with
    M(pgshift.ops.schema_diff).
  - "Covers schemas, tables (with partitioning), columns (type, default, nullability, identity, generated,
    collation), constraints, indexes (definition, validity), sequences, views and materialized views, functions,
    procedures and aggregates, triggers, types (enums, domains, composites, ranges), extensions, row-level security
    policies and flags, comments, and optionally owners and grants."
  - Objects that belong to an extension are left out. The ledger tables C(pgmigrations) and
    C(pgshift_migration_meta) (in any schema) are left out by default; the names of the applied migrations are kept
    in the file's C(meta) section, outside the hash.
  - The file is written atomically with mode 0600; a missing folder is created with mode 0700.
extends_documentation_fragment:
  - pgshift.ops.attributes
  - pgshift.ops.attributes.action_group
  - pgshift.ops.connection
attributes:
  check_mode:
    support: full
    details: Reads the schema and tells whether the file would change, without writing it.
  diff_mode:
    support: full
    details: >-
      Names the objects that differ between the file and the database (added, removed, changed), or counts the
      objects of a new file.
options:
  path:
    description:
      - File to write. The format follows the extension (C(.yml)/C(.yaml) is YAML, anything else JSON) unless
        O(format) says otherwise.
    type: path
    required: true
  format:
    description:
      - File format.
    type: str
    choices: [auto, json, yaml]
    default: auto
  include_schemas:
    description:
      - Only these schemas (exact names). Default all but the system schemas.
    type: list
    elements: str
  exclude_schemas:
    description:
      - Leave these schemas out (exact names).
    type: list
    elements: str
    default: []
  exclude_ledger:
    description:
      - Leave out the migration ledger tables C(pgmigrations) and C(pgshift_migration_meta) and what belongs to them.
    type: bool
    default: true
  ledger_schema:
    description:
      - Schema of node-pg-migrate's ledger, whose applied migration names are recorded in C(meta.ledger).
    type: str
    default: public
  with_owners:
    description:
      - Record owners. They usually differ between environments.
    type: bool
    default: false
  with_grants:
    description:
      - Record privileges (ACLs, with the defaults spelled out).
    type: bool
    default: false
  with_comments:
    description:
      - Record comments.
    type: bool
    default: true
seealso:
  - module: pgshift.ops.schema_diff
author:
  - pgshift contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Snapshot production's schema as JSON
  pgshift.ops.schema_snapshot:
    host: db.example.com
    user: pgshift
    password: "{{ vault_pgshift_password }}"
    database: shop
    path: /srv/pgshift/artifacts/prod.schema.json

- name: Snapshot dev's schema as YAML, with owners and grants, for the repository
  pgshift.ops.schema_snapshot:
    database: shop
    path: "{{ playbook_dir }}/../sample_app/schema/dev.yml"
    with_owners: true
    with_grants: true
    exclude_schemas: [scratch]
"""

RETURN = r"""
path:
  description: The file written (or that would be written in check mode).
  returned: always
  type: str
  sample: /srv/pgshift/artifacts/prod.schema.json
format:
  description: The file format used.
  returned: always
  type: str
  sample: json
sha256:
  description: Hash of the snapshot content (format, filters and objects), as recorded in the file.
  returned: always
  type: str
  sample: 9c2b4f0e6d1a7b3c5e8f0a2b4c6d8e0f1a3b5c7d9e1f3a5b7c9d1e3f5a7b9c1d
previous_sha256:
  description: Hash recorded in the file that was there before, if any.
  returned: always
  type: str
  sample: null
counts:
  description: Number of objects per kind.
  returned: always
  type: dict
  sample: {"schemas": 1, "tables": 9, "columns": 49, "indexes": 12}
server_version_num:
  description: C(server_version_num) of the database.
  returned: always
  type: int
  sample: 150018
ledger:
  description: Applied migrations listed in the ledger, in node-pg-migrate's order.
  returned: always
  type: list
  elements: str
  sample: ["1700000000000_init-shop"]
queries:
  description: Number of catalog queries the snapshot took.
  returned: always
  type: int
  sample: 10
"""

import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

from ansible_collections.pgshift.ops.plugins.module_utils._connection import (  # noqa: E402
    ConnParams,
    connect,
    connection_argument_spec,
)
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError, fail_from, without_file_stats  # noqa: E402
from ansible_collections.pgshift.ops.plugins.module_utils._schema import (  # noqa: E402
    counts,
    file_differs,
    guess_format,
    read_snapshot_file,
    serialize,
    snapshot_diff_text,
    snapshot_hash,
    take_snapshot,
    write_private_file,
)


def main() -> None:
    argument_spec = connection_argument_spec()
    argument_spec.update(
        path=dict(type="path", required=True),
        format=dict(type="str", choices=["auto", "json", "yaml"], default="auto"),
        include_schemas=dict(type="list", elements="str"),
        exclude_schemas=dict(type="list", elements="str", default=[]),
        exclude_ledger=dict(type="bool", default=True),
        ledger_schema=dict(type="str", default="public"),
        with_owners=dict(type="bool", default=False),
        with_grants=dict(type="bool", default=False),
        with_comments=dict(type="bool", default=True),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    without_file_stats(module)  # its result names a path: no file-stat keys added to it
    p = module.params
    path = p["path"]
    fmt = guess_format(path, p["format"])
    try:
        stats: dict = {}
        conn = connect(ConnParams.from_params(p))
        try:
            snapshot = take_snapshot(
                conn,
                include_schemas=p["include_schemas"],
                exclude_schemas=p["exclude_schemas"],
                exclude_ledger=p["exclude_ledger"],
                with_owners=p["with_owners"],
                with_grants=p["with_grants"],
                with_comments=p["with_comments"],
                ledger_schema=p["ledger_schema"],
                stats=stats,
            )
        finally:
            conn.close()
        data = serialize(snapshot, fmt)
        previous = None
        previous_snapshot = None
        if os.path.isfile(path):
            try:
                previous_snapshot = read_snapshot_file(path)
                previous = snapshot_hash(previous_snapshot)
            except PgShiftError:
                previous = None
        changed = file_differs(path, data)
        if changed and not module.check_mode:
            write_private_file(path, data)
    except PgShiftError as exc:
        fail_from(module, exc, path=path)
        return
    sha = snapshot_hash(snapshot)
    result = dict(
        changed=changed,
        path=path,
        format=fmt,
        sha256=sha,
        previous_sha256=previous,
        counts=counts(snapshot),
        server_version_num=snapshot["meta"]["server_version_num"],
        ledger=snapshot["meta"]["ledger"],
        queries=stats.get("queries", 0),
    )
    if module._diff:
        result["diff"] = dict(
            before_header="%s (the file)" % path,
            after_header="%s (the database now)" % path,
            prepared=snapshot_diff_text(previous_snapshot, snapshot),
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
