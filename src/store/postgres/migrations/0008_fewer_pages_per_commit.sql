-- A job with no batch or no server (sent by a Celery client, `cm call`, `cm provision`) has no
-- entry in their indexes, neither when stored nor at each update (every update of a job writes
-- an entry in each of its indexes: `state` is indexed, so none is a HOT update). Every query on
-- them asks for one (`batch = $1`, `server = $1`), which implies IS NOT NULL.
DROP INDEX jobs_batch;
CREATE INDEX jobs_batch ON jobs (batch) WHERE batch IS NOT NULL;
DROP INDEX jobs_server_submitted;
CREATE INDEX jobs_server_submitted ON jobs (server, submitted_ms) WHERE server IS NOT NULL;
