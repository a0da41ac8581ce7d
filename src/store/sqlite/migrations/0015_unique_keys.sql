-- Unique jobs (issue 31): a job of a task with `unique = "..."` holds its key here from the
-- transaction that stores it PENDING (or, for a Celery client's message, the one that first
-- receives it). A second job with a held key is never stored: the primary key refuses it, and
-- its publisher is told the holder's id. The same change as PostgreSQL's 0015.
--
-- `hold`: 'queued' (held until the job starts) or 'unfinished' (until it ends).
CREATE TABLE unique_keys (
    key    TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    hold   TEXT NOT NULL,
    at_ms  INTEGER NOT NULL
);
CREATE INDEX unique_keys_job ON unique_keys (job_id);

-- The release, in the transaction of the state change that ends the key's window, whoever
-- writes it (a worker's commit, a revoke, an expiry, a release of the workflows' trigger): a
-- trigger, so that no way of ending or starting a job can forget it. One probe of the (mostly
-- empty) table for a job that holds no key.
CREATE TRIGGER unique_keys_release AFTER UPDATE OF state ON jobs
WHEN NEW.state NOT IN ('PENDING', 'SCHEDULED', 'WAITING', 'RECEIVED')
    AND EXISTS (SELECT 1 FROM unique_keys WHERE job_id = NEW.id) BEGIN
    DELETE FROM unique_keys WHERE job_id = NEW.id
        AND (hold = 'queued' OR NEW.state IN ('SUCCESS', 'FAILURE', 'REVOKED'));
END;

-- A job deleted (pruned, reset, taken back unpublished) holds nothing.
CREATE TRIGGER unique_keys_forget AFTER DELETE ON jobs
WHEN EXISTS (SELECT 1 FROM unique_keys WHERE job_id = OLD.id) BEGIN
    DELETE FROM unique_keys WHERE job_id = OLD.id;
END;
