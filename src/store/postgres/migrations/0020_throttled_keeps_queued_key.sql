-- A THROTTLED job has not started: it keeps a `queued` unique key, as PENDING, SCHEDULED,
-- WAITING and RECEIVED do (0015 ended the window there, so a duplicate could be published
-- while the first waited at a rate limit or a concurrency key).
CREATE OR REPLACE FUNCTION unique_keys_release() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM unique_keys) THEN
        RETURN NULL;
    END IF;
    DELETE FROM unique_keys u USING new_rows n
        WHERE u.job_id = n.id
        AND n.state NOT IN ('PENDING', 'SCHEDULED', 'WAITING', 'RECEIVED', 'THROTTLED')
        AND (u.hold = 'queued' OR n.state IN ('SUCCESS', 'FAILURE', 'REVOKED'));
    RETURN NULL;
END $$;
