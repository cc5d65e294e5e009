//! Erasure across the fleet: what proves an erased number gone from every host, from the
//! stream and from the object store, and the purge that makes it so.
//!
//! [`View`] is one read of the fleet's state in NATS: the stream's first and last sequence,
//! every set's head, the live hosts (host register entries renewed within their TTL), the
//! snapshot objects still stored, and the last purge. [`prove`] decides COMPLETE from a view
//! alone, so whichever host answers `GetErasure` answers the same. [`plan`] is the lease
//! holder's decision: how far the stream may be purged (never past a live host's applied
//! sequence, never past what the heads carry) and which older object versions go.
//!
//! The purge record lives in the heads bucket under [`PURGE_KEY`] (a key no set id can take:
//! set ids never start with `_`); the heads follower skips it. Never holds or logs a phone
//! number: sequences, set ids, versions and host ids only. Tokio allowed; never `server`.

use super::Fleet;
use super::heads::{self, Head};
use super::hosts::HostRecord;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio_stream::StreamExt;

/// The heads-bucket key of the last purge.
pub const PURGE_KEY: &str = "_purge";

/// The heads-bucket key keeping the receipt `id` of an erasure the stream no longer holds
/// (a host that joins after the purge never applied it, yet must answer for it). None: not
/// a receipt id this daemon makes.
pub fn receipt_key(id: &str) -> Option<String> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    valid.then(|| format!("_receipt.{id}"))
}

/// The last purge of the stream (JSON, format 1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeRecord {
    pub format: u32,
    /// The stream holds nothing at or below this sequence.
    pub through_seq: u64,
    pub at_ms: i64,
    /// The lease holder that purged.
    pub by: String,
}

/// One stored object part of a set version (not deleted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPart {
    pub set: String,
    pub version: u64,
    pub name: String,
}

/// Parses `<set>/<version>-<digest>/<index>` (a set id may hold a `/`).
pub fn parse_part(name: &str) -> Option<StoredPart> {
    let (object, index) = name.rsplit_once('/')?;
    index.parse::<u32>().ok()?;
    let (set, rest) = object.rsplit_once('/')?;
    let version = rest.split_once('-')?.0.parse().ok()?;
    Some(StoredPart {
        set: set.to_owned(),
        version,
        name: name.to_owned(),
    })
}

/// One read of the fleet's state in NATS.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// The stream's first and last sequence (first > last: empty).
    pub first_seq: u64,
    pub last_seq: u64,
    pub heads: BTreeMap<String, Head>,
    /// Live hosts only.
    pub hosts: Vec<HostRecord>,
    pub parts: Vec<StoredPart>,
    pub purge: Option<PurgeRecord>,
}

/// How long a view may take to read.
const VIEW_TIMEOUT: Duration = Duration::from_secs(5);

impl Fleet {
    /// Reads a [`View`] (an error if NATS does not answer within a few seconds).
    pub async fn view(&self) -> Result<View, String> {
        tokio::time::timeout(VIEW_TIMEOUT, self.read_view())
            .await
            .map_err(|_| "fleet: NATS did not answer in time".to_owned())?
    }

    async fn read_view(&self) -> Result<View, String> {
        let name = &self.settings.stream;
        let mut stream = self
            .jetstream
            .get_stream(name)
            .await
            .map_err(|e| format!("fleet: stream {name}: {e}"))?;
        let info = stream
            .info()
            .await
            .map_err(|e| format!("fleet: stream {name}: {e}"))?;
        let (first_seq, last_seq) = (info.state.first_sequence, info.state.last_sequence);
        let buckets = self.snapshot_buckets().await?;
        let mut keys = buckets
            .heads
            .keys()
            .await
            .map_err(|e| format!("fleet: heads: {e}"))?;
        let mut names = Vec::new();
        while let Some(key) = keys.next().await {
            names.push(key.map_err(|e| format!("fleet: heads: {e}"))?);
        }
        let mut view = View {
            first_seq,
            last_seq,
            ..View::default()
        };
        for key in names {
            if key == PURGE_KEY {
                if let Some(value) = buckets
                    .heads
                    .get(&key)
                    .await
                    .map_err(|e| format!("fleet: heads: {e}"))?
                {
                    view.purge = serde_json::from_slice(&value).ok();
                }
            } else if key.starts_with('_') {
                // Kept receipts and other fleet records: not sets.
            } else if let Some((head, _)) = heads::read_head(&buckets.heads, &key).await? {
                view.heads.insert(key, head);
            }
        }
        let now = super::now_ms();
        view.hosts = self
            .hosts_seen(VIEW_TIMEOUT)
            .await?
            .into_iter()
            .filter(|h| h.live(now))
            .collect();
        let mut list = buckets
            .objects
            .list()
            .await
            .map_err(|e| format!("fleet: snapshot objects: {e}"))?;
        while let Some(info) = list.next().await {
            let info = info.map_err(|e| format!("fleet: snapshot objects: {e}"))?;
            if !info.deleted
                && let Some(part) = parse_part(&info.name)
            {
                view.parts.push(part);
            }
        }
        Ok(view)
    }

