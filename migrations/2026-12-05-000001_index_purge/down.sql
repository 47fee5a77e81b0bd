DROP INDEX login_failures_updated_at;
DROP INDEX sessions_ended_at;
DROP INDEX sessions_max_end_at;
