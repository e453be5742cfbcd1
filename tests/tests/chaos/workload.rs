//! The host's side of a chaos run: invoices planned up front from a seed,
//! then played through the host entry point (`ledger::on_host_trigger` in
//! the host's own transaction, so each trigger starts the sync chain a real
//! host gets: customer → invoice → one step per payment on Xero, → complete
//! draft on a Shopify draft store once paid in full, void on cancel) —
//! created, edited in bursts, paid in one or two payments, partly paid, or
//! cancelled. What the host last saved is kept, because the invariants
//! compare the provider's record with it, and so are the chains' steps.
//!
//! Must not read or change anything a worker owns: only triggers are written.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use ledgerflow_client::ledger::{self, ChainStarted, HostTrigger, LedgerError};
use ledgerflow_client::settings::Trigger;
use ledgerflow_worker::sandbox::{gst_line, snapshot};
use ledgerflow_workflows::invoice::{InvoiceSnapshot, InvoiceStatus, Payment};
use sqlx::PgPool;

/// A small seeded generator (SplitMix64): a run is replayed from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi.saturating_sub(lo).max(1)))
    }
    pub fn fork(&mut self) -> Rng {
        Rng(self.next_u64())
    }
}

/// How an invoice's story ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Left open (Authorised, unpaid).
    Open,
    /// Paid in full, in one payment or in two.
    Paid { split: bool },
    /// One payment of about a third.
    PartlyPaid,
    /// Cancelled before any payment: the record must be voided (or never made).
    Cancelled,
}

#[derive(Debug, Clone)]
pub struct InvoicePlan {
    pub tenant: usize,
    pub invoice_id: String,
    /// Id, name, and e-mail address (none for one customer in four).
    pub customer: (String, String, Option<String>),
    pub start_after: Duration,
    pub edits: u32,
    pub ending: Ending,
    pub rng: Rng,
}

impl InvoicePlan {
    /// Triggers this plan records.
    pub fn triggers(&self) -> usize {
        1 + self.edits as usize
            + match self.ending {
                Ending::Open => 0,
                Ending::Paid { split: true } => 2,
                Ending::Paid { split: false } | Ending::PartlyPaid | Ending::Cancelled => 1,
            }
    }
}

impl Ending {
    /// Whether the host's last snapshot is paid in full.
    pub fn paid_in_full(self) -> bool {
        matches!(self, Ending::Paid { .. })
    }
}

/// Plans invoices round-robin over `tenants` until they record `target`
/// triggers. Every tenant's invoices get every ending: on a Shopify draft
/// store a paid-in-full invoice's chain completes the draft, on an order
/// store each sync cancels and replaces the order. Three customers in four
/// have an e-mail address; the fourth has none, as walk-in customers often
/// don't (Shopify finds customers by e-mail).
pub fn plan(rng: &mut Rng, tenants: usize, target: usize, drive: Duration) -> Vec<InvoicePlan> {
    let mut plans = Vec::new();
    let mut total = 0;
    let window = drive.as_millis() as u64 * 3 / 4;
    while total < target {
        let n = plans.len();
        let tenant = n % tenants;
        let c = rng.below(4);
        let ending = match rng.below(20) {
            0..=4 => Ending::Paid { split: false },
            5..=7 => Ending::Paid { split: true },
            8..=11 => Ending::PartlyPaid,
            12..=15 => Ending::Cancelled,
            _ => Ending::Open,
        };
        let p = InvoicePlan {
            tenant,
            invoice_id: format!("INV-{tenant}-{n}"),
            customer: (
                format!("CUST-{tenant}-{c}"),
                format!("Customer {c} of shop {tenant}"),
                (c != 3).then(|| format!("rider-{tenant}-{c}@example.com")),
            ),
            start_after: Duration::from_millis(rng.below(window)),
            edits: 1 + rng.below(8) as u32,
            ending,
            rng: rng.fork(),
        };
        total += p.triggers();
        plans.push(p);
    }
    plans
}

/// What the host ended with for one invoice.
#[derive(Debug, Clone)]
pub struct HostInvoice {
    pub connection_id: i64,
    pub last: InvoiceSnapshot,
    pub ending: Ending,
    pub triggers: usize,
    /// Chains its triggers started, and their steps by kind ("customer",
    /// "invoice", "payment", "complete draft", "void").
    pub chains: usize,
    pub steps: BTreeMap<&'static str, usize>,
}

/// The kind of a chain's step, from its name ("payment P-1" → "payment").
fn step_kind(name: &str) -> &'static str {
    ["customer", "invoice", "payment", "complete draft", "void"]
        .into_iter()
        .find(|k| name.starts_with(k))
        .unwrap_or("other")
}

/// Tallies what one trigger started on the tenant's connections.
#[derive(Debug, Default)]
struct Chains {
    triggers: usize,
    chains: usize,
    steps: BTreeMap<&'static str, usize>,
}

impl Chains {
    fn add(&mut self, started: &[ChainStarted]) {
        self.triggers += 1;
        for c in started {
            self.chains += usize::from(c.run_id.is_some());
            for s in &c.steps {
                *self.steps.entry(step_kind(s)).or_default() += 1;
            }
        }
    }
}

pub type HostError = Box<dyn std::error::Error + Send + Sync>;

