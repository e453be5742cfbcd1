//! A local simulator of QuickBooks Online's Accounting API (feature
//! `sandbox`), on the sim kit: companies (realms) with customers, items,
//! invoices and payments, each with a SyncToken that every write bumps
//! (applying a payment bumps its invoice's); `requestid` replay (the first
//! answer again, even for an entity deleted since); unique DisplayName
//! (6240) and DocNumber (6140); Fault-shaped errors; 500 a minute and 10
//! at once per company (429 + Fault 003001); the token endpoint with
//! rotating refresh tokens and `x_refresh_token_hard_expires_in`; and the
//! usual faults (500/503, 429, latency, expired token, drop after commit,
//! HTML where JSON was expected, any Fault code); change data capture and
//! signed webhook deliveries (legacy or CloudEvents) from each company's
//! change log; payments a person records in QuickBooks.
//!
//! A company's chart (accounts, tax codes and rates) and history
//! (customers, invoices) can be seeded in bulk for first syncs; queries page
//! with `STARTPOSITION` / `MAXRESULTS` as Intuit's do ([`query`]).
//!
//! Deliberate simplifications: queries understand `select * from <Entity>
//! where <Field> = '<v>'` and `in (...)` only; US sales tax is one rate for
//! the company's taxable lines (or our `TotalTax` when no rate is set);
//! Canada / Global tax is our `TotalTax` when sent, else each line's
//! TaxCode rate; a voided invoice keeps its lines, with total and balance
//! zero and `PrivateNote` "Voided". Never used by production code paths.

mod answers;
mod cdc;
mod chart;
mod query;
mod records;
mod seed;
mod server;
mod state;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ledgerflow_workflows::settings::QuickBooksRegion;

pub use cdc::WebhookFormat;
pub use chart::{Chart, SimAccount, SimTaxCode};
pub use seed::{SeedCustomer, SeedInvoice};
use state::Inner;
pub use state::{ChangeRecord, Company};

use crate::quickbooks::wire;
use crate::sim::clock::Clock;
use crate::sim::faults::{Common, Fault, Faults};
use crate::sim::oauth::{TokenConfig, TokenSet, Tokens};
use crate::sim::replay::Replays;

/// The simulator's limits and token lifetimes.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub token: TokenConfig,
    /// Calls a minute per company (Intuit: 500).
    pub minute_limit: u32,
    /// Calls at once per company (Intuit: 10).
    pub concurrency_limit: u32,
    /// Whether a 429 carries Retry-After (Intuit's presence is unverified).
    pub retry_after_header: bool,
    /// US companies: the sales tax rate QuickBooks applies to taxable
    /// lines; `None` takes our `TotalTax`.
    pub us_sales_tax_bps: Option<i64>,
    /// `x_refresh_token_hard_expires_in` of every token answer.
    pub refresh_hard_expires_in: i64,
    /// What a TimeActivity create answers in a company without Payroll:
    /// the Fault's code and Detail (Intuit's real words are unverified;
    /// the adapter's `PayrollFault` reads this default).
    pub payroll_fault: (String, String),
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            token: TokenConfig {
                access_token_ttl: chrono::Duration::seconds(3600),
                refresh_ttl: chrono::Duration::days(100),
                ..TokenConfig::default()
            },
            minute_limit: 500,
            concurrency_limit: 10,
            retry_after_header: true,
            us_sales_tax_bps: None,
            refresh_hard_expires_in: 5 * 365 * 86_400,
            payroll_fault: (
                "6000".into(),
                "Business Validation Error: QuickBooks Payroll is not set up for this company; time for employees needs a QuickBooks Payroll subscription".into(),
            ),
        }
    }
}

/// The faults this simulator understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// 500/503, 429, latency, expired token, drop after commit.
    Common(Common),
    /// An HTML page with this status where JSON was expected (a proxy).
    Html(u16),
    /// A Fault with this status and code ("5010", "6190", ...).
    Fault { status: u16, code: String },
}

