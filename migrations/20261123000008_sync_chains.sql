-- Sync chains: events written by chain steps that are not invoice writes.
--
-- payment: a push-payment step applied (or reversed) payments on the linked record;
-- complete_draft: a complete-draft step turned the linked draft into a paid order.
-- Both are written as finished events by their step, never left pending, so
-- the invoice's sync job (which picks the newest open event) never sees them.
ALTER TABLE ledgerflow.sync_events DROP CONSTRAINT IF EXISTS sync_events_operation_check;
ALTER TABLE ledgerflow.sync_events ADD CONSTRAINT sync_events_operation_check
    CHECK (operation IN ('upsert', 'send_as_new', 'void', 'payment', 'complete_draft'));
