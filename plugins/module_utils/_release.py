# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""Database-level steps of a release: block access, build the next database side by side, swap, roll back.

Naming: production ``P`` is rebuilt as ``P__next``; the swap renames ``P`` to ``P__prev_<UTC timestamp>`` and
``P__next`` to ``P`` in ONE transaction, together with the journal entry, so exactly one database carries the
production name at every instant. Production is never dropped; previous databases are removed only by retention,
which always keeps at least one.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import shutil
import tempfile
import time
import typing as t

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover - the module reports it: _connection.connect() checks HAS_PSYCOPG2 first
    pass

from ansible_collections.pgshift.ops.plugins.module_utils import _carry as carry
from ansible_collections.pgshift.ops.plugins.module_utils import _db_state as db_state
from ansible_collections.pgshift.ops.plugins.module_utils import _journal as journal
from ansible_collections.pgshift.ops.plugins.module_utils import _names as names
from ansible_collections.pgshift.ops.plugins.module_utils import _online as online
from ansible_collections.pgshift.ops.plugins.module_utils import _post_data as post_data
from ansible_collections.pgshift.ops.plugins.module_utils import _run_lock as run_lock
from ansible_collections.pgshift.ops.plugins.module_utils._clients import check_client, find_client, run_client
from ansible_collections.pgshift.ops.plugins.module_utils._connection import (
    ConnParams,
    connect,
    db_error,
    dbname_option,
    server_major,
)
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError
from ansible_collections.pgshift.ops.plugins.module_utils._identity import qualified_key

try:
    import psycopg2
except ImportError:  # pragma: no cover - reported by the connection layer
    pass

NEXT_SUFFIX = "__next"
PREV_INFIX = "__prev_"
FAILED_INFIX = "__failed_"
KEPT_INFIX = "__kept_"
MAX_NAME = names.MAX_NAME
_STAMP_LEN = 14  # %Y%m%d%H%M%S
# how long the way back waits for a server that restarts (crash recovery after a killed backend takes seconds)
RECOVERY_RETRY_SECONDS = 120.0


def next_name(prod: str) -> str:
    return _fit(prod, NEXT_SUFFIX)


