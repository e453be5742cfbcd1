-- Reconciliation runs: a connection's linked invoices compared with the
-- provider's (total and amount paid), what differed and the way out of
-- each difference. Written by the `reconcile-connection` job (periodic,
-- or started by `ledgerflow reconcile`); the rules are workflows'
-- reconcile module. Payments deleted or changed in the provider are
-- reconciled by the same module on the tables they live in
-- (payment_links, inbound_events, sync_events): this table only keeps
-- what each run found, for operators.
CREATE TABLE ledgerflow.reconcile_runs (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id         text        NOT NULL,
    connection_id     bigint      NOT NULL REFERENCES ledgerflow.connections (id) ON DELETE CASCADE,
    -- The job that ran it (an operator waits for its run by this id).
    job_id            bigint,
    status            text        NOT NULL DEFAULT 'running'
                          CHECK (status IN ('running', 'completed', 'skipped', 'failed')),
    -- Skipped: why (the provider's day quota is too low for the run).
    -- Failed: the error of the attempt that was interrupted.
    status_reason     text,
    -- Linked invoices compared, and those left out (no snapshot from the host).
    compared          integer     NOT NULL DEFAULT 0,
    not_compared      integer     NOT NULL DEFAULT 0,
    payments_removed  integer     NOT NULL DEFAULT 0,
    payments_changed  integer     NOT NULL DEFAULT 0,
    provider_calls    integer     NOT NULL DEFAULT 0,
    -- The differences found: workflows' reconcile::Mismatch, as JSON.
    mismatches        jsonb       NOT NULL DEFAULT '[]'::jsonb,
    started_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz
);

-- "The newest run of a connection", and an operator waiting for a job's run.
CREATE INDEX reconcile_runs_connection_idx ON ledgerflow.reconcile_runs (connection_id, id DESC);
CREATE INDEX reconcile_runs_job_idx ON ledgerflow.reconcile_runs (job_id);

COMMENT ON TABLE ledgerflow.reconcile_runs IS
    'Reconciliation runs: linked invoices compared with the provider''s, and each difference with its way out.';

-- A provider invoice read back is reconciled against the events already
-- told to the host about that invoice (payments applied, changed, removed).
CREATE INDEX inbound_events_invoice_idx ON ledgerflow.inbound_events (connection_id, invoice_id, id);
