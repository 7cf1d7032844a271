# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""Dangerous operations in SQL migrations: pgshift's own rules on pglast (the server's grammar), plus squawk.

Rules look at the up section of each ``.sql`` migration; down sections are only parsed and checked for
``CONCURRENTLY``. A table is "existing" when the migration did not create it itself (it may hold rows in production).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import typing as t

from ansible_collections.pgshift.ops.plugins.module_utils._migration_files import MigrationFile

try:
    import pglast
    from pglast import ast, enums

    HAS_PGLAST = True
except ImportError:  # pragma: no cover - depends on the host
    HAS_PGLAST = False

ERROR = "error"
WARNING = "warning"

# squawk rules that pgshift's own rules already cover (reported once, by pgshift), and the ones that are style,
# not danger
SQUAWK_EXCLUDED = (
    "require-concurrent-index-creation",
    "require-concurrent-index-deletion",
    "require-lock-timeout",
    "require-statement-timeout",
    "adding-required-field",
    "adding-not-nullable-field",
    "changing-column-type",
    "ban-drop-column",
    "ban-drop-table",
    "ban-concurrent-index-creation-in-transaction",
    "prefer-robust-stmts",
    "prefer-bigint-over-int",
    "prefer-bigint-over-smallint",
    "prefer-identity",
    "prefer-text-field",
    "prefer-timestamptz",
    "ban-char-field",
    "transaction-nesting",
)

# type changes that never rewrite the table
_NO_REWRITE_TARGETS = {"text", "varchar", "citext"}


def _finding(
    severity: str, rule: str, m: MigrationFile, line: int, statement: str, message: str, source: str = "pgshift"
) -> t.Dict[str, t.Any]:
    return {
        "severity": severity,
        "rule": rule,
        "migration": m.name,
        "file": m.filename,
        "line": line,
        "statement": statement,
        "message": message,
        "source": source,
    }


def _skip_noise(text: str, pos: int) -> int:
    """First position at or after ``pos`` that is not whitespace or a comment."""
    n = len(text)
    while pos < n:
        if text[pos].isspace():
            pos += 1
        elif text.startswith("--", pos):
            end = text.find("\n", pos)
            pos = n if end < 0 else end + 1
        elif text.startswith("/*", pos):
            end = text.find("*/", pos + 2)
            pos = n if end < 0 else end + 2
        else:
            break
    return pos


def _statements(body: str) -> t.List[t.Tuple[t.Any, int, str]]:
    """(node, offset in body, text) of each statement; raises pglast.parser.ParseError."""
    out = []
    for raw in pglast.parse_sql(body):
        # pglast reports character offsets; stmt_len 0 means "to the end"
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(body)
        real = _skip_noise(body, start)
        out.append((raw.stmt, real, body[real:end].strip()))
    return out


def _short(statement: str, limit: int = 200) -> str:
    one = " ".join(statement.split())
    return one if len(one) <= limit else one[: limit - 3] + "..."


def _relname(rangevar: t.Any) -> str:
    return str(getattr(rangevar, "relname", "") or "").lower()


def _type_name(type_name: t.Any) -> str:
    names = [getattr(n, "sval", "") for n in (getattr(type_name, "names", None) or ())]
    return (names[-1] if names else "").lower()


def _lock_timeout_set(node: t.Any) -> bool:
    if not isinstance(node, ast.VariableSetStmt) or (node.name or "").lower() != "lock_timeout":
        return False
    for arg in node.args or ():
        val = getattr(arg, "val", None)
        value = getattr(val, "ival", None)
        if value is None:
            value = getattr(val, "sval", None)
        if value not in (0, "0", None):
            return True
    return False


def _target_relation(node: t.Any) -> t.Optional[str]:
    if isinstance(node, (ast.AlterTableStmt, ast.IndexStmt)) and node.relation is not None:
        return _relname(node.relation)
    if isinstance(node, ast.CreateTrigStmt) and node.relation is not None:
        return _relname(node.relation)
    if isinstance(node, ast.CommentStmt):
        return None
    return None


