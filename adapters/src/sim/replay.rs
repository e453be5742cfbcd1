//! Idempotent replay (feature `sandbox`): a write sent again under the key
//! it was first sent with gets the first answer back instead of being done
//! again (Xero's `Idempotency-Key`, QuickBooks' `requestid`). Answers of
//! 5xx are not kept: the write did not happen, so a retry does it.
//!
//! The key is scoped by the request's path, as providers scope it by
//! endpoint. The provider's simulator decides where the key comes from.
//!
//! ```
//! use ledgerflow_adapters::sim::replay::Replays;
//! let mut replays = Replays::default();
//! assert!(replays.get("k1", "/Invoices").is_none());
//! replays.keep("k1", "/Invoices", 200, "{\"ok\":true}");
//! assert_eq!(replays.get("k1", "/invoices"), Some((200, "{\"ok\":true}".to_string())));
//! replays.keep("k2", "/Invoices", 503, "offline");
//! assert!(replays.get("k2", "/Invoices").is_none());
//! ```

use std::collections::HashMap;

#[derive(Debug, Clone, Default)]
pub struct Replays {
    answers: HashMap<String, (u16, String)>,
}

impl Replays {
    fn scoped(key: &str, path: &str) -> String {
        format!("{} {}", key, path.to_ascii_lowercase())
    }

    /// The first answer to `key` on `path`, if one was kept.
    pub fn get(&self, key: &str, path: &str) -> Option<(u16, String)> {
        self.answers.get(&Self::scoped(key, path)).cloned()
    }

    /// Keeps an answer for replay (not a 5xx).
    pub fn keep(&mut self, key: &str, path: &str, status: u16, body: &str) {
        if status < 500 {
            self.answers
                .insert(Self::scoped(key, path), (status, body.to_string()));
        }
    }
}
