//! Suppress mode: admin-plane mutations whose enforcement is checked on the data plane.
//!
//! Every call is an admin `Suppress` (to `--admin`) of one fresh number with a fresh request
//! id, so each acknowledgement is a journalled, fsynced mutation. Numbers are consecutive from
//! a random point of a dedicated range (`--first-number`, `--number-count`; by default
//! +1 503 200-0000 .. +1 503 999-9999, an area code no sample list uses). Every
//! `--verify-every`th mutation is bracketed by data-plane `Check`s of its number: before the
//! Suppress it must be ALLOW (else the number was not fresh: error `NOT_FRESH`, no Suppress
//! sent), and immediately after the acknowledgement it must be BLOCK with reason INTERNAL_DNC.
//! An ALLOW then is a violation (acknowledged but not enforced), counted even during warm-up.
//! The time from the acknowledgement to that BLOCK answer is reported as ack -> enforced.
//! Latency is per Suppress, from its send to its ack. Closed loop, or open loop with `--rate`
//! (each Suppress sent at its scheduled instant, its freshness Check just before; latency from
//! the intended time when the daemon held a send up). Never mutates a number outside its
//! range. Fleet form (`--propagation-bound`): mutations to one host (`--admin`),
//! checks against another (`--target`); an ALLOW after the ack is asked again until the bound
//! has passed, so ack -> enforced is the propagation time and a violation is an ALLOW after
//! the bound.

use super::args::LoadgenArgs;
use super::control::latency_origin;
use super::payloads::Payload;
use super::tally::{BAD_RESPONSE, Tally, Verdicts, code_name, record_time};
use super::timer;
use super::wire::UnaryAnswer;
use super::workers::{Ctx, call_once, lock};
use crate::engine::number::Number;
use crate::proto;
use proto::admin::admin_client::AdminClient;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Suppress mode: what every worker shares.
pub(super) struct Mutations {
    /// Mutations started so far (warm-up included): the index of the next fresh number.
    next: AtomicU64,
    pub(super) first: u64,
    pub(super) count: u64,
    pub(super) start: u64,
    pub(super) verify_every: u64,
    /// Fleet form: how long after the ack another host may still answer ALLOW.
    pub(super) propagation_bound: std::time::Duration,
    pub(super) prefix: String,
    pub(super) tenant: String,
    pub(super) campaign: String,
    /// Reserve mode: each call is a `ReserveAttempt` on the data plane, not a `Suppress`.
    pub(super) reserve: bool,
}

impl Mutations {
    pub(super) fn number(&self, k: u64) -> u64 {
        self.first + (self.start + k) % self.count
    }
}

/// Error key of a verification Check that did not answer.
const VERIFY_FAILED: &str = "VERIFY_FAILED";
/// Error key of a number that was already blocked before its Suppress (not fresh).
const NOT_FRESH: &str = "NOT_FRESH";
/// Error key of an acknowledged mutation answered BLOCK, but not for INTERNAL_DNC.
const NOT_INTERNAL_DNC: &str = "NOT_INTERNAL_DNC";

/// A data-plane Check of `number` for the verification of a mutation.
async fn verify_check(
    grpc: &mut tonic::client::Grpc<Channel>,
    ctx: &Ctx,
    mutations: &Mutations,
    number: u64,
) -> Result<UnaryAnswer, String> {
    let request = proto::CheckRequest {
        number: Number::from_u64_unchecked(number).to_e164_string(),
        tenant: mutations.tenant.clone(),
        campaign: mutations.campaign.clone(),
        ..Default::default()
    };
    let payload = Payload {
        bytes: prost::Message::encode_to_vec(&request).into(),
        numbers: 1,
        present: 0,
    };
    match call_once::<UnaryAnswer>(grpc, ctx, &payload).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(format!(
            "Check {}: {}",
            code_name(status.code()),
            status.message()
        )),
        Err(_) => Err(format!("Check: no answer within {:?}", ctx.timeout)),
    }
}

