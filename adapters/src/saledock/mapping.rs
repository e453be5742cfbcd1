//! The mapping file: where ledgerflow's modelled Saledock contract meets
//! the vendor's real API. Base URL, token URL, paths, header names, field
//! names and status words are set per connection here, so that when the
//! real API is known only this file changes, not the code
//! (`docs/providers/saledock.md`).
//!
//! The adapter and the simulator both speak the *canonical* contract
//! ([`super::wire`]); [`Mapping::order_out`] / [`Mapping::order_in`] rename
//! a canonical sales order to the vendor's field names and back. Every key
//! of the file is optional (the default is the modelled contract), unknown
//! keys are refused by name, and [`Mapping::parse`] checks what serde
//! cannot (paths, header names, field names unique per object).
//!
//! Plain data and JSON reshaping: no I/O.

use std::collections::HashSet;

use reqwest::header::HeaderName;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One connection's mapping (the file, as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Mapping {
    /// The API's base URL; when unset, the one given at registration.
    pub base_url: Option<String>,
    /// The OAuth token endpoint (client credentials); when unset,
    /// `{base_url}{token_path}`.
    pub token_url: Option<String>,
    pub token_path: TokenPath,
    pub paths: Paths,
    pub headers: Headers,
    pub fields: Fields,
    pub statuses: Statuses,
    pub events: Events,
}

/// The token endpoint below the base URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenPath(pub String);

impl Default for TokenPath {
    fn default() -> Self {
        TokenPath("/oauth/token".into())
    }
}

/// Paths below the base URL; `{id}` is the sales order's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Paths {
    pub create: String,
    pub read: String,
    pub update: String,
    /// PUT or PATCH (or POST).
    pub update_method: String,
    pub void: String,
    /// Listing by our reference: `GET {find}?{find_query}=reference`.
    pub find: String,
    pub find_query: String,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            create: "/sales_orders".into(),
            read: "/sales_orders/{id}".into(),
            update: "/sales_orders/{id}".into(),
            update_method: "PUT".into(),
            void: "/sales_orders/{id}/void".into(),
            find: "/sales_orders".into(),
            find_query: "reference".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Headers {
    /// The header an API key is sent in.
    pub api_key: String,
    /// Written before the key ("Token "); empty for none.
    pub api_key_prefix: String,
    /// The idempotency key header on every write.
    pub idempotency_key: String,
}

impl Default for Headers {
    fn default() -> Self {
        Headers {
            api_key: "X-Api-Key".into(),
            api_key_prefix: String::new(),
            idempotency_key: "Idempotency-Key".into(),
        }
    }
}

/// Field names, canonical name → the vendor's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fields {
    /// The list answer's array (`{"sales_orders": [...]}`).
    pub list: String,
    /// When set, a single order answer (and request) is wrapped in an
    /// object under this key (`{"sales_order": {...}}`).
    pub envelope: Option<String>,
    pub order: OrderFields,
    pub customer: CustomerFields,
    pub line: LineFields,
    pub payment: PaymentFields,
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            list: "sales_orders".into(),
            envelope: None,
            order: OrderFields::default(),
            customer: CustomerFields::default(),
            line: LineFields::default(),
            payment: PaymentFields::default(),
        }
    }
}

/// Declares a struct of field names whose defaults are the canonical names,
/// and its list of (canonical, vendor) pairs.
macro_rules! field_names {
    ($(#[$doc:meta])* $name:ident { $($field:ident),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name { $(pub $field: String),+ }

        impl Default for $name {
            fn default() -> Self {
                $name { $($field: stringify!($field).to_string()),+ }
            }
        }

        impl $name {
            /// (canonical, vendor) for every field.
            pub fn pairs(&self) -> Vec<(&'static str, &str)> {
                vec![$((stringify!($field), self.$field.as_str())),+]
            }
        }
    };
}

field_names!(
    /// A sales order's fields.
    OrderFields {
        id, number, reference, status, currency, issued_on, customer, lines, discount,
        payments, subtotal, tax_total, total,
    }
);
field_names!(
    /// The order's customer (carried inline).
    CustomerFields { reference, name, email, phone }
);
field_names!(
    /// One line.
    LineFields { reference, sku, description, quantity, unit_price, discount, tax, amount }
);
field_names!(
    /// One payment (carried inline).
    PaymentFields { reference, amount, paid_at, method }
);
/// The completion webhook's event fields (canonical `id`, `type`,
/// `sales_order`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventFields {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub sales_order: String,
}