    /// Purges the stream through `seq` (JetStream purge up to `seq + 1`, exclusive) and
    /// records it in the heads bucket. Returns how many messages went.
    pub async fn purge_through(&self, seq: u64) -> Result<u64, String> {
        let name = &self.settings.stream;
        let stream = self
            .jetstream
            .get_stream(name)
            .await
            .map_err(|e| format!("fleet: stream {name}: {e}"))?;
        let purged = stream
            .purge()
            .sequence(seq + 1)
            .await
            .map_err(|e| format!("fleet: purging stream {name} through {seq}: {e}"))?
            .purged;
        let record = PurgeRecord {
            format: 1,
            through_seq: seq,
            at_ms: super::now_ms(),
            by: self.settings.host_id.clone(),
        };
        let buckets = self.snapshot_buckets().await?;
        buckets
            .heads
            .put(
                PURGE_KEY,
                serde_json::to_vec(&record).expect("serialises").into(),
            )
            .await
            .map_err(|e| format!("fleet: recording the purge: {e}"))?;
        Ok(purged)
    }

    /// Keeps erasure receipts (id, JSON without any number) in the heads bucket, before the
    /// stream messages they came from are purged.
    pub async fn keep_receipts(&self, receipts: &[(String, Vec<u8>)]) -> Result<(), String> {
        let buckets = self.snapshot_buckets().await?;
        for (id, json) in receipts {
            let Some(key) = receipt_key(id) else {
                continue;
            };
            buckets
                .heads
                .put(key, json.clone().into())
                .await
                .map_err(|e| format!("fleet: keeping receipt {id}: {e}"))?;
        }
        Ok(())
    }

    /// A receipt [`Fleet::keep_receipts`] kept (JSON), if any.
    pub async fn kept_receipt(&self, id: &str) -> Result<Option<Vec<u8>>, String> {
        let Some(key) = receipt_key(id) else {
            return Ok(None);
        };
        let buckets = self.snapshot_buckets().await?;
        buckets
            .heads
            .get(key)
            .await
            .map(|v| v.map(|b| b.to_vec()))
            .map_err(|e| format!("fleet: receipt {id}: {e}"))
    }

    /// Deletes object parts (the object store purges each one's chunks too).
    pub async fn delete_parts(&self, names: &[String]) -> Result<(), String> {
        let buckets = self.snapshot_buckets().await?;
        for name in names {
            buckets
                .objects
                .delete(name)
                .await
                .map_err(|e| format!("fleet: deleting snapshot object {name}: {e}"))?;
        }
        Ok(())
    }
}

/// An erasure as the fleet sees it: its stream sequence and the sets it removed from.
#[derive(Clone, Debug)]
pub struct Erasure {
    pub stream_seq: u64,
    pub sets: Vec<String>,
}

/// Whether every live host of `view` serves `set`'s head (or newer).
fn all_serve(view: &View, set: &str) -> bool {
    let Some(head) = view.heads.get(set) else {
        return false;
    };
    !view.hosts.is_empty()
        && view
            .hosts
            .iter()
            .all(|h| h.versions.get(set).is_some_and(|&v| v >= head.version))
}

/// Parts of `set` older than its head.
fn older_parts<'a>(view: &'a View, set: &'a str) -> impl Iterator<Item = &'a StoredPart> + 'a {
    let head = view.heads.get(set).map_or(0, |h| h.version);
    view.parts
        .iter()
        .filter(move |p| p.set == set && p.version < head)
}

