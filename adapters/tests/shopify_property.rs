//! Property: whatever sequence of edits, payments, cancellations and lost
//! answers an invoice goes through, Shopify ends holding exactly one live
//! record for it (none once cancelled), and that record matches the last
//! snapshot. The adapter is driven directly, in sequence, with retries as
//! the queue would make them (same request after a retryable failure).
//!
//! Cases are drawn with proptest's strategies from a fixed-seed runner and
//! run on the test's runtime (the database comes from `sqlx::test`); a
//! failure prints the sequence that broke.

mod shopify_common;

use std::time::Duration;

use ledgerflow_adapters::shopify::simulator::{Fault, FaultKind, SimConfig};
use ledgerflow_adapters::shopify::{InvoiceTag, ShopifyLimits};
use ledgerflow_workflows::invoice::InvoiceSnapshot;
use ledgerflow_workflows::provider::{
    CompleteDraftRequest, ExternalRef, Provider, ProviderError, VoidOrderRequest,
};
use ledgerflow_workflows::provider_state::BucketPolicy;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use reqwest::Method;
use shopify_common::*;
use sqlx::PgPool;

#[derive(Debug, Clone)]
enum Op {
    /// New lines: (quantity in units, unit price in cents) per line.
    Edit(Vec<(i64, i64)>),
    Pay,
    Cancel,
    /// The next write of this method commits but its answer is lost.
    LoseAnswer(&'static str),
    /// The next call fails with a 502.
    ServerError,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => prop::collection::vec((1i64..4, 100i64..5000), 1..4).prop_map(Op::Edit),
        1 => Just(Op::Pay),
        1 => Just(Op::Cancel),
        2 => prop::sample::select(vec!["POST", "PUT", "DELETE"]).prop_map(Op::LoseAnswer),
        1 => Just(Op::ServerError),
    ]
}

fn snap(case: usize, lines: &[(i64, i64)]) -> InvoiceSnapshot {
    let lines = lines
        .iter()
        .enumerate()
        .map(|(i, (q, p))| line(&format!("{i}"), q * 1000, *p, p * q * 15 / 100))
        .collect();
    snapshot(&format!("P-{case}"), lines, None)
}

/// Runs `f` until it succeeds, as the queue would: retryable failures again
/// at once, rate-limited ones after their wait.
async fn retry<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ProviderError>>,
{
    for _ in 0..6 {
        match f().await {
            Ok(v) => return v,
            Err(ProviderError::Retryable { .. }) => {}
            Err(ProviderError::RateLimited { not_before, .. }) => {
                let wait = (not_before - chrono::Utc::now())
                    .to_std()
                    .unwrap_or_default()
                    .min(Duration::from_secs(3));
                tokio::time::sleep(wait).await;
            }
            Err(e) => panic!("{what} failed: {e:?}"),
        }
    }
    panic!("{what} kept failing");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn one_live_record_matching_the_last_snapshot(pool: PgPool) {
    let sim_config = SimConfig {
        bucket_capacity: 1000,
        leak_per_second: 1000,
        ..SimConfig::default()
    };
    let mut config = config();
    config.limits = ShopifyLimits {
        rest: BucketPolicy {
            capacity: 1000,
            leak_per_second: 1000,
        },
        ..ShopifyLimits::default()
    };
    let env = env_with(pool, sim_config, config).await;
    let mut runner = TestRunner::new_with_rng(
        Config::with_cases(24),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let strategy = (any::<bool>(), prop::collection::vec(op(), 1..9));
    for case in 0..24 {
        let (draft_mode, ops) = strategy.new_tree(&mut runner).unwrap().current();
        let conn = if draft_mode { drafts() } else { orders() };
        let mut current = snap(case, &[(1, 1000)]);
        let mut link: Option<ExternalRef> = Some(
            retry("create", || upsert(&env, &conn, &current, None, "c0"))
                .await
                .external,
        );
        let (mut paid, mut cancelled) = (false, false);
        for (step, op) in ops.iter().enumerate() {
            let key = format!("c{case}-{step}");
            match op {
                Op::LoseAnswer(m) => {
                    let method = Method::from_bytes(m.as_bytes()).unwrap();
                    env.sim
                        .push_fault(Fault::once(FaultKind::DropAfterCommit).on(method, ""));
                }
                Op::ServerError => env.sim.push_fault(Fault::once(FaultKind::Status(502))),
                // A paid or cancelled invoice is not edited by the host.
                Op::Edit(_) | Op::Pay if paid || cancelled => {}
                Op::Edit(lines) => {
                    current = snap(case, lines);
                    let r = retry("upsert", || {
                        upsert(&env, &conn, &current, link.as_ref(), &key)
                    })
                    .await;
                    link = Some(r.external);
                }
                Op::Pay => {
                    paid = true;
                    let existing = link.clone().unwrap();
                    if draft_mode {
                        let r = retry("complete", || {
                            env.adapter.complete_draft(CompleteDraftRequest {
                                connection: &conn,
                                snapshot: &current,
                                existing: &existing,
                                idempotency_key: &key,
                            })
                        })
                        .await;
                        link = Some(r.external);
                    } else {
                        env.sim.pay_order(id_of(&existing)).unwrap();
                    }
                }
                Op::Cancel if cancelled => {}
                Op::Cancel => {
                    cancelled = true;
                    let existing = link.clone().unwrap();
                    retry("void", || {
                        env.adapter.void_order(VoidOrderRequest {
                            connection: &conn,
                            snapshot: &current,
                            existing: &existing,
                            idempotency_key: &key,
                        })
                    })
                    .await;
                }
            }
        }
        env.sim.clear_faults();
        let tag = InvoiceTag::new(CONNECTION, &current.invoice_id).to_string();
        let live = env.sim.live_tagged(&tag);
        let story = format!("case {case} (drafts: {draft_mode}) ops {ops:?}");
        if cancelled {
            assert!(live.is_empty(), "{story}: live after cancel: {live:?}");
            continue;
        }
        let link = link.unwrap();
        assert_eq!(live, vec![link.external_id.clone()], "{story}");
        let (total, lines) = if link.external_id.contains("/DraftOrder/") {
            let d = env.sim.draft(id_of(&link)).unwrap();
            (d.total_price.unwrap(), d.line_items.unwrap().len())
        } else {
            let o = env.sim.order(id_of(&link)).unwrap();
            if paid {
                assert_eq!(o.financial_status.as_deref(), Some("paid"), "{story}");
            }
            (o.total_price.unwrap(), o.line_items.unwrap().len())
        };
        assert_eq!(total.to_scaled(2).unwrap(), current.totals.total, "{story}");
        assert_eq!(lines, current.lines.len(), "{story}");
    }
}
