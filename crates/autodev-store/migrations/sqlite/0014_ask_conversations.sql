-- Expand only (a rolling upgrade runs the previous release on this schema too):
-- "ask" as a conversation. Each answered question of a conversation is a turn; a
-- conversation belongs to the API key that started it (NULL for the CLI) and is what its
-- turns say (no table of its own). Usage and cost stay in `asks` (ask_id).
CREATE TABLE ask_turns (
    conversation TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    key_id       TEXT,
    project_id   TEXT,
    question     TEXT NOT NULL,
    answer       TEXT NOT NULL,
    ask_id       TEXT,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (conversation, seq)
);
CREATE INDEX ask_turns_by_key ON ask_turns (key_id, created_at);
