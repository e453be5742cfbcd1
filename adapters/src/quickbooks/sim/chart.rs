//! A simulated company's chart: accounts, tax rates and the tax codes
//! made of them, as a first sync reads them (`select * from Account`,
//! `TaxCode`, `TaxRate`), and the seeding tests use.
//!
//! A new company has the accounts a new QuickBooks company starts with
//! that ledgerflow names: "Services" (income, id 1, which items created
//! for SKUs post to by default) and "Undeposited Funds" (id 4). A tax code
//! added here also prices invoices (its rates summed, as
//! `Company::tax_codes`); a code put straight into `Company::tax_codes`
//! prices them but is not listed.

use std::collections::BTreeMap;

use super::{Simulator, lock};
use crate::kit::decimal::Decimal;
use crate::quickbooks::wire::{self, Ref, TaxRateDetail, TaxRateList};

/// Accounts, tax codes and tax rates by id.
#[derive(Debug, Clone)]
pub struct Chart {
    pub accounts: BTreeMap<u64, wire::Account>,
    pub tax_codes: BTreeMap<u64, wire::TaxCode>,
    pub tax_rates: BTreeMap<u64, wire::TaxRate>,
}

impl Default for Chart {
    fn default() -> Self {
        let account = |id: u64, name: &str, kind: &str| {
            (
                id,
                wire::Account {
                    id: Some(id.to_string()),
                    sync_token: Some("0".into()),
                    name: name.into(),
                    account_type: Some(kind.into()),
                    active: Some(true),
                    ..wire::Account::default()
                },
            )
        };
        Chart {
            accounts: [
                account(1, "Services", "Income"),
                account(4, "Undeposited Funds", "Other Current Asset"),
            ]
            .into(),
            tax_codes: BTreeMap::new(),
            tax_rates: BTreeMap::new(),
        }
    }
}

/// An account someone added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimAccount {
    pub name: String,
    pub acct_num: Option<String>,
    /// `Income`, `Expense`, `Bank`, ...
    pub account_type: String,
    pub active: bool,
}

/// A tax code someone set up: its sales rates (name, basis points), each
/// a TaxRate of the company (one of the same name is reused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimTaxCode {
    pub name: String,
    pub rates: Vec<(String, i64)>,
    pub active: bool,
}

impl Chart {
    /// The id of the tax rate named `name`, when the company has one.
    fn rate_named(&self, name: &str) -> Option<u64> {
        self.tax_rates
            .iter()
            .find(|(_, r)| r.name == name)
            .map(|(id, _)| *id)
    }

    fn add_rate(&mut self, id: u64, name: &str, bps: i64) {
        self.tax_rates.insert(
            id,
            wire::TaxRate {
                id: Some(id.to_string()),
                name: name.into(),
                active: Some(true),
                // Basis points are hundredths of a percent.
                rate_value: Some(Decimal::from_scaled(bps, 2)),
            },
        );
    }
}

impl Simulator {
    /// Accounts someone added to the company's chart; their ids.
    pub fn add_accounts(&self, realm: &str, accounts: &[SimAccount]) -> Vec<String> {
        let mut s = lock(&self.shared);
        let Some(c) = s.companies.get_mut(realm) else {
            return Vec::new();
        };
        accounts
            .iter()
            .map(|a| {
                let id = c.next_id();
                c.chart.accounts.insert(
                    id,
                    wire::Account {
                        id: Some(id.to_string()),
                        sync_token: Some("0".into()),
                        name: a.name.clone(),
                        acct_num: a.acct_num.clone(),
                        account_type: Some(a.account_type.clone()),
                        active: Some(a.active),
                        currency_ref: None,
                    },
                );
                id.to_string()
            })
            .collect()
    }

    /// A tax code someone set up; its id (what a line's `TaxCodeRef` names).
    pub fn add_tax_code(&self, realm: &str, code: &SimTaxCode) -> Option<String> {
        let mut s = lock(&self.shared);
        let c = s.companies.get_mut(realm)?;
        let details: Vec<TaxRateDetail> = code
            .rates
            .iter()
            .map(|(name, bps)| {
                let id = c.chart.rate_named(name).unwrap_or_else(|| {
                    let id = c.next_id();
                    c.chart.add_rate(id, name, *bps);
                    id
                });
                TaxRateDetail {
                    tax_rate_ref: Ref {
                        value: id.to_string(),
                        name: Some(name.clone()),
                    },
                    tax_type_applicable: Some("TaxOnAmount".into()),
                    tax_order: Some(0),
                }
            })
            .collect();
        let id = c.next_id();
        c.chart.tax_codes.insert(
            id,
            wire::TaxCode {
                id: Some(id.to_string()),
                name: code.name.clone(),
                description: None,
                active: Some(code.active),
                taxable: Some(code.rates.iter().any(|(_, bps)| *bps != 0)),
                sales_tax_rate_list: Some(TaxRateList { details }),
            },
        );
        let total = code.rates.iter().map(|(_, bps)| bps).sum();
        c.tax_codes.insert(id.to_string(), total);
        Some(id.to_string())
    }

    pub fn accounts(&self, realm: &str) -> Vec<wire::Account> {
        self.with_company(realm, |c| c.chart.accounts.values().cloned().collect())
            .unwrap_or_default()
    }
}
