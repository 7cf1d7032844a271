#!/usr/bin/env python
"""Benchmark: the maintenance window of prod_restore.yml, offline, online and a naive dump/restore, side by side,
with an application writing to production the whole time.

Starts its own world (tools/pgworld.World in a temporary folder, free ports). Per scale (``--scales``, default 1,10;
``--with-50`` adds 50; the world's scale is the sample shop's: sample_app/datagen.py, scale 1 = 200 customers, 50
products, 1,000 orders with their lines and events) and per mode (``--modes``, default offline,online,naive), the
world is reset at that scale and, while a **writer** process commits small transactions to production as the
application role (shop_app, the world's app password, as the demo API connects), the release runs:

- ``offline``: playbooks/prod_restore.yml -e pgshift_mode=offline (the new database built and filled in the window)
- ``online``: playbooks/prod_restore.yml -e pgshift_mode=online (filled while production serves; the window cuts over)
- ``naive``: the bare sequence an operator would type, timed by this script: ``pg_dump -Fc --data-only`` of
  production (while it serves), ``DROP DATABASE ... WITH (FORCE)``, ``CREATE DATABASE`` (CONNECTION LIMIT 0, or the
  application's own inserts would collide with the restore), the dev schema (``pg_restore`` of dev's
  ``pg_dump -Fc --schema-only``, dev's migration ledger), ``pg_restore --data-only --disable-triggers`` of the data
  into psql (one transaction; the COPY header of customers renamed full_name -> display_name: the mapping by hand),
  connections allowed again.

The writer (``--writer``, a process of its own) inserts an order (a unique note) with one line, marks the order of
its previous transaction paid and, every fifth transaction, deletes that order's line; it records every commit it
saw succeed. It measures the longest time its writes were refused or blocked: from the start of the first attempt
after a success (failing or slow) to the next success, reconnecting as needed (after the swap it reaches the new
production database under the same name). After the run the record is compared with production: committed inserts,
updates and deletes lost (must be 0 for pgshift), and commits whose outcome the writer could not know (the
connection died inside COMMIT) are reported apart.

Per run: the window (the journal's ``window_seconds``, as the run summary gives it: maintenance on to maintenance
off with the app tier, access blocked to swap with ``--no-app-tier``; for naive: pg_dump started to connections
allowed again), access blocked to swap (journal), the total run time, the controller's peak memory (``os.wait4``'s
``ru_maxrss`` of the ansible-playbook process tree: the largest single process; naive: of pg_dump, pg_restore, psql)
and, online, the stream holder's peak (VmHWM of the detached process, which is not the controller's child). Then a
table per scale with the ratios online/offline and naive/offline.

    .venv/bin/python bench/bench_window.py                       # scales 1 and 10, every mode, with the app tier
    .venv/bin/python bench/bench_window.py --scales 1 --no-app-tier --details
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import typing as t
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, ".build", "collections"))

import pgworld  # noqa: E402

VENV_BIN = os.path.join(ROOT, ".venv", "bin")
MODES = ("offline", "online", "naive")
NOTE_PREFIX = "bench-writer "


def _env(world: pgworld.World) -> t.Dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
            "ANSIBLE_HOME": os.path.join(ROOT, ".cache", "ansible"),
            "ANSIBLE_LOCAL_TEMP": os.path.join(ROOT, ".cache", "ansible", "tmp"),
            "ANSIBLE_COLLECTIONS_PATH": os.path.join(ROOT, ".build", "collections"),
            "ANSIBLE_NOCOLOR": "1",
            "PGSHIFT_REPORT_DIR": os.path.join(os.path.dirname(world.state), "reports"),
            "PGSHIFT_WORLD": world.state,
            "PGSHIFT_ARTIFACTS": os.path.join(os.path.dirname(world.state), "artifacts"),
            "PATH": VENV_BIN + os.pathsep + env.get("PATH", ""),
        }
    )
    env.pop("PGPASSWORD", None)
    env.pop("PGSHIFT_MODE", None)
    return env


def _private_json(path: str, doc: t.Any) -> None:
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        json.dump(doc, handle)


# ------------------------------------------------------------------------------------------------ the writer
def writer_main(config_path: str) -> None:
    """The application writer (its own process): small transactions as the app role until the stop file exists."""
    import psycopg2  # noqa: PLC0415

    with open(config_path) as handle:
        cfg = json.load(handle)
    out: t.Dict[str, t.Any] = {
        "inserted": {},  # note -> order id (each with one order line)
        "paid": [],  # order ids whose status the writer set to paid
        "line_deleted": [],  # order ids whose line the writer deleted
        "uncertain": [],  # notes of transactions whose COMMIT outcome is unknown (connection lost inside it)
        "errors": {},
        "commits": 0,
        "attempts": 0,
        "longest_gap": {"seconds": 0.0, "from": None, "to": None},
        "gaps_over_1s": [],
        "stalls": [],  # every success that came more than 0.1 s after its first attempt: [from, to]
    }
    conn: t.Any = None
    prev: t.Optional[int] = None  # the order of the previous committed transaction
    since: t.Optional[float] = None  # start of the first attempt after the last success
    last_status = 0.0
    n = 0

    def error(kind: str) -> None:
        out["errors"][kind] = out["errors"].get(kind, 0) + 1

    while not os.path.exists(cfg["stop_file"]):
        began = time.time()
        if since is None:
            since = began
        out["attempts"] += 1
        note = NOTE_PREFIX + uuid.uuid4().hex
        in_commit = False
        try:
            if conn is None or conn.closed:
                conn = psycopg2.connect(
                    host=cfg["host"],
                    port=cfg["port"],
                    user=cfg["user"],
                    password=cfg["password"],
                    dbname=cfg["database"],
                    application_name="bench-writer",
                    connect_timeout=3,
                    options="-c statement_timeout=30000",
                )
            n += 1
            with conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO orders (customer_id, status, note) VALUES (1, 'pending', %s) RETURNING id", (note,)
                )
                order_id = int(cur.fetchone()[0])
                cur.execute(
                    "INSERT INTO order_lines (order_id, line_no, product_id, quantity, unit_price_cents) "
                    "VALUES (%s, 1, 1, 1, 100)",
                    (order_id,),
                )
                delete = prev is not None and n % 5 == 0
                if prev is not None:
                    cur.execute("UPDATE orders SET status = 'paid' WHERE id = %s", (prev,))
                    if cur.rowcount != 1:
                        raise RuntimeError("order %d, committed earlier, is not in production" % prev)
                if delete:
                    cur.execute("DELETE FROM order_lines WHERE order_id = %s", (prev,))
            in_commit = True
            conn.commit()
        except (psycopg2.Error, RuntimeError) as exc:
            text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            error(("in COMMIT: " if in_commit else "") + text[:90])
            if in_commit:
                out["uncertain"].append(note)
            with contextlib.suppress(Exception):
                conn.rollback()
            if conn is not None and (in_commit or isinstance(exc, psycopg2.OperationalError) or conn.closed):
                with contextlib.suppress(Exception):
                    conn.close()
                conn = None
            if isinstance(exc, RuntimeError):
                prev = None  # do not touch a lost order again
            time.sleep(cfg["retry_pause"])
        else:
            done = time.time()
            out["commits"] += 1
            out["inserted"][note] = order_id
            if prev is not None:
                out["paid"].append(prev)
                if delete:
                    out["line_deleted"].append(prev)
            prev = order_id
            gap = done - since
            if gap > out["longest_gap"]["seconds"]:
                out["longest_gap"] = {"seconds": gap, "from": since, "to": done}
            if gap > 1.0:
                out["gaps_over_1s"].append([since, done])
            if gap > 0.1 and len(out["stalls"]) < 10000:
                out["stalls"].append([since, done])
            since = None
            if done - last_status > 0.25:
                _private_json(cfg["status_file"], {"commits": out["commits"], "last_success": done})
                last_status = done
            time.sleep(cfg["pause"])
    with contextlib.suppress(Exception):
        conn.close()
    _private_json(cfg["out_file"], out)


class Writer:
    """Starts the writer process against the world's production database; ``stop`` returns its record."""

    def __init__(self, world: pgworld.World, tmp: str, pause: float) -> None:
        self.folder = tempfile.mkdtemp(prefix="writer-", dir=tmp)
        prod = world.clusters["prod"]
        self.cfg = {
            "host": "127.0.0.1",
            "port": prod.port,
            "user": pgworld.APP_ROLE,
            "password": world.meta["app_password"],
            "database": pgworld.DB_NAME,
            "pause": pause,
            "retry_pause": 0.02,
            "stop_file": os.path.join(self.folder, "stop"),
            "status_file": os.path.join(self.folder, "status.json"),
            "out_file": os.path.join(self.folder, "out.json"),
        }
        config = os.path.join(self.folder, "writer.json")
        _private_json(config, self.cfg)
        self.proc = subprocess.Popen(  # noqa: S603 - argv list
            [sys.executable, os.path.abspath(__file__), "--writer", config],
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.folder, "writer.log"), "wb"),  # noqa: SIM115 - the child's
        )

    def status(self) -> t.Dict[str, t.Any]:
        with contextlib.suppress(OSError, ValueError):
            with open(self.cfg["status_file"]) as handle:
                return t.cast(t.Dict[str, t.Any], json.load(handle))
        return {"commits": 0, "last_success": 0.0}

    def wait_commits(self, after: float, count: int, timeout: float) -> bool:
        """Wait until the writer has committed again after ``after`` (epoch) ``count`` times or so."""
        deadline = time.monotonic() + timeout
        base: t.Optional[int] = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("the writer died: see %s" % os.path.join(self.folder, "writer.log"))
            st = self.status()
            if st["last_success"] > after:
                base = st["commits"] if base is None else base
                if st["commits"] - base >= count:
                    return True
            time.sleep(0.1)
        return False

    def stop(self) -> t.Dict[str, t.Any]:
        with open(self.cfg["stop_file"], "w"):
            pass
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise SystemExit("the writer did not stop") from None
        with open(self.cfg["out_file"]) as handle:
            return t.cast(t.Dict[str, t.Any], json.load(handle))


