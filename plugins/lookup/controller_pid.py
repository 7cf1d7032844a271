# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: controller_pid
short_description: The process id of the running ansible-playbook (the controller)
version_added: 0.1.0
description:
  - Returns the pid of the main ansible-playbook process, so that a helper process started on the same machine (the
    release run lock of M(pgshift.ops.run_lock)) can end when the controller dies, even by SIGKILL.
  - Lookups run in a worker process forked from the controller, so this is the worker's parent.
  - Only meaningful for a task that runs on the controller's own machine (connection local).
options: {}
author:
  - pgshift contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Take the run lock, released when this playbook dies
  pgshift.ops.run_lock:
    action: acquire
    production_database: shop
    watch_pid: "{{ lookup('pgshift.ops.controller_pid') }}"
"""

RETURN = r"""
_raw:
  description: One element, the controller's pid.
  type: list
  elements: int
"""

import os  # noqa: E402 - the documentation strings come first, as in every Ansible plugin
import typing as t  # noqa: E402

from ansible.plugins.lookup import LookupBase  # noqa: E402


class LookupModule(LookupBase):
    def run(self, terms: t.List[t.Any], variables: t.Any = None, **kwargs: t.Any) -> t.List[int]:
        return [os.getppid()]
