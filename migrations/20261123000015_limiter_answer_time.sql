-- Calls dated at their answer (issue 4, the 100-tenant benchmark at Xero's
-- own limits).
--
-- The limiter logged a call when it granted it; Xero counts a request when
-- it arrives. When an earlier call spent longer between grant and arrival
-- than a later one, the later call reached Xero inside a window our log
-- showed as free, and Xero answered 429 ("minute"), which pauses the whole
-- organisation until Retry-After. Now limiter_acquire returns the ids of
-- the calls it logged (or the reserved call it spent), and limiter_finish
-- (or a release after a failed request) re-dates them to the answer's
-- time: arrival lies between grant and answer, so a call dated at the
-- answer never leaves our window before it leaves Xero's. The cost is the
-- round trip, added once to each window's wait.
--
-- Whole function bodies as of 20261123000014_limiter_reservations.sql and
-- 20261123000011_limiter.sql, with the call ids added.

ALTER TABLE ledgerflow.provider_limit_calls
    ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY;

DROP FUNCTION ledgerflow.limiter_acquire(text[], bigint[], integer[], integer[], integer[], interval, integer, bigint);
DROP FUNCTION ledgerflow.limiter_finish(bigint[], text, bigint, integer, integer, text, boolean, integer, integer, integer, integer, timestamptz, text);

