-- The bulk intake (issue 20): where `queue::enqueue_copy` (and a host's
-- COPY by `ledgerflow.reserve_intake`) writes jobs, so a bulk enqueue pays
-- for a heap row and nothing else. `ledgerflow.jobs` costs three B-tree
-- inserts a row (primary key, claim index, tenant index) and two row
-- triggers, which also turn a COPY's batched heap inserts into one at a
-- time: about three quarters of a bulk enqueue's time. The intake tables
-- are plain, logged tables (a committed job survives a crash) with no
-- index and no trigger; a worker's intake service (`runtime::intake`)
-- moves their rows into `ledgerflow.jobs` in one set-based statement,
-- keyed for fairness then, once per tenant per move.
--
--   BEGIN;
--   SELECT ids, intake FROM ledgerflow.reserve_intake(3);
--   COPY <intake> (id, queue, kind, kind_version, payload, priority, tenant
--                  [, run_at] [, hold_key]) FROM STDIN;   -- ids[i] on the i-th row
--   COMMIT;  -- or ROLLBACK, and no job ever existed
--
-- A job is claimable once moved: at the commit's notification, a few
-- milliseconds later while a worker runs. Until then `queue::find_job`
-- reads it from `ledgerflow.job_intake` (available or scheduled), and
-- `--until-empty` counts it. Jobs with unique keys or workflow steps do not
-- come this way (a COPY cannot skip a duplicate key): `enqueue_copy` sends
-- keyed jobs to `ledgerflow.enqueue_many`.
--
-- Two tables take turns (PgQ's rotation, awa's truncated rings): writers
-- go to the current one (`job_intake_turn` % 2, a sequence, so reading it
-- leaves no row version), the mover empties the other and truncates it
-- instead of deleting rows, so no dead row is left behind for a vacuum
-- that a long transaction elsewhere (a report, a nightly pg_dump) may
-- keep from running. It then makes the current table the other one when
-- it holds rows. TRUNCATE needs the table to itself: a writer holds its
-- table from `reserve_intake` to its commit, and when the other table
-- stays busy (a writer that lingers, pg_dump's lock on every table) the
-- mover moves the committed rows of both by DELETE instead, and truncates
-- once it can.

CREATE TABLE ledgerflow.job_intake_0 (
    -- From `ledgerflow.jobs`' own sequence (`reserve_intake`): the job keeps it.
    id           bigint      NOT NULL,
    queue        text        NOT NULL CHECK (queue <> ''),
    kind         text        NOT NULL CHECK (kind <> ''),
    kind_version integer     NOT NULL CHECK (kind_version >= 1),
    -- Checked here, at the writer's COPY, as `ledgerflow.enqueue` checks
    -- it: a row the move could not take would hold up every job behind it.
    payload      jsonb       NOT NULL CHECK (jsonb_typeof(payload) = 'object'
                                             AND (NOT payload ? 'v' OR payload -> 'v' = to_jsonb(kind_version))),
    priority     smallint    NOT NULL DEFAULT 2 CHECK (priority BETWEEN 1 AND 4),
    tenant       text        NOT NULL DEFAULT '',
    run_at       timestamptz NOT NULL DEFAULT now(),
    hold_key     text,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledgerflow.job_intake_1 (LIKE ledgerflow.job_intake_0 INCLUDING ALL);

-- Whose turn it is to take writes: job_intake_<last value % 2>. A sequence
-- is not versioned: turning it leaves nothing for vacuum.
CREATE SEQUENCE ledgerflow.job_intake_turn MINVALUE 0 START 0 CACHE 1;
SELECT setval('ledgerflow.job_intake_turn', 0, true);

-- The jobs waiting in the intake, for readers (`find_job`, `--until-empty`,
-- the benchmarks). Neither table has an index: a lookup scans the intake,
-- which holds only what arrived since the last move.
CREATE VIEW ledgerflow.job_intake AS
    SELECT * FROM ledgerflow.job_intake_0
    UNION ALL
    SELECT * FROM ledgerflow.job_intake_1;

-- Reserve `p_n` job ids and name the intake table to COPY them into, in
-- the caller's transaction (the table is held until it ends, so it is not
-- truncated under the rows). Movers are woken at commit.
CREATE FUNCTION ledgerflow.reserve_intake(
    p_n        integer,
    OUT ids    bigint[],
    OUT intake text
)
LANGUAGE plpgsql AS $$
DECLARE
    v_seq regclass := pg_get_serial_sequence('ledgerflow.jobs', 'id')::regclass;
BEGIN
    IF p_n IS NULL OR p_n < 0 THEN
        RAISE EXCEPTION 'ledgerflow.reserve_intake: the number of jobs must be 0 or more, got %',
            coalesce(p_n::text, 'NULL') USING ERRCODE = '22023';
    END IF;
    intake := format('ledgerflow.job_intake_%s',
                     coalesce(pg_sequence_last_value('ledgerflow.job_intake_turn'), 0) % 2);
    -- A writer that read the turn just before the mover turned it writes
    -- into the table being emptied: it waits for that move, and its rows
    -- go with the next one.
    EXECUTE format('LOCK TABLE %s IN ROW EXCLUSIVE MODE', intake);
    ids := ARRAY(SELECT nextval(v_seq) FROM generate_series(1, p_n));
    IF p_n > 0 THEN
        PERFORM pg_notify('ledgerflow_intake', '');
    END IF;
END;
$$;

-- Move the committed rows of one intake table into `ledgerflow.jobs`
-- (by DELETE when `p_delete`, else leaving them for a TRUNCATE), as
-- `enqueue_many` would insert them: each (queue, tenant) keyed once, from
-- `next_fair_key` (this transaction takes its id before it reads the
-- frontier, as the claim bounds need), its jobs numbered in id order;
-- available when due, else scheduled; the insert triggers key raw rows
-- and hold the jobs of paused connections. Wakes the fetchers of each
-- queue given available jobs. Returns how many rows moved.
CREATE FUNCTION ledgerflow.move_intake_table(p_table text, p_delete boolean)
RETURNS bigint
LANGUAGE plpgsql
-- As in enqueue_many: the plan of a large move crosses jit_above_cost,
-- and compiling it costs more than running it.
SET jit = off
-- Numbering each tenant's jobs sorts the move: 50,000 jobs are about
-- 10 MB, which the default 4 MB spilled to disk (a fifth of the move).
SET work_mem = '64MB'
AS $$
DECLARE
    v_moved  bigint;
    v_queues text[];
BEGIN
    EXECUTE format($q$
        WITH rows AS %s,
        bases AS (
            SELECT d.queue, d.tenant, ledgerflow.next_fair_key(d.queue, d.tenant, 0) AS base
            FROM (SELECT DISTINCT queue, tenant FROM rows) d
        ),
        moved AS (
            INSERT INTO ledgerflow.jobs AS j (id, queue, kind, kind_version, payload, state, priority,
                                              tenant, fair_key, run_at, hold_key, created_at)
            OVERRIDING SYSTEM VALUE
            SELECT r.id, r.queue, r.kind, r.kind_version, r.payload,
                   CASE WHEN r.run_at <= now() THEN 'available' ELSE 'scheduled' END,
                   r.priority, r.tenant,
                   b.base + row_number() OVER (PARTITION BY r.queue, r.tenant ORDER BY r.id) - 1,
                   r.run_at, r.hold_key, r.created_at
            FROM rows r JOIN bases b USING (queue, tenant)
            RETURNING j.queue, j.state
        )
        SELECT count(*), array_agg(DISTINCT queue) FILTER (WHERE state = 'available') FROM moved
        $q$,
        -- Rows read twice: a table is scanned twice rather than copied
        -- into the statement's memory first; deleted rows can only be
        -- read once.
        CASE WHEN p_delete THEN format('(DELETE FROM %s RETURNING *)', p_table)
             ELSE format('NOT MATERIALIZED (SELECT * FROM %s)', p_table) END)
    INTO v_moved, v_queues;
    PERFORM pg_notify('ledgerflow_jobs', q) FROM unnest(v_queues) q;
    RETURN v_moved;
END;
$$;

-- One turn of the intake service (`runtime::intake`): empty the table
-- writers left (the one whose turn it is not) and truncate it, then give
-- writers that table when the current one holds rows, so the next call
-- empties it.
--
-- The left table is locked SHARE while its rows move: no writer can add
-- to it, readers of `ledgerflow.job_intake` are not held up. Only the
-- TRUNCATE takes it whole, at the end and only if no reader holds it then;
-- else its rows (exactly the ones moved) are deleted and a later call
-- truncates. While a writer still holds the left table (one that has not
-- ended; `busy` is true) nothing moves from it, unless `p_fallback`: then
-- the committed rows of both tables move by DELETE (dead rows, which a
-- later truncate removes), so one open transaction does not hold up
-- everyone's jobs. Movers take turns. Must run at READ COMMITTED: each
-- statement must see every writer that committed before the table was
-- locked, or the truncate would take rows that were never moved.
CREATE FUNCTION ledgerflow.move_intake(
    p_fallback  boolean DEFAULT true,
    OUT moved   bigint,
    OUT rotated boolean,
    OUT busy    boolean
)
LANGUAGE plpgsql AS $$
DECLARE
    v_turn bigint;
    v_cur  text;
    v_old  text;
BEGIN
    moved := 0;
    rotated := false;
    busy := false;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'ledgerflow.move_intake must run at READ COMMITTED, not %',
            current_setting('transaction_isolation') USING ERRCODE = '25001';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('ledgerflow.job_intake'));
    v_turn := coalesce(pg_sequence_last_value('ledgerflow.job_intake_turn'), 0);
    v_cur := format('ledgerflow.job_intake_%s', v_turn % 2);
    v_old := format('ledgerflow.job_intake_%s', (v_turn + 1) % 2);
    -- Nothing written to either since each was last truncated: no lock, no
    -- scan (the service calls this every poll interval).
    IF pg_relation_size(v_old) = 0 AND pg_relation_size(v_cur) = 0 THEN
        RETURN;
    END IF;
    BEGIN
        EXECUTE format('LOCK TABLE %s IN SHARE MODE NOWAIT', v_old);
    EXCEPTION WHEN lock_not_available THEN
        busy := true;
    END;
    IF busy THEN
        IF p_fallback THEN
            moved := ledgerflow.move_intake_table(v_old, true)
                   + ledgerflow.move_intake_table(v_cur, true);
        END IF;
        RETURN;
    END IF;
    moved := ledgerflow.move_intake_table(v_old, false);
    IF pg_relation_size(v_old) > 0 THEN
        BEGIN
            EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE NOWAIT', v_old);
            EXECUTE format('TRUNCATE %s', v_old);
        EXCEPTION WHEN lock_not_available THEN
            EXECUTE format('DELETE FROM %s', v_old);
        END;
    END IF;
    IF pg_relation_size(v_cur) > 0 THEN
        PERFORM nextval('ledgerflow.job_intake_turn');
        rotated := true;
    END IF;
END;
$$;
