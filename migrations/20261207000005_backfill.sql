-- Backfills: historical invoices of a date range pushed to a provider in
-- chunks, within what the connection's daily quota leaves after a reserve
-- for live syncs. The rules are workflows' backfill module; these tables
-- keep the plan, the progress and the outcome.
--
-- A backfill's chunks run one at a time (their jobs share the unique key
-- `backfill:<id>`); each chunk's progress (keyset cursor, counts) moves in
-- the same transaction that records a batch's outcome, so a crash repeats
-- at most the one batch in flight, and that batch is recovered by its
-- idempotency key and a lookup by Reference, never created twice.

CREATE TABLE ledgerflow.backfills (
    id                  bigserial   PRIMARY KEY,
    tenant_id           text        NOT NULL REFERENCES ledgerflow.tenants (id),
    connection_id       bigint      NOT NULL REFERENCES ledgerflow.connections (id) ON DELETE CASCADE,
    from_date           date        NOT NULL,
    to_date             date        NOT NULL,
    sales_channel       text,
    location            text,
    chunk_days          integer     NOT NULL CHECK (chunk_days > 0),
    -- auto: the customer's name (found or created by the provider);
    -- location: the location's name; generic: one named contact for all.
    contact_mapping     text        NOT NULL CHECK (contact_mapping IN ('auto', 'location', 'generic')),
    generic_contact     text,
    only_approved       boolean     NOT NULL DEFAULT false,
    -- view: the host's view (source_view); pushed: ledgerflow.backfill_snapshots.
    source              text        NOT NULL CHECK (source IN ('view', 'pushed')),
    source_view         text,
    batch_size          integer     NOT NULL CHECK (batch_size BETWEEN 1 AND 50),
    daily_quota         integer     NOT NULL CHECK (daily_quota > 0),
    reserve_percent     integer     NOT NULL CHECK (reserve_percent BETWEEN 0 AND 95),
    quota_recheck_secs  integer     NOT NULL CHECK (quota_recheck_secs > 0),
    status              text        NOT NULL DEFAULT 'queued' CHECK (status IN
                            ('queued', 'running', 'paused', 'completed', 'failed', 'cancelled')),
    -- Paused: why, and when it tries again by itself. Failed: why.
    status_reason       text,
    resumes_at          timestamptz,
    chunks_total        integer     NOT NULL,
    chunks_done         integer     NOT NULL DEFAULT 0,
    invoices_found      integer     NOT NULL DEFAULT 0,
    invoices_synced     integer     NOT NULL DEFAULT 0,
    invoices_skipped    integer     NOT NULL DEFAULT 0,
    invoices_failed     integer     NOT NULL DEFAULT 0,
    -- Provider calls this backfill spent (batches, lookups, quota probes).
    calls_spent         integer     NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    finished_at         timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (to_date >= from_date)
);

CREATE INDEX backfills_connection_idx ON ledgerflow.backfills (connection_id, id DESC);

CREATE TABLE ledgerflow.backfill_chunks (
    backfill_id      bigint      NOT NULL REFERENCES ledgerflow.backfills (id) ON DELETE CASCADE,
    position         integer     NOT NULL,
    from_date        date        NOT NULL,
    to_date          date        NOT NULL,
    status           text        NOT NULL DEFAULT 'queued' CHECK (status IN
                         ('queued', 'running', 'paused', 'completed', 'failed', 'cancelled')),
    job_id           bigint,
    -- Keyset cursor: the last invoice whose outcome is recorded.
    cursor_issued_on date,
    cursor_invoice   text,
    -- A batch sent whose answer is not recorded yet: {"key", "invoices": [{"invoice_id","reference"}]}.
    in_flight        jsonb,
    -- Invoices of a lost batch found in the provider and linked; counted as
    -- synced when the scan reaches them.
    adopted          text[]      NOT NULL DEFAULT '{}',
    -- Consecutive waits for quota: the recheck interval doubles with each.
    quota_waits      integer     NOT NULL DEFAULT 0,
    found            integer     NOT NULL DEFAULT 0,
    synced           integer     NOT NULL DEFAULT 0,
    skipped          integer     NOT NULL DEFAULT 0,
    failed           integer     NOT NULL DEFAULT 0,
    error            text,
    started_at       timestamptz,
    finished_at      timestamptz,
    PRIMARY KEY (backfill_id, position)
);

-- Invoices a backfill could not sync, with the provider's reason.
CREATE TABLE ledgerflow.backfill_failures (
    backfill_id  bigint      NOT NULL REFERENCES ledgerflow.backfills (id) ON DELETE CASCADE,
    invoice_id   text        NOT NULL,
    position     integer     NOT NULL,
    reason       text        NOT NULL,
    raw_error    text,
    at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (backfill_id, invoice_id)
);

-- Snapshots pushed by a host that prefers pushing to exposing a view; the
-- same columns as the view contract (docs/host_view.sql).
CREATE TABLE ledgerflow.backfill_snapshots (
    tenant        text        NOT NULL REFERENCES ledgerflow.tenants (id),
    invoice_id    text        NOT NULL,
    issued_on     date        NOT NULL,
    sales_channel text,
    location      text,
    approved      boolean     NOT NULL DEFAULT false,
    snapshot      jsonb       NOT NULL,
    pushed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, invoice_id)
);

CREATE INDEX backfill_snapshots_range_idx ON ledgerflow.backfill_snapshots (tenant, issued_on, invoice_id);

-- "Ready to sync": invoices a person approved for the next "only approved"
-- backfill of the connection; withdrawn by deleting the row.
CREATE TABLE ledgerflow.backfill_approvals (
    connection_id  bigint      NOT NULL REFERENCES ledgerflow.connections (id) ON DELETE CASCADE,
    invoice_id     text        NOT NULL,
    approved_by    text,
    approved_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection_id, invoice_id)
);
