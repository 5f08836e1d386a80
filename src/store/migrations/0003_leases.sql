-- Several replicas share one PostgreSQL: each unfinished operation is driven by one process at a
-- time, the holder of its lease. The owner renews the lease while it runs; an operation whose
-- lease ran out (its process died) is adopted by another. Rows from before this migration have
-- no owner and are adopted at once.
ALTER TABLE operations ADD COLUMN owner TEXT;
ALTER TABLE operations ADD COLUMN lease_until_ms BIGINT NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS operations_owner ON operations (owner, done);
