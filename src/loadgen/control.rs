//! When requests go out: the phases of a run (warm-up, measured, over), the `--requests`
//! budget, the open-loop schedule, and where a paced request's latency starts.
//!
//! `--rate` runs open loop: senders follow a fixed schedule, and latency is measured from the
//! intended send time whenever the sender was held up by the daemon (all slots busy, or the
//! stream window full), so a stalled daemon cannot hide its stall (no "coordinated omission").
//! Pure arithmetic over instants: never sleeps (that is [`super::timer`]'s job) and never sends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When request `k` of worker `worker` (of `workers`) is due, after the start, at a total rate
/// of `rate` per second: the workers interleave into one evenly spaced sequence.
pub fn schedule_offset(k: u64, worker: usize, workers: usize, rate: f64) -> Duration {
    let slot = k as f64 * workers as f64 + worker as f64;
    Duration::from_nanos((slot * 1e9 / rate) as u64)
}

/// Where a paced request's latency starts. When the worker became free only after the intended
/// time (an earlier answer held it up), the wait is the daemon's doing and counts: latency runs
/// from the intended time. When the worker was idle and only woke late (timer jitter, the load
/// generator's own doing), it runs from the actual send.
pub fn latency_origin(intended: Instant, ready_at: Instant, sent_at: Instant) -> Instant {
    if ready_at > intended {
        intended
    } else {
        sent_at
    }
}

/// Phases of the run, shared by every worker.
pub(super) struct Control {
    pub(super) start: Instant,
    pub(super) measure_start: Instant,
    pub(super) measure_end: Option<Instant>,
    /// Measured requests still to send (with --requests).
    pub(super) remaining: Option<AtomicU64>,
}

impl Control {
    /// Is the measured phase over at `at`?
    pub(super) fn over(&self, at: Instant) -> bool {
        self.measure_end.is_some_and(|end| at >= end)
    }

    /// May a request due at `at` go out? `Some(true)`: measured; `Some(false)`: warm-up;
    /// `None`: the run is over for this worker.
    pub(super) fn admit(&self, at: Instant) -> Option<bool> {
        if at < self.measure_start {
            return Some(false);
        }
        if self.over(at) {
            return None;
        }
        if let Some(remaining) = &self.remaining {
            remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    left.checked_sub(1)
                })
                .ok()?;
        }
        Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_loop_schedule_interleaves_workers_evenly() {
        // 4 workers at 1000 req/s in total: one send per millisecond, round robin.
        let mut sends: Vec<Duration> = Vec::new();
        for worker in 0..4 {
            for k in 0..5 {
                sends.push(schedule_offset(k, worker, 4, 1000.0));
            }
        }
        sends.sort();
        for (i, at) in sends.iter().enumerate() {
            assert_eq!(*at, Duration::from_millis(i as u64));
        }
        // Each worker alone runs at rate / workers.
        assert_eq!(
            schedule_offset(1, 0, 4, 1000.0) - schedule_offset(0, 0, 4, 1000.0),
            Duration::from_millis(4)
        );
        // Long runs stay exact: 600 s at 1 M/s.
        assert_eq!(
            schedule_offset(600_000_000, 0, 1, 1e6),
            Duration::from_secs(600)
        );
    }

    #[test]
    fn latency_counts_from_the_intended_time_only_when_the_daemon_held_us_up() {
        let base = Instant::now();
        let at = |us: u64| base + Duration::from_micros(us);
        // Idle worker woken 300 us late by the timer: the lag is ours, measure from the send.
        assert_eq!(latency_origin(at(1000), at(200), at(1300)), at(1300));
        // Busy until 1500 (previous answer late): the daemon's doing, measure from 1000.
        assert_eq!(latency_origin(at(1000), at(1500), at(1500)), at(1000));
        // Free exactly on time.
        assert_eq!(latency_origin(at(1000), at(1000), at(1000)), at(1000));
    }

    #[test]
    fn measured_phase_and_request_budget() {
        let start = Instant::now();
        let control = Control {
            start,
            measure_start: start + Duration::from_secs(1),
            measure_end: Some(start + Duration::from_secs(2)),
            remaining: Some(AtomicU64::new(2)),
        };
        assert_eq!(control.admit(start), Some(false));
        assert_eq!(
            control.admit(start + Duration::from_millis(1500)),
            Some(true)
        );
        assert_eq!(
            control.admit(start + Duration::from_millis(1600)),
            Some(true)
        );
        assert_eq!(
            control.admit(start + Duration::from_millis(1700)),
            None,
            "budget spent"
        );
        assert_eq!(control.admit(start + Duration::from_secs(2)), None);
    }
}
