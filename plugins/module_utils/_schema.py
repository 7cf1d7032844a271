# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""Schema snapshots and their differences.

A snapshot is a plain, JSON-serialisable dictionary built from the system catalogs with one query per object kind
(never one per object). It holds no OIDs and no timestamps: the same schema gives the same snapshot, byte for byte,
on every run. Names are the server's ``quote_ident`` spelling, schema-qualified (``public."we""ird"``), read with an
empty ``search_path`` so that every expression, default and definition is schema-qualified the same way everywhere.

Layout::

    {"format": "pgshift-schema-snapshot/1",
     "filters": {...the options it was taken with...},
     "meta": {"server_version_num": 150018, "ledger": [applied migration names]},   # not part of the hash
     "objects": {"schemas": {name: {...}}, "tables": {...}, "columns": {...}, ...}}

The contract other areas rely on: :func:`take_snapshot`, :func:`snapshot_hash`, :func:`diff_snapshots`,
:func:`render_report`.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import json
import os
import tempfile
import typing as t

from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError

try:
    import psycopg2
    import psycopg2.extensions
    from psycopg2 import sql
except ImportError:  # pragma: no cover - depends on the target host
    pass

try:
    import yaml

    HAS_YAML = True
except ImportError:  # pragma: no cover - depends on the target host
    HAS_YAML = False

FORMAT = "pgshift-schema-snapshot/1"
LEDGER_TABLES = ("pgmigrations", "pgshift_migration_meta")
# pgshift_capture: the swap-back change capture a release leaves in production until it is final (_carry.py); it is
# pgshift's, not the application's schema, so no snapshot or drift report shows it (nor its triggers, below).
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast", "pgshift_capture")

# Plural key in the snapshot -> the singular kind used in differences, in the order reports list them.
KINDS: t.Tuple[t.Tuple[str, str], ...] = (
    ("schemas", "schema"),
    ("extensions", "extension"),
    ("types", "type"),
    ("tables", "table"),
    ("columns", "column"),
    ("constraints", "constraint"),
    ("indexes", "index"),
    ("sequences", "sequence"),
    ("views", "view"),
    ("functions", "function"),
    ("triggers", "trigger"),
    ("policies", "policy"),
)
KIND_OF = dict(KINDS)
PLURAL_OF = {singular: plural for plural, singular in KINDS}
# Kinds whose entries belong to a table (attribute ``table``): ignoring or renaming a table carries over to them.
TABLE_CHILDREN = ("columns", "constraints", "indexes", "triggers", "policies")
OPTIONAL_ATTRIBUTES = {"owners": "owner", "grants": "acl", "comments": "comment"}

Snapshot = t.Dict[str, t.Any]
Difference = t.Dict[str, t.Any]

# ------------------------------------------------------------------------------------------------ catalog queries
# The queries are assembled from constant fragments of this file only (S608 is silenced on them for that reason);
# every value goes as a parameter. Every query takes the same named parameters: system, include (text[] or NULL),
# exclude and ledger (text[]).
_NS_FILTER = """
    n.nspname <> ALL (%(system)s) AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
    AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%%'
    AND (%(include)s::text[] IS NULL OR n.nspname = ANY (%(include)s::text[]))
    AND n.nspname <> ALL (%(exclude)s::text[])"""


def _not_extension_member(catalog: str, oid: str) -> str:
    template = (
        "NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e WHERE e.classid = 'pg_catalog.%s'::pg_catalog.regclass"
        " AND e.objid = %s AND e.deptype = 'e')"
    )
    return template % (catalog, oid)


def _comment(alias: str, catalog: str, oid: str, subid: str = "0") -> str:
    return (
        "LEFT JOIN pg_catalog.pg_description %s ON %s.objoid = %s"
        " AND %s.classoid = 'pg_catalog.%s'::pg_catalog.regclass AND %s.objsubid = %s"
    ) % (alias, alias, oid, alias, catalog, alias, subid)


def _acl(acl: str, kind: str, owner: str) -> str:
    """Privileges as sorted text, or NULL when they are the defaults (NULL in the catalog, or spelled out equal).

    Default privileges differ between PostgreSQL versions (17 added MAINTAIN): leaving them out keeps snapshots of
    the same schema equal across versions.
    """
    default = 'pg_catalog.acldefault(%s::"char", %s)' % (kind, owner)
    template = (
        "CASE WHEN %(acl)s IS NULL"
        " OR (SELECT pg_catalog.array_agg(x::text ORDER BY x::text) FROM pg_catalog.unnest(%(acl)s) x)"
        " = (SELECT pg_catalog.array_agg(x::text ORDER BY x::text) FROM pg_catalog.unnest(%(default)s) x)"
        " THEN NULL ELSE %(acl)s::text[] END"
    )
    return template % {"acl": acl, "default": default}


_QNAME = "pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(%s)"
_TABLE_NAME = _QNAME % "c.relname"

