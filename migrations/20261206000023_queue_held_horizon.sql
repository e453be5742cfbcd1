-- The queue under a held xmin horizon (issue 20).
--
-- While any session keeps an old snapshot open (a report, an export, a
-- nightly pg_dump), no vacuum and no index scan can remove or mark a dead
-- row version. Every job that is claimed leaves a dead entry at the low end
-- of the claim index, and the old fairness lookups (`next_fair_key`: the
-- smallest waiting key, the tenant's largest) and the claim itself started
-- their index scans at that low end: each walked to the heap once for every
-- job claimed since the horizon was taken. One enqueue of 30 jobs went from
-- 4 ms to 130 ms within three minutes.
--
-- What this migration does: every hot scan starts at a bound past the
-- entries already consumed, so its cost follows the live rows, not the
-- history.
--
-- * The fairness frontier F of a queue: the largest fair_key ever claimed,
--   kept in a sequence (`ledgerflow.queue_frontiers`). A sequence is not
--   versioned: advancing and reading it leaves no row version behind.
--   A new job gets greatest(F, the tenant's largest waiting key at or above
--   F + 1): the same start-time fair queuing as before, with the queue's
--   virtual time read from F instead of from the claim index.
-- * Claims are bounded from below per priority (`claim_jobs(..., p_lows)`).
--   The worker computes the bounds with `claim_floor`: the smallest waiting
--   key at or above the previous bound, and no more than the frontier F was
--   when the oldest transaction still running took its transaction id (a
--   job that commits later was keyed at or above that F). Every path that
--   makes a job available re-keys it at or above F (the trigger below), so a
--   retry or a released job is never stranded under a bound.
-- * `jobs_virtual_time_idx` is dropped: nothing reads it any more, and it
--   was one more index entry per enqueue and one more dead entry per claim.

DROP INDEX IF EXISTS ledgerflow.jobs_virtual_time_idx;

-- Keyed jobs only: every unkeyed job had a NULL entry here, one index
-- insert per enqueue and one dead entry per claim for nothing.
DROP INDEX ledgerflow.jobs_unique_pending_idx;
CREATE UNIQUE INDEX jobs_unique_pending_idx ON ledgerflow.jobs (unique_key)
    WHERE state IN ('scheduled', 'available', 'held') AND unique_key IS NOT NULL;

-- As in migration 1, with the conflict target naming the index's new
-- predicate.
CREATE OR REPLACE FUNCTION ledgerflow.enqueue(
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

        SELECT j.id INTO v_id FROM ledgerflow.jobs j
        WHERE j.unique_key = enqueue.unique_key AND j.state IN ('scheduled', 'available', 'held');
        IF v_id IS NOT NULL THEN
            RETURN v_id;
        END IF;
        -- The holder of the key finished between our insert and select: try again.
    END LOOP;
END;
$$;

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
CREATE OR REPLACE FUNCTION ledgerflow.next_fair_key(queue text, tenant text, n integer)
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

-- What the worker needs to raise its claim bounds (worker/src/queue/floor.rs).
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

-- The scheduler's promotion, bounded below by `p_since` (NULL: unbounded).
-- A promoted job's old entry stays in jobs_scheduled_idx while the horizon
-- is held, and the scan from the start of the index walked every one of
-- them, every 200 ms in every worker. The scheduler passes its previous
-- cutoff less a margin, and makes an unbounded pass now and then
-- (worker/src/queue/scheduler.rs). Returns the cutoff it compared with.
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
-- id, as `enqueue` does. Fairness is computed once per tenant for the whole
-- call, and fetchers are woken once.
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
    v_due boolean := run_at IS NULL OR run_at <= now();
    v_ids bigint[];
    v_n   integer := coalesce(cardinality(payloads), 0);
    v_seq regclass := pg_get_serial_sequence('ledgerflow.jobs', 'id')::regclass;
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

    WITH input AS (
        -- Ids are drawn up front so each element knows its own, whether or
        -- not its insert is skipped for a unique key. unnest, not
        -- payloads[i]: a subscript detoasts the whole array every time.
        SELECT x.ord, x.payload, coalesce(x.tenant, '') AS tenant, x.unique_key, x.hold_key,
               nextval(v_seq) AS id
        FROM unnest(payloads, tenants, unique_keys, hold_keys)
             WITH ORDINALITY AS x(payload, tenant, unique_key, hold_key, ord)
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
        ORDER BY i.ord
        ON CONFLICT (unique_key) WHERE state IN ('scheduled', 'available', 'held') AND unique_key IS NOT NULL DO NOTHING
        RETURNING j.id
    )
    -- Not inserted: an earlier element of this call took the key (its row
    -- is not visible to this statement's reads), or a pending job holds it.
    SELECT array_agg(coalesce(
               ins.id,
               (SELECT e.id FROM input e JOIN inserted ei ON ei.id = e.id
                WHERE e.unique_key = i.unique_key ORDER BY e.ord LIMIT 1),
               (SELECT p.id FROM ledgerflow.jobs p
                WHERE p.unique_key = i.unique_key AND p.state IN ('scheduled', 'available', 'held')
                ORDER BY p.id LIMIT 1)) ORDER BY i.ord)
    INTO v_ids
    FROM input i LEFT JOIN inserted ins ON ins.id = i.id;

    IF v_due THEN
        PERFORM pg_notify('ledgerflow_jobs', queue);
    END IF;
    RETURN v_ids;
END;
$$;
