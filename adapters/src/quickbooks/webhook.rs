//! QuickBooks webhooks: the signature, and what a delivery names.
//!
//! - **Signature**: `intuit-signature` is the base64 of HMAC-SHA256 of the
//!   raw body under the app's *verifier token* (not the client secret),
//!   checked ([`verify`], constant time) before anything is parsed or
//!   stored.
//! - **Bodies**: the legacy shape (`{"eventNotifications":[{"realmId",
//!   "dataChangeEvent":{"entities":[{"name","id","operation",
//!   "lastUpdated"}]}}]}`) and the CloudEvents one (an array of
//!   `{"specversion":"1.0","id","type":"qbo.invoice.updated.v1",
//!   "intuitentityid","intuitaccountid","time"}`) both read as a list of
//!   [`Change`]s. Events carry ids only: the entity is fetched again
//!   through the API. Dedupe on [`Change::event_id`] (the CloudEvent's id;
//!   for legacy events, realm + entity + id + operation + lastUpdated).
//!
//! Production batches events every 1, 3 or 5 minutes; the periodic change
//! data capture pull covers what a webhook misses.

use serde::Deserialize;

use crate::kit::signature;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "intuit-signature";

/// Whether `signature` signs `body` under the verifier token.
pub fn verify(verifier_token: &[u8], body: &[u8], signature: Option<&str>) -> bool {
    signature::verify(verifier_token, body, signature)
}

/// `base64(HMAC-SHA256(verifier token, body))`: what Intuit sends (tests,
/// the simulator).
pub fn sign(verifier_token: &[u8], body: &[u8]) -> String {
    signature::sign(verifier_token, body)
}

/// One entity change a delivery names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Unique per event, for dedupe.
    pub event_id: String,
    /// The company (realmId).
    pub realm_id: String,
    /// "Invoice", "Payment", "Customer", ... as Intuit names the entity.
    pub entity: String,
    pub entity_id: String,
    /// "Create", "Update", "Delete", "Merge", "Void", "Emailed".
    pub operation: String,
}

impl Change {
    /// A change that can settle an invoice: a payment made or changed in
    /// QuickBooks, or the invoice itself (its balance).
    pub fn may_pay_an_invoice(&self) -> bool {
        matches!(self.entity.as_str(), "Invoice" | "Payment") && self.operation != "Delete"
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the QuickBooks webhook body could not be read: {0}")]
pub struct ParseError(String);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Legacy {
    event_notifications: Vec<Notification>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Notification {
    realm_id: String,
    data_change_event: DataChange,
}

#[derive(Deserialize)]
struct DataChange {
    #[serde(default)]
    entities: Vec<Entity>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entity {
    name: String,
    id: String,
    operation: String,
    #[serde(default)]
    last_updated: String,
}

#[derive(Deserialize)]
struct CloudEvent {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    intuitentityid: String,
    #[serde(default)]
    intuitaccountid: String,
}

/// `qbo.invoice.updated.v1` → ("Invoice", "Update").
fn from_type(kind: &str) -> Option<(String, String)> {
    let mut parts = kind.split('.');
    if parts.next()? != "qbo" {
        return None;
    }
    let entity = parts.next()?;
    let action = parts.next()?;
    let cap = |s: &str| {
        let mut c = s.chars();
        c.next()
            .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
            .unwrap_or_default()
    };
    let operation = match action {
        "created" => "Create".to_string(),
        "updated" => "Update".to_string(),
        "deleted" => "Delete".to_string(),
        "voided" => "Void".to_string(),
        "merged" => "Merge".to_string(),
        "emailed" => "Emailed".to_string(),
        other => cap(other),
    };
    Some((cap(entity), operation))
}

/// Reads a delivery (call only after [`verify`] passed).
pub fn parse(body: &[u8]) -> Result<Vec<Change>, ParseError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ParseError(e.to_string()))?;
    if value.is_array() {
        let events: Vec<CloudEvent> =
            serde_json::from_value(value).map_err(|e| ParseError(e.to_string()))?;
        return Ok(events
            .into_iter()
            .filter_map(|e| {
                let (entity, operation) = from_type(&e.kind)?;
                Some(Change {
                    event_id: e.id,
                    realm_id: e.intuitaccountid,
                    entity,
                    entity_id: e.intuitentityid,
                    operation,
                })
            })
            .collect());
    }
    let legacy: Legacy = serde_json::from_value(value).map_err(|e| ParseError(e.to_string()))?;
    Ok(legacy
        .event_notifications
        .into_iter()
        .flat_map(|n| {
            let realm = n.realm_id;
            n.data_change_event
                .entities
                .into_iter()
                .map(move |e| Change {
                    event_id: format!(
                        "{realm}:{}:{}:{}:{}",
                        e.name, e.id, e.operation, e.last_updated
                    ),
                    realm_id: realm.clone(),
                    entity: e.name,
                    entity_id: e.id,
                    operation: e.operation,
                })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &[u8] = b"verifier-token";

    #[test]
    fn only_a_body_signed_with_the_verifier_token_passes() {
        let body = br#"{"eventNotifications":[]}"#;
        let sig = sign(TOKEN, body);
        assert!(verify(TOKEN, body, Some(&sig)));
        assert!(!verify(b"client-secret", body, Some(&sig)));
        assert!(!verify(
            TOKEN,
            br#"{"eventNotifications":[{}]}"#,
            Some(&sig)
        ));
        assert!(!verify(TOKEN, body, None));
    }

    #[test]
    fn legacy_and_cloudevents_bodies_name_the_same_changes() {
        let legacy = br#"{"eventNotifications":[{"realmId":"9130","dataChangeEvent":{"entities":[
            {"name":"Payment","id":"55","operation":"Create","lastUpdated":"2026-12-06T10:00:00.000Z"},
            {"name":"Invoice","id":"103","operation":"Update","lastUpdated":"2026-12-06T10:00:01.000Z"}]}}]}"#;
        let changes = parse(legacy).unwrap();
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].realm_id, "9130");
        assert_eq!(
            (
                changes[0].entity.as_str(),
                changes[0].entity_id.as_str(),
                changes[0].operation.as_str()
            ),
            ("Payment", "55", "Create")
        );
        assert!(changes.iter().all(Change::may_pay_an_invoice));
        assert_ne!(changes[0].event_id, changes[1].event_id);

        let cloud = br#"[{"specversion":"1.0","id":"ev-1","source":"intuit.dsnBgbseACLLRZNxo2dfc4evmEJdxde58xeeYcZliOU=","type":"qbo.payment.created.v1","datacontenttype":"application/json","time":"2026-12-06T10:00:00Z","intuitentityid":"55","intuitaccountid":"9130","data":{}},
            {"specversion":"1.0","id":"ev-2","type":"qbo.customer.deleted.v1","intuitentityid":"7","intuitaccountid":"9130"},
            {"specversion":"1.0","id":"ev-3","type":"other.thing.v1"}]"#;
        let changes = parse(cloud).unwrap();
        assert_eq!(changes.len(), 2, "unknown types are dropped");
        assert_eq!(changes[0].event_id, "ev-1");
        assert_eq!(changes[0].entity, "Payment");
        assert_eq!(changes[0].operation, "Create");
        assert_eq!(changes[1].entity, "Customer");
        assert!(!changes[1].may_pay_an_invoice());
        assert!(parse(b"not json").is_err());
    }
}
