//! The simulated Xero's Contacts endpoints: `GET /Contacts` with the
//! `where` filter, `GET /Contacts/{id}`, `PUT`/`POST /Contacts` (duplicate
//! names refused as Xero does), and how an invoice's contact is resolved.

use std::collections::HashMap;

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::answers::{bad_request, envelope, not_found, ok, validation_exception, xero_date};
use super::state::Tenant;
use crate::sim::server::Answer;
use crate::xero::wire::{self, Envelope, ValidationError};

/// `Field=="value"` terms joined by AND; `!=` also understood.
pub(super) fn where_terms(expr: &str) -> Vec<(String, bool, String)> {
    expr.split(" AND ")
        .flat_map(|part| part.split("&&"))
        .filter_map(|term| {
            let term = term.trim();
            let (field, eq, value) = if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else {
                return None;
            };
            let value = value.trim().trim_matches('"').to_string();
            Some((field.trim().to_string(), eq, value))
        })
        .collect()
}

pub(super) fn field_matches(actual: Option<&str>, eq: bool, value: &str) -> bool {
    (actual == Some(value)) == eq
}

pub(super) fn contact_field<'a>(c: &'a wire::Contact, field: &str) -> Option<&'a str> {
    match field {
        "ContactNumber" => c.contact_number.as_deref(),
        "Name" => c.name.as_deref(),
        "EmailAddress" => c.email_address.as_deref(),
        "ContactID" => c.contact_id.as_deref(),
        "ContactStatus" => c.contact_status.as_deref(),
        _ => None,
    }
}

pub(super) fn get_contacts(
    t: &Tenant,
    now: DateTime<Utc>,
    query: &HashMap<String, String>,
) -> Answer {
    let terms = query
        .get("where")
        .map(|w| where_terms(w))
        .unwrap_or_default();
    let list: Vec<wire::Contact> = t
        .contacts
        .iter()
        .filter(|c| {
            terms
                .iter()
                .all(|(f, eq, v)| field_matches(contact_field(c, f), *eq, v))
        })
        .cloned()
        .collect();
    let mut env = envelope(now);
    env.contacts = Some(paginate(list, query));
    ok(env)
}

/// `page=N` (1-based): 100 records a page, or `pageSize` (at most 1,000).
pub(super) fn paginate<T>(list: Vec<T>, query: &HashMap<String, String>) -> Vec<T> {
    let size = query
        .get("pagesize")
        .and_then(|p| p.parse::<usize>().ok())
        .filter(|s| *s >= 1)
        .map_or(100, |s| s.min(1000));
    match query.get("page").and_then(|p| p.parse::<usize>().ok()) {
        Some(page) if page >= 1 => list
            .into_iter()
            .skip((page - 1) * size)
            .take(size)
            .collect(),
        _ => list,
    }
}

pub(super) fn get_contact(t: &Tenant, now: DateTime<Utc>, id: &str) -> Answer {
    match t
        .contacts
        .iter()
        .find(|c| c.contact_id.as_deref() == Some(id) || c.contact_number.as_deref() == Some(id))
    {
        Some(c) => {
            let mut env = envelope(now);
            env.contacts = Some(vec![c.clone()]);
            ok(env)
        }
        None => not_found(),
    }
}

pub(super) fn parse_body(body: &Bytes) -> Result<Envelope, Answer> {
    serde_json::from_slice::<Envelope>(body).map_err(|e| bad_request(&format!("{e}")))
}

pub(super) fn element_errors<T: serde::Serialize>(
    element: &T,
    errors: &[String],
) -> serde_json::Value {
    let mut v = serde_json::to_value(element).unwrap_or_else(|_| json!({}));
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "ValidationErrors".into(),
            json!(
                errors
                    .iter()
                    .map(|m| json!({"Message": m}))
                    .collect::<Vec<_>>()
            ),
        );
    }
    v
}

