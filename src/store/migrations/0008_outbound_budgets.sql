-- The outbound-limit turns shared by the replicas of one PostgreSQL store (src/store/budgets.rs):
-- one row per budget of a provider instance (resource '' for a budget of the whole instance),
-- holding the first moment, in microseconds of the database's clock, that no call has reserved.
-- No index besides the key: every reservation updates next_free_us, and an index on it would
-- make each update touch it. Rows idle for a minute are deleted.
CREATE TABLE IF NOT EXISTS outbound_budgets (
    provider TEXT NOT NULL,
    budget TEXT NOT NULL,
    resource TEXT NOT NULL,
    next_free_us BIGINT NOT NULL,
    PRIMARY KEY (provider, budget, resource)
);
-- The replicas alive: each marks itself every second; a replica divides a quota by their
-- number while the store does not answer its reservations.
CREATE TABLE IF NOT EXISTS outbound_replicas (
    replica TEXT PRIMARY KEY,
    seen_us BIGINT NOT NULL
);
