"""Several hosts on this one machine, reached over real SSH, with a real nginx in front of two app backends.

Use from a test module::

    from multihost.harness import multihost  # noqa: F401  (the pytest fixture)

    def test_something(multihost, run_playbook):
        run_playbook("playbooks/x.yml", inventory=multihost.inventory)

or without pytest::

    with MultiHost(base_dir) as mh:
        print(mh.inventory)

What it starts (every process by its own pid, stopped by that pid at the end):

- one ``/usr/sbin/sshd`` per host on its own loopback address and a free port, with its own host key, config, pid
  file and log: ``db1`` 127.0.0.2 (group pgshift_db), ``app1`` 127.0.0.3 and ``app2`` 127.0.0.4 (pgshift_app),
  ``web1`` 127.0.0.5 (pgshift_web). Logins are ``root`` with an ephemeral ed25519 client key.
- a real nginx (Debian package) listening on the web host's address, proxying to the two app backends, and answering
  503 with a static maintenance page while the flag file exists (``if (-f flag) { return 503; }``).
- optionally (``start_backends=True``, the default) one small HTTP backend per app host on the app's address and the
  port nginx proxies to; pass ``start_backends=False`` to run something else there (``mh.app_port(name)``).

The inventory it writes (``mh.inventory``) has groups pgshift_db, pgshift_app (two hosts) and pgshift_web (one host),
with ansible_host/ansible_port/the key/StrictHostKeyChecking=no and ansible_python_interpreter set to the venv python.
Traffic stays on 127.0.0.0/8.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import typing as t
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

SSHD = "/usr/sbin/sshd"
NGINX = "/usr/sbin/nginx"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
BACKEND = os.path.join(os.path.dirname(os.path.abspath(__file__)), "backend.py")
PACKAGES = ("openssh-server", "nginx-light")
FALLBACK_PACKAGES = ("openssh-server", "nginx")  # where nginx-light is gone (Debian 13)

# name, address, group
HOSTS: t.Tuple[t.Tuple[str, str, str], ...] = (
    ("db1", "127.0.0.2", "pgshift_db"),
    ("app1", "127.0.0.3", "pgshift_app"),
    ("app2", "127.0.0.4", "pgshift_app"),
    ("web1", "127.0.0.5", "pgshift_web"),
)

MAINTENANCE_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Down for maintenance</title></head>
<body><h1>Down for maintenance</h1><p>We are releasing a new version. Back in a few minutes.</p></body></html>
"""


