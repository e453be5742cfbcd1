-- Approval before sync (workflows' approvals module), and payment terms on
-- the invoice snapshot.
--
-- A connection with the setting `approve_before_sync` holds every upsert a
-- host trigger asks for as a sync event `awaiting_approval` (nothing is
-- enqueued, nothing reaches the provider); `approve_invoices` moves it to
-- `approved`, `withdraw_approval` back to `awaiting_approval` with who and
-- why, and `sync_approved` enqueues the one `send-approved` job that sends
-- the approved set together (in batches where the provider can, one sync
-- chain per invoice otherwise: `release_approved`). A newer trigger of a
-- held invoice supersedes its held event and keeps its approval, so the
-- newest snapshot is the one sent. Approvals live in
-- ledgerflow.backfill_approvals, the connection's one "ready to sync"
-- list, which "only approved" backfills read too.
--
-- The ledger's functions that take this path (ledger_record,
-- ledger_open_event, sync_dialog) and check_snapshot are defined where
-- they always were (the SQL face migration); the functions here are new.

-- The connection's held events: the approvals list and what a
-- send-approved job takes, without reading the connection's whole history.
CREATE INDEX sync_events_held_idx ON ledgerflow.sync_events (connection_id, id)
    WHERE status IN ('awaiting_approval', 'approved');

