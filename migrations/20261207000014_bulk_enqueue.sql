-- Bulk enqueue by COPY: the fastest transactional way in for hosts and
-- backfills (issue 20). The caller reserves ids and fair keys here, then
-- COPYs the rows into `ledgerflow.jobs` in the same transaction:
--
--   BEGIN;
--   SELECT ids, bases, run_at, due FROM ledgerflow.reserve_jobs(
--       'default', ARRAY['shop-1', 'shop-2'], 3);
--   COPY ledgerflow.jobs (id, queue, kind, kind_version, payload, state,
--                         priority, tenant, fair_key, run_at, hold_key) FROM STDIN;
--   COMMIT;  -- or ROLLBACK, and no job ever existed
--
-- The i-th row takes ids[i]; the k-th job of tenant p_tenants[j] takes the
-- fair_key bases[j] + k - 1 (k from 1), `run_at` and, when `due`, the state
-- 'available' (else 'scheduled'). Rows keep the queue's guarantees: the
-- insert triggers still key a raw row at the frontier and hold a job whose
-- connection is paused; a COPY cannot skip a duplicate unique key, so keyed
-- jobs go through `ledgerflow.enqueue_many` instead (the Rust client's
-- `enqueue_copy` does that by itself). Fetchers are woken at commit.
--
-- Must be called in the transaction that COPYs: `next_fair_key` takes the
-- transaction's id before it reads the frontier, which the claim bounds
-- rely on (a COPY in a later transaction could land under a bound).
CREATE FUNCTION ledgerflow.reserve_jobs(
    p_queue   text,
    p_tenants text[],
    p_n       integer,
    p_run_at  timestamptz DEFAULT NULL,
    OUT ids    bigint[],
    OUT bases  bigint[],
    OUT run_at timestamptz,
    OUT due    boolean
)
LANGUAGE plpgsql AS $$
DECLARE
    v_seq regclass := pg_get_serial_sequence('ledgerflow.jobs', 'id')::regclass;
BEGIN
    IF p_queue IS NULL OR p_queue = '' THEN
        RAISE EXCEPTION 'ledgerflow.reserve_jobs: queue must not be NULL or empty'
            USING ERRCODE = '22023';
    END IF;
    IF p_n IS NULL OR p_n < 0 THEN
        RAISE EXCEPTION 'ledgerflow.reserve_jobs: the number of jobs must be 0 or more, got %',
            coalesce(p_n::text, 'NULL') USING ERRCODE = '22023';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(p_tenants) t WHERE t IS NULL) THEN
        RAISE EXCEPTION 'ledgerflow.reserve_jobs: a tenant must not be NULL (use '''' for none)'
            USING ERRCODE = '22023';
    END IF;
    run_at := coalesce(p_run_at, now());
    due := run_at <= now();
    -- One nextval per job: ids need not be consecutive, only distinct and
    -- increasing in the order they are taken.
    ids := ARRAY(SELECT nextval(v_seq) FROM generate_series(1, p_n));
    bases := ARRAY(SELECT ledgerflow.next_fair_key(p_queue, t.tenant, 0)
                   FROM unnest(p_tenants) WITH ORDINALITY AS t(tenant, ord) ORDER BY t.ord);
    IF due AND p_n > 0 THEN
        PERFORM pg_notify('ledgerflow_jobs', p_queue);
    END IF;
END;
$$;
