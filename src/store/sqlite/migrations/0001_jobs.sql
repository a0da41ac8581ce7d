-- Times are milliseconds since the Unix epoch (the same column types on both backends).
CREATE TABLE jobs (
    id           TEXT PRIMARY KEY,
    task         TEXT NOT NULL,
    queue        TEXT NOT NULL,
    args         TEXT NOT NULL DEFAULT '[]',
    server       TEXT,
    recipe       TEXT,
    kind         TEXT,
    hosts        TEXT,
    batch        TEXT,
    state        TEXT NOT NULL,
    worker       TEXT,
    submitted_ms INTEGER,
    started_ms   INTEGER,
    finished_ms  INTEGER,
    result       TEXT,
    error        TEXT,
    deliveries   INTEGER NOT NULL DEFAULT 0,
    retries      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_state ON jobs (state);
CREATE INDEX jobs_batch ON jobs (batch);
CREATE INDEX jobs_submitted ON jobs (submitted_ms);
CREATE INDEX jobs_finished ON jobs (finished_ms);

CREATE TABLE job_events (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    state  TEXT NOT NULL,
    worker TEXT,
    at_ms  INTEGER NOT NULL,
    detail TEXT
);
CREATE INDEX job_events_job ON job_events (job_id, seq);
