-- Host callbacks: inbound events also POSTed to a URL the host chose,
-- signed with HMAC-SHA256, by a durable `notify-host` job.
--
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

ALTER TABLE ledgerflow.inbound_events ADD COLUMN callback_delivered_at timestamptz;
CREATE INDEX inbound_events_undelivered_idx ON ledgerflow.inbound_events (tenant_id, id)
    WHERE callback_delivered_at IS NULL;

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
