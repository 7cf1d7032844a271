# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""node-pg-migrate's ledger table, read and written exactly as node-pg-migrate does."""

from __future__ import annotations

import typing as t

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover - the module reports it: _connection.connect() checks HAS_PSYCOPG2 first
    pass

from ansible_collections.pgshift.ops.plugins.module_utils._migration_files import LEDGER_TABLE


def ledger_exists(cur: t.Any, schema: str = "public", table: str = LEDGER_TABLE) -> bool:
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (sql.Identifier(schema, table).as_string(cur),))
    return bool(cur.fetchone()[0])


def ensure_ledger(cur: t.Any, schema: str = "public", table: str = LEDGER_TABLE) -> None:
    """Create the ledger the way node-pg-migrate creates it (no extra columns)."""
    cur.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} "
            "(id SERIAL PRIMARY KEY, name varchar(255) NOT NULL, run_on timestamp NOT NULL)"
        ).format(sql.Identifier(schema, table))
    )


def applied(cur: t.Any, schema: str = "public", table: str = LEDGER_TABLE) -> t.List[t.Dict[str, t.Any]]:
    """Applied migrations in node-pg-migrate's order (ORDER BY run_on, id); empty when there is no ledger."""
    if not ledger_exists(cur, schema, table):
        return []
    cur.execute(sql.SQL("SELECT id, name, run_on FROM {} ORDER BY run_on, id").format(sql.Identifier(schema, table)))
    return [{"id": r[0], "name": r[1], "run_on": r[2].isoformat(sep=" ")} for r in cur.fetchall()]


def record_up(cur: t.Any, name: str, schema: str = "public", table: str = LEDGER_TABLE) -> None:
    cur.execute(
        sql.SQL("INSERT INTO {} (name, run_on) VALUES (%s, NOW())").format(sql.Identifier(schema, table)), (name,)
    )


def record_down(cur: t.Any, name: str, schema: str = "public", table: str = LEDGER_TABLE) -> None:
    cur.execute(sql.SQL("DELETE FROM {} WHERE name = %s").format(sql.Identifier(schema, table)), (name,))


# --------------------------------------------------------------------------------------------------------------------
# pgshift's own metadata, kept beside node-pg-migrate's ledger in a table of its own (pgmigrations is never altered).
META_TABLE = "pgshift_migration_meta"


def meta_exists(cur: t.Any, schema: str = "public") -> bool:
    return ledger_exists(cur, schema, META_TABLE)


def ensure_meta(cur: t.Any, schema: str = "public") -> None:
    cur.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, sha256 text, applied_by text, "
            "applied_at timestamptz, duration_ms bigint, engine text)"
        ).format(sql.Identifier(schema, META_TABLE))
    )


def read_meta(cur: t.Any, schema: str = "public") -> t.Dict[str, t.Dict[str, t.Any]]:
    """pgshift's metadata per migration name; empty when the table does not exist."""
    if not meta_exists(cur, schema):
        return {}
    cur.execute(
        sql.SQL("SELECT name, sha256, applied_by, applied_at, duration_ms, engine FROM {}").format(
            sql.Identifier(schema, META_TABLE)
        )
    )
    return {
        r[0]: {
            "sha256": r[1],
            "applied_by": r[2],
            "applied_at": r[3].isoformat() if r[3] is not None else None,
            "duration_ms": r[4],
            "engine": r[5],
        }
        for r in cur.fetchall()
    }


def record_meta(
    cur: t.Any,
    name: str,
    sha256: str,
    applied_by: str,
    duration_ms: t.Optional[int],
    engine: str,
    schema: str = "public",
) -> None:
    cur.execute(
        sql.SQL(
            "INSERT INTO {} (name, sha256, applied_by, applied_at, duration_ms, engine) "
            "VALUES (%s, %s, %s, now(), %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET sha256 = EXCLUDED.sha256, applied_by = EXCLUDED.applied_by, "
            "applied_at = EXCLUDED.applied_at, duration_ms = EXCLUDED.duration_ms, engine = EXCLUDED.engine"
        ).format(sql.Identifier(schema, META_TABLE)),
        (name, sha256, applied_by, duration_ms, engine),
    )


def delete_meta(cur: t.Any, name: str, schema: str = "public") -> None:
    if meta_exists(cur, schema):
        cur.execute(sql.SQL("DELETE FROM {} WHERE name = %s").format(sql.Identifier(schema, META_TABLE)), (name,))
