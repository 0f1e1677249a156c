-- Expand only (a rolling upgrade runs the previous release on this schema too):
-- a run's report and patch kept in the database, so any server can serve them and deliver
-- them whichever worker drove the run (before, only the driver's data directory had them);
-- and the time `autodev gc` collected a run's bulky records (events, tool results, model
-- responses), which the previous release never reads.
CREATE TABLE run_artifacts (
    run_id     TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    content    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, name)
);
ALTER TABLE runs ADD COLUMN collected_at BIGINT;
CREATE INDEX runs_by_finished ON runs (finished_at);
