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

community.postgresql's option names (``login_host``, ``login_user``, ``ssl_mode``, ``ca_cert``, ...) are aliases of
pgshift's; ``CONNECTION_ALIASES`` maps each to its name, and ``normalize_connection`` turns a dictionary written with
either into pgshift's names (refusing one that gives a name and its alias different values).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import stat
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


# pgshift's connection option -> its aliases (community.postgresql's names first). One table for the argument spec,
# the doc fragment (tests/unit/test_connection_aliases.py compares them) and the inventory dictionaries' check.
OPTION_ALIASES: t.Dict[str, t.Tuple[str, ...]] = {
    "host": ("login_host", "login_unix_socket"),
    "port": ("login_port",),
    "user": ("login_user",),
    "password": ("login_password",),
    "database": ("login_db", "db"),
    "sslmode": ("ssl_mode",),
    "sslrootcert": ("ca_cert",),
    "sslcert": ("ssl_cert",),
    "sslkey": ("ssl_key",),
    "connect_params": (),
    "connect_timeout": (),
}
CONNECTION_ALIASES: t.Dict[str, str] = {alias: name for name, aliases in OPTION_ALIASES.items() for alias in aliases}

# libpq keywords connect_params may not set: pgshift sets them from its own options, pins them, or they are secrets
# (connect_params travel in the conninfo client binaries get on their command line).
_RESERVED_PARAMS = frozenset(
    {
        "host",
        "port",
        "user",
        "password",
        "passfile",
        "dbname",
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslpassword",
        "connect_timeout",
        "options",
        "application_name",
        "service",
        "replication",
    }
)
_PARAM_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _endpoint_options(with_fallbacks: bool) -> t.Dict[str, t.Dict[str, t.Any]]:
    def fb(var: str) -> t.Dict[str, t.Any]:
        return {"fallback": (env_fallback, [var])} if with_fallbacks else {}

    def al(name: str) -> t.Dict[str, t.Any]:
        return {"aliases": list(OPTION_ALIASES[name])} if OPTION_ALIASES[name] else {}

    return {
        "host": dict(type="str", **al("host"), **fb("PGHOST")),
        "port": dict(type="int", default=5432, **al("port"), **fb("PGPORT")),
        "user": dict(type="str", default="postgres", **al("user"), **fb("PGUSER")),
        "password": dict(type="str", no_log=True, **al("password"), **fb("PGPASSWORD")),
        "database": dict(type="str", default="postgres", **al("database"), **fb("PGDATABASE")),
        "sslmode": dict(type="str", default="prefer", choices=SSL_MODES, **al("sslmode"), **fb("PGSSLMODE")),
        "sslrootcert": dict(type="path", **al("sslrootcert"), **fb("PGSSLROOTCERT")),
        "sslcert": dict(type="path", **al("sslcert"), **fb("PGSSLCERT")),
        "sslkey": dict(type="path", no_log=False, **al("sslkey"), **fb("PGSSLKEY")),
        "connect_params": dict(type="dict", default={}),
        "connect_timeout": dict(type="int", default=10),
    }


def normalize_connection(value: t.Mapping[str, t.Any], what: str = "the connection") -> t.Dict[str, t.Any]:
    """A connection dictionary in pgshift's names: each alias becomes its name; a name given twice (as itself and as
    an alias, or as two aliases) with different values is refused, naming both keys. Unknown keys stay as they are
    (the module's argument spec, or pgshift.ops.vars_check, refuses them)."""
    out: t.Dict[str, t.Any] = {}
    given_as: t.Dict[str, str] = {}
    for key in sorted(value, key=lambda k: (str(k) in CONNECTION_ALIASES, str(k))):
        name = CONNECTION_ALIASES.get(str(key), str(key))
        if name in out and out[name] != value[key]:
            raise PgShiftError(
                "%s gives %s twice with different values (%s and %s): keep one of the two keys"
                % (what, name, given_as[name], key)
            )
        out[name] = value[key]
        given_as.setdefault(name, str(key))
    return out


def _raw_module_args() -> t.Optional[t.Mapping[str, t.Any]]:
    """The module's arguments as the task gave them, before Ansible resolved the aliases (None outside a module)."""
    try:
        from ansible.module_utils import basic  # noqa: PLC0415 - only what a running module has loaded
    except ImportError:  # pragma: no cover
        return None
    raw = getattr(basic, "_PARSED_MODULE_ARGS", None)
    return raw if isinstance(raw, t.Mapping) else None


