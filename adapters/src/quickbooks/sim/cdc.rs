//! The simulator's change data capture (`GET /cdc?entities=&changedSince=`)
//! and the webhook deliveries it can send: both read the company's change
//! log ([`super::state::ChangeRecord`]). A changed entity is answered in its
//! current state, a deleted one as `{"Id","status":"Deleted"}`, as Intuit
//! does. Deliveries come in the legacy shape or as CloudEvents, signed
//! with the verifier token.

use std::collections::BTreeSet;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::answers::fault;
use super::state::{ChangeRecord, Company, id_of};
use crate::sim::server::{Answer, SimRequest};

/// The body shape of a webhook delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// `{"eventNotifications":[{"realmId","dataChangeEvent":{"entities":[..]}}]}`.
    Legacy,
    /// An array of CloudEvents (`type: qbo.invoice.updated.v1`).
    CloudEvents,
}

fn current(c: &Company, entity: &str, id: &str) -> Value {
    let key = id_of(id).unwrap_or(0);
    let found = match entity {
        "Invoice" => c.invoices.get(&key).map(|v| json!(v)),
        "Payment" => c.payments.get(&key).map(|v| json!(v)),
        "Customer" => c.customers.get(&key).map(|v| json!(v)),
        "Item" => c.items.get(&key).map(|v| json!(v)),
        _ => None,
    };
    found.unwrap_or_else(|| json!({"Id": id, "status": "Deleted", "domain": "QBO"}))
}

pub(super) fn answer(c: &Company, req: &SimRequest) -> Result<Answer, Answer> {
    let entities: Vec<String> = req
        .query
        .get("entities")
        .map(|e| e.split(',').map(|x| x.trim().to_string()).collect())
        .unwrap_or_default();
    let since = req
        .query
        .get("changedsince")
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| {
            fault(
                400,
                "2020",
                "Required param missing, need to supply the required value for the API",
                "changedSince",
            )
        })?;
    let mut queries = Vec::new();
    for entity in &entities {
        let ids: BTreeSet<&str> = c
            .changes
            .iter()
            .filter(|r| r.at >= since && r.entity.eq_ignore_ascii_case(entity))
            .map(|r| r.id.as_str())
            .collect();
        let name = c
            .changes
            .iter()
            .find(|r| r.entity.eq_ignore_ascii_case(entity))
            .map_or(entity.as_str(), |r| r.entity);
        let list: Vec<Value> = ids.iter().map(|id| current(c, name, id)).collect();
        let count = list.len();
        queries.push(json!({ name: list, "startPosition": 1, "maxResults": count }));
    }
    Ok(Answer::json(
        200,
        json!({"CDCResponse": [{"QueryResponse": queries}], "time": Utc::now().to_rfc3339()}),
    ))
}

fn legacy(realm: &str, changes: &[ChangeRecord]) -> Value {
    let entities: Vec<Value> = changes
        .iter()
        .map(|r| {
            json!({"name": r.entity, "id": r.id, "operation": r.operation,
                   "lastUpdated": r.at.to_rfc3339_opts(SecondsFormat::Millis, true)})
        })
        .collect();
    json!({"realmId": realm, "dataChangeEvent": {"entities": entities}})
}

fn cloud(realm: &str, seq: usize, r: &ChangeRecord) -> Value {
    let action = match r.operation {
        "Create" => "created",
        "Update" => "updated",
        "Delete" => "deleted",
        "Void" => "voided",
        _ => "updated",
    };
    json!({"specversion": "1.0", "id": format!("sim-{realm}-{seq}"),
           "source": "intuit.simulator", "datacontenttype": "application/json",
           "type": format!("qbo.{}.{action}.v1", r.entity.to_ascii_lowercase()),
           "time": r.at.to_rfc3339_opts(SecondsFormat::Millis, true),
           "intuitentityid": r.id, "intuitaccountid": realm, "data": {}})
}

/// One delivery carrying every change not yet delivered, across
/// `companies` (realm id, company); `None` when there is none. Marks them
/// delivered.
pub(super) fn next_delivery<'a>(
    companies: impl Iterator<Item = (&'a String, &'a mut Company)>,
    format: WebhookFormat,
) -> Option<Vec<u8>> {
    let mut notifications = Vec::new();
    let mut events = Vec::new();
    for (realm, c) in companies {
        let from = c.webhook_sent;
        let fresh = &c.changes[from..];
        if fresh.is_empty() {
            continue;
        }
        match format {
            WebhookFormat::Legacy => notifications.push(legacy(realm, fresh)),
            WebhookFormat::CloudEvents => events.extend(
                fresh
                    .iter()
                    .enumerate()
                    .map(|(i, r)| cloud(realm, from + i, r)),
            ),
        }
        c.webhook_sent = c.changes.len();
    }
    let body = match format {
        WebhookFormat::Legacy if !notifications.is_empty() => {
            json!({ "eventNotifications": notifications })
        }
        WebhookFormat::CloudEvents if !events.is_empty() => Value::Array(events),
        _ => return None,
    };
    Some(body.to_string().into_bytes())
}
