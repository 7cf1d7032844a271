#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: migrate
short_description: Apply or revert node-pg-migrate migrations, with pgshift's runner or the project's own CLI
version_added: 0.1.0
description:
  - Applies the pending migrations of a node-pg-migrate folder (all, up to O(target), or the next O(count)), or reverts
    the last O(count) applied ones.
  - Two engines write the same ledger rows in C(pgmigrations), so either can continue where the other stopped.
    V(sql) is pgshift's runner for C(.sql) migrations; V(node-pg-migrate) runs the project's own CLI with the
    connection in its environment and the password in a private 0600 C(PGPASSFILE), never in argv, C(PGPASSWORD) or
    C(DATABASE_URL).
  - Takes node-pg-migrate's session advisory lock (id 7241865325823964) for the whole run, waiting up to
    O(lock_timeout) seconds, then fails naming the pid that holds it. The CLI runs with C(--no-lock) under that lock.
  - Refuses to run while an applied migration was modified or deleted, unless O(accept_changed=true) (the choice is
    returned in RV(accepted_problems)), and while a new file sorts before an applied one, unless O(check_order=false).
  - Records pgshift's own metadata (sha256, applied by, duration, engine) in C(pgshift_migration_meta) beside the
    ledger; C(pgmigrations) itself is never altered.
extends_documentation_fragment:
  - pgshift.ops.attributes
  - pgshift.ops.attributes.action_group
  - pgshift.ops.connection
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    description: >-
      In check mode, the diff shows the SQL each planned migration would run, in order - the up or down section of a
      C(.sql) file; for JS/TS migrations (O(engine=node-pg-migrate)) the SQL node-pg-migrate renders in its
      C(--dry-run), run in a read-only session (on a database without a ledger yet, node-pg-migrate cannot dry-run and
      the entry says so). The plan is returned in RV(plan) and RV(sql).
