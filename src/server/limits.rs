//! Overload and rate limits: refused at once, never queued.
//!
//! Two limits guard the check path, both taken without waiting and without a lock:
//!
//! - [`InFlight`]: check requests in flight over every API (`server.max_in_flight`), one
//!   shared atomic counter tried with [`InFlight::try_enter`] (not a tokio `Semaphore`, see
//!   there); a request over the limit is answered RESOURCE_EXHAUSTED / HTTP 429 / SIP 503
//!   before any work is done for it.
//! - [`TokenBucket`]: a tenant's checks per second with a burst (`[tenants.X]
//!   max_checks_per_second`, `burst`), counted in numbers (a batch of 1000 costs 1000). It is
//!   the generic cell rate algorithm: one atomic "theoretical arrival time" advanced by a
//!   compare-and-swap, so a check costs one load and one CAS, and a refused check costs nothing.

use crate::config::ServerConfig;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Longest number text a batch is sized for: longer texts are invalid numbers anyway (the
/// parsers refuse input over 64 bytes).
pub const MAX_NUMBER_TEXT: usize = 64;
/// Room in a message for everything but the numbers (tenant and campaign names of up to 64
/// bytes, batch id, field keys).
const FIXED_BYTES: usize = 1024;
/// Longest text of one number's location hints a batch is sized for: an IANA zone name (the
/// longest is 32 bytes), a state code and a ZIP+4 code, with room to spare.
pub const MAX_HINT_TEXT: usize = 64;
/// Wire bytes one number may take in a gRPC batch: the key and length of a string field plus
/// [`MAX_NUMBER_TEXT`] (a packed fixed64 takes 8), and its location hints (a message of three
/// string fields: keys and lengths plus [`MAX_HINT_TEXT`]).
const GRPC_BYTES_PER_NUMBER: usize = MAX_NUMBER_TEXT + 3 + MAX_HINT_TEXT + 9;
/// JSON bytes one number may take in an HTTP batch: quotes, comma, and room for whitespace
/// (pretty-printed bodies put each number on a line of its own), and its location
/// (`{"time_zone":"","us_state":"","postal_code":""},` and whitespace, plus the texts).
const JSON_BYTES_PER_NUMBER: usize = MAX_NUMBER_TEXT + 32 + MAX_HINT_TEXT + 64;
/// Heap one number's location hints take once decoded: three `String`s and their text, the
/// edge's borrowed view of them, and at worst one parsed `Hints` with its dedup entry.
const HINT_MEMORY: usize = 72 + MAX_HINT_TEXT + 48 + 4 + 32 + 64;

/// The largest gRPC data-plane message decoded: what `server.max_batch` numbers can take,
/// capped by `server.max_message_bytes`. A bigger message is refused (OUT_OF_RANGE) from its
/// length prefix, before it is buffered or decoded.
pub fn grpc_decode_limit(server: &ServerConfig) -> usize {
    (server.max_batch * GRPC_BYTES_PER_NUMBER + FIXED_BYTES).min(server.max_message_bytes)
}

/// The largest `POST /v1/check` body read: what `server.max_batch` numbers can take in JSON,
/// capped by `server.max_message_bytes`. Refused (413) from Content-Length before reading.
pub fn http_body_limit(server: &ServerConfig) -> usize {
    (server.max_batch * JSON_BYTES_PER_NUMBER + FIXED_BYTES).min(server.max_message_bytes)
}

/// Heap one check request of the largest allowed size may hold at once, in bytes: its wire
/// bytes three times (the HTTP/2 or HTTP/1 receive buffer, the decode buffer, a decompression
/// buffer), each number decoded (a `String` of up to [`MAX_NUMBER_TEXT`] bytes), its location
/// hints ([`HINT_MEMORY`]) and its result (a verdict, a blocked item or a JSON result of up to
/// 96 bytes).
pub fn request_memory_bound(server: &ServerConfig) -> usize {
    let wire = grpc_decode_limit(server).max(http_body_limit(server));
    3 * wire + server.max_batch * (24 + MAX_NUMBER_TEXT + HINT_MEMORY + 96)
}

/// The bound on what check requests in flight hold: `server.max_in_flight` requests of the
/// largest allowed size (RUNBOOK, "Hardening"). Requests over `max_in_flight` are refused
/// before their bodies are read, so they add nothing.
pub fn in_flight_memory_bound(server: &ServerConfig) -> usize {
    server.max_in_flight * request_memory_bound(server)
}

/// The global bound on check requests in flight: one shared atomic counter, never waited on.
/// Not a tokio `Semaphore`: its permits are lock-free to take but releasing one locks the
/// waiter list, and the hot path takes no lock.
#[derive(Debug)]
pub struct InFlight {
    count: Arc<AtomicUsize>,
    pub limit: usize,
}

/// One request's place among those in flight; dropping it frees the place.
#[derive(Debug)]
pub struct InFlightPermit {
    count: Arc<AtomicUsize>,
}

impl Drop for InFlightPermit {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Release);
    }
}

