//! `[fleet]` checked: the NATS JetStream log of a fleet of daemons, as settings and paths.
//!
//! Owns the rules of `[fleet]` (servers, names that are valid NATS stream, subject and
//! consumer tokens, one kind of credentials, TLS files, bounds of the timeouts) and the
//! defaults that depend on other settings (stream and subject from the fleet name, host id
//! from the hostname). Never reads the key or credential files it names: `server::secrets`
//! does, before binding.

use super::raw::FleetConfig;
use super::{ConfigError, err, resolve};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which NATS credentials, as files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetAuth {
    None,
    UserPassword { user: PathBuf, password: PathBuf },
    Token(PathBuf),
    Nkey(PathBuf),
    Creds(PathBuf),
}

/// A checked `[fleet]`, paths resolved against the config's directory.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    pub servers: Vec<String>,
    pub name: String,
    pub host_id: String,
    pub stream: String,
    pub subject_prefix: String,
    /// The key-value bucket where each host claims its host id.
    pub hosts_bucket: String,
    pub replicas: usize,
    pub duplicate_window: Duration,
    pub timeout: Duration,
    pub max_lag: Duration,
    /// The first seals; every one opens.
    pub key_files: Vec<PathBuf>,
    pub auth: FleetAuth,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_client: Option<(PathBuf, PathBuf)>,
    /// The compaction lease's time to live (`fleet::lease`).
    pub lease_ttl: Duration,
}

impl FleetSettings {
    /// The subject a tenant's mutations go to (`_global` for tenant-less change lists).
    pub fn subject(&self, tenant: &str) -> String {
        let tenant = if tenant.is_empty() { "_global" } else { tenant };
        format!("{}.{tenant}", self.subject_prefix)
    }
}

