//! The Xero adapter: implements the `Provider` port for Xero's Accounting
//! API (ACCREC invoices, contacts, payments).
//!
//! Every call goes through [`XeroAdapter::call`]: credentials from the
//! encrypted store (refreshed under the connection's row lock when they
//! are about to expire, or once after a 401), a slot from the shared
//! limiter (tenant and app scopes), then the request, whose rate-limit
//! headers are recorded for every process. Writes carry an
//! `Idempotency-Key` derived from the sync event's key, one per operation.
//!
//! Lost answers: an unlinked invoice is looked up by its Reference (the
//! host's invoice number) before one is created, so a create whose answer
//! was lost is adopted and updated, never made twice. Only a first write
//! (`UpsertMode::FirstWrite`: the ledger shows that nothing can have
//! written the invoice yet) skips the look, a call per new invoice.
//!
//! This module must not touch the queue or the ledger tables; its only
//! state is `ledgerflow_workflows::provider_state`.

pub mod auth;
pub mod batch;
pub mod errors;
pub mod limits;
pub mod pull;
#[cfg(feature = "sandbox")]
pub mod simulator;
pub mod summary;
pub mod webhook;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ledgerflow_workflows::call_budget;
use ledgerflow_workflows::credential_cache::CredentialCache;
use ledgerflow_workflows::invoice::{Customer, InvoiceSnapshot, Payment};
use ledgerflow_workflows::money::Money;
/// What pushing a payment did (the port's type; re-exported for callers of
/// [`XeroAdapter::push_payment_outcome`]).
pub use ledgerflow_workflows::provider::PaymentOutcome;
use ledgerflow_workflows::provider::{
    CompleteDraftRequest, ExternalRef, Provider, ProviderError, ProviderFuture, PushPaymentRequest,
    PushResult, ReversePaymentRequest, SyncCustomerRequest, UpsertInvoiceRequest, UpsertMode,
    VoidOrderRequest, VoidUnlinkedRequest, WriteKind,
};
use ledgerflow_workflows::provider_state::{
    self as state, Acquired, CredentialError, CredentialStatus, Credentials, LimitScope,
    NewCredentials, Secret, SecretKey, WaitReason,
};
use ledgerflow_workflows::settings::{ProviderSettings, XeroInvoiceStatus, XeroSettings};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::customer_lookups::CustomerLookups;
use crate::decimal::Decimal;
use crate::http::{BuildError, HttpConfig, build_client, transport_failure};
use errors::{XeroError, classify};
pub use limits::XeroLimits;
use wire::{Envelope, status};

const PROVIDER: &str = "xero";
/// Xero's limit on `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 128;

/// App-level configuration (one per worker process).
#[derive(Debug, Clone)]
pub struct XeroConfig {
    pub client_id: String,
    pub client_secret: Secret,
    pub limits: XeroLimits,
    pub http: HttpConfig,
    /// A limiter wait shorter than this is slept through in the call;
    /// longer ones end the attempt as rate limited (attempt not spent).
    pub max_inline_wait: Duration,
    /// The longest wait slept inline by a job that has already spent calls
    /// in this run (a full minute window and a little).
    pub max_mid_job_wait: Duration,
    /// How long a process reuses a connection's decrypted credentials
    /// before reading the store again (`Duration::ZERO`: every call reads
    /// it). A refresh by another process is found through the store's
    /// generation either way; this bounds how late a status or options
    /// change made elsewhere is seen.
    pub credentials_ttl: Duration,
    /// Calls a job's first Xero call sets aside for the job's next ones
    /// (a sync is typically: contact, invoice lookup, write), so a job that
    /// starts under a busy minute window also finishes
    /// (`provider_state::acquire_reserving`). 1: no reservation.
    pub reserved_calls_per_job: u32,
    /// How long a crashed process may hold a concurrency slot.
    pub slot_ttl: Duration,
    /// Refresh when the access token has less than this left.
    pub refresh_margin: chrono::Duration,
}

impl XeroConfig {
    pub fn new(client_id: impl Into<String>, client_secret: Secret) -> XeroConfig {
        XeroConfig {
            client_id: client_id.into(),
            client_secret,
            limits: XeroLimits::default(),
            http: HttpConfig::default(),
            max_inline_wait: Duration::from_secs(2),
            max_mid_job_wait: Duration::from_secs(62),
            credentials_ttl: Duration::from_secs(5),
            reserved_calls_per_job: 3,
            slot_ttl: Duration::from_secs(120),
            refresh_margin: chrono::Duration::seconds(60),
        }
    }
}

/// Per-connection, non-secret mapping stored with the credentials
/// (`provider_credentials.options`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct XeroOptions {
    /// Revenue account for invoice lines.
    pub sales_account_code: String,
    /// Bank account (or one with payments enabled) payments go to.
    pub payment_account_code: String,
    /// Host tax code → Xero TaxType ("GST15" → "OUTPUT2").
    pub tax_types: BTreeMap<String, String>,
    /// TaxType for lines without a tax code, and for discount lines.
    pub no_tax_type: String,
    /// "Manual select": every invoice goes to this one contact
    /// ("Walk-in Customer") instead of a contact per customer.
    pub generic_contact_name: Option<String>,
}

impl Default for XeroOptions {
    fn default() -> Self {
        XeroOptions {
            sales_account_code: "200".into(),
            payment_account_code: "090".into(),
            tax_types: BTreeMap::new(),
            no_tax_type: "NONE".into(),
            generic_contact_name: None,
        }
    }
}

/// Registering a connection (on connect or reconnect).
#[derive(Debug, Clone)]
pub struct XeroConnection {
    pub connection_id: i64,
    pub xero_tenant_id: String,
    pub access_token: Secret,
    pub refresh_token: Secret,
    /// Seconds the access token has left (`expires_in`).
    pub expires_in: i64,
    /// `https://api.xero.com/api.xro/2.0` in production.
    pub api_base_url: String,
    /// `https://identity.xero.com` in production.
    pub identity_base_url: String,
    pub options: XeroOptions,
}

/// How long before its turn in the minute window a refused job is
/// rescheduled (see `XeroAdapter::slot`); well under `max_inline_wait`.
/// `ledgerflow.limiter_hand_on` uses the same lead when it moves a waiter's turn earlier: keep them equal.
const EARLY_FOR_A_TURN: chrono::Duration = chrono::Duration::milliseconds(500);

/// Replacements of an archived contact one upsert tries before it gives
/// up for now (retryable): each replacement was archived before the
/// invoice written to it landed.
const MAX_CONTACT_REPLACEMENTS: u32 = 3;

/// What Xero says of a contact an invoice was refused for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ContactStanding {
    /// It takes invoices: the refusal was about something else.
    Active,
    /// Archived by a person, or merged into another contact (`merged_into`).
    Archived { merged_into: Option<String> },
    /// Xero holds no contact with that ContactID.
    Unknown,
}

