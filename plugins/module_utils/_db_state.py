# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""Production's database-level state and object privileges, carried to the rebuilt database and proven there.

A schema dump of dev (``pg_dump --schema-only`` without ``--create``) has nothing of the database itself: its ACL
(CONNECT, TEMPORARY, CREATE), its ``ALTER DATABASE .. SET`` and ``ALTER ROLE .. IN DATABASE .. SET`` settings, its
comment. Production is the source of truth for those, and for the object privileges production's roles hold on
tables, views, sequences and columns (and default privileges) that dev's dump lacks: the new database gets the
union. Everything is read from the catalogs on each side; the proof compares them the same way.

Values of settings are taken as the catalog reports them (``pg_db_role_setting.setconfig``, ``name=value``) and
written back as string literals (``psycopg2.sql.Literal``); settings whose value is a list of quoted names
(``search_path`` and the like) are split as the server flattened them and every element is given as its own
literal, so that the server's re-quoting gives back the very same text.
"""

from __future__ import annotations

import dataclasses
import typing as t

from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, connect, db_error
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # pragma: no cover - reported by _connection.connect
    pass

PUBLIC = "PUBLIC"
# Settings the server stores as a list of quoted names (GUC_LIST_QUOTE); pg_dump keeps the same list.
LIST_QUOTE_SETTINGS = frozenset(
    {
        "local_preload_libraries",
        "search_path",
        "session_preload_libraries",
        "shared_preload_libraries",
        "temp_tablespaces",
        "unix_socket_directories",
    }
)
DATABASE_PRIVILEGES = frozenset({"CONNECT", "TEMPORARY", "CREATE"})
RELATION_PRIVILEGES = frozenset(
    {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN", "USAGE"}
)
DEFAULT_PRIVILEGES = RELATION_PRIVILEGES | {"EXECUTE", "CREATE"}
DEFAULT_ACL_OBJECTS = {"r": "TABLES", "S": "SEQUENCES", "f": "FUNCTIONS", "T": "TYPES", "n": "SCHEMAS"}
# pg_default_acl.defaclobjtype -> the letter acldefault() takes
_ACLDEFAULT_KIND = {"r": "r", "S": "s", "f": "f", "T": "T", "n": "n"}
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")


@dataclasses.dataclass(frozen=True, order=True)
class AclItem:
    grantee: str  # a role name, or PUBLIC
    privilege: str
    grantable: bool

    def describe(self) -> str:
        return "%s to %s%s" % (self.privilege, self.grantee, " WITH GRANT OPTION" if self.grantable else "")


@dataclasses.dataclass
class DatabaseState:
    name: str
    owner: str
    encoding: str
    collate: str
    ctype: str
    locale_provider: str
    locale: t.Optional[str]
    acl: t.FrozenSet[AclItem]
    settings: t.Tuple[str, ...]
    role_settings: t.Dict[str, t.Tuple[str, ...]]
    comment: t.Optional[str]

    def describe(self) -> t.Dict[str, t.Any]:
        return {
            "owner": self.owner,
            "encoding": self.encoding,
            "collate": self.collate,
            "ctype": self.ctype,
            "locale_provider": self.locale_provider,
            "locale": self.locale,
            "acl": [
                {"grantee": a.grantee, "privilege": a.privilege, "grantable": a.grantable} for a in sorted(self.acl)
            ],
            "settings": list(self.settings),
            "role_settings": {role: list(values) for role, values in sorted(self.role_settings.items())},
            "comment": self.comment,
        }


# ------------------------------------------------------------------------------------------------ reading
def _locale_columns(server_version: int) -> t.Tuple[str, str]:
    if server_version >= 170000:
        return "d.datlocprovider::text", "d.datlocale"
    if server_version >= 150000:
        return "d.datlocprovider::text", "d.daticulocale"
    return "'c'::text", "NULL::text"


def read_database_state(cur: t.Any, name: t.Optional[str] = None) -> DatabaseState:
    """The state of database ``name`` (default: the one ``cur`` is connected to), from the shared catalogs."""
    provider, locale = _locale_columns(int(cur.connection.server_version))
    cur.execute(
        "SELECT d.oid, d.datname, pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), d.datcollate, "
        "d.datctype, " + provider + ", " + locale + ", shobj_description(d.oid, 'pg_database') "
        "FROM pg_database d WHERE d.datname = coalesce(%s, current_database())",
        (name,),
    )
    row = cur.fetchone()
    if row is None:
        raise PgShiftError("database %r does not exist" % name, database=name)
    oid = row[0]
    cur.execute(
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type, "
        "a.is_grantable FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a "
        "WHERE d.oid = %s",
        (oid,),
    )
    acl = frozenset(AclItem(r[0], r[1], bool(r[2])) for r in cur.fetchall())
    cur.execute(
        "SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END, s.setconfig "
        "FROM pg_db_role_setting s WHERE s.setdatabase = %s",
        (oid,),
    )
    settings: t.Tuple[str, ...] = ()
    role_settings: t.Dict[str, t.Tuple[str, ...]] = {}
    for role, config in cur.fetchall():
        values = tuple(sorted(config or []))
        if role is None:
            settings = values
        elif values:
            role_settings[role] = values
    return DatabaseState(
        name=row[1],
        owner=row[2],
        encoding=row[3],
        collate=row[4],
        ctype=row[5],
        locale_provider=row[6],
        locale=row[7],
        acl=acl,
        settings=settings,
        role_settings=role_settings,
        comment=row[8],
    )


def locale_options(cur: t.Any, name: str) -> "sql.Composable":
    """CREATE DATABASE options giving a new database the locale provider of ``name`` (empty for libc, the default;
    encoding, LC_COLLATE and LC_CTYPE are given by the caller)."""
    state = read_database_state(cur, name)
    if state.locale_provider == "i":
        return sql.SQL(" LOCALE_PROVIDER icu ICU_LOCALE {}").format(sql.Literal(state.locale))
    if state.locale_provider == "b":
        return sql.SQL(" LOCALE_PROVIDER builtin BUILTIN_LOCALE {}").format(sql.Literal(state.locale))
    return sql.SQL("")


# ------------------------------------------------------------------------------------------------ settings
def split_setting(entry: str) -> t.Tuple[str, str]:
    name, sep, value = entry.partition("=")
    if not sep or not name:
        raise PgShiftError("unexpected setting %r in pg_db_role_setting" % entry)
    return name, value


def split_name_list(value: str) -> t.List[str]:
    """Split a list value the way the server flattened it: names separated by commas, double-quoted where needed
    (``""`` inside quotes is one ``"``); unquoted names are kept as they are (not folded to lower case)."""
    out: t.List[str] = []
    i, n = 0, len(value)
    if not value.strip():
        return out
    while True:
        while i < n and value[i].isspace():
            i += 1
        if i < n and value[i] == '"':
            i += 1
            item = []
            while True:
                end = value.find('"', i)
                if end < 0:
                    raise PgShiftError("unterminated quoted name in setting value %r" % value)
                item.append(value[i:end])
                i = end + 1
                if i < n and value[i] == '"':
                    item.append('"')
                    i += 1
                    continue
                break
            name = "".join(item)
        else:
            start = i
            while i < n and value[i] != "," and not value[i].isspace():
                i += 1
            name = value[start:i]
            if not name:
                raise PgShiftError("empty unquoted name in setting value %r" % value)
        out.append(name)
        while i < n and value[i].isspace():
            i += 1
        if i >= n:
            return out
        if value[i] != ",":
            raise PgShiftError("unexpected text in setting value %r at %d" % (value, i))
        i += 1


def _setting_name(name: str) -> "sql.Composable":
    return sql.SQL(".").join(sql.Identifier(part) for part in name.split("."))


def _setting_value(name: str, value: str) -> "sql.Composable":
    items = split_name_list(value) if name.lower() in LIST_QUOTE_SETTINGS else []
    if items:
        return sql.SQL(", ").join(sql.Literal(item) for item in items)
    return sql.Literal(value)


def _set_statement(prefix: "sql.Composable", entry: str) -> "sql.Composable":
    name, value = split_setting(entry)
    return sql.SQL("{} SET {} = {}").format(prefix, _setting_name(name), _setting_value(name, value))


def _reset_statement(prefix: "sql.Composable", entry: str) -> "sql.Composable":
    name, _value = split_setting(entry)
    return sql.SQL("{} RESET {}").format(prefix, _setting_name(name))


def _grantee(name: str) -> "sql.Composable":
    return sql.SQL(PUBLIC) if name == PUBLIC else sql.Identifier(name)


def _privilege(name: str, allowed: t.FrozenSet[str]) -> "sql.Composable":
    if name not in allowed:
        raise PgShiftError("unexpected privilege %r in a catalog ACL" % name)
    return sql.SQL(name)


# ------------------------------------------------------------------------------------------------ applying
def database_statements(desired: DatabaseState, current: DatabaseState) -> t.List["sql.Composable"]:
    """Statements that make ``current`` (the rebuilt database) carry ``desired`` (production's state)."""
    fixed = ("encoding", "collate", "ctype", "locale_provider", "locale")
    differ = [f for f in fixed if getattr(desired, f) != getattr(current, f)]
    if differ:
        raise PgShiftError(
            "database %r was created with a different %s than production %r (%s); it cannot be changed after "
            "creation: drop it (make rollback) and create it again"
            % (
                current.name,
                ", ".join(differ),
                desired.name,
                "; ".join("%s %r, not %r" % (f, getattr(current, f), getattr(desired, f)) for f in differ),
            )
        )
    db = sql.Identifier(current.name)
    out: t.List["sql.Composable"] = []
    if desired.owner != current.owner:
        out.append(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, sql.Identifier(desired.owner)))
    if desired.acl != current.acl:
        # the ACL exactly: every present grantee loses everything, then production's items are granted
        for grantee in sorted({a.grantee for a in current.acl} | {PUBLIC, desired.owner}):
            out.append(sql.SQL("REVOKE ALL ON DATABASE {} FROM {} CASCADE").format(db, _grantee(grantee)))
        groups: t.Dict[t.Tuple[str, bool], t.List[str]] = {}
        for item in sorted(desired.acl):
            groups.setdefault((item.grantee, item.grantable), []).append(item.privilege)
        for (grantee, grantable), privileges in sorted(groups.items()):
            out.append(
                sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                    sql.SQL(", ").join(_privilege(p, DATABASE_PRIVILEGES) for p in privileges),
                    db,
                    _grantee(grantee),
                    sql.SQL(" WITH GRANT OPTION" if grantable else ""),
                )
            )
    prefix = sql.SQL("ALTER DATABASE {}").format(db)
    out += _settings_statements(prefix, desired.settings, current.settings)
    for role in sorted(set(desired.role_settings) | set(current.role_settings)):
        prefix = sql.SQL("ALTER ROLE {} IN DATABASE {}").format(sql.Identifier(role), db)
        out += _settings_statements(prefix, desired.role_settings.get(role, ()), current.role_settings.get(role, ()))
    if desired.comment != current.comment:
        if desired.comment is None:
            out.append(sql.SQL("COMMENT ON DATABASE {} IS NULL").format(db))
        else:
            out.append(sql.SQL("COMMENT ON DATABASE {} IS {}").format(db, sql.Literal(desired.comment)))
    return out


