//! Sales orders: the host's invoice as a Saledock sales order (our
//! reference, the customer inline, lines with SKU, description, quantity,
//! unit price, discount and tax, the payments inline), created, updated in
//! place, voided, read by id and by our reference.
//!
//! Effectively once: every write carries an idempotency key derived from
//! the sync event (the contract replays a repeated key's first answer),
//! and an unlinked invoice is first looked up by our reference, so a create
//! whose answer was lost is adopted, never made twice.

use chrono::SecondsFormat;
use ledgerflow_workflows::invoice::InvoiceSnapshot;
use ledgerflow_workflows::money::Money;
use ledgerflow_workflows::provider::{
    ExternalRef, ProviderError, PushResult, UpsertMode, VoidOrderRequest, VoidUnlinkedRequest,
    WriteKind,
};
use reqwest::Method;
use serde_json::Value;

use super::SaledockAdapter;
use super::api::{IDEMPOTENCY_KEY_MAX, decode_error, write};
use super::config::SaledockOptions;
use super::mapping::Mapping;
use super::wire::{self, QUANTITY_SCALE, SalesOrder, status};
use crate::kit::call::Request;
use crate::kit::decimal::{Decimal, check_total};
use crate::kit::idempotency::{adopt_or_create, operation_key};

/// Our reference for an invoice's order: the host's invoice id (unique in
/// the tenant, the same in every snapshot).
pub fn reference(snapshot: &InvoiceSnapshot) -> String {
    snapshot.invoice_id.clone()
}

/// The canonical order for a snapshot, amounts from the host's own figures.
pub fn order_from_snapshot(s: &InvoiceSnapshot) -> Result<SalesOrder, ProviderError> {
    let exp = s.currency.exponent();
    let money = |minor: i64| Decimal::from_scaled(minor, exp);
    let bad = |e: ledgerflow_workflows::money::MoneyError| {
        ProviderError::permanent(format!("the invoice's amounts cannot be sent: {e}"), None)
    };
    let mut lines = Vec::with_capacity(s.lines.len());
    for l in &s.lines {
        let discount = l.discount_minor().map_err(bad)?;
        lines.push(wire::Line {
            reference: l.line_id.clone(),
            sku: l.sku.clone(),
            description: l.description.clone(),
            quantity: Decimal::from_scaled(l.quantity, QUANTITY_SCALE),
            unit_price: money(l.unit_price_minor),
            discount: (discount != 0).then(|| money(discount)),
            tax: money(l.tax_minor),
            amount: None,
        });
    }
    Ok(SalesOrder {
        id: None,
        number: None,
        reference: reference(s),
        status: None,
        currency: s.currency.code().to_string(),
        issued_on: s.issued_on.to_string(),
        customer: wire::Customer {
            reference: s.customer.customer_id.clone(),
            name: s.customer.name.clone(),
            email: s.customer.email.clone(),
            phone: s.customer.phone.clone(),
        },
        lines,
        discount: (s.totals.discount_total != 0).then(|| money(s.totals.discount_total)),
        payments: s
            .payments
            .iter()
            .map(|p| wire::Payment {
                reference: p.payment_id.clone(),
                amount: money(p.amount_minor),
                paid_at: p.paid_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                method: p.method.clone(),
            })
            .collect(),
        subtotal: None,
        tax_total: None,
        total: None,
    })
}

/// Reads an order answer (vendor words) as the canonical order.
pub fn read_order(
    mapping: &Mapping,
    answer: &crate::kit::call::Answer,
) -> Result<SalesOrder, ProviderError> {
    let vendor: Value = answer.json()?;
    let canonical = mapping.order_in(vendor);
    let order: SalesOrder =
        serde_json::from_value(canonical).map_err(|e| decode_error(e, answer))?;
    if order.id.is_none() {
        return Err(decode_error("the sales order has no id", answer));
    }
    Ok(order)
}

impl SaledockAdapter {
    /// Sends a request whose answer is one sales order.
    async fn order_call(
        &self,
        connection_id: i64,
        mapping: &Mapping,
        req: &Request,
    ) -> Result<SalesOrder, ProviderError> {
        let answer = self.caller.send(connection_id, req).await?;
        read_order(mapping, &answer)
    }

    fn body(mapping: &Mapping, order: &SalesOrder) -> Result<Value, ProviderError> {
        let v = serde_json::to_value(order).map_err(|e| {
            ProviderError::permanent(format!("the sales order could not be written: {e}"), None)
        })?;
        Ok(mapping.order_out(v))
    }

