-- The verdict of the run's tests (proven, proves_nothing, no_tests); NULL until verified.
ALTER TABLE runs ADD COLUMN evidence TEXT;
