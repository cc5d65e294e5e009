//! The daemon's TOML configuration: parsing and validation.
//!
//! Owns the file format (`deny_unknown_fields` everywhere) and every check that can be made
//! before a port is bound: addresses, set and tenant names, file patterns, regions, prefixes,
//! references from campaigns to sets, key files. Errors name the file, the key and the reason;
//! the binary exits 64 on them. Never binds, never touches the data directory.

use crate::engine::keys::SecretKey;
use crate::engine::number::Region;
use crate::engine::snapshot::SetKind;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// The example configuration shipped with suppressd and used when no `--config` is given.
pub const EXAMPLE_CONFIG: &str = include_str!("../deploy/example-config.toml");

/// A configuration error: where, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "config {}: {}", self.file, self.reason)
        } else {
            write!(f, "config {}: {}: {}", self.file, self.key, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub sets: BTreeMap<String, SetConfig>,
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
    /// The SIP redirect dip (`server::sip`); off unless a listen address is given.
    #[serde(default)]
    pub sip: SipConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    /// TLS for every TCP listener; plain text without it (loopback, or `allow_plaintext`).
    pub tls: Option<crate::server::tls::TlsConfig>,
}

/// `[audit]`: the log of admin mutations (see `server::audit`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Key for fingerprinting numbers in audit entries; without it entries carry no number
    /// information beyond counts.
    pub key_file: Option<PathBuf>,
    /// Days an audit segment is kept (US rules keep do-not-call requests 5 years).
    pub retention_days: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            key_file: None,
            retention_days: 1830,
        }
    }
}

/// `[auth]`: bearer-token credentials (see `server::auth`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// File of `[[token]]` entries holding SHA-256 hashes of tokens, never tokens.
    pub tokens_file: Option<PathBuf>,
    /// Refuse callers without a credential. Needs a tokens file.
    #[serde(default)]
    pub required: bool,
}

/// Log output. Phone numbers never appear in the clear whatever the level.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// "text" (human) or "json" (one object per line, for log shippers).
    pub format: LogFormat,
    /// An env-filter directive such as "info" or "suppressd=debug"; RUST_LOG overrides it.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[sip]`: the SIP redirect dip for proxies (see `server::sip` for its answers).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// UDP address of the dip, e.g. "127.0.0.1:5070"; off when absent.
    pub listen_udp: Option<String>,
    /// TCP address of the dip; off when absent.
    pub listen_tcp: Option<String>,
    /// SIP header naming the tenant; absent or empty: `defaults.tenant`.
    pub tenant_header: String,
    /// SIP header naming the campaign; absent or empty: `defaults.campaign`.
    pub campaign_header: String,
    /// Status of a blocked call: 603 (Decline) or 608 (Rejected, RFC 8688).
    pub block_status: u16,
    /// Source networks the dip answers for any tenant, e.g. ["127.0.0.1/32", "10.0.0.0/8"];
    /// datagrams from elsewhere are dropped and connections closed. Required (this or
    /// `[[sip.source]]`) when a SIP listener is not on loopback; absent on loopback: every
    /// source.
    pub allowed_sources: Option<Vec<String>>,
    /// `[[sip.source]]`: a source network bound to the tenants (and campaigns) it may ask for.
    /// A source matching several entries (here or in `allowed_sources`) gets the most specific
    /// one (longest prefix).
    pub source: Vec<SipSourceConfig>,
    /// Seconds a SIP TCP connection may sit idle before it is closed.
    pub tcp_idle_seconds: u64,
    /// SIP TCP connections at a time, over all sources.
    pub tcp_max_connections: usize,
    /// SIP TCP connections at a time from one source address.
    pub tcp_max_connections_per_source: usize,
}

/// `[[sip.source]]`: who may ask the dip for which tenants.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipSourceConfig {
    /// "10.1.0.0/16", or one address.
    pub network: String,
    /// The tenants requests from this network may name (or get by default).
    pub tenants: Vec<String>,
    /// If given, the only campaigns these requests may name (or get by default).
    pub campaigns: Option<Vec<String>>,
}

