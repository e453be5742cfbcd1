-- The worker processes: who is running, and the periodic jobs they fire.

-- Each running worker process, its queues and a heartbeat, so a worker can
-- warn about another live one with its --worker-id, and about jobs waiting
-- in queues no live worker serves.
CREATE TABLE ledgerflow.workers (
    -- "<worker id>#<random>": one row per process lifetime.
    instance      text        PRIMARY KEY,
    worker_id     text        NOT NULL,
    host          text        NOT NULL,
    pid           integer     NOT NULL,
    queues        text[]      NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    -- Providers the process cannot serve (no app configured in it): it
    -- claims only the jobs it can run, and the sync dialog says why a
    -- pending sync waits when no running worker can run it.
    cannot_serve  text[]      NOT NULL DEFAULT '{}'
);

CREATE INDEX workers_worker_id_idx ON ledgerflow.workers (worker_id);

-- Whether a running worker (heartbeat within `p_within`, the presence
-- service's LIVE_WITHIN) can run jobs of `p_provider`; NULL when no worker
-- is running at all.
CREATE FUNCTION ledgerflow.provider_has_worker(p_provider text, p_within interval DEFAULT interval '30 seconds')
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN count(*) = 0 THEN NULL
                ELSE bool_or(NOT (p_provider = ANY (cannot_serve))) END
    FROM ledgerflow.workers
    WHERE heartbeat_at > now() - p_within
$$;

-- Periodic jobs: one row per (schedule, key, tick). A worker process enqueues
-- a tick's job only if it inserted the tick's row, in the same transaction,
-- so however many processes run, each tick fires once.
CREATE TABLE ledgerflow.cron_ticks (
    schedule   text        NOT NULL,
    key        text        NOT NULL DEFAULT '',
    tick_at    timestamptz NOT NULL,
    job_id     bigint,
    fired_at   timestamptz NOT NULL DEFAULT now(),
    -- When the schedule fires next for this key (or, where a key is one
    -- tick's, such as an end-of-day summary's date, for its successor), as
    -- the schedule computed it when firing: the console shows it.
    next_tick_at timestamptz,
    PRIMARY KEY (schedule, key, tick_at)
);
