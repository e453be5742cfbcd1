//! Lightspeed X-Series register sales: the host's invoice as a sale.
//!
//! - **Status follows the invoice**: parked (`SAVED`) while open; on layby
//!   (`LAYBY`, carrying the partial payments) when the shop uses laybys;
//!   `CLOSED` with every payment once paid in full; `VOIDED` on cancel.
//! - **Closed is final**: a closed sale can only be voided. An edit after
//!   close is refused with the reason (the dialog offers "send as new");
//!   a sync that would change nothing on the closed sale is answered from
//!   it without a write.
//! - **Payments** with the shop's payment types (the connection's
//!   mapping); a payment already on the sale is sent back with its id (kept,
//!   not added again), matched by the host's payment id in `reference`.
//! - **Lines** by product SKU ([`super::products`]), the host's unit price,
//!   line discount and tax, so the sale's total equals the host's to the
//!   cent (checked on every write).
//! - **No idempotency key**: `invoice_number` is the host's number, and an
//!   unlinked invoice's sale is searched for by it before one is created, so
//!   a create whose answer was lost is adopted. "Send as new" numbers its
//!   sale apart (the number and a hash of the sync event).

use std::collections::HashMap;

use ledgerflow_workflows::invoice::InvoiceSnapshot;
use ledgerflow_workflows::money::Money;
use ledgerflow_workflows::provider::{
    ExternalRef, ItemLink, ProviderError, PushResult, UpsertMode, WriteKind,
};
use reqwest::Method;

use super::LightspeedXAdapter;
use super::config::LightspeedXOptions;
use super::wire::{Data, RegisterSale, RegisterSaleEnvelope, SalePayment, SaleProduct, status};
use crate::kit::call::Request;
use crate::kit::decimal::{Decimal, check_total};
use crate::kit::idempotency::{Adopted, adopt_or_create, short_hash};

pub fn invoice_number_for(
    snapshot: &InvoiceSnapshot,
    mode: UpsertMode,
    idempotency_key: &str,
) -> String {
    match mode {
        UpsertMode::ForceNew => {
            format!("{}~{}", snapshot.number, &short_hash(idempotency_key)[..8])
        }
        _ => snapshot.number.clone(),
    }
}

/// The status the sale should have for this snapshot.
pub fn wanted_status(snap: &InvoiceSnapshot, options: &LightspeedXOptions) -> &'static str {
    if snap.is_paid_in_full() {
        status::CLOSED
    } else if !snap.payments.is_empty() && options.use_laybys {
        status::LAYBY
    } else {
        status::SAVED
    }
}

pub(super) struct Upsert<'a> {
    pub connection_id: i64,
    pub snapshot: &'a InvoiceSnapshot,
    pub existing: Option<&'a ExternalRef>,
    pub customer: Option<&'a ExternalRef>,
    pub mode: UpsertMode,
    pub idempotency_key: &'a str,
}

fn total_of(sale: &RegisterSale, exponent: u8) -> Result<i64, ProviderError> {
    let read = |d: &Option<Decimal>| -> Result<i64, ProviderError> {
        d.as_ref()
            .ok_or_else(|| {
                ProviderError::retryable("Lightspeed X-Series answered a sale without its totals")
            })?
            .to_scaled(exponent)
            .map_err(|e| {
                ProviderError::retryable(format!(
                    "Lightspeed X-Series' sale total is unreadable: {e}"
                ))
            })
    };
    Ok(read(&sale.total_price)? + read(&sale.total_tax)?)
}

impl LightspeedXAdapter {
    pub(super) async fn upsert(&self, u: Upsert<'_>) -> Result<PushResult, ProviderError> {
        let snap = u.snapshot;
        let options: LightspeedXOptions = self.caller.options(u.connection_id).await?;
        let customer = match u.customer {
            Some(c) => c.clone(),
            None => {
                self.find_or_create_customer(u.connection_id, &snap.customer)
                    .await?
            }
        };
        let (products, items) = self.products(u.connection_id, &options, snap).await?;
        let number = invoice_number_for(snap, u.mode, u.idempotency_key);
        let linked = match (u.existing, u.mode) {
            (Some(link), UpsertMode::CreateOrUpdate | UpsertMode::FirstWrite) => {
                Some(self.read_sale(u.connection_id, &link.external_id).await?)
            }
            _ => None,
        };
        let (write, sale) = match linked {
            Some(current) => {
                let sale = self
                    .update(
                        u.connection_id,
                        &options,
                        snap,
                        &customer,
                        products,
                        current,
                    )
                    .await?;
                (WriteKind::UpdatedInPlace, sale)
            }
            None => {
                let find = async {
                    if u.mode == UpsertMode::FirstWrite {
                        return Ok(None);
                    }
                    self.find_by_number(u.connection_id, &number).await
                };
                let body = self.body(
                    &options,
                    snap,
                    &customer,
                    products.clone(),
                    &number,
                    None,
                    &[],
                );
                let adopted = adopt_or_create(find, || self.write(u.connection_id, body)).await?;
                match adopted {
                    Adopted::Found(found) => {
                        let sale = self
                            .update(u.connection_id, &options, snap, &customer, products, found)
                            .await?;
                        (WriteKind::Created, sale)
                    }
                    Adopted::Created(sale) => (WriteKind::Created, sale),
                }
            }
        };
        self.result(write, snap, &sale, customer, items)
    }

