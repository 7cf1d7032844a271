# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # One endpoint: the connection options at the top level of the module.
    DOCUMENTATION = r"""
options:
  host:
    description:
      - Host name, IP address or Unix socket folder of the PostgreSQL server.
      - Falls back to the E(PGHOST) environment variable; unset means the default local socket.
    type: str
    aliases: [login_host]
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
    aliases: [db, login_db]
  sslmode:
    description:
      - libpq SSL mode, passed to every connection and every client binary. Falls back to E(PGSSLMODE).
    type: str
    default: prefer
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
  sslrootcert:
    description:
      - File of trusted root certificates for O(sslmode=verify-ca) and O(sslmode=verify-full).
      - Falls back to E(PGSSLROOTCERT).
    type: path
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
        aliases: [login_host]
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
        aliases: [db, login_db]
      sslmode:
        description: libpq SSL mode.
        type: str
        default: prefer
        choices: [disable, allow, prefer, require, verify-ca, verify-full]
      sslrootcert:
        description: File of trusted root certificates.
        type: path
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
        aliases: [login_host]
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
        aliases: [db, login_db]
      sslmode:
        description: libpq SSL mode.
        type: str
        default: prefer
        choices: [disable, allow, prefer, require, verify-ca, verify-full]
      sslrootcert:
        description: File of trusted root certificates.
        type: path
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
        aliases: [login_host]
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
        aliases: [db, login_db]
      sslmode:
        description: libpq SSL mode.
        type: str
        default: prefer
        choices: [disable, allow, prefer, require, verify-ca, verify-full]
      sslrootcert:
        description: File of trusted root certificates.
        type: path
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
        aliases: [login_host]
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
        aliases: [db, login_db]
      sslmode:
        description: libpq SSL mode.
        type: str
        default: prefer
        choices: [disable, allow, prefer, require, verify-ca, verify-full]
      sslrootcert:
        description: File of trusted root certificates.
        type: path
      connect_timeout:
        description: Seconds to wait for a connection.
        type: int
        default: 10
"""