/// A source network the SIP dip answers, and what it may ask for (None: anything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipSource {
    pub network: IpNetwork,
    pub tenants: Option<Vec<String>>,
    pub campaigns: Option<Vec<String>>,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen_udp: None,
            listen_tcp: None,
            tenant_header: "X-Tenant".into(),
            campaign_header: "X-Campaign".into(),
            block_status: 603,
            allowed_sources: None,
            source: Vec::new(),
            tcp_idle_seconds: 60,
            tcp_max_connections: 1024,
            tcp_max_connections_per_source: 32,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// gRPC data plane address.
    pub grpc_listen: String,
    /// Where snapshot files live; relative paths resolve against the config file's directory.
    pub data_dir: PathBuf,
    /// Seconds between scans of the data directory (file watching misses some file systems).
    pub reload_poll_seconds: u64,
    /// Most numbers in one batch request.
    pub max_batch: usize,
    /// Largest gRPC message accepted or sent, and largest HTTP request body.
    pub max_message_bytes: usize,
    /// Deadline for one request.
    pub request_timeout_ms: u64,
    /// Concurrent requests per connection (HTTP/2 streams).
    pub concurrency_per_connection: u32,
    /// Check requests in flight over all APIs; more are refused at once (RESOURCE_EXHAUSTED,
    /// HTTP 429, SIP 503), never queued.
    pub max_in_flight: usize,
    pub http2_keepalive_interval_seconds: u64,
    pub http2_keepalive_timeout_seconds: u64,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace_seconds: u64,
    /// Generate the sample lists into an empty data directory (the embedded demo does this).
    pub generate_samples: bool,
    /// HTTP/1.1 plane for SIP proxies (`/v1/check`), health (`/healthz`, `/readyz`) and
    /// metrics (`/metrics`); off when absent.
    pub http_listen: Option<String>,
    /// Prometheus metrics (`/metrics`, `/healthz`) on a listener of their own, e.g.
    /// "127.0.0.1:9464"; off when absent. On loopback it needs no credential (the usual
    /// Prometheus practice); elsewhere, with `auth.required`, a `metrics` or operator credential.
    pub metrics_listen: Option<String>,
    /// Admin gRPC plane (mutations, erasure receipts, reload, compaction); off when absent.
    /// Keep it on loopback or a private address.
    pub admin_listen: Option<String>,
    /// Connections open at once on each TCP plane (gRPC, HTTP, admin, metrics); more are
    /// closed at accept. Default: an equal share of the file-descriptor limit (raised to its
    /// hard limit at start), less a reserve for files.
    pub max_connections: Option<usize>,
    /// Connections open at once from one source address on each TCP plane (at most an eighth
    /// of the plane's cap, whatever is set here).
    pub max_connections_per_source: usize,
    /// Time a connection has to deliver a complete HTTP/1.1 request head (or, on gRPC, its
    /// first bytes), counted from accept and from each response: the slow-header bound and the
    /// keep-alive idle timeout.
    pub header_timeout_ms: u64,
    /// Time a TLS handshake may take.
    pub tls_handshake_timeout_ms: u64,
    /// Deadline for one admin request (compaction and erasure can take seconds).
    pub admin_request_timeout_ms: u64,
    /// Admin requests in flight at once; more are refused (RESOURCE_EXHAUSTED).
    pub admin_max_in_flight: usize,
    /// Allow plain text on non-loopback addresses (behind a trusted network or a TLS proxy).
    pub allow_plaintext: bool,
    /// Compact when the overlays hold this many entries in total...
    pub compact_max_overlay_entries: usize,
    /// ...or when the oldest uncompacted mutation is this old.
    pub compact_max_age_seconds: u64,
    /// How long request ids are remembered for idempotency after compaction.
    pub request_id_retention_days: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            grpc_listen: "127.0.0.1:50151".into(),
            data_dir: PathBuf::from("data"),
            reload_poll_seconds: 5,
            max_batch: 10_000,
            max_message_bytes: 16 << 20,
            request_timeout_ms: 2_000,
            concurrency_per_connection: 1024,
            max_in_flight: 2048,
            http2_keepalive_interval_seconds: 30,
            http2_keepalive_timeout_seconds: 10,
            shutdown_grace_seconds: 10,
            generate_samples: false,
            admin_listen: None,
            http_listen: None,
            metrics_listen: None,
            allow_plaintext: false,
            max_connections: None,
            max_connections_per_source: 256,
            header_timeout_ms: 20_000,
            tls_handshake_timeout_ms: 3_000,
            admin_request_timeout_ms: 60_000,
            admin_max_in_flight: 64,
            compact_max_overlay_entries: 100_000,
            compact_max_age_seconds: 300,
            request_id_retention_days: 400,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    pub tenant: Option<String>,
    pub campaign: Option<String>,
}

/// Why a block set blocks: the reason its hits report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockReason {
    NationalRegistry,
    InternalDnc,
    Erased,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetConfig {
    pub kind: SetKindConfig,
    /// Block sets only: the reason a hit reports. Defaults to internal_dnc.
    pub reason: Option<BlockReason>,
    /// File-name pattern in the data directory, e.g. "us-dnc.*.snap"; the newest valid version
    /// (highest header version) is served.
    pub files: String,
    /// Key file for sets of keyed fingerprints (required for erased sets).
    pub key_file: Option<PathBuf>,
    /// Start from an empty set when no file exists yet (sets only the daemon writes, such as
    /// erased sets). Otherwise a missing file fails closed.
    #[serde(default)]
    pub initial_empty: bool,
    /// A new file holding fewer keys than this fraction of the version in force is refused
    /// (a partial download). 0 disables the check. Default: 0.5 for global and
    /// national-registry sets, 0 for the other tenant sets.
    pub min_keys_ratio: Option<f64>,
}

/// `min_keys_ratio` of registry and global sets when the config does not give one.
pub const DEFAULT_REGISTRY_MIN_KEYS_RATIO: f64 = 0.5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetKindConfig {
    Block,
    Consent,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Default region for numbers in national format, e.g. "US", "PL".
    pub region: String,
    #[serde(default)]
    pub sets: BTreeMap<String, SetConfig>,
    #[serde(default)]
    pub campaigns: BTreeMap<String, CampaignConfig>,
    /// Numbers this tenant may check per second over all APIs (a batch of 1000 costs 1000);
    /// no limit when absent.
    pub max_checks_per_second: Option<u32>,
    /// Numbers the tenant may check at once above its rate (the bucket size); defaults to one
    /// second's worth. A batch larger than this is always refused.
    pub burst: Option<u32>,
}

/// What to do when a registry copy is older than the campaign allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StalePolicy {
    #[default]
    Block,
    AllowWithWarning,
}

impl StalePolicy {
    pub fn name(self) -> &'static str {
        match self {
            StalePolicy::Block => "block",
            StalePolicy::AllowWithWarning => "allow_with_warning",
        }
    }
}

fn default_max_age() -> u32 {
    31
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignConfig {
    /// Block sets that apply: the tenant's own set names or global set names.
    #[serde(default)]
    pub block_sets: Vec<String>,
    #[serde(default)]
    pub require_consent: bool,
    #[serde(default)]
    pub consent_sets: Vec<String>,
    /// E.164 prefixes never to call, e.g. "+1900" (premium rate), "+48112" (emergency).
    #[serde(default)]
    pub blocked_prefixes: Vec<String>,
    /// Maximum age of a national registry copy, in days (US rescrub rule: 31).
    #[serde(default = "default_max_age")]
    pub max_list_age_days: u32,
    #[serde(default)]
    pub stale_list: StalePolicy,
}

/// A set as the daemon knows it: where it comes from and how it blocks.
#[derive(Debug, Clone)]
pub struct SetDefinition {
    /// "us-dnc" for a global set, "acme/dnc" for a tenant's set.
    pub id: String,
    /// None for global sets.
    pub tenant: Option<String>,
    pub kind: SetKind,
    pub reason: Option<BlockReason>,
    pub pattern: glob::Pattern,
    pub pattern_text: String,
    pub key: Option<SecretKey>,
    pub initial_empty: bool,
    /// Fewest keys a new version may hold, as a fraction of the version in force (0: any).
    pub min_keys_ratio: f64,
}

impl SetDefinition {
    /// The file name of `version` of this set (its pattern with the version for the `*`).
    pub fn file_name(&self, version: u64) -> String {
        self.pattern_text.replacen('*', &version.to_string(), 1)
    }

    /// The set name a snapshot of this set carries in its header: the id with '/' as '-'
    /// ("us-dnc", "acme-dnc"), as the daemon writes it (samples, initial empty versions,
    /// compaction) and as `suppressd build --name` must be given it.
    pub fn header_name(&self) -> String {
        header_name_of(&self.id)
    }

    /// The version a file name carries where the pattern has its `*`; None when `name` does
    /// not match the pattern. The text is returned as is (it may not be a number).
    pub fn version_text<'a>(&self, name: &'a str) -> Option<&'a str> {
        let (prefix, suffix) = self.pattern_text.split_once('*')?;
        let rest = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
        // The prefix and suffix must not overlap in a name shorter than both.
        (name.len() >= prefix.len() + suffix.len()).then_some(rest)
    }
}