def verify_writes(
    world: pgworld.World, record: t.Dict[str, t.Any], previous: t.Optional[str] = None
) -> t.Dict[str, t.Any]:
    """The writer's record against production after the release: what it saw committed and production lacks. The
    commits of unknown outcome are also looked for in the previous production database (kept by the swap): one
    there and not in production would be a write lost that the writer could not know of."""
    in_previous = 0
    if previous and record["uncertain"]:
        with contextlib.closing(world.clusters["prod"].connect(previous)) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM orders WHERE note = ANY(%s)", (record["uncertain"],))
            in_previous = int(cur.fetchone()[0])
    with contextlib.closing(world.clusters["prod"].connect(pgworld.DB_NAME)) as conn, conn.cursor() as cur:
        cur.execute("SELECT note, id, status::text FROM orders WHERE note LIKE %s", (NOTE_PREFIX + "%",))
        orders = {row[0]: (int(row[1]), row[2]) for row in cur.fetchall()}
        cur.execute("SELECT order_id FROM order_lines WHERE order_id = ANY(%s)", ([o[0] for o in orders.values()],))
        lines = {int(row[0]) for row in cur.fetchall()}
    inserted: t.Dict[str, int] = record["inserted"]
    present_ids = {orders[note][0] for note in inserted if note in orders and orders[note][0] == inserted[note]}
    lost_inserts = [note for note, oid in inserted.items() if orders.get(note, (None,))[0] != oid]
    status = dict(orders.values())
    deleted = set(record["line_deleted"])
    lost_updates = [oid for oid in record["paid"] if oid in present_ids and status.get(oid) != "paid"]
    lost_lines = [oid for oid in present_ids if oid not in deleted and oid not in lines]
    undeleted = [oid for oid in deleted if oid in lines]
    uncertain_landed = sum(1 for note in record["uncertain"] if note in orders)
    return {
        "commits": record["commits"],
        "lost": len(lost_inserts) + len(lost_updates) + len(lost_lines) + len(undeleted),
        "lost_inserts": len(lost_inserts),
        "lost_updates": len(lost_updates),
        "lost_lines": len(lost_lines),
        "deletes_undone": len(undeleted),
        "uncertain": len(record["uncertain"]),
        "uncertain_landed": uncertain_landed,
        "uncertain_in_previous": in_previous,
        "examples": lost_inserts[:3],
        "longest_refused": record["longest_gap"],
        "gaps_over_1s": record["gaps_over_1s"],
        "errors": record["errors"],
    }