/// Records one trigger in its own transaction through the host entry
/// point, as the host saves the invoice: the event on each of the tenant's
/// connections and the chain each sync needs. A database error
/// (PostgreSQL restarting, or the test's pool out of connections for longer
/// than its 30 s acquire timeout on a loaded machine) is retried for up to
/// three minutes: the host's own save would be retried the same way.
async fn record(
    pool: &PgPool,
    tenant_id: &str,
    trigger: Trigger,
    snap: &InvoiceSnapshot,
) -> Result<Vec<ChainStarted>, HostError> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let attempt: Result<Vec<ChainStarted>, HostError> = async {
            let mut tx = pool.begin().await?;
            let started = ledger::on_host_trigger(
                &mut tx,
                &HostTrigger {
                    tenant_id,
                    trigger,
                    label: None,
                    snapshot: snap,
                    action_override: None,
                },
            )
            .await?;
            tx.commit().await?;
            Ok(started)
        }
        .await;
        match attempt {
            Ok(started) => {
                // Every connection here syncs automatically: a trigger
                // recorded as skipped would leave its invoice behind.
                if let Some(s) = started.iter().find(|s| s.run_id.is_none()) {
                    return Err(format!(
                        "{} on connection {}: recorded as {:?}, not synced",
                        snap.invoice_id, s.connection_id, s.event.status
                    )
                    .into());
                }
                return Ok(started);
            }
            Err(e) if Instant::now() < deadline && is_database(&*e) => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn is_database(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<sqlx::Error>().is_some()
        || matches!(
            e.downcast_ref::<LedgerError>(),
            Some(LedgerError::Database(_))
        )
}

fn payment(id: String, amount_minor: i64) -> Payment {
    Payment {
        payment_id: id,
        amount_minor,
        currency: None,
        paid_at: Utc::now(),
        method: Some("eftpos".into()),
        reference: None,
    }
}

/// Plays one invoice's story on `tenant_id` (whose one connection is
/// `connection_id`); returns what the host last saved.
pub async fn play(
    pool: PgPool,
    tenant_id: String,
    connection_id: i64,
    mut p: InvoicePlan,
) -> Result<HostInvoice, HostError> {
    tokio::time::sleep(p.start_after).await;
    let rng = &mut p.rng;
    let customer = (p.customer.0.as_str(), p.customer.1.as_str());
    let email = p.customer.2.clone();
    let tenant = tenant_id.as_str();
    let mut chains = Chains::default();
    let mut lines = vec![gst_line(
        "L1",
        "SVC",
        "Workshop service",
        1,
        2_000 + rng.below(20_000) as i64,
    )];
    let build = |lines: &[_]| {
        snapshot(&p.invoice_id, &p.invoice_id, customer, lines.to_vec()).map(|mut s| {
            s.customer.email = email.clone();
            s
        })
    };
    let mut snap = build(&lines)?;
    chains.add(&record(&pool, tenant, Trigger::JobCreated, &snap).await?);
    tokio::time::sleep(rng.millis(0, 1_500)).await;

    // The mechanic's burst of saves.
    for _ in 0..p.edits {
        if lines.len() < 5 && rng.below(3) == 0 {
            let n = lines.len() + 1;
            lines.push(gst_line(
                &format!("L{n}"),
                &format!("PART-{n}"),
                "Part",
                1 + rng.below(3) as i64,
                99 + rng.below(9_000) as i64,
            ));
        } else {
            let i = rng.below(lines.len() as u64) as usize;
            let l = &lines[i];
            lines[i] = gst_line(
                &l.line_id,
                l.sku.as_deref().unwrap_or("SKU"),
                &l.description,
                1 + rng.below(4) as i64,
                l.unit_price_minor,
            );
        }
        snap = build(&lines)?;
        chains.add(&record(&pool, tenant, Trigger::ItemsChanged, &snap).await?);
        tokio::time::sleep(rng.millis(0, 60)).await;
    }
    tokio::time::sleep(rng.millis(200, 3_000)).await;

    let total = snap.totals.total;
    // The host numbers payments per invoice (P1, P2 on every invoice), as a
    // bike shop's booking app does: a payment id is unique only within its
    // invoice.
    match p.ending {
        Ending::Open => {}
        Ending::Paid { split: false } => {
            snap.payments.push(payment("P1".to_string(), total));
            snap.status = InvoiceStatus::Paid;
            chains.add(&record(&pool, tenant, Trigger::InvoicePaid, &snap).await?);
        }
        Ending::Paid { split: true } => {
            let first = total * 2 / 5;
            snap.payments.push(payment("P1".to_string(), first));
            snap.status = InvoiceStatus::PartiallyPaid;
            chains.add(&record(&pool, tenant, Trigger::PaymentAdded, &snap).await?);
            tokio::time::sleep(rng.millis(0, 2_500)).await;
            snap.payments.push(payment("P2".to_string(), total - first));
            snap.status = InvoiceStatus::Paid;
            chains.add(&record(&pool, tenant, Trigger::PaymentAdded, &snap).await?);
        }
        Ending::PartlyPaid => {
            snap.payments
                .push(payment("P1".to_string(), (total / 3).max(1)));
            snap.status = InvoiceStatus::PartiallyPaid;
            chains.add(&record(&pool, tenant, Trigger::PaymentAdded, &snap).await?);
        }
        Ending::Cancelled => {
            snap.status = InvoiceStatus::Cancelled;
            chains.add(&record(&pool, tenant, Trigger::JobCancelled, &snap).await?);
        }
    }
    Ok(HostInvoice {
        connection_id,
        last: snap,
        ending: p.ending,
        triggers: chains.triggers,
        chains: chains.chains,
        steps: chains.steps,
    })
}