def refuse_alias_conflicts() -> None:
    """Ansible lets an alias win silently (with a warning) over its option's name when a task gives both: a
    connection dictionary built as ``conn | combine({'database': other})`` from one that says ``login_db`` would then
    reach the module with login_db's database. The task's own arguments are checked here, at the top level and in
    every dictionary option, and a setting given twice with different values is refused, naming both keys."""
    raw = _raw_module_args()
    if not raw:
        return
    names = set(OPTION_ALIASES) | set(CONNECTION_ALIASES)
    candidates = [("the module's connection options", raw)]
    candidates += [("option %s" % key, value) for key, value in raw.items() if isinstance(value, t.Mapping)]
    for what, value in candidates:
        normalize_connection({k: v for k, v in value.items() if k in names}, what)


def check_connect_params(extra: t.Optional[t.Mapping[str, t.Any]]) -> t.Dict[str, str]:
    """connect_params as libpq keywords, or PgShiftError naming the key that cannot be one."""
    checked: t.Dict[str, str] = {}
    for key, value in (extra or {}).items():
        name = str(key)
        if not _PARAM_NAME.match(name):
            raise PgShiftError("connect_params: %r is not a libpq connection keyword" % name)
        if name in _RESERVED_PARAMS:
            raise PgShiftError(
                "connect_params: %s is set by pgshift (its own option, a pinned setting or a secret); %s"
                % (
                    name,
                    "use the option %s instead" % name
                    if name in OPTION_ALIASES or name in ("dbname",)
                    else "remove it from connect_params",
                )
            )
        if isinstance(value, (dict, list)) or value is None:
            raise PgShiftError("connect_params: %s must be a single value" % name)
        checked[name] = "1" if value is True else "0" if value is False else str(value)
    return checked


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
    sslcert: t.Optional[str] = None
    sslkey: t.Optional[str] = None
    # extra libpq keywords (community.postgresql's connect_params), as sorted (keyword, value) pairs
    connect_params: t.Tuple[t.Tuple[str, str], ...] = ()

    @classmethod
    def from_params(cls, params: t.Mapping[str, t.Any]) -> "ConnParams":
        fields = {f.name for f in dataclasses.fields(cls)}
        refuse_alias_conflicts()
        params = normalize_connection(params)
        values = {k: v for k, v in params.items() if k in fields and v is not None}
        if "port" in values:
            values["port"] = int(values["port"])
        if "connect_timeout" in values:
            values["connect_timeout"] = int(values["connect_timeout"])
        values["connect_params"] = tuple(sorted(check_connect_params(values.get("connect_params")).items()))
        return cls(**values)

    def check_files(self) -> None:
        """The TLS files named exist and can be read, and the private key is kept private, or PgShiftError saying
        which file and what to fix (libpq's own refusal of a readable key comes late and reads like a TLS failure)."""
        for option, path in (("sslrootcert", self.sslrootcert), ("sslcert", self.sslcert), ("sslkey", self.sslkey)):
            if not path or path == "system":
                continue
            if not os.path.isfile(path):
                raise PgShiftError(
                    "%s file %s does not exist (or is not a file) on the host that connects; give the path of the %s"
                    % (option, path, _TLS_FILE_WHAT[option])
                )
            if not os.access(path, os.R_OK):
                raise PgShiftError(
                    "%s file %s cannot be read by the user that connects; fix its owner or mode" % (option, path)
                )
        if self.sslcert and not self.sslkey:
            raise PgShiftError(
                "sslcert %s is given without sslkey: give the client certificate's private key too" % self.sslcert
            )
        if self.sslkey:
            info = os.stat(self.sslkey)
            mode = stat.S_IMODE(info.st_mode)
            allowed = 0o640 if info.st_uid == 0 and os.geteuid() != 0 else 0o600
            if mode & ~allowed:
                raise PgShiftError(
                    "sslkey file %s has mode %04o: libpq refuses a private key that others can read; run "
                    "chmod %s %s" % (self.sslkey, mode, "0640" if allowed == 0o640 else "0600", self.sslkey)
                )

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
        if self.sslcert:
            kwargs["sslcert"] = self.sslcert
        if self.sslkey:
            kwargs["sslkey"] = self.sslkey
        kwargs.update(self.connect_params)
        if pin:
            kwargs["options"] = " ".join("-c %s=%s" % (k, v.replace(" ", "\\ ")) for k, v in PINNED_SETTINGS.items())
        return kwargs


