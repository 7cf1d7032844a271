#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: schema_diff
short_description: Compare two PostgreSQL schemas (live databases, snapshot files or migrations folders)
version_added: 0.1.0
description:
  - Compares two schemas and returns whether they differ (RV(drift)), a structured list of differences (object kind,
    name, what changed, before and after) and a readable report.
  - Each side is a live database (O(source)/O(target)), a snapshot file written by M(pgshift.ops.schema_snapshot)
    (O(source_snapshot)/O(target_snapshot)), or a node-pg-migrate migrations folder (O(source_migrations)/
    O(target_migrations)).
  - A migrations folder is applied, in node-pg-migrate's order and one transaction per migration, to a throwaway
    database created on the O(scratch) server (default the live database's server of the other side) and always
    dropped afterwards, also in check mode. A folder of C(.sql) migrations only is applied by pgshift's own SQL
    runner; a folder with JavaScript or TypeScript migrations is applied by node-pg-migrate itself (see
    O(node_pg_migrate)), so the schema compared is the one node-pg-migrate builds.
  - A rename shows as a removal plus an addition unless O(renames) maps the old name to the new one.
  - The module never changes either schema. It changes files only when O(output_dir) is set (not in check mode).
extends_documentation_fragment:
  - pgshift.ops.attributes
  - pgshift.ops.connection.endpoints
attributes:
  check_mode:
    support: full
    details: >-
      Compares exactly as in a normal run (the throwaway database is still created and dropped) but writes no file.
  diff_mode:
    support: full
    details: Returns the report as the diff.
options:
  source:
    description:
      - The first schema, as a live database. Exactly one of O(source), O(source_snapshot), O(source_migrations).
    type: dict
    required: false
  target:
    description:
      - The second schema, as a live database. Exactly one of O(target), O(target_snapshot), O(target_migrations).
    type: dict
    required: false
  source_snapshot:
    description:
      - The first schema, as a snapshot file (JSON or YAML). Its recorded sha256 is checked.
    type: path
  source_migrations:
    description:
      - The first schema, as the result of applying this migrations folder to a throwaway database.
    type: path
  target_snapshot:
    description:
      - The second schema, as a snapshot file (JSON or YAML).
    type: path
  target_migrations:
    description:
      - The second schema, as the result of applying this migrations folder to a throwaway database.
    type: path
  scratch:
    description:
      - Server on which the throwaway database for a migrations folder is created and dropped; its O(scratch.database)
        is the database to connect to for that. The role needs the C(CREATEDB) privilege and every role the migrations
        grant to must exist there.
      - Default the connection of the live database on the other side.
    type: dict
    suboptions:
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
  node_pg_migrate:
    description:
      - Path of the node-pg-migrate CLI that applies a migrations folder holding C(.js) or C(.ts) migrations.
      - Default C(node_modules/.bin/node-pg-migrate) in the folder or a folder above it, else C(node-pg-migrate) on
        the PATH.
    type: path
  migrations_from_ledger:
    description:
      - Apply only the migrations that the other side's ledger lists, in its order (the schema that database should
        have), instead of the whole folder. The other side must be a live database or a snapshot file.
      - A ledger entry without a file in the folder is an error.
    type: bool
    default: false
  ledger_schema:
    description:
      - Schema of node-pg-migrate's ledger table C(pgmigrations).
    type: str
    default: public
  include_schemas:
    description:
      - Compare only these schemas (exact names); applies to live databases and migrations folders.
    type: list
    elements: str
  exclude_schemas:
    description:
      - Leave these schemas out (exact names); applies to live databases and migrations folders.
    type: list
    elements: str
    default: []
  exclude_ledger:
    description:
      - Leave out the ledger tables C(pgmigrations) and C(pgshift_migration_meta).
    type: bool
    default: true
  ignore_owners:
    description:
      - Do not compare owners (they usually differ by environment).
    type: bool
    default: true
  ignore_grants:
    description:
      - Do not compare privileges.
    type: bool
    default: true
  ignore_comments:
    description:
      - Do not compare comments.
    type: bool
    default: false
  ignore_objects:
    description:
      - Objects to leave out, as C(<kind>:<glob>) (for example C(table:public.tmp_*)) or a bare glob matched against
        the names of every kind. Ignoring a table also ignores its columns, constraints, indexes, triggers and policies.
      - "Kinds: schema, extension, type, table, column, constraint, index, sequence, view, function, trigger, policy."
    type: list
    elements: str
    default: []
  renames:
    description:
      - Map of a name in the source to its name in the target (for example C(public.customers.full_name) to
        C(public.customers.display_name)), reported as C(renamed) plus any attribute that changed. Renaming a table
        carries its columns, constraints, triggers and policies along.
    type: dict
    default: {}
  mapping_file:
    description:
      - A data mapping file (the format of C(sample_app/mapping.yml), see C(docs/data.md)) whose C(from) entries
        declare table and column renames from the source (production) to the target (dev); they are added to
        O(renames). Names in the file are unquoted; a declared rename that the two schemas do not show is ignored.
    type: path
  source_name:
    description:
      - Label of the source in the report and in file names.
    type: str
    default: source
  target_name:
    description:
      - Label of the target in the report and in file names.
    type: str
    default: target
  propose_ddl:
    description:
      - Also return RV(ddl), the statements that would take the source schema to the target schema, for a human to
        review. pgshift never runs them. Changes that do not map onto one plain statement (types, partitioning,
        policies, extensions, owners, grants, materialized views) are listed as C(-- not proposed) lines.
    type: bool
    default: false
  output_dir:
    description:
      - When set, writes C(<source_name>.schema.json), C(<target_name>.schema.json),
        C(<source_name>-vs-<target_name>.report.txt) and C(<source_name>-vs-<target_name>.diff.json) there (0600 files,
        a missing folder is created 0700). Not in check mode.
    type: path
