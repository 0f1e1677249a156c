-- The verdict of the run's tests (`proven`, `tests pass but prove nothing`, `no tests`); NULL until verified.
ALTER TABLE runs ADD COLUMN evidence TEXT;