/// One invoice write of an upsert, whichever contact it goes to.
struct InvoiceWrite<'a> {
    connection_id: i64,
    snapshot: &'a InvoiceSnapshot,
    /// The invoice as built for the first contact tried.
    invoice: &'a wire::Invoice,
    /// The Xero invoice to update; `None`: create one.
    target: Option<&'a str>,
    /// The ledger linked the invoice before this write (an update in place,
    /// not an adoption of a lost create).
    linked_before: bool,
    wanted: &'static str,
}

/// The Xero adapter. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct XeroAdapter {
    pool: PgPool,
    key: SecretKey,
    http: reqwest::Client,
    /// Decrypted credentials kept for `config.credentials_ttl`, shared by
    /// the clones of this adapter.
    credentials: Arc<CredentialCache>,
    /// Contact lookups in flight, shared by the clones of this adapter.
    contacts: Arc<CustomerLookups<ExternalRef>>,
    config: XeroConfig,
}

/// One Accounting API request.
struct ApiCall<'a> {
    method: Method,
    path: String,
    query: Vec<(&'static str, String)>,
    body: Option<&'a Envelope>,
    idempotency_key: Option<String>,
    /// Extra request headers (`If-Modified-Since`).
    headers: Vec<(&'static str, String)>,
}

impl<'a> ApiCall<'a> {
    fn get(path: impl Into<String>) -> ApiCall<'a> {
        ApiCall {
            method: Method::GET,
            path: path.into(),
            query: Vec::new(),
            body: None,
            idempotency_key: None,
            headers: Vec::new(),
        }
    }
    fn write(method: Method, path: impl Into<String>, body: &'a Envelope, key: String) -> Self {
        ApiCall {
            method,
            path: path.into(),
            // One element per request: fail it with a 400 ValidationException.
            query: vec![("summarizeErrors", "true".into())],
            body: Some(body),
            idempotency_key: Some(key),
            headers: Vec::new(),
        }
    }
}

/// Derives one operation's key from the sync event's, within Xero's 128
/// characters (long keys keep a hash of the whole so they stay distinct).
pub fn operation_key(base: &str, operation: &str) -> String {
    let key = format!("{base}:{operation}");
    if key.len() <= MAX_IDEMPOTENCY_KEY {
        return key;
    }
    let hash = crate::keys::fnv1a64(key.as_bytes());
    let mut end = MAX_IDEMPOTENCY_KEY - 17;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}-{hash:016x}", &key[..end])
}

fn credential_error(e: CredentialError) -> ProviderError {
    crate::credentials::credential_error("Xero", e)
}

use crate::credentials::db_error;

fn decode_error(message: String, body: &str) -> ProviderError {
    XeroError::Decode {
        message,
        raw: crate::http::raw_excerpt(200, body),
    }
    .into()
}

impl XeroAdapter {
    pub fn new(pool: PgPool, key: SecretKey, config: XeroConfig) -> Result<Self, BuildError> {
        let http = build_client(config.http)?;
        Ok(XeroAdapter {
            pool,
            key,
            http,
            credentials: Arc::new(CredentialCache::new(config.credentials_ttl)),
            contacts: Arc::default(),
            config,
        })
    }

    /// Stores a connection's credentials and mapping (connect / reconnect).
    pub async fn register(&self, c: &XeroConnection) -> Result<(), ProviderError> {
        let options = serde_json::to_value(&c.options)
            .map_err(|e| ProviderError::permanent(format!("xero options: {e}"), None))?;
        state::save_credentials(
            &self.pool,
            &self.key,
            &NewCredentials {
                connection_id: c.connection_id,
                provider: PROVIDER.into(),
                access_token: c.access_token.clone(),
                refresh_token: c.refresh_token.clone(),
                access_expires_at: Utc::now() + chrono::Duration::seconds(c.expires_in),
                external_tenant_id: Some(c.xero_tenant_id.clone()),
                api_base_url: c.api_base_url.clone(),
                identity_base_url: c.identity_base_url.clone(),
                options,
            },
        )
        .await
        .map_err(credential_error)?;
        self.credentials.forget(c.connection_id);
        Ok(())
    }

    fn scopes(&self, connection_id: i64) -> [LimitScope; 2] {
        [
            LimitScope::connection(PROVIDER, connection_id, self.config.limits.tenant),
            LimitScope::app(PROVIDER, self.config.limits.app),
        ]
    }

    /// Refreshes the connection's tokens (under its row lock) unless
    /// another process already did since `seen` was loaded.
    pub async fn refresh(&self, seen: &Credentials) -> Result<Credentials, ProviderError> {
        let http = self.http.clone();
        let (client_id, secret) = (
            self.config.client_id.clone(),
            self.config.client_secret.clone(),
        );
        let fresh = state::refresh_credentials(
            &self.pool,
            &self.key,
            seen.connection_id,
            seen.generation,
            |current| async move {
                auth::refresh(
                    &http,
                    &current.identity_base_url,
                    &client_id,
                    &secret,
                    &current.refresh_token,
                )
                .await
            },
        )
        .await;
        match fresh {
            Ok(creds) => {
                self.credentials.remember(&creds);
                Ok(creds)
            }
            Err(e) => {
                self.credentials.forget(seen.connection_id);
                Err(credential_error(e))
            }
        }
    }

    async fn credentials(&self, connection_id: i64) -> Result<Credentials, ProviderError> {
        let creds = self
            .credentials
            .load(&self.pool, &self.key, connection_id)
            .await
            .map_err(credential_error)?;
        if creds.status == CredentialStatus::ReconnectNeeded {
            return Err(ProviderError::reconnect_needed(
                creds
                    .status_reason
                    .unwrap_or_else(|| "Xero needs reconnecting".into()),
            ));
        }
        if creds.access_expires_at - self.config.refresh_margin <= Utc::now() {
            return self.refresh(&creds).await;
        }
        Ok(creds)
    }

