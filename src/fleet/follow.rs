//! The follower: this host's one path from the stream into its journal and overlays.
//!
//! Pulls from the host's durable consumer (one pull stays open: nothing is polled), takes
//! what has arrived as a batch, opens and decodes each message (a message it cannot open or
//! decode stops the follower, loudly: skipping it would drop an opt-out, so the host lags and
//! fails closed instead), hands the batch to the [`Sink`] (the mutation service: one group
//! commit, each record carrying its stream sequence), and acks after the fsync. Sequences are
//! applied strictly one after the other: one at or below the last applied is skipped (a
//! redelivery changes nothing), and one past the next expected (an earlier message's
//! redelivery still pending) is never applied ahead of it: the follower starts again from the
//! consumer made anew after its journal. Knows when it was last caught up: a message with
//! nothing pending behind it, or JetStream's answer, after a quiet spell, that nothing is
//! pending; [`super::Status`] turns that into the lag.

use super::Fleet;
use crate::store::Mutation;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::StreamExt;

/// Messages applied in one group commit at most (and asked for per pull request).
const BATCH: usize = 1000;
/// Quiet this long: confirm with JetStream that nothing is pending (the lag clock).
const IDLE: Duration = Duration::from_millis(500);
/// JetStream's heartbeat on an idle pull: a missed one ends the pull with an error.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Pause after a failed connection, stream or consumer operation, or a failed journal write.
const RETRY: Duration = Duration::from_millis(500);

/// A message of the stream, opened and decoded; `mutation.stream_seq` is set.
pub struct Incoming {
    pub mutation: Mutation,
}

/// Where the follower puts what it read: the mutation service.
pub trait Sink: Send + Sync + 'static {
    /// Journals `batch` (stream order, one group commit), applies each record once durable,
    /// and returns how many of its messages, a prefix, are durable and applied (or were
    /// deliberately not applied, such as a request id the stream already carried), with the
    /// error that stopped the rest (a failed journal write). Blocking.
    fn apply_blocking(&self, batch: &[Incoming]) -> (usize, Option<String>);
}

