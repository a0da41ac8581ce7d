-- One thin trigger for the releases of a job's state change, in place of three (issue 31). The
-- same work as 0011's `jobs_release`, 0014's `flow_slots_free` and 0015's `unique_keys_release`,
-- in the same transaction, for every way of changing a job's state; SQLite only (PostgreSQL's
-- statement-level triggers do not have this cost).
--
-- Why: SQLite runs a row trigger as a sub-program whose frame (as many registers and cursors as
-- the whole trigger body needs) is allocated and zeroed once per statement execution, before its
-- `WHEN` is tested. Every statement that sets `state` paid the three frames, `jobs_release`'s a
-- large one, though nearly every job holds no key, no slot and is no one's parent: a worker's
-- single-row updates (RECEIVED, STARTED, each step, the final state) paid them each time, a
-- fifth of its instructions per job (docs/BENCHMARKS.md). Now such a statement pays one small
-- frame: the trigger's `WHEN` (three probes) and one insert. The work is done behind it, by the
-- INSTEAD OF triggers of a view that stores nothing (`job_ends`): their frames are allocated
-- only when the thin trigger inserts into it, for a job that holds a key or a slot or is
-- someone's parent.
--
-- Comparisons, not `IN (...)`: SQLite builds a temporary table for a list of three or more
-- constants each time the list is evaluated (0015's `NOT IN` did so for every state change).
--
-- A revoke that runs down a chain of waiting jobs nests two frames per job now (this trigger,
-- then the release), where it nested one: SQLite's trigger depth of 1000 allows chains of 500.
DROP TRIGGER jobs_release;
DROP TRIGGER flow_slots_free;
DROP TRIGGER unique_keys_release;

CREATE VIEW job_ends (id, state) AS SELECT id, state FROM jobs WHERE 0;

-- A job's unique key whose window is over, and its flow slot once it has ended (0014's and 0015's
-- deletes).
CREATE TRIGGER job_ends_free INSTEAD OF INSERT ON job_ends BEGIN
    DELETE FROM unique_keys WHERE job_id = NEW.id
        AND (hold = 'queued' OR NEW.state = 'SUCCESS' OR NEW.state = 'FAILURE'
            OR NEW.state = 'REVOKED');
    DELETE FROM flow_slots WHERE job_id = NEW.id
        AND (NEW.state = 'SUCCESS' OR NEW.state = 'FAILURE' OR NEW.state = 'REVOKED');
END;

-- 0011's `jobs_release`, its `WHEN` and body unchanged, for the job `NEW.id` that is now
-- `NEW.state`.
CREATE TRIGGER job_ends_release INSTEAD OF INSERT ON job_ends
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

-- For every state but the queued ones (0015's window of a 'queued' key ends when its job
-- starts, or ends any other way), and then only for a job that holds a key, or has ended and
-- holds a slot or is someone's parent: one probe of each (mostly empty) table otherwise. The
-- body is one insert, so that the frame every such statement allocates stays small.
CREATE TRIGGER jobs_state_ends AFTER UPDATE OF state ON jobs
WHEN NOT (NEW.state = 'PENDING' OR NEW.state = 'SCHEDULED' OR NEW.state = 'WAITING'
        OR NEW.state = 'RECEIVED')
    AND (EXISTS (SELECT 1 FROM unique_keys WHERE job_id = NEW.id)
        OR ((NEW.state = 'SUCCESS' OR NEW.state = 'FAILURE' OR NEW.state = 'REVOKED')
            AND (EXISTS (SELECT 1 FROM flow_slots WHERE job_id = NEW.id)
                OR EXISTS (SELECT 1 FROM job_edges WHERE parent = NEW.id)))) BEGIN
    INSERT INTO job_ends (id, state) VALUES (NEW.id, NEW.state);
END;
