//! The configuration as read from TOML: serde types and their defaults, nothing else.
//!
//! Owns the file format (`deny_unknown_fields` everywhere) and the default of every setting.
//! Values here are unchecked: `validate` decides what they may be. Never loads a file named by a
//! setting (key files, tokens, certificates) and never imports the server.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

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
    pub tls: Option<TlsConfig>,
    /// A fleet of daemons sharing one mutation log on NATS JetStream; absent: a single host.
    pub fleet: Option<FleetConfig>,
    /// Custom attempt-cap rule sets, by name, that campaigns name in `attempt_rules` beside
    /// the built-in ones (`fl-ok-md`, `fr`, `reg-f`).
    #[serde(default)]
    pub attempt_rules: BTreeMap<String, AttemptRuleConfig>,
}

/// `[attempt_rules.NAME]`: at most `cap` attempts per number in any `window`, and cooldowns
/// after outcomes. Durations are a number and `m`, `h` or `d` ("24h", "30d").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptRuleConfig {
    pub cap: u32,
    pub window: String,
    pub after_no_contact: Option<String>,
    pub after_contact: Option<String>,
    pub after_refusal: Option<String>,
    pub after_opt_out: Option<String>,
}

/// `[fleet]`: the NATS JetStream log every daemon of a fleet publishes to and applies in
/// order (see `crate::fleet`). Paths name files holding secrets; never the secrets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// NATS server URLs, e.g. ["nats://10.0.0.1:4222", "tls://nats-2:4222"].
    pub servers: Vec<String>,
    /// The fleet's name: the default stream is `suppressd-<name>`, subjects
    /// `suppressd.<name>.<tenant>`.
    pub name: String,
    /// This host's id (its durable consumer's name); default: the hostname.
    pub host_id: Option<String>,
    /// An environment variable holding the host id instead (Kubernetes: the node name from
    /// the downward API, since pod names change at every restart).
    pub host_id_env: Option<String>,
    /// Stream name; default `suppressd-<name>`.
    pub stream: Option<String>,
    /// Subject prefix; default `suppressd.<name>`.
    pub subject_prefix: Option<String>,
    /// Key-value bucket of the fleet's hosts (one claim per host id); default
    /// `suppressd-<name>-hosts`.
    pub hosts_bucket: Option<String>,
    /// Stream replicas: 1 for tests, 3 (a quorum of 2) in production.
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// How long JetStream remembers a message id to drop a retried publish.
    #[serde(default = "default_duplicate_window")]
    pub duplicate_window_seconds: u64,
    /// How long an admin call waits for JetStream's ack, then for this host to apply it,
    /// before it fails with UNAVAILABLE (nothing acknowledged; retry with the same id).
    #[serde(default = "default_fleet_timeout")]
    pub timeout_ms: u64,
    /// Seconds without confirming it is caught up with the stream after which checks answer
    /// BLOCK/FLEET_LAG (unless a campaign says `fleet_lag = "allow_with_warning"`) and health
    /// goes NOT_SERVING.
    #[serde(default = "default_max_lag")]
    pub max_lag_seconds: u64,
    /// Fleet key files (`suppressd keygen --fleet`); the first seals, any opens (rotation:
    /// add the new key first on every host, then remove the old one once the stream holds
    /// nothing sealed with it).
    pub key_files: Vec<PathBuf>,
    /// NATS credentials, at most one kind: user + password files, a token file, an nkey
    /// seed file, or a `.creds` file (JWT + seed).
    pub user_file: Option<PathBuf>,
    pub password_file: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub nkey_file: Option<PathBuf>,
    pub creds_file: Option<PathBuf>,
    /// CA bundle the NATS servers' certificates are checked against; requires TLS.
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate and key, for NATS servers that verify clients.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Seconds the compaction lease lives without renewal: a compactor that died is replaced
    /// after this long (its holder renews it every third of it while compacting).
    #[serde(default = "default_lease")]
    pub compaction_lease_seconds: u64,
}

