-- Sync chains: events written by chain steps that are not invoice writes.
--
-- payment: a push-payment step applied (or reversed) payments on the linked record;
-- complete_draft: a complete-draft step turned the linked draft into a paid order.
-- Both are written as finished events by their step, never left pending, so
-- the invoice's sync job (which picks the newest open event) never sees them.
ALTER TABLE ledgerflow.sync_events DROP CONSTRAINT IF EXISTS sync_events_operation_check;
ALTER TABLE ledgerflow.sync_events ADD CONSTRAINT sync_events_operation_check
    CHECK (operation IN ('upsert', 'send_as_new', 'void', 'payment', 'complete_draft'));

-- The run a sync event belongs to, when a host trigger started a chain for
-- it: the dialog shows which step the event waits for.
ALTER TABLE ledgerflow.sync_events ADD COLUMN workflow_run_id bigint;

-- Steps that share a job.
--
-- A sync chain's invoice step carries the invoice's queue key
-- (sync:<connection>:<invoice>): the queue runs an invoice's jobs one at a
-- time and keeps at most one pending. When a step is enqueued while a job
-- with its key is pending, the step joins that job instead of adding one:
-- the pending job syncs the invoice's newest state, which is what both
-- steps ask for. So a step points at its job (workflow_steps.job_id), many
-- steps may point at one job, and jobs.workflow_step_id only marks a job
-- as carrying steps. A retry superseded by a pending twin hands its steps
-- to the twin.
ALTER TABLE ledgerflow.workflow_steps ADD COLUMN unique_key text;
CREATE INDEX workflow_steps_job_idx ON ledgerflow.workflow_steps (job_id) WHERE status = 'enqueued';

CREATE OR REPLACE FUNCTION ledgerflow.enqueue_ready_steps(p_run_id bigint) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_step  ledgerflow.workflow_steps;
    v_job   bigint;
    v_count integer := 0;
    v_tenant text;
BEGIN
    SELECT tenant INTO v_tenant FROM ledgerflow.workflow_runs WHERE id = p_run_id;
    FOR v_step IN
        SELECT s.* FROM ledgerflow.workflow_steps s
        WHERE s.run_id = p_run_id AND s.status = 'waiting'
          AND NOT EXISTS (
              SELECT 1 FROM ledgerflow.workflow_steps d
              WHERE d.run_id = p_run_id AND d.position = ANY (s.depends_on) AND d.status <> 'completed')
        ORDER BY s.position
        FOR UPDATE
    LOOP
        v_job := ledgerflow.enqueue(kind => v_step.kind, payload => v_step.payload, queue => v_step.queue,
                                    priority => v_step.priority, tenant => v_tenant,
                                    kind_version => v_step.kind_version, hold_key => v_step.hold_key,
                                    unique_key => v_step.unique_key);
        UPDATE ledgerflow.jobs SET workflow_step_id = coalesce(workflow_step_id, v_step.id) WHERE id = v_job;
        UPDATE ledgerflow.workflow_steps SET status = 'enqueued', job_id = v_job, error = NULL WHERE id = v_step.id;
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END;
$$;

