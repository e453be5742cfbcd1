//! The simulated X-Series' `sale.update` webhooks: when a target is set,
//! every change to a sale (ours through the API, or a payment taken in the
//! register) is POSTed there form-encoded (`type`, `domain_prefix`,
//! `payload` holding the sale as JSON), signed `X-Signature:
//! signature=<hex>,algorithm=HMAC-SHA256` with the app's client secret.
//! Delivery is not guaranteed in X-Series, so the simulator can drop the
//! next deliveries on purpose ([`super::Simulator::drop_webhooks`]); each
//! is sent once, in the background, never retried.

use std::sync::atomic::Ordering;

use super::state::Inner;
use crate::lightspeed_x::webhook::sign;
use crate::lightspeed_x::wire::RegisterSale;

/// The form body of a `sale.update` for `sale`.
pub fn body(domain_prefix: &str, sale: &RegisterSale) -> Vec<u8> {
    let payload = serde_json::to_string(sale).unwrap_or_default();
    form_urlencoded::Serializer::new(String::new())
        .append_pair("type", "sale.update")
        .append_pair("domain_prefix", domain_prefix)
        .append_pair("payload", &payload)
        .finish()
        .into_bytes()
}

/// Sends (or drops) the `sale.update` of `sale` when a target is set.
pub(super) fn notify(s: &mut Inner, sale: &RegisterSale) {
    let Some(target) = s.webhook.as_mut() else {
        return;
    };
    if target.drop_next > 0 {
        target.drop_next -= 1;
        target.counts.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let body = body(&s.config.domain_prefix, sale);
    let signature = sign(s.config.client_secret.as_bytes(), &body);
    let (url, counts) = (target.url.clone(), target.counts.clone());
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        counts.refused.fetch_add(1, Ordering::Relaxed);
        return;
    };
    runtime.spawn(async move {
        let sent = reqwest::Client::new()
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-signature", signature)
            .body(body)
            .send()
            .await;
        let counter = match sent {
            Ok(r) if r.status().is_success() => &counts.delivered,
            _ => &counts.refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    });
}
