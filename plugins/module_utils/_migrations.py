# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""Status and application of node-pg-migrate migrations (modules migrations_info and migrate).

Two engines write the same ledger rows, so either can continue where the other stopped:

- ``sql``: pgshift's own runner for ``.sql`` migrations. Like node-pg-migrate's CLI, by default all pending
  migrations of one run share a single transaction (``--single-transaction`` is on by default in node-pg-migrate 9),
  so every ledger row of a run carries the same ``run_on`` and ``id`` decides the order; ``single_transaction:
  false`` gives one transaction per migration (``--no-single-transaction``).
- ``node-pg-migrate``: the project's own CLI, with the connection in its environment and the password in a 0600
  PGPASSFILE (node-postgres reads it through its ``pgpass`` dependency); never argv, PGPASSWORD or a URL with a
  password (a client certificate goes in a DATABASE_URL without one: node-postgres reads no PGSSLCERT).

Both take node-pg-migrate's session advisory lock (the CLI then runs with ``--no-lock`` under pgshift's lock), and both
record pgshift's own metadata (sha256, who, how long, which engine) in ``pgshift_migration_meta``.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import socket
import subprocess
import time
import typing as t
from urllib.parse import quote, urlencode

from ansible_collections.pgshift.ops.plugins.module_utils import _ledger
from ansible_collections.pgshift.ops.plugins.module_utils._connection import (
    ConnParams,
    client_environment,
    connect,
    db_error,
    scrub,
)
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError
from ansible_collections.pgshift.ops.plugins.module_utils._migration_files import (
    DEFAULT_IGNORE_PATTERN,
    LEDGER_TABLE,
    NODE_PG_MIGRATE_LOCK_ID,
    MigrationFile,
    list_migrations,
    split_sql,
)

try:
    import psycopg2
except ImportError:  # pragma: no cover - reported by connect()
    psycopg2 = None  # type: ignore[assignment]

ENGINES = ("sql", "node-pg-migrate")
META_TABLE = _ledger.META_TABLE


# ------------------------------------------------------------------------------------------------------------ files
def sql_parts(migration: MigrationFile) -> t.Dict[str, t.Any]:
    """Up and down SQL of a .sql migration, with the line each starts on (1-based) in the file."""
    content = migration.read()
    up_sql, down_sql = split_sql(content)
    up_line = content[: max(content.find(up_sql), 0)].count("\n") + 1
    down_line = None
    if down_sql is not None:
        down_line = content[: max(content.find(down_sql), 0)].count("\n") + 1
    return {"up": up_sql, "up_line": up_line, "down": down_sql, "down_line": down_line}


def _has_sql_body(text: t.Optional[str]) -> bool:
    """True when a section holds more than its marker line and comments."""
    if text is None:
        return False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("--"):
            return True
    return False


def has_down(migration: MigrationFile) -> t.Optional[bool]:
    """Whether a migration can be reverted: known for .sql files, None (unknown before running it) for JS/TS."""
    if migration.kind != "sql":
        return None
    return _has_sql_body(sql_parts(migration)["down"])


def planned_sql(plan: t.Sequence[MigrationFile], direction: str) -> t.List[t.Dict[str, t.Any]]:
    """The SQL each planned migration runs, as the file says it (``.sql``); for JS/TS ``sql`` is None with a
    ``reason`` until ``node_dry_run`` fills it in."""
    out: t.List[t.Dict[str, t.Any]] = []
    for m in plan:
        entry: t.Dict[str, t.Any] = {"name": m.name, "file": m.filename, "kind": m.kind, "sql": None, "reason": None}
        entry["shown_by"] = "file" if m.kind == "sql" else None
        if m.kind == "sql":
            text = sql_parts(m)[direction]
            if text is None:
                entry["reason"] = "the file has no down section"
            else:
                entry["sql"] = text.strip("\n")
        else:
            entry["reason"] = "a %s migration: node-pg-migrate renders its SQL (engine node-pg-migrate)" % m.kind
        out.append(entry)
    return out


