"""A throwaway PostgreSQL cluster for the recover scenario (tools/pgworld.py's Cluster: free port, password auth).

python pg.py start STATE_DIR     cluster in a new temp folder; databases shop (with a row) and shop__next;
                                 STATE_DIR/conn.json (pgshift connection options) and STATE_DIR/pgpass, both 0600
python pg.py destroy STATE_DIR   stop the cluster and remove its folder
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import pgworld  # noqa: E402


def _write_private(path: str, text: str) -> None:
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(path + ".tmp", path)


def start(state: str) -> None:
    os.makedirs(state, mode=0o700, exist_ok=True)
    base = tempfile.mkdtemp(prefix="pgshift-molecule-")
    os.chmod(base, 0o755)  # noqa: S103 - the server runs as the postgres OS user
    cluster = pgworld.Cluster("molecule", base, pgworld.free_port(), secrets.token_urlsafe(18))
    # conn.json first: `destroy` finds the cluster through it, also when what follows fails
    _write_private(os.path.join(state, "conn.json"), json.dumps(dict(cluster.conn("shop"), root=base)))
    try:
        cluster.start()
        _populate(cluster)
    except BaseException:
        destroy(state)
        raise
    _write_private(os.path.join(state, "pgpass"), "127.0.0.1:%d:*:postgres:%s\n" % (cluster.port, cluster.password))


def _populate(cluster: pgworld.Cluster) -> None:
    with contextlib.closing(cluster.connect()) as conn, conn.cursor() as cur:
        cur.execute("CREATE DATABASE shop")
        cur.execute("CREATE DATABASE shop__next")
    with contextlib.closing(cluster.connect("shop")) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE customers (id int PRIMARY KEY, full_name text)")
        cur.execute("INSERT INTO customers VALUES (7, 'Customer 7')")


def destroy(state: str) -> None:
    path = os.path.join(state, "conn.json")
    if not os.path.exists(path):
        return
    with open(path) as handle:
        conn = json.load(handle)
    pgworld.Cluster("molecule", conn["root"], conn["port"], conn["password"]).destroy()
    shutil.rmtree(conn["root"], ignore_errors=True)
    os.unlink(path)


if __name__ == "__main__":
    {"start": start, "destroy": destroy}[sys.argv[1]](sys.argv[2])
