-- Workflows (issue 29): a job published `--after` others waits in the store, state WAITING, with
-- one `job_edges` row per parent, and is released when every parent has ended as its edge asks.
-- The same change as PostgreSQL's 0011. rusqlite_migration counts the migrations in the order
-- migrate.rs lists them: this one comes after 0012_schedules, which was there first.
--
-- `mode`: 'after' (the parent must end SUCCESS; its FAILURE or REVOKED ends the child REVOKED)
-- or 'after_any' (the parent must end, whatever its end). `ended`: 1 once this parent's end
-- revoked the child; a retry of the parent re-arms exactly those children.
CREATE TABLE job_edges (
    child  TEXT NOT NULL,
    parent TEXT NOT NULL,
    mode   TEXT NOT NULL,
    ended  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (child, parent)
) WITHOUT ROWID;
CREATE INDEX job_edges_parent ON job_edges (parent);

-- Jobs due to be published: a row is written in the transaction that makes its job due (the
-- last parent's end), and deleted once a worker (of any queue, on any host) published the job.
-- `claimed_by`, `claim_until`: the worker publishing it; a claim that lapsed (its worker died
-- between the claim and the publish) is taken by the next. The key makes a second release of a
-- job impossible while the first is unpublished.
CREATE TABLE job_outbox (
    job_id      TEXT PRIMARY KEY,
    due_ms      INTEGER NOT NULL,
    claimed_by  TEXT,
    claim_until INTEGER
);

-- A retry (`cm jobs retry`) runs a final job again as a new job linked here: one retry per job,
-- by this key, however many operators ask at once.
CREATE TABLE job_retries (
    job_id   TEXT PRIMARY KEY,
    retry_id TEXT NOT NULL UNIQUE,
    at_ms    INTEGER NOT NULL,
    by       TEXT
);

-- The release, in the transaction of every final state, whoever writes it (a worker's commit, a
-- revoke): a trigger, so that no way of ending a job can forget it. It runs only for jobs that
-- are someone's parent (one index probe for the others). For each waiting child of the job:
--   1. an `after` edge whose parent ended FAILURE or REVOKED is marked ended, and the child ends
--      REVOKED "parent ID ended STATE" (that UPDATE fires this trigger again for the child's own
--      children: `recursive_triggers` is on in every connection);
--   2. a child whose every parent has ended as its edge asks (a query over its parents' rows,
--      never a counter) gets an outbox row and becomes PENDING.
-- A no-op `UPDATE jobs SET state = state` of parents (a child published after them) runs it too.
CREATE TRIGGER jobs_release AFTER UPDATE OF state ON jobs
WHEN (NEW.state = 'SUCCESS' OR NEW.state = 'FAILURE' OR NEW.state = 'REVOKED')
    AND EXISTS (SELECT 1 FROM job_edges WHERE parent = NEW.id) BEGIN
    UPDATE job_edges SET ended = 1
        WHERE parent = NEW.id AND mode = 'after' AND NEW.state <> 'SUCCESS' AND ended = 0
        AND (SELECT state FROM jobs WHERE id = job_edges.child) = 'WAITING';
    INSERT INTO job_events (job_id, state, worker, at_ms, detail)
        SELECT child, 'REVOKED', '', CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
               'parent ' || NEW.id || ' ended ' || NEW.state
        FROM job_edges e WHERE parent = NEW.id AND ended = 1
        AND (SELECT state FROM jobs WHERE id = e.child) = 'WAITING';
    UPDATE jobs SET state = 'REVOKED', error = 'parent ' || NEW.id || ' ended ' || NEW.state,
        finished_ms = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
        WHERE state = 'WAITING'
        AND id IN (SELECT child FROM job_edges WHERE parent = NEW.id AND ended = 1);
    INSERT OR IGNORE INTO job_outbox (job_id, due_ms)
        SELECT c.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) FROM jobs c
        WHERE c.state = 'WAITING' AND c.id IN (SELECT child FROM job_edges WHERE parent = NEW.id)
        AND NOT EXISTS (SELECT 1 FROM job_edges e JOIN jobs p ON p.id = e.parent
            WHERE e.child = c.id AND NOT (p.state = 'SUCCESS' OR (e.mode = 'after_any'
                AND (p.state = 'FAILURE' OR p.state = 'REVOKED'))));
    INSERT INTO job_events (job_id, state, worker, at_ms, detail)
        SELECT c.id, 'PENDING', '', CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
               'due: its parents ended (the last ' || NEW.id || ', ' || NEW.state || ')'
        FROM jobs c WHERE c.state = 'WAITING'
        AND c.id IN (SELECT child FROM job_edges WHERE parent = NEW.id)
        AND c.id IN (SELECT job_id FROM job_outbox);
    UPDATE jobs SET state = 'PENDING' WHERE state = 'WAITING'
        AND id IN (SELECT child FROM job_edges WHERE parent = NEW.id)
        AND id IN (SELECT job_id FROM job_outbox);
END;