def render_planned_sql(entries: t.Sequence[t.Mapping[str, t.Any]], direction: str) -> str:
    """The diff text of a check run: each pending migration's SQL under a header line."""
    if not entries:
        return "-- no migration to run %s\n" % direction
    lines: t.List[str] = []
    for e in entries:
        lines.append("-- migration %s (%s), %s" % (e["name"], direction, e["file"]))
        lines.append(e["sql"] if e["sql"] is not None else "-- SQL not shown: %s" % e["reason"])
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------ status
def read_status(cur: t.Any, files: t.Sequence[MigrationFile], schema: str = "public") -> t.Dict[str, t.Any]:
    """Compare the folder with the ledger (and pgshift's metadata) of the database ``cur`` reads."""
    applied_rows = _ledger.applied(cur, schema, LEDGER_TABLE)
    meta = _ledger.read_meta(cur, schema)
    by_name = {m.name: m for m in files}
    applied_names = [row["name"] for row in applied_rows]
    applied_set = set(applied_names)
    positions = {m.name: i for i, m in enumerate(files)}

    last_applied_pos = max((positions[n] for n in applied_names if n in positions), default=-1)
    pending = [m.name for m in files if m.name not in applied_set]
    out_of_order = [n for n in pending if positions[n] < last_applied_pos]
    missing = [n for n in applied_names if n not in by_name]
    modified = [
        n
        for n in applied_names
        if n in by_name and n in meta and meta[n]["sha256"] and meta[n]["sha256"] != by_name[n].sha256
    ]
    unrecorded = [n for n in applied_names if n in by_name and n not in meta]

    # node-pg-migrate's checkOrder: applied names against the sorted files, position by position
    order_error = None
    for i in range(min(len(applied_names), len(files))):
        if applied_names[i] != files[i].name:
            order_error = "Not run migration %s is preceding already run migration %s" % (
                files[i].name,
                applied_names[i],
            )
            break

    rows = {row["name"]: row for row in applied_rows}
    migrations = []
    for i, m in enumerate(files):
        entry = m.to_dict()
        entry["order"] = i + 1
        entry["has_down"] = has_down(m)
        if m.name in applied_set:
            entry["state"] = "modified" if m.name in modified else "applied"
            entry["run_on"] = rows[m.name]["run_on"]
            entry["ledger_id"] = rows[m.name]["id"]
        else:
            entry["state"] = "out_of_order" if m.name in out_of_order else "pending"
        if m.name in meta:
            entry["applied_sha256"] = meta[m.name]["sha256"]
            entry["applied_by"] = meta[m.name]["applied_by"]
            entry["engine"] = meta[m.name]["engine"]
            entry["duration_ms"] = meta[m.name]["duration_ms"]
        migrations.append(entry)
    for name in missing:
        migrations.append(
            {
                "name": name,
                "file": None,
                "state": "missing",
                "run_on": rows[name]["run_on"],
                "ledger_id": rows[name]["id"],
            }
        )

    return {
        "ledger_exists": _ledger.ledger_exists(cur, schema, LEDGER_TABLE),
        "meta_exists": _ledger.meta_exists(cur, schema),
        "applied": applied_names,
        "pending": pending,
        "missing": missing,
        "modified": modified,
        "out_of_order": out_of_order,
        "unrecorded": unrecorded,
        "order_error": order_error,
        "migrations": migrations,
        "up_to_date": not pending and not missing and not modified,
    }


def migrations_info(
    params: ConnParams, folder: str, *, schema: str = "public", ignore_pattern: str = DEFAULT_IGNORE_PATTERN
) -> t.Dict[str, t.Any]:
    """Read-only status of ``folder`` against the database (a read-only transaction, rolled back)."""
    files = list_migrations(folder, ignore_pattern)
    conn = connect(params)
    try:
        conn.set_session(readonly=True)
        with conn.cursor() as cur:
            status = read_status(cur, files, schema)
        conn.rollback()
    except psycopg2.Error as exc:
        raise db_error(exc, "reading the migrations ledger of %s" % params.describe()) from None
    finally:
        conn.close()
    status["folder"] = os.path.abspath(folder)
    status["ledger"] = "%s.%s" % (schema, LEDGER_TABLE)
    return status


