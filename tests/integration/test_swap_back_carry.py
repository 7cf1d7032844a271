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
import typing as t

import pgworld
import psycopg2
import pytest
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


def test_the_capture_costs_and_survives_an_application_role(pg: pgworld.Cluster, pair: Pair) -> None:
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
