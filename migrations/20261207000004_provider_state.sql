-- Provider state shared by every worker process: the shared rate limiter
-- (windows, concurrency slots, reservations, the waiting line), Shopify's
-- leaky buckets, each connection's OAuth credentials (encrypted at rest)
-- and the record of creates whose answer was never seen.
--
-- Connections are referenced by `connection_id` without a foreign key on
-- purpose: provider state may be written before (or outlive) the ledger's
-- connection row, and adapters must not depend on the ledger's tables.
-- The Rust side is workflows' provider_state module.
--
-- The limiter, in one round trip per call (docs/design.md tells how it came
-- to be this way):
--
-- * ledgerflow.limiter_acquire grants one call against every scope of a
--   request, or says until when to wait. A connection scope's row in
--   provider_limits is locked (per tenant, so rarely contended); its
--   minute and day windows are rolling, counted from the sliding log
--   provider_limit_calls; provider_limit_slots caps calls in flight.
-- * App-wide scopes (no connection, only a per-minute limit) are not
--   locked nor logged call by call: they count in provider_limit_counts,
--   one row per (scope, second, shard), and are checked optimistically
--   against the last 60 seconds; within the headroom of the limit (2 %,
--   at least 64 calls) the acquirer locks the app row and recounts.
-- * A job's first call on a connection scope may set aside room for its
--   next calls (a reservation): the job's later calls spend it without
--   checking the windows again, so a job that starts finishes. A job that
--   finds room for fewer calls than it asked starts on that room (the
--   window's tail). What a job did not spend is given back when it ends
--   (limiter_release_reservation); a dead job's lapses after a minute.
-- * A job refused for a full minute window is promised a turn
--   (provider_limit_promises), so each waiter is told a later, distinct
--   instant instead of all waking together; room a turn leaves unused is
--   handed on to the next waiters (limiter_hand_on). Promises only order
--   the waiters: a grant still checks the real window.
-- * ledgerflow.limiter_finish gives the slots back, dates the request's
--   calls at the answer (arrival lies between grant and answer, so a call
--   dated at the answer never leaves our window before it leaves the
--   provider's) and records what the answer's headers said: a 429 pauses
--   the scope, and remaining counts lower than ours add phantom calls, so
--   the count stays conservative.
-- * Both commit without waiting for the WAL flush (synchronous_commit off
--   for their own transaction only): a row lock is held for microseconds,
--   not a disk flush. Grants forgotten by a PostgreSQL crash come back as
--   phantom calls from the provider's headers.
-- * Housekeeping (calls out of every window, reservations unspent after a
--   minute, expired slots) runs once in ten seconds per scope (`swept_at`);
--   every read leaves out what a sweep would have removed.

-- ---------------------------------------------------------------------
-- Rate limits.
-- ---------------------------------------------------------------------

-- One row per limit scope: "xero:connection:42" (a Xero tenant through one
-- connection) or "xero:app" (the app-wide limit). The row is the lock that
-- serialises slot grants for its scope across processes.
CREATE TABLE ledgerflow.provider_limits (
    scope                 text        PRIMARY KEY,
    connection_id         bigint,
    -- No call before this instant: a 429's Retry-After, or the daily quota
    -- gone (X-Rate-Limit-Problem: day) until it returns.
    paused_until          timestamptz,
    pause_reason          text,
    -- What the provider's headers said last, for operators.
    minute_remaining      integer,
    day_remaining         integer,
    app_minute_remaining  integer,
    observed_at           timestamptz,
    updated_at            timestamptz NOT NULL DEFAULT now(),
    -- Shopify's leaky bucket for the scope (its REST Admin API, and the
    -- cost bucket of its GraphQL API), under this row's lock:
    -- `bucket_level_milli` is the bucket's content in thousandths of a call
    -- at `bucket_updated_at`; it drains at the policy's leak rate. Integers,
    -- so N processes compute the same level exactly.
    bucket_level_milli    bigint      NOT NULL DEFAULT 0,
    bucket_updated_at     timestamptz,
    -- What the provider last said the bucket held ("32/40"), for operators.
    bucket_used           integer,
    bucket_capacity       integer,
    -- When the scope's expired calls, reservations and slots were last swept.
    swept_at              timestamptz
);

CREATE INDEX provider_limits_connection_idx ON ledgerflow.provider_limits (connection_id);

-- Calls granted per scope: a sliding log, so the minute and day windows are
-- rolling like Xero's (a fixed window would allow twice the rate across a
-- window boundary). A call is dated at its answer (limiter_finish).
CREATE TABLE ledgerflow.provider_limit_calls (
    scope        text        NOT NULL,
    at           timestamptz NOT NULL,
    -- Set on a reserved call not spent yet: it counts in both windows from
    -- when it was reserved; spending it dates it from the real call.
    reservation  bigint,
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY
);

CREATE INDEX provider_limit_calls_scope_at_idx ON ledgerflow.provider_limit_calls (scope, at);
CREATE INDEX provider_limit_calls_reservation_idx
    ON ledgerflow.provider_limit_calls (reservation) WHERE reservation IS NOT NULL;
CREATE SEQUENCE ledgerflow.limiter_reservation_seq;

-- Calls in flight per scope (concurrency cap). A slot expires on its own so
-- a process that died mid-call does not hold it forever.
CREATE TABLE ledgerflow.provider_limit_slots (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope       text        NOT NULL,
    expires_at  timestamptz NOT NULL
);

CREATE INDEX provider_limit_slots_scope_idx ON ledgerflow.provider_limit_slots (scope, expires_at);

