//! A re-sync of one invoice (the dialog's "re-sync", `ledgerflow invoice
//! resync`), as the seed lists it, for a provider with the [`Import`]
//! capability on a connection whose first sync imported its chart: before
//! the push, import the provider's new accounts and tax
//! rates (so a code added there since the first sync passes the chart
//! check), export the invoice's items the provider does not have, read the
//! provider's invoice and its payments into the imported records, and
//! check our payment links against the payments the provider still lists.
//! The push itself (with the invoice's contact, the invoice and the host's
//! payments) is the ledger's usual sync step, which calls [`before_push`].
//!
//! Reconciliation here is only what this invoice needs: a payment our
//! links hold that the provider no longer lists is reported on the event
//! (its `resync_report`, shown in the dialog); settling it (removing the
//! link, telling the host) is the `reconcile` command's.
//!
//! This module owns those steps and their report. It must not depend on
//! the ledger (which calls it) or on the import module (a sibling that
//! depends on the ledger), so it upserts imported records itself; the
//! rules for which kinds and fields match the import's `record_page`.
//!
//! [`Import`]: crate::provider::Import

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::invoice::InvoiceSnapshot;
use crate::money::Money;
use crate::provider::{
    ConnectionInfo, ExternalRef, ImportKind, ImportedRecord, ItemExport, Provider, ProviderError,
};

/// The most pages of accounts or tax rates one re-sync reads: a chart is
/// one page for Xero; a provider that pages it still has a small one.
const MAX_CHART_PAGES: u32 = 10;

/// The trigger code of the dialog's re-sync.
pub const RESYNC_TRIGGER: &str = "manual_resync";

/// A payment our links hold that the provider no longer lists on the invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingPayment {
    pub payment_id: String,
    pub external_id: String,
    pub amount_minor: i64,
}

/// The provider's invoice as the re-sync read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderInvoiceSeen {
    pub external_id: String,
    pub status: String,
    pub total_minor: Option<i64>,
    pub amount_paid_minor: Option<i64>,
    pub payments: usize,
}

/// What a re-sync did before its push, kept on the event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResyncReport {
    pub accounts_new: i64,
    pub tax_rates_new: i64,
    /// SKUs created in the provider.
    pub items_exported: Vec<String>,
    /// SKUs the provider refused, with its words.
    pub items_refused: Vec<(String, String)>,
    /// `None` when the invoice was not linked yet (nothing to read) or the
    /// provider has no such invoice any more (`invoice_gone`).
    pub provider_invoice: Option<ProviderInvoiceSeen>,
    pub invoice_gone: bool,
    /// Payments on the provider's invoice seen for the first time.
    pub payments_imported: i64,
    pub missing_in_provider: Vec<MissingPayment>,
    /// The invoice's currency, for the amounts above.
    pub currency: Option<crate::money::Currency>,
}

impl ResyncReport {
    /// The dialog's lines, in the seed's order.
    pub fn lines(&self, provider: &str) -> Vec<String> {
        let mut out = vec![format!(
            "imported {} new account(s), {} new tax rate(s) from {provider}",
            self.accounts_new, self.tax_rates_new
        )];
        if !self.items_exported.is_empty() {
            out.push(format!(
                "exported item(s) {}",
                self.items_exported.join(", ")
            ));
        }
        for (sku, why) in &self.items_refused {
            out.push(format!("{provider} refused item {sku}: {why}"));
        }
        match (&self.provider_invoice, self.invoice_gone) {
            (Some(i), _) => out.push(format!(
                "read the {provider} invoice: {}, {} payment(s) ({} new)",
                i.status, i.payments, self.payments_imported
            )),
            (None, true) => out.push(format!("{provider} no longer has the linked invoice")),
            (None, false) => {}
        }
        for m in &self.missing_in_provider {
            let amount = self.currency.map_or_else(
                || m.amount_minor.to_string(),
                |c| Money::new(m.amount_minor, c).to_string(),
            );
            out.push(format!(
                "payment {} {amount} is linked to {provider} payment {} but {provider} no longer lists it on this invoice (deleted or changed there): reconciliation (`ledgerflow reconcile`) removes the link and tells the host",
                m.payment_id, m.external_id
            ));
        }
        out
    }
}

