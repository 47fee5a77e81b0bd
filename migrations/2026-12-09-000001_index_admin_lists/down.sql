CREATE INDEX api_keys_organisation ON api_keys (organisation_id);
DROP INDEX api_keys_organisation_created;
DROP INDEX users_organisation_created;
