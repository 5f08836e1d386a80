-- The filters ListOperations and ListAuditRecords accept, each answered by an index in the
-- order of their pages (newest first), instead of every row read to find the matches; and
-- the retention sweep's scan of final outcomes by age.
--
-- ListOperations: `principal` has operations_principal_newest (0005); `done` is answered by
-- operations_unfinished (unfinished operations are few) or by the newest-first scan (finished
-- ones are most of them).
CREATE INDEX IF NOT EXISTS operations_target_newest ON operations (target, create_time_ms, id);
CREATE INDEX IF NOT EXISTS operations_verb_newest ON operations (verb, create_time_ms, id);
-- ListAuditRecords: `operation` has audit_records_operation (0002).
CREATE INDEX IF NOT EXISTS audit_records_principal_newest ON audit_records (principal, time_ms, id);
CREATE INDEX IF NOT EXISTS audit_records_method_newest ON audit_records (method, time_ms, id);
CREATE INDEX IF NOT EXISTS audit_records_target_newest ON audit_records (target, time_ms, id);
-- The sweep deletes final outcomes older than `[store] audit_retention`, oldest first. (Finished
-- operations are found through operations_newest and call records through
-- audit_records_newest.)
CREATE INDEX IF NOT EXISTS audit_completions_oldest ON audit_completions (time_ms);
