# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The options of the modules that build the new production database (rebuild_swap, online_fill): one run of the
    # journal, the dev schema and inputs it was planned with, where and how the build works.
    DOCUMENTATION = r"""
options:
  production_database:
    description:
      - Name of the production database; the new one is named C(<production_database>__next) (shortened with a
        stable hash when that would exceed 63 bytes).
    type: str
    required: true
  run_id:
    description: The journal's run (M(pgshift.ops.run_journal) C(action=start)).
    type: str
    required: true
  journal_database:
    description: Database of the production cluster that holds the journal.
    type: str
    default: pgshift
  expect_inputs:
    description:
      - The inputs the run was planned with (C(inputs) of M(pgshift.ops.release_inputs)); the call fails at its
        inputs step when the dev schema, a migration or the mapping changed since.
    type: dict
    required: true
  migrations_dir:
    description: The migrations folder of the release (hashed by the inputs step).
    type: path
  mapping_file:
    description: The release's mapping file (renamed tables and columns, expressions, accepted losses).
    type: path
  workdir:
    description:
      - Folder (created 0700) for this build's private C(pgshift-build-<run id>-*) work folder (the dev schema's
        archive).
    type: path
  tablespace:
    description: Tablespace of the new database (default that of the cluster).
    type: str
  jobs:
    description: Parallel copy and check workers.
    type: int
    default: 2
  watch_pid:
    description:
      - A process that must be alive at every step (the controller, when it runs on the database host - the playbook
        passes the C(pgshift.ops.controller_pid) lookup), so that a killed controller's call stops at its next step.
    type: int
  require_lock:
    description: Refuse each step once the run lock of O(production_database) is no longer held.
    type: bool
    default: true
"""