impl InFlight {
    pub fn new(limit: usize) -> InFlight {
        InFlight {
            count: Arc::new(AtomicUsize::new(0)),
            limit,
        }
    }

    /// A permit for one request, or None when `limit` requests are already in flight. The permit
    /// owns its share of the counter, so it can outlive the borrow (held by a response future).
    pub fn try_enter(&self) -> Option<InFlightPermit> {
        // Optimistic increment: over the limit, undo it. The counter may pass `limit` for an
        // instant, which only makes a concurrent request see "full" a little early.
        if self.count.fetch_add(1, Ordering::Acquire) >= self.limit {
            self.count.fetch_sub(1, Ordering::Release);
            return None;
        }
        Some(InFlightPermit {
            count: self.count.clone(),
        })
    }

    /// Requests in flight now (for tests and status).
    pub fn in_flight(&self) -> usize {
        self.count.load(Ordering::Acquire).min(self.limit)
    }
}

/// Descriptors kept back from the connection caps: snapshots, journal segments, the ledger,
/// the audit log, sockets of the SIP dip and the runtime.
const RESERVED_FILES: u64 = 128;

/// Raises the soft limit on open files to the hard limit (systemd and most shells start
/// daemons at 1024 soft, a few hundred thousand hard) and returns the limit now in force.
pub fn raise_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// The open-file limit in force (soft), without changing it.
pub fn file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    limit.rlim_cur
}

/// Connections each TCP plane may hold: `server.max_connections`, or an equal share of the
/// file limit less [`RESERVED_FILES`] among `planes` planes (at least 16), so idle connections
/// on one plane cannot take the descriptors another needs.
pub fn connections_per_plane(server: &ServerConfig, file_limit: u64, planes: usize) -> usize {
    let share = file_limit.saturating_sub(RESERVED_FILES) / planes.max(1) as u64;
    let share = usize::try_from(share).unwrap_or(usize::MAX).max(16);
    server.max_connections.map_or(share, |n| n.min(share))
}

/// Pacing for an accept loop after errors. EMFILE/ENFILE (out of file descriptors) persist until
/// a connection closes, so retrying at once spins a core and starves the connections that
/// would free them: sleep, doubling from 5 ms to 1 s, and log at most once a second.
pub struct AcceptBackoff {
    what: &'static str,
    delay: Duration,
    logged: Option<Instant>,
    suppressed: u64,
}

impl AcceptBackoff {
    pub fn new(what: &'static str) -> AcceptBackoff {
        AcceptBackoff {
            what,
            delay: Duration::ZERO,
            logged: None,
            suppressed: 0,
        }
    }

