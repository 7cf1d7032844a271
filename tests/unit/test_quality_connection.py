"""Unit tests of the pure logic of the connection layer (plugins/module_utils/_connection.py).

No database here: what is checked is what pgshift hands to libpq and to client binaries, and that no secret leaks
on the way (repr, messages, environment, files).
"""

from __future__ import annotations

import os
import stat
import typing as t

import pytest

from ansible_collections.pgshift.ops.plugins.module_utils import _connection as conn
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError

SECRET = "s3cr:et\\pa ss"  # a colon, a backslash and a space: everything .pgpass needs escaped, and more


def _params(**overrides: t.Any) -> conn.ConnParams:
    values: t.Dict[str, t.Any] = {
        "host": "127.0.0.1",
        "port": 6543,
        "user": "deployer",
        "password": SECRET,
        "database": "shop",
        "sslmode": "verify-full",
        "sslrootcert": "/etc/pgshift/root.crt",
        "connect_timeout": 7,
    }
    values.update(overrides)
    return conn.ConnParams(**values)


# ---------------------------------------------------------------------------------------------------- ConnParams
def test_repr_and_describe_never_show_the_password() -> None:
    params = _params()
    for text in (repr(params), str(params), params.describe()):
        assert SECRET not in text
        assert "password" not in text
    assert "deployer" in repr(params)
    assert params.describe() == "database 'shop' on 127.0.0.1 port 6543 as deployer"


def test_describe_without_host_names_the_local_socket() -> None:
    assert _params(host=None).describe() == "database 'shop' on local socket port 6543 as deployer"


def test_from_params_keeps_known_keys_drops_none_and_casts_the_port() -> None:
    params = conn.ConnParams.from_params(
        {"host": "db.example", "port": "6000", "password": None, "database": "app", "sslmode": None, "extra": 1}
    )
    assert params == conn.ConnParams(host="db.example", port=6000, database="app")
    assert params.sslmode == "prefer"  # None means "use the default", as Ansible passes unset options
    assert params.password is None


def test_with_database_changes_only_the_database() -> None:
    params = _params()
    other = params.with_database("postgres")
    assert other.database == "postgres"
    assert other.password == SECRET
    assert (other.host, other.port, other.user, other.sslmode) == (params.host, params.port, params.user, "verify-full")
    assert params.database == "shop"  # frozen: the original is unchanged


# ---------------------------------------------------------------------------------------------------- libpq
def test_libpq_kwargs_carry_ssl_timeout_and_application_name() -> None:
    kwargs = _params().libpq_kwargs()
    assert kwargs["host"] == "127.0.0.1"
    assert kwargs["port"] == 6543
    assert kwargs["user"] == "deployer"
    assert kwargs["dbname"] == "shop"
    assert kwargs["password"] == SECRET
    assert kwargs["sslmode"] == "verify-full"
    assert kwargs["sslrootcert"] == "/etc/pgshift/root.crt"
    assert kwargs["connect_timeout"] == 7
    assert kwargs["application_name"] == "pgshift"
    assert conn.ConnParams().libpq_kwargs(application_name="pgshift-copy")["application_name"] == "pgshift-copy"


def test_libpq_kwargs_leave_out_what_is_not_set() -> None:
    kwargs = conn.ConnParams().libpq_kwargs()
    assert "host" not in kwargs  # libpq then uses its default socket
    assert "password" not in kwargs  # libpq then reads PGPASSFILE / .pgpass
    assert "sslrootcert" not in kwargs
    assert kwargs["sslmode"] == "prefer"


def test_empty_password_is_passed_as_given() -> None:
    assert conn.ConnParams(password="").libpq_kwargs()["password"] == ""


def test_pinned_settings_are_sent_as_escaped_options() -> None:
    options = _params().libpq_kwargs()["options"]
    parts = options.split(" -c ")
    assert parts[0].startswith("-c ")
    parts[0] = parts[0][len("-c ") :]
    # a space inside a value is escaped with a backslash (libpq's rule for the options keyword)
    assert "DateStyle=ISO,\\ YMD" in parts
    assert "TimeZone=UTC" in parts
    assert "extra_float_digits=3" in parts
    assert "bytea_output=hex" in parts
    assert len(parts) == len(conn.PINNED_SETTINGS)
    assert "options" not in _params().libpq_kwargs(pin=False)


# ---------------------------------------------------------------------------------------------------- argument specs
def test_connection_argument_spec_hides_the_password_and_falls_back_to_pg_variables() -> None:
    spec = conn.connection_argument_spec()
    assert spec["password"]["no_log"] is True
    assert spec["password"]["fallback"][1] == ["PGPASSWORD"]
    assert spec["host"]["fallback"][1] == ["PGHOST"]
    assert spec["sslmode"]["choices"] == conn.SSL_MODES
    assert spec["sslmode"]["default"] == "prefer"
    assert spec["sslrootcert"]["type"] == "path"


def test_endpoint_argument_spec_has_the_same_keys_without_environment_fallbacks() -> None:
    endpoint = conn.endpoint_argument_spec(required=False)
    assert endpoint["type"] == "dict"
    assert endpoint["required"] is False
    options = endpoint["options"]
    assert set(options) == set(conn.connection_argument_spec())
    assert options["password"]["no_log"] is True
    assert all("fallback" not in option for option in options.values())


# ---------------------------------------------------------------------------------------------------- .pgpass
@pytest.mark.parametrize(
    ("password", "escaped"),
    [
        ("plain", "plain"),
        ("a:b", "a\\:b"),
        ("back\\slash", "back\\\\slash"),
        ("\\:", "\\\\\\:"),  # backslash first, then the colon: never a double escape of the colon's backslash
        ("::", "\\:\\:"),
    ],
)
def test_pgpass_escape(password: str, escaped: str) -> None:
    assert conn._pgpass_escape(password) == escaped


