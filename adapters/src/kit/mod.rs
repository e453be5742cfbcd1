//! The adapter kit: what every provider adapter shares, written once, so a
//! provider folder holds only what makes that provider different (see
//! `adapters/TEMPLATE.md`).
//!
//! | module | owns |
//! |---|---|
//! | [`call`] | the call path: credentials → limiter grant with the inline wait → send → limit headers recorded → error classified → one refresh on 401 → reconnect needed. A provider implements [`call::Api`] and holds a [`call::Caller`]. |
//! | [`gate`] | limiter grants: rolling windows with a concurrency cap, leaky buckets, the inline wait, bucket arithmetic |
//! | [`observe`] | the process's observer of the call path (provider answers by status, limiter waits, token refreshes), installed by the worker for its metrics |
//! | [`oauth2`] | token refresh under the connection's row lock; rotating single-use refresh tokens never spent twice |
//! | [`idempotency`] | idempotency keys from the sync event, lost-answer adoption by our reference, write intents |
//! | [`customers`] | find-or-create a customer with race adoption; one lookup at a time per customer |
//! | [`errors`] | how the call path acts on a refusal ([`errors::Refusal`]); credential and database errors |
//! | [`http`] | the HTTP client, transport failures, Retry-After and header parsing, foreign (proxy) answers |
//! | [`decimal`] | exact money on the wire, and the total check |
//! | [`signature`] | webhook signatures: base64 HMAC-SHA256 of the raw body, checked in constant time |
//! | [`rest_errors`] | the error answers of a REST API whose statuses mean what HTTP says, classified once (a provider brings its body's message, its retry instant and its words) |
//! | [`consent`] | an OAuth app's caller, and registering what the end of a consent hands over |
//!
//! A provider in five lines (the full example is in [`call`]):
//!
//! ```ignore
//! struct QboApi { limits: QboLimits }              // quickbooks/api.rs
//! impl kit::call::Api for QboApi { /* gate, authorize, read_limits, classify */ }
//! let caller = Caller::new(QboApi { .. }, pool, key, CallSettings::default())?
//!     .with_oauth2(OAuth2Client::new("QuickBooks", id, secret).token_path("/oauth2/v1/tokens/bearer"));
//! let invoice: Envelope = caller.send_json(connection_id, &Request::get("invoice/42")).await?;
//! ```
//!
//! The kit must not know any provider's URLs, headers, bodies or status
//! meanings, and must not touch the queue or the ledger tables: its only
//! state is `ledgerflow_workflows::provider_state` (credentials, limits,
//! write intents).

pub mod call;
pub mod consent;
pub mod customers;
pub mod decimal;
pub mod errors;
pub mod gate;
pub mod http;
pub mod idempotency;
pub mod oauth2;
pub mod observe;
pub mod rest_errors;
pub mod signature;
