-- Which providers each running worker cannot serve (no app configured in
-- that process). A worker claims only the jobs it can run; the sync dialog
-- reads this to say why a pending sync waits when no running worker can
-- run it.

ALTER TABLE ledgerflow.workers ADD COLUMN cannot_serve text[] NOT NULL DEFAULT '{}';

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
