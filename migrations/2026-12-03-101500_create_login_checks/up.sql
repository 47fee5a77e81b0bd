-- Password checks in progress, one row per check, per organisation + username as typed (folded by
-- db::name_key; neither need exist). A login takes a row before it checks a password and deletes it when the
-- check is over, so every node sees how many checks of an account are running: at most the lockout threshold
-- minus the failures. A row older than 30 s was left by a node that stopped mid-check and no longer counts.
CREATE TABLE login_checks (
    organisation_key TEXT NOT NULL,
    username_key TEXT NOT NULL,
    id TEXT NOT NULL,
    taken_at BIGINT NOT NULL,
    PRIMARY KEY (organisation_key, username_key, id)
);
