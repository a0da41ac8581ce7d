-- Unique jobs (issue 31): a job of a task with `unique = "..."` holds its key here from the
-- transaction that stores it PENDING (or, for a Celery client's message, the one that first
-- receives it). A second job with a held key is never stored: the primary key refuses it (two
-- publishers racing: the second INSERT waits for the first's transaction, then does nothing),
-- and its publisher is told the holder's id. The same change as SQLite's 0015.
--
-- `hold`: 'queued' (held until the job starts) or 'unfinished' (until it ends).
CREATE TABLE unique_keys (
    key    TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    hold   TEXT NOT NULL,
    at_ms  BIGINT NOT NULL
);
CREATE INDEX unique_keys_job ON unique_keys (job_id);

-- The release, in the transaction of the state change that ends the key's window, whoever
-- writes it (a worker's commit, a revoke, an expiry, the workflows' trigger): a trigger, so
-- that no way of ending or starting a job can forget it. Returns at once while no key is held.
CREATE FUNCTION unique_keys_release() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM unique_keys) THEN
        RETURN NULL;
    END IF;
    DELETE FROM unique_keys u USING new_rows n
        WHERE u.job_id = n.id
        AND n.state NOT IN ('PENDING', 'SCHEDULED', 'WAITING', 'RECEIVED')
        AND (u.hold = 'queued' OR n.state IN ('SUCCESS', 'FAILURE', 'REVOKED'));
    RETURN NULL;
END $$;
CREATE TRIGGER unique_keys_release AFTER UPDATE ON jobs REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION unique_keys_release();

-- A job deleted (pruned, reset, taken back unpublished) holds nothing.
CREATE FUNCTION unique_keys_forget() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM unique_keys) THEN
        RETURN NULL;
    END IF;
    DELETE FROM unique_keys u USING old_rows o WHERE u.job_id = o.id;
    RETURN NULL;
END $$;
CREATE TRIGGER unique_keys_forget AFTER DELETE ON jobs REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION unique_keys_forget();