fn db(e: sqlx::Error) -> ProviderError {
    ProviderError::Retryable {
        message: format!("a re-sync step could not read or write its records: {e}"),
        raw: None,
    }
}

/// Whether the event is a re-sync a person asked for.
pub async fn is_resync(pool: &PgPool, event_id: i64) -> Result<bool, ProviderError> {
    let trigger: Option<String> =
        sqlx::query_scalar("SELECT trigger FROM ledgerflow.sync_events WHERE id = $1")
            .bind(event_id)
            .fetch_optional(pool)
            .await
            .map_err(db)?;
    Ok(trigger.as_deref() == Some(RESYNC_TRIGGER))
}

/// Whether the connection's first sync imported its chart: "new" accounts
/// and tax rates only mean something after it, and a connection that never
/// imported keeps the re-sync it had (the push alone).
async fn imported_before(pool: &PgPool, connection_id: i64) -> Result<bool, ProviderError> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM ledgerflow.provider_records
                        WHERE connection_id = $1 AND kind IN ('account', 'tax_rate'))",
    )
    .bind(connection_id)
    .fetch_one(pool)
    .await
    .map_err(db)
}

/// Upserts `records` of `kind` by the provider's id; answers how many
/// were new. A record read again unchanged keeps its `changed_at`.
async fn upsert_records(
    pool: &PgPool,
    info: &ConnectionInfo,
    kind: ImportKind,
    records: &[ImportedRecord],
) -> Result<i64, ProviderError> {
    if records.is_empty() {
        return Ok(0);
    }
    let docs = serde_json::to_value(records)
        .map_err(|e| ProviderError::permanent(format!("imported records: {e}"), None))?;
    let new: i64 = sqlx::query_scalar(
        "WITH input AS (
             SELECT DISTINCT ON (e->>'external_id') e AS doc, md5(e::text) AS digest,
                    e->>'external_id' AS external_id
             FROM jsonb_array_elements($4::jsonb) e),
         prior AS (
             SELECT p.external_id FROM ledgerflow.provider_records p JOIN input i USING (external_id)
             WHERE p.connection_id = $1 AND p.kind = $2),
         up AS (
             INSERT INTO ledgerflow.provider_records AS p
                 (connection_id, tenant_id, kind, external_id, code, name, email, reference, status,
                  rate_bps, currency, total_minor, amount_paid_minor, parent_external_id, digest)
             SELECT $1, $3, $2, i.external_id, doc->>'code', doc->>'name', doc->>'email',
                    doc->>'reference', doc->>'status', (doc->>'rate_bps')::bigint, doc->>'currency',
                    (doc->>'total_minor')::bigint, (doc->>'amount_paid_minor')::bigint,
                    doc->>'parent_external_id', i.digest
             FROM input i
             ON CONFLICT (connection_id, kind, external_id) DO UPDATE
             SET code = excluded.code, name = excluded.name, email = excluded.email,
                 reference = excluded.reference, status = excluded.status,
                 rate_bps = excluded.rate_bps, currency = excluded.currency,
                 total_minor = excluded.total_minor, amount_paid_minor = excluded.amount_paid_minor,
                 parent_external_id = excluded.parent_external_id, digest = excluded.digest,
                 imported_at = now(),
                 changed_at = CASE WHEN p.digest = excluded.digest THEN p.changed_at ELSE now() END
             RETURNING 1)
         SELECT count(*) FROM input i WHERE NOT EXISTS (SELECT 1 FROM prior p WHERE p.external_id = i.external_id)",
    )
    .bind(info.id)
    .bind(kind.as_str())
    .bind(&info.tenant_id)
    .bind(docs)
    .fetch_one(pool)
    .await
    .map_err(db)?;
    Ok(new)
}

