# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""The online release's change stream: production's changes since the bulk copy's snapshot, applied to the new
database through the release's mapping, while production serves.

1. :func:`eligibility` sorts the plan's tables: streamed (a primary key or a replica identity index whose columns the
   mapping carries), or carried in the window with the reason (no key; a mapping ``expression``, which the stream
   cannot evaluate without guessing). Large objects are not in logical decoding: always carried in the window.
2. :func:`open_stream` records the slot, the publication and the replication origin in the run journal BEFORE
   creating them (so that every way back finds them), creates the publication for the streamed tables and, over a
   replication connection, ``CREATE_REPLICATION_SLOT <slot> LOGICAL pgoutput (SNAPSHOT 'export')``. The returned
   :class:`Stream` keeps that connection idle: its snapshot stays importable for the bulk copy
   (``_data_copy.copy_data(snapshot=...)``) and the bulk part's proof (``_data_check.integrity_check(snapshot=...)``).
   Every change committed after the snapshot is in the slot, none before it.
3. :class:`Applier` decodes ``pgoutput`` (protocol 1) itself and applies each source transaction in one target
   transaction, through the same :class:`_data.TablePlan` the copy used (renamed tables and columns, values in their
   text form read by the target's input functions as the text COPY does, columns dev adds left to their defaults,
   accepted losses dropped). **Exactly once**: the target transaction also advances a replication origin to the source
   commit's LSN (``pg_replication_origin_xact_setup``, committed atomically with the rows); the slot is told
   (``flush_lsn``) only after that commit. A source transaction at or below the origin's LSN, which the slot resends
   after a crash between the target's commit and the feedback, is skipped. The keys every change touched are written
   in the same target transaction to ``pgshift_online.touched`` (dropped at cut-over).