Q_SCHEMAS = """
SELECT pg_catalog.quote_ident(n.nspname), pg_catalog.pg_get_userbyid(n.nspowner),
       {acl}, d.description
FROM pg_catalog.pg_namespace n
{comment}
WHERE {ns} AND {member}
ORDER BY 1""".format(
    acl=_acl("n.nspacl", "'n'", "n.nspowner"),
    comment=_comment("d", "pg_namespace", "n.oid"),
    ns=_NS_FILTER,
    member=_not_extension_member("pg_namespace", "n.oid"),
)

Q_EXTENSIONS = """
SELECT pg_catalog.quote_ident(x.extname), x.extversion, pg_catalog.quote_ident(n.nspname),
       pg_catalog.pg_get_userbyid(x.extowner), d.description
FROM pg_catalog.pg_extension x
JOIN pg_catalog.pg_namespace n ON n.oid = x.extnamespace
{comment}
WHERE (%(include)s::text[] IS NULL OR n.nspname = ANY (%(include)s::text[]) OR n.nspname = 'pg_catalog')
  AND n.nspname <> ALL (%(exclude)s::text[])
ORDER BY 1""".format(comment=_comment("d", "pg_extension", "x.oid"))

Q_TYPES = """
SELECT {qname} AS name, t.typtype, pg_catalog.pg_get_userbyid(t.typowner),
       {acl}, d.description,
       CASE WHEN t.typtype = 'e' THEN (SELECT pg_catalog.array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
                                       FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid) END,
       CASE WHEN t.typtype = 'd' THEN pg_catalog.format_type(t.typbasetype, t.typtypmod) END,
       t.typnotnull,
       CASE WHEN t.typtype = 'd' THEN t.typdefault END,
       CASE WHEN t.typtype = 'd' AND t.typcollation <> 0 AND t.typcollation IS DISTINCT FROM bt.typcollation THEN
            (SELECT pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname)
             FROM pg_catalog.pg_collation co JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
             WHERE co.oid = t.typcollation) END,
       CASE WHEN t.typtype = 'd' THEN
            (SELECT pg_catalog.json_agg(pg_catalog.json_build_array(
                        pg_catalog.quote_ident(k.conname), pg_catalog.pg_get_constraintdef(k.oid), k.convalidated)
                    ORDER BY k.conname)
             FROM pg_catalog.pg_constraint k WHERE k.contypid = t.oid AND k.contype <> 'n') END,
       CASE WHEN t.typtype = 'c' THEN
            (SELECT pg_catalog.json_agg(pg_catalog.json_build_array(
                        pg_catalog.quote_ident(a.attname), pg_catalog.format_type(a.atttypid, a.atttypmod))
                    ORDER BY a.attnum)
             FROM pg_catalog.pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped) END,
       CASE WHEN t.typtype = 'r' THEN
            (SELECT pg_catalog.format_type(r.rngsubtype, NULL) FROM pg_catalog.pg_range r WHERE r.rngtypid = t.oid) END
FROM pg_catalog.pg_type t
JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
LEFT JOIN pg_catalog.pg_class c ON c.oid = t.typrelid
LEFT JOIN pg_catalog.pg_type bt ON bt.oid = t.typbasetype
{comment}
WHERE {ns} AND {member}
  AND (t.typtype IN ('e', 'd', 'r') OR (t.typtype = 'c' AND c.relkind = 'c')
       OR (t.typtype = 'b' AND t.typcategory <> 'A'))
ORDER BY 1""".format(  # noqa: S608
    qname=_QNAME % "t.typname",
    acl=_acl("t.typacl", "'T'", "t.typowner"),
    comment=_comment("d", "pg_type", "t.oid"),
    ns=_NS_FILTER,
    member=_not_extension_member("pg_type", "t.oid"),
)

Q_RELATIONS = """
SELECT c.relkind, {qname} AS name, c.relname, c.relpersistence,
       CASE WHEN c.relkind = 'p' THEN pg_catalog.pg_get_partkeydef(c.oid) END,
       CASE WHEN c.relispartition THEN
            (SELECT pg_catalog.quote_ident(pn.nspname) || '.' || pg_catalog.quote_ident(p.relname)
             FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class p ON p.oid = i.inhparent
             JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace WHERE i.inhrelid = c.oid) END,
       CASE WHEN c.relispartition THEN pg_catalog.pg_get_expr(c.relpartbound, c.oid) END,
       CASE WHEN NOT c.relispartition THEN
            (SELECT pg_catalog.array_agg(pg_catalog.quote_ident(pn.nspname) || '.' || pg_catalog.quote_ident(p.relname)
                                         ORDER BY i.inhseqno)
             FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class p ON p.oid = i.inhparent
             JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace WHERE i.inhrelid = c.oid) END,
       c.relrowsecurity, c.relforcerowsecurity, c.reloptions::text[],
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid) END,
       pg_catalog.pg_get_userbyid(c.relowner),
       {acl},
       d.description,
       pg_catalog.format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache,
       s.seqcycle,
       (SELECT pg_catalog.json_build_array(
                   pg_catalog.quote_ident(on_.nspname) || '.' || pg_catalog.quote_ident(oc.relname),
                   oc.relname, pg_catalog.quote_ident(oa.attname), od.deptype)
        FROM pg_catalog.pg_depend od
        JOIN pg_catalog.pg_class oc ON oc.oid = od.refobjid
        JOIN pg_catalog.pg_namespace on_ ON on_.oid = oc.relnamespace
        JOIN pg_catalog.pg_attribute oa ON oa.attrelid = od.refobjid AND oa.attnum = od.refobjsubid
        WHERE c.relkind = 'S' AND od.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND od.objid = c.oid
          AND od.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND od.refobjsubid > 0
          AND od.deptype IN ('a', 'i')
        LIMIT 1)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_sequence s ON s.seqrelid = c.oid
{comment}
WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S') AND {ns} AND {member}
  AND NOT (c.relkind IN ('r', 'p') AND c.relname = ANY (%(ledger)s::text[]))
ORDER BY 2""".format(  # noqa: S608
    qname=_TABLE_NAME,
    acl=_acl("c.relacl", "(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END)", "c.relowner"),
    comment=_comment("d", "pg_class", "c.oid"),
    ns=_NS_FILTER,
    member=_not_extension_member("pg_class", "c.oid"),
)

