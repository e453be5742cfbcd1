-- The sync dialog: what a person sees of one invoice on one connection
-- (ledgerflow.sync_dialog, sync_history: the JSON of `ledgerflow invoice
-- status --json`) and the buttons they press there (resync_now,
-- send_as_new, retry_failed_event, set_invoice_auto_sync). The actions
-- write sync events through the SQL face's ledger_open_event, so a button
-- and a host trigger follow one set of rules.
--
-- Runs after the SQL face (20261207000009_sql_face.sql), whose events,
-- values and errors these use.

-- ---------------------------------------------------------------------
-- The sync dialog's actions (a person is waiting: each runs now and first).
-- ---------------------------------------------------------------------

CREATE FUNCTION ledgerflow.ledger_manual(
    p_connection_id bigint, p_invoice_id text, p_trigger text, p_operation text,
    p_void_existing boolean, p_retry_of bigint) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    c ledgerflow.connections := ledgerflow.ledger_connection(p_connection_id);
    v_snapshot jsonb;
BEGIN
    IF c.status = 'disabled' THEN
        PERFORM ledgerflow.face_error('55000',
            format('the %s connection is disabled: enable it in settings first', ledgerflow.provider_display_name(c.provider)),
            jsonb_build_object('kind', 'not_allowed'));
    END IF;
    -- The row lock orders this action with triggers and the running job.
    SELECT latest_snapshot INTO v_snapshot FROM ledgerflow.invoice_sync
    WHERE connection_id = p_connection_id AND invoice_id = p_invoice_id FOR UPDATE;
    IF v_snapshot IS NULL THEN
        PERFORM ledgerflow.face_error('P0002',
            format('invoice %s has never been sent to connection %s', ledgerflow.rust_debug_text(p_invoice_id), p_connection_id),
            jsonb_build_object('kind', 'invoice_unknown', 'connection_id', p_connection_id, 'invoice_id', p_invoice_id));
    END IF;
    RETURN ledgerflow.ledger_open_event(c, p_invoice_id, p_trigger, ledgerflow.trigger_label(p_trigger), p_operation,
                                        p_void_existing, v_snapshot, p_retry_of, true, false);
END;
$$;

-- "Re-sync now": push the newest snapshot to the existing record.
CREATE FUNCTION ledgerflow.resync_now(connection_id bigint, invoice_id text) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT ledgerflow.ledger_manual(connection_id, invoice_id, 'manual_resync', 'upsert', false, NULL)
$$;

-- "Send as new": a new record, ignoring the link; void_existing voids the old one first.
CREATE FUNCTION ledgerflow.send_as_new(connection_id bigint, invoice_id text, void_existing boolean DEFAULT false)
RETURNS jsonb LANGUAGE sql AS $$
    SELECT ledgerflow.ledger_manual(connection_id, invoice_id, 'manual_send_as_new', 'send_as_new', void_existing, NULL)
$$;

-- "Retry": only when the invoice's last sync (skipped and superseded aside)
-- failed, or waits on a chain step that failed (dependency_failed: that
-- step runs again, ledgerflow.retry_workflow_step). A payment step's failure is retried by syncing the invoice (it
-- carries its payments); a complete-draft step runs again, now and first.
CREATE FUNCTION ledgerflow.retry_failed_event(connection_id bigint, invoice_id text) RETURNS jsonb
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    p_connection bigint := retry_failed_event.connection_id;
    p_invoice text := retry_failed_event.invoice_id;
    last ledgerflow.sync_events;
    c ledgerflow.connections;
    v_job bigint;
    v_step record;
