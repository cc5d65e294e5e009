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
/// Messages queued into the journal (in force, fsync pending) at most before the follower
/// waits for their fsync instead of taking more.
const MAX_IN_FLIGHT: usize = 4 * BATCH;
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

/// What became of a queued batch: how many of its messages, a prefix, are durable and applied
/// (or were deliberately not applied, such as a request id the stream already carried), with
/// the error that stopped the rest (a failed journal write).
#[derive(Debug)]
pub struct Applied {
    pub count: usize,
    pub error: Option<String>,
}

/// Where the follower puts what it read: the mutation service.
pub trait Sink: Send + Sync + 'static {
    /// Puts `batch` in force at once, ahead of its journal records (the stream is the durable
    /// copy), and queues the records (stream order, one group commit); never blocks on the
    /// disk. The answer comes once every record is durable or failed. Records of a batch
    /// queued while earlier ones are still in flight are durable only after those (a failed
    /// group fails every later one).
    fn queue(&self, batch: Vec<Incoming>) -> tokio::sync::oneshot::Receiver<Applied>;

    /// The snapshot version in force per set id (for the host register).
    fn versions(&self) -> std::collections::BTreeMap<String, u64>;

    /// Every set id this host serves.
    fn set_ids(&self) -> Vec<String>;

    /// Every erasure through this stream sequence has left no trace in this host's files.
    fn clean_through(&self) -> u64;

    /// Erasures known here that are not COMPLETE fleet-wide (as of the last round).
    fn erasures_pending(&self) -> u64;

    /// The stream was purged past this host, and the heads in force here carry every
    /// message through `seq`: count it as applied, durably. Blocking.
    fn skipped_through(&self, seq: u64) -> Result<(), String>;
}

/// A batch in force and queued into the journal, waiting for its fsync to be acked.
struct InFlight {
    done: tokio::sync::oneshot::Receiver<Applied>,
    /// Stream sequence of each queued message, and the message to ack it with.
    seqs: Vec<u64>,
    acks: Vec<async_nats::jetstream::Message>,
    /// The last message delivered with this batch, and what JetStream held behind it then.
    last_seq: u64,
    pending: u64,
    received_at_ms: i64,
}

/// Follows the stream until `stop` changes, reconnecting and retrying after failures.
pub async fn run(
    fleet: Arc<Fleet>,
    sink: Arc<dyn Sink>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut last_error = String::new();
    // This host's claim on its host id, kept across restarts of the follower.
    let mut claim = None;
    loop {
        let result = tokio::select! {
            result = follow(&fleet, &sink, &mut claim) => result,
            _ = stop.changed() => break,
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
            _ = stop.changed() => break,
        }
    }
    if let Some(claim) = claim.take() {
        fleet.release_host(claim).await;
    }
}

/// What this host reports of itself in the host register.
fn host_record(fleet: &Fleet, sink: &Arc<dyn Sink>) -> super::hosts::HostRecord {
    let status = &fleet.status;
    super::hosts::HostRecord {
        format: super::hosts::FORMAT,
        host_id: fleet.settings.host_id.clone(),
        instance: fleet.instance.clone(),
        applied: status.applied(),
        stream_last: status.stream_last(),
        lag_messages: status.lag_messages(),
        lag_seconds: status.lag_seconds(),
        versions: sink.versions(),
        heartbeat_unix_ms: now_ms(),
        build: env!("CARGO_PKG_VERSION").into(),
        clean_through: sink.clean_through(),
        erasures_pending: sink.erasures_pending(),
    }
}

fn now_ms() -> i64 {
    super::now_ms()
}