_TLS_FILE_WHAT = {
    "sslrootcert": "CA certificate that signed the server's certificate (option sslrootcert, alias ca_cert)",
    "sslcert": "client certificate (option sslcert, alias ssl_cert)",
    "sslkey": "client certificate's private key (option sslkey, alias ssl_key)",
}


def _tls_hint(params: ConnParams, lowered: str) -> t.Optional[str]:
    """What to fix for a TLS failure libpq reported, or None when the error is not about TLS."""
    if "does not match host name" in lowered or "no subjectaltname" in lowered:
        return (
            "the server's certificate is not issued for host %r: connect with a host name the certificate holds "
            "(option host), or give the server a certificate for %r (sslmode verify-full checks the name)"
            % (params.host, params.host)
        )
    if "certificate verify failed" in lowered or "self-signed certificate" in lowered or "unknown ca" in lowered:
        if "tlsv1 alert unknown ca" in lowered or "alert unknown ca" in lowered:
            return (
                "the server does not trust the client certificate %s: have it issued by a CA the server's "
                "ssl_ca_file holds" % params.sslcert
            )
        return (
            "the server's certificate is not signed by a CA in %s: give the CA certificate that signed the server's "
            "certificate (option sslrootcert, alias ca_cert)" % (params.sslrootcert or "~/.postgresql/root.crt")
        )
    if "root certificate file" in lowered:
        return "sslmode %s needs the CA certificate: give its path as sslrootcert (alias ca_cert)" % params.sslmode
    if "certificate" in lowered and any(w in lowered for w in ("hostssl", "no pg_hba.conf entry", "clientcert")):
        return "the server requires a client certificate: give sslcert and sslkey (aliases ssl_cert, ssl_key)"
    if "connection requires a valid client certificate" in lowered or "certificate authentication failed" in lowered:
        return (
            "the server requires a valid client certificate whose CN is the user %r: give sslcert and sslkey "
            "(aliases ssl_cert, ssl_key)" % params.user
        )
    if "private key file" in lowered:
        return "fix the sslkey file %s: mode 0600, owned by the user that connects" % params.sslkey
    if "no encryption" in lowered and "pg_hba.conf" in lowered:
        return (
            "the server accepts only TLS connections: set sslmode to verify-full (alias ssl_mode) and give its CA "
            "as sslrootcert (now sslmode %s)" % params.sslmode
        )
    if "server does not support ssl" in lowered:
        return "the server has ssl = off: turn TLS on in the server, or lower sslmode (%s now)" % params.sslmode
    if "ssl" in lowered and ("error" in lowered or "alert" in lowered):
        return "check the TLS options (sslmode, sslrootcert, sslcert, sslkey) against the server's TLS set-up"
    return None


def _friendly_connect_error(params: ConnParams, exc: Exception) -> PgShiftError:
    text = str(exc).strip()
    if params.password:
        text = text.replace(params.password, "********")
    lowered = text.lower()
    tls = _tls_hint(params, lowered)
    if tls:
        hint = tls
    elif "password authentication failed" in lowered or "no password supplied" in lowered:
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
    params.check_files()
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


def release_text(version_num: int) -> str:
    """A server_version_num as people write it: 150018 -> "15.18", 90624 -> "9.6.24"."""
    number = int(version_num)
    if number >= 100000:
        return "%d.%d" % (number // 10000, number % 10000)
    return "%d.%d.%d" % (number // 10000, number // 100 % 100, number % 100)


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
    every other connection variable inherited from the caller are removed. The TLS files (sslrootcert, sslcert,
    sslkey) go as PGSSLROOTCERT, PGSSLCERT and PGSSLKEY, so that every client binary verifies the server and shows
    the client certificate the same way psycopg2 does; connect_params reach the binaries through the conninfo.
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
    if params.sslcert:
        env["PGSSLCERT"] = params.sslcert
    if params.sslkey:
        env["PGSSLKEY"] = params.sslkey
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
