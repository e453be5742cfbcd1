//! Linking what an import read to the host's records: provider invoices to
//! host invoices (by number, or by reference = the host's number), contacts
//! to host customers (by contact number = the customer's id, else e-mail,
//! else exact name: the strongest rule that finds anything decides), and
//! payments of linked invoices to the host's payments of that invoice (by
//! reference, else by equal amount).
//!
//! A provider record is linked only when exactly one host record matches
//! it and no other provider record matches that host record; anything else
//! is listed in `ledgerflow.import_reviews` with the candidates and why,
//! never guessed. Links made earlier (by syncs or imports) are kept, so a
//! re-run links only what is new. Candidates are found with set-based SQL
//! (equality joins), so a 5,000-invoice organisation links in one pass.
//!
//! This module reads the host's records through the import's source (the
//! host view or pushed snapshots) and writes links and reviews; it must not
//! call providers.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{PgConnection, PgPool, Row};

use super::run::{Run, step_done};
use super::{ImportCounts, LinkCounts};
use crate::queue::JobError;

/// A candidate: a provider record and a host record it may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub external_id: String,
    /// What a person recognises (number, name).
    pub label: Option<String>,
    pub host_id: String,
    /// Lower is stronger (contact number before e-mail before name).
    pub rank: i32,
    /// The host record is linked to another provider record already.
    pub taken: bool,
}

/// What to do with one provider record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Link {
        external_id: String,
        label: Option<String>,
        host_id: String,
    },
    Review {
        external_id: String,
        label: Option<String>,
        candidates: Vec<String>,
        reason: String,
    },
}

/// Decides every provider record that has candidates. `what` names the
/// host's records in reasons ("host invoices").
pub fn decide(pairs: &[Pair], what: &str) -> Vec<Decision> {
    // Per provider record, only its strongest rule's candidates count.
    let mut best: BTreeMap<&str, i32> = BTreeMap::new();
    for p in pairs {
        let r = best.entry(p.external_id.as_str()).or_insert(p.rank);
        *r = (*r).min(p.rank);
    }
    let strongest: Vec<&Pair> = pairs
        .iter()
        .filter(|p| best.get(p.external_id.as_str()) == Some(&p.rank))
        .collect();
    let mut claims: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for p in strongest.iter().filter(|p| !p.taken) {
        claims
            .entry(p.host_id.as_str())
            .or_default()
            .insert(p.external_id.as_str());
    }
    // Per provider record: its label, free candidates, candidates linked elsewhere.
    type Candidates<'p> = (Option<&'p String>, BTreeSet<&'p str>, BTreeSet<&'p str>);
    let mut by_external: BTreeMap<&str, Candidates<'_>> = BTreeMap::new();
    for p in &strongest {
        let e = by_external.entry(p.external_id.as_str()).or_insert((
            p.label.as_ref(),
            BTreeSet::new(),
            BTreeSet::new(),
        ));
        if p.taken {
            e.2.insert(p.host_id.as_str());
        } else {
            e.1.insert(p.host_id.as_str());
        }
    }
    let mut out = Vec::with_capacity(by_external.len());
    for (external_id, (label, free, taken)) in by_external {
        let label = label.cloned();
        let review = |candidates: Vec<String>, reason: String| Decision::Review {
            external_id: external_id.to_string(),
            label: label.clone(),
            candidates,
            reason,
        };
        let free: Vec<&str> = free.into_iter().collect();
        match free.as_slice() {
            [one] => {
                let rivals = claims.get(one).map_or(0, BTreeSet::len);
                if rivals > 1 {
                    out.push(review(
                        vec![one.to_string()],
                        format!(
                            "{one} is matched by {rivals} provider records: link the right one by hand"
                        ),
                    ));
                } else {
                    out.push(Decision::Link {
                        external_id: external_id.to_string(),
                        label,
                        host_id: one.to_string(),
                    });
                }
            }
            [] => out.push(review(
                taken.iter().map(|s| s.to_string()).collect(),
                format!(
                    "the matching {what} are linked to other provider records already (a duplicate in the provider?)"
                ),
            )),
            many => out.push(review(
                many.iter().map(|s| s.to_string()).collect(),
                format!("matches {} {what}: choose one by hand", many.len()),
            )),
        }
    }
    out
}

