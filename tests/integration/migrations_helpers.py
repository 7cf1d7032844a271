"""Helpers shared by the migrations tests (real PostgreSQL, real node-pg-migrate)."""

from __future__ import annotations

import contextlib
import os
import shutil
import typing as t

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NODE_BIN = os.path.join(ROOT, "tools", "node", "node_modules", ".bin", "node-pg-migrate")
SAMPLE = os.path.join(ROOT, "sample_app", "migrations")
LOCK_ID = 7241865325823964


def require_node() -> str:
    if not os.access(NODE_BIN, os.X_OK):
        pytest.fail("node-pg-migrate is not installed in tools/node: run 'make node-deps' (part of 'make test-deps')")
    return NODE_BIN


def write_folder(base: str, files: t.Dict[str, str]) -> str:
    os.makedirs(base, exist_ok=True)
    for name, content in files.items():
        with open(os.path.join(base, name), "w", encoding="utf-8") as handle:
            handle.write(content)
    return base


def copy_sample(dest: str) -> str:
    shutil.copytree(SAMPLE, dest)
    return dest


def query(cluster: t.Any, database: str, sql_text: str, params: t.Any = None) -> t.List[t.Tuple[t.Any, ...]]:
    with contextlib.closing(cluster.connect(database)) as conn, conn.cursor() as cur:
        cur.execute(sql_text, params)
        return cur.fetchall() if cur.description else []


def table_exists(cluster: t.Any, database: str, name: str) -> bool:
    return bool(query(cluster, database, "SELECT to_regclass(%s) IS NOT NULL", (name,))[0][0])


def ledger(cluster: t.Any, database: str) -> t.List[t.Tuple[int, str]]:
    if not table_exists(cluster, database, "public.pgmigrations"):
        return []
    return [
        (r[0], r[1]) for r in query(cluster, database, "SELECT id, name FROM public.pgmigrations ORDER BY run_on, id")
    ]


def snapshot(cluster: t.Any, database: str) -> t.Dict[str, t.Any]:
    from ansible_collections.pgshift.ops.plugins.module_utils._migrations_validate import schema_snapshot

    with contextlib.closing(cluster.connect(database, autocommit=False)) as conn:
        return schema_snapshot(conn)


def catalogs(cluster: t.Any, database: str) -> t.Dict[str, t.Dict[str, str]]:
    """The small fallback catalog snapshot of _migrations_validate (used when _schema.py is absent)."""
    from ansible_collections.pgshift.ops.plugins.module_utils._migrations_validate import catalog_snapshot

    with contextlib.closing(cluster.connect(database)) as conn, conn.cursor() as cur:
        return catalog_snapshot(cur)


def params(cluster: t.Any, database: str) -> t.Any:
    from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams

    return ConnParams.from_params(cluster.conn(database))
