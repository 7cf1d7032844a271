#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: backup
short_description: Back up a PostgreSQL database with a manifest that proves what the archive must contain
version_added: 0.1.0
description:
  - Opens a C(REPEATABLE READ) transaction, exports its snapshot and runs C(pg_dump --snapshot=) on it, while other
    connections importing the same snapshot compute every table's exact row count and content checksum
    (C(count(*)) and the sum of C(hashtextextended) of each row's text).
  - Writes a manifest beside the archive (C(manifest.json)) with the database, server and client versions, the
    snapshot, the size and sha256 of every file, per-table counts and checksums, the node-pg-migrate ledger and the
    schema hash. Use M(pgshift.ops.backup_verify) to prove the backup.
  - Also saves roles and tablespaces with C(pg_dumpall --globals-only) unless O(globals=false).
  - Every file is 0600 in a 0700 folder; the backup is built in a hidden folder renamed into place when complete. The
    password reaches the client binaries through a 0600 C(PGPASSFILE), never argv or the environment.
  - Retention removes older backups of the same O(label) that are both beyond the newest O(retention_keep) and
    older than O(retention_days) days. Whatever the settings, it never removes the newest verified backup of the
    label (one whose C(verification.json) matches its manifest) nor, with O(journal_database), a backup an unfinished
    run of that journal recorded.
extends_documentation_fragment:
  - pgshift.ops.attributes
  - pgshift.ops.attributes.action_group
  - pgshift.ops.connection
attributes:
  check_mode:
    support: full
    details: Check mode returns the plan (target path, estimated size, free space, backups retention would remove).
  diff_mode:
    support: none
options:
  dest_dir:
    description: Folder that holds the backups (created 0700); each backup gets a folder C(<label>-<backup_id>) in it.
    type: path
    required: true
  format:
    description: C(pg_dump) archive format.
    type: str
    default: custom
    choices: [custom, directory]
  jobs:
    description: Parallel C(pg_dump) workers; only used with O(format=directory).
    type: int
    default: 2
  compress:
    description:
      - Compression. V(light) is lz4 with a PostgreSQL 16+ C(pg_dump), gzip level 1 otherwise.
      - V(none), a gzip level V(0) to V(9), or V(gzip[:N]), V(lz4[:N]), V(zstd[:N]) (lz4 and zstd need C(pg_dump) 16+).
    type: str
    default: light
  globals:
    description:
      - Also save roles and tablespaces with C(pg_dumpall --globals-only).
      - Without role passwords when O(user) is not a superuser.
    type: bool
    default: true
  label:
    description: Name of the backup series (retention works per label). Defaults to the database name.
    type: str
  retention_keep:
    description: Always keep this many newest backups of the label.
    type: int
    default: 5
  retention_days:
    description: Always keep backups of the label younger than this many days (V(0) - only O(retention_keep) counts).
    type: int
    default: 14
  journal_database:
    description:
      - The run journal's database on the same cluster. When given, backups recorded by unfinished runs (running or
        failed, not rolled back) are never removed by retention. A journal that does not exist yet protects nothing.
    type: str
  checksum_jobs:
    description: Connections computing table checksums while C(pg_dump) runs.
    type: int
    default: 1
  lock_wait_timeout:
    description:
      - How long C(pg_dump) and the checksum connections wait for a table lock (PostgreSQL interval, for example
        V(60s)). A session holding an exclusive lock longer makes the backup fail cleanly, leaving nothing behind.
    type: str
    default: 60s
  space_check:
    description: Refuse to start when the free space in O(dest_dir) is below the size of the database's tables.
    type: bool
    default: true
  min_client_major:
    description: Lowest major version of C(pg_dump) to use (never lower than the server's).
    type: int
    default: 0
  checksum_algorithm:
    description:
      - The content-checksum algorithm recorded in the manifest and used again by every verification of this backup.
      - V(values-v1) hashes each column's value with its type's own hash function where the type allows it, and its
        text form otherwise (PostgreSQL 11+). V(row-text-v1) hashes each row's text form (any version, slower).
      - Default (null) is the best the server computes, V(values-v1) from PostgreSQL 11.
    type: str
    choices: [values-v1, row-text-v1]
seealso:
  - module: pgshift.ops.backup_verify
  - module: pgshift.ops.restore
author:
  - pgshift contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Back up production (directory format, two workers)
  pgshift.ops.backup:
    host: db.internal
    password: "{{ vault_pg_password }}"
    database: shop
    dest_dir: /var/backups/pgshift
    format: directory
    jobs: 2
  register: backup

- name: Prove it restores with the same content
  pgshift.ops.backup_verify:
    manifest_path: "{{ backup.manifest_path }}"
    level: restore
    host: db.internal
    password: "{{ vault_pg_password }}"
"""

RETURN = r"""
backup_id:
  description: Identifier of the backup (UTC time and a random suffix).
  returned: always
  type: str
  sample: 20261125T230613Z-8959d9
path:
  description: Path of the archive (a file for the custom format, a folder for the directory format).
  returned: always
  type: str
  sample: /var/backups/pgshift/shop-20261125T230613Z-8959d9/database.dump
manifest_path:
  description: Path of the manifest.
  returned: always
  type: str
  sample: /var/backups/pgshift/shop-20261125T230613Z-8959d9/manifest.json
manifest:
  description:
    - The manifest (null in check mode). Keys include database, server_version, clients, snapshot_id,
      snapshot_time, files (relative path to size and sha256), checksum_algorithm, tables (C(schema.table) to rows
      and checksum), large_objects (count and fingerprint, in the same snapshot), ledger, schema_hash and
      manifest_sha256 (its seal).
  returned: always
  type: dict
size_bytes:
  description: Total size of the backup's files (in check mode, the estimate).
  returned: always
  type: int
  sample: 290460
removed:
  description: Backup folders removed by retention (in check mode, those that would be).
  returned: always
  type: list
  elements: str
retention_kept:
  description: Older backups of the label that retention keeps, each with the reason (newest N, younger than the
    age, the newest verified one, in use by an unfinished run).
  returned: always
  type: dict
in_use:
  description: Backup folders unfinished runs of O(journal_database) recorded (never removed).
  returned: always
  type: list
  elements: str
plan:
  description: Target folder, clients, checksum algorithm, estimated size, free space and whether it is enough.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgshift.ops.plugins.module_utils._backup import BackupOptions, take_backup
from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, connection_argument_spec
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError, fail_from, without_file_stats


def main() -> None:
    spec = connection_argument_spec()
    spec.update(
        dest_dir=dict(type="path", required=True),
        format=dict(type="str", default="custom", choices=["custom", "directory"]),
        jobs=dict(type="int", default=2),
        compress=dict(type="str", default="light"),
        globals=dict(type="bool", default=True),
        label=dict(type="str"),
        retention_keep=dict(type="int", default=5),
        retention_days=dict(type="int", default=14),
        journal_database=dict(type="str"),
        checksum_jobs=dict(type="int", default=1),
        lock_wait_timeout=dict(type="str", default="60s"),
        space_check=dict(type="bool", default=True),
        min_client_major=dict(type="int", default=0),
        checksum_algorithm=dict(type="str", choices=["values-v1", "row-text-v1"]),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    without_file_stats(module)  # its result names a path: no file-stat keys added to it
    p = module.params
    options = BackupOptions(**{k: p[k] for k in BackupOptions.__dataclass_fields__})
    try:
        result = take_backup(ConnParams.from_params(p), options, check_mode=module.check_mode)
    except PgShiftError as exc:
        fail_from(module, exc)
        return
    module.exit_json(**result)


if __name__ == "__main__":
    main()