impl Default for EventFields {
    fn default() -> Self {
        EventFields {
            id: "id".into(),
            kind: "type".into(),
            sales_order: "sales_order".into(),
        }
    }
}

impl EventFields {
    /// (canonical, vendor) for every field.
    pub fn pairs(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("id", self.id.as_str()),
            ("type", self.kind.as_str()),
            ("sales_order", self.sales_order.as_str()),
        ]
    }
}

/// The vendor's words for an order's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Statuses {
    pub open: String,
    pub completed: String,
    pub void: String,
}

impl Default for Statuses {
    fn default() -> Self {
        Statuses {
            open: "open".into(),
            completed: "completed".into(),
            void: "void".into(),
        }
    }
}

/// The completion webhook's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Events {
    pub fields: EventFields,
    /// The event type that means "completed".
    pub completed: String,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            fields: EventFields::default(),
            completed: "sales_order.completed".into(),
        }
    }
}

/// A mapping file that cannot be used, saying where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the Saledock mapping is not valid: {0}")]
pub struct MappingError(pub String);

impl Mapping {
    /// Reads and checks a mapping file (JSON). Unknown keys are refused by
    /// name ("unknown field `fieldz`, expected one of ...").
    pub fn parse(json: &str) -> Result<Mapping, MappingError> {
        let m: Mapping = serde_json::from_str(json).map_err(|e| MappingError(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    /// What serde cannot check.
    pub fn validate(&self) -> Result<(), MappingError> {
        let bad = |m: String| Err(MappingError(m));
        for (name, url) in [("base_url", &self.base_url), ("token_url", &self.token_url)] {
            if let Some(u) = url
                && !(u.starts_with("http://") || u.starts_with("https://"))
            {
                return bad(format!(
                    "{name} must start with http:// or https://, not {u:?}"
                ));
            }
        }
        let p = &self.paths;
        let all = [
            ("token_path", &self.token_path.0),
            ("paths.create", &p.create),
            ("paths.read", &p.read),
            ("paths.update", &p.update),
            ("paths.void", &p.void),
            ("paths.find", &p.find),
        ];
        for (name, path) in all {
            if !path.starts_with('/') || path.contains(char::is_whitespace) {
                return bad(format!(
                    "{name} must be a path starting with / (no spaces), not {path:?}"
                ));
            }
        }
        for (name, path) in [
            ("paths.read", &p.read),
            ("paths.update", &p.update),
            ("paths.void", &p.void),
        ] {
            if path.matches("{id}").count() != 1 {
                return bad(format!("{name} must contain {{id}} once, not {path:?}"));
            }
        }
        if !["PUT", "PATCH", "POST"].contains(&p.update_method.as_str()) {
            return bad(format!(
                "paths.update_method must be PUT, PATCH or POST, not {:?}",
                p.update_method
            ));
        }
        if p.find_query.is_empty() {
            return bad("paths.find_query must not be empty".into());
        }
        for (name, h) in [
            ("headers.api_key", &self.headers.api_key),
            ("headers.idempotency_key", &self.headers.idempotency_key),
        ] {
            if HeaderName::from_bytes(h.as_bytes()).is_err() {
                return bad(format!("{name} is not a usable HTTP header name: {h:?}"));
            }
        }
        let f = &self.fields;
        let objects = [
            ("fields.order", f.order.pairs()),
            ("fields.customer", f.customer.pairs()),
            ("fields.line", f.line.pairs()),
            ("fields.payment", f.payment.pairs()),
            ("events.fields", self.events.fields.pairs()),
        ];
        for (object, pairs) in objects {
            let mut seen = HashSet::new();
            for (canonical, vendor) in pairs {
                if vendor.is_empty() {
                    return bad(format!("{object}.{canonical} must not be empty"));
                }
                if !seen.insert(vendor) {
                    return bad(format!("{object}: two fields are both named {vendor:?}"));
                }
            }
        }
        if f.list.is_empty() || f.envelope.as_deref() == Some("") {
            return bad("fields.list and fields.envelope must not be empty".into());
        }
        let s = &self.statuses;
        let words: HashSet<&str> = [&s.open, &s.completed, &s.void]
            .iter()
            .map(|w| w.as_str())
            .collect();
        if words.len() != 3 || words.contains("") {
            return bad("statuses.open, .completed and .void must be three different words".into());
        }
        Ok(())
    }

    /// A path template with the order's id filled in.
    pub fn path(template: &str, id: &str) -> String {
        template.replace("{id}", id)
    }

    /// The token endpoint for a connection whose API is at `base_url`.
    pub fn token_endpoint(&self, base_url: &str) -> String {
        self.token_url
            .clone()
            .unwrap_or_else(|| format!("{}{}", base_url.trim_end_matches('/'), self.token_path.0))
    }

    /// A canonical sales order in the vendor's words (field names,
    /// statuses, the envelope).
    pub fn order_out(&self, mut order: Value) -> Value {
        self.order_fields(&mut order, true);
        match &self.fields.envelope {
            Some(key) => Value::Object(Map::from_iter([(key.clone(), order)])),
            None => order,
        }
    }

    /// The vendor's sales order in canonical words.
    pub fn order_in(&self, mut order: Value) -> Value {
        if let Some(key) = &self.fields.envelope
            && let Some(inner) = order.get_mut(key.as_str())
        {
            order = inner.take();
        }
        self.order_fields(&mut order, false);
        order
    }

    /// A list answer's orders in canonical words.
    pub fn list_in(&self, mut list: Value) -> Vec<Value> {
        let items = match list.get_mut(self.fields.list.as_str()) {
            Some(Value::Array(items)) => std::mem::take(items),
            _ => match list {
                Value::Array(items) => items,
                _ => Vec::new(),
            },
        };
        items
            .into_iter()
            .map(|mut o| {
                self.order_fields(&mut o, false);
                o
            })
            .collect()
    }

    /// Canonical orders as the vendor's list answer.
    pub fn list_out(&self, orders: Vec<Value>) -> Value {
        let items = orders
            .into_iter()
            .map(|mut o| {
                self.order_fields(&mut o, true);
                o
            })
            .collect();
        Value::Object(Map::from_iter([(
            self.fields.list.clone(),
            Value::Array(items),
        )]))
    }

    /// A completion event (canonical: `id`, `type`, `sales_order`) in the
    /// vendor's words, or back.
    pub fn event(&self, mut event: Value, out: bool) -> Value {
        let f = &self.events.fields;
        if out {
            if let Some(o) = event.get_mut("sales_order") {
                self.order_fields(o, true);
            }
            rename(&mut event, &f.pairs(), true);
        } else {
            rename(&mut event, &f.pairs(), false);
            if let Some(o) = event.get_mut("sales_order") {
                self.order_fields(o, false);
            }
        }
        event
    }

    fn order_fields(&self, order: &mut Value, out: bool) {
        let f = &self.fields;
        let (order_pairs, customer, line, payment) = (
            f.order.pairs(),
            f.customer.pairs(),
            f.line.pairs(),
            f.payment.pairs(),
        );
        if !out {
            rename(order, &order_pairs, false);
        }
        if let Some(c) = order.get_mut("customer") {
            rename(c, &customer, out);
        }
        for (list, pairs) in [("lines", &line), ("payments", &payment)] {
            if let Some(Value::Array(items)) = order.get_mut(list) {
                for item in items {
                    rename(item, pairs, out);
                }
            }
        }
        if let Some(Value::String(status)) = order.get_mut("status") {
            *status = self.status_word(status, out);
        }
        if out {
            rename(order, &order_pairs, true);
        }
    }

    /// The vendor's word for a canonical status.
    pub fn vendor_status(&self, canonical: &str) -> String {
        self.status_word(canonical, true)
    }

    fn status_word(&self, word: &str, out: bool) -> String {
        let s = &self.statuses;
        let pairs = [
            ("open", &s.open),
            ("completed", &s.completed),
            ("void", &s.void),
        ];
        pairs
            .iter()
            .find_map(|(canonical, vendor)| {
                if out {
                    (*canonical == word).then(|| vendor.to_string())
                } else {
                    (vendor.as_str() == word).then(|| canonical.to_string())
                }
            })
            .unwrap_or_else(|| word.to_string())
    }
}

/// Renames an object's keys: canonical → vendor (`out`) or back. Keys not
/// named are left as they are; a vendor name that collides is moved once.
fn rename(value: &mut Value, pairs: &[(&'static str, &str)], out: bool) {
    let Value::Object(map) = value else {
        return;
    };
    let mut moved = Map::new();
    for (canonical, vendor) in pairs {
        let (from, to) = if out {
            (*canonical, *vendor)
        } else {
            (*vendor, *canonical)
        };
        if let Some(v) = map.remove(from) {
            moved.insert(to.to_string(), v);
        }
    }
    map.extend(moved);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_default_is_the_modelled_contract_and_round_trips() {
        let m = Mapping::parse("{}").unwrap();
        assert_eq!(m, Mapping::default());
        let order = json!({"id": "so_1", "reference": "inv-1", "status": "open",
            "customer": {"reference": "c1", "name": "Ann"},
            "lines": [{"sku": "A", "quantity": "1.000"}], "payments": []});
        assert_eq!(m.order_out(order.clone()), order);
        assert_eq!(m.order_in(order.clone()), order);
    }

    #[test]
    fn a_vendor_mapping_renames_fields_statuses_and_the_envelope() {
        let m = Mapping::parse(
            r#"{"fields": {"envelope": "salesOrder", "order": {"reference": "externalRef", "lines": "items"},
                "line": {"sku": "productCode"}, "customer": {"name": "fullName"}},
                "statuses": {"completed": "FULFILLED"}}"#,
        )
        .unwrap();
        let canonical = json!({"reference": "inv-1", "status": "completed",
            "customer": {"name": "Ann"}, "lines": [{"sku": "A", "description": "x"}]});
        let vendor = m.order_out(canonical.clone());
        assert_eq!(
            vendor,
            json!({"salesOrder": {"externalRef": "inv-1", "status": "FULFILLED",
                "customer": {"fullName": "Ann"}, "items": [{"productCode": "A", "description": "x"}]}})
        );
        assert_eq!(m.order_in(vendor), canonical);
        let list = m.list_out(vec![canonical.clone()]);
        assert_eq!(m.list_in(list), vec![canonical]);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_the_reason() {
        let e = Mapping::parse(r#"{"pathz": {}}"#).unwrap_err().to_string();
        assert!(
            e.contains("unknown field `pathz`") && e.contains("paths"),
            "{e}"
        );
        let e = Mapping::parse(r#"{"fields": {"line": {"skuu": "x"}}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `skuu`"), "{e}");
        for (json, says) in [
            (
                r#"{"paths": {"read": "/orders"}}"#,
                "paths.read must contain {id}",
            ),
            (
                r#"{"paths": {"create": "orders"}}"#,
                "paths.create must be a path",
            ),
            (r#"{"paths": {"update_method": "GET"}}"#, "update_method"),
            (r#"{"headers": {"api_key": "X Key"}}"#, "headers.api_key"),
            (r#"{"base_url": "ftp://x"}"#, "base_url"),
            (
                r#"{"fields": {"order": {"total": "number"}}}"#,
                "both named \"number\"",
            ),
            (r#"{"statuses": {"void": "open"}}"#, "three different words"),
        ] {
            let e = Mapping::parse(json).unwrap_err().to_string();
            assert!(e.contains(says), "{json}: {e}");
        }
    }

    #[test]
    fn token_endpoint_defaults_below_the_base_url() {
        let m = Mapping::default();
        assert_eq!(m.token_endpoint("http://h/v1/"), "http://h/v1/oauth/token");
        let m = Mapping::parse(r#"{"token_url": "https://id.example/token"}"#).unwrap();
        assert_eq!(m.token_endpoint("http://h"), "https://id.example/token");
        assert_eq!(
            Mapping::path(&m.paths.void, "so_9"),
            "/sales_orders/so_9/void"
        );
    }
}
