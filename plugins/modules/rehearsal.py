#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: rehearsal
short_description: Staging rehearsals - open one, write its record and forecast, and gate production on it
version_added: 0.1.0
description:
  - O(action=latest_backup) names production's newest backup whose verification was recorded in O(backup_dir).
  - O(action=begin) opens a rehearsal in O(rehearsals_dir) - hashes the release's inputs (dev schema, migration files,
    mapping file; the same hashes the release checks), picks production's latest verified backup, and writes the
    rehearsal's state file (0600, folder 0700).
  - O(action=record) writes the rehearsal record C(<rehearsals_dir>/<id>/rehearsal.json) (0600) - the inputs' hashes,
    the backup, every step's duration from the journal of the staging cluster and, with O(run_report), from the
    progress callback's run report, rows and bytes carried, problems found, checks passed, the performance figures
    written by M(pgshift.ops.perf_check) into the rehearsal folder, and the forecast of production's maintenance
    window. The task fails after writing the record when the rehearsal did not pass.
  - O(action=gate), for the preflight of a release - refuses unless a passing rehearsal of the same inputs and the
    same production database, younger than O(max_age_hours), exists. Its forecast is rescaled to production's size now
    (read from the top-level connection, which names the production cluster). O(required=false) only reports;
    O(override_reason) lets the release go on without a rehearsal, and is logged to C(overrides.jsonl) beside the
    records and returned as a warning.
  - The top-level connection options always name the production cluster. It is only read - its database size - and only
    by O(action=gate), or by O(action=begin) and O(action=record) with O(probe_production=true).
extends_documentation_fragment:
  - pgshift.ops.attributes
  - pgshift.ops.attributes.action_group
  - pgshift.ops.connection
attributes:
  check_mode:
    support: full
    details: Everything is read and computed as usual; no state, record or override log is written.
  diff_mode:
    support: none
options:
  action:
    description: What to do.
    type: str
    required: true
    choices: [latest_backup, begin, record, gate]
  rehearsals_dir:
    description: Folder of the rehearsal records (one sub-folder per rehearsal).
    type: path
  rehearsal_id:
    description: The rehearsal, for O(action=begin) (default a new id) and O(action=record) (default the newest open
      one).
    type: str
  production_database:
    description: Name of the production database the release replaces.
    type: str
    required: true
  backup_dir:
    description: Where production's backups are, for O(action=latest_backup) and O(action=begin).
    type: path
  backup_host:
    description: Only backups taken from this host (as written in the manifest); default any.
    type: str
  backup_port:
    description: Only backups taken from this port (as written in the manifest); default any.
    type: int
  schema_source:
    description: Connection to the dev database whose schema the release brings, for O(action=begin) and O(action=gate)
      when O(inputs) is not given.
    type: dict
    suboptions: &endpoint
      host:
        description: Host name, IP address or Unix socket folder of the server.
        type: str
        aliases: [login_host, login_unix_socket]
      port:
        description: Port of the server.
        type: int
        default: 5432
        aliases: [login_port]
      user:
        description: Role to connect as.
        type: str
        default: postgres
        aliases: [login_user]
      password:
        description: Password of the user; never logged, passed to client binaries through a 0600 PGPASSFILE.
        type: str
        aliases: [login_password]
      database:
        description: Database to connect to.
        type: str
        default: postgres
        aliases: [login_db, db]
      sslmode:
        description: libpq SSL mode.
        type: str
        default: prefer
        choices: [disable, allow, prefer, require, verify-ca, verify-full]
        aliases: [ssl_mode]
      sslrootcert:
        description: File of trusted root certificates.
        type: path
        aliases: [ca_cert]
      sslcert:
        description: Client certificate file (requires sslkey).
        type: path
        aliases: [ssl_cert]
      sslkey:
        description: Private key file of the client certificate (mode 0600, or 0640 when owned by root).
        type: path
        aliases: [ssl_key]
      connect_params:
        description: Further libpq connection keywords (not those pgshift sets, pins or keeps secret).
        type: dict
        default: {}
      connect_timeout:
        description: Seconds to wait for a connection.
        type: int
        default: 10
  staging:
    description: Connection to the staging database the rehearsal runs on (O(action=begin) and O(action=record)).
    type: dict
    suboptions: *endpoint
  migrations_dir:
    description: The migrations folder the release brings (its files are hashed).
    type: path
  mapping_file:
    description: The mapping file of the release (hashed).
    type: path
  inputs:
    description: The inputs and C(inputs_hash) as M(pgshift.ops.release_inputs) returned them; computed when omitted.
    type: dict
  journal_database:
    description: Database of the staging cluster that holds the run journal.
    type: str
    default: pgshift
  run_report:
    description: The progress callback's run report of the rehearsed release (the parsed JSON), for O(action=record).
    type: dict
  release_rc:
    description: Exit status of the rehearsed release's playbook, for O(action=record).
    type: int
  production_report:
    description:
      - The run report of production's last successful C(prod_restore.yml) run (parsed JSON), for O(action=record).
      - When O(app_tier_seconds) is not given, the forecast's application tier allowance is what that run spent on
        the maintenance page, stopping and restarting services and the API checks; without either, 15 seconds.
    type: dict
  probe_production:
    description: For O(action=begin) and O(action=record), read production's database size (one read-only query) to
      scale the forecast when production has grown since the backup.
    type: bool
    default: false
  app_tier_seconds:
    description: Seconds the forecast adds for what a rehearsal does not run (maintenance page, services stopped and
      restarted, API checks). For O(action=record), default from O(production_report), else 15. For O(action=gate),
      default the value recorded by the rehearsal.
    type: float
  settings:
    description: Settings of the rehearsal kept in its state and record (no secrets).
    type: dict
    default: {}
  max_age_hours:
    description: For O(action=gate), the oldest rehearsal accepted.
    type: float
    default: 168
  required:
    description: For O(action=gate), refuse without a matching rehearsal. With V(false) the gate only reports.
    type: bool
    default: true
  override_reason:
    description: For O(action=gate), go on without a matching rehearsal, for this reason (logged, and returned as a
      warning).
    type: str
  fail_on_problems:
    description: For O(action=record), fail the task (after writing the record) when the rehearsal did not pass.
    type: bool
    default: true