/// Links what the import read (invoices, then contacts, then payments of
/// linked invoices), lists the rest for review, stores the counts, and
/// moves the import to its next step, in one transaction.
pub async fn link_all(pool: &PgPool, run: &mut Run) -> Result<(), JobError> {
    let mut tx = pool.begin().await?;
    let mut counts: ImportCounts = run.counts.clone();
    let rel = run.host_relation().to_string();
    let conn_id = run.connection.id;
    let tenant = run.connection.tenant_id.clone();

    let pairs = invoice_pairs(&mut tx, &rel, conn_id, &tenant).await?;
    let linked = apply(&mut tx, run, "invoice", &decide(&pairs, "host invoices")).await?;
    counts.links.insert(
        "invoice".into(),
        link_counts(&mut tx, conn_id, "invoice", linked).await?,
    );

    let pairs = contact_pairs(&mut tx, &rel, conn_id, &tenant).await?;
    let linked = apply(&mut tx, run, "contact", &decide(&pairs, "host customers")).await?;
    counts.links.insert(
        "contact".into(),
        link_counts(&mut tx, conn_id, "contact", linked).await?,
    );

    let pairs = payment_pairs(&mut tx, &rel, conn_id, &tenant).await?;
    let linked = apply(&mut tx, run, "payment", &decide(&pairs, "host payments")).await?;
    counts.links.insert(
        "payment".into(),
        link_counts(&mut tx, conn_id, "payment", linked).await?,
    );

    step_done(&mut tx, run, counts).await?;
    tx.commit().await?;
    Ok(())
}

fn pairs_from(rows: Vec<sqlx::postgres::PgRow>) -> Result<Vec<Pair>, JobError> {
    rows.iter()
        .map(|r| {
            Ok(Pair {
                external_id: r.try_get("external_id")?,
                label: r.try_get("label")?,
                host_id: r.try_get("host_id")?,
                rank: r.try_get("rank")?,
                taken: r.try_get("taken")?,
            })
        })
        .collect()
}

/// Provider invoices not linked yet (and not deleted or voided) against
/// the host's invoice numbers: the provider's number, or its reference
/// (where ledgerflow writes the host's number).
async fn invoice_pairs(
    tx: &mut PgConnection,
    rel: &str,
    connection_id: i64,
    tenant: &str,
) -> Result<Vec<Pair>, JobError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH host AS MATERIALIZED (
             SELECT invoice_id, snapshot->>'number' AS number FROM {rel} WHERE tenant = $2),
         prov AS MATERIALIZED (
             SELECT p.external_id, p.code, p.reference FROM ledgerflow.provider_records p
             WHERE p.connection_id = $1 AND p.kind = 'invoice'
               AND coalesce(p.status, '') NOT IN ('DELETED', 'VOIDED')
               AND NOT EXISTS (SELECT 1 FROM ledgerflow.links l
                               WHERE l.connection_id = $1 AND l.entity_type = 'invoice'
                                 AND l.external_id = p.external_id)),
         pairs AS (
             SELECT p.external_id, coalesce(p.code, p.reference) AS label, h.invoice_id AS host_id
             FROM prov p JOIN host h ON h.number = p.code
             UNION
             SELECT p.external_id, coalesce(p.code, p.reference), h.invoice_id
             FROM prov p JOIN host h ON h.number = p.reference)
         SELECT external_id, label, host_id, 1 AS rank,
                EXISTS (SELECT 1 FROM ledgerflow.links l
                        WHERE l.connection_id = $1 AND l.entity_type = 'invoice'
                          AND l.host_id = pairs.host_id) AS taken
         FROM pairs"
    )))
    .bind(connection_id)
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    pairs_from(rows)
}