-- One step completed (the body of the earlier workflow_step_completed).
CREATE FUNCTION ledgerflow.workflow_one_step_completed(p_step_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_run bigint;
BEGIN
    SELECT run_id INTO v_run FROM ledgerflow.workflow_steps WHERE id = p_step_id;
    IF v_run IS NULL THEN
        RETURN;
    END IF;
    PERFORM 1 FROM ledgerflow.workflow_runs WHERE id = v_run FOR UPDATE;
    UPDATE ledgerflow.workflow_steps SET status = 'completed', finished_at = now(), error = NULL
    WHERE id = p_step_id AND status = 'enqueued';
    IF NOT FOUND THEN
        RETURN;
    END IF;
    PERFORM ledgerflow.enqueue_ready_steps(v_run);
    UPDATE ledgerflow.workflow_runs SET status = 'completed', finished_at = now()
    WHERE id = v_run AND NOT EXISTS (
        SELECT 1 FROM ledgerflow.workflow_steps WHERE run_id = v_run AND status <> 'completed');
END;
$$;

-- The job marked by p_step_id completed: every step it carries completes.
-- Runs are locked in id order, so two completions never wait on each other
-- in opposite orders.
CREATE OR REPLACE FUNCTION ledgerflow.workflow_step_completed(p_step_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_job  bigint;
    v_step bigint;
BEGIN
    SELECT job_id INTO v_job FROM ledgerflow.workflow_steps WHERE id = p_step_id;
    IF v_job IS NULL THEN
        RETURN;
    END IF;
    FOR v_step IN
        SELECT id FROM ledgerflow.workflow_steps WHERE job_id = v_job AND status = 'enqueued'
        ORDER BY run_id, id
    LOOP
        PERFORM ledgerflow.workflow_one_step_completed(v_step);
    END LOOP;
END;
$$;

-- One step failed for good (the body of the earlier workflow_step_failed).
CREATE FUNCTION ledgerflow.workflow_one_step_failed(p_step_id bigint, p_message text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_step ledgerflow.workflow_steps;
BEGIN
    PERFORM 1 FROM ledgerflow.workflow_runs r JOIN ledgerflow.workflow_steps st ON st.run_id = r.id
    WHERE st.id = p_step_id FOR UPDATE OF r;
    UPDATE ledgerflow.workflow_steps SET status = 'failed', error = p_message, finished_at = now()
    WHERE id = p_step_id AND status = 'enqueued'
    RETURNING * INTO v_step;
    IF v_step.id IS NULL THEN
        RETURN;
    END IF;
    WITH RECURSIVE downstream AS (
        SELECT s.position FROM ledgerflow.workflow_steps s
        WHERE s.run_id = v_step.run_id AND v_step.position = ANY (s.depends_on)
        UNION
        SELECT s.position FROM ledgerflow.workflow_steps s JOIN downstream d ON d.position = ANY (s.depends_on)
        WHERE s.run_id = v_step.run_id
    )
    UPDATE ledgerflow.workflow_steps s
    SET status = 'blocked',
        error = format('waiting for step %s (%s), which failed: %s', v_step.position, v_step.name, p_message)
    WHERE s.run_id = v_step.run_id AND s.status IN ('waiting', 'blocked')
      AND s.position IN (SELECT position FROM downstream);
    UPDATE ledgerflow.workflow_runs SET status = 'failed' WHERE id = v_step.run_id;
END;
$$;

-- The job marked by p_step_id failed for good: every step it carries fails.
CREATE OR REPLACE FUNCTION ledgerflow.workflow_step_failed(p_step_id bigint, p_message text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_job  bigint;
    v_step bigint;
BEGIN
    SELECT job_id INTO v_job FROM ledgerflow.workflow_steps WHERE id = p_step_id;
    IF v_job IS NULL THEN
        RETURN;
    END IF;
    FOR v_step IN
        SELECT id FROM ledgerflow.workflow_steps WHERE job_id = v_job AND status = 'enqueued'
        ORDER BY run_id, id
    LOOP
        PERFORM ledgerflow.workflow_one_step_failed(v_step, p_message);
    END LOOP;
END;
$$;

-- As before, and: a retry superseded by its pending twin hands the steps it
-- carries to the twin, which then completes them.
CREATE OR REPLACE FUNCTION ledgerflow.return_to_queue(
    p_id         bigint,
    p_claim      integer,
    p_state      text,
    p_run_at     timestamptz,
    p_refund     boolean,
    p_rate_ms    bigint,
    p_errors     jsonb
) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_key   text;
    v_queue text;
    v_twin  bigint;
BEGIN
    SELECT unique_key, queue INTO v_key, v_queue FROM ledgerflow.jobs
    WHERE id = p_id AND claim_count = p_claim AND state = 'running'
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'fenced';
    END IF;
    IF v_key IS NOT NULL THEN
        SELECT id INTO v_twin FROM ledgerflow.jobs
        WHERE unique_key = v_key AND state IN ('scheduled', 'available', 'held');
    END IF;
    IF v_twin IS NULL THEN
        BEGIN
            UPDATE ledgerflow.jobs
            SET state = p_state, run_at = coalesce(p_run_at, now()),
                attempt = CASE WHEN p_refund THEN greatest(attempt - 1, 0) ELSE attempt END,
                rate_limited_ms = rate_limited_ms + coalesce(p_rate_ms, 0),
                worker_id = NULL, lease_expires_at = NULL,
                errors = errors || coalesce(p_errors, '[]'::jsonb)
            WHERE id = p_id;
            IF p_state = 'available' OR v_key IS NOT NULL THEN
                PERFORM pg_notify('ledgerflow_jobs', v_queue);
            END IF;
            RETURN 'returned';
        EXCEPTION WHEN unique_violation THEN
            -- A pending twin was enqueued meanwhile.
            SELECT id INTO v_twin FROM ledgerflow.jobs
            WHERE unique_key = v_key AND state IN ('scheduled', 'available', 'held');
        END;
    END IF;
    WITH moved AS (
        UPDATE ledgerflow.workflow_steps SET job_id = v_twin
        WHERE job_id = p_id AND status = 'enqueued'
        RETURNING id
    )
    UPDATE ledgerflow.jobs SET workflow_step_id = coalesce(workflow_step_id, (SELECT min(id) FROM moved))
    WHERE id = v_twin;
    PERFORM ledgerflow.finish_job(p_id, 'cancelled',
        coalesce(p_errors, '[]'::jsonb) || jsonb_build_array(jsonb_build_object(
            'attempt', (SELECT attempt FROM ledgerflow.jobs WHERE id = p_id), 'at', now(),
            'class', 'superseded', 'message', 'superseded by job ' || v_twin)));
    RETURN 'superseded';
END;
$$;

-- A payment's link remembers the invoice it was applied to: a payment the
-- host deleted from that invoice is found by it and reversed.
ALTER TABLE ledgerflow.links ADD COLUMN invoice_id text;
CREATE INDEX links_payments_of_invoice_idx ON ledgerflow.links (connection_id, invoice_id)
    WHERE entity_type = 'payment';
-- ... and its amount, to show what a reversal took back.
ALTER TABLE ledgerflow.links ADD COLUMN amount_minor bigint;
