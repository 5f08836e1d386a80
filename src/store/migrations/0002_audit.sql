-- The audit trail. Portable SQL: it runs on SQLite and on PostgreSQL.

-- One row per mutating call that reached its handler, written when the call ends.
CREATE TABLE IF NOT EXISTS audit_records (
    id TEXT PRIMARY KEY,
    time_ms BIGINT NOT NULL,
    principal TEXT NOT NULL,
    method TEXT NOT NULL,
    target TEXT NOT NULL,
    request_id TEXT NOT NULL,
    -- `operations/{id}`, or empty when the call started none.
    operation TEXT NOT NULL,
    outcome TEXT NOT NULL,
    provider_request_id TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS audit_records_newest ON audit_records (time_ms, id);
CREATE INDEX IF NOT EXISTS audit_records_operation ON audit_records (operation);

-- The final outcome of an operation, written by the runner when it is done. A table of its
-- own, so that it does not matter whether the call's row or the completion is written first.
CREATE TABLE IF NOT EXISTS audit_completions (
    operation TEXT PRIMARY KEY,
    time_ms BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    provider_request_id TEXT NOT NULL
);
