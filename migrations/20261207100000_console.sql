-- The operator console (issue 25): the audit log of operator actions,
-- paused queues and connections, and an index for the console's lists of
-- failed and cancelled jobs.
--
-- The console and the CLI read cheap indexed counts; nothing here adds work
-- to the hot path except one primary-key lookup per claim (a paused queue)
-- and one per job made available under a hold key (a paused connection).

-- Every operator action, from the console or the CLI: who, what, when, on what.
CREATE TABLE ledgerflow.console_audit (
    id      bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    -- "admin (console, 127.0.0.1)", "cli (root)".
    actor   text        NOT NULL,
    -- "job.retry", "queue.pause", "connection.resume", "invoice.resync", ...
    action  text        NOT NULL,
    -- What it acted on: "job 42", "queue default", "connection 7", "3 jobs matching state=failed".
    target  text        NOT NULL,
    -- What came of it (counts, new job ids, a refusal).
    detail  jsonb       NOT NULL DEFAULT '{}'::jsonb
);

-- A paused queue: no worker claims from it until it is resumed.
CREATE TABLE ledgerflow.queue_pauses (
    queue     text        PRIMARY KEY,
    reason    text        NOT NULL,
    paused_by text        NOT NULL,
    paused_at timestamptz NOT NULL DEFAULT now()
);

-- A paused connection: its jobs (hold key 'connection:N') wait as held
-- until it is resumed; its syncs show as pending, waiting, with the reason.
CREATE TABLE ledgerflow.connection_pauses (
    connection_id bigint      PRIMARY KEY REFERENCES ledgerflow.connections (id) ON DELETE CASCADE,
    hold_key      text        GENERATED ALWAYS AS ('connection:' || connection_id) STORED UNIQUE,
    reason        text        NOT NULL,
    paused_by     text        NOT NULL,
    paused_at     timestamptz NOT NULL DEFAULT now()
);

-- A job of a paused connection that would become available is held
-- instead; `ledgerflow.resume_connection` makes it available (or scheduled)
-- again. Named to run after jobs_available_at_frontier / jobs_inserted_at_frontier.
CREATE FUNCTION ledgerflow.jobs_hold_when_paused() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ledgerflow.connection_pauses p WHERE p.hold_key = NEW.hold_key) THEN
        NEW.state := 'held';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER jobs_paused_connection_insert
    BEFORE INSERT ON ledgerflow.jobs
    FOR EACH ROW WHEN (NEW.state = 'available' AND NEW.hold_key IS NOT NULL)
    EXECUTE FUNCTION ledgerflow.jobs_hold_when_paused();

CREATE TRIGGER jobs_paused_connection_update
    BEFORE UPDATE OF state ON ledgerflow.jobs
    FOR EACH ROW WHEN (OLD.state <> 'available' AND NEW.state = 'available' AND NEW.hold_key IS NOT NULL)
    EXECUTE FUNCTION ledgerflow.jobs_hold_when_paused();

