//! Shopify customers: found by e-mail address, else created, with the
//! kit's race adoption (another sync created them since our search) and
//! one lookup per customer at a time in a process. A customer without an
//! e-mail address is not made: there would be nothing to find them by.

use ledgerflow_workflows::invoice::Customer;
use ledgerflow_workflows::provider::{ExternalRef, ProviderError};
use reqwest::Method;
use serde_json::json;

use super::api::{Rest, decode_error};
use super::config::admin_url;
use super::wire::{CustomerEnvelope, CustomersEnvelope};
use super::{ShopifyAdapter, wire};
use crate::kit::customers::find_or_create;

impl ShopifyAdapter {
    /// Finds the customer by e-mail address, else creates them. `None`
    /// when the host has no e-mail address for them: without one there is
    /// nothing to find them by, and creating one per sync would multiply them.
    pub async fn find_or_create_customer(
        &self,
        connection_id: i64,
        customer: &Customer,
    ) -> Result<Option<ExternalRef>, ProviderError> {
        let Some(email) = customer
            .email
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
        else {
            return Ok(None);
        };
        // The syncs of one new customer's invoices share one search (and
        // one create) instead of racing to create them.
        self.customers
            .find_or_create(connection_id, &email.to_ascii_lowercase(), || {
                self.find_or_create_customer_now(connection_id, customer, email)
            })
            .await
            .map(Some)
    }

    pub(super) async fn find_or_create_customer_now(
        &self,
        connection_id: i64,
        customer: &Customer,
        email: &str,
    ) -> Result<ExternalRef, ProviderError> {
        let options = self.options(connection_id).await?;
        let create = || async {
            let (first, last) = match customer.name.trim().rsplit_once(' ') {
                Some((f, l)) => (f.trim().to_string(), l.trim().to_string()),
                None => (customer.name.trim().to_string(), String::new()),
            };
            let body = json!({"customer": wire::Customer {
                email: Some(email.to_string()),
                first_name: Some(first),
                last_name: (!last.is_empty()).then_some(last),
                phone: customer.phone.clone(),
                ..wire::Customer::default()
            }});
            // A lost answer here is harmless: the next attempt finds the
            // customer by e-mail before creating.
            let env: CustomerEnvelope = self
                .rest(
                    connection_id,
                    &Rest::send(Method::POST, "customers.json", &body),
                )
                .await?;
            Ok(env.customer)
        };
        let c = find_or_create(
            self.customer_by_email(connection_id, email),
            create,
            // Another sync (of another invoice of the same customer)
            // created them since our search: adopt theirs.
            |e| {
                matches!(e, ProviderError::Permanent { raw: Some(raw), .. }
                    if raw.contains("has already been taken"))
            },
            |_| async {
                self.customer_by_email(connection_id, email)
                    .await?
                    .ok_or_else(|| {
                        ProviderError::retryable(format!(
                            "Shopify says a customer with {email} exists but does not find them yet"
                        ))
                    })
            },
        )
        .await?;
        let id =
            c.id.ok_or_else(|| decode_error("a customer without id".into(), ""))?;
        Ok(ExternalRef {
            external_id: wire::gid("Customer", id),
            external_number: None,
            url: Some(admin_url(&options, "customers", id)),
        })
    }

    pub(super) async fn customer_by_email(
        &self,
        connection_id: i64,
        email: &str,
    ) -> Result<Option<wire::Customer>, ProviderError> {
        let mut search = Rest::get("customers/search.json");
        search.query.push(("query", format!("email:{email}")));
        let found: CustomersEnvelope = self.rest(connection_id, &search).await?;
        Ok(found.customers.into_iter().find(|c| {
            c.email
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(email))
        }))
    }
}
