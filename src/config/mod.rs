//! The daemon's configuration as data: what to serve, where, and with which limits.
//!
//! [`Config`] is the validated configuration and its accessors; the work is split by subject:
//! [`raw`] (serde types as read from TOML), [`validate`] (the checks, in named steps),
//! [`catalogue`] (the configured sets) and [`network`] (addresses, SIP sources, plain text and
//! anonymous callers off loopback). Errors name the file, the key and the reason; the binary
//! exits 64 on them. Config holds paths and settings, never live objects: it never binds,
//! never touches the data directory, never loads certificates, tokens or the audit key (the
//! server does, before binding), and imports nothing of the crate but `engine`.

pub mod catalogue;
pub mod fleet;
pub mod network;
pub mod raw;
pub mod validate;

pub use catalogue::{DEFAULT_REGISTRY_MIN_KEYS_RATIO, SetDefinition, header_name_of};
pub use fleet::{FleetAuth, FleetSettings};
pub use network::{IpNetwork, SipSource};
pub use raw::{
    AuditConfig, AuthConfig, BlockReason, CampaignConfig, ClientMapping, Defaults, LogConfig,
    LogFormat, RawConfig, Role, ServerConfig, SetConfig, SetKindConfig, SipConfig, SipSourceConfig,
    StalePolicy, TenantConfig, TlsConfig, UnknownLocationPolicy,
};
pub use validate::parse_prefix;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The example configuration shipped with suppressd and used when no `--config` is given.
pub const EXAMPLE_CONFIG: &str = include_str!("../../deploy/example-config.toml");

/// Where the embedded example config expects the demo's erasure key, relative to its base
/// directory (`server::samples` creates it on a fresh clone).
pub const DEMO_KEY_FILE: &str = "data/keys/acme-erased.key";

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

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: String,
    /// The file as read; the rest of the crate reads it through the accessors
    /// ([`Config::server`], [`Config::sip`], ...), so a setting's meaning has one home.
    raw: RawConfig,
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
    pub sets: Vec<SetDefinition>,
    /// `auth.tokens_file`, resolved against the config's directory.
    tokens_file: Option<PathBuf>,
    /// `audit.key_file`, resolved against the config's directory.
    audit_key_file: Option<PathBuf>,
    /// `[tls]` with its file paths resolved against the config's directory.
    tls: Option<TlsConfig>,
    /// `[fleet]`, checked; None: a single host.
    fleet: Option<FleetSettings>,
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

    /// The embedded example configuration, with relative paths under `base`. Its erased set
    /// needs the demo key at [`DEMO_KEY_FILE`] under `base`.
    pub fn example(base: &Path) -> Result<Config, ConfigError> {
        Config::parse(EXAMPLE_CONFIG, "<embedded example>", base)
    }

    /// `[server]`: planes, limits, timeouts, compaction.
    pub fn server(&self) -> &ServerConfig {
        &self.raw.server
    }

    /// The rules of the attempt-cap rule sets a campaign names (built in, or
    /// `[attempt_rules]`); an unknown name is an error naming it.
    pub fn attempt_rules(
        &self,
        names: &[String],
    ) -> Result<Vec<crate::rules::attempts::Rule>, String> {
        attempt_rules(&self.raw, names)
    }

    /// `[sip]`: the SIP redirect dip.
    pub fn sip(&self) -> &SipConfig {
        &self.raw.sip
    }

    /// `[tenants.*]`, by name.
    pub fn tenants(&self) -> &BTreeMap<String, TenantConfig> {
        &self.raw.tenants
    }

    /// `[defaults]`: the tenant and campaign of requests that name none.
    pub fn defaults(&self) -> &Defaults {
        &self.raw.defaults
    }

    /// `[log]`: format and filter.
    pub fn log(&self) -> &LogConfig {
        &self.raw.log
    }

    /// `[audit]`: retention (the key file: [`Config::audit_key_file`]).
    pub fn audit(&self) -> &AuditConfig {
        &self.raw.audit
    }

    /// `auth.required`: refuse callers without a credential (a tokens file is then given).
    pub fn auth_required(&self) -> bool {
        self.raw.auth.required
    }

    /// The tokens file (`auth.tokens_file`), resolved; None: no bearer tokens.
    pub fn tokens_file(&self) -> Option<&Path> {
        self.tokens_file.as_deref()
    }

    /// The audit fingerprint key file (`audit.key_file`), resolved.
    pub fn audit_key_file(&self) -> Option<&Path> {
        self.audit_key_file.as_deref()
    }

    /// `[tls]` with resolved paths; None: plain text (loopback or `allow_plaintext`).
    pub fn tls(&self) -> Option<&TlsConfig> {
        self.tls.as_ref()
    }

    /// `[fleet]`, when this daemon is one of a fleet.
    pub fn fleet(&self) -> Option<&FleetSettings> {
        self.fleet.as_ref()
    }
}

/// A configuration error in `file` at `key`.
pub(crate) fn err(file: &str, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        file: file.to_owned(),
        key: key.into(),
        reason: reason.into(),
    }
}

