# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""The variables a user may set for pgshift's playbooks, so that a mistyped one is refused instead of ignored.

The release's variables are the options of its role's argument specs (roles/release/meta/argument_specs.yml:
:func:`role_spec_variables` reads them); ``KNOWN_VARIABLES`` lists every other ``pgshift_*`` input of the playbooks (a
group_vars file serves several playbooks, so one list serves them all). ``pgshift_<env>_connection`` dictionaries
are recognised by their shape and their keys are checked against ``CONNECTION_KEYS``. tests/unit/test_variables.py
keeps both in step with the playbooks and roles.
"""

from __future__ import annotations

import difflib
import re
import typing as t

from ansible_collections.pgshift.ops.plugins.module_utils._connection import CONNECTION_ALIASES as _CONNECTION_ALIASES

KNOWN_VARIABLES = frozenset(
    {
        # the release's way back (rollback.yml, the recover role); the release's own are in its argument specs
        "pgshift_report",  # not an input: the run figures prod_restore.yml publishes for the run report
        "pgshift_app_roles",
        "pgshift_swap_back_force",
        "pgshift_run_id",
        "pgshift_rollback_reason",
        # backups (backup.yml, restore_backup.yml)
        "pgshift_backup_env",
        "pgshift_backup_format",
        "pgshift_backup_compress",
        "pgshift_backup_jobs",
        "pgshift_backup_days",
        "pgshift_backup_globals",
        "pgshift_backup_label",
        "pgshift_restore_env",
        "pgshift_restore_manifest",
        "pgshift_restore_target",
        "pgshift_restore_replace",
        "pgshift_restore_confirm",
        "pgshift_restore_jobs",
        # migrations (migrate.yml, validate_migrations.yml)
        "pgshift_migrate_env",
        "pgshift_migrate_engine",
        "pgshift_migrate_target",
        "pgshift_migrate_confirm",
        "pgshift_migrate_lock_timeout",
        "pgshift_migrate_accept_changed",
        "pgshift_node_pg_migrate",
        "pgshift_validate_engine",
        "pgshift_validate_from_env",
        "pgshift_validate_migrations_dir",
        "pgshift_validate_report_file",
        "pgshift_validate_schema_snapshot",
        "pgshift_validate_compare_database",
        "pgshift_validate_maintenance_database",
        # drift and snapshots (drift_check.yml, snapshot.yml)
        "pgshift_drift_dir",
        "pgshift_drift_ignore",
        "pgshift_drift_renames",
        "pgshift_drift_common",
        "pgshift_drift_compare_grants",
        "pgshift_drift_compare_owners",
        "pgshift_snapshot_env",
        "pgshift_snapshot_path",
        "pgshift_snapshot_with_grants",
        "pgshift_snapshot_with_owners",
        # performance (perf_check.yml)
        "pgshift_perf_env",
        "pgshift_perf_analyze",
        "pgshift_perf_baseline",
        "pgshift_perf_baseline_out",
        # rehearsal (staging_rehearsal.yml, rehearsal_record.yml)
        "pgshift_rehearsal_id",
        "pgshift_rehearsal_release_rc",
        "pgshift_rehearsal_app_tier_seconds",
        "pgshift_rehearsal_backup_if_missing",
        "pgshift_rehearsal_backups",
        "pgshift_rehearsal_fresh_backup",
        "pgshift_rehearsal_keep_owners",
        "pgshift_rehearsal_probe_production",
        "pgshift_rehearsal_production",
        "pgshift_rehearsal_production_report",
        "pgshift_rehearsal_queries",
        "pgshift_rehearsal_report",
        # the local world's inventory (tools/pgworld.py writes them)
        "pgshift_local_world",
        "pgshift_local_root",
        "pgshift_world_state",
        "pgshift_world",  # the multi-host test inventories' name for the same world
    }
)


def role_spec_variables(specs: t.Iterable[t.Mapping[str, t.Any]]) -> t.FrozenSet[str]:
    """The ``pgshift_*`` option names of roles' parsed ``meta/argument_specs.yml`` documents, every entry point."""
    names: t.Set[str] = set()
    for doc in specs:
        for entry in ((doc or {}).get("argument_specs") or {}).values():
            names.update(n for n in ((entry or {}).get("options") or {}) if n.startswith("pgshift_"))
    return frozenset(names)