    /// Reads a sales order by Saledock's id.
    pub async fn read_order(
        &self,
        connection_id: i64,
        id: &str,
    ) -> Result<SalesOrder, ProviderError> {
        let options = self.options(connection_id).await?;
        let m = &options.mapping;
        self.order_call(
            connection_id,
            m,
            &Request::get(Mapping::path(&m.paths.read, id)),
        )
        .await
    }

    /// The sales orders carrying our reference, oldest first.
    pub async fn orders_by_reference(
        &self,
        connection_id: i64,
        options: &SaledockOptions,
        reference: &str,
    ) -> Result<Vec<SalesOrder>, ProviderError> {
        let m = &options.mapping;
        let req = Request::get(m.paths.find.clone()).query_named(&m.paths.find_query, reference);
        let answer = self.caller.send(connection_id, &req).await?;
        let list: Value = answer.json()?;
        m.list_in(list)
            .into_iter()
            .map(|o| serde_json::from_value(o).map_err(|e| decode_error(e, &answer)))
            .filter(|o| !matches!(o, Ok(SalesOrder { reference: r, .. }) if r != reference))
            .collect()
    }

    /// The order an earlier attempt made for this reference, if any is
    /// still standing (not void): the newest.
    async fn find_standing(
        &self,
        connection_id: i64,
        options: &SaledockOptions,
        reference: &str,
    ) -> Result<Option<SalesOrder>, ProviderError> {
        Ok(self
            .orders_by_reference(connection_id, options, reference)
            .await?
            .into_iter()
            .rev()
            .find(|o| o.status.as_deref() != Some(status::VOID)))
    }

    pub(super) async fn upsert(
        &self,
        connection_id: i64,
        snapshot: &InvoiceSnapshot,
        existing: Option<&ExternalRef>,
        mode: UpsertMode,
        key: &str,
    ) -> Result<PushResult, ProviderError> {
        let options = self.options(connection_id).await?;
        let m = &options.mapping;
        let order = order_from_snapshot(snapshot)?;
        let body = Self::body(m, &order)?;
        let (written, kind) = match (existing, mode) {
            (Some(link), UpsertMode::CreateOrUpdate | UpsertMode::FirstWrite) => (
                self.update(connection_id, m, &link.external_id, &body, key)
                    .await?,
                WriteKind::UpdatedInPlace,
            ),
            (_, UpsertMode::ForceNew) | (None, UpsertMode::FirstWrite) => (
                self.create(connection_id, m, &body, key).await?,
                WriteKind::Created,
            ),
            (None, UpsertMode::CreateOrUpdate) => {
                let adopted = adopt_or_create(
                    self.find_standing(connection_id, &options, &order.reference),
                    || self.create(connection_id, m, &body, key),
                )
                .await?;
                let found = adopted.was_found();
                let order = adopted.into_inner();
                let order = match (found, order.status.as_deref(), order.id.clone()) {
                    // A lost create: it was made from an earlier snapshot.
                    (true, Some(status::OPEN), Some(id)) => {
                        tracing::info!(connection_id, order = %id, "adopted a Saledock sales order found by our reference");
                        self.update(connection_id, m, &id, &body, key).await?
                    }
                    _ => order,
                };
                (order, WriteKind::Created)
            }
        };
        push_result(snapshot, &options, written, kind)
    }

    async fn create(
        &self,
        connection_id: i64,
        m: &Mapping,
        body: &Value,
        key: &str,
    ) -> Result<SalesOrder, ProviderError> {
        let req = write(
            Method::POST,
            m.paths.create.clone(),
            body,
            &m.headers.idempotency_key,
            operation_key(key, "sales-order-create", IDEMPOTENCY_KEY_MAX),
        )?;
        self.order_call(connection_id, m, &req).await
    }

    async fn update(
        &self,
        connection_id: i64,
        m: &Mapping,
        id: &str,
        body: &Value,
        key: &str,
    ) -> Result<SalesOrder, ProviderError> {
        let method = Method::from_bytes(m.paths.update_method.as_bytes()).map_err(|_| {
            ProviderError::permanent("the mapping's paths.update_method is not a method", None)
        })?;
        let req = write(
            method,
            Mapping::path(&m.paths.update, id),
            body,
            &m.headers.idempotency_key,
            operation_key(
                key,
                &format!("sales-order-update:{id}"),
                IDEMPOTENCY_KEY_MAX,
            ),
        )?;
        self.order_call(connection_id, m, &req).await
    }

