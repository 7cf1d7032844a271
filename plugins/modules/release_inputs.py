#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: release_inputs
short_description: Hash the inputs of a release, and refuse when they changed since the plan
version_added: 0.1.0
description:
  - Computes the hashes a release plan is made from - the dev schema (catalog snapshot, owners and grants included),
    every migration file and the mapping file - and their combined RV(inputs_hash).
  - With O(expect), fails when the inputs differ from those (a plan made from other inputs must not be applied),
    saying what changed. With O(plan_file) and O(write_plan=true), writes the plan (0600); with O(plan_file) alone,
    reads the expected inputs from it.
extends_documentation_fragment:
  - pgshift.ops.attributes
  - pgshift.ops.attributes.action_group
  - pgshift.ops.connection
attributes:
  check_mode:
    support: full
    details: Read-only, except the plan file, which O(write_plan) writes in check mode too (it is the plan's output).
  diff_mode:
    support: none
options:
  migrations_dir:
    description: The migrations folder of the release.
    type: path
  mapping_file:
    description: The mapping file of the release.
    type: path
  expect:
    description: Inputs (as returned in RV(inputs)) the current ones must equal.
    type: dict
  plan_file:
    description: A plan file to write (O(write_plan=true)) or to compare with.
    type: path
  write_plan:
    description: Write RV(inputs) to O(plan_file).
    type: bool
    default: false
notes:
  - The connection options point at the dev database.
author:
  - pgshift contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Refuse when the dev schema or a migration changed since the plan was made
  pgshift.ops.release_inputs:
    migrations_dir: migrations
    mapping_file: mapping.yml
    plan_file: artifacts/plan.json
    host: dev-db.internal
    database: shop
"""

RETURN = r"""
inputs:
  description: The hash of each input.
  returned: always
  type: dict
inputs_hash:
  description: sha256 of all inputs.
  returned: always
  type: str
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgshift.ops.plugins.module_utils import _inputs as inputs
from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, connection_argument_spec
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError, fail_from


def main() -> None:
    spec = connection_argument_spec()
    spec.update(
        migrations_dir=dict(type="path"),
        mapping_file=dict(type="path"),
        expect=dict(type="dict"),
        plan_file=dict(type="path"),
        write_plan=dict(type="bool", default=False),
    )
    module = AnsibleModule(
        argument_spec=spec, supports_check_mode=True, required_if=[("write_plan", True, ("plan_file",))]
    )
    p = module.params
    try:
        expected = p["expect"]
        if p["plan_file"] and not p["write_plan"]:
            if not os.path.isfile(p["plan_file"]):
                raise PgShiftError("plan file %r does not exist: make the plan first (--check run)" % p["plan_file"])
            with open(p["plan_file"], encoding="utf-8") as handle:
                expected = json.load(handle)["inputs"]
        dev = ConnParams.from_params(p)
        if expected is not None:
            current = inputs.verify(dev, p["migrations_dir"], p["mapping_file"], expected)
        else:
            current = inputs.compute(dev, p["migrations_dir"], p["mapping_file"])
        if p["write_plan"]:
            folder = os.path.dirname(os.path.abspath(p["plan_file"]))
            os.makedirs(folder, mode=0o700, exist_ok=True)
            tmp = p["plan_file"] + ".tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(current, handle, indent=2, sort_keys=True)
            os.replace(tmp, p["plan_file"])
    except PgShiftError as exc:
        fail_from(module, exc)
    module.exit_json(changed=bool(p["write_plan"]), **current)


if __name__ == "__main__":
    main()
