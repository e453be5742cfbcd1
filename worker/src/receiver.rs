//! The steps every provider's webhook receiver takes, in the order that
//! keeps a forged or repeated delivery from leaving a trace:
//!
//! 1. the body, capped by the route's limit before the handler runs
//!    ([`Receiver::body`]; a refusal is logged, since it would otherwise
//!    leave none);
//! 2. the signature, checked against the raw bytes before anything is
//!    parsed or stored ([`Receiver::signed_body`] for the providers that
//!    sign with one key in one header; no match, 401);
//! 3. the delivery recorded by its id and its work enqueued in one
//!    transaction ([`Receiver::begin`], [`Recording`]): a repeat is
//!    recognised by its id and dropped, and a delivery is accepted whole
//!    or not at all;
//! 4. the answer ([`Receiver::answer`]): 200 once committed, 500 when the
//!    transaction failed (nothing stored; the provider sends it again).
//!
//! Each provider's file keeps only its quirks: which header signs, how it
//! verifies, what a delivery id is, what its body asks for (`webhooks::xero`,
//! `webhooks::shopify`, `saledock`, `quickbooks`, `lightspeed_x`); the
//! routes are `crate::webhooks`'. This module must not parse a provider's
//! body, call a provider, nor import the modules that use it.

use std::fmt::Display;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use ledgerflow_workflows::inbound::{self, matching};
use ledgerflow_workflows::ledger;
use ledgerflow_workflows::queue::EnqueueError;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

/// Why a delivery could not be recorded. Every kind is answered 500:
/// nothing was stored, and each provider sends a delivery again until it
/// is answered 2xx.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error(transparent)]
    Inbound(#[from] inbound::InboundError),
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
    #[error(transparent)]
    Matching(#[from] matching::MatchError),
    #[error(transparent)]
    Enqueue(#[from] EnqueueError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// One provider's receiver: `provider` is its label in the logs and in the
/// delivery record (`ledgerflow.webhook_deliveries`), `name` what people
/// call it.
#[derive(Debug, Clone, Copy)]
pub struct Receiver {
    pub provider: &'static str,
    pub name: &'static str,
}

impl Receiver {
    pub const fn new(provider: &'static str, name: &'static str) -> Receiver {
        Receiver { provider, name }
    }

    /// The body, or the refusal (too large, unreadable) as its status.
    pub fn body(&self, body: Result<Bytes, BytesRejection>) -> Result<Bytes, StatusCode> {
        body.map_err(|e| {
            tracing::warn!(provider = self.provider, status = e.status().as_u16(), error = %e.body_text(), "refused a webhook delivery");
            e.status()
        })
    }

    /// Steps 1 and 2 for a provider that signs the raw body in one header:
    /// the body, once the signature in `header` matches it (`verify` is
    /// the provider's check of the body and the header's value against
    /// `key`, what the provider signs with). No match (or no header): 401,
    /// logged, nothing stored.
    pub fn signed_body(
        &self,
        body: Result<Bytes, BytesRejection>,
        headers: &HeaderMap,
        header: &str,
        key: &str,
        verify: impl FnOnce(&[u8], Option<&str>) -> bool,
    ) -> Result<Bytes, StatusCode> {
        let body = self.body(body)?;
        let signature = headers.get(header).and_then(|v| v.to_str().ok());
        if verify(&body, signature) {
            return Ok(body);
        }
        // A provider's own checks (Xero's "intent to receive") send bad
        // signatures on purpose; a forged delivery looks the same.
        tracing::warn!(
            provider = self.provider,
            signed = signature.is_some(),
            bytes = body.len(),
            "refused a {} webhook: the {header} does not match the {key}",
            self.name
        );
        Err(StatusCode::UNAUTHORIZED)
    }

    /// Opens the transaction a delivery is recorded in.
    pub async fn begin(&self, pool: &PgPool) -> Result<Recording, ReceiveError> {
        Ok(Recording {
            receiver: *self,
            tx: pool.begin().await?,
        })
    }

    /// The answer to a delivery whose recording ended with `result`:
    /// `accepted` logs what it did.
    pub fn answer<T, E: Display>(
        &self,
        result: Result<T, E>,
        accepted: impl FnOnce(T),
    ) -> StatusCode {
        match result {
            Ok(done) => {
                accepted(done);
                StatusCode::OK
            }
            Err(e) => {
                tracing::error!(provider = self.provider, error = %e, "could not accept a {} webhook delivery", self.name);
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

/// A delivery being recorded: its id (or each of its events' ids) and the
/// jobs it enqueued, in one transaction, committed by [`Recording::commit`]
/// (dropped uncommitted: nothing stays).
pub struct Recording {
    receiver: Receiver,
    tx: Transaction<'static, Postgres>,
}

impl Recording {
    /// Records delivery `id`; false when it was recorded before (a repeat,
    /// logged): nothing more is to be done for it.
    pub async fn first_time(&mut self, id: &str) -> Result<bool, ReceiveError> {
        let first = inbound::record_delivery(&mut self.tx, self.receiver.provider, id).await?;
        if !first {
            tracing::info!(
                provider = self.receiver.provider,
                delivery = id,
                "repeated {} webhook delivery ignored",
                self.receiver.name
            );
        }
        Ok(first)
    }

    /// The transaction, for the delivery's own reads and enqueues.
    pub fn tx(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// The active connections to the provider's account `external_tenant`
    /// (a Xero organisation, a QuickBooks realm, an X-Series retailer).
    pub async fn connections(
        &mut self,
        external_tenant: &str,
    ) -> Result<Vec<inbound::InboundConnection>, ReceiveError> {
        Ok(inbound::connections_for_external_tenant(
            &mut self.tx,
            self.receiver.provider,
            external_tenant,
        )
        .await?)
    }

    /// Notes the jobs delivery `id` enqueued.
    pub async fn note_jobs(&mut self, id: &str, jobs: &[i64]) -> Result<(), ReceiveError> {
        inbound::note_delivery_jobs(&mut self.tx, self.receiver.provider, id, jobs).await?;
        Ok(())
    }

    pub async fn commit(self) -> Result<(), ReceiveError> {
        self.tx.commit().await?;
        Ok(())
    }
}
