//! A QuickBooks connection that syncs on its own, for the tests of what a
//! sync does (host records, chains, steps that give up or are cancelled):
//! automatic settings, the sync handlers, the host's customer (Maya Lopez,
//! CUST-31) and service item (SVC-FIT) changed and read back, and a host
//! trigger that starts a chain. Written once here so each test file keeps
//! only its cases.

use std::sync::Arc;
use std::time::Duration;

use ledgerflow_worker::runtime::Registry;
use ledgerflow_workflows::host_data::{Address, HostCustomer, HostItem};
use ledgerflow_workflows::invoice::InvoiceSnapshot;
use ledgerflow_workflows::ledger::{
    self, ChainStarted, ChangeRecorded, HostRecordKind, HostRecordView, HostTrigger,
    InvoiceSyncStatus, SyncDialog, host_record, record_customer_changed, record_item_changed,
};
use ledgerflow_workflows::money::Currency;
use ledgerflow_workflows::provider::Providers;
use ledgerflow_workflows::settings::{Provider as ProviderName, QuickBooksSettings, Trigger};
use serde_json::json;
use sqlx::PgPool;

use super::{Qbo, TENANT, qbo_with, snapshot};

/// A QuickBooks connection syncing automatically, with these settings.
pub async fn qbo_auto(pool: &PgPool, qs: QuickBooksSettings) -> Qbo {
    let q = qbo_with(pool, qs).await;
    let mut db = pool.acquire().await.unwrap();
    ledger::update_settings_json(&mut db, q.connection.id, &json!({"auto_sync": true}))
        .await
        .unwrap();
    q
}

/// The host's customer CUST-31, Maya Lopez, with this email and phone.
pub fn maya(email: &str, phone: &str) -> HostCustomer {
    HostCustomer {
        customer_id: "CUST-31".into(),
        name: "Maya Lopez".into(),
        email: Some(email.into()),
        phone: Some(phone.into()),
        address: Some(Address {
            line1: Some("12 Spoke Lane".into()),
            city: Some("Portland".into()),
            region: Some("OR".into()),
            postal_code: Some("97201".into()),
            country: Some("US".into()),
            ..Address::default()
        }),
    }
}

/// The host's service item SVC-FIT, a taxable bike fit in USD.
pub fn fitting(price_minor: i64, description: Option<&str>) -> HostItem {
    HostItem {
        sku: "SVC-FIT".into(),
        name: "Bike fit".into(),
        description: description.map(str::to_string),
        price_minor,
        currency: Currency::parse("USD").unwrap(),
        taxable: true,
    }
}

impl Qbo {
    /// The sync handlers (invoices, customers, items, chains) on this
    /// connection's adapter.
    pub fn sync_registry(&self) -> Registry {
        ledgerflow_worker::handlers::sync::register(
            Registry::new(),
            Providers::new().with(ProviderName::QuickBooks, Arc::new(self.adapter.clone())),
        )
    }

    /// The host changed customer `c` (its own transaction).
    pub async fn customer_changed(&self, c: &HostCustomer) -> Vec<ChangeRecorded> {
        let mut tx = self.pool.begin().await.unwrap();
        let out = record_customer_changed(&mut tx, TENANT, c).await.unwrap();
        tx.commit().await.unwrap();
        out
    }

    /// The host changed item `i` (its own transaction).
    pub async fn item_changed(&self, i: &HostItem) -> Vec<ChangeRecorded> {
        let mut tx = self.pool.begin().await.unwrap();
        let out = record_item_changed(&mut tx, TENANT, i).await.unwrap();
        tx.commit().await.unwrap();
        out
    }

    /// The host record's sync state on this connection, if it has one.
    pub async fn host_record(&self, kind: HostRecordKind, id: &str) -> Option<HostRecordView> {
        let mut db = self.pool.acquire().await.unwrap();
        host_record(&mut db, self.connection.id, kind, id)
            .await
            .unwrap()
    }

    /// The host's `trigger` of `inv` (its own transaction): the chains it
    /// started, one per connection.
    pub async fn host_trigger(&self, trigger: Trigger, inv: &InvoiceSnapshot) -> Vec<ChainStarted> {
        let mut tx = self.pool.begin().await.unwrap();
        let started = ledger::on_host_trigger(
            &mut tx,
            &HostTrigger {
                tenant_id: TENANT,
                trigger,
                label: None,
                snapshot: inv,
                action_override: None,
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        started
    }
}

/// What the tests of a chain's steps do with an invoice: send it, read its
/// dialog, retry it to the end.
impl Qbo {
    /// The host sends invoice `number`, billed to Maya Lopez (CUST-31), its
    /// line naming SVC-FIT: a chain of `steps` (the item's only when it
    /// changed and has not synced). Returns the invoice's id.
    pub async fn maya_invoice_sent(&self, number: &str, steps: &[&str]) -> String {
        let mut inv = snapshot(number, 15_000);
        inv.customer.customer_id = "CUST-31".into();
        inv.customer.name = "Maya Lopez".into();
        inv.lines[0].sku = Some("SVC-FIT".into());
        let started = self.host_trigger(Trigger::InvoiceSent, &inv).await;
        assert_eq!(started[0].steps, steps);
        inv.invoice_id
    }

    /// The invoice's sync dialog (its newest ten history entries).
    pub async fn dialog(&self, invoice: &str) -> SyncDialog {
        let mut db = self.pool.acquire().await.unwrap();
        ledger::sync_dialog(&mut db, self.connection.id, invoice, 10)
            .await
            .unwrap()
    }

    /// "Retry" from the dialog, then wait up to `wait` for the invoice to
    /// reach QuickBooks.
    pub async fn retried_to_the_end(&self, invoice: &str, wait: Duration) {
        let mut db = self.pool.acquire().await.unwrap();
        ledger::retry_failed_event(&mut db, self.connection.id, invoice)
            .await
            .unwrap();
        drop(db);
        crate::xero_helpers::eventually(wait, "the invoice synced after the retry", || async {
            (self.dialog(invoice).await.status == InvoiceSyncStatus::Synced).then_some(())
        })
        .await;
    }
}
