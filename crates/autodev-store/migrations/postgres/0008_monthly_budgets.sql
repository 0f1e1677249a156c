-- What was spent per calendar month (UTC, `YYYY-MM`), globally (scope `global`) and per
-- project (scope `project:<id>`): the monthly budgets are checked against these counters,
-- which the recording of each model call updates in its own transaction. A reservation
-- locks the rows of the limits it is checked against (global first, then the project), so
-- concurrent reservations of one budget, from any process, are decided one after another.
CREATE TABLE budget_months (
    scope TEXT NOT NULL,
    month TEXT NOT NULL,
    spent_micros BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, month)
);

-- The reservations of runs in flight, summed at each reservation against a monthly budget.
CREATE INDEX runs_reserved ON runs (project_id) WHERE reserved_micros > 0;
