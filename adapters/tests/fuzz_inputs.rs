//! Bad input from the outside world: webhook deliveries (Xero and Shopify:
//! signature checks and parsers) and provider answers (Xero and Shopify
//! error classifiers, wire types, decimals). Arbitrary bytes and
//! structured-but-wrong JSON must never panic; a refusal must say what is
//! wrong; a forged or tampered delivery must never verify.
//!
//! Cases come from proptest strategies on a fixed-seed runner, so a failure
//! is reproducible. `LEDGERFLOW_FUZZ_CASES` raises the count for longer runs
//! (the default keeps each test to about a second); each test prints its
//! cases and seconds.

use std::time::Instant;

use chrono::{TimeZone, Utc};
use ledgerflow_adapters::decimal::Decimal;
use ledgerflow_adapters::shopify::{
    errors as shopify_errors, webhook as shopify_webhook, wire as shopify_wire,
};
use ledgerflow_adapters::xero::{
    errors as xero_errors, webhook as xero_webhook, wire as xero_wire,
};
use ledgerflow_workflows::provider::ProviderError;
use ledgerflow_workflows::provider_state::Secret;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

fn cases(default: u32) -> u32 {
    std::env::var("LEDGERFLOW_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn draw<S: Strategy>(strategy: S, n: u32) -> Vec<S::Value> {
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: n,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &[11; 32]),
    );
    (0..n)
        .map(|_| strategy.new_tree(&mut runner).expect("draw").current())
        .collect()
}

fn report(what: &str, n: usize, started: Instant) {
    println!(
        "fuzz {what}: {n} cases in {:.2} s",
        started.elapsed().as_secs_f64()
    );
}

/// A hostile JSON value: wrong types, extremes, nesting, odd strings.
fn hostile_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        Just(serde_json::json!(1e308)),
        Just(serde_json::json!(u64::MAX)),
        ".{0,10}".prop_map(Value::String),
        "-?[0-9]{0,30}(\\.[0-9]{0,30})?".prop_map(Value::String),
        Just(Value::String("/Date(99999999999999999999+0000)/".into())),
    ];
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(".{0,6}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// `base` with up to three fields (at any depth) replaced or removed.
fn mutated(base: Value) -> impl Strategy<Value = Vec<u8>> {
    fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
        let children: Vec<(String, &Value)> = match v {
            Value::Object(m) => m.iter().map(|(k, c)| (k.clone(), c)).collect(),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, c)| (i.to_string(), c))
                .collect(),
            _ => Vec::new(),
        };
        for (k, c) in children {
            let p = format!("{at}/{k}");
            out.push(p.clone());
            pointers(c, p, out);
        }
    }
    let mut paths = Vec::new();
    pointers(&base, String::new(), &mut paths);
    let n = paths.len().max(1);
    prop::collection::vec((0..n, prop::option::of(hostile_value())), 1..4).prop_map(move |edits| {
        let mut v = base.clone();
        for (i, replacement) in edits {
            let Some(path) = paths.get(i) else { continue };
            let (parent, key) = path.rsplit_once('/').unwrap_or(("", path));
            match (v.pointer_mut(parent), replacement) {
                (Some(Value::Object(m)), None) => {
                    m.remove(key);
                }
                (Some(Value::Object(m)), Some(r)) => {
                    m.insert(key.to_string(), r);
                }
                (Some(Value::Array(a)), Some(r)) => {
                    if let Some(slot) = key.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                        *slot = r;
                    }
                }
                _ => {}
            }
        }
        serde_json::to_vec(&v).expect("JSON serialises")
    })
}

/// Arbitrary bytes, half of the time a mutated `base`.
fn bad_body(base: Value) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![prop::collection::vec(any::<u8>(), 0..400), mutated(base)]
}

fn xero_delivery() -> Value {
    serde_json::from_slice(&ledgerflow_adapters::xero::simulator::invoice_events_body(
        "8f6c0000-0000-0000-0000-000000000001",
        &["a1", "b2"],
        7,
    ))
    .expect("the simulator's delivery is JSON")
}

#[test]
fn xero_webhook_signature_and_parser_survive_anything() {
    let key = b"webhook-key-from-the-developer-portal";
    let n = cases(500);
    let started = Instant::now();
    let inputs = draw(
        (
            bad_body(xero_delivery()),
            ".{0,60}",
            any::<usize>(),
            any::<u8>(),
        ),
        n,
    );
    for (body, forged, at, bit) in &inputs {
        // A made-up signature never verifies; the right one always does.
        assert!(!xero_webhook::verify(key, body, Some(forged)));
        assert!(!xero_webhook::verify(key, body, None));
        let sig = xero_webhook::sign(key, body);
        assert!(xero_webhook::verify(key, body, Some(&sig)));
        // One flipped bit anywhere in the body breaks it.
        if !body.is_empty() {
            let mut tampered = body.clone();
            tampered[at % body.len()] ^= 1 << (bit % 8);
            assert!(!xero_webhook::verify(key, &tampered, Some(&sig)));
        }
        match xero_webhook::parse(body) {
            Ok(p) => {
                // Whatever parsed has a stable identity.
                assert_eq!(p.delivery_id(), p.delivery_id());
            }
            Err(e) => assert!(e.to_string().contains("not a Xero event payload")),
        }
    }
    report("xero webhook verify+parse", inputs.len(), started);
}

