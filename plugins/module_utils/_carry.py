# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""Writes made to the new production after the swap, captured and carried back on a swap-back.

Right before the swap, :func:`install_capture` puts an AFTER INSERT/UPDATE/DELETE FOR EACH ROW trigger (and an
AFTER TRUNCATE statement trigger) on every carried table of ``<prod>__next``. Each change is written, in the
application's own transaction, to ``pgshift_capture.changes`` (seq, root table, op, OLD row, NEW row as jsonb). The
inverse of the release's mapping (target column -> source column, the values the old schema lacks) is stored next to
it in ``pgshift_capture.tables``, so a swap-back needs nothing but the two databases, even when the controller that
ran the release is gone.

:func:`carry_back` replays the captured changes, in order, into the previous production, in ONE transaction on that
database: values are read back into the old types by ``jsonb_populate_record`` over the old row type, renamed
columns through the inverse mapping; the previous production's sequences are set past what the new one issued; the
rows touched are compared on both sides (count and checksum of the current rows of the new database, converted, and
of the rows of the previous one after the replay). A change that cannot go back (a table the old schema lacks, a
value in a column it lacks that is not the column's default or NULL, a row an old constraint refuses) stops it: the
transaction is rolled back and nothing is swapped, unless the operator forces it.

Why triggers and not logical decoding: decoding needs ``wal_level = logical`` (a server restart) and a replication
slot, which most production clusters do not have; triggers need nothing but the superuser pgshift already is. Their
cost on the applications' writes is measured in docs/data.md.
"""

from __future__ import annotations

import json
import typing as t

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # pragma: no cover - reported by the connection layer
    pass

from ansible_collections.pgshift.ops.plugins.module_utils import _checksums, _ext_config, _large_objects
from ansible_collections.pgshift.ops.plugins.module_utils import _data as data
from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, connect, db_error

SCHEMA = "pgshift_capture"
TRIGGER = "pgshift_capture"
BATCH = 500

_DDL = [
    "CREATE SCHEMA pgshift_capture",
    "REVOKE ALL ON SCHEMA pgshift_capture FROM PUBLIC",
    """CREATE TABLE pgshift_capture.meta (
        run_id        text NOT NULL,
        production    text NOT NULL,
        installed_at  timestamptz NOT NULL DEFAULT now()
    )""",
    """CREATE TABLE pgshift_capture.tables (
        table_schema  text NOT NULL,
        table_name    text NOT NULL,
        old_schema    text,
        old_name      text,
        columns       jsonb NOT NULL DEFAULT '{}'::jsonb,
        lacks         jsonb NOT NULL DEFAULT '{}'::jsonb,
        computed      jsonb NOT NULL DEFAULT '[]'::jsonb,
        PRIMARY KEY (table_schema, table_name)
    )""",
    """CREATE TABLE pgshift_capture.changes (
        seq           bigserial PRIMARY KEY,
        table_schema  text NOT NULL,
        table_name    text NOT NULL,
        op            text NOT NULL,
        old_row       jsonb,
        new_row       jsonb
    )""",
    # SECURITY DEFINER: the applications' roles write the change log without any privilege on the schema.
    """CREATE FUNCTION pgshift_capture.record() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp AS $pgshift$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        INSERT INTO pgshift_capture.changes (table_schema, table_name, op) VALUES (TG_ARGV[0], TG_ARGV[1], 'T');
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO pgshift_capture.changes (table_schema, table_name, op, new_row)
        VALUES (TG_ARGV[0], TG_ARGV[1], 'I', to_jsonb(NEW));
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO pgshift_capture.changes (table_schema, table_name, op, old_row, new_row)
        VALUES (TG_ARGV[0], TG_ARGV[1], 'U', to_jsonb(OLD), to_jsonb(NEW));
    ELSE
        INSERT INTO pgshift_capture.changes (table_schema, table_name, op, old_row)
        VALUES (TG_ARGV[0], TG_ARGV[1], 'D', to_jsonb(OLD));
    END IF;
    RETURN NULL;
END
$pgshift$""",
    "REVOKE ALL ON FUNCTION pgshift_capture.record() FROM PUBLIC",
]


# ------------------------------------------------------------------------------------------------ install / remove
def has_capture(conn: t.Any) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('pgshift_capture.changes') IS NOT NULL")
        return bool(cur.fetchone()[0])


def capture_run(conn: t.Any) -> t.Optional[str]:
    if not has_capture(conn):
        return None
    with conn.cursor() as cur:
        cur.execute("SELECT run_id FROM pgshift_capture.meta LIMIT 1")
        row = cur.fetchone()
    return row[0] if row else None


def _default_json(cur: t.Any, col: "data.Column") -> t.Any:
    """The column's default as jsonb (evaluated once, now), None when it has none or it is a sequence's."""
    if col.default is None or "nextval(" in col.default:
        return None
    type_sql = sql.SQL(col.type) if col.builtin else sql.SQL("text")
    try:
        cur.execute("SAVEPOINT pgshift_default")
        # server-printed default expression and type name of the target (pg_get_expr, format_type)
        cur.execute(sql.SQL("SELECT to_jsonb(({})::{})").format(sql.SQL(col.default), type_sql))
        value = cur.fetchone()[0]
        cur.execute("RELEASE SAVEPOINT pgshift_default")
        return value
    except psycopg2.Error:
        cur.execute("ROLLBACK TO SAVEPOINT pgshift_default")
        return None


def install_capture(
    prod: ConnParams,
    new: ConnParams,
    run_id: str,
    mapping_file: t.Optional[str] = None,
    ledger_tables: t.Sequence[str] = data.DEFAULT_LEDGER_TABLES,
) -> t.Dict[str, t.Any]:
    """Change capture on every carried table of ``new`` (the rebuilt database), with the inverse mapping to ``prod``.

    Both databases are blocked (no application session) when this runs, right before the swap."""
    mapping = data.load_mapping(mapping_file)
    src = connect(prod)
    try:
        source_tables = data.read_tables(src)
    finally:
        src.close()
    conn = connect(new)
    try:
        target_tables = data.read_tables(conn)
        plan = data.build_plan(source_tables, target_tables, mapping, ledger_tables)
        tables: t.List[str] = []
        with conn.cursor() as cur:
            if has_capture(conn):
                cur.execute("DROP SCHEMA pgshift_capture CASCADE")
            for statement in _DDL:
                cur.execute(statement)
            cur.execute(
                "INSERT INTO pgshift_capture.meta (run_id, production) VALUES (%s, %s)", (run_id, prod.database)
            )
            for tp in plan.tables:
                if tp.ledger:
                    continue
                columns = {
                    c.target.name: c.source.name for c in tp.carried if c.source is not None and not c.expression
                }
                computed = [c.target.name for c in tp.carried if c.expression is not None]
                lacks = {col.name: _default_json(cur, col) for col in tp.defaulted}
                cur.execute(
                    "INSERT INTO pgshift_capture.tables (table_schema, table_name, old_schema, old_name, columns, "
                    "lacks, computed) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (
                        tp.target.schema,
                        tp.target.name,
                        tp.source.schema if tp.source else None,
                        tp.source.name if tp.source else None,
                        json.dumps(columns),
                        json.dumps(lacks),
                        json.dumps(computed),
                    ),
                )
                args = sql.SQL("{}, {}").format(sql.Literal(tp.target.schema), sql.Literal(tp.target.name))
                cur.execute(
                    sql.SQL(
                        "CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {} FOR EACH ROW "
                        "EXECUTE FUNCTION pgshift_capture.record({})"
                    ).format(sql.Identifier(TRIGGER), tp.target.ident, args)
                )
                cur.execute(
                    sql.SQL(
                        "CREATE TRIGGER {} AFTER TRUNCATE ON {} FOR EACH STATEMENT "
                        "EXECUTE FUNCTION pgshift_capture.record({})"
                    ).format(sql.Identifier(TRIGGER + "_truncate"), tp.target.ident, args)
                )
                tables.append(tp.key)
        conn.commit()
        return {"database": new.database, "tables": sorted(tables)}
    except psycopg2.Error as exc:
        conn.rollback()
        raise db_error(exc, "installing the change capture in %r" % new.database) from None
    finally:
        conn.close()


def remove_capture(params: ConnParams, check_mode: bool = False) -> bool:
    """Drop the change capture (triggers, function, log) of a database; True when there was one."""
    conn = connect(params)
    try:
        if not has_capture(conn):
            conn.rollback()
            return False
        if not check_mode:
            with conn.cursor() as cur:
                cur.execute("DROP SCHEMA pgshift_capture CASCADE")
            conn.commit()
        return True
    except psycopg2.Error as exc:
        conn.rollback()
        raise db_error(exc, "removing the change capture of %r" % params.database) from None
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------------ carry back
class _TableMap:
    """One captured table of the new database and where its rows go in the previous one."""

    def __init__(self, row: t.Sequence[t.Any]) -> None:
        self.schema, self.name, self.old_schema, self.old_name = row[0], row[1], row[2], row[3]
        self.columns: t.Dict[str, str] = dict(row[4] or {})
        self.lacks: t.Dict[str, t.Any] = dict(row[5] or {})
        self.computed: t.List[str] = list(row[6] or [])
        self.key = self.name if self.schema == "public" else "%s.%s" % (self.schema, self.name)
        self.new_key: t.List[str] = []
        self.old_key: t.List[str] = []
        self.old_columns: t.List[str] = []  # mapped old columns that can be written
        self.old_updatable: t.List[str] = []
        self.stats = {"inserted": 0, "updated": 0, "deleted": 0, "truncated": 0}
        self.unreturnable: t.Dict[str, int] = {}
        self.failed: t.List[str] = []
        self.touched: t.Set[str] = set()

    @property
    def old_ident(self) -> "sql.Composable":
        return sql.Identifier(self.old_schema, self.old_name)

    @property
    def written(self) -> int:
        return sum(self.stats.values())

    def to_old(self, row: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
        return {old: row.get(new) for new, old in self.columns.items()}

    def key_json(self, row: t.Dict[str, t.Any]) -> str:
        return json.dumps({c: row.get(c) for c in self.new_key}, sort_keys=True)

    def why_not(self, op: str, old: t.Optional[t.Dict[str, t.Any]], new: t.Optional[t.Dict[str, t.Any]]) -> str:
        """'' when the change can go back, else why not."""
        if self.old_name is None:
            return "a table the previous schema lacks"
        if op in ("U", "D") and not self.old_key:
            return "no primary key to find the row by"
        if op in ("I", "U") and new is not None:
            for col, default in self.lacks.items():
                value = new.get(col)
                if value is None or value == default or (old is not None and old.get(col) == value):
                    continue
                return "column %s holds a value the previous schema has no column for" % col
            for col in self.computed:
                value = new.get(col)
                if value is None or (old is not None and old.get(col) == value):
                    continue
                return "column %s (computed by the mapping) holds a value that cannot be mapped back" % col
        return ""


def _primary_key(cur: t.Any, schema: str, name: str) -> t.List[str]:
    cur.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY k(num, ord) ON true "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.num "
        "WHERE n.nspname = %s AND c.relname = %s AND i.indisprimary ORDER BY k.ord",
        (schema, name),
    )
    return [r[0] for r in cur.fetchall()]


def _writable_columns(cur: t.Any, schema: str, name: str) -> t.Tuple[t.Set[str], t.Set[str]]:
    """(columns an INSERT may name, columns an UPDATE may set) of a table."""
    cur.execute(
        "SELECT a.attname, a.attgenerated <> '', a.attidentity = 'a' FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped",
        (schema, name),
    )
    rows = cur.fetchall()
    return {r[0] for r in rows if not r[1]}, {r[0] for r in rows if not r[1] and not r[2]}


def _load_maps(new_conn: t.Any, old_conn: t.Any) -> t.Dict[t.Tuple[str, str], _TableMap]:
    maps: t.Dict[t.Tuple[str, str], _TableMap] = {}
    with new_conn.cursor() as cur:
        cur.execute(
            "SELECT table_schema, table_name, old_schema, old_name, columns, lacks, computed "
            "FROM pgshift_capture.tables ORDER BY 1, 2"
        )
        for row in cur.fetchall():
            maps[(row[0], row[1])] = _TableMap(row)
        for tm in maps.values():
            tm.new_key = _primary_key(cur, tm.schema, tm.name)
    with old_conn.cursor() as cur:
        for tm in maps.values():
            if tm.old_name is None:
                continue
            insertable, updatable = _writable_columns(cur, tm.old_schema, tm.old_name)
            if not insertable:
                tm.old_name = None  # the previous table is gone: treated as a table the previous schema lacks
                continue
            tm.columns = {new: old for new, old in tm.columns.items() if old in insertable}
            tm.old_columns = sorted(tm.columns.values())
            tm.old_updatable = [c for c in tm.old_columns if c in updatable]
            old_pk = _primary_key(cur, tm.old_schema, tm.old_name)
            mapped_pk = [tm.columns.get(c) for c in tm.new_key]
            # rows are found by the key both sides share: the new primary key, mapped to the old names
            if tm.new_key and all(mapped_pk) and (not old_pk or set(old_pk) <= set(t.cast(t.List[str], mapped_pk))):
                tm.old_key = t.cast(t.List[str], mapped_pk)
    return maps


def _statements(tm: _TableMap) -> t.Dict[str, "sql.Composable"]:
    rec = sql.SQL("jsonb_populate_record(NULL::{}, %s::jsonb)").format(tm.old_ident)
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in tm.old_columns)
    keys = sql.SQL(", ").join(sql.Identifier(c) for c in tm.old_key)
    where = sql.SQL("({}) = (SELECT {} FROM {})").format(keys, keys, rec)
    out: t.Dict[str, "sql.Composable"] = {
        "I": sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {}").format(
            tm.old_ident, cols, cols, rec
        ),
        "T": sql.SQL("DELETE FROM {}").format(tm.old_ident),
    }
    if tm.old_key:
        out["D"] = sql.SQL("DELETE FROM {} WHERE {}").format(tm.old_ident, where)
        upd = sql.SQL(", ").join(sql.Identifier(c) for c in tm.old_updatable)
        out["U"] = (
            sql.SQL("UPDATE {} SET ({}) = (SELECT {} FROM {}) WHERE {}").format(tm.old_ident, upd, upd, rec, where)
            if tm.old_updatable
            else sql.SQL("SELECT 1 FROM {} WHERE {}").format(tm.old_ident, where)
        )
    return out


def _changes(new_conn: t.Any, after: int) -> t.Iterator[t.Tuple[int, str, str, str, t.Any, t.Any]]:
    with new_conn.cursor(name="pgshift_carry_changes") as cur:
        cur.itersize = 2000
        cur.execute(
            "SELECT seq, table_schema, table_name, op, old_row, new_row FROM pgshift_capture.changes "
            "WHERE seq > %s ORDER BY seq",
            (after,),
        )
        yield from cur


def _apply(
    old_cur: t.Any, maps: t.Dict[t.Tuple[str, str], _TableMap], new_conn: t.Any, after: int, isolate: bool
) -> int:
    """Replay the changes after ``after`` into the previous database. With ``isolate`` each change runs in its own
    savepoint and a refused one is recorded on its table instead of aborting the replay. Returns the last seq."""
    statements = {key: _statements(tm) for key, tm in maps.items() if tm.old_name is not None}
    last = after
    for seq, schema, name, op, old, new in _changes(new_conn, after):
        last = seq
        tm = maps.get((schema, name))
        if tm is None or tm.why_not(op, old, new) or op not in statements.get((schema, name), {}):
            continue  # counted by the survey; with force, left out of the carry (kept in the new database)
        params: t.Tuple[t.Any, ...]
        if op == "I":
            params = (json.dumps(tm.to_old(new)),)
        elif op == "U":
            params = ((json.dumps(tm.to_old(new)),) if tm.old_updatable else ()) + (json.dumps(tm.to_old(old)),)
        elif op == "D":
            params = (json.dumps(tm.to_old(old)),)
        else:
            params = ()
        if isolate:
            old_cur.execute("SAVEPOINT pgshift_change")
        try:
            old_cur.execute(statements[(schema, name)][op], params)
            if op in ("U", "D") and old_cur.rowcount != 1:
                raise _Missing("row %s is not in the previous database" % tm.key_json(old))
        except (psycopg2.Error, _Missing) as exc:
            if not isolate:
                raise
            old_cur.execute("ROLLBACK TO SAVEPOINT pgshift_change")
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            tm.failed.append("change %d (%s): %s" % (seq, op, text))
            continue
        if isolate:
            old_cur.execute("RELEASE SAVEPOINT pgshift_change")
    return last


class _Missing(Exception):
    pass


def _survey(new_conn: t.Any, maps: t.Dict[t.Tuple[str, str], _TableMap]) -> None:
    """Count every change per table and op, find those that cannot go back, collect the keys touched."""
    for _seq, schema, name, op, old, new in _changes(new_conn, 0):
        tm = maps.get((schema, name))
        if tm is None:
            continue
        tm.stats[{"I": "inserted", "U": "updated", "D": "deleted", "T": "truncated"}[op]] += 1
        why = tm.why_not(op, old, new)
        if why:
            tm.unreturnable[why] = tm.unreturnable.get(why, 0) + 1
        if tm.new_key:
            for row in (old, new):
                if row is not None:
                    tm.touched.add(tm.key_json(row))


def _proof(new_conn: t.Any, old_cur: t.Any, tm: _TableMap, skip: t.Set[str]) -> t.Dict[str, t.Any]:
    """Count and checksum of the touched rows: the new database's current rows (converted to the old types) against
    the previous database's rows after the replay."""
    keys = sorted(tm.touched - skip)
    if not keys or not tm.old_key:
        return {"rows_compared": 0, "new": [0, "0"], "previous": [0, "0"], "equal": True}
    new_key_cols = sql.SQL(", ").join(sql.Identifier(c) for c in tm.new_key)
    old_key_cols = sql.SQL(", ").join(sql.Identifier(c) for c in tm.old_key)
    row_text = sql.SQL("hashtextextended(ROW({})::text, 0)").format(
        sql.SQL(", ").join(sql.SQL("r.{}").format(sql.Identifier(c)) for c in tm.old_columns)
    )
    old_text = sql.SQL("hashtextextended(ROW({})::text, 0)").format(
        sql.SQL(", ").join(sql.SQL("o.{}").format(sql.Identifier(c)) for c in tm.old_columns)
    )
    totals = {"new": [0, 0], "previous": [0, 0]}
    with new_conn.cursor() as ncur:
        for start in range(0, len(keys), BATCH):
            batch = "[" + ",".join(keys[start : start + BATCH]) + "]"
            ncur.execute(
                sql.SQL(
                    "SELECT to_jsonb(t) FROM {} t WHERE ({}) IN "
                    "(SELECT {} FROM jsonb_populate_recordset(NULL::{}, %s::jsonb))"
                ).format(
                    sql.Identifier(tm.schema, tm.name), new_key_cols, new_key_cols, sql.Identifier(tm.schema, tm.name)
                ),
                (batch,),
            )
            rows = [tm.to_old(r[0]) for r in ncur.fetchall()]
            old_keys = json.dumps([tm.to_old(json.loads(k)) for k in keys[start : start + BATCH]])
            old_cur.execute(
                sql.SQL(
                    "SELECT count(*), coalesce(sum({}), 0) FROM jsonb_populate_recordset(NULL::{}, %s::jsonb) r"
                ).format(row_text, tm.old_ident),
                (json.dumps(rows),),
            )
            count, total = old_cur.fetchone()
            totals["new"][0] += int(count)
            totals["new"][1] += int(total)
            old_cur.execute(
                sql.SQL(
                    "SELECT count(*), coalesce(sum({}), 0) FROM {} o WHERE ({}) IN "
                    "(SELECT {} FROM jsonb_populate_recordset(NULL::{}, %s::jsonb))"
                ).format(old_text, tm.old_ident, old_key_cols, old_key_cols, tm.old_ident),
                (old_keys,),
            )
            count, total = old_cur.fetchone()
            totals["previous"][0] += int(count)
            totals["previous"][1] += int(total)
    return {
        "rows_compared": len(keys),
        "new": [totals["new"][0], str(totals["new"][1])],
        "previous": [totals["previous"][0], str(totals["previous"][1])],
        "equal": totals["new"] == totals["previous"],
    }


_MODES = {"O": "ENABLE TRIGGER", "R": "ENABLE REPLICA TRIGGER", "A": "ENABLE ALWAYS TRIGGER"}


def _quiet_triggers(
    old_cur: t.Any, maps: t.Dict[t.Tuple[str, str], _TableMap]
) -> t.List[t.Tuple["sql.Composable", str, str]]:
    """Disable the previous database's own triggers on the carried tables for the carry (in its transaction).

    The captured rows are final (the new database's triggers already ran when the application wrote them, and what
    they wrote elsewhere is captured too): firing the old triggers again would change them. Constraint triggers
    (foreign keys) are internal and stay on, so an old foreign key still refuses a row."""
    quiet: t.List[t.Tuple["sql.Composable", str, str]] = []
    for tm in maps.values():
        if tm.old_name is None:
            continue
        old_cur.execute(
            "SELECT tg.tgname, tg.tgenabled::text FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s "
            "AND NOT tg.tgisinternal AND tg.tgenabled <> 'D' ORDER BY tg.tgname",
            (tm.old_schema, tm.old_name),
        )
        for name, mode in old_cur.fetchall():
            old_cur.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(tm.old_ident, sql.Identifier(name)))
            quiet.append((tm.old_ident, name, mode))
    return quiet


