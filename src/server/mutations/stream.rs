//! Fleet mode's mutation path: submit publishes to the stream and waits for this host's
//! follower; the follower's batches become journal records here.
//!
//! `submit` claims the request id locally (every host applies every message, so the local
//! ledger is the fleet's history), publishes the sealed mutation, waits for JetStream's ack,
//! then waits until this host has applied that stream sequence (journal fsync, overlay,
//! request record: the single-host durable completion), and answers with what the stream
//! carried first under the id: a de-duplicated publish of another payload (the same id sent
//! to two hosts at once) is ALREADY_EXISTS. Nothing is journalled here but what the follower
//! hands over, so journal order is stream order on every host. The follower's messages are
//! put in force in the overlays ahead of their fsync (`store::overlay`); everything keyed on
//! journal sequences (request records, receipts, compaction, the applied sequence and the
//! consumer's ack) waits for the fsync as on a single host.

use super::{MutationError, Mutator, Shared, Submitted, lock, requests};
use crate::fleet::Fleet;
use crate::fleet::follow::{Applied, Incoming, Sink};
use crate::server::state::{State, now_ms};
use crate::store::{Mutation, MutationKind};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

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

    /// The fleet this mutator publishes to (fleet mode).
    pub fn fleet(&self) -> Option<&Arc<Fleet>> {
        self.fleet.get()
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
    pipe: Arc<Mutex<Pipe>>,
}

/// The follower's records queued into the journal and not yet durable or failed.
#[derive(Default)]
struct Pipe {
    /// The journal sequence the next record must carry while others are in flight.
    next_seq: u64,
    in_flight: usize,
    /// Request ids of those records: a later message under one of them is not applied (it
    /// is not in the ledger yet, only on its way).
    ids: HashSet<(String, String)>,
}

impl FleetSink {
    pub fn new(mutator: Arc<Mutator>, state: Arc<State>) -> FleetSink {
        FleetSink {
            mutator,
            state,
            pipe: Arc::default(),
        }
    }
}

/// Collects the outcomes of one batch's records; answers once every one has reported.
struct Outcomes {
    len: usize,
    remaining: usize,
    first_failed: Option<(usize, String)>,
    answer: Option<tokio::sync::oneshot::Sender<Applied>>,
}

impl Outcomes {
    fn report(&mut self, index: usize, outcome: Result<(), String>) {
        if let Err(error) = outcome
            && self.first_failed.as_ref().is_none_or(|(at, _)| index < *at)
        {
            self.first_failed = Some((index, error));
        }
        self.remaining -= 1;
        if self.remaining == 0 {
            self.answer();
        }
    }

    fn answer(&mut self) {
        let applied = match self.first_failed.take() {
            None => Applied {
                count: self.len,
                error: None,
            },
            Some((index, error)) => Applied {
                count: index,
                error: Some(error),
            },
        };
        if let Some(answer) = self.answer.take() {
            let _ = answer.send(applied);
        }
    }
}

impl Sink for FleetSink {
    fn versions(&self) -> std::collections::BTreeMap<String, u64> {
        let sets = self.state.sets.load();
        self.state
            .policy
            .sets
            .iter()
            .zip(sets.slots.iter())
            .filter_map(|(definition, slot)| {
                slot.as_ref()
                    .map(|loaded| (definition.id.clone(), loaded.set.version()))
            })
            .collect()
    }

    fn set_ids(&self) -> Vec<String> {
        self.state
            .policy
            .sets
            .iter()
            .map(|d| d.id.clone())
            .collect()
    }

    fn clean_through(&self) -> u64 {
        self.mutator.clean_through()
    }

    fn erasures_pending(&self) -> u64 {
        self.mutator.fleet_erasures_pending()
    }

    fn skipped_through(&self, seq: u64) -> Result<(), String> {
        self.mutator
            .skipped_through(&self.state.config.data_dir, seq)
    }

    fn queue(&self, batch: Vec<Incoming>) -> tokio::sync::oneshot::Receiver<Applied> {
        let shared: &Arc<Shared> = &self.mutator.shared;
        let (answer, receiver) = tokio::sync::oneshot::channel();
        let outcomes = Arc::new(Mutex::new(Outcomes {
            len: batch.len(),
            // Held by this function until every record is queued.
            remaining: 1,
            first_failed: None,
            answer: Some(answer),
        }));
        let mut in_batch = HashSet::new();
        for (index, incoming) in batch.into_iter().enumerate() {
            let mutation = incoming.mutation;
            // First in stream order wins, on every host alike: a later message under an id
            // already applied (published again past the duplicate window) changes nothing.
            let key = (mutation.tenant.clone(), mutation.request_id.clone());
            let mut pipe = lock(&self.pipe);
            if !in_batch.insert(key.clone())
                || pipe.ids.contains(&key)
                || requests::done(&shared.requests, &key.0, &key.1).is_some()
            {
                tracing::warn!(
                    stream_seq = mutation.stream_seq,
                    "fleet: request id already applied from an earlier stream message; this one is not applied"
                );
                continue;
            }
            // In force now, ahead of the fsync: the stream (a JetStream quorum) is the
            // durable copy, and the consumer is acked, `applied` advanced and the request
            // recorded only once the record is durable (ARCHITECTURE: "in force before fsync").
            super::apply_ops_ahead(&self.state, &mutation);
            let digest = shared.digest_keys.digest(&mutation);
            let payload = mutation.encode();
            let (shared, state) = (shared.clone(), self.state.clone());
            let (pipe_done, outcomes_done) = (self.pipe.clone(), outcomes.clone());
            lock(&outcomes).remaining += 1;
            // Behind records still in flight, only as the sequence after them: a failed
            // group gives its numbers out again, and this one must not take their place.
            let follows = (pipe.in_flight > 0).then_some(pipe.next_seq);
            pipe.in_flight += 1;
            pipe.ids.insert(key.clone());
            drop(pipe);
            let done: crate::store::Completion = Box::new(move |result| {
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
                    super::lock(&shared.stream_marks).push_back((seq, stream_seq));
                });
                {
                    let mut pipe = lock(&pipe_done);
                    pipe.in_flight -= 1;
                    pipe.ids.remove(&key);
                }
                lock(&outcomes_done).report(index, outcome);
            });
            let queued = match follows {
                Some(seq) => self.mutator.journal.append_as(seq, payload, done),
                None => self.mutator.journal.append(payload, done),
            };
            let mut pipe = lock(&self.pipe);
            match queued {
                Some(seq) => pipe.next_seq = seq + 1,
                // Refused (it has reported its failure): nothing after it may be queued.
                None => break,
            }
        }
        lock(&outcomes).report(usize::MAX, Ok(()));
        receiver
    }
}
