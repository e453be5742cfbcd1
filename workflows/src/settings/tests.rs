//! The settings' rules, checked without a database.

use chrono::{NaiveDate, NaiveTime};

use super::*;

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 6, 1).unwrap()
}

fn shopify(f: impl FnOnce(&mut ShopifySettings)) -> ConnectionSettings {
    let mut s = ShopifySettings::default();
    f(&mut s);
    ConnectionSettings {
        provider: ProviderSettings::Shopify(s),
        ..ConnectionSettings::default_for(Provider::Shopify)
    }
}

fn xero(eod: Option<(&str, &str)>) -> ConnectionSettings {
    let summary = eod.map(|(contact, tz)| EndOfDaySummarySettings {
        contact_name: contact.into(),
        send_time: NaiveTime::from_hms_opt(17, 30, 0).unwrap(),
        time_zone: tz.into(),
    });
    let x = XeroSettings {
        end_of_day_summary: summary,
        ..XeroSettings::default()
    };
    ConnectionSettings {
        provider: ProviderSettings::Xero(x),
        ..ConnectionSettings::default_for(Provider::Xero)
    }
}

fn quickbooks(sync_timesheets: bool, start: Option<NaiveDate>) -> ConnectionSettings {
    let q = QuickBooksSettings {
        sync_timesheets,
        timesheet_start_date: start,
        ..QuickBooksSettings::default()
    };
    ConnectionSettings {
        provider: ProviderSettings::QuickBooks(q),
        ..ConnectionSettings::default_for(Provider::QuickBooks)
    }
}

fn refused(s: &ConnectionSettings) -> String {
    s.validate(today()).unwrap_err().to_string()
}

#[test]
fn provider_names_round_trip() {
    for p in Provider::ALL {
        assert_eq!(Provider::parse(p.as_str()).unwrap(), p);
        assert_eq!(p.as_str().parse::<Provider>().unwrap(), p);
        assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        assert_eq!(ConnectionSettings::default_for(p).provider.provider(), p);
        assert_eq!(
            ConnectionSettings::default_for(p).validate_for(p, today()),
            Ok(vec![])
        );
    }
    assert_eq!(
        Provider::parse("sage").unwrap_err().to_string(),
        "unknown provider \"sage\""
    );
}

#[test]
fn contradictory_settings_are_refused_with_the_reason() {
    let msg = refused(&shopify(|s| s.use_draft_orders = false));
    assert!(
        msg.contains("\"complete draft order when paid\" needs \"use draft orders\""),
        "{msg}"
    );
    let msg = refused(&shopify(|s| {
        (
            s.use_draft_orders,
            s.complete_draft_when_paid,
            s.reserve_inventory,
        ) = (false, false, true)
    }));
    assert!(
        msg.contains("\"reserve inventory\" needs \"use draft orders\""),
        "{msg}"
    );
    assert!(refused(&shopify(|s| s.reservation_hours = -1)).contains("between 0 and 720 hours"));
    assert!(refused(&shopify(|s| s.reservation_hours = 721)).contains("not 721"));
    assert!(
        shopify(|s| s.reservation_hours = 720)
            .validate(today())
            .is_ok()
    );

    let future = NaiveDate::from_ymd_opt(2024, 6, 2);
    assert!(
        refused(&quickbooks(true, future))
            .contains("2024-06-02 is in the future (today is 2024-06-01)")
    );
    assert!(refused(&quickbooks(true, None)).contains("needs a start date"));
    // Enabling timesheets without a date starts them today.
    let mut filled = quickbooks(true, None);
    filled.fill_for_today(today());
    assert!(filled.validate(today()).is_ok());
    let ProviderSettings::QuickBooks(q) = &filled.provider else {
        panic!()
    };
    assert_eq!(q.timesheet_start_date, Some(today()));
    // The region is set once.
    let mut canada = quickbooks(false, None);
    if let ProviderSettings::QuickBooks(q) = &mut canada.provider {
        q.region = QuickBooksRegion::Ca;
    }
    let e = canada.check_change(&quickbooks(false, None)).unwrap_err();
    assert!(e.to_string().contains("set once"), "{e}");
    assert!(canada.check_change(&canada.clone()).is_ok());
    assert!(quickbooks(true, Some(today())).validate(today()).is_ok());

    assert!(refused(&xero(Some((" ", "Pacific/Auckland")))).contains("needs a contact name"));
    assert!(
        refused(&xero(Some(("Cash sales", "Mars/Olympus"))))
            .contains("\"Mars/Olympus\" is not a known time zone")
    );
    assert!(
        xero(Some(("Cash sales", "Pacific/Auckland")))
            .validate(today())
            .is_ok()
    );

    let err = xero(None)
        .validate_for(Provider::Shopify, today())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("these are Xero settings but the connection is to Shopify"),
        "{err}"
    );
    // Every problem is listed, not just the first.
    let both = shopify(|s| {
        (s.use_draft_orders, s.reserve_inventory, s.reservation_hours) = (false, true, -5)
    });
    let SettingsError::Invalid(v) = both.validate_for(Provider::Xero, today()).unwrap_err() else {
        panic!()
    };
    assert_eq!(v.len(), 4, "{v:?}");
}