    /// After a failed accept: log (rate-limited) and sleep.
    pub async fn failed(&mut self, error: &std::io::Error) {
        self.delay = (self.delay * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
        let now = Instant::now();
        if self
            .logged
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
        {
            let descriptors = matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
            tracing::warn!(
                %error,
                listener = self.what,
                retry_in_ms = self.delay.as_millis() as u64,
                failures_since_last_log = self.suppressed,
                out_of_file_descriptors = descriptors,
                "accept failed; backing off"
            );
            self.logged = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
        crate::metrics::metrics().accept_errors.increment(1);
        tokio::time::sleep(self.delay).await;
    }

    /// After a successful accept: the next failure starts from the shortest pause.
    pub fn succeeded(&mut self) {
        self.delay = Duration::ZERO;
    }
}

/// Why a tenant's check was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateRefusal {
    /// Over the rate: this many numbers' worth of tokens come back after `retry_after`.
    Later { retry_after: Duration },
    /// The request alone costs more than the burst: it can never pass.
    TooLarge,
}

/// A token bucket of `rate` numbers per second holding at most `burst` numbers, lock-free.
#[derive(Debug)]
pub struct TokenBucket {
    pub rate: u32,
    pub burst: u32,
    /// Nanoseconds one number costs.
    interval_ns: u64,
    /// How far the theoretical arrival time may run ahead of now: the burst.
    tolerance_ns: u64,
    /// Theoretical arrival time, in nanoseconds since `epoch`.
    tat: AtomicU64,
    epoch: Instant,
}

impl TokenBucket {
    /// A full bucket. `rate` and `burst` are at least 1 (checked at config load).
    pub fn new(rate: u32, burst: u32) -> TokenBucket {
        let rate = rate.max(1);
        let burst = burst.max(1);
        let interval_ns = (1_000_000_000 / u64::from(rate)).max(1);
        TokenBucket {
            rate,
            burst,
            interval_ns,
            tolerance_ns: interval_ns * u64::from(burst),
            tat: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Takes `numbers` tokens now, or says when to come back.
    pub fn try_take(&self, numbers: u64) -> Result<(), RateRefusal> {
        self.try_take_at(numbers, self.epoch.elapsed().as_nanos() as u64)
    }

    fn try_take_at(&self, numbers: u64, now: u64) -> Result<(), RateRefusal> {
        let cost = numbers.saturating_mul(self.interval_ns);
        if cost > self.tolerance_ns {
            return Err(RateRefusal::TooLarge);
        }
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now).saturating_add(cost);
            let ahead = next - now;
            if ahead > self.tolerance_ns {
                return Err(RateRefusal::Later {
                    retry_after: Duration::from_nanos(ahead - self.tolerance_ns),
                });
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(actual) => tat = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn burst_then_rate() {
        let bucket = TokenBucket::new(10, 5);
        for _ in 0..5 {
            bucket.try_take_at(1, 0).unwrap();
        }
        let Err(RateRefusal::Later { retry_after }) = bucket.try_take_at(1, 0) else {
            panic!("over the burst was accepted");
        };
        assert_eq!(retry_after, Duration::from_millis(100));
        // One number comes back every 100 ms.
        bucket.try_take_at(1, SECOND / 10).unwrap();
        assert!(bucket.try_take_at(1, SECOND / 10).is_err());
        // After a long pause the bucket is full again, not fuller.
        bucket.try_take_at(5, 100 * SECOND).unwrap();
        assert!(bucket.try_take_at(1, 100 * SECOND).is_err());
    }

    #[test]
    fn batches_cost_their_numbers() {
        let bucket = TokenBucket::new(1000, 1000);
        bucket.try_take_at(600, 0).unwrap();
        assert!(matches!(
            bucket.try_take_at(600, 0),
            Err(RateRefusal::Later { .. })
        ));
        bucket.try_take_at(400, 0).unwrap();
        assert_eq!(
            bucket.try_take_at(1001, SECOND * 10),
            Err(RateRefusal::TooLarge)
        );
    }

    #[test]
    fn concurrent_takers_never_exceed_the_burst() {
        let bucket = Arc::new(TokenBucket::new(1, 1000));
        let taken: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let bucket = bucket.clone();
                    scope.spawn(move || {
                        (0..1000)
                            .filter(|_| bucket.try_take_at(1, 0).is_ok())
                            .count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(taken, 1000);
    }

    #[test]
    fn in_flight_refuses_instead_of_waiting() {
        let limit = InFlight::new(2);
        let a = limit.try_enter().unwrap();
        let _b = limit.try_enter().unwrap();
        assert!(limit.try_enter().is_none());
        assert_eq!(limit.in_flight(), 2);
        drop(a);
        assert!(limit.try_enter().is_some());
    }
}
