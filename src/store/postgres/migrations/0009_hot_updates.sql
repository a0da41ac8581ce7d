-- A job's usual way, PENDING when published and SUCCESS in its worker's commit, changes no
-- indexed column, so that PostgreSQL can update its row in place (a HOT update: no new entry in
-- any index, the new version on the same page). While `state` was indexed, every update of a
-- job wrote an entry in each of the table's indexes, none was HOT, and index insertions were
-- the largest part of the server's work per job.
--
-- `unusual_state` is the state when it is neither PENDING nor SUCCESS (NULL for those two), and
-- the indexes that looked jobs up by state look them up by it: FAILURE, REVOKED, STARTED,
-- SCHEDULED... are found by index as before, and a filter on PENDING or SUCCESS, the common
-- states, reads `state` in the newest-first order of jobs_submitted. The server computes it, so
-- every way a row changes keeps it. Adding it rewrites the table once, under this migration's
-- lock.
ALTER TABLE jobs ADD COLUMN unusual_state TEXT
    GENERATED ALWAYS AS (CASE WHEN state IN ('PENDING', 'SUCCESS') THEN NULL ELSE state END) STORED;
CREATE INDEX jobs_unusual_state_submitted ON jobs (unusual_state, submitted_ms)
    WHERE unusual_state IS NOT NULL;
DROP INDEX jobs_state_submitted;
DROP INDEX jobs_scheduled_eta;
CREATE INDEX jobs_scheduled_eta ON jobs (queue, eta_ms) WHERE unusual_state = 'SCHEDULED';

-- A HOT update needs room on the row's page for the new version, larger than the PENDING row
-- it replaces: pages written from now on are filled to half by inserts, the rest left for the
-- updates (fuller pages left most updates without room). Pages written before stay as full as
-- they are: their jobs are mostly final.
ALTER TABLE jobs SET (fillfactor = 50);