async fn follow(
    fleet: &Fleet,
    sink: &Arc<dyn Sink>,
    claim: &mut Option<super::hosts::Claim>,
) -> Result<(), String> {
    let stream = fleet.ensure_stream().await?;
    let info = stream
        .get_info()
        .await
        .map_err(|e| format!("stream info: {e}"))?;
    check_identity(fleet, &info).inspect_err(|_| fleet.status.set_refusing(true))?;
    let state = info.state;
    let applied = fleet.status.applied();
    if state.last_sequence < applied {
        // A stream shorter than what this host applied is another stream (deleted and made
        // again, a NATS store wiped): its sequences would be skipped as applied. Fail closed:
        // no following (mutations refused), the lag grows to FLEET_LAG. RUNBOOK: "stream
        // replaced".
        crate::metrics::fleet_metrics()
            .fleet_stream_replaced
            .set(1.0);
        fleet.status.set_refusing(true);
        return Err(format!(
            "the fleet stream {} ends at sequence {} but this host applied {applied}: it was deleted or replaced; not following it (RUNBOOK: stream replaced)",
            fleet.settings.stream, state.last_sequence
        ));
    }
    crate::metrics::fleet_metrics()
        .fleet_stream_replaced
        .set(0.0);
    if state.first_sequence > applied + 1 {
        // Purged past this host (down during a purge, or new): what it cannot replay, the
        // heads carry (the lease holder purges only through what they carry). Fail closed
        // until every head is in force here, then follow from the stream's first message.
        fleet.status.set_refusing(true);
        heads_in_force(fleet, sink).await?;
        let through = state.first_sequence - 1;
        let skipping = sink.clone();
        tokio::task::spawn_blocking(move || skipping.skipped_through(through))
            .await
            .map_err(|e| format!("skipping the purged sequences: {e}"))??;
        fleet.status.advance(through);
        tracing::warn!(
            applied,
            first = state.first_sequence,
            "fleet: the stream was purged past this host; it serves the fleet's heads, which carry what it missed, and follows from the stream's first message"
        );
    }
    let applied = fleet.status.applied();
    // The next sequence this host must apply: nothing before the stream's first is delivered.
    let mut expected = (applied + 1).max(state.first_sequence);
    // One daemon per host id: claimed (or renewed) before the consumer named after it is
    // made anew; held by another daemon, this one does not follow (fails closed at once).
    let record = host_record(fleet, sink);
    let renewed = match claim.take() {
        Some(mut held) => fleet
            .heartbeat(&mut held, &record)
            .await
            .ok()
            .map(|()| held),
        None => None,
    };
    *claim = Some(match renewed {
        Some(held) => held,
        None => fleet.claim_host(&record).await.map_err(|error| {
            if let super::hosts::ClaimError::Held(_) = error {
                fleet.status.set_refusing(true);
            }
            error.to_string()
        })?,
    });
    let consumer = fleet.ensure_consumer(&stream, applied).await?;
    fleet.status.set_refusing(false);
    fleet.status.set_following(true);
    let mut heartbeat = tokio::time::interval(super::hosts::HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.tick().await;
    // A continuous pull: JetStream keeps a pull request open and delivers each message as it
    // lands, so applying waits for no poll (a fetch loop would also spin while idle).
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(BATCH)
        .heartbeat(HEARTBEAT)
        .messages()
        .await
        .map_err(|e| format!("pull: {e}"))?;
    // Batches in force whose fsync is pending, oldest first: the next batch is opened and put
    // in force while the journal syncs the previous one (nothing waits for another host's
    // disk), and each is acked, and `applied` advanced, only once durable.
    let mut in_flight: std::collections::VecDeque<InFlight> = std::collections::VecDeque::new();
    let mut in_flight_messages = 0;
    let result: Result<(), String> = loop {
        let asked_at = now_ms();
        let next = tokio::select! {
            biased;
            applied = oldest_done(&mut in_flight) => {
                let batch = in_flight.pop_front().expect("a batch was in flight");
                in_flight_messages -= batch.seqs.len();
                if let Err(error) = settle(fleet, &batch, applied).await {
                    break Err(error);
                }
                continue;
            }
            _ = heartbeat.tick() => {
                let held = claim.as_mut().expect("claimed before following");
                if let Err(error) = fleet.heartbeat(held, &host_record(fleet, sink)).await {
                    *claim = None;
                    break Err(error);
                }
                continue;
            }
            next = tokio::time::timeout(IDLE, messages.next()), if in_flight_messages < MAX_IN_FLIGHT => next,
        };
        let Ok(first) = next else {
            if !in_flight.is_empty() {
                continue;
            }
            // Nothing for a while: ask JetStream whether this host has everything. Delivered
            // and applied through expected - 1, nothing pending: caught up as of the question.
            let info = match tokio::time::timeout(IDLE, consumer.get_info()).await {
                Ok(Ok(info)) => info,
                Ok(Err(e)) => break Err(format!("consumer info: {e}")),
                Err(_) => break Err("consumer info: timed out".to_owned()),
            };
            fleet
                .status
                .saw_stream_last(info.delivered.stream_sequence + info.num_pending);
            if info.num_pending == 0 && info.delivered.stream_sequence < expected {
                fleet.status.caught_up(asked_at);
            }
            continue;
        };
        let received_at_ms = now_ms();
        let first = match first {
            Some(Ok(message)) => message,
            Some(Err(e)) => break Err(format!("pull: {e}")),
            None => break Err("pull: the message stream ended".into()),
        };
        let mut received = vec![first];
        // Whatever else has already arrived joins this batch (one group commit).
        let mut pull_error = None;
        while received.len() < BATCH {
            match tokio::time::timeout(Duration::ZERO, messages.next()).await {
                Ok(Some(Ok(message))) => received.push(message),
                Ok(Some(Err(e))) => {
                    pull_error = Some(format!("pull: {e}"));
                    break;
                }
                Ok(None) => {
                    pull_error = Some("pull: the message stream ended".into());
                    break;
                }
                Err(_) => break,
            }
        }
        match take_batch(fleet, received, &mut expected) {
            Ok(Taken::Batch(mut batch)) => {
                let incoming = std::mem::take(&mut batch.incoming);
                in_flight_messages += incoming.len();
                in_flight.push_back(InFlight {
                    done: sink.queue(incoming),
                    seqs: batch.seqs,
                    acks: batch.acks,
                    last_seq: batch.last_seq,
                    pending: batch.pending,
                    received_at_ms,
                });
                if let Some(gap) = batch.gap {
                    break Err(gap);
                }
            }
            Ok(Taken::Redelivered {
                last,
                last_seq,
                pending,
                gap,
            }) => {
                // Everything in this fetch was applied before (a redelivery). Acked only
                // with nothing in flight: an "all" ack covers every message delivered before
                // it, and a redelivery comes after messages whose fsync may be pending.
                if in_flight.is_empty() {
                    let _ = last.ack().await;
                    fleet.status.saw_stream_last(last_seq + pending);
                    if pending == 0 {
                        fleet.status.caught_up(received_at_ms);
                    }
                }
                if let Some(gap) = gap {
                    break Err(gap);
                }
            }
            Err(error) => break Err(error),
        }
        if let Some(error) = pull_error {
            break Err(error);
        }
    };
    // Whatever is in flight is durable or failed soon. Wait for all of it (the next start
    // must not meet records of this one still queued) and ack what is durable, up to the
    // first failure: nothing after a failed record counts.
    let mut failed = false;
    while let Some(mut batch) = in_flight.pop_front() {
        let applied = (&mut batch.done).await;
        failed = failed || settle(fleet, &batch, applied).await.is_err();
    }
    result
}

/// Every head of a set this host serves is in force here; an error names the first that is
/// not (the heads follower fetches it meanwhile; the follower retries).
async fn heads_in_force(fleet: &Fleet, sink: &Arc<dyn Sink>) -> Result<(), String> {
    let buckets = fleet.snapshot_buckets().await?;
    let served = sink.versions();
    for set in sink.set_ids() {
        if let Some((head, _)) = super::heads::read_head(&buckets.heads, &set).await?
            && served.get(&set).is_none_or(|&v| v < head.version)
        {
            return Err(format!(
                "the stream was purged past this host: waiting for set {set} version {} from the object store before following (serving {:?})",
                head.version,
                served.get(&set)
            ));
        }
    }
    Ok(())
}

/// Is this the stream this host applied? Its creation time, recorded in `fleet.stream` when
/// the host first followed it, must match: a stream deleted and made again (by an operator,
/// or a NATS store lost and the stream re-created by any host) numbers from 1 again, and
/// once it has grown past this host's applied sequence nothing else tells it apart. Fail
/// closed on a mismatch: no following, mutations refused, FLEET_LAG after `max_lag`.
fn check_identity(fleet: &Fleet, info: &async_nats::jetstream::stream::Info) -> Result<(), String> {
    let created = info.created.unix_timestamp_nanos() as i64;
    let shown = |ns: i64| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| ns.to_string())
    };
    match super::applied::read_stream(&fleet.data_dir)? {
        Some(known) if known == created => Ok(()),
        Some(known) => {
            crate::metrics::fleet_metrics()
                .fleet_stream_replaced
                .set(1.0);
            Err(format!(
                "the fleet stream {} was created at {} but this host applied the one created at {}: it was deleted and made again; not following it (RUNBOOK: stream replaced)",
                fleet.settings.stream,
                shown(created),
                shown(known)
            ))
        }
        // The first stream this data directory follows (or one from before fleet.stream
        // existed, checked by its length alone): this one, from now on.
        None => {
            tracing::info!(stream = %fleet.settings.stream, created = %shown(created), "fleet: recording the stream this host follows");
            super::applied::write_stream(&fleet.data_dir, created)
        }
    }
}

