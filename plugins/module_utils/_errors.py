# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""The single exception type of the collection, converted once into fail_json by the modules."""

from __future__ import annotations

import typing as t


class PgShiftError(Exception):
    """An error a module reports to the user: what went wrong and what to do about it.

    ``details`` holds machine-readable facts (never secrets) that end up in the module result.
    """

    def __init__(self, msg: str, *, sqlstate: t.Optional[str] = None, **details: t.Any) -> None:
        super().__init__(msg)
        self.msg = msg
        self.sqlstate = sqlstate
        self.details = details

    def to_result(self) -> t.Dict[str, t.Any]:
        result: t.Dict[str, t.Any] = dict(self.details)
        if self.sqlstate:
            result["sqlstate"] = self.sqlstate
        return result


def fail_from(module: t.Any, exc: PgShiftError, **extra: t.Any) -> None:
    """Convert a PgShiftError into fail_json (the one place this happens)."""
    result = exc.to_result()
    result.update(extra)
    module.fail_json(msg=exc.msg, **result)


def without_file_stats(module: t.Any) -> t.Any:
    """Keep a result's ``path`` a plain value: AnsibleModule adds the stat of a top-level ``path`` (uid, gid, owner,
    group, mode, state, size, secontext) to exit_json and fail_json, noise beside the figures pgshift returns
    (``size_bytes``). Returns the module."""
    module.add_path_info = lambda kwargs: kwargs
    return module