def _settings_statements(
    prefix: "sql.Composable", desired: t.Sequence[str], current: t.Sequence[str]
) -> t.List["sql.Composable"]:
    want = {split_setting(e)[0]: e for e in desired}
    have = {split_setting(e)[0]: e for e in current}
    out = [_reset_statement(prefix, have[name]) for name in sorted(set(have) - set(want))]
    out += [_set_statement(prefix, want[name]) for name in sorted(want) if have.get(name) != want[name]]
    return out


# ------------------------------------------------------------------------------------------------ comparing
def compare_database_state(source: DatabaseState, target: DatabaseState) -> t.List[str]:
    """Differences that matter, named; the database name and connection limit are not compared."""
    found: t.List[str] = []
    for field in ("owner", "encoding", "collate", "ctype", "locale_provider", "locale", "comment"):
        a, b = getattr(source, field), getattr(target, field)
        if a != b:
            found.append("database %s: %r in production, %r in the new database" % (field, a, b))
    for item in sorted(source.acl - target.acl):
        found.append("database privilege %s: missing in the new database" % item.describe())
    for item in sorted(target.acl - source.acl):
        found.append("database privilege %s: only in the new database" % item.describe())
    found += _compare_settings("database setting", source.settings, target.settings)
    for role in sorted(set(source.role_settings) | set(target.role_settings)):
        found += _compare_settings(
            "setting of role %s in the database" % role,
            source.role_settings.get(role, ()),
            target.role_settings.get(role, ()),
        )
    return found


