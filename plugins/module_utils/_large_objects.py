# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""Large objects: carried with their OIDs, owners, ACLs and comments, and fingerprinted from the catalogs.

Large objects live outside every table (``pg_largeobject_metadata`` for the object, ``pg_largeobject`` for its data,
one row per page of ``LOBLKSIZE`` = ``block_size / 4`` bytes), so a table copy never carries them: a column of type
``oid`` that references one would point at nothing in the new database.

The copy (:func:`copy_large_objects`) reads the source inside the copy's exported snapshot through two server-side
cursors, the objects in OID order and their pages in ``(loid, pageno)`` order, merged as they stream: the controller
never holds more than one write batch (about 1 MiB) of data. On the target every object is created with its OID
(``lo_create(oid)``), its pages written where they were (``lo_put(oid, pageno * LOBLKSIZE, data)``, contiguous pages
joined into one call, batches through ``VALUES``), its owner set, its ACL rebuilt item by item (each grant made by
its grantor) and its comment set. A few hundred objects are committed at a time: every ``ALTER``/``GRANT``/
``COMMENT`` on a large object takes a lock that lasts until commit, and one transaction for millions of objects would
run out of lock slots.

The fingerprint (:func:`fingerprint`, algorithm :data:`ALGORITHM`) is computed on each side from the catalogs, never
from what the copy saw: the number of objects and two order-independent sums (``numeric``, like the table checksums
of ``_checksums``) of 64-bit hashes per object:

- ``content_checksum``: per object, ``hashtextextended(ROW(oid, size, comment))`` plus, per page, the hash of
  ``oid:pageno:md5(page)``. Pages are hashed in a canonical form so that two equal contents stored differently hash
  the same (a restore by ``pg_restore`` writes sequentially and fills holes with zero pages): a page is padded with
  zeros to ``LOBLKSIZE`` and an all-zero page counts as absent; the size (end of the last page) is in the object's
  hash.
- ``checksum``: ``content_checksum`` plus, per object, the hash of ``ROW(oid, owner name, sorted ACL items)``.

On a mismatch, :func:`differences` walks both sides' per-object hashes in OID order (server-side cursors, merged) and
names the objects that are missing, extra or changed.
"""

from __future__ import annotations

import contextlib
import time
import typing as t

from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError

try:
    import psycopg2
    import psycopg2.extras
    from psycopg2 import sql
except ImportError:  # pragma: no cover - reported by _connection.connect
    pass

ALGORITHM = "lo-pages-v1"
ALGORITHMS = (ALGORITHM,)
WRITE_BATCH_BYTES = 1 << 20
OBJECTS_PER_TRANSACTION = 500
FETCH_PAGES = 256
FETCH_OBJECTS = 1000
MAX_NAMED = 20

LogFn = t.Callable[[str], None]


class Grant(t.NamedTuple):
    grantor: str
    grantee: t.Optional[str]  # None: PUBLIC
    privilege: str
    grantable: bool


class LargeObject(t.NamedTuple):
    oid: int
    owner: str
    acl: t.Optional[t.List[Grant]]  # None: the default ACL (lomacl IS NULL)
    acl_text: t.Optional[str]
    comment: t.Optional[str]


_LIST_SQL = """
SELECT m.oid::bigint, pg_get_userbyid(m.lomowner),
       (SELECT json_agg(json_build_array(pg_get_userbyid(a.grantor),
                                         CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END,
                                         a.privilege_type, a.is_grantable) ORDER BY a.n)
          FROM aclexplode(m.lomacl) WITH ORDINALITY AS a(grantor, grantee, privilege_type, is_grantable, n)),
       m.lomacl::text, d.description