    async fn slot(&self, connection_id: i64) -> Result<state::Slot, ProviderError> {
        let scopes = self.scopes(connection_id);
        // Short waits (a slot about to free) are slept through, but never
        // for long in total: a job holding its worker is worse than a job
        // rescheduled without spending an attempt.
        let budget = self.config.max_inline_wait * 5;
        let mut waited = Duration::ZERO;
        loop {
            match state::acquire_reserving(
                &self.pool,
                &scopes,
                self.config.slot_ttl,
                self.config.reserved_calls_per_job,
            )
            .await
            .map_err(db_error)?
            {
                Acquired::Granted(slot) => return Ok(slot),
                Acquired::Wait { until, reason, .. } => {
                    let wait = (until - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                    // A job that has spent calls in this run and outgrew its
                    // reservation waits for the window here: rescheduled, it
                    // would start over and spend them again on the same
                    // first calls, and with the window kept full by other
                    // jobs it could do that forever (found by the full chaos
                    // run: six paying invoices of one organisation, each
                    // needing more calls than it reserved, cycled for ten
                    // minutes).
                    let (longest, total) = if call_budget::mid_job()
                        && matches!(reason, WaitReason::MinuteWindow | WaitReason::Concurrency)
                    {
                        (
                            self.config.max_mid_job_wait,
                            self.config.max_mid_job_wait * 2,
                        )
                    } else {
                        (self.config.max_inline_wait, budget)
                    };
                    if wait > longest || waited + wait > total {
                        // Come back a little before the turn: waking,
                        // claiming and reaching here again takes time that
                        // would otherwise be lost from the window. Back
                        // early, the rest is a short wait slept above.
                        let back = match reason {
                            WaitReason::MinuteWindow => until - EARLY_FOR_A_TURN,
                            _ => until,
                        };
                        return Err(ProviderError::rate_limited(
                            back,
                            match reason {
                                WaitReason::Paused => {
                                    "Xero asked us to pause this organisation's calls"
                                }
                                WaitReason::MinuteWindow => {
                                    "this organisation's Xero calls for this minute are used"
                                }
                                WaitReason::DayWindow => {
                                    "this organisation's daily Xero quota is used"
                                }
                                WaitReason::Concurrency => {
                                    "this organisation already has as many Xero calls in flight as allowed"
                                }
                            },
                        ));
                    }
                    tokio::time::sleep(wait).await;
                    waited += wait;
                }
            }
        }
    }

    /// Sends one Accounting API request with fresh credentials, a limiter
    /// slot, header bookkeeping, and one refresh-and-retry on 401.
    async fn call(&self, connection_id: i64, req: &ApiCall<'_>) -> Result<Envelope, ProviderError> {
        let mut creds = self.credentials(connection_id).await?;
        let tenant = creds.external_tenant_id.clone().ok_or_else(|| {
            ProviderError::reconnect_needed("the Xero connection has no organisation (tenant id)")
        })?;
        let [scope, app_scope] = self.scopes(connection_id);
        let mut refreshed = false;
        loop {
            let slot = self.slot(connection_id).await?;
            let url = format!(
                "{}/{}",
                creds.api_base_url.trim_end_matches('/'),
                req.path.trim_start_matches('/')
            );
            let mut builder = self
                .http
                .request(req.method.clone(), url)
                .bearer_auth(creds.access_token.expose())
                .header("xero-tenant-id", &tenant)
                .header("accept", "application/json")
                .query(&req.query);
            if let Some(key) = &req.idempotency_key {
                builder = builder.header("Idempotency-Key", key);
            }
            for (name, value) in &req.headers {
                builder = builder.header(*name, value);
            }
            if let Some(body) = req.body {
                builder = builder.json(body);
            }
            let sent = builder.send().await;
            let result = match sent {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    match resp.text().await {
                        Ok(body) => Ok((status, headers, body)),
                        Err(e) => Err(transport_failure(&e, true)),
                    }
                }
                Err(e) => Err(transport_failure(&e, false)),
            };
            let (status, headers, body) = match result {
                Ok(answer) => answer,
                Err(t) => {
                    // The slot goes back whatever happened; a failure here
                    // only leaves it to expire.
                    if let Err(e) = state::release(&self.pool, slot).await {
                        tracing::warn!(connection_id, error = %e, "could not release a Xero call slot");
                    }
                    tracing::info!(
                        connection_id,
                        answer_lost = t.answer_lost,
                        "Xero call failed: {}",
                        t.message
                    );
                    return Err(ProviderError::from(t));
                }
            };
            let now = Utc::now();
            let observed = limits::observe(&headers, status, now);
            // Slot back and headers recorded in one statement.
            state::finish(&self.pool, slot, &scope, Some(&app_scope), observed)
                .await
                .map_err(db_error)?;
            if (200..300).contains(&status) {
                return serde_json::from_str::<Envelope>(&body)
                    .map_err(|e| decode_error(e.to_string(), &body));
            }
            let error = classify(status, &headers, &body, now);
            match error {
                XeroError::Unauthorized { .. } if !refreshed => {
                    refreshed = true;
                    creds = self.refresh(&creds).await?;
                }
                XeroError::Unauthorized { .. } | XeroError::Forbidden { .. } => {
                    let reason = match error {
                        XeroError::Forbidden { .. } => {
                            "Xero refused access to the organisation (403): reconnect Xero"
                        }
                        _ => "Xero refused a freshly refreshed access token (401): reconnect Xero",
                    };
                    self.credentials.forget(connection_id);
                    state::mark_reconnect_needed(&self.pool, connection_id, reason)
                        .await
                        .map_err(db_error)?;
                    return Err(error.into());
                }
                other => return Err(other.into()),
            }
        }
    }

    async fn options(&self, connection_id: i64) -> Result<XeroOptions, ProviderError> {
        let creds = self
            .credentials
            .load(&self.pool, &self.key, connection_id)
            .await
            .map_err(credential_error)?;
        serde_json::from_value(creds.options).map_err(|e| {
            ProviderError::permanent(
                format!("the Xero mapping settings are unreadable: {e}"),
                None,
            )
        })
    }

    // -- contacts ----------------------------------------------------------

    /// Contacts whose `field` is exactly `value`, archived ones left out.
    /// The answer is checked against the key, never trusted to be filtered:
    /// a proxy's cache or an API change that drops the `where` would
    /// otherwise send every invoice to the first contact listed.
    async fn contacts_where(
        &self,
        connection_id: i64,
        field: ContactKey,
        value: &str,
    ) -> Result<Vec<wire::Contact>, ProviderError> {
        let mut call = ApiCall::get("Contacts");
        call.query.push((
            "where",
            format!("{}==\"{}\"", field.as_str(), escape_where(value)),
        ));
        Ok(self
            .call(connection_id, &call)
            .await?
            .contacts
            .unwrap_or_default()
            .into_iter()
            .filter(|c| field.of(c) == Some(value))
            .filter(|c| c.contact_status.as_deref() != Some(wire::CONTACT_ARCHIVED))
            .collect())
    }

    /// Finds the customer's contact by our contact number, then by exact
    /// name; creates it when neither matches. With a generic contact in the
    /// options, that one contact is found or created instead.
    pub async fn find_or_create_contact(
        &self,
        connection_id: i64,
        customer: &Customer,
        idempotency_key: &str,
    ) -> Result<ExternalRef, ProviderError> {
        let options = self.options(connection_id).await?;
        let (number, name, email) = match &options.generic_contact_name {
            Some(generic) => (None, generic.clone(), None),
            None => (
                Some(contact_number(&customer.customer_id)),
                customer.name.trim().to_string(),
                customer.email.clone(),
            ),
        };
        // The syncs of one new customer's invoices share one lookup (and
        // one create) instead of racing to create the contact.
        let key = number.clone().unwrap_or_else(|| format!("name:{name}"));
        self.contacts
            .find_or_create(connection_id, &key, || {
                self.find_or_create_contact_now(connection_id, number, name, email, idempotency_key)
            })
            .await
    }

