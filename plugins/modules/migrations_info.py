#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: migrations_info
short_description: Status of a node-pg-migrate migrations folder against a database
version_added: 0.1.0
description:
  - Reads a node-pg-migrate migrations folder and the database's ledger table C(pgmigrations) and returns which
    migrations are applied, pending, missing (applied, but the file is gone), modified (the file changed since pgshift
    applied or adopted it) and out of order (pending, but sorted before an applied one), with the order and the
    sha256 of every file.
  - Modified detection uses pgshift's own table C(pgshift_migration_meta) beside the ledger; migrations applied by
    another tool are listed in RV(unrecorded) until M(pgshift.ops.migrate) adopts them.
  - Read-only, in a read-only transaction that is rolled back.
extends_documentation_fragment:
  - pgshift.ops.attributes
  - pgshift.ops.attributes.action_group
  - pgshift.ops.connection
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
options:
  migrations_dir:
    description:
      - The migrations folder (node-pg-migrate's C(--migrations-dir)).
    type: path
    required: true
  schema:
    description:
      - Schema of the ledger table (node-pg-migrate's C(--migrations-schema)).
    type: str
    default: public
  ignore_pattern:
    description:
      - Files whose name matches this regular expression are not migrations (node-pg-migrate's C(--ignore-pattern)).
    type: str
    default: '^\..*'
seealso:
  - module: pgshift.ops.migrate
  - module: pgshift.ops.migrations_validate
author:
  - pgshift contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Status of the migrations against dev
  pgshift.ops.migrations_info:
    migrations_dir: /srv/shop/migrations
    host: 127.0.0.1
    database: shop
    password: "{{ vault_dev_password }}"
  register: migrations

- name: Stop when production has pending migrations
  ansible.builtin.assert:
    that: migrations.up_to_date
    fail_msg: "pending: {{ migrations.pending | join(', ') }}"
"""

RETURN = r"""
applied:
  description: Applied migrations, in node-pg-migrate's order (C(ORDER BY run_on, id)).
  returned: success
  type: list
  elements: str
  sample: [1700000000000_init-shop, 1700000001000_order-events]
pending:
  description: Migrations of the folder not applied yet, in file order.
  returned: success
  type: list
  elements: str
  sample: [1700000002000_customer-loyalty]
missing:
  description: Applied migrations whose file is gone.
  returned: success
  type: list
  elements: str
  sample: []
modified:
  description: Applied migrations whose file's sha256 differs from the one recorded when pgshift applied it.
  returned: success
  type: list
  elements: str
  sample: []
out_of_order:
  description: Pending migrations that sort before an applied one (node-pg-migrate refuses these by default).
  returned: success
  type: list
  elements: str
  sample: []
unrecorded:
  description: Applied migrations pgshift has no sha256 for (applied by another tool); they cannot be checked yet.
  returned: success
  type: list
  elements: str
  sample: [1700000000000_init-shop]
order_error:
  description: node-pg-migrate's own order check message for this state, or null when it would pass.
  returned: success
  type: str
  sample: Not run migration 1700000000500_x is preceding already run migration 1700000001000_order-events
up_to_date:
  description: True when nothing is pending, missing or modified.
  returned: success
  type: bool
  sample: false
ledger_exists:
  description: Whether the ledger table exists.
  returned: success
  type: bool
  sample: true
meta_exists:
  description: Whether pgshift's metadata table exists.
  returned: success
  type: bool
  sample: true
ledger:
  description: The ledger table read.
  returned: success
  type: str
  sample: public.pgmigrations
folder:
  description: Absolute path of the migrations folder.
  returned: success
  type: str
  sample: /srv/shop/migrations
migrations:
  description: One entry per file (in order) and per missing migration, with its state and checksums.
  returned: success
  type: list
  elements: dict
  sample:
    - name: 1700000000000_init-shop
      file: 1700000000000_init-shop.sql
      order: 1
      kind: sql
      sha256: 9f2c0e1d4b7a6c5e8f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e
      has_down: true
      state: applied
      run_on: "2026-11-25 23:10:00.123456"
      ledger_id: 1
      applied_sha256: 9f2c0e1d4b7a6c5e8f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e
      applied_by: deploy@db1 (pgshift)
      engine: sql
      duration_ms: 42
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, connection_argument_spec
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError, fail_from
from ansible_collections.pgshift.ops.plugins.module_utils._migrations import migrations_info


def main() -> None:
    argument_spec = connection_argument_spec()
    argument_spec.update(
        migrations_dir=dict(type="path", required=True),
        schema=dict(type="str", default="public"),
        ignore_pattern=dict(type="str", default=r"^\..*"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    try:
        result = migrations_info(
            ConnParams.from_params(module.params),
            module.params["migrations_dir"],
            schema=module.params["schema"],
            ignore_pattern=module.params["ignore_pattern"],
        )
    except PgShiftError as exc:
        fail_from(module, exc)
        return
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
