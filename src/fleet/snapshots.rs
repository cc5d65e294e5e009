//! Snapshot versions as a fleet artefact: publishing one (the `fleet publish` command and the
//! lease holder's compaction) and every host following the heads.
//!
//! Publishing: the file is validated by the engine as the set it claims to be, uploaded in
//! parts ([`super::objects`]), and only then is the set's head moved by a compare-and-set
//! ([`super::heads::move_head`]); a publisher that loses the race deletes what it uploaded.
//!
//! Following ([`follow_heads`]): every head change (and every head at start, which is how an
//! empty host bootstraps) of a set this host serves, above the version in force, is fetched
//! into the data directory under a temporary name, its digest verified, validated by the
//! engine (header name, kind, key scheme and version as the head says), fsynced and renamed
//! into place; then the reload path, with its own refusals (`min_keys_ratio`, identity),
//! decides. Once the head's version is in force, overlay entries through its `through_seq`
//! are dropped ([`Target::loaded`]). A bad object is refused (logged with object, offset and
//! reason; counted), remembered so it is not fetched in a loop, and the version in force keeps
//! serving. Never touches the version in force itself and never writes a file under a set's
//! name that has not passed every check.

use super::Fleet;
use super::heads::{self, Buckets, Head, MoveError};
use super::objects::{self, FetchError};
use crate::config::SetDefinition;
use crate::engine::set::SuppressionSet;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;

/// Pause before retrying after NATS was unreachable.
const RETRY: Duration = Duration::from_secs(1);
/// How often the heads are settled again without a change.
const RESETTLE: Duration = Duration::from_secs(5);
/// A refused version is fetched again at most this often (a repaired object under the same
/// head is picked up; a bad one is not downloaded in a loop).
const REFUSED_RETRY: Duration = Duration::from_secs(60);

/// Counters of this module, described once.
struct Metrics {
    fetched: metrics::Counter,
    refused: metrics::Counter,
    published: metrics::Counter,
}

fn metrics() -> &'static Metrics {
    static METRICS: std::sync::OnceLock<Metrics> = std::sync::OnceLock::new();
    METRICS.get_or_init(|| {
        metrics::describe_counter!(
            "suppressd_fleet_snapshots_fetched_total",
            "Snapshot versions fetched from the fleet object store and put in the data directory."
        );
        metrics::describe_counter!(
            "suppressd_fleet_snapshots_refused_total",
            "Snapshot versions from the fleet object store refused (digest, length, engine validation or reload refusal); the version in force keeps serving."
        );
        metrics::describe_counter!(
            "suppressd_fleet_snapshots_published_total",
            "Snapshot versions this process published to the fleet (head moved)."
        );
        Metrics {
            fetched: metrics::counter!("suppressd_fleet_snapshots_fetched_total"),
            refused: metrics::counter!("suppressd_fleet_snapshots_refused_total"),
            published: metrics::counter!("suppressd_fleet_snapshots_published_total"),
        }
    })
}

/// Checks that `set` (opened with the engine's full validation) is `definition`'s set.
pub fn check_identity(
    path: &Path,
    set: &SuppressionSet,
    definition: &SetDefinition,
) -> Result<(), String> {
    let header = set.header();
    let name = definition.header_name();
    if header.name != name {
        return Err(format!(
            "{}: its header names set '{}', not '{name}' (set '{}')",
            path.display(),
            header.name,
            definition.id
        ));
    }
    if header.kind != definition.kind {
        return Err(format!(
            "{}: a {} set, but '{}' is configured as {}",
            path.display(),
            header.kind.name(),
            definition.id,
            definition.kind.name()
        ));
    }
    let configured = definition.key.as_ref().map(|k| k.id().to_owned());
    if header.key_id != configured {
        return Err(format!(
            "{}: key scheme {} does not match the configuration of '{}'",
            path.display(),
            heads::key_scheme(header.key_id.as_deref()),
            definition.id
        ));
    }
    Ok(())
}

/// Why a publish did not move the head.
#[derive(Debug)]
pub enum PublishError {
    /// The file is not a valid snapshot of the set, or not above the head.
    Refused(String),
    /// Another publisher moved the head first; what was uploaded is deleted.
    Lost(String),
    Failed(String),
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::Refused(e) | PublishError::Lost(e) | PublishError::Failed(e) => {
                f.write_str(e)
            }
        }
    }
}

/// What to publish and on which condition.
pub struct Publication<'a> {
    pub definition: &'a SetDefinition,
    pub file: &'a Path,
    /// The stream sequence the version carries; None: the head's (a registry copy built from
    /// the previous version carries what that one did).
    pub through_seq: Option<u64>,
    /// Publish only if the head is at this version (or absent): the compactor's base.
    pub base_version: Option<u64>,
    pub publisher: &'a str,
    pub part_bytes: u64,
}

