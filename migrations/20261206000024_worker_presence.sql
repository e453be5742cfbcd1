-- The worker processes that are running, and the providers each cannot
-- serve (no app configured in that process). A worker claims only the jobs
-- it can run; the sync dialog reads this table to say why a pending sync
-- waits when no running worker can run it.

CREATE TABLE ledgerflow.workers (
    -- The process's instance id (`--worker-id` plus a random suffix).
    instance      text        PRIMARY KEY,
    worker_name   text        NOT NULL,
    host          text        NOT NULL,
    pid           integer     NOT NULL,
    queues        text[]      NOT NULL,
    -- Providers whose jobs this process leaves to others.
    cannot_serve  text[]      NOT NULL DEFAULT '{}',
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX workers_name_idx ON ledgerflow.workers (worker_name);

-- Whether a running worker (heartbeat within `p_within`) can run jobs of
-- `p_provider`; NULL when no worker is running at all.
CREATE FUNCTION ledgerflow.provider_has_worker(p_provider text, p_within interval DEFAULT interval '60 seconds')
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN count(*) = 0 THEN NULL
                ELSE bool_or(NOT (p_provider = ANY (cannot_serve))) END
    FROM ledgerflow.workers
    WHERE heartbeat_at > now() - p_within
$$;
