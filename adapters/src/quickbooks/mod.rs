//! The QuickBooks Online adapter: implements the `Provider` port for
//! Intuit's Accounting API (customers, invoices, payments, service items),
//! on the adapter kit.
//!
//! QuickBooks' quirks, and where each is handled:
//! - **Calls** go through the kit's call path ([`crate::kit::call`]) with
//!   the primitives in [`api`]: a bearer token, the company's path
//!   (`/v3/company/{realmId}`) and `minorversion=75`; hour-long access
//!   tokens refreshed under the connection's row lock; refresh tokens that
//!   rotate (the newest is stored before it is used, never spent twice;
//!   `invalid_grant` → reconnect) and have a five-year hard cap
//!   (`x_refresh_token_hard_expires_in`, stored with the credentials and
//!   shown on `connection show`).
//! - **Limits**: 500 calls a minute and 10 at once per company, kept in the
//!   shared limiter for every worker; a 429 or Fault 003001 pauses the
//!   company until Retry-After (a minute when absent), attempt not spent.
//! - **Idempotency**: every write carries `?requestid=` (at most 50
//!   characters) from the sync event ([`api::request_id`]); Intuit replays
//!   a request id's first answer even for an entity deleted since, so a
//!   write made again after a delete takes a new generation. A payment's
//!   id names the payment, not the event.
//! - **Lost answers**: an unlinked invoice is looked up by `DocNumber`
//!   (ours carry a marker in `PrivateNote`) and a customer by
//!   `DisplayName` (ours carry one in `Notes`) before one is created.
//! - **SyncTokens** ([`invoices`]): updates read the entity by id first
//!   (queries may hold stale tokens); a stale token (5010, e.g. after a
//!   payment) re-reads and retries once.
//! - **Faults** ([`errors`]): classified from status and Fault code, a
//!   friendly sentence plus the raw Fault on the event.
//! - **Tax** ([`invoices`]): by the settings' region; the total QuickBooks
//!   computed must equal the host's to the cent.
//! - **Drafts** never sync; cancel voids, a draft again deletes.
//! - **Customers and service items on their own** ([`host_records`]):
//!   the host's "changed" triggers, found or created then updated with
//!   their SyncToken.
//! - **Timesheets** ([`time`]): one TimeActivity per approved entry, for
//!   the mapped Employee; Payroll's absence read from the Fault
//!   ([`PayrollFault`]).
//! - **Payments made in QuickBooks** come back through the change feed
//!   ([`changes`]: an invoice and its linked payments, or one change data
//!   capture call) after a webhook ([`webhook`]) or on the periodic pull.
//! - **First sync** ([`import`]): the chart, tax codes (with their rates),
//!   items, customers, invoices and payments read page by page with
//!   `STARTPOSITION` / `MAXRESULTS` (1,000 at most), and the host's items
//!   created one `POST /item` each (QuickBooks has no batch create here).
//!
//! This module must not touch the queue or the ledger tables; its only
//! state is `ledgerflow_workflows::provider_state`.

pub mod api;
pub mod changes;
pub mod config;
pub mod customers;
pub mod errors;
pub mod host_records;
pub mod import;
pub mod invoices;
pub mod items;
pub mod payments;
#[cfg(feature = "sandbox")]
pub mod sim;
pub mod time;
pub mod webhook;
pub mod wire;

use std::sync::Arc;

pub use config::{QboConfig, QboConnection, QboLimits, QboOptions};
pub use errors::PayrollFault;
pub use items::ServiceItem;
use ledgerflow_workflows::provider::{
    ChangeFeed, ConnectionInfo, ExternalRef, HostRecordSync, Import, PaymentOutcome, Provider,
    ProviderError, ProviderFuture, PushPaymentRequest, PushResult, ReversePaymentRequest,
    SyncCustomerRequest, UpsertInvoiceRequest, VoidOrderRequest, VoidUnlinkedRequest,
};
use ledgerflow_workflows::provider_state::{self as state, Credentials, NewCredentials, SecretKey};
use ledgerflow_workflows::settings::{ProviderSettings, QuickBooksSettings};
use sqlx::PgPool;

use crate::kit::call::Caller;
use crate::kit::customers::CustomerLookups;
use crate::kit::errors::credential_error;
use crate::kit::http::BuildError;
use crate::kit::oauth2::OAuth2Client;
use api::{PROVIDER, QboApi};

/// Intuit's token endpoint below the identity base URL.
pub const TOKEN_PATH: &str = "/oauth2/v1/tokens/bearer";
/// The token answer's field with the refresh token's hard expiry.
pub const HARD_EXPIRY_FIELD: &str = "x_refresh_token_hard_expires_in";

/// The QuickBooks Online adapter. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct QboAdapter {
    caller: Caller<QboApi>,
    /// Customer lookups in flight, shared by the clones of this adapter.
    customers: Arc<CustomerLookups<ExternalRef>>,
    /// Item creates in flight (by SKU), shared alike.
    items: Arc<CustomerLookups<wire::Item>>,
    /// `MAXRESULTS` of a first sync's queries (`QboConfig::import_page_size`).
    import_page_size: u32,
}

