"""Swap-back carries every write made after the swap back into the previous production (real PostgreSQL).

Two layers:
- the carry itself (plugins/module_utils/_carry.py) on two databases of the session cluster: an old schema and a new
  one with a renamed column, a widened type, a new column with a default, a new table, an identity key and a
  partitioned table; writes after the capture is installed; the previous database compared with the new one from the
  catalogs afterwards;
- prod_restore.yml and rollback.yml on the throwaway world with an application writer committing numbered inserts and
  updates while a post-swap API check fails (automatic swap-back), after a successful release (`make rollback` by
  hand), and the refusal when a write cannot go back.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import threading
import time
import typing as t

import pgworld
import psycopg2
import pytest
from fault_support import fault_log, record
from psycopg2 import sql

from ansible_collections.pgshift.ops.plugins.module_utils import _carry as carry
from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams

OLD_SCHEMA = """
CREATE TABLE customers (id serial PRIMARY KEY, full_name text NOT NULL, score integer CHECK (score < 1000));
CREATE TABLE products (id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL);
CREATE TABLE events (id bigserial, at date NOT NULL, kind text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE FUNCTION mark() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.full_name := NEW.full_name || ' (the old trigger fired again)'; RETURN NEW; END $$;
"""

TRIGGER = "CREATE TRIGGER mark BEFORE INSERT OR UPDATE ON customers FOR EACH ROW EXECUTE FUNCTION mark();"

NEW_SCHEMA = """
CREATE TABLE customers (id serial PRIMARY KEY, display_name text NOT NULL, score bigint,
                        loyalty integer NOT NULL DEFAULT 0);
CREATE TABLE products (id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL);
CREATE TABLE events (id bigserial, at date NOT NULL, kind text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE reviews (id serial PRIMARY KEY, body text);
"""

ROWS = """
INSERT INTO customers (id, {name}, score) SELECT g, 'Customer ' || g, g FROM generate_series(1, 50) g;
SELECT setval('customers_id_seq', 50);
INSERT INTO products (id, name) OVERRIDING SYSTEM VALUE SELECT g, 'Product ' || g FROM generate_series(1, 20) g;
SELECT setval(pg_get_serial_sequence('products', 'id'), 20);
INSERT INTO events (id, at, kind) SELECT g, DATE '2025-06-01' + g * 3, 'k' || g FROM generate_series(1, 100) g;
SELECT setval('events_id_seq', 100);
"""

__all__ = ["fault_log"]

MAPPING = "tables:\n  customers:\n    columns:\n      display_name: {from: full_name}\n"


def execute(cluster: pgworld.Cluster, database: str, text: t.Any, params: t.Sequence[t.Any] = ()) -> t.List[t.Any]:
    with contextlib.closing(cluster.connect(database)) as conn, conn.cursor() as cur:
        cur.execute(text, params or None)
        return cur.fetchall() if cur.description else []


def rows(cluster: pgworld.Cluster, database: str, query: str) -> t.List[t.Tuple[t.Any, ...]]:
    return [tuple(r) for r in execute(cluster, database, query)]


class Pair(t.NamedTuple):
    old: str
    new: str
    params: ConnParams
    run_id: str


@pytest.fixture
def pair(pg: pgworld.Cluster, new_db: t.Callable[..., str], tmp_path: t.Any) -> Pair:
    old, new = new_db(), new_db()
    execute(pg, old, OLD_SCHEMA + ROWS.format(name="full_name") + TRIGGER)
    execute(pg, new, NEW_SCHEMA + ROWS.format(name="display_name"))
    mapping = tmp_path / "mapping.yml"
    mapping.write_text(MAPPING)
    params = ConnParams.from_params(pg.conn())
    run_id = "test-" + new
    carry.install_capture(params.with_database(old), params.with_database(new), run_id, str(mapping))
    return Pair(old, new, params, run_id)


CUSTOMERS_OLD = "SELECT id, full_name, score FROM customers ORDER BY id"
CUSTOMERS_NEW = "SELECT id, display_name, score::integer FROM customers ORDER BY id"
PRODUCTS = "SELECT id, name FROM products ORDER BY id"
EVENTS = "SELECT id, at, kind FROM events ORDER BY id, at"


def state(pg: pgworld.Cluster, database: str) -> t.List[t.Any]:
    return [rows(pg, database, q) for q in (CUSTOMERS_OLD, PRODUCTS, EVENTS)]


def test_every_kind_of_write_goes_back_and_no_id_is_reused(pg: pgworld.Cluster, pair: Pair) -> None:
    execute(
        pg,
        pair.new,
        """
        INSERT INTO customers (display_name, score) VALUES ('after swap 1', 7), ('after swap 2', NULL);
        UPDATE customers SET display_name = 'renamed 3', score = 333 WHERE id = 3;
        DELETE FROM customers WHERE id = 4;
        INSERT INTO products (name) VALUES ('identity after swap');
        UPDATE products SET name = 'p5 changed' WHERE id = 5;
        INSERT INTO events (at, kind) VALUES ('2026-03-01', 'new event');
        UPDATE events SET at = '2026-02-02' WHERE id = 1;   -- moves to another partition
        DELETE FROM events WHERE id = 2;
        INSERT INTO customers (display_name, score) VALUES ('inserted then deleted', 1);
        DELETE FROM customers WHERE display_name = 'inserted then deleted';
        UPDATE customers SET loyalty = 0 WHERE id = 9;      -- the new column keeps its default: fine
        """,
    )
    before_old = state(pg, pair.old)
    result = carry.carry_back(pair.params, pair.new, pair.old, pair.run_id)
    assert result["ok"], result
    # the previous database now holds exactly what the new one holds (enumerated on both sides, mapped by hand)
    assert rows(pg, pair.old, CUSTOMERS_OLD) == rows(pg, pair.new, CUSTOMERS_NEW)
    assert rows(pg, pair.old, PRODUCTS) == rows(pg, pair.new, PRODUCTS)
    assert rows(pg, pair.old, EVENTS) == rows(pg, pair.new, EVENTS)
    assert state(pg, pair.old) != before_old
    customers = result["tables"]["customers"]
    assert (customers["inserted"], customers["updated"], customers["deleted"]) == (3, 2, 2)
    assert customers["proof"]["equal"] and customers["proof"]["rows_compared"] == 6
    assert result["tables"]["events"]["proof"]["equal"]
    # every sequence of the previous database is past what the new one issued
    for table, seq in (("customers", "customers_id_seq"), ("events", "events_id_seq")):
        top = execute(pg, pair.new, sql.SQL("SELECT max(id) FROM {}").format(sql.Identifier(table)))[0][0]
        assert execute(pg, pair.old, "SELECT nextval(%s)", (seq,))[0][0] > top
    assert execute(pg, pair.old, "INSERT INTO products (name) VALUES ('x') RETURNING id")[0][0] == 22
    # the previous database's own trigger did not fire on the carried rows, and is on again
    assert execute(pg, pair.old, "SELECT tgenabled::text FROM pg_trigger WHERE tgname = 'mark'") == [("O",)]
    # idempotent: a second carry (say the renames failed after the commit) adds nothing
    again = carry.carry_back(pair.params, pair.new, pair.old, pair.run_id)
    assert again["ok"]
    assert rows(pg, pair.old, CUSTOMERS_OLD) == rows(pg, pair.new, CUSTOMERS_NEW)


@pytest.mark.parametrize(
    "write, table, why",
    [
        ("UPDATE customers SET loyalty = 5 WHERE id IN (1, 2)", "customers", "column loyalty"),
        (
            "INSERT INTO reviews (body) VALUES ('great'), ('bad'), ('meh')",
            "reviews",
            "a table the previous schema lacks",
        ),
        ("UPDATE customers SET score = 5000 WHERE id = 1", "customers", "refused by the previous schema"),
        ("UPDATE customers SET score = 3000000000 WHERE id = 1", "customers", "refused by the previous schema"),
        ("SELECT lo_from_bytea(0, 'written after the swap')", "large objects", "cannot be carried back"),
    ],
)
def test_a_write_that_cannot_go_back_stops_the_carry(
    pg: pgworld.Cluster, pair: Pair, write: str, table: str, why: str
) -> None:
    execute(pg, pair.new, "INSERT INTO customers (display_name) VALUES ('fine')")
    execute(pg, pair.new, write)
    before = state(pg, pair.old)
    result = carry.carry_back(pair.params, pair.new, pair.old, pair.run_id)
    assert not result["ok"]
    assert state(pg, pair.old) == before, "nothing may be committed in the previous database"
    assert why in result["message"] and table + ":" in result["message"], result["message"]
    assert not execute(pg, pair.old, "SELECT to_regclass('pgshift_capture.carried_back')")[0][0]
    # forced: what can go back is carried, the rest stays in the new database
    forced = carry.carry_back(pair.params, pair.new, pair.old, pair.run_id, force=True)
    assert forced["refused"]
    assert ("fine",) in rows(pg, pair.old, "SELECT full_name FROM customers WHERE full_name = 'fine'")


def test_an_application_role_writes_through_the_capture(pg: pgworld.Cluster, pair: Pair) -> None:
    """An application role without any privilege on pgshift_capture writes through the trigger."""
    role = "app_" + pair.new
    password = "pw-" + pair.new
    execute(pg, pair.new, sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(role)), (password,))
    execute(
        pg,
        pair.new,
        sql.SQL(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {0};"
            "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {0}"
        ).format(sql.Identifier(role)),
    )
    try:
        conn = psycopg2.connect(
            host="127.0.0.1", port=pg.port, user=role, password=password, dbname=pair.new, sslmode="disable"
        )
        with contextlib.closing(conn), conn.cursor() as cur:
            cur.execute("INSERT INTO customers (display_name) VALUES ('by the app') RETURNING id")
            conn.commit()
            with pytest.raises(psycopg2.Error):
                cur.execute("SELECT count(*) FROM pgshift_capture.changes")
        result = carry.carry_back(pair.params, pair.new, pair.old, pair.run_id)
        assert result["ok"] and result["tables"]["customers"]["inserted"] == 1
        assert rows(pg, pair.old, "SELECT count(*) FROM customers WHERE full_name = 'by the app'") == [(1,)]
    finally:
        execute(pg, pair.new, sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        execute(pg, pair.new, sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


# ------------------------------------------------------------------------------------------------ on the world
APP_ROLE = "shop_app"
AFTER_SWAP_WRITES = 40  # committed on the new production before the swap-back may begin
MAX_WRITES = 20000
PACE = 0.02  # seconds between two commits: at most 50 a second
MAX_SECONDS = 300


class Writer(threading.Thread):
    """An application: numbered inserts and updates of orders as the shop's role, each commit recorded once the
    server confirmed it; reconnects when its session is terminated or refused; bounded in count and time."""

    def __init__(self, world: pgworld.World) -> None:
        super().__init__(daemon=True)
        self.world = world
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.notes: t.Dict[int, str] = {}  # order id -> note it must have (inserts and updates, in commit order)
        self.on_new = 0  # commits that went to a database with the new schema
        self.commits = 0
        self.failures = 0
        self.error: t.Optional[str] = None

    def _connect(self) -> t.Tuple[t.Any, bool]:
        conn = psycopg2.connect(
            host="127.0.0.1",
            port=self.world.clusters["prod"].port,
            user=APP_ROLE,
            password=self.world.meta["app_password"],
            dbname="shop",
            sslmode="disable",
            connect_timeout=5,
        )
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) > 0 FROM information_schema.columns WHERE table_name = 'customers' "
                "AND column_name = 'display_name'"
            )
            new_schema = bool(t.cast(t.Tuple[t.Any, ...], cur.fetchone())[0])
        conn.commit()
        return conn, new_schema

    def run(self) -> None:
        conn, new_schema, n = None, False, 0
        deadline = time.monotonic() + MAX_SECONDS
        while not self.stop.is_set() and n < MAX_WRITES and time.monotonic() < deadline:
            try:
                if conn is None:
                    conn, new_schema = self._connect()
                n += 1
                with conn.cursor() as cur:
                    note = "w-%d" % n
                    cur.execute(
                        "INSERT INTO orders (customer_id, status, note) VALUES (1 + %s %% 50, 'pending', %s) "
                        "RETURNING id",
                        (n, note),
                    )
                    order_id = int(cur.fetchone()[0])
                    updated: t.Optional[t.Tuple[int, str]] = None
                    with self.lock:
                        earlier = sorted(self.notes)[-5:]
                    if n % 3 == 0 and earlier:
                        target = earlier[n % len(earlier)]
                        cur.execute("UPDATE orders SET note = %s, status = 'paid' WHERE id = %s", ("u-%d" % n, target))
                        if cur.rowcount == 1:
                            updated = (target, "u-%d" % n)
                conn.commit()
                with self.lock:
                    self.notes[order_id] = note
                    if updated:
                        self.notes[updated[0]] = updated[1]
                    self.commits += 1
                    if new_schema:
                        self.on_new += 1
                time.sleep(PACE)
            except psycopg2.Error:
                # terminated, refused while blocked, or an in-doubt commit: not recorded, retried on a new session
                self.failures += 1
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                conn = None
                time.sleep(0.05)
            except Exception as exc:  # noqa: BLE001 - reported by the test
                self.error = repr(exc)
                break
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def wait_on_new(self, count: int, timeout: float = 120) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.is_alive():
            if self.on_new >= count:
                return True
            time.sleep(0.05)
        return self.on_new >= count

    def wait_commits(self, count: int, timeout: float = 120) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.is_alive() and self.commits < count:
            time.sleep(0.05)
        return self.commits >= count

    def finish(self) -> t.Dict[int, str]:
        self.stop.set()
        self.join(60)
        assert not self.is_alive() and self.error is None, self.error
        return dict(self.notes)


class FailingCheck:
    """An API check endpoint that answers only once the writer has committed writes on the new production, and then
    says the release is wrong: the post-swap failure, at a deterministic point."""

    def __init__(self, writer: Writer) -> None:
        writer_ref = writer

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                ready = writer_ref.wait_on_new(AFTER_SWAP_WRITES)
                body = json.dumps({"release_ok": False, "writes_seen": ready}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: t.Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", pgworld.free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def checks(self) -> t.List[t.Dict[str, t.Any]]:
        url = "http://127.0.0.1:%d/release" % self.server.server_address[1]
        return [
            {
                "name": "the release works",
                "url": url,
                "json_path": "release_ok",
                "expect": True,
                "timeout": 150,
                "retries": 0,
            }
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def prod_databases(world: pgworld.World) -> t.Dict[str, t.Tuple[int, bool]]:
    return {
        r[0]: (r[1], r[2])
        for r in execute(
            world.clusters["prod"], "postgres", "SELECT datname, datconnlimit, datallowconn FROM pg_database"
        )
    }


def shop_columns(world: pgworld.World, database: str = "shop") -> t.List[str]:
    return [
        r[0]
        for r in execute(
            world.clusters["prod"],
            database,
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'customers' ORDER BY 1",
        )
    ]


def assert_every_write_is_in_production(world: pgworld.World, notes: t.Dict[int, str]) -> None:
    prod = world.clusters["prod"]
    found = dict(execute(prod, "shop", "SELECT id, note FROM orders WHERE id = ANY(%s)", (sorted(notes),)))
    missing = sorted(set(notes) - set(found))
    assert not missing, "%d committed orders are not in production, e.g. %s" % (len(missing), missing[:5])
    wrong = {k: (found[k], v) for k, v in notes.items() if found[k] != v}
    assert not wrong, "committed values lost: %s" % dict(list(wrong.items())[:5])
    # no id is reused: a new order gets an id above every id the applications ever got, on either database
    new_id = execute(
        prod, "shop", "INSERT INTO orders (customer_id, note) VALUES (1, 'after the swap-back') RETURNING id"
    )[0][0]
    assert new_id > max(notes), (new_id, max(notes))


def carry_steps(world: pgworld.World) -> t.List[t.Any]:
    return [
        r[0]
        for r in execute(
            world.clusters["prod"], "pgshift", "SELECT detail FROM pgshift.steps WHERE step = 'carry_back' ORDER BY id"
        )
    ]


@pytest.fixture
def fresh(world: pgworld.World) -> pgworld.World:
    world.reset(scale=0.3)
    return world


FAST = {"pgshift_backup_verify_level": "read", "pgshift_swap_timeout": 10}


@pytest.mark.slow
def test_failed_api_check_after_the_swap_carries_every_write_back(
    fresh: pgworld.World, run_playbook: t.Callable[..., t.Any]
) -> None:
    world = fresh
    writer = Writer(world)
    check = FailingCheck(writer)
    writer.start()
    try:
        run = run_playbook(
            "playbooks/prod_restore.yml",
            extra_vars=dict(FAST, pgshift_api_checks=check.checks),
            env={"PGSHIFT_WORLD": world.state},
        )
        notes = writer.finish()
    finally:
        writer.stop.set()
        check.close()
    assert run.rc != 0
    assert "production was swapped back" in run.output and "carried back the rows written after the swap" in run.output
    assert writer.on_new >= AFTER_SWAP_WRITES, "the writes after the swap were not made: the fault was not injected"
    assert "full_name" in shop_columns(world), "production is the previous database again"
    assert_every_write_is_in_production(world, notes)
    dbs = prod_databases(world)
    assert dbs["shop"] == (-1, True)
    kept = [d for d in dbs if d.startswith("shop__failed_")]
    assert len(kept) == 1 and dbs[kept[0]][0] == 0, "the new database is kept, closed to applications: %s" % dbs
    assert "display_name" in shop_columns(world, kept[0])
    (detail,) = carry_steps(world)
    orders = detail["tables"]["orders"]
    assert orders["inserted"] >= AFTER_SWAP_WRITES and orders["proof"]["equal"], orders
    assert not os.path.exists(os.path.join(world.state, "web", "maintenance.flag"))
    record(
        "post-swap writes, API check fails",
        "after swap",
        "intact",
        "%d writes after the swap carried back, proven" % writer.on_new,
    )


@pytest.mark.slow
def test_make_rollback_after_a_successful_release_carries_every_write_back(
    fresh: pgworld.World, run_playbook: t.Callable[..., t.Any]
) -> None:
    world = fresh
    run = run_playbook("playbooks/prod_restore.yml", extra_vars=FAST, env={"PGSHIFT_WORLD": world.state})
    assert run.rc == 0, run.output[-3000:]
    writer = Writer(world)
    writer.start()
    try:
        assert writer.wait_on_new(AFTER_SWAP_WRITES), "the writer did not write to the new production"
        back = run_playbook("playbooks/rollback.yml", env={"PGSHIFT_WORLD": world.state})
        # the writer goes on, on the previous production once it serves again
        assert writer.wait_commits(writer.commits + 10), "the writer could not write after the swap-back"
        notes = writer.finish()
    finally:
        writer.stop.set()
    assert back.rc == 0, back.output[-3000:]
    assert "carried back the rows written after the swap" in back.output
    assert "full_name" in shop_columns(world)
    assert_every_write_is_in_production(world, notes)
    (detail,) = carry_steps(world)
    assert detail["tables"]["orders"]["inserted"] >= AFTER_SWAP_WRITES
    assert detail["tables"]["orders"]["proof"]["equal"]
    record("post-release writes, make rollback", "after release", "intact", "%d writes carried back" % writer.on_new)
    runs = execute(world.clusters["prod"], "pgshift", "SELECT status FROM pgshift.runs ORDER BY started_at")
    assert runs[-1][0] == "rolled_back"
    # idempotent: nothing left to undo
    again = run_playbook("playbooks/rollback.yml", env={"PGSHIFT_WORLD": world.state})
    assert again.rc == 0 and "no unfinished run to roll back" in again.output, again.output[-2000:]


@pytest.mark.slow
def test_a_write_that_cannot_go_back_refuses_the_swap_back(
    fresh: pgworld.World, run_playbook: t.Callable[..., t.Any]
) -> None:
    world = fresh
    prod = world.clusters["prod"]
    run = run_playbook("playbooks/prod_restore.yml", extra_vars=FAST, env={"PGSHIFT_WORLD": world.state})
    assert run.rc == 0, run.output[-3000:]
    conn = psycopg2.connect(
        host="127.0.0.1",
        port=prod.port,
        user=APP_ROLE,
        password=world.meta["app_password"],
        dbname="shop",
        sslmode="disable",
    )
    with contextlib.closing(conn), conn.cursor() as cur:
        cur.execute("UPDATE customers SET loyalty_points = 42 WHERE id IN (3, 4)")
        cur.execute("INSERT INTO orders (customer_id, note) VALUES (3, 'fine to carry')")
        conn.commit()
    previous = [d for d in prod_databases(world) if d.startswith("shop__prev_")]
    before_previous = execute(prod, previous[0], "SELECT count(*), sum(hashtext(o::text)) FROM orders o")
    back = run_playbook("playbooks/rollback.yml", env={"PGSHIFT_WORLD": world.state})
    assert back.rc != 0
    assert "swap-back refused" in back.output
    assert "customers: 2 of 2 rows written after the swap cannot go back (column loyalty_points" in back.output, (
        back.output[-3000:]
    )
    assert "orders 1" in back.output, "the report names every table written after the swap"
    # the new database stays production, serving again; the previous one is untouched
    dbs = prod_databases(world)
    assert dbs["shop"] == (-1, True)
    assert "display_name" in shop_columns(world)
    assert execute(prod, "shop", "SELECT count(*) FROM customers WHERE loyalty_points = 42") == [(2,)]
    assert execute(prod, previous[0], "SELECT count(*), sum(hashtext(o::text)) FROM orders o") == before_previous
    assert not os.path.exists(os.path.join(world.state, "web", "maintenance.flag"))
    # forced: swapped back, and the new database kept under a name retention never removes
    forced = run_playbook(
        "playbooks/rollback.yml", extra_vars={"pgshift_swap_back_force": True}, env={"PGSHIFT_WORLD": world.state}
    )
    assert forced.rc == 0, forced.output[-3000:]
    dbs = prod_databases(world)
    kept = [d for d in dbs if d.startswith("shop__kept_")]
    assert len(kept) == 1 and "full_name" in shop_columns(world)
    assert execute(prod, kept[0], "SELECT count(*) FROM customers WHERE loyalty_points = 42") == [(2,)]
    assert execute(prod, "shop", "SELECT count(*) FROM orders WHERE note = 'fine to carry'") == [(1,)]
    record("post-swap write the old schema lacks", "swap-back", "released", "refused, new database kept serving")


@pytest.mark.slow
def test_a_release_closed_as_final_is_not_swapped_back(
    fresh: pgworld.World, run_playbook: t.Callable[..., t.Any]
) -> None:
    world = fresh
    prod = world.clusters["prod"]
    run = run_playbook("playbooks/prod_restore.yml", extra_vars=FAST, env={"PGSHIFT_WORLD": world.state})
    assert run.rc == 0, run.output[-3000:]
    assert execute(prod, "shop", "SELECT count(*) FROM pg_trigger WHERE tgname = 'pgshift_capture'")[0][0] > 0
    final = run_playbook("playbooks/release_final.yml", env={"PGSHIFT_WORLD": world.state})
    assert final.rc == 0 and "change capture removed" in final.output, final.output[-3000:]
    assert execute(prod, "shop", "SELECT to_regnamespace('pgshift_capture')") == [(None,)]
    assert execute(prod, "shop", "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'pgshift%'") == [(0,)]
    back = run_playbook("playbooks/rollback.yml", env={"PGSHIFT_WORLD": world.state})
    assert back.rc == 0 and "is final" in back.output, back.output[-3000:]
    assert "display_name" in shop_columns(world), "a final release stays"


def test_the_capture_is_invisible_to_schema_snapshots_and_drift(
    pg: pgworld.Cluster, new_db: t.Callable[..., str]
) -> None:
    """Until a release is final, production holds pgshift's change capture: drift checks must not report it."""
    from ansible_collections.pgshift.ops.plugins.module_utils import _schema

    old, new = new_db(), new_db()
    execute(pg, old, OLD_SCHEMA + ROWS.format(name="full_name"))
    execute(pg, new, NEW_SCHEMA + ROWS.format(name="display_name"))

    def snapshot() -> t.Any:
        with contextlib.closing(pg.connect(new)) as conn:
            return _schema.take_snapshot(conn)

    before = snapshot()
    params = ConnParams.from_params(pg.conn())
    carry.install_capture(params.with_database(old), params.with_database(new), "test-drift", None)
    assert execute(pg, new, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'pgshift_capture%'")[0][0] > 0
    assert _schema.diff_snapshots(before, snapshot()) == []