fn shopify_headers(sig: &str, topic: &str, extra: &[(String, String)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("x-shopify-hmac-sha256", sig),
        ("x-shopify-topic", topic),
        (
            "x-shopify-webhook-id",
            "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
        ),
        ("x-shopify-shop-domain", "shop.myshopify.com"),
    ] {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    }
    for (k, v) in extra {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            h.insert(k, v);
        }
    }
    h
}

fn shopify_order() -> Value {
    serde_json::json!({
        "id": 450789469, "admin_graphql_api_id": "gid://shopify/Order/450789469",
        "name": "#1001", "currency": "NZD", "financial_status": "paid",
        "total_price": "138.00", "subtotal_price": "120.00", "total_tax": "18.00",
        "tags": "ledgerflow-7-0123456789abcdef",
        "note_attributes": [
            {"name": "ledgerflow_connection", "value": "7"},
            {"name": "ledgerflow_invoice_id", "value": "INV-1"},
            {"name": "ledgerflow_invoice_number", "value": "INV-1"}],
        "line_items": [{"id": 1, "title": "Tune", "quantity": 1, "price": "120.00"}],
        "updated_at": "2026-11-23T10:00:00Z"
    })
}

#[test]
fn shopify_webhook_signature_and_parser_survive_anything() {
    let secret = Secret::new("shpss_0123456789abcdef".to_string());
    let config = shopify_webhook::WebhookConfig::new(secret.clone());
    let now = Utc
        .with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
        .single()
        .expect("a time");
    let topics = prop_oneof![
        Just("orders/paid".to_string()),
        Just("draft_orders/update".to_string()),
        ".{0,20}",
    ];
    let extra = prop::collection::vec(
        (Just("x-shopify-triggered-at".to_string()), ".{0,30}"),
        0..2,
    );
    let n = cases(500);
    let started = Instant::now();
    let inputs = draw((bad_body(shopify_order()), topics, ".{0,60}", extra), n);
    let mut parsed = 0;
    for (body, topic, forged, extra) in &inputs {
        // Forged: refused as unsigned (401), whatever the body.
        let forged_headers = shopify_headers(forged, topic, extra);
        if shopify_webhook::verify_signature(&config.secrets, body, forged).is_ok() {
            panic!("a made-up signature verified: {forged:?}");
        }
        match shopify_webhook::parse(&forged_headers, body, &config, now) {
            Err(e) => assert_eq!(e.http_status(), 401, "{e}"),
            Ok(_) => panic!("a forged delivery was accepted"),
        }
        // Signed: read, or refused with a status and a reason.
        let signed = shopify_headers(&shopify_webhook::sign(&secret, body), topic, extra);
        match shopify_webhook::parse(&signed, body, &config, now) {
            Ok(_) => parsed += 1,
            Err(e) => {
                assert!(matches!(e.http_status(), 400 | 401 | 413), "{e}");
                assert!(!e.to_string().is_empty());
            }
        }
    }
    report(
        &format!("shopify webhook verify+parse ({parsed} signed bodies read)"),
        inputs.len(),
        started,
    );
}

fn retry_after_headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        Just("retry-after".to_string()),
        Just("x-rate-limit-problem".to_string()),
        Just("x-minlimit-remaining".to_string()),
        Just("x-shopify-shop-api-call-limit".to_string()),
        "[a-z-]{1,12}",
    ];
    prop::collection::vec((name, ".{0,30}"), 0..3)
}

fn header_map(pairs: &[(String, String)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            h.insert(k, v);
        }
    }
    h
}

fn xero_validation() -> Value {
    serde_json::json!({
        "ErrorNumber": 10, "Type": "ValidationException",
        "Message": "A validation exception occurred",
        "Elements": [{"Reference": "INV-1", "ValidationErrors": [{"Message": "Account code '999' is not a valid code for this document."}]}]
    })
}