def _restore_triggers(old_cur: t.Any, quiet: t.List[t.Tuple["sql.Composable", str, str]]) -> None:
    for table, name, mode in quiet:
        old_cur.execute(
            sql.SQL("ALTER TABLE {} {} {}").format(
                table, sql.SQL(_MODES.get(mode, "ENABLE TRIGGER")), sql.Identifier(name)
            )
        )


_SEQUENCES_SQL = """
SELECT s.oid, n.nspname, s.relname, tn.nspname, tc.relname, a.attname, ps.last_value, ps.increment_by
FROM pg_class s
JOIN pg_namespace n ON n.oid = s.relnamespace
JOIN pg_sequences ps ON ps.schemaname = n.nspname AND ps.sequencename = s.relname
LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid AND d.refobjsubid > 0
     AND d.deptype IN ('a', 'i')
LEFT JOIN pg_class tc ON tc.oid = d.refobjid
LEFT JOIN pg_namespace tn ON tn.oid = tc.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE s.relkind = 'S' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgshift_capture')
ORDER BY n.nspname, s.relname
"""


def _set_sequences(new_conn: t.Any, old_cur: t.Any, maps: t.Dict[t.Tuple[str, str], _TableMap]) -> t.Dict[str, int]:
    """Every ascending sequence of the previous database past what the new one issued (and past its column)."""
    by_old: t.Dict[t.Tuple[str, str], _TableMap] = {
        (tm.old_schema, tm.old_name): tm for tm in maps.values() if tm.old_name is not None
    }
    old_cur.execute(_SEQUENCES_SQL)
    old_seqs = old_cur.fetchall()
    with new_conn.cursor() as ncur:
        ncur.execute(_SEQUENCES_SQL)
        new_seqs = {(r[1], r[2]): r for r in ncur.fetchall()}
        new_by_column = {(r[3], r[4], r[5]): r for r in new_seqs.values() if r[4]}
    out: t.Dict[str, int] = {}
    for seq_oid, schema, name, tschema, tname, column, last_value, increment in old_seqs:
        if increment is None or int(increment) < 0:
            continue
        counterpart = None
        if tname and (tschema, tname) in by_old:
            tm = by_old[(tschema, tname)]
            inverse = {old: new for new, old in tm.columns.items()}
            if column in inverse:
                counterpart = new_by_column.get((tm.schema, tm.name, inverse[column]))
        if counterpart is None:
            counterpart = new_seqs.get((schema, name))
        candidates = [int(v) for v in (last_value, counterpart[6] if counterpart else None) if v is not None]
        if tname and column:
            old_cur.execute(
                sql.SQL("SELECT max({})::bigint FROM {}").format(sql.Identifier(column), sql.Identifier(tschema, tname))
            )
            top = old_cur.fetchone()[0]
            if top is not None:
                candidates.append(int(top))
        if not candidates:
            continue
        target = max(candidates)
        old_cur.execute("SELECT setval(%s::oid::regclass, %s, true)", (seq_oid, target))
        out["%s.%s" % (schema, name)] = target
    return out