/// Closed loop, suppress mode: one Suppress of a fresh number in flight at a time; every
/// `verify_every`th is checked before (ALLOW) and right after its ack (BLOCK INTERNAL_DNC).
pub(super) async fn suppress_worker(
    ctx: Arc<Ctx>,
    mutations: Arc<Mutations>,
    admin: Channel,
    data: Channel,
    tally: Arc<Mutex<Tally>>,
) {
    let mut admin = AdminClient::new(admin);
    let mut reserver = proto::suppression_client::SuppressionClient::new(data.clone());
    let mut grpc = tonic::client::Grpc::new(data);
    loop {
        let Some(measured) = ctx.control.admit(Instant::now()) else {
            return;
        };
        if mutations.reserve {
            let k = mutations.next.fetch_add(1, Ordering::Relaxed);
            let number = mutations.number(k);
            reserve_once(&ctx, &mutations, &mut reserver, k, number, measured, &tally).await;
            continue;
        }
        mutate(
            &ctx, &mutations, &mut admin, &mut grpc, &tally, measured, None,
        )
        .await;
    }
}

/// How long before its send time an open-loop mutation starts, so that the Check proving its
/// number fresh is done when the Suppress is due.
const FRESHNESS_LEAD: Duration = Duration::from_millis(20);

/// Open loop, suppress mode (`--rate`): one pacer per connection; each mutation's Suppress is
/// sent at its scheduled instant (its freshness Check just before), as its own task, at most
/// `slots` in flight. Latency runs from the intended time when the daemon held a send up.
pub(super) async fn suppress_pacer(
    ctx: Arc<Ctx>,
    pacer: usize,
    slots: usize,
    mutations: Arc<Mutations>,
    admin: Channel,
    data: Channel,
    tally: Arc<Mutex<Tally>>,
) {
    let rate = ctx.rate.unwrap_or(1.0);
    let admin = AdminClient::new(admin);
    let grpc = tonic::client::Grpc::new(data);
    let free = Arc::new(tokio::sync::Semaphore::new(slots));
    let mut k = 0u64;
    loop {
        let intended = ctx.due(k, pacer, rate);
        k += 1;
        let Some(measured) = ctx.control.admit(intended) else {
            break;
        };
        let (permit, ready_at) = match free.clone().try_acquire_owned() {
            Ok(permit) => (permit, None),
            Err(_) => match free.clone().acquire_owned().await {
                Ok(permit) => (permit, Some(Instant::now())),
                Err(_) => break,
            },
        };
        timer::sleep_until(intended.checked_sub(FRESHNESS_LEAD).unwrap_or(intended)).await;
        let (mut admin, mut grpc) = (admin.clone(), grpc.clone());
        let (ctx, mutations, tally) = (ctx.clone(), mutations.clone(), tally.clone());
        tokio::spawn(async move {
            let at = Scheduled { intended, ready_at };
            mutate(
                &ctx,
                &mutations,
                &mut admin,
                &mut grpc,
                &tally,
                measured,
                Some(at),
            )
            .await;
            drop(permit);
        });
    }
    // Every mutation sent has been answered (or timed out) once all slots are free again.
    let _ = free.acquire_many(slots as u32).await;
}

/// An open-loop mutation's send time, and when its slot came free if it had to wait for one.
struct Scheduled {
    intended: Instant,
    ready_at: Option<Instant>,
}

