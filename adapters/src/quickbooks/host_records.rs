//! The host's customers and service items synced on their own (the
//! "customer changed" and "item changed" triggers): the port's
//! [`HostRecordSync`] capability for QuickBooks.
//!
//! - **Find or create**: a record without a link is looked up first, a
//!   customer by `DisplayName` (ours by the marker in `Notes`), an item by
//!   `Name` (the host's SKU, the name invoice lines find it by), and only
//!   created when none is there; a create whose answer was lost is found by
//!   that lookup on the retry and adopted, and one refused as a duplicate
//!   name (6240: another sync made it meanwhile) adopts the winner's.
//! - **Update** is read-modify-write: the entity read by id for its
//!   current `SyncToken` (list queries may hold stale ones), a sparse
//!   update only when a field differs, and a stale token (5010) read again
//!   and retried once. Each update's `requestid` names the token it was
//!   made against, so a retry after a lost answer replays it and a retry
//!   under a newer token does not.
//! - **Items**: QuickBooks' `Name` is the host's SKU (unique in
//!   QuickBooks, and what invoice lines name); the host's name leads the
//!   sales `Description` ("Bike fit — 45-minute fitting"), the price is
//!   `UnitPrice` at the currency's decimals, `Taxable` the host's flag.
//! - A customer's address goes as `BillAddr`.

use ledgerflow_workflows::host_data::{Address, HostCustomer, HostItem};
use ledgerflow_workflows::provider::{
    ExternalRef, HostCustomerRequest, HostItemRequest, HostRecordSync, ProviderError,
    ProviderFuture,
};

use super::QboAdapter;
use super::api::{self, request_id};
use super::config::QboOptions;
use super::customers::{customer_ref, display_names, fault_code};
use super::errors::codes;
use super::items::{ServiceItem, link};
use super::wire::{self, EmailAddr, EntityAnswer, Phone, PhysicalAddress};
use crate::kit::decimal::Decimal;

fn bill_addr(a: &Address) -> PhysicalAddress {
    PhysicalAddress {
        line1: a.line1.clone(),
        line2: a.line2.clone(),
        city: a.city.clone(),
        country_sub_division_code: a.region.clone(),
        postal_code: a.postal_code.clone(),
        country: a.country.clone(),
    }
}

/// The sales description of a host item: its name, then its description.
pub(super) fn item_description(item: &HostItem) -> String {
    let text = match item.description.as_deref().map(str::trim) {
        Some(d) if !d.is_empty() => format!("{} — {d}", item.name.trim()),
        _ => item.name.trim().to_string(),
    };
    // QuickBooks keeps 4,000 characters of a description.
    text.chars().take(4000).collect()
}

fn is_stale(e: &ProviderError) -> bool {
    fault_code(e).as_deref() == Some(codes::STALE_OBJECT)
}

fn is_not_found(e: &ProviderError) -> bool {
    fault_code(e).as_deref() == Some(codes::OBJECT_NOT_FOUND)
        || matches!(e, ProviderError::NotFound { .. })
}

/// The customer as the host wants it, over QuickBooks' `current`.
fn desired_customer(host: &HostCustomer, current: &wire::Customer) -> wire::Customer {
    let (plain, qualified) = display_names(&host.as_invoice_customer());
    wire::Customer {
        // A customer that took the qualified name (its plain name belongs
        // to another of ours) keeps it.
        display_name: if current.display_name == qualified {
            qualified
        } else {
            plain
        },
        primary_email_addr: host.email.clone().map(|address| EmailAddr { address }),
        primary_phone: host.phone.clone().map(|n| Phone {
            free_form_number: n,
        }),
        bill_addr: host.address.as_ref().map(bill_addr),
        ..wire::Customer::default()
    }
}

fn same_customer(a: &wire::Customer, b: &wire::Customer) -> bool {
    a.display_name == b.display_name
        && a.primary_email_addr == b.primary_email_addr
        && a.primary_phone == b.primary_phone
        && a.bill_addr == b.bill_addr
}

