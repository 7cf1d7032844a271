#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: restore
short_description: Restore a pgshift backup into a named database, proven equal to the backup before it takes the name
version_added: 0.1.0
description:
  - Checks the manifest's seal and every file's sha256 first; nothing is touched when they fail.
  - Restores into a temporary database (C(pg_restore -j N), owners and privileges kept, so the roles must exist),
    recomputes every table's row count and content checksum and compares them with the manifest. Only then does an
    existing O(target_database) get dropped (with O(replace=true)) and the new one renamed to O(target_database).
    On any failure the temporary database is dropped and O(target_database) is left as it was.
  - This is the last-resort rollback path of the production release.
extends_documentation_fragment:
  - pgshift.ops.attributes
  - pgshift.ops.attributes.action_group
  - pgshift.ops.connection
attributes:
  check_mode:
    support: full
    details: Check mode checks the files and reports whether the target exists and would be replaced.
  diff_mode:
    support: none
options:
  manifest_path:
    description: The manifest of the backup to restore.
    type: path
    required: true
  target_database:
    description: Name of the database to restore into.
    type: str
    required: true
  replace:
    description: Replace O(target_database) when it exists. Without it, an existing database makes the task fail.
    type: bool
    default: false
  jobs:
    description: Parallel C(pg_restore) workers.
    type: int
    default: 2
  checksum_jobs:
    description: Connections computing the restored tables' checksums.
    type: int
    default: 1
  keep_owners:
    description:
      - Restore owners and privileges (the roles must exist on the cluster).
      - V(false) gives everything to O(user).
    type: bool
    default: true
notes:
  - The connection options name the cluster to restore into. When O(database) is O(target_database), the module
    connects to C(postgres) instead to create, drop and rename databases.
seealso:
  - module: pgshift.ops.backup
  - module: pgshift.ops.backup_verify
author:
  - pgshift contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Put production back from its verified backup
  pgshift.ops.restore:
    manifest_path: "{{ backup.manifest_path }}"
    target_database: shop
    replace: true
    jobs: 2
    host: db.internal
    password: "{{ vault_pg_password }}"
"""

RETURN = r"""
target_database:
  description: The database restored.
  returned: always
  type: str
  sample: shop
existed:
  description: Whether O(target_database) existed before.
  returned: always
  type: bool
replaced:
  description: Whether an existing O(target_database) was replaced (in check mode, would be).
  returned: always
  type: bool
temporary_database:
  description: The database the restore went into before it was renamed.
  returned: always
  type: str
verified:
  description: True when every table of the restored database matched the manifest.
  returned: when not in check mode
  type: bool
checksum_algorithm:
  description: The manifest's content-checksum algorithm, with which the restored copy was hashed.
  returned: always
  type: str
  sample: values-v1
tables:
  description: Per-table results (manifest rows and checksum against the restored ones).
  returned: when not in check mode
  type: dict
large_objects:
  description:
    - The manifest's large objects (count and fingerprint) against the restored ones, owners and ACLs included
      when they are restored; C(ok) is null when the manifest records none (a backup from an older version).
  returned: when not in check mode
  type: dict
mismatches:
  description:
    - Tables (or the large objects) that did not match (empty on success; on failure the task fails and names them).
  returned: when not in check mode
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgshift.ops.plugins.module_utils._backup_verify import restore_backup
from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, connection_argument_spec
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError, fail_from


def main() -> None:
    spec = connection_argument_spec()
    spec.update(
        manifest_path=dict(type="path", required=True),
        target_database=dict(type="str", required=True),
        replace=dict(type="bool", default=False),
        jobs=dict(type="int", default=2),
        checksum_jobs=dict(type="int", default=1),
        keep_owners=dict(type="bool", default=True),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    try:
        result = restore_backup(
            p["manifest_path"],
            ConnParams.from_params(p),
            p["target_database"],
            replace=p["replace"],
            jobs=p["jobs"],
            checksum_jobs=p["checksum_jobs"],
            keep_owners=p["keep_owners"],
            check_mode=module.check_mode,
        )
    except PgShiftError as exc:
        fail_from(module, exc, target_database=p["target_database"])
        return
    module.exit_json(**result)


if __name__ == "__main__":
    main()
