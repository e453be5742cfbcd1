-- A quiet period before an automatic sync (settings `quiet_period_ms`,
-- `max_quiet_wait_ms`): an automatic trigger moves the invoice's pending sync
-- job to run once the invoice has stopped changing, within a cap counted
-- from the job's creation (workflows/src/ledger/record.rs).
--
-- A job a person expedited ("re-sync now", "send as new", "retry") must not
-- be pushed back by an automatic edit that joins it. Every ledger job kind
-- runs at live priority, so priority cannot tell; the invoice's row names the
-- job a person last expedited instead.
ALTER TABLE ledgerflow.invoice_sync ADD COLUMN expedited_job_id bigint;
