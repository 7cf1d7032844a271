#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_verify
short_description: Prove that a pgshift backup is intact and restores to the content production had
version_added: 0.1.0
description:
  - Levels are cumulative. V(checksum) checks the manifest's seal (a hand-edited manifest is refused) and the size
    and sha256 of every file (a flipped byte, a truncated, missing or unexpected file).
  - V(read) adds C(pg_restore -f /dev/null), which reads and decompresses every block of the archive.
  - V(restore) adds a restore drill instead of the read. The archive is restored into a throwaway database
    C(pgshift_verify_<id>) on the cluster given by the connection options (the same one or another), every table's
    row count and content checksum is recomputed and compared with the manifest, and the throwaway database is always
    dropped.
  - Any mismatch fails the task and names the file or table. On success a C(verification.json) record (0600) is
    written beside the manifest.
extends_documentation_fragment:
  - pgshift.ops.attributes
  - pgshift.ops.attributes.action_group
  - pgshift.ops.connection
attributes:
  check_mode:
    support: full
    details: Check mode runs the file checks (read only) and reports the throwaway database a restore would use.
  diff_mode:
    support: none
options:
  manifest_path:
    description: The manifest of the backup (the RV(pgshift.ops.backup#module:manifest_path) of M(pgshift.ops.backup)).
    type: path
    required: true
  level:
    description: How far to verify.
    type: str
    default: restore
    choices: [checksum, read, restore]
  jobs:
    description: Parallel C(pg_restore) workers for O(level=restore).
    type: int
    default: 2
  checksum_jobs:
    description: Connections computing the restored tables' checksums.
    type: int
    default: 1
notes:
  - For O(level=restore) the connection options name the cluster to restore into; O(database) is only the
    database used to create and drop the throwaway one.
seealso:
  - module: pgshift.ops.backup
  - module: pgshift.ops.restore
author:
  - pgshift contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Restore drill on a scratch cluster
  pgshift.ops.backup_verify:
    manifest_path: "{{ backup.manifest_path }}"
    level: restore
    host: scratch.internal
    password: "{{ vault_scratch_password }}"

- name: Quick check of the files only
  pgshift.ops.backup_verify:
    manifest_path: /var/backups/pgshift/shop-20261125T230613Z-8959d9/manifest.json
    level: checksum
"""

RETURN = r"""
verified:
  description: True when every check of the level passed.
  returned: always
  type: bool
  sample: true
level:
  description: The level verified.
  returned: always
  type: str
  sample: restore
checks:
  description: The checks that ran, in order.
  returned: always
  type: list
  elements: str
  sample: [manifest, checksum, restore]
checksum_algorithm:
  description:
    - The manifest's content-checksum algorithm; the restored copy is hashed with it and no other. A manifest
      without one is from before it was recorded and reads as V(row-text-v1); an algorithm this version does not
      know fails the task (take a new backup).
  returned: always
  type: str
  sample: values-v1
tables:
  description:
    - Per table (C(schema.table)), the manifest's rows and checksum.
    - For O(level=restore) also the restored ones and C(ok).
  returned: always
  type: dict
large_objects:
  description:
    - The manifest's large objects (C(expected) - count and fingerprint) and, for O(level=restore), the restored
      ones (C(actual)) and C(ok) (null when the manifest records none, as a backup from an older version). The drill
      restores without owners and ACLs, so it compares the count, the data and the comments.
  returned: always
  type: dict
mismatches:
  description:
    - Every problem found; each names its C(file) or C(table) (or has C(large_objects=true)) and gives a C(reason).
  returned: always
  type: list
  elements: dict
  sample: [{"table": "public.orders", "reason": "table public.orders has 41 rows, the manifest says 42"}]
throwaway_database:
  description: Name of the throwaway database of the restore drill (already dropped).
  returned: when level is restore
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgshift.ops.plugins.module_utils._backup_verify import verify_backup
from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, connection_argument_spec
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError, fail_from


def main() -> None:
    spec = connection_argument_spec()
    spec.update(
        manifest_path=dict(type="path", required=True),
        level=dict(type="str", default="restore", choices=["checksum", "read", "restore"]),
        jobs=dict(type="int", default=2),
        checksum_jobs=dict(type="int", default=1),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    try:
        result = verify_backup(
            p["manifest_path"],
            p["level"],
            ConnParams.from_params(p),
            jobs=p["jobs"],
            checksum_jobs=p["checksum_jobs"],
            check_mode=module.check_mode,
        )
    except PgShiftError as exc:
        fail_from(module, exc, verified=False, level=p["level"])
        return
    if result["mismatches"]:
        reasons = "; ".join(str(m.get("reason")) for m in result["mismatches"][:5])
        more = len(result["mismatches"]) - 5
        module.fail_json(
            msg="backup verification (level %s) failed: %s%s"
            % (p["level"], reasons, " (+%d more)" % more if more > 0 else ""),
            **result,
        )
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