class HarnessError(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------------ packages
def missing_programs() -> t.List[str]:
    return [path for path in (SSHD, NGINX) if not os.path.exists(path)]


def ensure_packages() -> t.Optional[str]:
    """Install openssh-server and nginx with apt-get when they are missing.

    Returns None when everything is there, or the reason why it cannot be (not root): the caller skips with it.
    Raises HarnessError when the installation itself fails.
    """
    if not missing_programs():
        return None
    if os.geteuid() != 0:
        return "multi-host tests need %s: run `make multihost-deps` as root (apt-get install %s)" % (
            " and ".join(missing_programs()),
            " ".join(PACKAGES),
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends"]
    proc = subprocess.run(
        ["apt-get", "update", "-qq"], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if proc.returncode != 0:
        raise HarnessError("apt-get update failed (rc %d): %s" % (proc.returncode, proc.stderr[-2000:]))
    for packages in (PACKAGES, FALLBACK_PACKAGES):
        proc = subprocess.run(
            install + list(packages), env=env, capture_output=True, text=True, timeout=600, check=False
        )
        if proc.returncode == 0:
            break
    else:
        raise HarnessError(
            "apt-get install %s failed (rc %d): %s" % (" ".join(PACKAGES), proc.returncode, proc.stderr[-2000:])
        )
    if missing_programs():
        raise HarnessError("still missing after apt-get install: %s" % ", ".join(missing_programs()))
    return None


# ------------------------------------------------------------------------------------------------ helpers
def free_port(address: str) -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def wait_for_port(address: str, port: int, timeout: float = 10.0, banner: t.Optional[bytes] = None) -> None:
    deadline = time.monotonic() + timeout
    last: t.Optional[BaseException] = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=1.0) as sock:
                if banner is None or sock.recv(64).startswith(banner):
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.05)
    raise HarnessError("nothing answers on %s:%d after %.0fs (%s)" % (address, port, timeout, last))


def http_get(url: str, timeout: float = 5.0) -> t.Tuple[int, str]:
    """(status, body) of a GET, also for error statuses."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback test URLs)
            return int(resp.status), resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode("utf-8", "replace")


def _children_of(pid: int) -> t.List[int]:
    """Direct children of a process (sshd's per-connection processes), read from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, encoding="utf-8") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


def _stop_process(proc: "subprocess.Popen[bytes]", sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    for child in _children_of(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGTERM)
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


# ------------------------------------------------------------------------------------------------ the harness
class Host(t.NamedTuple):
    name: str
    address: str
    group: str
    port: int


class MultiHost:
    """sshd per host, nginx on the web host, app backends, and an inventory; ``start()``/``stop()`` or ``with``."""

    def __init__(
        self,
        base: str,
        start_backends: bool = True,
        extra_vars: t.Optional[t.Dict[str, t.Any]] = None,
        app_address: t.Optional[str] = None,
        maintenance_bypass: bool = False,
    ) -> None:
        """``app_address``: where the app backends listen and nginx sends requests; by default each app host's own
        address (127.0.0.3, 127.0.0.4). Set "127.0.0.1" for a service that only binds 127.0.0.1 (the sample shop API):
        each app host then still gets its own port.

        ``maintenance_bypass``: nginx lets requests carrying ``X-Maintenance-Bypass: 1`` through to the backends while
        the flag is set (operators' checks during the window, as the api_checks role sends them); off by default."""
        self.base = os.path.abspath(base)
        self.maintenance_bypass = maintenance_bypass
        self.start_backends = start_backends
        self.app_address = app_address
        self.extra_vars = dict(extra_vars or {})
        self.hosts: t.Dict[str, Host] = {}
        self.app_ports: t.Dict[str, int] = {}
        self.nginx_port = 0
        self._procs: t.Dict[str, subprocess.Popen[bytes]] = {}
        self.key = os.path.join(self.base, "ssh", "client_ed25519")
        self.web_dir = os.path.join(self.base, "web")
        self.maintenance_flag = os.path.join(self.web_dir, "maintenance.flag")
        self.inventory = os.path.join(self.base, "inventory.yml")

    # ------------------------------------------------------------------ accessors
    def host(self, name: str) -> Host:
        return self.hosts[name]

    def app_port(self, name: str) -> int:
        return self.app_ports[name]

    def app_listen(self, name: str) -> str:
        """The address app host ``name``'s backend listens on (and nginx proxies to)."""
        return self.app_address or self.hosts[name].address

    @property
    def web_url(self) -> str:
        return "http://%s:%d" % (self.hosts["web1"].address, self.nginx_port)

    def pid(self, name: str) -> int:
        return self._procs[name].pid

    # ------------------------------------------------------------------ life cycle
    def __enter__(self) -> "MultiHost":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        os.makedirs(self.base, exist_ok=True)
        os.chmod(self.base, 0o755)  # noqa: S103 (nginx workers run as nobody and must reach web/)
        try:
            self._keys()
            for name, address, group in HOSTS:
                self.hosts[name] = Host(name, address, group, free_port(address))
            for name, host in self.hosts.items():
                if host.group == "pgshift_app":
                    self.app_ports[name] = free_port(self.app_listen(name))
            for name in self.hosts:
                self._start_sshd(name)
            if self.start_backends:
                for name in self.app_ports:
                    self.start_backend(name)
            self._start_nginx()
            self._write_inventory()
            for host in self.hosts.values():
                wait_for_port(host.address, host.port, banner=b"SSH-")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for name in reversed(list(self._procs)):
            proc = self._procs.pop(name)
            _stop_process(proc, signal.SIGQUIT if name == "nginx" else signal.SIGTERM)

    # ------------------------------------------------------------------ pieces
    def _keys(self) -> None:
        ssh_dir = os.path.join(self.base, "ssh")
        os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
        if not os.path.exists(self.key):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pgshift-multihost", "-f", self.key], check=True
            )
        with open(self.key + ".pub", encoding="utf-8") as handle:
            public = handle.read()
        path = os.path.join(ssh_dir, "authorized_keys")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(public)
        os.chmod(path, 0o600)

    def stop_sshd(self, name: str) -> None:
        """Stop host ``name``'s sshd (the host becomes unreachable); ``start_sshd`` brings it back on the same port."""
        proc = self._procs.pop("sshd-" + name, None)
        if proc is not None:
            _stop_process(proc)

    def start_sshd(self, name: str) -> None:
        self._start_sshd(name)
        host = self.hosts[name]
        wait_for_port(host.address, host.port, banner=b"SSH-")

    def _start_sshd(self, name: str) -> None:
        host = self.hosts[name]
        ssh_dir = os.path.join(self.base, "ssh")
        host_key = os.path.join(ssh_dir, "%s_host_ed25519" % name)
        if not os.path.exists(host_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host_key], check=True)
        config = os.path.join(ssh_dir, "sshd_%s.conf" % name)
        lines = [
            "ListenAddress %s" % host.address,
            "Port %d" % host.port,
            "HostKey %s" % host_key,
            "PidFile %s" % os.path.join(ssh_dir, "sshd_%s.pid" % name),
            "AuthorizedKeysFile %s" % os.path.join(ssh_dir, "authorized_keys"),
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "MaxStartups 100:30:200",
            "MaxSessions 50",
            "LogLevel ERROR",
            "Subsystem sftp internal-sftp",
        ]
        with open(config, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        log = open(os.path.join(ssh_dir, "sshd_%s.log" % name), "ab")  # noqa: SIM115 (kept open for the child)
        with log:
            self._procs["sshd-" + name] = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", config], stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )

    def start_backend(self, name: str) -> None:
        """The small demo backend of one app host (stopped by ``stop_backend`` or at the end)."""
        log = open(os.path.join(self.base, "backend_%s.log" % name), "ab")  # noqa: SIM115
        with log:
            proc = subprocess.Popen(
                [sys.executable, BACKEND, self.app_listen(name), str(self.app_ports[name]), name],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        self._procs["backend-" + name] = proc
        wait_for_port(self.app_listen(name), self.app_ports[name])

    def stop_backend(self, name: str) -> None:
        proc = self._procs.pop("backend-" + name, None)
        if proc is not None:
            _stop_process(proc)

    def _start_nginx(self) -> None:
        web = self.hosts["web1"]
        self.nginx_port = free_port(web.address)
        ngx = os.path.join(self.base, "nginx")
        for sub in ("", "tmp"):
            os.makedirs(os.path.join(ngx, sub), exist_ok=True)
        os.makedirs(self.web_dir, exist_ok=True)
        os.chmod(self.web_dir, 0o755)  # noqa: S103 (served by nginx workers running as nobody)
        page = os.path.join(self.web_dir, "maintenance.html")
        with open(page, "w", encoding="utf-8") as handle:
            handle.write(MAINTENANCE_PAGE)
        os.chmod(page, 0o644)
        upstreams = "".join(
            "    server %s:%d max_fails=0;\n" % (self.app_listen(name), port)
            for name, port in sorted(self.app_ports.items())
        )
        temp = os.path.join(ngx, "tmp")
        if self.maintenance_bypass:
            gate = (
                "      set $pgshift_maintenance 0;\n"
                f"      if (-f {self.maintenance_flag}) {{ set $pgshift_maintenance 1; }}\n"
                '      if ($http_x_maintenance_bypass = "1") { set $pgshift_maintenance 0; }\n'
                "      if ($pgshift_maintenance = 1) { return 503; }\n"
            )
        else:
            gate = f"      if (-f {self.maintenance_flag}) {{ return 503; }}\n"
        conf = f"""worker_processes 1;
user nobody nogroup;
daemon off;
pid {ngx}/nginx.pid;
error_log {ngx}/error.log warn;
events {{ worker_connections 128; }}
http {{
  access_log {ngx}/access.log;
  client_body_temp_path {temp}/body;
  proxy_temp_path {temp}/proxy;
  fastcgi_temp_path {temp}/fastcgi;
  uwsgi_temp_path {temp}/uwsgi;
  scgi_temp_path {temp}/scgi;
  default_type application/octet-stream;
  upstream pgshift_app {{
{upstreams}  }}
  server {{
    listen {web.address}:{self.nginx_port};
    server_name _;
    error_page 503 /maintenance.html;
    location = /maintenance.html {{
      root {self.web_dir};
      default_type text/html;
      internal;
    }}
    location / {{
{gate}      proxy_pass http://pgshift_app;
      proxy_set_header Host $host;
      proxy_next_upstream error timeout http_502;
      proxy_connect_timeout 2s;
      proxy_read_timeout 30s;
    }}
  }}
}}
"""
        path = os.path.join(ngx, "nginx.conf")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(conf)
        check = subprocess.run(
            [NGINX, "-t", "-q", "-e", os.path.join(ngx, "error.log"), "-p", ngx, "-c", path],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            raise HarnessError("nginx rejected its config: %s" % check.stderr)
        log = open(os.path.join(ngx, "stderr.log"), "ab")  # noqa: SIM115
        with log:
            self._procs["nginx"] = subprocess.Popen(
                [NGINX, "-e", os.path.join(ngx, "error.log"), "-p", ngx, "-c", path],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        wait_for_port(web.address, self.nginx_port)

    def _write_inventory(self) -> None:
        ssh_args = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
        all_vars: t.Dict[str, t.Any] = {
            "ansible_connection": "ssh",
            "ansible_user": "root",
            "ansible_ssh_private_key_file": self.key,
            # No ControlPersist: no ssh master outlives a run (every process of the harness is stopped by pid).
            "ansible_ssh_args": "-o ControlMaster=no -o ControlPath=none",
            "ansible_ssh_common_args": ssh_args,
            "ansible_python_interpreter": VENV_PYTHON,
            "multihost_base": self.base,
        }
        all_vars.update(self.extra_vars)
        groups: t.Dict[str, t.Dict[str, t.Any]] = {}
        for name, host in self.hosts.items():
            host_vars: t.Dict[str, t.Any] = {
                "ansible_host": host.address,
                "ansible_port": host.port,
                "multihost_address": host.address,
            }
            if name in self.app_ports:
                host_vars["multihost_app_port"] = self.app_ports[name]
                host_vars["multihost_app_address"] = self.app_listen(name)
                host_vars["multihost_app_url"] = "http://%s:%d" % (self.app_listen(name), self.app_ports[name])
            if host.group == "pgshift_web":
                host_vars["pgshift_maintenance_flag"] = self.maintenance_flag
                host_vars["multihost_web_url"] = self.web_url
            groups.setdefault(host.group, {"hosts": {}})["hosts"][name] = host_vars
        inventory = {"all": {"vars": all_vars, "children": groups}}
        with open(self.inventory, "w", encoding="utf-8") as handle:
            yaml.safe_dump(inventory, handle, sort_keys=False)


# ------------------------------------------------------------------------------------------------ webhook receiver
class WebhookReceiver:
    """A local HTTP server (thread, 127.0.0.1, free port) that keeps every JSON body POSTed to it, in arrival order.

    ``status`` is what it answers (set 500 to test a failing webhook).
    """

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.received: t.List[t.Dict[str, t.Any]] = []
        self.headers: t.List[t.Dict[str, str]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args: t.Any) -> None:
                return

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length).decode("utf-8"))
                with receiver._lock:
                    receiver.received.append(body)
                    receiver.headers.append(dict(self.headers.items()))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/hook" % self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)

    def __enter__(self) -> "WebhookReceiver":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def events(self) -> t.List[t.Dict[str, t.Any]]:
        with self._lock:
            return list(self.received)

    def wait_for(self, predicate: t.Callable[[t.Dict[str, t.Any]], bool], timeout: float = 60.0) -> t.Dict[str, t.Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events():
                if predicate(event):
                    return event
            time.sleep(0.05)
        raise HarnessError(
            "no matching notification within %.0fs; got %r" % (timeout, [e.get("event") for e in self.events()])
        )


# ------------------------------------------------------------------------------------------------ pytest
def _fixture() -> t.Any:
    import pytest

    @pytest.fixture(scope="module")
    def multihost() -> t.Iterator[MultiHost]:
        """A started MultiHost for the test module (skipped with the reason when the packages cannot be installed)."""
        reason = ensure_packages()
        if reason:
            pytest.skip(reason)
        base = tempfile.mkdtemp(prefix="pgshift-mh-")
        harness = MultiHost(base)
        harness.start()
        try:
            yield harness
        finally:
            harness.stop()
            shutil.rmtree(base, ignore_errors=True)

    return multihost


multihost = _fixture()