/// The header name of the set `id` (see [`SetDefinition::header_name`]).
pub fn header_name_of(id: &str) -> String {
    id.replace('/', "-")
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: String,
    pub raw: RawConfig,
    pub grpc_listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    pub http_listen: Option<SocketAddr>,
    pub metrics_listen: Option<SocketAddr>,
    /// The SIP dip's UDP and TCP addresses (`[sip]`), when configured.
    pub sip_udp_listen: Option<SocketAddr>,
    pub sip_tcp_listen: Option<SocketAddr>,
    /// Networks the SIP dip answers (`sip.allowed_sources`); None: every source.
    pub sip_allowed_sources: Option<Vec<IpNetwork>>,
    /// Every network the SIP dip answers, from `sip.allowed_sources` (any tenant) and
    /// `[[sip.source]]` (bound), most specific first; None: every source, any tenant.
    pub sip_sources: Option<Vec<SipSource>>,
    pub data_dir: PathBuf,
    /// Set by `serve --repair-journal`: truncate a damaged journal instead of refusing to start.
    pub repair_journal: bool,
    /// Certificates from `[tls]`, loaded and checked at start.
    pub tls: Option<std::sync::Arc<crate::server::tls::Tls>>,
    /// The audit fingerprint key from `[audit]`, if any.
    pub audit_key: Option<SecretKey>,
    /// Credentials from `[auth]`; disabled (everyone anonymous) without a tokens file.
    pub authenticator: std::sync::Arc<crate::server::auth::Authenticator>,
    pub sets: Vec<SetDefinition>,
}

fn err(file: &str, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        file: file.to_owned(),
        key: key.into(),
        reason: reason.into(),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !name.starts_with('.')
}

/// An IP network such as 10.0.0.0/8 or ::1/128 (`sip.allowed_sources`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNetwork {
    /// The network address, host bits zero.
    pub address: IpAddr,
    pub prefix: u8,
}

impl IpNetwork {
    /// Parses "address/prefix", or a bare address (one host). Host bits must be zero, so a
    /// typo like 10.0.0.1/8 is an error rather than a silently wider network.
    pub fn parse(text: &str) -> Result<IpNetwork, String> {
        let (address_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let address: IpAddr = address_text
            .parse()
            .map_err(|_| format!("'{text}' is not an IP network like 10.0.0.0/8 or ::1/128"))?;
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => bits,
            Some(p) => match p.parse::<u8>() {
                Ok(prefix) if prefix <= bits && p.bytes().all(|b| b.is_ascii_digit()) => prefix,
                _ => {
                    return Err(format!("'{text}': the prefix length must be 0..={bits}"));
                }
            },
        };
        let network = IpNetwork { address, prefix };
        if network.masked(address) != address {
            return Err(format!(
                "'{text}' has host bits set (the network is {}/{prefix})",
                network.masked(address)
            ));
        }
        Ok(network)
    }

    fn masked(&self, address: IpAddr) -> IpAddr {
        match address {
            IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(v4) & mask).into())
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        }
    }

    /// True when `address` is in this network. IPv4-mapped IPv6 sources (a dual-stack socket)
    /// count as their IPv4 address.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        address.is_ipv4() == self.address.is_ipv4() && self.masked(address) == self.address
    }
}

