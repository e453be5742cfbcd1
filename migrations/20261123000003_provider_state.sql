-- Provider state shared by every worker process: rate-limit windows per
-- connection (and per app), and each connection's OAuth credentials,
-- encrypted at rest.
--
-- Connections are referenced by `connection_id` without a foreign key on
-- purpose: provider state may be written before (or outlive) the ledger's
-- connection row, and adapters must not depend on the ledger's tables.
-- The SQL that uses these tables lives in workflows/src/provider_state.rs.

CREATE SCHEMA IF NOT EXISTS ledgerflow;

-- One row per limit scope: "xero:connection:42" (a Xero tenant through one
-- connection) or "xero:app" (the app-wide limit). The row is the lock that
-- serialises slot grants for its scope across processes.
CREATE TABLE ledgerflow.provider_limits (
    scope                 text        PRIMARY KEY,
    connection_id         bigint,
    -- No call before this instant: a 429's Retry-After, or the daily quota
    -- gone (X-Rate-Limit-Problem: day) until it returns.
    paused_until          timestamptz,
    pause_reason          text,
    -- What the provider's headers said last, for operators.
    minute_remaining      integer,
    day_remaining         integer,
    app_minute_remaining  integer,
    observed_at           timestamptz,
    updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX provider_limits_connection_idx ON ledgerflow.provider_limits (connection_id);

-- Calls granted per scope: a sliding log, so the minute and day windows are
-- rolling like Xero's (a fixed window would allow twice the rate across a
-- window boundary). Rows older than a day are pruned on acquire.
CREATE TABLE ledgerflow.provider_limit_calls (
    scope  text        NOT NULL,
    at     timestamptz NOT NULL
);

CREATE INDEX provider_limit_calls_scope_at_idx ON ledgerflow.provider_limit_calls (scope, at);

-- Calls in flight per scope (concurrency cap). A slot expires on its own so
-- a process that died mid-call does not hold it forever.
CREATE TABLE ledgerflow.provider_limit_slots (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope       text        NOT NULL,
    expires_at  timestamptz NOT NULL
);

CREATE INDEX provider_limit_slots_scope_idx ON ledgerflow.provider_limit_slots (scope, expires_at);

-- OAuth credentials per connection. `sealed_tokens` is an AEAD box
-- (XChaCha20-Poly1305, key from LEDGERFLOW_SECRET_KEY, the connection id as
-- associated data) holding the access and refresh tokens; nothing secret is
-- stored in clear. Refreshes lock the row (SELECT ... FOR UPDATE) so one
-- single-use refresh token is never presented twice by two processes;
-- `generation` counts refreshes so a waiter can tell one happened.
CREATE TABLE ledgerflow.provider_credentials (
    connection_id      bigint      PRIMARY KEY,
    provider           text        NOT NULL,
    sealed_tokens      bytea       NOT NULL,
    key_id             text        NOT NULL,
    access_expires_at  timestamptz NOT NULL,
    -- Xero's tenant id (the organisation), sent as `xero-tenant-id`.
    external_tenant_id text,
    api_base_url       text        NOT NULL,
    identity_base_url  text        NOT NULL,
    -- Provider-specific, non-secret mapping (account codes, tax types, ...).
    options            jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status             text        NOT NULL DEFAULT 'active'
                           CHECK (status IN ('active', 'reconnect_needed')),
    status_reason      text,
    generation         bigint      NOT NULL DEFAULT 0,
    refreshed_at       timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
