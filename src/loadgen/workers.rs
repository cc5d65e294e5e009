//! The check-mode senders: closed-loop workers (one request in flight each), open-loop pacers
//! (one per connection, each request its own task) and stream workers (a window of
//! `--pipeline` messages per stream, reopened after a failure).
//!
//! Owns sending pre-encoded requests, waiting for answers under `--timeout`, and recording
//! each measured answer in the connection's tally. Send times of open-loop runs come from
//! [`super::timer`] (precise to the kernel's wake-up latency without spinning: tokio's timer
//! has 1 ms granularity, and spinning would take a core from the daemon on a small machine);
//! how late sends left against the schedule is recorded as the send lag. Never decides what to
//! send (that is [`super::payloads`]) or when a run ends (that is [`super::control`]).

use super::control::{Control, latency_origin, schedule_offset};
use super::payloads::Payload;
use super::tally::{BAD_RESPONSE, Tally, Verdicts, no_answer, record_time};
use super::timer;
use super::wire::{Answer, BatchAnswer, Outgoing, RawCodec};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::Status;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

pub(super) struct Ctx {
    pub(super) control: Control,
    pub(super) payloads: Vec<Payload>,
    pub(super) rate: Option<f64>,
    pub(super) workers: usize,
    pub(super) pipeline: usize,
    pub(super) timeout: Duration,
    pub(super) path: PathAndQuery,
    /// `authorization: Bearer …` for every call, from --token-file.
    pub(super) token: Option<AsciiMetadataValue>,
}

impl Ctx {
    pub(super) fn authorize<T>(&self, request: &mut tonic::Request<T>) {
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
    }

    /// Where worker `worker` starts in the payloads: the workers spread over them.
    fn first_payload(&self, worker: usize) -> usize {
        worker * self.payloads.len() / self.workers
    }

    /// The payload at `cursor`, which moves on round robin.
    pub(super) fn payload(&self, cursor: &mut usize) -> &Payload {
        let payload = &self.payloads[*cursor];
        *cursor += 1;
        if *cursor == self.payloads.len() {
            *cursor = 0;
        }
        payload
    }

    /// When request `k` of open-loop sender `worker` is due at `rate` requests per second.
    pub(super) fn due(&self, k: u64, worker: usize, rate: f64) -> Instant {
        self.control.start + schedule_offset(k, worker, self.workers, rate)
    }
}

fn not_ready(error: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("connection not ready: {error}"))
}