/// Provider contacts not linked yet (and not archived) against the host's
/// customers (their newest details): contact number = customer id (rank 1),
/// e-mail, case-insensitive (2), exact name (3).
async fn contact_pairs(
    tx: &mut PgConnection,
    rel: &str,
    connection_id: i64,
    tenant: &str,
) -> Result<Vec<Pair>, JobError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH host AS MATERIALIZED (
             SELECT DISTINCT ON (c->>'customer_id') c->>'customer_id' AS id, c->>'name' AS name,
                    lower(nullif(c->>'email', '')) AS email
             FROM (SELECT snapshot->'customer' AS c, issued_on, invoice_id FROM {rel}
                   WHERE tenant = $2) s
             ORDER BY c->>'customer_id', issued_on DESC, invoice_id DESC),
         prov AS MATERIALIZED (
             SELECT p.external_id, p.code, p.name, lower(nullif(p.email, '')) AS email
             FROM ledgerflow.provider_records p
             WHERE p.connection_id = $1 AND p.kind = 'contact'
               AND coalesce(p.status, '') <> 'ARCHIVED'
               AND NOT EXISTS (SELECT 1 FROM ledgerflow.links l
                               WHERE l.connection_id = $1 AND l.entity_type = 'customer'
                                 AND l.external_id = p.external_id)),
         pairs AS (
             SELECT p.external_id, p.name AS label, h.id AS host_id, 1 AS rank
             FROM prov p JOIN host h ON h.id = p.code
             UNION ALL
             SELECT p.external_id, p.name, h.id, 2 FROM prov p JOIN host h ON h.email = p.email
             UNION ALL
             SELECT p.external_id, p.name, h.id, 3 FROM prov p JOIN host h ON h.name = p.name)
         SELECT DISTINCT external_id, label, host_id, rank,
                EXISTS (SELECT 1 FROM ledgerflow.links l
                        WHERE l.connection_id = $1 AND l.entity_type = 'customer'
                          AND l.host_id = pairs.host_id) AS taken
         FROM pairs"
    )))
    .bind(connection_id)
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    pairs_from(rows)
}

/// Separates a payment's invoice and payment ids in a pair's host id.
const SEP: char = '\u{1f}';

/// Provider payments (not deleted, not linked yet) of linked invoices
/// against the host's payments of the same invoice: by reference (the
/// host's payment id or reference, rank 1), else by equal amount (2).
async fn payment_pairs(
    tx: &mut PgConnection,
    rel: &str,
    connection_id: i64,
    tenant: &str,
) -> Result<Vec<Pair>, JobError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH prov AS MATERIALIZED (
             SELECT p.external_id, p.reference, p.total_minor AS amount, l.host_id AS invoice_id
             FROM ledgerflow.provider_records p
             JOIN ledgerflow.links l ON l.connection_id = p.connection_id
                  AND l.entity_type = 'invoice' AND l.external_id = p.parent_external_id
             WHERE p.connection_id = $1 AND p.kind = 'payment'
               AND coalesce(p.status, '') <> 'DELETED'
               AND NOT EXISTS (SELECT 1 FROM ledgerflow.payment_links pl
                               WHERE pl.connection_id = $1 AND pl.external_id = p.external_id)),
         hostpay AS MATERIALIZED (
             SELECT v.invoice_id, pay->>'payment_id' AS payment_id, pay->>'reference' AS reference,
                    (pay->>'amount_minor')::bigint AS amount
             FROM {rel} v, jsonb_array_elements(coalesce(v.snapshot->'payments', '[]'::jsonb)) pay
             WHERE v.tenant = $2 AND v.invoice_id IN (SELECT invoice_id FROM prov)),
         pairs AS (
             SELECT p.external_id, h.invoice_id, h.payment_id, 1 AS rank
             FROM prov p JOIN hostpay h ON h.invoice_id = p.invoice_id
                  AND (p.reference = h.payment_id OR p.reference = h.reference)
             UNION ALL
             SELECT p.external_id, h.invoice_id, h.payment_id, 2
             FROM prov p JOIN hostpay h ON h.invoice_id = p.invoice_id AND h.amount = p.amount)
         SELECT DISTINCT external_id, 'payment on ' || invoice_id AS label,
                invoice_id || chr(31) || payment_id AS host_id, rank,
                EXISTS (SELECT 1 FROM ledgerflow.payment_links pl
                        WHERE pl.connection_id = $1 AND pl.invoice_id = pairs.invoice_id
                          AND pl.payment_id = pairs.payment_id) AS taken
         FROM pairs"
    )))
    .bind(connection_id)
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    pairs_from(rows)
}

