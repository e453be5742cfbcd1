//! Lightspeed X-Series customers: found by e-mail address, then by name,
//! through the 2.0 search, or created. One lookup at a time per customer
//! in a process ([`crate::kit::customers::CustomerLookups`]).

use ledgerflow_workflows::invoice::Customer as HostCustomer;
use ledgerflow_workflows::provider::{ExternalRef, ProviderError};
use reqwest::Method;

use super::LightspeedXAdapter;
use super::wire::{Customer, Data};
use crate::kit::call::Request;
use crate::kit::customers::find_or_create;

fn customer_ref(c: &Customer) -> Option<ExternalRef> {
    c.id.as_ref().map(|id| ExternalRef {
        external_id: id.clone(),
        external_number: None,
        url: None,
    })
}

fn split_name(name: &str) -> (String, String) {
    let name = name.trim();
    match name.split_once(char::is_whitespace) {
        Some((f, l)) => (f.to_string(), l.trim().to_string()),
        None => (name.to_string(), String::new()),
    }
}

impl LightspeedXAdapter {
    pub async fn find_or_create_customer(
        &self,
        connection_id: i64,
        customer: &HostCustomer,
    ) -> Result<ExternalRef, ProviderError> {
        self.customers
            .find_or_create(connection_id, &customer.customer_id, || {
                find_or_create(
                    self.find_customer(connection_id, customer),
                    || self.create_customer(connection_id, customer),
                    |_| false,
                    |e| async move { Err(e) },
                )
            })
            .await
    }

    async fn search(
        &self,
        connection_id: i64,
        field: &'static str,
        value: &str,
    ) -> Result<Option<ExternalRef>, ProviderError> {
        let req = Request::get("2.0/search")
            .query("type", "customers")
            .query(field, value);
        let found: Data<Vec<Customer>> = self.caller.send_json(connection_id, &req).await?;
        Ok(found.data.first().and_then(customer_ref))
    }

    async fn find_customer(
        &self,
        connection_id: i64,
        customer: &HostCustomer,
    ) -> Result<Option<ExternalRef>, ProviderError> {
        if let Some(email) = customer
            .email
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
            && let Some(found) = self.search(connection_id, "email", email).await?
        {
            return Ok(Some(found));
        }
        self.search(connection_id, "name", customer.name.trim())
            .await
    }

    async fn create_customer(
        &self,
        connection_id: i64,
        customer: &HostCustomer,
    ) -> Result<ExternalRef, ProviderError> {
        let (first_name, last_name) = split_name(&customer.name);
        let body = Customer {
            id: None,
            first_name,
            last_name,
            email: customer.email.as_ref().map(|e| e.trim().to_string()),
        };
        let req = Request::json(Method::POST, "2.0/customers", &body)?;
        let made: Data<Customer> = self.caller.send_json(connection_id, &req).await?;
        customer_ref(&made.data).ok_or_else(|| {
            ProviderError::retryable("Lightspeed X-Series answered a customer create without an id")
        })
    }
}
