//! Snapshot heads: which version of each set the fleet serves, one key-value entry per set.
//!
//! The heads bucket (`<stream>-heads`, `fleet.replicas` replicas, file storage) maps a set id
//! ("us-dnc", "acme/dnc") to a [`Head`]: the version, the object holding its bytes (in parts,
//! `objects`), their size and SHA-256, the set's key scheme and `through_seq`, the last stream
//! sequence the version carries (0: none; hosts forget overlay entries up to it once the
//! version is in force). A head only ever moves by a compare-and-set on the entry's revision
//! ([`move_head`]), after its object is fully stored: two publishers can never both win, and a
//! publisher that dies before the move leaves the version in force untouched.
//!
//! The value is JSON with a `format` number; a reader refuses a format it does not know
//! rather than guess. No phone number is ever in a head. Tokio allowed; never `server`.

use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};

/// The head record's format; bumped on any change a reader must understand.
pub const HEAD_FORMAT: u32 = 1;

/// One set's head: the version every host must serve.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// [`HEAD_FORMAT`].
    pub format: u32,
    /// The set id, as in the config ("us-dnc", "acme/dnc").
    pub set: String,
    /// The snapshot's header version (what its file name carries).
    pub version: u64,
    /// Object name prefix in the snapshot bucket; the parts are `<object>/<index>`.
    pub object: String,
    /// How many parts, each at most `part_bytes` long, in order.
    pub parts: u32,
    pub part_bytes: u64,
    /// The snapshot file's length in bytes.
    pub size: u64,
    /// `sha256:<hex>` over the whole file (every part in order).
    pub digest: String,
    /// "plain" or "keyed:<key id>": a host whose config keys the set otherwise refuses it.
    pub key_scheme: String,
    /// The last fleet stream sequence folded into this version (0: none).
    pub through_seq: u64,
    /// Who moved the head (a host id, or "cli:<user>") and when (ms since the epoch).
    pub published_by: String,
    pub published_at_ms: i64,
}

impl Head {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a head serialises")
    }

    /// Parses a head; refuses another format or a record naming another set.
    pub fn decode(key: &str, bytes: &[u8]) -> Result<Head, String> {
        let head: Head = serde_json::from_slice(bytes)
            .map_err(|e| format!("snapshot head {key}: not a head record: {e}"))?;
        if head.format != HEAD_FORMAT {
            return Err(format!(
                "snapshot head {key}: format {} (this suppressd reads format {HEAD_FORMAT}); upgrade it",
                head.format
            ));
        }
        if head.set != key {
            return Err(format!(
                "snapshot head {key}: the record names set '{}'",
                head.set
            ));
        }
        Ok(head)
    }
}

/// A set's header key scheme as a head records it.
pub fn key_scheme(key_id: Option<&str>) -> String {
    match key_id {
        None => "plain".into(),
        Some(id) => format!("keyed:{id}"),
    }
}

/// The buckets snapshots travel through.
#[derive(Clone)]
pub struct Buckets {
    pub heads: kv::Store,
    pub objects: jetstream::object_store::ObjectStore,
}

/// Bucket names, from the stream's name (one fleet, one set of buckets).
pub fn heads_bucket(stream: &str) -> String {
    format!("{stream}-heads")
}

pub fn objects_bucket(stream: &str) -> String {
    format!("{stream}-snapshots")
}

impl super::Fleet {
    /// The heads bucket and the snapshot object store, created if missing.
    pub async fn snapshot_buckets(&self) -> Result<Buckets, String> {
        let settings = &self.settings;
        let heads_name = heads_bucket(&settings.stream);
        let heads = match self.jetstream.get_key_value(&heads_name).await {
            Ok(store) => store,
            Err(_) => self
                .jetstream
                .create_key_value(kv::Config {
                    bucket: heads_name.clone(),
                    description: "suppressd snapshot heads: set -> version in force".into(),
                    // A few revisions per set: what was in force before, for an operator.
                    history: 5,
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: settings.replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("fleet: heads bucket {heads_name}: {e}"))?,
        };
        let objects_name = objects_bucket(&settings.stream);
        let objects = match self.jetstream.get_object_store(&objects_name).await {
            Ok(store) => store,
            Err(_) => self
                .jetstream
                .create_object_store(jetstream::object_store::Config {
                    bucket: objects_name.clone(),
                    description: Some("suppressd snapshot versions".into()),
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: settings.replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("fleet: snapshot bucket {objects_name}: {e}"))?,
        };
        Ok(Buckets { heads, objects })
    }
}

/// The head of `set` and the revision of its entry (None: no head yet).
pub async fn read_head(heads: &kv::Store, set: &str) -> Result<Option<(Head, u64)>, String> {
    let entry = heads
        .entry(set)
        .await
        .map_err(|e| format!("fleet: snapshot head {set}: {e}"))?;
    match entry {
        Some(entry) if entry.operation == kv::Operation::Put => {
            Ok(Some((Head::decode(set, &entry.value)?, entry.revision)))
        }
        _ => Ok(None),
    }
}

/// Why a head did not move.
#[derive(Debug, PartialEq, Eq)]
pub enum MoveError {
    /// Someone else moved it since `expected` was read: nothing changed.
    Lost,
    Failed(String),
}

impl std::fmt::Display for MoveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MoveError::Lost => f.write_str(
                "another publisher moved the head first (compare-and-set on its revision failed)",
            ),
            MoveError::Failed(error) => f.write_str(error),
        }
    }
}

/// Moves `head.set`'s head to `head` if its entry is still at `expected` (None: no entry).
/// Returns the new revision.
pub async fn move_head(
    heads: &kv::Store,
    head: &Head,
    expected: Option<u64>,
) -> Result<u64, MoveError> {
    let value = head.encode().into();
    match expected {
        Some(revision) => {
            heads
                .update(&head.set, value, revision)
                .await
                .map_err(|e| match e.kind() {
                    kv::UpdateErrorKind::WrongLastRevision => MoveError::Lost,
                    _ => MoveError::Failed(format!("fleet: snapshot head {}: {e}", head.set)),
                })
        }
        None => heads
            .create(&head.set, value)
            .await
            .map_err(|e| match e.kind() {
                kv::CreateErrorKind::AlreadyExists => MoveError::Lost,
                _ => MoveError::Failed(format!("fleet: snapshot head {}: {e}", head.set)),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> Head {
        Head {
            format: HEAD_FORMAT,
            set: "acme/dnc".into(),
            version: 3,
            object: "acme/dnc/3-00112233aabbccdd".into(),
            parts: 1,
            part_bytes: 64 << 20,
            size: 1234,
            digest: format!("sha256:{}", "ab".repeat(32)),
            key_scheme: key_scheme(None),
            through_seq: 17,
            published_by: "a".into(),
            published_at_ms: 1,
        }
    }

    #[test]
    fn round_trips_and_refuses_other_formats_and_sets() {
        let head = head();
        assert_eq!(Head::decode("acme/dnc", &head.encode()).unwrap(), head);
        let mut newer = head.clone();
        newer.format = 2;
        let error = Head::decode("acme/dnc", &newer.encode()).unwrap_err();
        assert!(error.contains("format 2"), "{error}");
        let error = Head::decode("us-dnc", &head.encode()).unwrap_err();
        assert!(error.contains("names set 'acme/dnc'"), "{error}");
        assert!(Head::decode("acme/dnc", b"{").is_err());
    }
}