_MARKER_DDL = [
    "CREATE SCHEMA IF NOT EXISTS pgshift_capture",
    """CREATE TABLE IF NOT EXISTS pgshift_capture.carried_back (
        run_id    text PRIMARY KEY,
        last_seq  bigint NOT NULL,
        detail    jsonb NOT NULL DEFAULT '{}'::jsonb,
        at        timestamptz NOT NULL DEFAULT now()
    )""",
]


def _already_carried(old_cur: t.Any, run_id: str) -> int:
    old_cur.execute("SELECT to_regclass('pgshift_capture.carried_back') IS NOT NULL")
    if not old_cur.fetchone()[0]:
        return 0
    old_cur.execute("SELECT last_seq FROM pgshift_capture.carried_back WHERE run_id = %s", (run_id,))
    row = old_cur.fetchone()
    return int(row[0]) if row else 0


def _no_capture(message: str) -> t.Dict[str, t.Any]:
    """The result when the writes made after the swap cannot be found: nothing can be carried, so nothing is."""
    return {"ok": False, "tables": {}, "refused": [message], "sequences": {}, "message": message, "capture": False}


def carry_back(cluster: ConnParams, new_db: str, old_db: str, run_id: str, force: bool = False) -> t.Dict[str, t.Any]:
    """Carry every change captured in ``new_db`` since the swap into ``old_db``; both are blocked when this runs.

    Returns ``{"ok": bool, "tables": {...}, "refused": [...], "sequences": {...}, "message": str}``; nothing is
    committed in ``old_db`` unless ``ok`` (or ``force``, which commits what can go back and reports the rest)."""
    new_conn = connect(cluster.with_database(new_db))
    old_conn = connect(cluster.with_database(old_db))
    try:
        if not has_capture(new_conn):
            new_conn.rollback()
            message = (
                "%r has no change capture (the release predates it, or it was closed as final): the writes made "
                "after the swap cannot be found" % new_db
            )
            return _no_capture(message)
        owner = capture_run(new_conn)
        if owner != run_id:
            return _no_capture("the change capture in %r belongs to run %s, not to run %s" % (new_db, owner, run_id))
        # the capture is read in one snapshot: applications are blocked, nothing is added while this runs
        new_conn.rollback()
        new_conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        maps = _load_maps(new_conn, old_conn)
        _survey(new_conn, maps)
        refused = [
            "%s: %d of %d rows written after the swap cannot go back (%s)" % (tm.key, n, tm.written, why)
            for tm in maps.values()
            for why, n in sorted(tm.unreturnable.items())
        ]
        refused += _large_objects_written(new_conn, old_conn)
        refused += _extension_config_written(new_conn, old_conn)
        with old_conn.cursor() as old_cur:
            after = _already_carried(old_cur, run_id)
            if refused and not force:
                old_conn.rollback()
                return _result(False, maps, refused, {}, {})
            quiet = _quiet_triggers(old_cur, maps)
            try:
                old_cur.execute("SAVEPOINT pgshift_carry")
                last = _apply(old_cur, maps, new_conn, after, isolate=False)
                old_cur.execute("RELEASE SAVEPOINT pgshift_carry")
            except (psycopg2.Error, _Missing):
                old_cur.execute("ROLLBACK TO SAVEPOINT pgshift_carry")
                last = _apply(old_cur, maps, new_conn, after, isolate=True)
            failed = [
                "%s: %d of %d rows written after the swap are refused by the previous schema (%s)"
                % (tm.key, len(tm.failed), tm.written, tm.failed[0])
                for tm in maps.values()
                if tm.failed
            ]
            refused += failed
            if failed and not force:
                old_conn.rollback()
                return _result(False, maps, refused, {}, {})
            _restore_triggers(old_cur, quiet)
            sequences = _set_sequences(new_conn, old_cur, maps)
            proofs: t.Dict[str, t.Any] = {}
            for tm in maps.values():
                if tm.old_name is None or not tm.touched:
                    continue
                skip: t.Set[str] = set()
                if tm.failed or tm.unreturnable:
                    skip = _keys_left_behind(new_conn, tm)
                proofs[tm.key] = _proof(new_conn, old_cur, tm, skip)
            unequal = [key for key, p in proofs.items() if not p["equal"]]
            if unequal and not force:
                old_conn.rollback()
                message = "the rows carried back differ from the new database's in %s" % ", ".join(unequal)
                return _result(False, maps, refused + [message], {}, proofs)
            for statement in _MARKER_DDL:
                old_cur.execute(statement)
            old_cur.execute(
                "INSERT INTO pgshift_capture.carried_back (run_id, last_seq, detail) VALUES (%s, %s, %s) "
                "ON CONFLICT (run_id) DO UPDATE SET last_seq = EXCLUDED.last_seq, detail = EXCLUDED.detail, at = now()",
                (run_id, last, json.dumps({"tables": proofs})),
            )
        old_conn.commit()
        new_conn.rollback()
        return _result(not refused, maps, refused, sequences, proofs)
    except psycopg2.Error as exc:
        old_conn.rollback()
        raise db_error(exc, "carrying the writes made after the swap from %r back to %r" % (new_db, old_db)) from None
    finally:
        old_conn.close()
        new_conn.close()