def _compare_settings(what: str, source: t.Sequence[str], target: t.Sequence[str]) -> t.List[str]:
    a = dict(split_setting(e) for e in source)
    b = dict(split_setting(e) for e in target)
    out = []
    for name in sorted(set(a) | set(b)):
        if a.get(name) != b.get(name):
            out.append(
                "%s %s: %s in production, %s in the new database"
                % (what, name, _shown(a.get(name)), _shown(b.get(name)))
            )
    return out


def _shown(value: t.Optional[str]) -> str:
    return "absent" if value is None else repr(value)


# ------------------------------------------------------------------------------------------------ object privileges
@dataclasses.dataclass(frozen=True, order=True)
class ObjectKey:
    kind: str  # "relation", "sequence", "column"
    schema: str
    name: str
    column: t.Optional[str] = None

    def describe(self) -> str:
        base = "%s %s.%s" % ("sequence" if self.kind == "sequence" else "table", self.schema, self.name)
        return "column %s of %s" % (self.column, base) if self.column else base


_RELATION_ACL_SQL = """
SELECT CASE WHEN c.relkind = 'S' THEN 'sequence' ELSE 'relation' END, n.nspname, c.relname, NULL::name,
       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type, a.is_grantable,
       a.grantee = c.relowner
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace,
     aclexplode(CASE WHEN %(effective)s THEN coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's'
                     ELSE 'r' END::"char", c.relowner)) ELSE c.relacl END) a
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  AND n.nspname <> ALL(%(system)s) AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
UNION ALL
SELECT 'column', n.nspname, c.relname, at.attname,
       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type, a.is_grantable,
       false
FROM pg_attribute at
JOIN pg_class c ON c.oid = at.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace,
     aclexplode(at.attacl) a
WHERE at.attnum > 0 AND NOT at.attisdropped AND at.attacl IS NOT NULL
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname <> ALL(%(system)s) AND n.nspname NOT LIKE 'pg\\_toast%%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
"""