_TABLE_SCOPE = """c.relkind IN ('r', 'p', 'f') AND {ns} AND {member}
  AND c.relname <> ALL (%(ledger)s::text[])""".format(ns=_NS_FILTER, member=_not_extension_member("pg_class", "c.oid"))

Q_COLUMNS = """
SELECT {tname}, pg_catalog.quote_ident(a.attname),
       pg_catalog.row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum),
       pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
       CASE WHEN a.attgenerated = '' THEN pg_catalog.pg_get_expr(ad.adbin, ad.adrelid) END,
       CASE WHEN a.attgenerated <> '' THEN pg_catalog.pg_get_expr(ad.adbin, ad.adrelid) END,
       a.attgenerated::text, a.attidentity::text,
       CASE WHEN a.attcollation <> ty.typcollation THEN
            (SELECT pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname)
             FROM pg_catalog.pg_collation co JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
             WHERE co.oid = a.attcollation) END,
       a.attacl::text[], d.description
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid
LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
{comment}
WHERE a.attnum > 0 AND NOT a.attisdropped AND {scope}
ORDER BY 1, 3""".format(  # noqa: S608
    tname=_TABLE_NAME, comment=_comment("d", "pg_class", "a.attrelid", "a.attnum"), scope=_TABLE_SCOPE
)

Q_CONSTRAINTS = """
SELECT {tname}, pg_catalog.quote_ident(k.conname), k.contype::text, pg_catalog.pg_get_constraintdef(k.oid),
       k.condeferrable, k.condeferred, k.convalidated, d.description
FROM pg_catalog.pg_constraint k
JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
{comment}
WHERE k.contype <> 'n' AND {scope}
  AND NOT (k.conparentid <> 0 AND EXISTS (SELECT 1 FROM pg_catalog.pg_constraint pk
                                          WHERE pk.oid = k.conparentid AND pk.conrelid = k.conrelid))
ORDER BY 1, 2, 4""".format(tname=_TABLE_NAME, comment=_comment("d", "pg_constraint", "k.oid"), scope=_TABLE_SCOPE)  # noqa: S608

Q_INDEXES = """
SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(ic.relname), {tname},
       pg_catalog.pg_get_indexdef(i.indexrelid), i.indisvalid, d.description
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
{comment}
WHERE c.relkind IN ('r', 'p', 'f', 'm') AND {ns} AND {member} AND c.relname <> ALL (%(ledger)s::text[])
ORDER BY 1""".format(
    tname=_TABLE_NAME,
    comment=_comment("d", "pg_class", "ic.oid"),
    ns=_NS_FILTER,
    member=_not_extension_member("pg_class", "c.oid"),
)

Q_FUNCTIONS = """
SELECT {qname} || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')', p.prokind::text,
       CASE WHEN p.prokind <> 'a' THEN pg_catalog.pg_get_functiondef(p.oid) END,
       CASE WHEN p.prokind = 'a' THEN
            (SELECT pg_catalog.json_build_object(
                        'sfunc', g.aggtransfn::regproc::text, 'stype', pg_catalog.format_type(g.aggtranstype, NULL),
                        'finalfunc', NULLIF(g.aggfinalfn, 0)::regproc::text, 'initcond', g.agginitval,
                        'combinefunc', NULLIF(g.aggcombinefn, 0)::regproc::text, 'kind', g.aggkind::text,
                        'sortop', NULLIF(g.aggsortop, 0)::regoperator::text)
             FROM pg_catalog.pg_aggregate g WHERE g.aggfnoid = p.oid) END,
       pg_catalog.pg_get_function_result(p.oid),
       pg_catalog.pg_get_userbyid(p.proowner),
       {acl},
       d.description
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
{comment}
WHERE {ns} AND {member}
ORDER BY 1""".format(  # noqa: S608
    qname=_QNAME % "p.proname",
    acl=_acl("p.proacl", "'f'", "p.proowner"),
    comment=_comment("d", "pg_proc", "p.oid"),
    ns=_NS_FILTER,
    member=_not_extension_member("pg_proc", "p.oid"),
)

