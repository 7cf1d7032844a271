# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""A proposal of the DDL that would take schema A to schema B, for review only: pgshift never runs it.

Only the changes that map onto one plain statement are proposed: schemas, sequences, plain tables, columns (add,
drop, rename, type, default, nullability), constraints, indexes, views, functions, triggers and comments. Everything
else (types, partitioning, policies, extensions, owners, grants, materialized views) is listed as a ``-- not
proposed`` line, so the proposal never pretends to be complete. Names in the differences are already quoted by the
server (``quote_ident``) and definitions come from the server's own ``pg_get_*def`` functions.
"""

from __future__ import annotations

import typing as t

Difference = t.Dict[str, t.Any]

_COMMENT_TARGET = {
    "schema": "SCHEMA",
    "table": "TABLE",
    "column": "COLUMN",
    "index": "INDEX",
    "sequence": "SEQUENCE",
    "view": "VIEW",
}


def _literal(value: t.Optional[str]) -> str:
    if value is None:
        return "NULL"
    return "'" + str(value).replace("'", "''") + "'"


def split_name(name: str) -> t.List[str]:
    """``public."a.b".col`` -> ``['public', '"a.b"', 'col']`` (parts keep their quotes)."""
    parts: t.List[str] = []
    current = ""
    quoted = False
    index = 0
    while index < len(name):
        char = name[index]
        if char == '"':
            if quoted and name[index + 1 : index + 2] == '"':
                current += '""'
                index += 2
                continue
            quoted = not quoted
            current += char
        elif char == "." and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
        index += 1
    parts.append(current)
    return parts


def _owner_table(name: str) -> str:
    return ".".join(split_name(name)[:-1])


def _column_name(name: str, table: t.Optional[str] = None) -> str:
    return split_name(name)[-1]


def _column_clause(column: str, entry: t.Dict[str, t.Any]) -> str:
    parts = [column, str(entry["type"])]
    if entry.get("collation"):
        parts.append("COLLATE " + str(entry["collation"]))
    if entry.get("generated"):
        kind, _sep, expression = str(entry["generated"]).partition(": ")
        parts.append("GENERATED ALWAYS AS (%s) %s" % (expression, kind.upper()))
    elif entry.get("default") is not None:
        parts.append("DEFAULT " + str(entry["default"]))
    if entry.get("identity"):
        parts.append("GENERATED %s AS IDENTITY" % str(entry["identity"]).upper())
    if entry.get("not_null"):
        parts.append("NOT NULL")
    return " ".join(parts)


def _function_keyword(entry: t.Dict[str, t.Any]) -> str:
    return {"procedure": "PROCEDURE", "aggregate": "AGGREGATE"}.get(str(entry.get("kind")), "FUNCTION")


def _statement(text: str) -> str:
    text = text.strip()
    return text if text.endswith(";") else text + ";"


def propose_ddl(differences: t.Sequence[Difference]) -> t.List[str]:
    """Statements (and ``-- not proposed`` notes) in an order that can run, for a human to review."""
    buckets: t.Dict[str, t.List[t.Tuple[t.Any, str]]] = {
        key: []
        for key in (
            "schemas",
            "sequences",
            "tables",
            "columns",
            "owned",
            "constraints",
            "fkeys",
            "indexes",
            "views",
            "functions",
            "triggers",
            "comments",
            "drops",
            "notes",
        )
    }
    new_tables = {d["name"] for d in differences if d["kind"] == "table" and d["change"] == "added"}
    # partitioned tables, partitions and foreign tables need more than CREATE TABLE: not proposed
    skipped_tables = {
        d["name"]
        for d in differences
        if d["kind"] == "table"
        and d["change"] == "added"
        and ((d["after"] or {}).get("kind") != "table" or (d["after"] or {}).get("partition_of"))
    }

    # indexes that belong to a primary key, unique or exclusion constraint come and go with the constraint
    constraint_indexes: t.Set[str] = set()
    for d in differences:
        if d["kind"] == "constraint":
            parts = split_name(d["name"])
            constraint_indexes.add(parts[0] + "." + parts[-1])

    def note(d: Difference, why: str = "") -> None:
        what = d["change"] + (" " + d["attribute"] if d.get("attribute") else "")
        buckets["notes"].append(
            ((d["kind"], d["name"]), "-- not proposed: %s %s %s%s" % (d["kind"], d["name"], what, why))
        )

    def handle(d: Difference) -> None:
        kind, name, change, before, after = d["kind"], d["name"], d["change"], d["before"], d["after"]
        attribute = d.get("attribute")
        entry = after if isinstance(after, dict) else before if isinstance(before, dict) else {}
        table = _owner_table(name) if kind in ("column", "constraint", "trigger", "policy") else None
        if attribute == "comment" and kind in _COMMENT_TARGET:
            buckets["comments"].append(
                (name, "COMMENT ON %s %s IS %s;" % (_COMMENT_TARGET[kind], name, _literal(after)))
            )
            return
        if attribute == "comment" and kind == "function":
            target = "%s %s" % (_function_keyword(entry), name)
            buckets["comments"].append((name, "COMMENT ON %s IS %s;" % (target, _literal(after))))
            return
        if attribute == "comment" and kind in ("constraint", "trigger", "policy") and table:
            label = {"constraint": "CONSTRAINT", "trigger": "TRIGGER", "policy": "POLICY"}[kind]
            target = "%s %s ON %s" % (label, _column_name(name, table), table)
            buckets["comments"].append((name, "COMMENT ON %s IS %s;" % (target, _literal(after))))
            return
        if kind == "schema" and change == "added":
            buckets["schemas"].append((name, "CREATE SCHEMA %s;" % name))
        elif kind == "schema" and change == "removed":
            buckets["drops"].append(((9, name), "DROP SCHEMA %s;  -- review: fails while it holds objects" % name))
        elif kind == "sequence" and change == "added" and not after.get("identity"):
            buckets["sequences"].append(
                (
                    name,
                    "CREATE SEQUENCE %s AS %s INCREMENT %s MINVALUE %s MAXVALUE %s START %s CACHE %s%s;"
                    % (
                        name,
                        after["type"],
                        after["increment"],
                        after["min"],
                        after["max"],
                        after["start"],
                        after["cache"],
                        " CYCLE" if after.get("cycle") else "",
                    ),
                )
            )
            if after.get("owned_by"):
                buckets["owned"].append((name, "ALTER SEQUENCE %s OWNED BY %s;" % (name, after["owned_by"])))
        elif kind == "sequence" and change == "added":
            return  # an identity column creates its own sequence
        elif kind == "table" and change == "added" and name not in skipped_tables:
            unlogged = "UNLOGGED " if after.get("unlogged") else ""
            buckets["tables"].append((name, "CREATE %sTABLE %s ();" % (unlogged, name)))
        elif kind == "table" and change == "removed":
            buckets["drops"].append(((5, name), "DROP TABLE %s;  -- review: drops its data" % name))
        elif kind == "column" and table in skipped_tables:
            return
        elif kind == "column" and change == "added":
            clause = _column_clause(_column_name(name, table), after)
            buckets["columns"].append(
                ((table, after.get("position", 0)), "ALTER TABLE %s ADD COLUMN %s;" % (table, clause))
            )
        elif kind == "column" and change == "removed" and table not in new_tables:
            buckets["drops"].append(
                (
                    (3, name),
                    "ALTER TABLE %s DROP COLUMN %s;  -- review: drops its data" % (table, _column_name(name, table)),
                )
            )
        elif kind == "column" and change == "renamed":
            old_table = table
            buckets["columns"].append(
                (
                    (old_table, -1),
                    "ALTER TABLE %s RENAME COLUMN %s TO %s;" % (old_table, _column_name(before), _column_name(name)),
                )
            )
        elif kind == "column" and change == "changed" and attribute in ("type", "default", "not_null"):
            column = _column_name(name, table)
            if attribute == "type":
                text = "ALTER TABLE %s ALTER COLUMN %s TYPE %s;  -- review: USING, rewrite" % (table, column, after)
            elif attribute == "default":
                action = "DROP DEFAULT" if after is None else "SET DEFAULT " + str(after)
                text = "ALTER TABLE %s ALTER COLUMN %s %s;" % (table, column, action)
            else:
                text = "ALTER TABLE %s ALTER COLUMN %s %s NOT NULL;" % (table, column, "SET" if after else "DROP")
            buckets["columns"].append(((table, 10**6), text))
        elif kind == "constraint" and table in skipped_tables:
            return
        elif kind == "constraint" and change in ("added", "changed", "removed"):
            if change == "changed" and attribute not in ("definition",):
                if attribute in ("deferrable", "initially_deferred", "validated", "type"):
                    return  # the definition carries these and changed with them
                note(d)
                return
            constraint = _column_name(name, table)
            if change == "removed":
                buckets["drops"].append(((1, name), "ALTER TABLE %s DROP CONSTRAINT %s;" % (table, constraint)))
            else:
                definition = after if change == "changed" else after["definition"]
                bucket = "fkeys" if str(definition).startswith("FOREIGN KEY") else "constraints"
                drop = "DROP CONSTRAINT %s, " % constraint if change == "changed" else ""
                buckets[bucket].append(
                    (name, "ALTER TABLE %s %sADD CONSTRAINT %s %s;" % (table, drop, constraint, definition))
                )
        elif kind == "index" and name in constraint_indexes:
            return
        elif kind == "index" and change in ("added", "removed", "changed"):
            if change == "changed" and attribute != "definition":
                if attribute != "table":
                    note(d)
                return
            if change == "removed":
                buckets["drops"].append(((2, name), "DROP INDEX %s;" % name))
            else:
                definition = after if change == "changed" else after["definition"]
                drop = "DROP INDEX %s;\n" % name if change == "changed" else ""
                buckets["indexes"].append((name, drop + _statement(definition)))
        elif kind == "view" and not entry.get("materialized", False) and change in ("added", "removed", "changed"):
            if change == "removed":
                buckets["drops"].append(((4, name), "DROP VIEW %s;" % name))
            elif change == "added" or attribute == "definition":
                definition = after["definition"] if change == "added" else after
                buckets["views"].append((name, "CREATE OR REPLACE VIEW %s AS\n%s" % (name, _statement(definition))))
            else:
                note(d)
        elif kind == "function" and change in ("added", "removed", "changed"):
            if change == "removed":
                buckets["drops"].append(((4, name), "DROP %s %s;" % (_function_keyword(before), name)))
            elif change == "added" and "definition" in after:
                buckets["functions"].append((name, _statement(after["definition"])))
            elif change == "changed" and attribute == "definition":
                buckets["functions"].append((name, _statement(after)))
            else:
                note(d)
        elif kind == "trigger" and table and change in ("added", "removed", "changed"):
            trigger = _column_name(name, table)
            if change == "changed" and attribute == "enabled":
                verb = {
                    "disabled": "DISABLE",
                    "origin": "ENABLE",
                    "replica": "ENABLE REPLICA",
                    "always": "ENABLE ALWAYS",
                }
                buckets["triggers"].append(
                    (name, "ALTER TABLE %s %s TRIGGER %s;" % (table, verb.get(str(after), "ENABLE"), trigger))
                )
                return
            if change == "removed":
                buckets["drops"].append(((0, name), "DROP TRIGGER %s ON %s;" % (trigger, table)))
            elif change == "added":
                buckets["triggers"].append((name, _statement(after["definition"])))
            elif attribute == "definition":
                drop = "DROP TRIGGER %s ON %s;\n" % (trigger, table)
                buckets["triggers"].append((name, drop + _statement(after)))
            else:
                note(d)
        else:
            note(d)

    def comment_target(d: Difference) -> t.Optional[str]:
        kind, name = d["kind"], d["name"]
        if kind in _COMMENT_TARGET:
            return "%s %s" % (_COMMENT_TARGET[kind], name)
        if kind == "function":
            return "%s %s" % (_function_keyword(d["after"]), name)
        if kind in ("constraint", "trigger", "policy"):
            return "%s %s ON %s" % (kind.upper(), _column_name(name), _owner_table(name))
        return None

    for d in differences:
        proposed = sum(len(items) for key, items in buckets.items() if key != "notes")
        handle(d)
        added_entry = d["after"] if d["change"] == "added" and isinstance(d["after"], dict) else {}
        if (
            added_entry.get("comment") is not None
            and sum(len(items) for key, items in buckets.items() if key != "notes") > proposed
        ):
            target = comment_target(d)
            if target:
                buckets["comments"].append(
                    (d["name"], "COMMENT ON %s IS %s;" % (target, _literal(added_entry["comment"])))
                )

    statements: t.List[str] = []
    order: t.Tuple[str, ...] = ("schemas", "sequences", "tables", "columns", "owned", "constraints", "fkeys")
    order += ("indexes", "functions", "views", "triggers", "comments", "drops", "notes")
    for key in order:
        # within a bucket the keys have one shape: a name, (table, position) or (drop rank, name)
        statements += [text for _key, text in sorted(buckets[key], key=lambda item: item[0])]
    return statements