_DEFAULT_ACL_SQL = """
SELECT pg_get_userbyid(d.defaclrole), n.nspname, d.defaclobjtype::text,
       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type, a.is_grantable,
       a.grantee = d.defaclrole
FROM pg_default_acl d
LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace,
     aclexplode(d.defaclacl) a
"""


Grant = t.Tuple[ObjectKey, AclItem]
DefaultKey = t.Tuple[str, t.Optional[str], str]  # (role, schema or None for every schema, object type letter)


def read_object_grants(conn: t.Any, effective: bool) -> t.Dict[ObjectKey, t.Set[AclItem]]:
    """Per relation, sequence and column: its ACL items. ``effective`` counts the owner's implicit rights of an
    object that was never granted on (NULL ACL); without it, only explicit items of grantees other than the owner
    (the owner's rights follow ownership, whose source of truth is dev's schema)."""
    out: t.Dict[ObjectKey, t.Set[AclItem]] = {}
    try:
        with conn.cursor() as cur:
            cur.execute(_RELATION_ACL_SQL, {"effective": effective, "system": list(SYSTEM_SCHEMAS)})
            rows = cur.fetchall()
    except psycopg2.Error as exc:
        raise db_error(exc, "reading object privileges") from None
    for kind, schema, name, column, grantee, privilege, grantable, is_owner in rows:
        key = ObjectKey(kind, schema, name, column)
        entry = out.setdefault(key, set())
        if effective or not is_owner:
            entry.add(AclItem(grantee, privilege, bool(grantable)))
    return out


_OBJECTS_SQL = """
SELECT CASE WHEN c.relkind = 'S' THEN 'sequence' ELSE 'relation' END, n.nspname, c.relname, NULL::name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND n.nspname <> ALL(%(system)s)
UNION ALL
SELECT 'column', n.nspname, c.relname, at.attname
FROM pg_attribute at JOIN pg_class c ON c.oid = at.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE at.attnum > 0 AND NOT at.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname <> ALL(%(system)s)
"""


def read_objects(conn: t.Any) -> t.Set[ObjectKey]:
    """Relations, sequences and columns that privileges can be granted on."""
    try:
        with conn.cursor() as cur:
            cur.execute(_OBJECTS_SQL, {"system": list(SYSTEM_SCHEMAS)})
            return {ObjectKey(r[0], r[1], r[2], r[3]) for r in cur.fetchall()}
    except psycopg2.Error as exc:
        raise db_error(exc, "reading the objects privileges apply to") from None


