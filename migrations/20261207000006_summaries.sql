-- End-of-day summaries: one aggregated provider invoice per (connection,
-- business day), and which host invoices it covers. An invoice's
-- membership row is keyed by (connection, invoice) alone, so it can never
-- be counted in two summaries, whatever runs concurrently.

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

-- `ledgerflow summary list`: the job that sent each day's summary, found by
-- its unique key among finished jobs (only end-of-day summaries indexed).
CREATE INDEX finished_jobs_summary_key_idx ON ledgerflow.finished_jobs (unique_key)
    WHERE kind = 'end-of-day-summary';