FROM pg_largeobject_metadata m
LEFT JOIN pg_description d ON d.classoid = 'pg_largeobject'::regclass AND d.objoid = m.oid AND d.objsubid = 0
ORDER BY m.oid
"""

_PAGES_SQL = "SELECT loid::bigint, pageno, data FROM pg_largeobject ORDER BY loid, pageno"


def page_size(conn: t.Any) -> int:
    """``LOBLKSIZE`` of a server: a quarter of its block size."""
    with conn.cursor() as cur:
        cur.execute("SELECT current_setting('block_size')::int / 4")
        return int(cur.fetchone()[0])


def count(conn: t.Any) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_largeobject_metadata")
        return int(cur.fetchone()[0])


def _row_to_object(row: t.Sequence[t.Any]) -> LargeObject:
    acl = None
    if row[3] is not None:
        acl = [Grant(str(g[0]), None if g[1] is None else str(g[1]), str(g[2]), bool(g[3])) for g in (row[2] or [])]
    return LargeObject(int(row[0]), str(row[1]), acl, row[3], row[4])


def list_objects(conn: t.Any, name: str = "pgshift_lo_list") -> t.Iterator[LargeObject]:
    """Every large object of ``conn``'s database in OID order, streamed through a server-side cursor.

    ``conn`` must be in a transaction (a named cursor lives in one): the copy's snapshot transaction on the source.
    """
    with conn.cursor(name=name) as cur:
        cur.itersize = FETCH_OBJECTS
        cur.execute(_LIST_SQL)
        for row in cur:
            yield _row_to_object(row)


def _pages(conn: t.Any, name: str = "pgshift_lo_pages") -> t.Iterator[t.Tuple[int, int, bytes]]:
    with conn.cursor(name=name) as cur:
        cur.itersize = FETCH_PAGES
        cur.execute(_PAGES_SQL)
        for loid, pageno, data in cur:
            yield int(loid), int(pageno), bytes(data)


# ------------------------------------------------------------------------------------------------ the copy
def _acl_statements(lo: LargeObject) -> t.List[t.Tuple["sql.Composable", t.List[t.Any]]]:
    """Statements that make the target's ACL of ``lo`` what the source's is (nothing for the default ACL).

    ``REVOKE ALL .. FROM owner`` turns the default ACL into an empty one; then one GRANT per ACL item, in the
    source's order, each issued as its grantor (a superuser's GRANT is recorded as the owner's, so grants by other
    roles run under ``SET ROLE``).
    """
    if lo.acl is None:
        return []
    oid = sql.Literal(lo.oid)
    out: t.List[t.Tuple["sql.Composable", t.List[t.Any]]] = [
        (sql.SQL("REVOKE ALL ON LARGE OBJECT {} FROM {}").format(oid, sql.Identifier(lo.owner)), [])
    ]
    # One aclitem per (grantor, grantee); within it, privileges with and without grant option.
    groups: t.Dict[t.Tuple[str, t.Optional[str], bool], t.List[str]] = {}
    for g in lo.acl:
        groups.setdefault((g.grantor, g.grantee, g.grantable), []).append(g.privilege)
    for (grantor, grantee, grantable), privileges in groups.items():
        target = sql.SQL("PUBLIC") if grantee is None else sql.Identifier(grantee)
        grant = sql.SQL("GRANT {} ON LARGE OBJECT {} TO {}{}").format(
            sql.SQL(", ").join(sql.SQL(p) for p in privileges if p in ("SELECT", "UPDATE")),
            oid,
            target,
            sql.SQL(" WITH GRANT OPTION") if grantable else sql.SQL(""),
        )
        if grantor == lo.owner:
            out.append((grant, []))
        else:
            out.append((sql.SQL("SET ROLE {}").format(sql.Identifier(grantor)), []))
            out.append((grant, []))
            out.append((sql.SQL("RESET ROLE"), []))
    return out


def object_statements(lo: LargeObject) -> t.List[t.Tuple["sql.Composable", t.List[t.Any]]]:
    """Create ``lo`` on the target with its OID, owner, ACL and comment (its data is written apart)."""
    out: t.List[t.Tuple["sql.Composable", t.List[t.Any]]] = [
        (sql.SQL("SELECT lo_create(%s::oid)"), [lo.oid]),
        (sql.SQL("ALTER LARGE OBJECT {} OWNER TO {}").format(sql.Literal(lo.oid), sql.Identifier(lo.owner)), []),
    ]
    out += _acl_statements(lo)
    if lo.comment is not None:
        out.append((sql.SQL("COMMENT ON LARGE OBJECT %s IS %s"), [lo.oid, lo.comment]))
    return out


class _Writer:
    """Page writes to the target, joined where contiguous, sent in batches of about WRITE_BATCH_BYTES."""

    def __init__(self, conn: t.Any, lobsize: int) -> None:
        self.conn = conn
        self.lobsize = lobsize
        self.segments: t.List[t.List[t.Any]] = []  # [oid, offset, bytearray]
        self.pending = 0
        self.bytes = 0

    def add(self, oid: int, pageno: int, data: bytes) -> None:
        offset = pageno * self.lobsize
        last = self.segments[-1] if self.segments else None
        if last is not None and last[0] == oid and last[1] + len(last[2]) == offset:
            last[2] += data
        else:
            self.segments.append([oid, offset, bytearray(data)])
        self.pending += len(data)
        self.bytes += len(data)
        if self.pending >= WRITE_BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self.segments:
            return
        with self.conn.cursor() as cur:
            psycopg2.extras.execute_values(
                cur,
                "SELECT lo_put(v.o, v.off, v.d) FROM (VALUES %s) AS v(o, off, d)",
                [(s[0], s[1], psycopg2.Binary(bytes(s[2]))) for s in self.segments],
                template="(%s::oid, %s::bigint, %s::bytea)",
                page_size=len(self.segments),
            )
        self.segments = []
        self.pending = 0


def clear_target(conn: t.Any) -> int:
    """Unlink every large object the target already holds (its contents are replaced, as TRUNCATE does for tables),
    a batch per transaction."""
    removed = 0
    while True:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(lo_unlink(s.oid)) FROM (SELECT oid FROM pg_largeobject_metadata ORDER BY oid LIMIT %s) s",
                (OBJECTS_PER_TRANSACTION,),
            )
            done = int(cur.fetchone()[0])
        conn.commit()
        removed += done
        if done < OBJECTS_PER_TRANSACTION:
            return removed


def copy_large_objects(
    src_conn: t.Any,
    tgt_conn: t.Any,
    stop: t.Optional[t.Callable[[], bool]] = None,
    log: t.Optional[LogFn] = None,
) -> t.Dict[str, t.Any]:
    """Copy every large object of the source (``src_conn`` already in the snapshot transaction) into the target.

    ``tgt_conn`` must not be in autocommit mode: objects are committed OBJECTS_PER_TRANSACTION at a time. Returns
    ``{count, bytes, seconds, removed_from_target}``; raises PgShiftError naming the object that failed.
    """
    say = log or (lambda _msg: None)
    started = time.monotonic()
    if tgt_conn.autocommit:
        tgt_conn.autocommit = False
    lobsize = page_size(src_conn)
    if page_size(tgt_conn) != lobsize:
        raise PgShiftError(
            "large objects cannot be copied page by page between servers of different block sizes (%d and %d bytes)"
            % (lobsize * 4, page_size(tgt_conn) * 4)
        )
    current: t.Optional[int] = None
    copied = 0
    try:
        removed = clear_target(tgt_conn)
        writer = _Writer(tgt_conn, lobsize)
        pages = _pages(src_conn)
        page = next(pages, None)
        in_batch = 0
        for lo in list_objects(src_conn):
            if stop is not None and stop():
                raise PgShiftError("copy of large objects was stopped because a table copy failed")
            current = lo.oid
            with tgt_conn.cursor() as cur:
                # one round trip per object: each statement bound on its own (values as driver parameters)
                cur.execute(
                    b"; ".join(
                        cur.mogrify(statement, params) if params else statement.as_string(cur).encode("utf-8")
                        for statement, params in object_statements(lo)
                    )
                )
            while page is not None and page[0] < lo.oid:  # pragma: no cover - a snapshot never shows orphan pages
                page = next(pages, None)
            while page is not None and page[0] == lo.oid:
                writer.add(*page)
                page = next(pages, None)
            copied += 1
            in_batch += 1
            if in_batch >= OBJECTS_PER_TRANSACTION:
                writer.flush()
                tgt_conn.commit()
                in_batch = 0
        writer.flush()
        tgt_conn.commit()
    except psycopg2.Error as exc:
        with contextlib.suppress(psycopg2.Error):
            tgt_conn.rollback()
        primary = getattr(getattr(exc, "diag", None), "message_primary", None) or str(exc).strip().splitlines()[0]
        raise PgShiftError(
            "copy of large objects failed at large object %s: %s (%d copied before it)" % (current, primary, copied),
            sqlstate=getattr(exc, "pgcode", None),
            large_object=current,
        ) from None
    seconds = round(time.monotonic() - started, 3)
    say("data_copy: %d large objects, %d bytes, %.2f s" % (copied, writer.bytes, seconds))
    return {"count": copied, "bytes": writer.bytes, "seconds": seconds, "removed_from_target": removed}


# ------------------------------------------------------------------------------------------------ fingerprint
_PER_OBJECT_SQL = """
WITH z AS (
  SELECT current_setting('block_size')::int / 4 AS size
), zero AS (
  SELECT size, decode(repeat('00', size), 'hex') AS bytes FROM z
), pages AS (
  SELECT p.loid,
         max(p.pageno::bigint * zero.size + length(p.data)) AS size,
         sum(hashtextextended(p.loid::text || ':' || p.pageno::text || ':' || md5(p.padded), 0)::numeric)
           FILTER (WHERE p.padded <> zero.bytes) AS data_sum
  FROM (SELECT lp.loid, lp.pageno, lp.data,
               CASE WHEN length(lp.data) < zero.size
                    THEN lp.data || substring(zero.bytes FROM 1 FOR zero.size - length(lp.data))
                    ELSE lp.data END AS padded
        FROM pg_largeobject lp CROSS JOIN zero) p
  CROSS JOIN zero
  GROUP BY p.loid
), objects AS (
  SELECT m.oid AS loid,
         hashtextextended(ROW(m.oid, coalesce(pages.size, 0), d.description)::text, 1)::numeric
           + coalesce(pages.data_sum, 0) AS content,
         hashtextextended(ROW(m.oid, pg_get_userbyid(m.lomowner),
                              (SELECT array_agg(a ORDER BY a) FROM unnest(m.lomacl::text[]) AS a))::text,
                          2)::numeric AS access
  FROM pg_largeobject_metadata m
  LEFT JOIN pages ON pages.loid = m.oid
  LEFT JOIN pg_description d ON d.classoid = 'pg_largeobject'::regclass AND d.objoid = m.oid AND d.objsubid = 0
)
"""
_FINGERPRINT_TAIL = (
    "SELECT count(*), coalesce(sum(content), 0)::text, coalesce(sum(content + access), 0)::text FROM objects"
)
_EACH_OBJECT_TAIL = "SELECT loid::bigint, content::text, access::text FROM objects ORDER BY loid"


def check_algorithm(algorithm: t.Optional[str]) -> str:
    if algorithm not in ALGORITHMS:
        raise PgShiftError(
            "large object fingerprint algorithm %r is not known to this version of pgshift (it knows %s)"
            % (algorithm, ", ".join(ALGORITHMS)),
            large_objects_algorithm=algorithm,
        )
    return str(algorithm)


def fingerprint(conn: t.Any) -> t.Dict[str, t.Any]:
    """``{algorithm, count, content_checksum, checksum}`` of every large object, read in ``conn``'s transaction."""
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL(_PER_OBJECT_SQL) + sql.SQL(_FINGERPRINT_TAIL))
            n, content, full = cur.fetchone()
    except psycopg2.Error as exc:
        raise PgShiftError(
            "fingerprint of the large objects failed: %s" % str(exc).strip().splitlines()[0],
            sqlstate=getattr(exc, "pgcode", None),
        ) from None
    return {"algorithm": ALGORITHM, "count": int(n), "content_checksum": str(content), "checksum": str(full)}