def lint_sql_migration(
    m: MigrationFile, parts: t.Dict[str, t.Any]
) -> t.Tuple[t.List[t.Dict[str, t.Any]], t.List[t.Tuple[int, int]]]:
    """Findings for one .sql migration, and the line spans of up statements that only touch objects it created.

    Those spans are where squawk's findings are left out: squawk does not know that a table created earlier in the same
    migration is new and empty.
    """
    findings: t.List[t.Dict[str, t.Any]] = []
    created: t.Set[str] = set()
    new_spans: t.List[t.Tuple[int, int]] = []
    for section in ("up", "down"):
        body = parts[section]
        if body is None:
            continue
        start_line = parts[section + "_line"]
        try:
            stmts = _statements(body)
        except pglast.parser.ParseError as exc:
            location = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else None
            line = start_line + (body[:location].count("\n") if location else 0)
            findings.append(
                _finding(ERROR, "syntax-error", m, line, "", "%s migration does not parse: %s" % (section, exc.args[0]))
            )
            continue
        lock_timeout = False
        warned_lock_timeout = False
        for node, offset, text in stmts:
            line = start_line + body[:offset].count("\n")
            stmt = _short(text)
            concurrent = (isinstance(node, (ast.IndexStmt, ast.DropStmt)) and node.concurrent) or (
                isinstance(node, ast.ReindexStmt)
                and any(getattr(p, "defname", "") == "concurrently" for p in (node.params or ()))
            )
            if concurrent:
                findings.append(
                    _finding(
                        ERROR,
                        "concurrently-in-transaction",
                        m,
                        line,
                        stmt,
                        "CONCURRENTLY cannot run inside a transaction block, and node-pg-migrate wraps every .sql "
                        "migration in one; use a JS migration with pgm.noTransaction(), or build the index without "
                        "CONCURRENTLY where the table is not live",
                    )
                )
            if section != "up":
                continue
            if _lock_timeout_set(node):
                lock_timeout = True
                continue
            end_line = line + text.count("\n")
            if isinstance(node, ast.CreateStmt) and node.relation is not None:
                created.add(_relname(node.relation))
                new_spans.append((line, end_line))
                continue
            if isinstance(node, ast.CreateTableAsStmt) and node.into is not None:
                created.add(_relname(node.into.rel))
                continue
            if isinstance(node, ast.CreateSeqStmt) and node.sequence is not None:
                created.add(_relname(node.sequence))
                continue
            if isinstance(node, ast.ViewStmt) and node.view is not None:
                created.add(_relname(node.view))
                continue
            target_rel = _target_relation(node)
            if target_rel is not None and target_rel in created:
                new_spans.append((line, end_line))
            locks_existing = False
            if isinstance(node, ast.IndexStmt) and _relname(node.relation) not in created:
                locks_existing = True
                if not node.concurrent:
                    findings.append(
                        _finding(
                            WARNING,
                            "index-without-concurrently",
                            m,
                            line,
                            stmt,
                            "CREATE INDEX on the existing table %s blocks its writes for the whole build; on a live "
                            "database build it CONCURRENTLY (in a JS migration with pgm.noTransaction())"
                            % _relname(node.relation),
                        )
                    )
            elif isinstance(node, ast.AlterTableStmt) and _relname(node.relation) not in created:
                table = _relname(node.relation)
                locks_existing = True
                for cmd in node.cmds or ():
                    subtype = cmd.subtype
                    if subtype == enums.AlterTableType.AT_AddColumn and cmd.def_ is not None:
                        contypes = {c.contype for c in (cmd.def_.constraints or ())}
                        if (
                            enums.ConstrType.CONSTR_NOTNULL in contypes
                            and enums.ConstrType.CONSTR_DEFAULT not in contypes
                            and enums.ConstrType.CONSTR_IDENTITY not in contypes
                            and enums.ConstrType.CONSTR_GENERATED not in contypes
                        ):
                            findings.append(
                                _finding(
                                    ERROR,
                                    "not-null-column-without-default",
                                    m,
                                    line,
                                    stmt,
                                    "ADD COLUMN %s NOT NULL without a DEFAULT fails on the existing table %s as soon "
                                    "as it holds a row; add a DEFAULT, or add the column nullable, backfill, then "
                                    "SET NOT NULL" % (cmd.def_.colname, table),
                                )
                            )
                    elif subtype == enums.AlterTableType.AT_SetNotNull:
                        findings.append(
                            _finding(
                                WARNING,
                                "set-not-null",
                                m,
                                line,
                                stmt,
                                "SET NOT NULL on %s.%s scans the whole table under an ACCESS EXCLUSIVE lock and "
                                "fails if any row is NULL; add a CHECK (%s IS NOT NULL) NOT VALID constraint, "
                                "VALIDATE it, then SET NOT NULL" % (table, cmd.name, cmd.name),
                            )
                        )
                    elif subtype == enums.AlterTableType.AT_AlterColumnType:
                        target = _type_name(cmd.def_.typeName) if cmd.def_ is not None else ""
                        typmod = getattr(getattr(cmd.def_, "typeName", None), "typmods", None)
                        if not (target in _NO_REWRITE_TARGETS and not typmod) or getattr(cmd.def_, "raw_default", None):
                            findings.append(
                                _finding(
                                    WARNING,
                                    "type-change-rewrite",
                                    m,
                                    line,
                                    stmt,
                                    "changing the type of %s.%s to %s may rewrite the whole table and its indexes "
                                    "under an ACCESS EXCLUSIVE lock" % (table, cmd.name, target or "a new type"),
                                )
                            )
                    elif subtype == enums.AlterTableType.AT_DropColumn:
                        findings.append(
                            _finding(
                                WARNING,
                                "drop-column",
                                m,
                                line,
                                stmt,
                                "dropping column %s.%s loses its data, and application code still reading it breaks"
                                % (table, cmd.name),
                            )
                        )
            elif isinstance(node, ast.DropStmt) and node.removeType == enums.ObjectType.OBJECT_TABLE:
                names = [".".join(getattr(p, "sval", "") for p in obj) for obj in node.objects or ()]
                existing = [n for n in names if n.split(".")[-1].lower() not in created]
                if existing:
                    locks_existing = True
                    findings.append(
                        _finding(
                            WARNING,
                            "drop-table",
                            m,
                            line,
                            stmt,
                            "dropping table(s) %s loses their data" % ", ".join(existing),
                        )
                    )
            if locks_existing and not lock_timeout and not warned_lock_timeout:
                warned_lock_timeout = True
                findings.append(
                    _finding(
                        WARNING,
                        "missing-lock-timeout",
                        m,
                        line,
                        stmt,
                        "this statement locks an existing table with no lock_timeout set before it: behind a long "
                        "transaction it queues every other query of that table; start the migration with "
                        "SET lock_timeout = '5s'",
                    )
                )
    return findings, new_spans


