# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""Verified backups, part 1: taking a backup and writing its manifest.

One ``REPEATABLE READ`` transaction exports its snapshot; ``pg_dump --snapshot=<id>`` writes the archive while other
connections, importing the same snapshot, compute every table's row count and content checksum (``_checksums``) and the
large objects' count and fingerprint (``_large_objects``). The manifest beside the archive records what the archive
must contain: versions, the snapshot, sha256 and size of every file, per-table counts and checksums, the large objects,
the node-pg-migrate ledger and the schema hash. Everything is written 0600 in
0700 folders: the backup is built in a hidden ``.partial`` folder that is renamed into place only when complete.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime
import functools
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
import typing as t

from ansible_collections.pgshift.ops.plugins.module_utils import _checksums, _large_objects
from ansible_collections.pgshift.ops.plugins.module_utils._clients import (
    BackgroundClient,
    check_client,
    run_client,
)
from ansible_collections.pgshift.ops.plugins.module_utils._clients import find_client as _find_client
from ansible_collections.pgshift.ops.plugins.module_utils._connection import (
    ConnParams,
    connect,
    db_error,
    dbname_option,
    libpq_dbname,
    scrub,
    server_major,
)
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError
from ansible_collections.pgshift.ops.plugins.module_utils._ledger import applied as ledger_applied

MANIFEST_NAME = "manifest.json"
VERIFICATION_NAME = "verification.json"
MANIFEST_FORMAT = 1
ARCHIVE_NAMES = {"custom": "database.dump", "directory": "database.dir"}
GLOBALS_NAME = "globals.sql"
FORMATS = ("custom", "directory")
_COMPRESS_RE = re.compile(r"^(?:light|none|[0-9]|(?:gzip|lz4|zstd)(?::[0-9]{1,2})?)$")
_LABEL_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclasses.dataclass
class BackupOptions:
    dest_dir: str
    format: str = "custom"
    jobs: int = 2
    compress: str = "light"
    globals: bool = True
    label: t.Optional[str] = None
    retention_keep: int = 5
    retention_days: int = 14
    # The journal database on the backed-up cluster: backups an unfinished run recorded are never removed.
    journal_database: t.Optional[str] = None
    checksum_jobs: int = 1
    lock_wait_timeout: str = "60s"
    space_check: bool = True
    # Tests and callers may demand a newer client than the server needs (never lower).
    min_client_major: int = 0
    # The content-checksum algorithm (_checksums.ALGORITHMS); None: the best the server computes.
    checksum_algorithm: t.Optional[str] = None


# --------------------------------------------------------------------------------------------- files
@contextlib.contextmanager
def private_umask() -> t.Iterator[None]:
    """Files and folders created inside (by us or by child processes) are private to the owner."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def make_private_dir(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)


def write_file_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a 0600 temp file in the same folder, fsync, os.replace."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def sha256_file(path: str, chunk: int = 1 << 20) -> t.Tuple[int, str]:
    """(size, sha256 hex) of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while True:
            block = handle.read(chunk)
            if not block:
                break
            size += len(block)
            digest.update(block)
    return size, digest.hexdigest()


def list_files(folder: str, skip: t.Sequence[str] = (MANIFEST_NAME, VERIFICATION_NAME)) -> t.List[str]:
    """Relative paths of every file below ``folder`` (sorted), manifest and verification record excluded."""
    found: t.List[str] = []
    for base, dirs, files in os.walk(folder):
        dirs.sort()
        for name in files:
            rel = os.path.relpath(os.path.join(base, name), folder)
            if rel not in skip:
                found.append(rel)
    return sorted(found)


def file_digests(folder: str) -> t.Dict[str, t.Dict[str, t.Any]]:
    result: t.Dict[str, t.Dict[str, t.Any]] = {}
    for rel in list_files(folder):
        size, digest = sha256_file(os.path.join(folder, rel))
        result[rel] = {"size": size, "sha256": digest}
    return result


def make_private_tree(folder: str) -> None:
    for base, _dirs, files in os.walk(folder):
        os.chmod(base, 0o700)
        for name in files:
            os.chmod(os.path.join(base, name), 0o600)


# --------------------------------------------------------------------------------------------- manifest
def _canonical(manifest: t.Mapping[str, t.Any]) -> bytes:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")


