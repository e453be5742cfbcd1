-- The operator console: the audit log of operator actions, paused
-- connections' hold (the pauses are `ledgerflow.connection_pauses`, with
-- the ledger; paused queues are the queue's own `ledgerflow.queue_pauses`),
-- and indexes for the console's lists of failed and cancelled jobs and its
-- last hour of finished jobs.
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
