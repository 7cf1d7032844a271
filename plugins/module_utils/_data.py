# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""Carry production's data into a database built from the dev schema: catalogs, mapping file, plan, problems.

The target database holds the dev schema's pre-data section (tables, columns, defaults, CHECK/NOT NULL, types,
sequences) and no rows. For every target table this module works out where its rows come from (a source table, maybe
renamed), which columns are carried (maybe renamed, maybe with a changed type, maybe computed by an SQL expression from
the mapping file), which get their default, and what production holds that would be lost. :func:`find_problems` then
asks the source, before anything is copied, whether the data fits the target: NOT NULL, lengths, ranges, CHECKs,
enums, and the UNIQUE/PRIMARY KEY/FOREIGN KEY constraints the dev schema will add after the load.

Identifiers only travel through ``psycopg2.sql.Identifier``. Two kinds of SQL text are used verbatim and are
documented as such: expressions from the mapping file (reviewed like a migration), and expressions the target server
itself generated (``format_type``, ``pg_get_expr``).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing as t

from ansible_collections.pgshift.ops.plugins.module_utils._connection import db_error
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError
from ansible_collections.pgshift.ops.plugins.module_utils._identity import (
    column_key,
    normalize_column_key,
    normalize_table_key,
    table_key,
)

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # pragma: no cover - reported by _connection.connect
    pass

try:
    import yaml

    HAS_YAML = True
except ImportError:  # pragma: no cover - ansible-core depends on PyYAML
    HAS_YAML = False

T = t.TypeVar("T")
FIRST_USER_OID = 16384
DEFAULT_LEDGER_TABLES = ("pgmigrations", "pgshift_migration_meta")
SAMPLE_LIMIT = 5
CAST_BATCH = 1000
CAST_PROBE_BUDGET = 20000
_INTEGER_RANGES = {
    "smallint": (-32768, 32767),
    "integer": (-2147483648, 2147483647),
    "bigint": (-9223372036854775808, 9223372036854775807),
}


# ------------------------------------------------------------------------------------------------ catalogs
@dataclasses.dataclass
class Column:
    name: str
    type: str
    type_oid: int
    typmod: int
    notnull: bool
    default: t.Optional[str]
    generated: bool
    identity: str
    typtype: str
    base_oid: int

    @property
    def binary_safe(self) -> bool:
        """True when binary COPY of this column carries no database-specific OIDs (builtin types, enums)."""
        return self.type_oid < FIRST_USER_OID or self.typtype == "e"

    @property
    def builtin(self) -> bool:
        return self.type_oid < FIRST_USER_OID


@dataclasses.dataclass
class Table:
    schema: str
    name: str
    oid: int
    kind: str
    rows_estimate: int
    bytes: int
    columns: t.List[Column] = dataclasses.field(default_factory=list)

    @property
    def key(self) -> str:
        """The table's identity as a string (``_identity.table_key``: injective, ``public.`` left out)."""
        return table_key(self.schema, self.name)

    @property
    def ident(self) -> "sql.Composable":
        return sql.Identifier(self.schema, self.name)

    @property
    def partitioned(self) -> bool:
        return self.kind == "p"

    def from_clause(self) -> "sql.Composable":
        """Rows of this table exactly once: ONLY for plain tables (no inheritance children), the whole tree for a
        partitioned table (its leaves are never listed on their own)."""
        if self.partitioned:
            return self.ident
        return sql.SQL("ONLY {}").format(self.ident)

    def column(self, name: str) -> t.Optional[Column]:
        for col in self.columns:
            if col.name == name:
                return col
        return None


_TABLES_SQL = """
SELECT c.oid, n.nspname, c.relname, c.relkind,
       CASE WHEN c.relkind = 'p' THEN
         (SELECT coalesce(sum(greatest(l.reltuples, 0)), 0) FROM pg_partition_tree(c.oid) p
            JOIN pg_class l ON l.oid = p.relid WHERE p.isleaf)
       ELSE greatest(c.reltuples, 0) END::bigint,
       CASE WHEN c.relkind = 'p' THEN
         (SELECT coalesce(sum(pg_total_relation_size(p.relid)), 0) FROM pg_partition_tree(c.oid) p WHERE p.isleaf)
       ELSE pg_total_relation_size(c.oid) END::bigint
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
  AND n.nspname NOT IN ('pgshift_capture', 'pgshift_online')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY n.nspname, c.relname
"""

_COLUMNS_SQL = """
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.atttypid, a.atttypmod, a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), a.attgenerated <> '', a.attidentity::text, ty.typtype::text,
       CASE WHEN ty.typtype = 'd' THEN ty.typbasetype ELSE ty.oid END
FROM pg_attribute a
JOIN pg_type ty ON ty.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""


def read_tables(conn: t.Any) -> t.Dict[str, Table]:
    """User tables (plain and partitioned roots; leaf partitions are reached through their root), by key."""
    try:
        with conn.cursor() as cur:
            cur.execute(_TABLES_SQL)
            tables = {r[0]: Table(r[1], r[2], r[0], r[3], int(r[4]), int(r[5])) for r in cur.fetchall()}
            if tables:
                cur.execute(_COLUMNS_SQL, (list(tables),))
                for r in cur.fetchall():
                    tables[r[0]].columns.append(
                        Column(
                            r[1], r[2], int(r[3]), int(r[4]), bool(r[5]), r[6], bool(r[7]), r[8] or "", r[9], int(r[10])
                        )
                    )
    except psycopg2.Error as exc:
        raise db_error(exc, "reading the table catalog") from None
    return {tb.key: tb for tb in tables.values()}


def enum_labels(conn: t.Any, type_oid: int) -> t.List[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT enumlabel FROM pg_enum WHERE enumtypid = %s ORDER BY enumsortorder", (type_oid,))
        return [r[0] for r in cur.fetchall()]


def enum_labels_by_name(conn: t.Any, type_name: str) -> t.Optional[t.List[str]]:
    """Labels of the enum called ``type_name`` (format_type spelling) in this database, None when there is none."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT t.oid FROM pg_type t WHERE t.typtype = 'e' AND format_type(t.oid, NULL) = %s LIMIT 1", (type_name,)
        )
        row = cur.fetchone()
    return enum_labels(conn, row[0]) if row else None


@dataclasses.dataclass
class KeyConstraint:
    """A UNIQUE/PRIMARY KEY/FOREIGN KEY the target will have after post-data, by table key and column names."""

    table: str
    type: str
    columns: t.List[str]
    ref_table: t.Optional[str] = None
    ref_columns: t.Optional[t.List[str]] = None
    name: t.Optional[str] = None

    def ident(self) -> t.Tuple[t.Any, ...]:
        return (self.table, self.type, tuple(self.columns), self.ref_table, tuple(self.ref_columns or ()))


_KEYS_SQL = """
SELECT n.nspname, c.relname,
       con.contype::text, con.conname,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i),
       rn.nspname, rc.relname,
       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i)
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class rc ON rc.oid = con.confrelid
LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
WHERE con.contype IN ('p', 'u', 'f') AND NOT c.relispartition AND con.conparentid = 0
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
UNION ALL
SELECT n.nspname, c.relname,
       'u', ic.relname,
       ARRAY(SELECT a.attname FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(n, o)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.o),
       NULL, NULL, NULL
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE i.indisunique AND i.indpred IS NULL AND 0 <> ALL (i.indkey::int2[]) AND NOT c.relispartition
  AND c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%'
  AND NOT EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = i.indexrelid)
"""


def read_key_constraints(conn: t.Any) -> t.List[KeyConstraint]:
    """PRIMARY KEY, UNIQUE (constraints and plain unique indexes) and FOREIGN KEY definitions of a database."""
    try:
        with conn.cursor() as cur:
            cur.execute(_KEYS_SQL)
            rows = cur.fetchall()
    except psycopg2.Error as exc:
        raise db_error(exc, "reading key constraints") from None
    return [
        KeyConstraint(
            table_key(r[0], r[1]),
            r[2],
            list(r[4]),
            table_key(r[5], r[6]) if r[6] is not None else None,
            list(r[7]) if r[7] else None,
            r[3],
        )
        for r in rows
    ]