/// The invoice's items the provider has no item for (by SKU), each with
/// the line's description and price.
async fn items_missing(
    pool: &PgPool,
    info: &ConnectionInfo,
    snapshot: &InvoiceSnapshot,
) -> Result<Vec<ItemExport>, ProviderError> {
    let mut seen = BTreeSet::new();
    let candidates: Vec<&crate::invoice::InvoiceLine> = snapshot
        .lines
        .iter()
        .filter(|l| l.sku.as_deref().is_some_and(|s| !s.trim().is_empty()))
        .filter(|l| seen.insert(l.sku.clone()))
        .collect();
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let skus: Vec<String> = candidates.iter().filter_map(|l| l.sku.clone()).collect();
    let known: Vec<String> = sqlx::query_scalar(
        "SELECT code FROM ledgerflow.provider_records
         WHERE connection_id = $1 AND kind = 'item' AND code = ANY($2)
         UNION SELECT host_id FROM ledgerflow.links
         WHERE connection_id = $1 AND entity_type = 'item' AND host_id = ANY($2)",
    )
    .bind(info.id)
    .bind(&skus)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    Ok(candidates
        .into_iter()
        .filter_map(|l| {
            let sku = l.sku.clone()?;
            (!known.contains(&sku)).then(|| ItemExport {
                name: if l.description.trim().is_empty() {
                    sku.clone()
                } else {
                    l.description.clone()
                },
                code: sku,
                unit_price_minor: Some(l.unit_price_minor),
                currency: Some(snapshot.currency.code().to_string()),
            })
        })
        .collect())
}

/// Records an exported item as imported and links it to the host's SKU.
async fn record_item(
    pool: &PgPool,
    info: &ConnectionInfo,
    item: &ItemExport,
    record: &ImportedRecord,
) -> Result<(), ProviderError> {
    let mut record = record.clone();
    record.code.get_or_insert_with(|| item.code.clone());
    record.name.get_or_insert_with(|| item.name.clone());
    upsert_records(pool, info, ImportKind::Item, std::slice::from_ref(&record)).await?;
    sqlx::query(
        "INSERT INTO ledgerflow.links (connection_id, entity_type, host_id, external_id,
                                       external_number, last_push_at)
         VALUES ($1, 'item', $2, $3, $4, now())
         ON CONFLICT (connection_id, entity_type, host_id) DO NOTHING",
    )
    .bind(info.id)
    .bind(&item.code)
    .bind(&record.external_id)
    .bind(&record.code)
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(())
}

