-- Up Migration
-- Built in the offline new database by prod_restore, so no CONCURRENTLY is needed (or allowed) here.
CREATE INDEX orders_customer_placed_idx ON orders (customer_id, placed_at);

-- Down Migration
DROP INDEX orders_customer_placed_idx;