#[test]
fn warnings_do_not_refuse() {
    let mut s = shopify(|s| (s.use_draft_orders, s.complete_draft_when_paid) = (false, false));
    assert_eq!(s.validate(today()), Ok(vec![]));
    s.auto_sync = true;
    let w = s.validate(today()).unwrap();
    assert_eq!(w, vec![SettingsWarning::OrdersReplacedOnEachSync]);
    assert!(
        w[0].to_string()
            .contains("cancels the Shopify order and creates a replacement")
    );
    let mut x = xero(None);
    if let ProviderSettings::Xero(xs) = &mut x.provider {
        xs.sync_payments = true;
    }
    assert_eq!(
        x.validate(today()),
        Ok(vec![SettingsWarning::DraftInvoicesCannotTakePayments])
    );
}

#[test]
fn quiet_period_is_validated_with_the_reason() {
    let with = |quiet: i64, max: i64| ConnectionSettings {
        quiet_period_ms: quiet,
        max_quiet_wait_ms: max,
        ..xero(None)
    };
    let ok = ConnectionSettings::default_for(Provider::Xero);
    assert_eq!((ok.quiet_period_ms, ok.max_quiet_wait_ms), (1_000, 10_000));
    assert_eq!(
        ok.quiet_period(),
        Some(QuietPeriod {
            quiet_ms: 1_000,
            max_wait_ms: 10_000
        })
    );
    assert!(with(0, 0).validate(today()).is_ok());
    assert_eq!(with(0, 10_000).quiet_period(), None);
    assert!(with(60_000, 60_000).validate(today()).is_ok());

    let msg = refused(&with(-1, 10_000));
    assert!(
        msg.contains("quiet period before an automatic sync must be between 0 (sync at once) and 60000 ms, not -1"),
        "{msg}"
    );
    let msg = refused(&with(60_001, 60_001));
    assert!(
        msg.contains("not 60001: a longer wait leaves the provider behind"),
        "{msg}"
    );
    assert!(
        msg.contains("longest quiet wait must be between 0 and 60000 ms, not 60001"),
        "{msg}"
    );
    let msg = refused(&with(2_000, 1_500));
    assert!(
        msg.contains("the longest quiet wait (1500 ms) is shorter than the quiet period (2000 ms)"),
        "{msg}"
    );
    assert!(refused(&with(1_000, -3)).contains("not -3"));
    // Stored around validation: clamped, never negative or unbounded.
    assert_eq!(
        with(2_000, 500).quiet_period(),
        Some(QuietPeriod {
            quiet_ms: 2_000,
            max_wait_ms: 2_000
        })
    );
    assert_eq!(with(-5, 500).quiet_period(), None);
    assert_eq!(
        with(i64::MAX, i64::MAX).quiet_period(),
        Some(QuietPeriod {
            quiet_ms: MAX_QUIET_MS,
            max_wait_ms: MAX_QUIET_MS
        })
    );
}

#[test]
fn settings_stored_before_the_quiet_period_load_with_its_defaults() {
    let old = r#"{"auto_sync":true,"when_to_sync":{},"mark_deleted_on_cancel":false,
                  "provider":{"provider":"xero"}}"#;
    let s: ConnectionSettings = serde_json::from_str(old).unwrap();
    assert_eq!(
        (s.quiet_period_ms, s.max_quiet_wait_ms),
        (DEFAULT_QUIET_PERIOD_MS, DEFAULT_MAX_QUIET_WAIT_MS)
    );
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(
        (
            v["quiet_period_ms"].as_i64(),
            v["max_quiet_wait_ms"].as_i64()
        ),
        (Some(1_000), Some(10_000))
    );
}

#[test]
fn serde_round_trips_tagged_by_provider() {
    let mut all: Vec<ConnectionSettings> = Provider::ALL
        .into_iter()
        .map(ConnectionSettings::default_for)
        .collect();
    all.push(xero(Some(("Cash sales", "Europe/London"))));
    all.push(quickbooks(true, Some(today())));
    for s in all {
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            serde_json::from_str::<ConnectionSettings>(&json).unwrap(),
            s,
            "{json}"
        );
    }
    let v = serde_json::to_value(xero(Some(("A", "UTC")))).unwrap();
    assert_eq!(v["provider"]["provider"], "xero");
    assert_eq!(v["provider"]["end_of_day_summary"]["send_time"], "17:30:00");
    // Older stored settings missing newer fields still load with defaults.
    let old = r#"{"auto_sync":true,"when_to_sync":{},"mark_deleted_on_cancel":false,
                  "provider":{"provider":"quickbooks","region":"CA"}}"#;
    let s: ConnectionSettings = serde_json::from_str(old).unwrap();
    let ProviderSettings::QuickBooks(q) = s.provider else {
        panic!()
    };
    assert_eq!((q.region, q.sync_invoices), (QuickBooksRegion::Ca, true));
    assert!(serde_json::from_str::<ConnectionSettings>(r#"{"auto_sync":true,"when_to_sync":{},"mark_deleted_on_cancel":false,"provider":{"provider":"sage"}}"#).is_err());
}
