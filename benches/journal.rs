//! Journal benchmarks: acknowledged (durable) appends per second with group commit, against the
//! naive baseline of one `write` + `sync_data()` per record.
//!
//! ```text
//! cargo bench --bench journal                       # everything, about 2 minutes
//! cargo bench --bench journal -- group_commit/      # only the group-commit contenders
//! cargo bench --bench journal -- naive/             # only the baseline
//! SUPPRESSD_BENCH_JOURNAL_DIR=/srv/x cargo bench --bench journal   # journal on another disk
//! ```
//!
//! The journal lives in a fresh directory under `target/` of this repository (the real disk,
//! not a tmpfs), or under `SUPPRESSD_BENCH_JOURNAL_DIR`. Every record is the payload the admin
//! plane journals for a one-number `Suppress` (see `mutation::Mutation::encode`), so record
//! size and CRC work are the daemon's. One timed iteration is one acknowledged append: the
//! append has returned only once its record is fsynced, so throughput is acknowledged
//! mutations per second.
//!
//! Contenders (each on its own file, opened and warmed outside the timed loop), all in group
//! `journal`, each baseline run next to the contenders it is compared with (naive/threads/1
//! first and again last as naive/threads/1-again, naive/threads/64 right before group_commit/threads/64):
//! - `group_commit/threads/N`: N threads, each calling `Journal::append_blocking` in a loop
//!   (N appends in flight; the writer thread drains whatever is queued into one write + one
//!   `sync_data`);
//! - `group_commit/window/N`: one thread submitting with `Journal::append` and a completion
//!   callback, at most N in flight (how the daemon's async admin handlers use it);
//! - `naive/threads/N`: the baseline, one `write_all` + `sync_data()` per record on a plain
//!   file (shared under a mutex when N > 1), which is what a journal without group commit does.
//!
//! After each contender the records per fsync it achieved are printed on stderr.

use criterion::{Criterion, Throughput};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};
use suppressd::store::{Log, encode_record};
use suppressd::store::{Mutation, MutationKind, Op};

/// The payload of a one-number opt-out, as the admin plane encodes it.
fn suppress_payload() -> Vec<u8> {
    Mutation {
        kind: Some(MutationKind::Suppress),
        request_id: "loadgen-18d3c0ffee-0000012345".into(),
        tenant: "acme".into(),
        at_ms: 1_795_871_268_698,
        source: "phone".into(),
        reason: String::new(),
        receipt_id: String::new(),
        actor: "anonymous".into(),
        sets: vec!["acme/dnc".into()],
        ops: vec![Op::Add {
            set: 0,
            key: 15_032_000_123,
            expires: None,
        }],
        stream_seq: 0,
        attempt: None,
    }
    .encode()
}

