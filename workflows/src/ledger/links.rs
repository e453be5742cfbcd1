//! Links between the host's records (invoices, customers, items,
//! payments) and the provider's: written when a push succeeds, read when
//! the next push needs the provider's id. Must not call the provider nor
//! decide when a link is made (the steps that push do).

use sqlx::{PgConnection, Row};

use crate::provider::ExternalRef;

/// The invoice's link and its customer's, read in one statement: a sync
/// hands both to the adapter (the customer's spares finding it again).
pub(super) async fn sync_links(
    pool: &sqlx::PgPool,
    connection_id: i64,
    invoice_id: &str,
    customer_id: &str,
) -> Result<(Option<ExternalRef>, Option<ExternalRef>), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT entity_type, external_id, external_number, view_url FROM ledgerflow.links
         WHERE connection_id = $1
           AND ((entity_type = 'invoice' AND host_id = $2)
             OR (entity_type = 'customer' AND host_id = $3 AND $3 <> ''))",
    )
    .bind(connection_id)
    .bind(invoice_id)
    .bind(customer_id)
    .fetch_all(pool)
    .await?;
    let (mut invoice, mut customer) = (None, None);
    for r in rows {
        let link = ExternalRef {
            external_id: r.try_get("external_id")?,
            external_number: r.try_get("external_number")?,
            url: r.try_get("view_url")?,
        };
        match r.try_get::<&str, _>("entity_type")? {
            "invoice" => invoice = Some(link),
            _ => customer = Some(link),
        }
    }
    Ok((invoice, customer))
}

pub(super) async fn invoice_link(
    pool: &sqlx::PgPool,
    connection_id: i64,
    invoice_id: &str,
) -> Result<Option<ExternalRef>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT external_id, external_number, view_url FROM ledgerflow.links
         WHERE connection_id = $1 AND entity_type = 'invoice' AND host_id = $2",
    )
    .bind(connection_id)
    .bind(invoice_id)
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        Ok(ExternalRef {
            external_id: r.try_get("external_id")?,
            external_number: r.try_get("external_number")?,
            url: r.try_get("view_url")?,
        })
    })
    .transpose()
}

/// Link a host record (invoice, customer, item, payment) to the provider's,
/// stamping the push time.
pub(crate) async fn upsert_link(
    conn: &mut PgConnection,
    connection_id: i64,
    entity_type: &str,
    host_id: &str,
    external: &ExternalRef,
) -> Result<(), sqlx::Error> {
    write_link(conn, connection_id, entity_type, host_id, external, false).await
}

/// Link a record many invoices share (a customer, an item), writing only
/// when the link is new or points elsewhere now. Every sync of a shop's
/// walk-in customer names the same contact: stamped each time, the row's
/// lock made those syncs commit one after another (up to 9 ms a statement
/// in the 100-organisation benchmark, nearly all of it waiting).
/// `last_push_at` is therefore when the link last changed.
pub(crate) async fn link_shared(
    conn: &mut PgConnection,
    connection_id: i64,
    entity_type: &str,
    host_id: &str,
    external: &ExternalRef,
) -> Result<(), sqlx::Error> {
    write_link(conn, connection_id, entity_type, host_id, external, true).await
}

async fn write_link(
    conn: &mut PgConnection,
    connection_id: i64,
    entity_type: &str,
    host_id: &str,
    external: &ExternalRef,
    only_when_changed: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO ledgerflow.links
             (connection_id, entity_type, host_id, external_id, external_number, view_url, last_push_at)
         SELECT $1, $2, $3, $4, $5, $6, now()
         WHERE NOT ($7 AND EXISTS (
             SELECT 1 FROM ledgerflow.links
             WHERE connection_id = $1 AND entity_type = $2 AND host_id = $3 AND external_id = $4
               AND external_number IS NOT DISTINCT FROM $5 AND view_url IS NOT DISTINCT FROM $6))
         ON CONFLICT (connection_id, entity_type, host_id) DO UPDATE
         SET external_id = excluded.external_id, external_number = excluded.external_number,
             view_url = excluded.view_url, last_push_at = now(), updated_at = now()",
    )
    .bind(connection_id)
    .bind(entity_type)
    .bind(host_id)
    .bind(&external.external_id)
    .bind(&external.external_number)
    .bind(&external.url)
    .bind(only_when_changed)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
