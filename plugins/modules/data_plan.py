#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: data_plan
short_description: Plan how production's data is carried into a database built from the dev schema
description:
  - Compares the O(source) database (production) with the O(target) database (the dev schema's pre-data section,
    no rows yet) and returns, without writing anything, the carry-over plan for every target table.
  - Lists what the source holds that has no destination; anything lost and not accepted in the mapping file fails.
  - Runs read-only queries on the source to find every way its data would not fit the target before any row is
    copied (including every value a type change would alter and every stored column dev makes GENERATED, unless the
    mapping accepts it), and fails when it finds one. See docs/data.md.
  - Reports production's database-level state that the release carries (owner, locale, ACL, settings, role
    settings, comment; RV(database_state)), production's object privileges that the dev schema lacks and the release
    adds (RV(privileges)), and what production has that the dev schema lacks and the release does not carry
    (RV(only_in_production) - policies, forced row level security, publications, event triggers, statistics objects,
    comments, security labels, storage parameters, replica identity, extension configuration tables). Row level
    security enabled in production on a table the dev schema has without it is a problem (the release would open
    its rows).
version_added: 0.1.0
author:
  - pgshift contributors (!UNKNOWN)
extends_documentation_fragment:
  - pgshift.ops.attributes
  - pgshift.ops.connection.endpoints
  - pgshift.ops.connection.schema_source
options:
  mapping_file:
    description:
      - YAML file declaring renamed tables (C(tables.<new>.from)), renamed or computed columns
        (C(tables.<t>.columns.<c>.from) or C(.expression)) and accepted losses (C(accept_loss.tables),
        C(accept_loss.columns) as C(table) and C(table.column) strings), and value changes accepted
        (C(accept_change), C(table.column) strings). Format in sample_app/mapping.yml and docs/data.md.
      - Expressions are SQL over the source row, used verbatim; review them like a migration.
    type: path
  ledger_tables:
    description:
      - The migration ledger tables; they are never reported as lost.
    type: list
    elements: str
    default: [pgmigrations, pgshift_migration_meta]
  post_data_constraints:
    description:
      - Key constraints the target will get after post-data, when O(schema_source) is not given (both may be given).
      - Constraints already present in the target are always checked too.
    type: list
    elements: dict
    default: []
    suboptions:
      table:
        description:
          - Table key (C(name), or C(schema.name) outside public); a part holding a dot or a double quote is
            double-quoted, a quote inside doubled (C("a.b") is table C(a.b) in public).
        type: str
        required: true
      type:
        description: C(p) primary key, C(u) unique, C(f) foreign key.
        type: str
        required: true
        choices: [p, u, f]
      columns:
        description: Constrained columns.
        type: list
        elements: str
        required: true
      ref_table:
        description: Referenced table of a foreign key.
        type: str
      ref_columns:
        description: Referenced columns of a foreign key.
        type: list
        elements: str
      name:
        description: Constraint name, for messages.
        type: str
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
seealso:
  - module: pgshift.ops.data_copy
  - module: pgshift.ops.integrity_check
"""

EXAMPLES = r"""
- name: Plan the carry-over and find the data that would not fit
  pgshift.ops.data_plan:
    source: {host: 127.0.0.1, port: 5432, database: shop, password: "{{ prod_password }}"}
    target: {host: 127.0.0.1, port: 5432, database: shop__next, password: "{{ prod_password }}"}
    schema_source: {host: 127.0.0.1, port: 5433, database: shop, password: "{{ dev_password }}"}
    mapping_file: "{{ playbook_dir }}/../sample_app/mapping.yml"
  register: data_plan
"""

RETURN = r"""
plan:
  description: One entry per target table, largest source first.
  returned: always
  type: list
  elements: dict
  sample:
    - table: customers
      source: customers
      new: false
      ledger: false
      partitioned: false
      columns: [{name: display_name, from: full_name, source_type: text, target_type: text, cast: false}]
      defaulted: [marketing_opt_in, loyalty_points]
      generated: []
      rows_estimate: 200
      bytes_estimate: 81920
      format: binary
extension_config_tables:
  description:
    - Configuration tables of production's extensions, those registered with C(pg_extension_config_dump). The rows
      under their C(condition) are production's and are carried into the new database's table of the same
      extension, replacing what it holds under that condition. C(carried) false with a C(reason) when the new
      database lacks it (then production's rows there are a problem of kind C(extension_config), unless
      C(accept_loss.tables) lists it).
  returned: always
  type: list
  elements: dict
  sample:
    - {table: cfg_entries, extension: myext, condition: WHERE NOT standard, target_condition: WHERE NOT standard,
       columns: [id, name], not_carried_columns: [], carried: true, reason: null}
lost:
  description: Source tables and columns with no destination (unaccepted), and the accepted ones.
  returned: always
  type: dict
  sample: {tables: [], columns: [], accepted_tables: [], accepted_columns: [legacy.fax]}