# ------------------------------------------------------------------------------------------------------------ lock
def _lock_holders(cur: t.Any, lock_id: int) -> t.List[t.Dict[str, t.Any]]:
    cur.execute(
        "SELECT l.pid, a.usename, a.application_name, host(a.client_addr), a.backend_start, a.state "
        "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
        "AND l.classid::bigint = %s AND l.objid::bigint = %s "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND l.pid <> "
        "pg_backend_pid()",
        ((lock_id >> 32) & 0xFFFFFFFF, lock_id & 0xFFFFFFFF),
    )
    return [
        {
            "pid": r[0],
            "user": r[1],
            "application_name": r[2],
            "client_addr": r[3],
            "backend_start": r[4].isoformat() if r[4] else None,
            "state": r[5],
        }
        for r in cur.fetchall()
    ]


def acquire_lock(conn: t.Any, lock_id: int, timeout: float, interval: float = 0.2) -> float:
    """Take node-pg-migrate's session advisory lock, waiting up to ``timeout`` seconds; returns seconds waited."""
    started = time.monotonic()
    with conn.cursor() as cur:
        while True:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (lock_id,))
            if cur.fetchone()[0]:
                return round(time.monotonic() - started, 3)
            if time.monotonic() - started >= timeout:
                holders = _lock_holders(cur, lock_id)
                who = (
                    ", ".join(
                        "pid %s (user %s, application %r, client %s, since %s)"
                        % (
                            h["pid"],
                            h["user"],
                            h["application_name"] or "",
                            h["client_addr"] or "local",
                            h["backend_start"],
                        )
                        for h in holders
                    )
                    or "a session that has since ended"
                )
                raise PgShiftError(
                    "another migration holds node-pg-migrate's advisory lock %d on this database: %s; waited %s "
                    "seconds (lock_timeout). Wait for it to finish, or end that session "
                    "(SELECT pg_terminate_backend(pid)) if it is stuck" % (lock_id, who, timeout),
                    lock_id=lock_id,
                    lock_holders=holders,
                )
            time.sleep(interval)


def release_lock(conn: t.Any, lock_id: int) -> None:
    if conn.closed:
        return
    try:
        conn.rollback()
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (lock_id,))
        conn.commit()
    except psycopg2.Error:
        pass  # closing the session releases it anyway


# ------------------------------------------------------------------------------------------------------------ plan
def plan_run(
    status: t.Dict[str, t.Any],
    files: t.Sequence[MigrationFile],
    *,
    direction: str,
    target: t.Optional[str],
    count: t.Optional[int],
) -> t.List[MigrationFile]:
    by_name = {m.name: m for m in files}
    if direction == "up":
        if target is not None and target not in by_name:
            raise PgShiftError(
                "target %r names no migration of the folder (known: %s)"
                % (target, ", ".join(m.name for m in files) or "none"),
                target=target,
            )
        pending = [by_name[n] for n in status["pending"]]
        if target is not None:
            if target not in status["pending"]:
                return []  # already applied: nothing to do up to it
            pending = pending[: [m.name for m in pending].index(target) + 1]
        if count is not None:
            pending = pending[:count]
        return pending
    # down: the last ``count`` applied migrations (default 1), newest first, as node-pg-migrate does
    n = 1 if count is None else count
    applied = list(status["applied"])
    if target is not None:
        if target not in applied:
            raise PgShiftError(
                "target %r is not an applied migration; down needs one of: %s" % (target, ", ".join(applied) or "none"),
                target=target,
            )
        chosen = applied[applied.index(target) :]
    else:
        chosen = applied[-n:] if n > 0 else []
    deleted = [name for name in chosen if name not in by_name]
    if deleted:
        raise PgShiftError(
            "Definitions of migrations %s have been deleted: cannot run their down migration" % ", ".join(deleted),
            missing=deleted,
        )
    return [by_name[name] for name in reversed(chosen)]


