//! After a first sync, pushes are checked against the imported chart: an
//! invoice whose account code is not in the Xero organisation's chart of
//! accounts fails before any call to Xero, with a message naming the code
//! and the fix; once the account exists and the chart is imported again,
//! the same invoice syncs. `connection mappings` data: what was imported,
//! and the host's tax code matched to Xero's tax type of equal rate.
mod common;
mod xero_helpers;

use std::sync::Arc;
use std::time::Duration;

use common::{fast_config, start};
use ledgerflow_adapters::xero::XeroConnection;
use ledgerflow_adapters::xero::XeroOptions;
use ledgerflow_adapters::xero::simulator::SimAccount;
use ledgerflow_client::import;
use ledgerflow_workflows::backfill::Source;
use ledgerflow_workflows::ledger::{self, NewTenant, TriggerRequest};
use ledgerflow_workflows::provider::Providers;
use ledgerflow_workflows::provider_state::Secret;
use ledgerflow_workflows::settings::{
    ConnectionSettings, Provider as ProviderName, ProviderSettings, Trigger, XeroInvoiceStatus,
    XeroSettings,
};
use sqlx::PgPool;
use xero_helpers::{eventually, import_now, snapshot, xero_env};

const WAIT: Duration = Duration::from_secs(60);

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn first_sync_chart_refuses_an_unknown_account_code_before_any_call(pool: PgPool) {
    let env = xero_env(&pool).await;
    let mut db = pool.acquire().await.unwrap();
    ledger::create_tenant(
        &mut db,
        &NewTenant {
            id: "shop-c".into(),
            name: "Shop C".into(),
            time_zone: "UTC".into(),
        },
    )
    .await
    .unwrap();
    let mut settings = ConnectionSettings::default_for(ProviderName::Xero);
    settings.auto_sync = false;
    settings.provider = ProviderSettings::Xero(XeroSettings {
        default_status: XeroInvoiceStatus::Authorised,
        sync_payments: false,
        end_of_day_summary: None,
    });
    let saved = ledger::create_connection(&mut db, "shop-c", &settings)
        .await
        .unwrap();
    drop(db);
    let connection = saved.connection.id;
    let org = env.sim.add_tenant("Shop C Ltd");
    let tokens = env.sim.authorize(&[&org]);
    // Sales go to account 201, which this organisation does not have.
    let mut options = XeroOptions {
        sales_account_code: "201".into(),
        ..XeroOptions::default()
    };
    options.tax_types.insert("GST15".into(), "OUTPUT2".into());
    env.adapter
        .register(&XeroConnection {
            connection_id: connection,
            xero_tenant_id: org.clone(),
            access_token: Secret::new(tokens.access_token),
            refresh_token: Secret::new(tokens.refresh_token),
            expires_in: tokens.expires_in,
            api_base_url: env.sim.api_base_url(),
            identity_base_url: env.sim.identity_base_url(),
            options,
        })
        .await
        .unwrap();
    let providers = Providers::new().with(ProviderName::Xero, Arc::new(env.adapter.clone()));
    let worker = start(
        &pool,
        ledgerflow_worker::handlers::registry_with(providers),
        fast_config("w1"),
    );
    // This host exposes no view: its records come from pushed snapshots.
    import_now(&pool, connection, Source::Pushed).await;

    // The host sends an invoice (a 15 % GST line), synced at once.
    let invoice = snapshot("C-1", 10_000, false);
    let record = |pool: PgPool, s: ledgerflow_workflows::invoice::InvoiceSnapshot| async move {
        let mut tx = pool.begin().await.unwrap();
        ledger::record_trigger(
            &mut tx,
            &TriggerRequest {
                connection_id: connection,
                trigger: Trigger::InvoiceCreated,
                label: None,
                snapshot: &s,
                action_override: Some(true),
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    };
    let calls_before = env.sim.stats().api_requests;
    record(pool.clone(), invoice.clone()).await;
    let error = eventually(WAIT, "the sync to fail", || async {
        let mut db = pool.acquire().await.unwrap();
        let d = ledger::sync_dialog(&mut db, connection, &invoice.invoice_id, 5)
            .await
            .unwrap();
        d.last_error.map(|e| format!("{e:?}"))
    })
    .await;
    assert!(
        error.contains("account 201 is not in this Xero organisation's chart of accounts"),
        "{error}"
    );
    assert!(error.contains("import again"), "{error}");
    assert_eq!(
        env.sim.stats().api_requests,
        calls_before,
        "refused before any call to Xero"
    );
    assert!(env.sim.invoices(&org).is_empty());

    // The mappings: the chart as imported, GST15 matched by its rate.
    let mut db = pool.acquire().await.unwrap();
    let m = import::mappings::mappings(&mut db, connection)
        .await
        .unwrap();
    drop(db);
    let codes: Vec<&str> = m.accounts.iter().map(|a| a.code.as_str()).collect();
    assert_eq!(codes, vec!["090", "200", "260", "610"]);
    let gst = m
        .tax_codes
        .iter()
        .find(|t| t.host_tax_code == "GST15")
        .expect("GST15 listed");
    assert_eq!(gst.host_rate_bps, Some(1500));
    assert_eq!(gst.tax_types, vec!["OUTPUT2".to_string()]);
    let text = ledgerflow_worker::cli::import::mappings_text(&m);
    assert!(text.contains("accounts        4"), "{text}");
    assert!(text.contains("-> OUTPUT2"), "{text}");

    // Someone adds account 201 in Xero; after importing again it syncs.
    env.sim.add_account(SimAccount {
        code: "201".into(),
        name: "Workshop sales".into(),
        kind: "REVENUE".into(),
        enable_payments: false,
    });
    import_now(&pool, connection, Source::Pushed).await;
    let mut edited = invoice.clone();
    edited.lines[0].description = "Bike service (again)".into();
    record(pool.clone(), edited).await;
    eventually(WAIT, "the invoice in Xero", || async {
        (env.sim.invoices(&org).len() == 1).then_some(())
    })
    .await;
    worker.stop().await;
}