    fn result(
        &self,
        write: WriteKind,
        snap: &InvoiceSnapshot,
        sale: &RegisterSale,
        customer: ExternalRef,
        items: Vec<ItemLink>,
    ) -> Result<PushResult, ProviderError> {
        let theirs = total_of(sale, snap.currency.exponent())?;
        check_total(
            "Lightspeed X-Series",
            theirs,
            snap.totals.total,
            snap.currency,
            "check the products and taxes on this invoice",
        )?;
        Ok(PushResult {
            write,
            external: ExternalRef {
                external_id: sale.id.clone().ok_or_else(|| {
                    ProviderError::retryable("Lightspeed X-Series answered a sale without its id")
                })?,
                external_number: Some(sale.invoice_number.clone()),
                url: None,
            },
            line_count: u32::try_from(snap.lines.len()).unwrap_or(u32::MAX),
            total: Money::new(theirs, snap.currency),
            external_status: sale.status.clone(),
            customer: Some(customer),
            replaced: None,
            items,
            settled_intents: Vec::new(),
        })
    }

    async fn products(
        &self,
        connection_id: i64,
        options: &LightspeedXOptions,
        snap: &InvoiceSnapshot,
    ) -> Result<(Vec<SaleProduct>, Vec<ItemLink>), ProviderError> {
        let exponent = snap.currency.exponent();
        let skus: Vec<(&str, &str, i64)> = snap
            .lines
            .iter()
            .filter_map(|l| {
                l.sku
                    .as_deref()
                    .map(|s| (s, l.description.as_str(), l.unit_price_minor))
            })
            .collect();
        let (ids, links) = self
            .products_for(connection_id, options, &skus, exponent)
            .await?;
        let misc = || {
            options.misc_product_id.clone().ok_or_else(|| {
                ProviderError::permanent(
                    "a line without a SKU (or an invoice discount) needs the connection's miscellaneous product (misc_product_id)",
                    None,
                )
            })
        };
        let money = |m: i64| Decimal::from_scaled(m, exponent);
        let mut lines = Vec::with_capacity(snap.lines.len() + 1);
        for l in &snap.lines {
            let product_id = match l.sku.as_ref().and_then(|s| ids.get(s)) {
                Some(id) => id.clone(),
                None => misc()?,
            };
            let discount = l.discount_minor().map_err(|e| {
                ProviderError::permanent(format!("the invoice's amounts do not add up: {e}"), None)
            })?;
            lines.push(SaleProduct {
                id: None,
                product_id,
                quantity: Decimal::from_scaled(l.quantity, 3),
                price: money(l.unit_price_minor),
                discount: (discount != 0).then(|| money(discount)),
                tax: money(l.tax_minor),
                tax_id: options.tax_id.clone(),
                note: l.description.clone(),
            });
        }
        if snap.totals.discount_total != 0 {
            lines.push(SaleProduct {
                id: None,
                product_id: misc()?,
                quantity: Decimal::from_scaled(1, 0),
                price: money(-snap.totals.discount_total),
                discount: None,
                tax: money(0),
                tax_id: options.tax_id.clone(),
                note: "Discount".into(),
            });
        }
        Ok((lines, links))
    }

    #[allow(clippy::too_many_arguments)]
    fn body(
        &self,
        options: &LightspeedXOptions,
        snap: &InvoiceSnapshot,
        customer: &ExternalRef,
        products: Vec<SaleProduct>,
        number: &str,
        id: Option<String>,
        on_sale: &[SalePayment],
    ) -> RegisterSale {
        let wanted = wanted_status(snap, options);
        let known: HashMap<&str, &str> = on_sale
            .iter()
            .filter_map(|p| p.id.as_deref().map(|id| (p.reference.as_str(), id)))
            .collect();
        let payments = if wanted == status::SAVED {
            Vec::new()
        } else {
            snap.payments
                .iter()
                .map(|p| SalePayment {
                    id: known.get(p.payment_id.as_str()).map(|s| s.to_string()),
                    retailer_payment_type_id: options.payment_type(p.method.as_deref()).to_string(),
                    payment_date: p.paid_at.to_rfc3339(),
                    amount: Decimal::from_scaled(p.amount_minor, snap.currency.exponent()),
                    reference: p.payment_id.clone(),
                })
                .collect()
        };
        RegisterSale {
            id,
            register_id: options.register_id.clone(),
            user_id: options.user_id.clone(),
            customer_id: customer.external_id.clone(),
            invoice_number: number.to_string(),
            status: wanted.to_string(),
            register_sale_products: products,
            register_sale_payments: payments,
            ..RegisterSale::default()
        }
    }

