-- Runs, their plan's tasks, every model call and tool call, and the event log.
-- Ids are UUIDv7 text; times are epoch milliseconds; JSON is stored as text.
CREATE TABLE runs (
    id            TEXT PRIMARY KEY,
    short_id      TEXT NOT NULL UNIQUE,
    title         TEXT NOT NULL,
    spec          TEXT NOT NULL,
    repo          TEXT NOT NULL,
    base_branch   TEXT NOT NULL,
    base_commit   TEXT NOT NULL,
    branch        TEXT NOT NULL,
    state         TEXT NOT NULL,
    reason        TEXT,
    settings      TEXT NOT NULL,
    plan          TEXT,
    repair_round  INTEGER NOT NULL DEFAULT 0,
    test_passed   INTEGER,
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cost_micros   INTEGER NOT NULL DEFAULT 0,
    lease_owner   TEXT,
    lease_until   INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    finished_at   INTEGER
);
CREATE INDEX runs_by_created ON runs (created_at DESC);
CREATE INDEX runs_by_state ON runs (state);

CREATE TABLE tasks (
    run_id      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    task_key    TEXT NOT NULL,
    position    INTEGER NOT NULL,
    title       TEXT NOT NULL,
    description TEXT NOT NULL,
    depends_on  TEXT NOT NULL,
    acceptance  TEXT NOT NULL,
    state       TEXT NOT NULL,
    reason      TEXT,
    summary     TEXT,
    commit_sha  TEXT,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (run_id, task_key)
);

-- The fixed start of each agent conversation (system prompt, task); the rest is rebuilt
-- from model_calls and tool_calls on resume.
CREATE TABLE conversations (
    run_id       TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    conversation TEXT NOT NULL,
    header       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (run_id, conversation)
);

CREATE TABLE model_calls (
    run_id        TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    conversation  TEXT NOT NULL,
    turn          INTEGER NOT NULL,
    provider      TEXT NOT NULL,
    model         TEXT NOT NULL,
    response      TEXT NOT NULL,
    input_tokens  INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_micros   INTEGER NOT NULL,
    latency_ms    INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (run_id, conversation, turn)
);

CREATE TABLE tool_calls (
    run_id       TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    conversation TEXT NOT NULL,
    turn         INTEGER NOT NULL,
    idx          INTEGER NOT NULL,
    call_id      TEXT NOT NULL,
    name         TEXT NOT NULL,
    arguments    TEXT NOT NULL,
    status       TEXT NOT NULL,
    result       TEXT,
    is_error     INTEGER NOT NULL DEFAULT 0,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    PRIMARY KEY (run_id, conversation, turn, idx)
);

CREATE TABLE events (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    at_ms  INTEGER NOT NULL,
    kind   TEXT NOT NULL,
    data   TEXT NOT NULL
);
CREATE INDEX events_by_run ON events (run_id, seq);