/// One mutation: the freshness Check (every `verify_every`th), the Suppress (at its scheduled
/// instant in open loop), and the Checks until it is enforced.
async fn mutate(
    ctx: &Ctx,
    mutations: &Mutations,
    admin: &mut AdminClient<Channel>,
    grpc: &mut tonic::client::Grpc<Channel>,
    tally: &Mutex<Tally>,
    measured: bool,
    scheduled: Option<Scheduled>,
) {
    let block = proto::Verdict::Block as i32;
    let internal_dnc = proto::Reason::InternalDnc as i32;
    {
        let k = mutations.next.fetch_add(1, Ordering::Relaxed);
        let number = mutations.number(k);
        let verify = mutations.verify_every > 0 && k.is_multiple_of(mutations.verify_every);
        if verify {
            // The number must not be blocked yet, or the check after the ack proves nothing.
            let before = verify_check(grpc, ctx, mutations, number).await;
            let problem = match before {
                Ok(answer) if answer.verdict == proto::Verdict::Allow as i32 => None,
                Ok(answer) => Some((
                    NOT_FRESH,
                    format!(
                        "{} answered verdict {} reasons {:?} before its Suppress (use another --first-number range)",
                        Number::from_u64_unchecked(number),
                        answer.verdict,
                        answer.reasons
                    ),
                )),
                Err(message) => Some((VERIFY_FAILED, format!("before the Suppress: {message}"))),
            };
            if let Some((code, message)) = problem {
                if measured {
                    lock(tally).error(code, || message, 1, Instant::now());
                }
                return;
            }
        }
        let request_id = format!("{}-{k}", mutations.prefix);
        let mut request = tonic::Request::new(proto::admin::SuppressRequest {
            tenant: mutations.tenant.clone(),
            set: String::new(),
            numbers: vec![Number::from_u64_unchecked(number).to_e164_string()],
            reason: "suppressd loadgen".into(),
            source: proto::admin::Channel::Phone as i32,
            request_id: request_id.clone(),
        });
        ctx.authorize(&mut request);
        if let Some(at) = &scheduled {
            timer::sleep_until(at.intended).await;
        }
        let sent = Instant::now();
        // Open loop: latency from the intended time when the daemon held the send up.
        let origin = match &scheduled {
            Some(Scheduled {
                intended,
                ready_at: Some(ready_at),
            }) => latency_origin(*intended, *ready_at, sent),
            _ => sent,
        };
        if let Some(at) = &scheduled
            && measured
        {
            record_time(
                &mut lock(tally).lag,
                sent.saturating_duration_since(at.intended),
            );
        }
        let result = tokio::time::timeout(ctx.timeout, admin.suppress(request)).await;
        let acked = Instant::now();
        let response = match result {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                if measured {
                    lock(tally).status(&status, 1, acked);
                }
                return;
            }
            Err(_) => {
                if measured {
                    lock(tally).timed_out(ctx.timeout, 1, acked);
                }
                return;
            }
        };
        if response.request_id != request_id
            || response.duplicate
            || response.applied != 1
            || !response.invalid.is_empty()
        {
            if measured {
                lock(tally).error(
                    BAD_RESPONSE,
                    || {
                        format!(
                            "Suppress {request_id}: request_id {:?}, duplicate {}, applied {}, invalid {:?}",
                            response.request_id,
                            response.duplicate,
                            response.applied,
                            response.invalid
                        )
                    },
                    1,
                    acked,
                );
            }
            return;
        }
        if !verify {
            if measured {
                lock(tally).acknowledged(acked - origin, &Verdicts::default(), acked);
            }
            return;
        }
        // Enforcement: a Check that starts after the ack must see the mutation (fleet form: a
        // Check on another host, within the propagation bound).
        let (after, answered) = loop {
            let after = verify_check(grpc, ctx, mutations, number).await;
            let answered = Instant::now();
            let allowed = matches!(&after, Ok(a) if a.verdict == proto::Verdict::Allow as i32);
            if !allowed || answered - acked >= mutations.propagation_bound {
                break (after, answered);
            }
        };
        let mut tally = lock(tally);
        match &after {
            Ok(answer) if answer.verdict == block && answer.reasons.contains(&internal_dnc) => {
                if measured {
                    tally.verified += 1;
                    record_time(&mut tally.ack_to_enforced, answered - acked);
                }
            }
            Ok(answer) if answer.verdict == proto::Verdict::Allow as i32 => {
                // Counted whether measured or not: an acknowledged mutation not in force.
                tally.violations += 1;
                if tally.violation_example.is_none() {
                    tally.violation_example = Some(format!(
                        "{} ALLOW after Suppress {request_id} was acknowledged (sequence {})",
                        Number::from_u64_unchecked(number),
                        response.sequence
                    ));
                }
            }
            Ok(answer) => {
                if measured {
                    tally.error(
                        NOT_INTERNAL_DNC,
                        || {
                            format!(
                                "after Suppress {request_id}: verdict {} reasons {:?}",
                                answer.verdict, answer.reasons
                            )
                        },
                        1,
                        answered,
                    );
                }
            }
            Err(message) => {
                if measured {
                    tally.error(
                        VERIFY_FAILED,
                        || format!("after Suppress {request_id}: {message}"),
                        1,
                        answered,
                    );
                }
            }
        }
        if measured {
            let mut verdicts = Verdicts::default();
            if let Ok(answer) = &after {
                verdicts.count(answer.verdict);
            }
            // The mutation itself was acknowledged: it counts, whatever its verification found.
            tally.acknowledged(acked - origin, &verdicts, answered);
        }
    }
}

