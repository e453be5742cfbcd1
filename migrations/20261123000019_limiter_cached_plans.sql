-- Less work per call in the limiter (issue 4, the default Xero benchmark:
-- 100 organisations, 25,000 calls in 75 s, bound by the CPU).
--
-- Sampled with perf over 25 s of that run, PostgreSQL took 70 % of the
-- machine and the limiter's two functions about half of that. Three
-- changes, none to what is granted:
--
-- * limiter_counted_minute was a SQL function. PostgreSQL plans the body
--   of a SQL function it cannot inline (this one reads a table) afresh on
--   every call, and the limiter calls it twice a request; fmgr_sql, the
--   SQL-function executor with its planning, took 12 % of the CPU. As
--   PL/pgSQL the statement is planned once per session.
-- * Housekeeping once in ten seconds per scope, not on every call: calls
--   that have left every window, reservations unspent after a minute,
--   expired concurrency slots. Every read leaves out what a sweep would
--   have removed (a reservation's call older than a minute, a slot past
--   its expiry), so nothing counts longer than before; `swept_at` on the
--   scope's row says when it was last done. The app-wide per-second
--   counts are swept by the first call of each second on each shard.
-- * Fewer statements: the connection scope's pause is read with its lock;
--   the minute and day windows are counted in one read, in
--   limiter_acquire and in limiter_finish's check of the remaining counts;
--   a job already holding a reservation is not looked for among the
--   waiters (it was let in when it got it).
--
-- limiter_acquire is the whole function as of
-- 20261123000017_limiter_window_tail.sql, limiter_finish as of
-- 20261123000015_limiter_answer_time.sql, with the changes above.

CREATE OR REPLACE FUNCTION ledgerflow.limiter_counted_minute(p_scope text, p_now_s bigint)
RETURNS bigint LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT coalesce(sum(calls), 0)::bigint FROM ledgerflow.provider_limit_counts
            WHERE scope = p_scope AND second > p_now_s - 60);
END;
$$;

-- When the scope's expired calls, reservations and slots were last swept.
ALTER TABLE ledgerflow.provider_limits ADD COLUMN swept_at timestamptz;

