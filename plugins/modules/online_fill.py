#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: online_fill
short_description: Build and fill the new production database while production serves, then follow its changes
version_added: 0.1.0
description:
  - The online release's fill, before the maintenance window (docs/online.md). Records C(build) V(started) in the run
    journal, checks the inputs again against O(expect_inputs), creates C(<production_database>__next) with the dev
    schema's pre-data, then starts a detached stream holder process on this host.
  - The holder opens a change stream on production (publication, then a logical replication slot whose exported
    snapshot the copy reads; both recorded in the journal first), copies production's data in that snapshot through
    the release's mapping, builds the indexes and constraints, proves the copy against the same snapshot, records
    C(online_fill) V(done) and then applies production's changes continuously until the window's
    M(pgshift.ops.rebuild_swap) with O(pgshift.ops.rebuild_swap#module:online=true) asks for the cut-over.
  - The module returns once the bulk part is done and proven and the stream has caught up with production (within
    O(max_lag_mb)), or fails with the holder's error.
  - The holder stops by itself, dropping the slot, the publication and the replication origin, when the run is
    rolled back, its run lock is let go (the controller died), the process O(watch_pid) ends, the slot disappears, or
    the slot retains more than O(wal_limit_mb) of production's WAL. M(pgshift.ops.rollback) drops whatever the journal
    recorded in any case.
extends_documentation_fragment:
  - pgshift.ops.attributes
  - pgshift.ops.attributes.action_group
  - pgshift.ops.connection
  - pgshift.ops.connection.schema_source
  - pgshift.ops.rebuild
attributes:
  check_mode:
    support: full
    details: Nothing is created, started or recorded; each step says what it would do.
  diff_mode:
    support: full
    details: The diff shows the databases of the cluster before and after.
options:
  wal_limit_mb:
    description:
      - Production WAL the slot may retain during the fill, in MB; past it the stream is dropped and the run fails
        before production's disk is at risk. V(0) for no limit.
    type: int
    default: 4096
  fill_timeout:
    description: Seconds the bulk copy, post-data and proof may take.
    type: int
    default: 21600
  max_lag_mb:
    description:
      - The module returns once the stream is at most this many MB of WAL behind production (the changes committed
        during the copy applied), so that the window's catch-up is short.
    type: int
    default: 16
  catch_up_timeout:
    description:
      - Seconds the stream may take to get within O(max_lag_mb); past them the module fails (before any window) - the
        applications write faster than the stream applies.
    type: int
    default: 1800
seealso:
  - module: pgshift.ops.online_check
  - module: pgshift.ops.rebuild_swap
  - module: pgshift.ops.rollback
author:
  - pgshift contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Fill the new database with production live
  pgshift.ops.online_fill:
    production_database: shop
    run_id: "{{ run.run_id }}"
    schema_source: "{{ pgshift_dev_connection }}"
    expect_inputs: "{{ inputs.inputs }}"
    mapping_file: /srv/shop/mapping.yml
    workdir: /var/lib/pgshift/work
  register: fill
"""

RETURN = r"""
steps:
  description: Each step in order with its C(name), C(state) and C(seconds).
  returned: always
  type: list
  elements: dict
holder:
  description: The stream holder's C(pid), its private C(folder) and the C(status_file) its apply writes every second
    (rows, rows per second, bytes behind, WAL retained).
  returned: success, not in check mode
  type: dict
eligibility:
  description: C(streamed) tables, C(in_window) (carried in the window, with the reason), C(large_objects_in_window).
  returned: success, not in check mode
  type: dict
copy:
  description: The bulk copy (C(total_rows), C(tables) with rows and seconds, C(seconds)).
  returned: success, not in check mode
  type: dict
integrity:
  description: The bulk part's proof against the stream's snapshot (as M(pgshift.ops.integrity_check) returns it).
  returned: success, not in check mode
  type: dict
stream:
  description: C(slot), C(publication), C(origin), C(consistent_point), C(snapshot).
  returned: success, not in check mode
  type: dict
caught_up:
  description: C(bytes_behind) when the module returned, C(bytes_behind_at_start), C(seconds) waited, C(applied) (the
    holder's apply - rows, rows per second), C(wal_retained_bytes).
  returned: success, not in check mode
  type: dict
seconds:
  description: Wall time of the call.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgshift.ops.plugins.module_utils import _rebuild as rebuild
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError, fail_from


def main() -> None:
    spec = rebuild.argument_spec()
    spec.update(
        wal_limit_mb=dict(type="int", default=4096),
        fill_timeout=dict(type="int", default=21600),
        max_lag_mb=dict(type="int", default=16),
        catch_up_timeout=dict(type="int", default=1800),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    if p["wal_limit_mb"] < 0:
        module.fail_json(msg="wal_limit_mb must be 0 (no limit) or a positive number of MB")
    try:
        result = rebuild.fill(
            rebuild.spec_from(
                p,
                module.check_mode,
                module.log,
                online=True,
                wal_limit_bytes=p["wal_limit_mb"] * 1024 * 1024,
                fill_timeout=float(p["fill_timeout"]),
                max_lag_bytes=max(p["max_lag_mb"], 0) * 1024 * 1024,
                catch_up_timeout=float(p["catch_up_timeout"]),
            )
        )
    except PgShiftError as exc:
        fail_from(module, exc)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