/// Writes the links and reviews of one kind; answers how many links were made.
async fn apply(
    tx: &mut PgConnection,
    run: &Run,
    kind: &str,
    decisions: &[Decision],
) -> Result<i64, JobError> {
    let conn_id = run.connection.id;
    let mut links: Vec<(String, Option<String>, String)> = Vec::new();
    for d in decisions {
        match d {
            Decision::Link {
                external_id,
                label,
                host_id,
            } => links.push((external_id.clone(), label.clone(), host_id.clone())),
            Decision::Review {
                external_id,
                label,
                candidates,
                reason,
            } => {
                let shown: Vec<String> = candidates.iter().map(|c| c.replace(SEP, "/")).collect();
                sqlx::query(
                    "INSERT INTO ledgerflow.import_reviews
                         (connection_id, tenant_id, kind, external_id, external_label, candidates,
                          reason, import_id)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (connection_id, kind, external_id) DO UPDATE
                     SET external_label = excluded.external_label, candidates = excluded.candidates,
                         reason = excluded.reason, import_id = excluded.import_id",
                )
                .bind(conn_id)
                .bind(&run.connection.tenant_id)
                .bind(kind)
                .bind(external_id)
                .bind(label)
                .bind(&shown)
                .bind(reason)
                .bind(run.import_id)
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    let (ext, rest): (Vec<String>, Vec<(Option<String>, String)>) =
        links.into_iter().map(|(e, l, h)| (e, (l, h))).unzip();
    let (labels, hosts): (Vec<Option<String>>, Vec<String>) = rest.into_iter().unzip();
    let made = match kind {
        "payment" => {
            let (invoices, payments): (Vec<String>, Vec<String>) = hosts
                .iter()
                .map(|h| {
                    let (i, p) = h.split_once(SEP).unwrap_or((h.as_str(), ""));
                    (i.to_string(), p.to_string())
                })
                .unzip();
            sqlx::query(
                "INSERT INTO ledgerflow.payment_links
                     (connection_id, invoice_id, payment_id, external_id, amount_minor)
                 SELECT $1, u.i, u.p, u.e, coalesce(r.total_minor, 0)
                 FROM unnest($2::text[], $3::text[], $4::text[]) AS u(i, p, e)
                 LEFT JOIN ledgerflow.provider_records r
                        ON r.connection_id = $1 AND r.kind = 'payment' AND r.external_id = u.e
                 ON CONFLICT (connection_id, invoice_id, payment_id) DO NOTHING",
            )
            .bind(conn_id)
            .bind(&invoices)
            .bind(&payments)
            .bind(&ext)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        }
        _ => {
            let entity = if kind == "contact" { "customer" } else { kind };
            sqlx::query(
                "INSERT INTO ledgerflow.links
                     (connection_id, entity_type, host_id, external_id, external_number, last_pull_at)
                 SELECT $1, $2, u.h, u.e, CASE WHEN $2 = 'invoice' THEN u.l END, now()
                 FROM unnest($3::text[], $4::text[], $5::text[]) AS u(h, e, l)
                 ON CONFLICT (connection_id, entity_type, host_id) DO NOTHING",
            )
            .bind(conn_id)
            .bind(entity)
            .bind(&hosts)
            .bind(&ext)
            .bind(&labels)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        }
    };
    // A record linked now needs no review any more.
    sqlx::query(
        "DELETE FROM ledgerflow.import_reviews
         WHERE connection_id = $1 AND kind = $2 AND external_id = ANY($3)",
    )
    .bind(conn_id)
    .bind(kind)
    .bind(&ext)
    .execute(&mut *tx)
    .await?;
    Ok(i64::try_from(made).unwrap_or(i64::MAX))
}

/// The link counts of one kind after this import linked `linked` records.
async fn link_counts(
    tx: &mut PgConnection,
    connection_id: i64,
    kind: &str,
    linked: i64,
) -> Result<LinkCounts, JobError> {
    let (total, with_link, review): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE coalesce(p.status, '') NOT IN ('DELETED', 'VOIDED', 'ARCHIVED')),
                count(*) FILTER (WHERE CASE $2
                    WHEN 'payment' THEN EXISTS (SELECT 1 FROM ledgerflow.payment_links pl
                        WHERE pl.connection_id = $1 AND pl.external_id = p.external_id)
                    ELSE EXISTS (SELECT 1 FROM ledgerflow.links l
                        WHERE l.connection_id = $1
                          AND l.entity_type = CASE $2 WHEN 'contact' THEN 'customer' ELSE $2 END
                          AND l.external_id = p.external_id) END),
                (SELECT count(*) FROM ledgerflow.import_reviews r
                 WHERE r.connection_id = $1 AND r.kind = $2)
         FROM ledgerflow.provider_records p WHERE p.connection_id = $1 AND p.kind = $2",
    )
    .bind(connection_id)
    .bind(kind)
    .fetch_one(&mut *tx)
    .await?;
    Ok(LinkCounts {
        linked,
        already_linked: (with_link - linked).max(0),
        review,
        unmatched: (total - with_link - review).max(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(e: &str, h: &str, rank: i32, taken: bool) -> Pair {
        Pair {
            external_id: e.into(),
            label: Some(format!("label {e}")),
            host_id: h.into(),
            rank,
            taken,
        }
    }

    #[test]
    fn one_match_links_and_anything_else_is_reviewed() {
        let pairs = vec![
            pair("x1", "h1", 1, false),
            // Two host records match x2: reviewed with both.
            pair("x2", "h2", 1, false),
            pair("x2", "h3", 1, false),
            // x3 and x4 both match h4: neither is guessed.
            pair("x3", "h4", 1, false),
            pair("x4", "h4", 1, false),
            // x5's match is linked to another record already.
            pair("x5", "h5", 1, true),
        ];
        let d = decide(&pairs, "host invoices");
        assert_eq!(d.len(), 5);
        assert!(d.contains(&Decision::Link {
            external_id: "x1".into(),
            label: Some("label x1".into()),
            host_id: "h1".into()
        }));
        let reviewed: Vec<&str> = d
            .iter()
            .filter_map(|d| match d {
                Decision::Review { external_id, .. } => Some(external_id.as_str()),
                Decision::Link { .. } => None,
            })
            .collect();
        assert_eq!(reviewed, vec!["x2", "x3", "x4", "x5"]);
        let Some(Decision::Review {
            candidates, reason, ..
        }) = d
            .iter()
            .find(|d| matches!(d, Decision::Review { external_id, .. } if external_id == "x2"))
        else {
            panic!("x2 reviewed")
        };
        assert_eq!(candidates, &vec!["h2".to_string(), "h3".to_string()]);
        assert!(reason.contains("matches 2 host invoices"), "{reason}");
    }

    #[test]
    fn the_strongest_rule_decides() {
        // By contact number one customer; by name two: the number wins.
        let pairs = vec![
            pair("c1", "cust-1", 1, false),
            pair("c1", "cust-1", 3, false),
            pair("c1", "cust-2", 3, false),
        ];
        assert_eq!(
            decide(&pairs, "host customers"),
            vec![Decision::Link {
                external_id: "c1".into(),
                label: Some("label c1".into()),
                host_id: "cust-1".into()
            }]
        );
    }
}