/// After a failed stream: a short pause before it is reopened, or false when the run is over.
async fn pause_before_reopening(control: &Control, now: Instant) -> bool {
    if control.over(now) {
        return false;
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    true
}

pub(super) fn lock(tally: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    tally.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends one pre-encoded request and waits for its answer (or `--timeout`).
pub(super) async fn call_once<A: Answer>(
    grpc: &mut tonic::client::Grpc<Channel>,
    ctx: &Ctx,
    payload: &Payload,
) -> Result<Result<tonic::Response<A>, Status>, tokio::time::error::Elapsed> {
    let mut request = tonic::Request::new(Outgoing {
        bytes: payload.bytes.clone(),
        batch_id: 0,
    });
    ctx.authorize(&mut request);
    let call = async {
        grpc.ready().await.map_err(not_ready)?;
        grpc.unary(request, ctx.path.clone(), RawCodec::<A>::default())
            .await
    };
    tokio::time::timeout(ctx.timeout, call).await
}

/// Counts one measured answer: verdicts and latency, or the error by code.
fn record<A: Answer>(
    tally: &Mutex<Tally>,
    ctx: &Ctx,
    payload: &Payload,
    result: Result<Result<tonic::Response<A>, Status>, tokio::time::error::Elapsed>,
    origin: Instant,
    done: Instant,
    lag: Option<Duration>,
) {
    let mut tally = lock(tally);
    if let Some(lag) = lag {
        record_time(&mut tally.lag, lag);
    }
    match result {
        Ok(Ok(response)) => {
            let mut verdicts = Verdicts::default();
            match response.get_ref().tally(payload, &mut verdicts) {
                Ok(()) => tally.success(payload, done - origin, &verdicts, done),
                Err(problem) => tally.error(BAD_RESPONSE, || problem, 1, done),
            }
        }
        Ok(Err(status)) => tally.status(&status, 1, done),
        Err(_) => tally.timed_out(ctx.timeout, 1, done),
    }
}

/// Closed loop: one request in flight at a time (unary, empty and batch modes).
pub(super) async fn unary_worker<A: Answer>(
    ctx: Arc<Ctx>,
    worker: usize,
    channel: Channel,
    tally: Arc<Mutex<Tally>>,
) {
    let mut grpc = tonic::client::Grpc::new(channel);
    let mut cursor = ctx.first_payload(worker);
    loop {
        let sent = Instant::now();
        let Some(measured) = ctx.control.admit(sent) else {
            return;
        };
        let payload = ctx.payload(&mut cursor).clone();
        let result = call_once::<A>(&mut grpc, &ctx, &payload).await;
        let done = Instant::now();
        if measured {
            record(&tally, &ctx, &payload, result, sent, done, None);
        }
    }
}

/// Open loop (unary, empty and batch modes): one pacer per connection sends on its schedule,
/// each request as its own task, at most `slots` in flight. Only the pacer waits for send
/// times.
pub(super) async fn pacer<A: Answer>(
    ctx: Arc<Ctx>,
    pacer: usize,
    slots: usize,
    channel: Channel,
    tally: Arc<Mutex<Tally>>,
) {
    let rate = ctx.rate.unwrap_or(1.0);
    let grpc = tonic::client::Grpc::new(channel);
    let free = Arc::new(tokio::sync::Semaphore::new(slots));
    let mut cursor = ctx.first_payload(pacer);
    let mut k = 0u64;
    loop {
        let intended = ctx.due(k, pacer, rate);
        k += 1;
        let Some(measured) = ctx.control.admit(intended) else {
            break;
        };
        // A slot free at once: any lateness is the pacer's own (reported as send lag) and
        // latency runs from the actual send. Waiting for a slot: the daemon held us up, and
        // latency runs from the intended time if the slot came free after it.
        let (permit, ready_at) = match free.clone().try_acquire_owned() {
            Ok(permit) => (permit, None),
            Err(_) => match free.clone().acquire_owned().await {
                Ok(permit) => (permit, Some(Instant::now())),
                Err(_) => break,
            },
        };
        timer::sleep_until(intended).await;
        let sent = Instant::now();
        let origin = match ready_at {
            Some(ready_at) => latency_origin(intended, ready_at, sent),
            None => sent,
        };
        let payload = ctx.payload(&mut cursor).clone();
        let mut grpc = grpc.clone();
        let ctx = ctx.clone();
        let tally = tally.clone();
        tokio::spawn(async move {
            let result = call_once::<A>(&mut grpc, &ctx, &payload).await;
            let done = Instant::now();
            if measured {
                record(
                    &tally,
                    &ctx,
                    &payload,
                    result,
                    origin,
                    done,
                    Some(sent - intended),
                );
            }
            drop(permit);
        });
    }
    // Every request sent has been answered (or timed out) once all slots are free again.
    let _ = free.acquire_many(slots as u32).await;
}

/// A message sent on a stream and not yet answered.
struct InFlight {
    pub(super) batch_id: u64,
    origin: Instant,
    pub(super) sent: Instant,
    pub(super) payload: Payload,
    pub(super) measured: bool,
}

/// One stream with up to `pipeline` messages in flight; reopened after a failure.
pub(super) async fn stream_worker(
    ctx: Arc<Ctx>,
    worker: usize,
    channel: Channel,
    tally: Arc<Mutex<Tally>>,
) {
    let mut cursor = ctx.first_payload(worker);
    let mut k = 0u64;
    let mut next_id = 1u64;
    let mut stopping = false;
    while !stopping {
        let (tx, rx) = tokio::sync::mpsc::channel::<Outgoing>(ctx.pipeline + 1);
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        let open = async {
            grpc.ready().await.map_err(not_ready)?;
            let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            ctx.authorize(&mut request);
            grpc.streaming(
                request,
                ctx.path.clone(),
                RawCodec::<BatchAnswer>::default(),
            )
            .await
        };
        let mut inbound = match tokio::time::timeout(ctx.timeout, open).await {
            Ok(Ok(response)) => response.into_inner(),
            failed => {
                let now = Instant::now();
                if now >= ctx.control.measure_start {
                    let mut tally = lock(&tally);
                    match failed {
                        Ok(Err(status)) => tally.status(&status, 1, now),
                        _ => tally.error(
                            "DEADLINE_EXCEEDED",
                            || "stream did not open in time".into(),
                            1,
                            now,
                        ),
                    }
                }
                if !pause_before_reopening(&ctx.control, now).await {
                    return;
                }
                continue;
            }
        };
        let mut in_flight: VecDeque<InFlight> = VecDeque::with_capacity(ctx.pipeline);
        let mut room_since = Instant::now();
        // Ok(()) ends the run; Err(status) reopens the stream.
        let outcome: Result<(), Status> = 'stream: loop {
            // Send whatever is due while the window has room.
            while !stopping && in_flight.len() < ctx.pipeline {
                let now = Instant::now();
                let (intended, origin) = match ctx.rate {
                    None => (now, now),
                    Some(rate) => {
                        let intended = ctx.due(k, worker, rate);
                        if intended > now {
                            break;
                        }
                        (intended, latency_origin(intended, room_since, now))
                    }
                };
                let Some(measured) = ctx.control.admit(intended) else {
                    stopping = true;
                    break;
                };
                k += 1;
                let payload = ctx.payload(&mut cursor).clone();
                let batch_id = next_id;
                next_id += 1;
                if tx
                    .try_send(Outgoing {
                        bytes: payload.bytes.clone(),
                        batch_id,
                    })
                    .is_err()
                {
                    break 'stream Err(Status::unavailable(
                        "the stream closed under the load generator",
                    ));
                }
                if measured && ctx.rate.is_some() {
                    record_time(
                        &mut lock(&tally).lag,
                        now.saturating_duration_since(intended),
                    );
                }
                in_flight.push_back(InFlight {
                    batch_id,
                    origin,
                    sent: now,
                    payload,
                    measured,
                });
            }
            if in_flight.is_empty() {
                if stopping {
                    break Ok(());
                }
                // Open loop, nothing in flight, next send not due yet (closed loop never gets
                // here: it fills the window or stops).
                if let Some(rate) = ctx.rate {
                    timer::sleep_until(ctx.due(k, worker, rate)).await;
                }
                continue;
            }
            let oldest = in_flight.front().map_or_else(Instant::now, |f| f.sent);
            let due = match ctx.rate {
                Some(rate) if !stopping && in_flight.len() < ctx.pipeline => {
                    Some(ctx.due(k, worker, rate))
                }
                _ => None,
            };
            let answer = tokio::select! {
                biased;
                answer = inbound.message() => answer,
                () = tokio::time::sleep_until((oldest + ctx.timeout).into()) => {
                    break Err(Status::deadline_exceeded(no_answer(ctx.timeout)));
                }
                () = async {
                    match due {
                        Some(due) => timer::sleep_until(due).await,
                        None => std::future::pending().await,
                    }
                } => continue,
            };
            let done = Instant::now();
            let message = match answer {
                Ok(Some(message)) => message,
                Ok(None) => break Err(Status::unknown("stream ended with answers outstanding")),
                Err(status) => break Err(status),
            };
            let Some(flight) = in_flight.pop_front() else {
                break Err(Status::internal("answer with nothing in flight"));
            };
            if in_flight.len() + 1 == ctx.pipeline {
                room_since = done;
            }
            if !flight.measured {
                continue;
            }
            let mut verdicts = Verdicts::default();
            let checked = if message.batch_id != flight.batch_id {
                Err(format!(
                    "batch_id {} answered where {} was due",
                    message.batch_id, flight.batch_id
                ))
            } else {
                message.tally(&flight.payload, &mut verdicts)
            };
            let mut tally = lock(&tally);
            match checked {
                Ok(()) => tally.success(&flight.payload, done - flight.origin, &verdicts, done),
                Err(problem) => tally.error(BAD_RESPONSE, || problem, 1, done),
            }
        };
        match outcome {
            Ok(()) => {
                // Half-close and let the daemon finish the stream (not measured).
                drop(tx);
                let _ = tokio::time::timeout(Duration::from_secs(1), inbound.message()).await;
                return;
            }
            Err(status) => {
                let now = Instant::now();
                let lost = in_flight.iter().filter(|f| f.measured).count() as u64;
                if lost > 0 {
                    lock(&tally).status(&status, lost, now);
                }
                if !pause_before_reopening(&ctx.control, now).await {
                    return;
                }
            }
        }
    }
}
