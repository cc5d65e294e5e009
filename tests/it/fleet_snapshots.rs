//! Fleet snapshots (issue 16 §1-2): versions published through the JetStream object store and
//! served by every host, bad objects refused everywhere, an empty host bootstrapping itself,
//! heads that two publishers cannot both move, and one compactor at a time. Real nats-server,
//! daemons on port 0, no mocks.

use crate::admin::{admin_client as admin, suppress};
use crate::fleet::{fleet_config, host};
use crate::nats::{Nats, write_fleet_key};
use crate::server::{
    CLEAN, CONSENTED, ERASED, INTERNAL, KEY_TEXT, REGISTRY, TestDaemon, check, e164, reasons,
    write_set,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use suppressd::config::{Config, SetDefinition};
use suppressd::engine::date::Day;
use suppressd::engine::snapshot::SetKind;
use suppressd::fleet::heads::{self, Buckets, Head};
use suppressd::fleet::snapshots::{self, Publication, PublishError};
use suppressd::fleet::{Fleet, FleetSecrets, objects};
use suppressd::policy::Policy;
use suppressd::proto::{CheckRequest, Reason, Verdict};

/// A NATS client as the `fleet publish` command (or a dying compactor) uses it.
struct Tool {
    _dir: tempfile::TempDir,
    policy: Policy,
    fleet: Arc<Fleet>,
    buckets: Buckets,
}

impl Tool {
    async fn new(nats: &Nats, name: &str, extra: &str) -> Tool {
        let dir = tempfile::tempdir().unwrap();
        write_fleet_key(dir.path());
        std::fs::write(dir.path().join("erased.key"), KEY_TEXT).unwrap();
        let config =
            Config::parse(&fleet_config(nats, name, extra), "tool.toml", dir.path()).unwrap();
        let settings = config.fleet().unwrap().clone();
        let secrets = FleetSecrets::load(&settings).unwrap();
        let fleet = Fleet::connect(settings, secrets, 0, None).await.unwrap();
        let buckets = fleet.snapshot_buckets().await.unwrap();
        Tool {
            _dir: dir,
            policy: Policy::compile(&config),
            fleet,
            buckets,
        }
    }

    fn definition(&self, id: &str) -> &SetDefinition {
        self.policy.sets.iter().find(|d| d.id == id).unwrap()
    }

    async fn publish(&self, id: &str, file: &Path) -> Result<Head, PublishError> {
        self.publish_in_parts(id, file, objects::PART_BYTES).await
    }

    async fn publish_in_parts(
        &self,
        id: &str,
        file: &Path,
        part_bytes: u64,
    ) -> Result<Head, PublishError> {
        snapshots::publish(
            &self.buckets,
            Publication {
                definition: self.definition(id),
                file,
                through_seq: None,
                base_version: None,
                publisher: "test",
                part_bytes,
            },
        )
        .await
    }

    async fn head(&self, id: &str) -> Option<(Head, u64)> {
        heads::read_head(&self.buckets.heads, id).await.unwrap()
    }
}

/// A fleet daemon with an empty data directory.
async fn empty_host(nats: &Nats, name: &str, extra: &str) -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    write_fleet_key(dir.path());
    TestDaemon::start_in(dir, &fleet_config(nats, name, extra)).await
}

fn version_of(daemon: &TestDaemon, id: &str) -> Option<u64> {
    let state = &daemon.handle.state;
    let index = state.policy.sets.iter().position(|d| d.id == id).unwrap();
    state.sets.load().slots[index]
        .as_ref()
        .map(|l| l.set.version())
}

fn overlay_len(daemon: &TestDaemon, id: &str) -> usize {
    let state = &daemon.handle.state;
    let index = state.policy.sets.iter().position(|d| d.id == id).unwrap();
    state.overlays[index].len()
}