def prev_name(prod: str, when: t.Optional[datetime.datetime] = None) -> str:
    stamp = (when or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y%m%d%H%M%S")
    return _fit(prod, PREV_INFIX + stamp)


def failed_name(prod: str) -> str:
    return _fit(prod, FAILED_INFIX + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d%H%M%S"))


def kept_name(prod: str) -> str:
    """Where a forced swap-back keeps the new database (writes that could not go back): retention never removes it."""
    return _fit(prod, KEPT_INFIX + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d%H%M%S"))


def _fit(prod: str, suffix: str) -> str:
    """``prod + suffix``, or, when that exceeds 63 bytes, a readable prefix of ``prod`` with a stable hash of it."""
    return names.fit(prod, suffix)


def prev_stem(prod: str) -> str:
    """What every ``__prev_<ts>`` copy of ``prod`` starts with (shortened like the names themselves)."""
    return names.stem(prod, len(PREV_INFIX) + _STAMP_LEN)


def failed_stem(prod: str) -> str:
    """What every ``__failed_<ts>`` copy of ``prod`` starts with."""
    return names.stem(prod, len(FAILED_INFIX) + _STAMP_LEN)


def derived_names(prod: str) -> t.Dict[str, str]:
    """Every database name a release of ``prod`` derives (timestamps shown as 14 digits), for Preflight and the plan."""
    return {
        "next": next_name(prod),
        "previous": prev_stem(prod) + PREV_INFIX + "YYYYmmddHHMMSS",
        "failed": failed_stem(prod) + FAILED_INFIX + "YYYYmmddHHMMSS",
    }


def admin(cluster: ConnParams, retry_seconds: float = 0.0) -> t.Any:
    """Autocommit connection to the cluster's maintenance database (never to a database we rename)."""
    return connect(cluster.with_database("postgres"), autocommit=True, retry_seconds=retry_seconds)


def database_info(cur: t.Any, name: str) -> t.Optional[t.Dict[str, t.Any]]:
    cur.execute(
        "SELECT d.datname, d.datconnlimit, d.datallowconn, pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), "
        "d.datcollate, d.datctype, pg_database_size(d.oid) FROM pg_database d WHERE d.datname = %s",
        (name,),
    )
    row = cur.fetchone()
    if not row:
        return None
    return {
        "name": row[0],
        "connlimit": row[1],
        "allowconn": row[2],
        "owner": row[3],
        "encoding": row[4],
        "collate": row[5],
        "ctype": row[6],
        "size_bytes": row[7],
    }


def other_sessions(cur: t.Any, database: str) -> t.List[t.Dict[str, t.Any]]:
    cur.execute(
        "SELECT pid, usename, application_name, state FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid() AND backend_type = 'client backend' ORDER BY pid",
        (database,),
    )
    return [{"pid": r[0], "user": r[1], "application": r[2], "state": r[3]} for r in cur.fetchall()]


def terminate_sessions(cur: t.Any, database: str, timeout: float = 30.0) -> t.List[t.Dict[str, t.Any]]:
    """Terminate every other client session of ``database`` and wait until they are gone."""
    terminated = other_sessions(cur, database)
    deadline = time.monotonic() + timeout
    while True:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'",
            (database,),
        )
        left = other_sessions(cur, database)
        if not left:
            return terminated
        if time.monotonic() > deadline:
            raise PgShiftError(
                "sessions on %r survive termination after %.0f s: %s" % (database, timeout, left), sessions=left
            )
        time.sleep(0.2)


# ------------------------------------------------------------------------------------------------ access
# How applications are kept out of a database during the window, chosen from the pipeline role's attributes:
# - "connlimit" (a superuser): CONNECTION LIMIT 0, which every role but superusers obeys;
# - "acl" (no superuser, as on managed services): the CONNECT privilege revoked from every grantee but the pipeline's
#   own role (PUBLIC and the application roles), because a connection limit would lock the pipeline out too.
# ``previous`` (recorded in the journal at block_access) says which, and what to put back exactly.
CONNLIMIT = "connlimit"
ACL = "acl"


def access_method(cur: t.Any) -> str:
    cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    row = cur.fetchone()
    return CONNLIMIT if row and row[0] else ACL


def connect_grants(cur: t.Any, database: str) -> t.List[t.List[t.Any]]:
    """``[[grantee, grantable, grantor], ...]`` of the CONNECT privilege on ``database`` (grantee ``PUBLIC`` for
    everyone), the default ACL included when the database has none."""
    cur.execute(
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.is_grantable, "
        "pg_get_userbyid(a.grantor) FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a "
        "WHERE d.datname = %s AND a.privilege_type = 'CONNECT' ORDER BY 1",
        (database,),
    )
    return [[r[0], bool(r[1]), r[2]] for r in cur.fetchall()]


def _grantee(name: str) -> "sql.Composable":
    return sql.SQL("PUBLIC") if name == "PUBLIC" else sql.Identifier(name)


def access_state(cur: t.Any, database: str, info: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
    """What ``close_access`` changes and ``open_access`` puts back."""
    method = access_method(cur)
    state: t.Dict[str, t.Any] = {"method": method, "connlimit": info["connlimit"], "allowconn": info["allowconn"]}
    if method == ACL:
        state["connect"] = [g[:2] for g in connect_grants(cur, database)]
    return state


def is_closed(cur: t.Any, database: str, method: str) -> bool:
    info = database_info(cur, database)
    if info is None:
        return False
    if method == CONNLIMIT:
        return info["connlimit"] == 0
    cur.execute("SELECT current_user")
    me = cur.fetchone()[0]
    return all(g[0] == me for g in connect_grants(cur, database))


def close_access(cur: t.Any, database: str, method: str) -> None:
    """Keep applications out of ``database`` (open sessions are ended separately, by ``terminate_sessions``)."""
    if method == CONNLIMIT:
        cur.execute(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT 0").format(sql.Identifier(database)))
        return
    cur.execute("SELECT current_user")
    me = cur.fetchone()[0]
    db = sql.Identifier(database)
    grantees = [g[0] for g in connect_grants(cur, database)]
    if me not in grantees:  # the pipeline keeps its way in (it owns the database: the Preflight checks that)
        cur.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(db, sql.Identifier(me)))
    for grantee in grantees:
        if grantee != me:
            cur.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM {} CASCADE").format(db, _grantee(grantee)))


def open_access(cur: t.Any, database: str, previous: t.Mapping[str, t.Any]) -> t.List[str]:
    """Put back what ``close_access`` changed, exactly as ``previous`` recorded it; the list of what it did."""
    info = database_info(cur, database)
    if info is None:
        raise PgShiftError("database %r does not exist" % database, database=database)
    db = sql.Identifier(database)
    done: t.List[str] = []
    method = previous.get("method", CONNLIMIT)
    if method == CONNLIMIT:
        connlimit = int(previous.get("connlimit", -1))
        if info["connlimit"] != connlimit or not info["allowconn"]:
            cur.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true CONNECTION LIMIT {}").format(
                    db, sql.Literal(connlimit)
                )
            )
            done.append("connection limit %d" % connlimit)
        return done
    if not info["allowconn"]:
        cur.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(db))
        done.append("connections allowed")
    present = {(g[0], g[1]) for g in connect_grants(cur, database)}
    for grantee, grantable in previous.get("connect", []):
        if (grantee, bool(grantable)) not in present:
            cur.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}{}").format(
                    db, _grantee(grantee), sql.SQL(" WITH GRANT OPTION" if grantable else "")
                )
            )
            done.append("CONNECT to %s" % grantee)
    return done


def describe_access(previous: t.Mapping[str, t.Any]) -> str:
    if previous.get("method", CONNLIMIT) == CONNLIMIT:
        return "connection limit %d" % int(previous.get("connlimit", -1))
    return "CONNECT for %s" % (", ".join(g[0] for g in previous.get("connect", [])) or "nobody")


