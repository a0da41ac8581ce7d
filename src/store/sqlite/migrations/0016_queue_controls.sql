-- Pause, resume and live concurrency of a queue's workers (issue 31). One row per queue and
-- scope: '' for every host, a host name, or one worker's node name (`name@host`). A column left
-- NULL says "as the wider scope says" (then the config); an order at a wide scope clears the
-- narrower rows' same column in its transaction, so the last order wins where it reaches.
-- `terminate_ms`: when a `pause --terminate` was last given here; workers stop their running
-- jobs once for each.
CREATE TABLE queue_controls (
    queue        TEXT NOT NULL,
    scope        TEXT NOT NULL,
    paused       INTEGER,
    concurrency  INTEGER,
    terminate_ms INTEGER,
    changed_ms   INTEGER NOT NULL,
    changed_by   TEXT NOT NULL,
    PRIMARY KEY (queue, scope)
);
