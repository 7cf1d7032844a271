# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""The variables a user may set for pgshift's playbooks, so that a mistyped one is refused instead of ignored.

The variables of the playbooks are the options of the collection's roles' argument specs (roles/*/meta/
argument_specs.yml, every entry point: :func:`role_spec_variables` reads them; a group_vars file serves several
playbooks, so their union serves them all); ``KNOWN_VARIABLES`` lists the few other ``pgshift_*`` names an inventory
holds. ``pgshift_<env>_connection`` dictionaries are recognised by their shape and their keys are checked against
``CONNECTION_KEYS``. tests/unit/test_variables.py keeps both in step with the playbooks and roles.
"""

from __future__ import annotations

import difflib
import re
import typing as t

from ansible_collections.pgshift.ops.plugins.module_utils._connection import CONNECTION_ALIASES as _CONNECTION_ALIASES

KNOWN_VARIABLES = frozenset(
    {
        # not inputs of a role: the run figures the release publishes for the run report, and the local world's
        # application roles
        "pgshift_report",
        "pgshift_app_roles",
        # the local world's inventory (tools/pgworld.py writes them)
        "pgshift_local_world",
        "pgshift_local_root",
        "pgshift_world_state",
        "pgshift_world",  # the multi-host test inventories' name for the same world
    }
)


def role_spec_variables(specs: t.Iterable[t.Mapping[str, t.Any]]) -> t.FrozenSet[str]:
    """The ``pgshift_*`` option names of roles' parsed ``meta/argument_specs.yml`` documents, every entry point."""
    names: t.Set[str] = set()
    for doc in specs:
        for entry in ((doc or {}).get("argument_specs") or {}).values():
            names.update(n for n in ((entry or {}).get("options") or {}) if n.startswith("pgshift_"))
    return frozenset(names)


# What the roles set with a pgshift_ name for another play (the rehearsal for the release, the release for the run
# report): never typos; a role's other registered and set names carry the role's prefix. tests/unit/test_variables.py
# keeps the list in step with the playbooks and roles.
SET_BY_PLAYBOOKS = frozenset(
    {
        "pgshift_window_start",
        "pgshift_report",
    }
)

# pgshift_<environment>_connection: the keys the playbooks read (the modules' own option names).
CONNECTION_VARIABLE = re.compile(r"^pgshift_[a-z0-9]+(_[a-z0-9]+)*_connection$")
# Secrets the user names (AWX credential injectors, vault files): pgshift_secret_<anything>.
SECRET_VARIABLE = re.compile(r"^pgshift_secret_[a-z0-9_]+$")
# The keys the playbooks read (the modules' own option names), and community.postgresql's names for them (the
# aliases of the pgshift.ops.connection doc fragment): a dictionary may use either; the playbooks read it through the
# pgshift.ops.connection filter, which turns the aliases into these names.
CONNECTION_KEYS = frozenset(
    {"host", "port", "user", "password", "database", "sslmode", "sslrootcert", "sslcert", "sslkey", "connect_params"}
)
CONNECTION_ALIASES = {alias: name for alias, name in _CONNECTION_ALIASES.items() if name in CONNECTION_KEYS}
# Names people write that are neither: refused with the name to use.
MISNAMED_KEYS = {"dbname": "database", "ssl_rootcert": "sslrootcert", "login_database": "database"}

# What awx/pgshift.yml imports in place of the passwords (AWX requires the fields): never a real password.
PLACEHOLDER_PASSWORD = "REPLACE-ME-IN-AWX"  # noqa: S105 - a placeholder, refused as a password


def _suggest(name: str, candidates: t.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.7)
    return " (did you mean %s?)" % close[0] if close else ""


def unknown_variables(names: t.Iterable[str], extra_known: t.Iterable[str] = ()) -> t.List[str]:
    """Messages for every ``pgshift_*`` name that no playbook reads (``pgshift_*_connection`` excepted)."""
    known = set(KNOWN_VARIABLES) | set(extra_known)
    accepted = known | SET_BY_PLAYBOOKS
    return [
        "unknown variable %s%s" % (name, _suggest(name, known))
        for name in sorted(set(names))
        if name.startswith("pgshift_")
        and name not in accepted
        and not CONNECTION_VARIABLE.match(name)
        and not SECRET_VARIABLE.match(name)
    ]


def connection_problems(name: str, value: t.Any, aliases: bool = True) -> t.List[str]:
    """Messages for a ``pgshift_*_connection`` value that is not a dictionary of known keys (pgshift's names or
    community.postgresql's aliases), or that gives one key twice (a name and its alias) with different values.
    Values are compared, never shown. ``aliases=False``: the playbook reads the dictionary by pgshift's names
    without the pgshift.ops.connection filter, so an alias is refused with the name to write."""
    if not isinstance(value, t.Mapping):
        return ["%s must be a dictionary with keys %s" % (name, ", ".join(sorted(CONNECTION_KEYS)))]
    problems = []
    accepted = set(CONNECTION_KEYS) | set(CONNECTION_ALIASES)
    given: t.Dict[str, t.List[str]] = {}
    for key in sorted(str(k) for k in value):
        if key in CONNECTION_ALIASES and not aliases:
            problems.append(
                "%s: write %s instead of %s (this playbook reads pgshift's names)"
                % (name, CONNECTION_ALIASES[key], key)
            )
        elif key in accepted:
            given.setdefault(CONNECTION_ALIASES.get(key, key), []).append(key)
        elif key in MISNAMED_KEYS:
            problems.append("%s: write %s instead of %s" % (name, MISNAMED_KEYS[key], key))
        else:
            problems.append("%s: unknown key %s%s" % (name, key, _suggest(key, accepted)))
    for option, keys in sorted(given.items()):
        if len(keys) > 1 and len({repr(value[k]) for k in keys}) > 1:
            named = sorted(keys, key=lambda k: (k != option, k))
            problems.append(
                "%s: %s are the same setting (%s) with different values; keep one of them"
                % (name, " and ".join(named), option)
            )
    password = [value[k] for k in given.get("password", [])]
    if PLACEHOLDER_PASSWORD in password:
        problems.insert(0, "%s: the password is still the placeholder of the AWX import; set it in AWX" % name)
    return problems
