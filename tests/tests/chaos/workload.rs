//! The host's side of a chaos run: invoices planned up front from a seed,
//! then played through the client API (`ledger::record_trigger` in the
//! host's own transaction) — created, edited in bursts, paid in one or two
//! payments, partly paid, or cancelled. What the host last saved is kept,
//! because the invariants compare the provider's record with it.
//!
//! Must not read or change anything a worker owns: only triggers are written.

use std::time::{Duration, Instant};

use chrono::Utc;
use ledgerflow_client::ledger::{self, LedgerError, TriggerRequest};
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
    pub customer: (String, String),
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

/// Plans invoices round-robin over `tenants` until they record `target` triggers.
/// Tenants below `shopify_tenants` use Shopify: their invoices are never
/// paid through a trigger (Shopify settles payments by completing the draft,
/// a step of its own), only created, edited, cancelled or left open.
pub fn plan(
    rng: &mut Rng,
    tenants: usize,
    shopify_tenants: usize,
    target: usize,
    drive: Duration,
) -> Vec<InvoicePlan> {
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
        let ending = match ending {
            Ending::Paid { .. } | Ending::PartlyPaid if tenant < shopify_tenants => Ending::Open,
            e => e,
        };
        let p = InvoicePlan {
            tenant,
            invoice_id: format!("INV-{tenant}-{n}"),
            customer: (
                format!("CUST-{tenant}-{c}"),
                format!("Customer {c} of shop {tenant}"),
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
}

pub type HostError = Box<dyn std::error::Error + Send + Sync>;

/// Records one trigger in its own transaction, as the host saves the
/// invoice. A database error (PostgreSQL restarting) is retried for up to a
/// minute: the host's own save would be retried the same way.
async fn record(
    pool: &PgPool,
    connection_id: i64,
    trigger: Trigger,
    snap: &InvoiceSnapshot,
) -> Result<(), HostError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let attempt: Result<(), HostError> = async {
            let mut tx = pool.begin().await?;
            ledger::record_trigger(
                &mut tx,
                &TriggerRequest {
                    connection_id,
                    trigger,
                    label: None,
                    snapshot: snap,
                    action_override: None,
                },
            )
            .await?;
            tx.commit().await?;
            Ok(())
        }
        .await;
        match attempt {
            Ok(()) => return Ok(()),
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

/// Plays one invoice's story; returns what the host last saved.
pub async fn play(
    pool: PgPool,
    connection_id: i64,
    mut p: InvoicePlan,
) -> Result<HostInvoice, HostError> {
    tokio::time::sleep(p.start_after).await;
    let rng = &mut p.rng;
    let customer = (p.customer.0.as_str(), p.customer.1.as_str());
    let mut lines = vec![gst_line(
        "L1",
        "SVC",
        "Workshop service",
        1,
        2_000 + rng.below(20_000) as i64,
    )];
    let build = |lines: &[_]| snapshot(&p.invoice_id, &p.invoice_id, customer, lines.to_vec());
    let mut snap = build(&lines)?;
    record(&pool, connection_id, Trigger::JobCreated, &snap).await?;
    let mut triggers = 1;
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
        record(&pool, connection_id, Trigger::ItemsChanged, &snap).await?;
        triggers += 1;
        tokio::time::sleep(rng.millis(0, 60)).await;
    }
    tokio::time::sleep(rng.millis(200, 3_000)).await;

    let total = snap.totals.total;
    match p.ending {
        Ending::Open => {}
        Ending::Paid { split: false } => {
            snap.payments
                .push(payment(format!("{}-P1", p.invoice_id), total));
            snap.status = InvoiceStatus::Paid;
            record(&pool, connection_id, Trigger::InvoicePaid, &snap).await?;
            triggers += 1;
        }
        Ending::Paid { split: true } => {
            let first = total * 2 / 5;
            snap.payments
                .push(payment(format!("{}-P1", p.invoice_id), first));
            snap.status = InvoiceStatus::PartiallyPaid;
            record(&pool, connection_id, Trigger::PaymentAdded, &snap).await?;
            tokio::time::sleep(rng.millis(0, 2_500)).await;
            snap.payments
                .push(payment(format!("{}-P2", p.invoice_id), total - first));
            snap.status = InvoiceStatus::Paid;
            record(&pool, connection_id, Trigger::PaymentAdded, &snap).await?;
            triggers += 2;
        }
        Ending::PartlyPaid => {
            snap.payments
                .push(payment(format!("{}-P1", p.invoice_id), (total / 3).max(1)));
            snap.status = InvoiceStatus::PartiallyPaid;
            record(&pool, connection_id, Trigger::PaymentAdded, &snap).await?;
            triggers += 1;
        }
        Ending::Cancelled => {
            snap.status = InvoiceStatus::Cancelled;
            record(&pool, connection_id, Trigger::JobCancelled, &snap).await?;
            triggers += 1;
        }
    }
    Ok(HostInvoice {
        connection_id,
        last: snap,
        ending: p.ending,
        triggers,
    })
}
