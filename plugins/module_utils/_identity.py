# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""A table's identity is the pair (schema, name): the one way it is written as a string, and read back.

Plans, copy and check results, backup manifests, reports and the mapping file name tables by a string key. The key
must never make two tables one, so it is an injective encoding of the pair, written by :func:`table_key` /
:func:`qualified_key` and read by :func:`parse_table_key` / :func:`parse_qualified_key`, nowhere else:

- a part (schema, table or column name) is written bare unless it contains ``.`` or ``"`` (or is empty); then it is
  double-quoted, with every ``"`` doubled: table ``a.b`` -> ``"a.b"``, ``we"ird`` -> ``"we""ird"``;
- parts are joined with ``.``; :func:`table_key` leaves out the ``public.`` prefix (``customers``,
  ``sales.orders``, ``"a.b"`` for ``public."a.b"`` beside ``a.b`` for schema ``a``, table ``b``);
  :func:`qualified_key` always writes the schema (``public.customers``: backup manifests);
- a column is its table's key, ``.``, the column part: ``customers.email``, ``sales.orders."x.y"``.

Keys of ordinary names (no dot, no double quote) are the same as before this encoding existed. Names are the catalog
spelling, case and spaces kept: this is not SQL identifier syntax (no case folding), only a lossless way to write a
pair; SQL always receives the parts through ``psycopg2.sql.Identifier``.
"""

from __future__ import annotations

import typing as t

from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError

DEFAULT_SCHEMA = "public"


def quote_part(part: str) -> str:
    """One name as a key part: bare, or double-quoted (``"`` doubled) when it holds ``.`` or ``"`` or is empty."""
    text = str(part)
    if text and "." not in text and '"' not in text:
        return text
    return '"' + text.replace('"', '""') + '"'


def split_parts(text: str) -> t.List[str]:
    """The parts of a dotted key, split at unquoted dots and unquoted; PgShiftError when it is malformed."""
    value = str(text)
    parts: t.List[str] = []
    i, n = 0, len(value)
    while True:
        if i < n and value[i] == '"':
            j, buf = i + 1, []
            while True:
                k = value.find('"', j)
                if k < 0:
                    raise PgShiftError("name %r has an unclosed double quote" % value)
                buf.append(value[j:k])
                if value[k + 1 : k + 2] == '"':
                    buf.append('"')
                    j = k + 2
                    continue
                i = k + 1
                break
            parts.append("".join(buf))
        else:
            k = value.find(".", i)
            end = n if k < 0 else k
            part = value[i:end]
            if not part:
                raise PgShiftError("name %r has an empty part (two dots, or a dot at an end)" % value)
            if '"' in part:
                raise PgShiftError(
                    'name %r: a part holding a double quote must be double-quoted, with the quote doubled ("a""b")'
                    % value
                )
            parts.append(part)
            i = end
        if i == n:
            return parts
        if value[i] != ".":
            raise PgShiftError("name %r: a closing double quote must be followed by a dot or the end" % value)
        i += 1
        if i == n:
            raise PgShiftError("name %r ends with a dot" % value)


def table_key(schema: str, name: str) -> str:
    """The key of table ``schema.name``, ``public.`` left out: ``customers``, ``sales.orders``, ``"a.b"``."""
    if schema == DEFAULT_SCHEMA:
        return quote_part(name)
    return quote_part(schema) + "." + quote_part(name)


def qualified_key(schema: str, name: str) -> str:
    """The key of table ``schema.name`` with its schema always written: ``public.customers``, ``public."a.b"``."""
    return quote_part(schema) + "." + quote_part(name)


def parse_table_key(key: str) -> t.Tuple[str, str]:
    """(schema, name) of a table key: ``name`` (schema public) or ``schema.name``, parts quoted as needed."""
    parts = split_parts(key)
    if len(parts) == 1:
        return DEFAULT_SCHEMA, parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise PgShiftError(
        "table %r has more than two unquoted dots: write schema.table, and double-quote a name that holds a dot "
        '(public."a.b")' % str(key)
    )


def parse_qualified_key(key: str) -> t.Tuple[str, str]:
    """(schema, name) of a ``schema.name`` key (:func:`qualified_key`); the schema is required."""
    parts = split_parts(key)
    if len(parts) != 2:
        raise PgShiftError(
            'table %r is not of the form schema.table (double-quote a name that holds a dot: public."a.b")' % str(key)
        )
    return parts[0], parts[1]


def normalize_table_key(key: str) -> str:
    """The canonical :func:`table_key` of a key written by hand (``public.orders`` -> ``orders``)."""
    return table_key(*parse_table_key(key))


def column_key(table: str, column: str) -> str:
    """The key of a column: its table's key (from :func:`table_key`), a dot, the column as a part."""
    return table + "." + quote_part(column)


def parse_column_key(key: str) -> t.Tuple[str, str, str]:
    """(schema, table, column) of ``table.column`` or ``schema.table.column``, parts quoted as needed."""
    parts = split_parts(key)
    if len(parts) == 2:
        return DEFAULT_SCHEMA, parts[0], parts[1]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    raise PgShiftError(
        "column %r is not of the form table.column or schema.table.column (double-quote a name that holds a dot: "
        '"a.b".c)' % str(key)
    )


def normalize_column_key(key: str) -> str:
    """The canonical :func:`column_key` of a column key written by hand."""
    schema, table, column = parse_column_key(key)
    return column_key(table_key(schema, table), column)


def legacy_qualified_key(key: str) -> str:
    """A manifest key written before this encoding (``schema.table`` joined, split at its first dot), re-encoded."""
    schema, dot, name = str(key).partition(".")
    if not dot or not schema or not name:
        raise PgShiftError("table %r is not of the form schema.table" % str(key))
    return qualified_key(schema, name)
