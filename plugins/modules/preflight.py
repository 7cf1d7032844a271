#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: preflight
short_description: Check that a release to production can start, before anything changes
version_added: 0.1.0
description:
  - Read-only checks of the production cluster and the dev database, made before a release touches anything.
  - Refuses (fails, listing every problem and what to fix) when the production database is missing, a C(__next)
    database or an unfinished run is left from an earlier run, production has prepared transactions, logical
    replication slots or subscriptions, the dev schema needs roles or extensions the production cluster lacks, dev runs
    a newer major version than production, no fitting client binaries are installed, or the disk lacks space for the
    backup and the rebuilt database.
  - Also refuses when dev and production are the same database (same cluster system identifier and database oid,
    whatever the host strings say), and when sessions of superusers are connected to production (named, unless
    O(allow_superuser_sessions)).
  - Connection failures (unreachable server, wrong password, missing database) fail with a message that says what to
    check; the password never appears in it.
extends_documentation_fragment:
  - pgshift.ops.attributes
  - pgshift.ops.attributes.action_group
  - pgshift.ops.connection
  - pgshift.ops.connection.schema_source
attributes:
  check_mode:
    support: full
    details: The module only reads; it runs the same in check mode.
  diff_mode:
    support: none
options:
  production_database:
    description: Name of the production database.
    type: str
    required: true
  backup_dir:
    description: Where the backup will be written, for the space check.
    type: path
  journal_database:
    description: Database of the production cluster that holds the run journal.
    type: str
    default: pgshift
  space_factor:
    description: Free space needed, as a multiple of production's size, for the backup and for the new database each.
    type: float
    default: 1.2
  allow_superuser_sessions:
    description:
      - Sessions of superusers connected to production are refused by default (the connection limit that keeps
        applications out during the window does not stop them). V(true) lists them as a caution instead.
    type: bool
    default: false
author:
  - pgshift contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Preflight
  pgshift.ops.preflight:
    production_database: shop
    schema_source: "{{ pgshift_dev_connection }}"
    backup_dir: /var/backups/pgshift
    host: db.internal
    password: "{{ vault_pg_password }}"
"""

RETURN = r"""
facts:
  description:
    - What was found (versions, sizes, roles and extensions needed, free space, client binaries).
    - C(backups) - the complete backups already in O(backup_dir) - C(count), C(bytes) and C(oldest) of those of the
      production database (its label), C(all_count) and C(all_bytes) of every backup there.
  returned: always
  type: dict
problems:
  description: Everything that stops the release (empty when it can start).
  returned: always
  type: list
  elements: str
cautions:
  description: Things worth knowing that do not stop the release (also shown as warnings).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgshift.ops.plugins.module_utils._connection import (
    ConnParams,
    connection_argument_spec,
    endpoint_argument_spec,
)
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError, fail_from
from ansible_collections.pgshift.ops.plugins.module_utils._preflight import run_checks


def main() -> None:
    spec = connection_argument_spec()
    spec.update(
        production_database=dict(type="str", required=True),
        schema_source=endpoint_argument_spec(required=False),
        backup_dir=dict(type="path"),
        journal_database=dict(type="str", default="pgshift"),
        space_factor=dict(type="float", default=1.2),
        allow_superuser_sessions=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    if not p["schema_source"]:
        module.fail_json(msg="schema_source (the dev database's connection) is required: give pgshift_dev_connection")
    try:
        result = run_checks(
            ConnParams.from_params(p),
            p["production_database"],
            ConnParams.from_params(p["schema_source"]),
            p["backup_dir"],
            p["journal_database"],
            p["space_factor"],
            p["allow_superuser_sessions"],
        )
    except PgShiftError as exc:
        fail_from(module, exc)
    result["cautions"] = result.pop("warnings")
    for caution in result["cautions"]:
        module.warn(caution)
    if result["problems"]:
        module.fail_json(
            msg="preflight refused the release: " + " | ".join(result["problems"]),
            changed=False,
            **result,
        )
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