/// COMPLETE, or why not.
pub fn prove(view: &View, erasure: &Erasure) -> Result<(), String> {
    let seq = erasure.stream_seq;
    if seq == 0 {
        return Err("taken before this host joined a fleet: its proof is the host's own".into());
    }
    if view.first_seq <= seq {
        return Err(format!(
            "the stream still holds sequence {seq} (its first is {})",
            view.first_seq
        ));
    }
    for set in &erasure.sets {
        let Some(head) = view.heads.get(set) else {
            return Err(format!("set {set} has no fleet version yet"));
        };
        if head.through_seq < seq {
            return Err(format!(
                "set {set}'s head (version {}) carries the stream through {} only",
                head.version, head.through_seq
            ));
        }
        if let Some(part) = older_parts(view, set).next() {
            return Err(format!(
                "an older version of {set} ({}) is still in the object store",
                part.version
            ));
        }
    }
    if view.hosts.is_empty() {
        return Err("no live host in the host register".into());
    }
    for host in &view.hosts {
        if host.applied < seq {
            return Err(format!(
                "host {} has applied the stream through {} only",
                host.host_id, host.applied
            ));
        }
        for set in &erasure.sets {
            let head = &view.heads[set];
            if host.versions.get(set).is_none_or(|&v| v < head.version) {
                return Err(format!(
                    "host {} serves {set} version {:?}, the head is {}",
                    host.host_id,
                    host.versions.get(set),
                    head.version
                ));
            }
        }
        if host.clean_through < seq {
            return Err(format!(
                "host {} has not yet shown its own files free of it (clean through {})",
                host.host_id, host.clean_through
            ));
        }
    }
    Ok(())
}

/// What the lease holder does next.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Purge the stream through this sequence.
    pub purge_through: Option<u64>,
    /// Object parts to delete.
    pub delete: Vec<String>,
}

/// The lease holder's plan. `covered`: the holder's own proof that the heads carry every
/// message through it (its versions in force are the heads, and no overlay entry of a set
/// is older than that set's head's `through_seq`). The purge never passes a live host's
/// applied sequence, and happens only for an erasure every live host serves the heads of.
pub fn plan(view: &View, covered: u64, erasures: &[Erasure]) -> Plan {
    let mut plan = Plan::default();
    let Some(min_applied) = view.hosts.iter().map(|h| h.applied).min() else {
        return plan;
    };
    let bound = covered.min(min_applied);
    let carried = |e: &Erasure| {
        e.sets.iter().all(|set| {
            view.heads
                .get(set)
                .is_some_and(|h| h.through_seq >= e.stream_seq)
                && all_serve(view, set)
        })
    };
    let wanted = erasures
        .iter()
        .any(|e| e.stream_seq >= view.first_seq && e.stream_seq <= bound && carried(e));
    if wanted {
        plan.purge_through = Some(bound);
    }
    let first_after = plan
        .purge_through
        .map_or(view.first_seq, |p| view.first_seq.max(p + 1));
    let mut sets = BTreeSet::new();
    for erasure in erasures
        .iter()
        .filter(|e| e.stream_seq > 0 && e.stream_seq < first_after && carried(e))
    {
        sets.extend(erasure.sets.iter().map(String::as_str));
    }
    for set in sets {
        plan.delete
            .extend(older_parts(view, set).map(|p| p.name.clone()));
    }
    plan
}

/// Counters and gauges of the fleet's erasure work, described once.
pub struct Metrics {
    pub pending: metrics::Gauge,
    pub first_seq: metrics::Gauge,
    pub purges: metrics::Counter,
    pub purged_messages: metrics::Counter,
    pub purge_failures: metrics::Counter,
    pub objects_deleted: metrics::Counter,
    pub clean_through: metrics::Gauge,
}