# ------------------------------------------------------------------------------------------------ pgshift's release
def journal(world: pgworld.World) -> t.List[t.Tuple[str, str, float]]:
    """(step, state, epoch seconds) of the latest run, in order."""
    with contextlib.closing(world.clusters["prod"].connect("pgshift")) as conn, conn.cursor() as cur:
        cur.execute("SELECT run_id FROM pgshift.runs ORDER BY started_at DESC LIMIT 1")
        run_id = cur.fetchone()[0]
        cur.execute(
            "SELECT step, state, extract(epoch FROM at)::float8 FROM pgshift.steps WHERE run_id = %s ORDER BY id",
            (run_id,),
        )
        return [(r[0], r[1], float(r[2])) for r in cur.fetchall()]


class HolderWatch:
    """The online stream holder's peak memory: its pid from the journal (online_fill started), VmHWM from /proc
    until it ends (it is detached: not a child of the controller, so not in its rusage)."""

    def __init__(self, world: pgworld.World) -> None:
        self.world = world
        self.pid: t.Optional[int] = None
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "HolderWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: t.Any) -> None:
        self._stop.set()
        self._thread.join()

    def _find_pid(self) -> t.Optional[int]:
        with contextlib.suppress(Exception):
            with contextlib.closing(self.world.clusters["prod"].connect("pgshift")) as conn, conn.cursor() as cur:
                cur.execute(
                    "SELECT detail->>'pid' FROM pgshift.steps WHERE step = 'online_fill' AND state = 'started' "
                    "AND at > now() - interval '1 hour' ORDER BY id DESC LIMIT 1"
                )
                row = cur.fetchone()
                return int(row[0]) if row and row[0] else None
        return None

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            if self.pid is None:
                self.pid = self._find_pid()
                continue
            try:
                with open("/proc/%d/status" % self.pid) as handle:
                    for line in handle:
                        if line.startswith("VmHWM:"):
                            self.peak_kb = max(self.peak_kb, int(line.split()[1]))
            except OSError:
                return  # the holder ended