BEGIN
    SELECT * INTO last FROM ledgerflow.sync_events e
    WHERE e.connection_id = p_connection AND e.invoice_id = p_invoice AND e.status NOT IN ('skipped', 'superseded')
    ORDER BY e.id DESC LIMIT 1;
    IF NOT FOUND THEN
        PERFORM ledgerflow.face_error('55000', 'nothing to retry: this invoice has not been synced yet',
                                      jsonb_build_object('kind', 'not_allowed'));
    END IF;
    IF last.status = 'pending' AND last.error_class = 'dependency_failed' THEN
        -- The sync waits for a chain step that failed (its customer): run
        -- every such step again; the invoice's own step follows it.
        FOR v_step IN
            SELECT DISTINCT f.run_id, f.position
            FROM ledgerflow.workflow_steps b
            JOIN ledgerflow.workflow_steps f ON f.run_id = b.run_id AND f.status = 'failed'
            WHERE b.status = 'blocked' AND b.payload ->> 'invoice_id' = p_invoice
              AND b.payload ->> 'connection_id' = p_connection::text
            ORDER BY f.run_id, f.position
        LOOP
            v_job := coalesce(v_job, ledgerflow.retry_workflow_step(v_step.run_id, v_step.position));
        END LOOP;
        IF v_job IS NOT NULL THEN
            RETURN ledgerflow.recorded(last.id, 'pending', NULL, NULL, v_job);
        END IF;
    END IF;
    IF last.status <> 'failed' THEN
        PERFORM ledgerflow.face_error('55000', format('nothing to retry: the last sync is %s, not failed', last.status),
                                      jsonb_build_object('kind', 'not_allowed'));
    END IF;
    IF last.operation <> 'complete_draft' THEN
        RETURN ledgerflow.ledger_manual(p_connection, p_invoice, 'manual_retry',
            CASE WHEN last.operation = 'payment' THEN 'upsert' ELSE last.operation END, last.void_existing, last.id);
    END IF;
    c := ledgerflow.ledger_connection(p_connection);
    PERFORM 1 FROM ledgerflow.invoice_sync s WHERE s.connection_id = p_connection AND s.invoice_id = p_invoice FOR UPDATE;
    v_job := ledgerflow.enqueue(kind => 'complete-draft',
        payload => jsonb_build_object('tenant', c.tenant_id, 'connection_id', c.id, 'invoice_id', p_invoice),
        queue => 'default', priority => 1::smallint, tenant => c.tenant_id, run_at => now(),
        unique_key => format('sync:%s:%s', c.id, p_invoice), kind_version => 1,
        hold_key => format('connection:%s', c.id));
    PERFORM ledgerflow.ledger_expedite(c.id, p_invoice, v_job);
    RETURN ledgerflow.recorded(last.id, 'pending', NULL, NULL, v_job);
END;
$$;

-- The invoice's own auto-sync switch (may be set before the first trigger).
-- Returns the dialog's auto_sync block: the state now in effect.
CREATE FUNCTION ledgerflow.set_invoice_auto_sync(connection_id bigint, invoice_id text, enabled boolean) RETURNS jsonb
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM ledgerflow.ledger_connection(set_invoice_auto_sync.connection_id);
    INSERT INTO ledgerflow.invoice_sync AS s (connection_id, invoice_id, auto_sync)
    VALUES (set_invoice_auto_sync.connection_id, set_invoice_auto_sync.invoice_id, set_invoice_auto_sync.enabled)
    ON CONFLICT (connection_id, invoice_id) DO UPDATE SET auto_sync = excluded.auto_sync, updated_at = now();
    RETURN ledgerflow.sync_dialog(set_invoice_auto_sync.connection_id, set_invoice_auto_sync.invoice_id, 1) -> 'auto_sync';
END;
$$;

-- ---------------------------------------------------------------------
-- The sync dialog's read side (read.rs's types describe each field).
-- ---------------------------------------------------------------------

