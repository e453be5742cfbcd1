//! Picking a chunk's next batch: the next invoices by the keyset cursor,
//! those already in the provider skipped, each with the contact it goes to.

use chrono::NaiveDate;
use sqlx::{PgConnection, PgPool};

use super::super::ContactMapping;
use super::super::source::{self, PageQuery};
use crate::invoice::InvoiceSnapshot;
use crate::queue::JobError;

use super::Chunk;

/// The contact an invoice of the batch goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactChoice {
    /// The customer's linked provider contact.
    Linked(String),
    /// Found by exact name in the provider, created when missing.
    Name(String),
}

/// What happens to one invoice read from the source.
#[derive(Debug, Clone)]
pub enum Disposition {
    Send {
        snapshot: Box<InvoiceSnapshot>,
        contact: ContactChoice,
    },
    /// Not sent; the reason is counted as skipped.
    Skip(&'static str),
    /// Linked by this chunk's recovery of a lost answer: counted as synced.
    Adopted,
    /// The host's snapshot does not validate: counted as failed.
    Invalid(String),
}

#[derive(Debug, Clone)]
pub struct Scanned {
    pub invoice_id: String,
    pub issued_on: NaiveDate,
    pub snapshot: serde_json::Value,
    pub disposition: Disposition,
}

/// The invoices read since the cursor: at most `batch_size` to send, and
/// every skipped one before and between them.
#[derive(Debug, Clone)]
pub struct Batch {
    pub items: Vec<Scanned>,
    /// The source has nothing after the last item.
    pub exhausted: bool,
    /// Picked after this cursor (the fence of every write for this batch).
    pub after: Option<(NaiveDate, String)>,
}

impl Batch {
    pub fn to_send(&self) -> impl Iterator<Item = (&str, &InvoiceSnapshot, &ContactChoice)> {
        self.items.iter().filter_map(|s| match &s.disposition {
            Disposition::Send { snapshot, contact } => {
                Some((s.invoice_id.as_str(), snapshot.as_ref(), contact))
            }
            _ => None,
        })
    }

    /// The idempotency key: the same batch (same invoices) gets the same key
    /// on every attempt, so a retry replays the provider's first answer.
    pub fn key(&self, chunk: &Chunk) -> String {
        crate::provider::batch_key(
            &format!(
                "ledgerflow-backfill-{}-{}",
                chunk.backfill_id, chunk.position
            ),
            self.to_send().map(|(id, _, _)| id),
        )
    }