impl QboAdapter {
    pub fn new(pool: PgPool, key: SecretKey, config: QboConfig) -> Result<Self, BuildError> {
        let api = QboApi {
            limits: config.limits,
            reserved_calls_per_job: config.reserved_calls_per_job,
            slot_ttl: config.slot_ttl,
            minor_version: config.minor_version,
            payroll_fault: config.payroll_fault.clone(),
        };
        let oauth2 = OAuth2Client::new(
            "QuickBooks",
            config.client_id.clone(),
            config.client_secret.clone(),
        )
        .token_path(TOKEN_PATH)
        .refresh_expiry_field(HARD_EXPIRY_FIELD);
        Ok(QboAdapter {
            caller: Caller::new(api, pool, key, config.call_settings())?.with_oauth2(oauth2),
            customers: Arc::default(),
            items: Arc::default(),
            import_page_size: config.import_page_size.clamp(1, config::MAX_QUERY_RESULTS),
        })
    }

    /// Stores a connection's credentials and mapping (connect / reconnect).
    pub async fn register(&self, c: &QboConnection) -> Result<(), ProviderError> {
        let options = serde_json::to_value(&c.options)
            .map_err(|e| ProviderError::permanent(format!("quickbooks options: {e}"), None))?;
        self.caller
            .register(&NewCredentials {
                connection_id: c.connection_id,
                provider: PROVIDER.into(),
                access_token: c.access_token.clone(),
                refresh_token: c.refresh_token.clone(),
                access_expires_at: chrono::Utc::now() + chrono::Duration::seconds(c.expires_in),
                external_tenant_id: Some(c.realm_id.clone()),
                api_base_url: c.api_base_url.clone(),
                identity_base_url: c.identity_base_url.clone(),
                options,
            })
            .await?;
        let hard = c
            .refresh_hard_expires_in
            .map(|s| chrono::Utc::now() + chrono::Duration::seconds(s));
        state::set_refresh_expiry(self.caller.pool(), c.connection_id, hard)
            .await
            .map_err(|e| credential_error("QuickBooks", e))
    }

    /// Refreshes the connection's tokens (under its row lock) unless
    /// another process already did since `seen` was loaded.
    pub async fn refresh(&self, seen: &Credentials) -> Result<Credentials, ProviderError> {
        self.caller.refresh(seen).await
    }

    /// The connection's stored credentials (no refresh): its hard expiry.
    pub async fn stored(&self, connection_id: i64) -> Result<Credentials, ProviderError> {
        self.caller.stored(connection_id).await
    }
}

fn qbo_settings(connection: &ConnectionInfo) -> Result<QuickBooksSettings, ProviderError> {
    match &connection.settings.provider {
        ProviderSettings::QuickBooks(s) => Ok(s.clone()),
        other => Err(ProviderError::permanent(
            format!(
                "the connection has {} settings, not QuickBooks settings",
                other.provider()
            ),
            None,
        )),
    }
}

impl Provider for QboAdapter {
    fn upsert_invoice<'a>(
        &'a self,
        req: UpsertInvoiceRequest<'a>,
    ) -> ProviderFuture<'a, PushResult> {
        Box::pin(async move {
            let settings = qbo_settings(req.connection)?;
            self.upsert(
                req.connection,
                &settings,
                req.snapshot,
                req.existing,
                req.customer,
                req.mode,
                req.idempotency_key,
            )
            .await
        })
    }

    fn void_order<'a>(&'a self, req: VoidOrderRequest<'a>) -> ProviderFuture<'a, PushResult> {
        Box::pin(self.void(req))
    }

    fn find_unlinked<'a>(
        &'a self,
        req: VoidUnlinkedRequest<'a>,
    ) -> ProviderFuture<'a, Vec<ExternalRef>> {
        Box::pin(self.unlinked_invoice(req.connection.id, req.snapshot))
    }

    fn apply_payment<'a>(
        &'a self,
        req: PushPaymentRequest<'a>,
    ) -> ProviderFuture<'a, PaymentOutcome> {
        Box::pin(async move {
            self.apply_payment_outcome(
                req.connection.id,
                req.snapshot,
                req.invoice,
                req.payment,
                req.existing,
            )
            .await
        })
    }

    fn sync_customer<'a>(
        &'a self,
        req: SyncCustomerRequest<'a>,
    ) -> ProviderFuture<'a, Option<ExternalRef>> {
        Box::pin(async move {
            if let Some(link) = req.existing {
                return Ok(Some(link.clone()));
            }
            self.find_or_create_customer(req.connection.id, req.customer, None, req.idempotency_key)
                .await
                .map(Some)
        })
    }

    fn reverse_payment<'a>(&'a self, req: ReversePaymentRequest<'a>) -> ProviderFuture<'a, ()> {
        Box::pin(async move { self.delete_payment(req.connection.id, req.payment).await })
    }

    fn change_feed(&self) -> Option<&dyn ChangeFeed> {
        Some(self)
    }

    fn host_records(&self) -> Option<&dyn HostRecordSync> {
        Some(self)
    }

    fn import(&self) -> Option<&dyn Import> {
        Some(self)
    }
}
