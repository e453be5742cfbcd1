-- QuickBooks timesheets: approved timesheets' entries become TimeActivity
-- for the QuickBooks Employee each host member is mapped to.
--
--   ledgerflow.employee_mappings      host member -> QuickBooks Employee, per connection
--   ledgerflow.timesheet_entries      each entry of an approved timesheet and what became of it
--   ledgerflow.payroll_missing        "this company has no QuickBooks Payroll", once per connection
--   ledgerflow.on_timesheet_approved(connection_id, timesheet)
--                                     the host's trigger (SQL face; the Rust client calls it too)
--
-- The rules of what syncs live in on_timesheet_approved (settings, only
-- approved timesheets, the start date) and in workflows::timesheets (the
-- mapping, Payroll); the job `sync-time-activity` carries ids only.

CREATE TABLE ledgerflow.employee_mappings (
    connection_id bigint      NOT NULL REFERENCES ledgerflow.connections (id) ON DELETE CASCADE,
    member_id     text        NOT NULL CHECK (member_id <> ''),
    -- As the host names the member (shown in skip reasons and listings).
    member_name   text        NOT NULL,
    -- The QuickBooks Employee's Id.
    employee_id   text        NOT NULL CHECK (employee_id <> ''),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection_id, member_id)
);

COMMENT ON TABLE ledgerflow.employee_mappings IS
    'Which QuickBooks Employee a host team member''s time is logged for, per connection; a member without a row has their entries skipped with the reason.';

CREATE TABLE ledgerflow.timesheet_entries (
    connection_id bigint      NOT NULL REFERENCES ledgerflow.connections (id) ON DELETE CASCADE,
    timesheet_id  text        NOT NULL,
    entry_id      text        NOT NULL,
    member_id     text        NOT NULL,
    member_name   text        NOT NULL,
    work_date     date        NOT NULL,
    minutes       integer     NOT NULL CHECK (minutes > 0 AND minutes <= 1440),
    description   text,
    status        text        NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'synced', 'skipped', 'failed')),
    -- Why it was skipped or failed, in words for people.
    reason        text,
    -- The TimeActivity's Id once synced.
    external_id   text,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection_id, timesheet_id, entry_id)
);

CREATE INDEX timesheet_entries_pending_idx ON ledgerflow.timesheet_entries (connection_id, timesheet_id)
    WHERE status = 'pending';

