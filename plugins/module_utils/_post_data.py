# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""The post-data section of the dev schema archive, entry by entry: what ``data_copy`` builds during the copy.

``pg_restore -l`` lists the archive's table of contents (TOC), one entry a line: ``<dump id>; <catalog oid> <object
oid> <kind> <schema> <tag> <owner>``. The entries of kind ``INDEX``, ``CONSTRAINT`` (primary key, unique, exclusion),
``CHECK CONSTRAINT`` (NOT VALID checks) and ``FK CONSTRAINT`` of plain tables are the ones worth overlapping with the
copy: :func:`assign` ties each to its table (and an FK to its referenced table) through the dev database's catalogs,
by the object OIDs the TOC carries, and keeps an entry only when the catalog's names give back exactly the TOC's
schema and tag (a dev schema changed since the dump, a partition, a name with a space: left to the post-data step).

The overlapped entries are rendered once by ``pg_restore`` itself (``-L`` with only them uncommented, ``-f``, no
connection) and the script is cut at pg_restore's entry headers (:func:`render`; headers that do not give back
exactly the chosen entries mean nothing is built early); ``data_copy`` runs each table's part after pg_restore's own
session preamble, in one transaction, so an index built during the copy is the statement the post-data step would
have run. :func:`restore_remaining` (the post-data step) comments out the entries the new database already holds -
found in its own catalogs, by schema and name - and restores the rest with ``pg_restore -L``; when nothing was built
early it is exactly the ``pg_restore --section=post-data`` it always was.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
import typing as t

from ansible_collections.pgshift.ops.plugins.module_utils._clients import (
    check_client,
    find_client,
    run_client,
)
from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, connect, dbname_option
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError
from ansible_collections.pgshift.ops.plugins.module_utils._identity import table_key

PG_CLASS = 1259
PG_CONSTRAINT = 2606
# the kinds built during the copy, and the catalog their OID is in
OVERLAP_KINDS = {
    "INDEX": PG_CLASS,
    "CONSTRAINT": PG_CONSTRAINT,
    "CHECK CONSTRAINT": PG_CONSTRAINT,
    "FK CONSTRAINT": PG_CONSTRAINT,
}
_LINE_RE = re.compile(r"^(\d+); (\d+) (\d+) (FK CONSTRAINT|CHECK CONSTRAINT|CONSTRAINT|INDEX(?! ATTACH )) (.*)$")


class TocEntry(t.NamedTuple):
    dump_id: int
    catalog: int
    oid: int
    kind: str
    rest: str  # "<schema> <tag> <owner>", as pg_restore -l prints it
    line: str


class Build(t.NamedTuple):
    """One overlapped TOC entry: the table it is built on, and for an FK the table it references."""

    entry: TocEntry
    table: str
    references: t.Optional[str]


def read_toc(archive: str, pg_restore: str) -> t.Tuple[t.List[str], t.List[TocEntry]]:
    """``pg_restore -l`` of the archive: every line, and the entries of the overlap kinds (TOC order)."""
    proc = subprocess.run(  # noqa: S603 - argv list, no shell, no connection
        [pg_restore, "-l", archive],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise PgShiftError("listing the dev schema archive %s failed: %s" % (archive, proc.stderr.strip()[-500:]))
    lines = proc.stdout.splitlines()
    entries = []
    for line in lines:
        m = _LINE_RE.match(line)
        if m:
            entries.append(TocEntry(int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4), m.group(5), line))
    return lines, entries


_DEV_INDEXES_SQL = """
SELECT i.indexrelid, n.nspname, ic.relname, tn.nspname, t.relname, t.relkind::text, t.relispartition
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = ic.relnamespace
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace tn ON tn.oid = t.relnamespace
WHERE i.indexrelid = ANY(%s)
"""

_DEV_CONSTRAINTS_SQL = """
SELECT c.oid, n.nspname, c.conname, c.contype::text, c.conparentid <> 0, c.conindid,
       tn.nspname, t.relname, t.relkind::text, t.relispartition,
       fn.nspname, f.relname, f.relkind::text, f.relispartition
FROM pg_constraint c
JOIN pg_namespace n ON n.oid = c.connamespace
JOIN pg_class t ON t.oid = c.conrelid
JOIN pg_namespace tn ON tn.oid = t.relnamespace
LEFT JOIN pg_class f ON f.oid = c.confrelid
LEFT JOIN pg_namespace fn ON fn.oid = f.relnamespace
WHERE c.oid = ANY(%s)
"""

_KIND_CONTYPES = {"CONSTRAINT": ("p", "u", "x"), "CHECK CONSTRAINT": ("c",), "FK CONSTRAINT": ("f",)}


def _plain(*names: t.Optional[str]) -> bool:
    """Names that ``pg_restore -l`` prints unambiguously (no blank: the line is split at blanks)."""
    return all(n is not None and n != "" and not any(ch.isspace() for ch in n) for n in names)


class DevCatalog(t.NamedTuple):
    """The dev catalogs' rows for the TOC's OIDs: indexes and constraints, with their tables."""

    indexes: t.Dict[int, t.Tuple[t.Any, ...]]
    constraints: t.Dict[int, t.Tuple[t.Any, ...]]


