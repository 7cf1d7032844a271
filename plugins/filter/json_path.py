# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: json_path
short_description: Pick a value out of parsed JSON by a dotted path
version_added: 0.1.0
description:
  - Follows a dotted path such as C(data.items.0.name) into dictionaries and lists (numbers index lists).
  - Returns the O(default) when a step of the path is missing, so that a comparison fails instead of erroring.
options:
  _input:
    description: Parsed JSON (dict or list).
    type: raw
    required: true
  path:
    description: Dotted path; an empty path returns the input.
    type: str
    required: true
  default:
    description: Value returned when the path does not exist.
    type: raw
    default: null
author:
  - pgshift maintainers
"""

EXAMPLES = r"""
- name: Check a field of an API answer
  ansible.builtin.assert:
    that: answer.json | pgshift.ops.json_path('status') == 'ok'
"""

RETURN = r"""
_value:
  description: The value at the path, or the default.
  type: raw
"""

import typing as t  # noqa: E402 - the documentation strings come first, as in every Ansible plugin

_MISSING = object()


def json_path(data: t.Any, path: str, default: t.Any = None) -> t.Any:
    current = data
    for part in [p for p in str(path).split(".") if p != ""]:
        if isinstance(current, dict):
            current = current.get(part, _MISSING)
        elif isinstance(current, list) and part.lstrip("-").isdigit() and -len(current) <= int(part) < len(current):
            current = current[int(part)]
        else:
            current = _MISSING
        if current is _MISSING:
            return default
    return current


class FilterModule:
    def filters(self) -> t.Dict[str, t.Callable[..., t.Any]]:
        return {"json_path": json_path}
