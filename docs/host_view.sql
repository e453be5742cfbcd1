-- The host side of a backfill: a sample host schema and the view ledgerflow
-- reads historical invoices from. This is the HOST's schema, not a
-- ledgerflow migration: a host adapts the view to its own tables; the
-- ledgerflow tests and `ledgerflow backfill start` read it as the contract.
--
-- The contract (default name host.ledgerflow_invoices, --view to change it):
--
--   invoice_id     text     the host's invoice id; equals snapshot->>'invoice_id'
--   tenant         text     the ledgerflow tenant (shop) the invoice belongs to
--   issued_on      date     the invoice's day in the tenant's calendar (the range filter)
--   sales_channel  text     nullable; matched by --sales-channel
--   location       text     nullable; matched by --location
--   approved       boolean  the host's own "ready to sync" (ledgerflow's
--                           `backfill approve` marks add to it)
--   snapshot       jsonb    the invoice snapshot, exactly as a trigger carries it
--                           (schema_version 1: lines, discounts, customer, totals
--                           in integer minor units; see workflows/src/invoice.rs)
--
-- Backfill reads it page by page, ordered by (issued_on, invoice_id) with a
-- keyset, filtered by tenant and date: index the underlying table on
-- (tenant, issued_on, invoice_id) and every page stays cheap.

CREATE SCHEMA IF NOT EXISTS host;

CREATE TABLE IF NOT EXISTS host.invoices (
    id             text        PRIMARY KEY,
    shop_id        text        NOT NULL,
    issued_on      date        NOT NULL,
    channel        text,
    branch         text,
    ready_to_sync  boolean     NOT NULL DEFAULT false,
    -- The host keeps its own rows however it likes; this sample keeps the
    -- snapshot it would send with a trigger.
    document       jsonb       NOT NULL
);

CREATE INDEX IF NOT EXISTS invoices_shop_day_idx ON host.invoices (shop_id, issued_on, id);

CREATE OR REPLACE VIEW host.ledgerflow_invoices AS
SELECT id            AS invoice_id,
       shop_id       AS tenant,
       issued_on,
       channel       AS sales_channel,
       branch        AS location,
       ready_to_sync AS approved,
       document      AS snapshot
FROM host.invoices;