    /// The contact an invoice goes to: the ledger's link of its customer
    /// when there is one (not checked against Xero: a linked customer costs
    /// no call, and Xero refusing the contact is handled by the caller,
    /// [`XeroAdapter::replacement_contact`]), else found or created. With a
    /// generic contact in the options every invoice goes to that one,
    /// whatever the link says.
    async fn invoice_contact(
        &self,
        connection_id: i64,
        options: &XeroOptions,
        customer: &Customer,
        linked: Option<&ExternalRef>,
        idempotency_key: &str,
    ) -> Result<ExternalRef, ProviderError> {
        if let (None, Some(link)) = (&options.generic_contact_name, linked) {
            // The job reserved a call for finding the contact.
            call_budget::spare(1);
            return Ok(link.clone());
        }
        self.find_or_create_contact(connection_id, customer, idempotency_key)
            .await
    }

    /// Whether Xero can still take invoices for `contact`.
    async fn contact_standing(
        &self,
        connection_id: i64,
        contact: &ExternalRef,
    ) -> Result<ContactStanding, ProviderError> {
        Ok(
            match self
                .contact_by_id(connection_id, &contact.external_id)
                .await?
            {
                None => ContactStanding::Unknown,
                Some(c) if c.contact_status.as_deref() == Some(wire::CONTACT_ARCHIVED) => {
                    ContactStanding::Archived {
                        merged_into: c.merged_to_contact_id,
                    }
                }
                Some(_) => ContactStanding::Active,
            },
        )
    }

    /// What stands for the customer once its contact is no longer usable:
    /// the contact it was merged into, when that one is active, else the
    /// customer's contact found or created afresh.
    ///
    /// A contact it creates gets an idempotency key of its own: under the
    /// sync's key, a retry would be answered with Xero's replay of the
    /// contact an earlier attempt made, which may be archived by now. A
    /// create whose answer is lost is still made once: Xero refuses a
    /// second active contact of the same name, and the winner is adopted.
    async fn replacement_contact(
        &self,
        connection_id: i64,
        standing: ContactStanding,
        customer: &Customer,
    ) -> Result<ExternalRef, ProviderError> {
        if let ContactStanding::Archived {
            merged_into: Some(id),
        } = standing
            && let Some(c) = self.contact_by_id(connection_id, &id).await?
            && c.contact_status.as_deref() != Some(wire::CONTACT_ARCHIVED)
        {
            return contact_ref(c);
        }
        let key = format!("ledgerflow-contact-{}", uuid::Uuid::new_v4());
        self.find_or_create_contact(connection_id, customer, &key)
            .await
    }