def read_default_grants(conn: t.Any, effective: bool) -> t.Dict[DefaultKey, t.Set[AclItem]]:
    """Default privileges per (role, schema, object type). ``effective``: a role without a global entry has the
    built-in defaults (acldefault), which are filled in for the roles found on the other side by ``missing``."""
    out: t.Dict[DefaultKey, t.Set[AclItem]] = {}
    try:
        with conn.cursor() as cur:
            cur.execute(_DEFAULT_ACL_SQL)
            rows = cur.fetchall()
    except psycopg2.Error as exc:
        raise db_error(exc, "reading default privileges") from None
    for role, schema, objtype, grantee, privilege, grantable, is_owner in rows:
        entry = out.setdefault((role, schema, objtype), set())
        if effective or not is_owner:
            entry.add(AclItem(grantee, privilege, bool(grantable)))
    return out


def _builtin_defaults(conn: t.Any, keys: t.Iterable[DefaultKey]) -> t.Dict[DefaultKey, t.Set[AclItem]]:
    out: t.Dict[DefaultKey, t.Set[AclItem]] = {}
    with conn.cursor() as cur:
        for role, schema, objtype in keys:
            if schema is not None:
                out[(role, schema, objtype)] = set()
                continue
            cur.execute(
                "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type, "
                'a.is_grantable FROM pg_roles r, aclexplode(acldefault(%s::"char", r.oid)) a WHERE r.rolname = %s',
                (_ACLDEFAULT_KIND[objtype], role),
            )
            out[(role, schema, objtype)] = {AclItem(r[0], r[1], bool(r[2])) for r in cur.fetchall()}
    return out


def _covered(item: AclItem, have: t.Set[AclItem]) -> bool:
    return item in have or (not item.grantable and AclItem(item.grantee, item.privilege, True) in have)


@dataclasses.dataclass
class PrivilegePlan:
    grants: t.List[Grant]  # production's grants the target lacks, on objects it has
    default_grants: t.List[t.Tuple[DefaultKey, AclItem]]
    not_carried: t.List[t.Dict[str, str]]  # production's grants on objects the target does not have

    def describe(self) -> t.Dict[str, t.Any]:
        return {
            "grants": ["%s: %s" % (k.describe(), a.describe()) for k, a in self.grants],
            "default_grants": [
                "default privileges of %s%s on %s: %s"
                % (
                    role,
                    " in schema %s" % schema if schema else "",
                    DEFAULT_ACL_OBJECTS.get(objtype, objtype),
                    a.describe(),
                )
                for (role, schema, objtype), a in self.default_grants
            ],
            "not_carried": self.not_carried,
        }


def missing_privileges(source_conn: t.Any, target_conn: t.Any) -> PrivilegePlan:
    """Production's (``source_conn``) object grants and default privileges that the target lacks."""
    src = read_object_grants(source_conn, effective=False)
    tgt = read_object_grants(target_conn, effective=True)
    objects = read_objects(target_conn)
    grants: t.List[Grant] = []
    not_carried: t.List[t.Dict[str, str]] = []
    for key in sorted(src):
        items = src[key]
        if not items:
            continue
        if key not in objects:
            for item in sorted(items):
                not_carried.append(
                    {
                        "object": key.describe(),
                        "grant": item.describe(),
                        "reason": "the object is not in the dev schema (dropped, renamed or of another kind)",
                    }
                )
            continue
        grants += [(key, item) for item in sorted(items) if not _covered(item, tgt.get(key, set()))]
    src_def = read_default_grants(source_conn, effective=False)
    tgt_def = read_default_grants(target_conn, effective=True)
    tgt_def.update(_builtin_defaults(target_conn, [k for k in src_def if k not in tgt_def]))
    with target_conn.cursor() as cur:
        cur.execute("SELECT nspname FROM pg_namespace")
        schemas = {r[0] for r in cur.fetchall()}
    default_grants: t.List[t.Tuple[DefaultKey, AclItem]] = []
    for dkey in sorted(src_def, key=lambda k: (k[0], k[1] or "", k[2])):
        role, schema, objtype = dkey
        if schema is not None and schema not in schemas:
            for item in sorted(src_def[dkey]):
                not_carried.append(
                    {
                        "object": "default privileges of %s in schema %s" % (role, schema),
                        "grant": item.describe(),
                        "reason": "the schema is not in the dev schema",
                    }
                )
            continue
        default_grants += [(dkey, item) for item in sorted(src_def[dkey]) if not _covered(item, tgt_def[dkey])]
    return PrivilegePlan(grants, default_grants, not_carried)


