-- Up Migration
CREATE TABLE order_events (
  id          bigserial,
  order_id    bigint NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
  kind        text NOT NULL,
  created_at  timestamptz NOT NULL,
  payload     jsonb,
  PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE order_events_2024 PARTITION OF order_events
  FOR VALUES FROM ('2024-01-01 00:00:00+00') TO ('2025-01-01 00:00:00+00');
CREATE TABLE order_events_2025 PARTITION OF order_events
  FOR VALUES FROM ('2025-01-01 00:00:00+00') TO ('2026-01-01 00:00:00+00');
CREATE TABLE order_events_default PARTITION OF order_events DEFAULT;

-- Down Migration
DROP TABLE order_events;
