"""Helpers for the verified-backup tests (test_backup_*.py): a small database with awkward content, and direct access
to the backup code (the modules themselves are exercised through ``run_module``)."""

from __future__ import annotations

import contextlib
import json
import os
import typing as t

import pgworld
from psycopg2 import sql

from ansible_collections.pgshift.ops.plugins.module_utils import _backup, _backup_verify
from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams
from ansible_collections.pgshift.ops.plugins.module_utils._identity import qualified_key

HOSTILE_SCHEMA = "With a space"
HOSTILE_TABLE = 'we"ird.tab'

SAMPLE_SQL = [
    sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(HOSTILE_SCHEMA)),
    sql.SQL(
        "CREATE TABLE {} (id int PRIMARY KEY, label text, price numeric(12,2), seen timestamptz, raw bytea, doc jsonb,"
        " twice int GENERATED ALWAYS AS (id * 2) STORED)"
    ).format(sql.Identifier(HOSTILE_SCHEMA, HOSTILE_TABLE)),
    sql.SQL(
        "INSERT INTO {} (id, label, price, seen, raw, doc)"
        " SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE 'Ünïcode ' || g END,"
        " g * 1.25, timestamptz '2024-01-01 12:00:00+02' + g * interval '1 hour', decode(md5(g::text), 'hex'),"
        " jsonb_build_object('g', g, 'tags', jsonb_build_array('a', g)) FROM generate_series(1, 300) g"
    ).format(sql.Identifier(HOSTILE_SCHEMA, HOSTILE_TABLE)),
    sql.SQL(
        "CREATE TABLE public.orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, amount float8, note text)"
    ),
    sql.SQL(
        "INSERT INTO public.orders (amount, note) SELECT g / 3.0, repeat('x', g % 50) FROM generate_series(1, 500) g"
    ),
    sql.SQL("INSERT INTO public.orders (amount, note) SELECT 1.5, 'duplicate' FROM generate_series(1, 4)"),
    sql.SQL("CREATE TABLE public.measures (at date NOT NULL, v int) PARTITION BY RANGE (at)"),
    sql.SQL(
        "CREATE TABLE public.measures_2023 PARTITION OF public.measures"
        " FOR VALUES FROM ('2023-01-01') TO ('2024-01-01')"
    ),
    sql.SQL(
        "CREATE TABLE public.measures_2024 PARTITION OF public.measures"
        " FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')"
    ),
    sql.SQL("INSERT INTO public.measures SELECT date '2023-06-01' + g, g FROM generate_series(0, 400) g"),
    sql.SQL("CREATE TABLE public.empty_one (x int)"),
    sql.SQL(
        "CREATE TABLE public.pgmigrations"
        " (id SERIAL PRIMARY KEY, name varchar(255) NOT NULL, run_on timestamp NOT NULL)"
    ),
    sql.SQL(
        "INSERT INTO public.pgmigrations (name, run_on)"
        " VALUES ('001_init', '2024-01-01 10:00'), ('002_more', '2024-02-01 10:00')"
    ),
]

SAMPLE_TABLES = {
    qualified_key(HOSTILE_SCHEMA, HOSTILE_TABLE): 300,  # 'With a space."we""ird.tab"': the dot is quoted
    "public.orders": 504,
    "public.measures_2023": 214,
    "public.measures_2024": 187,
    "public.empty_one": 0,
    "public.pgmigrations": 2,
}


def fill_sample(cluster: pgworld.Cluster, database: str) -> None:
    with contextlib.closing(cluster.connect(database)) as conn, conn.cursor() as cur:
        for statement in SAMPLE_SQL:
            cur.execute(statement)


def params(cluster: pgworld.Cluster, database: str = "postgres") -> ConnParams:
    return ConnParams.from_params(cluster.conn(database))


def take(cluster: pgworld.Cluster, database: str, dest: str, **options: t.Any) -> t.Dict[str, t.Any]:
    return _backup.take_backup(params(cluster, database), _backup.BackupOptions(dest_dir=str(dest), **options))


def verify(manifest_path: str, level: str, cluster: t.Optional[pgworld.Cluster] = None) -> t.Dict[str, t.Any]:
    return _backup_verify.verify_backup(manifest_path, level, params(cluster) if cluster else None, jobs=2)


def reseal(
    manifest_path: str, refresh_files: bool = True, edit: t.Optional[t.Callable[[t.Dict[str, t.Any]], None]] = None
) -> None:
    """Rewrite a manifest as if the backup had been written that way (file digests recomputed, seal renewed)."""
    with open(manifest_path) as handle:
        manifest = json.load(handle)
    if refresh_files:
        manifest["files"] = _backup.file_digests(os.path.dirname(manifest_path))
    if edit:
        edit(manifest)
    _backup.write_manifest(manifest_path, manifest)


def counts(cluster: pgworld.Cluster, database: str, tables: t.Sequence[t.Tuple[str, str]]) -> t.Dict[str, int]:
    out: t.Dict[str, int] = {}
    with contextlib.closing(cluster.connect(database)) as conn, conn.cursor() as cur:
        for schema, name in tables:
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name)))
            out["%s.%s" % (schema, name)] = cur.fetchone()[0]
    return out


def database_exists(cluster: pgworld.Cluster, name: str) -> bool:
    with contextlib.closing(cluster.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        return cur.fetchone() is not None


def databases_like(cluster: pgworld.Cluster, prefix: str) -> t.List[str]:
    with contextlib.closing(cluster.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (prefix,))
        return [r[0] for r in cur.fetchall()]