    /// Where the cursor stands once this batch is recorded.
    pub fn cursor(&self) -> Option<(NaiveDate, String)> {
        self.items
            .last()
            .map(|s| (s.issued_on, s.invoice_id.clone()))
            .or_else(|| self.after.clone())
    }
}

async fn ids_in(
    conn: &mut PgConnection,
    sql: &'static str,
    connection_id: i64,
    ids: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(sql)
        .bind(connection_id)
        .bind(ids)
        .fetch_all(&mut *conn)
        .await
}

/// Reads from the source after the chunk's cursor until the batch holds
/// `batch_size` invoices to send or the source has no more.
pub async fn next_batch(pool: &PgPool, chunk: &Chunk) -> Result<Batch, JobError> {
    let mut conn = pool.acquire().await?;
    let page_size = i64::try_from(chunk.batch_size * 2).unwrap_or(100).max(20);
    let mut after = chunk.cursor.clone();
    let mut items = Vec::new();
    let mut sending = 0usize;
    loop {
        let rows = source::read_page(
            &mut conn,
            &PageQuery {
                source: &chunk.source,
                tenant: &chunk.connection.tenant_id,
                connection_id: chunk.connection.id,
                from: chunk.from,
                to: chunk.to,
                sales_channel: chunk.sales_channel.as_deref(),
                location: chunk.location.as_deref(),
                only_approved: chunk.only_approved,
                after: after.clone(),
                limit: page_size,
            },
        )
        .await
        .map_err(|e| JobError::retryable(format!("reading the host's invoices: {e}")))?;
        let full_page = i64::try_from(rows.len()).unwrap_or(0) == page_size;
        let ids: Vec<String> = rows.iter().map(|r| r.invoice_id.clone()).collect();
        let linked = ids_in(
            &mut conn,
            "SELECT host_id FROM ledgerflow.links
             WHERE connection_id = $1 AND entity_type = 'invoice' AND host_id = ANY($2)",
            chunk.connection.id,
            &ids,
        )
        .await?;
        // A live sync already owns these: it will create (or has created) them.
        let live = ids_in(
            &mut conn,
            "SELECT DISTINCT invoice_id FROM ledgerflow.sync_events
             WHERE connection_id = $1 AND invoice_id = ANY($2) AND status IN ('pending', 'syncing')",
            chunk.connection.id,
            &ids,
        )
        .await?;
        let mut parsed = Vec::with_capacity(rows.len());
        let mut customer_ids = Vec::new();
        for row in &rows {
            let snap = serde_json::from_value::<InvoiceSnapshot>(row.snapshot.clone())
                .map_err(|e| e.to_string())
                .and_then(|s| match s.validate() {
                    Ok(()) if s.invoice_id == row.invoice_id => Ok(s),
                    Ok(()) => Err(format!(
                        "the snapshot's invoice_id {:?} differs from the view's {:?}",
                        s.invoice_id, row.invoice_id
                    )),
                    Err(e) => Err(e.to_string()),
                });
            if let Ok(s) = &snap {
                customer_ids.push(s.customer.customer_id.clone());
            }
            parsed.push(snap);
        }
        let customer_links: Vec<(String, String)> = if chunk.contacts == ContactMapping::Auto {
            sqlx::query_as(
                "SELECT host_id, external_id FROM ledgerflow.links
                 WHERE connection_id = $1 AND entity_type = 'customer' AND host_id = ANY($2)",
            )
            .bind(chunk.connection.id)
            .bind(&customer_ids)
            .fetch_all(&mut *conn)
            .await?
        } else {
            Vec::new()
        };
        let mut consumed_all = true;
        for (row, snap) in rows.into_iter().zip(parsed) {
            let disposition = if linked.contains(&row.invoice_id) {
                if chunk.adopted.contains(&row.invoice_id) {
                    Disposition::Adopted
                } else {
                    Disposition::Skip("already in the provider")
                }
            } else if live.contains(&row.invoice_id) {
                Disposition::Skip("a live sync is under way")
            } else {
                match snap {
                    Err(reason) => {
                        Disposition::Invalid(format!("the host's snapshot is not valid: {reason}"))
                    }
                    Ok(s) => {
                        let contact = contact_for(&chunk.contacts, &s, &customer_links);
                        Disposition::Send {
                            snapshot: Box::new(s),
                            contact,
                        }
                    }
                }
            };
            let sends = matches!(disposition, Disposition::Send { .. });
            items.push(Scanned {
                invoice_id: row.invoice_id,
                issued_on: row.issued_on,
                snapshot: row.snapshot,
                disposition,
            });
            if sends {
                sending += 1;
                if sending == chunk.batch_size {
                    consumed_all = false;
                    break;
                }
            }
        }
        if !consumed_all {
            return Ok(Batch {
                items,
                exhausted: false,
                after: chunk.cursor.clone(),
            });
        }
        if !full_page {
            return Ok(Batch {
                items,
                exhausted: true,
                after: chunk.cursor.clone(),
            });
        }
        after = items.last().map(|s| (s.issued_on, s.invoice_id.clone()));
    }
}

fn contact_for(
    mapping: &ContactMapping,
    s: &InvoiceSnapshot,
    customer_links: &[(String, String)],
) -> ContactChoice {
    match mapping {
        ContactMapping::Generic(name) => ContactChoice::Name(name.clone()),
        ContactMapping::Location => ContactChoice::Name(
            s.location
                .clone()
                .filter(|l| !l.trim().is_empty())
                .unwrap_or_else(|| s.customer.name.clone()),
        ),
        ContactMapping::Auto => customer_links
            .iter()
            .find(|(host, _)| *host == s.customer.customer_id)
            .map_or_else(
                || ContactChoice::Name(s.customer.name.clone()),
                |(_, ext)| ContactChoice::Linked(ext.clone()),
            ),
    }
}
