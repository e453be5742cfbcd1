-- Live jobs counted by (queue, kind, state), kept by the jobs table's own
-- writes, so `GET /metrics`, the console's overview and `queue list` read
-- a few small rows instead of scanning `ledgerflow.jobs`.
--
-- Every statement that inserts, updates or deletes jobs (the queue's
-- functions, the worker's claims and completions, an operator's retry or
-- delete, a host's raw SQL or COPY) fires a statement-level trigger that
-- appends its net change per (queue, kind, state) to
-- `ledgerflow.job_count_deltas`, in the statement's own transaction: a
-- snapshot that sees a job change sees its delta, so at every snapshot
--
--     sum(job_counts.n) + sum(job_count_deltas.n) = count(*) of the jobs
--
-- per (queue, kind, state). The deltas are appended, never updated: a
-- single counter row per (queue, kind, state) would be locked by every
-- claim and completion until its transaction commits, making the workers
-- take turns, and under a long-open snapshot (no vacuum can clear it) each
-- update would walk a longer chain of dead versions of that row. An insert
-- into a table without indexes waits on nothing.
--
-- `ledgerflow.fold_job_counts()` moves the deltas into `job_counts` (one
-- statement: the deltas it deletes are the ones it adds), run by each
-- worker every few seconds and by a metrics read, so the deltas stay few.
-- `ledgerflow.live_job_counts()` is the sum of both.

CREATE TABLE ledgerflow.job_counts (
    queue text   NOT NULL,
    kind  text   NOT NULL,
    state text   NOT NULL,
    n     bigint NOT NULL,
    PRIMARY KEY (queue, kind, state)
);

-- Appended by the triggers below; no index, so an append costs no lookup.
CREATE TABLE ledgerflow.job_count_deltas (
    queue text   NOT NULL,
    kind  text   NOT NULL,
    state text   NOT NULL,
    n     bigint NOT NULL
);

CREATE FUNCTION ledgerflow.job_counts_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledgerflow.job_count_deltas (queue, kind, state, n)
    SELECT queue, kind, state, count(*) FROM new_jobs GROUP BY 1, 2, 3;
    RETURN NULL;
END;
$$;

-- An update that leaves every row's (queue, kind, state) as it was (a
-- lease renewed, an error appended) nets to nothing and appends nothing.
CREATE FUNCTION ledgerflow.job_counts_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledgerflow.job_count_deltas (queue, kind, state, n)
    SELECT queue, kind, state, sum(d)
    FROM (SELECT queue, kind, state, -1 AS d FROM old_jobs
          UNION ALL
          SELECT queue, kind, state, 1 AS d FROM new_jobs) AS changed
    GROUP BY 1, 2, 3
    HAVING sum(d) <> 0;
    RETURN NULL;
END;
$$;

CREATE FUNCTION ledgerflow.job_counts_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledgerflow.job_count_deltas (queue, kind, state, n)
    SELECT queue, kind, state, -count(*) FROM old_jobs GROUP BY 1, 2, 3;
    RETURN NULL;
END;
$$;

-- A TRUNCATE has no transition table; it empties the jobs, so the counts too.
CREATE FUNCTION ledgerflow.job_counts_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM ledgerflow.job_count_deltas;
    DELETE FROM ledgerflow.job_counts;
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_count_insert AFTER INSERT ON ledgerflow.jobs
    REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION ledgerflow.job_counts_inserted();
CREATE TRIGGER jobs_count_update AFTER UPDATE ON ledgerflow.jobs
    REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION ledgerflow.job_counts_updated();
CREATE TRIGGER jobs_count_delete AFTER DELETE ON ledgerflow.jobs
    REFERENCING OLD TABLE AS old_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION ledgerflow.job_counts_deleted();
CREATE TRIGGER jobs_count_truncate AFTER TRUNCATE ON ledgerflow.jobs
    FOR EACH STATEMENT EXECUTE FUNCTION ledgerflow.job_counts_truncated();

-- Move the deltas into `job_counts`; returns how many delta rows it
-- folded. One fold at a time (another caller skips: the deltas it would
-- fold are read with the counts anyway). Counts that reach zero are
-- deleted so finished kinds and queues leave no rows.
CREATE FUNCTION ledgerflow.fold_job_counts() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_folded bigint;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('ledgerflow.job_counts')) THEN
        RETURN 0;
    END IF;
    WITH taken AS (
        DELETE FROM ledgerflow.job_count_deltas RETURNING queue, kind, state, n
    ), summed AS (
        SELECT queue, kind, state, sum(n)::bigint AS n, count(*) AS rows
        FROM taken GROUP BY 1, 2, 3
    ), added AS (
        INSERT INTO ledgerflow.job_counts AS c (queue, kind, state, n)
        SELECT queue, kind, state, n FROM summed WHERE n <> 0
        ON CONFLICT (queue, kind, state) DO UPDATE SET n = c.n + EXCLUDED.n
    )
    SELECT coalesce(sum(rows), 0) INTO v_folded FROM summed;
    DELETE FROM ledgerflow.job_counts WHERE n = 0;
    RETURN v_folded;
END;
$$;

-- Live jobs by (queue, kind, state), as `count(*) ... GROUP BY` over
-- `ledgerflow.jobs` would say, read from the counts and the unfolded deltas.
CREATE FUNCTION ledgerflow.live_job_counts()
RETURNS TABLE (queue text, kind text, state text, n bigint)
LANGUAGE sql STABLE AS $$
    SELECT queue, kind, state, sum(n)::bigint
    FROM (SELECT queue, kind, state, n FROM ledgerflow.job_counts
          UNION ALL
          SELECT queue, kind, state, n FROM ledgerflow.job_count_deltas) AS both_parts
    GROUP BY 1, 2, 3
    HAVING sum(n) <> 0
    ORDER BY 1, 2, 3
$$;

-- The jobs already live when this migration runs. The triggers above were
-- created in this transaction, which holds a lock on the jobs table that
-- every writer waits on until it commits: no change falls between.
INSERT INTO ledgerflow.job_counts (queue, kind, state, n)
SELECT queue, kind, state, count(*) FROM ledgerflow.jobs GROUP BY 1, 2, 3;

COMMENT ON TABLE ledgerflow.job_counts IS
    'Live jobs by queue, kind and state (with ledgerflow.job_count_deltas); read through ledgerflow.live_job_counts().';