def block_access(
    cluster: ConnParams,
    database: str,
    check_mode: bool = False,
    timeout: float = 30.0,
    run_id: t.Optional[str] = None,
    journal_db: str = journal.DEFAULT_JOURNAL_DB,
) -> t.Dict[str, t.Any]:
    """Refuse new application connections (CONNECTION LIMIT 0 when the pipeline is a superuser, else the CONNECT
    privilege revoked from everyone but the pipeline's role) and end the open ones. Returns the previous state,
    which ``restore_access`` puts back; with ``run_id``, that state is in the run's journal (step block_access,
    started) before anything changes, so the way back knows it whatever step dies."""
    conn = admin(cluster)
    try:
        with conn.cursor() as cur:
            info = database_info(cur, database)
            if info is None:
                raise PgShiftError("database %r does not exist on %s" % (database, cluster.describe()))
            sessions = other_sessions(cur, database)
            previous = access_state(cur, database, info)
            result = {
                "database": database,
                "previous": previous,
                "method": previous["method"],
                "sessions": sessions,
                "changed": not is_closed(cur, database, previous["method"]) or bool(sessions),
            }
            if check_mode:
                return result
            if run_id:
                with contextlib.closing(connect(journal.journal_params(cluster, journal_db))) as jconn:
                    with jconn.cursor() as jcur:
                        journal.record_step(jcur, run_id, "block_access", "started", {"previous": previous})
                    jconn.commit()
            close_access(cur, database, previous["method"])
            result["terminated"] = terminate_sessions(cur, database, timeout)
            return result
    except psycopg2.Error as exc:
        raise db_error(exc, "blocking connections to %r" % database) from None
    finally:
        conn.close()


def restore_access(
    cluster: ConnParams,
    database: str,
    connlimit: int,
    check_mode: bool = False,
    previous: t.Optional[t.Mapping[str, t.Any]] = None,
) -> bool:
    """Put the previous access back (``previous`` as block_access returned it; without it, the connection limit) and
    make sure the database accepts connections (waiting for a restarting server: this is a way back)."""
    conn = admin(cluster, RECOVERY_RETRY_SECONDS)
    try:
        with conn.cursor() as cur:
            previous = previous or {"method": CONNLIMIT, "connlimit": connlimit}
            if check_mode:
                info = database_info(cur, database)
                if info is None:
                    raise PgShiftError("database %r does not exist on %s" % (database, cluster.describe()))
                return is_closed(cur, database, previous.get("method", CONNLIMIT)) or not info["allowconn"]
            return bool(open_access(cur, database, previous))
    except psycopg2.Error as exc:
        raise db_error(exc, "restoring access to %r" % database) from None
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------------ build
def assert_run_goes_on(cluster: ConnParams, journal_db: str, run_id: str, doing: str) -> None:
    """Refuse ``doing`` once the run is no longer running in the journal (rolled back meanwhile)."""
    conn = connect(journal.journal_params(cluster, journal_db))
    try:
        with conn.cursor() as cur:
            journal.assert_running(cur, run_id, doing)
    finally:
        conn.close()


WORKDIR_PREFIX = "pgshift-build-"
_RUN_ID_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}$")
_WORKDIR_RUN_RE = re.compile(r"^pgshift-build-([0-9]{8}T[0-9]{6}Z-[0-9a-f]{6})-")


def private_workdir(base: t.Optional[str], run_id: t.Optional[str] = None) -> str:
    """A fresh 0700 ``pgshift-build-[<run id>-]*`` folder in ``base``; the run id lets clean_workdirs find its owner."""
    if base:
        os.makedirs(base, mode=0o700, exist_ok=True)
        os.chmod(base, 0o700)
    prefix = WORKDIR_PREFIX + (run_id + "-" if run_id and _RUN_ID_RE.match(run_id) else "")
    return tempfile.mkdtemp(prefix=prefix, dir=base)


def clean_workdirs(base: t.Optional[str], open_run_ids: t.Collection[str], check_mode: bool = False) -> t.List[str]:
    """Remove the ``pgshift-build-*`` work folders in ``base`` of runs that are finished (not in ``open_run_ids``).

    A folder without a run id in its name (made by an older pgshift) is removed only when no run is open at all: it
    could be the unfinished run's. Symbolic links and files are never followed nor removed.
    """
    if not base or not os.path.isdir(base):
        return []
    removed: t.List[str] = []
    for name in sorted(os.listdir(base)):
        path = os.path.join(base, name)
        if not name.startswith(WORKDIR_PREFIX) or os.path.islink(path) or not os.path.isdir(path):
            continue
        owner = _WORKDIR_RUN_RE.match(name)
        if (owner and owner.group(1) in open_run_ids) or (not owner and open_run_ids):
            continue
        if not check_mode:
            shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def clean_finished_workdirs(
    cluster: ConnParams, journal_db: str, base: t.Optional[str], check_mode: bool = False
) -> t.List[str]:
    """clean_workdirs with the open runs of every database of the journal (a work folder may serve several)."""
    if not base or not os.path.isdir(base):
        return []
    conn = connect(journal.journal_params(cluster, journal_db))
    try:
        with conn.cursor() as cur:
            open_ids = journal.open_run_ids(cur)
        conn.rollback()
    finally:
        conn.close()
    return clean_workdirs(base, open_ids, check_mode)


