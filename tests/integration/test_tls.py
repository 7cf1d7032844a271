"""Verified TLS end to end: clusters that serve TLS only (pg_hba hostssl, hostnossl rejected), a throwaway CA and a
server certificate for ``localhost`` made by the harness (tools/pgworld.py make_tls), and a role that must also show
a client certificate (clientcert=verify-full).

- a module run with community.postgresql's option names and sslmode verify-full + sslrootcert: psycopg2, pg_dump
  (backup) and pg_restore (restore) all verify the server (TLS is the only way in);
- client certificate authentication through psycopg2, pg_dump, pg_restore (the role cannot log in without it);
- node-pg-migrate (the migrate module's node engine) over verified TLS;
- a wrong CA, a wrong host name, a missing client certificate and a private key others can read are refused in
  Preflight with a message that names the problem and what to fix, before anything changes;
- the whole release (prod_restore.yml) over verify-full against a TLS-only world; a wrong CA stops it in Preflight.
Passwords never reach the output (runs at -vvvv).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import typing as t
import uuid

import pgworld
import pytest
from conftest import _tmp_base, create_database
from migrations_helpers import require_node
from psycopg2 import sql

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pg_tls() -> t.Iterator[pgworld.Cluster]:
    base = _tmp_base("pgshift-tls-")
    tls = pgworld.make_tls(os.path.join(base, "pki"))
    cluster = pgworld.Cluster(
        "tls", os.path.join(base, "cluster"), pgworld.free_port(), "pw-" + uuid.uuid4().hex, tls=tls
    )
    cluster.start()
    pgworld.ensure_cert_role(cluster)
    yield cluster
    cluster.destroy()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def shop_tls(pg_tls: pgworld.Cluster) -> t.Iterator[str]:
    name = create_database(pg_tls, "tls_" + uuid.uuid4().hex[:8])
    with contextlib.closing(pg_tls.connect(name)) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE items (id int PRIMARY KEY, label text)")
        cur.execute("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 250) g")
    yield name
    with contextlib.closing(pg_tls.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (name + "%",))
        for (datname,) in cur.fetchall():
            cur.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(datname)))


def community_names(cluster: pgworld.Cluster, database: str, **overrides: t.Any) -> t.Dict[str, t.Any]:
    """The connection in community.postgresql's option names, verify-full against the harness's CA."""
    assert cluster.tls is not None
    args = {
        "login_host": pgworld.TLS_HOST,
        "login_port": cluster.port,
        "login_user": "postgres",
        "login_password": cluster.password,
        "login_db": database,
        "ssl_mode": "verify-full",
        "ca_cert": cluster.tls.ca,
    }
    args.update(overrides)
    return args


def with_client_cert(cluster: pgworld.Cluster, database: str, **overrides: t.Any) -> t.Dict[str, t.Any]:
    assert cluster.tls is not None
    cert = dict(login_user=pgworld.CERT_ROLE, ssl_cert=cluster.tls.client_cert, ssl_key=cluster.tls.client_key)
    cert.update(overrides)
    return community_names(cluster, database, **cert)


def count_items(cluster: pgworld.Cluster, database: str) -> int:
    with contextlib.closing(cluster.connect(database)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM items")
        return int(cur.fetchone()[0])


def database_names(cluster: pgworld.Cluster) -> t.Set[str]:
    with contextlib.closing(cluster.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database")
        return {r[0] for r in cur.fetchall()}


def test_the_harness_cluster_serves_verified_tls_only(pg_tls: pgworld.Cluster) -> None:
    import psycopg2

    options = dict(pg_tls.conn())
    options["dbname"] = options.pop("database")
    with contextlib.closing(psycopg2.connect(**options)) as conn, conn.cursor() as cur:
        cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert cur.fetchone() == (True,)
    with pytest.raises(psycopg2.OperationalError, match="no encryption"):
        psycopg2.connect(**dict(options, sslmode="disable"))


def test_backup_and_restore_over_verify_full_with_community_postgresql_names(
    pg_tls: pgworld.Cluster, shop_tls: str, run_module: t.Callable[..., t.Any], tmp_path: t.Any
) -> None:
    backup = run_module("backup", dict(community_names(pg_tls, shop_tls), dest_dir=str(tmp_path)), verbosity=4)
    assert not backup.failed, backup.output[-3000:]
    assert pg_tls.password not in backup.output
    assert backup.result["manifest"]["tables"]["public.items"]["rows"] == 250
    target = shop_tls + "_restored"
    restore = run_module(
        "restore",
        dict(community_names(pg_tls, "postgres"), manifest_path=backup.result["manifest_path"], target_database=target),
        verbosity=4,
    )
    assert not restore.failed, restore.output[-3000:]
    assert pg_tls.password not in restore.output
    assert restore.result["verified"] is True
    assert count_items(pg_tls, target) == 250


def test_client_certificate_authentication_reaches_psycopg2_pg_dump_and_pg_restore(
    pg_tls: pgworld.Cluster, shop_tls: str, run_module: t.Callable[..., t.Any], tmp_path: t.Any
) -> None:
    # the role cannot log in without its certificate (pg_hba clientcert=verify-full), not even with the password
    dest = tmp_path / "backups"
    no_cert = community_names(pg_tls, shop_tls, login_user=pgworld.CERT_ROLE)
    refused = run_module("backup", dict(no_cert, dest_dir=str(dest)))
    assert refused.failed
    assert "requires a valid client certificate" in refused.result["msg"]
    assert "give sslcert and sslkey (aliases ssl_cert, ssl_key)" in refused.result["msg"]
    assert not dest.exists() or os.listdir(dest) == []

    backup = run_module("backup", dict(with_client_cert(pg_tls, shop_tls), dest_dir=str(dest)), verbosity=4)
    assert not backup.failed, backup.output[-3000:]
    assert pg_tls.password not in backup.output
    target = shop_tls + "_by_cert"
    restore = run_module(
        "restore",
        dict(
            with_client_cert(pg_tls, "postgres"), manifest_path=backup.result["manifest_path"], target_database=target
        ),
    )
    assert not restore.failed, restore.output[-3000:]
    assert count_items(pg_tls, target) == 250


def test_a_private_key_others_can_read_is_refused_before_connecting(
    pg_tls: pgworld.Cluster, shop_tls: str, run_module: t.Callable[..., t.Any], tmp_path: t.Any
) -> None:
    assert pg_tls.tls is not None
    loose = tmp_path / "loose.key"
    shutil.copyfile(pg_tls.tls.client_key, loose)
    loose.chmod(0o644)
    run = run_module(
        "backup", dict(with_client_cert(pg_tls, shop_tls, ssl_key=str(loose)), dest_dir=str(tmp_path / "b"))
    )
    assert run.failed
    assert run.result["msg"] == (
        "sslkey file %s has mode 0644: libpq refuses a private key that others can read; run chmod 0600 %s"
        % (loose, loose)
    )
    assert not (tmp_path / "b").exists()


def _preflight(
    run_module: t.Callable[..., t.Any], cluster: pgworld.Cluster, database: str, **overrides: t.Any
) -> t.Any:
    args = dict(community_names(cluster, "postgres", **overrides), production_database=database)
    args["schema_source"] = community_names(cluster, database, **overrides)
    return run_module("preflight", args, verbosity=4)


def test_preflight_refuses_a_wrong_ca_and_a_wrong_host_name_and_changes_nothing(
    pg_tls: pgworld.Cluster, shop_tls: str, run_module: t.Callable[..., t.Any]
) -> None:
    assert pg_tls.tls is not None
    before = database_names(pg_tls)

    wrong_ca = _preflight(run_module, pg_tls, shop_tls, ca_cert=pg_tls.tls.other_ca)
    assert wrong_ca.failed
    message = wrong_ca.result["msg"]
    assert "certificate verify failed" in message
    assert (
        "the server's certificate is not signed by a CA in %s: give the CA certificate that signed the server's "
        "certificate (option sslrootcert, alias ca_cert)" % pg_tls.tls.other_ca
    ) in message
    assert pg_tls.password not in wrong_ca.output

    wrong_host = _preflight(run_module, pg_tls, shop_tls, login_host="127.0.0.1")
    assert wrong_host.failed
    message = wrong_host.result["msg"]
    assert 'does not match host name "127.0.0.1"' in message
    assert "the server's certificate is not issued for host '127.0.0.1'" in message
    assert "connect with a host name the certificate holds (option host)" in message
    assert pg_tls.password not in wrong_host.output

    no_root = _preflight(run_module, pg_tls, shop_tls, ca_cert=str(pg_tls.tls.path("missing-ca.crt")))
    assert no_root.failed
    assert "sslrootcert file %s does not exist" % pg_tls.tls.path("missing-ca.crt") in no_root.result["msg"]

    # the right CA and name pass the connection checks (the journal database is created only by run_journal)
    right = _preflight(run_module, pg_tls, shop_tls)
    assert "cannot connect" not in right.output, right.output[-3000:]
    assert right.result.get("facts", {}).get("prod_server_version"), right.output[-3000:]
    assert database_names(pg_tls) == before, "preflight changed nothing"


def test_node_pg_migrate_runs_over_verified_tls(pg_tls: pgworld.Cluster, run_module: t.Callable[..., t.Any]) -> None:
    node = require_node()
    database = create_database(pg_tls, "tls_node_" + uuid.uuid4().hex[:6])
    try:
        run = run_module(
            "migrate",
            dict(
                community_names(pg_tls, database),
                migrations_dir="sample_app/migrations",
                engine="node-pg-migrate",
                node_pg_migrate=node,
            ),
            verbosity=4,
        )
        assert not run.failed, run.output[-3000:]
        assert pg_tls.password not in run.output
        assert len(run.result["applied"]) == 6
        with contextlib.closing(pg_tls.connect(database)) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pgmigrations")
            assert cur.fetchone()[0] == 6
        # down again as the role that must show a client certificate: node-postgres gets it too
        down = run_module(
            "migrate",
            dict(
                with_client_cert(pg_tls, database),
                migrations_dir="sample_app/migrations",
                engine="node-pg-migrate",
                node_pg_migrate=node,
                direction="down",
                count=2,
            ),
            verbosity=4,
        )
        assert not down.failed, down.output[-3000:]
        assert pg_tls.password not in down.output
        assert len(down.result["reverted"]) == 2
        with contextlib.closing(pg_tls.connect(database)) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pgmigrations")
            assert cur.fetchone()[0] == 4
    finally:
        with contextlib.closing(pg_tls.connect()) as conn, conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(database)))


# ------------------------------------------------------------------------------------------ the whole release
@pytest.fixture(scope="module")
def tls_world() -> t.Iterator[pgworld.World]:
    base = _tmp_base("pgshift-tls-world-")
    world = pgworld.World(os.path.join(base, "world"), tls=True)
    world.reset(scale=0.3)
    yield world
    world.destroy()
    shutil.rmtree(base, ignore_errors=True)


def verified_connections(world: pgworld.World, ca: t.Optional[str] = None) -> t.Dict[str, t.Any]:
    """The inventory's connections, over verify-full (extra vars outrank the local inventory's sslmode disable)."""
    assert world.tls is not None
    out = {}
    for name in ("prod", "dev", "staging"):
        options = world.clusters[name].conn(pgworld.DB_NAME)
        options["sslrootcert"] = ca or world.tls.ca
        out["pgshift_%s_connection" % name] = options
    return out


def test_the_release_runs_over_verify_full_and_a_wrong_ca_stops_it_in_preflight(
    tls_world: pgworld.World, run_playbook: t.Callable[..., t.Any]
) -> None:
    from test_prod_restore import checksums, columns, databases, ledger

    assert tls_world.tls is not None
    prod, dev = tls_world.clusters["prod"], tls_world.clusters["dev"]
    before = checksums(prod, "shop")
    env = {"PGSHIFT_WORLD": tls_world.state}

    refused = run_playbook(
        "playbooks/prod_restore.yml",
        extra_vars=verified_connections(tls_world, ca=tls_world.tls.other_ca),
        env=env,
        args=["-vvvv"],
    )
    assert refused.rc != 0
    said = " ".join(refused.output.split())
    assert "Preflight" in said and "certificate verify failed" in said
    assert "give the CA certificate that signed the server's certificate (option sslrootcert, alias ca_cert)" in said
    assert tls_world.meta["password"] not in refused.output
    assert "pgshift" not in databases(prod), "nothing changed: not even the journal was created"
    assert checksums(prod, "shop") == before

    run = run_playbook(
        "playbooks/prod_restore.yml", extra_vars=verified_connections(tls_world), env=env, args=["-vvvv"]
    )
    assert run.rc == 0, run.output[-4000:]
    assert tls_world.meta["password"] not in run.output
    assert "display_name" in columns(prod, "shop", "customers")
    assert checksums(prod, "shop", renames={"customers": {"full_name": "display_name"}}) == before
    assert ledger(prod, "shop") == ledger(dev, "shop")
    assert [d for d in databases(prod) if d.startswith("shop__prev_")], "the previous production is kept"
