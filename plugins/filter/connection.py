# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: connection
short_description: A connection dictionary in pgshift's key names
version_added: 0.1.0
description:
  - Turns a C(pgshift_<environment>_connection) dictionary written with community.postgresql's names (C(login_host),
    C(login_port), C(login_user), C(login_password), C(login_db), C(login_unix_socket), C(ssl_mode), C(ca_cert),
    C(ssl_cert), C(ssl_key)) into pgshift's names (C(host), C(port), C(user), C(password), C(database),
    C(sslmode), C(sslrootcert), C(sslcert), C(sslkey)), so that a playbook can read C(.host) or C(.database)
    whichever names the inventory uses, and combine it with other keys without leaving an alias behind that
    would win over them.
  - Fails when the dictionary gives one setting twice (a name and its alias) with different values; the values
    are never shown.
options:
  _input:
    description: The connection dictionary.
    type: dict
    required: true
author:
  - pgshift maintainers
"""

EXAMPLES = r"""
- name: The production database's name, whatever keys the inventory used
  ansible.builtin.debug:
    msg: "{{ (pgshift_prod_connection | pgshift.ops.connection).database }}"
"""

RETURN = r"""
_value:
  description: The same dictionary with every alias replaced by its name.
  type: dict
"""

import typing as t  # noqa: E402 - the documentation strings come first, as in every Ansible plugin

from ansible.errors import AnsibleFilterError  # noqa: E402
from jinja2 import Undefined  # noqa: E402

from ansible_collections.pgshift.ops.plugins.module_utils._connection import normalize_connection  # noqa: E402
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError  # noqa: E402


def connection(value: t.Any) -> t.Any:
    if isinstance(value, Undefined):
        return value  # an undefined connection stays undefined: "is defined" and default() work after the filter
    if not isinstance(value, t.Mapping):
        raise AnsibleFilterError("pgshift.ops.connection expects a dictionary of connection keys")
    try:
        return normalize_connection(value, "the connection dictionary")
    except PgShiftError as exc:
        raise AnsibleFilterError(str(exc)) from None


class FilterModule:
    def filters(self) -> t.Dict[str, t.Callable[..., t.Any]]:
        return {"connection": connection}
