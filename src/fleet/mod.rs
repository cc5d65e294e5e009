//! The fleet: several daemons that agree, through one NATS JetStream stream, on every
//! mutation any of them acknowledged.
//!
//! One order for every host: the stream's. An admin call on any host publishes its sealed
//! mutation ([`publish`]), and every host's follower ([`follow`]) applies the stream in order
//! into its own journal and overlays; the caller is answered once this host has applied the
//! acknowledged sequence. So journal sequence numbers, the request ledger, receipts and
//! compaction keep working as on a single host, and every host holds the same history.
//!
//! - [`seal`]: authenticated encryption of what goes on the stream (fleet keys, rotation).
//! - [`nats`]: connection (credentials from files, TLS), the stream and this host's consumer.
//! - [`publish`]: one mutation to the stream, de-duplicated by `Nats-Msg-Id`.
//! - [`follow`]: the follower, the applied stream sequence and the lag.
//! - [`applied`]: the `fleet.applied` file that keeps the applied sequence across compaction,
//!   and `fleet.stream`, the identity of the stream it belongs to.
//! - [`hosts`]: the host register (a key-value bucket): one daemon per host id, and what
//!   each host reports of itself.
//! - [`heads`], [`objects`], [`snapshots`]: snapshot versions through the object store, the
//!   heads every host follows; [`lease`]: one compactor at a time.
//! - [`erasure`]: the fleet-wide proof of an erasure's COMPLETE, and the lease holder's
//!   purge of the stream and of older object versions.
//!
//! Server-side (tokio allowed); imports config, store and engine, never `server`, `cli` or
//! proto: the mutation service plugs in through [`follow::Sink`].

pub mod applied;
pub mod erasure;
pub mod follow;
pub mod heads;
pub mod hosts;
pub mod lease;
pub mod nats;
pub mod objects;
pub mod publish;
pub mod seal;
pub mod snapshots;

use crate::config::FleetSettings;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// The secrets `[fleet]` names, loaded before any port is bound (`server::secrets`).
#[derive(Clone, Debug)]
pub struct FleetSecrets {
    pub sealer: seal::Sealer,
    pub credentials: nats::Credentials,
}

