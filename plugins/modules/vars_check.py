#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: vars_check
short_description: Refuse mistyped or unknown pgshift variables before anything changes
version_added: 0.1.0
description:
  - Looks at every variable of the host whose name starts with C(pgshift_) and fails when no pgshift playbook reads
    it, with the closest known name ("did you mean ..."), so that a typo such as C(pgshift_backup_verify_levle) stops
    the run in Preflight instead of being ignored.
  - Every C(pgshift_<environment>_connection) dictionary is checked too; its keys must be pgshift's connection
    options (C(host), C(port), C(user), C(password), C(database), C(sslmode), C(sslrootcert), C(sslcert), C(sslkey),
    C(connect_params)) or community.postgresql's names for them (C(login_host), C(login_unix_socket),
    C(login_port), C(login_user), C(login_password), C(login_db), C(ssl_mode), C(ca_cert), C(ssl_cert),
    C(ssl_key)); a mistyped key such as C(pasword) is refused with the closest name instead of ending in an
    authentication error, and a dictionary that gives one setting under two keys (C(host) and C(login_host)) with
    different values is refused. Values are never shown.
  - A playbook that reads the dictionaries by pgshift's names without the C(pgshift.ops.connection) filter keeps
    O(connection_aliases=false), so that an alias there is refused with the name to write instead of being ignored.
  - Runs on the controller (an action plugin); it changes nothing.
extends_documentation_fragment:
  - pgshift.ops.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  action:
    description: Runs as an action plugin on the controller.
    support: full
options:
  connection_aliases:
    description:
      - Whether the connection dictionaries may use community.postgresql's names; set it in a playbook that reads
        them through the C(pgshift.ops.connection) filter (or passes them whole to a module).
    type: bool
    default: false
  extra_known:
    description: Further variable names to accept (variables of your own playbooks that use the C(pgshift_) prefix).
    type: list
    elements: str
    default: []
author:
  - pgshift contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Preflight | no mistyped pgshift variable
  pgshift.ops.vars_check:
"""

RETURN = r"""
checked:
  description: The C(pgshift_) variables that were looked at.
  returned: always
  type: list
  elements: str
problems:
  description: One message per unknown variable or connection key, with a suggestion where one is close.
  returned: always
  type: list
  elements: str
"""
