//! Xero contacts: finding a customer's contact (our contact number, then
//! the exact name) or creating it, with the race adoption and the
//! one-lookup-per-customer sharing of the kit; and what stands for a
//! customer whose contact a person archived or merged.
//!
//! Owns the contact calls only; which contact an invoice goes to is
//! decided in `invoices.rs` with these.

use ledgerflow_workflows::call_budget;
use ledgerflow_workflows::invoice::Customer;
use ledgerflow_workflows::provider::{ExternalRef, ProviderError};
use reqwest::Method;

use super::api::{self, decode_error, operation_key};
use super::config::XeroOptions;
use super::wire::{self, Envelope};
use super::{XeroAdapter, first};
use crate::kit::customers::find_or_create;

/// Replacements of an archived contact one upsert tries before it gives
/// up for now (retryable): each replacement was archived before the
/// invoice written to it landed.
pub(super) const MAX_CONTACT_REPLACEMENTS: u32 = 3;

/// What Xero says of a contact an invoice was refused for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ContactStanding {
    /// It takes invoices: the refusal was about something else.
    Active,
    /// Archived by a person, or merged into another contact (`merged_into`).
    Archived { merged_into: Option<String> },
    /// Xero holds no contact with that ContactID.
    Unknown,
}

impl XeroAdapter {
    // -- contacts ----------------------------------------------------------

    /// Contacts whose `field` is exactly `value`, archived ones left out.
    /// The answer is checked against the key, never trusted to be filtered:
    /// a proxy's cache or an API change that drops the `where` would
    /// otherwise send every invoice to the first contact listed.
    pub(super) async fn contacts_where(
        &self,
        connection_id: i64,
        field: ContactKey,
        value: &str,
    ) -> Result<Vec<wire::Contact>, ProviderError> {
        let mut call = api::get("Contacts");
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
    pub(super) async fn invoice_contact(
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
    pub(super) async fn contact_standing(
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
    pub(super) async fn replacement_contact(
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
    pub(super) async fn contact_by_id(
        &self,
        connection_id: i64,
        contact_id: &str,
    ) -> Result<Option<wire::Contact>, ProviderError> {
        let call = api::get(format!("Contacts/{contact_id}"));
        match self.call(connection_id, &call).await {
            Ok(env) => Ok(env.contacts.and_then(|c| c.into_iter().next())),
            Err(ProviderError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn find_or_create_contact_now(
        &self,
        connection_id: i64,
        number: Option<String>,
        name: String,
        email: Option<String>,
        idempotency_key: &str,
    ) -> Result<ExternalRef, ProviderError> {
        let by_name = |name: String| async move {
            Ok(self
                .contacts_where(connection_id, ContactKey::Name, &name)
                .await?
                .into_iter()
                .next())
        };
        let find = async {
            if let Some(number) = &number
                && let Some(c) = self
                    .contacts_where(connection_id, ContactKey::Number, number)
                    .await?
                    .into_iter()
                    .next()
            {
                return Ok(Some(c));
            }
            by_name(name.clone()).await
        };
        let create = || async {
            let body = Envelope {
                contacts: Some(vec![wire::Contact {
                    name: Some(name.clone()),
                    contact_number: number.clone(),
                    email_address: email,
                    ..wire::Contact::default()
                }]),
                ..Envelope::default()
            };
            let key = operation_key(idempotency_key, "contact");
            let env = self
                .call(
                    connection_id,
                    &api::write(Method::PUT, "Contacts", &body, key)?,
                )
                .await?;
            first(env.contacts, "contact")
        };
        let contact = find_or_create(
            find,
            create,
            // Two syncs of one new customer's invoices raced: the other
            // created the contact between our lookup and our create, and
            // Xero refuses the duplicate name. Adopt the winner's contact.
            |e| matches!(e, ProviderError::Permanent { .. }),
            |refusal| async { by_name(name.clone()).await?.ok_or(refusal) },
        )
        .await?;
        contact_ref(contact)
    }
}

/// The keys a contact is looked up by.
#[derive(Debug, Clone, Copy)]
pub(super) enum ContactKey {
    /// Our contact number (the host's customer id).
    Number,
    /// The exact name.
    Name,
}

impl ContactKey {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            ContactKey::Number => "ContactNumber",
            ContactKey::Name => "Name",
        }
    }

    pub(super) fn of(self, c: &wire::Contact) -> Option<&str> {
        match self {
            ContactKey::Number => c.contact_number.as_deref(),
            ContactKey::Name => c.name.as_deref(),
        }
    }
}

pub(super) fn escape_where(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Our contact number for a host customer: Xero allows 50 characters.
pub(super) fn contact_number(customer_id: &str) -> String {
    customer_id.chars().take(50).collect()
}

/// An invoice's contact, named by its ContactID.
pub(super) fn contact_of(contact_id: &str) -> wire::Contact {
    wire::Contact {
        contact_id: Some(contact_id.to_string()),
        ..wire::Contact::default()
    }
}

pub(super) fn contact_ref(c: wire::Contact) -> Result<ExternalRef, ProviderError> {
    Ok(ExternalRef {
        external_id: c
            .contact_id
            .ok_or_else(|| decode_error("contact without ContactID".into(), ""))?,
        external_number: c.contact_number,
        url: None,
    })
}