def read_dev(dev_conn: t.Any, entries: t.Sequence[TocEntry]) -> DevCatalog:
    index_oids = [e.oid for e in entries if e.catalog == PG_CLASS]
    con_oids = [e.oid for e in entries if e.catalog == PG_CONSTRAINT]
    with dev_conn.cursor() as cur:
        cur.execute(_DEV_INDEXES_SQL, (index_oids,))
        indexes = {r[0]: r[1:] for r in cur.fetchall()}
        cur.execute(_DEV_CONSTRAINTS_SQL, (con_oids,))
        constraints = {r[0]: r[1:] for r in cur.fetchall()}
    return DevCatalog(indexes, constraints)


def assign(dev: DevCatalog, entries: t.Sequence[TocEntry], tables: t.Collection[str]) -> t.List[Build]:
    """The entries that can be built during the copy: on a plain table of ``tables`` (and, for an FK, referencing
    one), confirmed by the dev catalogs (OID -> the same schema and tag the TOC prints)."""
    indexes, constraints = dev.indexes, dev.constraints
    out: t.List[Build] = []
    early_indexes: t.Set[int] = set()  # dev OIDs of the indexes built early (an FK needs its referenced one)
    fks: t.List[t.Tuple[Build, int]] = []
    for e in entries:
        if e.catalog == PG_CLASS:
            row = indexes.get(e.oid)
            if row is None:
                continue
            schema, name, tschema, tname, relkind, ispart = row
            if relkind != "r" or ispart or not _plain(schema, name, tschema, tname):
                continue
            if not e.rest.startswith("%s %s " % (schema, name)):
                continue
            key = table_key(tschema, tname)
            if key in tables:
                out.append(Build(e, key, None))
                early_indexes.add(e.oid)
            continue
        crow = constraints.get(e.oid)
        if crow is None:
            continue
        schema, name, contype, inherited, indid, tschema, tname, relkind, ispart, fschema, fname, fkind, fpart = crow
        if contype not in _KIND_CONTYPES[e.kind] or inherited or relkind != "r" or ispart:
            continue
        if not _plain(schema, name, tschema, tname) or not e.rest.startswith("%s %s %s " % (schema, tname, name)):
            continue
        key = table_key(tschema, tname)
        if key not in tables:
            continue
        ref = None
        if contype == "f":
            if fkind != "r" or fpart or not _plain(fschema, fname):
                continue
            ref = table_key(fschema, fname)
            if ref not in tables:
                continue
            fks.append((Build(e, key, ref), int(indid)))
            continue
        out.append(Build(e, key, None))
        if indid:
            early_indexes.add(int(indid))
    # an FK is built early only when the unique index it references is too (else it waits for post-data)
    out.extend(b for b, indid in fks if indid in early_indexes)
    return out


