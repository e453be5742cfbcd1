-- Workflow runs: a typed chain of steps, each step its own durable job.
--
-- A step is enqueued when every step it depends on has completed, by the
-- same statement that completes the last of them (the completion statement
-- calls ledgerflow.workflow_step_completed), so a crash between steps can
-- neither lose the next step nor enqueue it twice. A failed step blocks the
-- steps that depend on it, each saying which dependency failed and why;
-- retrying the failed step unblocks them.
--
-- Steps that share a job: a sync chain's invoice step carries the
-- invoice's queue key (sync:<connection>:<invoice>): the queue runs an
-- invoice's jobs one at a time and keeps at most one pending. When a step
-- is enqueued while a job with its key is pending, the step joins that job
-- instead of adding one: the pending job syncs the invoice's newest state,
-- which is what both steps ask for. So a step points at its job
-- (workflow_steps.job_id), many steps may point at one job, and
-- jobs.workflow_step_id only marks a job as carrying steps. A retry
-- superseded by a pending twin hands its steps to the twin
-- (ledgerflow.return_to_queue).

CREATE TABLE ledgerflow.workflow_runs (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL,
    tenant      text        NOT NULL DEFAULT '',
    -- running: steps still to do; completed: every step completed;
    -- failed: a step failed and the steps after it are blocked until it is retried.
    status      text        NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed', 'failed')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);

CREATE TABLE ledgerflow.workflow_steps (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id       bigint      NOT NULL REFERENCES ledgerflow.workflow_runs (id) ON DELETE CASCADE,
    position     integer     NOT NULL,
    name         text        NOT NULL,
    kind         text        NOT NULL,
    kind_version integer     NOT NULL,
    payload      jsonb       NOT NULL,
    queue        text        NOT NULL,
    priority     smallint    NOT NULL,
    hold_key     text,
    -- Positions (within the run) of the steps that must complete first.
    depends_on   integer[]   NOT NULL DEFAULT '{}',
    status       text        NOT NULL DEFAULT 'waiting'
                 CHECK (status IN ('waiting', 'enqueued', 'completed', 'failed', 'blocked')),
    job_id       bigint,
    -- Failed: the step's own error; blocked: which dependency failed and why.
    error        text,
    finished_at  timestamptz,
    -- The step's queue key, if any: the step joins a pending job that
    -- holds it.
    unique_key   text,
    UNIQUE (run_id, position)
);

CREATE INDEX workflow_steps_waiting_idx ON ledgerflow.workflow_steps (run_id) WHERE status IN ('waiting', 'blocked');
CREATE INDEX workflow_steps_job_idx ON ledgerflow.workflow_steps (job_id) WHERE status = 'enqueued';

-- Start a run in the caller's transaction: `steps` is an array of
-- {name, kind, kind_version, payload, queue, priority, hold_key,
-- unique_key, depends_on}; a step may only wait for earlier steps (else
-- ledgerflow.face_error raises 22023, invalid_workflow).
CREATE FUNCTION ledgerflow.start_workflow_run(p_name text, p_tenant text, p_steps jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_run bigint;
BEGIN
    IF jsonb_typeof(p_steps) IS DISTINCT FROM 'array' OR jsonb_array_length(p_steps) = 0 THEN
        PERFORM ledgerflow.face_error('22023', 'invalid workflow: a workflow needs at least one step',
                                      jsonb_build_object('kind', 'invalid_workflow'));
    END IF;
    IF EXISTS (SELECT 1 FROM jsonb_array_elements(p_steps) WITH ORDINALITY s(step, n),
                             jsonb_array_elements_text(coalesce(step -> 'depends_on', '[]')) d(dep)
               WHERE dep::integer < 0 OR dep::integer >= n - 1) THEN
        PERFORM ledgerflow.face_error('22023', 'invalid workflow: a step may only wait for earlier steps',
                                      jsonb_build_object('kind', 'invalid_workflow'));
    END IF;
    INSERT INTO ledgerflow.workflow_runs (name, tenant) VALUES (p_name, p_tenant) RETURNING id INTO v_run;
    INSERT INTO ledgerflow.workflow_steps
        (run_id, position, name, kind, kind_version, payload, queue, priority, hold_key, unique_key, depends_on)
    SELECT v_run, n - 1, step ->> 'name', step ->> 'kind', coalesce((step ->> 'kind_version')::integer, 1),
           step -> 'payload', coalesce(step ->> 'queue', 'default'), coalesce((step ->> 'priority')::smallint, 2),
           step ->> 'hold_key', step ->> 'unique_key',
           coalesce(ARRAY(SELECT jsonb_array_elements_text(step -> 'depends_on')::integer), '{}')
    FROM jsonb_array_elements(p_steps) WITH ORDINALITY s(step, n);
    PERFORM ledgerflow.enqueue_ready_steps(v_run);
    RETURN v_run;
END;
$$;

-- Enqueue every waiting step of the run whose dependencies have all
-- completed, joining a pending job with the step's key if there is one.
-- Returns how many were enqueued.
CREATE FUNCTION ledgerflow.enqueue_ready_steps(p_run_id bigint) RETURNS integer
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

-- The job marked by p_step_id completed: every step it carries completes.
-- Runs are locked in id order, so two completions never wait on each other
-- in opposite orders.
CREATE FUNCTION ledgerflow.workflow_step_completed(p_step_id bigint) RETURNS void
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

-- One step completed: the steps it unblocks are enqueued in the same
-- transaction, and the run completes with its last step. Steps of one run
-- complete in concurrent transactions: each must see the others'
-- completions before deciding what is ready (a fan-in step would otherwise
-- be left waiting), so they take the run's row lock in turn; the
-- statements after the lock read with a fresh snapshot.
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

-- The job marked by p_step_id failed for good: every step it carries fails.
CREATE FUNCTION ledgerflow.workflow_step_failed(p_step_id bigint, p_message text) RETURNS void
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

-- One step failed for good: the steps that depend on it, directly or not,
-- are blocked with the reason, and the run is failed until the step is
-- retried. The run's row lock orders this against concurrent completions.
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

-- Run a failed step again (a new job); the steps it blocked wait for it again.
-- Returns the new job's id, or NULL when the step is not failed.
CREATE FUNCTION ledgerflow.retry_workflow_step(p_run_id bigint, p_position integer) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_step ledgerflow.workflow_steps;
BEGIN
    PERFORM 1 FROM ledgerflow.workflow_runs WHERE id = p_run_id FOR UPDATE;
    UPDATE ledgerflow.workflow_steps SET status = 'waiting', error = NULL, finished_at = NULL
    WHERE run_id = p_run_id AND position = p_position AND status = 'failed'
    RETURNING * INTO v_step;
    IF v_step.id IS NULL THEN
        RETURN NULL;
    END IF;
    UPDATE ledgerflow.workflow_steps SET status = 'waiting', error = NULL
    WHERE run_id = p_run_id AND status = 'blocked';
    -- Blocked by another step that is still failed: block them again.
    UPDATE ledgerflow.workflow_runs SET status = 'running', finished_at = NULL WHERE id = p_run_id;
    PERFORM ledgerflow.enqueue_ready_steps(p_run_id);
    PERFORM ledgerflow.workflow_step_failed_again(p_run_id);
    RETURN (SELECT job_id FROM ledgerflow.workflow_steps WHERE id = v_step.id);
END;
$$;

-- After a retry unblocked everything: steps that still depend on another
-- failed step go back to blocked, and the run stays failed.
CREATE FUNCTION ledgerflow.workflow_step_failed_again(p_run_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_failed ledgerflow.workflow_steps;
BEGIN
    FOR v_failed IN
        SELECT * FROM ledgerflow.workflow_steps WHERE run_id = p_run_id AND status = 'failed'
    LOOP
        WITH RECURSIVE downstream AS (
            SELECT s.position FROM ledgerflow.workflow_steps s
            WHERE s.run_id = p_run_id AND v_failed.position = ANY (s.depends_on)
            UNION
            SELECT s.position FROM ledgerflow.workflow_steps s JOIN downstream d ON d.position = ANY (s.depends_on)
            WHERE s.run_id = p_run_id
        )
        UPDATE ledgerflow.workflow_steps s
        SET status = 'blocked',
            error = format('waiting for step %s (%s), which failed: %s', v_failed.position, v_failed.name, v_failed.error)
        WHERE s.run_id = p_run_id AND s.status = 'waiting' AND s.position IN (SELECT position FROM downstream);
        UPDATE ledgerflow.workflow_runs SET status = 'failed' WHERE id = p_run_id;
    END LOOP;
END;
$$;
