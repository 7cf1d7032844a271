-- Up Migration
CREATE TYPE order_status AS ENUM ('pending', 'paid', 'shipped', 'cancelled');

CREATE TABLE customers (
  id          serial PRIMARY KEY,
  email       text NOT NULL UNIQUE,
  full_name   text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  profile     jsonb NOT NULL DEFAULT '{}'::jsonb
);

CREATE TABLE products (
  id           integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  sku          text NOT NULL UNIQUE,
  name         text NOT NULL,
  price_cents  integer NOT NULL CHECK (price_cents >= 0),
  tags         text[] NOT NULL DEFAULT '{}'
);

CREATE TABLE orders (
  id           bigserial PRIMARY KEY,
  customer_id  integer NOT NULL REFERENCES customers (id),
  status       order_status NOT NULL DEFAULT 'pending',
  placed_at    timestamptz NOT NULL DEFAULT now(),
  note         text
);

CREATE TABLE order_lines (
  order_id          bigint NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
  line_no           integer NOT NULL,
  product_id        integer NOT NULL REFERENCES products (id),
  quantity          integer NOT NULL CHECK (quantity > 0),
  unit_price_cents  integer NOT NULL,
  PRIMARY KEY (order_id, line_no)
);

CREATE VIEW order_totals AS
  SELECT o.id AS order_id, o.customer_id, o.status, sum(l.quantity * l.unit_price_cents) AS total_cents
  FROM orders o JOIN order_lines l ON l.order_id = o.id
  GROUP BY o.id, o.customer_id, o.status;

CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END;
$$;

CREATE TRIGGER customers_touch_updated_at BEFORE UPDATE ON customers
  FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- Down Migration
DROP TRIGGER customers_touch_updated_at ON customers;
DROP FUNCTION touch_updated_at();
DROP VIEW order_totals;
DROP TABLE order_lines;
DROP TABLE orders;
DROP TABLE products;
DROP TABLE customers;
DROP TYPE order_status;
