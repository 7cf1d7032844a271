#!/usr/bin/env python
"""Deterministic data for the sample shop (production's schema: migrations up to 1700000001000).

The same scale always gives the same rows (no random()): values are derived from the row number, and timestamps
spread over 900 days from 2024-01-01 UTC so that every partition of order_events gets rows.

    python sample_app/datagen.py --dsn "host=127.0.0.1 port=56434 dbname=shop user=postgres" --scale 1

Scale 1 is about 1,000 orders (the demo); scale 100 is about 100,000 orders for benchmarks.
"""

from __future__ import annotations

import argparse
import typing as t

import psycopg2

STATEMENTS: t.List[str] = [
    """
    INSERT INTO customers (email, full_name, created_at, updated_at, profile)
    SELECT 'customer' || i || '@example.com',
           'Customer ' || i || CASE WHEN i %% 7 = 0 THEN ' Ünïcode-Søren' ELSE '' END,
           timestamptz '2024-01-01 00:00:00+00' + (i::float8 / %(customers)s) * interval '900 days',
           timestamptz '2024-01-01 00:00:00+00' + (i::float8 / %(customers)s) * interval '900 days',
           jsonb_build_object('tier', (ARRAY['bronze', 'silver', 'gold'])[1 + i %% 3], 'newsletter', i %% 2 = 0)
    FROM generate_series(1, %(customers)s) AS i
    """,
    """
    INSERT INTO products (sku, name, price_cents, tags)
    SELECT 'SKU-' || lpad(i::text, 6, '0'), 'Product ' || i, 100 + (i * 7919) %% 20000,
           ARRAY['tag' || (i %% 5), 'tag' || (i %% 11)]
    FROM generate_series(1, %(products)s) AS i
    """,
    """
    INSERT INTO orders (customer_id, status, placed_at, note)
    SELECT 1 + (i * 7919) %% %(customers)s,
           (ARRAY['pending', 'paid', 'shipped', 'cancelled']::order_status[])[1 + i %% 4],
           timestamptz '2024-01-01 00:00:00+00' + (i::float8 / %(orders)s) * interval '900 days',
           CASE WHEN i %% 10 = 0 THEN 'gift: wrap it; "fragile" \\ handle with care' END
    FROM generate_series(1, %(orders)s) AS i
    """,
    """
    INSERT INTO order_lines (order_id, line_no, product_id, quantity, unit_price_cents)
    SELECT o.id, l, 1 + (o.id * 31 + l * 17) %% %(products)s, 1 + (o.id + l) %% 5,
           100 + ((o.id * 31 + l * 17) * 7919) %% 20000
    FROM orders AS o CROSS JOIN LATERAL generate_series(1, 1 + (o.id %% 4)::int) AS l
    """,
    """
    INSERT INTO order_events (order_id, kind, created_at, payload)
    SELECT o.id, (ARRAY['created', 'paid', 'shipped'])[k], o.placed_at + k * interval '1 hour',
           CASE WHEN k = 1 THEN NULL ELSE jsonb_build_object('step', k, 'by', 'system') END
    FROM orders AS o CROSS JOIN LATERAL generate_series(1, 1 + (o.id %% 3)::int) AS k
    """,
]


def sizes(scale: float) -> t.Dict[str, int]:
    return {
        "customers": max(10, int(200 * scale)),
        "products": max(5, int(50 * scale)),
        "orders": max(20, int(1000 * scale)),
    }


def generate(conn: t.Any, scale: float) -> t.Dict[str, int]:
    """Insert the sample rows into an empty shop database; returns the row counts per table."""
    params = sizes(scale)
    with conn.cursor() as cur:
        for statement in STATEMENTS:
            cur.execute(statement, params)
        counts = {}
        for table in ("customers", "products", "orders", "order_lines", "order_events"):
            cur.execute("SELECT count(*) FROM " + table)  # noqa: S608 - fixed table names
            counts[table] = cur.fetchone()[0]
        cur.execute("ANALYZE")
    conn.commit()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", required=True, help="libpq connection string of the shop database")
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    with psycopg2.connect(args.dsn) as conn:
        print(generate(conn, args.scale))


if __name__ == "__main__":
    main()