def list_file(folder: str, lines: t.Sequence[str], keep: t.Collection[int]) -> str:
    """A ``-L`` list file (0600): the archive's TOC with every entry commented out but the dump ids in ``keep``."""
    fd, path = tempfile.mkstemp(prefix="toc-", suffix=".list", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        for line in lines:
            m = re.match(r"^(\d+);", line)
            if m and int(m.group(1)) not in keep:
                handle.write(";" + line + "\n")
            else:
                handle.write(line + "\n")
    return path


def restore_argv(pg_restore: str, target: ConnParams, archive: str, listing: t.Optional[str]) -> t.List[str]:
    argv = [pg_restore, "--section=post-data", "--exit-on-error", "--single-transaction"]
    if listing:
        argv.append("--use-list=" + listing)
    return argv + [dbname_option(target), archive]


_HEADER_RE = re.compile(r"^-- Name: (.*); Type: (.*); Schema: (.*); Owner: .*$")
_SESSION_SET_RE = re.compile(r"^SET default_(tablespace|table_access_method) = .*;$")


class Script(t.NamedTuple):
    """The DDL of the overlapped entries as ``pg_restore -f`` writes it: the session preamble (its SET commands),
    and per dump id the entry's statements, preceded by the tablespace / access method it is created in."""

    preamble: str
    statements: t.Dict[int, str]


def render_text(archive: str, pg_restore: str) -> str:
    """The post-data section as the script ``pg_restore -f`` writes (no connection)."""
    proc = subprocess.run(  # noqa: S603 - argv list, no shell, no connection
        [pg_restore, "--section=post-data", "--file=-", archive],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise PgShiftError("rendering the dev schema archive %s failed: %s" % (archive, proc.stderr.strip()[-500:]))
    return proc.stdout


def split_script(script: str, entries: t.Sequence[TocEntry]) -> t.Optional[Script]:
    """Cut pg_restore's post-data script at its entry headers and pair the headers of the overlap kinds with
    ``entries`` (the same kinds, TOC order: the order pg_restore writes them in). None when their number differs;
    an entry whose header does not name it exactly (kind, schema, tag; a name with a blank) gets no statement and
    is left to the post-data step."""
    text = script.splitlines()
    preamble: t.List[str] = []
    chunks: t.List[t.Tuple[t.Tuple[str, str, str], t.List[str]]] = []
    session: t.Dict[str, str] = {}
    current: t.Optional[t.List[str]] = None
    i = 0
    while i < len(text):
        line = text[i]
        m = _HEADER_RE.match(text[i + 1]) if line == "--" and i + 2 < len(text) and text[i + 2] == "--" else None
        if m:
            current = list(session.values())
            chunks.append(((m.group(2), m.group(3), m.group(1)), current))
            i += 3
            continue
        sm = _SESSION_SET_RE.match(line)
        if sm:
            session[sm.group(1)] = line
        elif line.startswith("\\restrict ") or line.startswith("\\unrestrict "):
            pass
        elif current is None:
            if line.startswith("SET client_encoding = ") and line != "SET client_encoding = 'UTF8';":
                return None  # read as UTF-8 here; an archive in another encoding is left to the post-data step
            if line.startswith("SET ") or line.startswith("SELECT pg_catalog.set_config("):
                preamble.append(line)
        else:
            current.append(line)
        i += 1
    chunks = [c for c in chunks if c[0][0] in OVERLAP_KINDS]
    if len(chunks) != len(entries) or "\ufffd" in script:
        return None
    statements: t.Dict[int, str] = {}
    for entry, ((kind, schema, tag), body) in zip(entries, chunks):
        if describe(entry) == "%s %s %s" % (kind, schema, tag) and _plain(schema, *tag.split(" ")):
            statements[entry.dump_id] = "\n".join(body).strip() + "\n"
    return Script("\n".join(preamble) + "\n", statements)


_TARGET_DONE_SQL = """
SELECT 'INDEX', n.nspname, c.relname, NULL
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('i', 'I') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%'
UNION ALL
SELECT CASE WHEN c.contype = 'f' THEN 'FK CONSTRAINT' WHEN c.contype = 'c' THEN 'CHECK CONSTRAINT'
            ELSE 'CONSTRAINT' END,
       n.nspname, r.relname, c.conname
FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid JOIN pg_namespace n ON n.oid = c.connamespace
WHERE (c.contype IN ('p', 'u', 'x', 'f') OR (c.contype = 'c' AND NOT c.convalidated))
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""


def built_keys(target: ConnParams) -> t.Set[str]:
    """``<kind> <schema> <name> `` (an index) or ``<kind> <schema> <table> <constraint> `` of every index and every
    key, foreign key and unvalidated check constraint the target holds (names without blanks only).

    Only names without blanks can have been built early (see :func:`split_script`); an unvalidated CHECK is one the
    post-data section adds (the pre-data section's checks are validated).
    """
    conn = connect(target, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(_TARGET_DONE_SQL)
            present = set()
            for kind, schema, rel, con in cur.fetchall():
                if not _plain(schema, rel) or (con is not None and not _plain(con)):
                    continue
                present.add(
                    "%s %s %s " % (kind, schema, rel) if con is None else "%s %s %s %s " % (kind, schema, rel, con)
                )
    finally:
        conn.close()
    return present


def already_built(present: t.Collection[str], entries: t.Sequence[TocEntry]) -> t.List[TocEntry]:
    """The entries ``present`` (:func:`built_keys`) holds, by schema and name."""
    done = []
    for e in entries:
        words = e.rest.split(" ")
        n = 2 if e.kind == "INDEX" else 3
        if len(words) > n and ("%s %s " % (e.kind, " ".join(words[:n]))) in present:
            done.append(e)
    return done


def restore_remaining(target: ConnParams, archive: str, min_major: int) -> t.Dict[str, t.Any]:
    """The post-data step: restore every post-data entry the target does not hold yet (all of them when the copy
    built nothing), in one transaction."""
    pg_restore, client_major = find_client("pg_restore", min_major)
    present = built_keys(target)
    done: t.List[TocEntry] = []
    lines: t.List[str] = []
    if present:  # else nothing was built early: the whole section, as it always was
        lines, entries = read_toc(archive, pg_restore)
        done = already_built(present, entries)
    listing = None
    with contextlib.ExitStack() as stack:
        if done:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="pgshift-toc-"))
            skip = {e.dump_id for e in done}
            keep = [
                int(m.group(1)) for m in (re.match(r"^(\d+);", ln) for ln in lines) if m and int(m.group(1)) not in skip
            ]
            listing = list_file(folder, lines, keep)
        result = run_client(restore_argv(pg_restore, target, archive, listing), target)
        check_client(result, "loading the dev schema (post-data) into %r" % target.database)
    return {
        "section": "post-data",
        "pg_restore": pg_restore,
        "client_major": client_major,
        "built_during_copy": [describe(e) for e in done],
    }


def describe(entry: TocEntry) -> str:
    """``INDEX public orders_customer_placed_idx`` (kind, schema and tag: the owner left out)."""
    words = entry.rest.split(" ")
    n = 2 if entry.kind == "INDEX" else 3
    return "%s %s" % (entry.kind, " ".join(words[:n]))