/// Parses an E.164 prefix like "+1900" into its digits.
pub fn parse_prefix(text: &str) -> Option<(u64, u32)> {
    let digits = text.strip_prefix('+')?;
    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if digits.starts_with('0') {
        return None;
    }
    Some((digits.parse().ok()?, digits.len() as u32))
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(&shown, "", format!("cannot read: {e}")))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, &shown, base)
    }

    /// The embedded example configuration, with relative paths under `base`.
    pub fn example(base: &Path) -> Result<Config, ConfigError> {
        Config::parse(EXAMPLE_CONFIG, "<embedded example>", base)
    }

    /// Parses and validates config text; relative paths resolve against `base`.
    pub fn parse(text: &str, file: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let key = e.span().map(|s| {
                let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                format!("line {line}")
            });
            err(file, key.unwrap_or_default(), e.message().to_owned())
        })?;
        let server = &raw.server;
        let admin_listen: Option<SocketAddr> = match &server.admin_listen {
            None => None,
            Some(text) => Some(text.parse().map_err(|_| {
                err(
                    file,
                    "server.admin_listen",
                    format!("'{text}' is not an address like 127.0.0.1:50152"),
                )
            })?),
        };
        let http_listen: Option<SocketAddr> = match &server.http_listen {
            None => None,
            Some(text) => Some(text.parse().map_err(|_| {
                err(
                    file,
                    "server.http_listen",
                    format!("'{text}' is not an address like 127.0.0.1:8080"),
                )
            })?),
        };
        let metrics_listen: Option<SocketAddr> = match &server.metrics_listen {
            None => None,
            Some(text) => Some(text.parse().map_err(|_| {
                err(
                    file,
                    "server.metrics_listen",
                    format!("'{text}' is not an address like 127.0.0.1:9464"),
                )
            })?),
        };
        let grpc_listen: SocketAddr = server.grpc_listen.parse().map_err(|_| {
            err(
                file,
                "server.grpc_listen",
                format!(
                    "'{}' is not an address like 127.0.0.1:50151",
                    server.grpc_listen
                ),
            )
        })?;
        let (sip_udp_listen, sip_tcp_listen) = validate_sip(file, &raw.sip)?;
        let sip_sources = sip_sources(file, &raw)?;
        // An open dip off loopback would let anyone pick any tenant, and reflect answers.
        if sip_sources.is_none() {
            for (key, address) in [
                ("sip.listen_udp", sip_udp_listen),
                ("sip.listen_tcp", sip_tcp_listen),
            ] {
                if let Some(address) = address
                    && !address.ip().is_loopback()
                {
                    return Err(err(
                        file,
                        "sip.allowed_sources",
                        format!(
                            "required when {key} = {address} is not loopback (or bind sources to tenants with [[sip.source]])"
                        ),
                    ));
                }
            }
        }
        if !(1..=1_000_000).contains(&server.max_batch) {
            return Err(err(file, "server.max_batch", "must be 1..=1000000"));
        }
        if !(4096..=1 << 30).contains(&server.max_message_bytes) {
            return Err(err(
                file,
                "server.max_message_bytes",
                "must be 4096..=1073741824",
            ));
        }
        if server.request_timeout_ms == 0 {
            return Err(err(file, "server.request_timeout_ms", "must be positive"));
        }
        if !(1..=1_000_000).contains(&server.max_in_flight) {
            return Err(err(file, "server.max_in_flight", "must be 1..=1000000"));
        }
        if server
            .max_connections
            .is_some_and(|n| !(1..=1_000_000).contains(&n))
        {
            return Err(err(file, "server.max_connections", "must be 1..=1000000"));
        }
        if server.max_connections_per_source == 0 {
            return Err(err(
                file,
                "server.max_connections_per_source",
                "must be positive",
            ));
        }
        for (key, value) in [
            ("server.header_timeout_ms", server.header_timeout_ms),
            (
                "server.tls_handshake_timeout_ms",
                server.tls_handshake_timeout_ms,
            ),
            (
                "server.admin_request_timeout_ms",
                server.admin_request_timeout_ms,
            ),
        ] {
            if !(100..=3_600_000).contains(&value) {
                return Err(err(file, key, "must be 100..=3600000"));
            }
        }
        if !(1..=100_000).contains(&server.admin_max_in_flight) {
            return Err(err(
                file,
                "server.admin_max_in_flight",
                "must be 1..=100000",
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&raw.log.filter).is_err() {
            return Err(err(
                file,
                "log.filter",
                format!(
                    "'{}' is not a log filter such as \"info\" or \"suppressd=debug\"",
                    raw.log.filter
                ),
            ));
        }
        if server.reload_poll_seconds == 0 {
            return Err(err(file, "server.reload_poll_seconds", "must be positive"));
        }
        if server.concurrency_per_connection == 0 {
            return Err(err(
                file,
                "server.concurrency_per_connection",
                "must be positive",
            ));
        }
        let data_dir = if server.data_dir.is_absolute() {
            server.data_dir.clone()
        } else {
            base.join(&server.data_dir)
        };
        let mut sets = Vec::new();
        for (name, set) in &raw.sets {
            sets.push(define_set(
                file,
                base,
                &format!("sets.{name}"),
                name,
                None,
                set,
            )?);
        }
        for (tenant_name, tenant) in &raw.tenants {
            let at = format!("tenants.{tenant_name}");
            if !valid_name(tenant_name) {
                return Err(err(
                    file,
                    &at,
                    "tenant names are 1-64 letters, digits, '_', '-' or '.'",
                ));
            }
            Region::parse(&tenant.region).map_err(|_| {
                err(
                    file,
                    format!("{at}.region"),
                    format!("unknown region '{}'", tenant.region),
                )
            })?;
            match (tenant.max_checks_per_second, tenant.burst) {
                (Some(rate), _) if !(1..=100_000_000).contains(&rate) => {
                    return Err(err(
                        file,
                        format!("{at}.max_checks_per_second"),
                        "must be 1..=100000000",
                    ));
                }
                (None, Some(_)) => {
                    return Err(err(
                        file,
                        format!("{at}.burst"),
                        "needs max_checks_per_second",
                    ));
                }
                (_, Some(burst)) if !(1..=1_000_000_000).contains(&burst) => {
                    return Err(err(file, format!("{at}.burst"), "must be 1..=1000000000"));
                }
                _ => {}
            }
            for (name, set) in &tenant.sets {
                if raw.sets.contains_key(name) {
                    return Err(err(
                        file,
                        format!("{at}.sets.{name}"),
                        "shadows a global set of the same name",
                    ));
                }
                let id = format!("{tenant_name}/{name}");
                sets.push(define_set(
                    file,
                    base,
                    &format!("{at}.sets.{name}"),
                    &id,
                    Some(tenant_name),
                    set,
                )?);
            }
            if tenant.campaigns.is_empty() {
                return Err(err(
                    file,
                    format!("{at}.campaigns"),
                    "a tenant needs at least one campaign",
                ));
            }
            for (campaign_name, campaign) in &tenant.campaigns {
                let at = format!("{at}.campaigns.{campaign_name}");
                if !valid_name(campaign_name) {
                    return Err(err(
                        file,
                        &at,
                        "campaign names are 1-64 letters, digits, '_', '-' or '.'",
                    ));
                }
                let find = |name: &str| -> Option<&SetDefinition> {
                    let local = format!("{tenant_name}/{name}");
                    sets.iter()
                        .find(|s| s.id == local)
                        .or_else(|| sets.iter().find(|s| s.tenant.is_none() && s.id == name))
                };
                for name in &campaign.block_sets {
                    match find(name) {
                        Some(set) if set.kind == SetKind::Block => {}
                        Some(_) => {
                            return Err(err(
                                file,
                                format!("{at}.block_sets"),
                                format!("'{name}' is a consent set"),
                            ));
                        }
                        None => {
                            return Err(err(
                                file,
                                format!("{at}.block_sets"),
                                format!(
                                    "no set named '{name}' for tenant '{tenant_name}' or globally"
                                ),
                            ));
                        }
                    }
                }
                for name in &campaign.consent_sets {
                    match find(name) {
                        Some(set) if set.kind == SetKind::Consent => {}
                        Some(_) => {
                            return Err(err(
                                file,
                                format!("{at}.consent_sets"),
                                format!("'{name}' is a block set"),
                            ));
                        }
                        None => {
                            return Err(err(
                                file,
                                format!("{at}.consent_sets"),
                                format!(
                                    "no set named '{name}' for tenant '{tenant_name}' or globally"
                                ),
                            ));
                        }
                    }
                }
                if campaign.require_consent && campaign.consent_sets.is_empty() {
                    return Err(err(
                        file,
                        format!("{at}.consent_sets"),
                        "require_consent needs at least one consent set",
                    ));
                }
                for prefix in &campaign.blocked_prefixes {
                    if parse_prefix(prefix).is_none() {
                        return Err(err(
                            file,
                            format!("{at}.blocked_prefixes"),
                            format!("'{prefix}' is not '+' followed by 1-15 digits"),
                        ));
                    }
                }
                if !(1..=3650).contains(&campaign.max_list_age_days) {
                    return Err(err(
                        file,
                        format!("{at}.max_list_age_days"),
                        "must be 1..=3650",
                    ));
                }
            }
        }
        // A file is served only as the set its header names, so two sets must never claim
        // the same header name or the same files.
        for (index, set) in sets.iter().enumerate() {
            for earlier in &sets[..index] {
                if earlier.header_name() == set.header_name() {
                    return Err(err(
                        file,
                        config_key(&set.id),
                        format!(
                            "snapshot headers of '{}' and '{}' would both name the set '{}'",
                            earlier.id,
                            set.id,
                            set.header_name()
                        ),
                    ));
                }
                if earlier.pattern_text == set.pattern_text {
                    return Err(err(
                        file,
                        format!("{}.files", config_key(&set.id)),
                        format!(
                            "'{}' is also the pattern of '{}'",
                            set.pattern_text, earlier.id
                        ),
                    ));
                }
            }
        }
        if let Some(tenant) = &raw.defaults.tenant {
            let Some(found) = raw.tenants.get(tenant) else {
                return Err(err(
                    file,
                    "defaults.tenant",
                    format!("no tenant named '{tenant}'"),
                ));
            };
            if let Some(campaign) = &raw.defaults.campaign
                && !found.campaigns.contains_key(campaign)
            {
                return Err(err(
                    file,
                    "defaults.campaign",
                    format!("tenant '{tenant}' has no campaign '{campaign}'"),
                ));
            }
        } else if raw.defaults.campaign.is_some() {
            return Err(err(
                file,
                "defaults.campaign",
                "a default campaign needs a default tenant",
            ));
        }
        let authenticator = match &raw.auth.tokens_file {
            None if raw.auth.required => {
                return Err(err(file, "auth.required", "needs auth.tokens_file"));
            }
            None => crate::server::auth::Authenticator::disabled(),
            Some(path) => {
                let path = if path.is_absolute() {
                    path.clone()
                } else {
                    base.join(path)
                };
                let tenants: Vec<&str> = raw.tenants.keys().map(String::as_str).collect();
                crate::server::auth::Authenticator::load(&path, raw.auth.required, &tenants)
                    .map_err(|reason| err(file, "auth.tokens_file", reason))?
            }
        };
        let authenticator = std::sync::Arc::new(authenticator);
        let listeners = [
            Some(("server.grpc_listen", grpc_listen)),
            http_listen.map(|a| ("server.http_listen", a)),
            admin_listen.map(|a| ("server.admin_listen", a)),
            metrics_listen.map(|a| ("server.metrics_listen", a)),
        ];
        // Tokens without `required`: anonymous callers stay unrestricted (every tenant, every
        // tenant's metadata). Tolerable on loopback only, like plain text.
        if raw.auth.tokens_file.is_some() && !raw.auth.required {
            for (key, address) in listeners.iter().flatten() {
                if !address.ip().is_loopback() {
                    return Err(err(
                        file,
                        "auth.required",
                        format!(
                            "{key} = {address} is not loopback, and anonymous callers would be unrestricted there: set auth.required = true"
                        ),
                    ));
                }
            }
        }
        let audit_key = match &raw.audit.key_file {
            None => None,
            Some(path) => {
                let path = if path.is_absolute() {
                    path.clone()
                } else {
                    base.join(path)
                };
                Some(
                    SecretKey::load(&path)
                        .map_err(|e| err(file, "audit.key_file", e.to_string()))?,
                )
            }
        };
        let tls = match &raw.tls {
            None => None,
            Some(files) => Some(std::sync::Arc::new(
                crate::server::tls::Tls::load(files.clone(), base)
                    .map_err(|reason| err(file, "tls", reason))?,
            )),
        };
        if tls.is_none() && !raw.server.allow_plaintext {
            for (key, address) in listeners.into_iter().flatten() {
                if !address.ip().is_loopback() {
                    return Err(err(
                        file,
                        key,
                        format!(
                            "{address} is not loopback: configure [tls], or set server.allow_plaintext = true"
                        ),
                    ));
                }
            }
        }
        if raw.audit.retention_days == 0 {
            return Err(err(file, "audit.retention_days", "must be positive"));
        }
        Ok(Config {
            path: file.to_owned(),
            grpc_listen,
            admin_listen,
            http_listen,
            metrics_listen,
            sip_udp_listen,
            sip_tcp_listen,
            sip_allowed_sources: raw.sip.allowed_sources.as_ref().map(|sources| {
                sources
                    .iter()
                    .filter_map(|text| IpNetwork::parse(text).ok())
                    .collect()
            }),
            sip_sources,
            repair_journal: false,
            authenticator,
            audit_key,
            tls,
            data_dir,
            sets,
            raw,
        })
    }
}