def check_refusals(status: t.Dict[str, t.Any], *, accept_changed: bool, check_order: bool) -> t.List[str]:
    """Raise unless the history is clean; returns the warnings when ``accept_changed`` lets changes through."""
    warnings: t.List[str] = []
    problems = []
    if status["modified"]:
        problems.append(
            "applied migration(s) changed since they were applied (sha256 differs): %s" % ", ".join(status["modified"])
        )
    if status["missing"]:
        problems.append("applied migration(s) whose file is gone: %s" % ", ".join(status["missing"]))
    if problems:
        if not accept_changed:
            raise PgShiftError(
                "refusing to migrate: %s. Restore the files as they were applied, or set accept_changed: true to go on "
                "anyway (recorded as a warning)" % "; ".join(problems),
                modified=status["modified"],
                missing=status["missing"],
            )
        warnings.extend("accept_changed: true: going on although " + p for p in problems)
    if check_order and status["out_of_order"]:
        raise PgShiftError(
            "refusing to migrate: %s (new file(s) %s sort before an applied migration; rename them with a later "
            "prefix, or set check_order: false as node-pg-migrate's --no-check-order does)"
            % (status["order_error"] or "out-of-order migrations", ", ".join(status["out_of_order"])),
            out_of_order=status["out_of_order"],
        )
    return warnings


# ------------------------------------------------------------------------------------------------------------ engines
def applied_by() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return "%s@%s (pgshift)" % (user, socket.gethostname())


def _error_line(exc: t.Any, body: str, start_line: int) -> t.Optional[int]:
    position = getattr(getattr(exc, "diag", None), "statement_position", None)
    if not position:
        return None
    try:
        return start_line + body[: int(position) - 1].count("\n")
    except ValueError:
        return None


def _run_sql_engine(
    conn: t.Any, plan: t.Sequence[MigrationFile], *, direction: str, schema: str, single_transaction: bool
) -> t.List[t.Dict[str, t.Any]]:
    for m in plan:
        if m.kind != "sql":
            raise PgShiftError(
                "migration %s is a .%s file: the sql engine runs .sql migrations only; use engine: node-pg-migrate"
                % (m.name, m.kind),
                migration=m.name,
            )
    parts = {m.name: sql_parts(m) for m in plan}
    if direction == "down":
        no_down = [m.name for m in plan if not _has_sql_body(parts[m.name]["down"])]
        if no_down:
            raise PgShiftError(
                "migration(s) %s have no down migration (no '-- Down Migration' section)" % ", ".join(no_down),
                migration=no_down[0],
            )
    who = applied_by()
    done: t.List[t.Dict[str, t.Any]] = []
    with conn.cursor() as cur:
        # node-pg-migrate creates its table before the migrations' transaction
        _ledger.ensure_ledger(cur, schema, LEDGER_TABLE)
        _ledger.ensure_meta(cur, schema)
        conn.commit()
        for m in plan:
            p = parts[m.name]
            body, line = (p["up"], p["up_line"]) if direction == "up" else (p["down"], p["down_line"])
            started = time.monotonic()
            try:
                if _has_sql_body(body):
                    cur.execute(body)
                if direction == "up":
                    _ledger.record_up(cur, m.name, schema, LEDGER_TABLE)
                else:
                    _ledger.record_down(cur, m.name, schema, LEDGER_TABLE)
            except psycopg2.Error as exc:
                conn.rollback()
                diag = getattr(exc, "diag", None)
                primary = getattr(diag, "message_primary", None) or str(exc).strip().splitlines()[0]
                err_line = _error_line(exc, body, line)
                kept = [] if single_transaction else [d["name"] for d in done]
                raise PgShiftError(
                    "migration %s (%s) failed%s: %s; %s"
                    % (
                        m.name,
                        m.filename,
                        " at line %d" % err_line if err_line else "",
                        primary,
                        "the whole run was rolled back (single transaction): nothing of it is applied"
                        if single_transaction
                        else "it was rolled back; the migrations before it in this run stay applied",
                    ),
                    sqlstate=getattr(exc, "pgcode", None),
                    migration=m.name,
                    file=m.filename,
                    line=err_line,
                    applied=kept,
                ) from None
            ms = int((time.monotonic() - started) * 1000)
            if direction == "up":
                _ledger.record_meta(cur, m.name, m.sha256, who, ms, "sql", schema)
            else:
                _ledger.delete_meta(cur, m.name, schema)
            if not single_transaction:
                conn.commit()
            done.append({"name": m.name, "file": m.filename, "sha256": m.sha256, "duration_ms": ms})
        conn.commit()
    return done


