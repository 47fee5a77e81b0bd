-- The code of the unit a session is logged into, as it was at login (NULL for a unit without one), so that
-- `token.unit_claim = "code"` can write it into `oun` at every refresh: the token stays a function of its row.
-- Sessions opened before this column keep NULL, and so the unit's name, until they end: no table rewrite.
ALTER TABLE sessions ADD COLUMN unit_code TEXT;