/// The SIP dip's source list: `sip.allowed_sources` (any tenant) and `[[sip.source]]`
/// (bound), most specific first; None when neither is given.
fn sip_sources(file: &str, raw: &RawConfig) -> Result<Option<Vec<SipSource>>, ConfigError> {
    let sip = &raw.sip;
    if sip.allowed_sources.is_none() && sip.source.is_empty() {
        return Ok(None);
    }
    let mut sources = Vec::new();
    for text in sip.allowed_sources.iter().flatten() {
        sources.push(SipSource {
            network: IpNetwork::parse(text)
                .map_err(|reason| err(file, "sip.allowed_sources", reason))?,
            tenants: None,
            campaigns: None,
        });
    }
    for (index, source) in sip.source.iter().enumerate() {
        let at = format!("sip.source[{index}]");
        let network = IpNetwork::parse(&source.network)
            .map_err(|reason| err(file, format!("{at}.network"), reason))?;
        if source.tenants.is_empty() {
            return Err(err(
                file,
                format!("{at}.tenants"),
                "name at least one tenant (use sip.allowed_sources for any tenant)",
            ));
        }
        for tenant in &source.tenants {
            if !raw.tenants.contains_key(tenant) {
                return Err(err(
                    file,
                    format!("{at}.tenants"),
                    format!("no tenant named '{tenant}'"),
                ));
            }
        }
        for campaign in source.campaigns.iter().flatten() {
            let known = source
                .tenants
                .iter()
                .any(|t| raw.tenants[t].campaigns.contains_key(campaign));
            if !known {
                return Err(err(
                    file,
                    format!("{at}.campaigns"),
                    format!("no campaign '{campaign}' in the tenants of this source"),
                ));
            }
        }
        sources.push(SipSource {
            network,
            tenants: Some(source.tenants.clone()),
            campaigns: source.campaigns.clone(),
        });
    }
    // Most specific first, so the first match is the longest prefix.
    sources.sort_by_key(|s| std::cmp::Reverse(s.network.prefix));
    Ok(Some(sources))
}