Q_TRIGGERS = """
SELECT {tname}, pg_catalog.quote_ident(g.tgname), pg_catalog.pg_get_triggerdef(g.oid), g.tgenabled::text,
       d.description
FROM pg_catalog.pg_trigger g
JOIN pg_catalog.pg_class c ON c.oid = g.tgrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
{comment}
WHERE NOT g.tgisinternal AND g.tgparentid = 0 AND (c.relkind IN ('v', 'm') OR c.relkind IN ('r', 'p', 'f'))
  AND {ns} AND {member} AND c.relname <> ALL (%(ledger)s::text[])
  AND g.tgfoid NOT IN (SELECT p.oid FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
                       WHERE pn.nspname = 'pgshift_capture')
ORDER BY 1, 2""".format(  # noqa: S608
    tname=_TABLE_NAME,
    comment=_comment("d", "pg_trigger", "g.oid"),
    ns=_NS_FILTER,
    member=_not_extension_member("pg_class", "c.oid"),
)

Q_POLICIES = """
SELECT {tname}, pg_catalog.quote_ident(o.polname), o.polcmd::text, o.polpermissive,
       (SELECT pg_catalog.array_agg(
                   CASE WHEN r = 0 THEN 'public' ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(r)) END)
        FROM pg_catalog.unnest(o.polroles) r),
       pg_catalog.pg_get_expr(o.polqual, o.polrelid), pg_catalog.pg_get_expr(o.polwithcheck, o.polrelid), d.description
FROM pg_catalog.pg_policy o
JOIN pg_catalog.pg_class c ON c.oid = o.polrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
{comment}
WHERE {scope}
ORDER BY 1, 2""".format(tname=_TABLE_NAME, comment=_comment("d", "pg_policy", "o.oid"), scope=_TABLE_SCOPE)  # noqa: S608

_RELKINDS = {"r": "table", "p": "partitioned table", "f": "foreign table"}
_CONTYPES = {"p": "primary key", "f": "foreign key", "u": "unique", "c": "check", "x": "exclusion", "t": "trigger"}
_PROKINDS = {"f": "function", "p": "procedure", "a": "aggregate", "w": "window"}
_TYPTYPES = {"e": "enum", "d": "domain", "c": "composite", "r": "range", "b": "base"}
_IDENTITY = {"": None, "a": "always", "d": "by default"}
_GENERATED = {"": None, "s": "stored", "v": "virtual"}
_POLCMD = {"*": "ALL", "r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE"}
_ENABLED = {"O": "origin", "D": "disabled", "R": "replica", "A": "always"}


class _Counter:
    """Runs the catalog queries and counts them (the bench reports the count)."""

    def __init__(self, cur: t.Any, params: t.Dict[str, t.Any]) -> None:
        self.cur = cur
        self.params = params
        self.queries = 0

    def rows(self, query: str) -> t.List[t.Tuple[t.Any, ...]]:
        self.queries += 1
        self.cur.execute(query, self.params)
        return list(self.cur.fetchall())


def _optional(entry: t.Dict[str, t.Any], opts: t.Dict[str, t.Any], owner: t.Any, acl: t.Any, comment: t.Any) -> None:
    if opts["with_owners"]:
        entry["owner"] = owner
    if opts["with_grants"]:
        entry["acl"] = sorted(acl) if acl is not None else None
    if opts["with_comments"]:
        entry["comment"] = comment


