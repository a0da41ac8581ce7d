-- Flow control (issue 31): global rate limits and concurrency keys, held in the store. The same
-- change as PostgreSQL's 0014.
--
-- A job that may not start yet (its task's rate limit is spent, or its concurrency key has no
-- free slot) is THROTTLED: held here, its message acked, until a worker's releaser grants it a
-- place and publishes it again. `flow_key`: the gate it waits for ('rate:TASK', 'key:VALUE');
-- `waits_for`: why, as operators read it; `priority`: its message's (0-9), highest released
-- first, then submit order.
ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN flow_key TEXT;
ALTER TABLE jobs ADD COLUMN waits_for TEXT;
CREATE INDEX jobs_throttled ON jobs (flow_key, priority DESC, submitted_ms)
    WHERE state = 'THROTTLED';

-- One row per gate: its rule as the last worker's config wrote it, and for a rate the earliest
-- time (ms since the epoch, fractional) its next job may start. Every admission and release of
-- a gate writes its row first, so they take turns (SQLite's one writer; a row lock on
-- PostgreSQL), never check-then-act.
CREATE TABLE flow_gates (
    name        TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    interval_ms REAL NOT NULL DEFAULT 0,
    slots       INTEGER NOT NULL DEFAULT 0,
    next_ms     REAL NOT NULL DEFAULT 0
);

-- The places jobs hold: a concurrency key's slot (counted against `slots`), or a rate's grant
-- (a job let through once is not charged again when redelivered). `used`: its job passed the
-- gate with it; a rate's grants not used yet are in flight (published again, not yet received),
-- and a releaser grants no more than a poll's worth ahead of them. Freed in the transaction of
-- the job's final state, by the triggers below, whoever writes it (a worker's commit may insert
-- a quick job's row final at once, so an insert frees too).
CREATE TABLE flow_slots (
    job_id   TEXT NOT NULL,
    gate     TEXT NOT NULL,
    taken_ms INTEGER NOT NULL,
    used     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, gate)
) WITHOUT ROWID;
CREATE INDEX flow_slots_gate ON flow_slots (gate);

CREATE TRIGGER flow_slots_free AFTER UPDATE OF state ON jobs
WHEN (NEW.state = 'SUCCESS' OR NEW.state = 'FAILURE' OR NEW.state = 'REVOKED')
    AND EXISTS (SELECT 1 FROM flow_slots WHERE job_id = NEW.id) BEGIN
    DELETE FROM flow_slots WHERE job_id = NEW.id;
END;
CREATE TRIGGER flow_slots_free_new AFTER INSERT ON jobs
WHEN (NEW.state = 'SUCCESS' OR NEW.state = 'FAILURE' OR NEW.state = 'REVOKED')
    AND EXISTS (SELECT 1 FROM flow_slots WHERE job_id = NEW.id) BEGIN
    DELETE FROM flow_slots WHERE job_id = NEW.id;
END;