    async fn write(
        &self,
        connection_id: i64,
        body: RegisterSale,
    ) -> Result<RegisterSale, ProviderError> {
        let req = Request::json(Method::POST, "register_sales", &body)?;
        let made: RegisterSaleEnvelope = self.caller.send_json(connection_id, &req).await?;
        Ok(made.register_sale)
    }

    async fn update(
        &self,
        connection_id: i64,
        options: &LightspeedXOptions,
        snap: &InvoiceSnapshot,
        customer: &ExternalRef,
        products: Vec<SaleProduct>,
        current: RegisterSale,
    ) -> Result<RegisterSale, ProviderError> {
        let id = current.id.clone().unwrap_or_default();
        if current.status == status::VOIDED {
            return Err(ProviderError::not_found(format!(
                "sale {} was voided in Lightspeed X-Series",
                current.invoice_number
            )));
        }
        if status::is_closed(&current.status) {
            let unchanged = wanted_status(snap, options) == status::CLOSED
                && total_of(&current, snap.currency.exponent()).ok() == Some(snap.totals.total)
                && current.register_sale_payments.len() == snap.payments.len();
            if unchanged {
                return Ok(current);
            }
            return Err(ProviderError::permanent(
                format!(
                    "sale {} is closed in Lightspeed X-Series and can only be voided, not edited: use \"send as new\" to make a new sale for the changed invoice",
                    current.invoice_number
                ),
                None,
            ));
        }
        let body = self.body(
            options,
            snap,
            customer,
            products,
            &current.invoice_number,
            Some(id),
            &current.register_sale_payments,
        );
        self.write(connection_id, body).await
    }

    pub(super) async fn read_sale(
        &self,
        connection_id: i64,
        id: &str,
    ) -> Result<RegisterSale, ProviderError> {
        let found: Data<RegisterSale> = self
            .caller
            .send_json(connection_id, &Request::get(format!("2.0/sales/{id}")))
            .await?;
        Ok(found.data)
    }

    pub(super) async fn find_by_number(
        &self,
        connection_id: i64,
        number: &str,
    ) -> Result<Option<RegisterSale>, ProviderError> {
        let req = Request::get("2.0/search")
            .query("type", "sales")
            .query("invoice_number", number);
        let found: Data<Vec<RegisterSale>> = self.caller.send_json(connection_id, &req).await?;
        Ok(found
            .data
            .into_iter()
            .find(|s| s.invoice_number == number && s.status != status::VOIDED))
    }

    /// For an invoice with no link: the sale an unanswered create made,
    /// if any (the port's `void_unlinked` voids it through [`Self::void`],
    /// which reads only its id).
    pub(super) async fn unlinked_sale(
        &self,
        connection_id: i64,
        snap: &InvoiceSnapshot,
    ) -> Result<Vec<ExternalRef>, ProviderError> {
        let found = self.find_by_number(connection_id, &snap.number).await?;
        Ok(found
            .and_then(|s| s.id)
            .map(|external_id| ExternalRef {
                external_id,
                external_number: None,
                url: None,
            })
            .into_iter()
            .collect())
    }

    /// Voids the sale (closed ones too: the one change a closed sale takes).
    pub(super) async fn void(
        &self,
        connection_id: i64,
        snap: &InvoiceSnapshot,
        id: &str,
    ) -> Result<PushResult, ProviderError> {
        let already = || PushResult {
            write: WriteKind::AlreadyVoided,
            external: ExternalRef {
                external_id: id.to_string(),
                external_number: None,
                url: None,
            },
            line_count: 0,
            total: Money::zero(snap.currency),
            external_status: status::VOIDED.into(),
            customer: None,
            replaced: None,
            items: Vec::new(),
            settled_intents: Vec::new(),
        };
        let mut current = match self.read_sale(connection_id, id).await {
            Ok(s) => s,
            Err(ProviderError::NotFound { .. }) => return Ok(already()),
            Err(e) => return Err(e),
        };
        if current.status == status::VOIDED {
            return Ok(already());
        }
        current.status = status::VOIDED.into();
        current.total_price = None;
        current.total_tax = None;
        current.version = None;
        let lines = current.register_sale_products.len();
        let done = self.write(connection_id, current).await?;
        Ok(PushResult {
            write: WriteKind::Voided,
            external: ExternalRef {
                external_id: id.to_string(),
                external_number: Some(done.invoice_number),
                url: None,
            },
            line_count: u32::try_from(lines).unwrap_or(u32::MAX),
            total: Money::zero(snap.currency),
            external_status: done.status,
            customer: None,
            replaced: None,
            items: Vec::new(),
            settled_intents: Vec::new(),
        })
    }
}
