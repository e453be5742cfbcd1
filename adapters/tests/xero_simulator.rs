//! The Xero simulator over real HTTP: envelopes, validation bodies, status
//! transitions, idempotency replay, token rotation, limits and faults.

use ledgerflow_adapters::xero::simulator::{Fault, FaultKind, SimConfig, SimLimits, Simulator};
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Api {
    http: reqwest::Client,
    sim: Simulator,
    tenant: String,
    token: String,
    refresh: String,
}

impl Api {
    async fn new() -> Api {
        let sim = Simulator::start(SimConfig::default()).await.unwrap();
        let tenant = sim.add_tenant("Demo Company (NZ)");
        let tokens = sim.authorize(&[&tenant]);
        Api {
            http: reqwest::Client::new(),
            sim,
            tenant,
            token: tokens.access_token,
            refresh: tokens.refresh_token,
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let mut b = self
            .http
            .request(method, format!("{}/{path}", self.sim.api_base_url()))
            .bearer_auth(&self.token)
            .header("xero-tenant-id", &self.tenant);
        if let Some(k) = key {
            b = b.header("Idempotency-Key", k);
        }
        if let Some(body) = body {
            b = b.json(&body);
        }
        let r = b.send().await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        (status, headers, r.text().await.unwrap())
    }

    async fn refresh_with(&self, token: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}/connect/token", self.sim.identity_base_url()))
            .basic_auth("sim-client", Some("sim-secret"))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", token)])
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap())
    }
}

fn invoice(status: &str, account: &str, amount: &str) -> Value {
    json!({"Invoices": [{
        "Type": "ACCREC", "Contact": {"Name": "Jane Doe"}, "Reference": "INV-1",
        "Date": "2026-11-23", "DueDate": "2026-12-01", "Status": status,
        "LineAmountTypes": "Exclusive",
        "LineItems": [{"Description": "Brake service", "Quantity": 2, "UnitAmount": serde_json::from_str::<Value>(amount).unwrap(),
                       "AccountCode": account, "TaxType": "OUTPUT2"}]
    }]})
}

