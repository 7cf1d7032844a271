"""The DDL proposal of schema_diff, checked for real: applied to the source, it gives the target's schema."""

from __future__ import annotations

import contextlib
import typing as t

import pgworld

from ansible_collections.pgshift.ops.plugins.module_utils import _connection, _schema, _schema_ddl

RENAMES = {"public.customers.full_name": "public.customers.display_name"}

MORE_CHANGES = """
DROP VIEW customer_directory;
ALTER TABLE customers ALTER COLUMN email TYPE varchar(320);
ALTER TABLE customers ALTER COLUMN profile DROP DEFAULT;
ALTER TABLE orders ALTER COLUMN note SET NOT NULL;
ALTER TABLE orders ALTER COLUMN note SET DEFAULT '';
ALTER TABLE products DROP CONSTRAINT products_price_cents_check,
  ADD CONSTRAINT products_price_cents_check CHECK (price_cents > 0);
CREATE SCHEMA "Report ü";
CREATE SEQUENCE "Report ü"."order no" START 1000;
CREATE TABLE "Report ü"."select" (id integer PRIMARY KEY, "a.b" text DEFAULT 'it''s');
COMMENT ON TABLE "Report ü"."select" IS 'it''s a table';
COMMENT ON COLUMN customers.email IS 'where we write';
ALTER TABLE customers DISABLE TRIGGER customers_touch_updated_at;
CREATE OR REPLACE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := clock_timestamp();
  RETURN NEW;
END;
$$;
CREATE INDEX products_name_idx ON products (lower(name));
CREATE VIEW customer_directory AS SELECT id, display_name, email, loyalty_points FROM customers;
"""


def _snapshot(cluster: pgworld.Cluster, database: str) -> t.Dict[str, t.Any]:
    conn = _connection.connect(_connection.ConnParams.from_params(cluster.conn(database)))
    try:
        return _schema.take_snapshot(conn)
    finally:
        conn.close()


def _apply(cluster: pgworld.Cluster, database: str, statements: t.Sequence[str]) -> None:
    with contextlib.closing(cluster.connect(database)) as conn, conn.cursor() as cur:
        for statement in statements:
            if not statement.startswith("--"):
                cur.execute(statement)


def test_proposal_takes_prod_to_dev(pg: pgworld.Cluster, new_db: t.Callable[..., str]) -> None:
    prod, dev = new_db(), new_db()
    pgworld.apply_migrations(pg, prod, 2)
    pgworld.apply_migrations(pg, dev)
    with contextlib.closing(pg.connect(dev)) as conn, conn.cursor() as cur:
        cur.execute(MORE_CHANGES)
    before, target = _snapshot(pg, prod), _snapshot(pg, dev)
    differences = _schema.diff_snapshots(before, target, renames=RENAMES)
    statements = _schema_ddl.propose_ddl(differences)
    assert not [s for s in statements if s.startswith("-- not proposed")], statements
    assert "ALTER TABLE public.customers RENAME COLUMN full_name TO display_name;" in statements
    _apply(pg, prod, statements)
    assert _schema.diff_snapshots(_snapshot(pg, prod), target) == []


def test_proposal_goes_back_and_lists_what_it_does_not_propose(
    pg: pgworld.Cluster, new_db: t.Callable[..., str]
) -> None:
    prod, dev = new_db(), new_db()
    pgworld.apply_migrations(pg, prod, 2)
    pgworld.apply_migrations(pg, dev)
    with contextlib.closing(pg.connect(dev)) as conn, conn.cursor() as cur:
        cur.execute("ALTER TYPE order_status ADD VALUE 'refunded'")
    back = _schema.diff_snapshots(_snapshot(pg, dev), _snapshot(pg, prod), renames={v: k for k, v in RENAMES.items()})
    statements = _schema_ddl.propose_ddl(back)
    assert "-- not proposed: type public.order_status changed labels" in statements
    assert any(s.startswith("DROP TABLE public.product_reviews;") for s in statements)
    _apply(pg, dev, statements)
    remaining = _schema.diff_snapshots(_snapshot(pg, dev), _snapshot(pg, prod))
    assert [(d["kind"], d["name"]) for d in remaining] == [("type", "public.order_status")]