impl FleetSecrets {
    /// Reads the fleet keys, the credential files and checks the TLS files are readable.
    pub fn load(settings: &FleetSettings) -> Result<FleetSecrets, String> {
        let keys = settings
            .key_files
            .iter()
            .map(|path| seal::FleetKey::load(path))
            .collect::<Result<Vec<_>, _>>()?;
        let sealer = seal::Sealer::new(keys)?;
        let credentials = nats::Credentials::load(&settings.auth)?;
        let tls_files = settings
            .tls_ca_file
            .iter()
            .chain(settings.tls_client.iter().flat_map(|(c, k)| [c, k]));
        for path in tls_files {
            std::fs::metadata(path)
                .and_then(|_| std::fs::File::open(path))
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        }
        Ok(FleetSecrets {
            sealer,
            credentials,
        })
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What this host knows of its place in the stream. Shared by the follower (writes), the
/// mutation service (waits for an applied sequence) and the check path (one atomic load).
pub struct Status {
    applied: tokio::sync::watch::Sender<u64>,
    /// The stream's last sequence, as last seen (applied + pending of the last message).
    stream_last: AtomicU64,
    /// When this host last confirmed it had applied the whole stream (ms since the epoch).
    caught_up_at_ms: AtomicI64,
    connected: AtomicBool,
    /// The follower has the stream and its consumer (so a publish has a stream to land in).
    following: AtomicBool,
    lagging: AtomicBool,
    /// The follower refuses to follow (a replaced stream, a host id held by another
    /// daemon): checks answer FLEET_LAG at once, not after `max_lag`.
    refusing: AtomicBool,
    /// A set's version in force has other bytes than the fleet's head of that version: this
    /// host serves another set than the fleet does, so checks answer FLEET_LAG at once.
    diverged: AtomicBool,
    max_lag: Duration,
}

impl Status {
    /// `applied`: the sequence replay found. The lag clock starts now, so a restarted host
    /// serves what it has for `max_lag` while it reconnects and catches up.
    pub fn new(max_lag: Duration, applied: u64) -> Status {
        Status {
            applied: tokio::sync::watch::Sender::new(applied),
            stream_last: AtomicU64::new(applied),
            caught_up_at_ms: AtomicI64::new(now_ms()),
            connected: AtomicBool::new(false),
            following: AtomicBool::new(false),
            lagging: AtomicBool::new(false),
            refusing: AtomicBool::new(false),
            diverged: AtomicBool::new(false),
            max_lag,
        }
    }

    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Records that everything through `seq` is durable and applied (never goes back).
    pub fn advance(&self, seq: u64) {
        self.applied.send_if_modified(|applied| {
            let newer = seq > *applied;
            if newer {
                *applied = seq;
            }
            newer
        });
        self.stream_last.fetch_max(seq, Ordering::AcqRel);
    }

    /// Waits until `seq` is applied; false on timeout.
    pub async fn wait_applied(&self, seq: u64, timeout: Duration) -> bool {
        let mut receiver = self.applied.subscribe();
        tokio::time::timeout(timeout, receiver.wait_for(|&applied| applied >= seq))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The stream held `last` messages when last seen.
    pub fn saw_stream_last(&self, last: u64) {
        self.stream_last
            .store(last.max(self.applied()), Ordering::Release);
    }

    /// This host had applied the whole stream at `at_ms`.
    pub fn caught_up(&self, at_ms: i64) {
        self.caught_up_at_ms.fetch_max(at_ms, Ordering::AcqRel);
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
        crate::metrics::fleet_metrics()
            .fleet_connected
            .set(if connected { 1.0 } else { 0.0 });
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    pub fn set_following(&self, following: bool) {
        self.following.store(following, Ordering::Release);
    }

    /// Connected, and the follower holds the stream and its consumer: publishes can land and
    /// be applied here.
    pub fn following(&self) -> bool {
        self.connected() && self.following.load(Ordering::Acquire)
    }

    /// Some set's version in force differs from its head (`true`), or none does (`false`).
    pub fn set_diverged(&self, diverged: bool) {
        self.diverged.store(diverged, Ordering::Release);
        crate::metrics::fleet_metrics()
            .fleet_set_diverged
            .set(if diverged { 1.0 } else { 0.0 });
    }

    pub fn diverged(&self) -> bool {
        self.diverged.load(Ordering::Acquire)
    }

    /// The follower refuses to follow (`true`), or follows again (`false`).
    pub fn set_refusing(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::Release);
    }

    pub fn refusing(&self) -> bool {
        self.refusing.load(Ordering::Acquire)
    }

    /// Whether checks must answer FLEET_LAG: as of the last [`Status::refresh`].
    pub fn lagging(&self) -> bool {
        self.lagging.load(Ordering::Relaxed)
    }

    /// Seconds since this host was last caught up.
    pub fn lag_seconds(&self) -> f64 {
        (now_ms() - self.caught_up_at_ms.load(Ordering::Acquire)).max(0) as f64 / 1000.0
    }

    /// The stream's last sequence, as last seen.
    pub fn stream_last(&self) -> u64 {
        self.stream_last.load(Ordering::Acquire)
    }

    /// Messages of the stream not applied yet, as last seen.
    pub fn lag_messages(&self) -> u64 {
        self.stream_last
            .load(Ordering::Acquire)
            .saturating_sub(self.applied())
    }

    /// Recomputes whether this host lags past `max_lag` and the lag gauges; returns it.
    pub fn refresh(&self) -> bool {
        let seconds = self.lag_seconds();
        let lagging = seconds > self.max_lag.as_secs_f64() || self.refusing() || self.diverged();
        let was = self.lagging.swap(lagging, Ordering::AcqRel);
        if lagging != was {
            if lagging {
                tracing::warn!(
                    lag_seconds = seconds,
                    applied = self.applied(),
                    "fleet: not caught up with the stream within fleet.max_lag_seconds; checks answer FLEET_LAG"
                );
            } else {
                tracing::info!(applied = self.applied(), "fleet: caught up again");
            }
        }
        let metrics = crate::metrics::fleet_metrics();
        metrics.fleet_lag_seconds.set(seconds);
        metrics.fleet_lag_messages.set(self.lag_messages() as f64);
        metrics.fleet_applied_seq.set(self.applied() as f64);
        metrics.fleet_lagging.set(if lagging { 1.0 } else { 0.0 });
        lagging
    }
}

/// A fleet member's link to the stream: settings, keys, the NATS client and the status.
pub struct Fleet {
    pub settings: FleetSettings,
    /// Where `fleet.applied`, `fleet.stream` and `fleet.instance` live.
    pub data_dir: std::path::PathBuf,
    /// This data directory's instance id (`hosts`).
    pub instance: String,
    pub sealer: seal::Sealer,
    pub status: Arc<Status>,
    pub client: async_nats::Client,
    pub jetstream: async_nats::jetstream::Context,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn applied_never_goes_back_and_waiters_wake() {
        let status = Arc::new(Status::new(Duration::from_secs(30), 5));
        let waiter = {
            let status = status.clone();
            tokio::spawn(async move { status.wait_applied(7, Duration::from_secs(5)).await })
        };
        status.advance(6);
        status.advance(4);
        assert_eq!(status.applied(), 6);
        status.advance(7);
        assert!(waiter.await.unwrap());
        assert!(!status.wait_applied(8, Duration::from_millis(10)).await);
        status.saw_stream_last(10);
        assert_eq!(status.lag_messages(), 3);
        assert!(!status.refresh());
    }
}