/// The oldest batch's outcome; never ready when nothing is in flight.
async fn oldest_done(
    in_flight: &mut std::collections::VecDeque<InFlight>,
) -> Result<Applied, tokio::sync::oneshot::error::RecvError> {
    match in_flight.front_mut() {
        Some(batch) => (&mut batch.done).await,
        None => std::future::pending().await,
    }
}

/// A batch's fsync is done: advance and ack what is durable; an error if a record failed.
async fn settle(
    fleet: &Fleet,
    batch: &InFlight,
    applied: Result<Applied, tokio::sync::oneshot::error::RecvError>,
) -> Result<(), String> {
    let applied = applied.unwrap_or(Applied {
        count: 0,
        error: Some("the journal writer stopped".into()),
    });
    if applied.count > 0 {
        fleet.status.advance(batch.seqs[applied.count - 1]);
        // "All" ack policy: one ack covers every earlier message. A lost ack only means a
        // redelivery, which the sequence check skips.
        let _ = batch.acks[applied.count - 1].ack().await;
    }
    if let Some(error) = applied.error {
        // A failed journal write (a full disk): follow again after the journal; what was
        // put in force stays in force, and the lag clock runs meanwhile, so checks fail
        // closed if it lasts.
        return Err(format!(
            "journal write failed: {error}; following again after the journal"
        ));
    }
    fleet.status.saw_stream_last(batch.last_seq + batch.pending);
    if batch.pending == 0 {
        fleet.status.caught_up(batch.received_at_ms);
    }
    Ok(())
}

