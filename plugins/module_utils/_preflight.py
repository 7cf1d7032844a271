# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""Read-only checks made before a release touches anything. Each problem says what to fix."""

from __future__ import annotations

import contextlib
import os
import shutil
import typing as t

from ansible_collections.pgshift.ops.plugins.module_utils import _backup as backup
from ansible_collections.pgshift.ops.plugins.module_utils import _journal as journal
from ansible_collections.pgshift.ops.plugins.module_utils import _ledger as ledger
from ansible_collections.pgshift.ops.plugins.module_utils import _release as release
from ansible_collections.pgshift.ops.plugins.module_utils import _run_lock as run_lock
from ansible_collections.pgshift.ops.plugins.module_utils._clients import find_client
from ansible_collections.pgshift.ops.plugins.module_utils._connection import (
    ConnParams,
    connect,
    release_text,
    server_major,
)
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError

_ROLES_SQL = """
SELECT DISTINCT r FROM (
  SELECT pg_get_userbyid(relowner) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%%'
  UNION SELECT pg_get_userbyid(nspowner) FROM pg_namespace
    WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\\_%%'
  UNION SELECT pg_get_userbyid(p.proowner) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  UNION SELECT pg_get_userbyid(ty.typowner) FROM pg_type ty JOIN pg_namespace n ON n.oid = ty.typnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  UNION SELECT pg_get_userbyid(a.grantee) FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND a.grantee <> 0
  UNION SELECT pg_get_userbyid(d.defaclrole) FROM pg_default_acl d
  UNION SELECT pg_get_userbyid(a.grantee) FROM pg_default_acl d, aclexplode(d.defaclacl) a WHERE a.grantee <> 0
) AS owners(r) WHERE r IS NOT NULL ORDER BY 1
"""


def _one(cur: t.Any) -> t.Tuple[t.Any, ...]:
    row = cur.fetchone()
    if row is None:
        raise PgShiftError("a catalog query returned no row")
    return t.cast(t.Tuple[t.Any, ...], row)


def _free_bytes(path: str) -> t.Optional[int]:
    probe = path
    while probe and not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            return None
        probe = parent
    try:
        return int(shutil.disk_usage(probe).free)
    except OSError:
        return None


_IDENTITY_SQL = """
SELECT (SELECT system_identifier FROM pg_control_system())::text, d.oid::bigint, d.datname
FROM pg_database d WHERE d.datname = current_database()
"""

_SUPERUSER_SESSIONS_SQL = """
SELECT a.pid, a.usename, coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local socket'),
       a.backend_start::text
FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid
WHERE a.datname = %s AND r.rolsuper AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'
  AND coalesce(a.application_name, '') NOT LIKE 'pgshift%%'
ORDER BY a.backend_start, a.pid
"""


def database_identity(params: ConnParams) -> t.Tuple[str, int, str]:
    """(cluster system identifier, database oid, database name) of the database ``params`` points at."""
    conn = connect(params)
    try:
        with conn.cursor() as cur:
            cur.execute(_IDENTITY_SQL)
            row = _one(cur)
            return str(row[0]), int(row[1]), str(row[2])
    finally:
        conn.close()


def same_database_problem(prod: ConnParams, dev: ConnParams) -> t.Tuple[t.Optional[str], t.Dict[str, t.Any]]:
    """Dev and production must be two databases: compared by what the servers say (cluster system identifier and
    database oid), not by host strings, so 127.0.0.1, localhost and a DNS alias of the same server are one."""
    prod_id = database_identity(prod)
    dev_id = database_identity(dev)
    facts = {
        "production": {"system_identifier": prod_id[0], "oid": prod_id[1], "name": prod_id[2]},
        "dev": {"system_identifier": dev_id[0], "oid": dev_id[1], "name": dev_id[2]},
    }
    if prod_id[0] == dev_id[0] and prod_id[1] == dev_id[1]:
        return (
            "dev and production are the same database: pgshift_dev_connection (%s) and pgshift_prod_connection (%s) "
            "both reach database %r (oid %d) of the cluster with system identifier %s (or dev is a physical replica "
            "of production); point pgshift_dev_connection at the dev database"
            % (dev.describe(), prod.describe(), prod_id[2], prod_id[1], prod_id[0]),
            facts,
        )
    return None, facts


