# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""The inputs of a release and their hashes: what a plan was made from, so that apply can refuse when they changed.

Inputs: the dev schema (its catalog snapshot hash, owners and grants included, ledger excluded), the migration files
(sha256 each), and the mapping file (sha256). ``inputs_hash`` is the sha256 of all of them in canonical JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import typing as t

from ansible_collections.pgshift.ops.plugins.module_utils import _schema as schema
from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, connect
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError
from ansible_collections.pgshift.ops.plugins.module_utils._migration_files import list_migrations, sha256_file


def compute(dev: ConnParams, migrations_dir: t.Optional[str], mapping_file: t.Optional[str]) -> t.Dict[str, t.Any]:
    conn = connect(dev)
    try:
        snap = schema.take_snapshot(conn, with_owners=True, with_grants=True)
    finally:
        conn.close()
    inputs: t.Dict[str, t.Any] = {"dev_schema": schema.snapshot_hash(snap)}
    if migrations_dir:
        inputs["migrations"] = {m.filename: m.sha256 for m in list_migrations(migrations_dir)}
    if mapping_file:
        if not os.path.isfile(mapping_file):
            raise PgShiftError("mapping file %r does not exist" % mapping_file)
        inputs["mapping"] = sha256_file(mapping_file)
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()
    return {"inputs": inputs, "inputs_hash": hashlib.sha256(canonical).hexdigest()}


def changes(before: t.Dict[str, t.Any], after: t.Dict[str, t.Any]) -> t.List[str]:
    """What differs between two ``inputs`` dicts, in words."""
    out: t.List[str] = []
    if before.get("dev_schema") != after.get("dev_schema"):
        out.append("the dev schema changed")
    old, new = before.get("migrations", {}), after.get("migrations", {})
    for name in sorted(set(old) | set(new)):
        if name not in new:
            out.append("migration %s was removed" % name)
        elif name not in old:
            out.append("migration %s was added" % name)
        elif old[name] != new[name]:
            out.append("migration %s was edited" % name)
    if before.get("mapping") != after.get("mapping"):
        out.append("the mapping file changed")
    return out


def verify(
    dev: ConnParams, migrations_dir: t.Optional[str], mapping_file: t.Optional[str], expected: t.Dict[str, t.Any]
) -> t.Dict[str, t.Any]:
    """The current inputs (as ``compute`` returns them), or PgShiftError saying what changed since ``expected``."""
    current = compute(dev, migrations_dir, mapping_file)
    changed_inputs = changes(expected, current["inputs"])
    if changed_inputs:
        raise PgShiftError(
            "the release inputs changed since the plan was made (%s): make a new plan (a --check run) and review it"
            % "; ".join(changed_inputs),
            changes=changed_inputs,
        )
    return current