#[tokio::test]
async fn invoices_envelopes_validation_and_transitions() {
    let api = Api::new().await;
    use reqwest::Method as M;

    // Unknown account code: 400 ValidationException with Xero's message.
    let (st, _, body) = api
        .send(
            M::PUT,
            "Invoices?summarizeErrors=true",
            Some(invoice("AUTHORISED", "999", "20.00")),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["Type"], "ValidationException");
    assert_eq!(v["ErrorNumber"], 10);
    assert_eq!(
        v["Elements"][0]["ValidationErrors"][0]["Message"],
        "Account code '999' is not a valid code for this document."
    );
    // summarizeErrors=false: 200, the element carries its errors.
    let (st, _, body) = api
        .send(
            M::PUT,
            "Invoices?summarizeErrors=false",
            Some(invoice("DRAFT", "999", "20.00")),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["Invoices"][0]["HasErrors"], true);
    assert_eq!(api.sim.invoices(&api.tenant).len(), 0);

    // Create: envelope, generated number, exact totals (2 x 20.005 rounds per line).
    let (st, headers, body) = api
        .send(
            M::PUT,
            "Invoices?summarizeErrors=true&unitdp=4",
            Some(invoice("DRAFT", "200", "20.005")),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(headers["x-minlimit-remaining"], "57");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["Status"], "OK");
    let inv = &v["Invoices"][0];
    assert_eq!(inv["InvoiceNumber"], "INV-0001");
    assert_eq!(inv["Status"], "DRAFT");
    // Exact decimal text on the wire.
    assert!(body.contains("\"SubTotal\":40.01,"), "{body}");
    assert!(body.contains("\"TotalTax\":6.00,"), "{body}");
    assert!(body.contains("\"Total\":46.01,"), "{body}");
    assert!(inv["LineItems"][0]["LineItemID"].is_string());
    let id = inv["InvoiceID"].as_str().unwrap().to_string();

    // Find by Reference (where filter) and by id; 404 is plain text.
    let (_, _, body) = api
        .send(
            M::GET,
            "Invoices?where=Reference%3D%3D%22INV-1%22",
            None,
            None,
        )
        .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["Invoices"].as_array().unwrap().len(), 1);
    let (st, _, body) = api.send(M::GET, "Invoices/nope", None, None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(body.contains("cannot be found"));

    // Payment on a draft is refused; authorise, pay too much, pay in full.
    let pay = |amount: &str| {
        json!({"Payments": [{"Invoice": {"InvoiceID": id}, "Account": {"Code": "090"},
            "Date": "2026-11-23", "Amount": serde_json::from_str::<Value>(amount).unwrap()}]})
    };
    let (st, _, body) = api
        .send(
            M::PUT,
            "Payments?summarizeErrors=true",
            Some(pay("10.00")),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("Invoice not of valid status for creating payment"),
        "{body}"
    );
    let auth = json!({"Invoices": [{"Status": "AUTHORISED"}]});
    let (st, _, body) = api
        .send(
            M::POST,
            &format!("Invoices/{id}?summarizeErrors=true"),
            Some(auth),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, _, body) = api
        .send(
            M::PUT,
            "Payments?summarizeErrors=true",
            Some(pay("50.00")),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(body.contains("Payment amount exceeds the amount outstanding on this document"));
    let (st, _, body) = api
        .send(
            M::PUT,
            "Payments?summarizeErrors=true",
            Some(pay("46.01")),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let payment_id = serde_json::from_str::<Value>(&body).unwrap()["Payments"][0]["PaymentID"]
        .as_str()
        .unwrap()
        .to_string();
    let inv = &api.sim.invoices(&api.tenant)[0];
    assert_eq!(inv.status.as_deref(), Some("PAID"));
    assert!(inv.fully_paid_on_date.is_some());

    // Paid or with payments: no void until the payment is deleted.
    let void = json!({"Invoices": [{"Status": "VOIDED"}]});
    let (st, _, body) = api
        .send(
            M::POST,
            &format!("Invoices/{id}?summarizeErrors=true"),
            Some(void.clone()),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(body.contains("has a payment or credit note allocated"));
    let del = json!({"Payments": [{"Status": "DELETED"}]});
    let (st, _, _) = api
        .send(M::POST, &format!("Payments/{payment_id}"), Some(del), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        api.sim.invoices(&api.tenant)[0].status.as_deref(),
        Some("AUTHORISED")
    );
    let (st, _, body) = api
        .send(
            M::POST,
            &format!("Invoices/{id}?summarizeErrors=true"),
            Some(void),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    // Voided is final; Authorised → Deleted was never allowed.
    let back = json!({"Invoices": [{"Status": "DRAFT"}]});
    let (st, _, body) = api
        .send(
            M::POST,
            &format!("Invoices/{id}?summarizeErrors=true"),
            Some(back),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(body.contains("Invoice not of valid status for modification"));
}

#[tokio::test]
async fn idempotency_key_replays_the_first_answer() {
    let api = Api::new().await;
    let body = invoice("DRAFT", "200", "10.00");
    let (_, _, first) = api
        .send(
            reqwest::Method::PUT,
            "Invoices?summarizeErrors=true",
            Some(body.clone()),
            Some("k-1"),
        )
        .await;
    let (_, _, again) = api
        .send(
            reqwest::Method::PUT,
            "Invoices?summarizeErrors=true",
            Some(body),
            Some("k-1"),
        )
        .await;
    assert_eq!(first, again);
    assert_eq!(api.sim.invoices(&api.tenant).len(), 1);
    assert_eq!(api.sim.write_count(&api.tenant), 1);
    assert_eq!(api.sim.stats().idempotent_replays, 1);

    // Dropped after commit: the write happened, the answer never arrived;
    // the same key then replays the stored answer.
    api.sim.push_fault(Fault::once(FaultKind::DropAfterCommit));
    let r = api
        .http
        .put(format!(
            "{}/Invoices?summarizeErrors=true",
            api.sim.api_base_url()
        ))
        .bearer_auth(&api.token)
        .header("xero-tenant-id", &api.tenant)
        .header("Idempotency-Key", "k-2")
        .json(&invoice("DRAFT", "200", "11.00"))
        .send()
        .await;
    let lost = match r {
        Err(_) => true,
        Ok(resp) => resp.text().await.is_err(),
    };
    assert!(lost, "the answer should have been lost");
    assert_eq!(api.sim.invoices(&api.tenant).len(), 2);
    let (st, _, body) = api
        .send(
            reqwest::Method::PUT,
            "Invoices?summarizeErrors=true",
            Some(invoice("DRAFT", "200", "11.00")),
            Some("k-2"),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert!(body.contains("INV-0002"));
    assert_eq!(api.sim.invoices(&api.tenant).len(), 2);
}

#[tokio::test]
async fn refresh_tokens_rotate_and_are_single_use() {
    let api = Api::new().await;
    api.sim.set_refresh_grace(chrono::Duration::zero());
    let (st, v) = api.refresh_with(&api.refresh).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["expires_in"], 1800);
    let next = v["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(next, api.refresh);
    api.sim.advance(chrono::Duration::seconds(1));
    let (st, v) = api.refresh_with(&api.refresh).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"], "invalid_grant");
    assert_eq!(api.sim.refresh_token_uses(&api.refresh), 1);

    // With Xero's grace window, a lost answer can be fetched again once.
    api.sim.set_refresh_grace(chrono::Duration::minutes(30));
    let (_, v1) = api.refresh_with(&next).await;
    let (_, v2) = api.refresh_with(&next).await;
    assert_eq!(v1["refresh_token"], v2["refresh_token"]);
    // ...but not once the new token has itself been spent.
    let newest = v1["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(api.refresh_with(&newest).await.0, StatusCode::OK);
    assert_eq!(api.refresh_with(&next).await.0, StatusCode::BAD_REQUEST);

    // Access tokens last 30 minutes.
    let (st, _, _) = api.send(reqwest::Method::GET, "Contacts", None, None).await;
    assert_eq!(st, StatusCode::OK);
    api.sim.advance(chrono::Duration::minutes(31));
    let (st, h, body) = api.send(reqwest::Method::GET, "Contacts", None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert!(body.contains("TokenExpired"), "{body}");
    assert!(h.contains_key("www-authenticate"));
}

#[tokio::test]
async fn limits_headers_and_faults() {
    let mut api = Api::new().await;
    api.sim.set_limits(SimLimits {
        per_minute: 3,
        per_day: 5,
        concurrent: 5,
        app_per_minute: 100,
    });
    use reqwest::Method as M;
    for left in ["2", "1", "0"] {
        let (st, h, _) = api.send(M::GET, "Contacts", None, None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(h["x-minlimit-remaining"], left);
    }
    let (st, h, _) = api.send(M::GET, "Contacts", None, None).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h["x-rate-limit-problem"], "minute");
    let wait: i64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=61).contains(&wait), "{wait}");
    api.sim.advance(chrono::Duration::seconds(61));
    for _ in 0..2 {
        assert_eq!(
            api.send(M::GET, "Contacts", None, None).await.0,
            StatusCode::OK
        );
    }
    let (st, h, _) = api.send(M::GET, "Contacts", None, None).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h["x-rate-limit-problem"], "day");
    assert_eq!(h["x-daylimit-remaining"], "0");
    // The next simulated day brings the quota back.
    api.sim.advance(chrono::Duration::days(1));
    api.token = api.sim.authorize(&[&api.tenant]).access_token;
    let (st, h, _) = api.send(M::GET, "Contacts", None, None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["x-daylimit-remaining"], "4");

    api.sim.push_fault(Fault::once(FaultKind::Status(503)));
    assert_eq!(
        api.send(M::GET, "Contacts", None, None).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    api.sim.push_fault(Fault::once(FaultKind::Status(500)));
    assert_eq!(
        api.send(M::GET, "Contacts", None, None).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    api.sim.push_fault(Fault::once(FaultKind::RateLimit {
        problem: "appminute".into(),
        retry_after: 7,
    }));
    let (st, h, _) = api.send(M::GET, "Contacts", None, None).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h["retry-after"], "7");
    assert_eq!(h["x-rate-limit-problem"], "appminute");
    api.sim.push_fault(Fault::once(FaultKind::ExpiredToken));
    assert_eq!(
        api.send(M::GET, "Contacts", None, None).await.0,
        StatusCode::UNAUTHORIZED
    );

    // Another tenant's id with this token: 403.
    let other = api.sim.add_tenant("Other Org");
    let r = api
        .http
        .get(format!("{}/Contacts", api.sim.api_base_url()))
        .bearer_auth(&api.token)
        .header("xero-tenant-id", other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}
