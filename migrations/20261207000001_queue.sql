-- The durable job queue: live jobs, finished jobs, fairness, claiming,
-- promotion, retries and completion.
--
-- `ledgerflow.jobs` holds only live jobs (scheduled, available, running, held) so
-- the table and its partial indexes stay small under churn; a job that ends is
-- moved, in the same statement, to `ledgerflow.finished_jobs`, which the pruner
-- trims (completed after 24 h, failed after 7 d by default).
--
-- Every hot scan starts at a bound past the index entries already consumed,
-- so its cost follows the live rows, not the history, even while another
-- session holds an old snapshot open (a report, an export, a nightly
-- pg_dump) and no vacuum can remove a dead row version:
--
-- * The fairness frontier F of a queue: the largest fair_key ever claimed,
--   kept in a sequence (`ledgerflow.queue_frontiers`). A sequence is not
--   versioned: advancing and reading it leaves no row version behind.
--   A new job gets greatest(F, the tenant's largest waiting key at or above
--   F + 1): start-time fair queuing, with the queue's virtual time read
--   from F instead of from the claim index.
-- * Claims are bounded from below per priority (`claim_jobs(..., p_lows)`).
--   The worker computes the bounds with `claim_floor`: the smallest waiting
--   key at or above the previous bound, and no more than the frontier F was
--   when the oldest transaction still running took its transaction id (a
--   job that commits later was keyed at or above that F). Every path that
--   makes a job available re-keys it at or above F (the trigger
--   `jobs_available_at_frontier`), so a retry or a released job is never
--   stranded under a bound.
-- * The scheduler's promotion (`promote_due`) is bounded below by its
--   previous cutoff.
--
-- A job may carry workflow steps (`workflow_step_id`; the steps are
-- `ledgerflow.workflow_steps`): `finish_job` fails them with a failed job,
-- and `return_to_queue` hands them to the pending twin that supersedes a job.

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
    started_at       timestamptz,
    -- Marks a job that carries workflow steps (the id of one of them).
    -- Steps point at their job (workflow_steps.job_id); several steps may
    -- share one job.
    workflow_step_id bigint
);

CREATE INDEX jobs_claim_idx ON ledgerflow.jobs (queue, priority, fair_key, id) WHERE state = 'available';
CREATE INDEX jobs_tenant_fair_idx ON ledgerflow.jobs (queue, tenant, fair_key) WHERE state IN ('available', 'scheduled');
CREATE INDEX jobs_scheduled_idx ON ledgerflow.jobs (run_at) WHERE state = 'scheduled';
CREATE INDEX jobs_lease_idx ON ledgerflow.jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_hold_idx ON ledgerflow.jobs (hold_key) WHERE state = 'held';
-- Keyed jobs only (here and below): an unkeyed job would add an entry on
-- enqueue and leave a dead one on claim, for nothing.
CREATE UNIQUE INDEX jobs_unique_pending_idx ON ledgerflow.jobs (unique_key)
    WHERE state IN ('scheduled', 'available', 'held') AND unique_key IS NOT NULL;
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
    finished_at  timestamptz NOT NULL DEFAULT now(),
    workflow_step_id bigint
);

-- Rows arrive in finished_at order, so a BRIN index serves the pruner at a
-- fraction of a B-tree's cost on the completion path.
CREATE INDEX finished_jobs_prune_idx ON ledgerflow.finished_jobs USING brin (finished_at);

