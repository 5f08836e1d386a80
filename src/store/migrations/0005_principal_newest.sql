-- ListOperations shows a caller the operations it started, newest first: the principal's own
-- rows in order, instead of every row read to find them.
CREATE INDEX IF NOT EXISTS operations_principal_newest ON operations (principal, create_time_ms, id);
