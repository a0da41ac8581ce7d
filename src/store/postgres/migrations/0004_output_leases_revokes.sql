-- Command tasks and long jobs (issue "Real work"). Times are ms since the Unix epoch.
-- `output`: the last 64 KiB of a command job's output.
-- `lease_owner`, `lease_until`: a long job's worker acks its message early and holds the job by
-- this lease, renewing it while it runs; a reaper publishes again a job whose lease lapsed. Only
-- running long jobs have one, so the index holds those rows alone.
ALTER TABLE jobs ADD COLUMN output TEXT;
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_until BIGINT;
CREATE INDEX jobs_lease_until ON jobs (lease_until) WHERE lease_until IS NOT NULL;

-- Revoked job ids, for every worker and across restarts; kept for ids no job has yet (Celery
-- clients revoke before the job arrives). Workers poll by `at_ms`.
CREATE TABLE revokes (
    id        TEXT PRIMARY KEY,
    at_ms     BIGINT NOT NULL,
    terminate BOOLEAN NOT NULL,
    signal    TEXT,
    by        TEXT
);
CREATE INDEX revokes_at ON revokes (at_ms);
