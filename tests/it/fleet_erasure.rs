//! Erasure COMPLETE means gone from the fleet (issue 16 §3): after COMPLETE, a raw read of
//! every message of the stream (opened with the fleet key and decoded), of every chunk of
//! the object store and of every file on every host finds no trace of the number; COMPLETE is
//! never claimed while a live host lags, and the purge never passes its applied sequence; a
//! host down during the purge comes back through the heads, and a new empty host joins, both
//! answering correctly. Real nats-server, daemons on port 0, no mocks.

use crate::admin::{admin_client as admin, suppress};
use crate::erasure::{erase, traces};
use crate::fleet::{fleet_config, host};
use crate::nats::{Nats, write_fleet_key};
use crate::server::{CLEAN, TestDaemon, check, e164, reasons, write_set};
use std::path::Path;
use std::time::{Duration, Instant};
use suppressd::engine::snapshot::SetKind;
use suppressd::fleet::hosts::HostRecord;
use suppressd::proto::Reason;
use suppressd::proto::admin::{ErasureReceipt, ErasureState, GetErasureRequest};
use suppressd::store::{Mutation, Op};

const ERASED_NUMBER: u64 = CLEAN + 7001;
const KEPT_NUMBER: u64 = CLEAN + 7002;
const LATER_NUMBER: u64 = CLEAN + 7003;

async fn receipt(daemon: &TestDaemon, id: &str) -> ErasureReceipt {
    admin(daemon)
        .await
        .get_erasure(GetErasureRequest {
            receipt_id: id.into(),
            tenant: "acme".into(),
        })
        .await
        .unwrap()
        .into_inner()
}

fn is_complete(receipt: &ErasureReceipt) -> bool {
    receipt.state == ErasureState::Complete as i32
}