/// Follows the stream until `stop` changes, reconnecting and retrying after failures.
pub async fn run(
    fleet: Arc<Fleet>,
    sink: Arc<dyn Sink>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut last_error = String::new();
    loop {
        let result = tokio::select! {
            result = follow(&fleet, &sink) => result,
            _ = stop.changed() => return,
        };
        fleet.status.set_following(false);
        if let Err(error) = result {
            // Logged when it changes, not on every retry of the same cause.
            if error != last_error {
                tracing::error!(%error, applied = fleet.status.applied(), "fleet: follower stopped; retrying");
                last_error = error;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            _ = stop.changed() => return,
        }
    }
}

fn now_ms() -> i64 {
    super::now_ms()
}

async fn follow(fleet: &Fleet, sink: &Arc<dyn Sink>) -> Result<(), String> {
    let stream = fleet.ensure_stream().await?;
    let state = stream
        .get_info()
        .await
        .map_err(|e| format!("stream info: {e}"))?
        .state;
    let applied = fleet.status.applied();
    if state.last_sequence < applied {
        // A stream shorter than what this host applied is another stream (deleted and made
        // again, a NATS store wiped): its sequences would be skipped as applied. Fail closed:
        // no following (mutations refused), the lag grows to FLEET_LAG. RUNBOOK: "stream
        // replaced".
        return Err(format!(
            "the fleet stream {} ends at sequence {} but this host applied {applied}: it was deleted or replaced; not following it (RUNBOOK: stream replaced)",
            fleet.settings.stream, state.last_sequence
        ));
    }
    if state.first_sequence > applied + 1 && applied > 0 {
        tracing::error!(
            applied,
            first = state.first_sequence,
            "fleet: the stream no longer holds every sequence after this host's journal (purged or expired); mutations in between cannot be replayed here"
        );
    }
    // The next sequence this host must apply: nothing before the stream's first is delivered.
    let mut expected = (applied + 1).max(state.first_sequence);
    let consumer = fleet.ensure_consumer(&stream, applied).await?;
    fleet.status.set_following(true);
    let metrics = crate::metrics::fleet_metrics();
    // A continuous pull: JetStream keeps a pull request open and delivers each message as it
    // lands, so applying waits for no poll (a fetch loop would also spin while idle).
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(BATCH)
        .heartbeat(HEARTBEAT)
        .messages()
        .await
        .map_err(|e| format!("pull: {e}"))?;
    loop {
        let asked_at = now_ms();
        let Ok(first) = tokio::time::timeout(IDLE, messages.next()).await else {
            // Nothing for a while: ask JetStream whether this host has everything. Delivered
            // and applied through expected - 1, nothing pending: caught up as of the question.
            let info = tokio::time::timeout(IDLE, consumer.get_info())
                .await
                .map_err(|_| "consumer info: timed out".to_owned())?
                .map_err(|e| format!("consumer info: {e}"))?;
            fleet
                .status
                .saw_stream_last(info.delivered.stream_sequence + info.num_pending);
            if info.num_pending == 0 && info.delivered.stream_sequence < expected {
                fleet.status.caught_up(asked_at);
            }
            continue;
        };
        let first = first.ok_or("pull: the message stream ended")?;
        let mut received = vec![first.map_err(|e| format!("pull: {e}"))?];
        // Whatever else has already arrived joins this batch (one group commit).
        while received.len() < BATCH {
            match tokio::time::timeout(Duration::ZERO, messages.next()).await {
                Ok(Some(message)) => received.push(message.map_err(|e| format!("pull: {e}"))?),
                Ok(None) => return Err("pull: the message stream ended".into()),
                Err(_) => break,
            }
        }
        let last = received.last().expect("one message at least");
        let (last_seq, pending) = {
            let info = last.info().map_err(|e| format!("message info: {e}"))?;
            (info.stream_sequence, info.pending)
        };
        let mut batch = Vec::with_capacity(received.len());
        let mut acks = Vec::with_capacity(received.len());
        let mut gap = None;
        for message in &received {
            let info = message.info().map_err(|e| format!("message info: {e}"))?;
            let seq = info.stream_sequence;
            if info.delivered > 1 {
                metrics.fleet_redeliveries.increment(1);
            }
            if seq < expected {
                continue;
            }
            if seq > expected {
                gap = Some((expected, seq));
                break;
            }
            expected += 1;
            let plain = fleet
                .sealer
                .open(message.subject.as_str(), &message.payload)
                .map_err(|e| format!("stream {} sequence {seq}: {e}", fleet.settings.stream))?;
            let mut mutation = Mutation::decode(&plain)
                .map_err(|e| format!("stream {} sequence {seq}: {e}", fleet.settings.stream))?;
            mutation.stream_seq = seq;
            batch.push(Incoming { mutation });
            acks.push(message);
        }
        let mut done = 0;
        while done < batch.len() {
            let rest = std::mem::take(&mut batch);
            let sink = sink.clone();
            let (applied_now, error, rest) = tokio::task::spawn_blocking(move || {
                let (count, error) = sink.apply_blocking(&rest[done..]);
                (count, error, rest)
            })
            .await
            .map_err(|e| format!("apply task: {e}"))?;
            batch = rest;
            if applied_now > 0 {
                done += applied_now;
                let seq = batch[done - 1].mutation.stream_seq;
                fleet.status.advance(seq);
                // "All" ack policy: one ack covers every earlier message. A lost ack only
                // means a redelivery, which the sequence check skips.
                let _ = acks[done - 1].ack().await;
            }
            if let Some(error) = error {
                // A failed journal write (a full disk): keep the rest and retry it; the lag
                // clock runs meanwhile, so checks fail closed if it lasts.
                tracing::warn!(%error, "fleet: journal write failed; retrying the batch");
                tokio::time::sleep(RETRY).await;
            }
        }
        if let Some((wanted, got)) = gap {
            return Err(format!(
                "stream sequence {got} arrived before {wanted} (a redelivery is pending); following again after the journal"
            ));
        }
        if batch.is_empty() {
            // Everything in this fetch was applied before (a redelivery): ack it anyway.
            let _ = last.ack().await;
        }
        fleet.status.saw_stream_last(last_seq + pending);
        if pending == 0 {
            fleet.status.caught_up(now_ms());
        }
    }
}
