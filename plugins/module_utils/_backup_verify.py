# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""Verified backups, part 2: proving a backup, and restoring it.

Levels are cumulative and each one catches what the one before cannot:

- ``checksum``: the manifest's seal, then every file's size and sha256 (a flipped byte, a truncated or missing file,
  an unexpected file).
- ``read``: the above, then ``pg_restore -f /dev/null`` reads and decompresses every block of the archive.
- ``restore``: ``checksum``, then a restore into a throwaway database (always dropped) whose per-table row counts and
  content checksums must equal the manifest's, which were computed on production in the dump's own snapshot; and so
  must the large objects' count and fingerprint (data and comments; owners and ACLs too when the restore keeps them).
  A manifest written before large objects were recorded has no such field: its large objects are not compared.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import json
import os
import secrets
import time
import typing as t

from ansible_collections.pgshift.ops.plugins.module_utils import _checksums, _large_objects
from ansible_collections.pgshift.ops.plugins.module_utils._backup import (
    MANIFEST_NAME,
    VERIFICATION_NAME,
    archive_path,
    backup_folder,
    find_client,
    list_files,
    load_manifest,
    sha256_file,
    write_file_atomic,
)
from ansible_collections.pgshift.ops.plugins.module_utils._clients import (
    BackgroundClient,
    check_client,
    run_client,
)
from ansible_collections.pgshift.ops.plugins.module_utils._connection import (
    ConnParams,
    connect,
    db_error,
    dbname_option,
    server_major,
)
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # pragma: no cover - reported by _connection.connect
    pass

LEVELS = ("checksum", "read", "restore")


# --------------------------------------------------------------------------------------------- level checksum
def verify_files(
    manifest_path: str, manifest: t.Mapping[str, t.Any], hash_files: bool = True
) -> t.List[t.Dict[str, t.Any]]:
    """Every file of the manifest present with its size and sha256, and no file the manifest does not know.

    ``hash_files=False`` checks presence and sizes only (the quick part).
    """
    folder = backup_folder(manifest_path)
    mismatches: t.List[t.Dict[str, t.Any]] = []
    expected: t.Mapping[str, t.Mapping[str, t.Any]] = manifest.get("files") or {}
    if not expected:
        mismatches.append({"file": MANIFEST_NAME, "reason": "the manifest lists no files"})
    for rel in sorted(expected):
        info = expected[rel]
        path = os.path.join(folder, rel)
        if os.path.isabs(rel) or os.path.normpath(rel).startswith(".."):
            mismatches.append({"file": rel, "reason": "file %s points outside the backup folder" % rel})
            continue
        if not os.path.isfile(path):
            mismatches.append({"file": rel, "reason": "file %s is missing" % rel})
            continue
        size = os.path.getsize(path)
        if size != int(info["size"]):
            mismatches.append(
                {
                    "file": rel,
                    "reason": "file %s has %d bytes, the manifest says %s (truncated or grown)"
                    % (rel, size, info["size"]),
                }
            )
            continue
        if not hash_files:
            continue
        _size, digest = sha256_file(path)
        if digest != info["sha256"]:
            mismatches.append({"file": rel, "reason": "file %s has a different sha256 than the manifest records" % rel})
    for rel in list_files(folder):
        if rel not in expected and not os.path.basename(rel).startswith(".tmp-"):
            mismatches.append({"file": rel, "reason": "file %s is not in the manifest" % rel})
    return mismatches


# --------------------------------------------------------------------------------------------- level read
def restore_client(manifest: t.Mapping[str, t.Any], target_major: int = 0) -> t.Tuple[str, int]:
    """pg_restore at least as new as the pg_dump that wrote the archive (and the target server)."""
    dump_major = int(manifest.get("clients", {}).get("pg_dump", {}).get("major") or manifest.get("server_major") or 0)
    return find_client("pg_restore", max(dump_major, target_major))


def verify_read(manifest_path: str, manifest: t.Mapping[str, t.Any]) -> t.List[t.Dict[str, t.Any]]:
    """pg_restore reads every block of the archive (data included) and writes it to /dev/null."""
    pg_restore, _major = restore_client(manifest)
    outcome = run_client([pg_restore, "--file=/dev/null", archive_path(manifest_path, manifest)], ConnParams())
    if outcome.rc != 0:
        tail = " ".join(outcome.stderr.strip().splitlines()[-3:])
        return [{"file": manifest["archive"], "reason": "pg_restore cannot read the archive: %s" % tail}]
    return []