fn default_lease() -> u64 {
    30
}

fn default_replicas() -> usize {
    1
}

fn default_duplicate_window() -> u64 {
    // Longer than any client's retry horizon, short enough for JetStream to keep ids in memory.
    600
}

fn default_fleet_timeout() -> u64 {
    5000
}

fn default_max_lag() -> u64 {
    30
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

/// `unknown_location`: BLOCK with UNKNOWN_LOCATION (default, fail closed), or allow the call
/// without applying the windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownLocationPolicy {
    #[default]
    Block,
    Allow,
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
    /// Calling-window packs that apply (`us-federal`, `us-states`, `fr`); the most
    /// restrictive of them and of `custom_windows` wins. Empty (and no custom windows): none.
    #[serde(default)]
    pub calling_windows: Vec<String>,
    /// Custom windows, rows 'DAYS HOURS' in the called party's local time
    /// ("mon-fri 09:00-17:00"); a day no row names is closed.
    #[serde(default)]
    pub custom_windows: Vec<String>,
    /// What a number whose location cannot be resolved gets when the campaign has windows.
    #[serde(default)]
    pub unknown_location: UnknownLocationPolicy,
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
    /// What a check answers while this host lags behind the fleet (`[fleet]`): BLOCK with
    /// FLEET_LAG (the default), or allow with a warning.
    #[serde(default)]
    pub fleet_lag: StalePolicy,
    /// Attempt-cap rule sets that apply (`fl-ok-md`, `fr`, `reg-f`, or a name under
    /// `[attempt_rules]`); every rule of each must allow an attempt. Empty: no caps.
    #[serde(default)]
    pub attempt_rules: Vec<String>,
    /// What attempts are counted per, for each number: "campaign" (the default), "tenant"
    /// (every campaign of the tenant together) or "purpose:NAME" (campaigns naming the same
    /// purpose together).
    #[serde(default)]
    pub attempt_scope: Option<String>,
    /// How long an unconfirmed reservation holds its slot before it expires (seconds).
    #[serde(default = "default_attempt_ttl")]
    pub attempt_ttl_seconds: u32,
}

fn default_attempt_ttl() -> u32 {
    300
}

/// `[tls]`: certificates for every TCP listener (loaded by `server::tls` before binding).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// CA bundle for client certificates; enables mutual TLS.
    pub client_ca_file: Option<PathBuf>,
    /// Refuse clients without a certificate (otherwise they may use bearer tokens).
    #[serde(default)]
    pub require_client_cert: bool,
    /// Client certificate subject common names and what they may do.
    #[serde(default)]
    pub client: Vec<ClientMapping>,
}

/// `[[tls.client]]`: one certificate name and what it may do. Exactly one of the three names.
/// A certificate's URI SANs are looked up first, then its DNS SANs, then its subject CN: the
/// first that has a mapping wins (SANs are what current PKIs, SPIFFE among them, identify by).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientMapping {
    pub common_name: Option<String>,
    pub uri_san: Option<String>,
    pub dns_san: Option<String>,
    pub tenant: Option<String>,
    pub role: Role,
}

impl ClientMapping {
    /// How the mapping is named in logs and identities, e.g. "uri:spiffe://dialers/acme".
    pub fn label(&self) -> String {
        match (&self.uri_san, &self.dns_san, &self.common_name) {
            (Some(uri), _, _) => format!("uri:{uri}"),
            (_, Some(dns), _) => format!("dns:{dns}"),
            (_, _, Some(cn)) => format!("cn:{cn}"),
            _ => String::new(),
        }
    }
}

/// What a credential (a token in the tokens file, or a `[[tls.client]]` certificate) may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Data plane: checks for its tenant.
    Check,
    /// Admin plane (and checks): mutations, reload, compaction.
    Admin,
    /// Prometheus: reads `/metrics` and nothing else (no checks, no status). Never bound to a
    /// tenant: metrics are daemon-wide.
    Metrics,
}
