//! Test support shared by the ledger tests (workflows/tests and, through
//! `#[path]`, worker/tests): snapshot builders, a tenant + connection
//! fixture, and an in-memory recording `Provider` (a test double of the
//! provider port, never of the database).
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDate};
use ledgerflow_workflows::invoice::{
    Customer, InvoiceLine, InvoiceSnapshot, InvoiceStatus, LineKind, SNAPSHOT_SCHEMA_VERSION,
    Totals,
};
use ledgerflow_workflows::ledger::{self, NewTenant};
use ledgerflow_workflows::money::Currency;
use ledgerflow_workflows::provider::{
    CompleteDraftRequest, ExternalRef, PaymentOutcome, Provider, ProviderError, ProviderFuture,
    PushPaymentRequest, PushResult, SyncCustomerRequest, UpsertInvoiceRequest, UpsertMode,
    VoidOrderRequest, WriteKind,
};
use ledgerflow_workflows::settings::{ConnectionSettings, Provider as ProviderName};
use sqlx::PgPool;
use tokio::sync::Semaphore;

pub fn line(id: &str, sku: &str, quantity: i64, unit_price_minor: i64) -> InvoiceLine {
    InvoiceLine {
        line_id: id.into(),
        kind: LineKind::Item,
        sku: Some(sku.into()),
        description: format!("{sku} part"),
        quantity,
        unit_price_minor,
        discount: None,
        tax_code: None,
        tax_minor: 0,
    }
}

/// Sets the totals to what the lines say.
pub fn fixed(mut s: InvoiceSnapshot) -> InvoiceSnapshot {
    s.totals = s.computed_totals().unwrap_or_default();
    s
}

/// A valid snapshot whose one line's quantity is `version` units: the
/// provider's copy shows which version it holds.
pub fn snapshot(invoice_id: &str, version: i64) -> InvoiceSnapshot {
    fixed(InvoiceSnapshot {
        schema_version: SNAPSHOT_SCHEMA_VERSION,
        invoice_id: invoice_id.into(),
        number: format!("N-{invoice_id}"),
        currency: Currency::parse("NZD").unwrap(),
        issued_on: NaiveDate::from_ymd_opt(2025, 3, 1).unwrap(),
        payment_terms: None,
        due_on: None,
        status: InvoiceStatus::Issued,
        customer: Customer {
            customer_id: "C1".into(),
            name: "Ann Rider".into(),
            email: None,
            phone: None,
        },
        lines: vec![line("L1", "TUBE-700", version * 1000, 1250)],
        discount: None,
        payments: vec![],
        totals: Totals::default(),
        sales_channel: None,
        location: None,
    })
}

/// The version a snapshot from [`snapshot`] carries.
pub fn version_of(s: &InvoiceSnapshot) -> i64 {
    s.lines.first().map_or(0, |l| l.quantity / 1000)
}

pub async fn tenant(pool: &PgPool, id: &str) {
    let mut c = pool.acquire().await.unwrap();
    ledger::create_tenant(
        &mut c,
        &NewTenant {
            id: id.into(),
            name: format!("{id} Cycles"),
            time_zone: "Pacific/Auckland".into(),
        },
    )
    .await
    .unwrap();
}

/// A tenant "shop" with one connection to `provider`, master toggle as given.
/// Automatic syncs run at once (no quiet period), so tests that drive jobs
/// step by step find them available; tests/quiet_period.rs covers the wait.
pub async fn connection(pool: &PgPool, provider: ProviderName, auto_sync: bool) -> i64 {
    let mut settings = ConnectionSettings::default_for(provider);
    settings.auto_sync = auto_sync;
    settings.quiet_period_ms = 0;
    connection_with(pool, settings).await
}

pub async fn connection_with(pool: &PgPool, settings: ConnectionSettings) -> i64 {
    tenant(pool, "shop").await;
    let mut c = pool.acquire().await.unwrap();
    ledger::create_connection(&mut c, "shop", &settings)
        .await
        .unwrap()
        .connection
        .id
}

