//! The simulator's query endpoint (`GET /query?query=select * from ...`),
//! as Intuit answers it: `select * from <Entity>` of Account, TaxCode,
//! TaxRate, Item, Customer, Invoice, Payment and Employee, an optional
//! `where <Field> = '<v>'` or `in ('a', 'b')` (Id, Name, DisplayName,
//! DocNumber), and paging with `STARTPOSITION n` (1-based) and
//! `MAXRESULTS m` (100 when absent, at most 1,000: more is refused).
//! Lists (accounts, tax codes and rates, items, customers, employees)
//! answer their active records only unless the query names `Active`, as
//! Intuit's do. Rows come in `Id` order.
//!
//! The answer is `{"QueryResponse":{"<Entity>":[..],"startPosition":n,
//! "maxResults":k},"time":..}`, and `{"QueryResponse":{},..}` when the
//! page is empty. Deliberate simplifications: no `ORDERBY`, no `count(*)`,
//! no other operators.

use serde_json::json;

use super::answers::fault;
use super::state::Company;
use crate::quickbooks::config::MAX_QUERY_RESULTS;
use crate::quickbooks::wire::QueryResponse;
use crate::sim::server::Answer;

const TIME: &str = "2026-12-06T10:00:00.000-08:00";
/// Rows a query answers when it names no `MAXRESULTS` (Intuit's default).
const DEFAULT_MAX_RESULTS: u32 = 100;

fn parse_error(detail: &str) -> Answer {
    fault(400, "4000", "Error parsing query", detail)
}

/// The quoted values of a `where` clause (`= 'a'`, `in ('a', 'b')`).
fn quoted_values(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = text.chars();
    while let Some(ch) = chars.next() {
        if ch != '\'' {
            continue;
        }
        let mut v = String::new();
        while let Some(ch) = chars.next() {
            match ch {
                '\\' => v.extend(chars.next()),
                '\'' => break,
                other => v.push(other),
            }
        }
        out.push(v);
    }
    out
}

/// The number after `word` (lower case) at its last place in `lower`, and
/// where `word` starts.
fn clause(lower: &str, word: &str) -> Result<Option<(usize, u32)>, Answer> {
    let Some(at) = lower.rfind(word) else {
        return Ok(None);
    };
    let n = lower[at + word.len()..]
        .split_whitespace()
        .next()
        .unwrap_or("");
    let n: u32 = n
        .parse()
        .map_err(|_| parse_error(&format!("QueryParserError: {} needs a number", word.trim())))?;
    Ok(Some((at, n)))
}

/// What a query asks: entity, `where` field and values, the page.
struct Asked {
    entity: String,
    field: String,
    values: Vec<String>,
    names_active: bool,
    start: usize,
    max: usize,
}

fn parse(sql: &str) -> Result<Asked, Answer> {
    let lower = sql.to_ascii_lowercase();
    let start = clause(&lower, " startposition ")?;
    let max = clause(&lower, " maxresults ")?;
    let cut = [start.map(|s| s.0), max.map(|m| m.0)]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(sql.len());
    let (body, lower) = (&sql[..cut], &lower[..cut]);
    let entity = lower
        .split_once(" from ")
        .map(|(_, r)| r.split_whitespace().next().unwrap_or(""))
        .unwrap_or("")
        .to_string();
    let (field, values) = match lower.find(" where ") {
        Some(at) => (
            lower[at + 7..]
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string(),
            quoted_values(&body[at + 7..]),
        ),
        None => (String::new(), Vec::new()),
    };
    let start = start.map_or(1, |s| s.1);
    if start == 0 {
        return Err(parse_error(
            "QueryValidationError: STARTPOSITION starts at 1",
        ));
    }
    let max = max.map_or(DEFAULT_MAX_RESULTS, |m| m.1);
    if max > MAX_QUERY_RESULTS {
        return Err(fault(
            400,
            "4001",
            "Invalid query",
            &format!(
                "QueryValidationError: value {max} is too large. Max allowed value is {MAX_QUERY_RESULTS}"
            ),
        ));
    }
    Ok(Asked {
        names_active: field == "active",
        entity,
        field,
        values,
        start: start as usize,
        max: max as usize,
    })
}

