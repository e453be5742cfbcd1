-- The sync ledger's tables: tenants, their provider connections and
-- settings, the per-(connection, invoice) sync state, the history of sync
-- events, and the links between host records and provider records.
--
-- The rules (snapshot checks, trigger decisions, superseding) are the SQL
-- face's functions (ledgerflow.on_host_trigger, record_trigger, ...), which
-- the Rust ledger wraps; these tables keep their outcome.
--
-- Lock order, everywhere: invoice_sync row, then sync_events, then jobs. The
-- invoice_sync row lock is what makes "record a trigger" and "a job picks the
-- newest pending event" see each other.

CREATE TABLE ledgerflow.tenants (
    id          text        PRIMARY KEY,
    name        text        NOT NULL,
    -- IANA name; the tenant's "today" (settings validation, end-of-day summary).
    time_zone   text        NOT NULL DEFAULT 'UTC',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledgerflow.connections (
    id             bigserial   PRIMARY KEY,
    tenant_id      text        NOT NULL REFERENCES ledgerflow.tenants (id),
    provider       text        NOT NULL CHECK (provider IN
                       ('shopify', 'lightspeed_r', 'lightspeed_x', 'xero', 'saledock', 'quickbooks')),
    status         text        NOT NULL DEFAULT 'active'
                       CHECK (status IN ('active', 'reconnect_needed', 'disabled')),
    -- Why the status is not active ("refresh token rejected", "disabled by the user").
    status_reason  text,
    -- ConnectionSettings as JSON, tagged by provider; validated before every write.
    settings       jsonb       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX connections_tenant_idx ON ledgerflow.connections (tenant_id);

-- One row per (connection, invoice) the host ever sent a trigger for.
CREATE TABLE ledgerflow.invoice_sync (
    connection_id    bigint      NOT NULL REFERENCES ledgerflow.connections (id) ON DELETE CASCADE,
    invoice_id       text        NOT NULL,
    -- The invoice's own auto-sync toggle (the sync dialog's switch).
    auto_sync        boolean     NOT NULL DEFAULT true,
    -- The newest snapshot the host sent; the one a sync pushes.
    latest_snapshot  jsonb,
    -- The snapshot last accepted by the provider: change details diff against it.
    synced_snapshot  jsonb,
    synced_at        timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- The job a person last expedited ("re-sync now", "send as new",
    -- "retry"): an automatic edit that joins it must not push it back into
    -- a quiet period. Every ledger job kind runs at live priority, so
    -- priority cannot tell.
    expedited_job_id bigint,
    PRIMARY KEY (connection_id, invoice_id)
);

CREATE TABLE ledgerflow.sync_events (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    connection_id     bigint      NOT NULL,
    invoice_id        text        NOT NULL,
    -- A host trigger (items_changed, job_cancelled, ...) or a manual action
    -- (manual_resync, manual_send_as_new, manual_retry).
    trigger           text        NOT NULL,
    -- What the dialog shows: the host's words if it sent some ("Invoice item added").
    trigger_label     text        NOT NULL,
    -- awaiting_approval / approved: held by the connection's "approve
    -- before sync" (never enqueued until `ledgerflow.sync_approved`).
    status            text        NOT NULL CHECK (status IN
                          ('pending', 'syncing', 'synced', 'failed', 'superseded', 'skipped',
                           'awaiting_approval', 'approved')),
    -- Skipped: a stable code and the sentence shown.
    skip_reason       text,
    skip_message      text,
    -- upsert: create or update (or cancel and replace) the provider's record;
    -- send_as_new: create a new record ignoring the link (void_existing: void the old one first);
    -- void: void / cancel / delete the provider's record.
    -- Written finished by their chain step, never left pending (so the
    -- invoice's sync job, which picks the newest open event, never sees them):
    -- payment: a push-payment step applied (or reversed) payments on the linked record;
    -- complete_draft: a complete-draft step turned the linked draft into a paid order.
    operation         text        NOT NULL CHECK (operation IN
                          ('upsert', 'send_as_new', 'void', 'payment', 'complete_draft')),
    void_existing     boolean     NOT NULL DEFAULT false,
    -- The snapshot this event carries; when it syncs, the snapshot actually pushed.
    snapshot          jsonb       NOT NULL,
    job_id            bigint,
    -- Provider calls made for this event (rate-limit waits and reconnect holds not counted).
    attempts          integer     NOT NULL DEFAULT 0,
    response_summary  jsonb,
    change_details    jsonb,
    -- The last error: on a failed event the reason it failed; on a pending
    -- one the error of an attempt the queue will retry.
    error_class       text,
    error_message     text,
    raw_error         text,
    superseded_by     bigint      REFERENCES ledgerflow.sync_events (id),
    retry_of          bigint      REFERENCES ledgerflow.sync_events (id),
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    -- The run the event belongs to, when a host trigger started a chain
    -- for it: the dialog shows which step the event waits for.
    workflow_run_id   bigint,
    -- An approved event a send-approved job sent in a batch whose answer is
    -- not recorded yet: the batch's idempotency key (status syncing).
    batch_key         text,
    FOREIGN KEY (connection_id, invoice_id) REFERENCES ledgerflow.invoice_sync (connection_id, invoice_id)
        ON DELETE CASCADE
);

-- History pages (newest first) and "the newest open event".
CREATE INDEX sync_events_invoice_idx ON ledgerflow.sync_events (connection_id, invoice_id, id DESC);
CREATE INDEX sync_events_open_idx ON ledgerflow.sync_events (connection_id, invoice_id, id DESC)
    WHERE status IN ('pending', 'syncing');

-- Host record <-> provider record, for records whose host id is unique
-- across the tenant (invoices, customers, items by SKU).
CREATE TABLE ledgerflow.links (
    connection_id    bigint      NOT NULL REFERENCES ledgerflow.connections (id) ON DELETE CASCADE,
    entity_type      text        NOT NULL CHECK (entity_type IN ('invoice', 'customer', 'item')),
    host_id          text        NOT NULL,
    external_id      text        NOT NULL,
    external_number  text,
    view_url         text,
    last_push_at     timestamptz,
    last_pull_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection_id, entity_type, host_id)
);

-- Webhooks arrive with the provider's id: find the host record from it.
CREATE INDEX links_external_idx ON ledgerflow.links (connection_id, entity_type, external_id);

-- A payment's link, keyed by the invoice it belongs to: hosts number
-- payments per invoice (P1, P2 on every invoice), so a payment is
-- identified within its invoice, not across the connection.
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

-- A paused connection: its jobs (hold key 'connection:N') wait as held
-- until it is resumed; its syncs show as pending, waiting, with the reason.
CREATE TABLE ledgerflow.connection_pauses (
    connection_id bigint      PRIMARY KEY REFERENCES ledgerflow.connections (id) ON DELETE CASCADE,
    hold_key      text        GENERATED ALWAYS AS ('connection:' || connection_id) STORED UNIQUE,
    reason        text        NOT NULL,
    paused_by     text        NOT NULL,
    paused_at     timestamptz NOT NULL DEFAULT now()
);