/// What a fetch holds for the journal.
struct Batch {
    incoming: Vec<Incoming>,
    seqs: Vec<u64>,
    acks: Vec<async_nats::jetstream::Message>,
    last_seq: u64,
    pending: u64,
    /// A message past the next expected arrived (an earlier one's redelivery is pending).
    gap: Option<String>,
}

enum Taken {
    Batch(Batch),
    Redelivered {
        // Boxed: a message is far larger than the batch's vectors.
        last: Box<async_nats::jetstream::Message>,
        last_seq: u64,
        pending: u64,
        gap: Option<String>,
    },
}

/// Opens and decodes the messages of a fetch that follow `expected` one after the other.
fn take_batch(
    fleet: &Fleet,
    received: Vec<async_nats::jetstream::Message>,
    expected: &mut u64,
) -> Result<Taken, String> {
    let metrics = crate::metrics::fleet_metrics();
    let (last_seq, pending) = {
        let last = received.last().expect("one message at least");
        let info = last.info().map_err(|e| format!("message info: {e}"))?;
        (info.stream_sequence, info.pending)
    };
    let mut batch = Batch {
        incoming: Vec::with_capacity(received.len()),
        seqs: Vec::with_capacity(received.len()),
        acks: Vec::with_capacity(received.len()),
        last_seq,
        pending,
        gap: None,
    };
    let mut last = None;
    for message in received {
        let info = message.info().map_err(|e| format!("message info: {e}"))?;
        let seq = info.stream_sequence;
        if info.delivered > 1 {
            metrics.fleet_redeliveries.increment(1);
        }
        if seq < *expected {
            last = Some(message);
            continue;
        }
        if seq > *expected {
            batch.gap = Some(format!(
                "stream sequence {seq} arrived before {expected} (a redelivery is pending); following again after the journal"
            ));
            break;
        }
        *expected += 1;
        let plain = fleet
            .sealer
            .open(message.subject.as_str(), &message.payload)
            .map_err(|e| format!("stream {} sequence {seq}: {e}", fleet.settings.stream))?;
        let mut mutation = Mutation::decode(&plain)
            .map_err(|e| format!("stream {} sequence {seq}: {e}", fleet.settings.stream))?;
        mutation.stream_seq = seq;
        batch.incoming.push(Incoming { mutation });
        batch.seqs.push(seq);
        batch.acks.push(message);
    }
    if batch.incoming.is_empty() {
        return match last {
            Some(last) => Ok(Taken::Redelivered {
                last: Box::new(last),
                last_seq,
                pending,
                gap: batch.gap,
            }),
            None => Err(batch.gap.unwrap_or_else(|| "an empty fetch".into())),
        };
    }
    Ok(Taken::Batch(batch))
}