# What the playbooks register or set themselves (a play that runs after another, as staging_rehearsal.yml runs the
# release, sees them): never typos. tests/unit/test_variables.py keeps the list in step with the playbooks.
SET_BY_PLAYBOOKS = frozenset(
    {
        "pgshift_final",
        "pgshift_perf",
        "pgshift_rehearsal",
        "pgshift_rehearsal_backup",
        "pgshift_rehearsal_fresh",
        "pgshift_rehearsal_record",
        "pgshift_window_start",
        "pgshift_report",
    }
)

# pgshift_<environment>_connection: the keys the playbooks read (the modules' own option names).
CONNECTION_VARIABLE = re.compile(r"^pgshift_[a-z0-9]+(_[a-z0-9]+)*_connection$")
# Secrets the user names (AWX credential injectors, vault files): pgshift_secret_<anything>.
SECRET_VARIABLE = re.compile(r"^pgshift_secret_[a-z0-9_]+$")
# The keys the playbooks read (the modules' own option names), and community.postgresql's names for them (the
# aliases of the pgshift.ops.connection doc fragment): a dictionary may use either; the playbooks read it through the
# pgshift.ops.connection filter, which turns the aliases into these names.
CONNECTION_KEYS = frozenset(
    {"host", "port", "user", "password", "database", "sslmode", "sslrootcert", "sslcert", "sslkey", "connect_params"}
)
CONNECTION_ALIASES = {alias: name for alias, name in _CONNECTION_ALIASES.items() if name in CONNECTION_KEYS}
# Names people write that are neither: refused with the name to use.
MISNAMED_KEYS = {"dbname": "database", "ssl_rootcert": "sslrootcert", "login_database": "database"}

# What awx/pgshift.yml imports in place of the passwords (AWX requires the fields): never a real password.
PLACEHOLDER_PASSWORD = "REPLACE-ME-IN-AWX"  # noqa: S105 - a placeholder, refused as a password


def _suggest(name: str, candidates: t.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.7)
    return " (did you mean %s?)" % close[0] if close else ""


def unknown_variables(names: t.Iterable[str], extra_known: t.Iterable[str] = ()) -> t.List[str]:
    """Messages for every ``pgshift_*`` name that no playbook reads (``pgshift_*_connection`` excepted)."""
    known = set(KNOWN_VARIABLES) | set(extra_known)
    accepted = known | SET_BY_PLAYBOOKS
    return [
        "unknown variable %s%s" % (name, _suggest(name, known))
        for name in sorted(set(names))
        if name.startswith("pgshift_")
        and name not in accepted
        and not CONNECTION_VARIABLE.match(name)
        and not SECRET_VARIABLE.match(name)
    ]


def connection_problems(name: str, value: t.Any, aliases: bool = True) -> t.List[str]:
    """Messages for a ``pgshift_*_connection`` value that is not a dictionary of known keys (pgshift's names or
    community.postgresql's aliases), or that gives one key twice (a name and its alias) with different values.
    Values are compared, never shown. ``aliases=False``: the playbook reads the dictionary by pgshift's names
    without the pgshift.ops.connection filter, so an alias is refused with the name to write."""
    if not isinstance(value, t.Mapping):
        return ["%s must be a dictionary with keys %s" % (name, ", ".join(sorted(CONNECTION_KEYS)))]
    problems = []
    accepted = set(CONNECTION_KEYS) | set(CONNECTION_ALIASES)
    given: t.Dict[str, t.List[str]] = {}
    for key in sorted(str(k) for k in value):
        if key in CONNECTION_ALIASES and not aliases:
            problems.append(
                "%s: write %s instead of %s (this playbook reads pgshift's names)"
                % (name, CONNECTION_ALIASES[key], key)
            )
        elif key in accepted:
            given.setdefault(CONNECTION_ALIASES.get(key, key), []).append(key)
        elif key in MISNAMED_KEYS:
            problems.append("%s: write %s instead of %s" % (name, MISNAMED_KEYS[key], key))
        else:
            problems.append("%s: unknown key %s%s" % (name, key, _suggest(key, accepted)))
    for option, keys in sorted(given.items()):
        if len(keys) > 1 and len({repr(value[k]) for k in keys}) > 1:
            named = sorted(keys, key=lambda k: (k != option, k))
            problems.append(
                "%s: %s are the same setting (%s) with different values; keep one of them"
                % (name, " and ".join(named), option)
            )
    password = [value[k] for k in given.get("password", [])]
    if PLACEHOLDER_PASSWORD in password:
        problems.insert(0, "%s: the password is still the placeholder of the AWX import; set it in AWX" % name)
    return problems
