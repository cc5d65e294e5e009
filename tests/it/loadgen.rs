//! The load generator against the real daemon (port 0, temp data directory): every mode runs
//! clean, and the verdicts it counts match the numbers it knows to be present.

use clap::Parser;
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::path::PathBuf;
use suppressd::config::Config;
use suppressd::engine::date::Day;
use suppressd::engine::fuse::FilterWidth;
use suppressd::engine::number::Number;
use suppressd::engine::set::{SetBuilder, SetSpec};
use suppressd::engine::snapshot::SetKind;
use suppressd::loadgen::{self, LoadgenArgs, Report};

const CONFIG: &str = r#"
[server]
grpc_listen = "127.0.0.1:0"
data_dir = "data"
max_batch = 1000

[defaults]
tenant = "acme"
campaign = "outbound"

[sets.us-dnc]
kind = "block"
reason = "national_registry"
files = "us-dnc.*.snap"

[tenants.acme]
region = "US"

[tenants.acme.campaigns.outbound]
block_sets = ["us-dnc"]
"#;

/// A daemon on its own thread and runtime (the load generator builds its own runtime, which
/// cannot nest in a test's).
struct Daemon {
    addr: SocketAddr,
    snapshot: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start() -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let spec = SetSpec {
            name: "us-dnc".into(),
            kind: SetKind::Block,
            filter: FilterWidth::Fuse8,
            source: "loadgen test".into(),
            source_date: Some(Day::today()),
            version: 1,
            build_time: 1_790_000_000,
        };
        let mut builder = SetBuilder::new(spec, None).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for _ in 0..20_000 {
            let value = 10_000_000_000
                + rng.random_range(200..1000u64) * 10_000_000
                + rng.random_range(200..1000u64) * 10_000
                + rng.random_range(0..10_000u64);
            builder
                .push(Number::from_u64_unchecked(value), None)
                .unwrap();
        }
        let snapshot = data.join("us-dnc.1.snap");
        builder
            .build(1)
            .unwrap()
            .image
            .write_atomic(&snapshot)
            .unwrap();
        let config = Config::parse(CONFIG, "test.toml", dir.path()).unwrap();

        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let (_handle, serving) = suppressd::server::start(config, listener, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
                serving.await.unwrap();
            });
        });
        let addr = addr_rx.recv().unwrap();
        Daemon {
            addr,
            snapshot,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// Runs the load generator against this daemon with `extra` arguments.
    fn load(&self, extra: &[&str]) -> Report {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: LoadgenArgs,
        }
        let target = format!("http://{}", self.addr);
        let present = self.snapshot.display().to_string();
        let mut argv = vec![
            "loadgen",
            "--target",
            &target,
            "--present",
            &present,
            "--warmup",
            "200ms",
        ];
        argv.extend_from_slice(extra);
        let args = Cli::try_parse_from(argv).unwrap().args;
        loadgen::run(&args).unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A clean run whose verdicts are exactly what the set says: every present number blocked,
/// every absent one allowed.
fn assert_exact(report: &Report) {
    assert!(report.clean(), "{report:#?}");
    assert!(report.checks > 0, "{report:#?}");
    assert!(report.present_sent > 0, "{report:#?}");
    assert_eq!(report.verdicts.block, report.present_sent, "{report:#?}");
    assert_eq!(
        report.verdicts.allow,
        report.checks - report.present_sent,
        "{report:#?}"
    );
    assert_eq!(report.verdicts.invalid, 0);
    assert!(report.latency_us.p50 > 0.0 && report.latency_us.max >= report.latency_us.p99);
}

#[test]
fn every_mode_runs_clean_with_exact_verdicts() {
    let daemon = Daemon::start();
    let common = [
        "--duration",
        "1s",
        "--connections",
        "2",
        "--hit-ratio",
        "0.1",
    ];
    let unary = daemon.load(&[&common[..], &["--mode", "unary", "--concurrency", "4"]].concat());
    assert_exact(&unary);
    assert_eq!(unary.batch_size, 1);
    let batch = daemon.load(
        &[
            &common[..],
            &[
                "--mode",
                "batch",
                "--concurrency",
                "4",
                "--batch-size",
                "100",
            ],
        ]
        .concat(),
    );
    assert_exact(&batch);
    assert_eq!(batch.checks, batch.requests * 100);
    let stream = daemon.load(
        &[
            &common[..],
            &[
                "--mode",
                "stream",
                "--concurrency",
                "4",
                "--pipeline",
                "2",
                "--batch-size",
                "100",
            ],
        ]
        .concat(),
    );
    assert_exact(&stream);
    let empty = daemon.load(&[&common[..], &["--mode", "empty", "--concurrency", "4"]].concat());
    assert!(empty.clean(), "{empty:#?}");
    assert!(empty.checks > 0);
    // Ping looks nothing up: every answer is VERDICT_UNSPECIFIED.
    assert_eq!(empty.verdicts.unspecified, empty.checks, "{empty:#?}");
}

#[test]
fn text_numbers_request_budgets_and_open_loop() {
    let daemon = Daemon::start();
    let strings = daemon.load(&[
        "--mode",
        "batch",
        "--strings",
        "--batch-size",
        "50",
        "--requests",
        "300",
        "--concurrency",
        "4",
    ]);
    assert_exact(&strings);
    assert_eq!(strings.requests, 300, "--requests is an exact budget");
    assert_eq!(strings.encoding, "strings");
    // Open loop: 400 req/s for 1 s sends about 400 requests, on schedule.
    let paced = daemon.load(&[
        "--mode",
        "unary",
        "--rate",
        "400",
        "--duration",
        "1s",
        "--concurrency",
        "4",
    ]);
    assert_exact(&paced);
    assert!((360..=440).contains(&paced.requests), "{paced:#?}");
    assert!(paced.schedule_lag_us.is_some());
    let paced_stream = daemon.load(&[
        "--mode",
        "stream",
        "--rate",
        "200",
        "--duration",
        "1s",
        "--concurrency",
        "4",
        "--pipeline",
        "2",
        "--batch-size",
        "10",
    ]);
    assert_exact(&paced_stream);
    assert!(
        (180..=220).contains(&paced_stream.requests),
        "{paced_stream:#?}"
    );
}

#[test]
fn failed_calls_are_counted_by_code_never_hidden() {
    let daemon = Daemon::start();
    // Unknown campaign: NOT_FOUND for every call.
    let report = daemon.load(&[
        "--mode",
        "unary",
        "--campaign",
        "nope",
        "--requests",
        "50",
        "--concurrency",
        "2",
    ]);
    assert!(!report.clean());
    assert_eq!(report.requests, 0);
    assert_eq!(report.errors, 50, "{report:#?}");
    assert_eq!(report.errors_by_code.get("NOT_FOUND"), Some(&50));
    // A batch over the daemon's max_batch (1000): INVALID_ARGUMENT, also on a stream.
    let report = daemon.load(&[
        "--mode",
        "batch",
        "--batch-size",
        "1001",
        "--requests",
        "10",
        "--concurrency",
        "2",
        "--payloads",
        "2",
    ]);
    assert_eq!(
        report.errors_by_code.get("INVALID_ARGUMENT"),
        Some(&10),
        "{report:#?}"
    );
    let report = daemon.load(&[
        "--mode",
        "stream",
        "--batch-size",
        "1001",
        "--duration",
        "300ms",
        "--concurrency",
        "2",
        "--payloads",
        "2",
    ]);
    assert!(
        report
            .errors_by_code
            .get("INVALID_ARGUMENT")
            .is_some_and(|&n| n > 0),
        "{report:#?}"
    );
    assert_eq!(report.requests, 0);
}

#[test]
fn an_unreachable_target_is_a_setup_error() {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadgenArgs,
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let target = format!("http://{addr}");
    let args = Cli::try_parse_from(["loadgen", "--target", &target, "--duration", "1s"])
        .unwrap()
        .args;
    let error = loadgen::run(&args).unwrap_err();
    assert!(error.to_string().contains("cannot connect"), "{error}");
}
