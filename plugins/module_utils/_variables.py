# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""The variables a user may set for pgshift's playbooks, so that a mistyped one is refused instead of ignored.

``KNOWN_VARIABLES`` lists every ``pgshift_*`` input of every playbook (a group_vars file serves several playbooks,
so one list serves them all). ``pgshift_<env>_connection`` dictionaries are recognised by their shape and their keys
are checked against ``CONNECTION_KEYS``. tests/unit/test_variables.py keeps the list in step with the playbooks.
"""

from __future__ import annotations

import difflib
import re
import typing as t

KNOWN_VARIABLES = frozenset(
    {
        # the release (prod_restore.yml) and its way back (rollback.yml)
        "pgshift_environment",
        "pgshift_confirm",
        "pgshift_backup_dir",
        "pgshift_backup_keep",
        "pgshift_backup_max_age_days",
        "pgshift_backup_verify_level",
        "pgshift_mapping_file",
        "pgshift_migrations_dir",
        "pgshift_jobs",
        "pgshift_services",
        "pgshift_service_manager",
        "pgshift_restart_batch",
        "pgshift_maintenance_flag",
        "pgshift_api_checks",
        "pgshift_keep_previous",
        "pgshift_journal_database",
        "pgshift_artifacts_dir",
        "pgshift_report",  # not an input: the run figures prod_restore.yml publishes for the run report
        "pgshift_plan",
        "pgshift_next_tablespace",
        "pgshift_space_factor",
        "pgshift_swap_timeout",
        "pgshift_app_tier",
        "pgshift_app_roles",
        "pgshift_allow_superuser_sessions",
        "pgshift_swap_back_force",
        "pgshift_release_final",
        "pgshift_work_dir",
        "pgshift_perf_queries_file",
        "pgshift_perf_runs",
        "pgshift_perf_warn_ratio",
        "pgshift_perf_fail_ratio",
        "pgshift_rehearsal_max_age_hours",
        "pgshift_rehearsal_override",
        "pgshift_rehearsals_dir",
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

# What the playbooks register or set themselves (a play that runs after another, as staging_rehearsal.yml runs the
# release, sees them): never typos. tests/unit/test_variables.py keeps the list in step with the playbooks.
SET_BY_PLAYBOOKS = frozenset(
    {
        "pgshift_access",
        "pgshift_backup",
        "pgshift_backup_verified",
        "pgshift_build",
        "pgshift_copy",
        "pgshift_data_plan",
        "pgshift_final",
        "pgshift_inputs",
        "pgshift_integrity",
        "pgshift_lock",
        "pgshift_perf",
        "pgshift_perf_after",
        "pgshift_perf_baseline",
        "pgshift_post_data",
        "pgshift_preflight",
        "pgshift_rebuild",
        "pgshift_rehearsal",
        "pgshift_rehearsal_backup",
        "pgshift_rehearsal_fresh",
        "pgshift_rehearsal_gate",
        "pgshift_rehearsal_record",
        "pgshift_run",
        "pgshift_swap",
        "pgshift_window_start",
        "pgshift_window_swap",
        "pgshift_window_off",
        "pgshift_report",
    }
)

# pgshift_<environment>_connection: the keys the playbooks read (the modules' own option names).
CONNECTION_VARIABLE = re.compile(r"^pgshift_[a-z0-9]+(_[a-z0-9]+)*_connection$")
# Secrets the user names (AWX credential injectors, vault files): pgshift_secret_<anything>.
SECRET_VARIABLE = re.compile(r"^pgshift_secret_[a-z0-9_]+$")
CONNECTION_KEYS = frozenset({"host", "port", "user", "password", "database", "sslmode", "sslrootcert"})
# community.postgresql's names for the same keys: accepted by the modules as aliases, but the playbooks read the
# dictionaries by pgshift's names, so inside a dictionary they are refused with the name to use.
CONNECTION_ALIASES = {
    "login_host": "host",
    "login_port": "port",
    "login_user": "user",
    "login_password": "password",
    "login_db": "database",
    "db": "database",
    "dbname": "database",
    "ssl_mode": "sslmode",
    "ca_cert": "sslrootcert",
}


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


def connection_problems(name: str, value: t.Any) -> t.List[str]:
    """Messages for a ``pgshift_*_connection`` value that is not a dictionary of known keys."""
    if not isinstance(value, t.Mapping):
        return ["%s must be a dictionary with keys %s" % (name, ", ".join(sorted(CONNECTION_KEYS)))]
    problems = []
    if value.get("password") == PLACEHOLDER_PASSWORD:
        problems.append("%s: the password is still the placeholder of the AWX import; set it in AWX" % name)
    for key in sorted(str(k) for k in value):
        if key in CONNECTION_KEYS:
            continue
        if key in CONNECTION_ALIASES:
            problems.append("%s: write %s instead of %s" % (name, CONNECTION_ALIASES[key], key))
        else:
            problems.append("%s: unknown key %s%s" % (name, key, _suggest(key, CONNECTION_KEYS)))
    return problems
