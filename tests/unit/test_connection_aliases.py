"""community.postgresql's names as aliases, client certificates and connect_params in the connection layer.

No database here (tests/integration/test_tls.py connects for real): what is checked is the one alias table against the
argument spec and every documented connection block, what reaches libpq and the client binaries, and the refusals.
"""

from __future__ import annotations

import os
import typing as t

import pytest
import yaml

from ansible_collections.pgshift.ops.plugins.doc_fragments.connection import ModuleDocFragment
from ansible_collections.pgshift.ops.plugins.module_utils import _connection as conn
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMMUNITY_POSTGRESQL = {
    "login_host": "host",
    "login_unix_socket": "host",
    "login_user": "user",
    "login_password": "password",
    "login_port": "port",
    "login_db": "database",
    "ssl_mode": "sslmode",
    "ca_cert": "sslrootcert",
    "ssl_cert": "sslcert",
    "ssl_key": "sslkey",
}


def test_every_community_postgresql_name_is_an_alias_in_both_argument_specs() -> None:
    for spec in (conn.connection_argument_spec(), conn.endpoint_argument_spec()["options"]):
        for alias, name in COMMUNITY_POSTGRESQL.items():
            assert alias in spec[name].get("aliases", []), (alias, name)
        assert spec["connect_params"]["type"] == "dict"
        assert spec["sslkey"]["no_log"] is False  # a path, not a secret
        assert spec["password"]["no_log"] is True


def _blocks() -> t.Iterator[t.Tuple[str, t.Dict[str, t.Any]]]:
    top = yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"]
    yield "DOCUMENTATION", top
    for var in ("ENDPOINTS", "SCHEMA_SOURCE", "LEDGER_FROM"):
        for option, doc in yaml.safe_load(getattr(ModuleDocFragment, var))["options"].items():
            yield "%s.%s" % (var, option), doc["suboptions"]


def test_the_doc_fragment_documents_exactly_the_spec_and_its_aliases() -> None:
    spec = conn.connection_argument_spec()
    for where, options in _blocks():
        assert sorted(options) == sorted(spec), where
        for name, doc in options.items():
            assert doc.get("aliases", []) == spec[name].get("aliases", []), (where, name)
            assert doc["type"] == spec[name]["type"], (where, name)
            assert doc.get("default") == spec[name].get("default"), (where, name)


def test_aliases_in_a_dictionary_become_pgshifts_names() -> None:
    params = conn.ConnParams.from_params(
        {
            "login_host": "db.example",
            "login_port": "6001",
            "login_user": "deployer",
            "login_password": "pw",
            "login_db": "shop",
            "ssl_mode": "verify-full",
            "ca_cert": "/ca.crt",
            "ssl_cert": "/client.crt",
            "ssl_key": "/client.key",
        }
    )
    assert params == conn.ConnParams(
        host="db.example",
        port=6001,
        user="deployer",
        password="pw",
        database="shop",
        sslmode="verify-full",
        sslrootcert="/ca.crt",
        sslcert="/client.crt",
        sslkey="/client.key",
    )
    assert conn.ConnParams.from_params({"login_unix_socket": "/run/postgresql"}).host == "/run/postgresql"


def test_a_name_and_its_alias_with_different_values_are_refused() -> None:
    assert conn.normalize_connection({"database": "shop", "login_db": "shop"}) == {"database": "shop"}
    with pytest.raises(PgShiftError) as info:
        conn.normalize_connection({"database": "shop__next", "login_db": "shop"}, "target")
    assert str(info.value) == (
        "target gives database twice with different values (database and login_db): keep one of the two keys"
    )
    with pytest.raises(PgShiftError, match="host twice"):
        conn.ConnParams.from_params({"login_host": "a", "login_unix_socket": "/run"})