def check_constraints(conn: t.Any, table: Table) -> t.List[t.Tuple[str, str]]:
    """(name, expression) of the table's CHECK constraints, as the target server prints them."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT conname, pg_get_expr(conbin, conrelid) FROM pg_constraint WHERE conrelid = %s AND contype = 'c' "
            "ORDER BY conname",
            (table.oid,),
        )
        return [(r[0], r[1]) for r in cur.fetchall()]


# ------------------------------------------------------------------------------------------------ mapping file
@dataclasses.dataclass
class Mapping:
    tables: t.Dict[str, t.Dict[str, t.Any]] = dataclasses.field(default_factory=dict)
    accept_tables: t.Set[str] = dataclasses.field(default_factory=set)
    accept_columns: t.Set[str] = dataclasses.field(default_factory=set)
    # "table.column" entries (same syntax as accept_loss.columns) whose values may change in the conversion.
    accept_change: t.Set[str] = dataclasses.field(default_factory=set)

    def __post_init__(self) -> None:
        # Every table and column named in the file, in the one canonical key form (_identity): ``public.orders`` and
        # ``orders`` are one table, ``a.b`` (schema a) and ``"a.b"`` (public) are two.
        try:
            tables: t.Dict[str, t.Dict[str, t.Any]] = {}
            for name, raw in self.tables.items():
                key = normalize_table_key(name)
                if key in tables:
                    raise PgShiftError("tables names table %s twice (as %r and another spelling)" % (key, name))
                spec = dict(raw or {})
                if spec.get("from") is not None:
                    spec["from"] = normalize_table_key(str(spec["from"]))
                tables[key] = spec
            self.tables = tables
            self.accept_tables = {normalize_table_key(x) for x in self.accept_tables}
            self.accept_columns = {normalize_column_key(x) for x in self.accept_columns}
        except PgShiftError as exc:
            raise PgShiftError("mapping_file: %s" % exc) from None

    def table_from(self, target_key: str) -> t.Optional[str]:
        spec = self.tables.get(target_key) or {}
        return spec.get("from")

    def column_spec(self, target_key: str, column: str) -> t.Dict[str, t.Any]:
        spec = self.tables.get(target_key) or {}
        return dict((spec.get("columns") or {}).get(column) or {})


def load_mapping(path: t.Optional[str]) -> Mapping:
    """Read and validate the mapping file (format: sample_app/mapping.yml, docs/data.md)."""
    if not path:
        return Mapping()
    if not HAS_YAML:  # pragma: no cover
        raise PgShiftError("PyYAML is required to read mapping_file")
    try:
        with open(path, encoding="utf-8") as handle:
            doc = yaml.safe_load(handle) or {}
    except OSError as exc:
        raise PgShiftError("cannot read mapping_file %s: %s" % (path, exc.strerror)) from None
    except yaml.YAMLError as exc:
        raise PgShiftError("mapping_file %s is not valid YAML: %s" % (path, exc)) from None
    if not isinstance(doc, dict):
        raise PgShiftError(
            "mapping_file %s: the top level must be a mapping with keys tables, accept_loss, accept_change" % path
        )
    unknown = set(doc) - {"tables", "accept_loss", "accept_change"}
    if unknown:
        raise PgShiftError(
            "mapping_file %s: unknown top-level keys %s (allowed: tables, accept_loss, accept_change)"
            % (path, sorted(unknown))
        )
    tables = doc.get("tables") or {}
    if not isinstance(tables, dict):
        raise PgShiftError("mapping_file %s: tables must be a mapping of table name to settings" % path)
    for name, raw in tables.items():
        spec = raw or {}
        if not isinstance(spec, dict) or set(spec) - {"from", "columns"}:
            raise PgShiftError("mapping_file %s: tables.%s takes only 'from' and 'columns'" % (path, name))
        for col, cspec in (spec.get("columns") or {}).items():
            if not isinstance(cspec, dict) or set(cspec) - {"from", "expression"} or len(cspec) != 1:
                raise PgShiftError(
                    "mapping_file %s: tables.%s.columns.%s needs exactly one of 'from' or 'expression'"
                    % (path, name, col)
                )
        tables[name] = spec
    accept = doc.get("accept_loss") or {}
    if not isinstance(accept, dict) or set(accept) - {"tables", "columns"}:
        raise PgShiftError("mapping_file %s: accept_loss takes only 'tables' and 'columns' lists" % path)
    change = doc.get("accept_change") or []
    if not isinstance(change, list):
        raise PgShiftError("mapping_file %s: accept_change must be a list of table.column entries" % path)
    return Mapping(
        {str(k): v for k, v in tables.items()},
        {str(x) for x in accept.get("tables") or []},
        {str(x) for x in accept.get("columns") or []},
        {str(x) for x in change},
    )


# ------------------------------------------------------------------------------------------------ the plan
def _need(value: t.Optional[T], what: str) -> T:
    """The value, or an internal error (a plan entry used where it cannot be)."""
    if value is None:
        raise PgShiftError("internal error: %s is missing" % what)
    return value


def text_out(value: "sql.Composable") -> "sql.Composable":
    """The value's text form as its type's output function writes it, which is what text COPY sends (``::text`` is
    not always that: ``true::text`` is ``'true'``, COPY writes ``t``; ``inet::text`` adds the mask)."""
    # concat() calls the output function of its argument (and has no % placeholder to escape)
    return sql.SQL("(CASE WHEN ({v}) IS NULL THEN NULL ELSE concat({v}) END)").format(v=value)


# Source types whose text form is a JSON document the target reads as jsonb: compared as JSON (whitespace, key
# order, number spelling and escapes are normalised, not changed), a value changes only when an object in it has
# duplicate keys (jsonb keeps the last one).
JSON_SOURCE_TYPES = ("json", "text", "character varying")


def json_duplicate_keys(value: "sql.Composable") -> "sql.Composable":
    """True when the JSON document ``value`` (read as json, which keeps every key) has an object with a key twice,
    at any depth (a recursive walk over json_each / json_array_elements)."""
    return sql.SQL(
        "EXISTS (WITH RECURSIVE walk(j) AS (SELECT ({})::json UNION ALL "
        "SELECT c.j FROM walk w CROSS JOIN LATERAL ("
        "SELECT e.value FROM json_each(CASE WHEN json_typeof(w.j) = 'object' THEN w.j END) e "
        "UNION ALL SELECT a.value FROM json_array_elements(CASE WHEN json_typeof(w.j) = 'array' THEN w.j END) a"
        ") c(j)) "
        "SELECT 1 FROM walk w WHERE json_typeof(w.j) = 'object' "
        "AND (SELECT count(*) <> count(DISTINCT k) FROM json_object_keys(w.j) k))"
    ).format(value)


@dataclasses.dataclass
class CarriedColumn:
    target: Column
    source: t.Optional[Column]
    expression: t.Optional[str] = None
    # the mapping's accept_change names it: the conversion may change values, the proof compares with the conversion
    accepted: bool = False

    @property
    def changed(self) -> bool:
        """True when the value needs a conversion (type changed, or computed by an expression)."""
        if self.expression is not None or self.source is None:
            return True
        return self.source.type != self.target.type or self.source.typtype != self.target.typtype

    def source_value(self) -> "sql.Composable":
        """The value as the source selects it (no cast: the target's input function parses the text form)."""
        if self.expression is not None:
            return sql.SQL("({})").format(sql.SQL(self.expression))
        return sql.Identifier(_need(self.source, "source column").name)

    def source_as_target(self) -> "sql.Composable":
        """The source value converted the way the copy converts it: its text form read as the target type."""
        value = self.source_value()
        if not self.changed:
            return value
        if self.target.builtin:
            # Catalog-generated type spelling (format_type on the target), valid SQL for a builtin type.
            return sql.SQL("CAST({} AS {})").format(text_out(value), sql.SQL(self.target.type))
        return text_out(value)

    @property
    def type_change(self) -> bool:
        """A source column whose type changes (not an expression): its values go through a conversion."""
        return self.expression is None and self.source is not None and self.changed

    @property
    def json_rule(self) -> bool:
        """Converted to jsonb from a JSON document (json, text): compared as JSON, see JSON_SOURCE_TYPES."""
        if not self.type_change or self.target.type != "jsonb":
            return False
        return _need(self.source, "source").type in JSON_SOURCE_TYPES

    @property
    def compared_as_source(self) -> bool:
        """The proof compares production's ORIGINAL values with the target's converted back to the source type:
        a type change that is not accepted (so it must change no value) from a builtin source type (whose spelling
        the target server knows)."""
        return self.type_change and not self.accepted and _need(self.source, "source").builtin

    def proof_source(self) -> t.Tuple["sql.Composable", int, bool]:
        """(value, type OID to hash it as, hash by the type's equality) of the source side of the proof."""
        src = _need(self.source, "source column") if self.compared_as_source else None
        if src is not None and self.json_rule:
            value = sql.Identifier(src.name)
            return (
                sql.SQL("(CASE WHEN {dup} THEN 'duplicate keys: ' || {orig} ELSE {norm} END)").format(
                    dup=json_duplicate_keys(text_out(value)),
                    orig=text_out(value),
                    norm=text_out(sql.SQL("CAST({} AS jsonb)").format(text_out(value))),
                ),
                25,
                False,
            )
        if src is not None:
            return sql.Identifier(src.name), src.type_oid, True
        return self.source_as_target(), self.target.type_oid, False

    def back_text(self, value: "sql.Composable") -> "sql.Composable":
        """The text a target value is read back from, as the source type: its output text, except for a blank-padded
        ``character(n)`` target whose padding is the type's semantics, not a change (its ``::text`` drops it)."""
        if re.match(r"^character(\(\d+\))?$", self.target.type):
            return sql.SQL("CAST({} AS text)").format(value)
        return text_out(value)

    def proof_target(self) -> t.Tuple["sql.Composable", int, bool]:
        """The target side matching :meth:`proof_source`, computed on the target server from its own values."""
        value = sql.Identifier(self.target.name)
        if self.compared_as_source:
            src = _need(self.source, "source column")
            if self.json_rule:
                return text_out(value), 25, False
            return sql.SQL("CAST({} AS {})").format(self.back_text(value), sql.SQL(src.type)), src.type_oid, True
        return value, self.target.type_oid, False

    def describe(self) -> t.Dict[str, t.Any]:
        out: t.Dict[str, t.Any] = {"name": self.target.name, "target_type": self.target.type}
        if self.expression is not None:
            out["expression"] = self.expression
        elif self.source is not None:
            out["from"] = self.source.name
            out["source_type"] = self.source.type
        out["cast"] = self.changed
        return out


@dataclasses.dataclass
class TablePlan:
    target: Table
    source: t.Optional[Table]
    carried: t.List[CarriedColumn]
    defaulted: t.List[Column]
    generated: t.List[str]
    ledger: bool = False
    # (generated target column, stored source column of the same or the mapped name): production's stored values
    # are replaced by what the target computes
    overwritten: t.List[t.Tuple[Column, Column]] = dataclasses.field(default_factory=list)

    @property
    def key(self) -> str:
        return self.target.key

    @property
    def format(self) -> str:
        if all(
            not c.changed and c.target.binary_safe and c.source is not None and c.source.binary_safe
            for c in self.carried
        ):
            return "binary"
        return "text"

    def select_sql(self) -> "sql.Composed":
        """The SELECT that feeds COPY: carried columns in target order, straight from the source."""
        cols = sql.SQL(", ").join(c.source_value() for c in self.carried)
        return sql.SQL("SELECT {} FROM {}").format(cols, _need(self.source, "source table").from_clause())

    def target_columns(self) -> "sql.Composed":
        return sql.SQL(", ").join(sql.Identifier(c.target.name) for c in self.carried)

    def mapped_source(self, cast: bool = True, extra: t.Sequence["sql.Composable"] = ()) -> "sql.Composed":
        """A subquery over the source that looks like the target table: target column names, target types (source
        types with ``cast=False``, for when a value that does not convert would abort the whole query); ``extra``
        items are appended to its select list."""
        source = _need(self.source, "source table")
        items: t.List["sql.Composable"] = [
            sql.SQL("{} AS {}").format(
                c.source_as_target() if cast else c.source_value(), sql.Identifier(c.target.name)
            )
            for c in self.carried
        ]
        for col in self.defaulted:
            col_type = sql.SQL(col.type) if col.builtin else sql.SQL("text")
            if col.default is not None and "nextval(" not in col.default and col.builtin:
                # The value the column will get: its default (server-printed expression of the target).
                items.append(sql.SQL("({})::{} AS {}").format(sql.SQL(col.default), col_type, sql.Identifier(col.name)))
            else:
                items.append(sql.SQL("NULL::{} AS {}").format(col_type, sql.Identifier(col.name)))
        items.extend(extra)
        if not items:
            items = [sql.SQL("1 AS {}").format(sql.Identifier("?pgshift_empty"))]
        return sql.SQL("(SELECT {} FROM {})").format(sql.SQL(", ").join(items), source.from_clause())

    def describe(self) -> t.Dict[str, t.Any]:
        return {
            "table": self.key,
            "source": self.source.key if self.source else None,
            "new": self.source is None,
            "ledger": self.ledger,
            "partitioned": self.target.partitioned,
            "columns": [c.describe() for c in self.carried],
            "defaulted": [c.name for c in self.defaulted],
            "generated": self.generated,
            "rows_estimate": self.source.rows_estimate if self.source else 0,
            "bytes_estimate": self.source.bytes if self.source else 0,
            "format": self.format if self.source else None,
        }


@dataclasses.dataclass
class Plan:
    tables: t.List[TablePlan]
    lost_tables: t.List[str]
    lost_columns: t.List[str]
    accepted_tables: t.List[str]
    accepted_columns: t.List[str]
    warnings: t.List[str] = dataclasses.field(default_factory=list)
    accept_change: t.Set[str] = dataclasses.field(default_factory=set)
    accept_loss_columns: t.Set[str] = dataclasses.field(default_factory=set)
    # value changes found by ProblemFinder that do not stop the release (accepted, or no row differs)
    accepted_changes: t.List[t.Dict[str, t.Any]] = dataclasses.field(default_factory=list)

    @property
    def unaccepted(self) -> t.List[str]:
        return self.lost_tables + self.lost_columns

    def lost(self) -> t.Dict[str, t.Any]:
        return {
            "tables": self.lost_tables,
            "columns": self.lost_columns,
            "accepted_tables": self.accepted_tables,
            "accepted_columns": self.accepted_columns,
        }

    def by_key(self) -> t.Dict[str, TablePlan]:
        return {tp.key: tp for tp in self.tables}


def _words(expression: str) -> t.Set[str]:
    return {w.strip('"') for w in re.findall(r'"(?:[^"]|"")+"|[A-Za-z_\u0080-\uffff][\w$\u0080-\uffff]*', expression)}


def _did_you_mean(name: str, choices: t.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(choices), n=3, cutoff=0.6)
    if not close:
        return ""
    return "; did you mean %s?" % " or ".join(repr(c) for c in close)


def check_mapping_names(
    source_tables: t.Mapping[str, Table],
    target_tables: t.Mapping[str, Table],
    mapping: Mapping,
    ledger: t.AbstractSet[str] = frozenset(DEFAULT_LEDGER_TABLES),
) -> None:
    """Refuse a target with no tables (an empty dev schema) and mapping entries naming a target table or column that
    does not exist, with the closest names (a typo would otherwise surface as a source column "lost")."""
    user_targets = [k for k in target_tables if k not in ledger]
    user_sources = [k for k in source_tables if k not in ledger]
    if not user_targets and (user_sources or mapping.tables):
        raise PgShiftError(
            "the dev schema is empty: the target database has no tables, while production has %d (%s%s); point "
            "pgshift_dev_connection at the database that holds the dev schema, or run its migrations first"
            % (len(user_sources), ", ".join(sorted(user_sources)[:5]), ", ..." if len(user_sources) > 5 else "")
        )
    for name, spec in mapping.tables.items():
        target = target_tables.get(name)
        if target is None:
            raise PgShiftError(
                "mapping_file names table %r, which the dev schema does not have%s"
                % (name, _did_you_mean(name, target_tables)),
                table=name,
            )
        names = [c.name for c in target.columns]
        for col in (spec or {}).get("columns") or {}:
            if str(col) not in names:
                raise PgShiftError(
                    "mapping_file names column %s.%s, which the dev schema's table %s does not have (its columns: %s)%s"
                    % (name, col, name, ", ".join(names) or "none", _did_you_mean(str(col), names)),
                    table=name,
                    column=str(col),
                )


def build_plan(
    source_tables: t.Mapping[str, Table],
    target_tables: t.Mapping[str, Table],
    mapping: Mapping,
    ledger_tables: t.Sequence[str] = DEFAULT_LEDGER_TABLES,
    ledger_source_tables: t.Optional[t.Mapping[str, Table]] = None,
) -> Plan:
    """Match every target table and column with its source; list what the source holds that has no destination.

    ``ledger_source_tables``: when given, the ledger tables are planned from these tables (the dev database) instead
    of the source; a ledger table missing there stays empty.
    """
    ledger = {normalize_table_key(x) for x in ledger_tables}
    check_mapping_names(source_tables, target_tables, mapping, ledger)
    plans: t.List[TablePlan] = []
    used_sources: t.Dict[str, str] = {}
    used_columns: t.Dict[str, t.Set[str]] = {}
    warnings: t.List[str] = []
    for key in sorted(target_tables):
        target = target_tables[key]
        is_ledger = key in ledger
        pool = ledger_source_tables if (is_ledger and ledger_source_tables is not None) else source_tables
        source_key = mapping.table_from(key) or key
        if mapping.table_from(key) and source_key not in source_tables:
            raise PgShiftError(
                "mapping_file: tables.%s.from names %r, which the source database does not have%s"
                % (key, source_key, _did_you_mean(source_key, source_tables)),
                table=key,
            )
        source = pool.get(source_key)
        if source is not None and not (is_ledger and pool is not source_tables):
            if source_key in used_sources:
                raise PgShiftError(
                    "source table %r would feed both %r and %r; map it once"
                    % (source_key, used_sources[source_key], key)
                )
            used_sources[source_key] = key
        carried: t.List[CarriedColumn] = []
        defaulted: t.List[Column] = []
        generated: t.List[str] = []
        overwritten: t.List[t.Tuple[Column, Column]] = []
        used: t.Set[str] = set()
        for col in target.columns:
            spec = mapping.column_spec(key, col.name)
            if col.generated:
                generated.append(col.name)
                stored = source.column(spec.get("from", col.name)) if source is not None else None
                if stored is not None and not stored.generated:
                    overwritten.append((col, stored))
                    used.add(stored.name)
                used.add(col.name)
                continue
            if source is None:
                if spec:
                    raise PgShiftError(
                        "mapping_file: tables.%s.columns.%s has no source table to read from" % (key, col.name),
                        table=key,
                    )
                defaulted.append(col)
                continue
            if "expression" in spec:
                carried.append(CarriedColumn(col, None, str(spec["expression"])))
                used |= {c.name for c in source.columns if c.name in _words(str(spec["expression"]))}
                continue
            src_name = spec.get("from", col.name)
            src_col = source.column(src_name)
            if src_col is None:
                if "from" in spec:
                    raise PgShiftError(
                        "mapping_file: tables.%s.columns.%s.from names %r, which source table %s does not have%s"
                        % (
                            key,
                            col.name,
                            src_name,
                            source.key,
                            _did_you_mean(src_name, [c.name for c in source.columns]),
                        ),
                        table=key,
                    )
                defaulted.append(col)
                continue
            accepted = "%s.%s" % (key, col.name) in mapping.accept_change
            carried.append(CarriedColumn(col, src_col, accepted=accepted))
            used.add(src_col.name)
        if source is not None and pool is source_tables:
            used_columns[source.key] = used
        plans.append(TablePlan(target, source, carried, defaulted, generated, is_ledger, overwritten))

    lost_tables: t.List[str] = []
    lost_columns: t.List[str] = []
    accepted_tables: t.List[str] = []
    accepted_columns: t.List[str] = []
    for skey in sorted(source_tables):
        if skey in ledger:
            continue
        if skey not in used_sources:
            (accepted_tables if skey in mapping.accept_tables else lost_tables).append(skey)
            continue
        for col in source_tables[skey].columns:
            if col.name in used_columns.get(skey, set()):
                continue
            name = column_key(skey, col.name)
            (accepted_columns if name in mapping.accept_columns else lost_columns).append(name)
    for name in sorted(mapping.accept_tables - set(accepted_tables)):
        warnings.append("accept_loss.tables lists %r, which is not lost (it is carried or absent)" % name)
    overwritten_names = {
        "%s.%s" % (_need(tp.source, "source").key, stored.name) for tp in plans for _gen, stored in tp.overwritten
    }
    for name in sorted(mapping.accept_columns - set(accepted_columns) - overwritten_names):
        warnings.append("accept_loss.columns lists %r, which is not lost (it is carried or absent)" % name)
    plans.sort(key=lambda p: (-(p.source.bytes if p.source else 0), p.key))
    return Plan(
        plans,
        lost_tables,
        lost_columns,
        accepted_tables,
        accepted_columns,
        warnings,
        set(mapping.accept_change),
        set(mapping.accept_columns),
    )


# ------------------------------------------------------------------------------------------------ problems
def _sample(values: t.Iterable[t.Any]) -> t.List[str]:
    out = []
    for v in values:
        text = "NULL" if v is None else str(v)
        out.append(text if len(text) <= 80 else text[:77] + "...")
    return out


class ProblemFinder:
    """Runs the fit queries on the source, each in a savepoint so one failing query does not hide the others."""

    def __init__(self, source_conn: t.Any, target_conn: t.Any, plan: Plan) -> None:
        self.src = source_conn
        self.tgt = target_conn
        self.plan = plan
        self.problems: t.List[t.Dict[str, t.Any]] = []
        self.queries = 0

    def _query(
        self, query: "sql.Composable", params: t.Sequence[t.Any] = ()
    ) -> t.Tuple[t.Optional[t.List[t.Any]], t.Optional[str]]:
        self.queries += 1
        with self.src.cursor() as cur:
            cur.execute("SAVEPOINT pgshift_probe")
            try:
                cur.execute(query, params)
                rows = cur.fetchall()
            except psycopg2.Error as exc:
                cur.execute("ROLLBACK TO SAVEPOINT pgshift_probe")
                diag = getattr(exc, "diag", None)
                return None, getattr(diag, "message_primary", None) or str(exc).strip().splitlines()[0]
            cur.execute("RELEASE SAVEPOINT pgshift_probe")
            return rows, None

    def add(
        self, table: str, column: t.Optional[str], kind: str, count: t.Optional[int], sample: t.List[str], message: str
    ) -> None:
        self.problems.append(
            {"table": table, "column": column, "kind": kind, "count": count, "sample": sample, "message": message}
        )

    def _count_where(
        self, tp: TablePlan, value: "sql.Composable", condition: "sql.Composable", params: t.Sequence[t.Any] = ()
    ) -> t.Tuple[int, t.List[str], t.Optional[str]]:
        query = sql.SQL("SELECT count(*) OVER (), v::text FROM (SELECT {} AS v FROM {}) s WHERE {} LIMIT %s").format(
            value, _need(tp.source, "source table").from_clause(), condition
        )
        rows, err = self._query(query, list(params) + [SAMPLE_LIMIT])
        if err is not None or rows is None:
            return 0, [], err
        return (int(rows[0][0]) if rows else 0), _sample(r[1] for r in rows), None

    def columns(self, tp: TablePlan) -> None:
        source = _need(tp.source, "source table")
        has_rows: t.Optional[bool] = None
        for col in tp.defaulted:
            if col.notnull and col.default is None and not col.identity:
                if has_rows is None:
                    rows = self._query(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(source.from_clause()))[0]
                    has_rows = bool(rows and rows[0][0])
                if has_rows:
                    self.add(
                        tp.key,
                        col.name,
                        "not_null_no_default",
                        None,
                        [],
                        "column %s.%s is NOT NULL without a default and gets no value from the source; map it "
                        "(from/expression) or give it a default" % (tp.key, col.name),
                    )
        for cc in tp.carried:
            tcol = cc.target
            value = cc.source_value()
            if tcol.notnull and not tcol.identity:
                count, sample, err = self._count_where(tp, value, sql.SQL("v IS NULL"))
                if count:
                    self.add(
                        tp.key,
                        tcol.name,
                        "not_null",
                        count,
                        sample,
                        "%d source rows have NULL for %s.%s, which is NOT NULL in the target"
                        % (count, tp.key, tcol.name),
                    )
            if not cc.changed and tcol.typtype != "e":
                continue
            found = False
            base = re.sub(r"\[\]$", "", tcol.type)
            match = re.match(r"^(character varying|character|bit varying|bit)\((\d+)\)$", base)
            if match and not tcol.type.endswith("[]"):
                limit = int(match.group(2))
                count, sample, err = self._count_where(tp, value, sql.SQL("length((v)::text) > %s"), [limit])
                if count:
                    found = True
                    self.add(
                        tp.key,
                        tcol.name,
                        "too_long",
                        count,
                        sample,
                        "%d source values of %s.%s are longer than %s" % (count, tp.key, tcol.name, tcol.type),
                    )
            if tcol.type in _INTEGER_RANGES:
                low, high = _INTEGER_RANGES[tcol.type]
                cond = sql.SQL(
                    "(v)::text ~ '^\\s*[-+]?[0-9]+(\\.0*)?\\s*$' AND ((v)::text)::numeric NOT BETWEEN %s AND %s"
                )
                count, sample, err = self._count_where(tp, value, cond, [low, high])
                if count:
                    found = True
                    self.add(
                        tp.key,
                        tcol.name,
                        "out_of_range",
                        count,
                        sample,
                        "%d source values of %s.%s are out of range for %s" % (count, tp.key, tcol.name, tcol.type),
                    )
            nmatch = re.match(r"^numeric\((\d+),(\d+)\)$", tcol.type)
            if nmatch:
                precision, scale = int(nmatch.group(1)), int(nmatch.group(2))
                cond = sql.SQL(
                    "(v)::text ~ '^\\s*[-+]?[0-9.]+\\s*$' "
                    "AND abs(round(((v)::text)::numeric, %s)) >= power(10::numeric, %s)"
                )
                count, sample, err = self._count_where(tp, value, cond, [scale, precision - scale])
                if count:
                    found = True
                    self.add(
                        tp.key,
                        tcol.name,
                        "out_of_range",
                        count,
                        sample,
                        "%d source values of %s.%s do not fit %s" % (count, tp.key, tcol.name, tcol.type),
                    )
            if tcol.typtype == "e":
                labels = enum_labels(self.tgt, tcol.type_oid)
                count, sample, err = self._count_where(tp, value, sql.SQL("(v)::text <> ALL(%s)"), [labels])
                if count:
                    found = True
                    self.add(
                        tp.key,
                        tcol.name,
                        "enum",
                        count,
                        sample,
                        "%d source values of %s.%s are not labels of enum %s" % (count, tp.key, tcol.name, tcol.type),
                    )
                continue
            if not found and tcol.builtin:
                # Every other conversion: the text form must parse as the target type (what the copy will do).
                query = sql.SQL("SELECT count(CAST({} AS {})) FROM (SELECT {} AS v FROM {}) s").format(
                    text_out(sql.SQL("v")), sql.SQL(tcol.type), value, source.from_clause()
                )
                _rows, err = self._query(query)
                if err is not None:
                    self.cast_errors(tp, cc, err)
                elif cc.type_change:
                    self.value_changes(tp, cc)
            elif not found and cc.type_change:
                self.plan.warnings.append(
                    "values of %s.%s converted to %s (not a builtin type) were not compared with production's"
                    % (tp.key, tcol.name, tcol.type)
                )
        self.generated_over(tp)

    def _where(self, tp: TablePlan, column: str) -> str:
        source = _need(tp.source, "source table")
        return "%s.%s.%s" % (source.schema, source.name, column)

    def cast_errors(self, tp: TablePlan, cc: CarriedColumn, first_error: str) -> None:
        """Count every source row whose text form the target type rejects, with examples.

        PostgreSQL 16+: one query with ``pg_input_is_valid(text, type)``, the safe test of the target type's input
        function. PostgreSQL 15 and older have no safe cast and the plan is read-only on the source (no temporary
        function), so the distinct text forms (with their row counts) are streamed from a server-side cursor and
        probed in batches of ``CAST_BATCH``, each in a savepoint; a failing batch is split in halves until the
        failing values are alone. Memory stays one batch; the cost is one query per batch plus about 2 log2(batch)
        per bad value, bounded by ``CAST_PROBE_BUDGET`` queries, beyond which the count is a lower bound.
        """
        tcol = cc.target
        source = _need(tp.source, "source table")
        text = text_out(cc.source_value())
        state = {"budget": CAST_PROBE_BUDGET, "rows": 0, "distinct": 0}
        sample: t.List[str] = []
        complete = True
        counted = False
        if int(getattr(self.src, "server_version", 0)) >= 160000:
            query = sql.SQL(
                "SELECT count(*), count(DISTINCT o), (array_agg(DISTINCT o ORDER BY o))[1:%s] FROM "
                "(SELECT {} AS o FROM {}) s WHERE o IS NOT NULL AND NOT pg_input_is_valid(o, %s)"
            ).format(text, source.from_clause())
            rows, err = self._query(query, [SAMPLE_LIMIT, tcol.type])
            if err is None and rows:
                state["rows"], state["distinct"] = int(rows[0][0]), int(rows[0][1])
                sample = [str(v) for v in rows[0][2] or []]
                counted = True
        if not counted:
            probe = sql.SQL("SELECT count(CAST(x AS {})) FROM unnest(%s::text[]) x").format(sql.SQL(tcol.type))

            def fails(values: t.List[t.Tuple[str, int]]) -> None:
                if state["budget"] <= 0:
                    return
                state["budget"] -= 1
                _rows, err = self._query(probe, [[v for v, _n in values]])
                if err is None:
                    return
                if len(values) == 1:
                    state["rows"] += values[0][1]
                    state["distinct"] += 1
                    if len(sample) < SAMPLE_LIMIT:
                        sample.append(values[0][0])
                    return
                half = len(values) // 2
                fails(values[:half])
                fails(values[half:])

            query = sql.SQL("SELECT o, count(*) FROM (SELECT {} AS o FROM {}) s WHERE o IS NOT NULL GROUP BY o").format(
                text, source.from_clause()
            )
            with self.src.cursor(name="pgshift_cast_probe") as cur:
                cur.itersize = CAST_BATCH
                cur.execute(query)
                while True:
                    batch = cur.fetchmany(CAST_BATCH)
                    if not batch:
                        break
                    fails([(str(r[0]), int(r[1])) for r in batch])
                    if state["budget"] <= 0:
                        complete = False
                        break
        self.add(
            tp.key,
            tcol.name,
            "cast",
            state["rows"],
            _sample(sample),
            "%s%d source rows of %s (%d distinct values) do not convert to %s, e.g. %s: %s"
            % (
                "" if complete else "at least ",
                state["rows"],
                self._where(tp, tcol.name),
                state["distinct"],
                tcol.type,
                ", ".join(repr(v) for v in sample),
                first_error,
            ),
        )

    def _changed_rows(
        self, tp: TablePlan, original: "sql.Composable", converted: "sql.Composable", differs: "sql.Composable"
    ) -> t.Tuple[t.Optional[t.List[t.Any]], t.Optional[str]]:
        """(count, 'original -> converted') of the rows where ``differs`` (over ``v`` the original and ``c`` the
        converted value) holds, at most SAMPLE_LIMIT rows."""
        query = sql.SQL(
            "SELECT count(*) OVER (), {o} || ' -> ' || coalesce({c}, 'NULL') FROM "
            "(SELECT v, {conv} AS c FROM (SELECT {orig} AS v FROM {src}) a) b WHERE {differs} LIMIT %s"
        ).format(
            o=text_out(sql.SQL("v")),
            c=text_out(sql.SQL("c")),
            conv=converted,
            orig=original,
            src=_need(tp.source, "source table").from_clause(),
            differs=differs,
        )
        return self._query(query, [SAMPLE_LIMIT])

    def value_change_count(self, tp: TablePlan, cc: CarriedColumn) -> t.Tuple[t.Optional[int], t.List[str], str]:
        """Rows whose value the conversion changes: ``(count, examples, error)``; count None when it could not be
        computed. The copy is text COPY: source value -> text -> target type -> text -> source type, compared with
        the original by the source type's equality (by text forms for a type without one); a JSON document read as
        jsonb changes only when an object in it has duplicate keys."""
        src = _need(cc.source, "source column")
        value = sql.Identifier(src.name)
        if cc.json_rule:
            converted = sql.SQL("CAST({} AS jsonb)").format(text_out(sql.SQL("v")))
            rows, err = self._changed_rows(tp, value, converted, json_duplicate_keys(text_out(sql.SQL("v"))))
        else:
            converted = sql.SQL("CAST({} AS {})").format(text_out(sql.SQL("v")), sql.SQL(cc.target.type))
            back = sql.SQL("CAST({} AS {})").format(cc.back_text(sql.SQL("c")), sql.SQL(src.type))
            rows, err = self._changed_rows(tp, value, converted, sql.SQL("v IS DISTINCT FROM {}").format(back))
            if err is not None:
                # no equality operator for the source type (json, point, xml, ...): compare the text forms
                rows, err = self._changed_rows(
                    tp,
                    value,
                    converted,
                    sql.SQL("{} IS DISTINCT FROM {}").format(text_out(sql.SQL("v")), text_out(back)),
                )
        if err is not None or rows is None:
            return None, [], err or "no result"
        return (int(rows[0][0]) if rows else 0), _sample(r[1] for r in rows), ""

    def value_changes(self, tp: TablePlan, cc: CarriedColumn) -> None:
        src = _need(cc.source, "source column")
        tcol = cc.target
        count, sample, err = self.value_change_count(tp, cc)
        if count == 0:
            return
        name = "%s.%s" % (tp.key, tcol.name)
        entry = {"table": tp.key, "column": tcol.name, "kind": "value_change", "count": count, "sample": sample}
        if cc.accepted:
            self.plan.accepted_changes.append(dict(entry, accepted_by="accept_change"))
            return
        if count is None:
            # The converted values do not read back as the source type (bigint -> real gives 1.2345679e+11): they
            # cannot be compared, so neither could the proof; refused unless accepted.
            self.add(
                tp.key,
                tcol.name,
                "value_change",
                None,
                [],
                "source values of %s converted from %s to %s do not read back as %s (%s), so whether they change is "
                "unknown; accept the change (accept_change: [%s]), map the column with an expression, or change the "
                "dev schema" % (self._where(tp, tcol.name), src.type, tcol.type, src.type, err, name),
            )
            return
        self.add(
            tp.key,
            tcol.name,
            "value_change",
            count,
            sample,
            "%d source rows of %s change when converted from %s to %s (%s); accept the change (accept_change: "
            "[%s]), map the column with an expression, or change the dev schema"
            % (count, self._where(tp, tcol.name), src.type, tcol.type, "; ".join(sample), name),
        )

    def generated_over(self, tp: TablePlan) -> None:
        """A column dev makes GENERATED where production stores values: the rows whose stored value differs from
        what the target's generation expression computes over the mapped source row."""
        for gen, stored in tp.overwritten:
            expr = _need(gen.default, "generation expression of %s.%s" % (tp.key, gen.name))
            stored_value = CarriedColumn(gen, stored).source_as_target()
            computed = sql.SQL("({})").format(sql.SQL(expr))
            if gen.builtin:
                computed = sql.SQL("CAST({} AS {})").format(computed, sql.SQL(gen.type))
            rows: t.Optional[t.List[t.Any]] = None
            err: t.Optional[str] = None
            for compare in ("s.{s} IS DISTINCT FROM {c}", "{ts} IS DISTINCT FROM {tc}"):
                query = sql.SQL(
                    "SELECT count(*) OVER (), coalesce({ts}, 'NULL') || ' -> ' || coalesce({tc}, 'NULL') "
                    "FROM {src} s WHERE " + compare + " LIMIT %s"
                ).format(
                    s=sql.Identifier("?pgshift_stored"),
                    c=computed,
                    ts=text_out(sql.SQL("s.{}").format(sql.Identifier("?pgshift_stored"))),
                    tc=text_out(computed),
                    src=tp.mapped_source(
                        True, [sql.SQL("{} AS {}").format(stored_value, sql.Identifier("?pgshift_stored"))]
                    ),
                )
                rows, err = self._query(query, [SAMPLE_LIMIT])
                if err is None:
                    break
            # Not evaluable on the source (a function it lacks, a value that does not convert): the rows that differ
            # are unknown (count None), which is refused like a difference unless accepted.
            count = None if err is not None or rows is None else (int(rows[0][0]) if rows else 0)
            sample = _sample(r[1] for r in rows or [])
            source_name = "%s.%s" % (_need(tp.source, "source").key, stored.name)
            target_name = "%s.%s" % (tp.key, gen.name)
            entry = {"table": tp.key, "column": gen.name, "kind": "generated", "count": count, "sample": sample}
            if target_name in self.plan.accept_change:
                self.plan.accepted_changes.append(dict(entry, accepted_by="accept_change"))
            elif source_name in self.plan.accept_loss_columns:
                self.plan.accepted_changes.append(dict(entry, accepted_by="accept_loss"))
            elif count == 0:
                self.plan.accepted_changes.append(dict(entry, accepted_by="no row differs"))
            elif count is None:
                self.add(
                    tp.key,
                    gen.name,
                    "generated",
                    None,
                    [],
                    "the target's GENERATED column %s.%s (%s) could not be evaluated on the source rows (%s): "
                    "production's stored values of %s would be replaced, how many differ is unknown; accept the "
                    "change (accept_change: [%s] or accept_loss.columns: [%s]) or change the dev schema"
                    % (tp.key, gen.name, expr, err, self._where(tp, stored.name), target_name, source_name),
                )
            else:
                self.add(
                    tp.key,
                    gen.name,
                    "generated",
                    count,
                    sample,
                    "%d source rows of %s store a value that differs from what the target's GENERATED column %s "
                    "computes (%s): production's values would be replaced (%s); accept the change (accept_change: "
                    "[%s] or accept_loss.columns: [%s]) or change the dev schema"
                    % (
                        count,
                        self._where(tp, stored.name),
                        gen.name,
                        expr,
                        "; ".join(sample),
                        target_name,
                        source_name,
                    ),
                )

    def checks(self, tp: TablePlan) -> None:
        for name, expr in check_constraints(self.tgt, tp.target):
            rows, err = None, None
            for cast in (True, False):
                query = sql.SQL(
                    "SELECT count(*) OVER (), row_to_json(s)::text FROM {} s WHERE ({}) IS FALSE LIMIT %s"
                ).format(tp.mapped_source(cast), sql.SQL(expr))
                rows, err = self._query(query, [SAMPLE_LIMIT])
                if err is None:
                    break
            if err is not None:
                self.plan.warnings.append(
                    "CHECK %s of %s could not be evaluated on the source (%s); the load will enforce it"
                    % (name, tp.key, err)
                )
                continue
            if rows:
                self.add(
                    tp.key,
                    None,
                    "check",
                    int(rows[0][0]),
                    _sample(r[1] for r in rows),
                    "%d source rows of %s fail CHECK %s: %s" % (int(rows[0][0]), tp.key, name, expr),
                )

    def keys(self, constraints: t.Sequence[KeyConstraint]) -> None:
        plans = self.plan.by_key()
        for kc in constraints:
            tp = plans.get(kc.table)
            if tp is None or tp.source is None or tp.ledger:
                continue
            names = {c.target.name for c in tp.carried} | {c.name for c in tp.defaulted}
            if not set(kc.columns) <= names:
                self.plan.warnings.append(
                    "constraint %s on %s names columns the target lacks: %s"
                    % (kc.name or kc.type, kc.table, kc.columns)
                )
                continue
            cols = sql.SQL(", ").join(sql.Identifier(c) for c in kc.columns)
            notnull = sql.SQL(" AND ").join(sql.SQL("s.{} IS NOT NULL").format(sql.Identifier(c)) for c in kc.columns)
            label = "%s(%s)" % ({"p": "PRIMARY KEY", "u": "UNIQUE", "f": "FOREIGN KEY"}[kc.type], ", ".join(kc.columns))
            if kc.type in ("p", "u"):
                for cast in (True, False):
                    query = sql.SQL(
                        "SELECT count(*) OVER (), sum(n) OVER (), k FROM (SELECT ROW({})::text AS k, count(*) AS n "
                        "FROM {} s WHERE {} GROUP BY {} HAVING count(*) > 1) d LIMIT %s"
                    ).format(cols, tp.mapped_source(cast), notnull, cols)
                    rows, err = self._query(query, [SAMPLE_LIMIT])
                    if err is None:
                        break
                if err is not None:
                    self.plan.warnings.append(
                        "%s on %s could not be checked on the source: %s" % (label, kc.table, err)
                    )
                elif rows:
                    self.add(
                        kc.table,
                        ", ".join(kc.columns),
                        "duplicate",
                        int(rows[0][1]),
                        _sample(r[2] for r in rows),
                        "%d source rows of %s share a key under the new %s (%d distinct keys)"
                        % (int(rows[0][1]), kc.table, label, int(rows[0][0])),
                    )
            else:
                ref = plans.get(kc.ref_table or "")
                if ref is None or not kc.ref_columns:
                    continue
                if ref.source is None:
                    parent = sql.SQL("(SELECT {} FROM {} WHERE false)").format(
                        sql.SQL(", ").join(sql.SQL("NULL AS {}").format(sql.Identifier(c)) for c in kc.ref_columns),
                        sql.SQL("(VALUES (1)) AS v"),
                    )
                match = sql.SQL(" AND ").join(
                    sql.SQL("p.{} = s.{}").format(sql.Identifier(pc), sql.Identifier(cc))
                    for pc, cc in zip(kc.ref_columns, kc.columns)
                )
                for cast in (True, False):
                    if ref.source is not None:
                        parent = ref.mapped_source(cast)
                    query = sql.SQL(
                        "SELECT count(*) OVER (), ROW({})::text FROM {} s WHERE {} AND NOT EXISTS "
                        "(SELECT 1 FROM {} p WHERE {}) LIMIT %s"
                    ).format(
                        sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in kc.columns),
                        tp.mapped_source(cast),
                        notnull,
                        parent,
                        match,
                    )
                    rows, err = self._query(query, [SAMPLE_LIMIT])
                    if err is None:
                        break
                if err is not None:
                    self.plan.warnings.append(
                        "%s on %s could not be checked on the source: %s" % (label, kc.table, err)
                    )
                elif rows:
                    self.add(
                        kc.table,
                        ", ".join(kc.columns),
                        "orphan",
                        int(rows[0][0]),
                        _sample(r[1] for r in rows),
                        "%d source rows of %s have no parent in %s(%s) for the new %s"
                        % (int(rows[0][0]), kc.table, kc.ref_table, ", ".join(kc.ref_columns), label),
                    )

    # -------------------------------------------------------------------------------- shape checks (issue 14)
    def no_columns(self, tp: TablePlan) -> bool:
        """A table that carries no column cannot receive production's rows (COPY needs a column): the dev table has
        no columns, or none fed from the source. True when reported (the other checks of the table are moot)."""
        if tp.carried:
            return False
        source = _need(tp.source, "source table")
        rows, err = self._query(sql.SQL("SELECT count(*) FROM {}").format(source.from_clause()))
        count = int(rows[0][0]) if rows and err is None else 0
        if not count:
            return False
        if not tp.target.columns:
            why = "the dev schema's table %s has no columns" % tp.key
        else:
            why = "no column of the dev schema's table %s is fed from production's %s (its columns: %s)" % (
                tp.key,
                source.key,
                ", ".join(c.name for c in tp.target.columns),
            )
        self.add(
            tp.key,
            None,
            "no_columns",
            count,
            [],
            "%s: production's %d rows of %s cannot be carried; give the table a column (or map one), or drop it "
            "from dev and list %s under accept_loss.tables" % (why, count, source.key, source.key),
        )
        return True

    def domains(self, tp: TablePlan) -> None:
        """Carried values checked against the dev schema's domain constraints (CHECK and NOT NULL, on every level of
        a domain over a domain): a domain whose CHECK dev tightened fails here, not in the copy."""
        targets = [cc for cc in tp.carried if cc.target.typtype == "d"]
        if not targets:
            return
        with self.tgt.cursor() as cur:
            cur.execute(_DOMAIN_RULES_SQL, ([cc.target.type_oid for cc in targets],))
            rules: t.Dict[int, t.List[t.Tuple[t.Any, ...]]] = {}
            for r in cur.fetchall():
                rules.setdefault(int(r[0]), []).append(tuple(r[1:]))
        for cc in targets:
            seen_notnull: t.Set[str] = set()
            for domain, base_type, name, definition, notnull, base_oid in rules.get(cc.target.type_oid, []):
                checks: t.List[t.Tuple[str, "sql.Composable"]] = []
                if notnull and domain not in seen_notnull:
                    seen_notnull.add(domain)
                    checks.append(("NOT NULL of domain %s" % domain, sql.SQL("v IS NULL")))
                if definition is not None:
                    label = "CHECK %s of domain %s: %s" % (name, domain, definition)
                    if int(base_oid) >= FIRST_USER_OID:
                        self.plan.warnings.append(
                            "%s (column %s.%s) was not checked on the source: its base type %s is not built in; the "
                            "load will enforce it" % (label, tp.key, cc.target.name, base_type)
                        )
                    else:
                        typed = sql.SQL("CAST((v)::text AS {})").format(sql.SQL(base_type))
                        checks.append((label, sql.SQL("({}) IS FALSE").format(_domain_expression(definition, typed))))
                for label, condition in checks:
                    count, sample, err = self._count_where(tp, cc.source_value(), condition)
                    if err is not None:
                        self.plan.warnings.append(
                            "%s (column %s.%s) could not be evaluated on the source (%s); the load will enforce it"
                            % (label, tp.key, cc.target.name, err)
                        )
                    elif count:
                        self.add(
                            tp.key,
                            cc.target.name,
                            "domain",
                            count,
                            sample,
                            "%d source values of %s.%s fail %s; fix those rows in production or change the domain "
                            "in dev" % (count, tp.key, cc.target.name, label),
                        )

    def partitions(self, tp: TablePlan) -> None:
        """Every source row of a partitioned dev table must have a partition there (bounds may have changed)."""
        if not tp.target.partitioned:
            return
        with self.tgt.cursor() as cur:
            cur.execute(_PARTITION_LEAVES_SQL, (tp.target.oid,))
            leaves = [(r[0], r[1], r[2]) for r in cur.fetchall()]
        if any("satisfies_hash_partition(" in expr for _n, _b, expr in leaves):
            # its partition constraint names the dev table's oid, meaningless on the source
            self.plan.warnings.append(
                "the hash partitions of %s were not checked on the source; the load will enforce them" % tp.key
            )
            return
        names = ", ".join("%s %s" % (name, bound) for name, bound, _expr in leaves) or "none"
        fits: "sql.Composable" = sql.SQL("false")
        if leaves:
            fits = sql.SQL(" OR ").join(
                sql.SQL("({})").format(sql.SQL(expr.replace("%", "%%"))) for _n, _b, expr in leaves
            )
        rows, err = None, None
        for cast in (True, False):
            query = sql.SQL(
                "SELECT count(*) OVER (), row_to_json(s)::text FROM {} s WHERE ({}) IS NOT TRUE LIMIT %s"
            ).format(tp.mapped_source(cast), fits)
            rows, err = self._query(query, [SAMPLE_LIMIT])
            if err is None:
                break
        if err is not None:
            self.plan.warnings.append(
                "the partitions of %s could not be checked on the source (%s); the load will enforce them"
                % (tp.key, err)
            )
        elif rows:
            self.add(
                tp.key,
                None,
                "no_partition",
                int(rows[0][0]),
                _sample(r[1] for r in rows),
                "%d source rows of %s have no partition in the dev schema's partitioned table %s (partitions: %s); "
                "add partitions (or a DEFAULT partition) in dev that cover them"
                % (int(rows[0][0]), tp.key, tp.key, names),
            )


