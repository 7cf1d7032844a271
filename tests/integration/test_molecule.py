"""The molecule scenario of every role (roles/<role>/molecule/default), run for real: `molecule test -s default`.

Built-in `default` driver, unmanaged instance, local connection (no Docker); testinfra checks the host state. Each run
gets its own ANSIBLE_HOME and cache folder, so the scenarios' ephemeral folders never meet. `make molecule` runs the
same scenarios from the command line.
"""

from __future__ import annotations

import os
import re
import subprocess
import typing as t

import pytest
from conftest import ROOT, VENV_BIN, ansible_env

pytestmark = pytest.mark.slow

ROLES = ["maintenance_mode", "services", "api_checks", "recover"]


@pytest.mark.parametrize("role", ROLES)
def test_molecule_default_scenario(role: str, tmp_path: t.Any) -> None:
    scenario = os.path.join(ROOT, "roles", role, "molecule", "default")
    assert os.path.exists(os.path.join(scenario, "molecule.yml"))
    assert os.path.exists(os.path.join(scenario, "tests", "test_default.py"))
    env = ansible_env(
        {
            "ANSIBLE_HOME": str(tmp_path / "ansible"),
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible" / "tmp"),
            "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "PGSHIFT_MOLECULE_PYTHON": os.path.join(VENV_BIN, "python"),
            "NO_COLOR": "1",
        }
    )
    env.pop("ANSIBLE_CONFIG", None)  # molecule writes and uses its own
    proc = subprocess.run(
        [os.path.join(VENV_BIN, "molecule"), "test", "-s", "default"],
        cwd=os.path.join(ROOT, "roles", role),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "verify] Executed: Successful" in output, output[-4000:]
    assert re.search(r"=+ \d+ passed in ", output), "the testinfra verifier ran no test"
