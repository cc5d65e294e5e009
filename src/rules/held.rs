//! A held answer: one place's last calling-window answer and the instants `[from, until)` it
//! holds for, read by every check without a lock.
//!
//! A sequence lock over atomics: the writer makes the sequence odd (one compare-and-swap; a
//! writer that loses the race simply does not store, its answer was right for its caller
//! anyway), writes the fields, makes it even again; a reader reads the sequence, the fields,
//! the sequence again, and uses the fields only if both reads saw the same even value. Every
//! field is an atomic, so a torn read is detected, never undefined behaviour. Never blocks.

use super::eval::Answer;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering, fence};

#[derive(Debug, Default)]
pub struct HeldAnswer {
    sequence: AtomicU64,
    from: AtomicI64,
    until: AtomicI64,
    /// The answer, as [`Answer::code`].
    code: AtomicI64,
}

impl HeldAnswer {
    /// The held answer if it holds at `at_ms`.
    #[cfg(test)]
    pub fn get(&self, at_ms: i64) -> Option<Answer> {
        self.span(at_ms).map(|(answer, _, _)| answer)
    }

    /// The held answer if it holds at `at_ms`, with the instants `[from, until)` it holds for.
    #[inline]
    pub fn span(&self, at_ms: i64) -> Option<(Answer, i64, i64)> {
        let before = self.sequence.load(Ordering::Acquire);
        if before & 1 == 1 || before == 0 {
            return None; // being written, or never written
        }
        let from = self.from.load(Ordering::Relaxed);
        let until = self.until.load(Ordering::Relaxed);
        let code = self.code.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if self.sequence.load(Ordering::Relaxed) != before || at_ms < from || at_ms >= until {
            return None;
        }
        Some((Answer::from_code(code), from, until))
    }

    /// Holds `answer` for `[from, until)`, unless another writer is storing right now.
    pub fn set(&self, from: i64, until: i64, answer: Answer) {
        let code = answer.code();
        let current = self.sequence.load(Ordering::Relaxed);
        if current & 1 == 1
            || self
                .sequence
                .compare_exchange(current, current + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        fence(Ordering::Release);
        self.from.store(from, Ordering::Relaxed);
        self.until.store(until, Ordering::Relaxed);
        self.code.store(code, Ordering::Relaxed);
        self.sequence.store(current + 2, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_each_answer_for_its_interval_only() {
        let held = HeldAnswer::default();
        assert_eq!(held.get(5), None);
        for answer in [
            Answer::Allowed,
            Answer::UnknownLocation,
            Answer::Outside {
                next_allowed_at_ms: None,
            },
            Answer::Outside {
                next_allowed_at_ms: Some(20),
            },
        ] {
            held.set(10, 20, answer);
            assert_eq!(
                (held.get(9), held.get(10), held.get(19), held.get(20)),
                (None, Some(answer), Some(answer), None)
            );
        }
    }

    #[test]
    fn readers_never_see_a_mixed_answer() {
        // Two writers alternate answers whose fields all differ; readers must only ever see
        // one of them whole.
        let held = HeldAnswer::default();
        let a = (0, 1_000, Answer::Allowed);
        let b = (
            500,
            2_000,
            Answer::Outside {
                next_allowed_at_ms: Some(2_000),
            },
        );
        std::thread::scope(|scope| {
            for (from, until, answer) in [a, b] {
                let held = &held;
                scope.spawn(move || {
                    for _ in 0..200_000 {
                        held.set(from, until, answer);
                    }
                });
            }
            for _ in 0..2 {
                let held = &held;
                scope.spawn(move || {
                    for i in 0..400_000i64 {
                        let at = i % 2_000;
                        if let Some(seen) = held.get(at) {
                            let fits_a = seen == a.2 && at < a.1;
                            let fits_b = seen == b.2 && at >= b.0;
                            assert!(fits_a || fits_b, "{seen:?} at {at}");
                        }
                    }
                });
            }
        });
    }
}