def _pgpass_password_field(line: str) -> str:
    """The password field of one .pgpass line, read the way libpq reads it: a backslash escapes the next character."""
    fields: t.List[str] = []
    current = []
    chars = iter(line.rstrip("\n"))
    for char in chars:
        if char == "\\":
            current.append(next(chars, ""))
        elif char == ":":
            if len(fields) == 4:
                break  # libpq ends the password at an unescaped colon
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    assert len(fields) == 5, line
    assert fields[:4] == ["*", "*", "*", "*"]
    return fields[4]


# ---------------------------------------------------------------------------------------------------- client env
def test_client_environment_drops_inherited_connection_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "PGPASSWORD": "inherited-secret",
        "PGSERVICE": "elsewhere",
        "PGHOSTADDR": "10.0.0.9",
        "DATABASE_URL": "postgres://u:inherited-secret@elsewhere/db",
        "PGSSLCERT": "/tmp/other.crt",
        "PGSHIFT_UNRELATED": "kept",
    }.items():
        monkeypatch.setenv(name, value)
    with conn.client_environment(_params()) as env:
        for name in ("PGPASSWORD", "PGSERVICE", "PGHOSTADDR", "DATABASE_URL", "PGSSLCERT"):
            assert name not in env
        assert "inherited-secret" not in "".join(env.values())
        assert SECRET not in "".join(env.values())  # the password is only in the file
        assert env["PGSHIFT_UNRELATED"] == "kept"
        assert env["PATH"] == os.environ["PATH"]
        assert env["PGHOST"] == "127.0.0.1"
        assert env["PGPORT"] == "6543"
        assert env["PGUSER"] == "deployer"
        assert env["PGDATABASE"] == "shop"
        assert env["PGSSLMODE"] == "verify-full"
        assert env["PGSSLROOTCERT"] == "/etc/pgshift/root.crt"
        assert env["PGCONNECT_TIMEOUT"] == "7"
        assert env["PGAPPNAME"] == "pgshift"
        assert env["PGOPTIONS"] == _params().libpq_kwargs()["options"]


def test_client_environment_without_host_does_not_inherit_pghost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOST", "elsewhere.example")
    monkeypatch.setenv("PGSSLROOTCERT", "/elsewhere/root.crt")
    with conn.client_environment(_params(host=None, sslrootcert=None)) as env:
        assert "PGHOST" not in env
        assert "PGSSLROOTCERT" not in env


def test_client_environment_writes_a_private_pgpass_and_removes_it() -> None:
    with conn.client_environment(_params()) as env:
        path = env["PGPASSFILE"]
        folder = os.path.dirname(path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
        assert os.listdir(folder) == ["pgpass"]
        with open(path, encoding="utf-8") as handle:
            lines = handle.readlines()
        assert len(lines) == 1
        assert _pgpass_password_field(lines[0]) == SECRET
    assert not os.path.exists(path)
    assert not os.path.exists(folder)


def test_client_environment_removes_the_file_when_the_client_fails() -> None:
    with pytest.raises(RuntimeError), conn.client_environment(_params()) as env:
        folder = os.path.dirname(env["PGPASSFILE"])
        raise RuntimeError("pg_dump failed")
    assert not os.path.exists(folder)


def test_client_environment_without_password_writes_an_empty_pgpass() -> None:
    with conn.client_environment(_params(password=None)) as env:
        with open(env["PGPASSFILE"], encoding="utf-8") as handle:
            assert handle.read() == ""
        assert "PGPASSWORD" not in env


def test_each_client_environment_gets_its_own_folder() -> None:
    with conn.client_environment(_params()) as first, conn.client_environment(_params(password="other")) as second:
        assert os.path.dirname(first["PGPASSFILE"]) != os.path.dirname(second["PGPASSFILE"])


# ---------------------------------------------------------------------------------------------------- secrets in text
def test_scrub_masks_every_secret_and_ignores_empty_ones() -> None:
    text = "auth failed for s3cr:et\\pa ss, token tok-123, again s3cr:et\\pa ss"
    scrubbed = conn.scrub(text, SECRET, None, "", "tok-123")
    assert SECRET not in scrubbed
    assert "tok-123" not in scrubbed
    assert scrubbed == "auth failed for ********, token ********, again ********"
    assert conn.scrub("nothing to hide", None, "") == "nothing to hide"


@pytest.mark.parametrize(
    ("server_text", "hint"),
    [
        ('FATAL:  password authentication failed for user "deployer"', "check the password given for user"),
        ('FATAL:  database "shop" does not exist', "check the database name 'shop'"),
        ('FATAL:  role "deployer" does not exist', "check the user name 'deployer'"),
        ("connection to server failed: Connection refused", "check that PostgreSQL runs"),
        ("something else entirely", "check the connection options"),
    ],
)
def test_connect_errors_get_a_hint_and_never_the_password(server_text: str, hint: str) -> None:
    exc = Exception("%s (password was %s)\nDETAIL: more" % (server_text, SECRET))
    error = conn._friendly_connect_error(_params(), exc)
    assert isinstance(error, PgShiftError)
    assert SECRET not in error.msg
    assert "********" in error.msg
    assert hint in error.msg
    assert error.msg.startswith("cannot connect to database 'shop' on 127.0.0.1 port 6543 as deployer: ")
    assert "DETAIL" not in error.msg  # first line only
