# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""Read a node-pg-migrate migrations folder exactly as node-pg-migrate reads it.

- every regular file whose whole name does not match the ignore pattern (default ``\\..*``) is a migration;
  subfolders are skipped;
- the migration's name is the file's basename without extension;
- order: numeric prefix first (a 17-digit prefix is a UTC ``YYYYMMDDhhmmssSSS`` timestamp), then the name with
  numeric collation; a file without a numeric prefix is an error;
- SQL files: ``-- Up Migration`` / ``-- Down Migration`` markers (``^\\s*--[\\s-]*(up|down)\\s+migration``,
  case-insensitive); without an up marker the whole file is the up migration (down marker included, as
  node-pg-migrate 9 does), and without a down marker there is no down.
"""

from __future__ import annotations

import calendar
import dataclasses
import hashlib
import os
import re
import typing as t

from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError

DEFAULT_IGNORE_PATTERN = r"\..*"
LEDGER_TABLE = "pgmigrations"
NODE_PG_MIGRATE_LOCK_ID = 7241865325823964

_PREFIX_RE = re.compile(r"^(\d+)")
_UP_RE = re.compile(r"^\s*--[\s-]*up\s+migration", re.IGNORECASE | re.MULTILINE)
_DOWN_RE = re.compile(r"^\s*--[\s-]*down\s+migration", re.IGNORECASE | re.MULTILINE)
_DIGITS_RE = re.compile(r"(\d+)")


@dataclasses.dataclass(frozen=True)
class MigrationFile:
    name: str
    filename: str
    path: str
    prefix: int
    sha256: str
    kind: str  # sql, js, ts, ...

    def read(self) -> str:
        with open(self.path, encoding="utf-8") as handle:
            return handle.read()

    def to_dict(self) -> t.Dict[str, t.Any]:
        return {"name": self.name, "file": self.filename, "sha256": self.sha256, "kind": self.kind}


def numeric_prefix(filename: str) -> int:
    match = _PREFIX_RE.match(filename)
    if not match:
        raise PgShiftError(
            "cannot determine numeric prefix for migration %r: node-pg-migrate names files "
            "<number>_<name>.<ext> (for example 1700000000000_add-users.sql); rename the file" % filename,
            file=filename,
        )
    digits = match.group(1)
    if len(digits) == 17:
        # node-pg-migrate reads a 17-digit prefix as a UTC timestamp YYYYMMDDhhmmssSSS
        try:
            parts = [int(digits[0:4]), int(digits[4:6]), int(digits[6:8]), int(digits[8:10]), int(digits[10:12])]
            seconds = calendar.timegm((parts[0], parts[1], parts[2], parts[3], parts[4], int(digits[12:14]), 0, 0, 0))
            return seconds * 1000 + int(digits[14:17])
        except (ValueError, OverflowError):
            return int(digits)
    return int(digits)


def _natural_key(name: str) -> t.List[t.Any]:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.lower()) for part in _DIGITS_RE.split(name) if part]


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def list_migrations(folder: str, ignore_pattern: str = DEFAULT_IGNORE_PATTERN) -> t.List[MigrationFile]:
    """The migrations of ``folder`` in node-pg-migrate's order."""
    if not os.path.isdir(folder):
        raise PgShiftError("migrations folder %r does not exist or is not a folder" % folder, path=folder)
    # node-pg-migrate wraps the pattern as new RegExp(`^${ignorePattern}$`): it must match the whole file name
    ignore = re.compile("^" + ignore_pattern + "$")
    files = []
    for entry in sorted(os.listdir(folder)):
        path = os.path.join(folder, entry)
        if ignore.match(entry) or not os.path.isfile(path):
            continue
        stem, ext = os.path.splitext(entry)
        files.append(
            MigrationFile(
                name=stem,
                filename=entry,
                path=path,
                prefix=numeric_prefix(entry),
                sha256=sha256_file(path),
                kind=ext.lstrip(".").lower() or "unknown",
            )
        )
    files.sort(key=lambda m: (m.prefix, _natural_key(m.name)))
    names = [m.name for m in files]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise PgShiftError(
            "two files share the migration name(s) %s (only the extension differs); keep one" % ", ".join(duplicates)
        )
    return files


def split_sql(content: str) -> t.Tuple[str, t.Optional[str]]:
    """Split a SQL migration into (up, down); down is None when the file has no down marker."""
    up_match = _UP_RE.search(content)
    down_match = _DOWN_RE.search(content)
    up_start = up_match.start() if up_match else -1
    down_start = down_match.start() if down_match else -1
    if up_start >= 0:
        up_sql = content[up_start : down_start if down_start > up_start else None]
    else:
        # node-pg-migrate 9 (src/sqlMigration.ts): without an up marker the WHOLE file is the up migration, even
        # when it has a down marker (the down part then runs on up too)
        up_sql = content
    down_sql: t.Optional[str] = None
    if down_start >= 0:
        down_sql = content[down_start : up_start if up_start > down_start else None]
    return up_sql, down_sql