impl FaultKind {
    pub fn status(status: u16) -> FaultKind {
        FaultKind::Common(Common::Status(status))
    }
    pub fn rate_limit(retry_after: u64) -> FaultKind {
        FaultKind::Common(Common::RateLimit { retry_after })
    }
    pub fn drop_after_commit() -> FaultKind {
        FaultKind::Common(Common::DropAfterCommit)
    }
    pub fn expired_token() -> FaultKind {
        FaultKind::Common(Common::ExpiredToken)
    }
    pub fn latency(d: Duration) -> FaultKind {
        FaultKind::Common(Common::Latency(d))
    }
    pub fn fault(status: u16, code: &str) -> FaultKind {
        FaultKind::Fault {
            status,
            code: code.to_string(),
        }
    }
}

/// Counters for assertions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    pub requests: u64,
    /// 429s answered because a limit was exceeded (not injected).
    pub throttled: u64,
    pub replays: u64,
    pub invoice_creates: u64,
    pub customer_creates: u64,
    pub payment_creates: u64,
    pub stale_refusals: u64,
    pub max_in_flight: u32,
}

/// A running simulator. Dropping it stops it.
pub struct Simulator {
    shared: Arc<Mutex<Inner>>,
    server: crate::sim::server::Server,
}

type Shared = Arc<Mutex<Inner>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Inner> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

impl Simulator {
    pub async fn start(config: SimConfig) -> std::io::Result<Simulator> {
        Simulator::start_on("127.0.0.1:0", config).await
    }

