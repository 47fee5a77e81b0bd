DROP TABLE audit_events;
ALTER TABLE sessions DROP COLUMN client;
ALTER TABLE sessions DROP COLUMN refreshed_at;
ALTER TABLE api_keys DROP COLUMN expires_at;
ALTER TABLE api_keys DROP COLUMN name;
ALTER TABLE users DROP COLUMN role;
