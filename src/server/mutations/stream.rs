//! Fleet mode's mutation path: submit publishes to the stream and waits for this host's
//! follower; the follower's batches become journal records here.
//!
//! `submit` claims the request id locally (every host applies every message, so the local
//! ledger is the fleet's history), publishes the sealed mutation, waits for JetStream's ack,
//! then waits until this host has applied that stream sequence (journal fsync, overlay,
//! request record: the single-host durable completion), and answers with what the stream
//! carried first under the id: a de-duplicated publish of another payload (the same id sent
//! to two hosts at once) is ALREADY_EXISTS. Nothing is journalled here but what the follower
//! hands over, so journal order is stream order on every host.

use super::{MutationError, Mutator, Shared, Submitted, requests};
use crate::fleet::Fleet;
use crate::fleet::follow::{Incoming, Sink};
use crate::server::state::{State, now_ms};
use crate::store::{Mutation, MutationKind};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

impl Mutator {
    /// Publishes `mutation` to the fleet stream and answers once this host applied it.
    pub(super) async fn submit_to_fleet(
        &self,
        fleet: &Fleet,
        mut mutation: Mutation,
    ) -> Result<Submitted, MutationError> {
        let digest = self.shared.digest_keys.digest(&mutation);
        if let Some(repeat) = requests::claim(&self.shared.requests, &mutation, &digest).await? {
            return Ok(repeat);
        }
        mutation.at_ms = now_ms();
        let release = || {
            requests::release(
                &self.shared.requests,
                &mutation.tenant,
                &mutation.request_id,
            )
        };
        let published = match fleet.publish(&mutation).await {
            Ok(published) => published,
            Err(error) => {
                release();
                return Err(MutationError::Unavailable(error.to_string()));
            }
        };
        if !fleet
            .status
            .wait_applied(published.stream_seq, fleet.settings.timeout)
            .await
        {
            release();
            return Err(MutationError::Unavailable(format!(
                "fleet: the mutation is in the stream (sequence {}) but this host has not applied it within fleet.timeout_ms; retry with the same request id",
                published.stream_seq
            )));
        }
        // What every host applied under this id: ours, or what the stream carried first.
        let Some(first) = requests::done(
            &self.shared.requests,
            &mutation.tenant,
            &mutation.request_id,
        ) else {
            release();
            return Err(MutationError::Unavailable(
                "fleet: the stream holds the mutation but its request record is missing; retry with the same request id".into(),
            ));
        };
        if let Some(conflict) = requests::reuse_conflict(&first, mutation.kind, &digest) {
            return Err(conflict);
        }
        Ok(Submitted {
            duplicate: published.duplicate || first.at_ms != mutation.at_ms,
            record: first,
        })
    }

    /// The stream sequence this host's journal and `fleet.applied` say it has applied.
    pub fn replayed_stream_seq(&self) -> u64 {
        self.shared.durable_stream_seq.load(Ordering::Acquire)
    }

    /// Makes this mutator publish to `fleet` (once, at start, before serving).
    pub fn attach_fleet(&self, fleet: Arc<Fleet>) {
        let _ = self.fleet.set(fleet);
    }
}

/// The follower's way into the journal: the mutation service with the state it applies to.
pub struct FleetSink {
    pub mutator: Arc<Mutator>,
    pub state: Arc<State>,
}

impl Sink for FleetSink {
    fn apply_blocking(&self, batch: &[Incoming]) -> (usize, Option<String>) {
        let shared: &Arc<Shared> = &self.mutator.shared;
        let (send, receive) = std::sync::mpsc::channel();
        let mut queued = 0;
        let mut in_batch = HashSet::new();
        for (index, incoming) in batch.iter().enumerate() {
            let mutation = &incoming.mutation;
            // First in stream order wins, on every host alike: a later message under an id
            // already applied (published again past the duplicate window) changes nothing.
            let key = (mutation.tenant.as_str(), mutation.request_id.as_str());
            if !in_batch.insert(key) || requests::done(&shared.requests, key.0, key.1).is_some() {
                tracing::warn!(
                    stream_seq = mutation.stream_seq,
                    "fleet: request id already applied from an earlier stream message; this one is not applied"
                );
                continue;
            }
            let digest = shared.digest_keys.digest(mutation);
            let (shared, state, send) = (shared.clone(), self.state.clone(), send.clone());
            let mutation = mutation.clone();
            queued += 1;
            let _ = self.mutator.journal.append(
                mutation.encode(),
                Box::new(move |result| {
                    let outcome = result.map(|seq| {
                        let stream_seq = mutation.stream_seq;
                        if mutation.kind.is_some_and(MutationKind::is_attempt) {
                            // Decided here, in stream order, as on every other host.
                            let _ = shared.durable_attempt(&state, mutation, seq);
                        } else {
                            shared.durable(&state, mutation, seq, digest);
                        }
                        shared
                            .durable_stream_seq
                            .fetch_max(stream_seq, Ordering::AcqRel);
                    });
                    let _ = send.send((index, outcome));
                }),
            );
        }
        drop(send);
        let mut failed: Option<(usize, String)> = None;
        for _ in 0..queued {
            let Ok((index, outcome)) = receive.recv() else {
                failed.get_or_insert((0, "journal writer stopped".into()));
                break;
            };
            if let Err(error) = outcome
                && failed.as_ref().is_none_or(|(at, _)| index < *at)
            {
                failed = Some((index, error));
            }
        }
        match failed {
            None => (batch.len(), None),
            Some((index, error)) => (index, Some(error)),
        }
    }
}
