//! Who may ask and who may change: bearer tokens mapped to a tenant and a role.
//!
//! Tokens live only as SHA-256 hashes in a tokens file (never in the config, never on a command
//! line). A data-plane caller's tenant comes from its credential and wins over any tenant field
//! in the request: naming another tenant is PERMISSION_DENIED (HTTP 403). Admin calls need the
//! admin role; an admin token bound to a tenant may only change that tenant's sets. Owns the
//! tokens file format and these rules; the edges call [`Authenticator::authenticate`] and
//! [`Identity::tenant_for`].

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// What a credential may do; described in `config` (tokens files and `[[tls.client]]` name it).
pub use crate::config::Role;

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    /// The tenant the credential belongs to; `None` only for an all-tenant admin.
    pub tenant: Option<String>,
    pub role: Role,
}

/// Why a call is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing or unknown credential")]
    Unauthenticated,
    #[error("{0}")]
    PermissionDenied(String),
}

impl Identity {
    /// The tenant a request acts for: the credential's, unless the request names another
    /// (refused). All-tenant admins act for the tenant they name.
    pub fn tenant_for<'a>(
        identity: Option<&'a Identity>,
        requested: &'a str,
    ) -> Result<&'a str, AuthError> {
        if identity.is_some_and(|i| i.role == Role::Metrics) {
            return Err(AuthError::PermissionDenied(
                "a metrics credential reads metrics only".into(),
            ));
        }
        match identity.and_then(|i| i.tenant.as_deref()) {
            None => Ok(requested),
            Some(own) if requested.is_empty() || requested == own => Ok(own),
            Some(own) => Err(AuthError::PermissionDenied(format!(
                "credential of tenant '{own}' cannot act for another tenant"
            ))),
        }
    }

    /// True for the operator: an admin credential bound to no tenant, or an anonymous caller
    /// when anonymous callers are allowed (loopback only, see `config`). The operator sees
    /// every tenant's metadata; everyone else only their own.
    pub fn is_operator(identity: Option<&Identity>) -> bool {
        identity.is_none_or(|i| i.role == Role::Admin && i.tenant.is_none())
    }

    /// May read `/metrics`: a metrics credential or the operator.
    pub fn may_read_metrics(identity: Option<&Identity>) -> bool {
        identity.is_none_or(|i| i.role == Role::Metrics || Identity::is_operator(Some(i)))
    }

    /// Refuses callers without the admin role (when authentication is on).
    pub fn require_admin(identity: Option<&Identity>, auth_enabled: bool) -> Result<(), AuthError> {
        match identity {
            Some(identity) if identity.role == Role::Admin => Ok(()),
            Some(_) => Err(AuthError::PermissionDenied(
                "this credential has no admin role".into(),
            )),
            None if auth_enabled => Err(AuthError::Unauthenticated),
            None => Ok(()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    /// Hex SHA-256 of the token.
    sha256: String,
    tenant: Option<String>,
    role: Role,
}

/// Maps presented tokens to identities.
#[derive(Debug, Default)]
pub struct Authenticator {
    /// When false, callers without a credential are allowed (loopback demo); a credential that
    /// is presented is still checked.
    required: bool,
    tokens: HashMap<[u8; 32], Arc<Identity>>,
}

impl Authenticator {
    /// No authentication: every caller is anonymous and unrestricted (loopback only).
    pub fn disabled() -> Authenticator {
        Authenticator::default()
    }

    pub fn is_enabled(&self) -> bool {
        self.required || !self.tokens.is_empty()
    }

    /// Reads a tokens file; `known_tenants` are the configured tenants.
    pub fn load(
        path: &Path,
        required: bool,
        known_tenants: &[&str],
    ) -> Result<Authenticator, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read tokens file {}: {e}", path.display()))?;
        Authenticator::parse(&text, &path.display().to_string(), required, known_tenants)
    }

    /// Parses tokens-file text; `file` names it in errors (which never echo a hash or token).
    pub fn parse(
        text: &str,
        file: &str,
        required: bool,
        known_tenants: &[&str],
    ) -> Result<Authenticator, String> {
        let file_entries: TokensFile =
            toml::from_str(text).map_err(|e| format!("tokens file {file}: {}", e.message()))?;
        let mut tokens = HashMap::new();
        for (index, entry) in file_entries.token.into_iter().enumerate() {
            let at = format!(
                "tokens file {file}: token {} ('{}')",
                index + 1,
                entry.name.chars().take(64).collect::<String>()
            );
            let mut hash = [0u8; 32];
            hex::decode_to_slice(entry.sha256.trim(), &mut hash)
                .map_err(|_| format!("{at}: sha256 must be 64 hex digits"))?;
            if let Some(tenant) = &entry.tenant
                && !known_tenants.contains(&tenant.as_str())
            {
                return Err(format!("{at}: unknown tenant '{tenant}'"));
            }
            if entry.tenant.is_none() && entry.role == Role::Check {
                return Err(format!("{at}: a check credential needs a tenant"));
            }
            if entry.tenant.is_some() && entry.role == Role::Metrics {
                return Err(format!(
                    "{at}: a metrics credential reads daemon-wide metrics: no tenant"
                ));
            }
            let identity = Identity {
                name: entry.name,
                tenant: entry.tenant,
                role: entry.role,
            };
            if tokens.insert(hash, Arc::new(identity)).is_some() {
                return Err(format!("{at}: the same token hash appears twice"));
            }
        }
        Ok(Authenticator { required, tokens })
    }

    /// Checks an `Authorization` header value ("Bearer <token>").
    pub fn authenticate(&self, header: Option<&str>) -> Result<Option<Arc<Identity>>, AuthError> {
        let Some(header) = header else {
            return if self.required {
                Err(AuthError::Unauthenticated)
            } else {
                Ok(None)
            };
        };
        // The scheme is case-insensitive (RFC 9110 section 11.1); the token is not.
        let token = header
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
            .map(|_| header[7..].trim())
            .ok_or(AuthError::Unauthenticated)?;
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.tokens
            .get(&hash)
            .cloned()
            .map(Some)
            .ok_or(AuthError::Unauthenticated)
    }
}

/// The tokens-file entry for a token, for `suppressd token`: only its hash is stored.
pub fn token_entry(name: &str, token: &str, tenant: Option<&str>, role: Role) -> String {
    let hash: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
    let mut entry = format!(
        "[[token]]\nname = \"{name}\"\nsha256 = \"{}\"\n",
        hex::encode(hash)
    );
    if let Some(tenant) = tenant {
        entry.push_str(&format!("tenant = \"{tenant}\"\n"));
    }
    entry.push_str(match role {
        Role::Check => "role = \"check\"\n",
        Role::Admin => "role = \"admin\"\n",
        Role::Metrics => "role = \"metrics\"\n",
    });
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator(dir: &Path) -> Authenticator {
        let text = [
            token_entry("dialer", "secret-acme", Some("acme"), Role::Check),
            token_entry("ops", "secret-admin", None, Role::Admin),
            token_entry("acme-ops", "secret-acme-admin", Some("acme"), Role::Admin),
        ]
        .join("\n");
        std::fs::write(dir.join("tokens.toml"), text).unwrap();
        Authenticator::load(&dir.join("tokens.toml"), true, &["acme", "other"]).unwrap()
    }

    #[test]
    fn tokens_map_to_identities() {
        let dir = tempfile::tempdir().unwrap();
        let auth = authenticator(dir.path());
        let dialer = auth
            .authenticate(Some("Bearer secret-acme"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (dialer.tenant.as_deref(), dialer.role),
            (Some("acme"), Role::Check)
        );
        assert_eq!(auth.authenticate(None), Err(AuthError::Unauthenticated));
        assert_eq!(
            auth.authenticate(Some("Bearer wrong")),
            Err(AuthError::Unauthenticated)
        );
        assert_eq!(
            auth.authenticate(Some("secret-acme")),
            Err(AuthError::Unauthenticated)
        );
        let text = std::fs::read_to_string(dir.path().join("tokens.toml")).unwrap();
        assert!(!text.contains("secret-acme"), "plain token stored");
    }

    #[test]
    fn the_credential_tenant_wins() {
        let dialer = Identity {
            name: "d".into(),
            tenant: Some("acme".into()),
            role: Role::Check,
        };
        assert_eq!(Identity::tenant_for(Some(&dialer), ""), Ok("acme"));
        assert_eq!(Identity::tenant_for(Some(&dialer), "acme"), Ok("acme"));
        assert!(matches!(
            Identity::tenant_for(Some(&dialer), "other"),
            Err(AuthError::PermissionDenied(_))
        ));
        assert_eq!(Identity::tenant_for(None, "other"), Ok("other"));
        assert!(Identity::require_admin(Some(&dialer), true).is_err());
        assert!(Identity::require_admin(None, true).is_err());
        assert!(Identity::require_admin(None, false).is_ok());
    }

    #[test]
    fn bad_tokens_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        for text in [
            "[[token]]\nname = \"x\"\nsha256 = \"zz\"\ntenant = \"acme\"\nrole = \"check\"\n",
            &token_entry("x", "t", Some("nobody"), Role::Check),
            &token_entry("x", "t", None, Role::Check),
            &format!(
                "{}{}",
                token_entry("a", "t", Some("acme"), Role::Check),
                token_entry("b", "t", Some("acme"), Role::Check)
            ),
            "[[token]]\nname = \"x\"\nsha256 = \"00\"\nrole = \"root\"\n",
        ] {
            std::fs::write(&path, text).unwrap();
            assert!(
                Authenticator::load(&path, true, &["acme"]).is_err(),
                "{text}"
            );
        }
    }
}
