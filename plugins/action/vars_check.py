# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of pgshift.ops.vars_check: runs on the controller, where the host's variables are."""

from __future__ import annotations

import glob
import os
import typing as t

import yaml
from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.pgshift.ops.plugins.module_utils._variables import (
    CONNECTION_ALIASES,
    connection_problems,
    role_spec_variables,
    unknown_variables,
)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: t.Any = None, task_vars: t.Optional[t.Dict[str, t.Any]] = None) -> t.Dict[str, t.Any]:
        result = super().run(tmp, task_vars)
        args = self._task.args
        extra = args.get("extra_known") or []
        if not isinstance(extra, list) or not all(isinstance(x, str) for x in extra):
            raise AnsibleActionFail("extra_known must be a list of variable names")
        aliases = args.get("connection_aliases", False)
        if not isinstance(aliases, bool):
            raise AnsibleActionFail("connection_aliases must be true or false")
        unknown_args = set(args) - {"extra_known", "connection_aliases"}
        if unknown_args:
            raise AnsibleActionFail("unsupported parameters: %s" % ", ".join(sorted(unknown_args)))
        names = [k for k in (task_vars or {}) if isinstance(k, str) and k.startswith("pgshift_")]
        problems = unknown_variables(names, list(extra) + sorted(collection_role_variables()))
        for name in sorted(names):
            if name.endswith("_connection") and name not in extra:
                problems.extend(connection_problems(name, self._shallow((task_vars or {})[name]), aliases))
        result.update(changed=False, checked=sorted(names), problems=problems)
        if problems:
            result["failed"] = True
            result["msg"] = (
                "pgshift refuses variables it would ignore: %s. Fix the names in your inventory or -e "
                "arguments (README.md, 'Inventories and variables'); nothing was changed." % "; ".join(problems)
            )
        return result

    def _shallow(self, raw: t.Any) -> t.Any:
        """The connection's keys; a value only where the check needs it (the password, for the AWX placeholder; a
        setting given under two keys, a name and its alias, to compare them), and only when it templates: a value
        that cannot be templated yet (a lookup of a file that does not exist) is not this check's business."""
        if not isinstance(raw, t.Mapping):
            try:
                raw = self._templar.template(raw)
            except Exception:  # noqa: BLE001 - any templating error: leave the value to the task that uses it
                return {}
            if not isinstance(raw, t.Mapping):
                return raw
        shallow: t.Dict[str, t.Any] = dict.fromkeys(raw)
        settings: t.Dict[str, t.List[t.Any]] = {}
        for key in raw:
            settings.setdefault(CONNECTION_ALIASES.get(str(key), str(key)), []).append(key)
        for setting, keys in settings.items():
            if setting != "password" and len(keys) < 2:
                continue
            for key in keys:
                try:
                    shallow[key] = self._templar.template(raw[key])
                except Exception:  # noqa: BLE001 - as above
                    shallow[key] = None
        return shallow


def collection_role_variables() -> t.FrozenSet[str]:
    """The ``pgshift_*`` variables the collection's roles declare in their argument specs (the release's)."""
    roles = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "roles")
    docs = []
    for path in sorted(glob.glob(os.path.join(roles, "*", "meta", "argument_specs.yml"))):
        with open(path, encoding="utf-8") as handle:
            docs.append(yaml.safe_load(handle))
    return role_spec_variables(docs)