/// A tenant, campaign or set name: 1-64 letters, digits, '_', '-' or '.', not starting with '.'.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !name.starts_with('.')
}

/// `path` as given when absolute, else under `base` (the config file's directory).
fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    }
}

/// The rules of the named attempt-cap rule sets, built in or custom.
fn attempt_rules(
    raw: &RawConfig,
    names: &[String],
) -> Result<Vec<crate::rules::attempts::Rule>, String> {
    use crate::rules::attempts::{Outcome, Rule, builtin_rule_sets, parse_duration};
    let builtin = builtin_rule_sets();
    let mut rules = Vec::new();
    for name in names {
        if let Some(custom) = raw.attempt_rules.get(name) {
            let mut cooldowns = Vec::new();
            for (outcome, text) in [
                (Outcome::NoContact, &custom.after_no_contact),
                (Outcome::Contact, &custom.after_contact),
                (Outcome::Refusal, &custom.after_refusal),
                (Outcome::OptOut, &custom.after_opt_out),
            ] {
                if let Some(text) = text {
                    cooldowns.push((outcome, parse_duration(text)?));
                }
            }
            rules.push(Rule {
                cap: custom.cap,
                window_ms: parse_duration(&custom.window)?,
                cooldowns,
            });
        } else if let Some(set) = builtin.iter().find(|s| &s.name == name) {
            rules.extend(set.rules.iter().cloned());
        } else {
            return Err(format!(
                "unknown attempt rule set '{name}' (built in: {}; or define [attempt_rules.{name}])",
                builtin
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::keys::SecretKey;
    use std::net::IpAddr;

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
        // The server materialises the demo key (`server::samples`); here only its file is needed.
        let key = dir.path().join(DEMO_KEY_FILE);
        std::fs::create_dir_all(key.parent().unwrap()).unwrap();
        let text = SecretKey::generate("config-test").unwrap().to_file_text();
        std::fs::write(&key, text).unwrap();
        let config = Config::example(dir.path()).unwrap();
        assert_eq!(config.data_dir, dir.path().join("data"));
        assert!(config.sets.iter().any(|s| s.id == "acme/dnc"));
    }

    #[test]
    fn attempt_rules_name_known_sets_and_custom_ones_parse() {
        let campaign = "[tenants.t.campaigns.c]\nblock_sets = [\"reg\"]\n";
        assert!(MINIMAL.contains(campaign));
        let with = |extra: &str| MINIMAL.replace(campaign, &format!("{campaign}{extra}"));
        rejects(
            &with("attempt_rules = [\"nope\"]\n"),
            "tenants.t.campaigns.c.attempt_rules",
            "unknown attempt rule set 'nope'",
        );
        rejects(
            &with("attempt_rules = [\"fr\"]\nattempt_scope = \"everyone\"\n"),
            "attempt_scope",
            "purpose:NAME",
        );
        rejects(
            &with("attempt_rules = [\"fr\"]\nattempt_ttl_seconds = 0\n"),
            "attempt_ttl_seconds",
            "1..=86400",
        );
        let custom =
            "\n[attempt_rules.gentle]\ncap = 2\nwindow = \"7d\"\nafter_refusal = \"30x\"\n";
        rejects(
            &(MINIMAL.to_owned() + custom),
            "attempt_rules.gentle",
            "'30x'",
        );
        // Opt-out outcomes need the tenant's internal do-not-call set.
        rejects(
            &with("attempt_rules = [\"fr\"]\n"),
            "tenants.t.campaigns.c.attempt_rules",
            "tenant 't' has none: add a block set with reason \"internal_dnc\"",
        );
        let dnc = "\n[tenants.t.sets.dnc]\nkind = \"block\"\nfiles = \"dnc.*.snap\"\n";
        let good =
            with("attempt_rules = [\"gentle\", \"fl-ok-md\"]\nattempt_scope = \"purpose:debt\"\n")
                + &custom.replace("30x", "30d")
                + dnc;
        let config = parse(&good).unwrap();
        let rules = config
            .attempt_rules(&["gentle".into(), "fl-ok-md".into()])
            .unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!((rules[0].cap, rules[0].window_ms), (2, 7 * 86_400_000));
        assert_eq!(
            rules[0].cooldowns,
            [(crate::rules::attempts::Outcome::Refusal, 30 * 86_400_000)]
        );
        let policy = crate::policy::Policy::compile(&config);
        let caps = policy.tenants["t"].campaigns["c"].attempts.clone().unwrap();
        assert_eq!(
            (caps.scope.as_str(), caps.ttl_ms),
            ("purpose:debt", 300_000)
        );
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.grpc_listen.to_string(), "127.0.0.1:50151");
        assert_eq!(config.tenants()["t"].campaigns["c"].max_list_age_days, 31);
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
        let networks = config.sip_allowed_sources.clone().unwrap();
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
        assert_eq!(config.tenants()["t"].max_checks_per_second, Some(10));
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