def dump_schema(dev: ConnParams, workdir: str) -> t.Dict[str, t.Any]:
    """pg_dump --schema-only of dev, custom format, 0600 in a 0700 folder."""
    conn = connect(dev)
    try:
        major = server_major(conn)
    finally:
        conn.close()
    pg_dump, client_major = find_client("pg_dump", major)
    path = os.path.join(workdir, "dev-schema.dump")
    old_umask = os.umask(0o077)
    try:
        result = run_client([pg_dump, "--schema-only", "--format=custom", "--file", path, dbname_option(dev)], dev)
    finally:
        os.umask(old_umask)
    check_client(result, "pg_dump --schema-only of the dev database %r" % dev.database)
    os.chmod(path, 0o600)
    return {"path": path, "pg_dump": pg_dump, "client_major": client_major, "server_major": major}


def create_next(
    cluster: ConnParams, prod: str, check_mode: bool = False, tablespace: t.Optional[str] = None
) -> t.Dict[str, t.Any]:
    name = next_name(prod)
    conn = admin(cluster)
    try:
        with conn.cursor() as cur:
            info = database_info(cur, prod)
            if info is None:
                raise PgShiftError("production database %r does not exist on %s" % (prod, cluster.describe()))
            if database_info(cur, name) is not None:
                raise PgShiftError(
                    "database %r already exists: a previous run did not finish; run `make rollback` "
                    "(playbooks/rollback.yml), which drops it" % name,
                    database=name,
                )
            method = access_method(cur)
            statement = sql.SQL(
                "CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {} OWNER {}"
                + (" CONNECTION LIMIT 0" if method == CONNLIMIT else "")
            ).format(
                sql.Identifier(name),
                sql.Literal(info["encoding"]),
                sql.Literal(info["collate"]),
                sql.Literal(info["ctype"]),
                sql.Identifier(info["owner"]),
            )
            statement = sql.SQL("{}{}").format(statement, db_state.locale_options(cur, prod))
            if tablespace:
                statement = sql.SQL("{} TABLESPACE {}").format(statement, sql.Identifier(tablespace))
            if not check_mode:
                cur.execute(statement)
                if method == ACL:  # nobody but the pipeline connects to it until the swap opens it
                    close_access(cur, name, ACL)
            return {"database": name, "statement": statement.as_string(cur), "like": info}
    except psycopg2.Error as exc:
        raise db_error(exc, "creating %r" % name) from None
    finally:
        conn.close()


def restore_section(target: ConnParams, archive: str, section: str, min_major: int) -> t.Dict[str, t.Any]:
    """pg_restore one section of the dev schema archive into ``target``, in a single transaction."""
    pg_restore, client_major = find_client("pg_restore", min_major)
    result = run_client(
        [
            pg_restore,
            "--section=" + section,
            "--exit-on-error",
            "--single-transaction",
            dbname_option(target),
            archive,
        ],
        target,
    )
    check_client(result, "loading the dev schema (%s) into %r" % (section, target.database))
    return {"section": section, "pg_restore": pg_restore, "client_major": client_major}


def refresh_materialized_views(target: ConnParams) -> t.List[str]:
    """Materialized views come out of --schema-only unpopulated; fill them once the data is in, in dependency order."""
    conn = connect(target, autocommit=True)
    refreshed: t.List[str] = []
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind = 'm' ORDER BY c.oid"
            )
            pending = list(cur.fetchall())
            for _attempt in range(len(pending) + 1):
                if not pending:
                    break
                failed = []
                for schema, name in pending:
                    try:
                        cur.execute(sql.SQL("REFRESH MATERIALIZED VIEW {}").format(sql.Identifier(schema, name)))
                        refreshed.append(qualified_key(schema, name))
                    except psycopg2.errors.ObjectNotInPrerequisiteState:
                        failed.append((schema, name))
                pending = failed
            if pending:
                raise PgShiftError("materialized views could not be refreshed: %s" % pending)
    finally:
        conn.close()
    return refreshed


_NOT_VALID_SQL = """
SELECT c.oid, c.conname, c.contype::text, cn.nspname, coalesce(r.relname, ty.typname), c.conrelid <> 0
FROM pg_constraint c
LEFT JOIN pg_class r ON r.oid = c.conrelid
LEFT JOIN pg_type ty ON ty.oid = c.contypid
JOIN pg_namespace cn ON cn.oid = coalesce(r.relnamespace, ty.typnamespace)
WHERE NOT c.convalidated AND c.conparentid = 0 AND cn.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY cn.nspname, 5, c.conname
"""