#[test]
fn provider_error_answers_are_classified_whatever_they_hold() {
    let now = Utc
        .with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
        .single()
        .expect("a time");
    let shopify_error =
        serde_json::json!({"errors": {"line_items": ["is invalid"], "base": ["x"]}});
    let n = cases(500);
    let started = Instant::now();
    let inputs = draw(
        (
            100u16..600,
            retry_after_headers(),
            bad_body(xero_validation()),
            bad_body(shopify_error),
        ),
        n,
    );
    for (status, headers, xero_body, shopify_body) in &inputs {
        let headers = header_map(headers);
        let xero_body = String::from_utf8_lossy(xero_body);
        let e = xero_errors::classify(*status, &headers, &xero_body, now);
        assert!(!e.to_string().is_empty());
        if let xero_errors::XeroError::RateLimited { not_before, .. } = &e {
            assert!(*not_before >= now, "a rate limit never waits into the past");
        }
        let p = ProviderError::from(e);
        assert!(!p.to_string().is_empty());
        let _ = xero_errors::validation_messages(&xero_body);

        let shopify_body = String::from_utf8_lossy(shopify_body);
        let e = shopify_errors::classify(*status, &headers, &shopify_body, now);
        assert!(!e.to_string().is_empty());
        if let shopify_errors::ShopifyError::RateLimited { not_before, .. } = &e {
            assert!(*not_before >= now, "a rate limit never waits into the past");
        }
        let p = ProviderError::from(e);
        assert!(!p.to_string().is_empty());
        let _ = shopify_errors::error_messages(&shopify_body);
    }
    report("xero+shopify error classifiers", inputs.len(), started);
}

fn xero_invoice_answer() -> Value {
    serde_json::json!({
        "Id": "x", "Status": "OK", "Invoices": [{
            "Type": "ACCREC", "InvoiceID": "243216c5-369e-4056-ac67-05388f86dc81",
            "InvoiceNumber": "INV-0001", "Reference": "INV-1", "Status": "AUTHORISED",
            "SubTotal": "120.00", "TotalTax": "18.00", "Total": "138.00", "AmountPaid": "0.00",
            "LineItems": [{"Description": "Tune", "Quantity": "1.0000", "UnitAmount": "120.00", "TaxAmount": "18.00"}],
            "Payments": [{"PaymentID": "p1", "Amount": "10.00"}]
        }],
        "Payments": [{"PaymentID": "p1", "Amount": "10.00", "Status": "AUTHORISED"}]
    })
}

/// A decoded amount is either refused or exact at two places.
fn amount_ok(d: &Option<Decimal>) {
    if let Some(d) = d
        && let Ok(cents) = d.to_scaled(2)
    {
        assert_eq!(Decimal::from_scaled(cents, 2).to_scaled(2), Ok(cents));
    }
}

#[test]
fn provider_answers_decode_or_are_refused_without_panicking() {
    let draft = serde_json::json!({"draft_order": {
        "id": 994118539, "name": "#D2", "status": "open", "currency": "NZD",
        "total_price": "138.00", "subtotal_price": "120.00", "total_tax": "18.00",
        "tags": "ledgerflow-7-0123456789abcdef",
        "line_items": [{"title": "Tune", "quantity": 1, "price": "120.00"}]}});
    let graphql = serde_json::json!({"data": {"x": 1}, "errors": [{"message": "Throttled"}],
        "extensions": {"cost": {"requestedQueryCost": 10, "actualQueryCost": 10,
        "throttleStatus": {"maximumAvailable": 1000.0, "currentlyAvailable": 990, "restoreRate": 50.0}}}});
    let n = cases(500);
    let started = Instant::now();
    let inputs = draw(
        (
            bad_body(xero_invoice_answer()),
            bad_body(draft),
            bad_body(graphql),
            "-?[0-9]{0,40}(\\.[0-9]{0,40})?|.{0,20}",
        ),
        n,
    );
    for (xero, shopify, gql, text) in &inputs {
        if let Ok(env) = serde_json::from_slice::<xero_wire::Envelope>(xero) {
            for inv in env.invoices.unwrap_or_default() {
                for d in [&inv.sub_total, &inv.total_tax, &inv.total, &inv.amount_paid] {
                    amount_ok(d);
                }
            }
        }
        let _ = serde_json::from_slice::<xero_wire::ApiException>(xero);
        let _ = serde_json::from_slice::<xero_wire::TokenResponse>(xero);
        if let Ok(d) = serde_json::from_slice::<shopify_wire::DraftOrderEnvelope>(shopify) {
            let _ = serde_json::to_vec(&d);
        }
        let _ = serde_json::from_slice::<shopify_wire::OrderEnvelope>(shopify);
        let _ = serde_json::from_slice::<shopify_wire::GraphqlResponse>(gql);
        let _ = shopify_wire::parse_gid(text);
        let _ = shopify_wire::split_tags(Some(text));
        match Decimal::parse(text) {
            Ok(d) => {
                for scale in [0, 2, 3, 4] {
                    let _ = d.to_scaled(scale);
                }
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    report(
        "xero+shopify wire types and decimals",
        inputs.len(),
        started,
    );
}
