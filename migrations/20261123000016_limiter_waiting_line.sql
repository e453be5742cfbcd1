-- A waiting line for the minute window (issue 4, the 100-tenant benchmark
-- at Xero's own limits).
--
-- A caller refused for a full minute window was told when the window has
-- room for its calls, computed from the calls in the window alone. Every
-- job of an organisation refused in the same stretch was told the same
-- instant; they all woke together, one got the room, and the rest were
-- claimed, refused and rescheduled again: about three claims per job, each
-- costing the ledger's statements, and a few seconds of lag per window
-- while the herd went through the organisation's row lock.
--
-- Now a job refused before it holds any calls is promised a turn: a row of
-- ledgerflow.provider_limit_promises under the job's id, at the instant it
-- was told, for the calls it needs. The next refused job's instant counts
-- those promised calls as if made then, so each waiter is told a later,
-- distinct instant: when the window has room for it after the waiters
-- ahead. A job refused again keeps its place: its new turn counts only the
-- turns ahead of its old one. A job's turn goes when the job is let in
-- (early or late) or is given a new one; an unpromised turn would otherwise
-- push every later waiter a minute back (a first version took "the
-- earliest turn due" instead and lost whole windows that way). Promises only order the waiters: a
-- grant still checks the real window, so the limit holds whatever they
-- say, and a promise nobody took is dropped 10 s after its time.
--
-- The whole function as of 20261123000015_limiter_answer_time.sql, with the
-- promises added.

CREATE TABLE ledgerflow.provider_limit_promises (
    id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope  text        NOT NULL,
    -- The job the turn was promised to (ledgerflow.jobs.id).
    job_id bigint      NOT NULL,
    at     timestamptz NOT NULL,
    calls  integer     NOT NULL CHECK (calls > 0)
);
CREATE INDEX provider_limit_promises_job_idx ON ledgerflow.provider_limit_promises (job_id);
CREATE INDEX provider_limit_promises_scope_at_idx ON ledgerflow.provider_limit_promises (scope, at);

DROP FUNCTION ledgerflow.limiter_acquire(text[], bigint[], integer[], integer[], integer[], interval, integer, bigint);

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
    v_needs    integer[] := '{}';
    v_promised bigint;
    v_promise  integer;
    v_turn     timestamptz;
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
                SELECT coalesce(sum(calls), 0) INTO v_promised
                FROM ledgerflow.provider_limit_promises
                WHERE scope = p_scopes[i] AND (v_turn IS NULL OR at < v_turn);
                SELECT t.at INTO v_at FROM (
                    SELECT c.at FROM ledgerflow.provider_limit_calls c
                    WHERE c.scope = p_scopes[i] AND c.at > v_now - interval '60 seconds'
                    UNION ALL
                    SELECT p.at FROM ledgerflow.provider_limit_promises p,
                                     generate_series(1, p.calls)
                    WHERE p.scope = p_scopes[i] AND (v_turn IS NULL OR p.at < v_turn)) t
                ORDER BY t.at OFFSET v_count + v_promised - p_per_minute[i] + v_need - 1 LIMIT 1;
                v_at := coalesce(v_at, v_now) + interval '60 seconds';
                IF wait_until IS NULL OR v_at > wait_until THEN
                    wait_until := v_at; wait_reason := 'minute'; wait_scope := p_scopes[i];
                    v_promise := i;
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
        -- A caller that holds no calls yet and waits for the minute window
        -- is promised its turn (a caller already holding a reservation is
        -- mid-job and goes first anyway).
        IF wait_reason = 'minute' AND v_promise IS NOT NULL AND p_reservation IS NULL
           AND p_job IS NOT NULL AND wait_scope = p_scopes[v_promise] THEN
            INSERT INTO ledgerflow.provider_limit_promises (scope, job_id, at, calls)
            VALUES (p_scopes[v_promise], p_job, wait_until, v_needs[v_promise]);
        END IF;
        RETURN;
    END IF;

    FOR i IN 1..n LOOP
        IF p_job IS NOT NULL AND v_needs[i] > 0
           AND NOT ledgerflow.limiter_counted(p_connection_ids[i], p_per_day[i], p_concurrent[i]) THEN
            -- The job's turn is used (early or late: whenever it is let in).
            DELETE FROM ledgerflow.provider_limit_promises
            WHERE scope = p_scopes[i] AND job_id = p_job;
        END IF;
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