def find_node_pg_migrate(configured: t.Optional[str], folder: str) -> str:
    """The node-pg-migrate CLI: the configured path, else node_modules/.bin above the folder, else PATH."""
    if configured:
        if not os.access(configured, os.X_OK):
            raise PgShiftError("node_pg_migrate %r is not an executable file" % configured)
        return os.path.abspath(configured)
    here = os.path.abspath(folder)
    while True:
        candidate = os.path.join(here, "node_modules", ".bin", "node-pg-migrate")
        if os.access(candidate, os.X_OK):
            return candidate
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    found = shutil.which("node-pg-migrate")
    if found:
        return found
    raise PgShiftError(
        "node-pg-migrate not found (no node_modules/.bin/node-pg-migrate above %s, none on PATH); install it in the "
        "project (npm ci) or set node_pg_migrate to its path" % folder
    )


def node_environment(env: t.Dict[str, str], params: ConnParams) -> t.Dict[str, str]:
    """Adapt the libpq client environment to node-postgres (same variables; CA file through NODE_EXTRA_CA_CERTS)."""
    child = dict(env)
    child.pop("PGCONNECT_TIMEOUT", None)  # node-postgres reads seconds too, keep libpq's meaning out of doubt
    child["PGCONNECT_TIMEOUT"] = str(params.connect_timeout)
    if params.sslrootcert:
        child["NODE_EXTRA_CA_CERTS"] = params.sslrootcert
    if params.sslcert:
        # node-postgres reads no PGSSLCERT/PGSSLKEY: a client certificate goes in a connection URL, which holds no
        # password (node-postgres still reads it from the PGPASSFILE) and which its parser turns into TLS options
        # that verify the server against sslrootcert (and, for verify-full, its name).
        query = {"host": params.host or "", "port": str(params.port), "user": params.user, "sslmode": params.sslmode}
        query.update(
            {
                k: v
                for k, v in (
                    ("sslrootcert", params.sslrootcert),
                    ("sslcert", params.sslcert),
                    ("sslkey", params.sslkey),
                )
                if v
            }
        )
        child["DATABASE_URL"] = "postgresql:///%s?%s" % (quote(params.database, safe=""), urlencode(query))
    child["NODE_NO_WARNINGS"] = "1"  # pg 8 prints a deprecation notice when it reads the password file
    return child


