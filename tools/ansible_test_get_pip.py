"""Offline stand-in for ansible-test's pip bootstrap script (get-pip.py).

ansible-test creates an empty virtual environment for each sanity test and bootstraps pip in it by downloading
``get-pip-<version>.py`` from ci-files.testing.ansible.com, which an offline machine cannot reach. It looks for a
cached copy at ``~/.ansible/test/cache/get_pip_<version>.py`` first; ``make sanity`` puts this file there.

This stand-in installs the pip bundled with the running Python (``ensurepip``), then asks that pip to install what
ansible-test asked for (for example ``pip==24.2``) from the configured package index. ``--no-setuptools`` and
``--no-wheel`` are options of get-pip.py only, so they are dropped.
"""

from __future__ import annotations

import subprocess
import sys

_GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}


def main(argv: list[str]) -> int:
    subprocess.run([sys.executable, "-m", "ensurepip", "--upgrade"], check=True, stdout=subprocess.DEVNULL)
    args = [arg for arg in argv if arg not in _GET_PIP_ONLY]
    if args:
        subprocess.run([sys.executable, "-m", "pip", "install", *args], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
