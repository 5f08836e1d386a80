-- Every insert of an operation and every save of its state wrote a page of this index too
-- (issue 7 (d): a WAL frame per operation per group commit). Its readers (lease renewal,
-- release, the cancellation poll) all ask for `owner = $x AND done = 0`, which
-- `operations_unfinished (done, id)` answers by reading the unfinished operations only.
DROP INDEX IF EXISTS operations_owner;
