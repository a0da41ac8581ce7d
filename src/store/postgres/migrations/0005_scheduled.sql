-- Message options Celery clients send (issue 16). Times are ms since the Unix epoch.
-- `eta_ms`: a job received before this is SCHEDULED: held here, not by the broker, and
-- published again when due by a worker's scheduler (which claims it with the lease columns).
-- `expires_ms`: received (or due) after this, the job is REVOKED unrun.
-- `time_limit_ms`, `soft_time_limit_ms`: the message's `timelimit` [hard, soft].
-- `reply_to`: where an rpc:// client waits, so that a job published again is still answered.
-- The scheduler's look-up is over SCHEDULED jobs alone: a partial index of those rows.
ALTER TABLE jobs ADD COLUMN eta_ms BIGINT;
ALTER TABLE jobs ADD COLUMN expires_ms BIGINT;
ALTER TABLE jobs ADD COLUMN time_limit_ms BIGINT;
ALTER TABLE jobs ADD COLUMN soft_time_limit_ms BIGINT;
ALTER TABLE jobs ADD COLUMN reply_to TEXT;
CREATE INDEX jobs_scheduled_eta ON jobs (queue, eta_ms) WHERE state = 'SCHEDULED';
