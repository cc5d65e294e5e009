//! Crash test: mutations in a loop against the real daemon process, SIGKILL at random moments
//! (compactions included), restart, and check that every acknowledged mutation is in force and
//! no unacknowledged one is half-applied.

use crate::free_port;
use crate::server::{CONFIG, KEY_TEXT, e164, write_all_sets};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use suppressd::engine::date::Day;
use suppressd::proto::admin::admin_client::AdminClient;
use suppressd::proto::admin::{CompactRequest, SuppressRequest};
use suppressd::proto::suppression_client::SuppressionClient;
use suppressd::proto::{CheckBatchRequest, StatusRequest, Verdict};

/// Numbers per mutation: all of them must be in force, or none.
const PER_MUTATION: u64 = 4;
const CYCLES: u64 = 12;

pub(crate) struct Daemon {
    pub(crate) child: Child,
    grpc: String,
    admin: String,
    /// The daemon's stderr, shown when it fails to start.
    log: std::path::PathBuf,
}

fn spawn(dir: &std::path::Path, extra_config: &str, env: &[(&str, &str)]) -> Daemon {
    let (grpc, admin) = (free_port(), free_port());
    let config = CONFIG
        .replace(
            "grpc_listen = \"127.0.0.1:0\"",
            &format!("grpc_listen = \"127.0.0.1:{grpc}\""),
        )
        .replace(
            "[server]\n",
            &format!(
                "[server]\nadmin_listen = \"127.0.0.1:{admin}\"\ncompact_max_age_seconds = 3600\n"
            ),
        )
        + extra_config;
    std::fs::write(dir.join("config.toml"), config).unwrap();
    let log = dir.join("daemon.log");
    let child = Command::new(env!("CARGO_BIN_EXE_suppressd"))
        .args(["serve", "--config"])
        .arg(dir.join("config.toml"))
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Daemon {
        child,
        grpc: format!("http://127.0.0.1:{grpc}"),
        admin: format!("http://127.0.0.1:{admin}"),
        log,
    }
}

/// Starts the daemon on `dir` and waits until it is ready. A port picked by [`free_port`] can be
/// taken by someone else before the daemon binds it (client sockets draw from the same range),
/// so a start that fails only for that reason is retried on fresh ports.
pub(crate) async fn start_ready(
    dir: &std::path::Path,
) -> (
    Daemon,
    SuppressionClient<tonic::transport::Channel>,
    AdminClient<tonic::transport::Channel>,
) {
    start_ready_with(dir, "").await
}

/// [`start_ready`] with `extra_config` appended to the config (a `[fleet]` section).
pub(crate) async fn start_ready_with(
    dir: &std::path::Path,
    extra_config: &str,
) -> (
    Daemon,
    SuppressionClient<tonic::transport::Channel>,
    AdminClient<tonic::transport::Channel>,
) {
    start_ready_env(dir, extra_config, &[]).await
}

/// [`start_ready_with`] with environment variables for the daemon (test hooks).
pub(crate) async fn start_ready_env(
    dir: &std::path::Path,
    extra_config: &str,
    env: &[(&str, &str)],
) -> (
    Daemon,
    SuppressionClient<tonic::transport::Channel>,
    AdminClient<tonic::transport::Channel>,
) {
    for _attempt in 0..5 {
        let mut daemon = spawn(dir, extra_config, env);
        match wait_ready(&mut daemon).await {
            Ok((client, admin)) => return (daemon, client, admin),
            Err(log) if log.contains("Address already in use") => continue,
            Err(log) => panic!("daemon exited during start-up:\n{log}"),
        }
    }
    panic!("no free ports for the daemon after 5 attempts");
}

/// Clients once the daemon reports ready, or the daemon's stderr when it exited.
async fn wait_ready(
    daemon: &mut Daemon,
) -> Result<
    (
        SuppressionClient<tonic::transport::Channel>,
        AdminClient<tonic::transport::Channel>,
    ),
    String,
> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            let log = std::fs::read_to_string(&daemon.log).unwrap_or_default();
            return Err(format!("{status}: {log}"));
        }
        if let (Ok(mut client), Ok(admin)) = (
            SuppressionClient::connect(daemon.grpc.clone()).await,
            AdminClient::connect(daemon.admin.clone()).await,
        ) && client
            .status(StatusRequest {})
            .await
            .is_ok_and(|s| s.into_inner().ready)
        {
            return Ok((client, admin));
        }
        assert!(Instant::now() < deadline, "daemon not ready in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn numbers_of(mutation: u64) -> Vec<u64> {
    (0..PER_MUTATION)
        .map(|i| 13_105_000_000 + mutation * PER_MUTATION + i)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_mutations_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("erased.key"), KEY_TEXT).unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    write_all_sets(&dir.path().join("data"), Day::today());
    // Mutation number -> acknowledged?
    let outcomes: Arc<Mutex<HashMap<u64, bool>>> = Arc::default();
    let mut next = 0u64;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut random = move |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    };
    for cycle in 0..CYCLES {
        let (mut daemon, mut client, admin) = start_ready(dir.path()).await;
        verify(&mut client, &outcomes).await;
        // Writers: several in flight at once, so kills land between journal, overlay and ack.
        let mut writers = Vec::new();
        for writer in 0..4u64 {
            let mut admin = admin.clone();
            let outcomes = outcomes.clone();
            let first = next + writer * 10_000;
            writers.push(tokio::spawn(async move {
                for mutation in first.. {
                    outcomes.lock().unwrap().insert(mutation, false);
                    let request = SuppressRequest {
                        tenant: "acme".into(),
                        numbers: numbers_of(mutation).iter().map(|&n| e164(n)).collect(),
                        request_id: format!("crash-{mutation}"),
                        ..SuppressRequest::default()
                    };
                    match admin.suppress(request).await {
                        Ok(_) => {
                            outcomes.lock().unwrap().insert(mutation, true);
                        }
                        Err(_) => return,
                    }
                }
            }));
        }
        next += 4 * 10_000;
        if cycle % 3 == 1 {
            let mut admin = admin.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                let _ = admin.compact(CompactRequest {}).await;
            });
        }
        tokio::time::sleep(Duration::from_millis(40 + random(200))).await;
        daemon.child.kill().unwrap();
        daemon.child.wait().unwrap();
        for writer in writers {
            writer.await.unwrap();
        }
    }
    let (mut daemon, mut client, mut admin) = start_ready(dir.path()).await;
    let acknowledged = verify(&mut client, &outcomes).await;
    assert!(
        acknowledged > 100,
        "only {acknowledged} mutations acknowledged across {CYCLES} cycles"
    );
    // Every acknowledged mutation has exactly one audit entry (compaction waits until the audit
    // log holds the journal it deletes), and its request id is still known.
    admin.compact(CompactRequest {}).await.unwrap();
    let audited = audited_request_ids(&dir.path().join("data").join("audit"));
    let outcomes = outcomes.lock().unwrap().clone();
    for (&mutation, &acked) in &outcomes {
        let count = audited.get(&format!("crash-{mutation}")).copied();
        if acked {
            assert_eq!(
                count,
                Some(1),
                "audit entries of acknowledged mutation {mutation}"
            );
        } else {
            assert!(
                count.is_none_or(|c| c == 1),
                "mutation {mutation} audited twice"
            );
        }
    }
    for (&mutation, _) in outcomes.iter().filter(|(_, a)| **a).take(50) {
        let repeat = admin
            .suppress(SuppressRequest {
                tenant: "acme".into(),
                numbers: numbers_of(mutation).iter().map(|&n| e164(n)).collect(),
                request_id: format!("crash-{mutation}"),
                ..SuppressRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            repeat.duplicate,
            "request id of mutation {mutation} forgotten"
        );
    }
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
}

/// Every acknowledged mutation is in force; every other one is all-or-nothing. Returns the
/// number of acknowledged mutations.
async fn verify(
    client: &mut SuppressionClient<tonic::transport::Channel>,
    outcomes: &Mutex<HashMap<u64, bool>>,
) -> usize {
    let outcomes: Vec<(u64, bool)> = outcomes
        .lock()
        .unwrap()
        .iter()
        .map(|(&m, &a)| (m, a))
        .collect();
    for chunk in outcomes.chunks(20) {
        let numbers: Vec<u64> = chunk.iter().flat_map(|&(m, _)| numbers_of(m)).collect();
        let response = client
            .check_batch(CheckBatchRequest {
                e164: numbers,
                ..CheckBatchRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        for (index, &(mutation, acknowledged)) in chunk.iter().enumerate() {
            let verdicts = &response.verdicts
                [index * PER_MUTATION as usize..(index + 1) * PER_MUTATION as usize];
            let blocked = verdicts
                .iter()
                .filter(|&&v| v == Verdict::Block as u8)
                .count();
            if acknowledged {
                assert_eq!(
                    blocked, PER_MUTATION as usize,
                    "acknowledged mutation {mutation} lost"
                );
            } else {
                assert!(
                    blocked == 0 || blocked == PER_MUTATION as usize,
                    "mutation {mutation} half-applied"
                );
            }
        }
    }
    outcomes.iter().filter(|(_, a)| *a).count()
}

/// Whether every acknowledged mutation is in force (all its numbers blocked); every other one
/// must be all-or-nothing. With `strict`, a missing acknowledged mutation panics.
pub(crate) async fn verify_in_force(
    client: &mut SuppressionClient<tonic::transport::Channel>,
    outcomes: &Mutex<HashMap<u64, bool>>,
    strict: bool,
) -> bool {
    let outcomes: Vec<(u64, bool)> = outcomes
        .lock()
        .unwrap()
        .iter()
        .map(|(&m, &a)| (m, a))
        .collect();
    for chunk in outcomes.chunks(20) {
        let numbers: Vec<u64> = chunk.iter().flat_map(|&(m, _)| numbers_of(m)).collect();
        let response = client
            .check_batch(CheckBatchRequest {
                e164: numbers,
                ..CheckBatchRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        for (index, &(mutation, acknowledged)) in chunk.iter().enumerate() {
            let verdicts = &response.verdicts
                [index * PER_MUTATION as usize..(index + 1) * PER_MUTATION as usize];
            let blocked = verdicts
                .iter()
                .filter(|&&v| v == Verdict::Block as u8)
                .count();
            assert!(
                blocked == 0 || blocked == PER_MUTATION as usize,
                "mutation {mutation} half-applied"
            );
            if acknowledged && blocked == 0 {
                assert!(!strict, "acknowledged mutation {mutation} lost");
                return false;
            }
        }
    }
    true
}

/// Request id -> number of audit entries carrying it.
fn audited_request_ids(dir: &std::path::Path) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let mut records = Vec::new();
        suppressd::store::scan_segment(&bytes, &mut records);
        for record in records {
            let entry: serde_json::Value = serde_json::from_slice(&record.payload).unwrap();
            *ids.entry(entry["request_id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    ids
}