-- One sync event as the dialog shows it.
CREATE FUNCTION ledgerflow.sync_event_view(e ledgerflow.sync_events) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'id', e.id, 'trigger', e.trigger, 'trigger_label', e.trigger_label, 'status', e.status,
        'skip_reason', e.skip_reason, 'skip_message', e.skip_message, 'operation', e.operation,
        'void_existing', e.void_existing, 'job_id', e.job_id, 'attempts', e.attempts,
        -- A payment step's summary holds payments only, no invoice write.
        'response_summary', CASE WHEN e.response_summary ? 'write' THEN e.response_summary - 'payments' END,
        'payments', coalesce(nullif(e.response_summary -> 'payments', 'null'), '[]'),
        'change_details', e.change_details,
        -- What a re-sync did before its push (the column comes with a later
        -- migration, so it is read off the row as JSON).
        'resync', to_jsonb(e) -> 'resync_report',
        'error', CASE WHEN e.error_class IS NOT NULL AND e.error_message IS NOT NULL THEN
                     jsonb_build_object('class', e.error_class, 'message', e.error_message, 'raw', e.raw_error) END,
        'superseded_by', e.superseded_by, 'retry_of', e.retry_of,
        'created_at', ledgerflow.rfc3339(e.created_at), 'started_at', ledgerflow.rfc3339(e.started_at),
        'finished_at', ledgerflow.rfc3339(e.finished_at))
$$;

-- One page of an invoice's history, newest first: the `history_limit`
-- events older than `before` (an id from next_cursor), or the newest.
CREATE FUNCTION ledgerflow.sync_history(connection_id bigint, invoice_id text, before bigint DEFAULT NULL,
                                        history_limit integer DEFAULT 10) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    WITH page AS (
        SELECT e FROM ledgerflow.sync_events e
        WHERE e.connection_id = sync_history.connection_id AND e.invoice_id = sync_history.invoice_id
          AND (sync_history.before IS NULL OR e.id < sync_history.before)
        ORDER BY e.id DESC LIMIT greatest(sync_history.history_limit, 1) + 1
    ), numbered AS (
        SELECT e, row_number() OVER (ORDER BY (e).id DESC) AS n FROM page
    )
    SELECT jsonb_build_object(
        'events', coalesce((SELECT jsonb_agg(ledgerflow.sync_event_view(e) ORDER BY n) FROM numbered
                            WHERE n <= greatest(sync_history.history_limit, 1)), '[]'),
        'next_cursor', (SELECT (e).id FROM numbered WHERE n = greatest(sync_history.history_limit, 1)
                        AND EXISTS (SELECT 1 FROM numbered WHERE n > greatest(sync_history.history_limit, 1))))
$$;

-- The provider's record linked to a host record, or NULL. An invoice's last
-- pull is the later of its own and the connection's last complete pull
-- (the same rule as inbound::last_pull_at).
CREATE FUNCTION ledgerflow.link_view(p_connection_id bigint, p_entity_type text, p_host_id text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('external_id', l.external_id, 'external_number', l.external_number,
               'url', l.view_url, 'last_push_at', ledgerflow.rfc3339(l.last_push_at),
               'last_pull_at', ledgerflow.rfc3339(CASE WHEN l.entity_type = 'invoice'
                                                       THEN greatest(l.last_pull_at, c.pulled_through)
                                                       ELSE l.last_pull_at END))
    FROM ledgerflow.links l
    LEFT JOIN ledgerflow.inbound_cursors c ON c.connection_id = l.connection_id
    WHERE l.connection_id = p_connection_id AND l.entity_type = p_entity_type AND l.host_id = p_host_id
$$;

-- Everything the sync dialog shows for one invoice on one connection: the
-- JSON of `ledgerflow invoice status --json`.
CREATE FUNCTION ledgerflow.sync_dialog(connection_id bigint, invoice_id text, history_limit integer DEFAULT 10)
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
            'approve', v_status = 'awaiting_approval', 'withdraw', v_status = 'approved',
            'toggle_auto_sync', true,
            'reconnect', c.status = 'reconnect_needed', 'view_url', v_external -> 'url'),
        'waiting_for_worker', v_waiting,
        -- A synced payment locks the lines (ledgerflow.invoice_lock, migration
        -- 20261207000020_single_invoice_sync.sql; resolved when it runs).
        'lock', ledgerflow.invoice_lock(p_connection, p_invoice));
END;
$$;
