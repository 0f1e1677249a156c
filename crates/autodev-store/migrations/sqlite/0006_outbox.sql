-- A run's milestones to tell the outside world about (plan ready, awaiting approval,
-- succeeded, failed, cancelled, pull request opened). Each is written in the transaction of
-- the change that causes it (the outbox pattern): a crash can neither lose one nor announce a
-- change that did not commit. Dispatchers in any process claim due rows with a lease, deliver
-- to every configured target, and record each target's result, so a retry redoes only what
-- failed. The id is `<run id>:<topic>`, stable across retries (receivers deduplicate on it).
CREATE TABLE outbox (
    id          TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL,
    topic       TEXT NOT NULL,
    -- The sequence number of the event that caused it: milestones are delivered in order.
    seq         BIGINT NOT NULL DEFAULT 0,
    state       TEXT NOT NULL DEFAULT 'pending',
    attempts    BIGINT NOT NULL DEFAULT 0,
    next_at     BIGINT NOT NULL,
    results     TEXT NOT NULL DEFAULT '{}',
    lease_owner TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL
);
CREATE INDEX outbox_due ON outbox (next_at) WHERE state = 'pending';
CREATE INDEX outbox_by_run ON outbox (run_id, created_at);

-- What integrations made for a run (its pull request, its ticket comment), so a retry or a
-- later milestone updates them instead of making second ones.
CREATE TABLE run_links (
    run_id TEXT NOT NULL,
    name   TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