problems:
  description: Data that would not fit the target, found on the source.
  returned: always
  type: list
  elements: dict
  sample:
    - {table: orders, column: customer_id, kind: orphan, count: 1, sample: ["(999)"],
       message: "1 source rows of orders have no parent in customers(id) for the new FOREIGN KEY(customer_id)"}
accepted_changes:
  description:
    - Values the conversion changes that do not stop the release, with the rows counted on the source
      (kind C(value_change) for a changed type, C(generated) for a stored column dev makes GENERATED).
    - C(accepted_by) is C(accept_change), C(accept_loss) (a generated column's stored source column listed under
      accept_loss.columns) or C(no row differs) (a generated column that computes production's values on every row).
  returned: always
  type: list
  elements: dict
  sample:
    - {table: prices, column: amount, kind: value_change, count: 5, sample: ["10.1234 -> 10.12"],
       accepted_by: accept_change}
database_state:
  description: Production's database-level state, which the release gives the new database.
  returned: always
  type: dict
  sample: {owner: postgres, encoding: UTF8, collate: C.UTF-8, ctype: C.UTF-8, locale_provider: c, locale: null,
           acl: [{grantee: shop_app, privilege: CONNECT, grantable: false}], settings: ["work_mem=8MB"],
           role_settings: {shop_app: ["statement_timeout=5s"]}, comment: the shop}
privileges:
  description:
    - Production's grants (C(grants)) and default privileges (C(default_grants)) that the dev schema lacks, added to
      the new database; C(not_carried) lists production's grants on objects the dev schema does not have.
  returned: always
  type: dict
only_in_production:
  description: Per class of object, what production has and the dev schema lacks; dev's schema wins, nothing is carried.
  returned: always
  type: dict
  sample: {policy: ["tenant_only on public.orders"]}
notes:
  description: Checks that could not run on the source, and accept_loss/accept_change entries that match nothing.
  returned: always
  type: list
  elements: str
constraints_checked:
  description: Number of PRIMARY KEY/UNIQUE/FOREIGN KEY definitions checked against the source's data.
  returned: always
  type: int
  sample: 9
"""

import contextlib

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgshift.ops.plugins.module_utils import _data, _db_state, _ext_config
from ansible_collections.pgshift.ops.plugins.module_utils._connection import (
    ConnParams,
    connect,
    endpoint_argument_spec,
)
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError, fail_from

CONSTRAINT_SPEC = dict(
    table=dict(type="str", required=True),
    type=dict(type="str", required=True, choices=["p", "u", "f"]),
    columns=dict(type="list", elements="str", required=True),
    ref_table=dict(type="str"),
    ref_columns=dict(type="list", elements="str"),
    name=dict(type="str"),
)


def run(params):
    source = ConnParams.from_params(params["source"])
    target = ConnParams.from_params(params["target"])
    with contextlib.ExitStack() as stack:
        src = stack.enter_context(contextlib.closing(connect(source, application_name="pgshift data_plan")))
        tgt = stack.enter_context(contextlib.closing(connect(target, application_name="pgshift data_plan")))
        src.set_session(readonly=True)
        plan = _data.prepare_plan(src, tgt, params["mapping_file"], params["ledger_tables"])
        constraints = _data.read_key_constraints(tgt)
        dev = tgt
        if params["schema_source"]:
            dev = stack.enter_context(
                contextlib.closing(
                    connect(ConnParams.from_params(params["schema_source"]), application_name="pgshift data_plan")
                )
            )
            constraints += _data.read_key_constraints(dev)
        constraints += _data.normalize_constraints(params["post_data_constraints"] or [])
        problems = _data.find_problems(src, tgt, plan, constraints)
        src.rollback()
        tgt.rollback()
        ext_config = _ext_config.plan(src, tgt)
        problems += _ext_config.problems(src, ext_config, _data.load_mapping(params["mapping_file"]).accept_tables)
        src.rollback()
        tgt.rollback()
        state = _db_state.plan(src, dev)
        problems += state.pop("problems")
        src.rollback()
        dev.rollback()
    result = _data.plan_result(plan)
    result["extension_config_tables"] = [cp.describe() for cp in ext_config]
    result["notes"] = result["notes"] + _ext_config.notes(ext_config)
    result.update(state)
    result.update(problems=problems, constraints_checked=len({c.ident() for c in constraints}))
    return plan, result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            source=endpoint_argument_spec(),
            target=endpoint_argument_spec(),
            mapping_file=dict(type="path"),
            ledger_tables=dict(type="list", elements="str", default=list(_data.DEFAULT_LEDGER_TABLES)),
            schema_source=endpoint_argument_spec(required=False),
            post_data_constraints=dict(type="list", elements="dict", default=[], options=CONSTRAINT_SPEC),
        ),
        supports_check_mode=True,
    )
    try:
        plan, result = run(module.params)
        if plan.unaccepted:
            raise PgShiftError(_data.loss_error(plan).msg, **result)
        if result["problems"]:
            raise PgShiftError(
                "the source's data does not fit the target: %s"
                % "; ".join(p["message"] for p in result["problems"][:10]),
                **result,
            )
    except PgShiftError as exc:
        fail_from(module, exc)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