seealso:
  - module: pgshift.ops.schema_snapshot
author:
  - pgshift contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Has production drifted from what its migrations say?
  pgshift.ops.schema_diff:
    source_migrations: /srv/shop/migrations
    migrations_from_ledger: true
    target: "{{ pgshift_prod_connection }}"
    scratch: "{{ pgshift_dev_connection }}"
    source_name: migrations
    target_name: prod
  register: prod_drift

- name: What will the release change? (dev against production)
  pgshift.ops.schema_diff:
    source: "{{ pgshift_prod_connection }}"
    target: "{{ pgshift_dev_connection }}"
    renames:
      public.customers.full_name: public.customers.display_name
    output_dir: /srv/pgshift/artifacts/drift
    source_name: prod
    target_name: dev

- name: Compare a committed snapshot with staging, ignoring a scratch schema's tables
  pgshift.ops.schema_diff:
    source_snapshot: "{{ playbook_dir }}/../sample_app/schema/dev.json"
    target: "{{ pgshift_staging_connection }}"
    ignore_objects: ["table:scratch.*"]
"""

RETURN = r"""
drift:
  description: Whether any difference was found (after the ignore options).
  returned: always
  type: bool
  sample: true
differences:
  description: >-
    The differences, sorted by kind then name. C(change) is C(added) (only in the target), C(removed)
    (only in the source), C(changed) (one entry per differing C(attribute)) or C(renamed).
  returned: always
  type: list
  elements: dict
  sample: [{"kind": "column", "name": "public.customers.loyalty_points", "change": "added", "attribute": null,
            "before": null, "after": {"type": "integer", "not_null": true, "default": "0"}}]
summary:
  description: Number of differences per kind and change.
  returned: always
  type: dict
  sample: {"column": {"added": 2}}
report:
  description: The readable report.
  returned: always
  type: str
  sample: "No schema differences between prod and staging.\n"
