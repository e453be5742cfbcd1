-- The durable job queue.
--
-- `ledgerflow.jobs` holds only live jobs (scheduled, available, running, held) so
-- the table and its partial indexes stay small under churn; a job that ends is
-- moved, in the same statement, to `ledgerflow.finished_jobs`, which the pruner
-- trims (completed after 24 h, failed after 7 d by default).

CREATE SCHEMA IF NOT EXISTS ledgerflow;

CREATE TABLE ledgerflow.jobs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue            text        NOT NULL DEFAULT 'default',
    kind             text        NOT NULL,
    kind_version     integer     NOT NULL DEFAULT 1,
    payload          jsonb       NOT NULL,
    -- scheduled: waits for run_at; available: may be claimed now;
    -- running: claimed, under a lease; held: parked until its hold_key is released
    -- (a connection that needs reconnecting), spending no attempts.
    state            text        NOT NULL CHECK (state IN ('scheduled', 'available', 'running', 'held')),
    -- 1 = live syncs, 2 = default, 3 = backfill: lower runs first.
    priority         smallint    NOT NULL DEFAULT 2,
    -- Fairness: jobs are claimed in (priority, fair_key) order, where fair_key
    -- is a per-tenant virtual start time (start-time fair queuing), so one
    -- tenant's backlog does not push another tenant's new job to the back.
    tenant           text        NOT NULL DEFAULT '',
    fair_key         bigint      NOT NULL DEFAULT 0,
    run_at           timestamptz NOT NULL DEFAULT now(),
    attempt          integer     NOT NULL DEFAULT 0,
    -- Fencing token: bumped on every claim; a completion must present the
    -- value it claimed with, so a holder whose lease was taken over is refused.
    claim_count      integer     NOT NULL DEFAULT 0,
    worker_id        text,
    lease_expires_at timestamptz,
    -- At most one *pending* (scheduled, available, held) job holds a key, and
    -- a pending job is not claimed while a job with its key runs: jobs that
    -- share a key run one at a time, and the newest pending one stands for all.
    unique_key       text,
    hold_key         text,
    -- Time spent waiting on provider rate limits, bounded by the kind's policy.
    rate_limited_ms  bigint      NOT NULL DEFAULT 0,
    errors           jsonb       NOT NULL DEFAULT '[]'::jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz
);

CREATE INDEX jobs_claim_idx ON ledgerflow.jobs (queue, priority, fair_key, id) WHERE state = 'available';
CREATE INDEX jobs_virtual_time_idx ON ledgerflow.jobs (queue, fair_key) WHERE state = 'available';
CREATE INDEX jobs_tenant_fair_idx ON ledgerflow.jobs (queue, tenant, fair_key) WHERE state IN ('available', 'scheduled');
CREATE INDEX jobs_scheduled_idx ON ledgerflow.jobs (run_at) WHERE state = 'scheduled';
CREATE INDEX jobs_lease_idx ON ledgerflow.jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_hold_idx ON ledgerflow.jobs (hold_key) WHERE state = 'held';
CREATE UNIQUE INDEX jobs_unique_pending_idx ON ledgerflow.jobs (unique_key)
    WHERE state IN ('scheduled', 'available', 'held');
-- Keyed jobs only, so claiming an unkeyed job adds no entry here.
CREATE INDEX jobs_unique_running_idx ON ledgerflow.jobs (unique_key)
    WHERE state = 'running' AND unique_key IS NOT NULL;

CREATE TABLE ledgerflow.finished_jobs (
    id           bigint      PRIMARY KEY,
    queue        text        NOT NULL,
    kind         text        NOT NULL,
    kind_version integer     NOT NULL,
    payload      jsonb       NOT NULL,
    state        text        NOT NULL CHECK (state IN ('completed', 'failed', 'cancelled')),
    priority     smallint    NOT NULL,
    tenant       text        NOT NULL,
    attempt      integer     NOT NULL,
    unique_key   text,
    errors       jsonb       NOT NULL,
    created_at   timestamptz NOT NULL,
    started_at   timestamptz,
    finished_at  timestamptz NOT NULL DEFAULT now()
);

