//! Bench tenants on a provider with OAuth tokens and one simulator per
//! account (Lightspeed R-Series, X-Series): the tenant made, its
//! connection registered with the simulator's first token set, and its
//! share of the invoices recorded as `job created`, each invoice's
//! customer with an e-mail address (so the adapters look customers up by
//! it, as the providers' real shops mostly do). Shared by the provider
//! files so a new provider copies none of it; this module must not start
//! simulators or read their figures.

use ledgerflow_adapters::sim::oauth::TokenSet;
use ledgerflow_client::ledger::{self, NewTenant};
use ledgerflow_client::settings::ConnectionSettings;
use ledgerflow_client::{ConnectionCredentials, Secret, SecretKey, register_connection};
use sqlx::PgPool;

use super::{BenchError, bench_invoice, record_created, tenant_invoices};

/// Where tenant `t`'s account is, as its simulator says.
pub(crate) struct Account {
    pub tokens: TokenSet,
    /// The provider's name for the account (R's account id, X's domain prefix).
    pub external_tenant_id: String,
    pub api_base_url: String,
    pub identity_base_url: String,
}

/// Makes tenant `bench-{t}` and registers its connection to `account`;
/// returns the connection's id.
pub(crate) async fn connect(
    pool: &PgPool,
    key: &SecretKey,
    settings: &ConnectionSettings,
    t: usize,
    account: Account,
) -> Result<i64, BenchError> {
    let tenant = NewTenant {
        id: format!("bench-{t}"),
        name: format!("Bench Cycles {t}"),
        time_zone: "UTC".into(),
    };
    let mut conn = pool.acquire().await?;
    ledger::create_tenant(&mut conn, &tenant).await?;
    drop(conn);
    let creds = ConnectionCredentials {
        access_token: Some(Secret::new(account.tokens.access_token)),
        access_expires_at: Some(
            chrono::Utc::now() + chrono::Duration::seconds(account.tokens.expires_in),
        ),
        refresh_token: Secret::new(account.tokens.refresh_token),
        external_tenant_id: Some(account.external_tenant_id),
        api_base_url: account.api_base_url,
        identity_base_url: account.identity_base_url,
        options: serde_json::json!({}),
    };
    let saved = register_connection(pool, key, &tenant.id, settings, &creds).await?;
    Ok(saved.connection.id)
}

/// Records every tenant's share of `invoices` (the `t`-th connection is
/// tenant `t`'s), each customer with an e-mail address.
pub(crate) async fn record_invoices(
    pool: &PgPool,
    connections: &[i64],
    invoices: usize,
) -> Result<(), BenchError> {
    for (t, connection_id) in connections.iter().enumerate() {
        let snaps = tenant_invoices(invoices, connections.len(), t)
            .map(|n| {
                bench_invoice(t, n).map(|mut s| {
                    s.customer.email = Some(format!("rider-{t}@bench-cycles.example"));
                    s
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        record_created(pool, *connection_id, &snaps).await?;
    }
    Ok(())
}