def validate_constraints(target: ConnParams) -> t.List[str]:
    """Validate the constraints the dev schema holds as NOT VALID (CHECK, FOREIGN KEY, domain CHECK).

    pg_dump carries them as NOT VALID, and a NOT VALID constraint never passes the integrity check's "every
    constraint validated": they are validated here, once the data is in. The data plan has already checked
    production's rows against them in Preflight, so this only fails if the data changed since.
    """
    conn = connect(target, autocommit=True)
    done: t.List[str] = []
    try:
        with conn.cursor() as cur:
            cur.execute(_NOT_VALID_SQL)
            for _oid, name, _kind, schema, owner, on_table in cur.fetchall():
                statement = sql.SQL("ALTER {} {} VALIDATE CONSTRAINT {}").format(
                    sql.SQL("TABLE" if on_table else "DOMAIN"), sql.Identifier(schema, owner), sql.Identifier(name)
                )
                text = statement.as_string(cur)
                try:
                    cur.execute(statement)
                except psycopg2.Error as exc:
                    raise db_error(exc, text) from None
                done.append(text)
    finally:
        conn.close()
    return done


def analyze(target: ConnParams) -> None:
    """Planner statistics for the rebuilt database, before it serves (a fresh load has none)."""
    conn = connect(target, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("ANALYZE")
    finally:
        conn.close()


def build_create(
    cluster: ConnParams,
    prod: str,
    schema_source: ConnParams,
    workdir: t.Optional[str],
    tablespace: t.Optional[str] = None,
    run_id: t.Optional[str] = None,
    check_mode: bool = False,
) -> t.Dict[str, t.Any]:
    """The build's first step: ``<prod>__next`` created like production (connection limit 0), the dev schema dumped
    into a private work folder and its pre-data section loaded (tables bare). When loading fails the new database is
    dropped again and the archive removed. The archive is kept for ``build_post_data``, which removes it."""
    name = next_name(prod)
    created = create_next(cluster, prod, check_mode, tablespace)
    result: t.Dict[str, t.Any] = dict(changed=True, database=name, statements=[created["statement"]])
    result["diff"] = {
        "before": "%s: production\n" % prod,
        "after": "%s: production\n%s: new, dev schema (tables, types, views, functions; no data yet)\n" % (prod, name),
    }
    if check_mode:
        return result
    archive: t.Optional[str] = None
    try:
        dump = dump_schema(schema_source, private_workdir(workdir, run_id))
        archive = dump["path"]
        loaded = restore_section(cluster.with_database(name), dump["path"], "pre-data", dump["client_major"])
    except Exception:
        if archive and os.path.exists(archive):
            os.unlink(archive)
        drop_database(cluster, name, prod)
        raise
    result.update(archive=dump["path"], client_major=loaded["client_major"], pg_dump=dump["pg_dump"])
    result["statements"].append("pg_restore --section=pre-data --single-transaction (dev schema)")
    return result


def build_post_data(
    cluster: ConnParams, prod: str, archive: str, min_client_major: int = 0, check_mode: bool = False
) -> t.Dict[str, t.Any]:
    """The build's last step, once the data is in: keys, indexes, foreign keys (validated), triggers, NOT VALID
    constraints validated, materialized views filled, ANALYZE, then production's database-level state and the
    grants dev's schema lacks. Removes the schema archive when done."""
    name = next_name(prod)
    result: t.Dict[str, t.Any] = dict(
        changed=True, database=name, statements=["pg_restore --section=post-data --single-transaction"]
    )
    if check_mode:
        result["refreshed_materialized_views"] = []
        result["validated_constraints"] = []
        result["statements"].append("production's database-level state and privileges (see data_plan)")
        return result
    target = cluster.with_database(name)
    # only what the copy did not build already (indexes and keys as each table was in: _post_data.py)
    restored = post_data.restore_remaining(target, archive, min_client_major)
    result["built_during_copy"] = restored["built_during_copy"]
    validated = validate_constraints(target)
    result["statements"] += validated
    result["validated_constraints"] = validated
    result["refreshed_materialized_views"] = refresh_materialized_views(target)
    analyze(target)
    result["statements"].append("ANALYZE")
    carried = db_state.carry_between(cluster.with_database(prod), target)
    result["statements"] += carried["statements"]
    result.update(database_state=carried["database_state"], privileges=carried["privileges"])
    if os.path.exists(archive):
        os.unlink(archive)
    return result


def drop_database(cluster: ConnParams, name: str, prod: str, check_mode: bool = False) -> bool:
    """Drop the half-built ``__next`` (it never served). Refuses anything else: production above all, and every
    database applications could write to (``__failed_*`` and ``__kept_*`` served after a swap)."""
    if name == prod or name != next_name(prod):
        raise PgShiftError(
            "refusing to drop %r: pgshift only drops the database it is building (%r), never one that served"
            % (name, next_name(prod))
        )
    conn = admin(cluster)
    try:
        with conn.cursor() as cur:
            if database_info(cur, name) is None:
                return False
            if not check_mode:
                cur.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            return True
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------------ swap
def swap(
    cluster: ConnParams,
    prod: str,
    run_id: str,
    connlimit: int,
    journal_db: str = journal.DEFAULT_JOURNAL_DB,
    check_mode: bool = False,
    timeout: float = 30.0,
    mapping_file: t.Optional[str] = None,
    capture: bool = True,
) -> t.Dict[str, t.Any]:
    """Rename production to ``__prev_<ts>`` and ``__next`` to production, atomically, journal included.

    Right before, with both databases blocked: the change capture is installed in ``__next`` (every write made after
    the swap can be carried back by a swap-back, see _carry.py), and the capture of an earlier release is removed
    from the outgoing production (that release is final once a new one swaps)."""
    new = next_name(prod)
    prev = prev_name(prod)
    plan = {"production": prod, "previous": prev, "next": new, "connlimit": connlimit}
    if check_mode:
        # the plan only: the next database and the journal may not exist, since check mode built neither
        conn = admin(cluster)
        try:
            with conn.cursor() as cur:
                if database_info(cur, prod) is None:
                    raise PgShiftError("cannot swap: database %r does not exist" % prod, database=prod)
        finally:
            conn.close()
        return dict(plan, swapped=False)
    # the run's journal row stays locked until the swap ends: a rollback that starts meanwhile waits for it (and then
    # sees the swap), and a run already rolled back (or being rolled back) does not swap at all
    guard = connect(journal.journal_params(cluster, journal_db))
    try:
        with guard.cursor() as guard_cur:
            journal.assert_running(guard_cur, run_id, "the swap", lock=True)
        conn = connect(journal.journal_params(cluster, journal_db))
    except BaseException:
        guard.close()
        raise
    try:
        with conn.cursor() as cur:
            for name in (prod, new):
                if database_info(cur, name) is None:
                    raise PgShiftError("cannot swap: database %r does not exist" % name, database=name)
            previous = _previous_access(cur, run_id, connlimit)
            plan["access"] = describe_access(previous)
            conn.rollback()  # end the read transaction before switching modes
            conn.autocommit = True
            for name in (prod, new):
                close_access(cur, name, previous.get("method", CONNLIMIT))
                terminate_sessions(cur, name, timeout)
            if capture:
                plan["capture"] = carry.install_capture(
                    cluster.with_database(prod), cluster.with_database(new), run_id, mapping_file
                )
                carry.remove_capture(cluster.with_database(prod))
                for name in (prod, new):
                    terminate_sessions(cur, name, timeout)
            conn.autocommit = False
            cur.execute("SET LOCAL lock_timeout = '10s'")
            cur.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(prod), sql.Identifier(prev)))
            cur.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(new), sql.Identifier(prod)))
            open_access(cur, prod, previous)
            journal.record_step(cur, run_id, "swap", "done", plan)
            conn.commit()
            return dict(plan, swapped=True)
    except psycopg2.Error as exc:
        conn.rollback()
        raise db_error(exc, "swapping %r and %r" % (prod, new)) from None
    finally:
        conn.close()
        guard.close()


