"""Helpers for the data carry-over tests (test_data_*.py): build a production database, a dev schema and the
``__next`` target loaded with the dev schema's pre-data section, then post-data after the copy."""

from __future__ import annotations

import contextlib
import os
import subprocess
import typing as t
import uuid

import pgworld
from psycopg2 import sql

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAPPING = os.path.join(ROOT, "sample_app", "mapping.yml")


def _env(cluster: pgworld.Cluster) -> t.Dict[str, str]:
    # Test helper only: pgshift itself passes passwords through a 0600 PGPASSFILE.
    env = dict(os.environ, PGPASSWORD=cluster.password, PGHOST="127.0.0.1", PGPORT=str(cluster.port), PGUSER="postgres")
    env.pop("PGPASSFILE", None)
    return env


def bin_for(cluster: pgworld.Cluster, name: str) -> str:
    path = os.path.join(cluster.bindir, name)
    return path if os.access(path, os.X_OK) else name


def create_db(cluster: pgworld.Cluster, name: t.Optional[str] = None) -> str:
    name = name or "d_" + uuid.uuid4().hex[:10]
    with contextlib.closing(cluster.connect()) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(sql.Identifier(name)))
    return name


def drop_db(cluster: pgworld.Cluster, name: str) -> None:
    with contextlib.closing(cluster.connect()) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def execute(
    cluster: pgworld.Cluster, database: str, statement: str, params: t.Sequence[t.Any] = ()
) -> t.List[t.Tuple[t.Any, ...]]:
    with contextlib.closing(cluster.connect(database)) as conn, conn.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchall() if cur.description else []


def run_sql(cluster: pgworld.Cluster, database: str, text: str) -> None:
    subprocess.run(
        [bin_for(cluster, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", database],
        input=text,
        text=True,
        check=True,
        env=_env(cluster),
        capture_output=True,
    )


def shop(cluster: pgworld.Cluster, migrations: t.Optional[int], scale: float) -> str:
    """A shop database with the first ``migrations`` sample migrations (None: all) and ``scale`` demo rows."""
    pgworld.ensure_app_role(cluster, "app-" + uuid.uuid4().hex[:8])
    name = "shop_" + uuid.uuid4().hex[:8]
    pgworld.create_shop(cluster, migrations, scale, name=name)
    return name


def schema_dump(cluster: pgworld.Cluster, database: str, path: str) -> None:
    subprocess.run(
        [bin_for(cluster, "pg_dump"), "-Fc", "--schema-only", "-f", path, "-d", database],
        check=True,
        env=_env(cluster),
        capture_output=True,
    )


def restore_section(cluster: pgworld.Cluster, dump: str, database: str, section: str) -> None:
    proc = subprocess.run(
        [bin_for(cluster, "pg_restore"), "--section=" + section, "--no-owner", "-d", database, dump],
        check=False,
        env=_env(cluster),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError("pg_restore --section=%s failed: %s" % (section, proc.stderr))


class Carry(t.NamedTuple):
    cluster: pgworld.Cluster
    source: str
    dev: str
    target: str
    dump: str

    def conn(self, which: str) -> t.Dict[str, t.Any]:
        return self.cluster.conn({"source": self.source, "dev": self.dev, "target": self.target}[which])

    def post_data(self) -> None:
        restore_section(self.cluster, self.dump, self.target, "post-data")

    def common_args(self, mapping: t.Optional[str] = MAPPING) -> t.Dict[str, t.Any]:
        args: t.Dict[str, t.Any] = {"source": self.conn("source"), "target": self.conn("target")}
        if mapping:
            args["mapping_file"] = mapping
        return args


def prepare(cluster: pgworld.Cluster, source: str, dev: str, tmp: str) -> Carry:
    """The lead's step 1: ``<source>__next`` with dev's pre-data section."""
    dump = os.path.join(tmp, "dev-%s.dump" % uuid.uuid4().hex[:6])
    schema_dump(cluster, dev, dump)
    target = create_db(cluster, source + "__next")
    restore_section(cluster, dump, target, "pre-data")
    return Carry(cluster, source, dev, target, dump)
