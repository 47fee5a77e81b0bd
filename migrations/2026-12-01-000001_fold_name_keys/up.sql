-- Name keys become Unicode NFKC + full case folding (db::name_key). SQL cannot normalise Unicode, so the server
-- re-keys the existing organisations, units, users and failed-login counters in Rust right after this file,
-- in the same transaction (db/rekey.rs); two names that fold to one key fail the migration, naming both.
SELECT 1;