/// Letters, digits, '_' and '-': valid as a NATS stream name, consumer name and subject token.
fn token(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// The hostname, as a consumer name ('.' and other characters a token cannot hold as '-').
fn hostname() -> Option<String> {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if rc != 0 {
        return None;
    }
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    let name: String = String::from_utf8_lossy(&buffer[..end])
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    (!name.is_empty()).then_some(name)
}

/// Checks `[fleet]` and resolves its defaults and paths.
pub(super) fn settings(
    file: &str,
    base: &Path,
    raw: &FleetConfig,
) -> Result<FleetSettings, ConfigError> {
    let e = |key: &str, reason: &str| err(file, format!("fleet.{key}"), reason);
    if raw.servers.is_empty() {
        return Err(e("servers", "needs at least one NATS server URL"));
    }
    for url in &raw.servers {
        let scheme = url.split("://").next().unwrap_or("");
        if !url.contains("://") || !matches!(scheme, "nats" | "tls") {
            return Err(e(
                "servers",
                "each server must be a nats:// or tls:// URL (host:port)",
            ));
        }
    }
    if !token(&raw.name) {
        return Err(e(
            "name",
            "must be 1-64 letters, digits, '_' or '-' (it names a NATS stream and subjects)",
        ));
    }
    let host_id = match (&raw.host_id, &raw.host_id_env) {
        (Some(_), Some(_)) => {
            return Err(e("host_id_env", "give host_id or host_id_env, not both"));
        }
        (Some(id), None) => id.clone(),
        (None, Some(variable)) => std::env::var(variable).map_err(|_| {
            e(
                "host_id_env",
                &format!("environment variable {variable} is not set"),
            )
        })?,
        (None, None) => hostname().ok_or_else(|| e("host_id", "no hostname: set fleet.host_id"))?,
    };
    if !token(&host_id) {
        return Err(e(
            "host_id",
            "must be 1-64 letters, digits, '_' or '-' (it names this host's NATS consumer)",
        ));
    }
    let stream = raw
        .stream
        .clone()
        .unwrap_or_else(|| format!("suppressd-{}", raw.name));
    if !token(&stream) {
        return Err(e("stream", "must be 1-64 letters, digits, '_' or '-'"));
    }
    let subject_prefix = raw
        .subject_prefix
        .clone()
        .unwrap_or_else(|| format!("suppressd.{}", raw.name));
    if subject_prefix.split('.').any(|t| !token(t)) {
        return Err(e(
            "subject_prefix",
            "must be '.'-separated tokens of letters, digits, '_' or '-' (no wildcards)",
        ));
    }
    let hosts_bucket = raw
        .hosts_bucket
        .clone()
        .unwrap_or_else(|| format!("suppressd-{}-hosts", raw.name));
    if !token(&hosts_bucket) {
        return Err(e(
            "hosts_bucket",
            "must be 1-64 letters, digits, '_' or '-'",
        ));
    }
    if !(1..=5).contains(&raw.replicas) {
        return Err(e("replicas", "must be 1..=5 (3 in production)"));
    }
    if !(1..=86_400).contains(&raw.duplicate_window_seconds) {
        return Err(e("duplicate_window_seconds", "must be 1..=86400"));
    }
    if !(1..=600_000).contains(&raw.timeout_ms) {
        return Err(e("timeout_ms", "must be 1..=600000"));
    }
    if !(1..=86_400).contains(&raw.max_lag_seconds) {
        return Err(e("max_lag_seconds", "must be 1..=86400"));
    }
    if !(2..=3600).contains(&raw.compaction_lease_seconds) {
        return Err(e("compaction_lease_seconds", "must be 2..=3600"));
    }
    if raw.key_files.is_empty() {
        return Err(e(
            "key_files",
            "needs at least one fleet key file (suppressd keygen --fleet): the stream never holds a number in the clear",
        ));
    }
    let path = |p: &PathBuf| resolve(base, p);
    let auth = match (
        &raw.user_file,
        &raw.password_file,
        &raw.token_file,
        &raw.nkey_file,
        &raw.creds_file,
    ) {
        (None, None, None, None, None) => FleetAuth::None,
        (Some(user), Some(password), None, None, None) => FleetAuth::UserPassword {
            user: path(user),
            password: path(password),
        },
        (None, None, Some(token), None, None) => FleetAuth::Token(path(token)),
        (None, None, None, Some(nkey), None) => FleetAuth::Nkey(path(nkey)),
        (None, None, None, None, Some(creds)) => FleetAuth::Creds(path(creds)),
        (Some(_), None, None, None, None) | (None, Some(_), None, None, None) => {
            return Err(e("user_file", "user_file and password_file go together"));
        }
        _ => {
            return Err(e(
                "user_file",
                "give one kind of NATS credentials: user_file + password_file, token_file, nkey_file or creds_file",
            ));
        }
    };
    let tls_client = match (&raw.tls_cert_file, &raw.tls_key_file) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some((path(cert), path(key))),
        _ => {
            return Err(e(
                "tls_cert_file",
                "tls_cert_file and tls_key_file go together",
            ));
        }
    };
    let tls_wanted = raw.tls_ca_file.is_some() || tls_client.is_some();
    if tls_wanted && raw.servers.iter().any(|u| u.starts_with("nats://")) {
        return Err(e(
            "servers",
            "with TLS files every server must be a tls:// URL (a nats:// URL would fall back to plain text)",
        ));
    }
    Ok(FleetSettings {
        servers: raw.servers.clone(),
        name: raw.name.clone(),
        host_id,
        stream,
        subject_prefix,
        hosts_bucket,
        replicas: raw.replicas,
        duplicate_window: Duration::from_secs(raw.duplicate_window_seconds),
        timeout: Duration::from_millis(raw.timeout_ms),
        max_lag: Duration::from_secs(raw.max_lag_seconds),
        key_files: raw.key_files.iter().map(path).collect(),
        auth,
        tls_ca_file: raw.tls_ca_file.as_ref().map(path),
        tls_client,
        lease_ttl: Duration::from_secs(raw.compaction_lease_seconds),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    const BASE: &str = r#"
[sets.reg]
kind = "block"
reason = "national_registry"
files = "reg.*.snap"

[tenants.t]
region = "US"

[tenants.t.campaigns.c]
block_sets = ["reg"]

[fleet]
servers = ["nats://127.0.0.1:4222"]
name = "prod"
host_id = "host-a"
key_files = ["fleet.key"]
"#;

    fn parse(extra: &str) -> Result<Config, String> {
        Config::parse(&format!("{BASE}{extra}"), "c.toml", Path::new("/etc/s"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_follow_the_fleet_name_and_paths_resolve() {
        let config = parse("").unwrap();
        let fleet = config.fleet().unwrap();
        assert_eq!(fleet.stream, "suppressd-prod");
        assert_eq!(fleet.hosts_bucket, "suppressd-prod-hosts");
        assert_eq!(fleet.subject("acme"), "suppressd.prod.acme");
        assert_eq!(fleet.subject(""), "suppressd.prod._global");
        assert_eq!(fleet.key_files, vec![Path::new("/etc/s/fleet.key")]);
        assert_eq!(fleet.max_lag.as_secs(), 30);
        assert!(
            Config::parse(BASE.split("[fleet]").next().unwrap(), "c", Path::new("/"))
                .unwrap()
                .fleet()
                .is_none()
        );
    }

    #[test]
    fn refuses_what_nats_cannot_name_or_reach_safely() {
        for (extra, key) in [
            ("replicas = 0\n", "fleet.replicas"),
            ("token_file = \"t\"\nnkey_file = \"n\"\n", "fleet.user_file"),
            ("user_file = \"u\"\n", "fleet.user_file"),
            ("tls_ca_file = \"ca.pem\"\n", "fleet.servers"),
            ("max_lag_seconds = 0\n", "fleet.max_lag_seconds"),
            ("subject_prefix = \"a.*\"\n", "fleet.subject_prefix"),
            ("hosts_bucket = \"a.b\"\n", "fleet.hosts_bucket"),
            ("stream = \"a.b\"\n", "fleet.stream"),
        ] {
            let error = parse(extra).unwrap_err();
            assert!(error.contains(key), "{extra}: {error}");
        }
        let no_keys = BASE.replace("key_files = [\"fleet.key\"]", "key_files = []");
        let error = Config::parse(&no_keys, "c", Path::new("/")).unwrap_err();
        assert_eq!(error.key, "fleet.key_files");
        let bad_host = BASE.replace("host-a", "host a");
        let error = Config::parse(&bad_host, "c", Path::new("/")).unwrap_err();
        assert_eq!(error.key, "fleet.host_id");
    }
}
