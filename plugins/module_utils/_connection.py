# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""The one connection layer of pgshift.

Every module takes the same connection options (documented once in the ``pgshift.ops.connection`` doc fragment):
either at the top level (one endpoint) or as ``source``/``target`` dictionaries with the same keys (two endpoints).
Connections pin the session settings that change the text form of values, so that checksums computed on two
servers compare equal. Client binaries get the password through a 0600 PGPASSFILE, never argv or PGPASSWORD.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
import typing as t

from ansible.module_utils.basic import env_fallback

from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError

try:
    import psycopg2
    import psycopg2.extensions
    from psycopg2 import sql

    HAS_PSYCOPG2 = True
    PSYCOPG2_IMPORT_ERROR: t.Optional[Exception] = None
except ImportError as _exc:  # pragma: no cover - depends on the target host
    HAS_PSYCOPG2 = False
    PSYCOPG2_IMPORT_ERROR = _exc

APPLICATION_NAME = "pgshift"

# Session settings pinned on every connection that reads or compares data (see docs/architecture.md).
PINNED_SETTINGS: t.Dict[str, str] = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "3",
    "bytea_output": "hex",
    "client_encoding": "UTF8",
    "lc_monetary": "C",
}

SSL_MODES = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]

# Variables a child process must never inherit: the password, and anything that would redirect the connection.
_SCRUBBED_ENV = (
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGSSLCERT",
    "PGSSLKEY",
    "DATABASE_URL",
)


def _endpoint_options(with_fallbacks: bool) -> t.Dict[str, t.Dict[str, t.Any]]:
    def fb(var: str) -> t.Dict[str, t.Any]:
        return {"fallback": (env_fallback, [var])} if with_fallbacks else {}

    return {
        "host": dict(type="str", aliases=["login_host"], **fb("PGHOST")),
        "port": dict(type="int", default=5432, aliases=["login_port"], **fb("PGPORT")),
        "user": dict(type="str", default="postgres", aliases=["login_user"], **fb("PGUSER")),
        "password": dict(type="str", no_log=True, aliases=["login_password"], **fb("PGPASSWORD")),
        "database": dict(type="str", default="postgres", aliases=["db", "login_db"], **fb("PGDATABASE")),
        "sslmode": dict(type="str", default="prefer", choices=SSL_MODES, **fb("PGSSLMODE")),
        "sslrootcert": dict(type="path", **fb("PGSSLROOTCERT")),
        "connect_timeout": dict(type="int", default=10),
    }


def connection_argument_spec() -> t.Dict[str, t.Dict[str, t.Any]]:
    """Top-level connection options (one endpoint), with PG* environment fallbacks."""
    return _endpoint_options(with_fallbacks=True)


def endpoint_argument_spec(required: bool = True) -> t.Dict[str, t.Any]:
    """A ``source``/``target`` dictionary option holding the same connection keys."""
    return dict(type="dict", required=required, options=_endpoint_options(with_fallbacks=False))


@dataclasses.dataclass(frozen=True)
class ConnParams:
    """Where and how to connect. ``repr`` never shows the password."""

    host: t.Optional[str] = None
    port: int = 5432
    user: str = "postgres"
    password: t.Optional[str] = dataclasses.field(default=None, repr=False)
    database: str = "postgres"
    sslmode: str = "prefer"
    sslrootcert: t.Optional[str] = None
    connect_timeout: int = 10

    @classmethod
    def from_params(cls, params: t.Mapping[str, t.Any]) -> "ConnParams":
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in params.items() if k in fields and v is not None}
        if "port" in values:
            values["port"] = int(values["port"])
        return cls(**values)

    def with_database(self, database: str) -> "ConnParams":
        return dataclasses.replace(self, database=database)

    def describe(self) -> str:
        """Where this points, for messages (no password)."""
        host = self.host or "local socket"
        return "database %r on %s port %s as %s" % (self.database, host, self.port, self.user)

    def libpq_kwargs(self, application_name: str = APPLICATION_NAME, pin: bool = True) -> t.Dict[str, t.Any]:
        kwargs: t.Dict[str, t.Any] = {
            "port": self.port,
            "user": self.user,
            "dbname": self.database,
            "sslmode": self.sslmode,
            "connect_timeout": self.connect_timeout,
            "application_name": application_name,
        }
        if self.host:
            kwargs["host"] = self.host
        if self.password is not None:
            kwargs["password"] = self.password
        if self.sslrootcert:
            kwargs["sslrootcert"] = self.sslrootcert
        if pin:
            kwargs["options"] = " ".join("-c %s=%s" % (k, v.replace(" ", "\\ ")) for k, v in PINNED_SETTINGS.items())
        return kwargs


def _friendly_connect_error(params: ConnParams, exc: Exception) -> PgShiftError:
    text = str(exc).strip()
    if params.password:
        text = text.replace(params.password, "********")
    lowered = text.lower()
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        hint = "check the password given for user %r (option password, or PGPASSWORD)" % params.user
    elif "does not exist" in lowered and "database" in lowered:
        hint = "check the database name %r, or create it first" % params.database
    elif "does not exist" in lowered and "role" in lowered:
        hint = "check the user name %r" % params.user
    elif "could not connect" in lowered or "connection refused" in lowered or "timeout" in lowered:
        hint = "check that PostgreSQL runs and that host and port are right"
    else:
        hint = "check the connection options"
    return PgShiftError(
        "cannot connect to %s: %s; %s"
        % (params.describe(), text.splitlines()[0] if text else type(exc).__name__, hint),
        sqlstate=getattr(exc, "pgcode", None),
    )