/// Waits until `daemon` answers COMPLETE for `id`.
async fn wait_complete(daemon: &TestDaemon, id: &str, within: Duration) -> ErasureReceipt {
    let started = Instant::now();
    loop {
        let answer = receipt(daemon, id).await;
        if is_complete(&answer) {
            return answer;
        }
        assert!(
            started.elapsed() < within,
            "never COMPLETE: {:?}",
            answer.fleet.map(|f| f.pending)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A compaction on `daemon`, retried while another host holds the lease for its round.
async fn compact(daemon: &TestDaemon) {
    let started = Instant::now();
    loop {
        let (state, mutator) = (daemon.handle.state.clone(), daemon.handle.mutator.clone());
        let result = tokio::task::spawn_blocking(move || mutator.compact(&state).map(|_| ()))
            .await
            .unwrap();
        match result {
            Ok(()) => return,
            Err(error) => assert!(
                suppressd::server::mutations::quiet_compaction_error(&error)
                    && started.elapsed() < Duration::from_secs(30),
                "compaction: {error}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_applied_everywhere(from: &TestDaemon, hosts: &[&TestDaemon]) {
    let seq = from.handle.state.fleet.get().unwrap().applied();
    for daemon in hosts {
        assert!(
            daemon
                .handle
                .state
                .fleet
                .get()
                .unwrap()
                .wait_applied(seq, Duration::from_secs(20))
                .await
        );
    }
}

async fn reasons_of(daemon: &TestDaemon, number: u64) -> Vec<Reason> {
    let mut client = daemon.client().await;
    reasons(&check(&mut client, &e164(number), "outbound").await.reasons)
}

/// Waits until `number` gets `reason` (among others) on `daemon`.
async fn wait_reason(daemon: &TestDaemon, number: u64, reason: Reason) {
    let started = Instant::now();
    loop {
        let found = reasons_of(daemon, number).await;
        if found.contains(&reason) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{reason:?} never answered: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Suppresses both numbers, compacts (so a published version holds them in the object store
/// and on every host), then erases one; returns the receipt id and the erasure's sequence.
async fn suppress_publish_erase(a: &TestDaemon, hosts: &[&TestDaemon]) -> (String, u64) {
    let mut admin_a = admin(a).await;
    admin_a
        .suppress(suppress("keep-1", &[ERASED_NUMBER, KEPT_NUMBER]))
        .await
        .unwrap();
    wait_applied_everywhere(a, hosts).await;
    compact(a).await;
    for daemon in hosts {
        daemon.wait_for_version("acme/dnc", 2).await;
    }
    let receipt = erase_the_number(&mut admin_a).await;
    assert!(receipt.stream_sequence > 0);
    wait_applied_everywhere(a, hosts).await;
    (receipt.receipt_id, receipt.stream_sequence)
}

/// Erases ERASED_NUMBER for acme (request id `erase-1`) through `admin`: its receipt.
async fn erase_the_number(
    admin: &mut suppressd::proto::admin::admin_client::AdminClient<tonic::transport::Channel>,
) -> ErasureReceipt {
    admin
        .erase(erase("acme", "erase-1", ERASED_NUMBER))
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap()
}

/// Every message of the fleet stream, opened with the fleet key and decoded: none names
/// `number` (plain keys, and its bytes anywhere in the opened payload).
async fn stream_traces(daemon: &TestDaemon, number: u64) -> Vec<String> {
    let fleet = daemon.handle.mutator.fleet().unwrap();
    let mut stream = fleet
        .jetstream
        .get_stream(&fleet.settings.stream)
        .await
        .unwrap();
    let info = stream.info().await.unwrap().state.clone();
    let mut found = Vec::new();
    for seq in info.first_sequence..=info.last_sequence {
        let Ok(message) = stream.get_raw_message(seq).await else {
            continue;
        };
        let plain = fleet
            .sealer
            .open(message.subject.as_str(), &message.payload)
            .unwrap();
        let mutation = Mutation::decode(&plain).unwrap();
        let named = mutation.ops.iter().any(|op| match *op {
            Op::Add { key, .. } | Op::Remove { key, .. } => key == number,
        });
        if named || holds_bytes(&plain, number) {
            found.push(format!("stream sequence {seq} holds it"));
        }
    }
    found
}

fn holds_bytes(bytes: &[u8], number: u64) -> bool {
    let text = number.to_string();
    [
        text.as_bytes(),
        &number.to_le_bytes()[..],
        &number.to_be_bytes()[..],
    ]
    .iter()
    .any(|needle| bytes.windows(needle.len()).any(|w| w == *needle))
}

/// Every chunk still in the object store's stream, reassembled per object (in stream order)
/// into files under `into`, for the engine's decoder and the byte scan (`erasure::traces`).
async fn object_chunks(daemon: &TestDaemon, into: &Path) -> usize {
    let fleet = daemon.handle.mutator.fleet().unwrap();
    let bucket = suppressd::fleet::heads::objects_bucket(&fleet.settings.stream);
    let mut stream = fleet
        .jetstream
        .get_stream(format!("OBJ_{bucket}"))
        .await
        .unwrap();
    let info = stream.info().await.unwrap().state.clone();
    let mut objects: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
    for seq in info.first_sequence..=info.last_sequence {
        let Ok(message) = stream.get_raw_message(seq).await else {
            continue;
        };
        objects
            .entry(message.subject.to_string())
            .or_default()
            .extend_from_slice(&message.payload);
    }
    let mut chunked = 0;
    for (index, (subject, bytes)) in objects.iter().enumerate() {
        // Chunks (`$O.<bucket>.C.<id>`) make snapshot files; metadata is JSON, byte-scanned.
        let chunks = subject.contains(".C.");
        let name = format!("object-{index}.{}", if chunks { "snap" } else { "json" });
        std::fs::write(into.join(name), bytes).unwrap();
        chunked += usize::from(chunks);
    }
    chunked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_complete_leaves_no_trace_in_the_stream_the_object_store_or_any_host() {
    let Some(nats) = Nats::single().await else {
        return;
    };
    erasure_complete_leaves_no_trace(&nats, "").await;
}

/// The same on a 3-node JetStream cluster with every stream, bucket and object store at R3:
/// the purge and the object deletions reach the replicas a client reads from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_three_node_cluster_an_erasure_complete_leaves_no_trace() {
    let Some(nats) = Nats::cluster_of(3).await else {
        return;
    };
    erasure_complete_leaves_no_trace(&nats, "replicas = 3\n").await;
}

/// Three hosts (`extra`: more fleet settings): suppress, publish, erase; then COMPLETE on
/// every host with one proof, raw reads of the stream, the object store's chunks and every
/// host's files, `fleet status`, and a hand-made tenant file refused.
async fn erasure_complete_leaves_no_trace(nats: &Nats, extra: &str) {
    let a = host(nats, "a", extra).await;
    let b = host(nats, "b", extra).await;
    let c = host(nats, "c", extra).await;
    let hosts = [&a, &b, &c];
    let (receipt_id, seq) = suppress_publish_erase(&a, &hosts).await;
    // Before any compaction carries it: the stream holds it, so PENDING everywhere.
    for daemon in hosts {
        let answer = receipt(daemon, &receipt_id).await;
        assert!(!is_complete(&answer));
        assert!(answer.fleet.unwrap().pending.contains("stream still holds"));
    }
    compact(&a).await;
    let started = Instant::now();
    let proof = wait_complete(&b, &receipt_id, Duration::from_secs(90)).await;
    eprintln!(
        "erase -> COMPLETE fleet-wide in {:.1} s after the compaction",
        started.elapsed().as_secs_f64()
    );
    // Every host gives the same answer, with the same proof.
    let fleet = proof.fleet.clone().unwrap();
    assert!(fleet.stream_first_sequence > seq);
    let mut ids: Vec<&str> = fleet.hosts.iter().map(|h| h.host_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["a", "b", "c"]);
    for host in &fleet.hosts {
        assert!(host.applied_sequence >= seq && host.clean_through >= seq);
    }
    assert!(fleet.heads.iter().all(|h| h.through_seq >= seq));
    for daemon in hosts {
        assert!(is_complete(&receipt(daemon, &receipt_id).await));
    }
    // The raw reads.
    let stream = stream_traces(&a, ERASED_NUMBER).await;
    assert!(stream.is_empty(), "{stream:?}");
    let chunks = tempfile::tempdir().unwrap();
    let objects = object_chunks(&a, chunks.path()).await;
    assert!(objects > 0, "the object store holds the versions in force");
    let stored = traces(chunks.path(), ERASED_NUMBER);
    assert!(stored.is_empty(), "{stored:?}");
    // The kept number is still found by the same scan (it would find the erased one).
    assert!(!traces(chunks.path(), KEPT_NUMBER).is_empty());
    for daemon in hosts {
        let found = traces(daemon.dir.path(), ERASED_NUMBER);
        assert!(found.is_empty(), "{found:?}");
        assert!(
            reasons_of(daemon, ERASED_NUMBER)
                .await
                .contains(&Reason::Erased)
        );
        assert!(
            reasons_of(daemon, KEPT_NUMBER)
                .await
                .contains(&Reason::InternalDnc)
        );
    }
    // The operator's view of the same fleet (hosts report their pending count with their
    // next heartbeat after a round).
    let started = Instant::now();
    let status = loop {
        let status = fleet_status(nats, &a).await;
        if status.contains("erasures pending fleet-wide: 0") {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{status}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("{status}");
    for expected in [
        format!(
            "last purge: through sequence {}",
            fleet.stream_first_sequence - 1
        ),
        "hosts (3 live):".to_owned(),
        "erasures pending fleet-wide: 0".to_owned(),
        "older object versions kept: none".to_owned(),
    ] {
        assert!(status.contains(&expected), "{expected} in {status}");
    }
    for id in ["a", "b", "c"] {
        assert!(status.contains(&format!("\n  {id}  heartbeat")), "{status}");
    }
    // A tenant set's file published by hand would drop the fleet's mutations: refused.
    let files = tempfile::tempdir().unwrap();
    write_set(
        files.path(),
        "acme-dnc.9.snap",
        SetKind::Block,
        &[KEPT_NUMBER],
        9,
        None,
        false,
    );
    let refused = fleet_command(
        nats,
        &a,
        &["publish", "--set", "acme/dnc"],
        &files.path().join("acme-dnc.9.snap"),
    )
    .await;
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("carries the fleet's mutations"),
        "{refused:?}"
    );
    for daemon in [a, b, c] {
        daemon.shutdown().await;
    }
}

/// `suppressd fleet ARGS... --config C [FILE]` with a config like the daemons'.
async fn fleet_command(
    nats: &Nats,
    daemon: &TestDaemon,
    args: &[&str],
    file: &Path,
) -> std::process::Output {
    let config = daemon.dir.path().join("operator.toml");
    std::fs::write(&config, fleet_config(nats, "operator", "")).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_suppressd"));
    command.arg("fleet").args(args).arg("--config").arg(&config);
    if !file.as_os_str().is_empty() {
        command.arg(file);
    }
    tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap()
}

/// `suppressd fleet status` with a config like the daemons'.
async fn fleet_status(nats: &Nats, daemon: &TestDaemon) -> String {
    let output = fleet_command(nats, daemon, &["status"], Path::new("")).await;
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Keeps a host register entry for a host that is alive but stuck at `applied`, reporting
/// every head's version as served (so only its applied sequence holds the purge back).
async fn stuck_host(
    daemon: &TestDaemon,
    applied: u64,
) -> (
    tokio::task::JoinHandle<()>,
    async_nats::jetstream::kv::Store,
) {
    let fleet = daemon.handle.mutator.fleet().unwrap().clone();
    let store = fleet
        .jetstream
        .get_key_value(fleet.settings.hosts_bucket.clone())
        .await
        .unwrap();
    let writer = store.clone();
    let task = tokio::spawn(async move {
        loop {
            let versions = match fleet.view().await {
                Ok(view) => view
                    .heads
                    .values()
                    .map(|h| (h.set.clone(), h.version))
                    .collect(),
                Err(_) => Default::default(),
            };
            let record = HostRecord {
                format: 1,
                host_id: "stuck".into(),
                instance: "00000000000000aa".into(),
                applied,
                versions,
                heartbeat_unix_ms: now_ms(),
                clean_through: applied,
                ..HostRecord::default()
            };
            let _ = writer
                .put("stuck", serde_json::to_vec(&record).unwrap().into())
                .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    (task, store)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_is_never_claimed_while_a_live_host_lags_and_the_purge_waits_for_it() {
    let Some(nats) = Nats::single().await else {
        return;
    };
    let a = host(&nats, "a", "").await;
    let b = host(&nats, "b", "").await;
    let hosts = [&a, &b];
    let before = a.handle.state.fleet.get().unwrap().applied();
    let (task, store) = stuck_host(&a, before).await;
    let (receipt_id, seq) = suppress_publish_erase(&a, &hosts).await;
    compact(&a).await;
    // Long enough for every round to have purged, had the stuck host not been there.
    tokio::time::sleep(Duration::from_secs(15)).await;
    for daemon in hosts {
        let answer = receipt(daemon, &receipt_id).await;
        assert!(!is_complete(&answer), "COMPLETE while a live host lags");
        let fleet = answer.fleet.unwrap();
        assert!(
            fleet.stream_first_sequence <= before + 1,
            "purged to {} past the stuck host's applied {before}",
            fleet.stream_first_sequence - 1
        );
        assert!(fleet.hosts.iter().any(|h| h.host_id == "stuck"));
    }
    assert!(!stream_traces(&a, ERASED_NUMBER).await.is_empty());
    // The stuck host goes away (its entry expires; here, removed): the fleet completes.
    task.abort();
    let _ = task.await;
    store.delete("stuck").await.unwrap();
    let answer = wait_complete(&a, &receipt_id, Duration::from_secs(60)).await;
    assert!(answer.fleet.unwrap().stream_first_sequence > seq);
    assert!(stream_traces(&a, ERASED_NUMBER).await.is_empty());
    for daemon in [a, b] {
        daemon.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_down_during_the_purge_and_a_new_empty_host_come_back_through_the_heads() {
    let Some(nats) = Nats::single().await else {
        return;
    };
    let a = host(&nats, "a", "").await;
    let b = host(&nats, "b", "").await;
    let c = host(&nats, "c", "").await;
    let mut admin_a = admin(&a).await;
    admin_a
        .suppress(suppress("keep-1", &[ERASED_NUMBER, KEPT_NUMBER]))
        .await
        .unwrap();
    wait_applied_everywhere(&a, &[&b, &c]).await;
    // c goes down holding the number in its journal; the erasure completes without it.
    let c_dir = c.stop().await;
    let receipt = erase_the_number(&mut admin_a).await;
    compact(&a).await;
    let proof = wait_complete(&a, &receipt.receipt_id, Duration::from_secs(90)).await;
    assert!(proof.fleet.unwrap().stream_first_sequence > receipt.stream_sequence);
    // c comes back: it cannot replay what was purged, so it takes the heads first.
    let c = TestDaemon::start_in(c_dir, &fleet_config(&nats, "c", "")).await;
    wait_reason(&c, ERASED_NUMBER, Reason::Erased).await;
    assert!(
        reasons_of(&c, KEPT_NUMBER)
            .await
            .contains(&Reason::InternalDnc)
    );
    assert!(
        !reasons_of(&c, ERASED_NUMBER)
            .await
            .contains(&Reason::InternalDnc)
    );
    // A new empty host joins after the purge.
    let dir = tempfile::tempdir().unwrap();
    write_fleet_key(dir.path());
    let d = TestDaemon::start_in(dir, &fleet_config(&nats, "d", "")).await;
    wait_reason(&d, ERASED_NUMBER, Reason::Erased).await;
    wait_reason(&d, KEPT_NUMBER, Reason::InternalDnc).await;
    // Both follow the stream from its first message on.
    admin_a
        .suppress(suppress("later-1", &[LATER_NUMBER]))
        .await
        .unwrap();
    for daemon in [&c, &d] {
        wait_reason(daemon, LATER_NUMBER, Reason::InternalDnc).await;
        assert!(
            !reasons_of(daemon, ERASED_NUMBER)
                .await
                .contains(&Reason::InternalDnc)
        );
    }
    // Once c has cleaned its own files, the fleet (c and d included) is COMPLETE again, and
    // c's directory holds no trace.
    let proof = wait_complete(&d, &receipt.receipt_id, Duration::from_secs(60)).await;
    let ids: Vec<String> = proof
        .fleet
        .unwrap()
        .hosts
        .into_iter()
        .map(|h| h.host_id)
        .collect();
    assert!(
        ids.contains(&"c".to_owned()) && ids.contains(&"d".to_owned()),
        "{ids:?}"
    );
    let found = traces(c.dir.path(), ERASED_NUMBER);
    assert!(found.is_empty(), "{found:?}");
    for daemon in [a, b, c, d] {
        daemon.shutdown().await;
    }
}
