-- db_stats and /api/jobs list a page of jobs filtered by state or by server, newest first
-- (WHERE state = $1 ... ORDER BY submitted_ms DESC): the composite indexes find the page without
-- sorting every matching job. (state, submitted_ms) also serves every lookup jobs_state did.
CREATE INDEX jobs_state_submitted ON jobs (state, submitted_ms);
CREATE INDEX jobs_server_submitted ON jobs (server, submitted_ms);
DROP INDEX jobs_state;
