//! Validation: turns the TOML text into a checked [`Config`], in named steps.
//!
//! Owns the order of the checks and every rule that is not about the network or the set
//! catalogue: limits of `[server]`, the log filter, tenants and their campaigns, defaults,
//! `[auth]` and `[audit]` settings. The first failing check is the error (file, key, reason).
//! Never binds, never touches the data directory, and never loads the certificates, tokens
//! file or audit key it names: the server does, before binding (`server::secrets`).

use super::catalogue::Catalogue;
use super::network::{self, Addresses};
use super::raw::{
    BlockReason, CampaignConfig, RawConfig, ServerConfig, SetKindConfig, TenantConfig, TlsConfig,
};
use super::{Config, ConfigError, err, resolve, valid_name};
use crate::engine::number::Region;
use crate::engine::snapshot::SetKind;
use crate::rules::{Schedule, ScheduleError};
use std::path::Path;

impl Config {
    /// Parses and validates config text; relative paths resolve against `base`.
    pub fn parse(text: &str, file: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw = read_toml(text, file)?;
        let addresses = network::addresses(file, &raw)?;
        server_limits(file, &raw.server)?;
        log_filter(file, &raw)?;
        let mut catalogue = Catalogue::default();
        for (name, set) in &raw.sets {
            catalogue.add_global(file, base, name, set)?;
        }
        for (name, tenant) in &raw.tenants {
            tenant_settings(file, name, tenant)?;
            for (set_name, set) in &tenant.sets {
                if raw.sets.contains_key(set_name) {
                    return Err(err(
                        file,
                        format!("tenants.{name}.sets.{set_name}"),
                        "shadows a global set of the same name",
                    ));
                }
                catalogue.add_tenant_set(file, base, name, set_name, set)?;
            }
            campaigns(file, name, tenant, &catalogue)?;
        }
        catalogue.check_distinct(file)?;
        attempt_caps(file, &raw)?;
        defaults(file, &raw)?;
        if raw.auth.tokens_file.is_none() && raw.auth.required {
            return Err(err(file, "auth.required", "needs auth.tokens_file"));
        }
        network::anonymous_only_on_loopback(file, &raw, &addresses)?;
        network::plaintext_only_on_loopback(file, &raw, &addresses)?;
        if raw.audit.retention_days == 0 {
            return Err(err(file, "audit.retention_days", "must be positive"));
        }
        let fleet = raw
            .fleet
            .as_ref()
            .map(|fleet| super::fleet::settings(file, base, fleet))
            .transpose()?;
        Ok(assemble(file, base, raw, addresses, catalogue, fleet))
    }
}

/// The TOML itself: syntax, types and unknown keys; errors give the line.
fn read_toml(text: &str, file: &str) -> Result<RawConfig, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let key = e.span().map(|s| {
            let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}")
        });
        err(file, key.unwrap_or_default(), e.message().to_owned())
    })
}

/// `[server]` sizes, counts and timeouts within their bounds.
fn server_limits(file: &str, server: &ServerConfig) -> Result<(), ConfigError> {
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
    Ok(())
}

/// `log.filter` parses, then the two `[server]` settings checked after it (order kept so the
/// first error of a config is the one earlier releases reported).
fn log_filter(file: &str, raw: &RawConfig) -> Result<(), ConfigError> {
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
    if raw.server.reload_poll_seconds == 0 {
        return Err(err(file, "server.reload_poll_seconds", "must be positive"));
    }
    if raw.server.concurrency_per_connection == 0 {
        return Err(err(
            file,
            "server.concurrency_per_connection",
            "must be positive",
        ));
    }
    Ok(())
}

/// A tenant's name, region and rate limit.
fn tenant_settings(file: &str, name: &str, tenant: &TenantConfig) -> Result<(), ConfigError> {
    let at = format!("tenants.{name}");
    if !valid_name(name) {
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
        (Some(rate), _) if !(1..=100_000_000).contains(&rate) => Err(err(
            file,
            format!("{at}.max_checks_per_second"),
            "must be 1..=100000000",
        )),
        (None, Some(_)) => Err(err(
            file,
            format!("{at}.burst"),
            "needs max_checks_per_second",
        )),
        (_, Some(burst)) if !(1..=1_000_000_000).contains(&burst) => {
            Err(err(file, format!("{at}.burst"), "must be 1..=1000000000"))
        }
        _ => Ok(()),
    }
}

/// A tenant's campaigns: at least one, each naming sets of the right kind that exist.
fn campaigns(
    file: &str,
    tenant_name: &str,
    tenant: &TenantConfig,
    catalogue: &Catalogue,
) -> Result<(), ConfigError> {
    let at = format!("tenants.{tenant_name}");
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
        campaign_sets(file, &at, tenant_name, campaign, catalogue)?;
        calling_windows(file, &at, campaign_name, campaign)?;
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
    Ok(())
}

