//! The chart check before a push: an invoice whose account code or tax
//! type is not in the chart of accounts and tax rates the connection's
//! first sync imported (`ledgerflow.provider_records`) fails before any
//! provider call, with a message naming the code and the fix (seed: "check
//! that all account codes on the invoice line items exist in Xero").
//!
//! The adapter says which codes a push would use ([`Import::codes_needed`],
//! no call); this module only compares them with what was imported. It
//! reads the import's table and must not depend on the ledger or the import
//! module (the ledger calls it; the import fills the table).
//!
//! [`Import::codes_needed`]: crate::provider::Import::codes_needed

use sqlx::PgPool;

use crate::invoice::InvoiceSnapshot;
use crate::provider::{ConnectionInfo, ImportKind, Provider, ProviderError};

/// Refuses, before any provider call, a push whose codes are not in the
/// chart the connection's first sync imported (no check until one has).
/// The error names the code and the fix.
pub async fn check_before_push(
    provider: &dyn Provider,
    pool: &PgPool,
    info: &ConnectionInfo,
    snapshot: &InvoiceSnapshot,
) -> Result<(), ProviderError> {
    let Some(import) = provider.import() else {
        return Ok(());
    };
    let db = |e: sqlx::Error| ProviderError::Retryable {
        message: format!("the imported chart could not be read: {e}"),
        raw: None,
    };
    let imported: Vec<(String, String)> = sqlx::query_as(
        "SELECT kind, code FROM ledgerflow.provider_records
         WHERE connection_id = $1 AND kind IN ('account', 'tax_rate') AND code IS NOT NULL
           AND coalesce(status, 'ACTIVE') = 'ACTIVE'",
    )
    .bind(info.id)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    let has = |kind: &str| imported.iter().any(|(k, _)| k == kind);
    if !has("account") && !has("tax_rate") {
        return Ok(());
    }
    let provider_name = info.provider.display_name();
    for needed in import.codes_needed(info, snapshot).await? {
        let kind = needed.kind.as_str();
        if !has(kind) || imported.iter().any(|(k, c)| k == kind && *c == needed.code) {
            continue;
        }
        let message = match needed.kind {
            ImportKind::Account => format!(
                "account {} is not in this {provider_name} organisation's chart of accounts: import again (`ledgerflow connection import {}`) if it was added since, or map {} to an account that exists",
                needed.code, info.id, needed.used_for
            ),
            _ => format!(
                "tax type {} ({}) is not among this {provider_name} organisation's tax rates: import again (`ledgerflow connection import {}`) if it was added since, or map the tax code to one that exists (`ledgerflow connection mappings {}` lists them)",
                needed.code, needed.used_for, info.id, info.id
            ),
        };
        return Err(ProviderError::permanent(message, None));
    }
    Ok(())
}
