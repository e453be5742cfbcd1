-- The SQL face of the sync ledger: what a host in any language calls, in
-- its own transaction, and what the Rust client calls too (one
-- implementation, not two that drift; workflows' ledger module wraps these
-- functions in typed Rust):
--
--   ledgerflow.on_host_trigger(tenant, trigger, snapshot, label, action_override)
--   ledgerflow.record_trigger(connection_id, trigger, snapshot, label, action_override)
--   ledgerflow.check_snapshot(snapshot) (the snapshot checks: migration
--   20261207000011_snapshot_checks.sql)
--   ledgerflow.sync_dialog(connection_id, invoice_id, history_limit)
--   ledgerflow.sync_history(connection_id, invoice_id, before, history_limit)
--   ledgerflow.resync_now / send_as_new / retry_failed_event / set_invoice_auto_sync
--   (the sync dialog, read side and actions: migration 20261207000012_sync_dialog.sql)
--   ledgerflow.approve_invoices / withdraw_approval / sync_approved ("approve
--   before sync": migration 20261207000019_approvals.sql)
--
-- This file holds what they share (errors, values as the Rust domain
-- writes them) and the trigger rules (settings, skip reasons, superseding,
-- the chain a sync becomes), here and only here.
--
-- Errors are raised with a JSON DETAIL ({"kind": ...}) the Rust client maps
-- to its typed LedgerError: 22023 a bad argument (a snapshot naming the
-- field and the problem, an unknown trigger), P0002 something that does
-- not exist, 55000 an action not allowed now. Nothing is written when one
-- is raised (the statement, and so the host's transaction, is aborted).

CREATE FUNCTION ledgerflow.face_error(p_code text, p_message text, p_detail jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = p_code, MESSAGE = p_message, DETAIL = p_detail::text;
END;
$$;

-- ---------------------------------------------------------------------
-- Values as the Rust domain writes them (messages must read the same).
-- Functions that cast text to dates or times are STABLE, not IMMUTABLE:
-- PostgreSQL's casts depend on settings, even where these inputs do not.
-- ---------------------------------------------------------------------

-- money.rs's currency table: code and minor-unit exponent.
CREATE FUNCTION ledgerflow.currency_exponent(p_code text) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT e FROM (VALUES
        ('AED', 2), ('ARS', 2), ('AUD', 2), ('BDT', 2), ('BGN', 2), ('BHD', 3),
        ('BRL', 2), ('CAD', 2), ('CHF', 2), ('CLP', 0), ('CNY', 2), ('COP', 2),
        ('CZK', 2), ('DKK', 2), ('EGP', 2), ('EUR', 2), ('FJD', 2), ('GBP', 2),
        ('HKD', 2), ('HUF', 2), ('IDR', 2), ('ILS', 2), ('INR', 2), ('ISK', 0),
        ('JOD', 3), ('JPY', 0), ('KES', 2), ('KRW', 0), ('KWD', 3), ('LKR', 2),
        ('MXN', 2), ('MYR', 2), ('NGN', 2), ('NOK', 2), ('NZD', 2), ('OMR', 3),
        ('PEN', 2), ('PGK', 2), ('PHP', 2), ('PKR', 2), ('PLN', 2), ('QAR', 2),
        ('RON', 2), ('SAR', 2), ('SEK', 2), ('SGD', 2), ('THB', 2), ('TND', 3),
        ('TRY', 2), ('TWD', 2), ('UAH', 2), ('USD', 2), ('VND', 0), ('WST', 2),
        ('XPF', 0), ('ZAR', 2)) t(code, e)
    WHERE code = upper(p_code) AND p_code ~ '^[A-Za-z]{3}$'
$$;

-- Money's Display: "NZD 12.50", "NZD -0.05", "JPY 1250", "KWD 1.250".
CREATE FUNCTION ledgerflow.money_text(p_minor numeric, p_code text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT upper(p_code) || ' ' || CASE WHEN p_minor < 0 THEN '-' ELSE '' END ||
           CASE WHEN e = 0 THEN abs(p_minor)::text
                ELSE div(abs(p_minor), 10::numeric ^ e)::text || '.' ||
                     lpad(mod(abs(p_minor), (10::numeric ^ e))::bigint::text, e, '0') END
    FROM (SELECT coalesce(ledgerflow.currency_exponent(p_code), 2) AS e) x
$$;

-- Rust's `{:?}` of a string: quoted, with \ " and control characters escaped.
CREATE FUNCTION ledgerflow.rust_debug_text(p text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v text := '';
    ch text;
BEGIN
    FOREACH ch IN ARRAY string_to_array(p, NULL) LOOP
        v := v || CASE
            WHEN ch = '\' THEN '\\'
            WHEN ch = '"' THEN '\"'
            WHEN ch = E'\t' THEN '\t'
            WHEN ch = E'\r' THEN '\r'
            WHEN ch = E'\n' THEN '\n'
            WHEN ascii(ch) < 32 OR ascii(ch) = 127 THEN '\u{' || to_hex(ascii(ch)) || '}'
            ELSE ch END;
    END LOOP;
    RETURN '"' || v || '"';
END;
$$;

-- Empty after Rust's str::trim (Unicode White_Space).
CREATE FUNCTION ledgerflow.blank(p text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT p ~ '^[ \t\n\r\f\v\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$'
$$;

-- chrono's DateTime<Utc> serialization: RFC 3339, Z, fraction only as needed.
CREATE FUNCTION ledgerflow.rfc3339(p timestamptz) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT to_char(p AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') ||
           CASE WHEN us = 0 THEN '' WHEN us % 1000 = 0 THEN '.' || lpad((us / 1000)::text, 3, '0')
                ELSE '.' || lpad(us::text, 6, '0') END || 'Z'
    FROM (SELECT (extract(microseconds FROM p)::bigint % 1000000) AS us) x
$$;

-- A time the snapshot carries (RFC 3339, any offset) as chrono writes it:
-- UTC, Z, the fraction to the nanosecond, only as many digits as needed
-- (timestamptz keeps microseconds, so the fraction is carried as text).
CREATE FUNCTION ledgerflow.rfc3339_text(p text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT to_char(regexp_replace(p, '\.[0-9]+', '')::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') ||
           CASE WHEN ns = 0 THEN '' WHEN ns % 1000000 = 0 THEN '.' || lpad((ns / 1000000)::text, 3, '0')
                WHEN ns % 1000 = 0 THEN '.' || lpad((ns / 1000)::text, 6, '0')
                ELSE '.' || lpad(ns::text, 9, '0') END || 'Z'
    FROM (SELECT coalesce(left(rpad(substring(p FROM '\.([0-9]+)'), 9, '0'), 9)::bigint, 0) AS ns) x
$$;

-- money.rs's round_div: half away from zero (d > 0).
CREATE FUNCTION ledgerflow.round_div(n numeric, d numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT sign(n) * div(abs(n) * 2 + d, 2 * d)
$$;

CREATE FUNCTION ledgerflow.fits_i64(n numeric) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT n BETWEEN -9223372036854775808 AND 9223372036854775807
$$;

-- ---------------------------------------------------------------------
-- Triggers and settings (settings.rs holds the typed settings; the rule
-- "does this trigger sync" is here).
-- ---------------------------------------------------------------------

-- Trigger codes as the sync dialog's JSON spells them, with the label shown
-- when the host sends none.
CREATE FUNCTION ledgerflow.trigger_label(p_trigger text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_trigger
        WHEN 'job_created' THEN 'job created'
        WHEN 'items_changed' THEN 'invoice items changed'
        WHEN 'invoice_created' THEN 'invoice created'
        WHEN 'sale_completed' THEN 'sale completed'
        WHEN 'online_booking_created' THEN 'online booking created'
        WHEN 'online_booking_accepted' THEN 'online booking accepted'
        WHEN 'job_cancelled' THEN 'job cancelled'
        WHEN 'job_rejected' THEN 'job rejected'
        WHEN 'invoice_paid' THEN 'invoice marked as paid'
        WHEN 'payment_added' THEN 'payment added to invoice'
        WHEN 'invoice_sent' THEN 'invoice sent'
        WHEN 'manual_resync' THEN 're-sync requested'
        WHEN 'manual_send_as_new' THEN 'send as new requested'
        WHEN 'manual_retry' THEN 'retry requested'
    END
$$;

CREATE FUNCTION ledgerflow.check_host_trigger(p_trigger text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_trigger IS NULL OR p_trigger LIKE 'manual\_%' OR ledgerflow.trigger_label(p_trigger) IS NULL THEN
        PERFORM ledgerflow.face_error('22023',
            format('trigger: unknown host trigger %s (expected one of job_created, items_changed, invoice_created, '
                   'sale_completed, online_booking_created, online_booking_accepted, job_cancelled, job_rejected, '
                   'invoice_paid, payment_added, invoice_sent)', coalesce(ledgerflow.rust_debug_text(p_trigger), 'NULL')),
            jsonb_build_object('kind', 'unknown_trigger', 'trigger', p_trigger));
    END IF;
END;
$$;

CREATE FUNCTION ledgerflow.provider_display_name(p_provider text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_provider
        WHEN 'shopify' THEN 'Shopify' WHEN 'lightspeed_r' THEN 'Lightspeed R-Series'
        WHEN 'lightspeed_x' THEN 'Lightspeed X-Series' WHEN 'xero' THEN 'Xero'
        WHEN 'saledock' THEN 'Saledock' WHEN 'quickbooks' THEN 'QuickBooks Online' ELSE p_provider END
$$;

-- A boolean setting, with the serde default when it is absent.
CREATE FUNCTION ledgerflow.setting(p_settings jsonb, p_path text[], p_default boolean) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce((p_settings #>> p_path)::boolean, p_default)
$$;

-- Why `p_trigger` does not sync (a SkipReason code), or NULL when it syncs.
-- A person's explicit "sync this one" (override true) syncs even when
-- automatic sync is off (QuickBooks' own "Enable Sync" off skips even
-- that); false always skips; NULL follows, in order, the
-- master toggle, the invoice's toggle, "when to sync", then the provider's
-- per-type toggles.
CREATE FUNCTION ledgerflow.trigger_skip_reason(
    p_settings jsonb, p_trigger text, p_invoice_auto_sync boolean, p_override boolean) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_settings #>> '{provider,provider}' = 'quickbooks'
             AND NOT ledgerflow.setting(p_settings, '{provider,sync_enabled}', true) THEN 'provider_sync_off'
        WHEN p_override IS TRUE THEN NULL
        WHEN p_override IS FALSE THEN 'overridden_for_this_action'
        WHEN NOT ledgerflow.setting(p_settings, '{auto_sync}', false) THEN 'master_toggle_off'
        WHEN NOT p_invoice_auto_sync THEN 'invoice_auto_sync_off'
        WHEN p_trigger IN ('job_cancelled', 'job_rejected')
             AND NOT ledgerflow.setting(p_settings, '{mark_deleted_on_cancel}', false) THEN 'mark_deleted_off'
        WHEN NOT CASE p_trigger
                 WHEN 'job_created' THEN ledgerflow.setting(p_settings, '{when_to_sync,job_created}', true)
                 WHEN 'items_changed' THEN ledgerflow.setting(p_settings, '{when_to_sync,items_changed}', true)
                 WHEN 'invoice_created' THEN ledgerflow.setting(p_settings, '{when_to_sync,invoice_created}', true)
                 WHEN 'sale_completed' THEN ledgerflow.setting(p_settings, '{when_to_sync,sale_completed}', true)
                 WHEN 'online_booking_created' THEN
                     coalesce(p_settings #>> '{when_to_sync,online_booking}', 'off') = 'when_created'
                 WHEN 'online_booking_accepted' THEN
                     coalesce(p_settings #>> '{when_to_sync,online_booking}', 'off') = 'when_accepted'
                 ELSE true END THEN 'trigger_off'
        WHEN p_settings #>> '{provider,provider}' = 'quickbooks' AND p_trigger = 'payment_added'
             AND NOT ledgerflow.setting(p_settings, '{provider,sync_payments}', true) THEN 'payment_sync_off'
        WHEN p_settings #>> '{provider,provider}' = 'quickbooks' AND p_trigger <> 'payment_added'
             AND NOT ledgerflow.setting(p_settings, '{provider,sync_invoices}', true) THEN 'invoice_sync_off'
        WHEN p_settings #>> '{provider,provider}' = 'xero' AND p_trigger = 'payment_added'
             AND NOT ledgerflow.setting(p_settings, '{provider,sync_payments}', false) THEN 'payment_sync_off'
    END
$$;

CREATE FUNCTION ledgerflow.skip_message(p_code text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_code
        WHEN 'overridden_for_this_action' THEN 'sync was switched off for this action'
        WHEN 'master_toggle_off' THEN 'paused: automatic sync is off in settings'
        WHEN 'invoice_auto_sync_off' THEN 'auto-sync is off for this invoice'
        WHEN 'trigger_off' THEN 'this trigger is switched off in settings'
        WHEN 'mark_deleted_off' THEN 'marking as deleted on cancel is off'
        WHEN 'invoice_sync_off' THEN 'invoice sync is off for this connection'
        WHEN 'payment_sync_off' THEN 'payment sync is off for this connection'
        WHEN 'provider_sync_off' THEN 'sync is switched off for this connection (Enable Sync)'
        WHEN 'draft_not_sent' THEN 'a draft invoice syncs once it is sent'
    END
$$;

-- The quiet period automatic syncs wait out (ConnectionSettings::quiet_period):
-- clamped, so settings written around validation are not trusted; NULLs
-- when syncs run at once.
CREATE FUNCTION ledgerflow.quiet_period(p_settings jsonb, OUT quiet_ms bigint, OUT max_wait_ms bigint)
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN q > 0 THEN q END,
           CASE WHEN q > 0 THEN least(greatest(coalesce((p_settings ->> 'max_quiet_wait_ms')::numeric, 10000), q), 60000)::bigint END
    FROM (SELECT least(greatest(coalesce((p_settings ->> 'quiet_period_ms')::numeric, 1000), 0), 60000)::bigint AS q) x
$$;

CREATE FUNCTION ledgerflow.ledger_connection(p_connection_id bigint) RETURNS ledgerflow.connections
LANGUAGE plpgsql STABLE AS $$
DECLARE
    c ledgerflow.connections;
BEGIN
    SELECT * INTO c FROM ledgerflow.connections WHERE id = p_connection_id;
    IF NOT FOUND THEN
        PERFORM ledgerflow.face_error('P0002', format('connection %s does not exist', p_connection_id),
            jsonb_build_object('kind', 'connection_not_found', 'connection_id', p_connection_id));
    END IF;
    RETURN c;
END;
$$;

CREATE FUNCTION ledgerflow.recorded(p_event bigint, p_status text, p_code text, p_message text, p_job bigint)
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('event_id', p_event, 'status', p_status, 'skip_reason', p_code,
                              'skip_message', p_message, 'job_id', p_job)
$$;

-- ---------------------------------------------------------------------
-- Writing sync events (the caller holds or takes the invoice_sync row
-- lock: lock order invoice_sync row, then sync_events, then jobs).
-- ---------------------------------------------------------------------

-- A person pressed a button: the pending job runs now and first (the
-- queue's `ledgerflow.expedite_job`), and the invoice's row names it, so an
-- automatic edit joining it does not push it back into a quiet period. A
-- held job stays held, a running one alone.
CREATE FUNCTION ledgerflow.ledger_expedite(p_connection_id bigint, p_invoice_id text, p_job bigint)
RETURNS void LANGUAGE sql AS $$
    SELECT ledgerflow.expedite_job(p_job, 1::smallint);
    UPDATE ledgerflow.invoice_sync SET expedited_job_id = p_job
    WHERE connection_id = p_connection_id AND invoice_id = p_invoice_id;
$$;

-- The quiet period: a job a person expedited is left alone; any other is
-- delayed by the queue (`ledgerflow.delay_unclaimed_job`).
CREATE FUNCTION ledgerflow.hold_for_quiet_period(
    p_connection_id bigint, p_invoice_id text, p_job bigint, p_quiet_ms bigint, p_max_wait_ms bigint)
RETURNS void LANGUAGE sql AS $$
    SELECT ledgerflow.delay_unclaimed_job(p_job, p_quiet_ms, p_max_wait_ms)
    WHERE NOT EXISTS (SELECT 1 FROM ledgerflow.invoice_sync s
                      WHERE s.connection_id = p_connection_id AND s.invoice_id = p_invoice_id
                        AND s.expedited_job_id = p_job);
$$;

-- Insert a pending event, supersede the invoice's older pending events and
-- those held for approval (an edit inherits a superseded "send as new"; a
-- void still wins; a sync that goes now spends the invoice's approval) and,
-- unless a chain's invoice step will, enqueue or join the invoice's job.
CREATE FUNCTION ledgerflow.ledger_open_event(
    c ledgerflow.connections, p_invoice_id text, p_trigger text, p_label text, p_operation text,
    p_void_existing boolean, p_snapshot jsonb, p_retry_of bigint, p_expedite boolean, p_by_chain boolean)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_event bigint;
    v_job bigint;
    v_quiet record;
    v_run_at timestamptz;
BEGIN
    IF p_operation NOT IN ('upsert', 'send_as_new', 'void') THEN
        PERFORM ledgerflow.face_error('55000',
            format('a %s event is written by its chain step when it finishes, not opened', p_operation),
            jsonb_build_object('kind', 'not_allowed'));
    END IF;
    INSERT INTO ledgerflow.sync_events
        (connection_id, invoice_id, trigger, trigger_label, status, operation, void_existing, snapshot, retry_of)
    VALUES (c.id, p_invoice_id, p_trigger, p_label, 'pending', p_operation, p_void_existing, p_snapshot, p_retry_of)
    RETURNING id INTO v_event;

    WITH sup AS (
        UPDATE ledgerflow.sync_events
        SET status = 'superseded', superseded_by = v_event, finished_at = now(), updated_at = now()
        WHERE connection_id = c.id AND invoice_id = p_invoice_id
          AND status IN ('pending', 'awaiting_approval', 'approved') AND id < v_event
        RETURNING operation, void_existing
    )
    UPDATE ledgerflow.sync_events e
    SET operation = CASE WHEN e.operation = 'upsert'
                              AND EXISTS (SELECT 1 FROM sup WHERE operation = 'send_as_new')
                         THEN 'send_as_new' ELSE e.operation END,
        void_existing = e.void_existing
                        OR coalesce((SELECT bool_or(void_existing) FROM sup WHERE operation = 'send_as_new'), false)
    WHERE e.id = v_event;
    DELETE FROM ledgerflow.backfill_approvals a WHERE a.connection_id = c.id AND a.invoice_id = p_invoice_id;

    IF p_by_chain THEN
        RETURN ledgerflow.recorded(v_event, 'pending', NULL, NULL, NULL);
    END IF;

    v_quiet := ledgerflow.quiet_period(c.settings);
    IF p_expedite THEN
        v_run_at := now();
    ELSIF p_operation <> 'void' AND v_quiet.quiet_ms IS NOT NULL THEN
        -- Inserted already waiting: outside a transaction a job inserted
        -- available could be claimed before the statement that holds it back.
        v_run_at := clock_timestamp() + make_interval(secs => v_quiet.quiet_ms::float8 / 1000);
    END IF;
    v_job := ledgerflow.enqueue(
        kind => CASE WHEN p_operation = 'void' THEN 'void-order' ELSE 'upsert-invoice' END,
        payload => jsonb_build_object('tenant', c.tenant_id, 'connection_id', c.id, 'invoice_id', p_invoice_id),
        queue => 'default', priority => 1::smallint, tenant => c.tenant_id, run_at => v_run_at,
        unique_key => format('sync:%s:%s', c.id, p_invoice_id), kind_version => 1,
        hold_key => format('connection:%s', c.id));
    IF p_expedite THEN
        PERFORM ledgerflow.ledger_expedite(c.id, p_invoice_id, v_job);
    ELSIF p_operation = 'void' THEN
        PERFORM ledgerflow.wake_unclaimed_job(v_job);
    ELSIF v_quiet.quiet_ms IS NOT NULL THEN
        PERFORM ledgerflow.hold_for_quiet_period(c.id, p_invoice_id, v_job, v_quiet.quiet_ms, v_quiet.max_wait_ms);
    END IF;
    UPDATE ledgerflow.sync_events SET job_id = v_job WHERE id = v_event;
    RETURN ledgerflow.recorded(v_event, 'pending', NULL, NULL, v_job);
END;
$$;

-- A host trigger on one connection, for a snapshot already checked: always
-- an event, skipped with the reason, held for approval (awaiting_approval
-- or approved, nothing enqueued) or pending (its job enqueued, or left to a
-- chain when p_by_chain).
CREATE FUNCTION ledgerflow.ledger_record(
    p_connection_id bigint, p_trigger text, p_label text, p_snapshot jsonb, p_override boolean, p_by_chain boolean)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    c ledgerflow.connections := ledgerflow.ledger_connection(p_connection_id);
    v_invoice text := p_snapshot ->> 'invoice_id';
    v_auto boolean;
    v_code text;
    v_message text;
    v_event bigint;
    v_operation text := CASE WHEN p_trigger IN ('job_cancelled', 'job_rejected') THEN 'void' ELSE 'upsert' END;
BEGIN
    -- Takes the invoice's row lock: triggers of one invoice, and the job
    -- that picks their newest pending event, see each other (sync.rs).
    INSERT INTO ledgerflow.invoice_sync (connection_id, invoice_id, latest_snapshot)
    VALUES (c.id, v_invoice, p_snapshot)
    ON CONFLICT (connection_id, invoice_id)
    DO UPDATE SET latest_snapshot = excluded.latest_snapshot, updated_at = now()
    RETURNING auto_sync INTO v_auto;

    IF c.status = 'disabled' THEN
        v_code := 'connection_disabled';
        v_message := format('the %s connection is disabled', ledgerflow.provider_display_name(c.provider));
    ELSE
        -- QuickBooks: a draft never syncs until it is sent, whatever is asked.
        v_code := coalesce(ledgerflow.trigger_skip_reason(c.settings, p_trigger, v_auto, p_override),
            CASE WHEN c.provider = 'quickbooks' AND v_operation = 'upsert'
                      AND p_snapshot ->> 'status' = 'draft' THEN 'draft_not_sent' END);
        v_message := ledgerflow.skip_message(v_code);
        -- An invoice with a synced payment refuses edits of its lines and
        -- synced payments (ledgerflow.locked_edit, migration
        -- 20261207000020_single_invoice_sync.sql; PL/pgSQL resolves the
        -- call when it runs, after every migration): recorded, not sent.
        IF v_code IS NULL AND v_operation = 'upsert' THEN
            v_message := ledgerflow.locked_edit(c.id, v_invoice, p_snapshot);
            v_code := CASE WHEN v_message IS NOT NULL THEN 'locked_synced_payment' END;
        END IF;
    END IF;
    -- "Approve before sync": an upsert that would sync waits for a person
    -- (ledgerflow.ledger_hold_for_approval, migration 20261207000019_approvals.sql);
    -- a void goes at once (it supersedes what is held).
    IF v_code IS NULL AND v_operation = 'upsert'
       AND ledgerflow.setting(c.settings, '{approve_before_sync}', false) THEN
        RETURN ledgerflow.ledger_hold_for_approval(c, v_invoice, p_trigger,
                                                   coalesce(p_label, ledgerflow.trigger_label(p_trigger)), p_snapshot);
    END IF;
    IF v_code IS NOT NULL THEN
        INSERT INTO ledgerflow.sync_events
            (connection_id, invoice_id, trigger, trigger_label, status, skip_reason, skip_message,
             operation, snapshot, finished_at)
        VALUES (c.id, v_invoice, p_trigger, coalesce(p_label, ledgerflow.trigger_label(p_trigger)), 'skipped',
                v_code, v_message, v_operation, p_snapshot, now())
        RETURNING id INTO v_event;
        RETURN ledgerflow.recorded(v_event, 'skipped', v_code, v_message, NULL);
    END IF;
    RETURN ledgerflow.ledger_open_event(c, v_invoice, p_trigger, coalesce(p_label, ledgerflow.trigger_label(p_trigger)),
                                        v_operation, false, p_snapshot, NULL, false, p_by_chain);
END;
$$;

-- Record a host trigger on one connection (ledger::record_trigger).
-- Returns {event_id, status: pending|skipped|awaiting_approval|approved, skip_reason, skip_message, job_id}.
CREATE FUNCTION ledgerflow.record_trigger(
    connection_id bigint, trigger text, snapshot jsonb, label text DEFAULT NULL, action_override boolean DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ledgerflow.check_host_trigger(record_trigger.trigger);
    RETURN ledgerflow.ledger_record(record_trigger.connection_id, record_trigger.trigger, record_trigger.label,
                                    ledgerflow.check_snapshot(record_trigger.snapshot),
                                    record_trigger.action_override, false);
END;
$$;

-- ---------------------------------------------------------------------
-- Sync chains (chains.rs documents the chains; ledgerflow.start_workflow_run
-- starts them).
-- ---------------------------------------------------------------------

-- One step of a sync chain (every ledger kind: version 1, queue default, live).
CREATE FUNCTION ledgerflow.chain_step(p_name text, p_kind text, p_payload jsonb, p_unique_key text,
                                      p_hold_key text, p_after integer[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('name', p_name, 'kind', p_kind, 'kind_version', 1, 'payload', p_payload,
                              'queue', 'default', 'priority', 1, 'hold_key', p_hold_key,
                              'unique_key', p_unique_key, 'depends_on', to_jsonb(p_after))
$$;

-- The chain a trigger that syncs becomes on connection `c`: void; or
-- customer (where the provider keeps customers), changed items (QuickBooks) -> invoice -> complete
-- draft (Shopify draft orders, "complete draft when paid", paid in full)
-- or one step per payment (where the connection carries payments).
CREATE FUNCTION ledgerflow.sync_chain_steps(c ledgerflow.connections, p_trigger text, s jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_invoice text := s ->> 'invoice_id';
    v_key text := format('sync:%s:%s', c.id, s ->> 'invoice_id');
    v_hold text := format('connection:%s', c.id);
    v_base jsonb := jsonb_build_object('tenant', c.tenant_id, 'connection_id', c.id);
    p jsonb := c.settings -> 'provider';
    v_provider text := c.settings #>> '{provider,provider}';
    v_steps jsonb := '[]';
    v_invoice_at integer;
    v_paid numeric;
BEGIN
    IF p_trigger IN ('job_cancelled', 'job_rejected') THEN
        RETURN jsonb_build_array(ledgerflow.chain_step('void ' || (s ->> 'number'), 'void-order',
            v_base || jsonb_build_object('invoice_id', v_invoice), v_key, v_hold, '{}'));
    END IF;
    IF (v_provider <> 'quickbooks' OR ledgerflow.setting(p, '{sync_customers}', true))
       AND coalesce(s #>> '{customer,customer_id}', '') <> '' THEN
        v_steps := v_steps || ledgerflow.chain_step('customer ' || (s #>> '{customer,name}'), 'sync-customer',
            v_base || jsonb_build_object('customer_id', s #> '{customer,customer_id}', 'invoice_id', v_invoice),
            format('customer:%s:%s', c.id, s #>> '{customer,customer_id}'), v_hold, '{}');
    END IF;
    -- QuickBooks: the service items the lines name that the host changed
    -- and that have not synced yet (ledgerflow.changed_item_steps, with
    -- the host's records).
    v_steps := v_steps || ledgerflow.changed_item_steps(c, s);
    v_invoice_at := jsonb_array_length(v_steps);
    -- The invoice waits for every step before it (its customer, its items).
    v_steps := v_steps || ledgerflow.chain_step('invoice ' || (s ->> 'number'), 'upsert-invoice',
        v_base || jsonb_build_object('invoice_id', v_invoice), v_key, v_hold,
        coalesce((SELECT array_agg(i ORDER BY i) FROM generate_series(0, v_invoice_at - 1) i), '{}'));

    SELECT coalesce(sum((x ->> 'amount_minor')::numeric), 0) INTO v_paid
    FROM jsonb_array_elements(coalesce(s -> 'payments', '[]')) x;
    IF v_provider = 'shopify' AND ledgerflow.setting(p, '{use_draft_orders}', true)
       AND ledgerflow.setting(p, '{complete_draft_when_paid}', true)
       AND (s ->> 'status' = 'paid' OR ((s #>> '{totals,total}')::numeric > 0 AND v_paid >= (s #>> '{totals,total}')::numeric)) THEN
        v_steps := v_steps || ledgerflow.chain_step('complete draft', 'complete-draft',
            v_base || jsonb_build_object('invoice_id', v_invoice), v_key, v_hold, ARRAY[v_invoice_at]);
    ELSIF (v_provider = 'xero' AND ledgerflow.setting(p, '{sync_payments}', false))
       OR (v_provider = 'quickbooks' AND ledgerflow.setting(p, '{sync_payments}', true))
       OR (v_provider = 'lightspeed_r' AND ledgerflow.setting(p, '{layaway_sales}', false)) THEN
        v_steps := v_steps || coalesce((
            SELECT jsonb_agg(ledgerflow.chain_step('payment ' || (x ->> 'payment_id'), 'push-payment',
                       v_base || jsonb_build_object('invoice_id', v_invoice, 'payment_id', x -> 'payment_id'),
                       v_key, v_hold, ARRAY[v_invoice_at]) ORDER BY n)
            FROM jsonb_array_elements(coalesce(s -> 'payments', '[]')) WITH ORDINALITY t(x, n)), '[]');
    END IF;
    RETURN v_steps;
END;
$$;

-- Record a host trigger on every connection of the tenant and start the
-- chain each sync needs, in the caller's transaction. Returns one element
-- per connection, oldest first: {connection_id, provider, event (as
-- record_trigger returns it), run_id (NULL when skipped), steps (names)}.
CREATE FUNCTION ledgerflow.on_host_trigger(
    tenant text, trigger text, snapshot jsonb, label text DEFAULT NULL, action_override boolean DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_snapshot jsonb;
    c ledgerflow.connections;
    v_event jsonb;
    v_steps jsonb;
    v_run bigint;
    v_job bigint;
    v_quiet record;
    v_out jsonb := '[]';
BEGIN
    PERFORM ledgerflow.check_host_trigger(on_host_trigger.trigger);
    v_snapshot := ledgerflow.check_snapshot(on_host_trigger.snapshot);
    IF NOT EXISTS (SELECT 1 FROM ledgerflow.tenants t WHERE t.id = on_host_trigger.tenant) THEN
        PERFORM ledgerflow.face_error('P0002', format('tenant %s does not exist', ledgerflow.rust_debug_text(on_host_trigger.tenant)),
            jsonb_build_object('kind', 'tenant_not_found', 'tenant', on_host_trigger.tenant));
    END IF;
    FOR c IN SELECT * FROM ledgerflow.connections x WHERE x.tenant_id = on_host_trigger.tenant ORDER BY x.id LOOP
        v_event := ledgerflow.ledger_record(c.id, on_host_trigger.trigger, on_host_trigger.label, v_snapshot,
                                            on_host_trigger.action_override, true);
        IF v_event ->> 'status' <> 'pending' THEN
            v_out := v_out || jsonb_build_array(jsonb_build_object('connection_id', c.id, 'provider', c.provider,
                'event', v_event, 'run_id', NULL, 'steps', '[]'::jsonb));
            CONTINUE;
        END IF;
        v_steps := ledgerflow.sync_chain_steps(c, on_host_trigger.trigger, v_snapshot);
        v_run := ledgerflow.start_workflow_run(
            format('%s on %s: invoice %s', ledgerflow.trigger_label(on_host_trigger.trigger),
                   ledgerflow.provider_display_name(c.provider), v_snapshot ->> 'number'),
            c.tenant_id, v_steps);
        -- The quiet period applies to the jobs the run's first steps went
        -- to; the later steps join the one delayed first job's successors.
        -- A void chain runs at once.
        v_quiet := ledgerflow.quiet_period(c.settings);
        FOR v_job IN SELECT DISTINCT job_id FROM ledgerflow.workflow_steps
                     WHERE run_id = v_run AND status = 'enqueued' AND job_id IS NOT NULL ORDER BY job_id LOOP
            IF on_host_trigger.trigger IN ('job_cancelled', 'job_rejected') THEN
                PERFORM ledgerflow.wake_unclaimed_job(v_job);
            ELSIF v_quiet.quiet_ms IS NOT NULL THEN
                PERFORM ledgerflow.hold_for_quiet_period(c.id, v_snapshot ->> 'invoice_id', v_job,
                                                         v_quiet.quiet_ms, v_quiet.max_wait_ms);
            END IF;
        END LOOP;
        UPDATE ledgerflow.sync_events SET workflow_run_id = v_run WHERE id = (v_event ->> 'event_id')::bigint;
        v_out := v_out || jsonb_build_array(jsonb_build_object('connection_id', c.id, 'provider', c.provider,
            'event', v_event, 'run_id', v_run,
            'steps', (SELECT jsonb_agg(x -> 'name' ORDER BY n) FROM jsonb_array_elements(v_steps) WITH ORDINALITY t(x, n))));
    END LOOP;
    RETURN v_out;
END;
$$;
