# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # One endpoint: the connection options at the top level of the module.
    # Aliases are community.postgresql's names; plugins/module_utils/_connection.py OPTION_ALIASES is the one table
    # (tests/unit/test_connection_aliases.py compares it with every block here).
    DOCUMENTATION = r"""
options:
  host:
    description:
      - Host name, IP address or Unix socket folder of the PostgreSQL server.
      - Falls back to the E(PGHOST) environment variable; unset means the default local socket.
    type: str
    aliases: [login_host, login_unix_socket]
  port:
    description:
      - Port of the server. Falls back to E(PGPORT).
    type: int
    default: 5432
    aliases: [login_port]
  user:
    description:
      - Role to connect as. Falls back to E(PGUSER).
    type: str
    default: postgres
    aliases: [login_user]
  password:
    description:
      - Password of O(user). Falls back to E(PGPASSWORD).
      - Never logged; client binaries receive it through a private 0600 C(PGPASSFILE), never argv or environment.
    type: str
    aliases: [login_password]
  database:
    description:
      - Database to connect to. Falls back to E(PGDATABASE).
    type: str
    default: postgres
    aliases: [login_db, db]
  sslmode:
    description:
      - libpq SSL mode, passed to every connection and every client binary. Falls back to E(PGSSLMODE).
      - V(verify-full) checks that the server's certificate is signed by a CA of O(sslrootcert) and issued for
        O(host); a failure is reported before anything changes, with what to fix.
    type: str
    default: prefer
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
    aliases: [ssl_mode]
  sslrootcert:
    description:
      - File of trusted root certificates for O(sslmode=verify-ca) and O(sslmode=verify-full).
      - Falls back to E(PGSSLROOTCERT). Client binaries get it as E(PGSSLROOTCERT).
    type: path
    aliases: [ca_cert]
  sslcert:
    description:
      - Client certificate file, for servers that authenticate clients by certificate (C(cert) or
        C(clientcert=verify-full) in C(pg_hba.conf)). Requires O(sslkey).
      - Falls back to E(PGSSLCERT). Client binaries get it as E(PGSSLCERT).
    type: path
    aliases: [ssl_cert]
  sslkey:
    description:
      - Private key file of O(sslcert). It must have mode 0600 (0640 when owned by root), as libpq requires; a
        key others can read is refused with the C(chmod) to run.
      - Falls back to E(PGSSLKEY). Client binaries get it as E(PGSSLKEY).
    type: path
    aliases: [ssl_key]
  connect_params:
    description:
      - Further libpq connection keywords (for example C(target_session_attrs), C(keepalives_idle),
        C(sslcrl)), passed to every connection and, through the connection string, to every client binary.
      - Keywords that pgshift sets from its own options, pins or keeps secret (C(password), C(passfile),
        C(sslpassword), C(options), C(application_name), C(service), C(dbname), ...) are refused.
    type: dict
    default: {}
  connect_timeout:
    description:
      - Seconds to wait for a connection.
    type: int
    default: 10
requirements:
  - psycopg2 (or psycopg2-binary) on the host that runs the module
notes:
  - Every connection pins C(TimeZone), C(DateStyle), C(IntervalStyle), C(extra_float_digits), C(bytea_output) and
    C(client_encoding), so that values and checksums compare equal across servers.
  - The option names of community.postgresql (C(login_host), C(login_user), C(login_password), C(login_port),
    C(login_db), C(login_unix_socket), C(ssl_mode), C(ca_cert), C(ssl_cert), C(ssl_key), C(connect_params)) are
    accepted as aliases.
"""

    # Two endpoints: source and target dictionaries with the same keys (no environment fallbacks).
    # ansible-test (yamllint sanity) reads doc fragments without running them: every value here must be one literal.
    ENDPOINTS = r"""
options:
  source:
    description:
      - Connection to the source database.
    type: dict
    required: true
    suboptions:
      host:
        description: Host name, IP address or Unix socket folder of the server.
        type: str
        aliases: [login_host, login_unix_socket]
      port:
        description: Port of the server.
        type: int
        default: 5432
        aliases: [login_port]
      user:
        description: Role to connect as.
        type: str
        default: postgres
        aliases: [login_user]
      password:
        description: Password of the user; never logged, passed to client binaries through a 0600 PGPASSFILE.
        type: str
        aliases: [login_password]
      database:
        description: Database to connect to.
        type: str
        default: postgres
        aliases: [login_db, db]
      sslmode:
        description: libpq SSL mode.
        type: str
        default: prefer
        choices: [disable, allow, prefer, require, verify-ca, verify-full]
        aliases: [ssl_mode]
      sslrootcert:
        description: File of trusted root certificates.
        type: path
        aliases: [ca_cert]
      sslcert:
        description: Client certificate file (requires sslkey).
        type: path
        aliases: [ssl_cert]
      sslkey:
        description: Private key file of the client certificate (mode 0600, or 0640 when owned by root).
        type: path
        aliases: [ssl_key]
      connect_params:
        description: Further libpq connection keywords (not those pgshift sets, pins or keeps secret).
        type: dict
        default: {}
      connect_timeout:
        description: Seconds to wait for a connection.
        type: int
        default: 10
  target:
    description:
      - Connection to the target database.
    type: dict
    required: true
    suboptions:
      host:
        description: Host name, IP address or Unix socket folder of the server.
        type: str
        aliases: [login_host, login_unix_socket]
      port:
        description: Port of the server.
        type: int
        default: 5432
        aliases: [login_port]
      user:
        description: Role to connect as.
        type: str
        default: postgres
        aliases: [login_user]
      password:
        description: Password of the user; never logged, passed to client binaries through a 0600 PGPASSFILE.
        type: str
        aliases: [login_password]
      database:
        description: Database to connect to.
        type: str
        default: postgres
        aliases: [login_db, db]
      sslmode:
        description: libpq SSL mode.
        type: str
        default: prefer
        choices: [disable, allow, prefer, require, verify-ca, verify-full]
        aliases: [ssl_mode]
      sslrootcert:
        description: File of trusted root certificates.
        type: path
        aliases: [ca_cert]
      sslcert:
        description: Client certificate file (requires sslkey).
        type: path
        aliases: [ssl_cert]
      sslkey:
        description: Private key file of the client certificate (mode 0600, or 0640 when owned by root).
        type: path
        aliases: [ssl_key]
      connect_params:
        description: Further libpq connection keywords (not those pgshift sets, pins or keeps secret).
        type: dict
        default: {}
      connect_timeout:
        description: Seconds to wait for a connection.
        type: int
        default: 10
requirements:
  - psycopg2 (or psycopg2-binary) on the host that runs the module
"""

    # The dev database whose schema is released (modules that read it beside their main connection).
    SCHEMA_SOURCE = r"""
options:
  schema_source:
    description:
      - Connection to the dev database whose schema production gets.
    type: dict
    required: false
    suboptions:
      host:
        description: Host name, IP address or Unix socket folder of the server.
        type: str
        aliases: [login_host, login_unix_socket]
      port:
        description: Port of the server.
        type: int
        default: 5432
        aliases: [login_port]
      user:
        description: Role to connect as.
        type: str
        default: postgres
        aliases: [login_user]
      password:
        description: Password of the user; never logged, passed to client binaries through a 0600 PGPASSFILE.
        type: str
        aliases: [login_password]
      database:
        description: Database to connect to.
        type: str
        default: postgres
        aliases: [login_db, db]
      sslmode:
        description: libpq SSL mode.
        type: str
        default: prefer
        choices: [disable, allow, prefer, require, verify-ca, verify-full]
        aliases: [ssl_mode]
      sslrootcert:
        description: File of trusted root certificates.
        type: path
        aliases: [ca_cert]
      sslcert:
        description: Client certificate file (requires sslkey).
        type: path
        aliases: [ssl_cert]
      sslkey:
        description: Private key file of the client certificate (mode 0600, or 0640 when owned by root).
        type: path
        aliases: [ssl_key]
      connect_params:
        description: Further libpq connection keywords (not those pgshift sets, pins or keeps secret).
        type: dict
        default: {}
      connect_timeout:
        description: Seconds to wait for a connection.
        type: int
        default: 10
"""

    # The database whose node-pg-migrate ledger the rebuilt database gets.
    LEDGER_FROM = r"""
options:
  ledger_from:
    description:
      - Connection to the database whose ledger tables are used instead of the source's (the dev database); a
        ledger table missing there stays empty.
    type: dict
    required: false
    suboptions:
      host:
        description: Host name, IP address or Unix socket folder of the server.
        type: str
        aliases: [login_host, login_unix_socket]
      port:
        description: Port of the server.
        type: int
        default: 5432
        aliases: [login_port]
      user:
        description: Role to connect as.
        type: str
        default: postgres
        aliases: [login_user]
      password:
        description: Password of the user; never logged, passed to client binaries through a 0600 PGPASSFILE.
        type: str
        aliases: [login_password]
      database:
        description: Database to connect to.
        type: str
        default: postgres
        aliases: [login_db, db]
      sslmode:
        description: libpq SSL mode.
        type: str
        default: prefer
        choices: [disable, allow, prefer, require, verify-ca, verify-full]
        aliases: [ssl_mode]
      sslrootcert:
        description: File of trusted root certificates.
        type: path
        aliases: [ca_cert]
      sslcert:
        description: Client certificate file (requires sslkey).
        type: path
        aliases: [ssl_cert]
      sslkey:
        description: Private key file of the client certificate (mode 0600, or 0640 when owned by root).
        type: path
        aliases: [ssl_key]
      connect_params:
        description: Further libpq connection keywords (not those pgshift sets, pins or keeps secret).
        type: dict
        default: {}
      connect_timeout:
        description: Seconds to wait for a connection.
        type: int
        default: 10
"""
