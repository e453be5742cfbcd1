-- End-of-day summaries, and what comes back from providers.
--
-- * summaries / summary_members: one aggregated provider invoice per
--   (connection, business day), and which host invoices it covers. An
--   invoice's membership row is keyed by (connection, invoice) alone, so it
--   can never be counted in two summaries, whatever runs concurrently.
-- * inbound_events: changes that came from a provider (a payment applied in
--   Xero, an invoice fully paid there), for the host to read in order and
--   acknowledge. General on purpose: any provider, any kind.
-- * webhook_deliveries: deliveries already accepted, so a provider's retry
--   of the same delivery is answered 200 and does nothing.
-- * inbound_cursors: how far the periodic pull has read each connection.
--
-- The SQL that uses these tables lives in workflows/src/summary.rs and
-- workflows/src/inbound.rs.

CREATE TABLE ledgerflow.summaries (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    connection_id    bigint      NOT NULL REFERENCES ledgerflow.connections (id) ON DELETE CASCADE,
    tenant_id        text        NOT NULL,
    -- The tenant's local calendar day the summary closes.
    business_date    date        NOT NULL,
    -- assembled: members chosen and frozen, provider invoice not confirmed yet;
    -- sent: the provider invoice exists (external_id); empty: nothing to send.
    status           text        NOT NULL CHECK (status IN ('assembled', 'sent', 'empty')),
    currency         text,
    invoice_count    integer     NOT NULL DEFAULT 0,
    total_minor      bigint      NOT NULL DEFAULT 0,
    -- What the provider invoice is found by if an answer is lost.
    reference        text        NOT NULL,
    external_id      text,
    external_number  text,
    view_url         text,
    -- Paid invoices left for a later summary (another currency, unreadable snapshot).
    deferred_count   integer     NOT NULL DEFAULT 0,
    assembled_at     timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    UNIQUE (connection_id, business_date)
);

CREATE TABLE ledgerflow.summary_members (
    connection_id  bigint      NOT NULL,
    invoice_id     text        NOT NULL,
    summary_id     bigint      NOT NULL REFERENCES ledgerflow.summaries (id) ON DELETE CASCADE,
    -- The snapshot as summarised: a retry of the provider call sends exactly
    -- what was frozen, even if the host edits the invoice meanwhile.
    snapshot       jsonb       NOT NULL,
    total_minor    bigint      NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection_id, invoice_id),
    FOREIGN KEY (connection_id, invoice_id) REFERENCES ledgerflow.invoice_sync (connection_id, invoice_id)
        ON DELETE CASCADE
);

CREATE INDEX summary_members_summary_idx ON ledgerflow.summary_members (summary_id);

CREATE TABLE ledgerflow.inbound_events (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        text        NOT NULL,
    connection_id    bigint      NOT NULL REFERENCES ledgerflow.connections (id) ON DELETE CASCADE,
    -- payment_applied, invoice_paid, ... (see workflows/src/inbound.rs).
    kind             text        NOT NULL CHECK (kind <> ''),
    -- The host's invoice id, when the change is about one.
    invoice_id       text,
    payload          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- The same change seen twice (webhook and pull, or a repeated webhook)
    -- is recorded once: e.g. "xero-payment:<PaymentID>".
    dedup_key        text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    acknowledged_at  timestamptz,
    UNIQUE (connection_id, dedup_key)
);

-- The host's "what is new for me" read: unacknowledged, oldest first.
CREATE INDEX inbound_events_unread_idx ON ledgerflow.inbound_events (tenant_id, id)
    WHERE acknowledged_at IS NULL;

CREATE TABLE ledgerflow.webhook_deliveries (
    provider     text        NOT NULL,
    delivery_id  text        NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    -- Jobs the delivery enqueued, for operators.
    job_ids      bigint[]    NOT NULL DEFAULT '{}',
    PRIMARY KEY (provider, delivery_id)
);

CREATE INDEX webhook_deliveries_received_idx ON ledgerflow.webhook_deliveries USING brin (received_at);

CREATE TABLE ledgerflow.inbound_cursors (
    connection_id  bigint      PRIMARY KEY REFERENCES ledgerflow.connections (id) ON DELETE CASCADE,
    -- Provider changes up to this instant have been read.
    pulled_through timestamptz NOT NULL,
    pulled_at      timestamptz NOT NULL DEFAULT now()
);
