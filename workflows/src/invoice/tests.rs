//! The invoice module's tests: totals, validation, diff, decoding.

use chrono::{DateTime, NaiveDate};

use super::money::Currency;
use super::snapshot::fixed_point;
use super::*;
use proptest::prelude::*;

fn nzd() -> Currency {
    Currency::parse("NZD").unwrap()
}

fn line(
    id: &str,
    sku: Option<&str>,
    quantity: i64,
    unit_price_minor: i64,
    tax_minor: i64,
) -> InvoiceLine {
    InvoiceLine {
        line_id: id.into(),
        kind: LineKind::Item,
        sku: sku.map(Into::into),
        description: format!("desc {id}"),
        quantity,
        unit_price_minor,
        discount: None,
        tax_code: Some("GST".into()),
        tax_minor,
    }
}

fn payment(id: &str, amount_minor: i64) -> Payment {
    Payment {
        payment_id: id.into(),
        amount_minor,
        currency: None,
        paid_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        method: Some("cash".into()),
        reference: None,
    }
}

/// Sets the totals to what the lines say, so tests start from a valid snapshot.
fn fixed(mut s: InvoiceSnapshot) -> InvoiceSnapshot {
    s.totals = s.computed_totals().unwrap();
    s
}

fn snapshot() -> InvoiceSnapshot {
    fixed(InvoiceSnapshot {
        schema_version: SNAPSHOT_SCHEMA_VERSION,
        invoice_id: "INV-1".into(),
        number: "1001".into(),
        currency: nzd(),
        issued_on: NaiveDate::from_ymd_opt(2024, 5, 1).unwrap(),
        payment_terms: None,
        due_on: NaiveDate::from_ymd_opt(2024, 5, 20),
        status: InvoiceStatus::Issued,
        customer: Customer {
            customer_id: "C1".into(),
            name: "Ann".into(),
            email: None,
            phone: None,
        },
        lines: vec![
            line("L1", Some("BRAKE-01"), 2000, 1250, 375),
            line("L2", None, 1500, 999, 225),
        ],
        discount: None,
        payments: vec![payment("P1", 1000)],
        totals: Totals::default(),
        sales_channel: Some("workshop".into()),
        location: None,
    })
}

#[test]
fn paid_in_full_by_status_or_by_payments_covering_the_total() {
    let mut s = snapshot();
    assert!(!s.is_paid_in_full(), "a part payment");
    s.payments.push(payment("P2", s.totals.total - 1000));
    assert!(s.is_paid_in_full(), "payments cover the total");
    s.payments.clear();
    s.status = InvoiceStatus::Paid;
    assert!(s.is_paid_in_full(), "marked paid");
}

fn issues(s: &InvoiceSnapshot) -> Vec<String> {
    match s.validate() {
        Ok(()) => vec![],
        Err(SnapshotError::Invalid(v)) => v.iter().map(Issue::to_string).collect(),
        Err(e) => panic!("unexpected {e}"),
    }
}

fn assert_refused(s: &InvoiceSnapshot, needle: &str) {
    let found = issues(s);
    assert!(
        found.iter().any(|m| m.contains(needle)),
        "expected {needle:?} in {found:?}"
    );
}

#[test]
fn totals_follow_the_documented_formula_with_rounding() {
    let s = snapshot();
    // 2 × 12.50 = 25.00; 1.5 × 9.99 = 14.985 -> 14.99 (half away from zero)
    assert_eq!(
        s.totals,
        Totals {
            subtotal: 3999,
            discount_total: 0,
            tax_total: 600,
            total: 4599
        }
    );
    assert!(s.validate().is_ok());

    let mut s2 = s.clone();
    s2.lines[0].discount = Some(Discount::Percent { basis_points: 1000 }); // 2.50 off
    s2.lines[1].discount = Some(Discount::Amount { amount_minor: 99 });
    s2.discount = Some(Discount::Percent { basis_points: 333 }); // 3.33% of 36.50 = 1.21545 -> 1.22
    let t = s2.computed_totals().unwrap();
    assert_eq!(
        t,
        Totals {
            subtotal: 3650,
            discount_total: 122,
            tax_total: 600,
            total: 4128
        }
    );

    // A return line rounds symmetrically: -1.5 × 9.99 = -14.985 -> -14.99.
    let mut r = line("R1", None, -1500, 999, 0);
    r.kind = LineKind::Return;
    assert_eq!(r.gross_minor().unwrap(), -1499);
}