def _collect(run: _Counter, opts: t.Dict[str, t.Any]) -> t.Dict[str, t.Dict[str, t.Any]]:
    objects: t.Dict[str, t.Dict[str, t.Any]] = {plural: {} for plural, _singular in KINDS}

    for name, owner, acl, comment in run.rows(Q_SCHEMAS):
        entry: t.Dict[str, t.Any] = {}
        _optional(entry, opts, owner, acl, comment)
        objects["schemas"][name] = entry

    for name, version, schema, owner, comment in run.rows(Q_EXTENSIONS):
        entry = {"version": version, "schema": schema}
        _optional(entry, dict(opts, with_grants=False), owner, None, comment)
        objects["extensions"][name] = entry

    for row in run.rows(Q_TYPES):
        name, typtype, owner, acl, comment, labels, base, notnull, default, collation, checks, attrs, subtype = row
        entry = {"kind": _TYPTYPES.get(typtype, typtype)}
        if typtype == "e":
            entry["labels"] = list(labels or [])
        elif typtype == "d":
            entry.update(
                base=base,
                not_null=bool(notnull),
                default=default,
                collation=collation,
                constraints={c[0]: {"definition": c[1], "validated": c[2]} for c in (checks or [])},
            )
        elif typtype == "c":
            entry["attributes"] = [list(a) for a in (attrs or [])]
        elif typtype == "r":
            entry["subtype"] = subtype
        _optional(entry, opts, owner, acl, comment)
        objects["types"][name] = entry

    ledger_sequences_of: t.Set[str] = set()
    for row in run.rows(Q_RELATIONS):
        (relkind, name, _relname, persistence, partkey, partof, bound, inherits, rls, force_rls, reloptions, viewdef,
         owner, acl, comment, seqtype, start, increment, minv, maxv, cache, cycle, owned) = row  # fmt: skip
        if relkind == "S":
            if owned and owned[1] in opts["ledger_tables"]:
                ledger_sequences_of.add(name)
                continue
            entry = {
                "type": seqtype,
                "start": start,
                "increment": increment,
                "min": minv,
                "max": maxv,
                "cache": cache,
                "cycle": bool(cycle),
                "owned_by": (owned[0] + "." + owned[2]) if owned else None,
                "identity": bool(owned and owned[3] == "i"),
            }
            _optional(entry, opts, owner, acl, comment)
            objects["sequences"][name] = entry
        elif relkind in ("v", "m"):
            entry = {
                "materialized": relkind == "m",
                "definition": viewdef,
                "options": sorted(reloptions or []),
            }
            _optional(entry, opts, owner, acl, comment)
            objects["views"][name] = entry
        else:
            entry = {
                "kind": _RELKINDS[relkind],
                "unlogged": persistence == "u",
                "partition_key": partkey,
                "partition_of": partof,
                "partition_bound": bound,
                "inherits": list(inherits or []),
                "row_security": bool(rls),
                "force_row_security": bool(force_rls),
                "options": sorted(reloptions or []),
            }
            _optional(entry, opts, owner, acl, comment)
            objects["tables"][name] = entry

    for row in run.rows(Q_COLUMNS):
        table, col, position, typ, notnull, default, generated, gen_kind, identity, collation, acl, comment = row
        entry = {
            "table": table,
            "position": int(position),
            "type": typ,
            "not_null": bool(notnull),
            "default": default,
            "generated": (_GENERATED.get(gen_kind, gen_kind) + ": " + generated) if generated else None,
            "identity": _IDENTITY.get(identity, identity),
            "collation": collation,
        }
        _optional(entry, opts, None, acl, comment)
        entry.pop("owner", None)
        objects["columns"][table + "." + col] = entry

    for table, name, contype, definition, deferrable, deferred, validated, comment in run.rows(Q_CONSTRAINTS):
        entry = {
            "table": table,
            "type": _CONTYPES.get(contype, contype),
            "definition": definition,
            "deferrable": bool(deferrable),
            "initially_deferred": bool(deferred),
            "validated": bool(validated),
        }
        if opts["with_comments"]:
            entry["comment"] = comment
        objects["constraints"][table + "." + name] = entry

    for name, table, definition, valid, comment in run.rows(Q_INDEXES):
        entry = {"table": table, "definition": definition, "valid": bool(valid)}
        if opts["with_comments"]:
            entry["comment"] = comment
        objects["indexes"][name] = entry

    for row in run.rows(Q_FUNCTIONS):
        name, prokind, definition, aggregate, result, owner, acl, comment = row
        entry = {"kind": _PROKINDS.get(prokind, prokind), "returns": result}
        if aggregate is not None:
            entry["aggregate"] = aggregate
        else:
            entry["definition"] = definition
        _optional(entry, opts, owner, acl, comment)
        objects["functions"][name] = entry

    for table, name, definition, enabled, comment in run.rows(Q_TRIGGERS):
        entry = {"table": table, "definition": definition, "enabled": _ENABLED.get(enabled, enabled)}
        if opts["with_comments"]:
            entry["comment"] = comment
        objects["triggers"][table + "." + name] = entry

    for table, name, cmd, permissive, roles, using, check, comment in run.rows(Q_POLICIES):
        entry = {
            "table": table,
            "command": _POLCMD.get(cmd, cmd),
            "permissive": bool(permissive),
            "roles": sorted(roles or []),
            "using": using,
            "with_check": check,
        }
        if opts["with_comments"]:
            entry["comment"] = comment
        objects["policies"][table + "." + name] = entry
    return objects


def take_snapshot(
    conn: t.Any,
    include_schemas: t.Optional[t.Sequence[str]] = None,
    exclude_schemas: t.Optional[t.Sequence[str]] = None,
    exclude_ledger: bool = True,
    with_owners: bool = False,
    with_grants: bool = False,
    with_comments: bool = True,
    ledger_schema: str = "public",
    stats: t.Optional[t.Dict[str, t.Any]] = None,
) -> Snapshot:
    """Snapshot the schema of the database behind ``conn`` (a psycopg2 connection).

    Reads everything in one REPEATABLE READ READ ONLY transaction that is rolled back afterwards; when the caller
    already has a transaction open (an exported snapshot, say), it reads inside it and leaves it open, with its
    ``search_path`` restored. ``stats``, when given, receives the number of catalog queries run.
    """
    opts: t.Dict[str, t.Any] = {
        "with_owners": bool(with_owners),
        "with_grants": bool(with_grants),
        "with_comments": bool(with_comments),
        "ledger_tables": set(LEDGER_TABLES) if exclude_ledger else set(),
    }
    params = {
        "system": list(SYSTEM_SCHEMAS),
        "include": sorted(include_schemas) if include_schemas else None,
        "exclude": sorted(exclude_schemas or []),
        "ledger": sorted(opts["ledger_tables"]),
    }
    own_transaction = conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE
    cur = conn.cursor()
    run = _Counter(cur, params)
    saved_path: t.Optional[str] = None
    try:
        if own_transaction:
            cur.execute(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
                if conn.autocommit
                else "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"
            )
        else:
            cur.execute("SELECT pg_catalog.current_setting('search_path')")
            saved_path = cur.fetchone()[0]
        cur.execute(
            "SELECT pg_catalog.set_config('search_path', '', true), pg_catalog.current_setting('server_version_num')"
        )
        version = int(cur.fetchone()[1])
        objects = _collect(run, opts)
        ledger = _read_ledger(cur, ledger_schema)
    except psycopg2.Error as exc:
        raise PgShiftError(
            "reading the schema from the catalogs failed: %s" % (str(exc).strip().splitlines() or ["?"])[0],
            sqlstate=getattr(exc, "pgcode", None),
        ) from None
    finally:
        if own_transaction:
            if conn.autocommit:
                cur.execute("ROLLBACK")
            else:
                conn.rollback()
        elif saved_path is not None and conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_INTRANS:
            cur.execute("SELECT pg_catalog.set_config('search_path', %s, true)", (saved_path,))
        cur.close()
    if stats is not None:
        stats["queries"] = run.queries
    return {
        "format": FORMAT,
        "filters": {
            "include_schemas": sorted(include_schemas) if include_schemas else None,
            "exclude_schemas": sorted(exclude_schemas or []),
            "exclude_ledger": bool(exclude_ledger),
            "with_owners": bool(with_owners),
            "with_grants": bool(with_grants),
            "with_comments": bool(with_comments),
        },
        "meta": {"server_version_num": version, "ledger": ledger},
        "objects": objects,
    }


