-- The shared limiter in one round trip per call (issue 4, limiter cost).
--
-- Before: a grant took a transaction of about fifteen statements holding
-- the tenant row's and the app row's locks across every network round trip,
-- so with 100 tenants the app-wide row ("xero:app") serialised every call
-- of every tenant; then one statement to release the slot and a second
-- transaction to record the answer's headers.
--
-- Now:
-- * ledgerflow.limiter_acquire does check-and-take for all of a call's
--   scopes in one statement. Connection scopes keep their meaning: the row
--   in provider_limits is locked (per tenant, so rarely contended), the
--   sliding log provider_limit_calls and the slots in provider_limit_slots
--   are what they were.
-- * App-wide scopes (no connection, only a per-minute limit) are no longer
--   locked nor logged call by call: they count in provider_limit_counts,
--   one row per (scope, second, shard), incremented with an upsert on the
--   acquirer's shard, and are checked optimistically against the sum of the
--   last 60 seconds (the partial oldest second counted whole, so the count
--   is never lower than the rolling window's). Far from the limit the read
--   takes no lock; within the headroom of it the acquirer locks the app
--   row and recounts, so near the limit grants are serialised again. Calls
--   in flight at the same instant may each have read the same count: the
--   app limit can be overshot only if more acquires than the headroom (2%
--   of the limit, at least 64: 200 for Xero's 10,000) run at the very same
--   moment. Small limits are therefore always checked under the lock.
-- * ledgerflow.limiter_finish gives the slots back and records what the
--   answer's headers said (pause, remaining counts, phantom calls) in one
--   statement.
-- * Both commit without waiting for the WAL flush (synchronous_commit off
--   for their own transaction only): a row lock is then held for
--   microseconds, not a disk flush. If PostgreSQL itself crashes, grants of
--   the last fraction of a second may be forgotten; the provider's
--   remaining-count headers on the next answers add them back as phantom
--   calls (limiter_finish), so the count heals itself.
--
-- The public functions in workflows/src/provider_state.rs (acquire,
-- release, record_observed, limit_state) are unchanged in meaning;
-- limit_state adds the counted calls to an app scope's log.

CREATE TABLE ledgerflow.provider_limit_counts (
    scope   text     NOT NULL,
    -- Unix second the calls were granted in.
    second  bigint   NOT NULL,
    -- Spreads concurrent increments over several rows (backend pid mod 16).
    shard   smallint NOT NULL,
    calls   integer  NOT NULL,
    PRIMARY KEY (scope, second, shard)
);

-- A scope counted in provider_limit_counts rather than logged call by call.
CREATE FUNCTION ledgerflow.limiter_counted(p_connection_id bigint, p_per_day integer, p_concurrent integer)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT p_connection_id IS NULL AND p_per_day IS NULL AND p_concurrent IS NULL
$$;

-- Calls counted for a scope in the last 60 seconds (the current second included).
CREATE FUNCTION ledgerflow.limiter_counted_minute(p_scope text, p_now_s bigint)
RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(calls), 0)::bigint FROM ledgerflow.provider_limit_counts
    WHERE scope = p_scope AND second > p_now_s - 60
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
    OUT granted       boolean,
    OUT slot_ids      bigint[],
    OUT wait_until    timestamptz,
    OUT wait_reason   text,
    OUT wait_scope    text
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
    i          integer;
    n          integer := coalesce(array_length(p_scopes, 1), 0);
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    granted := false;
    slot_ids := '{}';
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
        IF p_per_minute[i] IS NOT NULL THEN
            SELECT count(*) INTO v_count FROM ledgerflow.provider_limit_calls
            WHERE scope = p_scopes[i] AND at > v_now - interval '60 seconds';
            IF v_count >= p_per_minute[i] THEN
                -- The window has room again when the call that makes it
                -- full leaves it: the (count - limit + 1)-th oldest.
                SELECT at INTO v_at FROM ledgerflow.provider_limit_calls
                WHERE scope = p_scopes[i] AND at > v_now - interval '60 seconds'
                ORDER BY at OFFSET v_count - p_per_minute[i] LIMIT 1;
                v_at := coalesce(v_at, v_now) + interval '60 seconds';
                IF wait_until IS NULL OR v_at > wait_until THEN
                    wait_until := v_at; wait_reason := 'minute'; wait_scope := p_scopes[i];
                END IF;
            END IF;
        END IF;
        IF p_per_day[i] IS NOT NULL THEN
            SELECT count(*) INTO v_count FROM ledgerflow.provider_limit_calls
            WHERE scope = p_scopes[i] AND at > v_now - interval '24 hours';
            IF v_count >= p_per_day[i] THEN
                SELECT at INTO v_at FROM ledgerflow.provider_limit_calls
                WHERE scope = p_scopes[i] AND at > v_now - interval '24 hours'
                ORDER BY at OFFSET v_count - p_per_day[i] LIMIT 1;
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
        INSERT INTO ledgerflow.provider_limit_calls (scope, at) VALUES (p_scopes[i], v_now);
        IF p_concurrent[i] IS NOT NULL THEN
            INSERT INTO ledgerflow.provider_limit_slots (scope, expires_at)
            VALUES (p_scopes[i], v_now + p_slot_ttl) RETURNING id INTO v_id;
            slot_ids := slot_ids || v_id;
        END IF;
    END LOOP;
    granted := true;
END;
$$;

-- Gives a call's slots back and records what its answer's headers said,
-- in one statement:
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
    p_problem               text
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

-- `ledgerflow summary list`: the job that sent each day's summary, found by
-- its unique key among finished jobs (only end-of-day summaries indexed).
-- Kept in this migration, the one number this change was given.
CREATE INDEX finished_jobs_summary_key_idx ON ledgerflow.finished_jobs (unique_key)
    WHERE kind = 'end-of-day-summary';
