# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: project_dir
short_description: The user's project folder on the controller, where pgshift's default paths live
version_added: 0.1.0
description:
  - Returns the folder of the user's project, the base of every pgshift path default (C(artifacts/) with the plan,
    the run summary and the rehearsal records), so that nothing is ever written inside the installed collection.
  - The project is the folder of the C(ansible.cfg) named by E(ANSIBLE_CONFIG) when that is set, else the folder
    ansible-playbook runs from (the project's checkout, as AWX runs its jobs).
  - Each term is a path relative to that folder; the result is the absolute path. Without a term, the folder itself.
options:
  _terms:
    description: Paths relative to the project folder.
    required: false
    type: list
    elements: str
author:
  - pgshift contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Where the run summary goes when pgshift_artifacts_dir is not set
  ansible.builtin.debug:
    msg: "{{ pgshift_artifacts_dir | default(lookup('pgshift.ops.project_dir', 'artifacts')) }}"
"""

RETURN = r"""
_raw:
  description: The absolute path of each term below the project folder (the folder itself without a term).
  type: list
  elements: str
"""

import os  # noqa: E402 - the documentation strings come first, as in every Ansible plugin
import typing as t  # noqa: E402

from ansible.plugins.lookup import LookupBase  # noqa: E402


def project_dir() -> str:
    """The folder of the ansible.cfg named by ANSIBLE_CONFIG, else the working directory."""
    config = os.environ.get("ANSIBLE_CONFIG", "")
    if config:
        config = os.path.abspath(os.path.expanduser(config))
        return config if os.path.isdir(config) else os.path.dirname(config)
    return os.getcwd()


class LookupModule(LookupBase):
    def run(self, terms: t.List[t.Any], variables: t.Any = None, **kwargs: t.Any) -> t.List[str]:
        base = project_dir()
        if not terms:
            return [base]
        return [os.path.normpath(os.path.join(base, os.path.expanduser(str(term)))) for term in terms]
