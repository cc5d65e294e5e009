//! A snapshot file is served only as the set it claims to be: a file whose header names another
//! set, whose file name and header disagree on its version, or that holds far fewer keys than
//! the version in force (a partial download) is refused while checks keep flowing, the version
//! in force keeps serving, and each refusal shows in `/metrics`.

use crate::server::{
    CLEAN, CONFIG, INTERNAL, REGISTRY, TestDaemon, check, e164, write_all_sets, write_set,
};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use suppressd::engine::date::Day;
use suppressd::engine::snapshot::SetKind;
use suppressd::proto::suppression_client::SuppressionClient;
use suppressd::proto::{CheckBatchRequest, StatusRequest, Verdict};

/// In the registry version in force only: must keep blocking whatever is dropped next to it.
const OLD_ONLY: u64 = 12_025_550_999;
const BLOCK: u8 = Verdict::Block as u8;
const ALLOW: u8 = Verdict::Allow as u8;

fn config() -> String {
    CONFIG.replace("[server]\n", "[server]\nhttp_listen = \"127.0.0.1:0\"\n")
}

/// Writes a set built as `built_as` (its header name is the part before the first '.') in a
/// staging directory, then renames it into `data` as `file`, as an operator's `mv` would.
fn drop_in(
    dir: &Path,
    built_as: &str,
    file: &str,
    numbers: &[u64],
    version: u64,
) -> std::path::PathBuf {
    let staging = dir.join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    write_set(
        &staging,
        built_as,
        SetKind::Block,
        numbers,
        version,
        Some(Day::today()),
        false,
    );
    let target = dir.join("data").join(file);
    std::fs::rename(staging.join(built_as), &target).unwrap();
    target
}

/// The `/metrics` text, over plain HTTP as Prometheus scrapes it.
async fn metrics_text(daemon: &TestDaemon) -> String {
    let addr = daemon.handle.http_addr.unwrap();
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        text
    })
    .await
    .unwrap()
}

/// Refused files counted with `reason` (the counter is process-wide: compare before/after).
fn refused_count(metrics: &str, reason: &str) -> u64 {
    metrics
        .lines()
        .find(|line| {
            line.starts_with("suppressd_reloads_total{")
                && line.contains("result=\"refused\"")
                && line.contains(&format!("reason=\"{reason}\""))
        })
        .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}

/// The version and last error of `set` in Status.
async fn status_of(daemon: &TestDaemon, set: &str) -> (u64, String) {
    let status = daemon
        .client()
        .await
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let found = status.sets.iter().find(|s| s.name == set).unwrap();
    (found.version, found.last_error.clone())
}

/// Waits until Status shows a refusal of `set` that mentions `needle`.
async fn wait_refused(daemon: &TestDaemon, set: &str, needle: &str) -> Option<String> {
    for _ in 0..100 {
        daemon.handle.reload.notify_one();
        tokio::time::sleep(Duration::from_millis(30)).await;
        let (_, error) = status_of(daemon, set).await;
        if error.contains(needle) {
            return Some(error);
        }
    }
    None
}

