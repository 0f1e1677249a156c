-- Projects: a repository Autodev works on, with its settings. Runs made through the API
-- belong to one.
CREATE TABLE projects (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    repository   TEXT NOT NULL,
    base_branch  TEXT,
    test_command TEXT,
    settings     TEXT NOT NULL DEFAULT '{}',
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

ALTER TABLE runs ADD COLUMN project_id TEXT REFERENCES projects (id) ON DELETE SET NULL;
CREATE INDEX runs_by_project ON runs (project_id, created_at DESC);
