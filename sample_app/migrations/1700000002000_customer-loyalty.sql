-- Up Migration
-- A column added with a default, and a new NOT NULL column with a default.
ALTER TABLE customers ADD COLUMN marketing_opt_in boolean DEFAULT false;
ALTER TABLE customers ADD COLUMN loyalty_points integer NOT NULL DEFAULT 0;

-- Down Migration
ALTER TABLE customers DROP COLUMN loyalty_points;
ALTER TABLE customers DROP COLUMN marketing_opt_in;
