//! The daemon's shared state and its one writer lock.
//!
//! Handlers read the sets in force through an `ArcSwap` (no lock on the hot path). Two paths
//! publish, both under one mutex, so there is one writer at a time: [`State::reload`] (files
//! placed in the data directory) and [`State::publish`] (versions compaction wrote). The
//! reloader scans the data
//! directory, validates new snapshot files off the request path, and swaps in a new
//! [`LoadedSets`] in one step. Calls in flight finish on the version they started with; an old
//! version is unmapped when the last call using it drops its `Arc`. A bad file is refused and
//! logged, and the version already in force keeps serving. The reloader is also where a file
//! must prove it is the set it claims to be (header name, kind, key scheme, and the version its
//! file name carries) and not a far smaller copy of the version in force (`min_keys_ratio`).
//! It never writes a snapshot; the one change it makes to the data directory is renaming a
//! file refused for too few keys out of the set's pattern.

use crate::config::{Config, SetDefinition};
use crate::engine::set::SuppressionSet;
use crate::engine::snapshot::{self, SetHeader};
use crate::metrics::Refused;
use crate::policy::{LoadedSet, LoadedSets, Policy, SetId};
use crate::server::limits::{InFlight, TokenBucket};
use crate::store::Overlay;
use arc_swap::ArcSwap;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What one reload pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// (set id, new version) for each set swapped in.
    pub loaded: Vec<(String, u64)>,
    /// (set id, file, error) for each file refused.
    pub refused: Vec<(String, PathBuf, String)>,
}

/// Whether the mutation path can make mutations durable right now.
pub trait WriteHealth: Send + Sync {
    /// Why mutations are refused or not recorded (a full disk), if they are.
    fn write_error(&self) -> Option<String>;
}

/// The slots of [`LoadedSets`], as a publisher changes them.
pub type Slots = Vec<Option<Arc<LoadedSet>>>;

pub struct State {
    pub config: Config,
    /// Certificates, tokens and the audit key the config names (loaded before binding).
    pub secrets: crate::server::secrets::Secrets,
    pub policy: Policy,
    pub sets: ArcSwap<LoadedSets>,
    /// Mutations since each set's snapshot, by catalog index. Long-lived: not swapped.
    pub overlays: Vec<Overlay>,
    ready: AtomicBool,
    /// Last refusal per set, for Status. Not on the hot path.
    last_errors: Mutex<Vec<Option<String>>>,
    /// Serialises writers: exactly one reload publishes at a time. Holds the files already
    /// refused (path, length, modification time), so a bad file is logged and checksummed once,
    /// not on every scan.
    writer: Mutex<HashSet<FileStamp>>,
    pub started_at_ms: i64,
    /// Check requests in flight over every API (`server.max_in_flight`).
    pub in_flight: InFlight,
    /// Per-tenant rate limits, for the tenants that have one. Built once; never changes.
    pub rate_limits: HashMap<String, TokenBucket>,
    /// The mutation path, once opened: `/readyz` reports its write failures. Weak, and seen
    /// only through [`WriteHealth`], so the state knows nothing of the mutation service.
    pub mutator: std::sync::OnceLock<std::sync::Weak<dyn WriteHealth>>,
    /// Fleet mode: where this host stands in the stream (set at start, before serving).
    pub fleet: std::sync::OnceLock<Arc<crate::fleet::Status>>,
    /// Attempt caps: the book the journal's writer thread decides reservations in.
    pub attempts: crate::store::attempts::Book,
    /// The key each tenant's attempt counters fingerprint numbers with: its erased set's key,
    /// else the audit key.
    attempt_keys: HashMap<String, crate::engine::keys::SecretKey>,
}