def _per_object(conn: t.Any, name: str) -> t.Iterator[t.Tuple[int, str, str]]:
    with conn.cursor(name=name) as cur:
        cur.itersize = FETCH_OBJECTS
        cur.execute(sql.SQL(_PER_OBJECT_SQL) + sql.SQL(_EACH_OBJECT_TAIL))
        for loid, content, access in cur:
            yield int(loid), str(content), str(access)


def differences(src_conn: t.Any, tgt_conn: t.Any, limit: int = MAX_NAMED) -> t.Dict[str, t.Any]:
    """The large objects that differ between two sides, merged in OID order (both connections in a transaction).

    Returns ``{missing_in_target, only_in_target, changed, total}``: up to ``limit`` OIDs each (``changed`` entries
    say whether the data/comment or the owner/ACL differ) and the number of differing objects in all.
    """
    out: t.Dict[str, t.Any] = {"missing_in_target": [], "only_in_target": [], "changed": [], "total": 0}

    def note(kind: str, value: t.Any) -> None:
        out["total"] += 1
        if len(out[kind]) < limit:
            out[kind].append(value)

    a_iter = _per_object(src_conn, "pgshift_lo_diff_source")
    b_iter = _per_object(tgt_conn, "pgshift_lo_diff_target")
    a = next(a_iter, None)
    b = next(b_iter, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            note("missing_in_target", a[0])  # type: ignore[index]
            a = next(a_iter, None)
        elif a is None or b[0] < a[0]:
            note("only_in_target", b[0])
            b = next(b_iter, None)
        else:
            what = []
            if a[1] != b[1]:
                what.append("data or comment")
            if a[2] != b[2]:
                what.append("owner or ACL")
            if what:
                note("changed", {"oid": a[0], "difference": " and ".join(what)})
            a = next(a_iter, None)
            b = next(b_iter, None)
    return out


def describe_differences(diff: t.Mapping[str, t.Any]) -> str:
    parts = []
    if diff.get("missing_in_target"):
        parts.append("missing in target: %s" % ", ".join(str(o) for o in diff["missing_in_target"]))
    if diff.get("only_in_target"):
        parts.append("only in target: %s" % ", ".join(str(o) for o in diff["only_in_target"]))
    if diff.get("changed"):
        parts.append("changed: %s" % ", ".join("%s (%s)" % (c["oid"], c["difference"]) for c in diff["changed"]))
    shown = sum(len(diff.get(k) or []) for k in ("missing_in_target", "only_in_target", "changed"))
    more = int(diff.get("total") or 0) - shown
    return "; ".join(parts) + (" (and %d more)" % more if more > 0 else "")


def compare_fingerprints(
    expected: t.Mapping[str, t.Any], actual: t.Mapping[str, t.Any], with_access: bool = True
) -> t.Optional[str]:
    """Why two fingerprints differ (None when they match). Without ``with_access`` owners and ACLs are left out
    (a restore with ``--no-owner --no-acl``)."""
    check_algorithm(expected.get("algorithm"))
    if int(expected["count"]) != int(actual["count"]):
        return "%s large objects, the expected number is %s" % (actual["count"], expected["count"])
    if str(expected["content_checksum"]) != str(actual["content_checksum"]):
        return "the large objects' data or comments differ (checksum %s, expected %s)" % (
            actual["content_checksum"],
            expected["content_checksum"],
        )
    if with_access and str(expected["checksum"]) != str(actual["checksum"]):
        return "the large objects' owners or ACLs differ (checksum %s, expected %s)" % (
            actual["checksum"],
            expected["checksum"],
        )
    return None