    /// The contact with this ContactID, archived ones included; `None` when
    /// Xero holds none.
    async fn contact_by_id(
        &self,
        connection_id: i64,
        contact_id: &str,
    ) -> Result<Option<wire::Contact>, ProviderError> {
        let call = ApiCall::get(format!("Contacts/{contact_id}"));
        match self.call(connection_id, &call).await {
            Ok(env) => Ok(env.contacts.and_then(|c| c.into_iter().next())),
            Err(ProviderError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn find_or_create_contact_now(
        &self,
        connection_id: i64,
        number: Option<String>,
        name: String,
        email: Option<String>,
        idempotency_key: &str,
    ) -> Result<ExternalRef, ProviderError> {
        if let Some(number) = &number
            && let Some(c) = self
                .contacts_where(connection_id, ContactKey::Number, number)
                .await?
                .into_iter()
                .next()
        {
            return contact_ref(c);
        }
        if let Some(c) = self
            .contacts_where(connection_id, ContactKey::Name, &name)
            .await?
            .into_iter()
            .next()
        {
            return contact_ref(c);
        }
        let body = Envelope {
            contacts: Some(vec![wire::Contact {
                name: Some(name.clone()),
                contact_number: number,
                email_address: email,
                ..wire::Contact::default()
            }]),
            ..Envelope::default()
        };
        let key = operation_key(idempotency_key, "contact");
        let env = match self
            .call(
                connection_id,
                &ApiCall::write(Method::PUT, "Contacts", &body, key),
            )
            .await
        {
            Ok(env) => env,
            // Two syncs of one new customer's invoices raced: the other
            // created the contact between our lookup and our create, and
            // Xero refuses the duplicate name. Adopt the winner's contact.
            Err(e @ ProviderError::Permanent { .. }) => {
                let winner = self
                    .contacts_where(connection_id, ContactKey::Name, &name)
                    .await?
                    .into_iter()
                    .next();
                return match winner {
                    Some(c) => contact_ref(c),
                    None => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        let c = first(env.contacts, "contact")?;
        contact_ref(c)
    }

    // -- invoices ----------------------------------------------------------

    pub async fn get_invoice(
        &self,
        connection_id: i64,
        invoice_id: &str,
    ) -> Result<wire::Invoice, ProviderError> {
        let env = self
            .call(
                connection_id,
                &ApiCall::get(format!("Invoices/{invoice_id}")),
            )
            .await?;
        let found = first(env.invoices, "invoice")?;
        // Checked, not trusted: acting on another invoice than the one
        // asked for (a proxy's cache) would pay or void the wrong one.
        let same = found
            .invoice_id
            .as_deref()
            .is_some_and(|id| id.eq_ignore_ascii_case(invoice_id));
        if !same {
            return Err(decode_error(
                format!(
                    "asked for invoice {invoice_id}, Xero answered with invoice {}",
                    found.invoice_id.as_deref().unwrap_or("(no id)")
                ),
                "",
            ));
        }
        Ok(found)
    }

    /// ACCREC invoices whose Reference is exactly `reference`, newest last,
    /// deleted and voided ones left out.
    pub async fn find_invoices_by_reference(
        &self,
        connection_id: i64,
        reference: &str,
    ) -> Result<Vec<wire::Invoice>, ProviderError> {
        let mut call = ApiCall::get("Invoices");
        call.query.push((
            "where",
            format!(
                "Type==\"ACCREC\" AND Reference==\"{}\"",
                escape_where(reference)
            ),
        ));
        let found = self
            .call(connection_id, &call)
            .await?
            .invoices
            .unwrap_or_default();
        Ok(found
            .into_iter()
            .filter(|i| i.reference.as_deref() == Some(reference))
            .filter(|i| !matches!(i.status.as_deref(), Some(status::DELETED | status::VOIDED)))
            .collect())
    }

    /// Creates or updates the invoice. `customer` is the ledger's link of
    /// the invoice's customer, if any. `status_override` is the per-invoice
    /// choice of a manual send; background syncs pass `None` (the default
    /// from settings).
    // The port's request fields plus the manual-send override; a struct
    // would only mirror `UpsertInvoiceRequest`.
    #[allow(clippy::too_many_arguments)]
    pub async fn upsert(
        &self,
        connection_id: i64,
        settings: &XeroSettings,
        snapshot: &InvoiceSnapshot,
        existing: Option<&ExternalRef>,
        customer: Option<&ExternalRef>,
        mode: UpsertMode,
        idempotency_key: &str,
        status_override: Option<XeroInvoiceStatus>,
    ) -> Result<PushResult, ProviderError> {
        let options = self.options(connection_id).await?;
        let wanted = match status_override.unwrap_or(settings.default_status) {
            XeroInvoiceStatus::Draft => status::DRAFT,
            XeroInvoiceStatus::Authorised => status::AUTHORISED,
        };
        // No look by Reference for an unlinked invoice written for the
        // first time or sent as new: the job reserves one call fewer.
        if existing.is_none() && mode != UpsertMode::CreateOrUpdate {
            call_budget::spare(1);
        }
        let mut contact = self
            .invoice_contact(
                connection_id,
                &options,
                &snapshot.customer,
                customer,
                idempotency_key,
            )
            .await?;
        // Built before any lookup, so an unmappable invoice costs no call.
        let invoice = build_invoice(snapshot, &options, &contact.external_id)?;

        // Which Xero invoice this is, if any: the link, or (unless sending
        // as new) one an earlier attempt created but never heard back about.
        let target = match (existing, mode) {
            (Some(link), _) => Some(link.external_id.clone()),
            (None, UpsertMode::ForceNew | UpsertMode::FirstWrite) => None,
            (None, UpsertMode::CreateOrUpdate) => self
                .find_invoices_by_reference(connection_id, &snapshot.number)
                .await?
                .pop()
                .and_then(|i| i.invoice_id),
        };
        // Xero refuses any edit of an invoice that has a payment, even one
        // that changes nothing. So when the host's snapshot carries
        // payments, look first: an invoice Xero already holds with these
        // amounts needs no write, and the payments can follow it.
        let settled = match &target {
            Some(id) if !snapshot.payments.is_empty() => {
                let current = self.get_invoice(connection_id, id).await?;
                paid_and_unchanged(&current, snapshot)?.then_some(current)
            }
            _ => None,
        };
        if let Some(current) = settled {
            let write = if existing.is_some() {
                WriteKind::UpdatedInPlace
            } else {
                WriteKind::Created
            };
            return self.pushed(write, current, snapshot, &options, contact);
        }
        let write = InvoiceWrite {
            connection_id,
            snapshot,
            invoice: &invoice,
            target: target.as_deref(),
            linked_before: existing.is_some(),
            wanted,
        };
        // Xero refuses an invoice whose contact a person archived, merged
        // or removed, whether the contact came from the ledger's link or a
        // lookup made a moment ago. Only then is the refusal about the
        // contact: the invoice goes to the contact that stands for the
        // customer now, and the ledger links that one instead.
        // A send-as-new's first write keeps one key whatever its contact:
        // it creates without looking by Reference, so only the key's
        // replay stops a retry after a lost answer from creating twice.
        let first_key = if mode == UpsertMode::ForceNew {
            operation_key(idempotency_key, "invoice-create")
        } else {
            invoice_write_key(idempotency_key, target.as_deref(), &contact)
        };
        let mut key = first_key;
        let mut replaced = 0;
        let (kind, saved) = loop {
            match self.write_invoice(&write, &contact, &key).await {
                Err(refused @ ProviderError::Permanent { .. }) => {
                    let standing = self.contact_standing(connection_id, &contact).await?;
                    if standing == ContactStanding::Active {
                        return Err(refused);
                    }
                    if replaced == MAX_CONTACT_REPLACEMENTS {
                        // Archived again and again within moments: try the
                        // whole sync again later rather than fail it for good.
                        return Err(ProviderError::retryable(format!(
                            "the Xero contact of customer {} was archived while invoice {} was being sent to it; the sync tries again",
                            snapshot.customer.name, snapshot.number
                        )));
                    }
                    replaced += 1;
                    let now = self
                        .replacement_contact(connection_id, standing, &snapshot.customer)
                        .await?;
                    tracing::info!(connection_id, invoice = %snapshot.number,
                        old_contact = %contact.external_id, contact = %now.external_id,
                        "Xero refused the invoice's archived contact; sent to its replacement");
                    contact = now;
                    key = invoice_write_key(idempotency_key, target.as_deref(), &contact);
                }
                other => break other?,
            }
        };
        self.pushed(kind, saved, snapshot, &options, contact)
    }

    /// The outcome of an upsert: the saved invoice, and the contact the
    /// ledger links to the customer (none with a generic contact, which is
    /// no customer's own).
    fn pushed(
        &self,
        write: WriteKind,
        saved: wire::Invoice,
        snapshot: &InvoiceSnapshot,
        options: &XeroOptions,
        contact: ExternalRef,
    ) -> Result<PushResult, ProviderError> {
        let mut result = push_result(write, &saved, snapshot)?;
        result.customer = options.generic_contact_name.is_none().then_some(contact);
        Ok(result)
    }

    /// Writes the invoice to `contact` under idempotency key `key`: an
    /// update of `target`, or a create.
    async fn write_invoice(
        &self,
        w: &InvoiceWrite<'_>,
        contact: &ExternalRef,
        key: &str,
    ) -> Result<(WriteKind, wire::Invoice), ProviderError> {
        let mut invoice = w.invoice.clone();
        invoice.contact = Some(contact_of(&contact.external_id));
        let (write, env) = match w.target {
            Some(id) => {
                // Only ever move forward: Draft → Authorised. A Draft wish
                // leaves an Authorised invoice's status alone (Xero refuses
                // Authorised → Draft).
                invoice.status = (w.wanted == status::AUTHORISED).then(|| w.wanted.to_string());
                let body = Envelope {
                    invoices: Some(vec![invoice]),
                    ..Envelope::default()
                };
                let path = format!("Invoices/{id}");
                let env = self
                    .call(
                        w.connection_id,
                        &ApiCall::write(Method::POST, path, &body, key.to_string()),
                    )
                    .await?;
                let write = if w.linked_before {
                    WriteKind::UpdatedInPlace
                } else {
                    tracing::info!(connection_id = w.connection_id, invoice = %w.snapshot.number,
                        "adopted a Xero invoice found by its reference (an earlier answer was lost)");
                    WriteKind::Created
                };
                (write, env)
            }
            None => {
                invoice.status = Some(w.wanted.to_string());
                let body = Envelope {
                    invoices: Some(vec![invoice]),
                    ..Envelope::default()
                };
                let mut call = ApiCall::write(Method::PUT, "Invoices", &body, key.to_string());
                call.query.push(("unitdp", "4".into()));
                (WriteKind::Created, self.call(w.connection_id, &call).await?)
            }
        };
        Ok((write, first(env.invoices, "invoice")?))
    }

    /// Draft/Submitted → DELETED; Authorised without payments → VOIDED;
    /// with payments → refused with the reason. Gone already → AlreadyVoided.
    pub async fn void(
        &self,
        connection_id: i64,
        snapshot: &InvoiceSnapshot,
        existing: &ExternalRef,
        idempotency_key: &str,
    ) -> Result<PushResult, ProviderError> {
        let current = match self.get_invoice(connection_id, &existing.external_id).await {
            Ok(i) => i,
            Err(ProviderError::NotFound { .. }) => {
                return Ok(already_gone(existing, snapshot, "not found"));
            }
            Err(e) => return Err(e),
        };
        let now_status = current.status.clone().unwrap_or_default();
        let paid = current
            .amount_paid
            .as_ref()
            .map(|a| a.to_scaled(snapshot.currency.exponent()))
            .transpose()
            .map_err(|e| decode_error(e.to_string(), ""))?
            .unwrap_or(0);
        let target = match now_status.as_str() {
            status::DELETED | status::VOIDED => {
                return Ok(already_gone(existing, snapshot, &now_status));
            }
            status::DRAFT | status::SUBMITTED => status::DELETED,
            status::AUTHORISED if paid == 0 && current.payments.is_empty() => status::VOIDED,
            _ => {
                return Err(ProviderError::permanent(
                    format!(
                        "Xero invoice {} has payments ({} paid), so it cannot be voided: remove the payments in Xero first, then retry",
                        current
                            .invoice_number
                            .as_deref()
                            .unwrap_or(&existing.external_id),
                        Money::new(paid, snapshot.currency)
                    ),
                    None,
                ));
            }
        };
        let body = Envelope {
            invoices: Some(vec![wire::Invoice {
                invoice_id: Some(existing.external_id.clone()),
                status: Some(target.to_string()),
                ..wire::Invoice::default()
            }]),
            ..Envelope::default()
        };
        let key = operation_key(idempotency_key, &format!("void-{}", existing.external_id));
        let path = format!("Invoices/{}", existing.external_id);
        let env = self
            .call(
                connection_id,
                &ApiCall::write(Method::POST, path, &body, key),
            )
            .await?;
        let saved = first(env.invoices, "invoice")?;
        push_result(WriteKind::Voided, &saved, snapshot)
    }

    /// For an invoice with no link: voids (or deletes) the Xero invoice an
    /// earlier create whose answer was lost made, found by its Reference.
    pub async fn void_unlinked(
        &self,
        connection_id: i64,
        snapshot: &InvoiceSnapshot,
        idempotency_key: &str,
    ) -> Result<Option<PushResult>, ProviderError> {
        let found = self
            .find_invoices_by_reference(connection_id, &snapshot.number)
            .await?;
        let mut voided = None;
        for invoice in found {
            let Some(id) = invoice.invoice_id else {
                continue;
            };
            let existing = ExternalRef {
                url: Some(invoice_url(&id)),
                external_id: id,
                external_number: invoice.invoice_number,
            };
            voided = Some(
                self.void(connection_id, snapshot, &existing, idempotency_key)
                    .await?,
            );
        }
        Ok(voided)
    }

    /// Applies a payment to an Authorised invoice; on a Draft (or any other
    /// status that cannot take payments) nothing is written and the reason
    /// is returned.
    pub async fn push_payment_outcome(
        &self,
        connection_id: i64,
        snapshot: &InvoiceSnapshot,
        invoice: &ExternalRef,
        payment: &Payment,
        existing: Option<&ExternalRef>,
        // The sync event's key: payments key on themselves instead (below).
        _event_key: &str,
    ) -> Result<PaymentOutcome, ProviderError> {
        if let Some(done) = existing {
            return Ok(PaymentOutcome::Applied(done.clone()));
        }
        if payment.currency.is_some_and(|c| c != snapshot.currency) {
            return Err(ProviderError::permanent(
                format!(
                    "payment {} is not in the invoice currency {}",
                    payment.payment_id, snapshot.currency
                ),
                None,
            ));
        }
        let current = self
            .get_invoice(connection_id, &invoice.external_id)
            .await?;
        let st = current.status.clone().unwrap_or_default();
        // A paid invoice may be paid by this very payment, applied by an
        // earlier attempt whose answer was lost: sending it again with its
        // key gets Xero's replay of that answer (the payment to link);
        // anything else is refused, and the payment is skipped.
        let maybe_ours = st == status::PAID && !current.payments.is_empty();
        if st != status::AUTHORISED && !maybe_ours {
            let reason = match st.as_str() {
                status::DRAFT | status::SUBMITTED => format!(
                    "the Xero invoice is {} and Xero only takes payments on Authorised invoices: authorise it (or send it as Authorised) and the payment will sync",
                    st.to_ascii_lowercase()
                ),
                status::PAID => "the Xero invoice is already fully paid".to_string(),
                other => format!(
                    "the Xero invoice is {} and cannot take payments",
                    other.to_ascii_lowercase()
                ),
            };
            return Ok(PaymentOutcome::Skipped { reason });
        }
        let options = self.options(connection_id).await?;
        let exp = snapshot.currency.exponent();
        let body = Envelope {
            payments: Some(vec![wire::Payment {
                invoice: Some(wire::InvoiceRef {
                    invoice_id: Some(invoice.external_id.clone()),
                    invoice_number: None,
                }),
                account: Some(wire::AccountRef {
                    code: Some(options.payment_account_code.clone()),
                    account_id: None,
                }),
                date: Some(payment.paid_at.format("%Y-%m-%d").to_string()),
                amount: Some(Decimal::from_scaled(payment.amount_minor, exp)),
                reference: Some(
                    payment
                        .reference
                        .clone()
                        .unwrap_or_else(|| format!("ledgerflow {}", payment.payment_id)),
                ),
                ..wire::Payment::default()
            }]),
            ..Envelope::default()
        };
        // The key names the host's payment on this Xero invoice, not the
        // sync event: whichever later event retries a payment whose answer
        // was lost gets Xero's replay instead of a second payment.
        let key = operation_key(
            &format!("ledgerflow-{connection_id}-{}", invoice.external_id),
            &format!("payment-{}", payment.payment_id),
        );
        let env = match self
            .call(
                connection_id,
                &ApiCall::write(Method::PUT, "Payments", &body, key),
            )
            .await
        {
            Ok(env) => env,
            Err(ProviderError::Permanent { .. }) if maybe_ours => {
                return Ok(PaymentOutcome::Skipped {
                    reason: "the Xero invoice is already fully paid".to_string(),
                });
            }
            Err(e) => return Err(e),
        };
        let p = first(env.payments, "payment")?;
        let id = p
            .payment_id
            .ok_or_else(|| decode_error("payment without PaymentID".into(), ""))?;
        Ok(PaymentOutcome::Applied(ExternalRef {
            external_id: id,
            external_number: None,
            url: None,
        }))
    }

    /// Reverses a payment (Xero payments cannot be edited, only deleted).
    pub async fn reverse_payment(
        &self,
        connection_id: i64,
        payment: &ExternalRef,
        idempotency_key: &str,
    ) -> Result<(), ProviderError> {
        let body = Envelope {
            payments: Some(vec![wire::Payment {
                status: Some("DELETED".into()),
                ..wire::Payment::default()
            }]),
            ..Envelope::default()
        };
        let key = operation_key(idempotency_key, &format!("reverse-{}", payment.external_id));
        let path = format!("Payments/{}", payment.external_id);
        match self
            .call(
                connection_id,
                &ApiCall::write(Method::POST, path, &body, key),
            )
            .await
        {
            Ok(_) | Err(ProviderError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The keys a contact is looked up by.
#[derive(Debug, Clone, Copy)]
enum ContactKey {
    /// Our contact number (the host's customer id).
    Number,
    /// The exact name.
    Name,
}

impl ContactKey {
    fn as_str(self) -> &'static str {
        match self {
            ContactKey::Number => "ContactNumber",
            ContactKey::Name => "Name",
        }
    }

    fn of(self, c: &wire::Contact) -> Option<&str> {
        match self {
            ContactKey::Number => c.contact_number.as_deref(),
            ContactKey::Name => c.name.as_deref(),
        }
    }
}

fn escape_where(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Our contact number for a host customer: Xero allows 50 characters.
fn contact_number(customer_id: &str) -> String {
    customer_id.chars().take(50).collect()
}

fn first<T>(list: Option<Vec<T>>, what: &str) -> Result<T, ProviderError> {
    list.and_then(|l| l.into_iter().next())
        .ok_or_else(|| decode_error(format!("the answer holds no {what}"), ""))
}

/// The idempotency key of an invoice write (`target`: the invoice updated;
/// `None`: a create). It names the contact: Xero replays a refusal under
/// the key it was given, so a write sent to the contact that replaced an
/// archived one must not reuse the key the refused write had. A create
/// under a new key cannot make the invoice twice: apart from a send-as-new
/// (which keeps one key), only a first write creates without looking the
/// invoice up by Reference first.
fn invoice_write_key(idempotency_key: &str, target: Option<&str>, contact: &ExternalRef) -> String {
    let operation = match target {
        Some(id) => format!("invoice-update-{id}-{}", contact.external_id),
        None => format!("invoice-create-{}", contact.external_id),
    };
    operation_key(idempotency_key, &operation)
}

/// An invoice's contact, named by its ContactID.
fn contact_of(contact_id: &str) -> wire::Contact {
    wire::Contact {
        contact_id: Some(contact_id.to_string()),
        ..wire::Contact::default()
    }
}

fn contact_ref(c: wire::Contact) -> Result<ExternalRef, ProviderError> {
    Ok(ExternalRef {
        external_id: c
            .contact_id
            .ok_or_else(|| decode_error("contact without ContactID".into(), ""))?,
        external_number: c.contact_number,
        url: None,
    })
}

fn invoice_url(id: &str) -> String {
    format!("https://go.xero.com/AccountsReceivable/View.aspx?InvoiceID={id}")
}

fn already_gone(existing: &ExternalRef, snapshot: &InvoiceSnapshot, st: &str) -> PushResult {
    PushResult {
        write: WriteKind::AlreadyVoided,
        external: existing.clone(),
        line_count: 0,
        total: Money::zero(snapshot.currency),
        external_status: st.to_string(),
        customer: None,
        replaced: None,
        items: Vec::new(),
        settled_intents: Vec::new(),
    }
}

/// The Xero invoice for a snapshot. Lines carry the host's own tax amount
/// (Xero accepts a TaxAmount override) so tax and totals match the host's
/// to the cent; an invoice-level discount becomes a line of its own.
fn build_invoice(
    snapshot: &InvoiceSnapshot,
    options: &XeroOptions,
    contact_id: &str,
) -> Result<wire::Invoice, ProviderError> {
    let exp = snapshot.currency.exponent();
    let mut lines = Vec::with_capacity(snapshot.lines.len() + 1);
    for line in &snapshot.lines {
        let tax_type = match &line.tax_code {
            None => options.no_tax_type.clone(),
            Some(code) => options.tax_types.get(code).cloned().ok_or_else(|| {
                ProviderError::permanent(
                    format!(
                        "tax code {code:?} has no Xero tax type: map it in the Xero settings (check the tax rates in Xero)"
                    ),
                    None,
                )
            })?,
        };
        let discount = line
            .discount_minor()
            .map_err(|e| ProviderError::permanent(e.to_string(), None))?;
        lines.push(wire::LineItem {
            description: Some(line.description.clone()),
            quantity: Some(Decimal::from_scaled(line.quantity, 3)),
            unit_amount: Some(Decimal::from_scaled(line.unit_price_minor, exp)),
            item_code: None,
            account_code: Some(options.sales_account_code.clone()),
            tax_type: Some(tax_type),
            tax_amount: Some(Decimal::from_scaled(line.tax_minor, exp)),
            discount_amount: (discount != 0).then(|| Decimal::from_scaled(discount, exp)),
            ..wire::LineItem::default()
        });
    }
    if snapshot.totals.discount_total != 0 {
        lines.push(wire::LineItem {
            description: Some("Discount".into()),
            quantity: Some(Decimal::from_scaled(1, 0)),
            unit_amount: Some(Decimal::from_scaled(-snapshot.totals.discount_total, exp)),
            account_code: Some(options.sales_account_code.clone()),
            tax_type: Some(options.no_tax_type.clone()),
            tax_amount: Some(Decimal::from_scaled(0, exp)),
            ..wire::LineItem::default()
        });
    }
    Ok(wire::Invoice {
        kind: Some("ACCREC".into()),
        reference: Some(snapshot.number.clone()),
        contact: Some(contact_of(contact_id)),
        date: Some(snapshot.issued_on.format("%Y-%m-%d").to_string()),
        // Xero needs a due date to authorise; the issue date is the honest default.
        due_date: Some(
            snapshot
                .due_on
                .unwrap_or(snapshot.issued_on)
                .format("%Y-%m-%d")
                .to_string(),
        ),
        line_amount_types: Some("Exclusive".into()),
        line_items: Some(lines),
        currency_code: Some(snapshot.currency.code().to_string()),
        ..wire::Invoice::default()
    })
}

/// Whether Xero's invoice has payments and already equals the snapshot to
/// the cent (subtotal, tax, total, line count): then it needs no write.
fn paid_and_unchanged(
    current: &wire::Invoice,
    snapshot: &InvoiceSnapshot,
) -> Result<bool, ProviderError> {
    let exp = snapshot.currency.exponent();
    let cents = |d: &Option<Decimal>, what: &str| {
        d.as_ref()
            .map(|d| d.to_scaled(exp))
            .transpose()
            .map_err(|e| decode_error(format!("{what}: {e}"), ""))
    };
    let paid = cents(&current.amount_paid, "AmountPaid")?.unwrap_or(0);
    if paid == 0 && current.payments.is_empty() {
        return Ok(false);
    }
    let t = &snapshot.totals;
    let lines = snapshot.lines.len() + usize::from(t.discount_total != 0);
    Ok(
        cents(&current.sub_total, "SubTotal")? == Some(t.subtotal - t.discount_total)
            && cents(&current.total_tax, "TotalTax")? == Some(t.tax_total)
            && cents(&current.total, "Total")? == Some(t.total)
            && current.line_items.as_ref().map_or(0, Vec::len) == lines,
    )
}

/// The response summary, after proving Xero's total equals the host's.
fn push_result(
    write: WriteKind,
    saved: &wire::Invoice,
    snapshot: &InvoiceSnapshot,
) -> Result<PushResult, ProviderError> {
    let id = saved
        .invoice_id
        .clone()
        .ok_or_else(|| decode_error("invoice without InvoiceID".into(), ""))?;
    let exp = snapshot.currency.exponent();
    let total = match &saved.total {
        Some(t) => t
            .to_scaled(exp)
            .map_err(|e| decode_error(format!("Total: {e}"), ""))?,
        None => snapshot.totals.total,
    };
    if write != WriteKind::Voided && total != snapshot.totals.total {
        return Err(ProviderError::permanent(
            format!(
                "Xero computed a total of {} but the invoice's total is {}: check the tax types mapped for this invoice's tax codes",
                Money::new(total, snapshot.currency),
                Money::new(snapshot.totals.total, snapshot.currency)
            ),
            None,
        ));
    }
    Ok(PushResult {
        write,
        external: ExternalRef {
            url: Some(invoice_url(&id)),
            external_id: id,
            external_number: saved.invoice_number.clone(),
        },
        line_count: saved.line_items.as_ref().map_or(0, |l| l.len() as u32),
        total: Money::new(total, snapshot.currency),
        external_status: saved.status.clone().unwrap_or_default(),
        customer: None,
        replaced: None,
        items: Vec::new(),
        settled_intents: Vec::new(),
    })
}

fn xero_settings(
    connection: &ledgerflow_workflows::provider::ConnectionInfo,
) -> Result<XeroSettings, ProviderError> {
    match &connection.settings.provider {
        ProviderSettings::Xero(s) => Ok(s.clone()),
        other => Err(ProviderError::permanent(
            format!(
                "the connection has {} settings, not Xero settings",
                other.provider()
            ),
            None,
        )),
    }
}

impl Provider for XeroAdapter {
    fn upsert_invoice<'a>(
        &'a self,
        req: UpsertInvoiceRequest<'a>,
    ) -> ProviderFuture<'a, PushResult> {
        Box::pin(async move {
            let settings = xero_settings(req.connection)?;
            self.upsert(
                req.connection.id,
                &settings,
                req.snapshot,
                req.existing,
                req.customer,
                req.mode,
                req.idempotency_key,
                None,
            )
            .await
        })
    }

    fn void_order<'a>(&'a self, req: VoidOrderRequest<'a>) -> ProviderFuture<'a, PushResult> {
        Box::pin(async move {
            self.void(
                req.connection.id,
                req.snapshot,
                req.existing,
                req.idempotency_key,
            )
            .await
        })
    }

    fn void_unlinked<'a>(
        &'a self,
        req: VoidUnlinkedRequest<'a>,
    ) -> ProviderFuture<'a, Option<PushResult>> {
        Box::pin(async move {
            self.void_unlinked(req.connection.id, req.snapshot, req.idempotency_key)
                .await
        })
    }

    fn complete_draft<'a>(
        &'a self,
        _req: CompleteDraftRequest<'a>,
    ) -> ProviderFuture<'a, PushResult> {
        Box::pin(async move {
            Err(ProviderError::permanent(
                "Xero has no draft orders to complete: send the invoice as Authorised instead",
                None,
            ))
        })
    }

    /// For callers of the plain port method: a payment Xero cannot take
    /// (Draft invoice) fails permanently with the reason, prefixed
    /// "skipped:". The ledger calls [`Provider::apply_payment`], which
    /// answers it typed.
    fn push_payment<'a>(&'a self, req: PushPaymentRequest<'a>) -> ProviderFuture<'a, ExternalRef> {
        Box::pin(async move {
            match self.apply_payment(req).await? {
                PaymentOutcome::Applied(r)
                | PaymentOutcome::Reversed(r)
                | PaymentOutcome::AlreadyApplied(r) => Ok(r),
                PaymentOutcome::Skipped { reason } => {
                    Err(ProviderError::permanent(format!("skipped: {reason}"), None))
                }
            }
        })
    }

    fn apply_payment<'a>(
        &'a self,
        req: PushPaymentRequest<'a>,
    ) -> ProviderFuture<'a, PaymentOutcome> {
        Box::pin(async move {
            self.push_payment_outcome(
                req.connection.id,
                req.snapshot,
                req.invoice,
                req.payment,
                req.existing,
                req.idempotency_key,
            )
            .await
        })
    }

    fn sync_customer<'a>(
        &'a self,
        req: SyncCustomerRequest<'a>,
    ) -> ProviderFuture<'a, Option<ExternalRef>> {
        Box::pin(async move {
            // One generic contact takes every invoice: it is no customer's
            // own, and linking it would send the customer's invoices there
            // after the option is cleared.
            if self
                .options(req.connection.id)
                .await?
                .generic_contact_name
                .is_some()
            {
                return Ok(None);
            }
            if let Some(link) = req.existing {
                return Ok(Some(link.clone()));
            }
            self.find_or_create_contact(req.connection.id, req.customer, req.idempotency_key)
                .await
                .map(Some)
        })
    }

    fn reverse_payment<'a>(&'a self, req: ReversePaymentRequest<'a>) -> ProviderFuture<'a, ()> {
        Box::pin(async move {
            XeroAdapter::reverse_payment(self, req.connection.id, req.payment, req.idempotency_key)
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_keys_stay_within_xero_limit_and_distinct() {
        assert_eq!(
            operation_key("ledgerflow-1-2", "contact"),
            "ledgerflow-1-2:contact"
        );
        let long = "x".repeat(200);
        let a = operation_key(&long, "invoice-create");
        let b = operation_key(&long, "contact");
        assert!(a.len() <= MAX_IDEMPOTENCY_KEY && b.len() <= MAX_IDEMPOTENCY_KEY);
        assert_ne!(a, b);
        assert_eq!(a, operation_key(&long, "invoice-create"));
    }

    #[test]
    fn where_values_are_escaped() {
        assert_eq!(escape_where(r#"A "B" \C"#), r#"A \"B\" \\C"#);
        assert_eq!(contact_number(&"9".repeat(80)).len(), 50);
    }
}
