//! Network settings: listener addresses, the SIP dip's sources, and the rules that keep a
//! public address from serving plain text or anonymous callers by accident.
//!
//! Owns parsing addresses and networks ([`IpNetwork`]) and the checks that depend on where a
//! listener is bound (loopback or not). Never binds a socket and never reads a certificate or
//! tokens file: the server loads those (`server::secrets`) after these checks pass.

use super::raw::{RawConfig, ServerConfig, SipConfig};
use super::{ConfigError, err};
use std::net::{IpAddr, SocketAddr};

/// Where each listener goes, parsed: what `Config` keeps of `[server]` and `[sip]` addresses.
pub(super) struct Addresses {
    pub grpc: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub sip_udp: Option<SocketAddr>,
    pub sip_tcp: Option<SocketAddr>,
    /// `sip.allowed_sources` alone (any tenant); None: every source.
    pub sip_allowed_sources: Option<Vec<IpNetwork>>,
    /// `sip.allowed_sources` and `[[sip.source]]`, most specific first; None: every source.
    pub sip_sources: Option<Vec<SipSource>>,
}

impl Addresses {
    /// The TCP listeners of the gRPC, HTTP, admin and metrics planes, with their config keys.
    pub fn tcp(&self) -> impl Iterator<Item = (&'static str, SocketAddr)> {
        [
            Some(("server.grpc_listen", self.grpc)),
            self.http.map(|a| ("server.http_listen", a)),
            self.admin.map(|a| ("server.admin_listen", a)),
            self.metrics.map(|a| ("server.metrics_listen", a)),
        ]
        .into_iter()
        .flatten()
    }
}

/// Parses every listener address and checks `[sip]`; an open SIP dip must be on loopback.
pub(super) fn addresses(file: &str, raw: &RawConfig) -> Result<Addresses, ConfigError> {
    let server = &raw.server;
    let admin = optional_address(
        file,
        "server.admin_listen",
        &server.admin_listen,
        "127.0.0.1:50152",
    )?;
    let http = optional_address(
        file,
        "server.http_listen",
        &server.http_listen,
        "127.0.0.1:8080",
    )?;
    let metrics = optional_address(
        file,
        "server.metrics_listen",
        &server.metrics_listen,
        "127.0.0.1:9464",
    )?;
    let grpc = grpc_address(file, server)?;
    let (sip_udp, sip_tcp) = validate_sip(file, &raw.sip)?;
    let sip_sources = sip_sources(file, raw)?;
    // An open dip off loopback would let anyone pick any tenant, and reflect answers.
    if sip_sources.is_none() {
        for (key, address) in [("sip.listen_udp", sip_udp), ("sip.listen_tcp", sip_tcp)] {
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
    // Checked by `validate_sip`: every entry parses.
    let sip_allowed_sources = raw.sip.allowed_sources.as_ref().map(|sources| {
        sources
            .iter()
            .filter_map(|text| IpNetwork::parse(text).ok())
            .collect()
    });
    Ok(Addresses {
        grpc,
        admin,
        http,
        metrics,
        sip_udp,
        sip_tcp,
        sip_allowed_sources,
        sip_sources,
    })
}

fn optional_address(
    file: &str,
    key: &str,
    text: &Option<String>,
    example: &str,
) -> Result<Option<SocketAddr>, ConfigError> {
    match text {
        None => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| {
            err(
                file,
                key,
                format!("'{text}' is not an address like {example}"),
            )
        }),
    }
}

fn grpc_address(file: &str, server: &ServerConfig) -> Result<SocketAddr, ConfigError> {
    server.grpc_listen.parse().map_err(|_| {
        err(
            file,
            "server.grpc_listen",
            format!(
                "'{}' is not an address like 127.0.0.1:50151",
                server.grpc_listen
            ),
        )
    })
}

/// Tokens without `auth.required`: anonymous callers stay unrestricted (every tenant, every
/// tenant's metadata). Tolerable on loopback only, like plain text.
pub(super) fn anonymous_only_on_loopback(
    file: &str,
    raw: &RawConfig,
    addresses: &Addresses,
) -> Result<(), ConfigError> {
    if raw.auth.tokens_file.is_none() || raw.auth.required {
        return Ok(());
    }
    for (key, address) in addresses.tcp() {
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
    Ok(())
}

/// Plain text off loopback only with `[tls]` or the operator's explicit consent.
pub(super) fn plaintext_only_on_loopback(
    file: &str,
    raw: &RawConfig,
    addresses: &Addresses,
) -> Result<(), ConfigError> {
    if raw.tls.is_some() || raw.server.allow_plaintext {
        return Ok(());
    }
    for (key, address) in addresses.tcp() {
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
    Ok(())
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

/// A source network the SIP dip answers, and what it may ask for (None: anything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipSource {
    pub network: IpNetwork,
    pub tenants: Option<Vec<String>>,
    pub campaigns: Option<Vec<String>>,
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
