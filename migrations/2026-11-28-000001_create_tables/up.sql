CREATE TABLE organisations (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL UNIQUE,
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE units (
    id TEXT PRIMARY KEY NOT NULL,
    organisation_id TEXT NOT NULL REFERENCES organisations (id),
    name TEXT NOT NULL,
    name_key TEXT NOT NULL,
    code TEXT,
    code_key TEXT,
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX units_name_key ON units (organisation_id, name_key);
CREATE UNIQUE INDEX units_code_key ON units (organisation_id, code_key);

CREATE TABLE users (
    id TEXT PRIMARY KEY NOT NULL,
    organisation_id TEXT NOT NULL REFERENCES organisations (id),
    username TEXT NOT NULL,
    username_key TEXT NOT NULL,
    password_hash TEXT,
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX users_username_key ON users (organisation_id, username_key);

CREATE TABLE user_units (
    user_id TEXT NOT NULL REFERENCES users (id),
    unit_id TEXT NOT NULL REFERENCES units (id),
    is_default BOOLEAN NOT NULL,
    PRIMARY KEY (user_id, unit_id)
);
-- Exactly one default unit per user: at most one by this index, at least one by the code that writes memberships.
CREATE UNIQUE INDEX user_units_one_default ON user_units (user_id) WHERE is_default;

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY NOT NULL,
    organisation_id TEXT NOT NULL REFERENCES organisations (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    digest TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    last_used_at BIGINT
);
CREATE INDEX api_keys_organisation ON api_keys (organisation_id);
CREATE INDEX api_keys_user ON api_keys (user_id);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY NOT NULL,
    organisation_id TEXT NOT NULL REFERENCES organisations (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    unit_id TEXT NOT NULL REFERENCES units (id),
    api_key_id TEXT REFERENCES api_keys (id),
    method TEXT NOT NULL,
    username TEXT NOT NULL,
    organisation_name TEXT NOT NULL,
    unit_name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    generation BIGINT NOT NULL,
    rotated_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    max_end_at BIGINT NOT NULL,
    ended_at BIGINT,
    end_reason TEXT
);
CREATE INDEX sessions_organisation_user ON sessions (organisation_id, user_id);
CREATE INDEX sessions_api_key ON sessions (api_key_id);

CREATE TABLE login_failures (
    organisation_key TEXT NOT NULL,
    username_key TEXT NOT NULL,
    failures BIGINT NOT NULL,
    locked_until BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (organisation_key, username_key)
);
