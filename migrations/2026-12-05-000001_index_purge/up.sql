-- The purge finds what is past retention through these, a batch at a time, instead of scanning the tables.
-- A session leaves by its maximum lifetime or by its end; new sessions have no end yet, so the end's index
-- holds ended sessions only and a login's insert does not touch it. Both columns grow with time, so their
-- entries, like the time-ordered session ids, are added at the end of the index.
CREATE INDEX sessions_max_end_at ON sessions (max_end_at);
CREATE INDEX sessions_ended_at ON sessions (ended_at) WHERE ended_at IS NOT NULL;
CREATE INDEX login_failures_updated_at ON login_failures (updated_at);