def seal_manifest(manifest: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
    """Add ``manifest_sha256``: the sha256 of the canonical JSON of everything else (detects hand edits)."""
    manifest["manifest_sha256"] = hashlib.sha256(_canonical(manifest)).hexdigest()
    return manifest


def write_manifest(path: str, manifest: t.Dict[str, t.Any]) -> None:
    seal_manifest(manifest)
    write_file_atomic(path, (json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8"))


def load_manifest(path: str) -> t.Dict[str, t.Any]:
    """Read a manifest and check its seal; a manifest edited by hand is refused."""
    try:
        with open(path, "rb") as handle:
            manifest = json.loads(handle.read().decode("utf-8"))
    except FileNotFoundError:
        raise PgShiftError("backup manifest %s does not exist" % path) from None
    except (OSError, ValueError) as exc:
        raise PgShiftError("backup manifest %s cannot be read: %s" % (path, exc)) from None
    if not isinstance(manifest, dict) or manifest.get("manifest_format") != MANIFEST_FORMAT:
        raise PgShiftError("%s is not a pgshift backup manifest (format %s expected)" % (path, MANIFEST_FORMAT))
    expected = hashlib.sha256(_canonical(manifest)).hexdigest()
    if manifest.get("manifest_sha256") != expected:
        raise PgShiftError(
            "backup manifest %s was modified after it was written (its seal does not match): refusing to trust it"
            % path,
            mismatches=[{"file": MANIFEST_NAME, "reason": "manifest seal mismatch: edited after the backup"}],
        )
    return manifest


def backup_folder(manifest_path: str) -> str:
    return os.path.dirname(os.path.abspath(manifest_path))


def archive_path(manifest_path: str, manifest: t.Mapping[str, t.Any]) -> str:
    return os.path.join(backup_folder(manifest_path), str(manifest["archive"]))


# --------------------------------------------------------------------------------------------- clients
@functools.lru_cache(maxsize=32)
def find_client(name: str, min_major: int) -> t.Tuple[str, int]:
    """_clients.find_client, remembered for the life of the process (it runs every candidate's --version)."""
    return _find_client(name, min_major)


@functools.lru_cache(maxsize=32)
def client_version_text(path: str) -> str:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20, check=False).stdout
    return out.strip()


def compress_args(compress: str, client_major: int) -> t.List[str]:
    """pg_dump arguments for the ``compress`` option; lz4/zstd need a PostgreSQL 16+ client."""
    value = (compress or "light").strip().lower()
    if not _COMPRESS_RE.match(value):
        raise PgShiftError(
            "compress=%r is not understood: use light, none, 0-9 (gzip level), gzip[:N], lz4[:N] or zstd[:N]" % compress
        )
    if value == "light":
        return ["--compress=lz4"] if client_major >= 16 else ["--compress=1"]
    if value == "none":
        return ["--compress=0"]
    if value.isdigit():
        return ["--compress=%s" % value]
    method, _sep, level = value.partition(":")
    if client_major < 16:
        if method != "gzip":
            raise PgShiftError(
                "compress=%s needs pg_dump 16 or newer (this pg_dump is %d): use a gzip level (1-9)"
                % (value, client_major)
            )
        return ["--compress=%s" % (level or "6")]
    return ["--compress=%s" % value]


# --------------------------------------------------------------------------------------------- facts
def _database_facts(conn: t.Any) -> t.Dict[str, t.Any]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT current_database(), current_setting('server_version'), current_setting('server_version_num')::int, "
            "pg_database_size(current_database()), pg_encoding_to_char(d.encoding), d.datcollate, d.datctype "
            "FROM pg_database d WHERE d.datname = current_database()"
        )
        row = cur.fetchone()
    return {
        "database": row[0],
        "server_version": row[1],
        "server_version_num": row[2],
        "database_size": int(row[3]),
        "encoding": row[4],
        "collate": row[5],
        "ctype": row[6],
    }


def _free_space(path: str) -> int:
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    return int(shutil.disk_usage(probe).free)


def new_backup_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def safe_label(label: str) -> str:
    # no leading dot: hidden folders are partial backups
    return _LABEL_SAFE.sub("_", label).lstrip(".")[:60] or "backup"


def _schema_hash(
    params: ConnParams, snapshot_id: str, connector: t.Callable[[], t.Any]
) -> t.Tuple[t.Optional[str], t.Optional[str]]:
    """The schema snapshot's hash, read in the backup's snapshot; (None, reason) when the helper is absent."""
    try:
        from ansible_collections.pgshift.ops.plugins.module_utils import _schema  # noqa: PLC0415
    except ImportError:
        return None, "plugins/module_utils/_schema.py is not available"
    take = getattr(_schema, "take_snapshot", None)
    digest = getattr(_schema, "snapshot_hash", None)
    if take is None or digest is None:
        return None, "_schema.take_snapshot/snapshot_hash are not available"
    conn = connector()
    try:
        _checksums.set_snapshot(conn, snapshot_id)
        return str(digest(take(conn))), None
    except Exception as exc:  # noqa: BLE001 - the hash is informative; its absence is recorded, not fatal
        return None, "schema snapshot failed: %s" % scrub(
            str(exc).strip().splitlines()[0] if str(exc) else repr(exc), params.password
        )
    finally:
        with contextlib.suppress(Exception):
            conn.rollback()
            conn.close()


def _large_objects_fingerprint(snapshot_id: str, connector: t.Callable[[], t.Any]) -> t.Dict[str, t.Any]:
    """Count and fingerprint of the large objects, read in the backup's snapshot."""
    conn = connector()
    try:
        _checksums.set_snapshot(conn, snapshot_id)
        return _large_objects.fingerprint(conn)
    finally:
        with contextlib.suppress(Exception):
            conn.rollback()
            conn.close()


# --------------------------------------------------------------------------------------------- retention
def list_backups(dest_dir: str, label: t.Optional[str] = None) -> t.List[t.Dict[str, t.Any]]:
    """Complete backups in ``dest_dir`` (newest first): folder, backup_id, label, created."""
    found: t.List[t.Dict[str, t.Any]] = []
    if not os.path.isdir(dest_dir):
        return found
    for name in os.listdir(dest_dir):
        folder = os.path.join(dest_dir, name)
        path = os.path.join(folder, MANIFEST_NAME)
        if name.startswith(".") or not os.path.isfile(path):
            continue
        try:
            with open(path, "rb") as handle:
                manifest = json.loads(handle.read().decode("utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(manifest, dict) or (label is not None and manifest.get("label") != label):
            continue
        found.append(
            {
                "folder": folder,
                "backup_id": manifest.get("backup_id"),
                "label": manifest.get("label"),
                "created": manifest.get("created", ""),
            }
        )
    found.sort(key=lambda b: (str(b["created"]), str(b["backup_id"])), reverse=True)
    return found


def _is_verified(folder: str) -> bool:
    """The backup's verification was recorded for this very manifest (what backup_verify writes after its proof)."""
    try:
        with open(os.path.join(folder, MANIFEST_NAME), "rb") as handle:
            manifest = json.loads(handle.read().decode("utf-8"))
        with open(os.path.join(folder, VERIFICATION_NAME), "rb") as handle:
            verification = json.loads(handle.read().decode("utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or not isinstance(verification, dict):
        return False
    return bool(manifest.get("manifest_sha256")) and verification.get("manifest_sha256") == manifest.get(
        "manifest_sha256"
    )


def retention_plan(
    dest_dir: str,
    label: str,
    keep: int,
    days: int,
    now: t.Optional[datetime.datetime] = None,
    protect: t.Sequence[str] = (),
) -> t.List[str]:
    """Folders to remove: everything beyond the newest ``keep`` that is also older than ``days`` days.

    Never removed whatever the settings: the folders in ``protect`` (the backup being taken, backups an unfinished
    run needs) and the newest verified backup of the label.
    """
    return retention_detail(dest_dir, label, keep, days, now, protect)["remove"]


def retention_detail(
    dest_dir: str,
    label: str,
    keep: int,
    days: int,
    now: t.Optional[datetime.datetime] = None,
    protect: t.Sequence[str] = (),
) -> t.Dict[str, t.Any]:
    """``remove`` (folders) and ``kept`` (folder -> why it stays) of the retention of ``label`` in ``dest_dir``."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    cutoff = now - datetime.timedelta(days=max(0, days))
    protected = {os.path.abspath(p) for p in protect}
    remove: t.List[str] = []
    kept: t.Dict[str, str] = {}
    newest_verified_seen = False
    for index, backup in enumerate(list_backups(dest_dir, label)):
        folder = backup["folder"]
        verified = not newest_verified_seen and _is_verified(folder)
        newest_verified_seen = newest_verified_seen or verified
        if os.path.abspath(folder) in protected:
            kept[folder] = "in use (this run, or an unfinished run needs it)"
            continue
        if verified:
            kept[folder] = "the newest verified backup"
            continue
        if index < max(0, keep):
            kept[folder] = "one of the newest %d" % keep
            continue
        try:
            created = datetime.datetime.fromisoformat(str(backup["created"]).replace("Z", "+00:00"))
        except ValueError:
            kept[folder] = "unreadable creation date (never guessed)"
            continue
        if created < cutoff:
            remove.append(folder)
        else:
            kept[folder] = "younger than %d days" % days
    return {"remove": remove, "kept": kept}


def backups_in_use(params: ConnParams, journal_db: t.Optional[str]) -> t.List[str]:
    """Backup folders that unfinished runs of the journal recorded (a rollback or restore may still need them)."""
    if not journal_db:
        return []
    conn = connect(params.with_database("postgres"), autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (journal_db,))
            if not cur.fetchone():
                return []
    finally:
        conn.close()
    conn = connect(params.with_database(journal_db), autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('pgshift.steps') IS NOT NULL AND to_regclass('pgshift.runs') IS NOT NULL")
            row = cur.fetchone()
            if not row or not row[0]:
                return []
            cur.execute(
                "SELECT s.detail ->> 'manifest', s.detail ->> 'path' FROM pgshift.steps s "
                "JOIN pgshift.runs r ON r.run_id = s.run_id WHERE s.step = 'backup' AND r.status = ANY(%s)",
                (["running", "failed"],),  # _journal.OPEN_STATES: a run that is neither finished nor rolled back
            )
            folders = []
            for manifest, path in cur.fetchall():
                for value in (manifest, path):
                    if value:
                        folders.append(os.path.dirname(os.path.abspath(value)))
            return sorted(set(folders))
    finally:
        conn.close()


def backups_space(dest_dir: str, label: t.Optional[str] = None) -> t.Dict[str, t.Any]:
    """How many complete backups (of ``label``, or all) ``dest_dir`` holds and the bytes their files take."""
    total = 0
    backups = list_backups(dest_dir, label)
    for backup in backups:
        for root, _dirs, files in os.walk(backup["folder"]):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(root, name)).st_size
    return {
        "count": len(backups),
        "bytes": total,
        "oldest": backups[-1]["created"] if backups else None,
        "newest": backups[0]["created"] if backups else None,
    }


# --------------------------------------------------------------------------------------------- backup
def plan_backup(params: ConnParams, opts: BackupOptions) -> t.Dict[str, t.Any]:
    """What a backup would do: target, clients, estimated size, free space (nothing is written)."""
    if opts.format not in FORMATS:
        raise PgShiftError("format must be one of %s" % ", ".join(FORMATS))
    conn = connect(params, autocommit=True)
    try:
        facts = _database_facts(conn)
        major = server_major(conn)
    finally:
        conn.close()
    need = max(major, opts.min_client_major)
    pg_dump, dump_major = find_client("pg_dump", need)
    label = opts.label or facts["database"]
    compress_args(opts.compress, dump_major)
    algorithm = _checksums.check_algorithm(
        opts.checksum_algorithm or _checksums.algorithm_for(facts["server_version_num"]), facts["server_version_num"]
    )
    free = _free_space(opts.dest_dir)
    # pg_database_size reads the folder sizes and takes no table lock; it includes indexes, so it errs on the safe side.
    estimated = facts["database_size"]
    return {
        "database": facts["database"],
        "label": label,
        "server_version": facts["server_version"],
        "server_major": major,
        "pg_dump": pg_dump,
        "pg_dump_major": dump_major,
        "dest_dir": os.path.abspath(opts.dest_dir),
        "format": opts.format,
        "checksum_algorithm": algorithm,
        "estimated_size_bytes": estimated,
        "database_size_bytes": facts["database_size"],
        "free_bytes": free,
        "enough_space": free >= estimated,
        "facts": facts,
    }


def take_backup(params: ConnParams, opts: BackupOptions, check_mode: bool = False) -> t.Dict[str, t.Any]:
    """Take (or, in check mode, plan) a backup; returns the module result fields."""
    plan = plan_backup(params, opts)
    facts = plan.pop("facts")
    label = plan["label"]
    backup_id = new_backup_id()
    folder_name = "%s-%s" % (safe_label(label), backup_id)
    dest_dir = plan["dest_dir"]
    final = os.path.join(dest_dir, folder_name)
    archive_rel = ARCHIVE_NAMES[opts.format]
    result: t.Dict[str, t.Any] = {
        "backup_id": backup_id,
        "path": os.path.join(final, archive_rel),
        "manifest_path": os.path.join(final, MANIFEST_NAME),
        "plan": plan,
    }
    in_use = backups_in_use(params, opts.journal_database)
    planned = retention_detail(dest_dir, label, opts.retention_keep, opts.retention_days, protect=in_use)
    result.update(removed=planned["remove"], retention_kept=planned["kept"], in_use=in_use)
    if opts.space_check and not plan["enough_space"]:
        raise PgShiftError(
            "not enough free space in %s for a backup of %s: %d bytes free, about %d bytes needed"
            % (dest_dir, facts["database"], plan["free_bytes"], plan["estimated_size_bytes"]),
            plan=plan,
        )
    if check_mode:
        result.update({"changed": True, "manifest": None, "size_bytes": plan["estimated_size_bytes"]})
        return result

    started = time.monotonic()
    with private_umask():
        make_private_dir(dest_dir)
        partial = os.path.join(dest_dir, "." + folder_name + ".partial")
        make_private_dir(partial)
        try:
            manifest = _run_backup(params, opts, plan, facts, backup_id, label, partial, archive_rel)
            manifest["duration_seconds"] = round(time.monotonic() - started, 3)
            make_private_tree(partial)
            write_manifest(os.path.join(partial, MANIFEST_NAME), manifest)
            os.replace(partial, final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        retained = retention_detail(dest_dir, label, opts.retention_keep, opts.retention_days, protect=[final, *in_use])
        removed = retained["remove"]
        for folder in removed:
            shutil.rmtree(folder, ignore_errors=True)
    result.update(
        {
            "changed": True,
            "manifest": manifest,
            "size_bytes": sum(int(f["size"]) for f in manifest["files"].values()),
            "removed": removed,
            "retention_kept": retained["kept"],
            "duration_seconds": manifest["duration_seconds"],
        }
    )
    return result


def _run_backup(
    params: ConnParams,
    opts: BackupOptions,
    plan: t.Dict[str, t.Any],
    facts: t.Dict[str, t.Any],
    backup_id: str,
    label: str,
    partial: str,
    archive_rel: str,
) -> t.Dict[str, t.Any]:
    pg_dump = plan["pg_dump"]
    dump_major = plan["pg_dump_major"]
    clients: t.Dict[str, t.Any] = {
        "pg_dump": {"path": pg_dump, "major": dump_major, "version": client_version_text(pg_dump)}
    }
    archive = os.path.join(partial, archive_rel)
    lock_timeout = opts.lock_wait_timeout

    def worker_connect() -> t.Any:
        conn = connect(params, autocommit=True)
        with conn.cursor() as cur:
            cur.execute("SELECT set_config('lock_timeout', %s, false)", (lock_timeout,))
            # One process per checksum connection: parallel workers would take the cores pg_dump needs.
            cur.execute("SELECT set_config('max_parallel_workers_per_gather', '0', false)")
        return conn

    algorithm = str(plan["checksum_algorithm"])
    exporter = connect(params, autocommit=True)
    dump: t.Optional[BackgroundClient] = None
    try:
        with exporter.cursor() as cur:
            cur.execute("SELECT set_config('idle_in_transaction_session_timeout', '0', false)")
            cur.execute("SELECT set_config('lock_timeout', %s, false)", (lock_timeout,))
        snapshot_id, snapshot_time = _checksums.export_snapshot(exporter)
        tables = _checksums.list_user_tables(exporter)
        with exporter.cursor() as cur:
            try:
                ledger = ledger_applied(cur)
            except Exception as exc:  # noqa: BLE001
                raise db_error(exc, "reading the pgmigrations ledger") from None  # type: ignore[arg-type]
        argv = [
            pg_dump,
            "--format=%s" % opts.format,
            "--file=%s" % archive,
            "--snapshot=%s" % snapshot_id,
            "--no-password",
            "--lock-wait-timeout=%s" % lock_timeout,
            dbname_option(params),
        ] + compress_args(opts.compress, dump_major)
        if opts.format == "directory" and opts.jobs > 1:
            argv.append("--jobs=%d" % opts.jobs)
        dump = BackgroundClient(argv, params)
        try:
            checksums, large_objects, (schema_hash, schema_note), globals_info = run_parallel(
                [
                    lambda: _checksums.parallel_checksums(
                        worker_connect, tables, opts.checksum_jobs, snapshot_id, algorithm=algorithm
                    ),
                    lambda: _large_objects_fingerprint(snapshot_id, worker_connect),
                    lambda: _schema_hash(params, snapshot_id, worker_connect),
                    lambda: (
                        _dump_globals(params, plan, os.path.join(partial, GLOBALS_NAME), facts["database"])
                        if opts.globals
                        else None
                    ),
                ]
            )
        except BaseException:
            dump.kill()
            raise
        outcome = dump.wait()
        check_client(outcome, "pg_dump of %s" % facts["database"])
    finally:
        if dump is not None:
            dump.close()
        with contextlib.suppress(Exception):
            exporter.rollback()
            exporter.close()

    if globals_info:
        clients["pg_dumpall"] = globals_info.pop("client")

    make_private_tree(partial)
    manifest: t.Dict[str, t.Any] = {
        "manifest_format": MANIFEST_FORMAT,
        "backup_id": backup_id,
        "label": label,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "database": facts["database"],
        "encoding": facts["encoding"],
        "collate": facts["collate"],
        "ctype": facts["ctype"],
        "database_size": facts["database_size"],
        "server_version": facts["server_version"],
        "server_version_num": facts["server_version_num"],
        "server_major": plan["server_major"],
        "clients": clients,
        "format": opts.format,
        "compress": opts.compress,
        "compress_args": compress_args(opts.compress, dump_major),
        "jobs": opts.jobs if opts.format == "directory" else 1,
        "archive": archive_rel,
        "globals": GLOBALS_NAME if globals_info else None,
        "globals_role_passwords": globals_info["role_passwords"] if globals_info else None,
        "snapshot_id": snapshot_id,
        "snapshot_time": snapshot_time,
        "host": params.host,
        "port": params.port,
        "user": params.user,
        "files": file_digests(partial),
        "checksum_algorithm": algorithm,
        "table_keys": _checksums.TABLE_KEYS,
        "tables": checksums,
        "large_objects": large_objects,
        "ledger": ledger,
        "schema_hash": schema_hash,
        "schema_hash_note": schema_note,
    }
    return manifest


def _dump_globals(params: ConnParams, plan: t.Mapping[str, t.Any], path: str, database: str) -> t.Dict[str, t.Any]:
    pg_dumpall, major = find_client("pg_dumpall", int(plan["pg_dump_major"]))
    base = [pg_dumpall, "--globals-only", "--no-password", "--file=%s" % path, "--database=%s" % libpq_dbname(database)]
    outcome = run_client(base, params)
    role_passwords = True
    if outcome.rc != 0 and "pg_authid" in outcome.stderr:
        # Not a superuser: roles without their password hashes are still worth keeping.
        outcome = run_client(base + ["--no-role-passwords"], params)
        role_passwords = False
    check_client(outcome, "pg_dumpall --globals-only")
    os.chmod(path, 0o600)
    return {
        "role_passwords": role_passwords,
        "client": {"path": pg_dumpall, "major": major, "version": client_version_text(pg_dumpall)},
    }


def run_parallel(funcs: t.Sequence[t.Callable[[], t.Any]]) -> t.List[t.Any]:
    """Run callables in threads; the first exception is raised after all have finished."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(funcs))) as pool:
        futures = [pool.submit(f) for f in funcs]
        concurrent.futures.wait(futures)
        return [f.result() for f in futures]
