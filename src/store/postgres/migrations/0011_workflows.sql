-- Workflows (issue 29): a job published `--after` others waits in the store, state WAITING, with
-- one `job_edges` row per parent, and is released when every parent has ended as its edge asks.
-- (SQLite's 0011_workflows is the same change.)
--
-- `mode`: 'after' (the parent must end SUCCESS; its FAILURE or REVOKED ends the child REVOKED)
-- or 'after_any' (the parent must end, whatever its end). `ended`: set once this parent's end
-- revoked the child; a retry of the parent re-arms exactly those children.
CREATE TABLE job_edges (
    child  TEXT NOT NULL,
    parent TEXT NOT NULL,
    mode   TEXT NOT NULL,
    ended  BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (child, parent)
);
CREATE INDEX job_edges_parent ON job_edges (parent);

-- Jobs due to be published: a row is written in the transaction that makes its job due (the
-- last parent's end), and deleted once a worker (of any queue, on any host) published the job.
-- `claimed_by`, `claim_until`: the worker publishing it; a claim that lapsed (its worker died
-- between the claim and the publish) is taken by the next. The key makes a second release of a
-- job impossible while the first is unpublished.
CREATE TABLE job_outbox (
    job_id      TEXT PRIMARY KEY,
    due_ms      BIGINT NOT NULL,
    claimed_by  TEXT,
    claim_until BIGINT
);

-- A retry (`cm jobs retry`) runs a final job again as a new job linked here: one retry per job,
-- by this key, however many operators ask at once.
CREATE TABLE job_retries (
    job_id   TEXT PRIMARY KEY,
    retry_id TEXT NOT NULL UNIQUE,
    at_ms    BIGINT NOT NULL,
    by       TEXT
);

-- Settles the waiting jobs among `kids` whose parents' rows say so (a query over the parents'
-- rows, never a counter):
--   1. an `after` edge whose parent ended FAILURE or REVOKED is marked ended, and the child ends
--      REVOKED "parent ID ended STATE" (that UPDATE fires jobs_release for its own children);
--   2. a child whose every parent has ended as its edge asks gets an outbox row, PENDING.
-- Callers hold the kids' row locks (or their parents'), so two hosts ending two parents of one
-- child at once settle it one after the other: the second sees the first's parent final.
CREATE FUNCTION jobs_settle_waiting(kids TEXT[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    now_ms BIGINT := CAST(extract(epoch FROM clock_timestamp()) * 1000 AS BIGINT);
BEGIN
    UPDATE job_edges e SET ended = TRUE FROM jobs p, jobs c
        WHERE e.child = ANY(kids) AND e.mode = 'after' AND NOT e.ended
        AND p.id = e.parent AND p.state IN ('FAILURE', 'REVOKED')
        AND c.id = e.child AND c.state = 'WAITING';
    WITH gone AS (
        UPDATE jobs c SET state = 'REVOKED', finished_ms = now_ms,
            error = (SELECT 'parent ' || p.id || ' ended ' || p.state
                     FROM job_edges e JOIN jobs p ON p.id = e.parent
                     WHERE e.child = c.id AND e.ended ORDER BY p.id LIMIT 1)
        WHERE c.id = ANY(kids) AND c.state = 'WAITING'
        AND EXISTS (SELECT 1 FROM job_edges e WHERE e.child = c.id AND e.ended)
        RETURNING c.id, c.error)
    INSERT INTO job_events (job_id, state, worker, at_ms, detail)
        SELECT id, 'REVOKED', '', now_ms, error FROM gone;
    WITH due AS (
        UPDATE jobs c SET state = 'PENDING'
        WHERE c.id = ANY(kids) AND c.state = 'WAITING'
        AND NOT EXISTS (SELECT 1 FROM job_edges e JOIN jobs p ON p.id = e.parent
            WHERE e.child = c.id AND NOT (p.state = 'SUCCESS'
                OR (e.mode = 'after_any' AND p.state IN ('FAILURE', 'REVOKED'))))
        RETURNING c.id),
    queued AS (
        INSERT INTO job_outbox (job_id, due_ms) SELECT id, now_ms FROM due
        ON CONFLICT (job_id) DO NOTHING)
    INSERT INTO job_events (job_id, state, worker, at_ms, detail)
        SELECT id, 'PENDING', '', now_ms, 'due: its parents ended' FROM due;
END $$;

-- The release, in the transaction of every final state, whoever writes it (a worker's commit, a
-- revoke): a trigger, so that no way of ending a job can forget it. A statement that ended no
-- parent returns after one join of its rows with the edges' index.
CREATE FUNCTION jobs_release() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    kids TEXT[];
BEGIN
    SELECT array_agg(DISTINCT e.child ORDER BY e.child) INTO kids
        FROM new_rows n JOIN job_edges e ON e.parent = n.id
        WHERE n.state IN ('SUCCESS', 'FAILURE', 'REVOKED');
    IF kids IS NULL THEN
        RETURN NULL;
    END IF;
    -- In id order, so that two commits locking the same children never wait on each other in
    -- a circle; the statements after see what a transaction waited for here committed.
    PERFORM 1 FROM jobs WHERE id = ANY(kids) AND state = 'WAITING' ORDER BY id FOR UPDATE;
    PERFORM jobs_settle_waiting(kids);
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_release AFTER UPDATE ON jobs REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_release();
