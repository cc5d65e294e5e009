//! The set catalogue: every configured set (global and per tenant), what it is and where its
//! files are.
//!
//! Owns [`SetDefinition`] (id, kind, block reason, file pattern, key, `min_keys_ratio`), the
//! naming rules that tie a set to its files and snapshot headers, and the rule that no two sets
//! claim the same header name or pattern. Reads set key files (engine keys); never opens the
//! data directory.

use super::raw::{BlockReason, SetConfig, SetKindConfig};
use super::{ConfigError, err, resolve, valid_name};
use crate::engine::keys::SecretKey;
use crate::engine::snapshot::{self, SetKind};
use std::path::Path;

/// `min_keys_ratio` of registry and global sets when the config does not give one.
pub const DEFAULT_REGISTRY_MIN_KEYS_RATIO: f64 = 0.5;

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

/// Where set `id` is configured: `sets.NAME` or `tenants.TENANT.sets.NAME`.
fn config_key(id: &str) -> String {
    match id.split_once('/') {
        Some((tenant, name)) => format!("tenants.{tenant}.sets.{name}"),
        None => format!("sets.{id}"),
    }
}

/// Checks one `[sets.NAME]` or `[tenants.T.sets.NAME]` and describes it. Loads its key file,
/// if any (an engine key: the set cannot be read or written without it).
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
        Some(path) => Some(
            SecretKey::load(&resolve(base, path))
                .map_err(|e| err(file, format!("{at}.key_file"), e.to_string()))?,
        ),
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
    if let Err(reason) = snapshot::validate_set_name(&header_name_of(id)) {
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

/// The sets being defined, in config order (global sets first, then each tenant's).
#[derive(Default)]
pub(super) struct Catalogue {
    pub sets: Vec<SetDefinition>,
}

impl Catalogue {
    /// Defines the global set `[sets.NAME]`.
    pub fn add_global(
        &mut self,
        file: &str,
        base: &Path,
        name: &str,
        set: &SetConfig,
    ) -> Result<(), ConfigError> {
        let definition = define_set(file, base, &format!("sets.{name}"), name, None, set)?;
        self.sets.push(definition);
        Ok(())
    }

    /// Defines the set `[tenants.TENANT.sets.NAME]`, id "TENANT/NAME".
    pub fn add_tenant_set(
        &mut self,
        file: &str,
        base: &Path,
        tenant: &String,
        name: &str,
        set: &SetConfig,
    ) -> Result<(), ConfigError> {
        let at = format!("tenants.{tenant}.sets.{name}");
        let id = format!("{tenant}/{name}");
        let definition = define_set(file, base, &at, &id, Some(tenant), set)?;
        self.sets.push(definition);
        Ok(())
    }

    /// The set a campaign of `tenant` means by `name`: the tenant's own, else a global one.
    pub fn find(&self, tenant: &str, name: &str) -> Option<&SetDefinition> {
        let local = format!("{tenant}/{name}");
        self.sets.iter().find(|s| s.id == local).or_else(|| {
            self.sets
                .iter()
                .find(|s| s.tenant.is_none() && s.id == name)
        })
    }

    /// A file is served only as the set its header names, so two sets must never claim the
    /// same header name or the same files.
    pub fn check_distinct(&self, file: &str) -> Result<(), ConfigError> {
        let sets = &self.sets;
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
        Ok(())
    }
}