# --------------------------------------------------------------------------------------------- level restore
def database_exists(params: ConnParams, name: str) -> bool:
    conn = connect(params, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            return cur.fetchone() is not None
    finally:
        conn.close()


def create_database(params: ConnParams, name: str, encoding: t.Optional[str]) -> None:
    conn = connect(params, autocommit=True)
    try:
        with conn.cursor() as cur:
            query = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
            if encoding:
                query = sql.SQL("{} ENCODING {}").format(query, sql.Literal(encoding))
            cur.execute(query)
    except psycopg2.Error as exc:
        raise db_error(exc, "CREATE DATABASE %s" % name) from None
    finally:
        conn.close()


def drop_database(params: ConnParams, name: str) -> None:
    conn = connect(params, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    except psycopg2.Error as exc:
        raise db_error(exc, "DROP DATABASE %s" % name) from None
    finally:
        conn.close()


def maintenance_params(params: ConnParams, avoid: t.Sequence[str]) -> ConnParams:
    """Connection to a database other than those in ``avoid`` (they get created, dropped or renamed)."""
    if params.database not in avoid:
        return params
    return params.with_database("postgres" if "postgres" not in avoid else "template1")


def restore_and_check(
    manifest_path: str,
    manifest: t.Mapping[str, t.Any],
    params: ConnParams,
    database: str,
    jobs: int = 2,
    checksum_jobs: int = 1,
    keep_owners: bool = False,
) -> t.Dict[str, t.Any]:
    """Restore the archive into the new database ``database`` and compare its tables with the manifest.

    The data is loaded first (pre-data, then data with ``jobs`` workers); the content checksums then run while
    pg_restore builds indexes and constraints (post-data). Owners and privileges are restored only with
    ``keep_owners`` (the roles must exist). The database is left in place; the caller drops or keeps it.
    """
    admin = maintenance_params(params, [database])
    conn = connect(admin, autocommit=True)
    try:
        target_major = server_major(conn)
        # The restored copy is hashed with the manifest's algorithm, never another: like is compared with like.
        algorithm = _checksums.check_algorithm(manifest_algorithm(manifest), int(conn.server_version))
    finally:
        conn.close()
    pg_restore, restore_major = restore_client(manifest, target_major)
    archive = archive_path(manifest_path, manifest)
    target = params.with_database(database)
    base = [pg_restore, "--no-password", "--exit-on-error", dbname_option(target)]
    if not keep_owners:
        base += ["--no-owner", "--no-acl"]
    jobs_args = ["--jobs=%d" % jobs] if jobs > 1 else []
    timings: t.Dict[str, float] = {}
    started = time.monotonic()
    create_database(admin, database, manifest.get("encoding"))
    check_client(
        run_client(base + ["--section=pre-data", "--section=data"] + jobs_args + [archive], target),
        "pg_restore (pre-data and data) into %s" % database,
    )
    timings["create_and_data"] = round(time.monotonic() - started, 3)
    mark = time.monotonic()
    post = BackgroundClient(base + ["--section=post-data"] + jobs_args + [archive], target)
    try:

        def worker_connect() -> t.Any:
            return connect(target, autocommit=True)

        probe = connect(target, autocommit=True)
        try:
            present = {ref.key: ref for ref in _checksums.list_user_tables(probe)}
        finally:
            probe.close()
        tables = [present[k] for k in present]
        actual = _checksums.parallel_checksums(worker_connect, tables, checksum_jobs, algorithm=algorithm)
    except BaseException:
        post.kill()
        raise
    check_client(post.wait(), "pg_restore (post-data) into %s" % database)
    timings["post_data_and_checksums"] = round(time.monotonic() - mark, 3)
    table_results, mismatches = _checksums.compare_checksums(_checksums.manifest_tables(manifest), actual)
    large_objects = check_large_objects(manifest, target, with_access=keep_owners)
    if large_objects.get("reason"):
        mismatches.append({"large_objects": True, "reason": large_objects["reason"]})
    return {
        "database": database,
        "checksum_algorithm": algorithm,
        "pg_restore": {"path": pg_restore, "major": restore_major},
        "tables": table_results,
        "large_objects": large_objects,
        "mismatches": mismatches,
        "timings": timings,
    }


def check_large_objects(manifest: t.Mapping[str, t.Any], target: ConnParams, with_access: bool) -> t.Dict[str, t.Any]:
    """The restored database's large objects against the manifest's (``ok`` None: the manifest records none).

    Without ``with_access`` (a restore with ``--no-owner --no-acl``) owners and ACLs are not compared.
    """
    expected = manifest.get("large_objects")
    if expected is not None:
        _large_objects.check_algorithm(expected.get("algorithm"))
    conn = connect(target)
    try:
        conn.set_session(readonly=True)
        actual = _large_objects.fingerprint(conn)
    finally:
        with contextlib.suppress(psycopg2.Error):
            conn.rollback()
        conn.close()
    out: t.Dict[str, t.Any] = {"expected": expected, "actual": actual, "owners_and_acls_compared": with_access}
    if expected is None:
        out.update({"ok": None, "note": "the manifest records no large objects (an older backup): not compared"})
        return out
    reason = _large_objects.compare_fingerprints(expected, actual, with_access=with_access)
    out["ok"] = reason is None
    if reason:
        out["reason"] = "large objects: %s" % reason
    return out


def manifest_algorithm(manifest: t.Mapping[str, t.Any]) -> str:
    """The checksum algorithm a manifest's table checksums were computed with; refuses one this code does not know.

    Manifests written before the algorithm was recorded hashed the row's text (``row-text-v1``, the same statement).
    """
    algorithm = manifest.get("checksum_algorithm", _checksums.LEGACY_ALGORITHM)
    if algorithm not in _checksums.ALGORITHMS:
        raise PgShiftError(
            "backup %s records checksum algorithm %r, which this version of pgshift does not know (it knows %s): "
            "its table checksums cannot be compared; take a new backup with this version"
            % (manifest.get("backup_id"), algorithm, ", ".join(_checksums.ALGORITHMS)),
            checksum_algorithm=algorithm,
        )
    return str(algorithm)


def throwaway_name(manifest: t.Mapping[str, t.Any], prefix: str = "pgshift_verify_") -> str:
    ident = "".join(ch for ch in str(manifest.get("backup_id", "")).lower() if ch.isalnum() or ch == "-")
    return (prefix + ident.replace("-", "_"))[:50] + "_" + secrets.token_hex(2)


# --------------------------------------------------------------------------------------------- verify
def verify_backup(
    manifest_path: str,
    level: str,
    params: t.Optional[ConnParams] = None,
    jobs: int = 2,
    checksum_jobs: int = 1,
    record: bool = True,
    check_mode: bool = False,
) -> t.Dict[str, t.Any]:
    """Verify a backup at ``level``; returns ``verified``, per-table results and every mismatch found."""
    if level not in LEVELS:
        raise PgShiftError("level must be one of %s" % ", ".join(LEVELS))
    started = time.monotonic()
    result: t.Dict[str, t.Any] = {"level": level, "manifest_path": manifest_path, "tables": {}, "mismatches": []}
    try:
        manifest = load_manifest(manifest_path)
    except PgShiftError as exc:
        if "mismatches" not in exc.details:
            raise
        result.update({"verified": False, "mismatches": exc.details["mismatches"], "checks": ["manifest"]})
        return result
    result["backup_id"] = manifest.get("backup_id")
    result["database"] = manifest.get("database")
    result["checksum_algorithm"] = manifest_algorithm(manifest)
    checks = ["manifest", "checksum"]
    # The restore drill re-hashes the files while it restores (see _restore_drill); a cheap presence and size check
    # comes first so that a missing or truncated file never gets as far as a throwaway database.
    mismatches = verify_files(manifest_path, manifest, hash_files=not (level == "restore" and not check_mode))
    if not mismatches and level == "read":
        checks.append("read")
        mismatches = verify_read(manifest_path, manifest)
    if not mismatches and level == "restore":
        if params is None:
            raise PgShiftError("level=restore needs a connection to the cluster to restore into")
        name = throwaway_name(manifest)
        result["throwaway_database"] = name
        checks.append("restore")
        if check_mode:
            result["would_restore_into"] = name
        else:
            mismatches = _restore_drill(manifest_path, manifest, params, name, jobs, checksum_jobs, result)
    if "large_objects" not in result:
        result["large_objects"] = {"expected": manifest.get("large_objects"), "ok": None}
    if not result["tables"]:
        result["tables"] = {
            key: {"expected_rows": v["rows"], "expected_checksum": v["checksum"], "ok": None}
            for key, v in _checksums.manifest_tables(manifest).items()
        }
    result["checks"] = checks
    result["mismatches"] = mismatches
    result["verified"] = not mismatches and not check_mode
    result["duration_seconds"] = round(time.monotonic() - started, 3)
    if record and result["verified"]:
        write_file_atomic(
            os.path.join(backup_folder(manifest_path), VERIFICATION_NAME),
            (
                json.dumps(
                    {
                        "backup_id": manifest.get("backup_id"),
                        "level": level,
                        "verified_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "manifest_sha256": manifest.get("manifest_sha256"),
                    },
                    indent=2,
                    sort_keys=True,
                )
                + "\n"
            ).encode("utf-8"),
        )
    return result


def _restore_drill(
    manifest_path: str,
    manifest: t.Mapping[str, t.Any],
    params: ConnParams,
    name: str,
    jobs: int,
    checksum_jobs: int,
    result: t.Dict[str, t.Any],
) -> t.List[t.Dict[str, t.Any]]:
    """Restore drill with the sha256 file check running beside it; a file mismatch wins over anything the drill says."""
    admin = maintenance_params(params, [name])
    drill: t.Optional[t.Dict[str, t.Any]] = None
    error: t.Optional[PgShiftError] = None
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        hashing = pool.submit(verify_files, manifest_path, manifest)
        try:
            drill = restore_and_check(manifest_path, manifest, params, name, jobs, checksum_jobs)
        except PgShiftError as exc:
            error = exc
        finally:
            drop_database(admin, name)
        file_mismatches = hashing.result()
    if file_mismatches:
        return file_mismatches
    if error is not None or drill is None:
        raise error or PgShiftError("the restore drill of %s gave no result" % name)
    result["tables"] = drill["tables"]
    result["large_objects"] = drill["large_objects"]
    result["timings"] = drill["timings"]
    result["pg_restore"] = drill["pg_restore"]
    return list(drill["mismatches"])


# --------------------------------------------------------------------------------------------- restore
def restore_backup(
    manifest_path: str,
    params: ConnParams,
    target_database: str,
    replace: bool = False,
    jobs: int = 2,
    checksum_jobs: int = 1,
    keep_owners: bool = True,
    check_mode: bool = False,
) -> t.Dict[str, t.Any]:
    """Restore a backup into ``target_database``, proven equal to the manifest before it takes the name.

    The archive's files are checked first; the restore goes into a temporary database; only when every table
    matches the manifest is an existing ``target_database`` (with ``replace``) dropped and the new one renamed.
    """
    manifest = load_manifest(manifest_path)
    algorithm = manifest_algorithm(manifest)
    admin = maintenance_params(params, [target_database])
    exists = database_exists(admin, target_database)
    result: t.Dict[str, t.Any] = {
        "backup_id": manifest.get("backup_id"),
        "checksum_algorithm": algorithm,
        "target_database": target_database,
        "existed": exists,
        "replaced": False,
        "changed": False,
    }
    if exists and not replace:
        raise PgShiftError(
            "database %s already exists: refusing to overwrite it (set replace=true to replace it)" % target_database,
            target_database=target_database,
        )
    file_problems = verify_files(manifest_path, manifest)
    if file_problems:
        raise PgShiftError(
            "backup %s failed its file check; nothing restored: %s"
            % (manifest.get("backup_id"), "; ".join(m["reason"] for m in file_problems[:5])),
            mismatches=file_problems,
        )
    temp = throwaway_name(manifest, prefix="pgshift_restore_")
    result["temporary_database"] = temp
    if check_mode:
        result.update({"changed": True, "replaced": exists})
        return result
    admin = maintenance_params(params, [target_database, temp])
    try:
        drill = restore_and_check(manifest_path, manifest, params, temp, jobs, checksum_jobs, keep_owners=keep_owners)
    except BaseException:
        drop_database(admin, temp)
        raise
    result["tables"] = drill["tables"]
    result["large_objects"] = drill["large_objects"]
    result["mismatches"] = drill["mismatches"]
    result["timings"] = drill["timings"]
    if drill["mismatches"]:
        drop_database(admin, temp)
        raise PgShiftError(
            "the restored database does not match backup %s; %s left untouched: %s"
            % (manifest.get("backup_id"), target_database, "; ".join(m["reason"] for m in drill["mismatches"][:5])),
            mismatches=drill["mismatches"],
            tables=drill["tables"],
        )
    conn = connect(admin, autocommit=True)
    blocked = False
    try:
        with conn.cursor() as cur:
            if exists:
                cur.execute(
                    sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(target_database))
                )
                blocked = True
                cur.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(target_database)))
                blocked = False
                result["replaced"] = True
            cur.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(temp), sql.Identifier(target_database))
            )
    except psycopg2.Error as exc:
        error = db_error(exc, "putting the restored database in place as %s" % target_database)
        with contextlib.suppress(psycopg2.Error), conn.cursor() as cur:
            if blocked:  # never leave the old database refusing connections
                cur.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(target_database)))
        raise error from None
    finally:
        conn.close()
    result["changed"] = True
    result["verified"] = True
    return result
