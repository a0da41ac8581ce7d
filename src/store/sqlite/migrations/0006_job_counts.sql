-- How many jobs are in each state and on each worker, and finished in each clock minute, kept
-- as the rows change (issue 18): db_stats, /api/jobs and `cm jobs` show these counts on every
-- view, and counting them there (COUNT(*) and GROUP BY over every row, a range of
-- `finished_ms` for the chart of the last 30 minutes) grew with the history, to over half a
-- second at 1,000,000 jobs.
--
-- Triggers record every change of a job's state, worker or finished minute, in the same
-- transaction as the change, so that every way a row changes (a worker's commit, a revoke, a
-- requeue, db_reset, a direct INSERT) is counted without knowing of the counts; a statement
-- that changes no row (the first final state won) records nothing. A trigger only appends one
-- row to `job_count_changes` (old and new values; NULL where there is none): updating three
-- counters per job there made a worker's commits a third more instructions (callgrind-drain:
-- 154k to 201k a job). Writers fold the changes into the counts (`commit::fold_counts`) once a
-- thousand wait, and db_reset at once; a count is its folded row plus the changes not folded
-- yet, which readers add (the views below).
CREATE TABLE job_count_changes (
    state_was  TEXT,
    state      TEXT,
    worker_was TEXT,
    worker     TEXT,
    minute_was INTEGER,
    minute     INTEGER
);
CREATE TABLE job_state_counts (
    state TEXT PRIMARY KEY,
    n     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE job_worker_counts (
    worker TEXT PRIMARY KEY,
    n      INTEGER NOT NULL
) WITHOUT ROWID;
-- Jobs finished per clock minute (`finished_ms / 60000`); a fold drops minutes over a day old
-- (by the database's clock).
CREATE TABLE job_finished_minutes (
    minute INTEGER PRIMARY KEY,
    n      INTEGER NOT NULL
);

CREATE TRIGGER jobs_counts_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO job_count_changes (state, worker, minute)
        VALUES (NEW.state, NEW.worker, NEW.finished_ms / 60000);
END;
-- Whatever columns a statement sets: WHEN keeps the work to rows whose counted values changed.
CREATE TRIGGER jobs_counts_update AFTER UPDATE ON jobs
WHEN OLD.state IS NOT NEW.state OR OLD.worker IS NOT NEW.worker
    OR OLD.finished_ms / 60000 IS NOT NEW.finished_ms / 60000 BEGIN
    INSERT INTO job_count_changes VALUES (OLD.state, NEW.state, OLD.worker, NEW.worker,
        OLD.finished_ms / 60000, NEW.finished_ms / 60000);
END;
CREATE TRIGGER jobs_counts_delete AFTER DELETE ON jobs BEGIN
    INSERT INTO job_count_changes (state_was, worker_was, minute_was)
        VALUES (OLD.state, OLD.worker, OLD.finished_ms / 60000);
END;

-- The counts as readers see them: the folded rows plus the changes not folded yet.
CREATE VIEW job_state_totals AS
    SELECT state, SUM(n) AS n FROM (
        SELECT state, n FROM job_state_counts
        UNION ALL SELECT state, 1 FROM job_count_changes WHERE state IS NOT NULL
        UNION ALL SELECT state_was, -1 FROM job_count_changes WHERE state_was IS NOT NULL)
    GROUP BY state;
CREATE VIEW job_worker_totals AS
    SELECT worker, SUM(n) AS n FROM (
        SELECT worker, n FROM job_worker_counts
        UNION ALL SELECT worker, 1 FROM job_count_changes WHERE worker IS NOT NULL
        UNION ALL SELECT worker_was, -1 FROM job_count_changes WHERE worker_was IS NOT NULL)
    GROUP BY worker;
CREATE VIEW job_finished_minute_totals AS
    SELECT minute, SUM(n) AS n FROM (
        SELECT minute, n FROM job_finished_minutes
        UNION ALL SELECT minute, 1 FROM job_count_changes WHERE minute IS NOT NULL
        UNION ALL SELECT minute_was, -1 FROM job_count_changes WHERE minute_was IS NOT NULL)
    GROUP BY minute;

-- A store that has jobs already: its counts from its rows. The migration's transaction holds
-- the write lock, so no row changes between this count and the triggers taking over.
INSERT INTO job_state_counts (state, n) SELECT state, COUNT(*) FROM jobs GROUP BY state;
INSERT INTO job_worker_counts (worker, n)
    SELECT worker, COUNT(*) FROM jobs WHERE worker IS NOT NULL GROUP BY worker;
INSERT INTO job_finished_minutes (minute, n)
    SELECT finished_ms / 60000, COUNT(*) FROM jobs
    WHERE finished_ms >= (CAST(strftime('%s', 'now') AS INTEGER) / 60 - 1440) * 60000
    GROUP BY 1;