def privilege_statements(plan: PrivilegePlan) -> t.List["sql.Composable"]:
    out: t.List["sql.Composable"] = []
    for key, item in plan.grants:
        option = sql.SQL(" WITH GRANT OPTION" if item.grantable else "")
        privilege = _privilege(item.privilege, RELATION_PRIVILEGES)
        target = sql.Identifier(key.schema, key.name)
        if key.kind == "column":
            out.append(
                sql.SQL("GRANT {} ({}) ON TABLE {} TO {}{}").format(
                    privilege, sql.Identifier(t.cast(str, key.column)), target, _grantee(item.grantee), option
                )
            )
        else:
            what = sql.SQL("SEQUENCE" if key.kind == "sequence" else "TABLE")
            out.append(
                sql.SQL("GRANT {} ON {} {} TO {}{}").format(privilege, what, target, _grantee(item.grantee), option)
            )
    for (role, schema, objtype), item in plan.default_grants:
        if objtype not in DEFAULT_ACL_OBJECTS:
            raise PgShiftError("unexpected default privilege object type %r" % objtype)
        out.append(
            sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {}{} GRANT {} ON {} TO {}{}").format(
                sql.Identifier(role),
                sql.SQL(" IN SCHEMA {}").format(sql.Identifier(schema)) if schema else sql.SQL(""),
                _privilege(item.privilege, DEFAULT_PRIVILEGES),
                sql.SQL(DEFAULT_ACL_OBJECTS[objtype]),
                _grantee(item.grantee),
                sql.SQL(" WITH GRANT OPTION" if item.grantable else ""),
            )
        )
    return out


# ------------------------------------------------------------------------------------------------ the build step
def carry(production: t.Any, target: t.Any, check_mode: bool = False) -> t.Dict[str, t.Any]:
    """Give the rebuilt database (``target``, connected to it) production's database-level state and the object
    privileges production has and dev's schema lacks; ``production`` is connected to production. One transaction
    on the target; returns the statements (run, or planned in check mode)."""
    try:
        with production.cursor() as pcur, target.cursor() as tcur:
            desired = read_database_state(pcur)
            current = read_database_state(tcur)
            privileges = missing_privileges(production, target)
            statements = database_statements(desired, current) + privilege_statements(privileges)
            texts = [s.as_string(target) for s in statements]
            if not check_mode:
                for statement in statements:
                    tcur.execute(statement)
                target.commit()
            else:
                target.rollback()
            production.rollback()
    except psycopg2.Error as exc:
        target.rollback()
        raise db_error(exc, "carrying production's database-level state and privileges") from None
    return {
        "statements": texts,
        "database_state": desired.describe(),
        "privileges": privileges.describe(),
        "changed": bool(texts),
    }


def carry_between(production: ConnParams, target: ConnParams, check_mode: bool = False) -> t.Dict[str, t.Any]:
    """``carry`` over connections of its own to production and to the rebuilt database."""
    prod_conn = connect(production, application_name="pgshift database_build")
    try:
        target_conn = connect(target, application_name="pgshift database_build")
        try:
            return carry(prod_conn, target_conn, check_mode)
        finally:
            target_conn.close()
    finally:
        prod_conn.close()


# ------------------------------------------------------------------------------------------------ the proof
def prove(source: t.Any, target: t.Any) -> t.Dict[str, t.Any]:
    """Compare production (``source``) and the new database (``target``): database-level state, and production's
    object grants and default privileges on objects the target has. Differences are named."""
    try:
        with source.cursor() as scur, target.cursor() as tcur:
            src_state = read_database_state(scur)
            tgt_state = read_database_state(tcur)
        differences = compare_database_state(src_state, tgt_state)
        missing = missing_privileges(source, target)
    except psycopg2.Error as exc:
        raise db_error(exc, "comparing database-level state and privileges") from None
    described = missing.describe()
    differences += ["privilege missing in the new database: %s" % g for g in described["grants"]]
    differences += ["missing in the new database: %s" % g for g in described["default_grants"]]
    return {
        "differences": differences,
        "database_state": src_state.describe(),
        "privileges_not_carried": described["not_carried"],
    }