/// What the recording provider holds for one external record.
#[derive(Debug, Clone)]
pub struct Record {
    pub invoice_id: String,
    pub snapshot: InvoiceSnapshot,
    pub voided: bool,
}

/// One call the provider answered (with a write or an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub op: &'static str,
    pub invoice_id: String,
    pub version: i64,
    pub idempotency_key: String,
    pub ok: bool,
}

#[derive(Default)]
struct State {
    next_id: u64,
    records: HashMap<String, Record>,
    by_key: HashMap<String, String>,
    calls: Vec<Call>,
    running: HashMap<String, usize>,
    max_running: usize,
    script: VecDeque<ProviderError>,
}

/// An in-memory provider: creates, updates in place, voids; idempotent by
/// key; counts concurrent calls per invoice; answers scripted errors first.
#[derive(Default)]
pub struct RecordingProvider {
    state: Mutex<State>,
    /// When set, every write waits for a permit (tests hold a write in flight).
    pub gate: Option<Arc<Semaphore>>,
    pub delay: Duration,
}

struct Running<'a> {
    p: &'a RecordingProvider,
    invoice_id: String,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut s = self.p.state.lock().unwrap();
        if let Some(n) = s.running.get_mut(&self.invoice_id) {
            *n -= 1;
        }
    }
}

impl RecordingProvider {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn gated(gate: Arc<Semaphore>) -> Arc<Self> {
        Arc::new(RecordingProvider {
            gate: Some(gate),
            ..Self::default()
        })
    }

    /// The next calls fail with these errors, in order.
    pub fn fail_next(&self, errors: impl IntoIterator<Item = ProviderError>) {
        self.state.lock().unwrap().script.extend(errors);
    }