# Per domain (the column's type): its own constraints and those of the domains it is built on, with the built-in
# type at the bottom of the chain (its typmod included).
_DOMAIN_RULES_SQL = """
WITH RECURSIVE chain(top, dom, depth) AS (
  SELECT t.oid, t.oid, 0 FROM pg_type t WHERE t.oid = ANY(%s) AND t.typtype = 'd'
  UNION ALL
  SELECT c.top, t.typbasetype, c.depth + 1 FROM chain c JOIN pg_type t ON t.oid = c.dom
  WHERE (SELECT b.typtype FROM pg_type b WHERE b.oid = t.typbasetype) = 'd'
), base AS (
  SELECT DISTINCT ON (c.top) c.top, t.typbasetype AS boid, t.typtypmod AS bmod
  FROM chain c JOIN pg_type t ON t.oid = c.dom ORDER BY c.top, c.depth DESC
)
SELECT c.top, format_type(c.dom, NULL), format_type(b.boid, b.bmod), con.conname, pg_get_constraintdef(con.oid),
       d.typnotnull, b.boid
FROM chain c
JOIN pg_type d ON d.oid = c.dom
JOIN base b ON b.top = c.top
LEFT JOIN pg_constraint con ON con.contypid = c.dom AND con.contype = 'c'
ORDER BY c.top, c.depth, con.conname
"""

