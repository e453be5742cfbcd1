-- Bad input gets a clear error (issue 19):
--
-- * ledgerflow.enqueue refuses NULL arguments (tenant, queue, kind_version)
--   by name instead of a raw not-null violation from the insert.
-- * provider_credentials keeps the fingerprint of the key that sealed each
--   row (a keyed hash, never the key), so a different LEDGERFLOW_SECRET_KEY
--   is refused before it seals or fails anything (workflows/src/key_check.rs).
-- * ledgerflow.workers: each running worker process, its queues and a
--   heartbeat, so a worker can warn about another live one with its
--   --worker-id, and about jobs waiting in queues no live worker serves.

ALTER TABLE ledgerflow.provider_credentials ADD COLUMN key_fingerprint text;

CREATE TABLE ledgerflow.workers (
    -- "<worker id>#<random>": one row per process lifetime.
    instance      text        PRIMARY KEY,
    worker_id     text        NOT NULL,
    host          text        NOT NULL,
    pid           integer     NOT NULL,
    queues        text[]      NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX workers_worker_id_idx ON ledgerflow.workers (worker_id);

CREATE OR REPLACE FUNCTION ledgerflow.enqueue(
    kind          text,
    payload       jsonb,
    queue         text        DEFAULT 'default',
    priority      smallint    DEFAULT 2,
    tenant        text        DEFAULT '',
    run_at        timestamptz DEFAULT NULL,
    unique_key    text        DEFAULT NULL,
    kind_version  integer     DEFAULT 1,
    hold_key      text        DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_id   bigint;
    v_key  bigint;
    v_due  boolean := run_at IS NULL OR run_at <= now();
BEGIN
    IF kind IS NULL OR kind = '' THEN
        RAISE EXCEPTION 'ledgerflow.enqueue: kind must not be empty'
            USING ERRCODE = '22023';
    END IF;
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        RAISE EXCEPTION 'ledgerflow.enqueue: payload must be a JSON object'
            USING ERRCODE = '22023';
    END IF;
    IF tenant IS NULL THEN
        RAISE EXCEPTION 'ledgerflow.enqueue: tenant must not be NULL (pass the tenant id, or leave it out for none)'
            USING ERRCODE = '22023';
    END IF;
    IF queue IS NULL OR queue = '' THEN
        RAISE EXCEPTION 'ledgerflow.enqueue: queue must not be NULL or empty (leave it out for ''default'')'
            USING ERRCODE = '22023';
    END IF;
    IF priority IS NULL OR priority NOT BETWEEN 1 AND 4 THEN
        RAISE EXCEPTION 'ledgerflow.enqueue: priority must be between 1 and 4, got %', coalesce(priority::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    IF kind_version IS NULL OR kind_version < 1 THEN
        RAISE EXCEPTION 'ledgerflow.enqueue: kind_version must be 1 or more, got %', coalesce(kind_version::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    -- A payload stamped with its own version ("v") must agree with kind_version.
    IF payload ? 'v' AND (payload -> 'v') IS DISTINCT FROM to_jsonb(kind_version) THEN
        RAISE EXCEPTION 'ledgerflow.enqueue: the payload says "v": % but kind_version is %', payload -> 'v', kind_version
            USING ERRCODE = '22023';
    END IF;

    v_key := ledgerflow.next_fair_key(enqueue.queue, enqueue.tenant, 1);

    LOOP
        INSERT INTO ledgerflow.jobs AS j (queue, kind, kind_version, payload, state, priority,
                                          tenant, fair_key, run_at, unique_key, hold_key)
        VALUES (enqueue.queue, enqueue.kind, enqueue.kind_version, enqueue.payload,
                CASE WHEN v_due THEN 'available' ELSE 'scheduled' END,
                enqueue.priority, enqueue.tenant, v_key, coalesce(enqueue.run_at, now()),
                enqueue.unique_key, enqueue.hold_key)
        ON CONFLICT (unique_key) WHERE state IN ('scheduled', 'available', 'held') DO NOTHING
        RETURNING j.id INTO v_id;

        IF v_id IS NOT NULL THEN
            IF v_due THEN
                PERFORM pg_notify('ledgerflow_jobs', enqueue.queue);
            END IF;
            RETURN v_id;
        END IF;

        SELECT j.id INTO v_id FROM ledgerflow.jobs j
        WHERE j.unique_key = enqueue.unique_key AND j.state IN ('scheduled', 'available', 'held');
        IF v_id IS NOT NULL THEN
            RETURN v_id;
        END IF;
        -- The holder of the key finished between our insert and select: try again.
    END LOOP;
END;
$$;