    pub async fn start_on(addr: &str, config: SimConfig) -> std::io::Result<Simulator> {
        let shared = Arc::new(Mutex::new(Inner {
            tokens: Tokens::new(config.token.clone()),
            config,
            clock: Clock::default(),
            faults: Faults::default(),
            replays: Replays::default(),
            companies: Default::default(),
            stats: SimStats::default(),
            next_realm: 9_130_000_000,
        }));
        let server =
            crate::sim::server::Server::start(addr, shared.clone(), server::handle).await?;
        Ok(Simulator { shared, server })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.shared)
    }

    /// The API base URL (`/v3/company/{realm}` follows).
    pub fn api_base_url(&self) -> String {
        self.server.base_url()
    }

    /// The identity base URL (the token endpoint is below it).
    pub fn identity_base_url(&self) -> String {
        self.server.base_url()
    }

    /// A new company; its realm id.
    pub fn add_company(&self, name: &str, region: QuickBooksRegion) -> String {
        let mut s = self.inner();
        s.next_realm += 1;
        let realm = s.next_realm.to_string();
        let limit = s.config.minute_limit;
        s.companies
            .insert(realm.clone(), Company::new(name, region, limit));
        realm
    }

    /// A consent for `realm`: a fresh token set.
    pub fn authorize(&self, realm: &str) -> TokenSet {
        let mut s = self.inner();
        let now = s.clock.now();
        s.tokens.mint(realm.to_string(), now)
    }

    /// Changes a company (payroll, tax codes, usable).
    pub fn with_company<T>(&self, realm: &str, f: impl FnOnce(&mut Company) -> T) -> Option<T> {
        self.inner().companies.get_mut(realm).map(f)
    }

    pub fn push(&self, fault: Fault<FaultKind>) {
        self.inner().faults.push(fault);
    }

    /// Drops the faults not met yet (the chaos run settles without them).
    pub fn clear_faults(&self) {
        self.inner().faults.clear();
    }

    pub fn pending_faults(&self) -> usize {
        self.inner().faults.pending()
    }

    pub fn stats(&self) -> SimStats {
        self.inner().stats
    }

    pub fn refresh_requests(&self) -> u64 {
        self.inner().tokens.stats.refresh_requests
    }

    /// The most any refresh token was honoured.
    pub fn max_refresh_token_uses(&self) -> u32 {
        self.inner().tokens.max_refresh_token_uses()
    }

    /// Every spent refresh token presented again and honoured.
    pub fn refresh_replays(&self) -> Vec<crate::sim::oauth::Replay> {
        self.inner().tokens.replays()
    }

    pub fn revoke_refresh_tokens(&self) {
        let mut s = self.inner();
        let now = s.clock.now();
        s.tokens.revoke_refresh_tokens(now);
    }

    pub fn advance(&self, by: chrono::Duration) {
        self.inner().clock.advance(by);
    }

    pub fn invoices(&self, realm: &str) -> Vec<wire::Invoice> {
        self.with_company(realm, |c| c.invoices.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn customers(&self, realm: &str) -> Vec<wire::Customer> {
        self.with_company(realm, |c| c.customers.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn payments(&self, realm: &str) -> Vec<wire::Payment> {
        self.with_company(realm, |c| c.payments.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn items(&self, realm: &str) -> Vec<wire::Item> {
        self.with_company(realm, |c| c.items.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Prices an invoice body as a create in this company would (line
    /// checks, tax, TotalAmt, and Balance after `paid`), without HTTP or
    /// storing it: the property test prices thousands this way. `paid` is
    /// at 2 dp, as every amount the simulator keeps. The error
    /// is the Fault body the create would answer.
    pub fn price(&self, realm: &str, inv: &mut wire::Invoice, paid: i64) -> Result<(), String> {
        let us_rate = self.inner().config.us_sales_tax_bps;
        self.with_company(realm, |c| records::price(c, inv, us_rate, paid))
            .ok_or_else(|| format!("no company {realm}"))?
            .map_err(|a| a.body)
    }

    /// Calls the company's limits admitted (429s not counted).
    pub fn calls_counted(&self, realm: &str) -> u64 {
        self.with_company(realm, |c| c.calls).unwrap_or(0)
    }

    /// A customer a person made in QuickBooks.
    pub fn add_customer(&self, realm: &str, display_name: &str, notes: Option<&str>) -> String {
        self.with_company(realm, |c| {
            let id = c.next_id();
            c.customers.insert(
                id,
                wire::Customer {
                    id: Some(id.to_string()),
                    sync_token: Some("0".into()),
                    display_name: display_name.into(),
                    notes: notes.map(str::to_string),
                    active: Some(true),
                    ..wire::Customer::default()
                },
            );
            id.to_string()
        })
        .unwrap_or_default()
    }

    /// Someone edits the invoice in QuickBooks: its SyncToken moves.
    pub fn touch_invoice(&self, realm: &str, id: &str) {
        self.with_company(realm, |c| {
            if let Some(i) = state::id_of(id).and_then(|k| c.invoices.get_mut(&k)) {
                i.sync_token = state::bump(&i.sync_token);
            }
        });
    }

    /// An employee someone added in QuickBooks; its id.
    pub fn add_employee(&self, realm: &str, display_name: &str) -> String {
        self.with_company(realm, |c| {
            let id = c.next_id();
            c.employees.insert(
                id,
                wire::Employee {
                    id: Some(id.to_string()),
                    sync_token: Some("0".into()),
                    display_name: display_name.into(),
                    active: Some(true),
                },
            );
            id.to_string()
        })
        .unwrap_or_default()
    }

    pub fn time_activities(&self, realm: &str) -> Vec<wire::TimeActivity> {
        self.with_company(realm, |c| c.time_activities.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Someone records a payment of `amount_minor` (cents) against the
    /// invoice in QuickBooks; its id. `None` when there is no such invoice.
    pub fn receive_payment(
        &self,
        realm: &str,
        invoice_id: &str,
        amount_minor: i64,
    ) -> Option<String> {
        let mut s = self.inner();
        let now = s.clock.now();
        let c = s.companies.get_mut(realm)?;
        let key = state::id_of(invoice_id)?;
        let paid = c.invoices.get(&key)?;
        let (customer, currency) = (paid.customer_ref.clone(), paid.currency_ref.clone());
        c.now = now;
        let id = c.next_id();
        let amount = crate::kit::decimal::Decimal::from_scaled(amount_minor, 2);
        let body = wire::Payment {
            id: Some(id.to_string()),
            sync_token: Some("0".into()),
            customer_ref: customer,
            currency_ref: currency,
            total_amt: Some(amount.clone()),
            txn_date: Some(now.date_naive().to_string()),
            line: vec![wire::PaymentLine {
                amount,
                linked_txn: vec![wire::LinkedTxn {
                    txn_id: invoice_id.to_string(),
                    txn_type: "Invoice".into(),
                }],
            }],
            ..wire::Payment::default()
        };
        records::apply_payment(c, id, body, vec![(key, amount_minor)]);
        Some(id.to_string())
    }

    /// Someone changes a payment's amount in QuickBooks (Intuit allows it;
    /// a payment of one invoice line): the invoice it pays owes the
    /// difference, and the payment's and the invoice's SyncTokens move.
    /// `false` when there is no such payment.
    pub fn change_payment_amount(&self, realm: &str, payment_id: &str, amount_minor: i64) -> bool {
        let mut s = self.inner();
        let now = s.clock.now();
        let Some(c) = s.companies.get_mut(realm) else {
            return false;
        };
        c.now = now;
        let Some(key) = state::id_of(payment_id) else {
            return false;
        };
        let Some(p) = c.payments.get_mut(&key) else {
            return false;
        };
        let Some(line) = p.line.first_mut() else {
            return false;
        };
        let amount = crate::kit::decimal::Decimal::from_scaled(amount_minor, 2);
        let before = line.amount.to_scaled(2).unwrap_or(0);
        line.amount = amount.clone();
        let paid: Vec<String> = line
            .linked_txn
            .iter()
            .filter(|t| t.txn_type == "Invoice")
            .map(|t| t.txn_id.clone())
            .collect();
        p.total_amt = Some(amount);
        p.sync_token = state::bump(&p.sync_token);
        for id in paid {
            if let Some(inv) = state::id_of(&id).and_then(|k| c.invoices.get_mut(&k)) {
                let balance = inv
                    .balance
                    .as_ref()
                    .and_then(|b| b.to_scaled(2).ok())
                    .unwrap_or(0);
                inv.balance = Some(crate::kit::decimal::Decimal::from_scaled(
                    balance + before - amount_minor,
                    2,
                ));
                inv.sync_token = state::bump(&inv.sync_token);
                c.changes.push(ChangeRecord {
                    at: now,
                    entity: "Invoice",
                    id,
                    operation: "Update",
                });
            }
        }
        c.changed("Payment", payment_id, "Update");
        true
    }

    /// The changes of a company so far, oldest first.
    pub fn changes(&self, realm: &str) -> Vec<ChangeRecord> {
        self.with_company(realm, |c| c.changes.clone())
            .unwrap_or_default()
    }

    /// The next webhook delivery: every change not yet delivered, of every
    /// company, in `format`; `None` when there is none. Marks them
    /// delivered (a lost delivery is what the change data capture pull is for).
    pub fn next_webhook(&self, format: WebhookFormat) -> Option<Vec<u8>> {
        let mut s = self.inner();
        cdc::next_delivery(s.companies.iter_mut(), format)
    }

    /// Sends [`Simulator::next_webhook`] to `url`, signed with the
    /// verifier token as Intuit signs (`intuit-signature`); the receiver's
    /// status, or `None` when there was nothing to send.
    pub async fn send_webhook(
        &self,
        url: &str,
        verifier_token: &[u8],
        format: WebhookFormat,
    ) -> Result<Option<u16>, reqwest::Error> {
        let Some(body) = self.next_webhook(format) else {
            return Ok(None);
        };
        let signature = crate::quickbooks::webhook::sign(verifier_token, &body);
        let answer = reqwest::Client::new()
            .post(url)
            .header(crate::quickbooks::webhook::SIGNATURE_HEADER, signature)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        Ok(Some(answer.status().as_u16()))
    }

    /// Someone deletes the invoice in QuickBooks.
    pub fn delete_invoice(&self, realm: &str, id: &str) {
        self.with_company(realm, |c| {
            state::id_of(id).and_then(|k| c.invoices.remove(&k));
        });
    }
}