def _previous_access(cur: t.Any, run_id: str, connlimit: int) -> t.Dict[str, t.Any]:
    """The access production had before the run blocked it, as the journal's block_access step recorded it (the
    connection limit given, for a run recorded before the access method was)."""
    run = journal.get_run(cur, run_id)
    detail = journal.step_states(run).get("block_access", {}).get("detail", {}) if run else {}
    previous = dict(detail.get("previous") or {})
    if "method" not in previous:
        previous = {"method": CONNLIMIT, "connlimit": int(previous.get("connlimit", connlimit))}
    return previous


def retention(cluster: ConnParams, prod: str, keep: int, check_mode: bool = False) -> t.List[str]:
    """Drop previous production databases beyond the newest ``keep`` (never fewer than one kept)."""
    keep = max(1, keep)
    pattern = re.compile("^" + re.escape(prev_stem(prod) + PREV_INFIX) + r"\d{14}$")
    conn = admin(cluster)
    removed: t.List[str] = []
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", (_like_prefix(prev_stem(prod) + PREV_INFIX),)
            )
            previous = sorted((r[0] for r in cur.fetchall() if pattern.match(r[0])), reverse=True)
            for name in previous[keep:]:
                if not check_mode:
                    cur.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
                removed.append(name)
    finally:
        conn.close()
    return removed


def swap_release(
    cluster: ConnParams,
    prod: str,
    run_id: str,
    connlimit: int,
    journal_db: str = journal.DEFAULT_JOURNAL_DB,
    check_mode: bool = False,
    timeout: float = 30.0,
    mapping_file: t.Optional[str] = None,
    capture: bool = True,
    retention_keep: int = 2,
) -> t.Dict[str, t.Any]:
    """``swap``, then retention of the previous copies beyond ``retention_keep``; with the diff of the two names."""
    result = swap(cluster, prod, run_id, connlimit, journal_db, check_mode, timeout, mapping_file, capture)
    result["diff"] = {
        "before": "%(production)s: production\n%(next)s: rebuilt, proven\n" % result,
        "after": "%(production)s: production (the rebuilt database)\n%(previous)s: previous production, kept\n"
        % result,
    }
    result["removed"] = retention(cluster, prod, retention_keep, check_mode)
    return result


