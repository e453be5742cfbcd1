//! One linked invoice, host against provider: its total and amount paid,
//! and for each difference which side changed and the way out, in one line.
//!
//! Pure: no I/O. [`super::runs`] reads the host's side, the worker reads
//! the provider's, and [`compare_invoice`] decides. Amounts are integer
//! minor units of the host invoice's currency.

use serde::{Deserialize, Serialize};

use crate::invoice::money::{Currency, Money};
use crate::provider::RemoteInvoice;
use crate::settings::Provider as ProviderName;

/// A payment of the host's invoice linked to a provider payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedPayment {
    pub payment_id: String,
    pub external_id: String,
    pub amount_minor: i64,
}

/// The host's side of one linked invoice, as the ledger knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSide {
    pub invoice_id: String,
    pub currency: Currency,
    /// The newest snapshot's total.
    pub total_minor: i64,
    /// The newest snapshot's payments: (host payment id, amount).
    pub payments: Vec<(String, i64)>,
    /// The total of the snapshot the provider last accepted; `None` when
    /// this host never synced the invoice (linked by an import).
    pub synced_total_minor: Option<i64>,
    /// The host's last finished sync of it was a void.
    pub voided: bool,
    /// A sync of the invoice is pending or running: it sends the host's side.
    pub sync_open: bool,
    /// Its payments linked to provider payments (after reconciliation).
    pub linked: Vec<LinkedPayment>,
    /// Host payments whose provider payment was deleted there (a
    /// `payment_removed` event names them) and which are not linked again.
    pub removed_in_provider: Vec<String>,
}

impl HostSide {
    pub fn paid_minor(&self) -> i64 {
        self.payments.iter().map(|(_, a)| *a).sum()
    }
}

/// What differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MismatchKind {
    /// The provider no longer has the linked record.
    Missing,
    /// Voided on one side only.
    Voided,
    Total,
    AmountPaid,
}

/// Which side changed since they last agreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Changed {
    Host,
    Provider,
    Both,
    /// The invoice was never synced from this host (linked by an import):
    /// there is no common ground to tell.
    Unknown,
}

/// The way out of a difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WayOut {
    /// `ledgerflow invoice resync`: send the host's invoice (and payments) again.
    Resync,
    /// `ledgerflow invoice send-as-new`: create a new provider record.
    SendAsNew,
    /// The host should change its own record (the inbound events say how).
    UpdateHost,
    /// A sync of the invoice is pending: it sends the host's side; run again after it.
    WaitForSync,
}

/// One difference between a host invoice and its provider record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatch {
    pub invoice_id: String,
    pub external_id: String,
    pub external_number: Option<String>,
    pub kind: MismatchKind,
    pub currency: String,
    /// The host's figure (total or amount paid), minor units.
    pub host_minor: Option<i64>,
    /// The provider's figure, minor units.
    pub provider_minor: Option<i64>,
    pub changed: Changed,
    pub way_out: WayOut,
    /// The one line an operator reads: what differs, why, what to do.
    pub action: String,
}

/// Voided, deleted or cancelled in the provider, by its own status word
/// (Xero `VOIDED` / `DELETED`, QuickBooks `Voided`).
pub fn remote_voided(remote: &RemoteInvoice) -> bool {
    matches!(
        remote.status.to_ascii_uppercase().as_str(),
        "VOIDED" | "DELETED" | "VOID" | "CANCELLED"
    )
}

