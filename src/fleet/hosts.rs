//! The fleet's host register: a JetStream key-value bucket (`fleet.hosts_bucket`, default
//! `suppressd-<name>-hosts`) with one entry per host id, so that no two daemons share a host
//! id (they would share one durable consumer, and each would see only part of the stream).
//!
//! A daemon claims its host id before its follower takes the consumer: it creates the entry,
//! or updates it (compare-and-set on the revision) when the entry is its own (the same
//! instance id, kept in the data directory as `fleet.instance`, so the same host restarting
//! after a crash takes it back at once) or when its heartbeat is older than [`CLAIM_TTL`].
//! Otherwise the follower does not start: the host refuses mutations and answers FLEET_LAG
//! at once (`Status::set_refusing`), and tries again until the claim is free. It holds the
//! claim with a heartbeat every [`HEARTBEAT`] (a compare-and-set too: a claim taken over
//! stops the follower), and deletes it when it stops. The bucket's `max_age` is
//! [`CLAIM_TTL`], so a dead host's entry goes by itself.
//!
//! The entry's value is [`HostRecord`], JSON, `format` 1; readers must ignore fields they do
//! not know, and a change in meaning takes a new `format`. Other tools read it (fleet status,
//! fleet-wide erasure proof). Never holds a phone number.

use super::Fleet;
use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// How often a host renews its entry.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// An entry not renewed for this long is free (and the bucket drops it).
pub const CLAIM_TTL: Duration = Duration::from_secs(30);
/// The version of [`HostRecord`].
pub const FORMAT: u32 = 1;

pub const INSTANCE_FILE: &str = "fleet.instance";
const INSTANCE_MAGIC: &[u8; 4] = b"SFI1";

/// One host's entry in the bucket (format 1).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    pub format: u32,
    pub host_id: String,
    /// This daemon's data directory, as a random id (16 hex digits) made at its first start.
    pub instance: String,
    /// Stream sequence applied (durable) here, the stream's last as last seen, and the lag.
    pub applied: u64,
    pub stream_last: u64,
    pub lag_messages: u64,
    pub lag_seconds: f64,
    /// Snapshot version in force per set id.
    pub versions: BTreeMap<String, u64>,
    pub heartbeat_unix_ms: i64,
    /// The daemon's build (`CARGO_PKG_VERSION`).
    pub build: String,
    /// Every erasure at or below this stream sequence has left no trace in this host's
    /// files (journal segments dropped, older versions deleted, the rest looked up). Added
    /// within format 1: a record without it reads as 0 (proves nothing).
    #[serde(default)]
    pub clean_through: u64,
    /// Erasures this host knows of that are not COMPLETE fleet-wide, as of its last round.
    #[serde(default)]
    pub erasures_pending: u64,
}

impl HostRecord {
    /// Whether the entry was renewed within [`CLAIM_TTL`] of `now_ms` (a live host).
    pub fn live(&self, now_ms: i64) -> bool {
        now_ms - self.heartbeat_unix_ms < CLAIM_TTL.as_millis() as i64
    }
}

/// This data directory's instance id, made (random) and kept on first use.
pub fn instance_id(data_dir: &Path) -> Result<String, String> {
    let id = match super::applied::read_u64_file(data_dir, INSTANCE_FILE, INSTANCE_MAGIC)? {
        Some(id) => id,
        None => {
            let id: u64 = rand::random();
            super::applied::write_u64_file(data_dir, INSTANCE_FILE, INSTANCE_MAGIC, id)?;
            id
        }
    };
    Ok(format!("{id:016x}"))
}

/// Why a claim was not made.
#[derive(Debug)]
pub enum ClaimError {
    /// Another daemon holds the host id (fail closed at once).
    Held(String),
    /// The bucket could not be asked (NATS away): the lag clock decides, as for any outage.
    Failed(String),
}

impl std::fmt::Display for ClaimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClaimError::Held(message) | ClaimError::Failed(message) => f.write_str(message),
        }
    }
}

/// This host's hold on its entry.
pub struct Claim {
    store: kv::Store,
    revision: u64,
}

