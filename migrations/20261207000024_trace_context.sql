-- The host's trace context on its jobs: a host that sets
-- `ledgerflow.traceparent` (a W3C traceparent) for its transaction
-- (`SET LOCAL ledgerflow.traceparent = '00-...'`) stamps every job enqueued
-- in it, whatever path enqueues it (functions, COPY), through this default;
-- a worker exporting traces makes the job's span a child of that trace.
-- Never indexed, never updated: claims and completions stay HOT updates.
ALTER TABLE ledgerflow.jobs
    ADD COLUMN trace_parent text
    DEFAULT left(nullif(current_setting('ledgerflow.traceparent', true), ''), 128);
