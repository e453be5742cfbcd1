-- A host that is not written in Rust records a trigger through ledgerflow's
-- SQL face, in its own transaction, and reads the invoice's sync dialog:
--
--   psql "$DATABASE_URL" -X -v ON_ERROR_STOP=1 -v tenant=shop-42 -f docs/examples/host_trigger.sql
--
-- The snapshot's format: docs/snapshot.schema.json. Run by
-- workflows/tests/sql_face.rs against a real database.

\set snapshot '{"schema_version": 1, "invoice_id": "INV-1001", "number": "1001", "currency": "NZD", "issued_on": "2026-12-01", "status": "issued", "customer": {"customer_id": "C-7", "name": "Ann Rider", "email": "ann@example.com"}, "lines": [{"line_id": "L1", "sku": "TUBE-700", "description": "Inner tube 700c", "quantity": 2000, "unit_price_minor": 1250, "tax_code": "GST", "tax_minor": 375}], "payments": [], "totals": {"subtotal": 2500, "discount_total": 0, "tax_total": 375, "total": 2875}}'

BEGIN;
-- ... the host saves the invoice here, in the same transaction ...
SELECT jsonb_pretty(ledgerflow.on_host_trigger(
    tenant   => :'tenant',
    trigger  => 'job_created',        -- as the sync dialog's JSON spells it
    snapshot => :'snapshot',
    label    => 'Job card opened'));  -- optional; action_override => true / false too
COMMIT;

-- The dialog of the invoice on the tenant's first connection.
SELECT jsonb_pretty(ledgerflow.sync_dialog(
    connection_id => (SELECT id FROM ledgerflow.connections WHERE tenant_id = :'tenant' ORDER BY id LIMIT 1),
    invoice_id    => 'INV-1001',
    history_limit => 5));