pub(super) fn write_contacts(
    t: &mut Tenant,
    now: DateTime<Utc>,
    create_only: bool,
    id: Option<&str>,
    body: &Bytes,
    summarize: bool,
) -> Answer {
    let env = match parse_body(body) {
        Ok(e) => e,
        Err(a) => return a,
    };
    let mut out = Vec::new();
    let mut failed = Vec::new();
    for mut c in env.contacts.unwrap_or_default() {
        if let Some(id) = id {
            c.contact_id = Some(id.to_string());
        }
        let existing = c.contact_id.as_deref().and_then(|cid| {
            t.contacts
                .iter()
                .position(|x| x.contact_id.as_deref() == Some(cid))
        });
        let mut errors = Vec::new();
        if c.contact_id.is_some() && existing.is_none() {
            return not_found();
        }
        if existing.is_some() && create_only {
            errors.push("A contact with this ContactID already exists".to_string());
        }
        let name = c
            .name
            .clone()
            .or_else(|| existing.and_then(|i| t.contacts[i].name.clone()));
        match name.as_deref().map(str::trim) {
            None | Some("") => errors.push("The contact name must be specified".to_string()),
            Some(n) => {
                if t.contacts.iter().enumerate().any(|(i, x)| {
                    Some(i) != existing
                        && x.contact_status.as_deref() != Some(wire::CONTACT_ARCHIVED)
                        && x.name
                            .as_deref()
                            .is_some_and(|xn| xn.eq_ignore_ascii_case(n))
                }) {
                    errors.push(format!(
                        "The contact name {n} is already assigned to another contact. The contact name must be unique across all active contacts."
                    ));
                }
            }
        }
        if c.contact_number.as_ref().is_some_and(|n| n.len() > 50) {
            errors.push("The ContactNumber must not exceed 50 characters".to_string());
        }
        if !errors.is_empty() {
            failed.push(element_errors(&c, &errors));
            let mut echoed = c.clone();
            echoed.has_validation_errors = Some(true);
            echoed.validation_errors = errors
                .into_iter()
                .map(|message| ValidationError { message })
                .collect();
            out.push(echoed);
            continue;
        }
        let stored = match existing {
            Some(i) => {
                let x = &mut t.contacts[i];
                if c.name.is_some() {
                    x.name = c.name;
                }
                if c.email_address.is_some() {
                    x.email_address = c.email_address;
                }
                if c.contact_number.is_some() {
                    x.contact_number = c.contact_number;
                }
                x.updated_date_utc = Some(xero_date(now));
                x.clone()
            }
            None => {
                c.contact_id = Some(Uuid::new_v4().to_string());
                c.contact_status = Some("ACTIVE".into());
                c.updated_date_utc = Some(xero_date(now));
                t.contacts.push(c.clone());
                c
            }
        };
        t.writes += 1;
        out.push(stored);
    }
    if summarize && !failed.is_empty() {
        return validation_exception(failed);
    }
    let mut env = envelope(now);
    env.contacts = Some(out);
    ok(env)
}

pub(super) fn resolve_contact(
    t: &mut Tenant,
    now: DateTime<Utc>,
    c: &wire::Contact,
) -> Result<String, String> {
    let active = |x: &&wire::Contact| x.contact_status.as_deref() != Some(wire::CONTACT_ARCHIVED);
    if let Some(id) = &c.contact_id {
        let found = t
            .contacts
            .iter()
            .find(|x| x.contact_id.as_ref() == Some(id))
            .ok_or_else(|| format!("The contact with ContactID {id} could not be found"))?;
        // Archived (merged ones too) takes no new transactions.
        if !active(&found) {
            return Err(format!(
                "The contact {} is archived and cannot be used on a new or changed invoice",
                found.name.as_deref().unwrap_or(id)
            ));
        }
        return found.contact_id.clone().ok_or_default();
    }
    if let Some(n) = &c.contact_number
        && let Some(x) = t
            .contacts
            .iter()
            .filter(active)
            .find(|x| x.contact_number.as_ref() == Some(n))
    {
        return x.contact_id.clone().ok_or_default();
    }
    match c.name.as_deref().map(str::trim) {
        Some(name) if !name.is_empty() => {
            if let Some(x) = t
                .contacts
                .iter()
                .filter(active)
                .find(|x| x.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name)))
            {
                return x.contact_id.clone().ok_or_default();
            }
            // Xero creates a contact named on an invoice when none matches.
            let id = Uuid::new_v4().to_string();
            t.contacts.push(wire::Contact {
                contact_id: Some(id.clone()),
                contact_number: c.contact_number.clone(),
                name: Some(name.to_string()),
                contact_status: Some("ACTIVE".into()),
                updated_date_utc: Some(xero_date(now)),
                ..wire::Contact::default()
            });
            Ok(id)
        }
        _ => Err("The Contact must contain at least 1 of the following elements to identify the contact: Name, ContactID, ContactNumber".to_string()),
    }
}

pub(super) trait OkOrDefault {
    fn ok_or_default(self) -> Result<String, String>;
}
impl OkOrDefault for Option<String> {
    fn ok_or_default(self) -> Result<String, String> {
        self.ok_or_else(|| "contact without an id".to_string())
    }
}

pub(super) fn t_contact(contacts: &[wire::Contact], id: &str) -> Option<wire::Contact> {
    contacts
        .iter()
        .find(|c| c.contact_id.as_deref() == Some(id))
        .map(|c| wire::Contact {
            contact_id: c.contact_id.clone(),
            name: c.name.clone(),
            contact_number: c.contact_number.clone(),
            ..wire::Contact::default()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::server::{parse_query, percent_decode};

    #[test]
    fn where_filter_and_query_decoding() {
        let q = parse_query("where=Reference%3D%3D%22INV%201%22&page=2");
        assert_eq!(q["where"], "Reference==\"INV 1\"");
        let terms = where_terms(&q["where"]);
        assert_eq!(terms, vec![("Reference".into(), true, "INV 1".into())]);
        let terms = where_terms("Name==\"A\" AND ContactNumber!=\"7\"");
        assert_eq!(terms.len(), 2);
        assert!(!terms[1].1);
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
