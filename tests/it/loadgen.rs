//! The load generator against the real daemon (port 0, temp data directory): every mode runs
//! clean, and the verdicts it counts match the numbers it knows to be present; suppress mode's
//! mutations are in force afterwards, and its failures and violations are counted.

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

/// The daemon of suppress mode: an admin plane, and the tenant's internal do-not-call list
/// (empty at start) in campaign `outbound`; campaign `registry` does not consult that list.
const MUTATION_CONFIG: &str = r#"
[server]
grpc_listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
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

[tenants.acme.sets.dnc]
kind = "block"
reason = "internal_dnc"
files = "acme-dnc.*.snap"
initial_empty = true

[tenants.acme.campaigns.outbound]
block_sets = ["us-dnc", "dnc"]

[tenants.acme.campaigns.registry]
block_sets = ["us-dnc"]
"#;

/// A daemon on its own thread and runtime (the load generator builds its own runtime, which
/// cannot nest in a test's).
struct Daemon {
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    handle: suppressd::server::Handle,
    snapshot: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start() -> Daemon {
        Daemon::start_with(CONFIG)
    }

    fn start_with(config_text: &str) -> Daemon {
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
        let config = Config::parse(config_text, "test.toml", dir.path()).unwrap();

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
                let addr = listener.local_addr().unwrap();
                let (handle, serving) = suppressd::server::start(config, listener, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
                addr_tx.send((addr, handle)).unwrap();
                serving.await.unwrap();
            });
        });
        let (addr, handle) = addr_rx.recv().unwrap();
        Daemon {
            addr,
            admin: handle.admin_addr,
            handle,
            snapshot,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// Runs the load generator against this daemon with `extra` arguments.
    fn load(&self, extra: &[&str]) -> Report {
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

    /// Suppress mode against this daemon's admin plane with `extra` arguments.
    fn mutate(&self, extra: &[&str]) -> Report {
        let args = Cli::try_parse_from(self.mutate_argv(extra)).unwrap().args;
        loadgen::run(&args).unwrap()
    }

    fn mutate_argv(&self, extra: &[&str]) -> Vec<String> {
        let mut argv: Vec<String> = [
            "loadgen",
            "--mode",
            "suppress",
            "--target",
            &format!("http://{}", self.addr),
            "--admin",
            &format!("http://{}", self.admin.expect("admin plane")),
            "--warmup",
            "0s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        argv.extend(extra.iter().map(|s| s.to_string()));
        argv
    }
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: LoadgenArgs,
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

/// The verdict and reasons a fresh data-plane Check gives `number` in `campaign`.
fn check_now(daemon: &Daemon, number: u64, campaign: &str) -> (i32, Vec<i32>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = suppressd::proto::suppression_client::SuppressionClient::connect(format!(
            "http://{}",
            daemon.addr
        ))
        .await
        .unwrap();
        let answer = client
            .check(suppressd::proto::CheckRequest {
                number: format!("+{number}"),
                tenant: "acme".into(),
                campaign: campaign.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        (answer.verdict, answer.reasons)
    })
}

#[test]
fn suppress_mode_mutations_are_acknowledged_verified_and_in_force_afterwards() {
    let daemon = Daemon::start_with(MUTATION_CONFIG);
    // A range of exactly 300 numbers: the run walks all of them (from a random start, wrapping).
    let first = 15_032_000_000u64;
    let first_text = format!("+{first}");
    let report = daemon.mutate(&[
        "--requests",
        "300",
        "--concurrency",
        "8",
        "--connections",
        "2",
        "--verify-every",
        "1",
        "--first-number",
        &first_text,
        "--number-count",
        "300",
    ]);
    assert!(report.clean(), "{report:#?}");
    assert_eq!(report.requests, 300, "{report:#?}");
    let m = report.mutations.as_ref().unwrap();
    assert_eq!((m.verified, m.violations), (300, 0), "{report:#?}");
    assert_eq!(report.verdicts.block, 300);
    assert!(m.ack_to_enforced_us.p50 > 0.0 && report.latency_us.p50 > 0.0);
    // Durable: 300 journal records, and every number of the range blocked by the internal list
    // for a check made now, after the run.
    assert_eq!(daemon.handle.mutator.journal().stats().last_seq, 300);
    let internal_dnc = suppressd::proto::Reason::InternalDnc as i32;
    for number in first..first + 300 {
        let (verdict, reasons) = check_now(&daemon, number, "outbound");
        assert_eq!(
            verdict,
            suppressd::proto::Verdict::Block as i32,
            "+{number}"
        );
        assert!(reasons.contains(&internal_dnc), "+{number}: {reasons:?}");
    }
    assert_eq!(
        check_now(&daemon, first + 300, "outbound").0,
        suppressd::proto::Verdict::Allow as i32,
        "outside the range"
    );
    // Sampled verification: every 10th.
    let sampled = daemon.mutate(&[
        "--requests",
        "100",
        "--concurrency",
        "4",
        "--verify-every",
        "10",
        "--first-number",
        "+15035000000",
    ]);
    assert!(sampled.clean(), "{sampled:#?}");
    assert_eq!(sampled.mutations.as_ref().unwrap().verified, 10);
}

/// Open loop (`--rate`): the Suppresses follow the schedule (200 at 250/s cannot finish in
/// less than 0.8 s), every one verified, and the send lag is reported.
#[test]
fn suppress_mode_open_loop_follows_its_schedule() {
    let daemon = Daemon::start_with(MUTATION_CONFIG);
    let started = std::time::Instant::now();
    let report = daemon.mutate(&[
        "--rate",
        "250",
        "--requests",
        "200",
        "--concurrency",
        "16",
        "--verify-every",
        "1",
        "--first-number",
        "+15036000000",
    ]);
    let took = started.elapsed();
    assert!(report.clean(), "{report:#?}");
    assert_eq!(report.requests, 200, "{report:#?}");
    let m = report.mutations.as_ref().unwrap();
    assert_eq!((m.verified, m.violations), (200, 0), "{report:#?}");
    assert!(report.schedule_lag_us.is_some(), "{report:#?}");
    assert!(took >= std::time::Duration::from_millis(790), "{took:?}");
    assert_eq!(daemon.handle.mutator.journal().stats().last_seq, 200);
}

#[test]
fn suppress_mode_counts_failures_and_violations() {
    let daemon = Daemon::start_with(MUTATION_CONFIG);
    let range = ["--first-number", "+15032000000", "--number-count", "20"];
    let first = daemon.mutate(&[&["--requests", "20", "--verify-every", "1"], &range[..]].concat());
    assert!(first.clean(), "{first:#?}");
    // The same range again: every number is already blocked, so none is fresh.
    let again = daemon.mutate(&[&["--requests", "20", "--verify-every", "1"], &range[..]].concat());
    assert!(!again.clean());
    assert_eq!(again.requests, 0, "{again:#?}");
    assert_eq!(
        again.errors_by_code.get("NOT_FRESH"),
        Some(&20),
        "{again:#?}"
    );
    // An unknown tenant: NOT_FOUND for every Suppress.
    let unknown = daemon.mutate(&[
        "--requests",
        "15",
        "--tenant",
        "nobody",
        "--verify-every",
        "0",
    ]);
    assert_eq!(
        unknown.errors_by_code.get("NOT_FOUND"),
        Some(&15),
        "{unknown:#?}"
    );
    assert!(!unknown.clean());
    // Verified in a campaign that ignores the internal list: acknowledged but ALLOW, i.e. a
    // violation, and the command exits 1.
    let argv = daemon.mutate_argv(&[
        "--requests",
        "5",
        "--verify-every",
        "1",
        "--campaign",
        "registry",
        "--first-number",
        "+15036000000",
    ]);
    let report = loadgen::run(&Cli::try_parse_from(&argv).unwrap().args).unwrap();
    let m = report.mutations.as_ref().unwrap();
    assert_eq!((report.requests, m.violations), (5, 5), "{report:#?}");
    assert!(!report.clean());
    let argv = daemon.mutate_argv(&[
        "--requests",
        "5",
        "--verify-every",
        "1",
        "--campaign",
        "registry",
        "--first-number",
        "+15037000000",
    ]);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_suppressd"))
        .args(&argv)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("5 VIOLATIONS"), "{stdout}");
    assert!(stderr.contains("not in force"), "{stderr}");
}