    /// Voids the linked order; one already gone (or void) is
    /// `AlreadyVoided`. A completed order is refused (it was sold).
    pub(super) async fn void(
        &self,
        req: VoidOrderRequest<'_>,
    ) -> Result<PushResult, ProviderError> {
        let (connection_id, snapshot, existing) = (req.connection.id, req.snapshot, req.existing);
        let key = req.idempotency_key;
        let options = self.options(connection_id).await?;
        let m = &options.mapping;
        let current = match self.read_order(connection_id, &existing.external_id).await {
            Ok(o) => o,
            Err(ProviderError::NotFound { .. }) => {
                return Ok(already_voided(snapshot, existing.clone()));
            }
            Err(e) => return Err(e),
        };
        if current.status.as_deref() == Some(status::VOID) {
            return push_result(snapshot, &options, current, WriteKind::AlreadyVoided);
        }
        let voided = self
            .void_order_id(connection_id, m, &existing.external_id, key)
            .await?;
        push_result(snapshot, &options, voided, WriteKind::Voided)
    }

    async fn void_order_id(
        &self,
        connection_id: i64,
        m: &Mapping,
        id: &str,
        key: &str,
    ) -> Result<SalesOrder, ProviderError> {
        let req = write(
            Method::POST,
            Mapping::path(&m.paths.void, id),
            &serde_json::json!({}),
            &m.headers.idempotency_key,
            operation_key(key, &format!("sales-order-void:{id}"), IDEMPOTENCY_KEY_MAX),
        )?;
        self.order_call(connection_id, m, &req).await
    }

    /// Voids the orders an unanswered create may have made for an invoice
    /// that was never linked; the last one voided, or `None`. Found open
    /// (by reference), each is voided straight away: no read first, as
    /// [`Self::void`] does for a linked order.
    pub(super) async fn void_open_orders(
        &self,
        req: VoidUnlinkedRequest<'_>,
    ) -> Result<Option<PushResult>, ProviderError> {
        let (connection_id, snapshot, key) = (req.connection.id, req.snapshot, req.idempotency_key);
        let options = self.options(connection_id).await?;
        let standing: Vec<SalesOrder> = self
            .orders_by_reference(connection_id, &options, &reference(snapshot))
            .await?
            .into_iter()
            .filter(|o| o.status.as_deref() == Some(status::OPEN))
            .collect();
        let mut last = None;
        for o in standing {
            let Some(id) = o.id.clone() else { continue };
            let voided = self
                .void_order_id(connection_id, &options.mapping, &id, key)
                .await?;
            last = Some(push_result(snapshot, &options, voided, WriteKind::Voided)?);
        }
        Ok(last)
    }
}

fn already_voided(snapshot: &InvoiceSnapshot, external: ExternalRef) -> PushResult {
    PushResult {
        write: WriteKind::AlreadyVoided,
        external,
        line_count: 0,
        total: snapshot.total(),
        external_status: status::VOID.into(),
        customer: None,
        replaced: None,
        items: Vec::new(),
        settled_intents: Vec::new(),
    }
}

/// The sync's summary of a written order; its total proven against the
/// host's to the cent (a void keeps the total it had).
fn push_result(
    snapshot: &InvoiceSnapshot,
    options: &SaledockOptions,
    order: SalesOrder,
    write: WriteKind,
) -> Result<PushResult, ProviderError> {
    let currency = snapshot.currency;
    let theirs = order
        .total
        .as_ref()
        .ok_or_else(|| ProviderError::retryable("Saledock's sales order answer has no total"))?
        .to_scaled(currency.exponent())
        .map_err(|e| ProviderError::retryable(format!("Saledock's total is unreadable: {e}")))?;
    if matches!(write, WriteKind::Created | WriteKind::UpdatedInPlace) {
        check_total(
            "Saledock",
            theirs,
            snapshot.totals.total,
            currency,
            "check the lines' tax and discounts",
        )?;
    }
    let status = order.status.clone().unwrap_or_default();
    Ok(PushResult {
        write,
        external: ExternalRef {
            external_id: order.id.unwrap_or_default(),
            external_number: order.number,
            url: None,
        },
        line_count: u32::try_from(order.lines.len()).unwrap_or(u32::MAX),
        total: Money::new(theirs, currency),
        // People read the vendor's word for it.
        external_status: options.mapping.vendor_status(&status),
        customer: None,
        replaced: None,
        items: Vec::new(),
        settled_intents: Vec::new(),
    })
}
