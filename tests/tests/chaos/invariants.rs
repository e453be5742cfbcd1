//! What must hold after a chaos run, checked against the Xero simulator's
//! state and the ledger's tables:
//!
//! - every invoice's Xero record exists exactly once (voided, deleted or
//!   never made when cancelled) and equals the host's last snapshot to the
//!   cent (totals, tax, lines, status, amount paid);
//! - Shopify draft stores (complete draft when paid): an invoice paid in
//!   full is exactly one paid order, made by completing its one draft once,
//!   never a second order; any other is exactly one open draft; Shopify
//!   order stores: exactly one live order per invoice (the ones it replaced
//!   cancelled); each equal to the last snapshot to the cent (subtotal,
//!   tax, total, lines) and linked; nothing live once cancelled;
//! - Saledock accounts (`saledock.rs`): exactly one standing sales order
//!   per invoice (only void ones, or none, once cancelled), linked, equal
//!   to the last snapshot to the cent;
//! - Lightspeed R-Series and X-Series stores (`lightspeed.rs`): exactly one
//!   standing sale per invoice, linked, lines, tax, total and payments
//!   equal to the last snapshot to the cent, layaway flags and layby /
//!   closed statuses as the settings say, voided once cancelled;
//! - QuickBooks companies (`quickbooks.rs`): exactly one standing invoice
//!   per invoice (none once cancelled), linked, total and balance equal to
//!   the last snapshot to the cent, no payment twice, no refresh token
//!   used twice but after a lost answer;
//! - no payment applied twice, none missing, each linked once;
//! - no contact made twice for one host customer (archived ones aside: the
//!   run archives and merges contacts as a person in Xero would);
//! - every sync event ended synced, superseded, skipped, or failed with a
//!   permanent reason; no sync job left;
//! - no job a killed worker held waited past lease + rescue interval (plus
//!   a claim allowance) for its next claim;
//! - no refresh token spent twice (Xero and QuickBooks replay one whose
//!   answer a kill or the restart lost: [`replays`]), none refused, every
//!   connection active;
//! - no worker process died on its own (one that could not start because
//!   the shared PostgreSQL server refused it connections is reported and
//!   restarted instead).
//!
//! Must only read: nothing here changes the ledger or the simulator.
//!
//! | file | owns |
//! | --- | --- |
//! | `invariants.rs` | the checks against Xero, the ledger, the queue and the run's processes; the per-provider checks' calls |
//! | [`shopify`] | the Shopify stores' checks |
//! | [`report`] | rendering the report |
//! | [`replays`] | refresh tokens honoured twice: only after a lost answer |

pub(crate) mod replays;
mod report;
mod shopify;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use ledgerflow_adapters::decimal::Decimal;
use ledgerflow_adapters::xero::wire::{self, status};
use sqlx::PgPool;

use crate::workload::Ending;
use crate::world::{Outcome, ShopKind};
use shopify::check_shopify;

/// A killed worker's job may wait lease + rescue interval for the rescuer,
/// plus this long to be claimed by a live worker on a loaded machine.
const CLAIM_ALLOWANCE: Duration = Duration::from_secs(5);

/// id, invoice, status, error class, error message.
type EventRow = (i64, String, String, Option<String>, Option<String>);

#[derive(Debug, Default)]
pub struct Report {
    pub violations: Vec<String>,
    pub counts: BTreeMap<String, i64>,
    pub events_by_status: BTreeMap<String, i64>,
    pub failed_events: Vec<String>,
    pub sync_jobs_by_state: BTreeMap<String, i64>,
    /// The chains' step jobs (customer, payment, complete draft) by kind and state.
    pub step_jobs: BTreeMap<String, i64>,
    pub max_claim_wait: Option<Duration>,
    pub max_release_wait: Option<Duration>,
    pub claim_bound: Duration,
}

pub(super) fn cents(d: Option<&Decimal>) -> Option<i64> {
    d.and_then(|d| d.to_scaled(2).ok())
}

