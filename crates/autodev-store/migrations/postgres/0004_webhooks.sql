-- Webhook deliveries, stored with their delivery id before anything acts on them, so a
-- repeated delivery creates nothing new. Runs remember what started them.
CREATE TABLE webhook_deliveries (
    source      TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    event       TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    outcome     TEXT,
    run_id      TEXT,
    PRIMARY KEY (source, delivery_id)
);

ALTER TABLE runs ADD COLUMN origin TEXT;

-- The queue: runs a worker may claim, oldest first.
CREATE INDEX runs_claimable ON runs (created_at, id)
    WHERE project_id IS NOT NULL AND state NOT IN ('succeeded', 'failed', 'cancelled', 'awaiting_approval');

-- Pages of runs, newest first, without a sort step (replaces the index on created_at alone).
CREATE INDEX runs_by_created_id ON runs (created_at DESC, id DESC);
DROP INDEX runs_by_created;
