ALTER TABLE sessions DROP COLUMN unit_code;
