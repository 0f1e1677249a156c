-- A question's worst-case cost, reserved against the monthly budgets while it is answered (as
-- runs reserve theirs in `runs.reserved_micros`), deleted once its cost is recorded. One left
-- by a process that died stops counting after ten minutes.
CREATE TABLE ask_reservations (
    id          TEXT PRIMARY KEY,
    project_id  TEXT,
    micros      BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX ask_reservations_by_time ON ask_reservations (created_at);