#[test]
fn zero_and_three_decimal_currencies() {
    let mut s = snapshot();
    s.currency = Currency::parse("JPY").unwrap();
    s.lines = vec![line("L1", None, 333, 1000, 33)]; // 0.333 × 1000 yen = 333 yen
    s.payments.clear();
    let s = fixed(s);
    assert_eq!(s.totals.total, 366);
    assert!(s.validate().is_ok());

    let mut k = snapshot();
    k.currency = Currency::parse("KWD").unwrap();
    k.lines = vec![line("L1", None, 2500, 1_005, 0)]; // 2.5 × 1.005 = 2.5125 -> 2.513
    k.payments = vec![payment("P1", 2_513)];
    let k = fixed(k);
    assert_eq!(k.totals.total, 2_513);
    assert!(k.validate().is_ok());
    let mut wrong = k.clone();
    wrong.totals.total = 2_512;
    assert_refused(
        &wrong,
        "totals.total: is KWD 2.512 but subtotal - discount + tax is KWD 2.513",
    );
}

#[test]
fn every_rule_is_refused_with_a_message_naming_the_place() {
    let refuses = |mutate: fn(&mut InvoiceSnapshot), needle: &str| {
        let mut s = snapshot();
        mutate(&mut s);
        assert_refused(&s, needle);
    };
    refuses(
        |s| s.invoice_id = " ".into(),
        "invoice_id: must not be empty",
    );
    refuses(
        |s| s.customer.customer_id.clear(),
        "customer.customer_id: must not be empty",
    );
    refuses(
        |s| s.due_on = NaiveDate::from_ymd_opt(2024, 4, 1),
        "due_on: 2024-04-01 is before",
    );
    refuses(
        |s| s.schema_version = 9,
        "schema_version: unsupported version 9",
    );
    refuses(
        |s| s.lines[0].quantity = -1000,
        "line 1 (SKU BRAKE-01): quantity must not be negative",
    );
    refuses(
        |s| s.lines[1].unit_price_minor = -5,
        "line 2 (id \"L2\"): unit price must not be negative",
    );
    refuses(
        |s| s.lines[1].line_id = "L1".into(),
        "line 2 (id \"L1\"): duplicate line_id \"L1\" (also on line 1)",
    );
    refuses(
        |s| s.lines[0].line_id.clear(),
        "line 1 (SKU BRAKE-01): line_id must not be empty",
    );
    refuses(
        |s| s.lines[0].discount = Some(Discount::Amount { amount_minor: -1 }),
        "line 1 (SKU BRAKE-01): discount must not be negative",
    );
    refuses(
        |s| s.lines[0].discount = Some(Discount::Amount { amount_minor: 2501 }),
        "discount NZD 25.01 exceeds the line amount NZD 25.00",
    );
    refuses(
        |s| {
            s.lines[0].discount = Some(Discount::Percent {
                basis_points: 10_001,
            })
        },
        "between 0% and 100%",
    );
    refuses(
        |s| {
            s.lines[0].kind = LineKind::Return;
            s.lines[0].discount = Some(Discount::Percent { basis_points: 10 });
        },
        "only allowed on item lines",
    );
    refuses(
        |s| s.discount = Some(Discount::Amount { amount_minor: -5 }),
        "discount: must not be negative",
    );
    refuses(
        |s| s.discount = Some(Discount::Percent { basis_points: -1 }),
        "discount: must be between 0% and 100%",
    );
    refuses(
        |s| s.discount = Some(Discount::Amount { amount_minor: 4000 }),
        "discount: NZD 40.00 exceeds the subtotal",
    );
    refuses(
        |s| s.payments.push(payment("P1", 1)),
        "payment 2 (\"P1\"): duplicate payment_id",
    );
    refuses(
        |s| s.payments[0].payment_id.clear(),
        "payment_id must not be empty",
    );
    refuses(
        |s| s.payments[0].currency = Currency::parse("AUD").ok(),
        "payment 1 (\"P1\"): currency AUD differs from the invoice currency NZD",
    );
    refuses(
        |s| s.payments.push(payment("P2", 3600)),
        "payments: add up to NZD 46.00, beyond the invoice total NZD 45.99",
    );
    refuses(
        |s| s.totals.subtotal += 1,
        "totals.subtotal: is NZD 40.00 but the lines add up to NZD 39.99",
    );
    refuses(
        |s| s.totals.discount_total = 5,
        "totals.discount_total: is NZD 0.05 but the invoice discount is NZD 0.00",
    );
    refuses(
        |s| s.totals.tax_total = 0,
        "totals.tax_total: is NZD 0.00 but the line taxes add up to NZD 6.00",
    );
    refuses(
        |s| s.lines[0].unit_price_minor = i64::MAX,
        "line 1 (SKU BRAKE-01): amount out of range",
    );
}