/// Custom attempt rule sets parse, and each campaign's attempt settings name known sets, a
/// valid scope and a TTL of 1 s to 1 day.
fn attempt_caps(file: &str, raw: &RawConfig) -> Result<(), ConfigError> {
    for (name, rule) in &raw.attempt_rules {
        let at = format!("attempt_rules.{name}");
        if !valid_name(name) {
            return Err(err(
                file,
                &at,
                "rule set names are 1-64 letters, digits, '_', '-' or '.'",
            ));
        }
        if rule.cap == 0 || rule.cap > 1000 {
            return Err(err(file, format!("{at}.cap"), "must be 1..=1000"));
        }
        super::attempt_rules(raw, std::slice::from_ref(name))
            .map_err(|reason| err(file, &at, reason))?;
    }
    for (tenant_name, tenant) in &raw.tenants {
        for (name, campaign) in &tenant.campaigns {
            let at = format!("tenants.{tenant_name}.campaigns.{name}");
            super::attempt_rules(raw, &campaign.attempt_rules)
                .map_err(|reason| err(file, format!("{at}.attempt_rules"), reason))?;
            // Each set is one rule, and a journal record carries at most 16.
            if campaign.attempt_rules.len() > 16 {
                return Err(err(
                    file,
                    format!("{at}.attempt_rules"),
                    "at most 16 rule sets",
                ));
            }
            if let Some(scope) = &campaign.attempt_scope {
                let purpose_ok = scope.strip_prefix("purpose:").is_some_and(valid_name);
                if scope != "campaign" && scope != "tenant" && !purpose_ok {
                    return Err(err(
                        file,
                        format!("{at}.attempt_scope"),
                        "must be \"campaign\", \"tenant\" or \"purpose:NAME\"",
                    ));
                }
            }
            if !(1..=86_400).contains(&campaign.attempt_ttl_seconds) {
                return Err(err(
                    file,
                    format!("{at}.attempt_ttl_seconds"),
                    "must be 1..=86400",
                ));
            }
            // An opt-out outcome suppresses the number in the tenant's internal do-not-call
            // set (as a Suppress without a set name does): it must exist before any call
            // counts, or an opt-out would be recorded and not honoured.
            let takes_opt_outs = tenant.sets.values().any(|set| {
                set.kind == SetKindConfig::Block
                    && set.reason.is_none_or(|r| r == BlockReason::InternalDnc)
            });
            if !campaign.attempt_rules.is_empty() && !takes_opt_outs {
                return Err(err(
                    file,
                    format!("{at}.attempt_rules"),
                    format!(
                        "an opt-out outcome suppresses the number in the tenant's internal do-not-call set, and tenant '{tenant_name}' has none: add a block set with reason \"internal_dnc\""
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A campaign's calling windows name packs this build has and custom rows that parse.
fn calling_windows(
    file: &str,
    at: &str,
    name: &str,
    campaign: &CampaignConfig,
) -> Result<(), ConfigError> {
    match Schedule::new(name, &campaign.calling_windows, &campaign.custom_windows) {
        Ok(_) => Ok(()),
        Err(e @ ScheduleError::UnknownPack(_)) => {
            Err(err(file, format!("{at}.calling_windows"), e.to_string()))
        }
        Err(e @ ScheduleError::Custom(_)) => {
            Err(err(file, format!("{at}.custom_windows"), e.to_string()))
        }
    }
}

/// A campaign's block and consent sets exist and are of their kind.
fn campaign_sets(
    file: &str,
    at: &str,
    tenant_name: &str,
    campaign: &CampaignConfig,
    catalogue: &Catalogue,
) -> Result<(), ConfigError> {
    for (field, names, kind, other) in [
        (
            "block_sets",
            &campaign.block_sets,
            SetKind::Block,
            "a consent set",
        ),
        (
            "consent_sets",
            &campaign.consent_sets,
            SetKind::Consent,
            "a block set",
        ),
    ] {
        for name in names {
            match catalogue.find(tenant_name, name) {
                Some(set) if set.kind == kind => {}
                Some(_) => {
                    return Err(err(
                        file,
                        format!("{at}.{field}"),
                        format!("'{name}' is {other}"),
                    ));
                }
                None => {
                    return Err(err(
                        file,
                        format!("{at}.{field}"),
                        format!("no set named '{name}' for tenant '{tenant_name}' or globally"),
                    ));
                }
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
    Ok(())
}

/// `[defaults]` name a tenant and campaign that exist.
fn defaults(file: &str, raw: &RawConfig) -> Result<(), ConfigError> {
    let Some(tenant) = &raw.defaults.tenant else {
        if raw.defaults.campaign.is_some() {
            return Err(err(
                file,
                "defaults.campaign",
                "a default campaign needs a default tenant",
            ));
        }
        return Ok(());
    };
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
    Ok(())
}

/// The checked config: paths resolved against `base`, settings kept as read.
fn assemble(
    file: &str,
    base: &Path,
    raw: RawConfig,
    addresses: Addresses,
    catalogue: Catalogue,
    fleet: Option<super::FleetSettings>,
) -> Config {
    let tls = raw.tls.clone().map(|tls| TlsConfig {
        cert_file: resolve(base, &tls.cert_file),
        key_file: resolve(base, &tls.key_file),
        client_ca_file: tls.client_ca_file.as_deref().map(|ca| resolve(base, ca)),
        ..tls
    });
    Config {
        path: file.to_owned(),
        grpc_listen: addresses.grpc,
        admin_listen: addresses.admin,
        http_listen: addresses.http,
        metrics_listen: addresses.metrics,
        sip_udp_listen: addresses.sip_udp,
        sip_tcp_listen: addresses.sip_tcp,
        sip_allowed_sources: addresses.sip_allowed_sources,
        sip_sources: addresses.sip_sources,
        data_dir: resolve(base, &raw.server.data_dir),
        sets: catalogue.sets,
        tokens_file: raw.auth.tokens_file.as_deref().map(|p| resolve(base, p)),
        audit_key_file: raw.audit.key_file.as_deref().map(|p| resolve(base, p)),
        tls,
        fleet,
        raw,
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
