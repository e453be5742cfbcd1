//! Retention of what comes back from providers, against the real
//! PostgreSQL: the pruner forgets webhook deliveries past their retention
//! (and keeps recent ones, so a provider's retry is still recognised), and
//! never deletes inbound events, which are the record of what the host was
//! already told.

use std::time::Duration;

use ledgerflow_worker::runtime::pruner::{Retention, prune};
use ledgerflow_workflows::inbound;
use sqlx::PgPool;

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn old_webhook_deliveries_are_pruned_and_recent_ones_still_recognised(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    for id in ["old-1", "old-2", "recent"] {
        assert!(
            inbound::record_delivery(&mut conn, "xero", id)
                .await
                .unwrap()
        );
    }
    sqlx::query(
        "UPDATE ledgerflow.webhook_deliveries SET received_at = now() - interval '8 days'
         WHERE delivery_id LIKE 'old-%'",
    )
    .execute(&pool)
    .await
    .unwrap();

    let pruned = prune(&pool, Retention::default()).await.unwrap();
    assert_eq!(pruned, 2, "the two deliveries older than 7 days go");
    let left: Vec<String> =
        sqlx::query_scalar("SELECT delivery_id FROM ledgerflow.webhook_deliveries")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(left, vec!["recent".to_string()]);
    // A retry of the recent delivery is still answered as a repeat.
    assert!(
        !inbound::record_delivery(&mut conn, "xero", "recent")
            .await
            .unwrap()
    );
    // Nothing more to prune: a second pass is a no-op.
    assert_eq!(prune(&pool, Retention::default()).await.unwrap(), 0);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_short_retention_prunes_in_batches_and_keeps_inbound_events(pool: PgPool) {
    // More rows than one prune statement deletes, all past a 1-second retention.
    sqlx::query(
        "INSERT INTO ledgerflow.webhook_deliveries (provider, delivery_id, received_at)
         SELECT 'shopify', 'd-' || g, now() - interval '1 hour' FROM generate_series(1, 12001) g",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO ledgerflow.tenants (id, name, time_zone) VALUES ('t1', 'Shop', 'UTC')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let connection_id: i64 = sqlx::query_scalar(
        "INSERT INTO ledgerflow.connections (tenant_id, provider, settings)
         VALUES ('t1', 'xero', '{}'::jsonb) RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO ledgerflow.inbound_events
             (tenant_id, connection_id, kind, dedup_key, created_at, acknowledged_at)
         VALUES ('t1', $1, 'payment_applied', 'payment:P1', now() - interval '400 days',
                 now() - interval '399 days')",
    )
    .bind(connection_id)
    .execute(&pool)
    .await
    .unwrap();

    let retention = Retention {
        webhook_deliveries_for: Duration::from_secs(1),
        ..Retention::default()
    };
    assert_eq!(prune(&pool, retention).await.unwrap(), 12001);
    let deliveries: i64 = sqlx::query_scalar("SELECT count(*) FROM ledgerflow.webhook_deliveries")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(deliveries, 0);
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM ledgerflow.inbound_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        events, 1,
        "an acknowledged event is the dedup record of a payment: kept"
    );
}
