//! A precise sleep for open-loop pacing that neither spins nor rounds to tokio's 1 ms wheel.
//!
//! One timer thread per process keeps the pending deadlines in a heap and sleeps on a condvar
//! until the earliest one, with its timer slack lowered to 1 µs (Linux rounds a sleep up by
//! 50 µs by default), then wakes the tasks that are due. Open-loop runs used to spin the last
//! 1.5 ms before each send, which kept a loadgen core busy and competed with the daemon for the
//! machine's two vCPUs; this costs one wake-up per send instead.
//!
//! Deadlines closer together than [`COALESCE`] are served by one wake-up: the thread sleeps
//! until the earliest deadline plus that window, so at 20 000 sends/s it wakes a few thousand
//! times a second rather than once per send (each wake-up costs two context switches and a
//! runtime unpark, which on a small VM is CPU taken from the daemon being measured). A send can
//! therefore leave up to that much after its time; loadgen reports that as send lag.
//!
//! Owns the timer thread and its heap; never blocks a runtime thread.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How late a wake-up may be so that it serves every deadline in that window at once.
pub const COALESCE: Duration = Duration::from_micros(100);

/// One registered sleeper: fired by the timer thread, read by its future.
struct Sleeper {
    fired: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

struct Due {
    at: Instant,
    order: u64,
    sleeper: Arc<Sleeper>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Due) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Due) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Due) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

#[derive(Default)]
struct Heap {
    pending: BinaryHeap<Reverse<Due>>,
    next_order: u64,
}

struct Timer {
    heap: Mutex<Heap>,
    changed: Condvar,
}

fn lock(heap: &Mutex<Heap>) -> std::sync::MutexGuard<'_, Heap> {
    heap.lock().unwrap_or_else(|e| e.into_inner())
}

fn timer() -> &'static Timer {
    static TIMER: OnceLock<&'static Timer> = OnceLock::new();
    TIMER.get_or_init(|| {
        let timer: &'static Timer = Box::leak(Box::new(Timer {
            heap: Mutex::new(Heap::default()),
            changed: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("loadgen-timer".into())
            .spawn(move || run(timer))
            .expect("cannot start the loadgen timer thread");
        timer
    })
}

fn run(timer: &'static Timer) {
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack; the argument is
    // a plain integer. On failure the default slack (50 µs) stays, which is merely less precise.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1_000 as libc::c_ulong, 0, 0, 0);
    }
    let mut heap = lock(&timer.heap);
    loop {
        let now = Instant::now();
        while heap
            .pending
            .peek()
            .is_some_and(|Reverse(due)| due.at <= now)
        {
            let Some(Reverse(due)) = heap.pending.pop() else {
                break;
            };
            due.sleeper.fired.store(true, Ordering::Release);
            let waker = due
                .sleeper
                .waker
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
        heap = match heap.pending.peek() {
            None => timer.changed.wait(heap).unwrap_or_else(|e| e.into_inner()),
            Some(Reverse(due)) => {
                let wait = (due.at + COALESCE).saturating_duration_since(now);
                timer
                    .changed
                    .wait_timeout(heap, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        };
    }
}

/// Completes at `deadline` (within the kernel's wake-up latency), without spinning.
/// Cancel-safe: dropping it early leaves a harmless wake-up behind.
pub fn sleep_until(deadline: Instant) -> SleepUntil {
    SleepUntil {
        deadline,
        sleeper: None,
    }
}

pub struct SleepUntil {
    deadline: Instant,
    sleeper: Option<Arc<Sleeper>>,
}

impl Future for SleepUntil {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        if let Some(sleeper) = &self.sleeper {
            if sleeper.fired.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            *sleeper.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
            // The timer may have fired between the check and storing the waker.
            if sleeper.fired.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            return Poll::Pending;
        }
        let sleeper = Arc::new(Sleeper {
            fired: AtomicBool::new(false),
            waker: Mutex::new(Some(cx.waker().clone())),
        });
        let timer = timer();
        let mut heap = lock(&timer.heap);
        let earliest = heap
            .pending
            .peek()
            .is_none_or(|Reverse(due)| self.deadline < due.at);
        let order = heap.next_order;
        heap.next_order += 1;
        heap.pending.push(Reverse(Due {
            at: self.deadline,
            order,
            sleeper: sleeper.clone(),
        }));
        drop(heap);
        // Only a new earliest deadline shortens the timer thread's current wait.
        if earliest {
            timer.changed.notify_one();
        }
        self.sleeper = Some(sleeper);
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn never_wakes_before_the_deadline() {
        let start = Instant::now();
        let offsets = [700u64, 200, 450, 200, 900];
        let mut tasks = tokio::task::JoinSet::new();
        for &micros in &offsets {
            let deadline = start + Duration::from_micros(micros);
            tasks.spawn(async move {
                sleep_until(deadline).await;
                (Instant::now(), deadline)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let (woke, deadline) = joined.expect("task");
            // Never early: an open-loop send must not leave before its time.
            assert!(woke >= deadline, "woke {:?} early", deadline - woke);
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_past_deadline_is_ready_at_once_and_dropping_is_harmless() {
        sleep_until(Instant::now() - Duration::from_millis(1)).await;
        let abandoned = sleep_until(Instant::now() + Duration::from_millis(200));
        let raced = tokio::time::timeout(Duration::from_millis(5), abandoned).await;
        assert!(raced.is_err(), "a 200 ms sleep finished within 5 ms");
        // The abandoned sleeper fires later into nothing; a new sleep still works.
        sleep_until(Instant::now() + Duration::from_millis(2)).await;
    }
}
