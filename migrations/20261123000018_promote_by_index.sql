-- The scheduler's promotion of due jobs, walking the scheduled index in
-- run_at order (worker/src/queue/scheduler.rs calls it).
--
-- Why a function: to pin the plan. A row leaves `scheduled` by an update,
-- and its old version stays in jobs_scheduled_idx until vacuum. Sampled in
-- the middle of `ledgerflow bench sync --provider xero --invoices 10000
-- --tenants 100 --per-minute 60` (7,500 jobs waiting for a turn, no
-- autovacuum yet), the statement took 2.7 ms and 711 buffers to promote
-- nothing: trusting an estimate of 25 rows, PostgreSQL chose a bitmap scan,
-- which went to the heap for each of 22,155 index entries, nearly all of
-- them versions already updated away; and a bitmap scan never marks such
-- entries dead, so the next run, 20 ms later, paid for them again. A plain
-- index scan stops at the first job not yet due and marks the dead entries
-- it passes, so each is paid for once.

CREATE FUNCTION ledgerflow.promote_due(p_limit integer, OUT promoted bigint, OUT queues_woken bigint)
LANGUAGE plpgsql
SET enable_bitmapscan = off
AS $$
BEGIN
    -- PL/pgSQL keeps the statement's plan for the session: planned anew on
    -- every run (as a SQL function's is) it cost 300 buffers more.
    WITH due AS (
        UPDATE ledgerflow.jobs SET state = 'available'
        WHERE id IN (SELECT id FROM ledgerflow.jobs
                     WHERE state = 'scheduled' AND run_at <= now()
                     ORDER BY run_at LIMIT p_limit FOR UPDATE SKIP LOCKED)
        RETURNING queue
    ),
    woken AS (SELECT pg_notify('ledgerflow_jobs', q) FROM (SELECT DISTINCT queue AS q FROM due) d)
    SELECT (SELECT count(*) FROM due), (SELECT count(*) FROM woken)
    INTO promoted, queues_woken;
END;
$$;
