-- The administration API lists users and keys of an organisation oldest first, a page at a time, by the
-- cursor (created_at, id): these indexes serve a page without sorting the organisation's rows.
CREATE INDEX users_organisation_created ON users (organisation_id, created_at, id);
CREATE INDEX api_keys_organisation_created ON api_keys (organisation_id, created_at, id);
DROP INDEX api_keys_organisation;