4. Cut-over (:func:`cut_over`): with applications blocked, production's ``pg_current_wal_lsn()`` is the position the
   stream must reach (:meth:`Applier.catch_up`); sequences are set from production; the delta proof compares every
   touched key on both sides with the integrity check's row hashes (``_checksums``) and the row counts of every
   streamed table; then the slot, the publication, the origin and ``pgshift_online`` are dropped
   (:func:`drop_stream`, also called by the rollback from the journal's record).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import select
import struct
import time
import typing as t

from ansible_collections.pgshift.ops.plugins.module_utils import _checksums, _data
from ansible_collections.pgshift.ops.plugins.module_utils import _journal as journal
from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, connect, db_error
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError
from ansible_collections.pgshift.ops.plugins.module_utils._identity import table_key

try:
    import psycopg2
    import psycopg2.extras
    from psycopg2 import sql
except ImportError:  # pragma: no cover - reported by _connection.connect
    pass

STEP = "online_stream"
ORIGIN_FUNCTIONS = (
    "pg_replication_origin_create(text)",
    "pg_replication_origin_drop(text)",
    "pg_replication_origin_oid(text)",
    "pg_replication_origin_session_setup(text)",
    "pg_replication_origin_session_reset()",
    "pg_replication_origin_xact_setup(pg_lsn, timestamp with time zone)",
    "pg_replication_origin_progress(text, boolean)",
)
SCHEMA = "pgshift_online"
KEY_BATCH = 1000
LogFn = t.Callable[[str], None]


# ------------------------------------------------------------------------------------------------ names
def stream_name(run_id: str) -> str:
    """Slot, publication and origin name of a run: ``pgshift_`` and the run id in the characters a slot allows."""
    return ("pgshift_" + re.sub(r"[^a-z0-9_]", "_", run_id.lower()))[:63]


def lsn_int(lsn: t.Union[str, int]) -> int:
    if isinstance(lsn, int):
        return lsn
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def lsn_text(value: int) -> str:
    return "%X/%X" % (value >> 32, value & 0xFFFFFFFF)


# ------------------------------------------------------------------------------------------------ eligibility
@dataclasses.dataclass
class Eligibility:
    streamed: t.List[_data.TablePlan]
    # source key columns (source names) per streamed target table key
    keys: t.Dict[str, t.List[str]]
    in_window: t.Dict[str, str]
    large_objects: int

    def describe(self) -> t.Dict[str, t.Any]:
        return {
            "streamed": sorted(tp.key for tp in self.streamed),
            "in_window": dict(sorted(self.in_window.items())),
            "large_objects_in_window": self.large_objects,
        }


_IDENTITY_SQL = """
SELECT c.relreplident::text,
       (SELECT array_agg(a.attname::text ORDER BY k.n)
          FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE i.indrelid = c.oid
           AND CASE WHEN c.relreplident = 'i' THEN i.indisreplident ELSE i.indisprimary END)
FROM pg_class c WHERE c.oid = %s
"""


def eligibility(src_conn: t.Any, plan: _data.Plan) -> Eligibility:
    """Which carried tables the stream can carry (a key the mapping carries, no expression), which go in the window."""
    streamed: t.List[_data.TablePlan] = []
    keys: t.Dict[str, t.List[str]] = {}
    in_window: t.Dict[str, str] = {}
    with src_conn.cursor() as cur:
        for tp in plan.tables:
            if tp.source is None or tp.ledger or not tp.carried:
                continue
            exprs = [c.target.name for c in tp.carried if c.expression is not None]
            if exprs:
                in_window[tp.key] = (
                    "column %s is computed by a mapping expression, which a change stream cannot apply: the table is "
                    "carried in the window" % ", ".join(exprs)
                )
                continue
            cur.execute(_IDENTITY_SQL, (tp.source.oid,))
            ident, columns = cur.fetchone()
            if ident == "n" or not columns:
                in_window[tp.key] = (
                    "source table %s has no primary key or replica identity index (REPLICA IDENTITY %s): its "
                    "updates and deletes cannot be streamed; it is carried in the window (add a primary key to "
                    "stream it)" % (tp.source.key, {"d": "DEFAULT", "n": "NOTHING", "f": "FULL", "i": "INDEX"}[ident])
                )
                continue
            carried = {c.source.name for c in tp.carried if c.source is not None}
            missing = [c for c in columns if c not in carried]
            if missing:
                in_window[tp.key] = "key column %s of %s is not carried: the table is carried in the window" % (
                    ", ".join(missing),
                    tp.source.key,
                )
                continue
            if tp.source.partitioned:
                cur.execute(
                    "SELECT count(*) FROM pg_partition_tree(%s) p JOIN pg_class l ON l.oid = p.relid "
                    "WHERE p.isleaf AND (l.relreplident = 'n' OR (l.relreplident = 'd' AND NOT EXISTS "
                    "(SELECT 1 FROM pg_index i WHERE i.indrelid = l.oid AND i.indisprimary)))",
                    (tp.source.oid,),
                )
                if int(cur.fetchone()[0]):
                    in_window[tp.key] = "a partition of %s has no primary key: carried in the window" % tp.source.key
                    continue
            streamed.append(tp)
            keys[tp.key] = list(columns)
        cur.execute("SELECT count(*) FROM pg_largeobject_metadata")
        large_objects = int(cur.fetchone()[0])
    src_conn.rollback()
    return Eligibility(streamed, keys, in_window, large_objects)


def server_readiness(src_conn: t.Any) -> t.Dict[str, t.Any]:
    """What production's server offers a change stream: wal_level, free slots and WAL senders, the REPLICATION
    attribute, a superuser to apply it. ``reasons`` says, for each thing missing, what to change."""
    with src_conn.cursor() as cur:
        cur.execute(
            "SELECT current_setting('wal_level'), current_setting('max_replication_slots')::int, "
            "(SELECT count(*) FROM pg_replication_slots)::int, current_setting('max_wal_senders')::int, "
            "(SELECT count(*) FROM pg_stat_replication)::int, "
            "(SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user), "
            "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"
        )
        wal_level, max_slots, slots, max_senders, senders, replication, superuser = cur.fetchone()
    src_conn.rollback()
    reasons = []
    if wal_level != "logical":
        reasons.append(
            "wal_level is %s: set wal_level = logical in postgresql.conf (ALTER SYSTEM SET wal_level = logical) and "
            "restart the server (managed services: rds.logical_replication = 1 or the provider's equivalent)"
            % wal_level
        )
    if slots >= max_slots:
        reasons.append(
            "no free replication slot (%d of max_replication_slots = %d in use): raise it (restart)"
            % (slots, max_slots)
        )
    if senders >= max_senders:
        reasons.append(
            "no free WAL sender (%d of max_wal_senders = %d in use): raise it (restart)" % (senders, max_senders)
        )
    if not replication:
        reasons.append("the connecting role has neither REPLICATION nor SUPERUSER: ALTER ROLE ... REPLICATION")
    if not superuser:
        reasons.append(
            "the connecting role is not a superuser: the apply sets session_replication_role (production's triggers "
            "and foreign keys already ran) and records its position with the replication origin functions in the new "
            "database, which PostgreSQL keeps to superusers unless granted in that very database; connect as a "
            "superuser (on a managed service, its admin role where it may do both) or release offline"
        )
    return {
        "wal_level": wal_level,
        "replication_slots": {"used": slots, "max": max_slots},
        "wal_senders": {"used": senders, "max": max_senders},
        "replication_role": bool(replication),
        "superuser": bool(superuser),
        "reasons": reasons,
    }


# ------------------------------------------------------------------------------------------------ the stream
def replication_connect(params: ConnParams, application_name: str = "pgshift online stream") -> t.Any:
    """A logical replication connection (walsender) to ``params``' database, with the pinned session settings (they
    fix the text form pgoutput sends)."""
    try:
        return psycopg2.connect(
            connection_factory=psycopg2.extras.LogicalReplicationConnection,
            **params.libpq_kwargs(application_name=application_name),
        )
    except psycopg2.Error as exc:
        raise db_error(exc, "opening a replication connection to %s" % params.describe()) from None


@dataclasses.dataclass
class Stream:
    slot: str
    publication: str
    origin: str
    consistent_point: str
    snapshot: str
    conn: t.Any  # the replication connection: idle until the snapshot is no longer needed

    def describe(self) -> t.Dict[str, t.Any]:
        return {
            "slot": self.slot,
            "publication": self.publication,
            "origin": self.origin,
            "consistent_point": self.consistent_point,
            "snapshot": self.snapshot,
        }


def record(cluster: ConnParams, journal_db: str, run_id: str, state: str, detail: t.Dict[str, t.Any]) -> None:
    conn = connect(journal.journal_params(cluster, journal_db), retry_seconds=journal.RETRY_SECONDS)
    try:
        with conn.cursor() as cur:
            journal.record_step(cur, run_id, STEP, state, detail)
        conn.commit()
    finally:
        conn.close()


def open_stream(
    source: ConnParams,
    eligible: Eligibility,
    run_id: str,
    target_database: str,
    journal_db: str = journal.DEFAULT_JOURNAL_DB,
) -> Stream:
    """Journal, then publication, then the slot with its exported snapshot (see the module's docstring)."""
    name = stream_name(run_id)
    detail = {
        "slot": name,
        "publication": name,
        "origin": name,
        "database": source.database,
        "target_database": target_database,
    }
    record(source, journal_db, run_id, "started", detail)
    conn = connect(source, autocommit=True, application_name="pgshift online stream")
    try:
        with conn.cursor() as cur:
            tables = sql.SQL(", ").join(
                sql.SQL("ONLY {}").format(tp.source.ident)
                if tp.source and not tp.source.partitioned
                else t.cast(_data.Table, tp.source).ident
                for tp in eligible.streamed
            )
            if eligible.streamed:
                statement = sql.SQL(
                    "CREATE PUBLICATION {} FOR TABLE {} WITH (publish = {}, publish_via_partition_root = true)"
                ).format(sql.Identifier(name), tables, sql.Literal("insert, update, delete, truncate"))
            else:
                statement = sql.SQL("CREATE PUBLICATION {}").format(sql.Identifier(name))
            cur.execute(statement)
    except psycopg2.Error as exc:
        raise db_error(exc, "creating publication %s" % name) from None
    finally:
        conn.close()
    try:
        repl = replication_connect(source)
        try:
            with repl.cursor() as cur:
                cur.execute(
                    sql.SQL("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT 'export')")
                    .format(sql.Identifier(name))
                    .as_string(repl)
                )
                _slot, point, snapshot, _plugin = cur.fetchone()
        except psycopg2.Error as exc:
            repl.close()
            raise db_error(exc, "creating replication slot %s" % name) from None
    except PgShiftError:
        drop_stream(source, source.database, name)  # the publication made above (and a slot, if any)
        record(source, journal_db, run_id, "undone", {"reason": "the slot could not be created"})
        raise
    stream = Stream(name, name, name, str(point), str(snapshot), repl)
    record(source, journal_db, run_id, "done", stream.describe())
    return stream


def cut_over(
    source: ConnParams,
    target: ConnParams,
    applier: "Applier",
    stream: Stream,
    eligible: Eligibility,
    plan: _data.Plan,
    run_id: str,
    journal_db: str = journal.DEFAULT_JOURNAL_DB,
    timeout: float = 120.0,
    ledger_from: t.Optional[ConnParams] = None,
) -> t.Dict[str, t.Any]:
    """The window's part of the stream, applications blocked: reach production's current position, set the
    sequences, prove the delta; then (whatever happened) drop the slot, the publication, the origin and the touched
    keys. Raises PgShiftError when the proof fails (the result is in ``details``)."""
    from ansible_collections.pgshift.ops.plugins.module_utils._data_copy import set_sequences

    result: t.Dict[str, t.Any] = {}
    try:
        until = current_lsn(source)
        started = time.monotonic()
        result["final_lsn"] = lsn_text(until)
        result["stream"] = applier.run(until_lsn=until, timeout=timeout)
        result["catch_up_seconds"] = round(time.monotonic() - started, 3)
        with contextlib.ExitStack() as stack:
            src = stack.enter_context(contextlib.closing(connect(source, application_name="pgshift online cut-over")))
            tgt = stack.enter_context(contextlib.closing(connect(target, application_name="pgshift online cut-over")))
            led = None
            if ledger_from is not None:
                led = stack.enter_context(contextlib.closing(connect(ledger_from, autocommit=True)))
            tgt.autocommit = True
            result["sequences"] = set_sequences(plan, src, tgt, led, check_mode=False)
            tgt.autocommit = False
            src.rollback()
            started = time.monotonic()
            algorithm = _checksums.algorithm_for(min(int(src.server_version), int(tgt.server_version)))
            result["delta_proof"] = delta_proof(src, tgt, eligible, algorithm)
            result["delta_proof"]["seconds"] = round(time.monotonic() - started, 3)
            tgt.rollback()
            src.rollback()
    except psycopg2.Error as exc:
        raise db_error(exc, "cutting over the change stream") from None
    finally:
        applier.close()
        with contextlib.suppress(Exception):
            stream.conn.close()
        with contextlib.closing(connect(target, application_name="pgshift online cut-over")) as tgt:
            drop_touched(tgt)
        dropped = drop_stream(source, source.database, stream.slot, target.database)
        record(source, journal_db, run_id, "undone", {"dropped": dropped})
        result["dropped"] = dropped
    if not result["delta_proof"]["ok"]:
        raise PgShiftError(
            "the delta proof failed: tables %s differ between production and the new database after the stream "
            "caught up" % ", ".join(result["delta_proof"]["mismatches"]),
            **result,
        )
    return result


# ------------------------------------------------------------------------------------------------ pgoutput
class _Buf:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> str:
        value = chr(self.data[self.pos])
        self.pos += 1
        return value

    def int8(self) -> int:
        value = self.data[self.pos]
        self.pos += 1
        return value

    def int16(self) -> int:
        (value,) = struct.unpack_from("!h", self.data, self.pos)
        self.pos += 2
        return int(value)

    def int32(self) -> int:
        (value,) = struct.unpack_from("!i", self.data, self.pos)
        self.pos += 4
        return int(value)

    def uint32(self) -> int:
        (value,) = struct.unpack_from("!I", self.data, self.pos)
        self.pos += 4
        return int(value)

    def int64(self) -> int:
        (value,) = struct.unpack_from("!q", self.data, self.pos)
        self.pos += 8
        return int(value)

    def string(self) -> str:
        end = self.data.index(b"\0", self.pos)
        value = self.data[self.pos : end].decode("utf-8")
        self.pos = end + 1
        return value

    def tuple(self) -> t.List[t.Tuple[str, t.Optional[str]]]:
        """TupleData: per column ('n', None) NULL, ('u', None) unchanged TOASTed value, ('t', text)."""
        out: t.List[t.Tuple[str, t.Optional[str]]] = []
        for _column in range(self.int16()):
            kind = self.byte()
            if kind == "t":
                size = self.int32()
                out.append(("t", self.data[self.pos : self.pos + size].decode("utf-8")))
                self.pos += size
            elif kind == "b":  # pragma: no cover - binary mode is never requested
                raise PgShiftError("pgoutput sent a binary value; the stream asks for text only")
            else:
                out.append((kind, None))
        return out


class Relation(t.NamedTuple):
    oid: int
    schema: str
    name: str
    columns: t.List[str]

    @property
    def key(self) -> str:
        return table_key(self.schema, self.name)


def decode(payload: bytes, relations: t.Dict[int, Relation]) -> t.Tuple[str, t.Dict[str, t.Any]]:
    """One pgoutput (protocol 1) message: its type letter and fields. Relation messages update ``relations``."""
    buf = _Buf(payload)
    kind = buf.byte()
    if kind == "B":
        return kind, {"final_lsn": buf.int64(), "timestamp": buf.int64(), "xid": buf.int32()}
    if kind == "C":
        buf.int8()
        return kind, {"commit_lsn": buf.int64(), "end_lsn": buf.int64(), "timestamp": buf.int64()}
    if kind == "R":
        oid = buf.uint32()
        schema, name = buf.string(), buf.string()
        buf.int8()  # replica identity setting
        columns = []
        for _column in range(buf.int16()):
            buf.int8()  # flags: part of the key
            columns.append(buf.string())
            buf.uint32()  # type oid
            buf.int32()  # typmod
        relations[oid] = Relation(oid, schema, name, columns)
        return kind, {"relation": relations[oid]}
    if kind == "I":
        rel = relations[buf.uint32()]
        buf.byte()  # 'N'
        return kind, {"relation": rel, "new": buf.tuple()}
    if kind == "U":
        rel = relations[buf.uint32()]
        old = None
        marker = buf.byte()
        if marker in ("K", "O"):
            old = buf.tuple()
            marker = buf.byte()
        return kind, {"relation": rel, "old": old, "new": buf.tuple()}
    if kind == "D":
        rel = relations[buf.uint32()]
        buf.byte()  # 'K' or 'O'
        return kind, {"relation": rel, "old": buf.tuple()}
    if kind == "T":
        count = buf.int32()
        options = buf.int8()
        rels = [relations[buf.uint32()] for _rel in range(count)]
        return kind, {"relations": rels, "cascade": bool(options & 1), "restart_identity": bool(options & 2)}
    return kind, {}  # 'Y' (type), 'O' (origin): nothing to apply


# ------------------------------------------------------------------------------------------------ the apply
@dataclasses.dataclass
class _TableApply:
    plan: _data.TablePlan
    key_source: t.List[str]
    # source column name -> (target column name)
    target_of: t.Dict[str, str]
    overriding: bool


class Applier:
    """Reads the slot from its confirmed position and applies each source transaction in one target transaction."""

    def __init__(
        self,
        stream_conn: t.Any,
        slot: str,
        publication: str,
        origin: str,
        source: ConnParams,
        target: ConnParams,
        eligible: Eligibility,
        log: t.Optional[LogFn] = None,
        status_file: t.Optional[str] = None,
        after_target_commit: t.Optional[t.Callable[[int], None]] = None,
    ) -> None:
        self.repl = stream_conn
        self.slot = slot
        self.publication = publication
        self.origin = origin
        self.source = source
        self.say = log or (lambda _msg: None)
        self.status_file = status_file
        self.after_target_commit = after_target_commit  # a test's injection point: between commit and feedback
        self.tables: t.Dict[str, _TableApply] = {}
        for tp in eligible.streamed:
            src = t.cast(_data.Table, tp.source)
            self.tables[src.key] = _TableApply(
                tp,
                eligible.keys[tp.key],
                {c.source.name: c.target.name for c in tp.carried if c.source is not None},
                any(c.target.identity == "a" for c in tp.carried),
            )
        self.relations: t.Dict[int, Relation] = {}
        self._statements: t.Dict[t.Tuple[str, str, t.Tuple[str, ...]], str] = {}
        self.tgt: t.Any = connect(target, application_name="pgshift online apply")
        self.stats: t.Dict[str, t.Any] = {
            "transactions": 0,
            "skipped_transactions": 0,
            "rows": {"insert": 0, "update": 0, "delete": 0, "truncate": 0},
            "started": time.monotonic(),
            "applied_lsn": None,
        }
        self.in_txn = False
        self.skip_txn = False
        self.final_lsn = 0
        self.touched: t.List[t.Tuple[str, t.List[t.Optional[str]]]] = []
        self.started_replication = False
        self._last_status = 0.0
        try:
            with self.tgt.cursor() as cur:
                cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
                cur.execute(
                    sql.SQL("CREATE TABLE IF NOT EXISTS {} (tbl text, key text[], PRIMARY KEY (tbl, key))").format(
                        sql.Identifier(SCHEMA, "touched")
                    )
                )
                cur.execute("SELECT pg_replication_origin_oid(%s) IS NULL", (origin,))
                if t.cast(t.Tuple[bool], cur.fetchone())[0]:
                    cur.execute("SELECT pg_replication_origin_create(%s)", (origin,))
                self.tgt.commit()
                cur.execute("SELECT pg_replication_origin_session_setup(%s)", (origin,))
                cur.execute("SET session_replication_role = replica")
                self.tgt.commit()
                self.progress = self._origin_progress(cur)
        except psycopg2.Error as exc:
            raise db_error(exc, "preparing the apply in %s" % target.describe()) from None

    # -- position
    def _origin_progress(self, cur: t.Any) -> int:
        cur.execute("SELECT pg_replication_origin_progress(%s, true)", (self.origin,))
        value = cur.fetchone()[0]
        self.tgt.commit()
        return lsn_int(value) if value else 0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.tgt.rollback()
        with contextlib.suppress(Exception):
            with self.tgt.cursor() as cur:
                cur.execute("SELECT pg_replication_origin_session_reset()")
        with contextlib.suppress(Exception):
            self.tgt.close()

    def _start(self) -> None:
        if self.started_replication:
            return
        self.cur = self.repl.cursor()
        self.cur.start_replication(
            slot_name=self.slot,
            decode=False,
            start_lsn=self.progress,
            options={"proto_version": "1", "publication_names": self.publication},
        )
        self.started_replication = True

    # -- applying
    def _values(
        self, ta: _TableApply, rel: Relation, tup: t.Sequence[t.Tuple[str, t.Optional[str]]]
    ) -> t.Dict[str, t.Any]:
        out: t.Dict[str, t.Any] = {}
        for name, (kind, value) in zip(rel.columns, tup):
            target = ta.target_of.get(name)
            if target is None or kind == "u":
                continue  # an accepted loss, or an unchanged TOASTed value the UPDATE leaves as it is
            out[target] = value
        return out

    def _key(
        self, ta: _TableApply, rel: Relation, tup: t.Sequence[t.Tuple[str, t.Optional[str]]]
    ) -> t.List[t.Optional[str]]:
        by_name = dict(zip(rel.columns, tup))
        return [by_name[k][1] if k in by_name else None for k in ta.key_source]

    def _apply(self, kind: str, msg: t.Dict[str, t.Any]) -> None:
        cur = self.tgt.cursor()
        if kind == "T":
            names = []
            for truncated in msg["relations"]:
                ta = self.tables.get(truncated.key)
                if ta is None:
                    continue
                target = ta.plan.target
                names.append(target.ident if target.partitioned else sql.SQL("ONLY {}").format(target.ident))
                self.stats["rows"]["truncate"] += 1
            if names:
                cur.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(names)))
            return
        rel: Relation = msg["relation"]
        ta = self.tables.get(rel.key)
        if ta is None:
            return
        if kind == "I":
            values = self._values(ta, rel, msg["new"])
            cur.execute(self._statement("I", ta, tuple(values)), list(values.values()))
            self.touched.append((ta.plan.key, self._key(ta, rel, msg["new"])))
            self.stats["rows"]["insert"] += 1
            return
        if kind == "U":
            new_key = self._key(ta, rel, msg["new"])
            old_key = self._key(ta, rel, msg["old"]) if msg["old"] is not None else new_key
            values = self._values(ta, rel, msg["new"])
            cur.execute(self._statement("U", ta, tuple(values)), list(values.values()) + list(old_key))
            self._one(cur, "UPDATE", ta, old_key)
            self.touched.append((ta.plan.key, old_key))
            if new_key != old_key:
                self.touched.append((ta.plan.key, new_key))
            self.stats["rows"]["update"] += 1
            return
        if kind == "D":
            key = self._key(ta, rel, msg["old"])
            cur.execute(self._statement("D", ta, ()), list(key))
            self._one(cur, "DELETE", ta, key)
            self.touched.append((ta.plan.key, key))
            self.stats["rows"]["delete"] += 1

    def _statement(self, kind: str, ta: _TableApply, columns: t.Tuple[str, ...]) -> str:
        """The INSERT / UPDATE / DELETE of a table for these target columns, composed once and kept."""
        cache_key = (kind, ta.plan.key, columns)
        text = self._statements.get(cache_key)
        if text is not None:
            return text
        ident = ta.plan.target.ident
        where = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(ta.target_of[k])) for k in ta.key_source)
        if kind == "I":
            statement = sql.SQL("INSERT INTO {} ({}) {}VALUES ({})").format(
                ident,
                sql.SQL(", ").join(sql.Identifier(c) for c in columns),
                sql.SQL("OVERRIDING SYSTEM VALUE ") if ta.overriding else sql.SQL(""),
                sql.SQL(", ").join(sql.Placeholder() for _column in columns),
            )
        elif kind == "U":
            statement = sql.SQL("UPDATE {} SET {} WHERE {}").format(
                ident, sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in columns), where
            )
        else:
            statement = sql.SQL("DELETE FROM {} WHERE {}").format(ident, where)
        text = statement.as_string(self.tgt)
        self._statements[cache_key] = text
        return text

    @staticmethod
    def _one(cur: t.Any, what: str, ta: _TableApply, key: t.Sequence[t.Optional[str]]) -> None:
        if cur.rowcount != 1:
            raise PgShiftError(
                "online apply: %s of %s key (%s) hit %d rows in the new database, not 1: the new database no longer "
                "matches production (written behind the stream's back?); the release must go offline"
                % (what, ta.plan.key, ", ".join(str(k) for k in key), cur.rowcount),
                table=ta.plan.key,
            )

    def _flush_touched(self) -> None:
        if not self.touched:
            return
        with self.tgt.cursor() as cur:
            psycopg2.extras.execute_values(
                cur,
                sql.SQL("INSERT INTO {} (tbl, key) VALUES %s ON CONFLICT DO NOTHING")
                .format(sql.Identifier(SCHEMA, "touched"))
                .as_string(cur),
                list(self.touched),
            )
        self.touched = []

    def _commit(self, msg: t.Dict[str, t.Any]) -> None:
        if self.skip_txn:
            self.stats["skipped_transactions"] += 1
        else:
            with self.tgt.cursor() as cur:
                # one round trip: the keys this transaction touched and the origin's new position, then the commit
                parts = [
                    cur.mogrify(
                        "SELECT pg_replication_origin_xact_setup(%s::pg_lsn, now())", (lsn_text(self.final_lsn),)
                    )
                ]
                if self.touched:
                    rows = b", ".join(cur.mogrify("(%s, %s)", (tbl, key)) for tbl, key in self.touched)
                    insert = sql.SQL("INSERT INTO {} (tbl, key) VALUES ").format(sql.Identifier(SCHEMA, "touched"))
                    parts.insert(0, insert.as_string(cur).encode() + rows + b" ON CONFLICT DO NOTHING")
                    self.touched = []
                cur.execute(b"; ".join(parts))
            self.tgt.commit()
            self.progress = self.final_lsn
            self.stats["transactions"] += 1
            if self.after_target_commit is not None:
                self.after_target_commit(self.final_lsn)
        self.in_txn = False
        self.skip_txn = False
        self.stats["applied_lsn"] = lsn_text(msg["end_lsn"])
        self.cur.send_feedback(flush_lsn=msg["end_lsn"])

    def handle(self, payload: bytes) -> None:
        kind, msg = decode(payload, self.relations)
        try:
            if kind == "B":
                self.in_txn = True
                self.final_lsn = msg["final_lsn"]
                # a transaction the target already committed (crash between its commit and the feedback): skip it
                self.skip_txn = self.final_lsn <= self.progress
            elif kind == "C":
                self._commit(msg)
            elif kind in ("I", "U", "D", "T") and not self.skip_txn:
                self._apply(kind, msg)
                if len(self.touched) >= KEY_BATCH:
                    self._flush_touched()
        except psycopg2.Error as exc:
            with contextlib.suppress(psycopg2.Error):
                self.tgt.rollback()
            raise db_error(exc, "applying a change of production to the new database") from None

    # -- the loop
    def run(
        self,
        until_lsn: t.Optional[int] = None,
        stop: t.Optional[t.Callable[[], bool]] = None,
        timeout: t.Optional[float] = None,
    ) -> t.Dict[str, t.Any]:
        """Apply until the stream has reached ``until_lsn`` (every change committed before it applied), or until
        ``stop()`` says so, or ``timeout`` seconds without reaching it (an error)."""
        self._start()
        deadline = None if timeout is None else time.monotonic() + timeout
        checked = time.monotonic()
        while True:
            msg = self.cur.read_message()
            if msg is not None:
                self.handle(msg.payload)
                self._status()
                # a busy stream is never idle: ask stop() between transactions, about once a second
                if stop is not None and not self.in_txn and time.monotonic() - checked >= 1.0:
                    checked = time.monotonic()
                    if stop():
                        return self.status()
                continue
            if until_lsn is not None and not self.in_txn and self.cur.wal_end >= until_lsn:
                # wal_end comes from the last message read (data or keepalive), in stream order: the server has
                # decoded everything before until_lsn and every change committed there has been applied
                self.cur.send_feedback(flush_lsn=self.cur.wal_end)
                return self.status()
            if stop is not None and stop():
                return self.status()
            if deadline is not None and time.monotonic() > deadline:
                raise PgShiftError(
                    "the change stream did not reach %s within %.0f s (it is at %s)"
                    % (lsn_text(until_lsn or 0), timeout or 0, self.stats["applied_lsn"])
                )
            if not self.in_txn:
                # idle between transactions: everything the server sent is applied, so its position is confirmed
                # (the slot releases that WAL and the lag shows 0); and ask for a keepalive carrying its position
                self.cur.send_feedback(flush_lsn=self.cur.wal_end, reply=True)
            with contextlib.suppress(InterruptedError):
                select.select([self.cur], [], [], 0.1)
            self._status()

    def status(self) -> t.Dict[str, t.Any]:
        elapsed = max(time.monotonic() - self.stats["started"], 1e-6)
        rows = sum(self.stats["rows"].values())
        return {
            "transactions": self.stats["transactions"],
            "skipped_transactions": self.stats["skipped_transactions"],
            "rows": dict(self.stats["rows"]),
            "rows_per_second": round(rows / elapsed, 1),
            "applied_lsn": self.stats["applied_lsn"],
        }

    def _status(self) -> None:
        if not self.status_file or time.monotonic() - self._last_status < 1.0:
            return
        self._last_status = time.monotonic()
        data = self.status()
        with contextlib.suppress(PgShiftError):
            data.update(lag(self.source, self.slot))
        tmp = self.status_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
        os.replace(tmp, self.status_file)