/// Checks `[sip]`: addresses, header names (SIP tokens) and the block status.
fn validate_sip(
    file: &str,
    sip: &SipConfig,
) -> Result<(Option<SocketAddr>, Option<SocketAddr>), ConfigError> {
    let address = |key: &str, text: &Option<String>| -> Result<Option<SocketAddr>, ConfigError> {
        match text {
            None => Ok(None),
            Some(text) => text.parse().map(Some).map_err(|_| {
                err(
                    file,
                    key,
                    format!("'{text}' is not an address like 127.0.0.1:5070"),
                )
            }),
        }
    };
    let udp = address("sip.listen_udp", &sip.listen_udp)?;
    let tcp = address("sip.listen_tcp", &sip.listen_tcp)?;
    if let Some(sources) = &sip.allowed_sources {
        if sources.is_empty() {
            return Err(err(
                file,
                "sip.allowed_sources",
                "an empty list would refuse every source; remove the key to allow any",
            ));
        }
        for text in sources {
            IpNetwork::parse(text).map_err(|reason| err(file, "sip.allowed_sources", reason))?;
        }
    }
    for (key, name) in [
        ("sip.tenant_header", &sip.tenant_header),
        ("sip.campaign_header", &sip.campaign_header),
    ] {
        let token = |b: u8| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b);
        if name.is_empty() || name.len() > 64 || !name.bytes().all(token) {
            return Err(err(
                file,
                key,
                format!("'{name}' is not a SIP header name (1-64 letters, digits or -.!%*_+`'~)"),
            ));
        }
    }
    if sip.tenant_header.eq_ignore_ascii_case(&sip.campaign_header) {
        return Err(err(
            file,
            "sip.campaign_header",
            "must differ from sip.tenant_header",
        ));
    }
    if !(1..=3600).contains(&sip.tcp_idle_seconds) {
        return Err(err(file, "sip.tcp_idle_seconds", "must be 1..=3600"));
    }
    if !(1..=1_000_000).contains(&sip.tcp_max_connections) {
        return Err(err(file, "sip.tcp_max_connections", "must be 1..=1000000"));
    }
    if !(1..=sip.tcp_max_connections).contains(&sip.tcp_max_connections_per_source) {
        return Err(err(
            file,
            "sip.tcp_max_connections_per_source",
            "must be 1..=sip.tcp_max_connections",
        ));
    }
    if !matches!(sip.block_status, 603 | 608) {
        return Err(err(
            file,
            "sip.block_status",
            format!(
                "{} is neither 603 (Decline) nor 608 (Rejected)",
                sip.block_status
            ),
        ));
    }
    Ok((udp, tcp))
}

/// Where set `id` is configured: `sets.NAME` or `tenants.TENANT.sets.NAME`.
fn config_key(id: &str) -> String {
    match id.split_once('/') {
        Some((tenant, name)) => format!("tenants.{tenant}.sets.{name}"),
        None => format!("sets.{id}"),
    }
}