impl Asked {
    /// Whether a record with this id and name is asked for.
    fn wants(&self, id: Option<&str>, name: &str) -> bool {
        let v = match self.field.as_str() {
            "" | "active" => return true,
            "id" => id.unwrap_or(""),
            _ => name,
        };
        self.values.iter().any(|x| x == v)
    }

    /// An active record, or any when the query names `Active`.
    fn listed(&self, active: Option<bool>) -> bool {
        self.names_active || active != Some(false)
    }

    /// This query's page of `rows` (in `Id` order).
    fn page<'c, T: Clone + 'c>(&self, rows: impl Iterator<Item = &'c T>) -> Vec<T> {
        rows.skip(self.start - 1).take(self.max).cloned().collect()
    }
}

pub(super) fn query(c: &Company, sql: &str) -> Result<Answer, Answer> {
    let q = parse(sql)?;
    let mut r = QueryResponse::default();
    let n =
        match q.entity.as_str() {
            "account" => {
                r.account = q.page(
                    c.chart
                        .accounts
                        .values()
                        .filter(|x| q.listed(x.active) && q.wants(x.id.as_deref(), &x.name)),
                );
                r.account.len()
            }
            "taxcode" => {
                r.tax_code = q.page(
                    c.chart
                        .tax_codes
                        .values()
                        .filter(|x| q.listed(x.active) && q.wants(x.id.as_deref(), &x.name)),
                );
                r.tax_code.len()
            }
            "taxrate" => {
                r.tax_rate = q.page(
                    c.chart
                        .tax_rates
                        .values()
                        .filter(|x| q.listed(x.active) && q.wants(x.id.as_deref(), &x.name)),
                );
                r.tax_rate.len()
            }
            "customer" => {
                r.customer =
                    q.page(c.customers.values().filter(|x| {
                        q.listed(x.active) && q.wants(x.id.as_deref(), &x.display_name)
                    }));
                r.customer.len()
            }
            "item" => {
                r.item = q.page(
                    c.items
                        .values()
                        .filter(|x| q.listed(x.active) && q.wants(x.id.as_deref(), &x.name)),
                );
                r.item.len()
            }
            // `where Id in (...)` (a reconciliation's batch) or `where DocNumber = ...`.
            "invoice" => {
                r.invoice =
                    q.page(c.invoices.values().filter(|x| {
                        q.wants(x.id.as_deref(), x.doc_number.as_deref().unwrap_or(""))
                    }));
                r.invoice.len()
            }
            "payment" => {
                r.payment = q.page(c.payments.values().filter(|x| {
                    q.wants(x.id.as_deref(), x.payment_ref_num.as_deref().unwrap_or(""))
                }));
                r.payment.len()
            }
            // `where Active = true`.
            "employee" => {
                r.employee =
                    q.page(c.employees.values().filter(|x| {
                        q.listed(x.active) && q.wants(x.id.as_deref(), &x.display_name)
                    }));
                r.employee.len()
            }
            other => {
                return Err(parse_error(&format!(
                    "QueryParserError: unknown entity {other}"
                )));
            }
        };
    if n > 0 {
        r.start_position = u32::try_from(q.start).ok();
        r.max_results = u32::try_from(n).ok();
    }
    let body = serde_json::to_value(r).unwrap_or_default();
    Ok(Answer::json(
        200,
        json!({"QueryResponse": body, "time": TIME}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_clauses_are_read_and_bounded() {
        let asked = |sql: &str| parse(sql).map_err(|a| a.status);
        let q = asked("select * from Account STARTPOSITION 1001 MAXRESULTS 1000").unwrap();
        assert_eq!((q.entity.as_str(), q.start, q.max), ("account", 1001, 1000));
        let q = asked("select * from Customer where DisplayName = 'A startposition'").unwrap();
        assert_eq!((q.start, q.max), (1, 100));
        assert_eq!(q.values, vec!["A startposition".to_string()]);
        assert_eq!(
            asked("select * from Invoice MAXRESULTS 1001").err(),
            Some(400)
        );
        assert_eq!(
            asked("select * from Invoice STARTPOSITION 0").err(),
            Some(400)
        );
    }
}