impl QboAdapter {
    async fn read_customer(
        &self,
        connection_id: i64,
        id: &str,
    ) -> Result<wire::Customer, ProviderError> {
        let answer: EntityAnswer = api::decode(
            &self
                .caller
                .send(connection_id, &api::get(format!("customer/{id}")))
                .await?,
        )?;
        answer
            .customer
            .ok_or_else(|| ProviderError::not_found(format!("QuickBooks has no customer {id}")))
    }

    async fn read_item(&self, connection_id: i64, id: &str) -> Result<wire::Item, ProviderError> {
        let answer: EntityAnswer = api::decode(
            &self
                .caller
                .send(connection_id, &api::get(format!("item/{id}")))
                .await?,
        )?;
        answer
            .item
            .ok_or_else(|| ProviderError::not_found(format!("QuickBooks has no item {id}")))
    }

    /// The host's customer found or created, then brought up to date.
    pub(super) async fn upsert_host_customer(
        &self,
        connection_id: i64,
        host: &HostCustomer,
        existing: Option<&ExternalRef>,
        key: &str,
    ) -> Result<ExternalRef, ProviderError> {
        let address = host.address.as_ref().map(bill_addr);
        let customer = host.as_invoice_customer();
        let mut id = match existing {
            Some(link) => link.external_id.clone(),
            None => {
                self.find_or_create_customer(connection_id, &customer, address.as_ref(), key)
                    .await?
                    .external_id
            }
        };
        let mut retried = false;
        loop {
            let current = match self.read_customer(connection_id, &id).await {
                Ok(c) => c,
                // The linked customer was deleted (merged) in QuickBooks:
                // find ours by name, or create it again.
                Err(e) if is_not_found(&e) && existing.is_some() && !retried => {
                    retried = true;
                    id = self
                        .find_or_create_customer(connection_id, &customer, address.as_ref(), key)
                        .await?
                        .external_id;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut want = desired_customer(host, &current);
            if same_customer(&want, &current) {
                return customer_ref(&current).ok_or_else(|| {
                    ProviderError::retryable("QuickBooks answered a customer without its Id")
                });
            }
            want.id = current.id.clone();
            want.sync_token = current.sync_token.clone();
            want.sparse = Some(true);
            let token = current.sync_token.as_deref().unwrap_or("0");
            let rid = request_id(key, &format!("customer-update-{token}"), None);
            match self
                .caller
                .send(connection_id, &api::write("customer", &want, rid)?)
                .await
            {
                Ok(answer) => {
                    let answer: EntityAnswer = api::decode(&answer)?;
                    return answer
                        .customer
                        .as_ref()
                        .and_then(customer_ref)
                        .ok_or_else(|| {
                            ProviderError::retryable(
                                "QuickBooks answered a customer update without the customer",
                            )
                        });
                }
                Err(f) if is_stale(&f.error) && !retried => retried = true,
                Err(f) => return Err(f.error),
            }
        }
    }

    /// The host's service item found (by SKU) or created, then brought up
    /// to date.
    pub(super) async fn upsert_host_item(
        &self,
        connection_id: i64,
        host: &HostItem,
        existing: Option<&ExternalRef>,
        key: &str,
    ) -> Result<ExternalRef, ProviderError> {
        let exponent = host.currency.exponent();
        let new = ServiceItem {
            sku: host.sku.clone(),
            description: Some(item_description(host)),
            price_minor: host.price_minor,
            exponent,
            taxable: host.taxable,
        };
        let mut id = match existing {
            Some(link) => link.external_id.clone(),
            None => self.item_id(connection_id, &new, key).await?,
        };
        let mut retried = false;
        loop {
            let current = match self.read_item(connection_id, &id).await {
                Ok(i) => i,
                Err(e) if is_not_found(&e) && existing.is_some() && !retried => {
                    retried = true;
                    id = self.item_id(connection_id, &new, key).await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let price = Decimal::from_scaled(host.price_minor, exponent);
            let unchanged = current.description == new.description
                && current
                    .unit_price
                    .as_ref()
                    .is_some_and(|p| p.to_scaled(exponent).ok() == Some(host.price_minor))
                && current.taxable == Some(host.taxable);
            if unchanged {
                return link(&host.sku, &current)
                    .map(|l| l.external)
                    .ok_or_else(|| {
                        ProviderError::retryable("QuickBooks answered an item without its Id")
                    });
            }
            let body = wire::Item {
                id: current.id.clone(),
                sync_token: current.sync_token.clone(),
                sparse: Some(true),
                name: current.name.clone(),
                description: new.description.clone(),
                unit_price: Some(price),
                taxable: Some(host.taxable),
                ..wire::Item::default()
            };
            let token = current.sync_token.as_deref().unwrap_or("0");
            let rid = request_id(key, &format!("item-update-{token}"), None);
            match self
                .caller
                .send(connection_id, &api::write("item", &body, rid)?)
                .await
            {
                Ok(answer) => {
                    let answer: EntityAnswer = api::decode(&answer)?;
                    return answer
                        .item
                        .as_ref()
                        .and_then(|i| link(&host.sku, i))
                        .map(|l| l.external)
                        .ok_or_else(|| {
                            ProviderError::retryable(
                                "QuickBooks answered an item update without the item",
                            )
                        });
                }
                Err(f) if is_stale(&f.error) && !retried => retried = true,
                Err(f) => return Err(f.error),
            }
        }
    }

    /// The id of the item named by the SKU, created when none is.
    async fn item_id(
        &self,
        connection_id: i64,
        item: &ServiceItem,
        key: &str,
    ) -> Result<String, ProviderError> {
        let options: QboOptions = self.caller.options(connection_id).await?;
        self.find_or_create_item(connection_id, &options, item, key)
            .await?
            .id
            .ok_or_else(|| ProviderError::retryable("QuickBooks answered an item without its Id"))
    }
}

impl HostRecordSync for QboAdapter {
    fn upsert_customer<'a>(
        &'a self,
        req: HostCustomerRequest<'a>,
    ) -> ProviderFuture<'a, ExternalRef> {
        Box::pin(async move {
            self.upsert_host_customer(
                req.connection.id,
                req.customer,
                req.existing,
                req.idempotency_key,
            )
            .await
        })
    }

    fn upsert_item<'a>(&'a self, req: HostItemRequest<'a>) -> ProviderFuture<'a, ExternalRef> {
        Box::pin(async move {
            self.upsert_host_item(
                req.connection.id,
                req.item,
                req.existing,
                req.idempotency_key,
            )
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerflow_workflows::money::Currency;

    fn host(name: &str) -> HostCustomer {
        HostCustomer {
            customer_id: "c-7".into(),
            name: name.into(),
            email: Some("jane@example.com".into()),
            phone: None,
            address: None,
        }
    }

    #[test]
    fn a_customer_keeps_the_qualified_name_it_took() {
        let qualified = wire::Customer {
            display_name: "Jane Doe (c-7)".into(),
            ..wire::Customer::default()
        };
        assert_eq!(
            desired_customer(&host("Jane Doe"), &qualified).display_name,
            "Jane Doe (c-7)"
        );
        // Renamed in the host: the plain new name.
        let plain = wire::Customer {
            display_name: "Jane Doe".into(),
            ..wire::Customer::default()
        };
        let want = desired_customer(&host("Jane Smith"), &plain);
        assert_eq!(want.display_name, "Jane Smith");
        assert!(!same_customer(&want, &plain));
    }

    #[test]
    fn an_items_description_leads_with_its_name() {
        let mut item = HostItem {
            sku: "SVC-FIT".into(),
            name: "Bike fit".into(),
            description: None,
            price_minor: 15_000,
            currency: Currency::parse("USD").unwrap(),
            taxable: true,
        };
        assert_eq!(item_description(&item), "Bike fit");
        item.description = Some(" 45-minute fitting ".into());
        assert_eq!(item_description(&item), "Bike fit — 45-minute fitting");
    }
}