def lag(source: ConnParams, slot: str) -> t.Dict[str, t.Any]:
    """Bytes of WAL between production's position and what the new database confirmed, and the WAL the slot keeps."""
    conn = connect(source, autocommit=True, application_name="pgshift online lag")
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, "
                "pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, wal_status, active_pid "
                "FROM pg_replication_slots WHERE slot_name = %s",
                (slot,),
            )
            row = cur.fetchone()
    except psycopg2.Error as exc:
        raise db_error(exc, "reading the slot's lag") from None
    finally:
        conn.close()
    if row is None:
        raise PgShiftError("replication slot %s does not exist (dropped by someone else?)" % slot)
    return {"bytes_behind": int(row[0] or 0), "wal_retained_bytes": int(row[1] or 0), "wal_status": row[2]}


def current_lsn(source: ConnParams) -> int:
    conn: t.Any = connect(source, autocommit=True, application_name="pgshift online")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_current_wal_lsn()::text")
            return lsn_int(cur.fetchone()[0])
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------------ the delta proof
def _key_join(table: _data.Table, keys: t.Sequence[t.Tuple[str, str]], alias: str = "pgshift_k") -> "sql.Composable":
    """Rows of ``table`` whose key equals one of a JSON array of key text arrays (parameter %s)."""
    cond = sql.SQL(" AND ").join(
        sql.SQL("s.{} = CAST({}.v ->> {} AS {})").format(
            sql.Identifier(col), sql.Identifier(alias), sql.Literal(i), sql.SQL(col_type)
        )
        for i, (col, col_type) in enumerate(keys)
    )
    return sql.SQL("(SELECT s.* FROM {} AS s JOIN jsonb_array_elements(%s::jsonb) AS {}(v) ON {})").format(
        table.from_clause(), sql.Identifier(alias), cond
    )