_MANAGED_ROLE_SQL = """
SELECT r.rolname, r.rolcreatedb, pg_has_role(current_user, d.datdba, 'USAGE'), pg_get_userbyid(d.datdba),
       pg_has_role(current_user, 'pg_signal_backend', 'USAGE'), pg_has_role(current_user, 'pg_read_all_data', 'USAGE'),
       EXISTS (SELECT 1 FROM pg_database j WHERE j.datname = %s)
FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = %s
"""

_OWN_ROLE_SESSIONS_SQL = """
SELECT a.pid, coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local socket')
FROM pg_stat_activity a
WHERE a.datname = %s AND a.usename = current_user AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'
  AND coalesce(a.application_name, '') NOT LIKE 'pgshift%%'
ORDER BY a.pid
"""

_UNREADABLE_TABLES_SQL = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_%%' AND NOT has_table_privilege(c.oid, 'SELECT')
ORDER BY 1, 2 LIMIT 6
"""


def managed_problems(cur: t.Any, prod: ConnParams, production_database: str, journal_db: str) -> t.List[str]:
    """Without superuser (managed services), what the pipeline's role needs, each missing capability named with the
    grant that gives it: CREATEDB (the rebuilt database, the journal), ownership of production (renaming it, and its
    CONNECT privilege keeps applications out), pg_signal_backend (ending application sessions), read access to every
    table of production (pg_read_all_data, or owning them); and what the CONNECT privilege cannot keep out."""
    problems: t.List[str] = []
    cur.execute(_MANAGED_ROLE_SQL, (journal_db, production_database))
    me, createdb, owns, owner, signal, read_all, journal_exists = _one(cur)
    who = "the pipeline's role %r (not a superuser: the managed profile)" % me
    if not createdb:
        problems.append(
            "%s lacks CREATEDB, needed to build the new database beside production: ALTER ROLE %s CREATEDB" % (who, me)
        )
    if not owns:
        problems.append(
            "%s does not own production %r (owner %r): renaming it in the swap and keeping applications out by its "
            "CONNECT privilege need its owner: ALTER DATABASE %s OWNER TO %s, or GRANT %s TO %s"
            % (who, production_database, owner, production_database, me, owner, me)
        )
    if not signal:
        problems.append("%s cannot end application sessions: GRANT pg_signal_backend TO %s" % (who, me))
    if not journal_exists and not createdb:
        problems.append("the journal database %r does not exist and %r cannot create it" % (journal_db, me))
    for grantee, _grantable, grantor in release.connect_grants(cur, production_database):
        if grantor not in (owner, me) and grantee != me:
            problems.append(
                "CONNECT on %r was granted to %s by %r, not by the owner: the pipeline could not revoke it to keep "
                "that role out; grant it again as %r (REVOKE then GRANT CONNECT ON DATABASE %s TO %s)"
                % (production_database, grantee, grantor, owner, production_database, grantee)
            )
    cur.execute(_OWN_ROLE_SESSIONS_SQL, (production_database,))
    own = cur.fetchall()
    if own:
        problems.append(
            "%d session(s) of the pipeline's own role %r are connected to production (%s): the CONNECT privilege "
            "that keeps applications out cannot keep out the role the pipeline runs as; connect the applications "
            "as their own roles"
            % (len(own), me, "; ".join("pid %s %r from %s" % (r[0], r[1] or "-", r[2]) for r in own[:5]))
        )
    if not read_all:
        with contextlib.closing(connect(prod.with_database(production_database))) as pconn, pconn.cursor() as pcur:
            pcur.execute(_UNREADABLE_TABLES_SQL)
            unreadable = ["%s.%s" % r for r in pcur.fetchall()]
            pconn.rollback()
        if unreadable:
            problems.append(
                "%s cannot read every table of production (%s%s): GRANT pg_read_all_data TO %s"
                % (who, ", ".join(unreadable[:5]), ", ..." if len(unreadable) > 5 else "", me)
            )
    return problems


def superuser_sessions(cur: t.Any, production_database: str) -> t.List[t.Dict[str, t.Any]]:
    """Sessions of superusers connected to production: the connection limit that blocks applications does not stop
    them (they may reconnect and write during the window)."""
    cur.execute(_SUPERUSER_SESSIONS_SQL, (production_database,))
    return [
        {"pid": r[0], "user": r[1], "application_name": r[2], "client": r[3], "backend_start": r[4]}
        for r in cur.fetchall()
    ]


def superuser_sessions_text(production_database: str, sessions: t.Sequence[t.Mapping[str, t.Any]]) -> str:
    names = "; ".join(
        "pid %s user %s application %r from %s since %s"
        % (s["pid"], s["user"], s["application_name"] or "-", s["client"], s["backend_start"])
        for s in sessions[:10]
    )
    return (
        "%d session(s) of superusers are connected to production %r (%s%s): the connection limit that keeps "
        "applications out during the window does not stop superusers, so they could reconnect and write while the "
        "data is copied, and those writes would not be carried; connect the applications as roles without SUPERUSER "
        "(ALTER ROLE ... NOSUPERUSER) or stop those clients, or set pgshift_allow_superuser_sessions=true to go on "
        "anyway" % (len(sessions), production_database, names, ", ..." if len(sessions) > 10 else "")
    )


def run_checks(
    prod: ConnParams,
    production_database: str,
    dev: ConnParams,
    backup_dir: t.Optional[str],
    journal_db: str,
    space_factor: float = 1.2,
    allow_superuser_sessions: bool = False,
) -> t.Dict[str, t.Any]:
    """Return facts and the list of problems; raise only when a connection fails (the message says why)."""
    problems: t.List[str] = []
    warnings: t.List[str] = []
    facts: t.Dict[str, t.Any] = {"production_database": production_database}

    admin = connect(prod.with_database("postgres"), autocommit=True)
    try:
        with admin.cursor() as cur:
            facts["prod_server_major"] = server_major(admin)
            facts["prod_server_version"] = release_text(admin.server_version)  # "15.18", for people
            facts["prod_server_version_num"] = admin.server_version
            cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            (superuser,) = _one(cur)
            facts["superuser"] = bool(superuser)
            info = release.database_info(cur, production_database)
            if info is None:
                raise PgShiftError(
                    "production database %r does not exist on %s; check pgshift_prod_connection.database"
                    % (production_database, prod.describe())
                )
            facts["production"] = info
            facts["profile"] = "superuser" if superuser else "managed"
            facts["access"] = release.access_state(cur, production_database, info)
            if not superuser:
                problems.extend(managed_problems(cur, prod, production_database, journal_db))
            if not info["allowconn"]:
                warnings.append("production %r refuses connections (datallowconn false)" % production_database)
            sessions = superuser_sessions(cur, production_database)
            facts["superuser_sessions"] = sessions
            if sessions:
                text = superuser_sessions_text(production_database, sessions)
                if allow_superuser_sessions:
                    warnings.append(text.replace(", or set pgshift_allow_superuser_sessions=true to go on anyway", ""))
                else:
                    problems.append(text)
            derived = release.derived_names(production_database)
            facts["derived_names"] = derived
            facts["lock_application_name"] = run_lock.application_name(production_database)
            too_long = {
                what: name
                for what, name in dict(derived, lock=facts["lock_application_name"]).items()
                if len(name.encode("utf-8")) > release.MAX_NAME
            }
            if too_long:  # never with names.fit(); kept so that a change there cannot slip into the window
                problems.append(
                    "names derived from production %r exceed 63 bytes: %s; rename production to a shorter name"
                    % (production_database, ", ".join("%s %r" % item for item in sorted(too_long.items())))
                )
            if derived["next"] != production_database + release.NEXT_SUFFIX:
                warnings.append(
                    "production's name %r is too long to append suffixes: the rebuilt database is %r, previous copies "
                    "%r (a stable hash keeps them within 63 bytes)"
                    % (production_database, derived["next"], derived["previous"])
                )
            leftover = release.next_name(production_database)
            if release.database_info(cur, leftover) is not None:
                problems.append(
                    "database %r exists: an earlier run did not finish; run `make rollback` first" % leftover
                )
            cur.execute("SELECT gid, owner FROM pg_prepared_xacts WHERE database = %s", (production_database,))
            prepared = cur.fetchall()
            if prepared:
                problems.append(
                    "production has %d prepared transaction(s) (%s): COMMIT PREPARED or ROLLBACK PREPARED them first, "
                    "since they survive termination and block the swap"
                    % (len(prepared), ", ".join(gid for gid, _owner in prepared))
                )
            cur.execute("SELECT slot_name FROM pg_replication_slots WHERE database = %s", (production_database,))
            slots = [r[0] for r in cur.fetchall()]
            if slots:
                problems.append(
                    "production has logical replication slot(s) %s: they pin the database and are not carried to the "
                    "rebuilt one; drop them (pg_drop_replication_slot) or release outside pgshift" % ", ".join(slots)
                )
            cur.execute(
                "SELECT s.subname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid "
                "WHERE d.datname = %s ORDER BY 1",
                (production_database,),
            )
            subscriptions = [r[0] for r in cur.fetchall()]
            if subscriptions:
                problems.append(
                    "production has subscription(s) %s: a subscription belongs to its database and is not carried "
                    "to the rebuilt one, and its slot on the publisher would be left behind; drop them "
                    "(DROP SUBSCRIPTION) and create them again after the release, or release outside pgshift"
                    % ", ".join(subscriptions)
                )
            cur.execute("SELECT rolname FROM pg_roles")
            prod_roles = {r[0] for r in cur.fetchall()}
            cur.execute("SELECT name FROM pg_available_extensions")
            prod_extensions = {r[0] for r in cur.fetchall()}
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (journal_db,))
            if cur.fetchone():
                jconn = connect(journal.journal_params(prod, journal_db))
                try:
                    with jconn.cursor() as jcur:
                        jcur.execute("SELECT to_regclass('pgshift.runs') IS NOT NULL")
                        if _one(jcur)[0]:
                            pending = journal.open_runs(jcur, production_database)
                            live = run_lock.holders(jcur, production_database)
                            if pending and live:
                                problems.append(
                                    "another pgshift run on %r is in progress (run %s, started %s by %s; its lock is "
                                    "held by session %s): wait for it to finish"
                                    % (
                                        production_database,
                                        pending[-1]["run_id"],
                                        pending[-1]["started_at"],
                                        pending[-1]["started_by"],
                                        live[0]["backend_pid"],
                                    )
                                )
                            elif pending:
                                problems.append(
                                    "run %s (started %s by %s) is %s and was not rolled back: run `make rollback` "
                                    "(playbooks/rollback.yml) first"
                                    % (
                                        pending[0]["run_id"],
                                        pending[0]["started_at"],
                                        pending[0]["started_by"],
                                        pending[0]["status"],
                                    )
                                )
                finally:
                    jconn.close()
            data_directory = None
            try:
                cur.execute("SHOW data_directory")
                data_directory = _one(cur)[0]
            except Exception:  # noqa: BLE001 - not allowed for non-superusers; then we cannot check the space
                admin.rollback()
    finally:
        admin.close()

    same, facts["identity"] = same_database_problem(prod.with_database(production_database), dev)
    if same:
        problems.append(same)

    dev_conn = connect(dev)
    try:
        with dev_conn.cursor() as cur:
            facts["dev_server_major"] = server_major(dev_conn)
            facts["dev_server_version"] = release_text(dev_conn.server_version)
            facts["dev_server_version_num"] = dev_conn.server_version
            cur.execute(_ROLES_SQL)
            needed_roles = [r[0] for r in cur.fetchall()]
            cur.execute("SELECT extname, extversion FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1")
            dev_extensions = cur.fetchall()
            dev_ledger = [row["name"] for row in ledger.applied(cur)]
            facts["dev_has_ledger"] = bool(dev_ledger)
    finally:
        dev_conn.close()
    prod_conn = connect(prod.with_database(production_database))
    try:
        with prod_conn.cursor() as cur:
            prod_ledger = [row["name"] for row in ledger.applied(cur)]
    finally:
        prod_conn.close()
    facts["migrations"] = {
        "production": prod_ledger,
        "dev": dev_ledger,
        "to_apply": [name for name in dev_ledger if name not in prod_ledger],
        "only_in_production": [name for name in prod_ledger if name not in dev_ledger],
    }
    if facts["migrations"]["only_in_production"]:
        warnings.append(
            "production has applied migrations that dev has not: %s; the release removes their effects"
            % ", ".join(facts["migrations"]["only_in_production"])
        )
    missing_roles = [r for r in needed_roles if r not in prod_roles]
    if missing_roles:
        problems.append(
            "the dev schema refers to role(s) missing on the production cluster: %s; create them there "
            "(pg_dumpall --globals-only shows dev's definitions) or change the owners/grants in dev"
            % ", ".join(missing_roles)
        )
    missing_ext = [name for name, _version in dev_extensions if name not in prod_extensions]
    if missing_ext:
        problems.append(
            "the dev schema uses extension(s) not installable on the production cluster: %s; install their "
            "packages on the production server" % ", ".join(missing_ext)
        )
    facts["dev_extensions"] = [{"name": n, "version": v} for n, v in dev_extensions]
    facts["roles_needed"] = needed_roles

    if facts["dev_server_major"] > facts["prod_server_major"]:
        problems.append(
            "dev runs PostgreSQL %d but production runs %d: a newer server's schema dump may not load into an older "
            "server; use a dev server of production's major version"
            % (facts["dev_server_major"], facts["prod_server_major"])
        )
    client_major = max(facts["dev_server_major"], facts["prod_server_major"])
    clients: t.Dict[str, str] = {}
    for binary in ("pg_dump", "pg_restore"):
        try:
            path, major = find_client(binary, client_major)
            clients[binary] = "%s (%d)" % (path, major)
        except PgShiftError as exc:
            problems.append(exc.msg)
    facts["clients"] = clients

    size = int(facts["production"]["size_bytes"])
    space: t.Dict[str, t.Any] = {"production_bytes": size, "factor": space_factor}
    if backup_dir:
        free = _free_bytes(backup_dir)
        space["backup_dir_free_bytes"] = free
        # the backups already there: those of this production database (its label) and all of them
        old = backup.backups_space(backup_dir, production_database)
        every = backup.backups_space(backup_dir)
        facts["backups"] = {
            "dir": backup_dir,
            "count": old["count"],
            "bytes": old["bytes"],
            "oldest": old["oldest"],
            "all_count": every["count"],
            "all_bytes": every["bytes"],
        }
        if free is not None and free < size * space_factor:
            problems.append(
                "not enough space for the backup in %s: %d MB free, about %d MB needed (the %d backups already "
                "there take %d MB); free space, lower pgshift_backup_keep / pgshift_backup_max_age_days, or point "
                "pgshift_backup_dir elsewhere"
                % (
                    backup_dir,
                    free // 2**20,
                    int(size * space_factor) // 2**20,
                    every["count"],
                    every["bytes"] // 2**20,
                )
            )
    if data_directory and os.path.isdir(data_directory):
        free = _free_bytes(data_directory)
        space["data_directory_free_bytes"] = free
        if free is not None and free < size * space_factor:
            problems.append(
                "not enough space beside production for the rebuilt database: %d MB free in %s, about %d MB needed"
                % (free // 2**20, data_directory, int(size * space_factor) // 2**20)
            )
    elif data_directory:
        warnings.append("the data directory is not on this host: the space for the new database was not checked")
    facts["space"] = space
    return {"facts": facts, "problems": problems, "warnings": warnings}