fn bench_root() -> PathBuf {
    let root = std::env::var_os("SUPPRESSD_BENCH_JOURNAL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    std::fs::create_dir_all(&root).expect("bench directory");
    root
}

/// Appends `iters` records from `appenders` threads, each waiting for its own append to be
/// durable before the next; returns the time from the common start to the last acknowledgement.
fn run_threads(journal: &Arc<Log>, payload: &[u8], appenders: usize, iters: u64) -> Duration {
    let barrier = Arc::new(Barrier::new(appenders + 1));
    let threads: Vec<_> = (0..appenders)
        .map(|t| {
            let count = iters / appenders as u64 + u64::from((t as u64) < iters % appenders as u64);
            let (journal, barrier, payload) = (journal.clone(), barrier.clone(), payload.to_vec());
            std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..count {
                    journal
                        .append_blocking(payload.clone())
                        .expect("append acknowledged");
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for thread in threads {
        thread.join().expect("appender thread");
    }
    start.elapsed()
}

/// Appends `iters` records from one thread through the callback API, at most `window` in
/// flight; returns the time until the last completion.
fn run_window(journal: &Log, payload: &[u8], window: usize, iters: u64) -> Duration {
    let in_flight = Arc::new((Mutex::new(0usize), Condvar::new()));
    let start = Instant::now();
    for _ in 0..iters {
        {
            let (count, freed) = &*in_flight;
            let mut count = count.lock().unwrap();
            while *count >= window {
                count = freed.wait(count).unwrap();
            }
            *count += 1;
        }
        let in_flight = in_flight.clone();
        journal.append(
            payload.to_vec(),
            Box::new(move |result| {
                result.expect("append acknowledged");
                let (count, freed) = &*in_flight;
                *count.lock().unwrap() -= 1;
                freed.notify_one();
            }),
        );
    }
    let (count, freed) = &*in_flight;
    let mut count = count.lock().unwrap();
    while *count > 0 {
        count = freed.wait(count).unwrap();
    }
    start.elapsed()
}

/// The naive journal: one framed record, one `write_all`, one `sync_data` per append.
struct Naive {
    file: Mutex<(File, u64)>,
}

impl Naive {
    fn append(&self, payload: &[u8], buffer: &mut Vec<u8>) {
        let mut guard = self.file.lock().unwrap();
        let (file, seq) = &mut *guard;
        *seq += 1;
        buffer.clear();
        encode_record(*seq, payload, buffer);
        file.write_all(buffer).expect("write");
        file.sync_data().expect("sync_data");
    }
}

fn run_naive(naive: &Arc<Naive>, payload: &[u8], appenders: usize, iters: u64) -> Duration {
    let barrier = Arc::new(Barrier::new(appenders + 1));
    let threads: Vec<_> = (0..appenders)
        .map(|t| {
            let count = iters / appenders as u64 + u64::from((t as u64) < iters % appenders as u64);
            let (naive, barrier, payload) = (naive.clone(), barrier.clone(), payload.to_vec());
            std::thread::spawn(move || {
                let mut buffer = Vec::with_capacity(256);
                barrier.wait();
                for _ in 0..count {
                    naive.append(&payload, &mut buffer);
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for thread in threads {
        thread.join().expect("appender thread");
    }
    start.elapsed()
}

fn report_batching(name: &str, journal: &Log) {
    let stats = journal.stats();
    eprintln!(
        "{name}: {} appends in {} fsyncs = {:.1} records per fsync, {} bytes",
        stats.appends,
        stats.syncs,
        stats.appends as f64 / stats.syncs.max(1) as f64,
        stats.bytes
    );
}

fn main() {
    let payload = suppress_payload();
    let root = bench_root();
    let scratch = tempfile::Builder::new()
        .prefix("journal-bench-")
        .tempdir_in(&root)
        .expect("scratch directory");
    eprintln!(
        "journal bench: directory {}, payload {} bytes (record {} bytes)",
        scratch.path().display(),
        payload.len(),
        payload.len() + 16
    );
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6))
        .sample_size(10)
        .configure_from_args();

    // One group, baselines next to the contenders they compare with: fsync latency on a shared
    // VM drifts by 10x over minutes, so a baseline is only comparable when measured close by.
    let mut group = c.benchmark_group("journal");
    group.throughput(Throughput::Elements(1));
    let naive = |group: &mut criterion::BenchmarkGroup<'_, _>, appenders: usize, name: &str| {
        let path = scratch
            .path()
            .join(format!("naive-{}.log", name.replace('/', "-")));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("baseline file");
        let naive = Arc::new(Naive {
            file: Mutex::new((file, 0)),
        });
        run_naive(&naive, &payload, appenders, appenders as u64 * 2);
        group.bench_function(format!("naive/{name}"), |b| {
            b.iter_custom(|iters| run_naive(&naive, &payload, appenders, iters))
        });
    };
    for appenders in [1usize, 8, 64, 256] {
        if appenders == 1 || appenders == 64 {
            naive(&mut group, appenders, &format!("threads/{appenders}"));
        }
        let (journal, _) = Log::open(&scratch.path().join(format!("threads-{appenders}")), false)
            .expect("journal opens");
        let journal = Arc::new(journal);
        // Warm the file and the writer outside the timed loop.
        run_threads(&journal, &payload, appenders, appenders as u64 * 4);
        group.bench_function(format!("group_commit/threads/{appenders}"), |b| {
            b.iter_custom(|iters| run_threads(&journal, &payload, appenders, iters))
        });
        report_batching(&format!("group_commit/threads/{appenders}"), &journal);
    }
    for window in [64usize, 256] {
        let (journal, _) = Log::open(&scratch.path().join(format!("window-{window}")), false)
            .expect("journal opens");
        run_window(&journal, &payload, window, window as u64 * 4);
        group.bench_function(format!("group_commit/window/{window}"), |b| {
            b.iter_custom(|iters| run_window(&journal, &payload, window, iters))
        });
        report_batching(&format!("group_commit/window/{window}"), &journal);
    }
    naive(&mut group, 1, "threads/1-again");
    group.finish();
    c.final_summary();
}
