-- Shopify's provider state: the leaky bucket its REST Admin API (and the
-- cost bucket its GraphQL API) limit calls with, and the record of creates
-- whose answer we never saw.
--
-- Shared by every worker process like the rest of provider_state; the SQL
-- that uses these lives in workflows/src/provider_state.rs. No foreign key
-- to the ledger's connections, on purpose (see 20261123000003).

-- A leaky bucket per scope, on the scope's provider_limits row (whose lock
-- already serialises grants): `bucket_level_milli` is the bucket's content
-- in thousandths of a call at `bucket_updated_at`; it drains at the policy's
-- leak rate. Integers, so N processes compute the same level exactly.
ALTER TABLE ledgerflow.provider_limits
    ADD COLUMN bucket_level_milli bigint NOT NULL DEFAULT 0,
    ADD COLUMN bucket_updated_at  timestamptz,
    -- What the provider last said the bucket held ("32/40"), for operators.
    ADD COLUMN bucket_used        integer,
    ADD COLUMN bucket_capacity    integer;

-- Creates sent to a provider that has no idempotency key (Shopify orders
-- and draft orders) whose outcome we have not seen. A row means "this
-- create may have happened": before the invoice's record is created again,
-- the adapter searches the provider for the record tagged `create_tag`
-- (each attempt tags its create with a fresh one), created no earlier than
-- `started_at` less a margin for clock skew, and adopts or cancels it. The
-- row is deleted once an answer, or that search, says what happened.
-- `search_after`: a request that timed out may still be running at the
-- provider; searching before it must have finished could miss its record.
CREATE TABLE ledgerflow.provider_write_intents (
    connection_id  bigint      NOT NULL,
    create_tag     text        NOT NULL,
    invoice_ref    text        NOT NULL,
    kind           text        NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    search_after   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (connection_id, create_tag)
);

CREATE INDEX provider_write_intents_invoice_idx
    ON ledgerflow.provider_write_intents (connection_id, invoice_ref);