# ------------------------------------------------------------------------------------------------ the plan
_ONLY_IN_PRODUCTION = {
    "row level security forced": "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relforcerowsecurity",
    "policy": "SELECT format('%%s on %%I.%%I', p.polname, n.nspname, c.relname) FROM pg_policy p "
    "JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace",
    "publication": "SELECT pubname FROM pg_publication",
    "event trigger": "SELECT evtname FROM pg_event_trigger",
    "statistics object": "SELECT format('%%I.%%I', n.nspname, s.stxname) FROM pg_statistic_ext s "
    "JOIN pg_namespace n ON n.oid = s.stxnamespace",
    "comment": "SELECT pg_describe_object(d.classoid, d.objoid, d.objsubid) || ': ' || d.description "
    "FROM pg_description d WHERE d.classoid = 'pg_class'::regclass AND d.objoid >= 16384",
    "security label": "SELECT pg_describe_object(l.classoid, l.objoid, l.objsubid) || ' (' || l.provider || '): ' "
    "|| l.label FROM pg_seclabel l",
    "storage parameters": "SELECT format('%%I.%%I', n.nspname, c.relname) || ' ' || array_to_string(c.reloptions, ',') "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.reloptions IS NOT NULL "
    "AND n.nspname <> ALL(%(system)s)",
    "replica identity": "SELECT format('%%I.%%I', n.nspname, c.relname) || ' ' || c.relreplident::text "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relreplident <> 'd' "
    "AND c.relkind IN ('r', 'p') AND n.nspname <> ALL(%(system)s)",
    "extension configuration table": "SELECT e.extname || ': ' || cfg::regclass::text FROM pg_extension e, "
    "unnest(e.extconfig) cfg",
}

_RLS_SQL = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relrowsecurity AND c.relkind IN ('r', 'p') AND n.nspname <> ALL(%(system)s)
"""


def _strings(conn: t.Any, query: str) -> t.Set[str]:
    with conn.cursor() as cur:
        cur.execute(query, {"system": list(SYSTEM_SCHEMAS)})
        return {r[0] for r in cur.fetchall() if r[0] is not None}


def plan(production: t.Any, dev: t.Any) -> t.Dict[str, t.Any]:
    """What the release carries of production's database-level state and privileges, what production has that
    dev's schema lacks (dev's schema wins: reported for the approver), and the refusals (row level security
    enabled in production on a table dev has without it: the release would open the rows)."""
    try:
        with production.cursor() as cur:
            state = read_database_state(cur)
        privileges = missing_privileges(production, dev)
        only: t.Dict[str, t.List[str]] = {}
        for what, query in _ONLY_IN_PRODUCTION.items():
            lacking = sorted(_strings(production, query) - _strings(dev, query))
            if lacking:
                only[what] = lacking
        prod_rls = {(r[0], r[1]) for r in _rows(production, _RLS_SQL)}
        dev_rls = {(r[0], r[1]) for r in _rows(dev, _RLS_SQL)}
        dev_tables = {(r[0], r[1]) for r in _rows(dev, _TABLE_NAMES_SQL)}
    except psycopg2.Error as exc:
        raise db_error(exc, "planning the database-level state") from None
    problems: t.List[t.Dict[str, t.Any]] = [
        {
            "table": name if schema == "public" else "%s.%s" % (schema, name),
            "column": None,
            "kind": "row_security",
            "count": 0,
            "sample": [],
            "message": "row level security is enabled on %s.%s in production but not in the dev schema: the release "
            "would open its rows to every role with a grant; enable it in dev (ALTER TABLE .. ENABLE ROW LEVEL "
            "SECURITY, with its policies) or disable it in production first" % (schema, name),
        }
        for schema, name in sorted((prod_rls - dev_rls) & dev_tables)
    ]
    return {
        "database_state": state.describe(),
        "privileges": privileges.describe(),
        "only_in_production": only,
        "problems": problems,
    }


_TABLE_NAMES_SQL = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname <> ALL(%(system)s)
"""


def _rows(conn: t.Any, query: str) -> t.List[t.Tuple[t.Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(query, {"system": list(SYSTEM_SCHEMAS)})
        return list(cur.fetchall())