def _large_objects_written(new_conn: t.Any, old_conn: t.Any) -> t.List[str]:
    """Large objects are not captured (no row triggers on pg_largeobject): both databases held the same ones at the
    swap (the integrity check proved it), so any difference now was written after the swap and cannot be carried."""
    new_fp = _large_objects.fingerprint(new_conn)
    old_fp = _large_objects.fingerprint(old_conn)
    old_conn.rollback()
    if new_fp["checksum"] == old_fp["checksum"] and new_fp["count"] == old_fp["count"]:
        return []
    diff = _large_objects.differences(old_conn, new_conn)
    old_conn.rollback()
    return [
        "large objects: %d written after the swap (created %s, removed %s, changed %s); large objects cannot be "
        "carried back"
        % (
            int(diff["total"]),
            ", ".join(str(o) for o in diff["only_in_target"]) or "none",
            ", ".join(str(o) for o in diff["missing_in_target"]) or "none",
            ", ".join(str(c["oid"]) for c in diff["changed"]) or "none",
        )
    ]


def _extension_config_written(new_conn: t.Any, old_conn: t.Any) -> t.List[str]:
    """Extension configuration tables are not captured (they are not in the release's plan): at the swap the
    integrity check proved their rows under the registered condition equal on both sides, so a difference now was
    written after the swap and cannot be carried."""
    plans = _ext_config.plan(new_conn, old_conn)
    algorithm = _checksums.algorithm_for(min(int(new_conn.server_version), int(old_conn.server_version)))
    proofs = _ext_config.prove(new_conn, old_conn, plans, algorithm)
    old_conn.rollback()
    return [
        "%s: rows of extension %s's configuration table were written after the swap (%d rows under its condition "
        "now, %d in the previous database); they are not captured and cannot be carried back"
        % (key, proof["extension"], proof["source_rows"], proof["target_rows"])
        for key, proof in sorted(proofs.items())
        if not proof["match"]
    ]


