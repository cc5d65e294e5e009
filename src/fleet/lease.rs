//! The compaction lease: one host at a time folds the stream into new snapshot versions.
//!
//! One key-value entry (`compaction` in `<stream>-lease`), taken by a compare-and-set: create
//! when absent, or update on the revision read when the entry names this host already (it
//! restarted). The bucket's `max_age` is the lease's time to live (`fleet.
//! compaction_lease_seconds`): the NATS servers drop an entry nobody renewed, so a holder
//! that died is replaced after the TTL without trusting any host's clock. The holder renews
//! (update on its own revision) while it compacts; a renewal that finds another revision has
//! lost the lease. Safety does not rest on the lease alone: a head only moves by a
//! compare-and-set on its own revision (`heads`), so even a holder paused past its TTL cannot
//! overwrite what the next holder published.

use super::Fleet;
use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};
use std::time::Duration;

const KEY: &str = "compaction";

/// The lease bucket's name.
pub fn lease_bucket(stream: &str) -> String {
    format!("{stream}-lease")
}

/// The entry's value (JSON, format 1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub format: u32,
    pub host: String,
    pub since_ms: i64,
}

/// A lease this host holds.
pub struct Lease {
    store: kv::Store,
    holder: Holder,
    revision: u64,
}

impl Fleet {
    /// The lease bucket, created with `max_age` = the lease TTL if missing.
    pub async fn lease_bucket(&self) -> Result<kv::Store, String> {
        let name = lease_bucket(&self.settings.stream);
        if let Ok(store) = self.jetstream.get_key_value(&name).await {
            return Ok(store);
        }
        self.jetstream
            .create_key_value(kv::Config {
                bucket: name.clone(),
                description: "suppressd compaction lease".into(),
                history: 1,
                max_age: self.settings.lease_ttl,
                storage: jetstream::stream::StorageType::File,
                num_replicas: self.settings.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("fleet: lease bucket {name}: {e}"))
    }

    /// Takes the compaction lease if nobody (else) holds it. None: another host does.
    pub async fn try_lease(&self) -> Result<Option<Lease>, String> {
        let store = self.lease_bucket().await?;
        let holder = Holder {
            format: 1,
            host: self.settings.host_id.clone(),
            since_ms: super::now_ms(),
        };
        let value = serde_json::to_vec(&holder).expect("serialises");
        match store.create(KEY, value.clone().into()).await {
            Ok(revision) => {
                return Ok(Some(Lease {
                    store,
                    holder,
                    revision,
                }));
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("fleet: compaction lease: {e}")),
        }
        // Held: by this host (restarted within the TTL), it takes it back on the revision.
        let entry = store
            .entry(KEY)
            .await
            .map_err(|e| format!("fleet: compaction lease: {e}"))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Ok(None);
        };
        let current: Option<Holder> = serde_json::from_slice(&entry.value).ok();
        if current.is_none_or(|h| h.host != holder.host) {
            return Ok(None);
        }
        match store.update(KEY, value.into(), entry.revision).await {
            Ok(revision) => Ok(Some(Lease {
                store,
                holder,
                revision,
            })),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(format!("fleet: compaction lease: {e}")),
        }
    }

    /// Who holds the lease now, if anyone.
    pub async fn lease_holder(&self) -> Result<Option<Holder>, String> {
        let store = self.lease_bucket().await?;
        let entry = store
            .entry(KEY)
            .await
            .map_err(|e| format!("fleet: compaction lease: {e}"))?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .and_then(|e| serde_json::from_slice(&e.value).ok()))
    }
}

impl Lease {
    /// Renews the lease (its TTL starts again). An error: it was lost (expired and taken,
    /// or NATS unreachable); stop before publishing anything more.
    pub async fn renew(&mut self) -> Result<(), String> {
        let value = serde_json::to_vec(&self.holder).expect("serialises").into();
        let revision = self
            .store
            .update(KEY, value, self.revision)
            .await
            .map_err(|e| format!("fleet: compaction lease lost: {e}"))?;
        self.revision = revision;
        Ok(())
    }

    /// Gives the lease up (only if still ours).
    pub async fn release(self) {
        if let Err(error) = self
            .store
            .delete_expect_revision(KEY, Some(self.revision))
            .await
        {
            tracing::debug!(%error, "fleet: compaction lease not released (expired or taken)");
        }
    }

    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    /// How often a holder renews: a third of the TTL, so two renewals may fail in a row.
    pub fn renew_every(ttl: Duration) -> Duration {
        ttl / 3
    }
}
