-- Single-invoice sync (issue 24): tax code overrides per connection, what
-- a re-sync of one invoice did besides the push, and the dialog's lock on
-- an invoice whose payment is synced. The rules are workflows'
-- `tax_codes` and `resync` modules and the SQL functions below.

-- A person's choice of the provider's tax type for a host tax code
-- (`ledgerflow connection map-tax`): used at push time before the
-- connection's configured map and before a match by equal rate.
CREATE TABLE ledgerflow.tax_code_overrides (
    connection_id       bigint      NOT NULL REFERENCES ledgerflow.connections (id) ON DELETE CASCADE,
    tenant_id           text        NOT NULL,
    host_tax_code       text        NOT NULL CHECK (host_tax_code <> ''),
    provider_tax_type   text        NOT NULL CHECK (provider_tax_type <> ''),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection_id, host_tax_code)
);

-- A re-sync's steps before the push (new accounts and tax rates imported,
-- items exported, the provider's invoice and payments read) and what they
-- found: payments our links hold that the provider no longer lists.
ALTER TABLE ledgerflow.sync_events ADD COLUMN resync_report jsonb;

-- ---------------------------------------------------------------------
-- The lock on an invoice with a synced payment, where the provider
-- refuses edits of an invoice that has a payment: Xero (its seed's
-- dialog forbids them too). Its lines, discount and synced payments are
-- locked; payments may still be added until the balance is 0. QuickBooks
-- edits a paid invoice (under its SyncToken), so its invoices are not
-- locked: a lock there would only lose edits the provider takes.
-- ---------------------------------------------------------------------

-- The invoice's lock as the dialog shows it, or NULL when it has no
-- synced payment on this connection.
CREATE FUNCTION ledgerflow.invoice_lock(p_connection_id bigint, p_invoice_id text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    WITH synced AS (
        SELECT pl.payment_id, pl.amount_minor FROM ledgerflow.payment_links pl
        WHERE pl.connection_id = p_connection_id AND pl.invoice_id = p_invoice_id
    ), doc AS (
        SELECT s.latest_snapshot AS snap FROM ledgerflow.invoice_sync s
        WHERE s.connection_id = p_connection_id AND s.invoice_id = p_invoice_id
    ), money AS (
        SELECT (d.snap #>> '{totals,total}')::numeric AS total,
               coalesce((SELECT sum((p ->> 'amount_minor')::numeric)
                         FROM jsonb_array_elements(coalesce(d.snap -> 'payments', '[]')) p), 0) AS paid,
               d.snap ->> 'currency' AS currency
        FROM doc d
    )
    SELECT jsonb_build_object(
        'lines_locked', true,
        'synced_payments', (SELECT jsonb_agg(payment_id ORDER BY payment_id) FROM synced),
        'total_minor', m.total, 'paid_minor', m.paid, 'balance_minor', m.total - m.paid,
        'payments_open', coalesce(m.total - m.paid > 0, false),
        'reason', format('payment %s is synced to %s: the lines, the discount and the synced payments are locked; '
                         || CASE WHEN coalesce(m.total - m.paid > 0, false)
                                 THEN 'payments may still be added until the balance (%s) is 0'
                                 ELSE 'the balance is %s, so no more payments can be added' END,
                         (SELECT string_agg(payment_id, ', ' ORDER BY payment_id) FROM synced),
                         ledgerflow.provider_display_name(c.provider),
                         ledgerflow.money_text(coalesce(m.total - m.paid, 0), coalesce(m.currency, 'XXX'))))
    FROM ledgerflow.connections c
    LEFT JOIN money m ON true
    WHERE c.id = p_connection_id AND c.provider = 'xero' AND EXISTS (SELECT 1 FROM synced)
$$;

-- Why a host trigger's snapshot may not sync because of the lock, or NULL:
-- its lines, discount or totals differ from the last synced snapshot, or a
-- synced payment's amount changed. (Payments beyond the total are refused
-- by the snapshot checks already: "until the balance is 0".)
CREATE FUNCTION ledgerflow.locked_edit(p_connection_id bigint, p_invoice_id text, p_snapshot jsonb) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_synced jsonb;
    v_changed text;
    v_provider text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ledgerflow.payment_links pl
                   WHERE pl.connection_id = p_connection_id AND pl.invoice_id = p_invoice_id) THEN
        RETURN NULL;
    END IF;
    SELECT ledgerflow.provider_display_name(c.provider) INTO v_provider
    FROM ledgerflow.connections c WHERE c.id = p_connection_id AND c.provider = 'xero';
    IF v_provider IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT ledgerflow.snapshot_normalized(s.synced_snapshot) INTO v_synced
    FROM ledgerflow.invoice_sync s
    WHERE s.connection_id = p_connection_id AND s.invoice_id = p_invoice_id AND s.synced_snapshot IS NOT NULL;
    IF v_synced IS NOT NULL AND
       jsonb_build_array(v_synced -> 'lines', v_synced -> 'discount', v_synced -> 'currency',
                         v_synced #> '{totals,subtotal}', v_synced #> '{totals,discount_total}',
                         v_synced #> '{totals,tax_total}')
       IS DISTINCT FROM
       jsonb_build_array(p_snapshot -> 'lines', p_snapshot -> 'discount', p_snapshot -> 'currency',
                         p_snapshot #> '{totals,subtotal}', p_snapshot #> '{totals,discount_total}',
                         p_snapshot #> '{totals,tax_total}') THEN
        RETURN format('locked: a payment on this invoice is synced to %s, so its lines and discount cannot change '
                      || 'there; this edit was recorded, not sent (payments may still be added until the balance is 0)',
                      v_provider);
    END IF;
    SELECT string_agg(format('%s (%s synced, now %s)', pl.payment_id, pl.amount_minor, p ->> 'amount_minor'), ', '
                      ORDER BY pl.payment_id) INTO v_changed
    FROM ledgerflow.payment_links pl
    JOIN jsonb_array_elements(coalesce(p_snapshot -> 'payments', '[]')) p ON p ->> 'payment_id' = pl.payment_id
    WHERE pl.connection_id = p_connection_id AND pl.invoice_id = p_invoice_id
      AND (p ->> 'amount_minor')::numeric <> pl.amount_minor;
    IF v_changed IS NOT NULL THEN
        RETURN format('locked: payment %s is synced to %s and cannot be edited; this edit was recorded, not sent',
                      v_changed, v_provider);
    END IF;
    RETURN NULL;
END;
$$;

-- ledgerflow.ledger_record (the rule every host trigger goes through)
-- asks ledgerflow.locked_edit before it syncs: a locked edit is still
-- recorded (the snapshot as the invoice's latest, a skipped event
-- `locked_synced_payment` with the reason), never dropped and never sent.
-- Manual actions (re-sync, send as new) are a person's explicit choice and
-- do not pass there. ledgerflow.sync_event_view shows `resync_report` as
-- `resync`, and ledgerflow.sync_dialog the invoice's lock as `lock`.
