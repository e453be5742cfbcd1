//! The console's tokens and sessions: the admin and viewer tokens, the
//! role each grants, and the signed session cookie (`role.expiry.nonce.mac`,
//! an HMAC-SHA256 under a key derived from the admin token, so changing the
//! token ends every session). Plain values: it serves no route and reads no
//! request; [`super::auth`] does, with these.

use hmac::{KeyInit, Mac};
use subtle::ConstantTimeEq;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The session cookie's name.
pub const COOKIE: &str = "lf_session";
pub(super) const SESSION_SECS: i64 = 12 * 3600;

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Viewer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Admin => "admin",
        }
    }
}

/// The caller of one request, as the handlers and the audit log see it.
#[derive(Debug, Clone)]
pub struct Session {
    pub role: Role,
    /// For the audit log: "admin (session, 127.0.0.1)".
    pub who: String,
    /// The CSRF token this session's forms carry; `None` for bearer requests.
    pub csrf: Option<String>,
}

/// The tokens and the signing key.
#[derive(Clone)]
pub struct Auth {
    admin: Option<String>,
    viewer: Option<String>,
    key: [u8; 32],
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("admin", &self.admin.as_ref().map(|_| "***"))
            .field("viewer", &self.viewer.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// From `LEDGERFLOW_ADMIN_TOKEN` and `LEDGERFLOW_VIEWER_TOKEN` (blank: unset).
    pub fn from_env() -> Result<Auth, String> {
        let env = |name: &str| std::env::var(name).ok().filter(|t| !t.trim().is_empty());
        Auth::new(
            env("LEDGERFLOW_ADMIN_TOKEN"),
            env("LEDGERFLOW_VIEWER_TOKEN"),
        )
    }

    pub fn new(admin: Option<String>, viewer: Option<String>) -> Result<Auth, String> {
        for (name, t) in [
            ("LEDGERFLOW_ADMIN_TOKEN", &admin),
            ("LEDGERFLOW_VIEWER_TOKEN", &viewer),
        ] {
            if t.as_ref().is_some_and(|t| t.len() < 16) {
                return Err(format!(
                    "{name} is too short: use 16 characters or more (`openssl rand -hex 24`)"
                ));
            }
        }
        if admin.is_some() && admin == viewer {
            return Err("LEDGERFLOW_ADMIN_TOKEN and LEDGERFLOW_VIEWER_TOKEN must differ".into());
        }
        if admin.is_none() && viewer.is_some() {
            return Err("LEDGERFLOW_VIEWER_TOKEN needs LEDGERFLOW_ADMIN_TOKEN too (someone must be able to act)".into());
        }
        let key = match &admin {
            Some(t) => {
                let mut mac = mac_with(t.as_bytes());
                mac.update(b"ledgerflow console session key");
                mac.finalize().into_bytes().into()
            }
            None => rand::random(),
        };
        Ok(Auth { admin, viewer, key })
    }

    pub fn has_admin_token(&self) -> bool {
        self.admin.is_some()
    }

    pub(super) fn open(&self) -> bool {
        self.admin.is_none()
    }

    /// The role a presented token grants.
    pub fn role_of(&self, token: &str) -> Option<Role> {
        let eq = |t: &Option<String>| t.as_deref().is_some_and(|t| self.same(t, token));
        if eq(&self.admin) {
            Some(Role::Admin)
        } else if eq(&self.viewer) {
            Some(Role::Viewer)
        } else {
            None
        }
    }

    /// Constant-time equality of two secrets.
    pub fn same(&self, a: &str, b: &str) -> bool {
        a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
    }

    pub(super) fn sign(&self, text: &str) -> String {
        let mut mac = mac_with(&self.key);
        mac.update(text.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// A new session cookie's value.
    pub(super) fn new_session(&self, role: Role) -> String {
        let expires = chrono::Utc::now().timestamp() + SESSION_SECS;
        let nonce = hex::encode(rand::random::<[u8; 12]>());
        let base = format!("{}.{expires}.{nonce}", role.as_str());
        let mac = self.sign(&format!("session|{base}"));
        format!("{base}.{mac}")
    }

    /// The role of a valid, unexpired session cookie.
    pub(super) fn check_session(&self, value: &str) -> Option<Role> {
        let (base, mac) = value.rsplit_once('.')?;
        if !self.same(&self.sign(&format!("session|{base}")), mac) {
            return None;
        }
        let mut parts = base.split('.');
        let role = match parts.next()? {
            "admin" => Role::Admin,
            "viewer" => Role::Viewer,
            _ => return None,
        };
        let expires: i64 = parts.next()?.parse().ok()?;
        (expires > chrono::Utc::now().timestamp()).then_some(role)
    }

    /// The CSRF token of the forms of a session.
    pub fn csrf_for(&self, cookie_value: &str) -> String {
        self.sign(&format!("csrf|{cookie_value}"))
    }
}

fn mac_with(key: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length.
    <HmacSha256 as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(
            Some("admin-token-0123456789".into()),
            Some("viewer-token-0123456789".into()),
        )
        .unwrap()
    }

    #[test]
    fn tokens_grant_their_roles() {
        let a = auth();
        assert_eq!(a.role_of("admin-token-0123456789"), Some(Role::Admin));
        assert_eq!(a.role_of("viewer-token-0123456789"), Some(Role::Viewer));
        assert_eq!(a.role_of("admin-token-012345678"), None);
        assert_eq!(a.role_of(""), None);
        assert!(Auth::new(Some("short".into()), None).is_err());
        assert!(Auth::new(None, Some("viewer-token-0123456789".into())).is_err());
        let same = Some("same-token-0123456789".to_string());
        assert!(Auth::new(same.clone(), same).is_err());
    }

    #[test]
    fn sessions_are_signed_and_expire() {
        let a = auth();
        let v = a.new_session(Role::Viewer);
        assert_eq!(a.check_session(&v), Some(Role::Viewer));
        // A viewer cannot promote its own cookie.
        let forged = v.replacen("viewer", "admin", 1);
        assert_eq!(a.check_session(&forged), None);
        // Another admin token (a rotation) ends every session.
        let rotated = Auth::new(Some("other-admin-token-0123".into()), None).unwrap();
        assert_eq!(rotated.check_session(&v), None);
        // An expired one is refused even with a valid MAC.
        let base = "admin.1000.00";
        let old = format!("{base}.{}", a.sign(&format!("session|{base}")));
        assert_eq!(a.check_session(&old), None);
        // CSRF tokens differ per session.
        assert_ne!(a.csrf_for(&v), a.csrf_for(&a.new_session(Role::Viewer)));
    }
}
