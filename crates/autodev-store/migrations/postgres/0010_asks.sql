-- Questions answered from a project's code index (`POST /api/v1/projects/{id}/ask`, the web
-- UI's Ask page, MCP): who asked (the key, by id and name at the time), the model's usage and
-- cost, and whether the answer's citations checked out. The cost also counts toward the
-- project's and the deployment's monthly budgets (`budget_months`).
CREATE TABLE asks (
    id            TEXT PRIMARY KEY,
    project_id    TEXT REFERENCES projects (id) ON DELETE SET NULL,
    key_id        TEXT,
    key_name      TEXT,
    question      TEXT NOT NULL,
    model         TEXT NOT NULL,
    input_tokens  BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cost_micros   BIGINT NOT NULL,
    citations_ok  BOOLEAN NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX asks_by_time ON asks (created_at);