pub async fn check(pool: &PgPool, o: &Outcome) -> Report {
    let mut r = Report::default();
    let v = &mut r.violations;
    if let Some(e) = &o.settle_error {
        v.push(format!("did not settle: {e}"));
    }
    for e in &o.host_errors {
        v.push(format!("host could not record a trigger: {e}"));
    }
    for e in &o.unexpected_exits {
        v.push(format!("worker died on its own: {e}"));
    }
    if let Some(pg) = &o.pg_restart
        && !pg.ok
    {
        v.push("pg_ctlcluster restart failed".into());
    }

    // --- the provider's records against the host's last snapshots ---
    let mut xero_by_org = HashMap::new();
    let mut payments_by_org = HashMap::new();
    for shop in o.shops.iter().filter(|s| s.kind == ShopKind::Xero) {
        xero_by_org.insert(shop.connection_id, o.sim.invoices(&shop.org));
        payments_by_org.insert(shop.connection_id, o.sim.payments(&shop.org));
        let contacts = o.sim.contacts(&shop.org);
        let mut numbers: HashMap<String, usize> = HashMap::new();
        // One active contact per customer: one archived or merged by a
        // person in Xero is replaced, not made twice.
        for c in contacts
            .iter()
            .filter(|c| c.contact_status.as_deref() != Some(wire::CONTACT_ARCHIVED))
        {
            if let Some(n) = &c.contact_number {
                *numbers.entry(n.clone()).or_default() += 1;
            }
        }
        for (n, k) in numbers {
            if k > 1 {
                v.push(format!("org {}: contact {n} exists {k} times", shop.org));
            }
        }
        *r.counts.entry("xero contacts".into()).or_default() += contacts.len() as i64;
        // Customers whose archived contact a later sync replaced.
        let archived =
            |c: &&wire::Contact| c.contact_status.as_deref() == Some(wire::CONTACT_ARCHIVED);
        let replaced = contacts
            .iter()
            .filter(archived)
            .filter_map(|c| c.contact_number.as_ref())
            .filter(|n| {
                contacts
                    .iter()
                    .any(|c| !archived(&c) && c.contact_number.as_ref() == Some(*n))
            })
            .count();
        *r.counts
            .entry("xero contacts archived, then replaced by a sync".into())
            .or_default() += replaced as i64;
    }
    let links: Vec<(i64, String, String, String)> = sqlx::query_as(
        // A payment is identified within its invoice: keyed "invoice/payment".
        "SELECT connection_id, entity_type, host_id, external_id FROM ledgerflow.links
         UNION ALL
         SELECT connection_id, 'payment', invoice_id || '/' || payment_id, external_id
         FROM ledgerflow.payment_links",
    )
    .fetch_all(pool)
    .await
    .expect("read links");
    let links: HashMap<(i64, String, String), String> = links
        .into_iter()
        .map(|(c, t, h, e)| ((c, t, h), e))
        .collect();
    let latest: Vec<(i64, String, Option<serde_json::Value>)> = sqlx::query_as(
        "SELECT connection_id, invoice_id, latest_snapshot FROM ledgerflow.invoice_sync",
    )
    .fetch_all(pool)
    .await
    .expect("read invoice_sync");
    let latest: HashMap<(i64, String), Option<serde_json::Value>> =
        latest.into_iter().map(|(c, i, s)| ((c, i), s)).collect();
    let completes: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT connection_id, invoice_id, count(*) FROM ledgerflow.sync_events
         WHERE operation = 'complete_draft' AND status = 'synced'
         GROUP BY connection_id, invoice_id",
    )
    .fetch_all(pool)
    .await
    .expect("read draft completions");
    let completes: HashMap<(i64, String), i64> =
        completes.into_iter().map(|(c, i, n)| ((c, i), n)).collect();

    let mut triggers = 0;
    for inv in &o.invoices {
        triggers += inv.triggers as i64;
        *r.counts.entry("chains started".into()).or_default() += inv.chains as i64;
        for (step, n) in &inv.steps {
            *r.counts.entry(format!("chain steps: {step}")).or_default() += *n as i64;
        }
        let snap = &inv.last;
        let id = &snap.invoice_id;
        *r.counts
            .entry(
                format!("invoices {:?}", inv.ending)
                    .replace(" { split: ", "(split=")
                    .replace(" }", ")"),
            )
            .or_default() += 1;
        let stored = latest
            .get(&(inv.connection_id, id.clone()))
            .cloned()
            .flatten();
        if stored.as_ref() != serde_json::to_value(snap).ok().as_ref() {
            v.push(format!(
                "{id}: the ledger's latest snapshot is not the host's last save"
            ));
        }
        let shop = o
            .shops
            .iter()
            .find(|s| s.connection_id == inv.connection_id)
            .expect("every invoice belongs to a shop");
        *r.counts
            .entry(format!("invoices on {:?}", shop.kind))
            .or_default() += 1;
        if shop.kind == ShopKind::QuickBooks {
            crate::quickbooks::check(&o.quickbooks, &shop.org, inv, &links, v, &mut r.counts);
            continue;
        }
        if shop.kind == ShopKind::Saledock {
            crate::saledock::check(&o.saledock, &shop.org, inv, &links, v, &mut r.counts);
            continue;
        }
        if matches!(shop.kind, ShopKind::LightspeedR | ShopKind::LightspeedX) {
            crate::lightspeed::check(&o.lightspeed, shop, inv, &links, v, &mut r.counts);
            continue;
        }
        if let Some(store) = shop.shopify {
            check_shopify(
                &o.shopify[store],
                shop.kind,
                inv,
                &links,
                &completes,
                v,
                &mut r.counts,
            );
            continue;
        }
        let records: Vec<_> = xero_by_org[&inv.connection_id]
            .iter()
            .filter(|x| x.reference.as_deref() == Some(snap.number.as_str()))
            .collect();
        if inv.ending == Ending::Cancelled {
            if records.len() > 1 {
                v.push(format!(
                    "{id}: cancelled, but {} Xero invoices exist",
                    records.len()
                ));
            }
            for x in &records {
                let st = x.status.as_deref().unwrap_or("");
                if st != status::VOIDED && st != status::DELETED {
                    v.push(format!("{id}: cancelled, but its Xero invoice is {st}"));
                }
            }
            *r.counts
                .entry(if records.is_empty() {
                    "cancelled never sent".into()
                } else {
                    "cancelled voided/deleted".into()
                })
                .or_default() += 1;
            continue;
        }
        let [x] = records.as_slice() else {
            v.push(format!(
                "{id}: {} Xero invoices, wanted exactly 1",
                records.len()
            ));
            continue;
        };
        let paid: i64 = snap.payments.iter().map(|p| p.amount_minor).sum();
        let want_status = if paid == snap.totals.total && paid > 0 {
            status::PAID
        } else {
            status::AUTHORISED
        };
        let got = (
            x.status.as_deref().unwrap_or(""),
            cents(x.sub_total.as_ref()),
            cents(x.total_tax.as_ref()),
            cents(x.total.as_ref()),
            cents(x.amount_paid.as_ref()),
            x.line_items.as_ref().map_or(0, Vec::len),
        );
        let want = (
            want_status,
            Some(snap.totals.subtotal - snap.totals.discount_total),
            Some(snap.totals.tax_total),
            Some(snap.totals.total),
            Some(paid),
            snap.lines.len() + usize::from(snap.totals.discount_total != 0),
        );
        if got != want {
            v.push(format!(
                "{id}: Xero has (status, subtotal, tax, total, paid, lines) {got:?}, the host's last snapshot {want:?}"
            ));
        }
        let link = links.get(&(inv.connection_id, "invoice".into(), id.clone()));
        if link != x.invoice_id.as_ref() {
            v.push(format!(
                "{id}: linked to {link:?}, Xero's record is {:?}",
                x.invoice_id
            ));
        }

        // Payments: exactly the host's, once each.
        let xero_id = x.invoice_id.clone().unwrap_or_default();
        let mut applied: Vec<i64> = payments_by_org[&inv.connection_id]
            .iter()
            .filter(|p| p.status.as_deref() != Some("DELETED"))
            .filter(|p| p.invoice.as_ref().and_then(|i| i.invoice_id.as_ref()) == Some(&xero_id))
            .filter_map(|p| cents(p.amount.as_ref()))
            .collect();
        let mut wanted: Vec<i64> = snap.payments.iter().map(|p| p.amount_minor).collect();
        applied.sort_unstable();
        wanted.sort_unstable();
        if applied.len() > wanted.len() {
            v.push(format!(
                "{id}: payment applied twice: Xero holds {applied:?}, the host paid {wanted:?}"
            ));
        } else if applied != wanted {
            v.push(format!(
                "{id}: Xero holds payments {applied:?}, the host paid {wanted:?}"
            ));
        }
        for p in &snap.payments {
            let key = format!("{id}/{}", p.payment_id);
            match links.get(&(inv.connection_id, "payment".into(), key)) {
                None => v.push(format!("{id}: payment {} has no link", p.payment_id)),
                Some(ext) => {
                    let found = payments_by_org[&inv.connection_id].iter().any(|x| {
                        x.payment_id.as_ref() == Some(ext)
                            && x.invoice.as_ref().and_then(|i| i.invoice_id.as_ref())
                                == Some(&xero_id)
                    });
                    if !found {
                        v.push(format!(
                            "{id}: payment {} linked to {ext}, which Xero does not have",
                            p.payment_id
                        ));
                    }
                }
            }
        }
        *r.counts.entry("payments applied".into()).or_default() += applied.len() as i64;
    }
    r.counts.insert("triggers recorded".into(), triggers);
    let xero_invoices: usize = xero_by_org.values().map(Vec::len).sum();
    r.counts
        .insert("xero invoices".into(), xero_invoices as i64);

    // --- sync events and jobs ---
    let by_status: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM ledgerflow.sync_events GROUP BY status ORDER BY status",
    )
    .fetch_all(pool)
    .await
    .expect("events by status");
    r.events_by_status = by_status.into_iter().collect();
    let unfinished: Vec<EventRow> = sqlx::query_as(
        "SELECT id, invoice_id, status, error_class, error_message FROM ledgerflow.sync_events
         WHERE status NOT IN ('synced', 'superseded', 'skipped')
         ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .expect("unfinished events");
    for (id, invoice, st, class, message) in unfinished {
        let line = format!(
            "event {id} ({invoice}) {st} [{}]: {}",
            class.as_deref().unwrap_or("-"),
            message.as_deref().unwrap_or("-")
        );
        if st == "failed" && class.as_deref() == Some("permanent") {
            r.failed_events.push(line);
        } else {
            v.push(format!("sync event did not end well: {line}"));
        }
    }
    let jobs: Vec<(String, i64)> = sqlx::query_as(
        "SELECT state, count(*) FROM (
             SELECT state FROM ledgerflow.finished_jobs WHERE kind IN ('upsert-invoice', 'void-order')
             UNION ALL
             SELECT state FROM ledgerflow.jobs WHERE kind IN ('upsert-invoice', 'void-order')) j
         GROUP BY state ORDER BY state",
    )
    .fetch_all(pool)
    .await
    .expect("jobs by state");
    r.sync_jobs_by_state = jobs.into_iter().collect();
    for (st, n) in &r.sync_jobs_by_state {
        if !matches!(st.as_str(), "completed" | "cancelled" | "failed") {
            v.push(format!("{n} sync job(s) still {st}"));
        }
    }
    let steps: Vec<(String, i64)> = sqlx::query_as(
        "SELECT kind || ' ' || state, count(*) FROM (
             SELECT kind, state FROM ledgerflow.finished_jobs
             WHERE kind IN ('sync-customer', 'push-payment', 'complete-draft')
             UNION ALL
             SELECT kind, state FROM ledgerflow.jobs
             WHERE kind IN ('sync-customer', 'push-payment', 'complete-draft')) j
         GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("step jobs by kind and state");
    r.step_jobs = steps.into_iter().collect();
    // Every job, whatever its kind (sync chains' steps too), ended well.
    let failed_jobs: Vec<(i64, String, Option<serde_json::Value>)> = sqlx::query_as(
        "SELECT id, kind, errors -> -1 FROM ledgerflow.finished_jobs WHERE state = 'failed' ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .expect("failed jobs");
    for (id, kind, last) in failed_jobs {
        v.push(format!(
            "job {id} ({kind}) failed: {}",
            last.unwrap_or_default()
        ));
    }
    let runs: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM ledgerflow.workflow_runs GROUP BY status ORDER BY status",
    )
    .fetch_all(pool)
    .await
    .expect("workflow runs");
    for (st, n) in &runs {
        r.counts.insert(format!("workflow runs {st}"), *n);
        if st != "completed" {
            v.push(format!("{n} workflow run(s) {st}"));
        }
    }
    let rescued: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ledgerflow.finished_jobs
         WHERE errors @> '[{\"class\": \"lease_expired\"}]' OR errors @> '[{\"class\": \"worker_restarted\"}]'",
    )
    .fetch_one(pool)
    .await
    .expect("rescued jobs");
    r.counts
        .insert("jobs released from dead workers".into(), rescued);

    // --- killed workers' jobs: how long until claimed again ---
    r.claim_bound =
        Duration::from_secs_f64(o.scale.lease_secs + o.scale.rescue_secs) + CLAIM_ALLOWANCE;
    let near_pg_restart = |w: &crate::world::ClaimWait| {
        o.pg_restart.as_ref().is_some_and(|pg| {
            let gap = (w.killed_at - pg.at).num_milliseconds().abs();
            gap < (pg.took + r.claim_bound).as_millis() as i64 + 5_000
        })
    };
    for w in &o.claim_waits {
        match w.waited {
            None => v.push(format!(
                "job {} of killed {} was never claimed again",
                w.job_id, w.worker
            )),
            Some(d) => {
                r.max_claim_wait = r.max_claim_wait.max(Some(d));
                if d > r.claim_bound && !near_pg_restart(w) {
                    v.push(format!(
                        "job {} of killed {} waited {:.1} s for its next claim ({}), more than lease + rescue + {} s",
                        w.job_id,
                        w.worker,
                        d.as_secs_f64(),
                        w.outcome,
                        CLAIM_ALLOWANCE.as_secs()
                    ));
                }
            }
        }
    }
    // The rescuer's own timestamp of each release, against the kill.
    for w in &o.claim_waits {
        let at: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
            "SELECT min((e->>'at')::timestamptz) FROM (
                 SELECT errors FROM ledgerflow.jobs WHERE id = $1
                 UNION ALL SELECT errors FROM ledgerflow.finished_jobs WHERE id = $1) j,
                 jsonb_array_elements(j.errors) e
             WHERE e->>'class' IN ('lease_expired', 'worker_restarted')
               AND (e->>'at')::timestamptz >= $2",
        )
        .bind(w.job_id)
        .bind(w.killed_at)
        .fetch_one(pool)
        .await
        .expect("release time");
        if let Some(at) = at
            && let Ok(d) = (at - w.killed_at).to_std()
        {
            r.max_release_wait = r.max_release_wait.max(Some(d));
        }
    }

    // --- credentials ---
    let losses = replays::losses(o);
    crate::quickbooks::check_tokens(&o.quickbooks, &losses, v, &mut r.counts);
    let stats = o.sim.stats();
    replays::check("Xero", &o.sim.refresh_replays(), &losses, v, &mut r.counts);
    let lightspeed_uses = o.lightspeed.max_refresh_token_uses();
    if lightspeed_uses > 1 {
        v.push(format!(
            "a Lightspeed refresh token was spent {lightspeed_uses} times"
        ));
    }
    let (lightspeed_refreshes, lightspeed_refused) = o.lightspeed.refreshes();
    if lightspeed_refused > 0 {
        v.push(format!(
            "{lightspeed_refused} Lightspeed refresh attempts were refused (invalid_grant)"
        ));
    }
    r.counts.insert(
        "lightspeed refresh requests".into(),
        lightspeed_refreshes as i64,
    );
    if stats.invalid_grants > 0 {
        v.push(format!(
            "{} refresh attempts were refused (invalid_grant)",
            stats.invalid_grants
        ));
    }
    let not_active: Vec<(i64, String, Option<String>)> = sqlx::query_as(
        "SELECT id, status, status_reason FROM ledgerflow.connections WHERE status <> 'active'",
    )
    .fetch_all(pool)
    .await
    .expect("connections");
    for (id, st, reason) in not_active {
        v.push(format!(
            "connection {id} is {st}: {}",
            reason.unwrap_or_default()
        ));
    }
    for store in &o.shopify {
        let st = store.stats();
        *r.counts.entry("shopify requests".into()).or_default() +=
            (st.rest_requests + st.graphql_requests) as i64;
        *r.counts
            .entry("shopify writes committed".into())
            .or_default() += st.writes_committed as i64;
    }
    r.counts.insert(
        "xero refresh requests".into(),
        stats.refresh_requests as i64,
    );
    r.counts
        .insert("xero api requests".into(), stats.api_requests as i64);
    r.counts.insert(
        "xero writes committed".into(),
        stats.writes_committed as i64,
    );
    r.counts.insert(
        "xero idempotent replays".into(),
        stats.idempotent_replays as i64,
    );
    r.counts
        .insert("xero 429s answered".into(), stats.rate_limited as i64);
    r
}