/// Validates, uploads and moves the head (compare-and-set). Returns the new head.
pub async fn publish(
    buckets: &Buckets,
    publication: Publication<'_>,
) -> Result<Head, PublishError> {
    let definition = publication.definition;
    let file = publication.file.to_path_buf();
    let checked = definition.clone();
    let (version, key_id) = tokio::task::spawn_blocking(move || {
        let set = SuppressionSet::open(&file, checked.key.as_ref()).map_err(|e| format!("{e}"))?;
        check_identity(&file, &set, &checked)?;
        Ok::<_, String>((set.version(), set.header().key_id.clone()))
    })
    .await
    .map_err(|e| PublishError::Failed(format!("validation task: {e}")))?
    .map_err(PublishError::Refused)?;
    let set = &definition.id;
    let current = heads::read_head(&buckets.heads, set)
        .await
        .map_err(PublishError::Failed)?;
    if let Some((head, _)) = &current {
        if head.version >= version {
            return Err(PublishError::Refused(format!(
                "set {set}: the fleet serves version {} already; publish a version above it (this file is version {version})",
                head.version
            )));
        }
        // A tenant set's versions carry the fleet's own mutations (opt-outs, consents,
        // erasures), which the stream may no longer hold once purged: a file made elsewhere
        // would drop them. Only compaction (which states its through_seq) replaces such a head.
        if publication.through_seq.is_none() && definition.tenant.is_some() && head.through_seq > 0
        {
            return Err(PublishError::Refused(format!(
                "set {set}: its head (version {}) carries the fleet's mutations through stream sequence {}; a file published by hand would drop them (the stream may no longer hold them): change a tenant's set through admin mutations",
                head.version, head.through_seq
            )));
        }
        if let Some(base) = publication.base_version
            && head.version != base
        {
            return Err(PublishError::Lost(format!(
                "set {set}: the head moved to version {} (this version was built on {base})",
                head.version
            )));
        }
    }
    let started = Instant::now();
    let uploaded = objects::upload(
        &buckets.objects,
        set,
        version,
        publication.file,
        publication.part_bytes,
    )
    .await
    .map_err(PublishError::Failed)?;
    let uploaded_in = started.elapsed();
    let head = Head {
        format: heads::HEAD_FORMAT,
        set: set.clone(),
        version,
        object: uploaded.object.clone(),
        parts: uploaded.parts,
        part_bytes: uploaded.part_bytes,
        size: uploaded.size,
        digest: uploaded.digest.clone(),
        key_scheme: heads::key_scheme(key_id.as_deref()),
        through_seq: publication
            .through_seq
            .unwrap_or_else(|| current.as_ref().map_or(0, |(h, _)| h.through_seq)),
        published_by: publication.publisher.to_owned(),
        published_at_ms: super::now_ms(),
    };
    match heads::move_head(&buckets.heads, &head, current.as_ref().map(|(_, r)| *r)).await {
        Ok(_) => {}
        Err(error) => {
            // The same content under a head someone else moved is not ours to delete.
            let same = heads::read_head(&buckets.heads, set)
                .await
                .ok()
                .flatten()
                .is_some_and(|(h, _)| h.object == uploaded.object);
            if !same {
                objects::delete(&buckets.objects, &uploaded.object, uploaded.parts).await;
            }
            return Err(match error {
                MoveError::Lost => PublishError::Lost(format!("set {set}: {error}")),
                MoveError::Failed(e) => PublishError::Failed(e),
            });
        }
    }
    metrics().published.increment(1);
    tracing::info!(
        set = %set,
        version,
        bytes = head.size,
        parts = head.parts,
        through_seq = head.through_seq,
        upload_ms = uploaded_in.as_millis() as u64,
        "fleet: snapshot published"
    );
    if let Some((previous, _)) = current {
        delete_older(buckets, set, &previous).await;
    }
    Ok(head)
}

/// Deletes the objects of versions older than `previous` (the version just replaced stays,
/// for a host still fetching it and for an operator going back one version).
async fn delete_older(buckets: &Buckets, set: &str, previous: &Head) {
    let Ok(mut list) = buckets.objects.list().await else {
        return;
    };
    let prefix = format!("{set}/");
    let mut old = Vec::new();
    while let Some(Ok(info)) = list.next().await {
        let Some(rest) = info.name.strip_prefix(&prefix) else {
            continue;
        };
        let version = rest
            .split_once('-')
            .and_then(|(v, _)| v.parse::<u64>().ok());
        if version.is_some_and(|v| v < previous.version) && !info.deleted {
            old.push(info.name);
        }
    }
    for name in old {
        if let Err(error) = buckets.objects.delete(&name).await {
            tracing::debug!(object = %name, %error, "fleet: old snapshot part not deleted");
        }
    }
}