fn define_set(
    file: &str,
    base: &Path,
    at: &str,
    id: &str,
    tenant: Option<&String>,
    set: &SetConfig,
) -> Result<SetDefinition, ConfigError> {
    let local = id.rsplit('/').next().unwrap_or(id);
    if !valid_name(local) {
        return Err(err(
            file,
            at,
            "set names are 1-64 letters, digits, '_', '-' or '.'",
        ));
    }
    if set.files.contains('/') || set.files.contains('\\') || set.files.is_empty() {
        return Err(err(
            file,
            format!("{at}.files"),
            "must be a file-name pattern inside the data directory",
        ));
    }
    if set.files.matches('*').count() != 1 || set.files.contains(['?', '[', ']']) {
        return Err(err(
            file,
            format!("{at}.files"),
            "must hold exactly one '*' (where the version goes) and no other wildcard",
        ));
    }
    let pattern = glob::Pattern::new(&set.files)
        .map_err(|e| err(file, format!("{at}.files"), format!("bad pattern: {e}")))?;
    let kind = match set.kind {
        SetKindConfig::Block => SetKind::Block,
        SetKindConfig::Consent => SetKind::Consent,
    };
    let reason = match (kind, set.reason) {
        (SetKind::Block, reason) => Some(reason.unwrap_or(BlockReason::InternalDnc)),
        (SetKind::Consent, None) => None,
        (SetKind::Consent, Some(_)) => {
            return Err(err(
                file,
                format!("{at}.reason"),
                "consent sets have no block reason",
            ));
        }
    };
    let key = match &set.key_file {
        None => None,
        Some(path) => {
            let path = if path.is_absolute() {
                path.clone()
            } else {
                base.join(path)
            };
            Some(
                SecretKey::load(&path)
                    .map_err(|e| err(file, format!("{at}.key_file"), e.to_string()))?,
            )
        }
    };
    if reason == Some(BlockReason::Erased) && key.is_none() {
        return Err(err(
            file,
            format!("{at}.key_file"),
            "erased sets hold keyed fingerprints: a key file is required",
        ));
    }
    let min_keys_ratio = match set.min_keys_ratio {
        Some(ratio) if !(0.0..=1.0).contains(&ratio) => {
            return Err(err(
                file,
                format!("{at}.min_keys_ratio"),
                format!(
                    "{ratio} is not a fraction 0..=1 of the keys in force (0 disables the check)"
                ),
            ));
        }
        Some(ratio) => ratio,
        None if tenant.is_none() || reason == Some(BlockReason::NationalRegistry) => {
            DEFAULT_REGISTRY_MIN_KEYS_RATIO
        }
        None => 0.0,
    };
    if let Err(reason) = crate::engine::snapshot::validate_set_name(&header_name_of(id)) {
        return Err(err(
            file,
            at,
            format!(
                "snapshot headers name this set '{}': {reason}",
                header_name_of(id)
            ),
        ));
    }
    Ok(SetDefinition {
        id: id.to_owned(),
        tenant: tenant.cloned(),
        kind,
        reason,
        pattern,
        pattern_text: set.files.clone(),
        key,
        initial_empty: set.initial_empty,
        min_keys_ratio,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[sets.reg]
kind = "block"
reason = "national_registry"
files = "reg.*.snap"

[tenants.t]
region = "US"

[tenants.t.campaigns.c]
block_sets = ["reg"]
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml", Path::new("/base"))
    }

    /// The error for `text` must name `key` and contain `reason`.
    fn rejects(text: &str, key: &str, reason: &str) {
        let error = parse(text).expect_err("accepted a bad config");
        assert_eq!(error.file, "test.toml");
        assert!(
            error.key.contains(key),
            "key '{}' lacks '{key}' ({error})",
            error.key
        );
        assert!(
            error.reason.contains(reason),
            "reason '{}' lacks '{reason}'",
            error.reason
        );
    }

    #[test]
    fn example_config_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        crate::server::samples::ensure_demo_key(dir.path()).unwrap();
        let config = Config::example(dir.path()).unwrap();
        assert_eq!(config.data_dir, dir.path().join("data"));
        assert!(config.sets.iter().any(|s| s.id == "acme/dnc"));
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.grpc_listen.to_string(), "127.0.0.1:50151");
        assert_eq!(config.raw.tenants["t"].campaigns["c"].max_list_age_days, 31);
        assert_eq!(config.sets[0].reason, Some(BlockReason::NationalRegistry));
    }

    #[test]
    fn limits_and_allowed_sources_are_validated() {
        rejects(
            "[server]\nmax_in_flight = 0\n",
            "server.max_in_flight",
            "1..=",
        );
        rejects(
            &format!("{MINIMAL}\n[sip]\nallowed_sources = [\"10.0.0.1/8\"]\n"),
            "sip.allowed_sources",
            "host bits",
        );
        rejects(
            &format!("{MINIMAL}\n[sip]\nallowed_sources = [\"10.0.0.0/33\"]\n"),
            "sip.allowed_sources",
            "0..=32",
        );
        rejects(
            &format!("{MINIMAL}\n[sip]\nallowed_sources = [\"example.com\"]\n"),
            "sip.allowed_sources",
            "not an IP network",
        );
        rejects(
            &format!("{MINIMAL}\n[sip]\nallowed_sources = []\n"),
            "sip.allowed_sources",
            "empty",
        );
        rejects(
            &MINIMAL.replace("region = \"US\"", "region = \"US\"\nburst = 5"),
            "tenants.t.burst",
            "needs max_checks_per_second",
        );
        rejects(
            &MINIMAL.replace(
                "region = \"US\"",
                "region = \"US\"\nmax_checks_per_second = 0",
            ),
            "tenants.t.max_checks_per_second",
            "1..=",
        );
        let config = parse(&format!(
            "{}\n[sip]\nallowed_sources = [\"127.0.0.1/32\", \"::1\", \"10.0.0.0/8\", \"0.0.0.0/0\"]\n",
            MINIMAL.replace("region = \"US\"", "region = \"US\"\nmax_checks_per_second = 10")
        ))
        .unwrap();
        let networks = config.sip_allowed_sources.unwrap();
        assert_eq!(networks.len(), 4);
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert!(networks[0].contains(ip("127.0.0.1")));
        assert!(!networks[0].contains(ip("127.0.0.2")));
        assert!(
            networks[0].contains(ip("::ffff:127.0.0.1")),
            "v4-mapped counts as v4"
        );
        assert!(networks[1].contains(ip("::1")) && !networks[1].contains(ip("::2")));
        assert!(networks[2].contains(ip("10.255.0.1")) && !networks[2].contains(ip("11.0.0.1")));
        assert!(networks[3].contains(ip("192.0.2.1")) && !networks[3].contains(ip("::1")));
        assert_eq!(config.raw.tenants["t"].max_checks_per_second, Some(10));
        assert!(parse(MINIMAL).unwrap().sip_allowed_sources.is_none());
    }

    #[test]
    fn reports_file_key_and_reason() {
        rejects("[server]\nbogus = 1\n", "line 2", "unknown field");
        rejects(
            "[server]\ngrpc_listen = \"localhost\"\n",
            "server.grpc_listen",
            "not an address",
        );
        rejects("[server]\nmax_batch = 0\n", "server.max_batch", "1..=");
        rejects(
            &MINIMAL.replace("\"US\"", "\"XX\""),
            "tenants.t.region",
            "unknown region",
        );
        rejects(
            &MINIMAL.replace("[\"reg\"]", "[\"nope\"]"),
            "tenants.t.campaigns.c.block_sets",
            "no set named 'nope'",
        );
        rejects(
            &MINIMAL.replace("reg.*.snap", "../reg.*.snap"),
            "sets.reg.files",
            "inside the data directory",
        );
        rejects(
            &MINIMAL.replace("reg.*.snap", "reg.snap"),
            "sets.reg.files",
            "exactly one '*'",
        );
        rejects(
            &format!("{MINIMAL}blocked_prefixes = [\"1900\"]\n"),
            "blocked_prefixes",
            "'+' followed by",
        );
        rejects(
            &format!("{MINIMAL}require_consent = true\n"),
            "consent_sets",
            "at least one consent set",
        );
        rejects(
            &format!("{MINIMAL}max_list_age_days = 0\n"),
            "max_list_age_days",
            "1..=3650",
        );
        rejects(
            &format!("{MINIMAL}\n[defaults]\ntenant = \"x\"\n"),
            "defaults.tenant",
            "no tenant named 'x'",
        );
        rejects(
            &format!("{MINIMAL}\n[defaults]\ntenant = \"t\"\ncampaign = \"x\"\n"),
            "defaults.campaign",
            "no campaign 'x'",
        );
        rejects(
            &MINIMAL.replace("national_registry", "erased"),
            "sets.reg.key_file",
            "key file is required",
        );
        rejects(
            &format!(
                "{MINIMAL}\n[sets.cons]\nkind = \"consent\"\nreason = \"erased\"\nfiles = \"c.*.snap\"\n"
            ),
            "sets.cons.reason",
            "no block reason",
        );
        rejects(
            &MINIMAL.replace("[tenants.t.campaigns.c]\nblock_sets = [\"reg\"]\n", ""),
            "tenants.t.campaigns",
            "at least one campaign",
        );
        rejects(
            &format!(
                "{MINIMAL}\n[sets.x]\nkind = \"block\"\nfiles = \"x.*.snap\"\nkey_file = \"missing.key\"\n"
            ),
            "sets.x.key_file",
            "missing.key",
        );
    }

    #[test]
    fn min_keys_ratio_is_a_fraction_with_registry_default() {
        for bad in ["1.5", "-1", "-0.1", "nan", "inf"] {
            rejects(
                &MINIMAL.replace(
                    "files = \"reg.*.snap\"",
                    &format!("files = \"reg.*.snap\"\nmin_keys_ratio = {bad}"),
                ),
                "sets.reg.min_keys_ratio",
                "fraction 0..=1",
            );
        }
        rejects(
            &format!(
                "{MINIMAL}\n[tenants.t.sets.own]\nkind = \"block\"\nfiles = \"t-own.*.snap\"\nmin_keys_ratio = 2\n"
            ),
            "tenants.t.sets.own.min_keys_ratio",
            "fraction 0..=1",
        );
        let ratio = |text: &str, id: &str| {
            let config = parse(text).unwrap();
            config
                .sets
                .iter()
                .find(|s| s.id == id)
                .unwrap()
                .min_keys_ratio
        };
        // Registry and global sets default to 0.5; other tenant sets are off; 0 and 1 are
        // accepted, and so is an integer.
        let tenant_sets = format!(
            "{MINIMAL}\n[sets.glob]\nkind = \"block\"\nfiles = \"glob.*.snap\"\n\n[tenants.t.sets.own]\nkind = \"block\"\nfiles = \"t-own.*.snap\"\n\n[tenants.t.sets.reg2]\nkind = \"block\"\nreason = \"national_registry\"\nfiles = \"t-reg2.*.snap\"\n"
        );
        assert_eq!(ratio(&tenant_sets, "reg"), 0.5);
        assert_eq!(ratio(&tenant_sets, "glob"), 0.5);
        assert_eq!(ratio(&tenant_sets, "t/own"), 0.0);
        assert_eq!(ratio(&tenant_sets, "t/reg2"), 0.5);
        for (text, expected) in [("0", 0.0), ("1", 1.0), ("0.9", 0.9), ("0.0", 0.0)] {
            let config = MINIMAL.replace(
                "files = \"reg.*.snap\"",
                &format!("files = \"reg.*.snap\"\nmin_keys_ratio = {text}"),
            );
            assert_eq!(ratio(&config, "reg"), expected, "{text}");
        }
    }

    #[test]
    fn two_sets_never_claim_the_same_header_name_or_files() {
        // Tenant t's set "x" is headed "t-x": a global set of that name would be ambiguous.
        rejects(
            &format!(
                "{MINIMAL}\n[sets.t-x]\nkind = \"block\"\nfiles = \"gx.*.snap\"\n\n[tenants.t.sets.x]\nkind = \"block\"\nfiles = \"tx.*.snap\"\n"
            ),
            "tenants.t.sets.x",
            "would both name the set 't-x'",
        );
        rejects(
            &format!("{MINIMAL}\n[sets.other]\nkind = \"block\"\nfiles = \"reg.*.snap\"\n"),
            "sets.reg.files",
            "also the pattern of 'other'",
        );
        // The header name must fit a snapshot header (64 characters).
        let long = "n".repeat(64);
        rejects(
            &format!(
                "{MINIMAL}\n[tenants.t.sets.{long}]\nkind = \"block\"\nfiles = \"long.*.snap\"\n"
            ),
            &format!("tenants.t.sets.{long}"),
            "1-64 characters",
        );
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.sets[0].header_name(), "reg");
        assert_eq!(header_name_of("acme/dnc"), "acme-dnc");
        assert_eq!(config.sets[0].version_text("reg.12.snap"), Some("12"));
        assert_eq!(
            config.sets[0].version_text("reg.pl-dnc.3.snap"),
            Some("pl-dnc.3")
        );
        assert_eq!(config.sets[0].version_text("other.12.snap"), None);
        assert_eq!(config.sets[0].version_text("reg.snap"), None);
    }

    #[test]
    fn consent_and_block_sets_are_not_interchangeable() {
        let text = format!(
            "{MINIMAL}\n[sets.cons]\nkind = \"consent\"\nfiles = \"c.*.snap\"\n\n[tenants.t.campaigns.d]\nblock_sets = [\"cons\"]\n"
        );
        rejects(
            &text,
            "tenants.t.campaigns.d.block_sets",
            "is a consent set",
        );
    }

    #[test]
    fn prefixes_parse_to_digits() {
        assert_eq!(parse_prefix("+1900"), Some((1900, 4)));
        assert_eq!(parse_prefix("+0"), None);
        assert_eq!(parse_prefix("1900"), None);
        assert_eq!(parse_prefix("+"), None);
        assert_eq!(parse_prefix("+1234567890123456"), None);
    }
}