CREATE OR REPLACE FUNCTION ledgerflow.limiter_acquire(
    p_scopes          text[],
    p_connection_ids  bigint[],
    p_per_minute      integer[],
    p_per_day         integer[],
    p_concurrent      integer[],
    p_slot_ttl        interval,
    -- Calls to set aside on each connection scope when the caller holds no
    -- reservation yet (1: just this call).
    p_reserve         integer,
    -- The caller's reservation, if it holds one: its calls are spent first.
    p_reservation     bigint,
    -- The job asking (its id), if a job asks: a job refused for a full
    -- minute window is promised a turn under it.
    p_job             bigint,
    OUT granted       boolean,
    OUT slot_ids      bigint[],
    OUT wait_until    timestamptz,
    OUT wait_reason   text,
    OUT wait_scope    text,
    OUT reservation_id bigint,
    -- The calls this grant logged or spent, for limiter_finish to date at
    -- the answer.
    OUT call_ids      bigint[]
) LANGUAGE plpgsql AS $$
DECLARE
    v_now      timestamptz;
    v_now_s    bigint;
    v_paused   timestamptz;
    v_count    bigint;
    v_at       timestamptz;
    v_second   bigint;
    v_headroom bigint;
    v_id       bigint;
    v_need     integer;
    -- What the caller asked for, before the window's tail cut it down.
    v_asked    integer;
    v_needs    integer[] := '{}';
    v_promised bigint;
    -- The calls of the turn the job held, when it is let in.
    v_held     bigint;
    v_promise  integer;
    v_turn     timestamptz;
    -- Connection scopes whose waiters get the room a turn left unused.
    v_hand_on  text[] := '{}';
    -- Read under each connection scope's lock, in the first loop.
    v_paused_of timestamptz[] := '{}';
    v_swept_of  timestamptz[] := '{}';
    v_count_day bigint;
    v_fresh     boolean;
    i          integer;
    n          integer := coalesce(array_length(p_scopes, 1), 0);
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    granted := false;
    slot_ids := '{}';
    call_ids := '{}';
    reservation_id := p_reservation;
    -- Lock the connection scopes first, in the order given.
    FOR i IN 1..n LOOP
        CONTINUE WHEN ledgerflow.limiter_counted(p_connection_ids[i], p_per_day[i], p_concurrent[i]);
        SELECT paused_until, swept_at INTO v_paused, v_at
        FROM ledgerflow.provider_limits WHERE scope = p_scopes[i] FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO ledgerflow.provider_limits (scope, connection_id)
            VALUES (p_scopes[i], p_connection_ids[i]) ON CONFLICT (scope) DO NOTHING;
            SELECT paused_until, swept_at INTO v_paused, v_at
            FROM ledgerflow.provider_limits WHERE scope = p_scopes[i] FOR UPDATE;
        END IF;
        v_paused_of[i] := v_paused;
        v_swept_of[i] := v_at;
    END LOOP;
    v_paused := NULL;
    v_at := NULL;
    -- After the locks: the clock now, not when the statement began waiting.
    v_now := clock_timestamp();
    v_now_s := floor(extract(epoch FROM v_now))::bigint;

    FOR i IN 1..n LOOP
        IF ledgerflow.limiter_counted(p_connection_ids[i], p_per_day[i], p_concurrent[i]) THEN
            SELECT paused_until INTO v_paused FROM ledgerflow.provider_limits WHERE scope = p_scopes[i];
        ELSE
            v_paused := v_paused_of[i];
        END IF;
        IF v_paused > v_now AND (wait_until IS NULL OR v_paused > wait_until) THEN
            wait_until := v_paused; wait_reason := 'paused'; wait_scope := p_scopes[i];
        END IF;

        IF ledgerflow.limiter_counted(p_connection_ids[i], p_per_day[i], p_concurrent[i]) THEN
            CONTINUE WHEN p_per_minute[i] IS NULL;
            v_count := ledgerflow.limiter_counted_minute(p_scopes[i], v_now_s);
            v_headroom := greatest(64, p_per_minute[i] / 50);
            IF v_count + v_headroom >= p_per_minute[i] THEN
                -- Near the limit: serialise on the app row and recount.
                INSERT INTO ledgerflow.provider_limits (scope, connection_id)
                VALUES (p_scopes[i], NULL) ON CONFLICT (scope) DO NOTHING;
                PERFORM 1 FROM ledgerflow.provider_limits WHERE scope = p_scopes[i] FOR UPDATE;
                v_count := ledgerflow.limiter_counted_minute(p_scopes[i], v_now_s);
            END IF;
            IF v_count >= p_per_minute[i] THEN
                -- Room again when the second holding the call that makes
                -- the window full has left it.
                SELECT r.second INTO v_second FROM (
                    SELECT g.second, sum(g.calls) OVER (ORDER BY g.second) AS run
                    FROM (SELECT c.second, sum(c.calls) AS calls FROM ledgerflow.provider_limit_counts c
                          WHERE c.scope = p_scopes[i] AND c.second > v_now_s - 60
                          GROUP BY c.second) g) r
                WHERE r.run >= v_count - p_per_minute[i] + 1
                ORDER BY r.second LIMIT 1;
                v_at := to_timestamp(coalesce(v_second, v_now_s) + 61);
                IF wait_until IS NULL OR v_at > wait_until THEN
                    wait_until := v_at; wait_reason := 'minute'; wait_scope := p_scopes[i];
                END IF;
            END IF;
            CONTINUE;
        END IF;

        -- A reservation counts for one minute from when it was made; calls
        -- it did not spend by then are gone (the job is slow or dead): every
        -- read below leaves them out. What has left every window is swept
        -- away once in ten seconds, not by every call.
        IF v_swept_of[i] IS NULL OR v_swept_of[i] < v_now - interval '10 seconds' THEN
            DELETE FROM ledgerflow.provider_limit_calls
            WHERE scope = p_scopes[i]
              AND at <= v_now - CASE WHEN p_per_day[i] IS NULL THEN interval '60 seconds' ELSE interval '24 hours' END;
            DELETE FROM ledgerflow.provider_limit_calls
            WHERE scope = p_scopes[i] AND reservation IS NOT NULL AND at <= v_now - interval '60 seconds';
            DELETE FROM ledgerflow.provider_limit_slots WHERE scope = p_scopes[i] AND expires_at <= v_now;
            UPDATE ledgerflow.provider_limits SET swept_at = v_now WHERE scope = p_scopes[i];
        END IF;
        -- How many calls this grant adds to the windows: none when the
        -- caller's reservation still holds one here; else one, or a whole
        -- reservation's worth for a caller that holds none yet.
        IF p_reservation IS NOT NULL AND EXISTS (
               SELECT 1 FROM ledgerflow.provider_limit_calls
               WHERE scope = p_scopes[i] AND reservation = p_reservation
                 AND at > v_now - interval '60 seconds') THEN
            v_need := 0;
        ELSIF p_reservation IS NULL THEN
            v_need := greatest(coalesce(p_reserve, 1), 1);
        ELSE
            v_need := 1;
        END IF;
        -- A reservation never asks for more than a window holds.
        v_need := least(v_need, coalesce(p_per_minute[i], v_need), coalesce(p_per_day[i], v_need));
        v_needs[i] := v_need;
        v_asked := v_need;
        -- Both windows in one read of the scope's calls.
        IF v_need > 0 AND (p_per_minute[i] IS NOT NULL OR p_per_day[i] IS NOT NULL) THEN
            SELECT count(*) FILTER (WHERE at > v_now - interval '60 seconds'),
                   count(*) FILTER (WHERE reservation IS NULL OR at > v_now - interval '60 seconds')
            INTO v_count, v_count_day
            FROM ledgerflow.provider_limit_calls
            WHERE scope = p_scopes[i]
              AND at > v_now - CASE WHEN p_per_day[i] IS NULL THEN interval '60 seconds' ELSE interval '24 hours' END;
        END IF;
        IF p_per_minute[i] IS NOT NULL AND v_need > 0 THEN
            -- A job starting at the window's tail takes the room there is
            -- and waits for the rest of its calls mid-job: refused, it
            -- would leave that room unused until its turn next window.
            IF p_reservation IS NULL AND v_need > 1
               AND v_count < p_per_minute[i] AND v_count + v_need > p_per_minute[i] THEN
                v_need := p_per_minute[i] - v_count;
                v_needs[i] := v_need;
            END IF;
            IF v_count + v_need > p_per_minute[i] THEN
                -- The window has room for v_need calls again when the
                -- (count - limit + need)-th oldest call leaves it, counting
                -- the calls promised to the callers told to wait before
                -- this one as made at their promised times: each waiter
                -- is given its own turn instead of all waking together.
                DELETE FROM ledgerflow.provider_limit_promises
                WHERE scope = p_scopes[i] AND at < v_now - interval '10 seconds';
                -- A job refused again keeps its place in the line: its new
                -- turn counts only the turns ahead of its old one (a waiter
                -- let in a little late would otherwise push it to the back,
                -- a minute or more). Its old turn goes.
                v_turn := NULL;
                IF p_job IS NOT NULL THEN
                    WITH gone AS (
                        DELETE FROM ledgerflow.provider_limit_promises
                        WHERE scope = p_scopes[i] AND job_id = p_job
                        RETURNING at)
                    SELECT min(at) INTO v_turn FROM gone;
                END IF;
                -- A running job (it holds a reservation) is not in the
                -- line: its turn is the first room in the window itself.
                -- Counted behind every promised turn it slept past the
                -- room its own job had started on, often a whole window.
                SELECT coalesce(sum(calls), 0) INTO v_promised
                FROM ledgerflow.provider_limit_promises
                WHERE scope = p_scopes[i] AND (v_turn IS NULL OR at < v_turn)
                  AND p_reservation IS NULL;
                SELECT t.at INTO v_at FROM (
                    SELECT c.at FROM ledgerflow.provider_limit_calls c
                    WHERE c.scope = p_scopes[i] AND c.at > v_now - interval '60 seconds'
                    UNION ALL
                    SELECT p.at FROM ledgerflow.provider_limit_promises p,
                                     generate_series(1, p.calls)
                    WHERE p.scope = p_scopes[i] AND (v_turn IS NULL OR p.at < v_turn)
                      AND p_reservation IS NULL) t
                ORDER BY t.at OFFSET v_count + v_promised - p_per_minute[i] + v_need - 1 LIMIT 1;
                v_at := coalesce(v_at, v_now) + interval '60 seconds';
                IF wait_until IS NULL OR v_at > wait_until THEN
                    wait_until := v_at; wait_reason := 'minute'; wait_scope := p_scopes[i];
                    v_promise := i;
                END IF;
            END IF;
        END IF;
        IF p_per_day[i] IS NOT NULL AND v_need > 0 THEN
            v_count := v_count_day;
            -- The day window must hold all the job asked for: a job it
            -- cannot hold would wait mid-job for hours.
            IF v_count + v_asked > p_per_day[i] THEN
                SELECT at INTO v_at FROM ledgerflow.provider_limit_calls
                WHERE scope = p_scopes[i] AND at > v_now - interval '24 hours'
                  AND (reservation IS NULL OR at > v_now - interval '60 seconds')
                ORDER BY at OFFSET v_count - p_per_day[i] + v_asked - 1 LIMIT 1;
                v_at := coalesce(v_at, v_now) + interval '24 hours';
                IF wait_until IS NULL OR v_at > wait_until THEN
                    wait_until := v_at; wait_reason := 'day'; wait_scope := p_scopes[i];
                END IF;
            END IF;
        END IF;
        IF p_concurrent[i] IS NOT NULL THEN
            SELECT count(*) INTO v_count FROM ledgerflow.provider_limit_slots
            WHERE scope = p_scopes[i] AND expires_at > v_now;
            -- Slots are given back when a call ends, usually well within 200 ms.
            IF v_count >= p_concurrent[i]
               AND (wait_until IS NULL OR v_now + interval '200 milliseconds' > wait_until) THEN
                wait_until := v_now + interval '200 milliseconds';
                wait_reason := 'concurrency'; wait_scope := p_scopes[i];
            END IF;
        END IF;
    END LOOP;

    IF wait_until IS NOT NULL THEN
        -- A caller that holds no calls yet and waits for the minute window
        -- is promised its turn (a caller already holding a reservation is
        -- mid-job and goes first anyway).
        IF wait_reason = 'minute' AND v_promise IS NOT NULL AND p_reservation IS NULL
           AND p_job IS NOT NULL AND wait_scope = p_scopes[v_promise] THEN
            INSERT INTO ledgerflow.provider_limit_promises (scope, job_id, at, calls, per_minute)
            VALUES (p_scopes[v_promise], p_job, wait_until, v_needs[v_promise], p_per_minute[v_promise]);
        END IF;
        RETURN;
    END IF;

    FOR i IN 1..n LOOP
        -- Only a job starting (no reservation yet) can hold a turn.
        IF p_job IS NOT NULL AND p_reservation IS NULL AND v_needs[i] > 0
           AND NOT ledgerflow.limiter_counted(p_connection_ids[i], p_per_day[i], p_concurrent[i]) THEN
            -- The job's turn is used (early or late: whenever it is let in).
            -- The turns behind it were counted on its promised calls at its
            -- promised time; it came later, or needs fewer (it was spared a
            -- lookup since): the next waiters' turns are counted again below.
            WITH used AS (
                DELETE FROM ledgerflow.provider_limit_promises
                WHERE scope = p_scopes[i] AND job_id = p_job
                RETURNING calls)
            SELECT coalesce(sum(calls), 0) INTO v_held FROM used;
            IF v_held > 0 THEN
                v_hand_on := v_hand_on || p_scopes[i];
            END IF;
        END IF;
        IF ledgerflow.limiter_counted(p_connection_ids[i], p_per_day[i], p_concurrent[i]) THEN
            -- An unlimited app scope has nothing to count.
            CONTINUE WHEN p_per_minute[i] IS NULL;
            INSERT INTO ledgerflow.provider_limit_counts AS c (scope, second, shard, calls)
            VALUES (p_scopes[i], v_now_s, (pg_backend_pid() % 16)::smallint, 1)
            ON CONFLICT (scope, second, shard) DO UPDATE SET calls = c.calls + 1
            RETURNING (xmax = 0) INTO v_fresh;
            -- Old seconds go without waiting on anyone else doing the same,
            -- swept by the first call of a second on a shard.
            IF v_fresh THEN
                DELETE FROM ledgerflow.provider_limit_counts
                WHERE ctid IN (SELECT ctid FROM ledgerflow.provider_limit_counts
                               WHERE scope = p_scopes[i] AND second < v_now_s - 120
                               FOR UPDATE SKIP LOCKED);
            END IF;
            CONTINUE;
        END IF;
        IF v_needs[i] = 0 THEN
            -- Spend one reserved call: it now dates from this call.
            UPDATE ledgerflow.provider_limit_calls SET at = v_now, reservation = NULL
            WHERE id = (SELECT id FROM ledgerflow.provider_limit_calls
                        WHERE scope = p_scopes[i] AND reservation = p_reservation
                          AND at > v_now - interval '60 seconds' LIMIT 1)
            RETURNING id INTO v_id;
            call_ids := call_ids || v_id;
        ELSE
            INSERT INTO ledgerflow.provider_limit_calls (scope, at) VALUES (p_scopes[i], v_now)
            RETURNING id INTO v_id;
            call_ids := call_ids || v_id;
            -- A job that asked to set calls aside holds a reservation even
            -- when the tail of the window had room for this call alone: its
            -- next calls then count as mid-job (one at a time, no new
            -- reservation), not as a new job's start.
            IF v_needs[i] > 1 OR (p_reservation IS NULL AND coalesce(p_reserve, 1) > 1) THEN
                reservation_id := coalesce(reservation_id, nextval('ledgerflow.limiter_reservation_seq'));
            END IF;
            IF v_needs[i] > 1 THEN
                INSERT INTO ledgerflow.provider_limit_calls (scope, at, reservation)
                SELECT p_scopes[i], v_now, reservation_id FROM generate_series(2, v_needs[i]);
            END IF;
        END IF;
        IF p_concurrent[i] IS NOT NULL THEN
            INSERT INTO ledgerflow.provider_limit_slots (scope, expires_at)
            VALUES (p_scopes[i], v_now + p_slot_ttl) RETURNING id INTO v_id;
            slot_ids := slot_ids || v_id;
        END IF;
    END LOOP;
    FOR i IN 1..coalesce(array_length(v_hand_on, 1), 0) LOOP
        PERFORM ledgerflow.limiter_hand_on(v_hand_on[i]);
    END LOOP;
    granted := true;
