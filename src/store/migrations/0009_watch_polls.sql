-- The fleet-wide poller of watched streams (PostgreSQL, several replicas): one replica at a
-- time polls a stream that has watchers anywhere, the holder of its lease, and stores each read
-- here for the others. Lease ends and read times are on the database's clock. A row goes when
-- its last holder stops with no interest left.
CREATE TABLE IF NOT EXISTS watch_polls (
    stream TEXT PRIMARY KEY,
    holder TEXT,
    lease_until_ms BIGINT NOT NULL DEFAULT 0,
    -- Bumped by each stored read: a replica re-reads the row when it changed.
    version BIGINT NOT NULL DEFAULT 0,
    -- When the stored read started, and what it found (JSON: the stream or the error).
    read_time_ms BIGINT NOT NULL DEFAULT 0,
    record TEXT
);
-- Which replicas have watchers of a stream, each until its interest lapses unless renewed.
CREATE TABLE IF NOT EXISTS watch_interest (
    stream TEXT NOT NULL,
    replica TEXT NOT NULL,
    until_ms BIGINT NOT NULL,
    PRIMARY KEY (stream, replica)
);