CREATE TABLE ledgerflow.payroll_missing (
    connection_id bigint      PRIMARY KEY REFERENCES ledgerflow.connections (id) ON DELETE CASCADE,
    message       text        NOT NULL,
    -- The Fault QuickBooks answered, as it came.
    raw           text,
    detected_at   timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE ledgerflow.payroll_missing IS
    'QuickBooks answered that the company has no Payroll: timesheet entries of the connection fail with this message without calling QuickBooks again, until an operator clears it.';

-- The host approved a timesheet: records its entries and enqueues one
-- `sync-time-activity` job, in the caller's transaction. The timesheet:
--   {"timesheet_id", "member_id", "member_name", "status": "approved",
--    "entries": [{"entry_id", "date": "YYYY-MM-DD", "minutes", "description"?,
--                 "member_id"?, "member_name"?}]}
-- (an entry's member, when given, is another than the timesheet's: a
-- shop's weekly timesheet holds everyone's hours).
-- Returns {"job_id", "entries", "skipped": [{entry_id, reason}]} or
-- {"skipped_reason"} when nothing syncs (settings off, not approved).
-- A timesheet approved again re-records its entries: one synced stays
-- synced (its TimeActivity exists), the others are tried again.
CREATE FUNCTION ledgerflow.on_timesheet_approved(p_connection_id bigint, p_timesheet jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    c          ledgerflow.connections%ROWTYPE;
    v_ts       text := p_timesheet ->> 'timesheet_id';
    v_member   text := p_timesheet ->> 'member_id';
    v_name     text := coalesce(nullif(p_timesheet ->> 'member_name', ''), p_timesheet ->> 'member_id');
    v_start    date;
    v_entry    jsonb;
    v_date     date;
    v_minutes  integer;
    v_skipped  jsonb := '[]'::jsonb;
    v_count    integer := 0;
    v_job      bigint;
BEGIN
    SELECT * INTO c FROM ledgerflow.connections WHERE id = p_connection_id;
    IF NOT FOUND THEN
        PERFORM ledgerflow.face_error('P0002', format('connection %s does not exist', p_connection_id),
            jsonb_build_object('kind', 'connection_not_found', 'connection_id', p_connection_id));
    END IF;
    IF c.provider <> 'quickbooks' THEN
        PERFORM ledgerflow.face_error('22023',
            format('timesheets sync to QuickBooks only; connection %s is %s', c.id, ledgerflow.provider_display_name(c.provider)),
            jsonb_build_object('kind', 'invalid', 'field', 'connection_id'));
    END IF;
    IF jsonb_typeof(p_timesheet) IS DISTINCT FROM 'object' OR ledgerflow.blank(v_ts) OR ledgerflow.blank(v_member)
       OR jsonb_typeof(p_timesheet -> 'entries') IS DISTINCT FROM 'array' THEN
        PERFORM ledgerflow.face_error('22023',
            'a timesheet needs timesheet_id, member_id and an entries array',
            jsonb_build_object('kind', 'invalid', 'field', 'timesheet'));
    END IF;
    IF coalesce(p_timesheet ->> 'status', '') <> 'approved' THEN
        RETURN jsonb_build_object('skipped_reason', 'only approved timesheets sync');
    END IF;
    IF NOT ledgerflow.setting(c.settings, '{provider,sync_enabled}', true) THEN
        RETURN jsonb_build_object('skipped_reason', 'QuickBooks sync is off for this connection ("Enable Sync")');
    END IF;
    IF NOT ledgerflow.setting(c.settings, '{provider,sync_timesheets}', false) THEN
        RETURN jsonb_build_object('skipped_reason', 'timesheet sync is off for this connection');
    END IF;
    IF c.status = 'disabled' THEN
        RETURN jsonb_build_object('skipped_reason', 'the connection is disabled');
    END IF;
    v_start := (c.settings #>> '{provider,timesheet_start_date}')::date;
    FOR v_entry IN SELECT * FROM jsonb_array_elements(p_timesheet -> 'entries') LOOP
        IF ledgerflow.blank(v_entry ->> 'entry_id') OR (v_entry ->> 'date') IS NULL
           OR jsonb_typeof(v_entry -> 'minutes') IS DISTINCT FROM 'number' THEN
            PERFORM ledgerflow.face_error('22023',
                'each timesheet entry needs entry_id, date and minutes',
                jsonb_build_object('kind', 'invalid', 'field', 'entries'));
        END IF;
        BEGIN
            v_date := (v_entry ->> 'date')::date;
        EXCEPTION WHEN others THEN
            PERFORM ledgerflow.face_error('22023',
                format('timesheet entry %s: %s is not a date (YYYY-MM-DD)', v_entry ->> 'entry_id', v_entry ->> 'date'),
                jsonb_build_object('kind', 'invalid', 'field', 'entries.date'));
        END;
        v_minutes := (v_entry ->> 'minutes')::numeric::integer;
        IF v_minutes <= 0 OR v_minutes > 1440 THEN
            PERFORM ledgerflow.face_error('22023',
                format('timesheet entry %s: %s minutes is not within one day', v_entry ->> 'entry_id', v_minutes),
                jsonb_build_object('kind', 'invalid', 'field', 'entries.minutes'));
        END IF;
        INSERT INTO ledgerflow.timesheet_entries AS t
            (connection_id, timesheet_id, entry_id, member_id, member_name, work_date, minutes, description,
             status, reason)
        VALUES (c.id, v_ts, v_entry ->> 'entry_id',
                coalesce(nullif(v_entry ->> 'member_id', ''), v_member),
                coalesce(nullif(v_entry ->> 'member_name', ''), nullif(v_entry ->> 'member_id', ''), v_name),
                v_date, v_minutes,
                v_entry ->> 'description',
                CASE WHEN v_start IS NOT NULL AND v_date < v_start THEN 'skipped' ELSE 'pending' END,
                CASE WHEN v_start IS NOT NULL AND v_date < v_start
                     THEN format('before the timesheet sync start date %s', v_start) END)
        ON CONFLICT (connection_id, timesheet_id, entry_id) DO UPDATE
            SET member_id = excluded.member_id, member_name = excluded.member_name,
                work_date = excluded.work_date, minutes = excluded.minutes,
                description = excluded.description, status = excluded.status,
                reason = excluded.reason, updated_at = now()
            WHERE t.status <> 'synced';
        IF v_start IS NOT NULL AND v_date < v_start THEN
            v_skipped := v_skipped || jsonb_build_object('entry_id', v_entry ->> 'entry_id',
                'reason', format('before the timesheet sync start date %s', v_start));
        ELSE
            v_count := v_count + 1;
        END IF;
    END LOOP;
    IF v_count > 0 THEN
        v_job := ledgerflow.enqueue(
            kind => 'sync-time-activity',
            payload => jsonb_build_object('tenant', c.tenant_id, 'connection_id', c.id, 'timesheet_id', v_ts),
            queue => 'default', priority => 2::smallint, tenant => c.tenant_id,
            unique_key => format('time:%s:%s', c.id, v_ts), kind_version => 1,
            hold_key => format('connection:%s', c.id));
    END IF;
    RETURN jsonb_build_object('job_id', v_job, 'entries', v_count, 'skipped', v_skipped);
END;
$$;