def find_squawk(configured: t.Optional[str] = None) -> t.Optional[str]:
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    beside = os.path.join(os.path.dirname(sys.executable), "squawk")
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which("squawk")


def squawk_findings(
    binary: str,
    m: MigrationFile,
    parts: t.Dict[str, t.Any],
    new_spans: t.Sequence[t.Tuple[int, int]] = (),
    pg_version: t.Optional[str] = None,
) -> t.List[t.Dict[str, t.Any]]:
    """squawk's findings on the up section of one .sql migration, as warnings (rules pgshift covers left out)."""
    argv = [binary, "--reporter", "json", "--exclude", ",".join(SQUAWK_EXCLUDED)]
    if pg_version:
        argv += ["--pg-version", pg_version]
    argv.append(m.path)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [_finding(WARNING, "squawk-failed", m, 1, "", "squawk could not run: %s" % exc, source="squawk")]
    try:
        items = json.loads(proc.stdout or "[]")
    except ValueError:
        return [
            _finding(
                WARNING,
                "squawk-failed",
                m,
                1,
                "",
                "squawk output unreadable: %s" % proc.stderr.strip()[:200],
                source="squawk",
            )
        ]
    up_first = parts["up_line"]
    down_first = parts["down_line"] if parts["down"] is not None and parts["down_line"] > up_first else None
    lines = m.read().splitlines()
    out = []
    for item in items:
        line = int(item.get("line", 0)) + 1  # squawk counts lines from 0
        if line < up_first or (down_first is not None and line >= down_first):
            continue
        if any(first <= line <= last for first, last in new_spans):
            continue
        text = lines[line - 1].strip() if 0 < line <= len(lines) else ""
        message = item.get("message", "")
        if item.get("help"):
            message += " " + item["help"]
        out.append(_finding(WARNING, item.get("rule_name", "squawk"), m, line, _short(text), message, source="squawk"))
    return out