def test_client_certificate_reaches_libpq_and_every_client_binary() -> None:
    params = conn.ConnParams(
        host="db", sslmode="verify-full", sslrootcert="/ca.crt", sslcert="/c.crt", sslkey="/c.key", password="pw"
    )
    kwargs = params.libpq_kwargs()
    assert (kwargs["sslcert"], kwargs["sslkey"], kwargs["sslrootcert"]) == ("/c.crt", "/c.key", "/ca.crt")
    with conn.client_environment(params) as env:
        assert (env["PGSSLCERT"], env["PGSSLKEY"], env["PGSSLROOTCERT"]) == ("/c.crt", "/c.key", "/ca.crt")
        assert "pw" not in " ".join(v for k, v in env.items() if k != "PGPASSFILE")
    info = conn.conninfo(params)
    assert "sslcert='/c.crt'" in info and "sslkey='/c.key'" in info and "pw" not in info


def test_connect_params_reach_libpq_and_the_conninfo_and_reserved_ones_are_refused() -> None:
    params = conn.ConnParams.from_params({"connect_params": {"target_session_attrs": "read-write", "keepalives": 1}})
    assert params.connect_params == (("keepalives", "1"), ("target_session_attrs", "read-write"))
    assert params.libpq_kwargs()["target_session_attrs"] == "read-write"
    assert "target_session_attrs='read-write'" in conn.conninfo(params)
    for key in ("password", "sslpassword", "passfile", "options", "application_name", "service"):
        with pytest.raises(PgShiftError, match="connect_params: %s is set by pgshift" % key):
            conn.ConnParams.from_params({"connect_params": {key: "x"}})
    with pytest.raises(PgShiftError, match="use the option host instead"):
        conn.ConnParams.from_params({"connect_params": {"host": "x"}})
    with pytest.raises(PgShiftError, match="not a libpq connection keyword"):
        conn.ConnParams.from_params({"connect_params": {"a b": "x"}})


def test_tls_files_are_checked_before_connecting(tmp_path: t.Any) -> None:
    cert = tmp_path / "client.crt"
    key = tmp_path / "client.key"
    cert.write_text("cert")
    key.write_text("key")
    key.chmod(0o644)
    params = conn.ConnParams(sslmode="verify-full", sslcert=str(cert), sslkey=str(key))
    with pytest.raises(PgShiftError) as info:
        params.check_files()
    assert str(info.value) == (
        "sslkey file %s has mode 0644: libpq refuses a private key that others can read; run chmod 0600 %s" % (key, key)
    )
    key.chmod(0o600)
    params.check_files()
    with pytest.raises(PgShiftError, match="sslcert .* is given without sslkey"):
        conn.ConnParams(sslcert=str(cert)).check_files()
    missing = str(tmp_path / "nope.crt")
    with pytest.raises(PgShiftError, match="sslrootcert file %s does not exist" % missing):
        conn.ConnParams(sslrootcert=missing).check_files()
    conn.ConnParams(sslrootcert="system").check_files()  # libpq's word for the system's CA store


def test_a_task_that_gives_a_name_and_its_alias_different_values_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ansible would let login_db win silently over database: the task's raw arguments are checked."""
    from ansible.module_utils import basic

    processed = {"host": "db", "database": "shop", "login_db": "shop"}  # what Ansible hands on: the alias won
    raw = {"target": {"host": "db", "database": "shop__next", "login_db": "shop"}, "jobs": 2}
    monkeypatch.setattr(basic, "_PARSED_MODULE_ARGS", raw, raising=False)
    with pytest.raises(PgShiftError) as info:
        conn.ConnParams.from_params(processed)
    assert str(info.value) == (
        "option target gives database twice with different values (database and login_db): keep one of the two keys"
    )
    monkeypatch.setattr(basic, "_PARSED_MODULE_ARGS", {"login_host": "a", "host": "b", "mapping": {"x": 1}})
    with pytest.raises(PgShiftError, match="the module's connection options gives host twice"):
        conn.ConnParams.from_params({"host": "a"})
    monkeypatch.setattr(basic, "_PARSED_MODULE_ARGS", {"target": {"login_db": "shop", "host": "db"}})
    assert conn.ConnParams.from_params({"database": "shop", "host": "db"}).database == "shop"