source_sha256:
  description: Content hash of the source snapshot.
  returned: always
  type: str
  sample: 4b1f0c2d9e8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c
target_sha256:
  description: Content hash of the target snapshot.
  returned: always
  type: str
  sample: 4b1f0c2d9e8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c
migrations_applied:
  description: Migrations applied to the throwaway database, per side (empty lists when none).
  returned: always
  type: dict
  sample: {"source": ["1700000000000_init-shop"], "target": []}
scratch_databases:
  description: Throwaway databases created and dropped, per side.
  returned: always
  type: dict
  sample: {"source": "pgshift_scratch_0a1b2c3d4e5f", "target": null}
ddl:
  description: The proposed statements, source to target, for review (with O(propose_ddl)); never run by pgshift.
  returned: when O(propose_ddl=true)
  type: list
  elements: str
  sample: ["ALTER TABLE public.customers ADD COLUMN loyalty_points integer DEFAULT 0 NOT NULL;"]
renames:
  description: The renames applied (from O(renames) and O(mapping_file)), source name to target name.
  returned: always
  type: dict
  sample: {"public.customers.full_name": "public.customers.display_name"}
files:
  description: Files written in O(output_dir) (or that would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: ["/srv/pgshift/artifacts/drift/prod-vs-dev.report.txt"]
"""

import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

from ansible_collections.pgshift.ops.plugins.module_utils._connection import (  # noqa: E402
    ConnParams,
    endpoint_argument_spec,
)
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError, fail_from  # noqa: E402
from ansible_collections.pgshift.ops.plugins.module_utils._schema import (  # noqa: E402
    diff_snapshots,
    file_differs,
    render_report,
    serialize,
    snapshot_hash,
    summarize,
    write_private_file,
)
from ansible_collections.pgshift.ops.plugins.module_utils._schema_ddl import propose_ddl  # noqa: E402
from ansible_collections.pgshift.ops.plugins.module_utils._schema_sources import (  # noqa: E402
    SourceSpec,
    load,
    renames_from_mapping,
)


def _spec(p: dict, side: str) -> SourceSpec:
    return SourceSpec(
        label="%s (%s)" % (p[side + "_name"], side),
        connection=ConnParams.from_params(p[side]) if p[side] else None,
        snapshot_file=p[side + "_snapshot"],
        migrations_dir=p[side + "_migrations"],
    )


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label) or "schema"


def main() -> None:
    argument_spec = dict(
        source=endpoint_argument_spec(required=False),
        target=endpoint_argument_spec(required=False),
        source_snapshot=dict(type="path"),
        source_migrations=dict(type="path"),
        target_snapshot=dict(type="path"),
        target_migrations=dict(type="path"),
        scratch=endpoint_argument_spec(required=False),
        node_pg_migrate=dict(type="path"),
        migrations_from_ledger=dict(type="bool", default=False),
        ledger_schema=dict(type="str", default="public"),
        include_schemas=dict(type="list", elements="str"),
        exclude_schemas=dict(type="list", elements="str", default=[]),
        exclude_ledger=dict(type="bool", default=True),
        ignore_owners=dict(type="bool", default=True),
        ignore_grants=dict(type="bool", default=True),
        ignore_comments=dict(type="bool", default=False),
        ignore_objects=dict(type="list", elements="str", default=[]),
        renames=dict(type="dict", default={}),
        mapping_file=dict(type="path"),
        source_name=dict(type="str", default="source"),
        target_name=dict(type="str", default="target"),
        propose_ddl=dict(type="bool", default=False),
        output_dir=dict(type="path"),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        mutually_exclusive=[
            ("source", "source_snapshot", "source_migrations"),
            ("target", "target_snapshot", "target_migrations"),
        ],
        required_one_of=[
            ("source", "source_snapshot", "source_migrations"),
            ("target", "target_snapshot", "target_migrations"),
        ],
    )
    p = module.params
    options = dict(
        include_schemas=p["include_schemas"],
        exclude_schemas=p["exclude_schemas"],
        exclude_ledger=p["exclude_ledger"],
        with_owners=not p["ignore_owners"],
        with_grants=not p["ignore_grants"],
        with_comments=not p["ignore_comments"],
        ledger_schema=p["ledger_schema"],
    )
    ignore = [
        name
        for name, flag in (("owners", "ignore_owners"), ("grants", "ignore_grants"), ("comments", "ignore_comments"))
        if p[flag]
    ]
    ignore += p["ignore_objects"]
    specs = {"source": _spec(p, "source"), "target": _spec(p, "target")}
    if p["migrations_from_ledger"] and not (p["source_migrations"] or p["target_migrations"]):
        module.fail_json(msg="migrations_from_ledger needs source_migrations or target_migrations")
    if p["source_migrations"] and p["target_migrations"] and p["migrations_from_ledger"]:
        module.fail_json(msg="migrations_from_ledger needs a live database or a snapshot file on the other side")
    try:
        scratch = ConnParams.from_params(p["scratch"]) if p["scratch"] else None
        if scratch is None:
            live = [s.connection for s in specs.values() if s.connection is not None]
            scratch = live[0] if live else None
        loaded: dict = {}
        # Live databases and snapshot files first: a migrations folder may be limited to the other side's ledger.
        for side in sorted(specs, key=lambda s: specs[s].kind == "migrations"):
            other = "target" if side == "source" else "source"
            ledger_names = None
            if specs[side].kind == "migrations" and p["migrations_from_ledger"]:
                ledger_names = loaded[other].snapshot.get("meta", {}).get("ledger") or []
            loaded[side] = load(specs[side], options, scratch, ledger_names, p["node_pg_migrate"])
        renames: dict = {}
        if p["mapping_file"]:
            renames.update(
                renames_from_mapping(p["mapping_file"], loaded["source"].snapshot, loaded["target"].snapshot)
            )
        renames.update(p["renames"])
        differences = diff_snapshots(
            loaded["source"].snapshot, loaded["target"].snapshot, ignore=ignore, renames=renames
        )
        report = render_report(differences, p["source_name"], p["target_name"])
        files = []
        changed = False
        if p["output_dir"]:
            folder = p["output_dir"]
            pair = "%s-vs-%s" % (_safe(p["source_name"]), _safe(p["target_name"]))
            outputs = {
                os.path.join(folder, _safe(p["source_name"]) + ".schema.json"): serialize(loaded["source"].snapshot),
                os.path.join(folder, _safe(p["target_name"]) + ".schema.json"): serialize(loaded["target"].snapshot),
                os.path.join(folder, pair + ".report.txt"): report.encode("utf-8"),
                os.path.join(folder, pair + ".diff.json"): (
                    json.dumps(differences, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
                ).encode("utf-8"),
            }
            for path, data in outputs.items():
                files.append(path)
                if module.check_mode:
                    changed = file_differs(path, data) or changed
                else:
                    changed = write_private_file(path, data) or changed
    except PgShiftError as exc:
        fail_from(module, exc)
        return
    result = dict(
        changed=changed,
        drift=bool(differences),
        differences=differences,
        summary=summarize(differences),
        report=report,
        source_sha256=snapshot_hash(loaded["source"].snapshot),
        target_sha256=snapshot_hash(loaded["target"].snapshot),
        migrations_applied={side: loaded[side].migrations_applied for side in ("source", "target")},
        scratch_databases={side: loaded[side].scratch_database for side in ("source", "target")},
        files=files,
        renames=renames,
    )
    if p["propose_ddl"]:
        result["ddl"] = propose_ddl(differences)
    if module._diff:
        result["diff"] = dict(before_header=p["source_name"], after_header=p["target_name"], prepared=report)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