-- A trigger that would sync, held for approval on connection `c`: an event
-- `approved` when the invoice is approved already (a later edit of an
-- approved invoice: the newest snapshot goes), `awaiting_approval`
-- otherwise. Older held events of the invoice are superseded by it. The
-- caller holds the invoice's row lock (ledger_record).
CREATE FUNCTION ledgerflow.ledger_hold_for_approval(
    c ledgerflow.connections, p_invoice_id text, p_trigger text, p_label text, p_snapshot jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_status text := CASE WHEN EXISTS (SELECT 1 FROM ledgerflow.backfill_approvals a
                                       WHERE a.connection_id = c.id AND a.invoice_id = p_invoice_id)
                          THEN 'approved' ELSE 'awaiting_approval' END;
    v_event bigint;
BEGIN
    INSERT INTO ledgerflow.sync_events
        (connection_id, invoice_id, trigger, trigger_label, status, operation, snapshot)
    VALUES (c.id, p_invoice_id, p_trigger, p_label, v_status, 'upsert', p_snapshot)
    RETURNING id INTO v_event;
    UPDATE ledgerflow.sync_events
    SET status = 'superseded', superseded_by = v_event, finished_at = now(), updated_at = now()
    WHERE connection_id = c.id AND invoice_id = p_invoice_id
      AND status IN ('awaiting_approval', 'approved') AND id < v_event;
    RETURN ledgerflow.recorded(v_event, v_status, NULL, NULL, NULL);
END;
$$;

-- What approve / withdraw did, invoice by invoice: {changed, already_synced, unchanged}.
CREATE FUNCTION ledgerflow.approval_outcome(p_changed text[], p_synced text[], p_unchanged text[])
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('changed', to_jsonb(coalesce(p_changed, '{}')),
                              'already_synced', to_jsonb(coalesce(p_synced, '{}')),
                              'unchanged', to_jsonb(coalesce(p_unchanged, '{}')))
$$;

-- Approve invoices on a connection (approvals::approve). An invoice held
-- for approval becomes `approved` (sent by the next sync_approved); one
-- never sent, with nothing held, is marked ready for the next "only
-- approved" backfill; one already in the provider with nothing held is
-- reported as already synced, not marked.
CREATE FUNCTION ledgerflow.approve_invoices(connection_id bigint, invoice_ids text[], approved_by text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    c ledgerflow.connections := ledgerflow.ledger_connection(approve_invoices.connection_id);
    v_id text;
    v_held text;
    v_changed text[] := '{}';
    v_synced text[] := '{}';
    v_unchanged text[] := '{}';
    v_rows integer;
BEGIN
    FOREACH v_id IN ARRAY coalesce(invoice_ids, '{}') LOOP
        -- Lock order: the invoice's row, then its events.
        PERFORM 1 FROM ledgerflow.invoice_sync s WHERE s.connection_id = c.id AND s.invoice_id = v_id FOR UPDATE;
        SELECT e.status INTO v_held FROM ledgerflow.sync_events e
        WHERE e.connection_id = c.id AND e.invoice_id = v_id AND e.status IN ('awaiting_approval', 'approved')
        ORDER BY e.id DESC LIMIT 1;
        IF v_held IS NULL AND EXISTS (SELECT 1 FROM ledgerflow.links l WHERE l.connection_id = c.id
                                      AND l.entity_type = 'invoice' AND l.host_id = v_id) THEN
            v_synced := v_synced || v_id;
            CONTINUE;
        END IF;
        INSERT INTO ledgerflow.backfill_approvals (connection_id, invoice_id, approved_by)
        VALUES (c.id, v_id, approve_invoices.approved_by) ON CONFLICT DO NOTHING;
        GET DIAGNOSTICS v_rows = ROW_COUNT;
        -- A withdrawal's note no longer applies once approved again.
        UPDATE ledgerflow.sync_events e
        SET status = 'approved', skip_reason = NULL, skip_message = NULL, updated_at = now()
        WHERE e.connection_id = c.id AND e.invoice_id = v_id AND e.status = 'awaiting_approval';
        IF v_rows = 1 OR v_held = 'awaiting_approval' THEN
            v_changed := v_changed || v_id;
        ELSE
            v_unchanged := v_unchanged || v_id;
        END IF;
    END LOOP;
    RETURN ledgerflow.approval_outcome(v_changed, v_synced, v_unchanged);
END;
$$;

-- Withdraw approval before the send (approvals::withdraw): a held invoice
-- goes back to `awaiting_approval`, its event noting who withdrew it and
-- why (skip_reason approval_withdrawn); a ready-to-sync mark is removed.
-- An invoice already in the provider with nothing held is reported.
CREATE FUNCTION ledgerflow.withdraw_approval(connection_id bigint, invoice_ids text[], reason text DEFAULT NULL,
                                             withdrawn_by text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    c ledgerflow.connections := ledgerflow.ledger_connection(withdraw_approval.connection_id);
    v_id text;
    v_held text;
    v_changed text[] := '{}';
    v_synced text[] := '{}';
    v_unchanged text[] := '{}';
    v_rows integer;
    v_message text := 'approval withdrawn'
        || coalesce(' by ' || nullif(btrim(withdraw_approval.withdrawn_by), ''), '')
        || coalesce(': ' || nullif(btrim(withdraw_approval.reason), ''), '');
BEGIN
    FOREACH v_id IN ARRAY coalesce(invoice_ids, '{}') LOOP
        PERFORM 1 FROM ledgerflow.invoice_sync s WHERE s.connection_id = c.id AND s.invoice_id = v_id FOR UPDATE;
        SELECT e.status INTO v_held FROM ledgerflow.sync_events e
        WHERE e.connection_id = c.id AND e.invoice_id = v_id AND e.status IN ('awaiting_approval', 'approved')
        ORDER BY e.id DESC LIMIT 1;
        IF v_held IS NULL AND EXISTS (SELECT 1 FROM ledgerflow.links l WHERE l.connection_id = c.id
                                      AND l.entity_type = 'invoice' AND l.host_id = v_id) THEN
            v_synced := v_synced || v_id;
            CONTINUE;
        END IF;
        DELETE FROM ledgerflow.backfill_approvals a WHERE a.connection_id = c.id AND a.invoice_id = v_id;
        GET DIAGNOSTICS v_rows = ROW_COUNT;
        UPDATE ledgerflow.sync_events e
        SET status = 'awaiting_approval', skip_reason = 'approval_withdrawn', skip_message = v_message,
            updated_at = now()
        WHERE e.connection_id = c.id AND e.invoice_id = v_id AND e.status = 'approved';
        IF v_rows = 1 OR v_held = 'approved' THEN
            v_changed := v_changed || v_id;
        ELSE
            v_unchanged := v_unchanged || v_id;
        END IF;
    END LOOP;
    RETURN ledgerflow.approval_outcome(v_changed, v_synced, v_unchanged);
END;
$$;

-- "Sync approved now" (approvals::sync_approved): one `send-approved` job
-- per connection sends every approved event together; asking again while
-- it waits joins it. Returns {job_id (NULL when nothing is approved), approved}.
CREATE FUNCTION ledgerflow.sync_approved(connection_id bigint) RETURNS jsonb
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    c ledgerflow.connections := ledgerflow.ledger_connection(sync_approved.connection_id);
    v_count integer;
    v_job bigint;
BEGIN
    IF c.status = 'disabled' THEN
        PERFORM ledgerflow.face_error('55000',
            format('the %s connection is disabled: enable it in settings first', ledgerflow.provider_display_name(c.provider)),
            jsonb_build_object('kind', 'not_allowed'));
    END IF;
    SELECT count(*) INTO v_count FROM ledgerflow.sync_events e
    WHERE e.connection_id = c.id AND e.status = 'approved';
    IF v_count > 0 THEN
        v_job := ledgerflow.enqueue(kind => 'send-approved',
            payload => jsonb_build_object('tenant', c.tenant_id, 'connection_id', c.id),
            queue => 'default', priority => 1::smallint, tenant => c.tenant_id, run_at => now(),
            unique_key => format('approved:%s', c.id), kind_version => 1,
            hold_key => format('connection:%s', c.id));
    END IF;
    RETURN jsonb_build_object('job_id', v_job, 'approved', v_count);
END;
$$;

-- One approved invoice sent the way a trigger would have sent it: its
-- event becomes pending and the chain a trigger starts (customer, invoice,
-- payments) runs now; the approval is spent. Used by the send-approved
-- job for what it does not send in a batch. Returns {event_id, run_id},
-- or NULL when the invoice has no approved event (withdrawn meanwhile).
CREATE FUNCTION ledgerflow.release_approved(p_connection_id bigint, p_invoice_id text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    c ledgerflow.connections := ledgerflow.ledger_connection(p_connection_id);
    e ledgerflow.sync_events;
    v_steps jsonb;
    v_run bigint;
    v_job bigint;
BEGIN
    PERFORM 1 FROM ledgerflow.invoice_sync s
    WHERE s.connection_id = c.id AND s.invoice_id = p_invoice_id FOR UPDATE;
    SELECT * INTO e FROM ledgerflow.sync_events x
    WHERE x.connection_id = c.id AND x.invoice_id = p_invoice_id AND x.status = 'approved'
    ORDER BY x.id DESC LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE ledgerflow.sync_events SET status = 'pending', updated_at = now() WHERE id = e.id;
    DELETE FROM ledgerflow.backfill_approvals a WHERE a.connection_id = c.id AND a.invoice_id = p_invoice_id;
    v_steps := ledgerflow.sync_chain_steps(c, e.trigger, e.snapshot);
    v_run := ledgerflow.start_workflow_run(
        format('approved %s on %s: invoice %s', e.trigger_label, ledgerflow.provider_display_name(c.provider),
               e.snapshot ->> 'number'),
        c.tenant_id, v_steps);
    -- A person asked for it: no quiet period, and ahead of background work.
    FOR v_job IN SELECT DISTINCT job_id FROM ledgerflow.workflow_steps
                 WHERE run_id = v_run AND status = 'enqueued' AND job_id IS NOT NULL LOOP
        PERFORM ledgerflow.wake_unclaimed_job(v_job);
    END LOOP;
    UPDATE ledgerflow.sync_events SET workflow_run_id = v_run WHERE id = e.id;
    RETURN jsonb_build_object('event_id', e.id, 'run_id', v_run);
END;
$$;

-- ---------------------------------------------------------------------
-- Payment terms on the snapshot (InvoiceSnapshot::payment_terms): read,
-- checked and normalized beside the rest of the snapshot by check_snapshot.
-- ---------------------------------------------------------------------

-- The first value of `payment_terms` that cannot be read, as {field,
-- message}; NULL when it reads (or is absent).
CREATE FUNCTION ledgerflow.payment_terms_read_problem(s jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    t jsonb := s -> 'payment_terms';
    checks jsonb;
    c jsonb;
    p text;
BEGIN
    p := ledgerflow.snapshot_value_problem(t, 'object', 'option');
    IF p IS NOT NULL THEN
        RETURN jsonb_build_object('field', 'payment_terms', 'message', p);
    END IF;
    IF t IS NULL OR jsonb_typeof(t) = 'null' THEN
        RETURN NULL;
    END IF;
    checks := jsonb_build_array(
        jsonb_build_array('payment_terms.kind', ledgerflow.slot(t, 'kind'), 'days_after_issue|day_of_following_month', 'required'),
        jsonb_build_array('payment_terms.name', ledgerflow.slot(t, 'name'), 'string', 'option'))
        || CASE t ->> 'kind'
               WHEN 'days_after_issue' THEN jsonb_build_array(jsonb_build_array('payment_terms.days', ledgerflow.slot(t, 'days'), 'i64', 'required'))
               WHEN 'day_of_following_month' THEN jsonb_build_array(jsonb_build_array('payment_terms.day', ledgerflow.slot(t, 'day'), 'i64', 'required'))
               ELSE '[]'::jsonb END;
    FOR c IN SELECT * FROM jsonb_array_elements(checks) LOOP
        p := ledgerflow.snapshot_value_problem(c -> 1 -> 'v', c ->> 2, c ->> 3);
        IF p IS NOT NULL THEN
            RETURN jsonb_build_object('field', c ->> 0, 'message', p);
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;

-- PaymentTerms::issues: the same rules and words, for terms that read.
CREATE FUNCTION ledgerflow.payment_terms_issues(s jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(jsonb_agg(x ORDER BY n), '[]'::jsonb) FROM (
        SELECT 1 AS n, jsonb_build_object('field', 'payment_terms.days', 'message',
                   format('must be between 0 and 365 days, not %s', t ->> 'days')) AS x
        FROM (SELECT s -> 'payment_terms' AS t) q
        WHERE t ->> 'kind' = 'days_after_issue' AND NOT (t ->> 'days')::numeric BETWEEN 0 AND 365
        UNION ALL
        SELECT 2, jsonb_build_object('field', 'payment_terms.day', 'message',
                   format('must be a day of the month from 1 to 31, not %s', t ->> 'day'))
        FROM (SELECT s -> 'payment_terms' AS t) q
        WHERE t ->> 'kind' = 'day_of_following_month' AND NOT (t ->> 'day')::numeric BETWEEN 1 AND 31
        UNION ALL
        SELECT 3, jsonb_build_object('field', 'payment_terms.name', 'message', 'must not be empty when given')
        FROM (SELECT s -> 'payment_terms' AS t) q
        WHERE jsonb_typeof(t -> 'name') = 'string' AND ledgerflow.blank(t ->> 'name')) y
$$;

-- {"payment_terms": ...} as the Rust types write it, or {} when the
-- snapshot has none (the field is left out, as serde skips it).
CREATE FUNCTION ledgerflow.payment_terms_normalized(s jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN jsonb_typeof(s -> 'payment_terms') IS DISTINCT FROM 'object' THEN '{}'::jsonb
        ELSE jsonb_build_object('payment_terms',
            jsonb_build_object('kind', s #> '{payment_terms,kind}')
            || CASE s #>> '{payment_terms,kind}'
                   WHEN 'days_after_issue' THEN jsonb_build_object('days', s #> '{payment_terms,days}')
                   ELSE jsonb_build_object('day', s #> '{payment_terms,day}') END
            || jsonb_build_object('name', coalesce(s #> '{payment_terms,name}', 'null')))
    END
$$;
