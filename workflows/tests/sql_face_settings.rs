//! The SQL face's settings decision (`ledgerflow.trigger_skip_reason`, the
//! one rule every trigger goes through) read from the Rust settings types'
//! JSON, case by case; and the words and numbers the SQL face shares with
//! the Rust types (trigger labels, skip sentences, provider names, the
//! quiet period) agreeing, so the two cannot drift apart.

use ledgerflow_workflows::ledger::EventTrigger;
use ledgerflow_workflows::settings::{
    ConnectionSettings, EndOfDaySummarySettings, OnlineBooking, Provider, ProviderSettings,
    QuickBooksSettings, SkipReason, Trigger, XeroSettings,
};
use sqlx::PgPool;

/// Every trigger; the match makes a new one a compile error here.
fn all_triggers() -> Vec<Trigger> {
    let all = [
        Trigger::JobCreated,
        Trigger::ItemsChanged,
        Trigger::InvoiceCreated,
        Trigger::SaleCompleted,
        Trigger::OnlineBookingCreated,
        Trigger::OnlineBookingAccepted,
        Trigger::JobCancelled,
        Trigger::JobRejected,
        Trigger::InvoicePaid,
        Trigger::PaymentAdded,
        Trigger::InvoiceSent,
    ];
    for t in all {
        match t {
            Trigger::JobCreated
            | Trigger::ItemsChanged
            | Trigger::InvoiceCreated
            | Trigger::SaleCompleted
            | Trigger::OnlineBookingCreated
            | Trigger::OnlineBookingAccepted
            | Trigger::JobCancelled
            | Trigger::JobRejected
            | Trigger::InvoicePaid
            | Trigger::PaymentAdded
            | Trigger::InvoiceSent => {}
        }
    }
    all.to_vec()
}

fn all_skip_reasons() -> Vec<SkipReason> {
    let all = [
        SkipReason::OverriddenForThisAction,
        SkipReason::MasterToggleOff,
        SkipReason::InvoiceAutoSyncOff,
        SkipReason::TriggerOff,
        SkipReason::MarkDeletedOff,
        SkipReason::InvoiceSyncOff,
        SkipReason::PaymentSyncOff,
        SkipReason::ProviderSyncOff,
        SkipReason::DraftNotSent,
    ];
    for r in all {
        match r {
            SkipReason::OverriddenForThisAction
            | SkipReason::MasterToggleOff
            | SkipReason::InvoiceAutoSyncOff
            | SkipReason::TriggerOff
            | SkipReason::MarkDeletedOff
            | SkipReason::InvoiceSyncOff
            | SkipReason::PaymentSyncOff
            | SkipReason::ProviderSyncOff
            | SkipReason::DraftNotSent => {}
        }
    }
    all.to_vec()
}

/// What the SQL face decides: `None` syncs, `Some(reason)` skips.
async fn decide(
    pool: &PgPool,
    settings: &ConnectionSettings,
    trigger: Trigger,
    invoice_auto_sync: bool,
    action_override: Option<bool>,
) -> Option<SkipReason> {
    let code: Option<String> =
        sqlx::query_scalar("SELECT ledgerflow.trigger_skip_reason($1, $2, $3, $4)")
            .bind(serde_json::to_value(settings).unwrap())
            .bind(EventTrigger::Host(trigger).code())
            .bind(invoice_auto_sync)
            .bind(action_override)
            .fetch_one(pool)
            .await
            .unwrap();
    code.map(|c| serde_json::from_value(serde_json::Value::String(c)).unwrap())
}

