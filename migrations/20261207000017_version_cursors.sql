-- Version cursors: how far a connection's version-ordered change feed
-- has been read (Lightspeed X-Series' `GET /2.0/sales?after=<version>`).
--
-- Beside `ledgerflow.inbound_cursors` (an instant, for feeds read by
-- time: Xero, QuickBooks) because a version is not a time: it is exact,
-- provider-assigned and only comparable within one connection's feed.
-- Written in the transaction that records the inbound events of what was
-- read, so a poll that dies re-reads, and repeats are deduplicated.
CREATE TABLE ledgerflow.inbound_version_cursors (
    connection_id bigint      PRIMARY KEY REFERENCES ledgerflow.connections (id) ON DELETE CASCADE,
    -- Changes up to and including this version have been read.
    version       bigint      NOT NULL CHECK (version >= 0),
    polled_at     timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE ledgerflow.inbound_version_cursors IS
    'How far each connection''s version-ordered change feed has been read (Lightspeed X-Series sales).';