/// Reserve mode: one `ReserveAttempt` of a fresh number (so it must be granted, with the
/// whole budget but this attempt left), latency from send to the durable answer.
async fn reserve_once(
    ctx: &Ctx,
    mutations: &Mutations,
    client: &mut proto::suppression_client::SuppressionClient<Channel>,
    k: u64,
    number: u64,
    measured: bool,
    tally: &Mutex<Tally>,
) {
    let call_id = format!("{}-{k}", mutations.prefix);
    let mut request = tonic::Request::new(proto::AttemptRequest {
        call_id: call_id.clone(),
        number: Number::from_u64_unchecked(number).to_e164_string(),
        tenant: mutations.tenant.clone(),
        campaign: mutations.campaign.clone(),
        outcome: 0,
    });
    ctx.authorize(&mut request);
    let sent = Instant::now();
    let result = tokio::time::timeout(ctx.timeout, client.reserve_attempt(request)).await;
    let acked = Instant::now();
    if !measured {
        return;
    }
    let mut tally = lock(tally);
    match result {
        Ok(Ok(response)) => {
            let response = response.into_inner();
            if response.granted && !response.duplicate {
                tally.acknowledged(acked - sent, &Verdicts::default(), acked);
            } else {
                tally.error(
                    BAD_RESPONSE,
                    || format!("ReserveAttempt {call_id} of a fresh number: {response:?}"),
                    1,
                    acked,
                );
            }
        }
        Ok(Err(status)) => tally.status(&status, 1, acked),
        Err(_) => tally.timed_out(ctx.timeout, 1, acked),
    }
}

/// The shared state of a suppress-mode run: a request-id prefix and a starting point in the
/// number range unique to this run (clock and process id), so reruns against the same daemon
/// send fresh request ids and, unless the range is exhausted, fresh numbers.
/// The message is a usage error.
pub(super) fn mutations_of(args: &LoadgenArgs) -> Result<Mutations, String> {
    let first = Number::parse_e164(&args.first_number)
        .map_err(|e| format!("--first-number: {e}"))?
        .get();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let run = nanos ^ (u64::from(std::process::id()) << 48);
    let mut rng = ChaCha8Rng::seed_from_u64(run);
    Ok(Mutations {
        next: AtomicU64::new(0),
        first,
        count: args.number_count,
        start: rng.random_range(0..args.number_count),
        verify_every: args.verify_every,
        propagation_bound: args.propagation_bound,
        prefix: format!("loadgen-{nanos:x}-{}", std::process::id()),
        tenant: args.tenant.clone(),
        campaign: args.campaign.clone(),
        reserve: args.mode == super::args::Mode::Reserve,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suppress_numbers_walk_the_range_and_wrap() {
        let mutations = Mutations {
            next: AtomicU64::new(0),
            first: 15_032_000_000,
            count: 10,
            start: 7,
            verify_every: 1,
            propagation_bound: std::time::Duration::ZERO,
            prefix: "p".into(),
            tenant: String::new(),
            campaign: String::new(),
            reserve: false,
        };
        let numbers: Vec<u64> = (0..10)
            .map(|k| mutations.number(k) - 15_032_000_000)
            .collect();
        assert_eq!(numbers, [7, 8, 9, 0, 1, 2, 3, 4, 5, 6]);
    }
}
