//! Lightspeed R-Series customers: the invoice's customer is found by
//! e-mail address, then by name, or created. Lightspeed does not refuse a
//! second customer of the same name or address, so there is no race to
//! adopt: one lookup at a time per customer in a process
//! ([`crate::kit::customers::CustomerLookups`]) keeps a burst of one
//! customer's invoices from creating them twice here.

use ledgerflow_workflows::invoice::Customer as HostCustomer;
use ledgerflow_workflows::provider::{ExternalRef, ProviderError};

use super::LightspeedRAdapter;
use super::api::{READ, WRITE};
use super::wire::{Contact, ContactEmail, Customer, CustomerEnvelope, Emails, OneOrMany};
use crate::kit::call::Request;
use crate::kit::customers::find_or_create;

/// "Jane van Doe" → ("Jane", "van Doe"); one word is a first name.
pub fn split_name(name: &str) -> (String, String) {
    let name = name.trim();
    match name.split_once(char::is_whitespace) {
        Some((first, last)) => (first.to_string(), last.trim().to_string()),
        None => (name.to_string(), String::new()),
    }
}

fn customer_ref(c: &Customer) -> Option<ExternalRef> {
    c.customer_id.as_ref().map(|id| ExternalRef {
        external_id: id.clone(),
        external_number: None,
        url: None,
    })
}

impl LightspeedRAdapter {
    /// The Lightspeed customer standing for the host's, found or created.
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

    async fn find_customer(
        &self,
        connection_id: i64,
        customer: &HostCustomer,
    ) -> Result<Option<ExternalRef>, ProviderError> {
        if let Some(email) = customer.email.as_deref().filter(|e| !e.trim().is_empty()) {
            let req = Request::get("Customer.json")
                .lane(READ)
                .query("load_relations", r#"["Contact"]"#)
                .query("email", email.trim());
            let found: Vec<Customer> = self.list(connection_id, req, "Customer", 1).await?;
            if let Some(r) = found.first().and_then(customer_ref) {
                return Ok(Some(r));
            }
        }
        let (first, last) = split_name(&customer.name);
        let req = Request::get("Customer.json")
            .lane(READ)
            .query("firstName", first)
            .query("lastName", last);
        let found: Vec<Customer> = self.list(connection_id, req, "Customer", 1).await?;
        Ok(found.first().and_then(customer_ref))
    }

    async fn create_customer(
        &self,
        connection_id: i64,
        customer: &HostCustomer,
    ) -> Result<ExternalRef, ProviderError> {
        let (first_name, last_name) = split_name(&customer.name);
        let emails = customer
            .email
            .iter()
            .map(|e| ContactEmail {
                address: e.trim().to_string(),
                use_type: "Primary".into(),
            })
            .collect();
        let body = Customer {
            customer_id: None,
            first_name,
            last_name,
            contact: Contact {
                emails: Emails {
                    contact_email: OneOrMany(emails),
                },
            },
        };
        let req = Request::json(reqwest::Method::POST, "Customer.json", &body)?.lane(WRITE);
        let made: CustomerEnvelope = self.caller.send_json(connection_id, &req).await?;
        customer_ref(&made.customer).ok_or_else(|| {
            ProviderError::retryable("Lightspeed answered a customer create without an id")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_at_the_first_space() {
        assert_eq!(
            split_name(" Jane van Doe "),
            ("Jane".into(), "van Doe".into())
        );
        assert_eq!(split_name("Cher"), ("Cher".into(), String::new()));
    }
}
