-- An operator's rate limit for a task (issue 31: `celery control rate_limit`, `cm tasks rate`),
-- in force over the rate_limit any worker's config gives it, on every host sharing the store
-- and across restarts. The same change as PostgreSQL's 0018.
--
-- `gate`: the rate gate's name ('rate:TASK', as flow_gates names it); `interval_ms`: the time
-- between two starts, 0 for no limit at all (Celery's `rate_limit TASK 0`); `rate`: as given
-- ("10/m", "off"), for the reason a held job shows. Every admission at the gate reads this row
-- in the statement that locks the gate's row, so no worker's config overwrites it.
CREATE TABLE rate_overrides (
    gate        TEXT PRIMARY KEY,
    interval_ms REAL NOT NULL,
    rate        TEXT NOT NULL,
    set_by      TEXT NOT NULL,
    set_ms      INTEGER NOT NULL
);
