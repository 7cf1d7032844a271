#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: database_build
short_description: Build the next production database side by side, from the dev schema
version_added: 0.1.0
description:
  - O(step=create) creates C(<production>__next) on the production cluster (same encoding, collation and owner as
    production, connection limit 0), dumps the dev schema (C(pg_dump --schema-only), custom format, 0600 file in a
    0700 folder) and loads its C(pre-data) section (types, tables, columns, defaults, checks, views, functions).
    Tables stay bare (no primary keys, indexes, foreign keys or triggers) so that the data loads fast.
    If loading fails, the new database is dropped again and production is untouched.
  - O(step=post-data) loads the rest of the dev schema once the data is in (primary keys, unique constraints,
    indexes, foreign keys, which validate the data as they are created, and triggers), refreshes materialized views,
    and runs ANALYZE so that the new production has planner statistics before it serves.
  - Then, last (a setting such as C(default_transaction_read_only) must not affect the load), O(step=post-data) gives
    the new database production's database-level state, which a schema dump does not hold - its ACL exactly
    (C(REVOKE ALL), then every privilege C(aclexplode) reports, with grant option where granted), its
    C(ALTER DATABASE .. SET) and C(ALTER ROLE .. IN DATABASE .. SET) settings with the values the catalog reports,
    its comment and owner - and the object privileges (tables, views, sequences, columns, default privileges) that
    production has and the dev schema lacks, on objects the dev schema has. The connection limit stays 0 until the
    swap sets it.
  - When M(pgshift.ops.data_copy) was given the archive, it built the tables' indexes and key constraints during
    the copy; O(step=post-data) finds them in the new database's catalogs and restores only the entries it does
    not hold yet (returned as RV(built_during_copy)).
  - O(step=drop) drops C(<production>__next). Production itself can never be dropped by this module.
  - Client binaries are picked to fit the servers' major versions; the password reaches them through a 0600
    PGPASSFILE.
extends_documentation_fragment:
  - pgshift.ops.attributes
  - pgshift.ops.attributes.action_group
  - pgshift.ops.connection
  - pgshift.ops.connection.schema_source
attributes:
  check_mode:
    support: full
    details: Check mode returns the plan (names, statements) and changes nothing.
  diff_mode:
    support: full
    details: The diff lists the databases of the production cluster before and after the step.
options:
  production_database:
    description:
      - Name of the production database; the new one is named C(<production_database>__next) (shortened with a
        stable hash when that would exceed 63 bytes).
    type: str
    required: true
  step:
    description: Which step to run.
    type: str
    required: true
    choices: [create, post-data, drop]
  workdir:
    description:
      - Folder (created 0700) that receives this build's private C(pgshift-build-*) work folder for the schema archive.
      - The archive is removed by O(step=post-data); the folder itself by M(pgshift.ops.run_journal) (finish) or
        M(pgshift.ops.rollback) given the same O(workdir), once the run is finished.
    type: path
  archive:
    description: The schema archive that O(step=create) returned, for O(step=post-data).
    type: path
  min_client_major:
    description: Lowest major version of pg_restore to use (the one O(step=create) returned as RV(client_major)).
    type: int
    default: 0
  tablespace:
    description: Tablespace of the new database (default that of the cluster), for O(step=create).
    type: str
  run_id:
    description:
      - The journal's run; O(step=create) and O(step=post-data) refuse when that run is no longer C(running) (it was
        rolled back meanwhile), so a run stops at its next step.
      - O(step=create) also puts it in the work folder's name, so that the folder is removed with the run.
    type: str
  journal_database:
    description: Database of the production cluster that holds the journal, with O(run_id).
    type: str
    default: pgshift
author:
  - pgshift contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Create shop__next with the dev schema, tables bare
  pgshift.ops.database_build:
    production_database: shop
    step: create
    schema_source: "{{ pgshift_dev_connection }}"
    workdir: /var/lib/pgshift/work
    host: db.internal
    password: "{{ vault_pg_password }}"
  register: build

- name: Indexes, constraints and triggers once the data is in
  pgshift.ops.database_build:
    production_database: shop
    step: post-data
    archive: "{{ build.archive }}"
    min_client_major: "{{ build.client_major }}"
    host: db.internal
    password: "{{ vault_pg_password }}"
"""

RETURN = r"""
database:
  description: The new database.
  returned: always
  type: str
  sample: shop__next
archive:
  description: Path of the dev schema archive (custom format).
  returned: when step is create and not in check mode
  type: str
client_major:
  description: Major version of the client binaries used.
  returned: when step is create and not in check mode
  type: int
statements:
  description: Statements run (or planned, in check mode).
  returned: always
  type: list
  elements: str
validated_constraints:
  description:
    - The C(VALIDATE CONSTRAINT) statements run for the dev schema's NOT VALID constraints (CHECK, FOREIGN KEY,
      domain CHECK), once the data is in; the data plan checked production's rows against them before.
  returned: when step is post-data
  type: list
  elements: str
refreshed_materialized_views:
  description: Materialized views filled after the data load.
  returned: when step is post-data
  type: list
  elements: str
built_during_copy:
  description: The post-data entries (kind, schema, name) the new database already held, built by data_copy.
  returned: when step is post-data and not in check mode
  type: list
  elements: str
database_state:
  description: Production's database-level state given to the new database (owner, locale, ACL, settings, comment).
  returned: when step is post-data and not in check mode
  type: dict
privileges:
  description: Production's object grants and default privileges added to the new database, and those not carried.
  returned: when step is post-data and not in check mode
  type: dict
"""

import typing as t

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgshift.ops.plugins.module_utils import _release as release
from ansible_collections.pgshift.ops.plugins.module_utils._connection import (
    ConnParams,
    connection_argument_spec,
    endpoint_argument_spec,
)
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError, fail_from


def main() -> None:
    spec = connection_argument_spec()
    spec.update(
        production_database=dict(type="str", required=True),
        step=dict(type="str", required=True, choices=["create", "post-data", "drop"]),
        schema_source=endpoint_argument_spec(required=False),
        workdir=dict(type="path"),
        archive=dict(type="path"),
        min_client_major=dict(type="int", default=0),
        tablespace=dict(type="str"),
        run_id=dict(type="str"),
        journal_database=dict(type="str", default="pgshift"),
    )
    module = AnsibleModule(
        argument_spec=spec,
        supports_check_mode=True,
        required_if=[("step", "create", ("schema_source",)), ("step", "post-data", ("archive",))],
    )
    p = module.params
    cluster = ConnParams.from_params(p)
    prod = p["production_database"]
    name = release.next_name(prod)
    result: t.Dict[str, t.Any] = {}
    try:
        if p["run_id"] and p["step"] != "drop" and not module.check_mode:
            doing = "building %s (%s)" % (name, p["step"])
            release.assert_run_goes_on(cluster, p["journal_database"], p["run_id"], doing)
        if p["step"] == "create":
            source = ConnParams.from_params(p["schema_source"])
            result = release.build_create(
                cluster, prod, source, p["workdir"], p["tablespace"], p["run_id"], module.check_mode
            )
        elif p["step"] == "post-data":
            result = release.build_post_data(cluster, prod, p["archive"], p["min_client_major"], module.check_mode)
        else:
            dropped = release.drop_database(cluster, name, prod, module.check_mode)
            result = dict(
                changed=dropped, database=name, statements=["DROP DATABASE %s WITH (FORCE)" % name] if dropped else []
            )
    except PgShiftError as exc:
        fail_from(module, exc, database=name)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