def block_access_diff(database: str, blocked: t.Mapping[str, t.Any]) -> t.Dict[str, str]:
    """What blocking access changes, for a diff."""
    closed = (
        "connection limit 0"
        if blocked["previous"].get("method", CONNLIMIT) == CONNLIMIT
        else "CONNECT revoked from everyone but the pipeline's role"
    )
    return {
        "before": "%s: %s, %d open session(s)\n"
        % (database, describe_access(blocked["previous"]), len(blocked["sessions"])),
        "after": "%s: %s (applications refused), sessions terminated\n" % (database, closed),
    }


# ------------------------------------------------------------------------------------------------ rollback
def rollback(
    cluster: ConnParams,
    prod: str,
    run_id: t.Optional[str] = None,
    journal_db: str = journal.DEFAULT_JOURNAL_DB,
    check_mode: bool = False,
    reason: str = "rollback requested",
    force_swap_back: bool = False,
    holder_pid: t.Optional[int] = None,
) -> t.Dict[str, t.Any]:
    """Put production back as it was before ``run_id`` (default: the latest unfinished run, else the latest release
    that succeeded and is not final yet), from the journal.

    Once the swap is done the new database has served the applications: the swap-back first carries every write
    made since then back into the previous production (_carry.py), proven, and the new database is kept, never
    dropped. When a write cannot go back, nothing is swapped: the new database stays production, access is restored,
    and the result says which tables hold what (``refused``), unless ``force_swap_back``.

    Idempotent: every action first looks at the actual state of the cluster, so a second call does nothing.
    Refuses while the run lock of ``prod`` is held by a live run, unless ``holder_pid`` names that lock's holder (the
    run's own rescue). The run is claimed first (its journal row locked, a ``rollback started`` step committed), so
    that a live run's next step, or a swap under way, sees it and stops.
    """
    actions: t.List[str] = []
    jparams = journal.journal_params(cluster, journal_db)
    conn = connect(jparams, retry_seconds=RECOVERY_RETRY_SECONDS)
    try:
        with conn.cursor() as cur:
            run_id = run_id or journal.latest_run(cur, prod) or _latest_succeeded(cur, prod)
            if not run_id:
                conn.rollback()
                return {"run_id": None, "actions": [], "changed": False, "message": "no unfinished run to roll back"}
            claimed = journal.lock_run(cur, run_id)
            if claimed is not None and claimed["status"] in journal.OPEN_STATES:
                run_lock.refuse_if_live(cur, jparams, prod, claimed, holder_pid)
                if not check_mode:
                    journal.record_step(cur, run_id, "rollback", "started", {"reason": reason})
                    conn.commit()
            run = journal.get_run(cur, run_id)
            if run is None:
                raise PgShiftError("run %r is not in the journal" % run_id)
            states = journal.step_states(run)
            swap_state = states.get("swap")
            swapped = bool(swap_state and swap_state["state"] == "done")
            if run["status"] == "rolled_back" or (run["status"] == "succeeded" and not swapped):
                conn.rollback()
                return _nothing_to_undo(run_id, run["status"], "run %s is already %s" % (run_id, run["status"]))
            if run["status"] == "succeeded" and _capture_run(cluster, prod) != run_id:
                conn.rollback()
                return _nothing_to_undo(
                    run_id,
                    run["status"],
                    "run %s succeeded and is final (its change capture was removed): nothing to roll back; restore a "
                    "verified backup with playbooks/restore_backup.yml to go further back" % run_id,
                )
            previous = _previous_access(cur, run_id, -1)
            conn.rollback()  # end the read transaction before switching modes
            conn.autocommit = True
            carried: t.Optional[t.Dict[str, t.Any]] = None
            kept: t.Optional[str] = None
            # 1. undo the swap: the database carrying the production name is the new one; the previous is intact
            if swapped:
                prev = t.cast(t.Dict[str, t.Any], swap_state)["detail"].get("previous")
                if database_info(cur, prev) is not None and database_info(cur, prod) is not None:
                    if check_mode:
                        actions.append(
                            "carry the writes made after the swap from %s back into %s, then swap back" % (prod, prev)
                        )
                    else:
                        for name in (prod, prev):
                            close_access(cur, name, previous.get("method", CONNLIMIT))
                            terminate_sessions(cur, name)
                        carried = carry.carry_back(cluster, prod, prev, run_id, force_swap_back)
                        if not carried["ok"] and not force_swap_back:
                            return _refuse_swap_back(cur, run, prod, prev, previous, carried, reason)
                        kept = failed_name(prod) if carried["ok"] else kept_name(prod)
                        actions.append("carry back: %s" % carried["message"])
                        actions.append("swap back: %s -> %s (kept), %s -> %s" % (prod, kept, prev, prod))
                        conn.autocommit = False
                        cur.execute("SET LOCAL lock_timeout = '10s'")
                        cur.execute(
                            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(prod), sql.Identifier(kept))
                        )
                        cur.execute(
                            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(prev), sql.Identifier(prod))
                        )
                        journal.record_step(
                            cur,
                            run_id,
                            "carry_back",
                            "done",
                            {
                                "tables": carried["tables"],
                                "sequences": carried["sequences"],
                                "forced": not carried["ok"],
                                "refused": carried["refused"],
                            },
                        )
                        journal.record_step(cur, run_id, "swap", "undone", {"kept": kept})
                        conn.commit()
                        conn.autocommit = True
                elif database_info(cur, prev) is not None:
                    # an earlier attempt renamed the new database away but stopped before renaming the previous back
                    actions.append("rename %s -> %s" % (prev, prod))
                    if not check_mode:
                        cur.execute(
                            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(prev), sql.Identifier(prod))
                        )
                elif database_info(cur, prod) is None:
                    raise PgShiftError(
                        "neither %r nor the previous database %r exists: restore production from the verified backup "
                        "with playbooks/restore_backup.yml" % (prod, prev)
                    )
            # 2. drop what this run built and that never served (the half-built next database)
            name = next_name(prod)
            if database_info(cur, name) is not None:
                actions.append("drop %s" % name)
                if not check_mode:
                    cur.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            # 2b. the online release's change stream (slot, publication, origin), from the journal's record
            actions.extend(online.drop_recorded(cluster, run, journal_db, check_mode))
            # 3. production accepts connections again, with the access it had
            info = database_info(cur, prod)
            if info is None:
                raise PgShiftError(
                    "production database %r does not exist after rollback: restore it from the backup" % prod
                )
            if check_mode:
                if is_closed(cur, prod, previous.get("method", CONNLIMIT)) or not info["allowconn"]:
                    actions.append("restore access to %s (%s)" % (prod, describe_access(previous)))
            elif open_access(cur, prod, previous):
                actions.append("restore access to %s (%s)" % (prod, describe_access(previous)))
            if not check_mode:
                journal.record_step(cur, run_id, "rollback", "done", {"actions": actions, "reason": reason})
                journal.finish_run(cur, run_id, "rolled_back", reason)
            result: t.Dict[str, t.Any] = {
                "run_id": run_id,
                "actions": actions,
                "changed": bool(actions) or not check_mode,
                "status": "rolled_back",
                "refused": False,
            }
            if carried is not None:
                result["carried"] = carried["tables"]
                result["kept"] = kept
                result["message"] = "production was swapped back; %s; the new database is kept as %s%s" % (
                    carried["message"],
                    kept,
                    ""
                    if carried["ok"]
                    else " (forced: it holds writes that did not go back: %s)" % "; ".join(carried["refused"]),
                )
            return result
    except psycopg2.Error as exc:
        raise db_error(exc, "rolling back run %s" % run_id) from None
    finally:
        conn.close()


