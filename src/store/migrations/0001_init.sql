-- The durable state of streamgate. Portable SQL: it runs on SQLite and on PostgreSQL.

-- Long-running operations. `record` holds the whole operation as JSON; the other columns
-- exist to be queried or to be written by someone other than the runner.
CREATE TABLE IF NOT EXISTS operations (
    id TEXT PRIMARY KEY,
    principal TEXT NOT NULL,
    request_id TEXT,
    provider TEXT NOT NULL,
    verb TEXT NOT NULL,
    target TEXT NOT NULL,
    done BIGINT NOT NULL,
    -- Set by CancelOperation while the runner may hold the record: never in `record`.
    cancel_requested BIGINT NOT NULL,
    create_time_ms BIGINT NOT NULL,
    update_time_ms BIGINT NOT NULL,
    record TEXT NOT NULL
);

-- AIP-155: one operation per (principal, request_id).
CREATE UNIQUE INDEX IF NOT EXISTS operations_request_id ON operations (principal, request_id);
CREATE INDEX IF NOT EXISTS operations_unfinished ON operations (done, id);
CREATE INDEX IF NOT EXISTS operations_newest ON operations (create_time_ms, id);

-- The streams of `local` provider instances.
CREATE TABLE IF NOT EXISTS local_streams (
    provider TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    etag TEXT NOT NULL,
    version BIGINT NOT NULL,
    state TEXT NOT NULL,
    media_type TEXT NOT NULL,
    data_retention_hours BIGINT NOT NULL,
    device_name TEXT NOT NULL,
    kms_key_id TEXT NOT NULL,
    tags TEXT NOT NULL,
    create_time_ms BIGINT NOT NULL,
    update_time_ms BIGINT NOT NULL,
    -- The operation that created the stream, so that a resumed create recognises its own row.
    created_by TEXT NOT NULL,
    -- The operation that changed the stream last, so that a resumed step sees it is applied.
    last_op TEXT NOT NULL,
    PRIMARY KEY (provider, stream_id)
);