CREATE FUNCTION ledgerflow.limiter_acquire(
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
    v_needs    integer[] := '{}';
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
        PERFORM 1 FROM ledgerflow.provider_limits WHERE scope = p_scopes[i] FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO ledgerflow.provider_limits (scope, connection_id)
            VALUES (p_scopes[i], p_connection_ids[i]) ON CONFLICT (scope) DO NOTHING;
            PERFORM 1 FROM ledgerflow.provider_limits WHERE scope = p_scopes[i] FOR UPDATE;
        END IF;
    END LOOP;
    -- After the locks: the clock now, not when the statement began waiting.
    v_now := clock_timestamp();
    v_now_s := floor(extract(epoch FROM v_now))::bigint;

    FOR i IN 1..n LOOP
        SELECT paused_until INTO v_paused FROM ledgerflow.provider_limits WHERE scope = p_scopes[i];
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

        DELETE FROM ledgerflow.provider_limit_calls
        WHERE scope = p_scopes[i]
          AND at <= v_now - CASE WHEN p_per_day[i] IS NULL THEN interval '60 seconds' ELSE interval '24 hours' END;
        -- A reservation counts for one minute from when it was made; calls
        -- it did not spend by then are gone (the job is slow or dead).
        DELETE FROM ledgerflow.provider_limit_calls
        WHERE scope = p_scopes[i] AND reservation IS NOT NULL AND at <= v_now - interval '60 seconds';
        -- How many calls this grant adds to the windows: none when the
        -- caller's reservation still holds one here; else one, or a whole
        -- reservation's worth for a caller that holds none yet.
        IF p_reservation IS NOT NULL AND EXISTS (
               SELECT 1 FROM ledgerflow.provider_limit_calls
               WHERE scope = p_scopes[i] AND reservation = p_reservation) THEN
            v_need := 0;
        ELSIF p_reservation IS NULL THEN
            v_need := greatest(coalesce(p_reserve, 1), 1);
        ELSE
            v_need := 1;
        END IF;
        -- A reservation never asks for more than a window holds.
        v_need := least(v_need, coalesce(p_per_minute[i], v_need), coalesce(p_per_day[i], v_need));
        v_needs[i] := v_need;
        IF p_per_minute[i] IS NOT NULL AND v_need > 0 THEN
            SELECT count(*) INTO v_count FROM ledgerflow.provider_limit_calls
            WHERE scope = p_scopes[i] AND at > v_now - interval '60 seconds';
            IF v_count + v_need > p_per_minute[i] THEN
                -- The window has room for v_need calls again when the
                -- (count - limit + need)-th oldest call leaves it.
                SELECT at INTO v_at FROM ledgerflow.provider_limit_calls
                WHERE scope = p_scopes[i] AND at > v_now - interval '60 seconds'
                ORDER BY at OFFSET v_count - p_per_minute[i] + v_need - 1 LIMIT 1;
                v_at := coalesce(v_at, v_now) + interval '60 seconds';
                IF wait_until IS NULL OR v_at > wait_until THEN
                    wait_until := v_at; wait_reason := 'minute'; wait_scope := p_scopes[i];
                END IF;
            END IF;
        END IF;
        IF p_per_day[i] IS NOT NULL AND v_need > 0 THEN
            SELECT count(*) INTO v_count FROM ledgerflow.provider_limit_calls
            WHERE scope = p_scopes[i] AND at > v_now - interval '24 hours';
            IF v_count + v_need > p_per_day[i] THEN
                SELECT at INTO v_at FROM ledgerflow.provider_limit_calls
                WHERE scope = p_scopes[i] AND at > v_now - interval '24 hours'
                ORDER BY at OFFSET v_count - p_per_day[i] + v_need - 1 LIMIT 1;
                v_at := coalesce(v_at, v_now) + interval '24 hours';
                IF wait_until IS NULL OR v_at > wait_until THEN
                    wait_until := v_at; wait_reason := 'day'; wait_scope := p_scopes[i];
                END IF;
            END IF;
        END IF;
        IF p_concurrent[i] IS NOT NULL THEN
            DELETE FROM ledgerflow.provider_limit_slots WHERE scope = p_scopes[i] AND expires_at <= v_now;
            SELECT count(*) INTO v_count FROM ledgerflow.provider_limit_slots WHERE scope = p_scopes[i];
            -- Slots are given back when a call ends, usually well within 200 ms.
            IF v_count >= p_concurrent[i]
               AND (wait_until IS NULL OR v_now + interval '200 milliseconds' > wait_until) THEN
                wait_until := v_now + interval '200 milliseconds';
                wait_reason := 'concurrency'; wait_scope := p_scopes[i];
            END IF;
        END IF;
    END LOOP;

    IF wait_until IS NOT NULL THEN
        RETURN;
    END IF;

    FOR i IN 1..n LOOP
        IF ledgerflow.limiter_counted(p_connection_ids[i], p_per_day[i], p_concurrent[i]) THEN
            -- An unlimited app scope has nothing to count.
            CONTINUE WHEN p_per_minute[i] IS NULL;
            INSERT INTO ledgerflow.provider_limit_counts AS c (scope, second, shard, calls)
            VALUES (p_scopes[i], v_now_s, (pg_backend_pid() % 16)::smallint, 1)
            ON CONFLICT (scope, second, shard) DO UPDATE SET calls = c.calls + 1;
            -- Old seconds go without waiting on anyone else doing the same.
            DELETE FROM ledgerflow.provider_limit_counts
            WHERE ctid IN (SELECT ctid FROM ledgerflow.provider_limit_counts
                           WHERE scope = p_scopes[i] AND second < v_now_s - 120
                           FOR UPDATE SKIP LOCKED);
            CONTINUE;
        END IF;
        IF v_needs[i] = 0 THEN
            -- Spend one reserved call: it now dates from this call.
            UPDATE ledgerflow.provider_limit_calls SET at = v_now, reservation = NULL
            WHERE id = (SELECT id FROM ledgerflow.provider_limit_calls
                        WHERE scope = p_scopes[i] AND reservation = p_reservation LIMIT 1)
            RETURNING id INTO v_id;
            call_ids := call_ids || v_id;
        ELSE
            INSERT INTO ledgerflow.provider_limit_calls (scope, at) VALUES (p_scopes[i], v_now)
            RETURNING id INTO v_id;
            call_ids := call_ids || v_id;
            IF v_needs[i] > 1 THEN
                reservation_id := coalesce(reservation_id, nextval('ledgerflow.limiter_reservation_seq'));
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
    granted := true;
END;
$$;

CREATE FUNCTION ledgerflow.limiter_finish(
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

    IF p_per_minute IS NOT NULL AND p_minute_remaining IS NOT NULL THEN
        SELECT count(*) INTO v_ours FROM ledgerflow.provider_limit_calls
        WHERE scope = p_scope AND at > v_now - interval '60 seconds';
        v_missing := p_per_minute - p_minute_remaining - v_ours;
        IF v_missing > 0 THEN
            INSERT INTO ledgerflow.provider_limit_calls (scope, at)
            SELECT p_scope, v_now FROM generate_series(1, v_missing);
        END IF;
    END IF;
    IF p_per_day IS NOT NULL AND p_day_remaining IS NOT NULL THEN
        SELECT count(*) INTO v_ours FROM ledgerflow.provider_limit_calls
        WHERE scope = p_scope AND at > v_now - interval '24 hours';
        v_missing := p_per_day - p_day_remaining - v_ours;
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
