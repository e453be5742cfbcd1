-- First sync (import) of a connection: the provider's chart of accounts,
-- tax rates, items, contacts, invoices and payments read page by page
-- within the daily quota, linked to the host's records, and the host's
-- items exported. The rules are workflows' import module; these tables
-- keep the plan, the progress, what was imported and what needs a person.
--
-- An import runs as one job at a time per connection (unique key
-- `import:<connection>`); each page's records and the cursor's move commit
-- in one transaction, fenced on the cursor the page was read at, so a
-- worker killed mid-import repeats at most one (read-only) page.

CREATE TABLE ledgerflow.imports (
    id                  bigserial   PRIMARY KEY,
    tenant_id           text        NOT NULL REFERENCES ledgerflow.tenants (id),
    connection_id       bigint      NOT NULL REFERENCES ledgerflow.connections (id) ON DELETE CASCADE,
    status              text        NOT NULL DEFAULT 'queued' CHECK (status IN
                            ('queued', 'running', 'paused', 'completed', 'failed', 'cancelled')),
    -- Paused: why, and when it tries again by itself. Failed: why.
    status_reason       text,
    resumes_at          timestamptz,
    -- The step the import is at, and the provider's page within it (1-based).
    phase               text        NOT NULL DEFAULT 'accounts' CHECK (phase IN
                            ('accounts', 'tax_rates', 'items', 'contacts', 'invoices', 'payments',
                             'link', 'export_items', 'done')),
    page                integer     NOT NULL DEFAULT 1 CHECK (page >= 1),
    -- Where the host's records are read from (as a backfill's source).
    source              text        NOT NULL CHECK (source IN ('view', 'pushed')),
    source_view         text,
    daily_quota         integer     NOT NULL CHECK (daily_quota > 0),
    reserve_percent     integer     NOT NULL CHECK (reserve_percent BETWEEN 0 AND 95),
    quota_recheck_secs  integer     NOT NULL CHECK (quota_recheck_secs > 0),
    quota_waits         integer     NOT NULL DEFAULT 0,
    calls_spent         integer     NOT NULL DEFAULT 0,
    -- What changed, by kind (new / updated / unchanged), links made, reviews.
    counts              jsonb       NOT NULL DEFAULT '{}',
    job_id              bigint,
    last_error          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    finished_at         timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX imports_connection_idx ON ledgerflow.imports (connection_id, id DESC);
-- One import at a time per connection: starting again joins the open one.
CREATE UNIQUE INDEX imports_one_open_idx ON ledgerflow.imports (connection_id)
    WHERE status IN ('queued', 'running', 'paused');

-- The provider's records as last imported: the chart (accounts, tax rates)
-- pushes are checked against, and what the links were made from.
CREATE TABLE ledgerflow.provider_records (
    connection_id       bigint      NOT NULL REFERENCES ledgerflow.connections (id) ON DELETE CASCADE,
    tenant_id           text        NOT NULL,
    kind                text        NOT NULL CHECK (kind IN
                            ('account', 'tax_rate', 'item', 'contact', 'invoice', 'payment')),
    external_id         text        NOT NULL,
    -- Account code, tax type, item code, contact number, invoice number.
    code                text,
    name                text,
    email               text,
    reference           text,
    status              text,
    -- Tax rates: basis points (1500 = 15 %).
    rate_bps            bigint,
    currency            text,
    total_minor         bigint,
    amount_paid_minor   bigint,
    -- Invoices: their contact; payments: their invoice.
    parent_external_id  text,
    -- What the record looked like, to tell updated from unchanged.
    digest              text        NOT NULL,
    first_import_id     bigint,
    last_import_id      bigint,
    imported_at         timestamptz NOT NULL DEFAULT now(),
    changed_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection_id, kind, external_id)
);

CREATE INDEX provider_records_code_idx ON ledgerflow.provider_records (connection_id, kind, code);

-- A provider record that matched more than one host record (or a host
-- record another provider record matched too): listed for a person to
-- decide, never guessed.
CREATE TABLE ledgerflow.import_reviews (
    connection_id       bigint      NOT NULL REFERENCES ledgerflow.connections (id) ON DELETE CASCADE,
    tenant_id           text        NOT NULL,
    kind                text        NOT NULL CHECK (kind IN ('invoice', 'contact', 'payment', 'item')),
    external_id         text        NOT NULL,
    -- What a person recognises: the number, the name.
    external_label      text,
    candidates          text[]      NOT NULL,
    reason              text        NOT NULL,
    import_id           bigint,
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection_id, kind, external_id)
);
