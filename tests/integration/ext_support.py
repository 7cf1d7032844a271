"""A tiny extension of the tests' own that registers a configuration table (``pg_extension_config_dump``): no
contrib extension shipped with PostgreSQL does. Its control file and script are written into the server's
``SHAREDIR/extension`` folder (the tests run as root) under a name unique to the run, and removed afterwards."""

from __future__ import annotations

import contextlib
import os
import subprocess
import typing as t
import uuid

import pgworld

# The extension's own rows are ``standard``; the user's rows are the others (the registered condition).
SCRIPT = """
CREATE TABLE @extschema@.{table} (
    id integer PRIMARY KEY,
    name text NOT NULL,
    standard boolean NOT NULL DEFAULT false,
    settings jsonb,
    weight numeric
);
INSERT INTO @extschema@.{table} (id, name, standard, settings) VALUES
    (1, 'builtin one', true, '{{"level": 1}}'), (2, 'builtin two', true, NULL);
SELECT pg_catalog.pg_extension_config_dump('@extschema@.{table}', 'WHERE NOT standard');
"""
CONDITION = "WHERE NOT standard"


def sharedir(cluster: pgworld.Cluster) -> str:
    pg_config = os.path.join(cluster.bindir, "pg_config")
    if os.access(pg_config, os.X_OK):
        out = subprocess.run([pg_config, "--sharedir"], capture_output=True, text=True, check=True).stdout.strip()
        if out:
            return out
    return os.path.normpath(os.path.join(cluster.bindir, "..", "share"))


@contextlib.contextmanager
def config_extension(cluster: pgworld.Cluster, table: str = "cfg_entries") -> t.Iterator[str]:
    """Install the extension's files; yields its name (``CREATE EXTENSION <name>`` then works)."""
    name = "pgshift_cfgtest_" + uuid.uuid4().hex[:8]
    folder = os.path.join(sharedir(cluster), "extension")
    control = os.path.join(folder, name + ".control")
    script = os.path.join(folder, name + "--1.0.sql")
    with open(control, "w", encoding="utf-8") as handle:
        handle.write("comment = 'pgshift test: a configuration table'\ndefault_version = '1.0'\nrelocatable = false\n")
        handle.write("schema = public\n")
    try:
        with open(script, "w", encoding="utf-8") as handle:
            handle.write(SCRIPT.format(table=table))
        yield name
    finally:
        for path in (control, script):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