def run_release(world: pgworld.World, mode: str, app_tier: bool, tmp: str) -> t.Dict[str, t.Any]:
    vars_file = os.path.join(tmp, "vars.json")
    _private_json(vars_file, {"pgshift_app_tier": app_tier, "pgshift_mode": mode})
    log_path = os.path.join(tmp, "playbook-%s.log" % mode)
    started = time.monotonic()
    with open(log_path, "w") as log, HolderWatch(world) as holder:
        proc = subprocess.Popen(  # noqa: S603 - argv list
            [os.path.join(VENV_BIN, "ansible-playbook"), "playbooks/prod_restore.yml", "-e", "@" + vars_file],
            cwd=ROOT,
            env=_env(world),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        with open(log_path) as handle:
            raise SystemExit("the %s release failed:\n%s" % (mode, handle.read()[-6000:]))
    with open(os.path.join(os.path.dirname(world.state), "artifacts", "last-summary.json")) as handle:
        summary = json.load(handle)
    steps = journal(world)
    first_block = next(at for step, state, at in steps if step == "block_access" and state == "started")
    swapped = next(at for step, state, at in steps if step == "swap" and state == "done")
    gaps = []
    previous: t.Optional[t.Tuple[str, str, float]] = None
    for entry in steps:
        if previous is not None and entry[2] >= first_block - 1e-6 and entry[2] <= swapped + 1e-6:
            gaps.append(("%s %s -> %s %s" % (previous[0], previous[1], entry[0], entry[1]), entry[2] - previous[2]))
        previous = entry
    # the per-step timings of rebuild_swap, from the run report
    reports = os.path.join(os.path.dirname(world.state), "reports")
    latest = max(
        (os.path.join(reports, d, "report.json") for d in os.listdir(reports) if d != "last-run.json"),
        key=os.path.getmtime,
    )
    with open(latest) as handle:
        report = json.load(handle)
    results = report.get("results", [])
    plays = {p["name"]: p.get("duration_s") for p in report.get("plays", [])}
    window_plays = ("Maintenance on", "Rebuild and swap", "Restart", "API checks", "Maintenance off")
    tasks = [
        (s["play"], s["name"], s.get("duration_s")) for s in report.get("steps", []) if s.get("play") in window_plays
    ]
    inner = [r["data"]["steps"] for r in results if r["action"].endswith("rebuild_swap") and "steps" in r["data"]]
    return {
        "where": ", ".join("%s %.3f" % (s["name"], s["seconds"]) for s in inner[0]) if inner else None,
        "window_seconds": float(summary["maintenance_seconds"]),
        "blocked_to_swap": swapped - first_block,
        "blocked_epoch": (first_block, swapped),
        "gaps": gaps,
        "run_seconds": wall,
        "controller_mb": usage.ru_maxrss / 1024.0,
        "holder_mb": holder.peak_kb / 1024.0 if holder.peak_kb else None,
        "previous_database": summary.get("previous_database") or None,
        "plays": plays,  # seconds per play, from the run report
        "window_tasks": tasks,  # (play, task, seconds) of the plays in the window
    }


# ------------------------------------------------------------------------------------------------ the naive peer
class Naive:
    """pg_dump of production's data, drop, create, dev schema, restore of the data: timed, children's peak kept."""

    def __init__(self, world: pgworld.World, tmp: str) -> None:
        self.world = world
        self.tmp = tmp
        self.peak_kb = 0
        self.steps: t.List[t.Tuple[str, float]] = []

    def _params(self, cluster: str, database: str) -> t.Any:
        from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams  # noqa: PLC0415

        return ConnParams.from_params(self.world.clusters[cluster].conn(database, user=self.world.admin_user))

    def _bin(self, name: str) -> str:
        path = os.path.join(self.world.clusters["prod"].bindir, name)
        return path if os.access(path, os.X_OK) else (shutil.which(name) or name)

    def _wait(self, proc: t.Any, what: str) -> None:
        _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        self.peak_kb = max(self.peak_kb, usage.ru_maxrss)
        if proc.returncode != 0:
            raise SystemExit("naive: %s failed (exit %d)" % (what, proc.returncode))

    def client(self, cluster: str, argv: t.List[str], what: str) -> None:
        from ansible_collections.pgshift.ops.plugins.module_utils._connection import client_environment  # noqa: PLC0415

        with client_environment(self._params(cluster, pgworld.DB_NAME)) as env:
            proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)  # noqa: S603 - argv list
            self._wait(proc, what)

    def sql(self, statement: str) -> None:
        with contextlib.closing(self.world.clusters["prod"].connect("postgres", user=self.world.admin_user)) as conn:
            with conn.cursor() as cur:
                cur.execute(statement)

    def timed(self, name: str, work: t.Callable[[], None]) -> None:
        began = time.monotonic()
        work()
        self.steps.append((name, time.monotonic() - began))

    def restore_data(self, dump: str) -> None:
        """pg_restore --data-only into a script, the customers COPY header renamed, into psql in one transaction."""
        from ansible_collections.pgshift.ops.plugins.module_utils._connection import client_environment  # noqa: PLC0415

        with client_environment(self._params("prod", pgworld.DB_NAME)) as env:
            restore = subprocess.Popen(  # noqa: S603 - argv list
                [self._bin("pg_restore"), "--data-only", "--disable-triggers", "-f", "-", dump],
                env=env,
                stdout=subprocess.PIPE,
            )
            psql = subprocess.Popen(  # noqa: S603 - argv list
                [self._bin("psql"), "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-d", pgworld.DB_NAME],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
            )
            assert restore.stdout is not None and psql.stdin is not None  # noqa: S101 - PIPE gives them
            for line in restore.stdout:
                renamed = line.replace(b" full_name,", b" display_name,")
                psql.stdin.write(renamed if line.startswith(b"COPY public.customers (") else line)
            psql.stdin.close()
            self._wait(restore, "pg_restore --data-only")
            self._wait(psql, "psql (the data)")

    def run(self) -> t.Dict[str, t.Any]:
        from psycopg2 import sql  # noqa: PLC0415

        db = pgworld.DB_NAME
        schema = os.path.join(self.tmp, "dev-schema.dump")
        ledger = os.path.join(self.tmp, "dev-ledger.dump")
        data = os.path.join(self.tmp, "prod-data.dump")
        started = time.monotonic()
        # before the window: dev's schema and migration ledger (production untouched)
        self.timed(
            "dev schema dump",
            lambda: self.client("dev", [self._bin("pg_dump"), "-Fc", "--schema-only", "-f", schema, "-d", db], "dump"),
        )
        self.timed(
            "dev ledger dump",
            lambda: self.client(
                "dev",
                [self._bin("pg_dump"), "-Fc", "--data-only", "-t", "public.pgmigrations", "-f", ledger, "-d", db],
                "ledger dump",
            ),
        )
        window_from = time.time()
        window_started = time.monotonic()
        self.timed(
            "pg_dump data",
            lambda: self.client(
                "prod",
                [self._bin("pg_dump"), "-Fc", "--data-only", "--exclude-table-data=public.pgmigrations"]
                + ["--exclude-table-data=public.pgshift_migration_meta", "-f", data, "-d", db],
                "pg_dump",
            ),
        )
        ident = sql.Identifier(db)
        conn = self.world.clusters["prod"].connect("postgres", user=self.world.admin_user)
        try:
            with conn.cursor() as cur:

                def drop() -> None:
                    for attempt in range(20):  # the writer reconnects at once: FORCE may meet a new session
                        try:
                            cur.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(ident))
                            return
                        except Exception:  # noqa: BLE001 - retried, then raised
                            if attempt == 19:
                                raise
                            time.sleep(0.05)

                self.timed("drop", drop)
                self.timed(
                    "create",
                    lambda: cur.execute(
                        sql.SQL(
                            "CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8' OWNER {} CONNECTION LIMIT 0"
                        ).format(ident, sql.Identifier(self.world.admin_user))
                    ),
                )
                self.timed(
                    "dev schema",
                    lambda: self.client(
                        "prod", [self._bin("pg_restore"), "--exit-on-error", "-d", db, schema], "pg_restore schema"
                    ),
                )
                self.timed(
                    "dev ledger",
                    lambda: self.client(
                        "prod", [self._bin("pg_restore"), "--exit-on-error", "-d", db, ledger], "pg_restore ledger"
                    ),
                )
                self.timed("pg_restore data", lambda: self.restore_data(data))
                self.timed(
                    "connections allowed",
                    lambda: cur.execute(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT -1").format(ident)),
                )
        finally:
            conn.close()
        window = time.monotonic() - window_started
        return {
            "where": ", ".join("%s %.3f" % step for step in self.steps),
            "window_seconds": window,
            "blocked_to_swap": window - self.steps[2][1],  # drop to connections allowed
            "blocked_epoch": (window_from + self.steps[2][1], window_from + window),
            "gaps": [],
            "run_seconds": time.monotonic() - started,
            "controller_mb": self.peak_kb / 1024.0,
            "holder_mb": None,
        }


# ------------------------------------------------------------------------------------------------ one run, the table
def one_run(
    world: pgworld.World, scale: float, mode: str, app_tier: bool, tmp: str, pause: float, lead: float
) -> t.Dict[str, t.Any]:
    world.reset(scale=scale)
    with contextlib.closing(world.clusters["prod"].connect(pgworld.DB_NAME)) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_database_size(current_database())")
        size_mb = cur.fetchone()[0] / 1048576.0
    writer = Writer(world, tmp, pause)
    try:
        if not writer.wait_commits(0.0, 1, 30):
            raise SystemExit("the writer does not commit: see %s" % os.path.join(writer.folder, "writer.log"))
        time.sleep(lead)  # production serves writes for a while before the release starts
        if mode == "naive":
            result = Naive(world, tmp).run()
        else:
            result = run_release(world, mode, app_tier, tmp)
        ended = time.time()
        recovered = writer.wait_commits(ended, 20, 30)
    finally:
        record = writer.stop()
    result["production_mb"] = size_mb
    result["writes"] = verify_writes(world, record, result.get("previous_database"))
    b0, b1 = result["blocked_epoch"]
    # production serving while the release runs: the writer's longest stall that is not the blocked window
    outside = [b - a for a, b in record.get("stalls", []) if b < b0 or a > b1]
    result["writes"]["longest_stall_outside"] = max(outside, default=0.0)
    result["writes"]["recovered_after_run"] = recovered
    return result


def median(values: t.Sequence[t.Optional[float]]) -> t.Optional[float]:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


ROWS: t.Tuple[t.Tuple[str, str, t.Callable[[t.Dict[str, t.Any]], t.Optional[float]], str], ...] = (
    ("production database before the run", "", lambda r: r.get("production_mb"), "%.1f MB"),
    ("window (journal; naive: dump to reopen)", "s", lambda r: r["window_seconds"], "%.2f"),
    ("access blocked to swap (journal)", "s", lambda r: r["blocked_to_swap"], "%.2f"),
    ("writer: longest refused/blocked", "s", lambda r: r["writes"]["longest_refused"]["seconds"], "%.2f"),
    (
        "writer: longest stall outside access blocked..swap",
        "s",
        lambda r: r["writes"].get("longest_stall_outside"),
        "%.2f",
    ),
    ("writer: commits", "", lambda r: r["writes"]["commits"], "%d"),
    ("writer: committed writes lost", "", lambda r: r["writes"]["lost"], "%d"),
    ("writer: commits of unknown outcome", "", lambda r: r["writes"]["uncertain"], "%d"),
    ("total run", "s", lambda r: r["run_seconds"], "%.1f"),
    ("controller peak RSS (largest process)", "MB", lambda r: r["controller_mb"], "%.0f"),
    ("stream holder peak RSS", "MB", lambda r: r["holder_mb"], "%.0f"),
)


def table(scale: float, app_tier: bool, results: t.Dict[str, t.List[t.Dict[str, t.Any]]]) -> str:
    modes = [m for m in MODES if m in results]
    head = ["| scale %s, %s | " % (scale, "with the app tier" if app_tier else "database steps only")]
    head[0] += " | ".join(modes)
    ratios = [(a, "offline") for a in ("online", "naive") if a in results and "offline" in results]
    head[0] += "".join(" | %s/offline" % a for a, _b in ratios) + " |"
    lines = head + ["| --- " * (1 + len(modes) + len(ratios)) + "|"]
    for label, unit, get, fmt in ROWS:
        values = {m: median([get(r) for r in results[m]]) for m in modes}
        cells = [("-" if values[m] is None else fmt % values[m]) for m in modes]
        for a, b in ratios:
            va, vb = values[a], values[b]
            cells.append("%.2f" % (va / vb) if va is not None and vb and unit else "")
        lines.append("| %s%s | %s |" % (label, " (%s)" % unit if unit else "", " | ".join(cells)))
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--writer":
        writer_main(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--scales", default="1,10", help="comma-separated world scales (sample_app/datagen.py)")
    parser.add_argument("--with-50", action="store_true", help="add scale 50")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated: offline, online, naive")
    parser.add_argument("--runs", type=int, default=1, help="runs per scale and mode (the table shows medians)")
    parser.add_argument("--no-app-tier", action="store_true")
    parser.add_argument("--pause", type=float, default=0.01, help="the writer's pause between transactions (s)")
    parser.add_argument("--lead", type=float, default=2.0, help="seconds of writes before the release starts")
    parser.add_argument("--details", action="store_true", help="journal gaps and inner steps of every run")
    parser.add_argument("--json", help="write every run's figures to this file")
    args = parser.parse_args()
    scales = [float(s) for s in args.scales.split(",") if s.strip()] + ([50.0] if args.with_50 else [])
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise SystemExit("unknown mode(s): %s" % ", ".join(unknown))
    app_tier = not args.no_app_tier
    base = tempfile.mkdtemp(prefix="pgshift-bench-window-")
    os.chmod(base, 0o755)  # noqa: S103 - the server runs as another OS user and must reach its cluster folder
    world = pgworld.World(os.path.join(base, "world"))
    every: t.Dict[str, t.Dict[str, t.List[t.Dict[str, t.Any]]]] = {}
    tables = []
    print("%s, load average %s" % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.getloadavg()), flush=True)
    try:
        for scale in scales:
            results: t.Dict[str, t.List[t.Dict[str, t.Any]]] = {}
            for n in range(args.runs):
                for mode in modes:
                    r = one_run(world, scale, mode, app_tier, base, args.pause, args.lead)
                    results.setdefault(mode, []).append(r)
                    w = r["writes"]
                    print(
                        "scale %s %s run %d: window %.2f s, blocked to swap %.2f s, run %.1f s, peak %.0f MB%s; "
                        "writer: %d commits, longest refused %.2f s (elsewhere %.2f s), lost %d (inserts %d, "
                        "updates %d, lines %d, deletes undone %d), unknown outcome %d (%d landed, %d in the "
                        "previous database), writes after: %s"
                        % (
                            scale,
                            mode,
                            n + 1,
                            r["window_seconds"],
                            r["blocked_to_swap"],
                            r["run_seconds"],
                            r["controller_mb"],
                            ", holder %.0f MB" % r["holder_mb"] if r["holder_mb"] else "",
                            w["commits"],
                            w["longest_refused"]["seconds"],
                            w["longest_stall_outside"],
                            w["lost"],
                            w["lost_inserts"],
                            w["lost_updates"],
                            w["lost_lines"],
                            w["deletes_undone"],
                            w["uncertain"],
                            w["uncertain_landed"],
                            w["uncertain_in_previous"],
                            w["recovered_after_run"],
                        ),
                        flush=True,
                    )
                    lg = w["longest_refused"]
                    if lg["from"] is not None:
                        b0, b1 = r["blocked_epoch"]
                        print(
                            "    longest refusal %.2f s from %+.2f s to %+.2f s around access blocked (0) .. swap "
                            "(%+.2f s); writer errors: %s"
                            % (lg["seconds"], lg["from"] - b0, lg["to"] - b0, b1 - b0, json.dumps(w["errors"])),
                            flush=True,
                        )
                    if args.details:
                        for label, seconds in r["gaps"]:
                            print("    %-58s %7.3f s" % (label, seconds))
                        if r["where"]:
                            print("    steps: " + r["where"])
                        if r.get("plays"):
                            print("    plays: " + ", ".join("%s %s" % kv for kv in r["plays"].items()))
            every["%s" % scale] = results
            tables.append(table(scale, app_tier, results))
            print("\n" + tables[-1] + "\n", flush=True)
    finally:
        world.destroy()
        shutil.rmtree(base, ignore_errors=True)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(every, handle, indent=1, default=str)
    print(
        "load average at the end %s; own children's rusage maxrss %.0f MB"
        % (os.getloadavg(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0)
    )
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
