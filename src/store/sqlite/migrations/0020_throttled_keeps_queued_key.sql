-- A THROTTLED job has not started: it keeps a `queued` unique key, as PENDING, SCHEDULED,
-- WAITING and RECEIVED do (0015 and 0019 ended the window there, so a duplicate could be
-- published while the first waited at a rate limit or a concurrency key). 0019's trigger again,
-- with THROTTLED among the states that end nothing.
DROP TRIGGER jobs_state_ends;
CREATE TRIGGER jobs_state_ends AFTER UPDATE OF state ON jobs
WHEN NOT (NEW.state = 'PENDING' OR NEW.state = 'SCHEDULED' OR NEW.state = 'WAITING'
        OR NEW.state = 'RECEIVED' OR NEW.state = 'THROTTLED')
    AND (EXISTS (SELECT 1 FROM unique_keys WHERE job_id = NEW.id)
        OR ((NEW.state = 'SUCCESS' OR NEW.state = 'FAILURE' OR NEW.state = 'REVOKED')
            AND (EXISTS (SELECT 1 FROM flow_slots WHERE job_id = NEW.id)
                OR EXISTS (SELECT 1 FROM job_edges WHERE parent = NEW.id)))) BEGIN
    INSERT INTO job_ends (id, state) VALUES (NEW.id, NEW.state);
END;