def _keys_left_behind(new_conn: t.Any, tm: _TableMap) -> t.Set[str]:
    """Keys of the rows whose changes were not carried (forced swap-back): left out of the proof."""
    keys: t.Set[str] = set()
    failed_seqs = {int(f.split()[1]) for f in tm.failed}
    for seq, schema, name, op, old, new in _changes(new_conn, 0):
        if (schema, name) != (tm.schema, tm.name):
            continue
        if seq in failed_seqs or tm.why_not(op, old, new):
            for row in (old, new):
                if row is not None:
                    keys.add(tm.key_json(row))
    return keys


def _result(
    ok: bool,
    maps: t.Dict[t.Tuple[str, str], _TableMap],
    refused: t.List[str],
    sequences: t.Dict[str, int],
    proofs: t.Dict[str, t.Any],
) -> t.Dict[str, t.Any]:
    tables: t.Dict[str, t.Any] = {}
    for tm in maps.values():
        if not tm.written:
            continue
        entry: t.Dict[str, t.Any] = dict(tm.stats, written=tm.written)
        if tm.unreturnable:
            entry["cannot_go_back"] = dict(tm.unreturnable)
        if tm.failed:
            entry["refused_by_previous_schema"] = len(tm.failed)
            entry["first_refusal"] = tm.failed[0]
        if tm.key in proofs:
            entry["proof"] = proofs[tm.key]
        tables[tm.key] = entry
    written = ", ".join(
        "%s %d (%s)"
        % (
            key,
            e["written"],
            ", ".join("%s %d" % (op, e[op]) for op in ("inserted", "updated", "deleted", "truncated") if e[op]),
        )
        for key, e in sorted(tables.items())
    )
    if ok:
        message = "carried back the rows written after the swap: %s; proven by counts and checksums" % (
            written or "none"
        )
    else:
        message = "rows written after the swap: %s. %s" % (written or "none", "; ".join(refused))
    return {
        "ok": ok,
        "tables": tables,
        "refused": refused,
        "sequences": sequences,
        "message": message,
        "capture": True,
    }