# Leaf partitions of a partitioned table with their bound and full partition constraint (ancestors included).
_PARTITION_LEAVES_SQL = """
SELECT p.relid::regclass::text, pg_get_expr(c.relpartbound, c.oid),
       coalesce(pg_get_partition_constraintdef(p.relid), 'true')
FROM pg_partition_tree(%s) p JOIN pg_class c ON c.oid = p.relid
WHERE p.isleaf ORDER BY 1
"""


def _domain_expression(definition: str, typed: "sql.Composable") -> "sql.Composable":
    """The domain's ``CHECK (...)`` (server-printed) with every bare VALUE keyword replaced by the typed value."""
    body = definition.strip()
    if body.upper().startswith("CHECK"):
        body = body[5:].strip()
    body = re.sub(r"\s+NOT VALID$", "", body)
    parts: t.List["sql.Composable"] = []
    for piece in re.findall(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|[A-Za-z_][A-Za-z_0-9$]*|.", body, flags=re.S):
        if piece == "VALUE":
            parts.append(typed)
        else:
            parts.append(sql.SQL(piece.replace("%", "%%")))
    return sql.Composed(parts)


def normalize_constraints(items: t.Sequence[t.Mapping[str, t.Any]]) -> t.List[KeyConstraint]:
    out = []
    for item in items:
        ctype = str(item.get("type", ""))
        if ctype not in ("u", "p", "f") or not item.get("table") or not item.get("columns"):
            raise PgShiftError(
                "post_data_constraints: each item needs table, type (u, p or f) and columns: %r" % (dict(item),)
            )
        if ctype == "f" and not (item.get("ref_table") and item.get("ref_columns")):
            raise PgShiftError(
                "post_data_constraints: a foreign key needs ref_table and ref_columns: %r" % (dict(item),)
            )
        out.append(
            KeyConstraint(
                normalize_table_key(str(item["table"])),
                ctype,
                [str(c) for c in item["columns"]],
                normalize_table_key(str(item["ref_table"])) if item.get("ref_table") else None,
                [str(c) for c in item.get("ref_columns") or []] or None,
                item.get("name"),
            )
        )
    return out


def find_problems(
    source_conn: t.Any, target_conn: t.Any, plan: Plan, constraints: t.Sequence[KeyConstraint]
) -> t.List[t.Dict[str, t.Any]]:
    """Every way the source's data would not fit the target, found with read-only queries on the source."""
    finder = ProblemFinder(source_conn, target_conn, plan)
    seen: t.Set[t.Tuple[t.Any, ...]] = set()
    unique: t.List[KeyConstraint] = []
    for kc in constraints:
        if kc.ident() not in seen:
            seen.add(kc.ident())
            unique.append(kc)
    for tp in plan.tables:
        if tp.source is None or tp.ledger:
            continue
        if finder.no_columns(tp):
            continue
        finder.columns(tp)
        finder.checks(tp)
        finder.domains(tp)
        finder.partitions(tp)
    finder.keys(unique)
    used = {"%s.%s" % (c["table"], c["column"]) for c in plan.accepted_changes if c["accepted_by"] == "accept_change"}
    for name in sorted(plan.accept_change - used):
        plan.warnings.append("accept_change lists %r, which changes no value (or is no carried column)" % name)
    return finder.problems


def accepted_change_counts(source_conn: t.Any, target_conn: t.Any, plan: Plan) -> t.List[t.Dict[str, t.Any]]:
    """The accepted value changes (accept_change, accept_loss of a stored column dev makes generated), counted again
    on the source as it is now (``source_conn`` in the proof's snapshot): what the integrity proof reports."""
    finder = ProblemFinder(source_conn, target_conn, plan)
    plan.accepted_changes = []
    for tp in plan.tables:
        if tp.source is None or tp.ledger:
            continue
        for cc in tp.carried:
            if cc.accepted and cc.type_change and cc.target.builtin:
                finder.value_changes(tp, cc)
        finder.generated_over(tp)
    return [c for c in plan.accepted_changes if c["accepted_by"] != "no row differs"]


def prepare_plan(
    source_conn: t.Any,
    target_conn: t.Any,
    mapping_file: t.Optional[str],
    ledger_tables: t.Sequence[str] = DEFAULT_LEDGER_TABLES,
    ledger_conn: t.Any = None,
) -> Plan:
    """Read both catalogs (and the ledger database's, when given) and build the plan."""
    mapping = load_mapping(mapping_file)
    source_tables = read_tables(source_conn)
    target_tables = read_tables(target_conn)
    ledger_source: t.Optional[t.Dict[str, Table]] = None
    if ledger_conn is not None:
        ledger_all = read_tables(ledger_conn)
        wanted = {normalize_table_key(x) for x in ledger_tables}
        ledger_source = {k: v for k, v in ledger_all.items() if k in wanted}
    return build_plan(source_tables, target_tables, mapping, ledger_tables, ledger_source)


def plan_result(plan: Plan) -> t.Dict[str, t.Any]:
    return {
        "plan": [tp.describe() for tp in plan.tables],
        "lost": plan.lost(),
        "notes": plan.warnings,
        "accepted_changes": plan.accepted_changes,
    }


def loss_error(plan: Plan) -> PgShiftError:
    return PgShiftError(
        "production data would be lost without being accepted in the mapping file: %s; map them (tables.<t>.from, "
        "columns.<c>.from) or list them under accept_loss" % ", ".join(plan.unaccepted),
        lost=plan.lost(),
    )
