-- Up Migration
ALTER TABLE books RENAME COLUMN author TO author_name;
ALTER TABLE books ADD COLUMN isbn text;

-- Down Migration
ALTER TABLE books DROP COLUMN isbn;
ALTER TABLE books RENAME COLUMN author_name TO author;