impl Fleet {
    async fn hosts_bucket(&self) -> Result<kv::Store, String> {
        let name = &self.settings.hosts_bucket;
        if let Ok(store) = self.jetstream.get_key_value(name.clone()).await {
            return Ok(store);
        }
        self.jetstream
            .create_key_value(kv::Config {
                bucket: name.clone(),
                description: "suppressd fleet hosts (one entry per host id)".into(),
                history: 1,
                max_age: CLAIM_TTL,
                storage: async_nats::jetstream::stream::StorageType::File,
                num_replicas: self.settings.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("fleet: hosts bucket {name}: {e}"))
    }

    /// Claims this host's id in the bucket (see the module docs); an error names the holder.
    pub async fn claim_host(&self, record: &HostRecord) -> Result<Claim, ClaimError> {
        let store = self.hosts_bucket().await.map_err(ClaimError::Failed)?;
        let key = &self.settings.host_id;
        let value = serde_json::to_vec(record).expect("a host record serializes");
        let failed = |e: &dyn std::fmt::Display| {
            ClaimError::Failed(format!("fleet: claiming host id {key}: {e}"))
        };
        let entry = store.entry(key.clone()).await.map_err(|e| failed(&e))?;
        let revision = match entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let held: HostRecord = serde_json::from_slice(&entry.value).unwrap_or_default();
                let age_ms = super::now_ms() - held.heartbeat_unix_ms;
                if held.instance != record.instance && age_ms < CLAIM_TTL.as_millis() as i64 {
                    return Err(ClaimError::Held(format!(
                        "fleet.host_id {key} is held by another daemon (instance {}, another data directory; last heartbeat {:.1} s ago): not following the stream until it is free (RUNBOOK: duplicate host ids)",
                        held.instance,
                        age_ms as f64 / 1000.0
                    )));
                }
                store
                    .update(key, value.into(), entry.revision)
                    .await
                    .map_err(|e| failed(&e))?
            }
            _ => store
                .create(key, value.into())
                .await
                .map_err(|e| failed(&e))?,
        };
        Ok(Claim { store, revision })
    }

    /// Renews the claim with `record`; an error when another daemon took it.
    pub async fn heartbeat(&self, claim: &mut Claim, record: &HostRecord) -> Result<(), String> {
        let key = &self.settings.host_id;
        let value = serde_json::to_vec(record).expect("a host record serializes");
        claim.revision = claim
            .store
            .update(key, value.into(), claim.revision)
            .await
            .map_err(|e| {
                format!("fleet: lost the claim on host id {key} (another daemon took it?): {e}")
            })?;
        Ok(())
    }

    /// Every entry of the host register (for Admin Status), read within `timeout`.
    pub async fn hosts_seen(&self, timeout: Duration) -> Result<Vec<HostRecord>, String> {
        use tokio_stream::StreamExt;
        let read = async {
            let store = self.hosts_bucket().await?;
            let mut keys = store.keys().await.map_err(|e| e.to_string())?;
            let mut hosts = Vec::new();
            while let Some(key) = keys.next().await {
                let key = key.map_err(|e| e.to_string())?;
                if let Some(value) = store.get(&key).await.map_err(|e| e.to_string())? {
                    hosts.push(serde_json::from_slice(&value).map_err(|e| {
                        format!("host register entry {key}: not a host record: {e}")
                    })?);
                }
            }
            Ok(hosts)
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| "fleet: the host register did not answer in time".to_owned())?
    }

    /// Frees the claim (a daemon stopping); best effort.
    pub async fn release_host(&self, claim: Claim) {
        let key = &self.settings.host_id;
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            claim
                .store
                .delete_expect_revision(key, Some(claim.revision)),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instance_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = instance_id(dir.path()).unwrap();
        assert_eq!(first.len(), 16);
        assert_eq!(instance_id(dir.path()).unwrap(), first);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(instance_id(other.path()).unwrap(), first);
        std::fs::write(dir.path().join(INSTANCE_FILE), b"junk").unwrap();
        assert!(
            instance_id(dir.path())
                .unwrap_err()
                .contains("fleet.instance")
        );
    }

    #[test]
    fn the_record_format_reads_unknown_fields_and_keeps_its_names() {
        let record = HostRecord {
            format: FORMAT,
            host_id: "b".into(),
            instance: "00000000000000ff".into(),
            applied: 7,
            versions: BTreeMap::from([("acme/internal".into(), 3)]),
            ..Default::default()
        };
        let text = serde_json::to_string(&record).unwrap();
        for field in [
            "\"format\":1",
            "\"host_id\"",
            "\"instance\"",
            "\"applied\":7",
            "\"stream_last\"",
            "\"lag_messages\"",
            "\"lag_seconds\"",
            "\"versions\":{\"acme/internal\":3}",
            "\"heartbeat_unix_ms\"",
            "\"build\"",
            "\"clean_through\"",
            "\"erasures_pending\"",
        ] {
            assert!(text.contains(field), "{field} in {text}");
        }
        let newer = text.replace("{\"format\":1", "{\"format\":1,\"later\":true");
        assert_eq!(serde_json::from_str::<HostRecord>(&newer).unwrap(), record);
    }
}