seealso:
  - module: pgshift.ops.perf_check
  - module: pgshift.ops.release_inputs
  - module: pgshift.ops.restore
author:
  - pgshift contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Open a rehearsal (hash the inputs, pick production's latest verified backup)
  pgshift.ops.rehearsal:
    action: begin
    rehearsals_dir: artifacts/rehearsals
    production_database: shop
    backup_dir: /var/backups/pgshift
    schema_source: "{{ pgshift_dev_connection }}"
    staging: "{{ pgshift_staging_connection }}"
    migrations_dir: migrations
    mapping_file: mapping.yml
  register: rehearsal

- name: Preflight of the release - a passing rehearsal of these inputs, at most a week old
  pgshift.ops.rehearsal:
    action: gate
    rehearsals_dir: artifacts/rehearsals
    production_database: shop
    inputs: "{{ pgshift_inputs }}"
    max_age_hours: 168
    required: "{{ pgshift_environment != 'local' }}"
    override_reason: "{{ pgshift_rehearsal_override | default(omit) }}"
    host: db.internal
    password: "{{ vault_pg_password }}"
  register: gate
"""

RETURN = r"""
rehearsal_id:
  description: The rehearsal opened, recorded or accepted by the gate.
  returned: when there is one
  type: str
  sample: 20261125T231500Z-1a2b3c
folder:
  description: The rehearsal's folder (O(action=begin)).
  returned: when action is begin
  type: str
backup:
  description: Production's latest verified backup - manifest path, backup id, created, database size, verification.
  returned: when action is latest_backup or begin
  type: dict
inputs:
  description: The inputs' hashes (dev schema, each migration file, mapping file) and C(inputs_hash).
  returned: when action is begin or gate
  type: dict
record:
  description: The rehearsal record (O(action=record)).
  returned: when action is record
  type: dict
path:
  description: Path of the record written.
  returned: when action is record
  type: str
passed:
  description: Whether the rehearsal passed (O(action=record)).
  returned: when action is record
  type: bool
problems:
  description: Problems the rehearsal found.
  returned: when action is record
  type: list
  elements: str
cautions:
  description: What the rehearsal found worth knowing that does not fail it (O(action=record)).
  returned: when action is record
  type: list
  elements: str
query_check:
  description:
    - Whether the rehearsal timed a query set - C(ran), C(queries_file), C(ok) and a C(text) line. Without a query
      file (C(settings.queries_file) empty) the rehearsal runs and passes without the query check, and says so here,
      in its warnings and, for O(action=gate), in a warning of the accepted rehearsal.
  returned: when action is record, or gate with an accepted rehearsal
  type: dict
forecast:
  description: The forecast of production's maintenance window - C(seconds), C(low_seconds), C(high_seconds), the
    fixed and data-driven parts, the size ratio and a C(text) line.
  returned: when a window was measured
  type: dict
ok:
  description: For O(action=gate), whether the release may go on.
  returned: when action is gate
  type: bool
overridden:
  description: For O(action=gate), whether it goes on only because of O(override_reason).
  returned: when action is gate
  type: bool
rejected:
  description: For O(action=gate), why each recent rehearsal did not count.
  returned: when action is gate
  type: list
  elements: str
override_log:
  description: Where the override was logged.
  returned: when an override was used
  type: str
"""

import typing as t

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgshift.ops.plugins.module_utils import _inputs as release_inputs
from ansible_collections.pgshift.ops.plugins.module_utils import _rehearsal as rehearsal
from ansible_collections.pgshift.ops.plugins.module_utils._connection import (
    ConnParams,
    connection_argument_spec,
    endpoint_argument_spec,
)
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError, fail_from, without_file_stats


def _identity(params: ConnParams) -> t.Dict[str, t.Any]:
    return {"host": params.host, "port": params.port, "database": params.database}


def main() -> None:
    spec = connection_argument_spec()
    spec.update(
        action=dict(type="str", required=True, choices=["latest_backup", "begin", "record", "gate"]),
        rehearsals_dir=dict(type="path"),
        rehearsal_id=dict(type="str"),
        production_database=dict(type="str", required=True),
        backup_dir=dict(type="path"),
        backup_host=dict(type="str"),
        backup_port=dict(type="int"),
        schema_source=endpoint_argument_spec(required=False),
        staging=endpoint_argument_spec(required=False),
        migrations_dir=dict(type="path"),
        mapping_file=dict(type="path"),
        inputs=dict(type="dict"),
        journal_database=dict(type="str", default="pgshift"),
        run_report=dict(type="dict"),
        release_rc=dict(type="int"),
        production_report=dict(type="dict"),
        probe_production=dict(type="bool", default=False),
        app_tier_seconds=dict(type="float"),
        settings=dict(type="dict", default={}),
        max_age_hours=dict(type="float", default=168),
        required=dict(type="bool", default=True),
        override_reason=dict(type="str"),
        fail_on_problems=dict(type="bool", default=True),
    )
    module = AnsibleModule(
        argument_spec=spec,
        supports_check_mode=True,
        required_if=[
            ("action", "latest_backup", ("backup_dir",)),
            ("action", "begin", ("rehearsals_dir", "backup_dir", "staging")),
            ("action", "record", ("rehearsals_dir", "staging")),
            ("action", "gate", ("rehearsals_dir",)),
        ],
    )
    without_file_stats(module)  # its result names a path: no file-stat keys added to it
    p = module.params
    production = ConnParams.from_params(p)
    prod_db = p["production_database"]
    result: t.Dict[str, t.Any] = {"changed": False}
    warnings: t.List[str] = []
    try:
        if p["action"] in ("begin", "gate") and not p["inputs"]:
            if not p["schema_source"]:
                raise PgShiftError(
                    "schema_source (the dev database) or inputs is required to hash the release's inputs"
                )
        computed = p["inputs"] or (
            release_inputs.compute(ConnParams.from_params(p["schema_source"]), p["migrations_dir"], p["mapping_file"])
            if p["action"] in ("begin", "gate")
            else {}
        )
        # only the hashes: a registered result of release_inputs carries other keys too
        inputs = {"inputs": computed.get("inputs", {}), "inputs_hash": computed.get("inputs_hash")}
        size_now = None
        if p["action"] == "gate" or p["probe_production"]:
            size_now = rehearsal.database_size(production, prod_db)
        if p["action"] == "latest_backup" or p["action"] == "begin":
            backup = rehearsal.latest_verified_backup(p["backup_dir"], prod_db, p["backup_host"], p["backup_port"])
            result["backup"] = backup
            if p["action"] == "begin":
                if backup is None:
                    raise PgShiftError(
                        "no verified backup of %r in %s: take one first (make backup ENV=prod), or let the rehearsal"
                        " take a fresh one (-e pgshift_rehearsal_fresh_backup=true)" % (prod_db, p["backup_dir"])
                    )
                staging = ConnParams.from_params(p["staging"])
                opened = rehearsal.begin(
                    p["rehearsals_dir"],
                    inputs,
                    dict(_identity(production), database=prod_db, size_bytes=size_now),
                    _identity(staging),
                    backup,
                    p["settings"],
                    p["rehearsal_id"],
                    module.check_mode,
                )
                result.update(changed=True, rehearsal_id=opened["rehearsal_id"], folder=opened["folder"], inputs=inputs)
        elif p["action"] == "record":
            measured = rehearsal.app_tier_from_report(p["production_report"])
            if p["app_tier_seconds"] is not None:
                app_tier, app_tier_from = p["app_tier_seconds"], "app_tier_seconds"
            elif measured is not None:
                app_tier, app_tier_from = measured, "production's last release (run report)"
            else:
                app_tier, app_tier_from = 15.0, "default allowance (no production run report)"
            done = rehearsal.finish(
                p["rehearsals_dir"],
                p["rehearsal_id"],
                ConnParams.from_params(p["staging"]),
                p["journal_database"],
                p["run_report"],
                p["release_rc"],
                size_now,
                app_tier,
                module.check_mode,
                app_tier_from,
            )
            record = done["record"]
            result.update(
                changed=True,
                rehearsal_id=record["rehearsal_id"],
                record=record,
                path=done["path"],
                passed=record["passed"],
                problems=record["problems"],
                cautions=record["warnings"],
                query_check=record["query_check"],
                forecast=record["forecast"],
            )
            if not record["passed"] and p["fail_on_problems"]:
                module.fail_json(
                    msg="the rehearsal %s did not pass: %s (record: %s)"
                    % (record["rehearsal_id"], "; ".join(record["problems"][:5]), done["path"]),
                    **result,
                )
        else:
            found = rehearsal.gate(
                p["rehearsals_dir"],
                inputs,
                prod_db,
                p["max_age_hours"],
                size_now,
                p["app_tier_seconds"],
            )
            result.update(found, inputs=inputs, required=p["required"], overridden=False)
            if found["ok"] and not (found.get("query_check") or {}).get("ran", True):
                warnings.append(
                    "rehearsal %s is accepted, but its %s" % (found["rehearsal_id"], found["query_check"]["text"])
                )
            if not found["ok"]:
                why = "; ".join(found["rejected"]) or "there is no rehearsal record in %s" % p["rehearsals_dir"]
                if p["override_reason"]:
                    identity = dict(_identity(production), database=prod_db)
                    if not module.check_mode:
                        result["override_log"] = rehearsal.log_override(
                            p["rehearsals_dir"],
                            p["override_reason"],
                            identity,
                            inputs.get("inputs_hash"),
                            found["rejected"],
                        )
                        result["changed"] = True
                    result.update(ok=True, overridden=True)
                    warnings.append(
                        "no passing rehearsal of these inputs: going on because of the override %r (logged). %s"
                        % (p["override_reason"], why)
                    )
                elif p["required"]:
                    module.fail_json(
                        msg="no passing rehearsal of these inputs for %r younger than %s h: %s. Run `make rehearsal`"
                        " first, or override explicitly with -e pgshift_rehearsal_override='<reason>' (logged)."
                        % (prod_db, p["max_age_hours"], why),
                        **result,
                    )
                else:
                    result["ok"] = True
                    warnings.append("no passing rehearsal of these inputs (not required here): %s" % why)
    except PgShiftError as exc:
        fail_from(module, exc)
    for warning in warnings:
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