-- Rows arrive in finished_at order, so a BRIN index serves the pruner at a
-- fraction of a B-tree's cost on the completion path.
CREATE INDEX finished_jobs_prune_idx ON ledgerflow.finished_jobs USING brin (finished_at);

-- Enqueue one job. Used by the Rust client and callable by hosts written in
-- any language, inside their own transaction:
--
--   SELECT ledgerflow.enqueue('upsert-invoice', '{"v":1,...}'::jsonb,
--                             tenant => 'shop-42', unique_key => 'inv-7');
--
-- Returns the job's id. When unique_key matches a pending job (not yet running),
-- nothing is inserted and the existing job's id is returned; the caller's
-- transaction is never aborted by the duplicate.
CREATE FUNCTION ledgerflow.enqueue(
    kind          text,
    payload       jsonb,
    queue         text        DEFAULT 'default',
    priority      smallint    DEFAULT 2,
    tenant        text        DEFAULT '',
    run_at        timestamptz DEFAULT NULL,
    unique_key    text        DEFAULT NULL,
    kind_version  integer     DEFAULT 1,
    hold_key      text        DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_id   bigint;
    v_key  bigint;
    v_due  boolean := run_at IS NULL OR run_at <= now();
BEGIN
    IF kind IS NULL OR kind = '' THEN
        RAISE EXCEPTION 'ledgerflow.enqueue: kind must not be empty';
    END IF;
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        RAISE EXCEPTION 'ledgerflow.enqueue: payload must be a JSON object';
    END IF;
    IF priority NOT BETWEEN 1 AND 4 THEN
        RAISE EXCEPTION 'ledgerflow.enqueue: priority must be between 1 and 4, got %', priority;
    END IF;

    v_key := ledgerflow.next_fair_key(enqueue.queue, enqueue.tenant, 1);

    LOOP
        INSERT INTO ledgerflow.jobs AS j (queue, kind, kind_version, payload, state, priority,
                                          tenant, fair_key, run_at, unique_key, hold_key)
        VALUES (enqueue.queue, enqueue.kind, enqueue.kind_version, enqueue.payload,
                CASE WHEN v_due THEN 'available' ELSE 'scheduled' END,
                enqueue.priority, enqueue.tenant, v_key, coalesce(enqueue.run_at, now()),
                enqueue.unique_key, enqueue.hold_key)
        ON CONFLICT (unique_key) WHERE state IN ('scheduled', 'available', 'held') DO NOTHING
        RETURNING j.id INTO v_id;

        IF v_id IS NOT NULL THEN
            IF v_due THEN
                PERFORM pg_notify('ledgerflow_jobs', enqueue.queue);
            END IF;
            RETURN v_id;
        END IF;

        SELECT j.id INTO v_id FROM ledgerflow.jobs j
        WHERE j.unique_key = enqueue.unique_key AND j.state IN ('scheduled', 'available', 'held');
        IF v_id IS NOT NULL THEN
            RETURN v_id;
        END IF;
        -- The holder of the key finished between our insert and select: try again.
    END LOOP;
END;
$$;

-- The fair_key for `n` new jobs of one tenant: the tenant's jobs continue after
-- its own latest pending job, but never start before the queue's virtual time
-- (the smallest key still waiting), so a newcomer sorts next to the front.
CREATE FUNCTION ledgerflow.next_fair_key(queue text, tenant text, n integer)
RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT greatest(
        coalesce((SELECT j.fair_key FROM ledgerflow.jobs j
                  WHERE j.state = 'available' AND j.queue = next_fair_key.queue
                  ORDER BY j.fair_key LIMIT 1), 0),
        coalesce((SELECT j.fair_key + 1 FROM ledgerflow.jobs j
                  WHERE j.state IN ('available', 'scheduled') AND j.queue = next_fair_key.queue
                    AND j.tenant = next_fair_key.tenant
                  ORDER BY j.fair_key DESC LIMIT 1), 0))
$$;

-- Written by the diagnostic `queue-probe` job in the transaction that completes
-- it: a crash test counts these rows to prove a job took effect exactly once.
CREATE TABLE ledgerflow.probe_effects (
    job_id     bigint      NOT NULL,
    label      text        NOT NULL,
    attempt    integer     NOT NULL,
    worker_id  text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Put a running job back in the queue (a retry, a rate-limit wait, a hold, a
-- rescue or a release at shutdown), fenced by its claim. When a newer pending
-- job holds the same unique key, that job stands for this one: this one ends
-- as `cancelled`, superseded. Returns 'returned', 'superseded' or 'fenced'.
CREATE FUNCTION ledgerflow.return_to_queue(
    p_id         bigint,
    p_claim      integer,
    p_state      text,
    p_run_at     timestamptz,
    p_refund     boolean,
    p_rate_ms    bigint,
    p_errors     jsonb
) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_key   text;
    v_queue text;
    v_twin  bigint;
BEGIN
    SELECT unique_key, queue INTO v_key, v_queue FROM ledgerflow.jobs
    WHERE id = p_id AND claim_count = p_claim AND state = 'running'
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'fenced';
    END IF;
    IF v_key IS NOT NULL THEN
        SELECT id INTO v_twin FROM ledgerflow.jobs
        WHERE unique_key = v_key AND state IN ('scheduled', 'available', 'held');
    END IF;
    IF v_twin IS NULL THEN
        BEGIN
            UPDATE ledgerflow.jobs
            SET state = p_state, run_at = coalesce(p_run_at, now()),
                attempt = CASE WHEN p_refund THEN greatest(attempt - 1, 0) ELSE attempt END,
                rate_limited_ms = rate_limited_ms + coalesce(p_rate_ms, 0),
                worker_id = NULL, lease_expires_at = NULL,
                errors = errors || coalesce(p_errors, '[]'::jsonb)
            WHERE id = p_id;
            IF p_state = 'available' OR v_key IS NOT NULL THEN
                PERFORM pg_notify('ledgerflow_jobs', v_queue);
            END IF;
            RETURN 'returned';
        EXCEPTION WHEN unique_violation THEN
            -- A pending twin was enqueued meanwhile.
            SELECT id INTO v_twin FROM ledgerflow.jobs
            WHERE unique_key = v_key AND state IN ('scheduled', 'available', 'held');
        END;
    END IF;
    PERFORM ledgerflow.finish_job(p_id, 'cancelled',
        coalesce(p_errors, '[]'::jsonb) || jsonb_build_array(jsonb_build_object(
            'attempt', (SELECT attempt FROM ledgerflow.jobs WHERE id = p_id), 'at', now(),
            'class', 'superseded', 'message', 'superseded by job ' || v_twin)));
    RETURN 'superseded';
END;
$$;

-- Move one job to finished_jobs with the given final state, appending errors;
-- wakes fetchers when a job with a unique key ends (a twin may be waiting).
CREATE FUNCTION ledgerflow.finish_job(p_id bigint, p_state text, p_errors jsonb)
RETURNS void
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM ledgerflow.jobs WHERE id = p_id RETURNING *
    ),
    moved AS (
        INSERT INTO ledgerflow.finished_jobs
            (id, queue, kind, kind_version, payload, state, priority, tenant, attempt,
             unique_key, errors, created_at, started_at)
        SELECT id, queue, kind, kind_version, payload, p_state, priority, tenant, attempt,
               unique_key, errors || coalesce(p_errors, '[]'::jsonb), created_at, started_at
        FROM gone
        RETURNING queue, unique_key
    )
    SELECT pg_notify('ledgerflow_jobs', queue) FROM moved WHERE unique_key IS NOT NULL;
$$;
