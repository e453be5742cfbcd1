//! Checks of what people and hosts type in: JSON objects decoded strictly
//! (an unknown key is refused, with the nearest known key as a "did you
//! mean"), the shapes of identifiers (tenant ids, Shopify shop domains,
//! provider organisation ids), and text made safe to echo in an error.
//!
//! It owns only the checks; each caller decides where they apply. Stored
//! rows are not re-checked on read: they were checked on the way in.

use serde::de::DeserializeOwned;

/// Why an input was refused; the message names the field and the problem
/// and never contains a raw control character.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// A key no field has: a typo that would otherwise be dropped silently.
    #[error("unknown {what} key {}{}{}", printable(.key), .path.as_deref().map(|p| format!(" in `{p}`")).unwrap_or_default(), suggestion_text(.suggestion.as_deref(), .expected))]
    UnknownKey {
        /// "setting", "option": what the keys are.
        what: &'static str,
        key: String,
        /// Where the key is, dotted (`provider`), when not at the top.
        path: Option<String>,
        suggestion: Option<String>,
        expected: Vec<String>,
    },
    /// Valid JSON that does not fit (a wrong type, a bad value).
    #[error("the {what} do not fit{}: {message}", .path.as_deref().map(|p| format!(" at `{p}`")).unwrap_or_default())]
    Invalid {
        what: &'static str,
        path: Option<String>,
        message: String,
    },
    /// An identifier of the wrong shape.
    #[error("{what} {} is not valid: {why}", printable(.value))]
    BadIdentifier {
        what: &'static str,
        value: String,
        why: &'static str,
    },
}

fn suggestion_text(suggestion: Option<&str>, expected: &[String]) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None if expected.is_empty() => String::new(),
        None => format!(" (known keys: {})", expected.join(", ")),
    }
}

/// `s` quoted, with control and other invisible characters escaped, so an
/// error can show what was typed without writing escape sequences to the
/// operator's terminal or log.
pub fn printable(s: &str) -> String {
    format!("{:?}", truncate(s, 200))
}

fn truncate(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The known key nearest to `key`, when it is near enough to be a typo
/// (within two edits, or a close prefix / case variant).
pub fn did_you_mean<'a>(key: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = key.to_ascii_lowercase();
    known
        .into_iter()
        .map(|k| {
            (
                strsim::damerau_levenshtein(&lower, &k.to_ascii_lowercase()),
                k,
            )
        })
        .filter(|(d, k)| *d <= 2.max(k.len() / 4) && *d < k.len().max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Decode `value` as `T`, whose structs refuse unknown fields
/// (`#[serde(deny_unknown_fields)]`); an unknown key comes back as
/// [`InputError::UnknownKey`] with the path to it and a suggestion.
pub fn decode_strict<T: DeserializeOwned>(
    what: &'static str,
    value: serde_json::Value,
) -> Result<T, InputError> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        let path_to = |p: &str| (!p.is_empty() && p != ".").then(|| p.to_string());
        match unknown_field(&inner) {
            Some((key, expected)) => {
                // The path ends in the unknown key itself, except inside an
                // internally tagged enum, whose content is buffered and
                // reports the enum's own field.
                let parent = match path.rsplit_once('.') {
                    Some((parent, last)) if last == key => parent.to_string(),
                    None if path == key => String::new(),
                    _ => path.clone(),
                };
                let suggestion =
                    did_you_mean(&key, expected.iter().map(String::as_str)).map(str::to_owned);
                InputError::UnknownKey {
                    what,
                    key,
                    path: path_to(&parent),
                    suggestion,
                    expected,
                }
            }
            None => InputError::Invalid {
                what,
                path: path_to(&path),
                message: inner,
            },
        }
    })
}

/// The unknown key and the expected ones, from serde's message
/// "unknown field `x`, expected one of `a`, `b`" (or "expected `a`", or
/// "there are no fields"): serde hands the list to the error only as text.
fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    Some((key.to_string(), expected))
}

/// The top-level keys of `value` that are not in `known`, refused as
/// [`InputError::UnknownKey`] (for objects whose type is lenient on read,
/// such as a provider's stored options).
pub fn check_keys(
    what: &'static str,
    value: &serde_json::Value,
    known: &[&str],
) -> Result<(), InputError> {
    let Some(map) = value.as_object() else {
        return Err(InputError::Invalid {
            what,
            path: None,
            message: "a JSON object is needed".into(),
        });
    };
    match map.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(key) => Err(InputError::UnknownKey {
            what,
            key: key.clone(),
            path: None,
            suggestion: did_you_mean(key, known.iter().copied()).map(str::to_owned),
            expected: known.iter().map(|k| k.to_string()).collect(),
        }),
    }
}

