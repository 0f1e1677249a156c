-- What the run's model calls in flight may cost at most: reserved before each call (only if
-- the spend plus every reservation stays within the run's budget, in one conditional
-- update), released when the call's real cost is recorded. Concurrent agents, processes and
-- machines cannot all pass a check of the spend so far and then overshoot together.
ALTER TABLE runs ADD COLUMN reserved_micros BIGINT NOT NULL DEFAULT 0;
