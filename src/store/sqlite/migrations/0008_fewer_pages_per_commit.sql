-- Every page a commit changes is written to the WAL whole, so a page changed for nothing costs
-- a commit as much as one it needs: for a job sent by a Celery client (or `cm call`,
-- `cm provision`), its NULL entries in the batch and server indexes and `sqlite_sequence`.
--
-- A job with no batch or no server has no entry in their indexes: every query on them asks for
-- one (`batch = ?`, `server = ?`), which implies IS NOT NULL, so these partial indexes serve it.
DROP INDEX jobs_batch;
CREATE INDEX jobs_batch ON jobs (batch) WHERE batch IS NOT NULL;
DROP INDEX jobs_server_submitted;
CREATE INDEX jobs_server_submitted ON jobs (server, submitted_ms) WHERE server IS NOT NULL;

-- `seq` without AUTOINCREMENT, which wrote `sqlite_sequence` in every commit. A new row's seq is
-- still above every row there, so a job's events keep their order; only ordering reads it.
CREATE TABLE job_events_new (
    seq    INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL,
    state  TEXT NOT NULL,
    worker TEXT,
    at_ms  INTEGER NOT NULL,
    detail TEXT,
    later  TEXT
);
INSERT INTO job_events_new (seq, job_id, state, worker, at_ms, detail, later)
    SELECT seq, job_id, state, worker, at_ms, detail, later FROM job_events;
DROP TABLE job_events;
ALTER TABLE job_events_new RENAME TO job_events;
CREATE INDEX job_events_job ON job_events (job_id, seq);