/// The host side of following the heads: the mutation service and the state.
pub trait Target: Send + Sync + 'static {
    /// Every set this host serves, by catalog index.
    fn definitions(&self) -> &[SetDefinition];
    fn data_dir(&self) -> &Path;
    /// The version of set `id` in force.
    fn in_force(&self, id: usize) -> Option<u64>;
    /// Scans the data directory (the reload path). Blocking.
    fn reload_blocking(&self);
    /// `id`'s head version is in force: drop its overlay entries through `through_seq`.
    fn loaded(&self, id: usize, through_seq: u64);
}

/// Follows the heads until `stop` changes, fetching every new version of a set this host
/// serves.
pub async fn follow_heads(
    fleet: Arc<Fleet>,
    target: Arc<dyn Target>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut follower = Follower {
        target,
        heads: HashMap::new(),
        refused: HashMap::new(),
        compared: HashMap::new(),
    };
    let mut last_error = String::new();
    loop {
        let result = tokio::select! {
            result = follower.run(&fleet) => result,
            _ = stop.changed() => return,
        };
        if let Err(error) = result
            && error != last_error
        {
            tracing::warn!(%error, "fleet: following snapshot heads stopped; retrying");
            last_error = error;
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            _ = stop.changed() => return,
        }
    }
}

struct Follower {
    target: Arc<dyn Target>,
    /// The latest head of each set, as seen.
    heads: HashMap<String, Head>,
    /// (set, digest) refused, and when.
    refused: HashMap<(String, String), Instant>,
    /// (set, head digest) → whether the file in force of the head's version has its bytes:
    /// compared once per head (a registry is hundreds of megabytes).
    compared: HashMap<(String, String), bool>,
}

impl Follower {
    async fn run(&mut self, fleet: &Fleet) -> Result<(), String> {
        let buckets = fleet.snapshot_buckets().await?;
        let mut watch = buckets
            .heads
            .watch_with_history(">")
            .await
            .map_err(|e| format!("watch heads: {e}"))?;
        loop {
            let pending = self.settle(&buckets).await;
            fleet.status.set_diverged(self.diverged());
            // Settled again now and then even without a change: stream messages a version
            // already carries may be applied after it was loaded (a host bootstrapping), and
            // their overlay entries are dropped then.
            let wait = if pending { RETRY } else { RESETTLE };
            let Ok(next) = tokio::time::timeout(wait, watch.next()).await else {
                continue;
            };
            let entry = next
                .ok_or("the heads watch ended")?
                .map_err(|e| format!("watch heads: {e}"))?;
            // Keys starting with `_` are the fleet's records, not sets (`erasure::PURGE_KEY`).
            if entry.operation != async_nats::jetstream::kv::Operation::Put
                || entry.key.starts_with('_')
            {
                continue;
            }
            match Head::decode(&entry.key, &entry.value) {
                Ok(head) => {
                    self.heads.insert(head.set.clone(), head);
                }
                Err(error) => tracing::error!(%error, "fleet: snapshot head refused"),
            }
        }
    }

    /// Whether some set's version in force has other bytes than its head of that version.
    fn diverged(&self) -> bool {
        self.heads
            .values()
            .any(|head| self.compared.get(&(head.set.clone(), head.digest.clone())) == Some(&false))
    }

    /// Whether this host's file of the head's version (the one in force) has the head's
    /// bytes. A file of that version built elsewhere (a host's own sample list, a hand copy,
    /// a compaction before it joined the fleet) would be served as the fleet's version, and
    /// the overlay entries the head carries dropped: the caller fails closed instead.
    async fn in_force_is_the_head(&mut self, head: &Head, path: PathBuf) -> bool {
        let key = (head.set.clone(), head.digest.clone());
        if let Some(&same) = self.compared.get(&key) {
            return same;
        }
        let digest = tokio::task::spawn_blocking(move || objects::digest_file(&path))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
        let same = match digest {
            Ok((digest, size)) => {
                let same = digest == head.digest && size == head.size;
                if !same {
                    tracing::error!(set = %head.set, version = head.version, local = %digest, head = %head.digest, "fleet: the version in force here has other bytes than the fleet's head of that version; checks answer FLEET_LAG until this host is re-seeded (RUNBOOK)");
                }
                same
            }
            // Not readable now (a reload moving files): compared again at the next settle.
            Err(error) => {
                tracing::warn!(set = %head.set, %error, "fleet: cannot compare the version in force with its head");
                return true;
            }
        };
        self.compared.insert(key, same);
        same
    }

