-- How many jobs are in each state and on each worker, kept as the rows change (issue 18):
-- db_stats, /api/jobs and `cm jobs` show these counts on every view, and counting them there
-- (COUNT(*) and GROUP BY over every row) grew with the history, to most of a first page's time
-- at 100,000 jobs. Triggers keep them, in the same transaction as the change, so that every way
-- a row changes (a worker's commit, a revoke, a requeue, db_reset, a direct INSERT) keeps them
-- exact without knowing of them; a statement that changes no row (the first final state won)
-- adds nothing.
--
-- Unlike SQLite, where one writer at a time holds the whole database, PostgreSQL runs the
-- workers' commits side by side: one counter row per state, updated by each, would make every
-- commit wait for the one before it to end (and two commits touching two states in opposite
-- orders would deadlock). So the tables are logs of changes: each statement on `jobs` inserts
-- one row per state (and worker) whose count it changed, `n` being the change, and a count is
-- the sum of its rows. Inserts never wait for one another. `job_counts_fold` replaces the rows
-- by their sums, so that the logs stay a few hundred rows long.
-- `job_finished_minutes`: jobs finished per clock minute (`finished_ms / 60000`), for the chart
-- of the last 30 minutes, which counted a range of `finished_ms` as long as the jobs of those
-- minutes were many. A fold drops minutes over a day old (by the database's clock).
CREATE TABLE job_state_counts (
    state TEXT NOT NULL,
    n     BIGINT NOT NULL
);
CREATE TABLE job_worker_counts (
    worker TEXT NOT NULL,
    n      BIGINT NOT NULL
);
CREATE TABLE job_finished_minutes (
    minute BIGINT NOT NULL,
    n      BIGINT NOT NULL
);

-- Rows already folded or added by transactions committed before this runs are summed into one
-- per state and worker (counts of 0 dropped); rows of transactions still running are not seen
-- and stay as they are. Two folds at once would each sum what they see: correct too, but one
-- waits for the other's locks, so a fold that cannot have the lock at once is skipped.
CREATE FUNCTION job_counts_fold() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('cm job_counts_fold')) THEN
        RETURN;
    END IF;
    WITH gone AS (DELETE FROM job_state_counts RETURNING state, n)
    INSERT INTO job_state_counts (state, n)
        SELECT state, SUM(n) FROM gone GROUP BY state HAVING SUM(n) <> 0;
    WITH gone AS (DELETE FROM job_worker_counts RETURNING worker, n)
    INSERT INTO job_worker_counts (worker, n)
        SELECT worker, SUM(n) FROM gone GROUP BY worker HAVING SUM(n) <> 0;
    WITH gone AS (DELETE FROM job_finished_minutes RETURNING minute, n)
    INSERT INTO job_finished_minutes (minute, n)
        SELECT minute, SUM(n) FROM gone
        WHERE minute >= CAST(extract(epoch FROM now()) AS BIGINT) / 60 - 1440
        GROUP BY minute HAVING SUM(n) <> 0;
END $$;

-- One function for the three statement triggers: each passes the rows it changed as `old_rows`
-- (UPDATE, DELETE) and `new_rows` (INSERT, UPDATE); a count changes by the new rows less the old.
-- About one statement in a hundred also folds, which keeps the logs short without a job to run
-- them; the reads sum whatever rows there are, folded or not.
CREATE FUNCTION jobs_counts_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO job_state_counts (state, n) SELECT state, COUNT(*) FROM new_rows GROUP BY state;
        INSERT INTO job_worker_counts (worker, n)
            SELECT worker, COUNT(*) FROM new_rows WHERE worker IS NOT NULL GROUP BY worker;
        INSERT INTO job_finished_minutes (minute, n)
            SELECT finished_ms / 60000, COUNT(*) FROM new_rows
            WHERE finished_ms IS NOT NULL GROUP BY 1;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO job_state_counts (state, n) SELECT state, -COUNT(*) FROM old_rows GROUP BY state;
        INSERT INTO job_worker_counts (worker, n)
            SELECT worker, -COUNT(*) FROM old_rows WHERE worker IS NOT NULL GROUP BY worker;
        INSERT INTO job_finished_minutes (minute, n)
            SELECT finished_ms / 60000, -COUNT(*) FROM old_rows
            WHERE finished_ms IS NOT NULL GROUP BY 1;
    ELSE
        INSERT INTO job_state_counts (state, n)
            SELECT state, SUM(n) FROM (SELECT state, 1 AS n FROM new_rows
                                       UNION ALL SELECT state, -1 FROM old_rows) AS d
            GROUP BY state HAVING SUM(n) <> 0;
        INSERT INTO job_worker_counts (worker, n)
            SELECT worker, SUM(n) FROM (SELECT worker, 1 AS n FROM new_rows
                                        UNION ALL SELECT worker, -1 FROM old_rows) AS d
            WHERE worker IS NOT NULL GROUP BY worker HAVING SUM(n) <> 0;
        INSERT INTO job_finished_minutes (minute, n)
            SELECT finished_ms / 60000, SUM(n) FROM (SELECT finished_ms, 1 AS n FROM new_rows
                                                     UNION ALL SELECT finished_ms, -1 FROM old_rows) AS d
            WHERE finished_ms IS NOT NULL GROUP BY 1 HAVING SUM(n) <> 0;
    END IF;
    IF random() < 0.01 THEN
        PERFORM job_counts_fold();
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_counts_insert AFTER INSERT ON jobs REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_counts_changed();
CREATE TRIGGER jobs_counts_update AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_counts_changed();
CREATE TRIGGER jobs_counts_delete AFTER DELETE ON jobs REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_counts_changed();

-- A store that has jobs already: its counts from its rows. CREATE TRIGGER above waited for
-- the writers running and keeps new ones out until this migration commits, so no change falls
-- between this count and the triggers.
INSERT INTO job_state_counts (state, n) SELECT state, COUNT(*) FROM jobs GROUP BY state;
INSERT INTO job_worker_counts (worker, n)
    SELECT worker, COUNT(*) FROM jobs WHERE worker IS NOT NULL GROUP BY worker;
INSERT INTO job_finished_minutes (minute, n)
    SELECT finished_ms / 60000, COUNT(*) FROM jobs
    WHERE finished_ms >= (CAST(extract(epoch FROM now()) AS BIGINT) / 60 - 1440) * 60000
    GROUP BY 1;
