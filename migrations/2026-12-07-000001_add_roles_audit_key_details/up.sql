-- Roles: every existing user becomes a member.
ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'member';

-- A key's optional display name (names may repeat) and expiry (unix seconds).
ALTER TABLE api_keys ADD COLUMN name TEXT;
ALTER TABLE api_keys ADD COLUMN expires_at BIGINT;

-- When a session was last refreshed (NULL until its first refresh), and the client address it logged in from.
ALTER TABLE sessions ADD COLUMN refreshed_at BIGINT;
ALTER TABLE sessions ADD COLUMN client TEXT;

-- One row per administrative change, written in the change's own transaction. No foreign key: the record of a
-- change outlives what it names.
CREATE TABLE audit_events (
    id TEXT PRIMARY KEY NOT NULL,
    organisation_id TEXT,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    client TEXT
);
-- An organisation's events oldest first, resumed after a cursor (at, id).
CREATE INDEX audit_events_organisation_at ON audit_events (organisation_id, at, id);