options:
  migrations_dir:
    description: The migrations folder (node-pg-migrate's C(--migrations-dir)).
    type: path
    required: true
  engine:
    description:
      - V(sql) runs C(.sql) migrations itself; V(node-pg-migrate) runs the CLI (needed for JS/TS migrations).
    type: str
    choices: [sql, node-pg-migrate]
    default: sql
  direction:
    description: V(up) applies pending migrations; V(down) reverts applied ones, newest first.
    type: str
    choices: [up, down]
    default: up
  target:
    description:
      - With V(up), apply pending migrations up to and including this one (a migration name, the file name without
        extension). With V(down), revert every applied migration from the newest back to and including this one.
      - A name that is not a migration of the folder is an error and nothing is applied.
    type: str
  count:
    description:
      - With V(up), apply at most this many pending migrations. With V(down), revert this many (default 1).
    type: int
  accept_changed:
    description:
      - Go on although an applied migration was modified or deleted. The choice is returned in RV(accepted_problems).
    type: bool
    default: false
  check_order:
    description:
      - Refuse new migrations that sort before an applied one (node-pg-migrate's default order check).
    type: bool
    default: true
  single_transaction:
    description:
      - V(true), node-pg-migrate's default, runs all migrations of the run in one transaction (a failure rolls back
        the whole run). V(false) gives each migration its own transaction (a failure keeps the ones before it).
    type: bool
    default: true
  lock_timeout:
    description: Seconds to wait for node-pg-migrate's advisory lock before failing.
    type: float
    default: 60
  schema:
    description: Schema of the ledger table (node-pg-migrate's C(--migrations-schema)).
    type: str
    default: public
  ignore_pattern:
    description: Files whose name matches this regular expression are not migrations.
    type: str
    default: '^\..*'
  node_pg_migrate:
    description:
      - Path of the node-pg-migrate CLI for O(engine=node-pg-migrate). Default is C(node_modules/.bin/node-pg-migrate)
        in the folder above O(migrations_dir) nearest to it, else C(node-pg-migrate) on E(PATH).
    type: path
  node_timeout:
    description: Seconds the node-pg-migrate CLI may run.
    type: float
    default: 3600
notes:
  - node-postgres treats C(sslmode=prefer) and C(require) as C(verify-full) against the system CAs plus
    O(sslrootcert) (given to the CLI as E(NODE_EXTRA_CA_CERTS)), so it is never weaker than libpq, possibly stricter.
seealso:
  - module: pgshift.ops.migrations_info
  - module: pgshift.ops.migrations_validate
author:
  - pgshift contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Show what would be applied to production
  pgshift.ops.migrate:
    migrations_dir: /srv/shop/migrations
    host: db1.example.com
    database: shop
    password: "{{ vault_prod_password }}"
    sslmode: verify-full
  check_mode: true
  register: plan

- name: Apply with the project's own node-pg-migrate
  pgshift.ops.migrate:
    migrations_dir: /srv/shop/migrations
    engine: node-pg-migrate
    node_pg_migrate: /srv/shop/node_modules/.bin/node-pg-migrate
    host: db1.example.com
    database: shop
    password: "{{ vault_prod_password }}"
    lock_timeout: 120

- name: Revert the last migration
  pgshift.ops.migrate:
    migrations_dir: /srv/shop/migrations
    direction: down
    count: 1
    database: shop
"""

RETURN = r"""
plan:
  description: Migrations this run applies (up) or reverts (down), in the order they run.
  returned: success
  type: list
  elements: str
  sample: [1700000004000_orders-customer-index, 1700000005000_rename-full-name]
applied:
  description: Migrations applied, with file, sha256 and duration (for node-pg-migrate the whole CLI run's duration).
  returned: success
  type: list
  elements: dict
  sample: [{name: 1700000004000_orders-customer-index, file: 1700000004000_orders-customer-index.sql,
            sha256: 3b1f0c9e8d7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c, duration_ms: 12}]
reverted:
  description: Migrations reverted, newest first.
  returned: success
  type: list
  elements: dict
  sample: []
adopted:
  description: Applied migrations pgshift had no checksum for; their current sha256 was recorded (engine C(adopted)).
  returned: success
  type: list
  elements: str
  sample: [1700000000000_init-shop]
accepted_problems:
  description: Problems let through by O(accept_changed=true); each is also emitted as an Ansible warning.
  returned: success
  type: list
  elements: str
  sample: []
before:
  description: Status before the run (applied, pending, missing, modified, out_of_order).
  returned: success
  type: dict
  sample: {applied: [1700000000000_init-shop], pending: [1700000001000_order-events], missing: [], modified: [],
           out_of_order: []}
after:
  description: Status after the run.
  returned: success and not check mode
  type: dict
  sample: {applied: [1700000000000_init-shop, 1700000001000_order-events], pending: [], missing: [], modified: [],
           out_of_order: []}
sql:
  description: >-
    Each planned migration with the SQL it would run (C(sql); C(shown_by) is C(file) or C(node-pg-migrate --dry-run);
    null with a C(reason) when it cannot be shown), in the order it would run.
  returned: check mode
  type: list
  elements: dict
  sample: [{name: 1700000004000_orders-customer-index, file: 1700000004000_orders-customer-index.sql, kind: sql,
            sql: "-- Up Migration\nCREATE INDEX orders_customer_placed_idx ON orders (customer_id, placed_at);",
            shown_by: file, reason: null}]
lock_waited_s:
  description: Seconds spent waiting for the advisory lock.
  returned: success and not check mode
  type: float
  sample: 0.0
command:
  description: The node-pg-migrate command run (no secrets), its exit code and output.
  returned: when O(engine=node-pg-migrate) ran
  type: dict
  sample: {argv: [node-pg-migrate, up, "2", --migrations-dir, /srv/shop/migrations], rc: 0,
           stdout: "Migrations complete!", stderr: ""}
engine:
  description: The engine used.
  returned: success
  type: str
  sample: sql
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, connection_argument_spec
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError, fail_from
from ansible_collections.pgshift.ops.plugins.module_utils._migrations import migrate, render_planned_sql


def main() -> None:
    argument_spec = connection_argument_spec()
    argument_spec.update(
        migrations_dir=dict(type="path", required=True),
        engine=dict(type="str", choices=["sql", "node-pg-migrate"], default="sql"),
        direction=dict(type="str", choices=["up", "down"], default="up"),
        target=dict(type="str"),
        count=dict(type="int"),
        accept_changed=dict(type="bool", default=False),
        check_order=dict(type="bool", default=True),
        single_transaction=dict(type="bool", default=True),
        lock_timeout=dict(type="float", default=60),
        schema=dict(type="str", default="public"),
        ignore_pattern=dict(type="str", default=r"^\..*"),
        node_pg_migrate=dict(type="path"),
        node_timeout=dict(type="float", default=3600),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    try:
        result = migrate(
            ConnParams.from_params(p),
            p["migrations_dir"],
            engine=p["engine"],
            direction=p["direction"],
            target=p["target"],
            count=p["count"],
            accept_changed=p["accept_changed"],
            check_order=p["check_order"],
            single_transaction=p["single_transaction"],
            lock_timeout=p["lock_timeout"],
            schema=p["schema"],
            ignore_pattern=p["ignore_pattern"],
            node_pg_migrate=p["node_pg_migrate"],
            node_timeout=p["node_timeout"],
            check_mode=module.check_mode,
        )
    except PgShiftError as exc:
        fail_from(module, exc)
        return
    for warning in result["accepted_problems"]:
        module.warn(warning)
    if module._diff and module.check_mode:
        result["diff"] = dict(
            before_header="%s: ledger now" % p["database"],
            after_header="%s: %d migration(s) %s" % (p["database"], len(result["plan"]), p["direction"]),
            prepared=render_planned_sql(result.get("sql") or [], p["direction"]),
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