#[test]
fn allowed_signs_on_return_and_discount_lines_and_all_issues_reported() {
    let mut s = snapshot();
    let mut ret = line("L3", Some("TUBE"), -1000, 500, -75);
    ret.kind = LineKind::Return;
    let mut disc = line("L4", None, 1000, -300, 0);
    disc.kind = LineKind::Discount;
    s.lines.extend([ret, disc]);
    let s = fixed(s);
    assert!(s.validate().is_ok(), "{:?}", s.validate());

    let mut bad = s.clone();
    bad.invoice_id.clear();
    bad.lines[0].quantity = -1;
    let err = bad.validate().unwrap_err();
    let SnapshotError::Invalid(list) = &err else {
        panic!("{err}")
    };
    assert!(list.len() >= 3, "{list:?}"); // id, quantity, totals
    assert!(err.to_string().starts_with(&format!(
        "the invoice snapshot has {} problem(s): ",
        list.len()
    )));
}

#[test]
fn serde_round_trip_and_decode_errors_are_clear() {
    let s = snapshot();
    let json = serde_json::to_vec(&s).unwrap();
    assert_eq!(InvoiceSnapshot::decode(&json).unwrap(), s);
    assert_eq!(InvoiceSnapshot::decode_valid(&json).unwrap(), s);
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["lines"][0]["kind"], "item");

    let err = |bytes: &[u8]| InvoiceSnapshot::decode(bytes).unwrap_err().to_string();
    assert!(err(&json[..json.len() / 2]).contains("ends early (truncated?)"));
    assert!(err(b"not json").contains("malformed JSON"));
    assert!(err(b"").contains("ends early"));
    assert!(err(b"[1,2]").contains("could not be read"));
    assert!(err(br#"{"invoice_id":"x"}"#).contains("schema_version is missing"));
    let mut v2 = v.clone();
    v2["schema_version"] = 2.into();
    assert!(
        err(v2.to_string().as_bytes())
            .contains("unsupported schema_version 2 (this build reads 1)")
    );
    let mut cur = v.clone();
    cur["currency"] = "XYZ".into();
    assert!(err(cur.to_string().as_bytes()).contains("currency: unknown currency code \"XYZ\""));
    let mut q = v.clone();
    q["lines"][1]["quantity"] = serde_json::json!(1.5);
    assert!(
        err(q.to_string().as_bytes()).contains("lines[1].quantity: invalid type: floating point")
    );
    let mut bad_total = v;
    bad_total["totals"]["total"] = 1.into();
    let e = InvoiceSnapshot::decode_valid(bad_total.to_string().as_bytes()).unwrap_err();
    assert!(matches!(e, SnapshotError::Invalid(_)), "{e}");
}

#[test]
fn diff_reports_each_kind_of_change() {
    let old = snapshot();
    assert!(diff(&old, &old).is_empty());
    let mut new = old.clone();
    new.lines[0].quantity = 3000;
    new.lines[0].unit_price_minor = 1300;
    new.lines[0].discount = Some(Discount::Percent { basis_points: 1050 });
    new.lines.remove(1);
    new.lines.push(line("L9", Some("CHAIN"), 1500, 4000, 0));
    new.discount = Some(Discount::Amount { amount_minor: 500 });
    new.customer.email = Some("ann@example.com".into());
    new.payments = vec![payment("P2", 2000)];
    new.status = InvoiceStatus::Paid;
    let new = fixed(new);
    let described: Vec<String> = diff(&old, &new).iter().map(Change::describe).collect();
    assert_eq!(
        described,
        vec![
            "customer details changed for Ann",
            "item removed: \"desc L2\"",
            "quantity of BRAKE-01 \"desc L1\" changed from 2 to 3",
            "unit price of BRAKE-01 \"desc L1\" changed from NZD 12.50 to NZD 13.00",
            "discount on BRAKE-01 \"desc L1\" changed from none to 10.5%",
            "item added: CHAIN \"desc L9\" × 1.5 at NZD 40.00",
            "invoice discount changed from none to NZD 5.00",
            "payment of NZD 10.00 removed (P1)",
            "payment of NZD 20.00 added (P2)",
            "status changed from issued to paid",
            "total changed from NZD 45.99 to NZD 93.65",
        ]
    );
    let mut other = old.clone();
    other.customer = Customer {
        customer_id: "C2".into(),
        name: "Bob".into(),
        email: None,
        phone: None,
    };
    let changes = diff(&old, &other);
    assert_eq!(changes[0].describe(), "customer changed from Ann to Bob");
    let json = serde_json::to_string(&changes[0]).unwrap();
    assert_eq!(serde_json::from_str::<Change>(&json).unwrap(), changes[0]);
    assert_eq!(fixed_point(-1250, 1000), "-1.25");
    assert_eq!(fixed_point(1, 1000), "0.001");
}

fn arb_snapshot() -> impl Strategy<Value = InvoiceSnapshot> {
    let arb_line = (
        0i64..50_000,
        0i64..2_000_000,
        0i64..100_000,
        0u8..5,
        0i64..=10_000,
        any::<bool>(),
    );
    (
        prop::sample::select(vec!["NZD", "JPY", "KWD", "USD"]),
        prop::collection::vec(arb_line, 0..8),
        prop::option::of(0i64..=10_000),
        0i64..=1_000,
    )
        .prop_map(|(code, raw, invoice_bps, paid_permille)| {
            let mut s = snapshot();
            s.currency = Currency::parse(code).unwrap();
            s.payments.clear();
            s.lines = raw
                .into_iter()
                .enumerate()
                .map(|(i, (q, p, tax, kind, bps, amount))| {
                    let mut l = line(&format!("L{i}"), None, q, p, tax);
                    match kind {
                        0 => (l.kind, l.quantity) = (LineKind::Return, -q),
                        1 => (l.kind, l.unit_price_minor) = (LineKind::Discount, -p / 10),
                        2 if amount => {
                            let gross = l.gross_minor().unwrap();
                            l.discount = Some(Discount::Amount {
                                amount_minor: gross * bps / 10_000,
                            });
                        }
                        2 => l.discount = Some(Discount::Percent { basis_points: bps }),
                        _ => {}
                    }
                    l
                })
                .collect();
            let subtotal = s.computed_totals().unwrap().subtotal;
            if subtotal > 0 {
                s.discount = invoice_bps.map(|basis_points| Discount::Percent { basis_points });
            }
            let total = s.computed_totals().unwrap().total;
            if total > 0 {
                s.payments.push(payment("P1", total * paid_permille / 1000));
            }
            fixed(s)
        })
}

proptest! {
    #[test]
    fn generated_snapshots_validate_and_round_trip(s in arb_snapshot()) {
        prop_assert_eq!(s.validate(), Ok(()));
        let json = serde_json::to_vec(&s).unwrap();
        prop_assert_eq!(InvoiceSnapshot::decode_valid(&json), Ok(s));
    }

    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = InvoiceSnapshot::decode(&bytes);
    }

    #[test]
    fn decode_never_panics_on_damaged_snapshots(s in arb_snapshot(), cut in any::<prop::sample::Index>(), b in any::<u8>()) {
        let mut json = serde_json::to_vec(&s).unwrap();
        let i = cut.index(json.len());
        json[i] = b;
        let _ = InvoiceSnapshot::decode_valid(&json);
        let _ = InvoiceSnapshot::decode(&json[..i]);
    }
}