def delta_proof(
    source_conn: t.Any, target_conn: t.Any, eligible: Eligibility, algorithm: str = _checksums.ALGORITHM_VALUES
) -> t.Dict[str, t.Any]:
    """Every key the stream touched, read on both sides from the tables (not from the stream), hashed as the integrity
    check hashes rows; and the row counts of every streamed table. ``ok`` False names the first differing keys."""
    from ansible_collections.pgshift.ops.plugins.module_utils._data_check import source_row, target_row

    tables: t.Dict[str, t.Dict[str, t.Any]] = {}
    for tp in eligible.streamed:
        src = t.cast(_data.Table, tp.source)
        by_source = {c.source.name: c for c in tp.carried if c.source is not None}
        key_cols = eligible.keys[tp.key]
        src_keys = [(k, t.cast(_data.Column, src.column(k)).type) for k in key_cols]
        tgt_keys = [(by_source[k].target.name, by_source[k].target.type) for k in key_cols]
        src_from = _key_join(src, src_keys)
        tgt_from = _key_join(tp.target, tgt_keys)
        src_query = _checksums.checksum_sql(src_from, source_row(tp, algorithm), algorithm)
        tgt_query = _checksums.checksum_sql(tgt_from, target_row(tp, algorithm), algorithm)
        info: t.Dict[str, t.Any] = {"keys": 0, "source_rows": 0, "target_rows": 0, "differing_keys": [], "match": True}
        with target_conn.cursor(name="pgshift_touched") as keys_cur:
            keys_cur.itersize = KEY_BATCH
            keys_cur.execute(
                sql.SQL("SELECT key FROM {} WHERE tbl = %s ORDER BY key").format(sql.Identifier(SCHEMA, "touched")),
                (tp.key,),
            )
            while True:
                batch = keys_cur.fetchmany(KEY_BATCH)
                if not batch:
                    break
                doc = json.dumps([r[0] for r in batch])
                with source_conn.cursor() as cur:
                    cur.execute(src_query, (doc,))
                    s_rows, s_sum = cur.fetchone()
                with target_conn.cursor() as cur:
                    cur.execute(tgt_query, (doc,))
                    t_rows, t_sum = cur.fetchone()
                info["keys"] += len(batch)
                info["source_rows"] += int(s_rows)
                info["target_rows"] += int(t_rows)
                if (s_rows, s_sum) != (t_rows, t_sum):
                    info["match"] = False
                    if len(info["differing_keys"]) < 10:
                        info["differing_keys"].extend(
                            _differing(source_conn, target_conn, tp, src_keys, tgt_keys, batch, algorithm)
                        )
        with source_conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(src.from_clause()))
            info["source_count"] = int(cur.fetchone()[0])
        with target_conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(tp.target.from_clause()))
            info["target_count"] = int(cur.fetchone()[0])
        if info["source_count"] != info["target_count"]:
            info["match"] = False
        tables[tp.key] = info
    bad = sorted(k for k, v in tables.items() if not v["match"])
    return {"ok": not bad, "mismatches": bad, "tables": tables}