pub fn metrics() -> &'static Metrics {
    static METRICS: std::sync::OnceLock<Metrics> = std::sync::OnceLock::new();
    METRICS.get_or_init(|| {
        metrics::describe_gauge!(
            "suppressd_fleet_erasures_pending",
            "Erasures this host knows of that are not yet COMPLETE fleet-wide (as of its last look at NATS)."
        );
        metrics::describe_gauge!(
            "suppressd_fleet_stream_first_seq",
            "The fleet stream's first sequence (everything below it was purged), as last seen."
        );
        metrics::describe_counter!(
            "suppressd_fleet_purges_total",
            "Purges of the fleet stream this host made as the compaction lease holder."
        );
        metrics::describe_counter!(
            "suppressd_fleet_purged_messages_total",
            "Messages removed from the fleet stream by this host's purges."
        );
        metrics::describe_counter!(
            "suppressd_fleet_purge_failures_total",
            "Failed purges of the fleet stream or deletions of older snapshot objects."
        );
        metrics::describe_counter!(
            "suppressd_fleet_snapshot_objects_deleted_total",
            "Older snapshot object parts deleted from the object store after an erasure."
        );
        metrics::describe_gauge!(
            "suppressd_fleet_clean_through",
            "Stream sequence through which every erasure has left no trace in this host's files."
        );
        Metrics {
            pending: metrics::gauge!("suppressd_fleet_erasures_pending"),
            first_seq: metrics::gauge!("suppressd_fleet_stream_first_seq"),
            purges: metrics::counter!("suppressd_fleet_purges_total"),
            purged_messages: metrics::counter!("suppressd_fleet_purged_messages_total"),
            purge_failures: metrics::counter!("suppressd_fleet_purge_failures_total"),
            objects_deleted: metrics::counter!("suppressd_fleet_snapshot_objects_deleted_total"),
            clean_through: metrics::gauge!("suppressd_fleet_clean_through"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(set: &str, version: u64, through_seq: u64) -> Head {
        Head {
            format: heads::HEAD_FORMAT,
            set: set.into(),
            version,
            object: format!("{set}/{version}-00"),
            parts: 1,
            part_bytes: 1,
            size: 1,
            digest: String::new(),
            key_scheme: "plain".into(),
            through_seq,
            published_by: "a".into(),
            published_at_ms: 0,
        }
    }

    fn host(id: &str, applied: u64, version: u64, clean: u64) -> HostRecord {
        HostRecord {
            host_id: id.into(),
            applied,
            versions: BTreeMap::from([("acme/dnc".into(), version)]),
            clean_through: clean,
            ..HostRecord::default()
        }
    }

    fn view() -> View {
        View {
            first_seq: 1,
            last_seq: 20,
            heads: BTreeMap::from([("acme/dnc".into(), head("acme/dnc", 3, 12))]),
            hosts: vec![host("a", 20, 3, 0), host("b", 15, 3, 0)],
            parts: ["acme/dnc/2-aa/0", "acme/dnc/3-bb/0", "us-dnc/7-cc/0"]
                .iter()
                .map(|n| parse_part(n).unwrap())
                .collect(),
            purge: None,
        }
    }

    fn erasure(seq: u64) -> Erasure {
        Erasure {
            stream_seq: seq,
            sets: vec!["acme/dnc".into()],
        }
    }

    #[test]
    fn parts_parse_with_slashes_in_set_ids() {
        let part = parse_part("acme/dnc/12-00aabb/3").unwrap();
        assert_eq!((part.set.as_str(), part.version), ("acme/dnc", 12));
        assert!(parse_part("acme/dnc/x-00/0").is_none());
        assert!(parse_part("junk").is_none());
    }

    #[test]
    fn the_purge_never_passes_a_live_hosts_applied_sequence_nor_the_heads() {
        let mut view = view();
        // Covered through 18 by the heads, host b applied 15: through 15.
        let plan = plan(&view, 18, &[erasure(10)]);
        assert_eq!(plan.purge_through, Some(15));
        assert_eq!(plan.delete, ["acme/dnc/2-aa/0"]);
        // A host serving an older version: no purge, no deletion.
        view.hosts[1].versions.insert("acme/dnc".into(), 2);
        assert_eq!(super::plan(&view, 18, &[erasure(10)]), Plan::default());
        view.hosts[1].versions.insert("acme/dnc".into(), 3);
        // The erasure past what b applied: nothing.
        assert_eq!(super::plan(&view, 18, &[erasure(16)]).purge_through, None);
        // Not carried by the head: nothing.
        assert_eq!(super::plan(&view, 18, &[erasure(13)]).purge_through, None);
        // No live host: nothing.
        view.hosts.clear();
        assert_eq!(super::plan(&view, 18, &[erasure(10)]), Plan::default());
    }

    #[test]
    fn complete_needs_every_condition() {
        let mut view = view();
        let e = erasure(10);
        assert!(prove(&view, &e).unwrap_err().contains("stream still holds"));
        view.first_seq = 16;
        assert!(prove(&view, &e).unwrap_err().contains("older version"));
        view.parts.remove(0);
        assert!(prove(&view, &e).unwrap_err().contains("own files"));
        for host in &mut view.hosts {
            host.clean_through = 15;
        }
        assert_eq!(prove(&view, &e), Ok(()));
        view.hosts[0].versions.insert("acme/dnc".into(), 2);
        assert!(prove(&view, &e).unwrap_err().contains("serves acme/dnc"));
        view.hosts[0].versions.insert("acme/dnc".into(), 4);
        view.hosts[1].applied = 9;
        assert!(prove(&view, &e).unwrap_err().contains("host b has applied"));
        assert!(prove(&view, &erasure(0)).is_err());
    }
}
