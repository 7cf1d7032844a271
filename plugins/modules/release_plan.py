#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: release_plan
short_description: The plan of a release, for the person who approves it (diff output, plan.json, plan.html)
version_added: 0.1.0
description:
  - Puts together what a release would do, from what Preflight found - the schema difference production to dev
    (objects added, changed, dropped and renamed, compared as M(pgshift.ops.schema_diff) compares them, with the
    mapping's renames), the data plan per table (the result of M(pgshift.ops.data_plan) - rows, columns carried,
    renamed, cast, computed, filled with a default, accepted losses and value changes), what is refused and why,
    the backup that will be taken, the forecast window (the rehearsal gate's) and the hosts and services touched in
    order.
  - With O(plan_file), writes the plan there as JSON (the release inputs' hashes of O(inputs) kept under C(inputs)
    and C(inputs_hash), so O(plan_file) still serves M(pgshift.ops.release_inputs) on a later run) and as HTML beside
    it (the same name ending in C(.html)); both 0600, every value escaped in the HTML.
  - Fails, after writing the plan, when the data plan refuses the release, naming each refusal.
extends_documentation_fragment:
  - pgshift.ops.attributes
  - pgshift.ops.connection.endpoints
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: Only reads the databases; O(plan_file) is written in check mode too (it is the plan's output).
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: The plan, as text.
options:
  inputs:
    description: The result of M(pgshift.ops.release_inputs) (its C(inputs) and C(inputs_hash) are kept in the plan).
    type: dict
    required: true
  data_plan:
    description:
      - The registered result of M(pgshift.ops.data_plan) for the same databases; a failed result is read too (its
        problems and unaccepted losses are the refusals).
    type: dict
    required: true
  mapping_file:
    description: The mapping file of the release (its renames are shown as renames in the schema difference).
    type: path
  preflight:
    description: The C(facts) returned by M(pgshift.ops.preflight) (production's size, server version, derived names).
    type: dict
    default: {}
  forecast:
    description: The forecast returned by the rehearsal gate (M(pgshift.ops.rehearsal) C(action=gate)), if any.
    type: dict
  backup_dir:
    description: Where the backup will be written.
    type: path
    required: true
  backup_verify_level:
    description: How the backup will be verified.
    type: str
    default: restore
  db_host:
    description: The inventory host that runs the database steps.
    type: str
    required: true
  web_hosts:
    description: Hosts that show the maintenance page, in order.
    type: list
    elements: str
    default: []
  app_services:
    description: Per application host, the names of the services stopped and restarted.
    type: dict
    default: {}
  restart_batch:
    description: Application hosts restarted per batch.
    type: int
    default: 1
  api_checks:
    description: Names of the API checks run after the restart.
    type: list
    elements: str
    default: []
  app_tier:
    description: V(false) for a database-only release (no maintenance page, no services, no API checks).
    type: bool
    default: true
  plan_file:
    description: Where to write the plan (JSON); the HTML page goes beside it. Not given, nothing is written.
    type: path
notes:
  - O(source) is production, O(target) the dev database whose schema production gets.
seealso:
  - module: pgshift.ops.data_plan
  - module: pgshift.ops.schema_diff
  - module: pgshift.ops.release_inputs
author:
  - pgshift contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: The plan to approve, written to artifacts/plan.json and artifacts/plan.html
  pgshift.ops.release_plan:
    source: "{{ pgshift_prod_connection }}"
    target: "{{ pgshift_dev_connection }}"
    mapping_file: mapping.yml
    inputs: "{{ pgshift_inputs }}"
    data_plan: "{{ pgshift_data_plan }}"
    preflight: "{{ pgshift_preflight.facts }}"
    backup_dir: /srv/pgshift/backups
    db_host: db1
    web_hosts: [web1]
    app_services: {app1: [shop-api]}
    plan_file: artifacts/plan.json
"""

RETURN = r"""
plan:
  description: >-
    The plan - C(schema) (C(added), C(changed), C(dropped), C(renamed), C(report)), C(data) (C(tables) with C(rows),
    C(carried), C(renamed), C(cast), C(computed), C(defaulted), C(generated); C(accepted_losses),
    C(accepted_changes)), C(refused) (C(kind), C(table), C(column), C(count), C(reason)), C(backup), C(window),
    C(steps) (C(order), C(phase), C(hosts), C(what)), C(inputs), C(inputs_hash).
  returned: always
  type: dict
text:
  description: The plan as text (the diff output).
  returned: always
  type: str
files:
  description: The files written (plan JSON and HTML).
  returned: always
  type: list
  elements: str
"""

import typing as t

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgshift.ops.plugins.module_utils import _plan
from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, endpoint_argument_spec
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError, fail_from


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            source=endpoint_argument_spec(),
            target=endpoint_argument_spec(),
            inputs=dict(type="dict", required=True),
            data_plan=dict(type="dict", required=True),
            mapping_file=dict(type="path"),
            preflight=dict(type="dict", default={}),
            forecast=dict(type="dict"),
            backup_dir=dict(type="path", required=True),
            backup_verify_level=dict(type="str", default="restore"),
            db_host=dict(type="str", required=True),
            web_hosts=dict(type="list", elements="str", default=[]),
            app_services=dict(type="dict", default={}),
            restart_batch=dict(type="int", default=1),
            api_checks=dict(type="list", elements="str", default=[]),
            app_tier=dict(type="bool", default=True),
            plan_file=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    files: list = []
    try:
        prod, dev = ConnParams.from_params(p["source"]), ConnParams.from_params(p["target"])
        facts = p["preflight"] or {}
        info = facts.get("production") or {}
        plan = _plan.build(
            inputs=p["inputs"],
            data_plan=p["data_plan"],
            schema_part=_plan.schema_changes(prod, dev, p["mapping_file"]),
            production={
                "database": prod.database,
                "server_version": facts.get("prod_server_version"),
                "size_bytes": info.get("size_bytes"),
                "dev_database": dev.database,
                "dev_server_version": facts.get("dev_server_version"),
                "migrations_to_apply": list((facts.get("migrations") or {}).get("to_apply") or []),
            },
            backup={
                "dir": p["backup_dir"],
                "estimate_bytes": info.get("size_bytes"),
                "format": "directory",
                "verify_level": p["backup_verify_level"],
            },
            forecast=p["forecast"],
            step_list=_plan.steps(
                db_host=p["db_host"],
                production=prod.database,
                next_database=(facts.get("derived_names") or {}).get("next") or prod.database + "__next",
                web_hosts=p["web_hosts"],
                app_services={str(h): [str(s) for s in (v or [])] for h, v in p["app_services"].items()},
                restart_batch=p["restart_batch"],
                api_checks=p["api_checks"],
                app_tier=p["app_tier"],
            ),
        )
        text = _plan.render_text(plan)
        if p["plan_file"]:
            files = _plan.write(plan, p["plan_file"])
        result: t.Dict[str, t.Any] = dict(changed=bool(files), plan=plan, text=text, files=files)
        if module._diff:
            result["diff"] = dict(before_header="production %s" % prod.database, after_header="plan", prepared=text)
        if plan["refused"]:
            raise PgShiftError(
                "the release is refused (%d problem(s); plan written to %s): %s"
                % (
                    len(plan["refused"]),
                    ", ".join(files) or "no file",
                    "; ".join(str(r["reason"]) for r in plan["refused"][:10]),
                ),
                **result,
            )
    except PgShiftError as exc:
        fail_from(module, exc)
        return
    module.exit_json(**result)


if __name__ == "__main__":
    main()