def _differing(
    source_conn: t.Any,
    target_conn: t.Any,
    tp: _data.TablePlan,
    src_keys: t.Sequence[t.Tuple[str, str]],
    tgt_keys: t.Sequence[t.Tuple[str, str]],
    batch: t.Sequence[t.Tuple[t.Any, ...]],
    algorithm: str,
) -> t.List[t.Dict[str, t.Any]]:
    from ansible_collections.pgshift.ops.plugins.module_utils._data_check import source_row, target_row

    doc = json.dumps([r[0] for r in batch])

    def per_key(conn: t.Any, table: _data.Table, keys: t.Sequence[t.Tuple[str, str]], row: t.Any) -> t.Dict[str, int]:
        query = sql.SQL("SELECT ARRAY[{}]::text[], {} FROM {} AS t").format(
            sql.SQL(", ").join(sql.SQL("CAST(t.{} AS text)").format(sql.Identifier(k)) for k, _type in keys),
            _checksums.row_hash(row, algorithm),
            _key_join(table, keys),
        )
        with conn.cursor() as cur:
            cur.execute(query, (doc,))
            return {json.dumps(r[0]): int(r[1]) for r in cur.fetchall()}

    a = per_key(source_conn, t.cast(_data.Table, tp.source), src_keys, source_row(tp, algorithm))
    b = per_key(target_conn, tp.target, tgt_keys, target_row(tp, algorithm))
    out = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            what = "missing in target" if key not in b else "only in target" if key not in a else "changed"
            out.append({"key": json.loads(key), "difference": what})
    return out[:10]