impl State {
    pub fn new(config: Config, secrets: crate::server::secrets::Secrets) -> State {
        let policy = Policy::compile(&config);
        let count = policy.sets.len();
        let rate_limits = config
            .tenants()
            .iter()
            .filter_map(|(name, tenant)| {
                let rate = tenant.max_checks_per_second?;
                Some((
                    name.clone(),
                    TokenBucket::new(rate, tenant.burst.unwrap_or(rate)),
                ))
            })
            .collect();
        let mut attempt_keys = HashMap::new();
        for definition in &policy.sets {
            if let (Some(tenant), Some(key), Some(crate::config::BlockReason::Erased)) =
                (&definition.tenant, &definition.key, definition.reason)
            {
                attempt_keys
                    .entry(tenant.clone())
                    .or_insert_with(|| key.clone());
            }
        }
        State {
            attempts: Default::default(),
            attempt_keys,
            in_flight: InFlight::new(config.server().max_in_flight),
            rate_limits,
            mutator: std::sync::OnceLock::new(),
            fleet: std::sync::OnceLock::new(),
            sets: ArcSwap::from_pointee(LoadedSets {
                slots: vec![None; count],
            }),
            last_errors: Mutex::new(vec![None; count]),
            overlays: (0..count).map(|_| Overlay::default()).collect(),
            policy,
            config,
            secrets,
            ready: AtomicBool::new(false),
            writer: Mutex::new(HashSet::new()),
            started_at_ms: now_ms(),
        }
    }

    /// The key `tenant`'s attempt counters fingerprint numbers with (`None`: none configured).
    pub fn attempt_key(&self, tenant: &str) -> Option<&crate::engine::keys::SecretKey> {
        self.attempt_keys
            .get(tenant)
            .or(self.secrets.audit_key.as_ref())
    }

    /// Publishes a change to the sets in force (versions compaction wrote), serialised with
    /// reloads by the writer lock.
    pub fn publish(&self, change: impl FnOnce(&mut Slots)) {
        let _writer = self.writer_lock();
        let mut slots = self.sets.load().slots.clone();
        change(&mut slots);
        self.sets.store(Arc::new(LoadedSets { slots }));
    }

    /// The one-writer lock (also guards the set of refused files).
    pub(crate) fn writer_lock(&self) -> std::sync::MutexGuard<'_, HashSet<FileStamp>> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fleet mode: whether this host lags past `fleet.max_lag_seconds` (checks answer
    /// FLEET_LAG, health NOT_SERVING). One atomic load; false on a single host.
    pub fn fleet_lagging(&self) -> bool {
        self.fleet.get().is_some_and(|status| status.lagging())
    }

    /// True once every set some campaign needs has been loaded (a latch: sets never unload).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Why mutations are refused or not recorded right now (a full disk), if they are.
    pub fn write_error(&self) -> Option<String> {
        self.mutator
            .get()
            .and_then(std::sync::Weak::upgrade)
            .and_then(|m| m.write_error())
    }

    pub fn last_error(&self, id: SetId) -> Option<String> {
        self.last_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .flatten()
    }

