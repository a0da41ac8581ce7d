-- A worker's commit stores a job's events of that commit in one row: the first event in the
-- columns, the ones after it in `later` as JSON [[state, at_ms, detail], ...] (NULL when none).
-- One row instead of six per job, for a fraction of the SQLite work. Readers unfold `later`.
ALTER TABLE job_events ADD COLUMN later TEXT;