/// The steps of a re-sync before its push (see the module doc), when the
/// event is a re-sync and the provider can import; `None` otherwise (the
/// re-sync is the push alone, as before). The report is stored on the
/// event. A provider error ends the steps and is the sync's error (a
/// retryable one is retried with the event).
pub async fn before_push(
    provider: &dyn Provider,
    pool: &PgPool,
    info: &ConnectionInfo,
    event_id: i64,
    snapshot: &InvoiceSnapshot,
    invoice: Option<&ExternalRef>,
    idempotency_key: &str,
) -> Result<Option<ResyncReport>, ProviderError> {
    let Some(import) = provider.import() else {
        return Ok(None);
    };
    if !is_resync(pool, event_id).await? || !imported_before(pool, info.id).await? {
        return Ok(None);
    }
    let mut report = ResyncReport {
        currency: Some(snapshot.currency),
        ..ResyncReport::default()
    };

    // 1 and 4 of the seed: new accounts and tax rates.
    for kind in [ImportKind::Account, ImportKind::TaxRate] {
        let mut page = 1;
        loop {
            let got = import.list_page(info, kind, page).await?;
            let new = upsert_records(pool, info, kind, &got.records).await?;
            match kind {
                ImportKind::Account => report.accounts_new += new,
                _ => report.tax_rates_new += new,
            }
            match got.next_page {
                Some(next) if next > page && next <= MAX_CHART_PAGES => page = next,
                _ => break,
            }
        }
    }

    // 2: the invoice's items the provider does not have.
    let missing = items_missing(pool, info, snapshot).await?;
    for (n, batch) in missing.chunks(import.max_export_batch().max(1)).enumerate() {
        // The same batch of the same event on every attempt: a lost answer
        // replays instead of creating the items twice.
        let key = format!("{idempotency_key}-items-{n}");
        let outcomes = import.export_items(info, batch, &key).await?;
        for (item, outcome) in batch.iter().zip(outcomes) {
            match outcome {
                Ok(record) => {
                    record_item(pool, info, item, &record).await?;
                    report.items_exported.push(item.code.clone());
                }
                Err(e) => report
                    .items_refused
                    .push((item.code.clone(), e.to_string())),
            }
        }
    }

    // 3 (the contact) goes with the push. 5 and 6: the provider's invoice
    // and its payments; 9: our payment links it no longer lists.
    if let (Some(link), Some(feed)) = (invoice, provider.change_feed()) {
        match feed.remote_invoice(info.id, &link.external_id).await? {
            None => report.invoice_gone = true,
            Some(remote) => {
                let record = ImportedRecord {
                    external_id: remote.external_id.clone(),
                    code: remote.external_number.clone(),
                    reference: Some(snapshot.number.clone()),
                    status: Some(remote.status.clone()),
                    currency: remote.currency.clone(),
                    total_minor: remote.total_minor,
                    amount_paid_minor: remote.amount_paid_minor,
                    ..ImportedRecord::default()
                };
                upsert_records(pool, info, ImportKind::Invoice, &[record]).await?;
                let payments: Vec<ImportedRecord> = remote
                    .payments
                    .iter()
                    .map(|p| ImportedRecord {
                        external_id: p.external_id.clone(),
                        total_minor: p.amount_minor,
                        parent_external_id: Some(remote.external_id.clone()),
                        ..ImportedRecord::default()
                    })
                    .collect();
                report.payments_imported =
                    upsert_records(pool, info, ImportKind::Payment, &payments).await?;
                report.missing_in_provider =
                    missing_payments(pool, info, &snapshot.invoice_id, &remote.payments).await?;
                report.provider_invoice = Some(ProviderInvoiceSeen {
                    external_id: remote.external_id,
                    status: remote.status,
                    total_minor: remote.total_minor,
                    amount_paid_minor: remote.amount_paid_minor,
                    payments: remote.payments.len(),
                });
            }
        }
    }

    let doc = serde_json::to_value(&report)
        .map_err(|e| ProviderError::permanent(format!("re-sync report: {e}"), None))?;
    sqlx::query("UPDATE ledgerflow.sync_events SET resync_report = $2 WHERE id = $1")
        .bind(event_id)
        .bind(doc)
        .execute(pool)
        .await
        .map_err(db)?;
    Ok(Some(report))
}

/// Our payment links of the invoice whose provider payment is not among
/// `listed`.
async fn missing_payments(
    pool: &PgPool,
    info: &ConnectionInfo,
    invoice_id: &str,
    listed: &[crate::provider::RemotePayment],
) -> Result<Vec<MissingPayment>, ProviderError> {
    let listed: Vec<String> = listed.iter().map(|p| p.external_id.clone()).collect();
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT payment_id, external_id, amount_minor FROM ledgerflow.payment_links
         WHERE connection_id = $1 AND invoice_id = $2 AND NOT (external_id = ANY($3))
         ORDER BY payment_id",
    )
    .bind(info.id)
    .bind(invoice_id)
    .bind(&listed)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    Ok(rows
        .into_iter()
        .map(|(payment_id, external_id, amount_minor)| MissingPayment {
            payment_id,
            external_id,
            amount_minor,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;

    #[test]
    fn resync_report_names_a_payment_the_provider_no_longer_lists() {
        let report = ResyncReport {
            tax_rates_new: 1,
            items_exported: vec!["BRAKE-01".into()],
            missing_in_provider: vec![MissingPayment {
                payment_id: "P1".into(),
                external_id: "x-1".into(),
                amount_minor: 1050,
            }],
            currency: Currency::parse("NZD").ok(),
            ..ResyncReport::default()
        };
        let lines = report.lines("Xero");
        assert_eq!(
            lines[0],
            "imported 0 new account(s), 1 new tax rate(s) from Xero"
        );
        assert_eq!(lines[1], "exported item(s) BRAKE-01");
        assert!(
            lines[2].starts_with("payment P1 NZD 10.50 is linked to Xero payment x-1"),
            "{}",
            lines[2]
        );
    }
}