-- App-wide scopes' calls, counted per second rather than logged.
CREATE TABLE ledgerflow.provider_limit_counts (
    scope   text     NOT NULL,
    -- Unix second the calls were granted in.
    second  bigint   NOT NULL,
    -- Spreads concurrent increments over several rows (backend pid mod 16).
    shard   smallint NOT NULL,
    calls   integer  NOT NULL,
    PRIMARY KEY (scope, second, shard)
);

-- Turns promised to jobs refused for a full minute window. A job's turn
-- goes when the job is let in (early or late) or is given a new one; a
-- promise nobody took is dropped 10 s after its time.
CREATE TABLE ledgerflow.provider_limit_promises (
    id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope  text        NOT NULL,
    -- The job the turn was promised to (ledgerflow.jobs.id).
    job_id bigint      NOT NULL,
    at     timestamptz NOT NULL,
    calls  integer     NOT NULL CHECK (calls > 0),
    -- The window the turn was counted against (its per-minute limit), so
    -- room can be handed on where only the scope is known.
    per_minute integer
);
CREATE INDEX provider_limit_promises_job_idx ON ledgerflow.provider_limit_promises (job_id);
CREATE INDEX provider_limit_promises_scope_at_idx ON ledgerflow.provider_limit_promises (scope, at);

-- A scope counted in provider_limit_counts rather than logged call by call.
CREATE FUNCTION ledgerflow.limiter_counted(p_connection_id bigint, p_per_day integer, p_concurrent integer)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT p_connection_id IS NULL AND p_per_day IS NULL AND p_concurrent IS NULL
$$;

-- Calls counted for an app-wide scope in the last 60 seconds (the current
-- second included). PL/pgSQL, so the statement is planned once per session
-- (a SQL function that reads a table is planned on every call).
CREATE FUNCTION ledgerflow.limiter_counted_minute(p_scope text, p_now_s bigint)
RETURNS bigint LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT coalesce(sum(calls), 0)::bigint FROM ledgerflow.provider_limit_counts
            WHERE scope = p_scope AND second > p_now_s - 60);
END;
$$;

-- Grants one call against every scope, or says until when to wait (nothing
-- counted then). Scopes are given as parallel arrays, in key order, so
-- concurrent acquirers lock connection rows in the same order and never
-- deadlock.
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

-- Gives a call's slots back, dates its calls at the answer, and records
-- what the answer's headers said, in one statement:
-- * a 429 pauses the scope until Retry-After (the app scope for
--   `appminute`); `day` pauses it until the quota returns;
-- * remaining counts lower than our own count implies (calls we did not
--   see) are added as phantom calls, keeping our count conservative.
-- With no figures and no problem it only gives the slots back.
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

-- Gives back what a reservation did not spend, and hands the room on to
-- the scope's waiters.
CREATE FUNCTION ledgerflow.limiter_release_reservation(p_reservation bigint)
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

-- Counts the next waiters' turns again against the real window: a turn
-- that can be earlier moves earlier, with its job's due time; where the
-- window has room for part of a waiter's calls now and for all only later,
-- it starts on the part now. A job moved that way is one the queue would
-- have run at its turn anyway: the limiter only moves its time earlier.
-- Returns how many jobs moved.
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

-- ---------------------------------------------------------------------
-- Credentials and write intents.
-- ---------------------------------------------------------------------

-- OAuth credentials per connection. `sealed_tokens` is an AEAD box
-- (XChaCha20-Poly1305, key from LEDGERFLOW_SECRET_KEY, the connection id as
-- associated data) holding the access and refresh tokens; nothing secret is
-- stored in clear. Refreshes lock the row (SELECT ... FOR UPDATE) so one
-- single-use refresh token is never presented twice by two processes;
-- `generation` counts refreshes so a waiter can tell one happened.
CREATE TABLE ledgerflow.provider_credentials (
    connection_id      bigint      PRIMARY KEY,
    provider           text        NOT NULL,
    sealed_tokens      bytea       NOT NULL,
    key_id             text        NOT NULL,
    access_expires_at  timestamptz NOT NULL,
    -- Xero's tenant id (the organisation), sent as `xero-tenant-id`.
    external_tenant_id text,
    api_base_url       text        NOT NULL,
    identity_base_url  text        NOT NULL,
    -- Provider-specific, non-secret mapping (account codes, tax types, ...).
    options            jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status             text        NOT NULL DEFAULT 'active'
                           CHECK (status IN ('active', 'reconnect_needed')),
    status_reason      text,
    generation         bigint      NOT NULL DEFAULT 0,
    refreshed_at       timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    -- A keyed hash of the key that sealed the row (never the key), so a
    -- different LEDGERFLOW_SECRET_KEY is refused before it seals or fails
    -- anything.
    key_fingerprint    text
);

-- Creates sent to a provider that has no idempotency key (Shopify orders
-- and draft orders) whose outcome we have not seen. A row means "this
-- create may have happened": before the invoice's record is created again,
-- the adapter searches the provider for the record tagged `create_tag`
-- (each attempt tags its create with a fresh one), created no earlier than
-- `started_at` less a margin for clock skew, and adopts or cancels it. The
-- row is deleted once an answer, or that search, says what happened.
-- `search_after`: a request that timed out may still be running at the
-- provider; searching before it must have finished could miss its record.
CREATE TABLE ledgerflow.provider_write_intents (
    connection_id  bigint      NOT NULL,
    create_tag     text        NOT NULL,
    invoice_ref    text        NOT NULL,
    kind           text        NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    search_after   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (connection_id, create_tag)
);

CREATE INDEX provider_write_intents_invoice_idx
    ON ledgerflow.provider_write_intents (connection_id, invoice_ref);
