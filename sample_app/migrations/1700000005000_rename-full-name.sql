-- Up Migration
ALTER TABLE customers RENAME COLUMN full_name TO display_name;
CREATE OR REPLACE VIEW customer_directory AS
  SELECT id, display_name, email FROM customers;

-- Down Migration
DROP VIEW customer_directory;
ALTER TABLE customers RENAME COLUMN display_name TO full_name;
