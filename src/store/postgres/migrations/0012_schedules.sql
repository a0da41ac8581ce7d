-- Schedules (issue 30). `schedules`: one row per schedule name, kept when the schedule leaves
-- the config (its history stays): the newest slot dealt with (`cursor_ms`), whether it is
-- paused, and how many slots passed unfired after downtime. A tick moves the cursor only from
-- the value it read, so of hosts ticking at once one fires.
CREATE TABLE schedules (
    name       TEXT PRIMARY KEY,
    cursor_ms  BIGINT NOT NULL,
    paused     BOOLEAN NOT NULL DEFAULT FALSE,
    missed     BIGINT NOT NULL DEFAULT 0,
    changed_ms BIGINT NOT NULL
);

-- One row per firing, written in the transaction of its job. Unique on (schedule, slot) for
-- slots, so a second job for a slot cannot be; a manual run (`how` = 'manual') is no slot's.
-- `job_id` is NULL for a slot skipped because the previous job still ran ('overlapped').
-- `sent_ms`: when its job was published; until `send_until` only its firer publishes it,
-- after that any worker's sweep does (a firer that died between commit and publish).
CREATE TABLE schedule_firings (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    schedule   TEXT NOT NULL,
    slot_ms    BIGINT NOT NULL,
    how        TEXT NOT NULL,
    job_id     TEXT,
    fired_ms   BIGINT NOT NULL,
    sent_ms    BIGINT,
    send_until BIGINT NOT NULL
);
CREATE UNIQUE INDEX schedule_firings_slot ON schedule_firings (schedule, slot_ms)
    WHERE how <> 'manual';
CREATE INDEX schedule_firings_newest ON schedule_firings (schedule, seq);
CREATE INDEX schedule_firings_job ON schedule_firings (job_id) WHERE job_id IS NOT NULL;
CREATE INDEX schedule_firings_unsent ON schedule_firings (send_until) WHERE sent_ms IS NULL;
