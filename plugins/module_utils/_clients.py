# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""Find PostgreSQL client binaries that fit a server, and run them without leaking the password.

pg_dump must be at least the server's major version, and pg_restore at least the version of the pg_dump that wrote
an archive. pgshift therefore picks, among the installed client folders, the lowest major version that is at least the
server's, and records which binaries it used.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import subprocess
import tempfile
import typing as t

from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, client_environment, scrub
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError

_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


def _candidate_dirs(extra: t.Sequence[str] = ()) -> t.List[str]:
    dirs: t.List[str] = [d for d in extra if d]
    env_dir = os.environ.get("PGSHIFT_PG_BINDIR")
    if env_dir:
        dirs.append(env_dir)
    dirs.extend(sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True))
    dirs.extend(sorted(glob.glob("/usr/pgsql-*/bin"), reverse=True))
    dirs.extend(["/usr/local/pgsql/bin", "/opt/homebrew/bin", "/usr/local/bin", "/usr/bin"])
    return dirs


def binary_version(path: str) -> t.Optional[int]:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20, check=False).stdout
    except OSError:
        return None
    match = _VERSION_RE.search(out)
    return int(match.group(1)) if match else None


def find_client(name: str, min_major: int, extra_dirs: t.Sequence[str] = ()) -> t.Tuple[str, int]:
    """Return (path, major) of the best ``name`` binary for a server of ``min_major``.

    The lowest installed major >= min_major wins (its output is readable by the most tools); raises a PgShiftError
    listing what was found otherwise.
    """
    found: t.Dict[str, int] = {}
    for folder in _candidate_dirs(extra_dirs):
        path = os.path.join(folder, name)
        real = os.path.realpath(path)
        if real in found or not os.access(path, os.X_OK):
            continue
        major = binary_version(path)
        if major is not None:
            found[real] = major
    on_path = shutil.which(name)
    if on_path and os.path.realpath(on_path) not in found:
        major = binary_version(on_path)
        if major is not None:
            found[os.path.realpath(on_path)] = major
    fitting = sorted((major, path) for path, major in found.items() if major >= min_major)
    if not fitting:
        seen = ", ".join("%s (%s)" % (p, m) for p, m in sorted(found.items())) or "none"
        raise PgShiftError(
            "no %s of major version %d or newer found (found: %s); install the PostgreSQL %d client "
            "binaries, or point PGSHIFT_PG_BINDIR at them" % (name, min_major, seen, min_major),
            binary=name,
            required_major=min_major,
        )
    major, path = fitting[0]
    return path, major


class CommandResult(t.NamedTuple):
    rc: int
    stdout: str
    stderr: str


def run_client(
    argv: t.Sequence[str],
    params: ConnParams,
    *,
    stdin: t.Optional[t.IO[t.Any]] = None,
    stdout: t.Optional[t.IO[t.Any]] = None,
    timeout: t.Optional[float] = None,
) -> CommandResult:
    """Run a client binary with the connection in its environment and the password in a 0600 PGPASSFILE.

    ``stdout`` may be a file object to stream into (then the result's stdout is empty). Output is scrubbed of the
    password before it is returned.
    """
    with client_environment(params) as env:
        try:
            proc = subprocess.run(
                list(argv),
                env=env,
                stdin=stdin if stdin is not None else subprocess.DEVNULL,
                stdout=stdout if stdout is not None else subprocess.PIPE,
                stderr=subprocess.PIPE,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise PgShiftError("%s did not finish within %s seconds" % (os.path.basename(argv[0]), timeout)) from exc
        except OSError as exc:
            raise PgShiftError("cannot run %s: %s" % (argv[0], exc)) from exc
    out = proc.stdout.decode("utf-8", "replace") if isinstance(proc.stdout, bytes) else ""
    err = proc.stderr.decode("utf-8", "replace") if isinstance(proc.stderr, bytes) else ""
    return CommandResult(proc.returncode, scrub(out, params.password), scrub(err, params.password))


def check_client(result: CommandResult, what: str) -> None:
    if result.rc != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-8:])
        raise PgShiftError("%s failed (exit %d): %s" % (what, result.rc, tail), rc=result.rc)


class BackgroundClient:
    """A client binary running in the background (pg_dump, pg_restore) while the caller does other work.

    The connection and the 0600 PGPASSFILE come from ``client_environment`` as for ``run_client``; stderr goes to an
    anonymous temporary file and is returned scrubbed of the password by ``wait``. ``kill`` stops it (TERM, then KILL).
    """

    def __init__(self, argv: t.Sequence[str], params: ConnParams) -> None:
        self.argv = list(argv)
        self.params = params
        self._env_cm = client_environment(params)
        env = self._env_cm.__enter__()
        self._stderr = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(
                self.argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr
            )
        except OSError as exc:
            self.close()
            raise PgShiftError("cannot run %s: %s" % (self.argv[0], exc)) from None

    def wait(self) -> CommandResult:
        rc = self.proc.wait()
        self._stderr.seek(0)
        err = self._stderr.read().decode("utf-8", "replace")
        self.close()
        return CommandResult(rc, "", scrub(err, self.params.password))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stderr.close()
        with contextlib.suppress(Exception):
            self._env_cm.__exit__(None, None, None)
