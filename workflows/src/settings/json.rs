//! Connection settings from JSON as people and hosts write them (the
//! CLI's `--settings-json`, the client's `create_connection_json` /
//! `update_settings_json`): merged over a base and decoded strictly, so a
//! typo is refused with a suggestion instead of being dropped. The rules
//! on values stay in [`super`].

use super::{ConnectionSettings, SettingsError};
use crate::input::{self, InputError};

impl ConnectionSettings {
    /// Settings from JSON as a person or host writes them: `json` merged
    /// over `base` (a partial object keeps the rest of `base`), decoded
    /// strictly, so a typo such as `auto_synk` is refused with "did you
    /// mean `auto_sync`?" instead of being dropped. Not validated: see
    /// [`ConnectionSettings::validate_for`].
    pub fn merged_json(
        base: &ConnectionSettings,
        json: &serde_json::Value,
    ) -> Result<ConnectionSettings, SettingsError> {
        let mut value = serde_json::to_value(base).map_err(|e| {
            SettingsError::Input(InputError::Invalid {
                what: "settings",
                path: None,
                message: e.to_string(),
            })
        })?;
        if !json.is_object() {
            return Err(SettingsError::Input(InputError::Invalid {
                what: "settings",
                path: None,
                message: "a JSON object is needed".into(),
            }));
        }
        let mut json = json.clone();
        // Settings for another provider replace the provider part whole:
        // merged key by key, the base's provider keys would look unknown.
        let other_provider = json
            .pointer("/provider/provider")
            .is_some_and(|p| Some(p) != value.pointer("/provider/provider"));
        if other_provider && let Some(map) = value.as_object_mut() {
            map.remove("provider");
        }
        merge_json(&mut value, std::mem::take(&mut json));
        Ok(input::decode_strict("setting", value)?)
    }
}

/// `over` merged into `base`, objects key by key (a partial settings
/// object keeps the defaults for what it leaves out).
fn merge_json(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                merge_json(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{Provider, ProviderSettings};

    #[test]
    fn partial_json_keeps_the_base_and_typos_are_refused_with_a_suggestion() {
        let base = ConnectionSettings::default_for(Provider::Xero);
        let s = ConnectionSettings::merged_json(&base, &serde_json::json!({"auto_sync": true}))
            .unwrap();
        assert!(s.auto_sync);
        assert_eq!(s.provider, base.provider);
        // Settings for another provider replace the provider part whole.
        let s = ConnectionSettings::merged_json(
            &base,
            &serde_json::json!({"provider": {"provider": "shopify", "use_draft_orders": false}}),
        )
        .unwrap();
        assert!(matches!(s.provider, ProviderSettings::Shopify(ref p) if !p.use_draft_orders));
        let e = ConnectionSettings::merged_json(
            &base,
            &serde_json::json!({"provider": {"default_statuss": "authorised"}}),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("did you mean `default_status`?"), "{e}");
        let e = ConnectionSettings::merged_json(&base, &serde_json::json!([1]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("a JSON object is needed"), "{e}");
    }
}