def _read_ledger(cur: t.Any, schema: str) -> t.List[str]:
    """Names of the applied migrations, in node-pg-migrate's order (empty without a ledger)."""
    cur.execute(
        "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        (schema, LEDGER_TABLES[0]),
    )
    if not cur.fetchone():
        return []
    cur.execute(sql.SQL("SELECT name FROM {} ORDER BY run_on, id").format(sql.Identifier(schema, LEDGER_TABLES[0])))
    return [r[0] for r in cur.fetchall()]


# ------------------------------------------------------------------------------------------------ hash and files
def _hashed_part(snapshot: Snapshot) -> Snapshot:
    return {k: v for k, v in snapshot.items() if k not in ("meta", "sha256")}


def canonical_json(value: t.Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def snapshot_hash(snapshot: Snapshot) -> str:
    """sha256 of the canonical JSON of the snapshot (format, filters, objects; not ``meta``, not ``sha256``)."""
    return hashlib.sha256(canonical_json(_hashed_part(snapshot))).hexdigest()


def counts(snapshot: Snapshot) -> t.Dict[str, int]:
    return {plural: len(snapshot.get("objects", {}).get(plural, {})) for plural, _singular in KINDS}


def guess_format(path: str, fmt: t.Optional[str] = None) -> str:
    if fmt and fmt != "auto":
        return fmt
    return "yaml" if path.lower().endswith((".yml", ".yaml")) else "json"


def serialize(snapshot: Snapshot, fmt: str = "json") -> bytes:
    """The file form: the snapshot plus its ``sha256``, keys sorted, UTF-8, newline at the end."""
    document = dict(snapshot)
    document["sha256"] = snapshot_hash(snapshot)
    if fmt == "yaml":
        if not HAS_YAML:
            raise PgShiftError("PyYAML is required for YAML snapshots on the host that runs the module")
        text = yaml.safe_dump(document, sort_keys=True, allow_unicode=True, default_flow_style=False, width=1 << 16)
        return text.encode("utf-8")
    return (json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def file_differs(path: str, data: bytes) -> bool:
    """Whether writing ``data`` to ``path`` would change it (a missing file differs)."""
    try:
        with open(path, "rb") as handle:
            return handle.read() != data
    except FileNotFoundError:
        return True
    except OSError as exc:
        raise PgShiftError("cannot read %s: %s" % (path, exc.strerror)) from None


def write_private_file(path: str, data: bytes) -> bool:
    """Write ``data`` atomically (temp file in the same folder, 0600, os.replace); False when already identical.

    A missing folder is created 0700.
    """
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    try:
        with open(path, "rb") as handle:
            if handle.read() == data:
                os.chmod(path, 0o600)
                return False
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise PgShiftError("cannot read %s: %s" % (path, exc.strerror)) from None
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".pgshift-", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise PgShiftError("cannot write in %s: %s" % (folder, exc.strerror)) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise PgShiftError("cannot write %s: %s" % (path, exc.strerror)) from None
    return True


def write_snapshot_file(path: str, snapshot: Snapshot, fmt: t.Optional[str] = None) -> bool:
    return write_private_file(path, serialize(snapshot, guess_format(path, fmt)))


def read_snapshot_file(path: str) -> Snapshot:
    """Load a snapshot file (JSON or YAML) and check its ``sha256``."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PgShiftError("cannot read snapshot file %s: %s" % (path, exc)) from None
    try:
        if guess_format(path) == "yaml":
            if not HAS_YAML:
                raise PgShiftError("PyYAML is required to read YAML snapshots")
            document = yaml.safe_load(raw)
        else:
            document = json.loads(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise PgShiftError("snapshot file %s is not valid %s: %s" % (path, guess_format(path).upper(), exc)) from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise PgShiftError(
            "%s is not a pgshift schema snapshot (expected format %r); write one with pgshift.ops.schema_snapshot"
            % (path, FORMAT)
        )
    recorded = document.pop("sha256", None)
    actual = snapshot_hash(document)
    if recorded is not None and recorded != actual:
        raise PgShiftError(
            "snapshot file %s was changed after it was written (sha256 %s recorded, %s computed); take a new snapshot "
            "instead of editing it" % (path, recorded, actual),
            recorded_sha256=recorded,
            computed_sha256=actual,
        )
    return document


# ------------------------------------------------------------------------------------------------ differences
class Ignore(t.NamedTuple):
    attributes: t.FrozenSet[str]
    patterns: t.Tuple[t.Tuple[t.Optional[str], str], ...]


def parse_ignore(ignore: t.Iterable[str] = ()) -> Ignore:
    """``owners``, ``grants``, ``comments`` drop those attributes; anything else is an object pattern.

    A pattern is ``<kind>:<glob>`` (``table:public.tmp_*``) or a bare glob matched against every kind's names.
    Ignoring a table also ignores its columns, constraints, indexes, triggers and policies.
    """
    attributes: t.Set[str] = set()
    patterns: t.List[t.Tuple[t.Optional[str], str]] = []
    for raw in ignore or ():
        item = str(raw).strip()
        if item in OPTIONAL_ATTRIBUTES:
            attributes.add(OPTIONAL_ATTRIBUTES[item])
            continue
        kind, sep, glob = item.partition(":")
        if sep and (kind in PLURAL_OF or kind in KIND_OF):
            patterns.append((KIND_OF.get(kind, kind), glob))
        else:
            patterns.append((None, item))
    return Ignore(frozenset(attributes), tuple(patterns))


def _matches(patterns: t.Sequence[t.Tuple[t.Optional[str], str]], kind: str, name: str) -> bool:
    return any((k is None or k == kind) and fnmatch.fnmatchcase(name, glob) for k, glob in patterns)


def _ignored(ign: Ignore, plural: str, name: str, entry: t.Dict[str, t.Any]) -> bool:
    if not ign.patterns:
        return False
    if _matches(ign.patterns, KIND_OF[plural], name):
        return True
    table = entry.get("table") if plural in TABLE_CHILDREN else None
    return bool(table) and _matches(ign.patterns, "table", str(table))


def _rename_map(renames: t.Optional[t.Mapping[str, str]]) -> t.Dict[str, str]:
    return {str(k): str(v) for k, v in (renames or {}).items()}


def _renamed_table(entry: t.Dict[str, t.Any], renames: t.Dict[str, str]) -> t.Dict[str, t.Any]:
    if "table" in entry and entry["table"] in renames:
        entry = dict(entry, table=renames[entry["table"]])
    return entry


def _captured(snapshot: Snapshot, attribute: str) -> bool:
    filters = snapshot.get("filters", {})
    flag = {"owner": "with_owners", "acl": "with_grants", "comment": "with_comments"}[attribute]
    return bool(filters.get(flag, True))


def diff_snapshots(
    a: Snapshot,
    b: Snapshot,
    ignore: t.Iterable[str] = (),
    renames: t.Optional[t.Mapping[str, str]] = None,
) -> t.List[Difference]:
    """What changes from ``a`` to ``b``: a sorted list of ``{kind, name, change, attribute, before, after}``.

    ``change`` is ``added`` (only in b), ``removed`` (only in a), ``changed`` (one per differing ``attribute``) or
    ``renamed`` (``renames`` maps a name in a to its name in b; without it a rename is a removal plus an addition).
    Owners, grants and comments are compared only when both snapshots captured them and ``ignore`` keeps them.
    """
    ign = parse_ignore(ignore)
    skip = set(ign.attributes)
    for attribute in ("owner", "acl", "comment"):
        if not (_captured(a, attribute) and _captured(b, attribute)):
            skip.add(attribute)
    renames_map = _rename_map(renames)
    table_renames = {old: new for old, new in renames_map.items() if old in a.get("objects", {}).get("tables", {})}
    differences: t.List[Difference] = []
    for plural, kind in KINDS:
        before_all: t.Dict[str, t.Any] = a.get("objects", {}).get(plural, {}) or {}
        after_all: t.Dict[str, t.Any] = b.get("objects", {}).get(plural, {}) or {}
        mapped: t.Dict[str, t.Tuple[str, t.Dict[str, t.Any]]] = {}
        for name, entry in before_all.items():
            new_name = renames_map.get(name)
            if new_name is None and plural in TABLE_CHILDREN and entry.get("table") in table_renames:
                old_table = entry["table"]
                if name.startswith(old_table + "."):
                    new_name = table_renames[old_table] + name[len(old_table) :]
            if new_name is not None and new_name in after_all and new_name not in before_all:
                differences.append(
                    {
                        "kind": kind,
                        "name": new_name,
                        "change": "renamed",
                        "attribute": None,
                        "before": name,
                        "after": new_name,
                    }
                )
                mapped[new_name] = (name, _renamed_table(entry, table_renames))
            else:
                mapped[name] = (name, _renamed_table(entry, table_renames))
        for name in sorted(set(mapped) | set(after_all)):
            old = mapped.get(name)
            new = after_all.get(name)
            entry_for_ignore = new if new is not None else (old[1] if old else {})
            if _ignored(ign, plural, name, entry_for_ignore) or (old and _ignored(ign, plural, old[0], old[1])):
                continue
            if old is None:
                differences.append(
                    {
                        "kind": kind,
                        "name": name,
                        "change": "added",
                        "attribute": None,
                        "before": None,
                        "after": _strip(new, skip),
                    }
                )
            elif new is None:
                differences.append(
                    {
                        "kind": kind,
                        "name": name,
                        "change": "removed",
                        "attribute": None,
                        "before": _strip(old[1], skip),
                        "after": None,
                    }
                )
            else:
                for attribute in sorted(set(old[1]) | set(new)):
                    if attribute in skip:
                        continue
                    if old[1].get(attribute) != new.get(attribute):
                        differences.append(
                            {
                                "kind": kind,
                                "name": name,
                                "change": "changed",
                                "attribute": attribute,
                                "before": old[1].get(attribute),
                                "after": new.get(attribute),
                            }
                        )
    order = {kind: index for index, (_plural, kind) in enumerate(KINDS)}
    differences.sort(key=lambda d: (order[d["kind"]], d["name"], d["change"] != "renamed", d["attribute"] or ""))
    return differences


def _strip(entry: t.Optional[t.Dict[str, t.Any]], skip: t.Set[str]) -> t.Optional[t.Dict[str, t.Any]]:
    if entry is None:
        return None
    return {k: v for k, v in entry.items() if k not in skip}


def summarize(differences: t.Sequence[Difference]) -> t.Dict[str, t.Dict[str, int]]:
    """Counts per kind and change, for a result a playbook can read at a glance."""
    summary: t.Dict[str, t.Dict[str, int]] = {}
    for d in differences:
        summary.setdefault(d["kind"], {}).setdefault(d["change"], 0)
        summary[d["kind"]][d["change"]] += 1
    return summary


def _short(value: t.Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _describe(kind: str, entry: t.Optional[t.Dict[str, t.Any]]) -> str:
    if not entry:
        return ""
    if kind == "column":
        parts = [str(entry.get("type"))]
        if entry.get("not_null"):
            parts.append("NOT NULL")
        if entry.get("default") is not None:
            parts.append("DEFAULT " + str(entry["default"]))
        if entry.get("identity"):
            parts.append("GENERATED %s AS IDENTITY" % str(entry["identity"]).upper())
        if entry.get("generated"):
            parts.append("GENERATED (%s)" % entry["generated"])
        return " ".join(parts)
    for key in ("definition", "kind", "version"):
        if entry.get(key):
            text = str(entry[key]).strip()
            return text.splitlines()[0] + (" ..." if "\n" in text else "")
    return ""


def render_report(
    differences: t.Sequence[Difference], source_label: str = "source", target_label: str = "target"
) -> str:
    """A readable report: one line per difference, multi-line definitions as a unified diff."""
    if not differences:
        return "No schema differences between %s and %s.\n" % (source_label, target_label)
    lines = [
        "%d schema difference%s from %s to %s:"
        % (len(differences), "" if len(differences) == 1 else "s", source_label, target_label)
    ]
    current = None
    for d in differences:
        if d["kind"] != current:
            current = d["kind"]
            lines.append("")
            lines.append("%s:" % current)
        if d["change"] == "added":
            lines.append(
                "  + %s %s  (only in %s) %s" % (d["kind"], d["name"], target_label, _describe(d["kind"], d["after"]))
            )
        elif d["change"] == "removed":
            lines.append(
                "  - %s %s  (only in %s) %s" % (d["kind"], d["name"], source_label, _describe(d["kind"], d["before"]))
            )
        elif d["change"] == "renamed":
            lines.append("  > %s %s renamed to %s" % (d["kind"], d["before"], d["after"]))
        else:
            before, after = d["before"], d["after"]
            if isinstance(before, str) and isinstance(after, str) and ("\n" in before or "\n" in after):
                lines.append("  ~ %s %s: %s differs" % (d["kind"], d["name"], d["attribute"]))
                for line in difflib.unified_diff(
                    before.splitlines(), after.splitlines(), source_label, target_label, lineterm="", n=1
                ):
                    lines.append("      " + line)
            else:
                lines.append(
                    "  ~ %s %s: %s %s -> %s" % (d["kind"], d["name"], d["attribute"], _short(before), _short(after))
                )
    return "\n".join(line.rstrip() for line in lines) + "\n"


def snapshot_diff_text(previous: t.Optional[Snapshot], current: Snapshot) -> str:
    """The diff of a snapshot file being rewritten: the objects that changed, named (not two hashes)."""
    if previous is None:
        total = sum(counts(current).values())
        return "new snapshot file: %d object(s) (%s)\n" % (
            total,
            ", ".join("%s %d" % (k, v) for k, v in sorted(counts(current).items()) if v),
        )
    return render_report(diff_snapshots(previous, current), "the file", "the database")