async fn wait_version(daemon: &TestDaemon, id: &str, version: u64) -> Duration {
    let started = Instant::now();
    while version_of(daemon, id) != Some(version) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{id} never reached version {version} (serving {:?})",
            version_of(daemon, id)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

fn registry_date() -> Day {
    Day(Day::today().0 - 1)
}

/// A registry snapshot of `numbers` as version `version`, in `dir`.
fn registry(dir: &Path, version: u64, numbers: &[u64]) -> PathBuf {
    let name = format!("us-dnc.{version}.snap");
    write_set(
        dir,
        &name,
        SetKind::Block,
        numbers,
        version,
        Some(registry_date()),
        false,
    );
    dir.join(name)
}

/// Checks the registry number on every host until `stop`; counts answers that are not BLOCK
/// (a failed call included).
fn check_continuously(
    hosts: &[&TestDaemon],
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(u64, u64)>> {
    hosts
        .iter()
        .map(|daemon| {
            let (addr, stop) = (daemon.addr, stop.clone());
            tokio::spawn(async move {
                let mut client = suppressd::proto::suppression_client::SuppressionClient::connect(
                    format!("http://{addr}"),
                )
                .await
                .unwrap();
                let (mut done, mut failed) = (0, 0);
                while !stop.load(Ordering::Relaxed) {
                    let answer = client
                        .check(CheckRequest {
                            number: e164(REGISTRY),
                            campaign: "outbound".into(),
                            ..Default::default()
                        })
                        .await;
                    done += 1;
                    if answer.map_or(true, |a| a.into_inner().verdict != Verdict::Block as i32) {
                        failed += 1;
                    }
                }
                (done, failed)
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_registry_version_is_served_by_every_host_with_no_failed_check() {
    let Some(nats) = Nats::single().await else {
        return;
    };
    let (a, b, c) = (
        host(&nats, "a", "").await,
        host(&nats, "b", "").await,
        host(&nats, "c", "").await,
    );
    let files = tempfile::tempdir().unwrap();
    let file = registry(files.path(), 2, &[REGISTRY, CLEAN]);
    // The operator's command, with a config like the daemons'.
    let config = a.dir.path().join("publish.toml");
    std::fs::write(&config, fleet_config(&nats, "operator", "")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let checkers = check_continuously(&[&a, &b, &c], &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_suppressd"));
    command
        .args(["fleet", "publish", "--config"])
        .arg(&config)
        .args(["--set", "us-dnc"])
        .arg(&file);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("published us-dnc version 2"), "{stdout}");
    for daemon in [&a, &b, &c] {
        wait_version(daemon, "us-dnc", 2).await;
    }
    eprintln!(
        "publish command -> version 2 served by 3 hosts: {:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for checker in checkers {
        let (done, failed) = checker.await.unwrap();
        assert!(done > 10, "only {done} checks ran");
        assert_eq!(
            failed, 0,
            "{failed} of {done} checks failed during the swap"
        );
    }
    for daemon in [&a, &b, &c] {
        let mut client = daemon.client().await;
        let answer = check(&mut client, &e164(CLEAN), "outbound").await;
        assert_eq!(reasons(&answer.reasons), [Reason::NationalRegistry]);
    }
    // `fleet heads` shows it.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_suppressd"))
        .args(["fleet", "heads", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("us-dnc: version 2"), "{stdout}");
    for daemon in [a, b, c] {
        daemon.shutdown().await;
    }
}

/// Uploads `file` as version `version` of us-dnc and moves the head to it, as `tamper` leaves
/// the head (a digest or size that lies, or nothing: bad bytes behind a true digest). Every
/// refusal case is made here.
async fn bad_head(tool: &Tool, version: u64, file: &Path, tamper: impl FnOnce(&mut Head)) {
    let uploaded = objects::upload(&tool.buckets.objects, "us-dnc", version, file, 1 << 20)
        .await
        .unwrap();
    let mut head = Head {
        format: heads::HEAD_FORMAT,
        set: "us-dnc".into(),
        version,
        object: uploaded.object.clone(),
        parts: uploaded.parts,
        part_bytes: uploaded.part_bytes,
        size: uploaded.size,
        digest: uploaded.digest.clone(),
        key_scheme: "plain".into(),
        through_seq: 0,
        published_by: "test".into(),
        published_at_ms: 0,
    };
    tamper(&mut head);
    let expected = tool.head("us-dnc").await.map(|(_, r)| r);
    heads::move_head(&tool.buckets.heads, &head, expected)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_truncated_and_mismatched_objects_are_refused_everywhere() {
    let Some(nats) = Nats::single().await else {
        return;
    };
    let hosts = [host(&nats, "a", "").await, host(&nats, "b", "").await];
    let tool = Tool::new(&nats, "operator", "").await;
    let files = tempfile::tempdir().unwrap();
    let dnc = tool.definition("us-dnc");
    // 1. A digest mismatch: valid bytes of version 2, a head promising other bytes.
    let v2 = registry(files.path(), 2, &[REGISTRY, CLEAN]);
    bad_head(&tool, 2, &v2, |head| {
        head.digest = format!("sha256:{}", "00".repeat(32));
    })
    .await;
    // 2. A truncated object: half of version 3 stored, the head promising all of it.
    let v3 = registry(files.path(), 3, &[REGISTRY, CLEAN]);
    let bytes = std::fs::read(&v3).unwrap();
    let half = files.path().join("half");
    std::fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
    let (digest, size) = objects::digest_file(&v3).unwrap();
    bad_head(&tool, 3, &half, |head| {
        (head.digest, head.size) = (digest, size)
    })
    .await;
    // 3. A corrupt snapshot whose digest matches: the engine's validation refuses it.
    let v4 = registry(files.path(), 4, &[REGISTRY, CLEAN]);
    let mut bytes = std::fs::read(&v4).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&v4, &bytes).unwrap();
    bad_head(&tool, 4, &v4, |_| {}).await;
    // 4. The right bytes of another set's file under this set's head.
    let other = files.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    write_set(
        &other,
        "acme-dnc.5.snap",
        SetKind::Block,
        &[CLEAN],
        5,
        None,
        false,
    );
    bad_head(&tool, 5, &other.join("acme-dnc.5.snap"), |_| {}).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Then a good version 6: served, so every bad head before it was seen and refused.
    let v6 = registry(files.path(), 6, &[REGISTRY, CLEAN]);
    // In small parts: one logical version, one digest over all of them.
    let head = tool.publish_in_parts(&dnc.id, &v6, 100).await.unwrap();
    assert_eq!(head.version, 6);
    assert!(head.parts > 2, "{} parts", head.parts);
    for daemon in &hosts {
        wait_version(daemon, "us-dnc", 6).await;
        for version in 2..=5 {
            let file = daemon.data_dir().join(format!("us-dnc.{version}.snap"));
            assert!(!file.exists(), "{} was put in place", file.display());
        }
        let leftovers: Vec<_> = std::fs::read_dir(daemon.data_dir())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-") || n.contains(".fetch-"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }
    for daemon in hosts {
        daemon.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_objects_leave_the_version_in_force_serving() {
    let Some(nats) = Nats::single().await else {
        return;
    };
    let a = host(&nats, "a", "").await;
    let tool = Tool::new(&nats, "operator", "").await;
    let files = tempfile::tempdir().unwrap();
    let v2 = registry(files.path(), 2, &[REGISTRY, CLEAN]);
    bad_head(&tool, 2, &v2, |head| {
        head.digest = format!("sha256:{}", "11".repeat(32));
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(version_of(&a, "us-dnc"), Some(1));
    let mut client = a.client().await;
    let answer = check(&mut client, &e164(REGISTRY), "outbound").await;
    assert_eq!(reasons(&answer.reasons), [Reason::NationalRegistry]);
    assert_eq!(
        check(&mut client, &e164(CLEAN), "outbound").await.verdict,
        Verdict::Allow as i32
    );
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_host_bootstraps_from_the_object_store_and_the_stream() {
    let Some(nats) = Nats::single().await else {
        return;
    };
    let a = host(&nats, "a", "").await;
    let tool = Tool::new(&nats, "operator", "").await;
    for (id, file) in [
        ("us-dnc", "us-dnc.1.snap"),
        ("acme/dnc", "acme-dnc.1.snap"),
        ("acme/erased", "acme-erased.1.snap"),
        ("acme/consent", "acme-consent.1.snap"),
    ] {
        tool.publish(id, &a.data_dir().join(file)).await.unwrap();
    }
    admin(&a)
        .await
        .suppress(suppress("boot-1", &[CLEAN]))
        .await
        .unwrap();
    let started = Instant::now();
    let e = empty_host(&nats, "e", "").await;
    while !e.handle.state.is_ready() || e.handle.state.fleet_lagging() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the empty host never became ready"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut client = e.client().await;
    // The opt-out from the stream may land a moment after the sets.
    let deadline = Instant::now() + Duration::from_secs(10);
    while check(&mut client, &e164(CLEAN), "outbound").await.verdict != Verdict::Block as i32 {
        assert!(
            Instant::now() < deadline,
            "the stream's opt-out never applied"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("empty host ready and caught up: {:?}", started.elapsed());
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", e.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .unwrap()
            .into_inner()
            .status;
        if status == serving {
            break;
        }
        assert!(Instant::now() < deadline, "health never SERVING");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cases = [
        (REGISTRY, "outbound", Reason::NationalRegistry),
        (INTERNAL, "outbound", Reason::InternalDnc),
        (ERASED, "outbound", Reason::Erased),
        (CLEAN, "outbound", Reason::InternalDnc),
    ];
    for (number, campaign, reason) in cases {
        let answer = check(&mut client, &e164(number), campaign).await;
        assert_eq!(reasons(&answer.reasons), [reason], "{number}");
    }
    assert_eq!(
        check(&mut client, &e164(CONSENTED), "consented")
            .await
            .verdict,
        Verdict::Allow as i32
    );
    for file in [
        "us-dnc.1.snap",
        "acme-dnc.1.snap",
        "acme-erased.1.snap",
        "acme-consent.1.snap",
    ] {
        assert!(e.data_dir().join(file).exists(), "{file} not fetched");
    }
    for daemon in [a, e] {
        daemon.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_publishers_never_both_move_a_head() {
    let Some(nats) = Nats::single().await else {
        return;
    };
    let (x, y) = (
        Tool::new(&nats, "x", "").await,
        Tool::new(&nats, "y", "").await,
    );
    let files = tempfile::tempdir().unwrap();
    let (dir_x, dir_y) = (files.path().join("x"), files.path().join("y"));
    std::fs::create_dir_all(&dir_x).unwrap();
    std::fs::create_dir_all(&dir_y).unwrap();
    let mut wins = 0;
    for version in 1..=5u64 {
        let file_x = registry(&dir_x, version, &[REGISTRY, CLEAN]);
        let file_y = registry(&dir_y, version, &[REGISTRY, CLEAN + 1]);
        let (from_x, from_y) =
            tokio::join!(x.publish("us-dnc", &file_x), y.publish("us-dnc", &file_y));
        let (head, _) = x.head("us-dnc").await.unwrap();
        assert_eq!(head.version, version);
        match (from_x, from_y) {
            (Ok(won), Err(lost)) | (Err(lost), Ok(won)) => {
                assert_eq!(head, won, "the head is the winner's");
                assert!(
                    matches!(lost, PublishError::Lost(_) | PublishError::Refused(_)),
                    "{lost}"
                );
                wins += 1;
            }
            (Ok(_), Ok(_)) => panic!("both publishers moved the head of version {version}"),
            (Err(a), Err(b)) => panic!("neither published: {a} / {b}"),
        }
    }
    assert_eq!(wins, 5);
    // The move itself is a compare-and-set: a stale revision never wins.
    let (head, revision) = x.head("us-dnc").await.unwrap();
    let mut next = head.clone();
    next.version += 1;
    assert_eq!(
        heads::move_head(&x.buckets.heads, &next, Some(revision - 1)).await,
        Err(heads::MoveError::Lost)
    );
    assert!(
        heads::move_head(&x.buckets.heads, &next, None)
            .await
            .is_err()
    );
}

/// `count` numbers no test set holds.
fn fresh_numbers(from: u64, count: u64) -> Vec<u64> {
    (0..count).map(|i| CLEAN + from + i).collect()
}

async fn compact(daemon: &TestDaemon) -> Result<(), String> {
    let (state, mutator) = (daemon.handle.state.clone(), daemon.handle.mutator.clone());
    tokio::task::spawn_blocking(move || mutator.compact(&state).map(|_| ()))
        .await
        .unwrap()
}

async fn head_history(tool: &Tool, id: &str) -> Vec<Head> {
    use tokio_stream::StreamExt;
    let mut history = tool.buckets.heads.history(id).await.unwrap();
    let mut heads = Vec::new();
    while let Some(entry) = history.next().await {
        let entry = entry.unwrap();
        heads.push(Head::decode(id, &entry.value).unwrap());
    }
    heads
}

async fn all_blocked(daemon: &TestDaemon, numbers: &[u64]) {
    let mut client = daemon.client().await;
    for &number in numbers {
        let answer = check(&mut client, &e164(number), "outbound").await;
        assert_eq!(reasons(&answer.reasons), [Reason::InternalDnc], "{number}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_compacting_at_once_exactly_one_publishes() {
    let Some(nats) = Nats::single().await else {
        return;
    };
    // The lease alone: two takers at once, one wins.
    let (x, y) = (
        Tool::new(&nats, "x", "").await,
        Tool::new(&nats, "y", "").await,
    );
    let (lx, ly) = tokio::join!(x.fleet.try_lease(), y.fleet.try_lease());
    let (lx, ly) = (lx.unwrap(), ly.unwrap());
    assert!(lx.is_some() != ly.is_some(), "exactly one takes the lease");
    for lease in [lx, ly].into_iter().flatten() {
        lease.release().await;
    }
    // Two daemons with the same mutations compacting at once.
    let extra = "compaction_lease_seconds = 5\n";
    let (a, b) = (host(&nats, "a", extra).await, host(&nats, "b", extra).await);
    let numbers = fresh_numbers(200, 20);
    admin(&a)
        .await
        .suppress(suppress("both-1", &numbers[..10]))
        .await
        .unwrap();
    admin(&b)
        .await
        .suppress(suppress("both-2", &numbers[10..]))
        .await
        .unwrap();
    let seq = b.handle.state.fleet.get().unwrap().applied();
    assert!(
        a.handle
            .state
            .fleet
            .get()
            .unwrap()
            .wait_applied(seq, Duration::from_secs(10))
            .await
    );
    let (on_a, on_b) = tokio::join!(compact(&a), compact(&b));
    eprintln!("compactions at once: a {on_a:?}, b {on_b:?}");
    let published = head_history(&x, "acme/dnc").await;
    assert_eq!(published.len(), 1, "one version published: {published:?}");
    let head = &published[0];
    assert_eq!(head.version, 2);
    assert_eq!(head.through_seq, seq);
    let holder = if head.published_by == "a" { &a } else { &b };
    assert!(["a", "b"].contains(&head.published_by.as_str()));
    let other = if head.published_by == "a" { &b } else { &a };
    assert!(
        if head.published_by == "a" {
            on_a.is_ok()
        } else {
            on_b.is_ok()
        },
        "the publisher's compaction succeeded"
    );
    wait_version(other, "acme/dnc", 2).await;
    for daemon in [holder, other] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while overlay_len(daemon, "acme/dnc") != 0 {
            assert!(
                Instant::now() < deadline,
                "the overlay kept what the version carries"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        all_blocked(daemon, &numbers).await;
        let state = &daemon.handle.state;
        let index = state
            .policy
            .sets
            .iter()
            .position(|d| d.id == "acme/dnc")
            .unwrap();
        let set = state.sets.load().slots[index].clone().unwrap();
        assert_eq!(
            set.set.len(),
            1 + numbers.len() as u64,
            "no duplicate, none lost"
        );
    }
    for daemon in [a, b] {
        daemon.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compactor_dying_mid_way_is_replaced_after_the_lease_ttl() {
    let Some(nats) = Nats::single().await else {
        return;
    };
    let extra = "compaction_lease_seconds = 3\n";
    let (a, b) = (host(&nats, "a", extra).await, host(&nats, "b", extra).await);
    let numbers = fresh_numbers(300, 15);
    admin(&a)
        .await
        .suppress(suppress("dying-1", &numbers))
        .await
        .unwrap();
    // A compactor that took the lease, uploaded its version and died before moving the head.
    let dead = Tool::new(&nats, "dead", extra).await;
    let lease = dead
        .fleet
        .try_lease()
        .await
        .unwrap()
        .expect("the lease is free");
    let files = tempfile::tempdir().unwrap();
    write_set(
        files.path(),
        "acme-dnc.2.snap",
        SetKind::Block,
        &[INTERNAL],
        2,
        None,
        false,
    );
    objects::upload(
        &dead.buckets.objects,
        "acme/dnc",
        2,
        &files.path().join("acme-dnc.2.snap"),
        1 << 20,
    )
    .await
    .unwrap();
    std::mem::forget(lease);
    let taken_at = Instant::now();
    drop(dead);
    // Nothing half-published: no head; the others cannot compact while the lease lives.
    let tool = Tool::new(&nats, "operator", "").await;
    assert!(tool.head("acme/dnc").await.is_none());
    let refused = compact(&b).await.unwrap_err();
    assert!(refused.contains("another host holds"), "{refused}");
    let seq = a.handle.state.fleet.get().unwrap().applied();
    assert!(
        b.handle
            .state
            .fleet
            .get()
            .unwrap()
            .wait_applied(seq, Duration::from_secs(10))
            .await
    );
    // After the TTL, b takes the lease and finishes the job.
    loop {
        match compact(&b).await {
            Ok(()) => break,
            Err(error) => {
                assert!(error.contains("another host holds"), "{error}");
                assert!(
                    taken_at.elapsed() < Duration::from_secs(20),
                    "the lease never expired"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    assert!(
        taken_at.elapsed() >= Duration::from_secs(2),
        "taken before the TTL"
    );
    eprintln!("lease taken over after {:?}", taken_at.elapsed());
    let (head, _) = tool.head("acme/dnc").await.unwrap();
    assert_eq!(
        (head.version, head.published_by.as_str(), head.through_seq),
        (2, "b", seq)
    );
    wait_version(&a, "acme/dnc", 2).await;
    for daemon in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while overlay_len(daemon, "acme/dnc") != 0 {
            assert!(Instant::now() < deadline, "overlay not forgotten");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        all_blocked(daemon, &numbers).await;
        let state = &daemon.handle.state;
        let index = state
            .policy
            .sets
            .iter()
            .position(|d| d.id == "acme/dnc")
            .unwrap();
        let set = state.sets.load().slots[index].clone().unwrap();
        assert_eq!(set.set.len(), 1 + numbers.len() as u64);
    }
    // Mutations after the compaction still reach every host, on top of version 2.
    let later = fresh_numbers(400, 1);
    admin(&b)
        .await
        .suppress(suppress("after-1", &later))
        .await
        .unwrap();
    let mut client = a.client().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while check(&mut client, &e164(later[0]), "outbound")
        .await
        .verdict
        != Verdict::Block as i32
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for daemon in [a, b] {
        daemon.shutdown().await;
    }
}

/// A host whose file has the head's version number but other bytes (its own sample list, a
/// hand copy) would serve it as the fleet's version and drop the overlay entries the head
/// carries: it answers FLEET_LAG instead, until it is re-seeded; a host with the head's bytes
/// serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_serving_the_heads_version_with_other_bytes_fails_closed() {
    let Some(nats) = Nats::single().await else {
        return;
    };
    let diverged = host(&nats, "diverged", "").await;
    let version = version_of(&diverged, "us-dnc").unwrap();
    let tool = Tool::new(&nats, "tool", "").await;
    let files = tempfile::tempdir().unwrap();
    // The fleet's file of that very version, with other numbers than the host's own.
    let fleet_file = registry(files.path(), version, &[REGISTRY, CLEAN + 11]);
    tool.publish("us-dnc", &fleet_file).await.unwrap();
    let mut client = diverged.client().await;
    let started = Instant::now();
    loop {
        let answer = check(&mut client, &e164(CLEAN), "outbound").await;
        if reasons(&answer.reasons) == [Reason::FleetLag] {
            assert_eq!(answer.verdict, Verdict::Block as i32);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still {:?}",
            reasons(&answer.reasons)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nor does it compact: its fork would become the fleet's next version.
    let refused = compact(&diverged).await.unwrap_err();
    assert!(
        refused.contains("other bytes than the fleet's head"),
        "{refused}"
    );
    // A host that fetched the head's bytes is not affected.
    let fetched = empty_host(&nats, "fetched", "").await;
    wait_version(&fetched, "us-dnc", version).await;
    let mut client = fetched.client().await;
    let answer = check(&mut client, &e164(CLEAN + 11), "outbound").await;
    // (Its tenant sets were never published: NOT_READY beside the registry's answer.)
    let answered = reasons(&answer.reasons);
    assert!(answered.contains(&Reason::NationalRegistry), "{answered:?}");
    assert!(!answered.contains(&Reason::FleetLag), "{answered:?}");
    diverged.shutdown().await;
    fetched.shutdown().await;
}
