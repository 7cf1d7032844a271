#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: perf_check
short_description: Time a team's named queries with EXPLAIN ANALYZE and compare them with a baseline
version_added: 0.1.0
description:
  - Reads named queries from O(queries_file) (YAML, C(queries) - a list of C(name), C(sql), optional C(params) and
    C(expect_rows)), runs each O(warmup) + O(runs) times as C(EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)) and returns
    the median and spread of the server's execution time, the rows returned and the plan shape (node types,
    relations, index names).
  - Every run is in its own transaction that is rolled back; it is C(READ ONLY) unless O(allow_writes=true), so a
    query that writes fails instead of changing anything.
  - Before the queries, checks the database - indexes that are not valid, and tables without statistics for their
    data since the load (never analyzed, analyzed before O(analyzed_since), or with more rows changed since their last
    analyze than autovacuum's threshold). With O(analyze=true) it then runs C(ANALYZE), so plans are fair.
  - With O(baseline), compares with a baseline file written earlier by O(baseline_out) - a query slower than
    O(warn_ratio) is a warning, slower than O(fail_ratio) an error, an index the baseline plan used and the plan no
    longer uses is an error. Errors (also a failing query, a wrong row count, an invalid index) fail the task unless
    O(fail_on_findings=false).
extends_documentation_fragment:
  - pgshift.ops.attributes
  - pgshift.ops.attributes.action_group
  - pgshift.ops.connection
attributes:
  check_mode:
    support: full
    details:
      - Queries run read-only and rolled back as always; C(ANALYZE) is skipped and no file is written.
  diff_mode:
    support: none
options:
  queries_file:
    description: The YAML file of named queries.
    type: path
    required: true
  queries:
    description: Run only these queries of the file (by name).
    type: list
    elements: str
  runs:
    description: Measured runs per query.
    type: int
    default: 5
  warmup:
    description: Runs per query before the measured ones (not counted).
    type: int
    default: 1
  analyze:
    description: Run C(ANALYZE) on the database before timing the queries (after the statistics check).
    type: bool
    default: true
  analyzed_since:
    description: A table whose last analyze is older than this time (ISO 8601, for example the end of the load) has no
      statistics for its data.
    type: str
  baseline:
    description: A baseline file (written by O(baseline_out)) to compare with.
    type: path
  baseline_out:
    description: Write this run's figures as a baseline file (JSON, mode 0600, atomically, folder 0700 when created).
    type: path
  output_file:
    description: Write the whole result, findings included, to this file (JSON, mode 0600), also when the task fails.
    type: path
  warn_ratio:
    description: A median more than this many times the baseline's is a warning.
    type: float
    default: 1.5
  fail_ratio:
    description: A median more than this many times the baseline's is an error.
    type: float
    default: 3.0
  noise_floor_ms:
    description: Baseline medians below this many milliseconds are compared as this value (sub-millisecond jitter is
      not a regression).
    type: float
    default: 1.0
  timeout_ms:
    description: C(statement_timeout) of each run, in milliseconds.
    type: int
    default: 30000
  allow_writes:
    description: Run the queries in read-write transactions (still rolled back). Never under check mode.
    type: bool
    default: false
  fail_on_findings:
    description: Fail the task when there is an error finding. With V(false) the findings are only returned.
    type: bool
    default: true
seealso:
  - module: pgshift.ops.rehearsal
author:
  - pgshift contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Baseline of production before the release
  pgshift.ops.perf_check:
    queries_file: sample_app/queries.yml
    baseline_out: /var/lib/pgshift/perf/shop-baseline.json
    host: db.internal
    database: shop
    password: "{{ vault_pg_password }}"

- name: After the swap - same queries, compared with the baseline
  pgshift.ops.perf_check:
    queries_file: sample_app/queries.yml
    baseline: /var/lib/pgshift/perf/shop-baseline.json
    fail_ratio: 3
    host: db.internal
    database: shop
    password: "{{ vault_pg_password }}"
  register: perf
"""

RETURN = r"""
ok:
  description: True when there is no error finding.
  returned: always
  type: bool
  sample: true
queries:
  description: Per query - median, spread and runs (ms), rows, plan shape, buffers, or C(error).
  returned: always
  type: dict
  sample:
    customer by id: {median_ms: 0.031, min_ms: 0.029, max_ms: 0.05, spread_ms: 0.021, mad_ms: 0.002, rows: 1,
                     node_types: [Index Scan], relations: [customers], indexes: [customers_pkey]}
findings:
  description: What is wrong, each with C(kind) (slower, index_lost, rows, error, invalid_index, not_analyzed),
    C(severity) (error or warning) and a C(message).
  returned: always
  type: list
  elements: dict
  sample:
    - {query: order lines, kind: index_lost, severity: error, indexes: [order_lines_pkey],
       message: "order lines: the plan no longer uses order_lines_pkey (baseline plan: Index Scan; now: Seq Scan)"}
error_count:
  description: Number of error findings.
  returned: always
  type: int
warning_count:
  description: Number of warning findings.
  returned: always
  type: int
not_analyzed:
  description: Tables that had no statistics for their data when the check started.
  returned: always
  type: list
  elements: str
analyzed:
  description: Whether C(ANALYZE) ran.
  returned: always
  type: bool
invalid_indexes:
  description: Indexes that are not valid or not ready.
  returned: always
  type: list
  elements: str
notes:
  description: Queries that could not be compared with the baseline, and why.
  returned: always
  type: list
  elements: str
statements:
  description: Statements run besides the queries (C(ANALYZE)).
  returned: always
  type: list
  elements: str
files_written:
  description: Files written (in check mode, that would be written).
  returned: always
  type: list
  elements: str
"""

import typing as t

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgshift.ops.plugins.module_utils import _perf as perf
from ansible_collections.pgshift.ops.plugins.module_utils._connection import (
    ConnParams,
    connect,
    connection_argument_spec,
)
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError, fail_from


def main() -> None:
    spec = connection_argument_spec()
    spec.update(
        queries_file=dict(type="path", required=True),
        queries=dict(type="list", elements="str"),
        runs=dict(type="int", default=5),
        warmup=dict(type="int", default=1),
        analyze=dict(type="bool", default=True),
        analyzed_since=dict(type="str"),
        baseline=dict(type="path"),
        baseline_out=dict(type="path"),
        output_file=dict(type="path"),
        warn_ratio=dict(type="float", default=1.5),
        fail_ratio=dict(type="float", default=3.0),
        noise_floor_ms=dict(type="float", default=1.0),
        timeout_ms=dict(type="int", default=30000),
        allow_writes=dict(type="bool", default=False),
        fail_on_findings=dict(type="bool", default=True),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    opts = perf.Options(**{k: p[k] for k in perf.Options._fields if k != "only"}, only=p["queries"])
    result: t.Dict[str, t.Any] = {}
    try:
        conn = connect(ConnParams.from_params(p), application_name="pgshift-perf")
        try:
            result = perf.run_check(conn, opts, check_mode=module.check_mode)
        finally:
            conn.rollback()
            conn.close()
    except PgShiftError as exc:
        fail_from(module, exc)
    changed = bool(result["analyzed"] or (result["files_written"] and not module.check_mode))
    if p["fail_on_findings"] and not result["ok"]:
        module.fail_json(
            msg="perf_check: %d error finding(s): %s"
            % (result["error_count"], "; ".join(f["message"] for f in result["findings"] if f["severity"] == "error")),
            changed=changed,
            **result,
        )
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