/// The differences between the host's invoice and the provider's record
/// (`None`: the provider has no such record), each with its way out.
/// Empty when they agree.
pub fn compare_invoice(
    connection_id: i64,
    provider: ProviderName,
    host: &HostSide,
    external_id: &str,
    remote: Option<&RemoteInvoice>,
) -> Vec<Mismatch> {
    let name = provider.display_name();
    let money = |m: i64| Money::new(m, host.currency).to_string();
    let resync = format!(
        "ledgerflow invoice resync {connection_id} {}",
        host.invoice_id
    );
    let send_as_new = format!(
        "ledgerflow invoice send-as-new {connection_id} {}",
        host.invoice_id
    );
    let mismatch = |kind, host_minor, provider_minor, changed, way_out, action: String| Mismatch {
        invoice_id: host.invoice_id.clone(),
        external_id: external_id.to_string(),
        external_number: remote.and_then(|r| r.external_number.clone()),
        kind,
        currency: host.currency.code().to_string(),
        host_minor,
        provider_minor,
        changed,
        way_out,
        action,
    };
    let Some(remote) = remote else {
        return vec![mismatch(
            MismatchKind::Missing,
            Some(host.total_minor),
            None,
            Changed::Provider,
            WayOut::SendAsNew,
            format!("{name} no longer has this invoice: send it as new ({send_as_new})"),
        )];
    };
    let voided = remote_voided(remote);
    if voided || host.voided {
        if voided == host.voided {
            return Vec::new();
        }
        return vec![if voided {
            mismatch(
                MismatchKind::Voided,
                Some(host.total_minor),
                remote.total_minor,
                Changed::Provider,
                WayOut::SendAsNew,
                format!(
                    "voided in {name} ({}) but not in the host: send it as new ({send_as_new}), or cancel it in the host",
                    remote.status
                ),
            )
        } else if host.sync_open {
            mismatch(
                MismatchKind::Voided,
                Some(host.total_minor),
                remote.total_minor,
                Changed::Host,
                WayOut::WaitForSync,
                format!(
                    "cancelled in the host, still {} in {name}: the pending sync voids it; run again after it",
                    remote.status
                ),
            )
        } else {
            mismatch(
                MismatchKind::Voided,
                Some(host.total_minor),
                remote.total_minor,
                Changed::Provider,
                WayOut::Resync,
                format!(
                    "cancelled in the host, but {} again in {name}: re-sync to void it ({resync})",
                    remote.status
                ),
            )
        }];
    }
    let mut out = Vec::new();
    if let Some(total) = remote.total_minor.filter(|t| *t != host.total_minor) {
        let figures = format!("{name} {}, host {}", money(total), money(host.total_minor));
        let (changed, way_out, action) = if host.sync_open {
            (
                Changed::Host,
                WayOut::WaitForSync,
                format!(
                    "total differs ({figures}): a sync of this invoice is pending and sends the host's; run again after it"
                ),
            )
        } else {
            match host.synced_total_minor {
                Some(s) if s == host.total_minor => (
                    Changed::Provider,
                    WayOut::Resync,
                    format!(
                        "total changed in {name} since the last sync ({figures}): re-sync to send the host's invoice again ({resync}), or change it in the host"
                    ),
                ),
                Some(s) if s == total => (
                    Changed::Host,
                    WayOut::Resync,
                    format!(
                        "the host changed the total since the last sync ({figures}): re-sync ({resync})"
                    ),
                ),
                Some(_) => (
                    Changed::Both,
                    WayOut::Resync,
                    format!(
                        "total changed on both sides since the last sync ({figures}): check which is right, then re-sync ({resync}) or change it in the host"
                    ),
                ),
                None => (
                    Changed::Unknown,
                    WayOut::Resync,
                    format!(
                        "total differs ({figures}) and the host never synced this invoice (linked by an import): re-sync to send the host's ({resync}), or change it in the host"
                    ),
                ),
            }
        };
        out.push(mismatch(
            MismatchKind::Total,
            Some(host.total_minor),
            Some(total),
            changed,
            way_out,
            action,
        ));
    }
    if let Some(paid) = remote.amount_paid_minor.filter(|p| *p != host.paid_minor()) {
        out.push(paid_mismatch(
            host, remote, paid, name, &resync, &money, mismatch,
        ));
    }
    out
}

