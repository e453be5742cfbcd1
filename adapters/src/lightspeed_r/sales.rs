//! Lightspeed R-Series sales: the host's invoice as a sale.
//!
//! - **Lines** by the item's custom SKU ([`super::items`]); quantities,
//!   unit prices, line discounts and the host's tax go as the host has
//!   them, and an invoice-level discount as a miscellaneous line of its
//!   own, so the sale's `calcTotal` equals the host's total to the cent
//!   (checked on every write).
//! - **Layaway** (the connection's "Enable layaway sales"): every line is
//!   flagged `isLayaway` and the invoice's payments go on the sale as
//!   deposits, each once: a payment is matched to the sale's payments by
//!   its `referenceNumber` (the host's payment id), so an update adds only
//!   the new ones. Off: a regular incomplete sale, no payments.
//! - **Updates in place**: `PUT /Sale/{id}.json` with the newest lines
//!   (lines not sent are removed, as modelled; the fact sheet marks the
//!   update call uncertain) and only the new deposits.
//! - **No idempotency key**: our reference goes on the sale
//!   (`referenceNumber`, `referenceNumberSource`) and an unlinked invoice's
//!   sale is looked up by it before one is created, so a create whose
//!   answer was lost is adopted ([`crate::kit::idempotency::adopt_or_create`]).
//!   "Send as new" uses a reference of its own (the invoice number and a
//!   hash of the sync event), found again the same way.
//! - **Void** on cancel or reject: an open sale is voided; a completed one
//!   cannot be and is archived (`DELETE`); one already voided, archived or
//!   gone answers "already voided".

use std::collections::HashSet;

use ledgerflow_workflows::invoice::InvoiceSnapshot;
use ledgerflow_workflows::money::Money;
use ledgerflow_workflows::provider::{
    ExternalRef, ItemLink, ProviderError, PushResult, UpsertMode, WriteKind,
};
use ledgerflow_workflows::settings::LightspeedRSettings;
use reqwest::Method;

use super::LightspeedRAdapter;
use super::api::{READ, WRITE};
use super::config::LightspeedROptions;
use super::items::MISC_ITEM;
use super::wire::{OneOrMany, Sale, SaleEnvelope, SaleLine, SaleLines, SalePayment, SalePayments};
use crate::kit::call::Request;
use crate::kit::decimal::{Decimal, check_total};
use crate::kit::idempotency::{Adopted, adopt_or_create, short_hash};

const RELATIONS: &str = r#"["SaleLines","SalePayments"]"#;

/// The reference a sale for this invoice carries: the invoice number; for
/// "send as new", the number and a hash of the sync event (a lost answer
/// of that create is found by it, the earlier sale is not).
pub fn reference_for(
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

/// What one upsert writes.
pub(super) struct Upsert<'a> {
    pub connection_id: i64,
    pub settings: &'a LightspeedRSettings,
    pub snapshot: &'a InvoiceSnapshot,
    pub existing: Option<&'a ExternalRef>,
    pub customer: Option<&'a ExternalRef>,
    pub mode: UpsertMode,
    pub idempotency_key: &'a str,
}

fn money(minor: i64, exponent: u8) -> Decimal {
    Decimal::from_scaled(minor, exponent)
}

