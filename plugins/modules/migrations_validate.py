#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: migrations_validate
short_description: Validate a node-pg-migrate migrations folder on a throwaway database
version_added: 0.1.0
description:
  - Checks that every file follows node-pg-migrate's naming and order rules and parses (PostgreSQL's own grammar,
    through pglast), and reports dangerous operations with the file, line and statement, from pgshift's own rules
    and from squawk when it is installed.
  - pgshift's rules - errors - C(CONCURRENTLY) in a C(.sql) migration (node-pg-migrate runs it in a transaction),
    C(ADD COLUMN ... NOT NULL) without a default on an existing table, a syntax error; warnings - an index built
    without C(CONCURRENTLY) on an existing table, C(SET NOT NULL) on an existing column, a column type change that may
    rewrite the table, a dropped column or table, a statement that locks an existing table with no C(lock_timeout)
    set before it.
  - With O(compare_database), new files must sort after every migration applied there, and the applied ones must be
    present and unchanged.
  - Creates a throwaway database in the cluster the connection options point at (the role needs C(CREATEDB)),
    applies every migration from empty one at a time, runs up -> down -> up for every migration with a down and
    compares catalog snapshots (definitions as the server prints them, not text) after each step, then drops it.
  - Fails when any finding has severity C(error); warnings are returned.
extends_documentation_fragment:
  - pgshift.ops.attributes
  - pgshift.ops.attributes.action_group
  - pgshift.ops.connection
attributes:
  check_mode:
    support: partial
    details: >-
      Naming, order, parse, dangerous operations and the comparison with O(compare_database) run; up from empty and
      the up -> down -> up round trips need the throwaway database and are skipped (said in RV(notes)).
  diff_mode:
    support: none
options:
  migrations_dir:
    description: The migrations folder.
    type: path
    required: true
  engine:
    description:
      - Engine that applies the migrations in the throwaway database (see M(pgshift.ops.migrate)); JS/TS migrations
        need V(node-pg-migrate).
    type: str
    choices: [sql, node-pg-migrate]
    default: sql
  compare_database:
    description:
      - A database on the same server (same credentials) whose ledger the folder is compared with, for example the
        development or production database.
    type: str
  compare_missing_ok:
    description:
      - When O(compare_database) does not exist, note it in RV(notes) and go on instead of failing.
    type: bool
    default: false
  schema:
    description: Schema of the ledger table in O(compare_database).
    type: str
    default: public
  ignore_pattern:
    description: Files whose name matches this regular expression are not migrations.
    type: str
    default: '^\..*'
  schema_snapshot:
    description:
      - A committed schema snapshot file (JSON or YAML, written by M(pgshift.ops.schema_snapshot) or
        C(make snapshot)); the schema the migrations build from empty must equal it (taken with the file's own
        filters), else the error C(final-schema-differs) lists the differences.
    type: path
  round_trip:
    description: Run up -> down -> up for every migration that has a down.
    type: bool
    default: true
  squawk:
    description: Add squawk's findings (as warnings) when squawk is installed.
    type: bool
    default: true
  squawk_path:
    description: Path of the squawk binary; default is the one beside the Python running the module, else E(PATH).
    type: path
  node_pg_migrate:
    description: Path of the node-pg-migrate CLI for O(engine=node-pg-migrate).
    type: path
seealso:
  - module: pgshift.ops.migrate
  - module: pgshift.ops.migrations_info
author:
  - pgshift contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Validate the migrations on the CI cluster
  pgshift.ops.migrations_validate:
    migrations_dir: "{{ playbook_dir }}/../sample_app/migrations"
    host: 127.0.0.1
    password: "{{ ci_password }}"
    compare_database: shop
  register: validation

- name: Print the report
  ansible.builtin.debug:
    msg: "{{ validation.report }}"
"""

RETURN = r"""
valid:
  description: True when no finding has severity error.
  returned: always
  type: bool
  sample: true
error_count:
  description: Number of findings with severity error.
  returned: always
  type: int
  sample: 0
warning_count:
  description: Number of findings with severity warning.
  returned: always
  type: int
  sample: 3
findings:
  description: Findings, errors first, with severity, rule, migration, file, line, statement, message and source.
  returned: always
  type: list
  elements: dict
  sample:
    - severity: warning
      rule: index-without-concurrently
      migration: 1700000004000_orders-customer-index
      file: 1700000004000_orders-customer-index.sql
      line: 3
      statement: CREATE INDEX orders_customer_placed_idx ON orders (customer_id, placed_at)
      message: CREATE INDEX on the existing table orders blocks its writes for the whole build
      source: pgshift
report:
  description: The readable report, one line per item.
  returned: always
  type: list
  elements: str
  sample: ["migrations in /srv/shop/migrations: 6 (engine sql)", "result: VALID, 0 error(s), 3 warning(s)"]
run:
  description: What the throwaway database run found (up from empty, round trips per migration, final object counts).
  returned: when not in check mode and every file parses
  type: dict
  sample: {database: pgshift_validate_3f2a1b0c9d8e, up_from_empty: true, seconds: 1.7,
           round_trips: [{migration: 1700000001000_order-events, has_down: true, down_restores: true,
                          up_again_same: true}]}
compared:
  description: Status of the folder against O(compare_database).
  returned: when O(compare_database) is given
  type: dict
  sample: {database: shop, applied: [1700000000000_init-shop], pending: [], missing: [], modified: [], out_of_order: [],
           unrecorded: []}
migrations:
  description: The migrations of the folder in order, with sha256.
  returned: always
  type: list
  elements: dict
  sample: [{name: 1700000000000_init-shop, file: 1700000000000_init-shop.sql, kind: sql,
            sha256: 6f1a33f77394d182ae99ac1198fbed3edb9c43f33e2f360cb132b5d257073a9f}]
notes:
  description: What was not checked and why.
  returned: always
  type: list
  elements: str
  sample: []
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, connection_argument_spec
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError, fail_from
from ansible_collections.pgshift.ops.plugins.module_utils._migrations_validate import validate


def main() -> None:
    argument_spec = connection_argument_spec()
    argument_spec.update(
        migrations_dir=dict(type="path", required=True),
        engine=dict(type="str", choices=["sql", "node-pg-migrate"], default="sql"),
        compare_database=dict(type="str"),
        compare_missing_ok=dict(type="bool", default=False),
        schema_snapshot=dict(type="path"),
        schema=dict(type="str", default="public"),
        ignore_pattern=dict(type="str", default=r"^\..*"),
        round_trip=dict(type="bool", default=True),
        squawk=dict(type="bool", default=True),
        squawk_path=dict(type="path"),
        node_pg_migrate=dict(type="path"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    try:
        result = validate(
            ConnParams.from_params(p),
            p["migrations_dir"],
            engine=p["engine"],
            compare_database=p["compare_database"],
            compare_missing_ok=p["compare_missing_ok"],
            schema_snapshot=p["schema_snapshot"],
            schema=p["schema"],
            ignore_pattern=p["ignore_pattern"],
            round_trip=p["round_trip"],
            squawk=p["squawk"],
            squawk_path=p["squawk_path"],
            node_pg_migrate=p["node_pg_migrate"],
            check_mode=module.check_mode,
        )
    except PgShiftError as exc:
        fail_from(module, exc)
        return
    if not result["valid"]:
        module.fail_json(
            msg="migrations are not valid: %d error(s); see findings and report" % result["error_count"], **result
        )
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
