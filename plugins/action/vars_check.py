# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of pgshift.ops.vars_check: runs on the controller, where the host's variables are."""

from __future__ import annotations

import typing as t

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.pgshift.ops.plugins.module_utils._variables import connection_problems, unknown_variables


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: t.Any = None, task_vars: t.Optional[t.Dict[str, t.Any]] = None) -> t.Dict[str, t.Any]:
        result = super().run(tmp, task_vars)
        args = self._task.args
        extra = args.get("extra_known") or []
        if not isinstance(extra, list) or not all(isinstance(x, str) for x in extra):
            raise AnsibleActionFail("extra_known must be a list of variable names")
        unknown_args = set(args) - {"extra_known"}
        if unknown_args:
            raise AnsibleActionFail("unsupported parameters: %s" % ", ".join(sorted(unknown_args)))
        names = [k for k in (task_vars or {}) if isinstance(k, str) and k.startswith("pgshift_")]
        problems = unknown_variables(names, extra)
        for name in sorted(names):
            if name.endswith("_connection") and name not in extra:
                value = self._templar.template((task_vars or {})[name])
                problems.extend(connection_problems(name, value))
        result.update(changed=False, checked=sorted(names), problems=problems)
        if problems:
            result["failed"] = True
            result["msg"] = (
                "pgshift refuses variables it would ignore: %s. Fix the names in your inventory or -e "
                "arguments (README.md, 'Inventories and variables'); nothing was changed." % "; ".join(problems)
            )
        return result