impl LightspeedRAdapter {
    pub(super) async fn upsert(&self, u: Upsert<'_>) -> Result<PushResult, ProviderError> {
        let snap = u.snapshot;
        let options: LightspeedROptions = self.caller.options(u.connection_id).await?;
        let customer = match u.customer {
            Some(c) => c.clone(),
            None => {
                self.find_or_create_customer(u.connection_id, &snap.customer)
                    .await?
            }
        };
        let (lines, items) = self.lines(u.connection_id, u.settings, snap).await?;
        let reference = reference_for(snap, u.mode, u.idempotency_key);
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
                        u.settings,
                        snap,
                        &customer,
                        lines,
                        &current,
                    )
                    .await?;
                (WriteKind::UpdatedInPlace, sale)
            }
            None => {
                let find = async {
                    if u.mode == UpsertMode::FirstWrite {
                        return Ok(None);
                    }
                    self.find_by_reference(u.connection_id, &options, &reference)
                        .await
                };
                let create_lines = lines.clone();
                let adopted = adopt_or_create(find, || {
                    self.create(
                        u.connection_id,
                        &options,
                        u.settings,
                        snap,
                        &customer,
                        create_lines,
                        &reference,
                    )
                })
                .await?;
                match adopted {
                    // A create whose answer was lost: made to match the
                    // newest snapshot (its deposits included, each once).
                    Adopted::Found(found) => {
                        let sale = self
                            .update(
                                u.connection_id,
                                &options,
                                u.settings,
                                snap,
                                &customer,
                                lines,
                                &found,
                            )
                            .await?;
                        (WriteKind::Created, sale)
                    }
                    Adopted::Created(sale) => (WriteKind::Created, sale),
                }
            }
        };
        self.result(write, snap, &sale, customer, items, u.settings)
    }

    fn result(
        &self,
        write: WriteKind,
        snap: &InvoiceSnapshot,
        sale: &Sale,
        customer: ExternalRef,
        items: Vec<ItemLink>,
        settings: &LightspeedRSettings,
    ) -> Result<PushResult, ProviderError> {
        let exponent = snap.currency.exponent();
        let theirs = sale
            .calc_total
            .as_ref()
            .ok_or_else(|| {
                ProviderError::retryable("Lightspeed answered a sale without its total")
            })?
            .to_scaled(exponent)
            .map_err(|e| {
                ProviderError::retryable(format!("Lightspeed's sale total is unreadable: {e}"))
            })?;
        check_total(
            "Lightspeed R-Series",
            theirs,
            snap.totals.total,
            snap.currency,
            "check the tax classes of the items on this invoice",
        )?;
        let sale_id = sale
            .sale_id
            .clone()
            .ok_or_else(|| ProviderError::retryable("Lightspeed answered a sale without its id"))?;
        Ok(PushResult {
            write,
            external: ExternalRef {
                external_id: sale_id,
                external_number: sale.ticket_number.clone(),
                url: None,
            },
            line_count: u32::try_from(snap.lines.len()).unwrap_or(u32::MAX),
            total: Money::new(theirs, snap.currency),
            external_status: status_of(sale, settings),
            customer: Some(customer),
            replaced: None,
            items,
            settled_intents: Vec::new(),
        })
    }

    /// The sale's lines for the snapshot, with the items they name.
    async fn lines(
        &self,
        connection_id: i64,
        settings: &LightspeedRSettings,
        snap: &InvoiceSnapshot,
    ) -> Result<(Vec<SaleLine>, Vec<ItemLink>), ProviderError> {
        let skus: Vec<(&str, &str)> = snap
            .lines
            .iter()
            .filter_map(|l| l.sku.as_deref().map(|s| (s, l.description.as_str())))
            .collect();
        let (ids, links) = self
            .items_for(connection_id, &skus, settings.create_missing_items)
            .await?;
        let exponent = snap.currency.exponent();
        let amount = |e: ledgerflow_workflows::money::MoneyError| {
            ProviderError::permanent(format!("the invoice's amounts do not add up: {e}"), None)
        };
        let mut lines = Vec::with_capacity(snap.lines.len() + 1);
        for l in &snap.lines {
            let item_id = l
                .sku
                .as_ref()
                .and_then(|s| ids.get(s).cloned())
                .unwrap_or_else(|| MISC_ITEM.to_string());
            let discount = l.discount_minor().map_err(amount)?;
            lines.push(SaleLine {
                sale_line_id: None,
                note: l.description.clone(),
                item_id,
                unit_quantity: Decimal::from_scaled(l.quantity, 3),
                unit_price: money(l.unit_price_minor, exponent),
                discount_amount: (discount != 0).then(|| money(discount, exponent)),
                calc_tax1: Some(money(l.tax_minor, exponent)),
                is_layaway: settings.layaway_sales,
            });
        }
        if snap.totals.discount_total != 0 {
            lines.push(SaleLine {
                sale_line_id: None,
                note: "Discount".into(),
                item_id: MISC_ITEM.into(),
                unit_quantity: Decimal::from_scaled(1, 0),
                unit_price: money(-snap.totals.discount_total, exponent),
                discount_amount: None,
                calc_tax1: Some(money(0, exponent)),
                is_layaway: settings.layaway_sales,
            });
        }
        Ok((lines, links))
    }

    /// The deposits not yet on the sale (by the host's payment id).
    fn new_payments(
        options: &LightspeedROptions,
        settings: &LightspeedRSettings,
        snap: &InvoiceSnapshot,
        on_sale: &[SalePayment],
    ) -> Vec<SalePayment> {
        if !settings.layaway_sales {
            return Vec::new();
        }
        let have: HashSet<&str> = on_sale
            .iter()
            .map(|p| p.reference_number.as_str())
            .collect();
        snap.payments
            .iter()
            .filter(|p| !have.contains(p.payment_id.as_str()))
            .map(|p| SalePayment {
                sale_payment_id: None,
                payment_type_id: options.deposit_payment_type_id.clone(),
                amount: money(p.amount_minor, snap.currency.exponent()),
                reference_number: p.payment_id.clone(),
            })
            .collect()
    }

    fn body(
        options: &LightspeedROptions,
        customer: &ExternalRef,
        reference: &str,
        lines: Vec<SaleLine>,
        payments: Vec<SalePayment>,
    ) -> Sale {
        Sale {
            completed: false,
            reference_number: reference.to_string(),
            reference_number_source: options.reference_source.clone(),
            customer_id: customer.external_id.clone(),
            employee_id: options.employee_id.clone(),
            register_id: options.register_id.clone(),
            shop_id: options.shop_id.clone(),
            sale_lines: Some(SaleLines {
                sale_line: OneOrMany(lines),
            }),
            sale_payments: Some(SalePayments {
                sale_payment: OneOrMany(payments),
            }),
            ..Sale::default()
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn create(
        &self,
        connection_id: i64,
        options: &LightspeedROptions,
        settings: &LightspeedRSettings,
        snap: &InvoiceSnapshot,
        customer: &ExternalRef,
        lines: Vec<SaleLine>,
        reference: &str,
    ) -> Result<Sale, ProviderError> {
        let payments = Self::new_payments(options, settings, snap, &[]);
        let body = Self::body(options, customer, reference, lines, payments);
        let req = Request::json(Method::POST, "Sale.json", &body)?
            .lane(WRITE)
            .query("load_relations", RELATIONS);
        let made: SaleEnvelope = self.caller.send_json(connection_id, &req).await?;
        Ok(made.sale)
    }

    #[allow(clippy::too_many_arguments)]
    async fn update(
        &self,
        connection_id: i64,
        options: &LightspeedROptions,
        settings: &LightspeedRSettings,
        snap: &InvoiceSnapshot,
        customer: &ExternalRef,
        lines: Vec<SaleLine>,
        current: &Sale,
    ) -> Result<Sale, ProviderError> {
        let id = current
            .sale_id
            .clone()
            .ok_or_else(|| ProviderError::retryable("Lightspeed answered a sale without its id"))?;
        if current.voided || current.archived {
            return Err(ProviderError::not_found(format!(
                "sale {id} was voided or archived in Lightspeed"
            )));
        }
        if current.completed {
            return Err(ProviderError::permanent(
                format!(
                    "sale {id} is completed in Lightspeed and can no longer be edited: use \"send as new\""
                ),
                None,
            ));
        }
        let payments = Self::new_payments(options, settings, snap, current.payments());
        let body = Self::body(
            options,
            customer,
            &current.reference_number,
            lines,
            payments,
        );
        let req = Request::json(Method::PUT, format!("Sale/{id}.json"), &body)?
            .lane(WRITE)
            .query("load_relations", RELATIONS);
        let made: SaleEnvelope = self.caller.send_json(connection_id, &req).await?;
        Ok(made.sale)
    }

    pub(super) async fn read_sale(
        &self,
        connection_id: i64,
        id: &str,
    ) -> Result<Sale, ProviderError> {
        let req = Request::get(format!("Sale/{id}.json"))
            .lane(READ)
            .query("load_relations", RELATIONS);
        let found: SaleEnvelope = self.caller.send_json(connection_id, &req).await?;
        Ok(found.sale)
    }

    /// Our open sale carrying `reference`, if there is one.
    pub(super) async fn find_by_reference(
        &self,
        connection_id: i64,
        options: &LightspeedROptions,
        reference: &str,
    ) -> Result<Option<Sale>, ProviderError> {
        let req = Request::get("Sale.json")
            .lane(READ)
            .query("referenceNumber", reference)
            .query("voided", "false")
            .query("archived", "false")
            .query("load_relations", RELATIONS);
        let found: Vec<Sale> = self.list(connection_id, req, "Sale", 10).await?;
        Ok(found.into_iter().find(|s| {
            s.reference_number == reference
                && s.reference_number_source == options.reference_source
                && !s.voided
                && !s.archived
        }))
    }

    /// For an invoice with no link: our open sale an unanswered create
    /// made, if any (the port's `void_unlinked` voids it through
    /// [`Self::void`], which reads only its id).
    pub(super) async fn unlinked_sale(
        &self,
        connection_id: i64,
        snap: &InvoiceSnapshot,
    ) -> Result<Vec<ExternalRef>, ProviderError> {
        let options: LightspeedROptions = self.caller.options(connection_id).await?;
        let found = self
            .find_by_reference(connection_id, &options, &snap.number)
            .await?;
        Ok(found
            .and_then(|s| s.sale_id)
            .map(sale_ref)
            .into_iter()
            .collect())
    }

    /// Voids the sale (archives a completed one); gone already is fine.
    pub(super) async fn void(
        &self,
        connection_id: i64,
        snap: &InvoiceSnapshot,
        id: &str,
    ) -> Result<PushResult, ProviderError> {
        let current = match self.read_sale(connection_id, id).await {
            Ok(s) => s,
            Err(ProviderError::NotFound { .. }) => return Ok(already(snap, id)),
            Err(e) => return Err(e),
        };
        if current.voided || current.archived {
            return Ok(already(snap, id));
        }
        let (req, status) = if current.completed {
            (
                Request::new(Method::DELETE, format!("Sale/{id}.json")).lane(WRITE),
                "archived",
            )
        } else {
            let body = serde_json::json!({"voided": true});
            (
                Request::json(Method::PUT, format!("Sale/{id}.json"), &body)?.lane(WRITE),
                "voided",
            )
        };
        match self.caller.send(connection_id, &req).await {
            Ok(_) => {}
            Err(f) if matches!(f.error, ProviderError::NotFound { .. }) => {
                return Ok(already(snap, id));
            }
            Err(f) => return Err(f.error),
        }
        Ok(PushResult {
            write: WriteKind::Voided,
            external: link(id),
            line_count: u32::try_from(current.lines().len()).unwrap_or(u32::MAX),
            total: Money::zero(snap.currency),
            external_status: status.into(),
            customer: None,
            replaced: None,
            items: Vec::new(),
            settled_intents: Vec::new(),
        })
    }
}

fn link(id: &str) -> ExternalRef {
    ExternalRef {
        external_id: id.to_string(),
        external_number: None,
        url: None,
    }
}

fn already(snap: &InvoiceSnapshot, id: &str) -> PushResult {
    PushResult {
        write: WriteKind::AlreadyVoided,
        external: link(id),
        line_count: 0,
        total: Money::zero(snap.currency),
        external_status: "voided".into(),
        customer: None,
        replaced: None,
        items: Vec::new(),
        settled_intents: Vec::new(),
    }
}

fn status_of(sale: &Sale, settings: &LightspeedRSettings) -> String {
    if sale.voided {
        "voided".into()
    } else if sale.completed {
        "completed".into()
    } else if settings.layaway_sales {
        "layaway".into()
    } else {
        "open".into()
    }
}

/// A sale the port voids by its id.
fn sale_ref(external_id: String) -> ExternalRef {
    ExternalRef {
        external_id,
        external_number: None,
        url: None,
    }
}
