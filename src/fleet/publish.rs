//! Publishing one mutation to the fleet stream: sealed, on its tenant's subject, with
//! `Nats-Msg-Id` = tenant + "/" + request id, so JetStream drops a retried publish within its
//! duplicate window and answers with the first one's sequence (`duplicate`).
//!
//! Acknowledged means: JetStream stored it (on a quorum of the stream's replicas) within
//! `fleet.timeout_ms`. Anything else is a [`PublishError`] and nothing is acknowledged; a
//! publish that timed out may still land, which is why the caller retries with the same id.

use super::Fleet;
use crate::store::Mutation;
use async_nats::jetstream::message::PublishMessage;
use std::time::Instant;

/// Why a mutation was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(
        "fleet: not connected to NATS (or the fleet stream is not reachable); nothing was changed, retry with the same request id"
    )]
    Disconnected,
    #[error(
        "fleet: JetStream did not acknowledge the mutation: {0}; retry with the same request id"
    )]
    NotAcknowledged(String),
}

/// JetStream's answer to a publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    pub stream_seq: u64,
    /// The stream already held a message with this id (`stream_seq` is that message's).
    pub duplicate: bool,
}

/// `Nats-Msg-Id` of a request.
pub fn message_id(tenant: &str, request_id: &str) -> String {
    format!("{tenant}/{request_id}")
}

impl Fleet {
    /// Seals `mutation` and publishes it; waits for JetStream's ack at most `fleet.timeout_ms`.
    pub async fn publish(&self, mutation: &Mutation) -> Result<Published, PublishError> {
        if !self.status.following() {
            return Err(PublishError::Disconnected);
        }
        let subject = self.settings.subject(&mutation.tenant);
        let sealed = self.sealer.seal(&subject, &mutation.encode());
        let message = PublishMessage::build()
            .payload(sealed.into())
            .message_id(message_id(&mutation.tenant, &mutation.request_id));
        let started = Instant::now();
        let publish = async {
            let ack = self
                .jetstream
                .send_publish(subject, message)
                .await
                .map_err(|e| e.to_string())?;
            ack.await.map_err(|e| e.to_string())
        };
        let ack = tokio::time::timeout(self.settings.timeout, publish)
            .await
            .map_err(|_| PublishError::NotAcknowledged("timed out".into()))?
            .map_err(PublishError::NotAcknowledged)?;
        crate::metrics::fleet_metrics()
            .fleet_publish
            .record(started.elapsed().as_secs_f64());
        Ok(Published {
            stream_seq: ack.sequence,
            duplicate: ack.duplicate,
        })
    }
}