-- Written by the diagnostic `queue-probe` job in the transaction that completes
-- it: a crash test counts these rows to prove a job took effect exactly once.
CREATE TABLE ledgerflow.probe_effects (
    job_id     bigint      NOT NULL,
    label      text        NOT NULL,
    attempt    integer     NOT NULL,
    worker_id  text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------------
-- Fairness: the frontier and the keys of new jobs.
-- ---------------------------------------------------------------------

-- One sequence per queue holds its frontier. The registry is written once
-- per queue, so its rows never churn.
CREATE TABLE ledgerflow.queue_frontiers (
    queue text     PRIMARY KEY,
    seq   regclass NOT NULL
);

CREATE SEQUENCE ledgerflow.queue_frontier_default
    MINVALUE -9223372036854775808 START 0 CACHE 1;
SELECT setval('ledgerflow.queue_frontier_default', 0, true);
INSERT INTO ledgerflow.queue_frontiers VALUES ('default', 'ledgerflow.queue_frontier_default');

-- The sequence of `p_queue`'s frontier, created on first use. Creation is
-- serialized by an advisory lock, so two first enqueues of a new queue do
-- not both create it (the second waits for the first to commit).
CREATE FUNCTION ledgerflow.queue_frontier_seq(p_queue text) RETURNS regclass
LANGUAGE plpgsql AS $$
DECLARE
    v_seq regclass;
    v_name text;
BEGIN
    SELECT seq INTO v_seq FROM ledgerflow.queue_frontiers WHERE queue = p_queue;
    IF v_seq IS NOT NULL THEN
        RETURN v_seq;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('ledgerflow.queue_frontiers'), hashtext(p_queue));
    SELECT seq INTO v_seq FROM ledgerflow.queue_frontiers WHERE queue = p_queue;
    IF v_seq IS NOT NULL THEN
        RETURN v_seq;
    END IF;
    v_name := 'queue_frontier_' || md5(p_queue);
    EXECUTE format('CREATE SEQUENCE IF NOT EXISTS ledgerflow.%I MINVALUE -9223372036854775808 START 0 CACHE 1', v_name);
    v_seq := format('ledgerflow.%I', v_name)::regclass;
    PERFORM setval(v_seq, 0, true);
    INSERT INTO ledgerflow.queue_frontiers VALUES (p_queue, v_seq);
    RETURN v_seq;
END;
$$;

-- The queue's frontier now: read from the sequence's page, not from a row
-- version, so it costs the same however many jobs went before.
CREATE FUNCTION ledgerflow.fair_frontier(p_queue text) RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    SELECT coalesce(pg_sequence_last_value(ledgerflow.queue_frontier_seq(p_queue)), 0)
$$;

-- Raise the frontier to `p_key` (never lower it). The lock makes the
-- read-and-set one step: the frontier only ever grows, which the claim
-- bounds rely on. Taken only when the frontier is to move.
CREATE FUNCTION ledgerflow.advance_frontier(p_queue text, p_key bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_seq regclass := ledgerflow.queue_frontier_seq(p_queue);
BEGIN
    IF p_key IS NULL OR p_key <= coalesce(pg_sequence_last_value(v_seq), 0) THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('ledgerflow.queue_frontier'), hashtext(p_queue));
    PERFORM setval(v_seq, greatest(p_key, coalesce(pg_sequence_last_value(v_seq), 0)), true);
END;
$$;

-- The fair_key for new jobs of one tenant (the n-th gets the result + n - 1
-- when the caller numbers them). The transaction takes its id before the
-- frontier is read: `claim_floor` relies on that order (a transaction whose
-- id is newer than a frontier sample keys its jobs at or above it).
CREATE FUNCTION ledgerflow.next_fair_key(queue text, tenant text, n integer)
RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_frontier bigint;
    v_next     bigint;
BEGIN
    PERFORM pg_current_xact_id();
    v_frontier := ledgerflow.fair_frontier(next_fair_key.queue);
    -- Bounded below by the frontier: keys under it do not count (the
    -- frontier wins), and the dead entries of claimed jobs all lie there.
    SELECT j.fair_key + 1 INTO v_next FROM ledgerflow.jobs j
    WHERE j.state IN ('available', 'scheduled') AND j.queue = next_fair_key.queue
      AND j.tenant = next_fair_key.tenant AND j.fair_key >= v_frontier
    ORDER BY j.fair_key DESC LIMIT 1;
    RETURN greatest(v_frontier, coalesce(v_next, v_frontier));
END;
$$;

-- Every other way into `available` (a due retry, a rescue, a release at
-- shutdown, a reconnect, an expedite, a rate-limit turn handed on, a
-- quiet period ended, a raw insert) keys the job at or above the frontier,
-- as a new job of its tenant would be, so no claim bound passes over it.
CREATE FUNCTION ledgerflow.jobs_key_at_frontier() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_current_xact_id();
    NEW.fair_key := greatest(NEW.fair_key, ledgerflow.fair_frontier(NEW.queue));
    RETURN NEW;
END;
$$;

CREATE TRIGGER jobs_available_at_frontier
    BEFORE UPDATE OF state ON ledgerflow.jobs
    FOR EACH ROW WHEN (OLD.state <> 'available' AND NEW.state = 'available')
    EXECUTE FUNCTION ledgerflow.jobs_key_at_frontier();

-- The enqueue functions key their rows themselves; a row inserted as
-- available with the column's default key (a raw insert) is keyed here.
CREATE TRIGGER jobs_inserted_at_frontier
    BEFORE INSERT ON ledgerflow.jobs
    FOR EACH ROW WHEN (NEW.state = 'available' AND NEW.fair_key = 0)
    EXECUTE FUNCTION ledgerflow.jobs_key_at_frontier();

