-- A payment is identified within its invoice, not across the connection.
--
-- Hosts number payments per invoice (P1, P2 on every invoice). Keyed by
-- (connection, host id) alone, the first invoice's P1 hid every later
-- invoice's P1: the ledger took it as already applied and skipped it. A
-- payment's link now lives in its own table, keyed by the invoice it
-- belongs to; `ledgerflow.links` keeps the records whose host id is unique
-- across the tenant (invoices, customers, items by SKU).

CREATE TABLE ledgerflow.payment_links (
    connection_id    bigint      NOT NULL REFERENCES ledgerflow.connections (id) ON DELETE CASCADE,
    invoice_id       text        NOT NULL,
    payment_id       text        NOT NULL,
    external_id      text        NOT NULL,
    external_number  text,
    view_url         text,
    -- What was applied, to show what a reversal takes back.
    amount_minor     bigint      NOT NULL,
    last_push_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection_id, invoice_id, payment_id)
);

-- A pull of the provider's payments finds the ones the host pushed by id.
CREATE INDEX payment_links_external_idx ON ledgerflow.payment_links (connection_id, external_id);

INSERT INTO ledgerflow.payment_links
    (connection_id, invoice_id, payment_id, external_id, external_number, view_url,
     amount_minor, last_push_at, created_at, updated_at)
SELECT connection_id, coalesce(invoice_id, ''), host_id, external_id, external_number, view_url,
       coalesce(amount_minor, 0), last_push_at, created_at, updated_at
FROM ledgerflow.links
WHERE entity_type = 'payment';

DELETE FROM ledgerflow.links WHERE entity_type = 'payment';
DROP INDEX ledgerflow.links_payments_of_invoice_idx;
ALTER TABLE ledgerflow.links DROP COLUMN invoice_id, DROP COLUMN amount_minor;
ALTER TABLE ledgerflow.links DROP CONSTRAINT links_entity_type_check;
ALTER TABLE ledgerflow.links ADD CONSTRAINT links_entity_type_check
    CHECK (entity_type IN ('invoice', 'customer', 'item'));
