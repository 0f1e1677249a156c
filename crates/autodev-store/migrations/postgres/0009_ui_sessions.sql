-- Web UI sessions: a browser that signed in with an API key holds a random token in an
-- HttpOnly cookie; only its keyed hash is stored here, with the key it acts as (by the key's
-- hash, so a revoked key ends its sessions), the session's CSRF token and its expiry.
-- Logging out deletes the row.
CREATE TABLE ui_sessions (
    id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX ui_sessions_expiry ON ui_sessions (expires_at);