# ------------------------------------------------------------------------------------------------ clean-up
def drop_stream(
    cluster: ConnParams,
    database: str,
    name: str,
    target_database: t.Optional[str] = None,
    wait_seconds: float = 30.0,
) -> t.List[str]:
    """Drop the slot (ending the WAL sender that holds it, if any), the publication in ``database`` and the
    replication origin; each only if it exists (idempotent). Returns what was dropped."""
    done: t.List[str] = []
    conn: t.Any = connect(cluster.with_database("postgres"), autocommit=True, retry_seconds=journal.RETRY_SECONDS)
    try:
        with conn.cursor() as cur:
            deadline = time.monotonic() + wait_seconds
            while True:
                cur.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (name,))
                row = cur.fetchone()
                if row is None:
                    break
                if row[0] is not None:
                    cur.execute("SELECT pg_terminate_backend(%s, 5000)", (row[0],))
                try:
                    cur.execute("SELECT pg_drop_replication_slot(%s)", (name,))
                    done.append("replication slot %s" % name)
                    break
                except psycopg2.Error as exc:
                    if exc.pgcode == "42704":  # undefined_object: dropped meanwhile (the holder and a rollback race)
                        break
                    if exc.pgcode != "55006" or time.monotonic() > deadline:  # object_in_use
                        raise
                    time.sleep(0.1)  # the WAL sender is ending: wait for it (bounded by the deadline)
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            has_db = cur.fetchone() is not None
            cur.execute("SELECT pg_replication_origin_oid(%s)", (name,))
            if cur.fetchone()[0] is not None:
                try:
                    cur.execute("SELECT pg_replication_origin_drop(%s)", (name,))
                    done.append("replication origin %s" % name)
                except psycopg2.Error as exc:
                    if exc.pgcode == "42704":  # dropped meanwhile
                        pass
                    elif exc.pgcode != "55006" or target_database is None:
                        raise
                    else:
                        # still bound to an apply session of the new database: end those sessions, then drop it
                        cur.execute(
                            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = %s "
                            "AND application_name = 'pgshift online apply'",
                            (target_database,),
                        )
                        cur.execute("SELECT pg_replication_origin_drop(%s)", (name,))
                        done.append("replication origin %s" % name)
    except psycopg2.Error as exc:
        raise db_error(exc, "dropping the change stream %s" % name) from None
    finally:
        conn.close()
    if has_db:
        pub = connect(cluster.with_database(database), autocommit=True, retry_seconds=journal.RETRY_SECONDS)
        try:
            with pub.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (name,))
                if cur.fetchone():
                    cur.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(name)))
                    done.append("publication %s in %s" % (name, database))
        except psycopg2.Error as exc:
            raise db_error(exc, "dropping publication %s" % name) from None
        finally:
            pub.close()
    return done


def drop_recorded(
    cluster: ConnParams, run: t.Dict[str, t.Any], journal_db: str = journal.DEFAULT_JOURNAL_DB, check_mode: bool = False
) -> t.List[str]:
    """The rollback's part: drop the stream a run's journal recorded (``online_stream`` started), if still there."""
    states = journal.step_states(run)
    entry = states.get(STEP)
    if not entry or entry["state"] == "undone":
        return []
    detail = entry["detail"]
    if check_mode:
        return ["drop change stream %s (slot, publication, origin)" % detail["slot"]]
    done = drop_stream(cluster, detail["database"], detail["slot"], detail.get("target_database"))
    record(cluster, journal_db, run["run_id"], "undone", {"dropped": done})
    return ["dropped %s" % d for d in done]


def drop_touched(target_conn: t.Any) -> None:
    with target_conn.cursor() as cur:
        cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))
    target_conn.commit()
