-- The window's tail goes to a starting job (issue 4: 10,000 invoices over
-- 100 organisations at 40 calls a minute ended a whole minute late).
--
-- A job's first call was granted only when the window had room for every
-- call the job sets aside (usually three). When the window had room for
-- one or two, no job fitted: the waiters were told turns in the next
-- window and the room went unused. Organisations lost 2 to 5 of 40 calls
-- a window that way, and with 270 calls to make needed eight windows
-- where seven hold them. Now a job that finds room for fewer calls than
-- it asked for starts with that room and waits for its other calls as a
-- job already running does (inline, up to the adapter's mid-job wait),
-- and the reservation id it is given marks it as running even when the
-- room held this call alone. A window with no room at all refuses as
-- before, and the day window still never starts a job it cannot hold.
--
-- A running job refused for the minute window (it started on the tail, or
-- outgrew its reservation) was told its turn behind every promised turn,
-- in the next window or later, and slept past the room its own start was
-- meant to use. It is not in the line: its turn is now the first room in
-- the window.
--
-- Turns are counted once, when a job is refused, on the calls each
-- waiter ahead needed then (usually three) at the instant promised. Waiters
-- come later than promised, or need two calls (spared a lookup since), or
-- a job ends with reserved calls unspent: the later turns never learn of
-- the room. In the first run after the change above, one organisation's
-- third window held 47 calls and the 13 slots left sat unused until the
-- fourth. Now each waiter let in, and each reservation given back, counts
-- the next waiters' turns again against the real window
-- (ledgerflow.limiter_hand_on): a turn that can be earlier moves earlier,
-- with its job's due time; where the window has room for part of a
-- waiter's calls now and for all only later, it starts on the part now.
-- A job moved that way is one the queue would have run at its turn
-- anyway: the limiter only moves its time earlier.
--
-- The whole of limiter_acquire as of
-- 20261123000016_limiter_waiting_line.sql, with the tail given out and the
-- room handed on; limiter_release_reservation as of
-- 20261123000014_limiter_reservations.sql, with the room handed on.

-- The window a turn was counted against (its per-minute limit), so room
-- can be handed on where only the scope is known.
ALTER TABLE ledgerflow.provider_limit_promises ADD COLUMN per_minute integer;

CREATE FUNCTION ledgerflow.limiter_hand_on(p_scope text)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_now   timestamptz := clock_timestamp();
    v_limit integer;
    v_count bigint;
    v_due   bigint;
    v_next  record;
    v_at    timestamptz;
    v_seen  bigint[] := '{}';
    v_moved integer := 0;
BEGIN
    SELECT max(per_minute) INTO v_limit FROM ledgerflow.provider_limit_promises
    WHERE scope = p_scope AND at > v_now;
    IF v_limit IS NULL THEN
        RETURN 0;
    END IF;
    SELECT count(*) INTO v_count FROM ledgerflow.provider_limit_calls
    WHERE scope = p_scope AND at > v_now - interval '60 seconds';
    -- Waiters due within two seconds are on their way: their calls count
    -- as made now.
    SELECT coalesce(sum(calls), 0) INTO v_due FROM ledgerflow.provider_limit_promises
    WHERE scope = p_scope AND at <= v_now + interval '2 seconds';
    -- The next few in line; each one let in hands on again.
    FOR k IN 1..3 LOOP
        -- Only a job waiting in the queue can be moved; one sleeping out a
        -- short wait inside a worker comes at its turn by itself.
        SELECT p.id, p.job_id, p.calls, p.at, j.queue INTO v_next
        FROM ledgerflow.provider_limit_promises p
        JOIN ledgerflow.jobs j ON j.id = p.job_id AND j.state = 'scheduled'
        WHERE p.scope = p_scope AND p.at > v_now + interval '2 seconds'
          AND p.id <> ALL (v_seen)
        ORDER BY p.at LIMIT 1
        FOR UPDATE OF p SKIP LOCKED;
        EXIT WHEN NOT FOUND;
        v_seen := v_seen || v_next.id;
        -- When the window holds all its calls, after those due before it.
        IF v_count + v_due + v_next.calls <= v_limit THEN
            v_at := v_now;
        ELSE
            SELECT at + interval '60 seconds' INTO v_at FROM ledgerflow.provider_limit_calls
            WHERE scope = p_scope AND at > v_now - interval '60 seconds'
            ORDER BY at OFFSET v_count + v_due - v_limit + v_next.calls - 1 LIMIT 1;
            -- Room for part of its calls now and for all only seconds or
            -- more away (the window's tail): it starts on the part now.
            IF v_count + v_due < v_limit AND (v_at IS NULL OR v_at > v_now + interval '5 seconds') THEN
                v_at := v_now;
            END IF;
        END IF;
        -- Its turn is as early as it can be: so are the turns behind it.
        EXIT WHEN v_at IS NULL OR v_at > v_next.at - interval '1 second';
        UPDATE ledgerflow.provider_limit_promises SET at = v_at WHERE id = v_next.id;
        -- Due half a second before the turn, as the adapter reschedules a
        -- refused job (EARLY_FOR_A_TURN): claiming takes that long.
        IF v_at - interval '500 milliseconds' <= v_now THEN
            -- Still scheduled (not claimed since it was read): checked in
            -- the update, so a job is never made available twice.
            UPDATE ledgerflow.jobs SET state = 'available', run_at = v_now
            WHERE id = v_next.job_id AND state = 'scheduled';
            IF FOUND THEN
                PERFORM pg_notify('ledgerflow_jobs', v_next.queue);
            END IF;
        ELSE
            UPDATE ledgerflow.jobs SET run_at = v_at - interval '500 milliseconds'
            WHERE id = v_next.job_id AND state = 'scheduled';
        END IF;
        v_due := v_due + v_next.calls;
        v_moved := v_moved + 1;
    END LOOP;
    RETURN v_moved;
END;
$$;

CREATE OR REPLACE FUNCTION ledgerflow.limiter_release_reservation(p_reservation bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_scope text;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    FOR v_scope IN
        SELECT DISTINCT scope FROM ledgerflow.provider_limit_calls
        WHERE reservation = p_reservation ORDER BY scope
    LOOP
        -- Under the scope's lock, as limiter_acquire counts and promises.
        PERFORM 1 FROM ledgerflow.provider_limits WHERE scope = v_scope FOR UPDATE;
        DELETE FROM ledgerflow.provider_limit_calls
        WHERE scope = v_scope AND reservation = p_reservation;
        PERFORM ledgerflow.limiter_hand_on(v_scope);
    END LOOP;
END;
$$;

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
        v_asked := v_need;
        IF p_per_minute[i] IS NOT NULL AND v_need > 0 THEN
            SELECT count(*) INTO v_count FROM ledgerflow.provider_limit_calls
            WHERE scope = p_scopes[i] AND at > v_now - interval '60 seconds';
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
            SELECT count(*) INTO v_count FROM ledgerflow.provider_limit_calls
            WHERE scope = p_scopes[i] AND at > v_now - interval '24 hours';
            -- The day window must hold all the job asked for: a job it
            -- cannot hold would wait mid-job for hours.
            IF v_count + v_asked > p_per_day[i] THEN
                SELECT at INTO v_at FROM ledgerflow.provider_limit_calls
                WHERE scope = p_scopes[i] AND at > v_now - interval '24 hours'
                ORDER BY at OFFSET v_count - p_per_day[i] + v_asked - 1 LIMIT 1;
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
            INSERT INTO ledgerflow.provider_limit_promises (scope, job_id, at, calls, per_minute)
            VALUES (p_scopes[v_promise], p_job, wait_until, v_needs[v_promise], p_per_minute[v_promise]);
        END IF;
        RETURN;
    END IF;

    FOR i IN 1..n LOOP
        IF p_job IS NOT NULL AND v_needs[i] > 0
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
