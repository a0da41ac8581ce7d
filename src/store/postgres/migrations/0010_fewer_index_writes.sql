-- Two kinds of index entries and statements that a job's usual way paid for and nothing reads.
--
-- A worker's commit of whole runs is one INSERT ... ON CONFLICT DO UPDATE of rows that are all
-- there already (the producer's PENDING rows): PostgreSQL fires the statement's INSERT trigger
-- as well as its UPDATE trigger, and the INSERT one, with no new rows, ran its three inserts of
-- nothing. It now returns at once. (The function as in 0006 otherwise.)
CREATE OR REPLACE FUNCTION jobs_counts_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NOT EXISTS (SELECT FROM new_rows) THEN
            RETURN NULL;
        END IF;
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

-- `job_events` is read by job (WHERE job_id = $1 ORDER BY seq) and by nothing else: its key on
-- `seq` alone cost each history row an index entry of no use. The key is (job_id, seq), the
-- index those reads use, and `seq` still orders a job's rows. Built once from the rows there.
ALTER TABLE job_events DROP CONSTRAINT job_events_pkey;
CREATE UNIQUE INDEX job_events_pkey ON job_events (job_id, seq);
ALTER TABLE job_events ADD CONSTRAINT job_events_pkey PRIMARY KEY USING INDEX job_events_pkey;
DROP INDEX job_events_job;
