-- A delivered run's timeline after its pull request opened: checks, CI follow-ups, the merge,
-- deploys, a revert. Written from the forge's own events; `key` makes each step happen once
-- (a redelivered or repeated event finds its key taken and changes nothing).
CREATE TABLE timeline (
    run_id      TEXT NOT NULL,
    key         TEXT NOT NULL,
    step        TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '',
    url         TEXT,
    sha         TEXT,
    environment TEXT,
    at_ms       BIGINT NOT NULL,
    -- The sequence number of the event that announced it: the timeline's order.
    seq         BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, key)
);
CREATE INDEX timeline_by_sha ON timeline (sha) WHERE sha IS NOT NULL;
