//! The secrets a config names, loaded by the server before it binds any port.
//!
//! Owns turning `config`'s paths into live objects: the TLS certificates (`[tls]`), the bearer
//! tokens (`auth.tokens_file`), the audit fingerprint key (`audit.key_file`) and the fleet keys
//! and NATS credentials (`[fleet]`). A failure is
//! a [`ConfigError`] naming the config file and key, so `serve` exits 64 with the message it
//! always gave, before any socket exists. Never reads anything the config does not name, and
//! never logs a secret.

use crate::config::{Config, ConfigError};
use crate::engine::keys::SecretKey;
use crate::server::auth::Authenticator;
use crate::server::tls::Tls;
use std::sync::Arc;

/// What the daemon loaded from the files its config names.
#[derive(Debug)]
pub struct Secrets {
    /// Certificates from `[tls]`, reloaded on SIGHUP; None: plain text.
    pub tls: Option<Arc<Tls>>,
    /// Credentials from `[auth]`; disabled (everyone anonymous) without a tokens file.
    pub authenticator: Arc<Authenticator>,
    /// The audit fingerprint key from `[audit]`, if any.
    pub audit_key: Option<SecretKey>,
    /// `[fleet]`'s keys and NATS credentials, in fleet mode.
    pub fleet: Option<crate::fleet::FleetSecrets>,
}

impl Secrets {
    /// Loads the tokens file, the audit key and the certificates, in that order (the order
    /// their checks always ran in).
    pub fn load(config: &Config) -> Result<Secrets, ConfigError> {
        let error = |key: &str, reason: String| ConfigError {
            file: config.path.clone(),
            key: key.to_owned(),
            reason,
        };
        let authenticator = match config.tokens_file() {
            None => Authenticator::disabled(),
            Some(path) => {
                let tenants: Vec<&str> = config.tenants().keys().map(String::as_str).collect();
                Authenticator::load(path, config.auth_required(), &tenants)
                    .map_err(|reason| error("auth.tokens_file", reason))?
            }
        };
        let audit_key = config
            .audit_key_file()
            .map(SecretKey::load)
            .transpose()
            .map_err(|e| error("audit.key_file", e.to_string()))?;
        let tls = config
            .tls()
            .map(|files| Tls::load(files.clone()).map(Arc::new))
            .transpose()
            .map_err(|reason| error("tls", reason))?;
        let fleet = config
            .fleet()
            .map(crate::fleet::FleetSecrets::load)
            .transpose()
            .map_err(|reason| error("fleet", reason))?;
        Ok(Secrets {
            tls,
            authenticator: Arc::new(authenticator),
            audit_key,
            fleet,
        })
    }
}