# A server that restarts (crash recovery after a killed backend, a fast restart) answers these for a few seconds.
_TRANSIENT_SQLSTATES = ("57P03", "57P01", "57P02", "08006", "08001")
_TRANSIENT_TEXT = (
    "the database system is starting up",
    "the database system is in recovery mode",
    "the database system is shutting down",
    "not yet accepting connections",
    "connection refused",
    "server closed the connection unexpectedly",
    "terminating connection because of crash of another server process",
    "no such file or directory",  # the socket file, while the server is down
)


def transient(exc: BaseException) -> bool:
    """Whether a connection error means the server is restarting, so that trying again a little later can work."""
    if getattr(exc, "pgcode", None) in _TRANSIENT_SQLSTATES:
        return True
    text = str(exc).lower()
    return any(marker in text for marker in _TRANSIENT_TEXT)


def connect(
    params: ConnParams,
    *,
    autocommit: bool = False,
    application_name: str = APPLICATION_NAME,
    retry_seconds: float = 0.0,
) -> "psycopg2.extensions.connection":
    """Open a connection with pinned session settings; errors become PgShiftError with a hint.

    With ``retry_seconds``, a server that is restarting (SQLSTATE 57P03, connection refused, the connection closed
    during crash recovery) is waited for, trying again until that deadline; any other error fails at once. The way back
    (rollback, restoring access, the journal written in a rescue) uses it.
    """
    if not HAS_PSYCOPG2:
        raise PgShiftError("psycopg2 is required on the host that runs this module: pip install psycopg2-binary")
    deadline = time.monotonic() + max(0.0, retry_seconds)
    delay = 0.2
    while True:
        try:
            conn = psycopg2.connect(**params.libpq_kwargs(application_name=application_name))
            break
        except psycopg2.Error as exc:
            remaining = deadline - time.monotonic()
            if not (retry_seconds and transient(exc)) or remaining <= 0:
                error = _friendly_connect_error(params, exc)
                if retry_seconds and transient(exc):
                    error = PgShiftError(
                        "%s (still so after waiting %.0f s for the server to accept connections)"
                        % (error.msg, retry_seconds),
                        sqlstate=error.sqlstate,
                    )
                raise error from None
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 2.0)
    conn.autocommit = autocommit
    return conn


def server_version_num(conn: "psycopg2.extensions.connection") -> int:
    return int(conn.server_version)


def server_major(conn: "psycopg2.extensions.connection") -> int:
    return server_version_num(conn) // 10000


def db_error(exc: "psycopg2.Error", doing: str) -> PgShiftError:
    """Turn a database error into the collection's error, keeping SQLSTATE."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) or str(exc).strip().splitlines()[0]
    return PgShiftError("%s failed: %s" % (doing, primary), sqlstate=getattr(exc, "pgcode", None))


def quote_ident(name: str) -> "sql.Composable":
    return sql.Identifier(name)


def qualified(schema: str, name: str) -> "sql.Composable":
    return sql.Identifier(schema, name)


def conninfo_quote(value: t.Any) -> str:
    """A value as libpq's keyword=value connection string needs it: single-quoted, backslash and quote escaped."""
    return "'%s'" % str(value).replace("\\", "\\\\").replace("'", "\\'")


def conninfo(params: ConnParams, application_name: str = APPLICATION_NAME, pin: bool = True) -> str:
    """The one connection string pgshift builds, for client binaries (``--dbname``): every value quoted, so a name
    holding ``=``, a space or a quote stays a name. No password: it travels in the 0600 PGPASSFILE."""
    kwargs = params.libpq_kwargs(application_name=application_name, pin=pin)
    kwargs.pop("password", None)
    return " ".join("%s=%s" % (key, conninfo_quote(value)) for key, value in kwargs.items())


def dbname_option(params: ConnParams, application_name: str = APPLICATION_NAME) -> str:
    """``--dbname=<conninfo>`` for pg_dump, pg_restore, pg_dumpall and psql."""
    return "--dbname=" + conninfo(params, application_name)


def libpq_dbname(name: str) -> str:
    """A connection string naming only the database (host, user, password come from the environment)."""
    return "dbname=" + conninfo_quote(name)


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


@contextlib.contextmanager
def client_environment(params: ConnParams) -> t.Iterator[t.Dict[str, str]]:
    """Environment for PostgreSQL client binaries (pg_dump, pg_restore, psql).

    The password goes into a 0600 PGPASSFILE in a private 0700 folder that is removed afterwards; PGPASSWORD and
    every other connection variable inherited from the caller are removed.
    """
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env.update(
        {
            "PGPORT": str(params.port),
            "PGUSER": params.user,
            "PGDATABASE": params.database,
            "PGSSLMODE": params.sslmode,
            "PGCONNECT_TIMEOUT": str(params.connect_timeout),
            "PGAPPNAME": APPLICATION_NAME,
            "PGOPTIONS": " ".join("-c %s=%s" % (k, v.replace(" ", "\\ ")) for k, v in PINNED_SETTINGS.items()),
        }
    )
    if params.host:
        env["PGHOST"] = params.host
    if params.sslrootcert:
        env["PGSSLROOTCERT"] = params.sslrootcert
    folder = tempfile.mkdtemp(prefix="pgshift-pass-")
    try:
        os.chmod(folder, 0o700)
        path = os.path.join(folder, "pgpass")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            if params.password is not None:
                handle.write("*:*:*:*:%s\n" % _pgpass_escape(params.password))
        env["PGPASSFILE"] = path
        yield env
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def scrub(text: str, *secrets: t.Optional[str]) -> str:
    """Remove secrets from a text that is about to be returned (stderr of a child, an error message)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "********")
    return text
