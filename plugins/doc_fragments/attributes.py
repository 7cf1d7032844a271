# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # What each attribute means; every module states its own support (and details) for check_mode and diff_mode.
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
"""

    # Members of the pgshift.ops.postgres action group (meta/runtime.yml; tests/unit/test_action_group.py keeps the
    # group, this fragment and the modules that take the top-level connection options in step).
    ACTION_GROUP = r"""
options: {}
attributes:
  action_group:
    description:
      - Use C(group/pgshift.ops.postgres) in C(module_defaults) to set the connection options once for this module
        and every other module of the group (pgshift's names or community.postgresql's aliases).
    support: full
    membership:
      - pgshift.ops.postgres
"""