    /// Writes that reached the provider and succeeded.
    pub fn writes(&self) -> Vec<Call> {
        let s = self.state.lock().unwrap();
        s.calls.iter().filter(|c| c.ok).cloned().collect()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn max_running(&self) -> usize {
        self.state.lock().unwrap().max_running
    }

    pub fn running(&self) -> usize {
        self.state.lock().unwrap().running.values().sum()
    }

    pub fn record(&self, external_id: &str) -> Option<Record> {
        self.state.lock().unwrap().records.get(external_id).cloned()
    }

    /// The live (not voided) records of an invoice.
    pub fn live_records(&self, invoice_id: &str) -> Vec<(String, Record)> {
        let s = self.state.lock().unwrap();
        let mut v: Vec<_> = s
            .records
            .iter()
            .filter(|(_, r)| r.invoice_id == invoice_id && !r.voided)
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Someone deleted the record in the provider's back office.
    pub fn delete(&self, external_id: &str) {
        self.state.lock().unwrap().records.remove(external_id);
    }

    async fn enter(&self, invoice_id: &str) -> Running<'_> {
        {
            let mut s = self.state.lock().unwrap();
            let n = s.running.entry(invoice_id.to_string()).or_default();
            *n += 1;
            let n = *n;
            s.max_running = s.max_running.max(n);
        }
        let guard = Running {
            p: self,
            invoice_id: invoice_id.to_string(),
        };
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        guard
    }

    fn result(id: &str, r: &Record, write: WriteKind) -> PushResult {
        PushResult {
            write,
            external: ExternalRef {
                external_id: id.to_string(),
                external_number: Some(format!("#{}", id.trim_start_matches("EXT-"))),
                url: Some(format!("https://pos.example.test/orders/{id}")),
            },
            line_count: u32::try_from(r.snapshot.lines.len()).unwrap(),
            total: r.snapshot.total(),
            external_status: if r.voided { "voided" } else { "draft" }.into(),
            customer: Some(ExternalRef {
                external_id: format!("CUS-{}", r.snapshot.customer.customer_id),
                external_number: None,
                url: None,
            }),
            replaced: None,
            items: Vec::new(),
            settled_intents: Vec::new(),
        }
    }

    fn log(s: &mut State, op: &'static str, snap: &InvoiceSnapshot, key: &str, ok: bool) {
        s.calls.push(Call {
            op,
            invoice_id: snap.invoice_id.clone(),
            version: version_of(snap),
            idempotency_key: key.to_string(),
            ok,
        });
    }
}

impl Provider for RecordingProvider {
    fn upsert_invoice<'a>(
        &'a self,
        req: UpsertInvoiceRequest<'a>,
    ) -> ProviderFuture<'a, PushResult> {
        Box::pin(async move {
            let _running = self.enter(&req.snapshot.invoice_id).await;
            let mut s = self.state.lock().unwrap();
            if let Some(e) = s.script.pop_front() {
                Self::log(&mut s, "upsert", req.snapshot, req.idempotency_key, false);
                return Err(e);
            }
            Self::log(&mut s, "upsert", req.snapshot, req.idempotency_key, true);
            let existing = match (req.mode, req.existing) {
                (UpsertMode::CreateOrUpdate, Some(e)) => Some(e.external_id.clone()),
                _ => s.by_key.get(req.idempotency_key).cloned(),
            };
            let record = Record {
                invoice_id: req.snapshot.invoice_id.clone(),
                snapshot: req.snapshot.clone(),
                voided: false,
            };
            match existing {
                Some(id) => {
                    if !s.records.contains_key(&id) {
                        if let Some(c) = s.calls.last_mut() {
                            c.ok = false;
                        }
                        return Err(ProviderError::NotFound {
                            message: format!("order {id} does not exist"),
                            raw: Some(format!("404 order {id} not found")),
                        });
                    }
                    s.records.insert(id.clone(), record.clone());
                    Ok(Self::result(&id, &record, WriteKind::UpdatedInPlace))
                }
                None => {
                    s.next_id += 1;
                    let id = format!("EXT-{}", s.next_id);
                    s.records.insert(id.clone(), record.clone());
                    s.by_key.insert(req.idempotency_key.to_string(), id.clone());
                    Ok(Self::result(&id, &record, WriteKind::Created))
                }
            }
        })
    }

    fn void_order<'a>(&'a self, req: VoidOrderRequest<'a>) -> ProviderFuture<'a, PushResult> {
        Box::pin(async move {
            let _running = self.enter(&req.snapshot.invoice_id).await;
            let mut s = self.state.lock().unwrap();
            if let Some(e) = s.script.pop_front() {
                Self::log(&mut s, "void", req.snapshot, req.idempotency_key, false);
                return Err(e);
            }
            Self::log(&mut s, "void", req.snapshot, req.idempotency_key, true);
            let id = req.existing.external_id.clone();
            match s.records.get_mut(&id) {
                Some(r) if !r.voided => {
                    r.voided = true;
                    let r = r.clone();
                    Ok(Self::result(&id, &r, WriteKind::Voided))
                }
                Some(r) => {
                    let r = r.clone();
                    Ok(Self::result(&id, &r, WriteKind::AlreadyVoided))
                }
                None => {
                    let r = Record {
                        invoice_id: req.snapshot.invoice_id.clone(),
                        snapshot: req.snapshot.clone(),
                        voided: true,
                    };
                    Ok(Self::result(&id, &r, WriteKind::AlreadyVoided))
                }
            }
        })
    }

    fn complete_draft<'a>(&'a self, _: CompleteDraftRequest<'a>) -> ProviderFuture<'a, PushResult> {
        Box::pin(async { Err(ProviderError::permanent("not used in these tests", None)) })
    }

    fn apply_payment<'a>(
        &'a self,
        _: PushPaymentRequest<'a>,
    ) -> ProviderFuture<'a, PaymentOutcome> {
        Box::pin(async { Err(ProviderError::permanent("not used in these tests", None)) })
    }

    fn sync_customer<'a>(
        &'a self,
        _: SyncCustomerRequest<'a>,
    ) -> ProviderFuture<'a, Option<ExternalRef>> {
        Box::pin(async { Err(ProviderError::permanent("not used in these tests", None)) })
    }
}

/// Unused import guard for `DateTime` in helpers some test files use.
pub fn epoch() -> DateTime<chrono::Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}