def _nothing_to_undo(run_id: str, status: str, message: str) -> t.Dict[str, t.Any]:
    return {"run_id": run_id, "actions": [], "changed": False, "status": status, "message": message}


def _refuse_swap_back(
    cur: t.Any,
    run: t.Dict[str, t.Any],
    prod: str,
    prev: str,
    previous: t.Mapping[str, t.Any],
    carried: t.Dict[str, t.Any],
    reason: str,
) -> t.Dict[str, t.Any]:
    """Writes made after the swap cannot go back: the new database stays production and serves again."""
    open_access(cur, prod, previous)
    message = (
        "swap-back refused, nothing was swapped: %s. %r stays production (the new database, accepting connections "
        "again); the previous production is %r, unchanged. Put those rows in a form the previous schema takes (or "
        "remove them) and roll back again, or swap back anyway with -e pgshift_swap_back_force=true (the new "
        "database is then kept as %s)" % (carried["message"], prod, prev, prod + KEPT_INFIX + "<timestamp>")
    )
    detail = {"tables": carried["tables"], "refused": carried["refused"], "reason": reason}
    journal.record_step(cur, run["run_id"], "swap_back", "failed", detail)
    if run["status"] == "running":
        journal.finish_run(cur, run["run_id"], "failed", message)
    return {
        "run_id": run["run_id"],
        "actions": ["restore access to %s (%s): the new database stays production" % (prod, describe_access(previous))],
        "changed": True,
        "status": "failed" if run["status"] == "running" else run["status"],
        "refused": True,
        "carried": carried["tables"],
        "cannot_go_back": carried["refused"],
        "message": message,
    }


def _latest_succeeded(cur: t.Any, prod: str) -> t.Optional[str]:
    """The latest run, when it is a release that succeeded (``make rollback`` right after a release undoes it)."""
    latest = journal.latest_run(cur, prod, only_open=False)
    if latest is None:
        return None
    run = journal.get_run(cur, latest)
    return latest if run is not None and run["status"] == "succeeded" else None


def _capture_run(cluster: ConnParams, prod: str) -> t.Optional[str]:
    try:
        conn = connect(cluster.with_database(prod))
    except PgShiftError:
        return None
    try:
        return carry.capture_run(conn)
    finally:
        conn.close()


def close_as_final(cluster: ConnParams, prod: str, check_mode: bool = False) -> bool:
    """Close the latest release as final: its change capture is removed (writes stop paying for it), and it can no
    longer be swapped back. True when there was a capture."""
    return carry.remove_capture(cluster.with_database(prod), check_mode)


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern matching names that start with ``prefix`` (its wildcards escaped)."""
    return prefix.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%") + "%"