-- Pause a connection's syncs: jobs already available are held now (a
-- running one finishes its attempt). Returns how many were held.
CREATE FUNCTION ledgerflow.pause_connection(p_connection bigint, p_reason text, p_by text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_held bigint;
BEGIN
    PERFORM ledgerflow.ledger_connection(p_connection);
    INSERT INTO ledgerflow.connection_pauses (connection_id, reason, paused_by)
    VALUES (p_connection, p_reason, p_by)
    ON CONFLICT (connection_id) DO UPDATE SET reason = EXCLUDED.reason, paused_by = EXCLUDED.paused_by;
    WITH held AS (
        UPDATE ledgerflow.jobs SET state = 'held'
        WHERE hold_key = 'connection:' || p_connection AND state = 'available'
        RETURNING 1
    )
    SELECT count(*) INTO v_held FROM held;
    RETURN v_held;
END;
$$;

-- Resume a paused connection: its held jobs run again, unless the
-- connection needs reconnecting (they stay held for that). Returns how many
-- were released, or NULL when it was not paused.
CREATE FUNCTION ledgerflow.resume_connection(p_connection bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    c ledgerflow.connections := ledgerflow.ledger_connection(p_connection);
    v_released bigint := 0;
BEGIN
    DELETE FROM ledgerflow.connection_pauses WHERE connection_id = p_connection;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF c.status = 'active' THEN
        WITH released AS (
            UPDATE ledgerflow.jobs
            SET state = CASE WHEN run_at > now() THEN 'scheduled' ELSE 'available' END
            WHERE hold_key = 'connection:' || p_connection AND state = 'held'
            RETURNING queue, state
        )
        SELECT count(*) INTO v_released
        FROM (SELECT state, CASE WHEN state = 'available' THEN pg_notify('ledgerflow_jobs', queue) END AS woken
              FROM released) n;
    END IF;
    RETURN v_released;
END;
$$;

-- The console's lists of failed and cancelled jobs, newest first, without
-- walking the completed ones (most of finished_jobs). Completions do not
-- touch it.
CREATE INDEX finished_jobs_unsuccessful_idx ON ledgerflow.finished_jobs (id)
    WHERE state <> 'completed';

-- The overview's last hour of finished jobs (completions and failures per
-- minute, pickup latency). The BRIN index on finished_at cannot serve it:
-- the newest block ranges are unsummarized until a vacuum, and once the
-- pruner frees space, new rows land among old ones, so nearly every range
-- matches "the last hour" (measured: 490 ms for the per-minute counts over
-- 1,000,000 rows, 59 ms with this index). finished_at only grows, so each
-- completion appends at the right edge of this index; a 300,000-row bulk
-- insert took the same time with and without it (docs/benchmarks.md).
CREATE INDEX finished_jobs_finished_at_idx ON ledgerflow.finished_jobs (finished_at);

CREATE INDEX console_audit_at_idx ON ledgerflow.console_audit (at DESC);

-- to be folded into the domain migration at merge: claim_jobs of
-- 20261206000023_queue_held_horizon.sql, with the paused-queue check.
CREATE OR REPLACE FUNCTION ledgerflow.claim_jobs(
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
    -- A paused queue gives nothing to claim (`ledgerflow queue pause`):
    -- one primary-key lookup on a table of a few rows.
    IF EXISTS (SELECT 1 FROM ledgerflow.queue_pauses qp WHERE qp.queue = p_queue) THEN
        RETURN;
    END IF;
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

-- to be folded into the domain migration at merge: sync_dialog of
-- 20261206000021_sql_face.sql, saying why a pending sync of a paused
-- connection waits.
CREATE OR REPLACE FUNCTION ledgerflow.sync_dialog(connection_id bigint, invoice_id text, history_limit integer DEFAULT 10)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    p_connection bigint := sync_dialog.connection_id;
    p_invoice text := sync_dialog.invoice_id;
    c ledgerflow.connections := ledgerflow.ledger_connection(p_connection);
    v_toggle boolean := true;   -- an invoice never seen has the default: on
    v_known boolean := false;
    last ledgerflow.sync_events;
    v_status text := 'not_sent';
    v_external jsonb := ledgerflow.link_view(p_connection, 'invoice', p_invoice);
    v_master boolean := ledgerflow.setting(c.settings, '{auto_sync}', false);
    v_display text := ledgerflow.provider_display_name(c.provider);
    v_usable boolean := c.status <> 'disabled';
    v_waits_on_step boolean;
    v_has_worker boolean;
    v_waiting text;
    v_pause ledgerflow.connection_pauses;
BEGIN
    SELECT * INTO v_pause FROM ledgerflow.connection_pauses cp WHERE cp.connection_id = p_connection;
    SELECT s.auto_sync, s.latest_snapshot IS NOT NULL INTO v_toggle, v_known
    FROM ledgerflow.invoice_sync s WHERE s.connection_id = p_connection AND s.invoice_id = p_invoice;
    IF NOT FOUND THEN
        v_toggle := true;
        v_known := false;
    END IF;
    SELECT * INTO last FROM ledgerflow.sync_events e
    WHERE e.connection_id = p_connection AND e.invoice_id = p_invoice AND e.status NOT IN ('skipped', 'superseded')
    ORDER BY e.id DESC LIMIT 1;
    IF FOUND THEN
        v_status := last.status;
    END IF;
    v_waits_on_step := v_status = 'pending' AND last.error_class = 'dependency_failed'
                       AND last.error_message IS NOT NULL;
    IF v_status = 'pending' AND v_usable THEN
        -- A pending sync no running worker can run says why it waits
        -- (ledgerflow.workers, migration 20261206000024_worker_presence.sql;
        -- PL/pgSQL resolves the call when it runs, after every migration).
        v_has_worker := ledgerflow.provider_has_worker(c.provider);
        v_waiting := CASE
            WHEN v_has_worker THEN NULL
            WHEN NOT v_has_worker THEN format('waiting for a worker configured for %s: the running workers have no %s app set up',
                                              v_display, v_display)
            ELSE 'waiting for a worker: no ledgerflow worker is running' END;
    END IF;
    -- A connection an operator paused holds its syncs (console / `ledgerflow
    -- connection pause`): that is why a pending sync waits, whatever the workers.
    IF v_status = 'pending' AND v_usable AND v_pause.connection_id IS NOT NULL THEN
        v_waiting := format('syncs to %s on this connection are paused by an operator (%s)',
                            v_display, v_pause.reason);
    END IF;
    RETURN jsonb_build_object(
        'connection_id', c.id, 'provider', c.provider, 'connection_status', c.status,
        'connection_status_reason', c.status_reason, 'invoice_id', p_invoice, 'status', v_status,
        -- The error of the last sync when it failed, or of the last attempt of a pending one.
        'last_error', CASE WHEN last.status IN ('failed', 'pending') THEN ledgerflow.sync_event_view(last) -> 'error' END,
        'external', v_external,
        'auto_sync', jsonb_build_object(
            'state', CASE WHEN NOT v_usable THEN 'connection_disabled' WHEN NOT v_toggle THEN 'off_for_invoice'
                          WHEN NOT v_master THEN 'paused_disabled_in_settings' ELSE 'on' END,
            'invoice_toggle', v_toggle, 'master_toggle', v_master,
            'reason', CASE WHEN NOT v_usable THEN format('the %s connection is disabled', v_display)
                           WHEN NOT v_toggle THEN 'auto-sync is off for this invoice'
                           WHEN NOT v_master THEN format('paused (disabled in settings): automatic sync to %s is off in the integration settings', v_display)
                      END),
        'history', ledgerflow.sync_history(p_connection, p_invoice, NULL, history_limit),
        'actions', jsonb_build_object(
            'resync', v_known AND v_usable, 'send_as_new', v_known AND v_usable,
            'void_existing_option', v_known AND v_usable AND v_external IS NOT NULL,
            'retry', v_usable AND (v_status = 'failed' OR coalesce(v_waits_on_step, false)),
            'toggle_auto_sync', true,
            'reconnect', c.status = 'reconnect_needed', 'view_url', v_external -> 'url'),
        'waiting_for_worker', v_waiting);
END;
$$;