/// The amount-paid difference, with the payments that explain it.
fn paid_mismatch(
    host: &HostSide,
    remote: &RemoteInvoice,
    paid: i64,
    name: &str,
    resync: &str,
    money: &dyn Fn(i64) -> String,
    mismatch: impl Fn(MismatchKind, Option<i64>, Option<i64>, Changed, WayOut, String) -> Mismatch,
) -> Mismatch {
    let linked = |id: &str| host.linked.iter().any(|l| l.payment_id == id);
    let mut host_reasons = Vec::new();
    let mut provider_reasons = Vec::new();
    let mut deleted_there = false;
    for (id, amount) in &host.payments {
        if linked(id) {
            continue;
        }
        if host.removed_in_provider.contains(id) {
            deleted_there = true;
            provider_reasons.push(format!(
                "payment {id} ({}) was deleted in {name}",
                money(*amount)
            ));
        } else {
            host_reasons.push(format!(
                "payment {id} ({}) is not applied in {name} yet",
                money(*amount)
            ));
        }
    }
    for l in &host.linked {
        if !host.payments.iter().any(|(id, _)| *id == l.payment_id) {
            host_reasons.push(format!(
                "payment {} was deleted in the host, not yet reversed in {name}",
                l.payment_id
            ));
        }
    }
    let mut made_there = false;
    for p in &remote.payments {
        if !host.linked.iter().any(|l| l.external_id == p.external_id) {
            made_there = true;
            provider_reasons.push(format!(
                "payment {}{} was made in {name}",
                p.external_id,
                p.amount_minor
                    .map(|a| format!(" ({})", money(a)))
                    .unwrap_or_default()
            ));
        }
    }
    let changed = match (host_reasons.is_empty(), provider_reasons.is_empty()) {
        (false, true) => Changed::Host,
        (true, false) => Changed::Provider,
        (false, false) => Changed::Both,
        (true, true) => Changed::Unknown,
    };
    let figures = format!(
        "amount paid differs ({name} {}, host {})",
        money(paid),
        money(host.paid_minor())
    );
    let reasons: Vec<String> = host_reasons.into_iter().chain(provider_reasons).collect();
    let why = if reasons.is_empty() {
        String::new()
    } else {
        format!(": {}", reasons.join("; "))
    };
    let (way_out, todo) = if host.sync_open {
        (
            WayOut::WaitForSync,
            "a sync of this invoice is pending and sends the host's payments; run again after it"
                .to_string(),
        )
    } else if deleted_there {
        (
            WayOut::UpdateHost,
            format!(
                "delete it in the host (a payment_removed event says which), or re-sync to apply it again ({resync})"
            ),
        )
    } else if made_there {
        (
            WayOut::UpdateHost,
            "record it in the host (reported as a payment_applied event)".to_string(),
        )
    } else {
        (WayOut::Resync, format!("re-sync ({resync})"))
    };
    mismatch(
        MismatchKind::AmountPaid,
        Some(host.paid_minor()),
        Some(paid),
        changed,
        way_out,
        format!("{figures}{why}: {todo}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::RemotePayment;

    fn host() -> HostSide {
        HostSide {
            invoice_id: "INV-1".into(),
            currency: Currency::parse("NZD").unwrap(),
            total_minor: 11_500,
            payments: vec![("P1".into(), 5_000)],
            synced_total_minor: Some(11_500),
            voided: false,
            sync_open: false,
            linked: vec![LinkedPayment {
                payment_id: "P1".into(),
                external_id: "x-p1".into(),
                amount_minor: 5_000,
            }],
            removed_in_provider: Vec::new(),
        }
    }

    fn remote(total: i64, paid: i64, payments: &[(&str, i64)]) -> RemoteInvoice {
        RemoteInvoice {
            external_id: "x-1".into(),
            external_number: Some("INV-1".into()),
            status: "AUTHORISED".into(),
            fully_paid: paid == total,
            currency: Some("NZD".into()),
            total_minor: Some(total),
            amount_paid_minor: Some(paid),
            amount_due_minor: Some(total - paid),
            payments: payments
                .iter()
                .map(|(id, a)| RemotePayment {
                    external_id: id.to_string(),
                    amount_minor: Some(*a),
                    date: None,
                })
                .collect(),
        }
    }

    fn run(host: &HostSide, remote: Option<&RemoteInvoice>) -> Vec<Mismatch> {
        compare_invoice(7, ProviderName::Xero, host, "x-1", remote)
    }

    #[test]
    fn a_matching_invoice_has_no_reconcile_mismatch() {
        assert!(run(&host(), Some(&remote(11_500, 5_000, &[("x-p1", 5_000)]))).is_empty());
    }

    #[test]
    fn a_missing_invoice_is_sent_as_new_reconcile() {
        let m = run(&host(), None);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].way_out, WayOut::SendAsNew);
        assert!(
            m[0].action
                .contains("ledgerflow invoice send-as-new 7 INV-1"),
            "{}",
            m[0].action
        );
    }

    #[test]
    fn a_total_changed_in_the_provider_is_resynced_reconcile() {
        let m = run(&host(), Some(&remote(12_000, 5_000, &[("x-p1", 5_000)])));
        assert_eq!(m.len(), 1);
        assert_eq!(
            (m[0].kind, m[0].changed),
            (MismatchKind::Total, Changed::Provider)
        );
        assert_eq!(m[0].way_out, WayOut::Resync);
        assert!(
            m[0].action.contains("Xero NZD 120.00, host NZD 115.00"),
            "{}",
            m[0].action
        );
        // The host changed instead: its total moved since the last sync.
        let mut h = host();
        h.total_minor = 13_000;
        let m = run(&h, Some(&remote(11_500, 5_000, &[("x-p1", 5_000)])));
        assert_eq!(m[0].changed, Changed::Host);
        // Pending sync: wait for it.
        h.sync_open = true;
        let m = run(&h, Some(&remote(11_500, 5_000, &[("x-p1", 5_000)])));
        assert_eq!(m[0].way_out, WayOut::WaitForSync);
    }

    #[test]
    fn a_payment_deleted_in_the_provider_tells_the_host_to_update_reconcile() {
        let mut h = host();
        h.linked.clear();
        h.removed_in_provider = vec!["P1".into()];
        let m = run(&h, Some(&remote(11_500, 0, &[])));
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].kind, MismatchKind::AmountPaid);
        assert_eq!(
            (m[0].changed, m[0].way_out),
            (Changed::Provider, WayOut::UpdateHost)
        );
        assert!(
            m[0].action
                .contains("payment P1 (NZD 50.00) was deleted in Xero"),
            "{}",
            m[0].action
        );
    }

    #[test]
    fn payments_on_both_sides_are_named_reconcile() {
        let mut h = host();
        h.payments.push(("P2".into(), 1_000));
        let m = run(
            &h,
            Some(&remote(11_500, 7_000, &[("x-p1", 5_000), ("x-9", 2_000)])),
        );
        assert_eq!(m[0].changed, Changed::Both);
        assert!(
            m[0].action.contains("P2 (NZD 10.00) is not applied"),
            "{}",
            m[0].action
        );
        assert!(
            m[0].action.contains("x-9 (NZD 20.00) was made in Xero"),
            "{}",
            m[0].action
        );
    }

    #[test]
    fn voided_on_one_side_only_reconcile() {
        let mut r = remote(11_500, 0, &[]);
        r.status = "VOIDED".into();
        let m = run(&host(), Some(&r));
        assert_eq!(
            (m[0].kind, m[0].way_out),
            (MismatchKind::Voided, WayOut::SendAsNew)
        );
        let mut h = host();
        h.voided = true;
        assert!(run(&h, Some(&r)).is_empty());
    }
}
