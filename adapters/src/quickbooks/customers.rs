//! QuickBooks customers: found by `DisplayName` (unique across customers,
//! vendors and employees), known to be ours by the marker in `Notes`, or
//! created under the sync event's `requestid`.
//!
//! - A name already taken by a customer ledgerflow made for *another* host
//!   customer (two "Jane Doe"s) gets the host id added: "Jane Doe (c-7)".
//! - A name taken by a record a person made in QuickBooks is refused with
//!   the reason (6240): adopting it could merge two people's books.
//! - A create refused with 6240 because another sync won the race adopts
//!   the winner's record when it is ours (`kit::customers::find_or_create`).

use std::sync::atomic::{AtomicBool, Ordering};

use ledgerflow_workflows::invoice::Customer;
use ledgerflow_workflows::provider::{ExternalRef, ProviderError};

use super::QboAdapter;
use super::api::{self, quote, request_id};
use super::errors::codes;
use super::wire::{self, EmailAddr, EntityAnswer, Phone, QueryAnswer};
use crate::kit;

/// The name a host customer goes by in QuickBooks, and the one used when
/// that is taken by another of our customers. QuickBooks keeps 100
/// characters of a DisplayName.
pub(super) fn display_names(c: &Customer) -> (String, String) {
    let plain: String = c.name.trim().chars().take(100).collect();
    let suffix = format!(" ({})", c.customer_id);
    let keep = 100usize.saturating_sub(suffix.chars().count());
    let qualified = format!("{}{suffix}", plain.chars().take(keep).collect::<String>());
    (plain, qualified)
}

pub(super) fn customer_ref(c: &wire::Customer) -> Option<ExternalRef> {
    c.id.clone().map(|id| ExternalRef {
        external_id: id,
        external_number: None,
        url: None,
    })
}

/// The Fault code of a refusal, read back from its raw answer.
pub(super) fn fault_code(e: &ProviderError) -> Option<String> {
    let raw = e.raw()?;
    let body = raw.split_once(": ").map_or(raw, |(_, b)| b);
    let f: wire::FaultAnswer = serde_json::from_str(body).ok()?;
    f.fault.errors.first().map(|e| e.code.clone())
}

impl QboAdapter {
    /// Finds or creates the customer; one lookup at a time per customer in
    /// this process.
    pub(super) async fn find_or_create_customer(
        &self,
        connection_id: i64,
        customer: &Customer,
        bill_addr: Option<&wire::PhysicalAddress>,
        key: &str,
    ) -> Result<ExternalRef, ProviderError> {
        // Set by the lookup when another host customer of ours has the
        // plain name, so the create takes the qualified one.
        let plain_taken = AtomicBool::new(false);
        let taken = &plain_taken;
        self.customers
            .find_or_create(connection_id, &customer.customer_id, || async move {
                kit::customers::find_or_create(
                    self.find_customer(connection_id, customer, taken),
                    || {
                        self.create_customer(
                            connection_id,
                            customer,
                            bill_addr,
                            key,
                            taken.load(Ordering::Relaxed),
                        )
                    },
                    |e| fault_code(e).as_deref() == Some(codes::DUPLICATE_NAME),
                    |refusal| async move {
                        match self.find_customer(connection_id, customer, taken).await? {
                            Some(found) => Ok(found),
                            None => Err(refusal),
                        }
                    },
                )
                .await
            })
            .await
    }

    /// Ours by either name; `None` when neither is taken. A name a person
    /// took in QuickBooks (no marker) is refused with the reason.
    async fn find_customer(
        &self,
        connection_id: i64,
        customer: &Customer,
        plain_taken: &AtomicBool,
    ) -> Result<Option<ExternalRef>, ProviderError> {
        let (plain, qualified) = display_names(customer);
        let sql = format!(
            "select * from Customer where DisplayName in ({}, {})",
            quote(&plain),
            quote(&qualified)
        );
        let found: QueryAnswer =
            api::decode(&self.caller.send(connection_id, &api::query(sql)).await?)?;
        let marker = wire::customer_marker(&customer.customer_id);
        let ours = |c: &wire::Customer| c.notes.as_deref() == Some(marker.as_str());
        if let Some(c) = found.response.customer.iter().find(|c| ours(c)) {
            return Ok(customer_ref(c));
        }
        plain_taken.store(
            found
                .response
                .customer
                .iter()
                .any(|c| c.display_name == plain),
            Ordering::Relaxed,
        );
        let foreign = found.response.customer.iter().find(|c| {
            c.display_name == plain
                && !c
                    .notes
                    .as_deref()
                    .is_some_and(|n| n.starts_with("ledgerflow customer "))
        });
        if let Some(c) = foreign {
            return Err(ProviderError::permanent(
                format!(
                    "QuickBooks already has a customer named \"{}\" that ledgerflow did not create (id {}): rename one of them, or add \"{}\" to its notes to let ledgerflow use it",
                    c.display_name,
                    c.id.as_deref().unwrap_or("?"),
                    marker
                ),
                None,
            ));
        }
        Ok(None)
    }

    async fn create_customer(
        &self,
        connection_id: i64,
        customer: &Customer,
        bill_addr: Option<&wire::PhysicalAddress>,
        key: &str,
        taken: bool,
    ) -> Result<ExternalRef, ProviderError> {
        let (plain, qualified) = display_names(customer);
        let body = wire::Customer {
            display_name: if taken { qualified } else { plain },
            primary_email_addr: customer.email.clone().map(|address| EmailAddr { address }),
            primary_phone: customer.phone.clone().map(|n| Phone {
                free_form_number: n,
            }),
            bill_addr: bill_addr.cloned(),
            notes: Some(wire::customer_marker(&customer.customer_id)),
            ..wire::Customer::default()
        };
        let rid = request_id(key, &format!("customer-{}", customer.customer_id), None);
        let made: EntityAnswer = api::decode(
            &self
                .caller
                .send(connection_id, &api::write("customer", &body, rid)?)
                .await?,
        )?;
        made.customer
            .as_ref()
            .and_then(customer_ref)
            .ok_or_else(|| {
                ProviderError::retryable(
                    "QuickBooks answered a customer create without the customer",
                )
            })
    }
}