-- ---------------------------------------------------------------------
-- Enqueueing.
-- ---------------------------------------------------------------------

-- Enqueue one job. Used by the Rust client and callable by hosts written in
-- any language, inside their own transaction:
--
--   SELECT ledgerflow.enqueue('upsert-invoice', '{"v":1,...}'::jsonb,
--                             tenant => 'shop-42', unique_key => 'inv-7');
--
-- Returns the job's id. When unique_key matches a pending job (not yet running),
-- nothing is inserted and the existing job's id is returned; the caller's
-- transaction is never aborted by the duplicate. NULL arguments (tenant,
-- queue, kind_version) are refused by name.
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
        RAISE EXCEPTION 'ledgerflow.enqueue: kind must not be empty'
            USING ERRCODE = '22023';
    END IF;
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        RAISE EXCEPTION 'ledgerflow.enqueue: payload must be a JSON object'
            USING ERRCODE = '22023';
    END IF;
    IF tenant IS NULL THEN
        RAISE EXCEPTION 'ledgerflow.enqueue: tenant must not be NULL (pass the tenant id, or leave it out for none)'
            USING ERRCODE = '22023';
    END IF;
    IF queue IS NULL OR queue = '' THEN
        RAISE EXCEPTION 'ledgerflow.enqueue: queue must not be NULL or empty (leave it out for ''default'')'
            USING ERRCODE = '22023';
    END IF;
    IF priority IS NULL OR priority NOT BETWEEN 1 AND 4 THEN
        RAISE EXCEPTION 'ledgerflow.enqueue: priority must be between 1 and 4, got %', coalesce(priority::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    IF kind_version IS NULL OR kind_version < 1 THEN
        RAISE EXCEPTION 'ledgerflow.enqueue: kind_version must be 1 or more, got %', coalesce(kind_version::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    -- A payload stamped with its own version ("v") must agree with kind_version.
    IF payload ? 'v' AND (payload -> 'v') IS DISTINCT FROM to_jsonb(kind_version) THEN
        RAISE EXCEPTION 'ledgerflow.enqueue: the payload says "v": % but kind_version is %', payload -> 'v', kind_version
            USING ERRCODE = '22023';
    END IF;

    v_key := ledgerflow.next_fair_key(enqueue.queue, enqueue.tenant, 1);

    LOOP
        INSERT INTO ledgerflow.jobs AS j (queue, kind, kind_version, payload, state, priority,
                                          tenant, fair_key, run_at, unique_key, hold_key)
        VALUES (enqueue.queue, enqueue.kind, enqueue.kind_version, enqueue.payload,
                CASE WHEN v_due THEN 'available' ELSE 'scheduled' END,
                enqueue.priority, enqueue.tenant, v_key, coalesce(enqueue.run_at, now()),
                enqueue.unique_key, enqueue.hold_key)
        ON CONFLICT (unique_key) WHERE state IN ('scheduled', 'available', 'held') AND unique_key IS NOT NULL DO NOTHING
        RETURNING j.id INTO v_id;

        IF v_id IS NOT NULL THEN
            IF v_due THEN
                PERFORM pg_notify('ledgerflow_jobs', enqueue.queue);
            END IF;
            RETURN v_id;
        END IF;

        -- Joining the pending holder locks it until the caller commits: the
        -- claim skips locked rows, so the job cannot start (and finish) on
        -- state the caller's transaction has not committed yet, and a
        -- workflow step that joins it is seen by the job's completion.
        -- Without the lock a step joined a job that completed before the
        -- step's transaction committed, and its run waited forever
        -- (chaos seed 1796588168262002756).
        SELECT j.id INTO v_id FROM ledgerflow.jobs j
        WHERE j.unique_key = enqueue.unique_key AND j.state IN ('scheduled', 'available', 'held')
        FOR SHARE;
        IF v_id IS NOT NULL THEN
            RETURN v_id;
        END IF;
        -- The holder of the key was claimed or finished between our insert
        -- and select: try again.
    END LOOP;
END;
$$;

-- Enqueue many jobs of one kind in one statement, for hosts and backfills:
--
--   SELECT ledgerflow.enqueue_many('upsert-invoice',
--            ARRAY['{"v":1,...}', '{"v":1,...}']::jsonb[],
--            tenants => ARRAY['shop-42', 'shop-7']);
--
-- Arrays are read element by element: `payloads[i]` with `tenants[i]`,
-- `unique_keys[i]` and `hold_keys[i]` (each may be NULL or shorter: NULL
-- there). Returns one id per payload, in order; a unique key a pending job
-- already holds (or an earlier element of the same call) returns that job's
-- id, as `enqueue` does, and a pending job of another transaction joined
-- so is locked FOR SHARE until the caller commits, as `enqueue` locks it
-- (the claim skips it meanwhile). The call's own rows are not locked: no
-- one else sees them before the commit, and a lock would cost a WAL record
-- a row. Fairness is computed once per tenant for the whole call, and
-- fetchers are woken once.
CREATE FUNCTION ledgerflow.enqueue_many(
    kind          text,
    payloads      jsonb[],
    tenants       text[]      DEFAULT NULL,
    queue         text        DEFAULT 'default',
    priority      smallint    DEFAULT 2,
    run_at        timestamptz DEFAULT NULL,
    unique_keys   text[]      DEFAULT NULL,
    kind_version  integer     DEFAULT 1,
    hold_keys     text[]      DEFAULT NULL
) RETURNS bigint[]
LANGUAGE plpgsql
-- The planner's estimate for the lookups of skipped keys (never run when
-- no key is skipped) crosses jit_above_cost, and compiling the statement
-- took 1.2 s of a 1.3 s call of 2,000 jobs.
SET jit = off
AS $$
#variable_conflict use_variable
DECLARE
    v_due  boolean := run_at IS NULL OR run_at <= now();
    v_ids  bigint[];
    v_n    integer := coalesce(cardinality(payloads), 0);
    v_seq  regclass := pg_get_serial_sequence('ledgerflow.jobs', 'id')::regclass;
    -- Keyed: the elements still to place (all, then those whose key's
    -- holder was claimed under them), the ids this round inserted, and
    -- each placed element's id.
    v_todo bigint[];
    v_mine bigint[];
    v_ords bigint[];
    v_got  bigint[];
    v_done_ords bigint[] := '{}';
    v_done_ids  bigint[] := '{}';
BEGIN
    IF kind IS NULL OR kind = '' THEN
        RAISE EXCEPTION 'ledgerflow.enqueue_many: kind must not be empty';
    END IF;
    IF priority NOT BETWEEN 1 AND 4 THEN
        RAISE EXCEPTION 'ledgerflow.enqueue_many: priority must be between 1 and 4, got %', priority;
    END IF;
    IF v_n = 0 THEN
        RETURN '{}';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(payloads) p WHERE p IS NULL OR jsonb_typeof(p) <> 'object') THEN
        RAISE EXCEPTION 'ledgerflow.enqueue_many: every payload must be a JSON object';
    END IF;

    IF greatest(cardinality(tenants), cardinality(unique_keys), cardinality(hold_keys)) > v_n THEN
        RAISE EXCEPTION 'ledgerflow.enqueue_many: tenants, unique_keys and hold_keys may not be longer than payloads';
    END IF;

    -- No unique key: a plain insert. ON CONFLICT makes every row a
    -- speculative insertion, which cost about 40 % more per row.
    IF unique_keys IS NULL OR NOT EXISTS (SELECT 1 FROM unnest(unique_keys) k WHERE k IS NOT NULL) THEN
        WITH input AS (
            SELECT x.ord, x.payload, coalesce(x.tenant, '') AS tenant, x.hold_key
            FROM unnest(payloads, tenants, hold_keys) WITH ORDINALITY AS x(payload, tenant, hold_key, ord)
        ),
        bases AS (
            SELECT d.tenant, ledgerflow.next_fair_key(queue, d.tenant, 0) AS base
            FROM (SELECT DISTINCT tenant FROM input) d
        ),
        inserted AS (
            INSERT INTO ledgerflow.jobs AS j (queue, kind, kind_version, payload, state, priority,
                                              tenant, fair_key, run_at, hold_key)
            SELECT queue, kind, kind_version, i.payload,
                   CASE WHEN v_due THEN 'available' ELSE 'scheduled' END,
                   priority, i.tenant,
                   b.base + row_number() OVER (PARTITION BY i.tenant ORDER BY i.ord) - 1,
                   coalesce(run_at, now()), i.hold_key
            FROM input i JOIN bases b USING (tenant)
            ORDER BY i.ord
            RETURNING j.id
        )
        -- Identity values follow the insert order, which is the input's.
        SELECT array_agg(id ORDER BY id) INTO v_ids FROM inserted;
        IF v_due THEN
            PERFORM pg_notify('ledgerflow_jobs', queue);
        END IF;
        RETURN v_ids;
    END IF;

    -- Ids are drawn up front so each element knows its own, whether or not
    -- its insert is skipped for a unique key.
    v_ids := ARRAY(SELECT nextval(v_seq) FROM generate_series(1, v_n));
    v_todo := ARRAY(SELECT generate_series(1, v_n));
    -- Rounds, as `enqueue` loops: an element whose key's holder was
    -- claimed between the insert and the lookup is tried again.
    LOOP
        WITH input AS (
            -- unnest, not payloads[i]: a subscript detoasts the whole
            -- array every time. Joined with the elements to place by hash.
            SELECT x.ord, x.payload, coalesce(x.tenant, '') AS tenant, x.unique_key, x.hold_key, x.id
            FROM unnest(payloads, tenants, unique_keys, hold_keys, v_ids)
                 WITH ORDINALITY AS x(payload, tenant, unique_key, hold_key, id, ord)
            JOIN unnest(v_todo) AS t(ord) USING (ord)
        ),
        bases AS (
            SELECT d.tenant, ledgerflow.next_fair_key(queue, d.tenant, 0) AS base
            FROM (SELECT DISTINCT tenant FROM input) d
        ),
        inserted AS (
            INSERT INTO ledgerflow.jobs AS j (id, queue, kind, kind_version, payload, state, priority,
                                              tenant, fair_key, run_at, unique_key, hold_key)
            OVERRIDING SYSTEM VALUE
            SELECT i.id, queue, kind, kind_version, i.payload,
                   CASE WHEN v_due THEN 'available' ELSE 'scheduled' END,
                   priority, i.tenant,
                   b.base + row_number() OVER (PARTITION BY i.tenant ORDER BY i.ord) - 1,
                   coalesce(run_at, now()), i.unique_key, i.hold_key
            FROM input i JOIN bases b USING (tenant)
            -- The first element with a key takes it; the later ones skip.
            ORDER BY i.ord
            ON CONFLICT (unique_key) WHERE state IN ('scheduled', 'available', 'held') AND unique_key IS NOT NULL DO NOTHING
            RETURNING j.id
        )
        SELECT coalesce(array_agg(id), '{}') INTO v_mine FROM inserted;

        -- Every element's id, in one statement that sees the rows just
        -- inserted: its own when inserted or unkeyed; else the one this
        -- round inserted with its key (an earlier element's); else the
        -- pending holder another transaction committed, locked. All by
        -- hash joins and one index probe per joined key: the lookup per
        -- skipped element scanned the call's rows, quadratic in its
        -- duplicates (2 s for 2,000 jobs over 200 keys).
        WITH todo AS (
            SELECT x.ord, x.unique_key, x.id
            FROM unnest(unique_keys, v_ids) WITH ORDINALITY AS x(unique_key, id, ord)
            JOIN unnest(v_todo) AS t(ord) USING (ord)
        ),
        mine AS (
            SELECT t.unique_key, t.id
            FROM todo t JOIN unnest(v_mine) AS m(id) USING (id)
            WHERE t.unique_key IS NOT NULL
        ),
        theirs AS (
            SELECT p.unique_key, p.id FROM ledgerflow.jobs p
            WHERE p.unique_key IN (SELECT t.unique_key FROM todo t WHERE t.unique_key IS NOT NULL
                                   EXCEPT SELECT m.unique_key FROM mine m)
              AND p.state IN ('scheduled', 'available', 'held') AND p.unique_key IS NOT NULL
            -- As in `enqueue`: the joined job is not claimed (and cannot
            -- finish) before the caller's writes are committed. A holder
            -- claimed meanwhile no longer qualifies once the lock is had.
            FOR SHARE OF p
        )
        SELECT array_agg(t.ord),
               array_agg(CASE WHEN t.unique_key IS NULL THEN t.id ELSE coalesce(m.id, h.id) END)
        INTO v_ords, v_got
        FROM todo t LEFT JOIN mine m USING (unique_key) LEFT JOIN theirs h USING (unique_key);

        SELECT v_done_ords || coalesce(array_agg(o), '{}'), v_done_ids || coalesce(array_agg(g), '{}')
        INTO v_done_ords, v_done_ids
        FROM unnest(v_ords, v_got) AS x(o, g) WHERE g IS NOT NULL;
        v_todo := ARRAY(SELECT o FROM unnest(v_ords, v_got) AS x(o, g) WHERE g IS NULL);
        EXIT WHEN cardinality(v_todo) = 0;
    END LOOP;
    SELECT array_agg(g ORDER BY o) INTO v_ids FROM unnest(v_done_ords, v_done_ids) AS x(o, g);

    IF v_due THEN
        PERFORM pg_notify('ledgerflow_jobs', queue);
    END IF;
    RETURN v_ids;
END;
$$;

-- ---------------------------------------------------------------------
-- Claiming and promotion.
-- ---------------------------------------------------------------------

CREATE TYPE ledgerflow.claimed_job AS (
    id              bigint,
    kind            text,
    kind_version    integer,
    payload         jsonb,
    attempt         integer,
    claim_count     integer,
    tenant          text,
    hold_key        text,
    rate_limited_ms bigint,
    created_at      timestamptz,
    claimed_at      timestamptz,
    fair_key        bigint
);

-- A paused queue: no worker claims from it until it is resumed.
CREATE TABLE ledgerflow.queue_pauses (
    queue     text        PRIMARY KEY,
    reason    text        NOT NULL,
    paused_by text        NOT NULL,
    paused_at timestamptz NOT NULL DEFAULT now()
);

-- Claim up to `p_limit` available jobs of `p_queue` for `p_worker`, by
-- (priority, fair_key, id), each priority's scan starting at its bound
-- `p_lows[priority]` (NULL: from the start). Raises the queue's frontier to
-- the largest key claimed.
CREATE FUNCTION ledgerflow.claim_jobs(
    p_queue      text,
    p_limit      integer,
    p_worker     text,
    p_lease_secs double precision,
    p_lows       bigint[],
    -- Providers the claiming worker has no app for: jobs held under their
    -- connections (hold key 'connection:N') are left to other workers.
    p_cannot_serve text[] DEFAULT '{}'
) RETURNS SETOF ledgerflow.claimed_job
LANGUAGE plpgsql AS $$
DECLARE
    v_got  integer := 0;
    v_rows ledgerflow.claimed_job[];
    v_max  bigint;
    v_top  bigint;
BEGIN
    -- A paused queue gives nothing to claim (`ledgerflow queue pause`):
    -- one primary-key lookup on a table of a few rows.
    IF EXISTS (SELECT 1 FROM ledgerflow.queue_pauses qp WHERE qp.queue = p_queue) THEN
        RETURN;
    END IF;
    FOR p IN 1..4 LOOP
        EXIT WHEN v_got >= p_limit;
        WITH claimed AS (
            UPDATE ledgerflow.jobs j
            SET state = 'running',
                attempt = j.attempt + 1,
                claim_count = j.claim_count + 1,
                worker_id = p_worker,
                lease_expires_at = now() + make_interval(secs => p_lease_secs),
                started_at = coalesce(j.started_at, now())
            -- ANY(ARRAY(...)) makes the update a primary-key lookup per
            -- picked row; a join with the picked set may be planned as a scan.
            WHERE j.id = ANY(ARRAY(
                SELECT c.id FROM ledgerflow.jobs c
                WHERE c.state = 'available' AND c.queue = p_queue AND c.priority = p
                  AND c.fair_key >= coalesce(p_lows[p], -9223372036854775808)
                  -- Again in this statement's snapshot: a pause that committed
                  -- after the check above but before a job it can see is seen.
                  AND NOT EXISTS (SELECT 1 FROM ledgerflow.queue_pauses qp WHERE qp.queue = p_queue)
                  AND (c.unique_key IS NULL OR NOT EXISTS (
                        SELECT 1 FROM ledgerflow.jobs r
                        WHERE r.unique_key = c.unique_key AND r.state = 'running'))
                  AND (cardinality(p_cannot_serve) = 0 OR c.hold_key IS NULL OR NOT EXISTS (
                        SELECT 1 FROM ledgerflow.connections k
                        WHERE k.id = CASE WHEN c.hold_key ~ '^connection:[0-9]{1,18}$'
                                          THEN substr(c.hold_key, 12)::bigint END
                          AND k.provider = ANY (p_cannot_serve)))
                ORDER BY c.fair_key, c.id
                LIMIT p_limit - v_got
                FOR UPDATE SKIP LOCKED))
            RETURNING j.id, j.kind, j.kind_version, j.payload, j.attempt, j.claim_count,
                      j.tenant, j.hold_key, j.rate_limited_ms, j.created_at,
                      clock_timestamp() AS claimed_at, j.fair_key
        )
        SELECT array_agg(ROW(c.*)::ledgerflow.claimed_job ORDER BY c.fair_key, c.id), max(c.fair_key)
        INTO v_rows, v_top FROM claimed c;
        IF v_rows IS NOT NULL THEN
            v_got := v_got + cardinality(v_rows);
            v_max := greatest(v_max, v_top);
            RETURN QUERY SELECT * FROM unnest(v_rows);
        END IF;
    END LOOP;
    PERFORM ledgerflow.advance_frontier(p_queue, v_max);
END;
$$;

-- What the worker needs to raise its claim bounds (its claim-floor sampler).
-- Must run as its own transaction, before anything else in it:
--   frontier  F, read before this transaction has an id;
--   xid       this transaction's id, taken right after;
--   oldest    the oldest transaction id still running (this one included);
--   heads     per priority 1..4, the smallest available key at or above
--             `p_lows[priority]` (NULL: none), read in the same snapshot.
-- A transaction with an id newer than a sample's `xid` read F after the
-- sample did, so it keyed its jobs at or above the sample's frontier; one
-- older than `oldest` had committed and its jobs are in `heads`.
CREATE FUNCTION ledgerflow.claim_floor(
    p_queue text,
    p_lows bigint[],
    OUT frontier bigint,
    OUT xid bigint,
    OUT oldest bigint,
    OUT heads bigint[]
)
LANGUAGE plpgsql AS $$
BEGIN
    frontier := ledgerflow.fair_frontier(p_queue);
    xid := pg_current_xact_id()::text::bigint;
    SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint,
           ARRAY(SELECT (SELECT c.fair_key FROM ledgerflow.jobs c
                         WHERE c.state = 'available' AND c.queue = p_queue AND c.priority = p
                           AND c.fair_key >= coalesce(p_lows[p], -9223372036854775808)
                         ORDER BY c.fair_key LIMIT 1)
                 FROM generate_series(1, 4) p ORDER BY p)
    INTO oldest, heads;
END;
$$;

-- The scheduler's promotion of due jobs, walking the scheduled index in
-- run_at order from `p_since` (NULL: unbounded). Returns the cutoff it
-- compared with.
--
-- Why a function: to pin the plan. A row leaves `scheduled` by an update,
-- and its old version stays in jobs_scheduled_idx until vacuum (and, while
-- the horizon is held, long after). Trusting a low estimate, PostgreSQL
-- chose a bitmap scan, which went to the heap for each index entry, nearly
-- all of them versions already updated away; and a bitmap scan never marks
-- such entries dead, so the next run, 20 ms later, paid for them again. A
-- plain index scan stops at the first job not yet due and marks the dead
-- entries it passes, so each is paid for once; PL/pgSQL keeps the
-- statement's plan for the session (planned anew on every run, as a SQL
-- function's is, it cost 300 buffers more). The bound: the scan from the
-- start of the index walked every promoted job's old entry, every 200 ms
-- in every worker; the scheduler passes its previous cutoff less a margin,
-- and makes an unbounded pass now and then.
CREATE FUNCTION ledgerflow.promote_due(
    p_limit integer,
    p_since timestamptz,
    OUT promoted bigint,
    OUT queues_woken bigint,
    OUT cutoff timestamptz
)
LANGUAGE plpgsql
SET enable_bitmapscan = off
AS $$
BEGIN
    cutoff := now();
    WITH due AS (
        UPDATE ledgerflow.jobs SET state = 'available'
        WHERE id IN (SELECT id FROM ledgerflow.jobs
                     WHERE state = 'scheduled' AND run_at <= now()
                       AND run_at >= coalesce(p_since, '-infinity'::timestamptz)
                     ORDER BY run_at LIMIT p_limit FOR UPDATE SKIP LOCKED)
        RETURNING queue
    ),
    woken AS (SELECT pg_notify('ledgerflow_jobs', q) FROM (SELECT DISTINCT queue AS q FROM due) d)
    SELECT (SELECT count(*) FROM due), (SELECT count(*) FROM woken)
    INTO promoted, queues_woken;
END;
$$;

-- ---------------------------------------------------------------------
-- Ending a run: back to the queue, or finished.
-- ---------------------------------------------------------------------

-- Put a running job back in the queue (a retry, a rate-limit wait, a hold, a
-- rescue or a release at shutdown), fenced by its claim. When a newer pending
-- job holds the same unique key, that job stands for this one: this one ends
-- as `cancelled`, superseded, and the workflow steps it carries move to the
-- twin, which then completes them. Returns 'returned', 'superseded' or
-- 'fenced'.
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
    WITH moved AS (
        UPDATE ledgerflow.workflow_steps SET job_id = v_twin
        WHERE job_id = p_id AND status = 'enqueued'
        RETURNING id
    )
    UPDATE ledgerflow.jobs SET workflow_step_id = coalesce(workflow_step_id, (SELECT min(id) FROM moved))
    WHERE id = v_twin;
    PERFORM ledgerflow.finish_job(p_id, 'cancelled',
        coalesce(p_errors, '[]'::jsonb) || jsonb_build_array(jsonb_build_object(
            'attempt', (SELECT attempt FROM ledgerflow.jobs WHERE id = p_id), 'at', now(),
            'class', 'superseded', 'message', 'superseded by job ' || v_twin)));
    RETURN 'superseded';
END;
$$;

-- Move one job to finished_jobs with the given final state, appending errors;
-- a job that fails for good fails the workflow steps it carries (blocking
-- the steps after them; completing them is the worker's completion
-- statement's part). Wakes fetchers when a job with a unique key ends (a
-- twin may be waiting).
CREATE FUNCTION ledgerflow.finish_job(p_id bigint, p_state text, p_errors jsonb)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_job ledgerflow.jobs;
BEGIN
    DELETE FROM ledgerflow.jobs WHERE id = p_id RETURNING * INTO v_job;
    IF v_job.id IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO ledgerflow.finished_jobs
        (id, queue, kind, kind_version, payload, state, priority, tenant, attempt,
         unique_key, errors, created_at, started_at, workflow_step_id)
    VALUES (v_job.id, v_job.queue, v_job.kind, v_job.kind_version, v_job.payload, p_state, v_job.priority,
            v_job.tenant, v_job.attempt, v_job.unique_key, v_job.errors || coalesce(p_errors, '[]'::jsonb),
            v_job.created_at, v_job.started_at, v_job.workflow_step_id);
    IF v_job.workflow_step_id IS NOT NULL AND p_state = 'failed' THEN
        PERFORM ledgerflow.workflow_step_failed(
            v_job.workflow_step_id,
            coalesce((v_job.errors || coalesce(p_errors, '[]'::jsonb)) -> -1 ->> 'message', 'the step failed'));
    END IF;
    -- A pending job with the same unique key may be waiting for this one.
    IF v_job.unique_key IS NOT NULL THEN
        PERFORM pg_notify('ledgerflow_jobs', v_job.queue);
    END IF;
END;
$$;

-- ---------------------------------------------------------------------
-- Moving a pending job in time, for the callers that own it (the ledger's
-- quiet period, "re-sync now"): they ask here instead of writing the
-- queue's table. Each notifies the workers of a job it made available.
-- ---------------------------------------------------------------------

-- Run a pending job now, at this priority. A held job stays held, a
-- running one alone. True when a job was made available.
CREATE FUNCTION ledgerflow.expedite_job(p_job bigint, p_priority smallint)
RETURNS boolean LANGUAGE sql AS $$
    WITH expedited AS (
        UPDATE ledgerflow.jobs SET state = 'available', run_at = now(), priority = p_priority
        WHERE id = p_job AND state IN ('scheduled', 'available')
        RETURNING queue
    )
    SELECT count(*) > 0 FROM (SELECT pg_notify('ledgerflow_jobs', queue) FROM expedited) notified;
$$;

-- Delay a never-claimed pending job to `quiet_ms` from now, but no later
-- than `max_wait_ms` after it was created; never brought forward. By
-- PostgreSQL's clock, in the caller's transaction.
CREATE FUNCTION ledgerflow.delay_unclaimed_job(p_job bigint, p_quiet_ms bigint, p_max_wait_ms bigint)
RETURNS void LANGUAGE sql AS $$
    WITH due AS (
        SELECT greatest(j.run_at,
                        least(clock_timestamp() + make_interval(secs => p_quiet_ms::float8 / 1000),
                              j.created_at + make_interval(secs => p_max_wait_ms::float8 / 1000))) AS run_at
        FROM ledgerflow.jobs j WHERE j.id = p_job
    )
    UPDATE ledgerflow.jobs j
    SET run_at = due.run_at,
        state = CASE WHEN due.run_at > clock_timestamp() THEN 'scheduled' ELSE j.state END
    FROM due
    WHERE j.id = p_job AND j.state IN ('scheduled', 'available') AND j.claim_count = 0
      AND due.run_at > j.run_at;
$$;

-- Wake a never-claimed job waiting out a delay (a void is not held back);
-- one waiting out a retry backoff or a rate limit keeps its time.
CREATE FUNCTION ledgerflow.wake_unclaimed_job(p_job bigint) RETURNS void
LANGUAGE sql AS $$
    WITH woken AS (
        UPDATE ledgerflow.jobs SET state = 'available', run_at = clock_timestamp()
        WHERE id = p_job AND state = 'scheduled' AND claim_count = 0
        RETURNING queue
    )
    SELECT pg_notify('ledgerflow_jobs', queue) FROM woken;
$$;