/// Checks in a loop over gRPC until stopped: (calls, failed calls, wrong answers).
fn check_load(
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, u64, u64)> {
    tokio::spawn(async move {
        let mut client = SuppressionClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let (mut calls, mut failures, mut wrong) = (0, 0, 0);
        while !stop.load(Ordering::Relaxed) {
            let request = CheckBatchRequest {
                e164: vec![REGISTRY, OLD_ONLY, CLEAN],
                ..CheckBatchRequest::default()
            };
            match client.check_batch(request).await {
                Ok(response) => {
                    wrong += u64::from(response.into_inner().verdicts != [BLOCK, BLOCK, ALLOW]);
                }
                Err(_) => failures += 1,
            }
            calls += 1;
        }
        (calls, failures, wrong)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_set_and_truncated_download_are_refused_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_all_sets(&data, Day::today());
    // The registry in force: version 10, 1000 numbers.
    let registry: Vec<u64> = (0..998)
        .map(|i| 12_025_550_000 + i)
        .chain([REGISTRY, OLD_ONLY])
        .collect();
    drop_in(
        dir.path(),
        "us-dnc.10.snap",
        "us-dnc.10.snap",
        &registry,
        10,
    );
    let daemon = TestDaemon::start_in(dir, &config()).await;
    assert_eq!(status_of(&daemon, "us-dnc").await.0, 10);
    let before = metrics_text(&daemon).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..3)
        .map(|_| check_load(daemon.addr, stop.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Poland's registry renamed into the place of the US one (found so): its header says pl-dnc.
    let polish: Vec<u64> = (0..500).map(|i| 48_600_100_000 + i).collect();
    drop_in(
        daemon.dir.path(),
        "pl-dnc.11.snap",
        "us-dnc.11.snap",
        &polish,
        11,
    );
    let wrong_set = wait_refused(&daemon, "us-dnc", "us-dnc.11.snap").await;
    // A partial download: a valid, newer version holding 10 % of the numbers.
    drop_in(
        daemon.dir.path(),
        "us-dnc.12.snap",
        "us-dnc.12.snap",
        &registry[..100],
        12,
    );
    let truncated = wait_refused(&daemon, "us-dnc", "us-dnc.12.snap").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut calls, mut failures, mut wrong) = (0, 0, 0);
    for task in load {
        let (c, f, w) = task.await.unwrap();
        (calls, failures, wrong) = (calls + c, failures + f, wrong + w);
    }
    assert_eq!(
        (failures, wrong),
        (0, 0),
        "failed and wrong answers out of {calls}"
    );
    assert!(calls > 20, "only {calls} checks ran");
    let wrong_set = wrong_set.expect("the wrong-set file was never refused");
    assert!(
        wrong_set.contains("names set 'pl-dnc'") && wrong_set.contains("'us-dnc'"),
        "{wrong_set}"
    );
    let truncated = truncated.expect("the truncated file was never refused");
    assert!(
        truncated.contains("100 keys") && truncated.contains("min_keys_ratio"),
        "{truncated}"
    );
    assert_eq!(status_of(&daemon, "us-dnc").await.0, 10);
    let mut client = daemon.client().await;
    let old = check(&mut client, &e164(OLD_ONLY), "outbound").await;
    assert_eq!(old.verdict, Verdict::Block as i32);
    // Each refusal is in the metrics text, by reason.
    let after = metrics_text(&daemon).await;
    for reason in ["wrong_set", "too_few_keys"] {
        assert!(
            refused_count(&after, reason) > refused_count(&before, reason),
            "{reason} not counted:\n{after}"
        );
    }
    // The partial download is moved aside, so a restart (nothing in force to compare with)
    // cannot serve it; the wrong-set file is refused again at start.
    assert!(!data_file(&daemon, "us-dnc.12.snap").exists());
    assert!(data_file(&daemon, "us-dnc.12.snap.refused").exists());
    let dir = daemon.stop().await;
    let daemon = TestDaemon::start_in(dir, &config()).await;
    let (version, error) = status_of(&daemon, "us-dnc").await;
    assert_eq!(version, 10);
    assert!(error.contains("us-dnc.11.snap"), "{error}");
    let mut client = daemon.client().await;
    for number in [REGISTRY, OLD_ONLY] {
        let answer = check(&mut client, &e164(number), "outbound").await;
        assert_eq!(answer.verdict, Verdict::Block as i32);
    }
    // Tenant sets have no ratio unless configured: an internal list may shrink to nothing.
    drop_in(
        daemon.dir.path(),
        "acme-dnc.2.snap",
        "acme-dnc.2.snap",
        &[],
        2,
    );
    daemon.wait_for_version("acme/dnc", 2).await;
    let answer = check(&mut client, &e164(INTERNAL), "outbound").await;
    assert_eq!(answer.verdict, Verdict::Allow as i32);
    daemon.shutdown().await;
}

fn data_file(daemon: &TestDaemon, name: &str) -> std::path::PathBuf {
    daemon.data_dir().join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_name_and_header_version_must_agree() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    write_all_sets(&dir.path().join("data"), Day::today());
    let daemon = TestDaemon::start_in(dir, &config()).await;
    let before = metrics_text(&daemon).await;
    // Named 12, header 3; named 2, header 30; the version place holding another set's name.
    // None holds the registry number: served, any of them would let it be called.
    let cases = [
        ("us-dnc.3.snap", "us-dnc.12.snap", 3, "says version '12'"),
        ("us-dnc.30.snap", "us-dnc.2.snap", 30, "says version '2'"),
        (
            "us-dnc.4.snap",
            "us-dnc.pl-dnc.4.snap",
            4,
            "says version 'pl-dnc.4'",
        ),
    ];
    for (built_as, file, version, needle) in cases {
        drop_in(daemon.dir.path(), built_as, file, &[CLEAN], version);
        let error = wait_refused(&daemon, "us-dnc", needle).await;
        let error = error.unwrap_or_else(|| panic!("{file} was not refused"));
        assert!(
            error.contains(file) && error.contains(&format!("header says version {version}")),
            "{error}"
        );
    }
    let (version, _) = status_of(&daemon, "us-dnc").await;
    assert_eq!(version, 1);
    let mut client = daemon.client().await;
    let answer = check(&mut client, &e164(REGISTRY), "outbound").await;
    assert_eq!(answer.verdict, Verdict::Block as i32);
    let after = metrics_text(&daemon).await;
    assert!(
        refused_count(&after, "name_mismatch") >= refused_count(&before, "name_mismatch") + 3,
        "{after}"
    );
    daemon.shutdown().await;
}

/// The daemon's own compaction may shrink a set far below its `min_keys_ratio` (a mass
/// unsuppress): that output is never refused, even with reloads racing the compaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_output_is_never_refused_for_shrinking() {
    use suppressd::proto::admin::admin_client::AdminClient;
    use suppressd::proto::admin::{CompactRequest, SuppressRequest};
    let config = config()
        .replace(
            "[server]\n",
            "[server]\nadmin_listen = \"127.0.0.1:0\"\ncompact_max_age_seconds = 3600\n",
        )
        .replace(
            "files = \"acme-dnc.*.snap\"",
            "files = \"acme-dnc.*.snap\"\nmin_keys_ratio = 1",
        );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    write_all_sets(&dir.path().join("data"), Day::today());
    let daemon = TestDaemon::start_in(dir, &config).await;
    let mut admin = AdminClient::connect(format!("http://{}", daemon.handle.admin_addr.unwrap()))
        .await
        .unwrap();
    let request = |id: String, numbers: &[u64]| SuppressRequest {
        tenant: "acme".into(),
        numbers: numbers.iter().map(|&n| e164(n)).collect(),
        request_id: id,
        reason: "test".into(),
        ..SuppressRequest::default()
    };
    // Reloads woken all the time, so some run while a compaction writes its file.
    let stop = Arc::new(AtomicBool::new(false));
    let wake = daemon.handle.reload.clone();
    let flag = stop.clone();
    let waker = tokio::spawn(async move {
        while !flag.load(Ordering::Relaxed) {
            wake.notify_one();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    for round in 0..4u64 {
        let numbers: Vec<u64> = (0..50).map(|i| 13_125_560_000 + round * 100 + i).collect();
        admin
            .suppress(request(format!("add-{round}"), &numbers))
            .await
            .unwrap();
        admin.compact(CompactRequest {}).await.unwrap();
        admin
            .unsuppress(request(format!("lift-{round}"), &numbers))
            .await
            .unwrap();
        admin.compact(CompactRequest {}).await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    waker.await.unwrap();
    daemon.handle.reload.notify_one();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (version, error) = status_of(&daemon, "acme/dnc").await;
    assert_eq!(version, 9);
    assert!(error.is_empty(), "{error}");
    assert!(
        std::fs::read_dir(daemon.data_dir()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".refused")),
        "a compaction output was moved aside"
    );
    let dir = daemon.stop().await;
    let daemon = TestDaemon::start_in(dir, &config).await;
    assert_eq!(status_of(&daemon, "acme/dnc").await.0, 9);
    let mut client = daemon.client().await;
    let lifted = check(&mut client, &e164(13_125_560_301), "outbound").await;
    assert_eq!(lifted.verdict, Verdict::Allow as i32);
    let internal = check(&mut client, &e164(INTERNAL), "outbound").await;
    assert_eq!(internal.verdict, Verdict::Block as i32);
    daemon.shutdown().await;
}

#[test]
fn nonsense_min_keys_ratio_exits_64_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("erased.key"), crate::server::KEY_TEXT).unwrap();
    for bad in ["1.5", "-1"] {
        let text = CONFIG.replace(
            "files = \"us-dnc.*.snap\"",
            &format!("files = \"us-dnc.*.snap\"\nmin_keys_ratio = {bad}"),
        );
        std::fs::write(dir.path().join("bad.toml"), text).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_suppressd"))
            .args(["serve", "--config"])
            .arg(dir.path().join("bad.toml"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{stderr}");
        assert!(stderr.contains("sets.us-dnc.min_keys_ratio"), "{stderr}");
    }
}