    /// Scans the data directory and swaps in every newer valid snapshot. Blocking: run it off
    /// the async runtime's worker threads.
    ///
    /// A file is a candidate for a set when its name matches the set's pattern; it is served
    /// only if its header names that set (kind and key scheme included) under the version its
    /// file name carries, and its version is above the one in force. Candidates are tried
    /// newest first; the first that validates and is not far smaller than the version in force
    /// (`min_keys_ratio`) wins. Every refusal is logged with file and reason, shown in Status
    /// and counted by reason; the version in force keeps serving.
    pub fn reload(&self) -> ReloadReport {
        let mut refused_files = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.sets.load_full();
        let files = list_snapshot_files(&self.config.data_dir);
        let mut slots = current.slots.clone();
        let errors = self
            .last_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut pass = Pass {
            refused_files: &mut refused_files,
            errors,
            report: ReloadReport::default(),
            counts: [0; Refused::ALL.len()],
        };
        for (id, definition) in self.policy.sets.iter().enumerate() {
            let refused_before = pass.report.refused.len();
            let in_force = slots[id].clone();
            let in_force_version = in_force.as_ref().map(|s| s.set.version());
            let mut candidates: Vec<(u64, PathBuf)> = Vec::new();
            for path in &files {
                let matches = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|name| definition.pattern.matches(name));
                if !matches || stamp(path).is_some_and(|s| pass.refused_files.contains(&s)) {
                    continue;
                }
                // A file deleted meanwhile (compaction removing old versions) is simply gone.
                if !path.exists() {
                    continue;
                }
                // Identity is checked on every file of the pattern, older ones too: a file
                // that claims to be another set is worth an alert wherever it sits.
                match header_identity(path, definition) {
                    Ok(version) if in_force_version.is_none_or(|v| version > v) => {
                        candidates.push((version, path.clone()));
                    }
                    Ok(_) => {}
                    Err(_) if !path.exists() => {}
                    Err(refusal) => pass.refuse(id, definition, path, refusal),
                }
            }
            // Newest first: the first valid one wins; invalid ones are refused and skipped.
            candidates.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
            for (version, path) in candidates {
                let set = match open_checked(&path, definition) {
                    Ok(set) => set,
                    Err(_) if !path.exists() => continue,
                    Err(refusal) => {
                        pass.refuse(id, definition, &path, refusal);
                        continue;
                    }
                };
                if let Some(in_force) = &in_force
                    && let Some(shortfall) = too_few_keys(&set, &in_force.set, definition)
                {
                    // The compactor writes the next version of a set (in force + 1) while its
                    // overlay still holds the mutations it folds in, and publishes it itself
                    // before forgetting them; a legitimate mass unsuppress may shrink it. Such
                    // a file is left alone here (not loaded, not refused): the compactor's own
                    // output must never be refused, and an operator's file of that version is
                    // judged on a later pass once the overlay is empty.
                    if in_force_version.and_then(|v| v.checked_add(1)) == Some(version)
                        && !self.overlays[id].is_empty()
                    {
                        tracing::debug!(set = %definition.id, file = %path.display(), "smaller next version while mutations are pending: left to the compactor");
                        continue;
                    }
                    drop(set);
                    let refusal = move_aside(&path, shortfall);
                    pass.refuse(id, definition, &path, refusal);
                    continue;
                }
                tracing::info!(set = %definition.id, version = set.version(), keys = set.len(), file = %path.display(), "snapshot loaded");
                pass.report
                    .loaded
                    .push((definition.id.clone(), set.version()));
                slots[id] = Some(Arc::new(LoadedSet {
                    set,
                    file: path,
                    loaded_at_ms: now_ms(),
                }));
                // A refusal in this same pass stays visible in Status beside the new version.
                if pass.report.refused.len() == refused_before {
                    pass.errors[id] = None;
                }
                break;
            }
        }
        let Pass {
            errors,
            report,
            counts,
            ..
        } = pass;
        if !report.loaded.is_empty() {
            self.sets.store(Arc::new(LoadedSets { slots }));
        }
        let metrics = crate::metrics::metrics();
        metrics.reloads_ok.increment(report.loaded.len() as u64);
        for (counter, count) in metrics.reloads_refused.iter().zip(counts) {
            counter.increment(count);
        }
        *self.last_errors.lock().unwrap_or_else(|e| e.into_inner()) = errors;
        let loaded = self.sets.load();
        let all_needed = self
            .policy
            .needed_sets()
            .iter()
            .all(|&id| loaded.slots[id].is_some());
        if all_needed && !self.ready.swap(true, Ordering::AcqRel) {
            tracing::info!("every set the policy needs is loaded: ready");
        }
        report
    }
}

/// Why a file was refused: the metric's bounded reason and a message naming file and reason.
struct Refusal {
    kind: Refused,
    message: String,
}

impl Refusal {
    fn new(kind: Refused, message: String) -> Refusal {
        Refusal { kind, message }
    }
}

/// What one reload pass has found so far.
struct Pass<'a> {
    refused_files: &'a mut HashSet<FileStamp>,
    errors: Vec<Option<String>>,
    report: ReloadReport,
    counts: [u64; Refused::ALL.len()],
}

impl Pass<'_> {
    /// Logs, remembers (not judged again until the file changes) and counts a refusal.
    fn refuse(&mut self, id: SetId, definition: &SetDefinition, path: &Path, refusal: Refusal) {
        tracing::warn!(set = %definition.id, file = %path.display(), reason = refusal.kind.name(), error = %refusal.message, "snapshot refused; the version in force keeps serving");
        self.errors[id] = Some(refusal.message.clone());
        self.refused_files.extend(stamp(path));
        self.counts[refusal.kind as usize] += 1;
        self.report
            .refused
            .push((definition.id.clone(), path.to_owned(), refusal.message));
    }
}

/// Snapshot files in the data directory (missing directory: none).
fn list_snapshot_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == snapshot::EXTENSION) && p.is_file())
        .collect()
}