END;
$$;


CREATE OR REPLACE FUNCTION ledgerflow.limiter_finish(
    p_slot_ids              bigint[],
    p_scope                 text,
    p_connection_id         bigint,
    p_per_minute            integer,
    p_per_day               integer,
    p_app_scope             text,
    -- The app scope is counted (provider_limit_counts) rather than logged.
    p_app_counted           boolean,
    p_app_per_minute        integer,
    p_minute_remaining      integer,
    p_day_remaining         integer,
    p_app_minute_remaining  integer,
    p_retry_at              timestamptz,
    p_problem               text,
    -- The calls limiter_acquire logged for this request (its call_ids).
    p_call_ids              bigint[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_now     timestamptz := clock_timestamp();
    v_now_s   bigint := floor(extract(epoch FROM clock_timestamp()))::bigint;
    v_paused  text := CASE WHEN p_problem = 'appminute' AND p_app_scope IS NOT NULL
                           THEN p_app_scope ELSE p_scope END;
    v_ours    bigint;
    v_ours_day bigint;
    v_missing bigint;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    IF coalesce(array_length(p_slot_ids, 1), 0) > 0 THEN
        DELETE FROM ledgerflow.provider_limit_slots WHERE id = ANY(p_slot_ids);
    END IF;
    -- The provider counted the request when it arrived, some time between
    -- our grant and this answer: from now on the call is dated at the
    -- answer, so a window we see as free is free at the provider too.
    IF coalesce(array_length(p_call_ids, 1), 0) > 0 THEN
        UPDATE ledgerflow.provider_limit_calls SET at = greatest(at, v_now)
        WHERE id = ANY(p_call_ids) AND reservation IS NULL;
    END IF;
    IF p_scope IS NULL THEN
        RETURN;
    END IF;
    -- The connection's row before the app's, the order limiter_acquire
    -- locks them in, so the two never deadlock.
    IF p_minute_remaining IS NOT NULL OR p_day_remaining IS NOT NULL OR p_app_minute_remaining IS NOT NULL THEN
        INSERT INTO ledgerflow.provider_limits
            (scope, connection_id, minute_remaining, day_remaining, app_minute_remaining, observed_at)
        VALUES (p_scope, p_connection_id, p_minute_remaining, p_day_remaining, p_app_minute_remaining, v_now)
        ON CONFLICT (scope) DO UPDATE
        SET minute_remaining = coalesce(EXCLUDED.minute_remaining, ledgerflow.provider_limits.minute_remaining),
            day_remaining = coalesce(EXCLUDED.day_remaining, ledgerflow.provider_limits.day_remaining),
            app_minute_remaining = coalesce(EXCLUDED.app_minute_remaining, ledgerflow.provider_limits.app_minute_remaining),
            observed_at = EXCLUDED.observed_at, updated_at = now();
    END IF;
    IF p_retry_at IS NOT NULL AND p_problem IS NOT NULL THEN
        INSERT INTO ledgerflow.provider_limits (scope, connection_id, paused_until, pause_reason)
        VALUES (v_paused, CASE WHEN v_paused = p_scope THEN p_connection_id END, p_retry_at, p_problem)
        ON CONFLICT (scope) DO UPDATE
        SET paused_until = greatest(ledgerflow.provider_limits.paused_until, EXCLUDED.paused_until),
            pause_reason = EXCLUDED.pause_reason, updated_at = now();
    END IF;
    IF p_minute_remaining IS NULL AND p_day_remaining IS NULL AND p_app_minute_remaining IS NULL THEN
        RETURN;
    END IF;

    -- Both windows in one read of the scope's calls (a reservation's
    -- calls unspent after a minute are gone, as limiter_acquire counts).
    IF (p_per_minute IS NOT NULL AND p_minute_remaining IS NOT NULL)
       OR (p_per_day IS NOT NULL AND p_day_remaining IS NOT NULL) THEN
        SELECT count(*) FILTER (WHERE at > v_now - interval '60 seconds'),
               count(*) FILTER (WHERE reservation IS NULL OR at > v_now - interval '60 seconds')
        INTO v_ours, v_ours_day
        FROM ledgerflow.provider_limit_calls
        WHERE scope = p_scope
          AND at > v_now - CASE WHEN p_per_day IS NOT NULL AND p_day_remaining IS NOT NULL
                                THEN interval '24 hours' ELSE interval '60 seconds' END;
    END IF;
    IF p_per_minute IS NOT NULL AND p_minute_remaining IS NOT NULL THEN
        v_missing := p_per_minute - p_minute_remaining - v_ours;
        IF v_missing > 0 THEN
            INSERT INTO ledgerflow.provider_limit_calls (scope, at)
            SELECT p_scope, v_now FROM generate_series(1, v_missing);
            -- They count in the day too.
            v_ours_day := v_ours_day + v_missing;
        END IF;
    END IF;
    IF p_per_day IS NOT NULL AND p_day_remaining IS NOT NULL THEN
        v_missing := p_per_day - p_day_remaining - v_ours_day;
        IF v_missing > 0 THEN
            INSERT INTO ledgerflow.provider_limit_calls (scope, at)
            SELECT p_scope, v_now FROM generate_series(1, v_missing);
        END IF;
    END IF;
    IF p_app_scope IS NOT NULL AND p_app_per_minute IS NOT NULL AND p_app_minute_remaining IS NOT NULL THEN
        IF p_app_counted THEN
            v_ours := ledgerflow.limiter_counted_minute(p_app_scope, v_now_s);
        ELSE
            SELECT count(*) INTO v_ours FROM ledgerflow.provider_limit_calls
            WHERE scope = p_app_scope AND at > v_now - interval '60 seconds';
        END IF;
        v_missing := p_app_per_minute - p_app_minute_remaining - v_ours;
        IF v_missing > 0 AND p_app_counted THEN
            INSERT INTO ledgerflow.provider_limit_counts AS c (scope, second, shard, calls)
            VALUES (p_app_scope, v_now_s, (pg_backend_pid() % 16)::smallint, v_missing)
            ON CONFLICT (scope, second, shard) DO UPDATE SET calls = c.calls + EXCLUDED.calls;
        ELSIF v_missing > 0 THEN
            INSERT INTO ledgerflow.provider_limit_calls (scope, at)
            SELECT p_app_scope, v_now FROM generate_series(1, v_missing);
        END IF;
    END IF;
END;
$$;

