-- What comes back from providers, and how the host hears of it.
--
-- * inbound_events: changes that came from a provider (a payment applied in
--   Xero, an invoice fully paid there), for the host to read in order and
--   acknowledge. General on purpose: any provider, any kind.
-- * webhook_deliveries: deliveries already accepted, so a provider's retry
--   of the same delivery is answered 200 and does nothing.
-- * inbound_cursors: how far the periodic pull has read each connection.
-- * host_callbacks: inbound events also POSTed to a URL the host chose,
--   signed with HMAC-SHA256, by a durable `notify-host` job.

CREATE TABLE ledgerflow.inbound_events (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        text        NOT NULL,
    connection_id    bigint      NOT NULL REFERENCES ledgerflow.connections (id) ON DELETE CASCADE,
    -- payment_applied, invoice_paid, ... (workflows' inbound module).
    kind             text        NOT NULL CHECK (kind <> ''),
    -- The host's invoice id, when the change is about one.
    invoice_id       text,
    payload          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- The same change seen twice (webhook and pull, or a repeated webhook)
    -- is recorded once: e.g. "xero-payment:<PaymentID>".
    dedup_key        text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    acknowledged_at  timestamptz,
    -- When the host's callback URL received the event (host_callbacks).
    callback_delivered_at timestamptz,
    UNIQUE (connection_id, dedup_key)
);

-- The host's "what is new for me" read: unacknowledged, oldest first.
CREATE INDEX inbound_events_unread_idx ON ledgerflow.inbound_events (tenant_id, id)
    WHERE acknowledged_at IS NULL;
CREATE INDEX inbound_events_undelivered_idx ON ledgerflow.inbound_events (tenant_id, id)
    WHERE callback_delivered_at IS NULL;

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

-- One row per tenant. Events recorded from `from_event_id` on are delivered
-- (earlier ones stay readable through the client crate). The secret is
-- sealed with LEDGERFLOW_SECRET_KEY like provider credentials.
CREATE TABLE ledgerflow.host_callbacks (
    tenant_id      text        PRIMARY KEY REFERENCES ledgerflow.tenants (id) ON DELETE CASCADE,
    url            text        NOT NULL CHECK (url ~ '^https?://'),
    sealed_secret  bytea       NOT NULL,
    from_event_id  bigint      NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Every path that records an inbound event (webhooks, pulls) enqueues the
-- tenant's delivery job in the same transaction; one pending job per
-- tenant delivers everything outstanding, oldest first.
CREATE FUNCTION ledgerflow.inbound_event_notify_host() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ledgerflow.host_callbacks WHERE tenant_id = NEW.tenant_id) THEN
        PERFORM ledgerflow.enqueue(kind => 'notify-host',
                                   payload => jsonb_build_object('tenant', NEW.tenant_id),
                                   tenant => NEW.tenant_id,
                                   unique_key => 'notify-host:' || NEW.tenant_id);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER inbound_events_notify_host AFTER INSERT ON ledgerflow.inbound_events
    FOR EACH ROW EXECUTE FUNCTION ledgerflow.inbound_event_notify_host();