/// Identifies one content of a file: a rewritten file (new rename) gets a new stamp.
pub(crate) type FileStamp = (PathBuf, u64, std::time::SystemTime);

fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((path.to_owned(), meta.len(), meta.modified().ok()?))
}

/// Reads a file's header, without its sections, and checks it is `definition`'s set under the
/// version its name carries. Returns that version.
fn header_identity(path: &Path, definition: &SetDefinition) -> Result<u64, Refusal> {
    let layout =
        snapshot::read_layout(path).map_err(|e| Refusal::new(Refused::Corrupt, e.to_string()))?;
    check_identity(path, &layout.header, definition)?;
    Ok(layout.header.version)
}

/// Opens and validates a snapshot, and checks again that it is `definition`'s set (the file
/// may have been replaced since its header was read).
fn open_checked(path: &Path, definition: &SetDefinition) -> Result<SuppressionSet, Refusal> {
    let set = SuppressionSet::open(path, definition.key.as_ref())
        .map_err(|e| Refusal::new(Refused::Corrupt, e.to_string()))?;
    check_identity(path, set.header(), definition)?;
    Ok(set)
}

/// A file is served only as the set it claims to be: its header names the set it is loaded
/// for, with the configured kind and key scheme, and its file name carries its header version.
fn check_identity(
    path: &Path,
    header: &SetHeader,
    definition: &SetDefinition,
) -> Result<(), Refusal> {
    let wrong_set = |reason: String| {
        Refusal::new(
            Refused::WrongSet,
            format!(
                "snapshot {}: {reason}; a file is served only as the set it claims to be",
                path.display()
            ),
        )
    };
    let expected = definition.header_name();
    if header.name != expected {
        return Err(wrong_set(format!(
            "its header names set '{}' but its file name is one of set '{}' (whose files must name '{expected}')",
            header.name, definition.id
        )));
    }
    if header.kind != definition.kind {
        return Err(wrong_set(format!(
            "is a {} set but '{}' is configured as {}",
            header.kind.name(),
            definition.id,
            definition.kind.name()
        )));
    }
    if definition.key.is_some() != header.key_id.is_some() {
        return Err(wrong_set(format!(
            "key scheme {} does not match the configuration of '{}'",
            header.scheme.name(),
            definition.id
        )));
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let named = definition.version_text(name).unwrap_or_default();
    if named != header.version.to_string() {
        return Err(Refusal::new(
            Refused::NameMismatch,
            format!(
                "snapshot {}: its file name says version '{named}' but its header says version {} (the newest version is decided by the header, so both must agree: name it {})",
                path.display(),
                header.version,
                definition.file_name(header.version)
            ),
        ));
    }
    Ok(())
}

/// The refusal message when `set` holds fewer keys than `definition.min_keys_ratio` of the
/// version in force; None when it holds enough.
fn too_few_keys(
    set: &SuppressionSet,
    in_force: &SuppressionSet,
    definition: &SetDefinition,
) -> Option<String> {
    let ratio = definition.min_keys_ratio;
    // Compared in f64: exact for any key count below 2^53.
    if ratio <= 0.0 || set.len() as f64 >= ratio * in_force.len() as f64 {
        return None;
    }
    Some(format!(
        "holds {} keys, {:.1}% of the {} keys of version {} in force, below min_keys_ratio {} of '{}' (a partial download?)",
        set.len(),
        set.len() as f64 * 100.0 / in_force.len() as f64,
        in_force.len(),
        in_force.version(),
        ratio,
        definition.id
    ))
}

/// Renames a file refused for too few keys to `NAME.refused`, out of the set's pattern, so a
/// restart (when no version is in force to compare with) cannot serve it.
fn move_aside(path: &Path, shortfall: String) -> Refusal {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".refused");
    let aside = PathBuf::from(aside);
    let dir = path.parent().unwrap_or(Path::new("."));
    let moved = std::fs::rename(path, &aside).and_then(|()| std::fs::File::open(dir)?.sync_all());
    let outcome = match moved {
        Ok(()) => format!("moved aside to {}", aside.display()),
        Err(e) => format!("could not be moved aside ({e}): remove it"),
    };
    Refusal::new(
        Refused::TooFewKeys,
        format!("snapshot {}: {shortfall}; {outcome}", path.display()),
    )
}