    /// Brings every set up to its head; true if some fetch must be retried.
    async fn settle(&mut self, buckets: &Buckets) -> bool {
        let mut pending = false;
        let heads: Vec<Head> = self.heads.values().cloned().collect();
        for head in heads {
            match self.settle_one(buckets, &head).await {
                Ok(()) => {}
                Err(FetchError::Unreachable(error)) => {
                    tracing::warn!(set = %head.set, version = head.version, %error, "fleet: snapshot fetch failed; retrying");
                    pending = true;
                }
                Err(FetchError::Bad(error)) => {
                    tracing::error!(set = %head.set, version = head.version, %error, "fleet: snapshot version refused; the version in force keeps serving");
                    metrics().refused.increment(1);
                    self.refused
                        .insert((head.set.clone(), head.digest.clone()), Instant::now());
                }
            }
        }
        pending
    }

    async fn settle_one(&mut self, buckets: &Buckets, head: &Head) -> Result<(), FetchError> {
        let definitions = self.target.definitions();
        let Some(id) = definitions.iter().position(|d| d.id == head.set) else {
            return Ok(());
        };
        let in_force = self.target.in_force(id);
        if in_force == Some(head.version) {
            let path = self
                .target
                .data_dir()
                .join(definitions[id].file_name(head.version));
            // Overlay entries are dropped only for the head's own bytes.
            if self.in_force_is_the_head(head, path).await {
                self.target.loaded(id, head.through_seq);
            }
            return Ok(());
        }
        if in_force.is_some_and(|v| v > head.version) {
            return Ok(());
        }
        let refused_key = (head.set.clone(), head.digest.clone());
        if self
            .refused
            .get(&refused_key)
            .is_some_and(|at| at.elapsed() < REFUSED_RETRY)
        {
            return Ok(());
        }
        let definition = definitions[id].clone();
        let dir = self.target.data_dir().to_path_buf();
        let file_name = definition.file_name(head.version);
        let path = dir.join(&file_name);
        if !already_there(&path, head).await {
            // Not `.tmp-`: compaction deletes this process's `.tmp-` files as leftovers, and
            // this download runs beside it (`compaction::stale_temp_file`).
            let temporary = dir.join(format!(".{file_name}.fetch-{}", std::process::id()));
            let started = Instant::now();
            objects::download(&buckets.objects, head, &temporary).await?;
            let (checked, check_head) = (temporary.clone(), head.clone());
            let valid =
                tokio::task::spawn_blocking(move || validate(&checked, &definition, &check_head))
                    .await
                    .map_err(|e| FetchError::Unreachable(format!("validation task: {e}")))?;
            if let Err(error) = valid {
                let _ = tokio::fs::remove_file(&temporary).await;
                return Err(FetchError::Bad(error));
            }
            rename_into_place(&temporary, &path, &dir).map_err(FetchError::Unreachable)?;
            metrics().fetched.increment(1);
            tracing::info!(set = %head.set, version = head.version, bytes = head.size, fetch_ms = started.elapsed().as_millis() as u64, file = %path.display(), "fleet: snapshot fetched");
        }
        let target = self.target.clone();
        let _ = tokio::task::spawn_blocking(move || target.reload_blocking()).await;
        if self.target.in_force(id) == Some(head.version) {
            self.target.loaded(id, head.through_seq);
            Ok(())
        } else {
            Err(FetchError::Bad(format!(
                "{}: the reload path did not take it (see its refusal above)",
                path.display()
            )))
        }
    }
}

/// Whether `path` already holds `head`'s bytes (fetched before a restart, or the compactor's
/// own output).
async fn already_there(path: &Path, head: &Head) -> bool {
    let owned = path.to_path_buf();
    if !owned.exists() {
        return false;
    }
    tokio::task::spawn_blocking(move || objects::digest_file(&owned))
        .await
        .ok()
        .and_then(Result::ok)
        .is_some_and(|(digest, size)| digest == head.digest && size == head.size)
}

/// The engine's full validation of a downloaded file, and that it is the version the head
/// names. Blocking.
fn validate(path: &Path, definition: &SetDefinition, head: &Head) -> Result<(), String> {
    let set = SuppressionSet::open(path, definition.key.as_ref()).map_err(|e| e.to_string())?;
    check_identity(path, &set, definition)?;
    if set.version() != head.version {
        return Err(format!(
            "{}: header version {} but the head says {}",
            path.display(),
            set.version(),
            head.version
        ));
    }
    let scheme = heads::key_scheme(set.header().key_id.as_deref());
    if scheme != head.key_scheme {
        return Err(format!(
            "{}: key scheme {scheme} but the head says {}",
            path.display(),
            head.key_scheme
        ));
    }
    Ok(())
}

fn rename_into_place(temporary: &Path, path: &Path, dir: &Path) -> Result<(), String> {
    std::fs::rename(temporary, path)
        .and_then(|()| std::fs::File::open(dir)?.sync_all())
        .map_err(|e| format!("cannot rename {} into place: {e}", path.display()))
}

/// Where the lease holder's compaction writes versions before their heads move (not a set's
/// pattern: the reload path never sees them).
pub fn staging_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(".fleet-staging")
}