def _run_node_engine(
    conn: t.Any,
    params: ConnParams,
    plan: t.Sequence[MigrationFile],
    *,
    direction: str,
    folder: str,
    schema: str,
    single_transaction: bool,
    check_order: bool,
    ignore_pattern: str,
    binary: str,
    timeout: float,
) -> t.Tuple[t.List[t.Dict[str, t.Any]], t.Dict[str, t.Any]]:
    with conn.cursor() as cur:
        before = [r["name"] for r in _ledger.applied(cur, schema, LEDGER_TABLE)]
    conn.commit()
    argv = [
        binary,
        direction,
        str(len(plan)),
        "--migrations-dir",
        os.path.abspath(folder),
        "--migrations-table",
        LEDGER_TABLE,
        "--migrations-schema",
        schema,
        "--ignore-pattern",
        ignore_pattern,
        "--no-lock",  # pgshift holds the same advisory lock for the whole run
        "--single-transaction" if single_transaction else "--no-single-transaction",
    ]
    if not check_order:
        argv.append("--no-check-order")
    started = time.monotonic()
    with client_environment(params) as env:
        child_env = node_environment(env, params)
        try:
            proc = subprocess.run(
                argv,
                env=child_env,
                cwd=os.path.dirname(env["PGPASSFILE"]),  # a private folder: no stray .env or config/ is picked up
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise PgShiftError("node-pg-migrate did not finish within %s seconds" % timeout) from None
        except OSError as exc:
            raise PgShiftError("cannot run node-pg-migrate (%s): %s" % (binary, exc)) from None
    ms = int((time.monotonic() - started) * 1000)
    stdout = scrub(proc.stdout, params.password)
    stderr = scrub(proc.stderr, params.password)
    with conn.cursor() as cur:
        after = [r["name"] for r in _ledger.applied(cur, schema, LEDGER_TABLE)]
        by_name = {m.name: m for m in plan}
        if direction == "up":
            changed = [n for n in after if n not in before]
        else:
            changed = [n for n in reversed(before) if n not in after]
        if changed:
            _ledger.ensure_meta(cur, schema)
            who = applied_by()
            for name in changed:
                if direction == "up" and name in by_name:
                    _ledger.record_meta(cur, name, by_name[name].sha256, who, ms, "node-pg-migrate", schema)
                else:
                    _ledger.delete_meta(cur, name, schema)
    conn.commit()
    command = {"argv": [os.path.basename(binary)] + argv[1:], "rc": proc.returncode, "stdout": stdout, "stderr": stderr}
    if proc.returncode != 0:
        raise PgShiftError(
            "node-pg-migrate %s failed (exit %d)%s" % (direction, proc.returncode, _node_failure(stdout, stderr)),
            rc=proc.returncode,
            applied=changed if direction == "up" else [],
            reverted=changed if direction == "down" else [],
            command=command,
        )
    done = [
        {
            "name": n,
            "file": by_name[n].filename if n in by_name else None,
            "sha256": by_name[n].sha256 if n in by_name else None,
            "duration_ms": ms,
        }
        for n in changed
    ]
    return done, command


def node_dry_run(
    params: ConnParams,
    entries: t.List[t.Dict[str, t.Any]],
    *,
    direction: str,
    folder: str,
    schema: str,
    single_transaction: bool,
    check_order: bool,
    ignore_pattern: str,
    binary: str,
    timeout: float,
) -> None:
    """Fill in the SQL of the JS/TS entries from node-pg-migrate's own ``--dry-run`` (check mode).

    The CLI runs in a read-only session (``default_transaction_read_only`` through PGOPTIONS, which node-postgres
    reads), so neither it nor a migration's own queries can write; node-pg-migrate creates its ledger table first
    when it is missing, so on a database without a ledger the dry run cannot run and the entries say so.
    """
    wanted = [e for e in entries if e["sql"] is None and e["kind"] != "sql"]
    if not wanted:
        return
    argv = [
        binary,
        direction,
        str(len(entries)),
        "--dry-run",
        "--migrations-dir",
        os.path.abspath(folder),
        "--migrations-table",
        LEDGER_TABLE,
        "--migrations-schema",
        schema,
        "--ignore-pattern",
        ignore_pattern,
        "--no-lock",
        "--single-transaction" if single_transaction else "--no-single-transaction",
    ]
    if not check_order:
        argv.append("--no-check-order")
    with client_environment(params) as env:
        child_env = node_environment(env, params)
        child_env["PGOPTIONS"] = "-c default_transaction_read_only=on"
        try:
            proc = subprocess.run(
                argv,
                env=child_env,
                cwd=os.path.dirname(env["PGPASSFILE"]),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            stdout, stderr, rc = proc.stdout, proc.stderr, proc.returncode
        except (subprocess.TimeoutExpired, OSError) as exc:
            stdout, stderr, rc = "", str(exc), -1
    stdout = scrub(stdout, params.password)
    for e in wanted:
        shown = rendered_sql(stdout, e["name"], direction) if rc == 0 else None
        if shown is not None:
            e["sql"] = shown["sql"]
            e["reason"] = None
            e["shown_by"] = "node-pg-migrate --dry-run"
        else:
            e["reason"] = "node-pg-migrate's dry run (read-only) did not show it%s" % (
                _node_failure(stdout, scrub(stderr, params.password)) if rc != 0 else ""
            )


_NODE_MIGRATION_RE = re.compile(r"^### MIGRATION (.+) \((?:UP|DOWN)\) ###$", re.MULTILINE)
_NODE_ERROR_RE = re.compile(r"^(?:\w*Error|error): (.+)$", re.MULTILINE)
_NODE_CODE_RE = re.compile(r"^\s*code: '([0-9A-Z]{5})',$", re.MULTILINE)


def _node_failure(stdout: str, stderr: str) -> str:
    """The useful part of node-pg-migrate's failure output: which migration, the error, its SQLSTATE."""
    migrations = _NODE_MIGRATION_RE.findall(stdout)
    errors = _NODE_ERROR_RE.findall(stderr)
    codes = _NODE_CODE_RE.findall(stderr)
    if not errors:
        return ": " + "\n".join((stderr.strip() or stdout.strip()).splitlines()[-12:])
    text = " in migration %s" % migrations[-1] if migrations else ""
    text += ": " + errors[-1].strip()
    if codes:
        text += " (SQLSTATE %s)" % codes[-1]
    return text


def rendered_sql(stdout: str, name: str, direction: str = "up") -> t.Optional[t.Dict[str, t.Any]]:
    """The SQL node-pg-migrate ran for migration ``name``, read from its own output.

    node-pg-migrate 9 prints, for each migration it runs, ``### MIGRATION <name> (UP|DOWN) ###`` and then the SQL steps
    it sends to the server, ending with its ledger statement (``INSERT INTO ... pgmigrations`` or ``DELETE FROM``).
    Returns ``{"sql": ..., "transaction": bool}`` (``transaction`` is False when the migration called
    ``pgm.noTransaction()``: the steps then start with the ``COMMIT;`` that breaks the run's transaction), or None
    when the output does not show that migration.
    """
    header = "### MIGRATION %s (%s) ###\n" % (name, direction.upper())
    start = stdout.find(header)
    if start < 0:
        return None
    body = stdout[start + len(header) :]
    following = body.find("\n### MIGRATION ")
    if following >= 0:
        body = body[:following]
    # its ledger statement is the last step: INSERT of (name, run_on) for up, DELETE by name for down
    lines = body.rstrip("\n").split("\n")
    quoted = "'" + name + "'"  # node-pg-migrate writes the name as is
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index]
        if (line.startswith("INSERT INTO ") or line.startswith("DELETE FROM ")) and quoted in line:
            body = "\n".join(lines[:index])
            break
    text = body.strip("\n")
    transaction = True
    lines = text.split("\n")
    if lines and lines[0].strip() in ("COMMIT;", "BEGIN;"):
        # with --single-transaction a noTransaction() migration starts with COMMIT; without it a transactional one
        # starts with BEGIN
        transaction = lines[0].strip() == "BEGIN;"
        text = "\n".join(lines[1:])
    return {"sql": text, "transaction": transaction}


def _adopt_unrecorded(
    cur: t.Any, status: t.Dict[str, t.Any], files: t.Sequence[MigrationFile], schema: str
) -> t.List[str]:
    """Record the sha256 of applied migrations that pgshift has no metadata for (applied by another tool)."""
    names = list(status["unrecorded"])
    if not names:
        return []
    by_name = {m.name: m for m in files}
    _ledger.ensure_meta(cur, schema)
    who = applied_by()
    for name in names:
        _ledger.record_meta(cur, name, by_name[name].sha256, who, None, "adopted", schema)
    return names


def migrate(
    params: ConnParams,
    folder: str,
    *,
    engine: str = "sql",
    direction: str = "up",
    target: t.Optional[str] = None,
    count: t.Optional[int] = None,
    accept_changed: bool = False,
    check_order: bool = True,
    single_transaction: bool = True,
    lock_timeout: float = 60.0,
    schema: str = "public",
    ignore_pattern: str = DEFAULT_IGNORE_PATTERN,
    node_pg_migrate: t.Optional[str] = None,
    node_timeout: float = 3600.0,
    check_mode: bool = False,
) -> t.Dict[str, t.Any]:
    """Apply (or revert) migrations; in check mode only read and return the plan (no lock, no ledger, no writes)."""
    if engine not in ENGINES:
        raise PgShiftError("unknown engine %r: choose one of %s" % (engine, ", ".join(ENGINES)), engine=engine)
    if direction not in ("up", "down"):
        raise PgShiftError("unknown direction %r: up or down" % direction)
    if count is not None and count < 0:
        raise PgShiftError("count must be 0 or more, not %d" % count)
    files = list_migrations(folder, ignore_pattern)
    binary = find_node_pg_migrate(node_pg_migrate, folder) if engine == "node-pg-migrate" else None

    conn = connect(params)
    result: t.Dict[str, t.Any] = {"engine": engine, "direction": direction, "folder": os.path.abspath(folder)}
    locked = False
    try:
        if check_mode:
            conn.set_session(readonly=True)
        else:
            conn.autocommit = True
            result["lock_waited_s"] = acquire_lock(conn, NODE_PG_MIGRATE_LOCK_ID, lock_timeout)
            locked = True
            conn.autocommit = False
        with conn.cursor() as cur:
            status = read_status(cur, files, schema)
        conn.rollback()
        warnings = check_refusals(status, accept_changed=accept_changed, check_order=check_order)
        plan = plan_run(status, files, direction=direction, target=target, count=count)
        result.update(
            {
                "accepted_problems": warnings,
                "plan": [m.name for m in plan],
                "before": {k: status[k] for k in ("applied", "pending", "missing", "modified", "out_of_order")},
                "applied": [],
                "reverted": [],
                "adopted": [],
            }
        )
        if check_mode:
            result["adopted"] = list(status["unrecorded"])  # what a real run would record
            result["sql"] = planned_sql(plan, direction)
            if binary is not None and plan:
                node_dry_run(
                    params,
                    result["sql"],
                    direction=direction,
                    folder=folder,
                    schema=schema,
                    single_transaction=single_transaction,
                    check_order=check_order and not (accept_changed and status["missing"]),
                    ignore_pattern=ignore_pattern,
                    binary=binary,
                    timeout=node_timeout,
                )
            result["changed"] = bool(plan) or bool(status["unrecorded"])
            return result
        with conn.cursor() as cur:
            if status["unrecorded"]:
                result["adopted"] = _adopt_unrecorded(cur, status, files, schema)
        conn.commit()
        if plan:
            if engine == "sql":
                done = _run_sql_engine(
                    conn, plan, direction=direction, schema=schema, single_transaction=single_transaction
                )
            else:
                if binary is None:  # found above for this engine
                    raise PgShiftError("node-pg-migrate was not found")
                done, command = _run_node_engine(
                    conn,
                    params,
                    plan,
                    direction=direction,
                    folder=folder,
                    schema=schema,
                    single_transaction=single_transaction,
                    check_order=check_order and not (accept_changed and status["missing"]),
                    ignore_pattern=ignore_pattern,
                    binary=binary,
                    timeout=node_timeout,
                )
                result["command"] = command
            result["applied" if direction == "up" else "reverted"] = done
        result["changed"] = bool(plan) or bool(result["adopted"])
        with conn.cursor() as cur:
            after = read_status(cur, files, schema)
        conn.commit()
        result["after"] = {k: after[k] for k in ("applied", "pending", "missing", "modified", "out_of_order")}
        return result
    except psycopg2.Error as exc:
        raise db_error(exc, "migrating %s" % params.describe()) from None
    finally:
        if locked:
            release_lock(conn, NODE_PG_MIGRATE_LOCK_ID)
        conn.close()
