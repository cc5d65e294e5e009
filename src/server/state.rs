//! The daemon's shared state and its one writer: the reloader.
//!
//! Handlers read the sets in force through an `ArcSwap` (no lock on the hot path). Only
//! [`State::reload`] publishes, under a mutex, so there is one writer: it scans the data
//! directory, validates new snapshot files off the request path, and swaps in a new
//! [`LoadedSets`] in one step. Calls in flight finish on the version they started with; an old
//! version is unmapped when the last call using it drops its `Arc`. A bad file is refused and
//! logged, and the version already in force keeps serving.

use crate::config::Config;
use crate::engine::set::SuppressionSet;
use crate::engine::snapshot;
use crate::mutation::Overlay;
use crate::policy::{LoadedSet, LoadedSets, Policy, SetId};
use crate::server::limits::{InFlight, TokenBucket};
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

pub struct State {
    pub config: Config,
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
    /// The mutation path, once opened: `/readyz` reports its write failures (weak: the
    /// mutator holds no `State`, but keep the graph acyclic anyway).
    pub mutator: std::sync::OnceLock<std::sync::Weak<crate::server::mutations::Mutator>>,
}

impl State {
    pub fn new(config: Config) -> State {
        let policy = Policy::compile(&config);
        let count = policy.sets.len();
        let rate_limits = config
            .raw
            .tenants
            .iter()
            .filter_map(|(name, tenant)| {
                let rate = tenant.max_checks_per_second?;
                Some((
                    name.clone(),
                    TokenBucket::new(rate, tenant.burst.unwrap_or(rate)),
                ))
            })
            .collect();
        State {
            in_flight: InFlight::new(config.raw.server.max_in_flight),
            rate_limits,
            mutator: std::sync::OnceLock::new(),
            sets: ArcSwap::from_pointee(LoadedSets {
                slots: vec![None; count],
            }),
            last_errors: Mutex::new(vec![None; count]),
            overlays: (0..count).map(|_| Overlay::default()).collect(),
            policy,
            config,
            ready: AtomicBool::new(false),
            writer: Mutex::new(HashSet::new()),
            started_at_ms: now_ms(),
        }
    }

    /// The one-writer lock (also guards the set of refused files).
    pub(crate) fn writer_lock(&self) -> std::sync::MutexGuard<'_, HashSet<FileStamp>> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
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
    pub fn reload(&self) -> ReloadReport {
        let mut refused_files = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.sets.load_full();
        let files = list_snapshot_files(&self.config.data_dir);
        let mut slots = current.slots.clone();
        let mut report = ReloadReport::default();
        let mut errors = self
            .last_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (id, definition) in self.policy.sets.iter().enumerate() {
            let in_force = slots[id].as_ref().map(|s| s.set.version());
            let mut candidates: Vec<(u64, PathBuf)> = Vec::new();
            for path in &files {
                let matches = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|name| definition.pattern.matches(name));
                if !matches || stamp(path).is_some_and(|s| refused_files.contains(&s)) {
                    continue;
                }
                // A file deleted meanwhile (compaction removing old versions) is simply gone.
                if !path.exists() {
                    continue;
                }
                match header_version(path) {
                    Ok(version) if in_force.is_none_or(|v| version > v) => {
                        candidates.push((version, path.clone()));
                    }
                    Ok(_) => {}
                    Err(reason) => {
                        tracing::warn!(set = %definition.id, error = %reason, "snapshot refused");
                        errors[id] = Some(reason.clone());
                        refused_files.extend(stamp(path));
                        report
                            .refused
                            .push((definition.id.clone(), path.clone(), reason));
                    }
                }
            }
            // Newest first: the first valid one wins; invalid ones are refused and skipped.
            candidates.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
            for (_, path) in candidates {
                match open_checked(&path, definition) {
                    Ok(set) => {
                        tracing::info!(set = %definition.id, version = set.version(), keys = set.len(), file = %path.display(), "snapshot loaded");
                        report.loaded.push((definition.id.clone(), set.version()));
                        slots[id] = Some(Arc::new(LoadedSet {
                            set,
                            file: path,
                            loaded_at_ms: now_ms(),
                        }));
                        errors[id] = None;
                        break;
                    }
                    Err(_) if !path.exists() => {}
                    Err(reason) => {
                        tracing::warn!(set = %definition.id, file = %path.display(), error = %reason, "snapshot refused; the version in force keeps serving");
                        errors[id] = Some(reason.clone());
                        refused_files.extend(stamp(&path));
                        report.refused.push((definition.id.clone(), path, reason));
                    }
                }
            }
        }
        if !report.loaded.is_empty() {
            self.sets.store(Arc::new(LoadedSets { slots }));
        }
        let metrics = crate::metrics::metrics();
        metrics.reloads_ok.increment(report.loaded.len() as u64);
        metrics
            .reloads_refused
            .increment(report.refused.len() as u64);
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

/// The version in a file's header, without reading its sections.
fn header_version(path: &Path) -> Result<u64, String> {
    let io = |e: std::io::Error| format!("snapshot {}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: snapshot files are immutable once renamed into place; only the header is read.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    snapshot::decode_header(&map)
        .map(|layout| layout.header.version)
        .map_err(|e| e.at(path).to_string())
}

/// Opens and validates a snapshot, and checks it is the kind of set the config says.
fn open_checked(
    path: &Path,
    definition: &crate::config::SetDefinition,
) -> Result<SuppressionSet, String> {
    let set = SuppressionSet::open(path, definition.key.as_ref()).map_err(|e| e.to_string())?;
    if set.kind() != definition.kind {
        return Err(format!(
            "snapshot {}: is a {} set but '{}' is configured as {}",
            path.display(),
            set.kind().name(),
            definition.id,
            definition.kind.name()
        ));
    }
    if definition.key.is_some() != (set.header().key_id.is_some()) {
        return Err(format!(
            "snapshot {}: key scheme {} does not match the configuration of '{}'",
            path.display(),
            set.header().scheme.name(),
            definition.id
        ));
    }
    Ok(set)
}