/// Longest tenant id: ids are keys in every table and in log lines.
pub const MAX_TENANT_ID_CHARS: usize = 128;

/// A host's tenant id: 1 to 128 characters, none of them control
/// characters, no space at either end.
pub fn check_tenant_id(id: &str) -> Result<(), InputError> {
    let bad = |why| InputError::BadIdentifier {
        what: "tenant id",
        value: id.to_string(),
        why,
    };
    if id.is_empty() {
        return Err(bad("it is empty"));
    }
    if id.chars().count() > MAX_TENANT_ID_CHARS {
        return Err(bad("it is longer than 128 characters"));
    }
    if id.chars().any(char::is_control) {
        return Err(bad("it contains control characters"));
    }
    if id.trim() != id {
        return Err(bad("it starts or ends with a space"));
    }
    Ok(())
}

/// A provider's organisation id (Xero's tenant id, a UUID; other
/// providers' account ids): 1 to 100 letters, digits, `-`, `_`, `.` or `:`.
pub fn check_organisation_id(id: &str) -> Result<(), InputError> {
    let bad = |why| InputError::BadIdentifier {
        what: "organisation id",
        value: id.to_string(),
        why,
    };
    if id.is_empty() {
        return Err(bad("it is empty"));
    }
    if id.len() > 100 {
        return Err(bad("it is longer than 100 characters"));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    {
        return Err(bad(
            "use only letters, digits, '-', '_', '.' and ':' (Xero's is a UUID, from its /connections)",
        ));
    }
    Ok(())
}

/// A Shopify store's domain: `name.myshopify.com` or a custom hostname
/// (lowercase labels of letters, digits and `-`, dot-separated), without
/// scheme, path or port.
pub fn check_shop_domain(domain: &str) -> Result<(), InputError> {
    let bad = |why| InputError::BadIdentifier {
        what: "shop domain",
        value: domain.to_string(),
        why,
    };
    if domain.contains("://") || domain.contains('/') {
        return Err(bad(
            "give the domain alone (shop.myshopify.com), without https:// or a path",
        ));
    }
    if domain.len() > 253 || domain.is_empty() {
        return Err(bad("a hostname has 1 to 253 characters"));
    }
    let labels_ok = domain.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    });
    if !labels_ok || !domain.contains('.') {
        return Err(bad(
            "expected shop.myshopify.com or a hostname: lowercase letters, digits and '-' in dot-separated parts",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_the_nearest_key_and_strangers_get_the_list() {
        let known = ["auto_sync", "when_to_sync", "provider"];
        assert_eq!(did_you_mean("auto_synk", known), Some("auto_sync"));
        assert_eq!(did_you_mean("Auto_Sync", known), Some("auto_sync"));
        assert_eq!(did_you_mean("providr", known), Some("provider"));
        assert_eq!(did_you_mean("colour", known), None);
        let e = check_keys("option", &serde_json::json!({"colour": 1}), &known).unwrap_err();
        assert!(e.to_string().contains("known keys: auto_sync"), "{e}");
    }

    #[test]
    fn identifiers_are_checked_and_never_echoed_raw() {
        assert!(check_shop_domain("spoke-and-chain.myshopify.com").is_ok());
        assert!(check_shop_domain("shop.example.co.nz").is_ok());
        for bad in [
            "",
            "https://x.myshopify.com",
            "x.myshopify.com/admin",
            "UPPER.myshopify.com",
            "no-dot",
            "a..b",
            "evil\u{1b}[31m.com",
        ] {
            let e = check_shop_domain(bad).unwrap_err().to_string();
            assert!(!e.contains('\u{1b}'), "{e}");
        }
        assert!(check_organisation_id("8f6c1e2a-0b7d-4c1e-9a55-3f1f0c2d9e11").is_ok());
        assert!(check_organisation_id("org\n1").is_err());
        assert!(check_tenant_id("shop-42").is_ok());
        let e = check_tenant_id("shop\u{7}\u{1b}").unwrap_err().to_string();
        assert!(e.contains("\\u{7}") && !e.contains('\u{7}'), "{e}");
        assert!(check_tenant_id(&"x".repeat(129)).is_err());
        assert!(check_tenant_id(" shop").is_err());
    }
}