fn xero(sync_payments: bool) -> ConnectionSettings {
    ConnectionSettings {
        auto_sync: true,
        provider: ProviderSettings::Xero(XeroSettings {
            sync_payments,
            end_of_day_summary: Some(EndOfDaySummarySettings {
                contact_name: "Cash sales".into(),
                send_time: chrono::NaiveTime::from_hms_opt(17, 30, 0).unwrap(),
                time_zone: "UTC".into(),
            }),
            ..XeroSettings::default()
        }),
        ..ConnectionSettings::default_for(Provider::Xero)
    }
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn which_triggers_sync_under_which_settings(pool: PgPool) {
    use SkipReason::*;
    let mut s = ConnectionSettings::default_for(Provider::Shopify);
    // Master off: paused, unless a person asked for this one.
    assert_eq!(
        decide(&pool, &s, Trigger::ItemsChanged, true, None).await,
        Some(MasterToggleOff)
    );
    assert_eq!(
        decide(&pool, &s, Trigger::ItemsChanged, true, Some(true)).await,
        None
    );
    s.auto_sync = true;
    assert_eq!(
        decide(&pool, &s, Trigger::ItemsChanged, false, None).await,
        Some(InvoiceAutoSyncOff)
    );
    assert_eq!(
        decide(&pool, &s, Trigger::ItemsChanged, false, Some(true)).await,
        None
    );
    assert_eq!(
        decide(&pool, &s, Trigger::ItemsChanged, true, Some(false)).await,
        Some(OverriddenForThisAction)
    );
    for t in [
        Trigger::JobCreated,
        Trigger::ItemsChanged,
        Trigger::InvoiceCreated,
        Trigger::SaleCompleted,
        Trigger::InvoicePaid,
        Trigger::PaymentAdded,
    ] {
        assert_eq!(decide(&pool, &s, t, true, None).await, None, "{t:?}");
    }
    s.when_to_sync.items_changed = false;
    s.when_to_sync.job_created = false;
    assert_eq!(
        decide(&pool, &s, Trigger::ItemsChanged, true, None).await,
        Some(TriggerOff)
    );
    assert_eq!(
        decide(&pool, &s, Trigger::JobCreated, true, None).await,
        Some(TriggerOff)
    );
    assert_eq!(
        decide(&pool, &s, Trigger::JobCreated, true, Some(true)).await,
        None
    );

    for (mode, created, accepted) in [
        (OnlineBooking::Off, Some(TriggerOff), Some(TriggerOff)),
        (OnlineBooking::WhenCreated, None, Some(TriggerOff)),
        (OnlineBooking::WhenAccepted, Some(TriggerOff), None),
    ] {
        let mut b = s.clone();
        b.when_to_sync.online_booking = mode;
        assert_eq!(
            decide(&pool, &b, Trigger::OnlineBookingCreated, true, None).await,
            created,
            "{mode:?}"
        );
        assert_eq!(
            decide(&pool, &b, Trigger::OnlineBookingAccepted, true, None).await,
            accepted,
            "{mode:?}"
        );
    }

    for t in [Trigger::JobCancelled, Trigger::JobRejected] {
        assert_eq!(decide(&pool, &s, t, true, None).await, Some(MarkDeletedOff));
        s.mark_deleted_on_cancel = true;
        assert_eq!(decide(&pool, &s, t, true, None).await, None);
        s.mark_deleted_on_cancel = false;
    }

    let mut q = ConnectionSettings {
        auto_sync: true,
        ..ConnectionSettings::default_for(Provider::QuickBooks)
    };
    assert_eq!(
        decide(&pool, &q, Trigger::PaymentAdded, true, None).await,
        None
    );
    q.provider = ProviderSettings::QuickBooks(QuickBooksSettings {
        sync_payments: false,
        sync_invoices: false,
        ..QuickBooksSettings::default()
    });
    assert_eq!(
        decide(&pool, &q, Trigger::PaymentAdded, true, None).await,
        Some(PaymentSyncOff)
    );
    assert_eq!(
        decide(&pool, &q, Trigger::InvoiceCreated, true, None).await,
        Some(InvoiceSyncOff)
    );
    // QuickBooks' "Enable Sync" off: nothing syncs, not even on request.
    q.provider = ProviderSettings::QuickBooks(QuickBooksSettings {
        sync_enabled: false,
        ..QuickBooksSettings::default()
    });
    for over in [None, Some(true)] {
        assert_eq!(
            decide(&pool, &q, Trigger::InvoiceCreated, true, over).await,
            Some(SkipReason::ProviderSyncOff)
        );
    }
    assert_eq!(
        decide(&pool, &xero(false), Trigger::PaymentAdded, true, None).await,
        Some(PaymentSyncOff)
    );
    assert_eq!(
        decide(&pool, &xero(true), Trigger::PaymentAdded, true, None).await,
        None
    );
    assert_eq!(
        decide(&pool, &xero(false), Trigger::ItemsChanged, true, None).await,
        None
    );

    // Settings stored before a field existed read with the serde defaults.
    let old = serde_json::json!({"auto_sync": true, "when_to_sync": {}, "mark_deleted_on_cancel": false,
                                 "provider": {"provider": "quickbooks"}});
    let code: Option<String> = sqlx::query_scalar(
        "SELECT ledgerflow.trigger_skip_reason($1, 'online_booking_created', true, NULL)",
    )
    .bind(old)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(code.as_deref(), Some("trigger_off"));
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn the_words_and_numbers_the_sql_face_shares_with_the_rust_types_agree(pool: PgPool) {
    for t in all_triggers() {
        let label: Option<String> = sqlx::query_scalar("SELECT ledgerflow.trigger_label($1)")
            .bind(EventTrigger::Host(t).code())
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(
            label.as_deref(),
            Some(EventTrigger::Host(t).default_label()),
            "{t:?}"
        );
        // The code is the trigger's serde name, as the dialog's JSON spells it.
        assert_eq!(
            serde_json::to_value(t).unwrap(),
            EventTrigger::Host(t).code(),
            "{t:?}"
        );
    }
    for manual in [
        EventTrigger::ManualResync,
        EventTrigger::ManualSendAsNew,
        EventTrigger::ManualRetry,
    ] {
        let label: Option<String> = sqlx::query_scalar("SELECT ledgerflow.trigger_label($1)")
            .bind(manual.code())
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(label.as_deref(), Some(manual.default_label()));
    }
    for r in all_skip_reasons() {
        let code = serde_json::to_value(r).unwrap();
        let message: Option<String> = sqlx::query_scalar("SELECT ledgerflow.skip_message($1)")
            .bind(code.as_str().unwrap())
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(message, Some(r.to_string()), "{r:?}");
    }
    for p in Provider::ALL {
        let name: String = sqlx::query_scalar("SELECT ledgerflow.provider_display_name($1)")
            .bind(p.as_str())
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(name, p.display_name());
    }
    for (quiet, max) in [
        (1_000, 10_000),
        (0, 10_000),
        (-5, 500),
        (2_000, 500),
        (60_000, 60_000),
        (i64::MAX, i64::MAX),
        (i64::MIN, 0),
    ] {
        let settings = ConnectionSettings {
            quiet_period_ms: quiet,
            max_quiet_wait_ms: max,
            ..ConnectionSettings::default_for(Provider::Xero)
        };
        let (q, m): (Option<i64>, Option<i64>) =
            sqlx::query_as("SELECT * FROM ledgerflow.quiet_period($1)")
                .bind(serde_json::to_value(&settings).unwrap())
                .fetch_one(&pool)
                .await
                .unwrap();
        let want = settings.quiet_period();
        assert_eq!(
            (q, m),
            (want.map(|w| w.quiet_ms), want.map(|w| w.max_wait_ms)),
            "{quiet} {max}"
        );
    }
}
