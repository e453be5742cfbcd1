-- Periodic jobs: one row per (schedule, key, tick). A worker process enqueues
-- a tick's job only if it inserted the tick's row, in the same transaction,
-- so however many processes run, each tick fires once.
CREATE TABLE ledgerflow.cron_ticks (
    schedule   text        NOT NULL,
    key        text        NOT NULL DEFAULT '',
    tick_at    timestamptz NOT NULL,
    job_id     bigint,
    fired_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule, key, tick_at)
);
