//! The admin plane end to end: mutations in force at once, durable across restarts, idempotent,
//! erasure receipts that complete, and no erased number left in any file.

use crate::server::{
    CLEAN, CONFIG, CONSENTED, INTERNAL, REGISTRY, TestDaemon, check, e164, reasons, write_all_sets,
};
use std::time::Duration;
use suppressd::engine::date::Day;
use suppressd::proto::Reason;
use suppressd::proto::Verdict;
use suppressd::proto::admin::admin_client::AdminClient;
use suppressd::proto::admin::{
    ApplyChangesRequest, CompactRequest, ConsentRequest, EraseRequest, ErasureState,
    GetErasureRequest, SuppressRequest,
};
use tonic::transport::Channel;

fn admin_config() -> String {
    CONFIG.replace(
        "[server]\n",
        "[server]\nadmin_listen = \"127.0.0.1:0\"\ncompact_max_age_seconds = 3600\n",
    )
}

async fn start(dir: tempfile::TempDir) -> TestDaemon {
    TestDaemon::start_in(dir, &admin_config()).await
}

async fn fresh() -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    write_all_sets(&dir.path().join("data"), Day(Day::today().0 - 1));
    start(dir).await
}

pub(crate) async fn admin_client(daemon: &TestDaemon) -> AdminClient<Channel> {
    AdminClient::connect(format!("http://{}", daemon.handle.admin_addr.unwrap()))
        .await
        .unwrap()
}

pub(crate) fn suppress(request_id: &str, numbers: &[u64]) -> SuppressRequest {
    SuppressRequest {
        tenant: "acme".into(),
        numbers: numbers.iter().map(|&n| e164(n)).collect(),
        request_id: request_id.into(),
        reason: "asked on the phone".into(),
        ..SuppressRequest::default()
    }
}

#[tokio::test]
async fn opt_out_is_in_force_when_acknowledged_and_survives_restart() {
    let daemon = fresh().await;
    let (mut admin, mut client) = (admin_client(&daemon).await, daemon.client().await);
    assert_eq!(
        check(&mut client, &e164(CLEAN), "outbound").await.verdict,
        Verdict::Allow as i32
    );
    let response = admin
        .suppress(suppress("opt-1", &[CLEAN]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((response.applied, response.duplicate), (1, false));
    // The very next check, and a batch, see it.
    let after = check(&mut client, &e164(CLEAN), "outbound").await;
    assert_eq!(reasons(&after.reasons), [Reason::InternalDnc]);
    // A repeat of the request changes nothing and returns the first result.
    let repeat = admin
        .suppress(suppress("opt-1", &[CLEAN]))
        .await
        .unwrap()
        .into_inner();
    assert!(repeat.duplicate);
    assert_eq!(repeat.sequence, response.sequence);
    // The same id for another number is refused, and changes nothing either.
    let reused = admin
        .suppress(suppress("opt-1", &[CONSENTED]))
        .await
        .unwrap_err();
    assert_eq!(reused.code(), tonic::Code::AlreadyExists, "{reused:?}");
    assert_eq!(
        check(&mut client, &e164(CONSENTED), "outbound")
            .await
            .verdict,
        Verdict::Allow as i32
    );
    // Restart on the same files: the journal puts it back in force.
    let dir = daemon.stop().await;
    let daemon = start(dir).await;
    let mut client = daemon.client().await;
    assert_eq!(
        reasons(&check(&mut client, &e164(CLEAN), "outbound").await.reasons),
        [Reason::InternalDnc]
    );
    let repeat = admin_client(&daemon)
        .await
        .suppress(suppress("opt-1", &[CLEAN]))
        .await
        .unwrap()
        .into_inner();
    assert!(repeat.duplicate, "idempotency lost across restart");
    // Unsuppress lifts an internal opt-out (not a registry entry).
    admin_client(&daemon)
        .await
        .unsuppress(suppress("undo-1", &[CLEAN, INTERNAL]))
        .await
        .unwrap();
    assert_eq!(
        check(&mut client, &e164(CLEAN), "outbound").await.verdict,
        Verdict::Allow as i32
    );
    assert_eq!(
        check(&mut client, &e164(INTERNAL), "outbound")
            .await
            .verdict,
        Verdict::Allow as i32
    );
    daemon.shutdown().await;
}

#[tokio::test]
async fn consent_grant_with_expiry_and_revoke() {
    let daemon = fresh().await;
    let (mut admin, mut client) = (admin_client(&daemon).await, daemon.client().await);
    assert_eq!(
        reasons(&check(&mut client, &e164(CLEAN), "consented").await.reasons),
        [Reason::NoConsent]
    );
    let tomorrow = Day(Day::today().0 + 1).to_string();
    admin
        .grant_consent(ConsentRequest {
            tenant: "acme".into(),
            numbers: vec![e164(CLEAN)],
            expires: tomorrow,
            request_id: "grant-1".into(),
            ..ConsentRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(
        check(&mut client, &e164(CLEAN), "consented").await.verdict,
        Verdict::Allow as i32
    );
    // Expired consent counts as none.
    admin
        .grant_consent(ConsentRequest {
            tenant: "acme".into(),
            numbers: vec![e164(CLEAN)],
            expires: Day::today().to_string(),
            request_id: "grant-2".into(),
            ..ConsentRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(
        reasons(&check(&mut client, &e164(CLEAN), "consented").await.reasons),
        [Reason::NoConsent]
    );
    admin
        .revoke_consent(ConsentRequest {
            tenant: "acme".into(),
            numbers: vec![e164(CONSENTED)],
            request_id: "revoke-1".into(),
            ..ConsentRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(
        reasons(
            &check(&mut client, &e164(CONSENTED), "consented")
                .await
                .reasons
        ),
        [Reason::NoConsent]
    );
    daemon.shutdown().await;
}

/// Every file under `dir`, recursively.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Whether any file holds `number` in the clear: as digits or as its 8-byte key.
fn files_holding(dir: &std::path::Path, number: u64) -> Vec<std::path::PathBuf> {
    let needles = [
        number.to_string().into_bytes(),
        number.to_le_bytes().to_vec(),
    ];
    files(dir)
        .into_iter()
        .filter(|path| {
            let bytes = std::fs::read(path).unwrap();
            needles
                .iter()
                .any(|needle| bytes.windows(needle.len()).any(|w| w == needle.as_slice()))
        })
        .collect()
}

#[tokio::test]
async fn erasure_is_in_force_then_complete_with_no_number_left() {
    let daemon = fresh().await;
    let (mut admin, mut client) = (admin_client(&daemon).await, daemon.client().await);
    // CONSENTED is in the consent snapshot version 1: erasing must remove it everywhere.
    assert_eq!(
        check(&mut client, &e164(CONSENTED), "consented")
            .await
            .verdict,
        Verdict::Allow as i32
    );
    let erased = admin
        .erase(EraseRequest {
            tenant: "acme".into(),
            number: e164(CONSENTED),
            request_id: "erase-1".into(),
            ..EraseRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let receipt = erased.receipt.unwrap();
    assert_eq!(receipt.state, ErasureState::Pending as i32);
    assert_eq!(receipt.removed_from, ["acme/consent", "acme/dnc"]);
    assert_eq!(receipt.added_to, ["acme/erased"]);
    assert_eq!(receipt.retained_in, ["us-dnc"]);
    assert!(receipt.in_force_at_unix_ms >= receipt.requested_at_unix_ms);
    // The "consented" campaign does not list the erased set: it blocks there all the same.
    let now = check(&mut client, &e164(CONSENTED), "consented").await;
    assert_eq!(reasons(&now.reasons), [Reason::Erased, Reason::NoConsent]);
    let outbound = check(&mut client, &e164(CONSENTED), "outbound").await;
    assert_eq!(reasons(&outbound.reasons), [Reason::Erased]);
    assert!(
        !files_holding(&daemon.data_dir(), CONSENTED).is_empty(),
        "test cannot see the number before compaction"
    );
    let compacted = admin.compact(CompactRequest {}).await.unwrap().into_inner();
    assert_eq!(compacted.erasures_completed, 1);
    let done = admin
        .get_erasure(GetErasureRequest {
            receipt_id: receipt.receipt_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.state, ErasureState::Complete as i32);
    assert!(done.completed_at_unix_ms >= receipt.in_force_at_unix_ms);
    assert_eq!(
        files_holding(&daemon.data_dir(), CONSENTED),
        Vec::<std::path::PathBuf>::new()
    );
    // Still blocked after compaction and after a restart, from the snapshots alone.
    assert_eq!(
        reasons(
            &check(&mut client, &e164(CONSENTED), "outbound")
                .await
                .reasons
        ),
        [Reason::Erased]
    );
    let dir = daemon.stop().await;
    let daemon = start(dir).await;
    let mut client = daemon.client().await;
    assert_eq!(
        reasons(
            &check(&mut client, &e164(CONSENTED), "outbound")
                .await
                .reasons
        ),
        [Reason::Erased]
    );
    let mut admin = admin_client(&daemon).await;
    let again = admin
        .get_erasure(GetErasureRequest {
            receipt_id: receipt.receipt_id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.state, ErasureState::Complete as i32);
    let repeat = admin
        .erase(EraseRequest {
            tenant: "acme".into(),
            number: e164(CONSENTED),
            request_id: "erase-1".into(),
            ..EraseRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(repeat.duplicate);
    daemon.shutdown().await;
}

#[tokio::test]
async fn compaction_keeps_checks_flowing_and_mutations_in_force() {
    let daemon = fresh().await;
    let mut admin = admin_client(&daemon).await;
    let addr = daemon.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let load = tokio::spawn(async move {
        let mut client = suppressd::proto::suppression_client::SuppressionClient::connect(format!(
            "http://{addr}"
        ))
        .await
        .unwrap();
        let (mut calls, mut failures) = (0, 0);
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            let request = suppressd::proto::CheckBatchRequest {
                e164: vec![REGISTRY, CLEAN],
                ..Default::default()
            };
            match client.check_batch(request).await {
                Ok(response) => assert_eq!(response.into_inner().verdicts[0], Verdict::Block as u8),
                Err(_) => failures += 1,
            }
            calls += 1;
        }
        (calls, failures)
    });
    for round in 0..5u64 {
        let numbers: Vec<u64> = (0..200)
            .map(|i| 13_125_550_000 + round * 1000 + i)
            .collect();
        admin
            .suppress(suppress(&format!("bulk-{round}"), &numbers))
            .await
            .unwrap();
        let compacted = admin.compact(CompactRequest {}).await.unwrap().into_inner();
        assert!(!compacted.written.is_empty());
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (calls, failures) = load.await.unwrap();
    assert_eq!(failures, 0);
    assert!(calls > 10);
    let mut client = daemon.client().await;
    for round in 0..5u64 {
        let response = check(
            &mut client,
            &e164(13_125_550_000 + round * 1000 + 199),
            "outbound",
        )
        .await;
        assert_eq!(reasons(&response.reasons), [Reason::InternalDnc]);
    }
    // Old journal segments are gone; the overlay is empty.
    let status = admin
        .status(suppressd::proto::admin::AdminStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        status.overlays.iter().all(|o| o.entries == 0),
        "{:?}",
        status.overlays
    );
    assert!(status.journal_segments <= 2, "{}", status.journal_segments);
    daemon.shutdown().await;
}

#[tokio::test]
async fn registry_change_list_on_a_running_daemon() {
    let daemon = fresh().await;
    let (mut admin, mut client) = (admin_client(&daemon).await, daemon.client().await);
    admin
        .apply_changes(ApplyChangesRequest {
            set: "us-dnc".into(),
            additions: vec![CLEAN],
            deletions: vec![REGISTRY],
            request_id: "changes-2026-11-28".into(),
            source_date: Day::today().to_string(),
        })
        .await
        .unwrap();
    assert_eq!(
        reasons(&check(&mut client, &e164(CLEAN), "outbound").await.reasons),
        [Reason::NationalRegistry]
    );
    assert_eq!(
        check(&mut client, &e164(REGISTRY), "outbound")
            .await
            .verdict,
        Verdict::Allow as i32
    );
    admin.compact(CompactRequest {}).await.unwrap();
    assert_eq!(
        reasons(&check(&mut client, &e164(CLEAN), "outbound").await.reasons),
        [Reason::NationalRegistry]
    );
    assert_eq!(
        check(&mut client, &e164(REGISTRY), "outbound")
            .await
            .verdict,
        Verdict::Allow as i32
    );
    daemon.shutdown().await;
}

#[tokio::test]
async fn bad_requests_are_refused_clearly() {
    let daemon = fresh().await;
    let mut admin = admin_client(&daemon).await;
    let missing_id = admin.suppress(suppress("", &[CLEAN])).await.unwrap_err();
    assert_eq!(missing_id.code(), tonic::Code::InvalidArgument);
    let mut other = suppress("x-1", &[CLEAN]);
    other.tenant = "nobody".into();
    assert_eq!(
        admin.suppress(other).await.unwrap_err().code(),
        tonic::Code::NotFound
    );
    let mut mixed = suppress("x-2", &[CLEAN]);
    mixed.numbers.push("garbage".into());
    let response = admin.suppress(mixed).await.unwrap().into_inner();
    assert_eq!(response.applied, 1);
    assert_eq!(response.invalid.len(), 1);
    assert!(!response.invalid[0].error.contains("garbage") || response.invalid[0].error.len() < 80);
    daemon.shutdown().await;
}

#[tokio::test]
async fn torn_journal_tail_is_dropped_and_damage_refuses_start() {
    let daemon = fresh().await;
    let mut admin = admin_client(&daemon).await;
    admin.suppress(suppress("a", &[CLEAN])).await.unwrap();
    admin.suppress(suppress("b", &[CONSENTED])).await.unwrap();
    let dir = daemon.stop().await;
    let journal_dir = dir.path().join("data/journal");
    let segment = std::fs::read_dir(&journal_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let full = std::fs::read(&segment).unwrap();
    // Cut the last record in half: a crash mid-write. The first mutation survives.
    std::fs::write(&segment, &full[..full.len() - 5]).unwrap();
    let daemon = start(dir).await;
    let mut client = daemon.client().await;
    assert_eq!(
        reasons(&check(&mut client, &e164(CLEAN), "outbound").await.reasons),
        [Reason::InternalDnc]
    );
    assert_eq!(
        check(&mut client, &e164(CONSENTED), "outbound")
            .await
            .verdict,
        Verdict::Allow as i32
    );
    let dir = daemon.stop().await;
    // Damage inside the first record, with data after it: start-up refuses, naming file and offset.
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[40] ^= 0xff;
    bytes.extend_from_slice(&[1u8; 64]);
    std::fs::write(&segment, &bytes).unwrap();
    let message = refused_start(dir.path(), "a damaged journal").await;
    assert!(
        message.contains(&segment.display().to_string()) && message.contains("offset"),
        "{message}"
    );
}

#[tokio::test]
async fn audit_log_records_who_what_when_without_numbers() {
    let daemon = fresh().await;
    let mut admin = admin_client(&daemon).await;
    admin.suppress(suppress("audit-1", &[CLEAN])).await.unwrap();
    admin
        .erase(EraseRequest {
            tenant: "acme".into(),
            number: e164(CONSENTED),
            request_id: "audit-2".into(),
            ..EraseRequest::default()
        })
        .await
        .unwrap();
    admin.compact(CompactRequest {}).await.unwrap();
    let audit_dir = daemon.data_dir().join("audit");
    let mut entries = Vec::new();
    for path in files(&audit_dir) {
        let bytes = std::fs::read(&path).unwrap();
        let mut records = Vec::new();
        suppressd::store::scan_segment(&bytes, &mut records);
        for record in records {
            entries.push(serde_json::from_slice::<serde_json::Value>(&record.payload).unwrap());
        }
    }
    let ids: Vec<&str> = entries
        .iter()
        .map(|e| e["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["audit-1", "audit-2"], "{entries:?}");
    assert_eq!(entries[0]["action"], "suppress");
    assert_eq!(entries[0]["actor"], "anonymous");
    assert_eq!(entries[1]["action"], "erase");
    assert!(
        entries[1]["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["set"] == "acme/erased" && c["fingerprint"].is_string())
    );
    // Kept across compaction, and never a number in the clear.
    assert_eq!(
        files_holding(&audit_dir, CLEAN),
        Vec::<std::path::PathBuf>::new()
    );
    assert_eq!(
        files_holding(&audit_dir, CONSENTED),
        Vec::<std::path::PathBuf>::new()
    );
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_repeats_of_one_request_id_journal_it_once() {
    let daemon = fresh().await;
    let admin = admin_client(&daemon).await;
    let before = daemon.handle.mutator.journal().stats().last_seq;
    // Many calls of one request at once: one is journalled, the others wait for it and return
    // its result.
    let calls: Vec<_> = (0..32u64)
        .map(|_| {
            let mut admin = admin.clone();
            tokio::spawn(async move {
                admin
                    .suppress(suppress("same-id", &[CLEAN]))
                    .await
                    .unwrap()
                    .into_inner()
            })
        })
        .collect();
    let mut responses = Vec::new();
    for call in calls {
        responses.push(call.await.unwrap());
    }
    assert_eq!(responses.iter().filter(|r| !r.duplicate).count(), 1);
    assert!(
        responses
            .iter()
            .all(|r| r.sequence == responses[0].sequence && r.applied == 1)
    );
    assert_eq!(
        daemon.handle.mutator.journal().stats().last_seq,
        before + 1,
        "journalled more than once"
    );
    // Still one after a restart (the ledger and journal know the id).
    let sequence = responses[0].sequence;
    let daemon = start(daemon.stop().await).await;
    let mut admin = admin_client(&daemon).await;
    let again = admin
        .suppress(suppress("same-id", &[CLEAN]))
        .await
        .unwrap()
        .into_inner();
    assert!(again.duplicate);
    assert_eq!(again.sequence, sequence);
    let other = admin
        .suppress(suppress("same-id", &[INTERNAL]))
        .await
        .unwrap_err();
    assert_eq!(other.code(), tonic::Code::AlreadyExists);
    daemon.shutdown().await;
}

#[tokio::test]
async fn request_ids_outlive_compaction_in_the_append_only_ledger() {
    let daemon = fresh().await;
    let mut admin = admin_client(&daemon).await;
    let first = admin
        .suppress(suppress("ledger-1", &[CLEAN]))
        .await
        .unwrap()
        .into_inner();
    admin.compact(CompactRequest {}).await.unwrap();
    let ledger = daemon.handle.mutator.ledger_files();
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    let size = std::fs::metadata(&ledger[0]).unwrap().len();
    admin
        .suppress(suppress("ledger-2", &[CONSENTED]))
        .await
        .unwrap();
    admin.compact(CompactRequest {}).await.unwrap();
    // The second compaction appended one record; it did not rewrite the first.
    let grown = std::fs::metadata(&ledger[0]).unwrap().len();
    assert!(grown > size && grown < 2 * size, "{size} -> {grown}");
    // The journal segments holding both are gone; the ids are still known after a restart.
    let daemon = start(daemon.stop().await).await;
    let mut admin = admin_client(&daemon).await;
    let repeat = admin
        .suppress(suppress("ledger-1", &[CLEAN]))
        .await
        .unwrap()
        .into_inner();
    assert!(repeat.duplicate);
    assert_eq!(repeat.sequence, first.sequence);
    // Damage inside the ledger (records after it) refuses start-up, naming file and offset.
    let file = daemon.handle.mutator.ledger_files()[0].clone();
    let dir = daemon.stop().await;
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[24 + 12] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let message = refused_start(dir.path(), "a damaged ledger").await;
    assert!(
        message.contains(&file.display().to_string()) && message.contains("offset 24"),
        "{message}"
    );
}

/// Starts a daemon on `dir` with the admin config, expecting start-up to be refused; returns
/// the error message.
async fn refused_start(dir: &std::path::Path, what: &str) -> String {
    let config = suppressd::config::Config::parse(&admin_config(), "test.toml", dir).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    suppressd::server::start(config, listener, std::future::pending())
        .await
        .err()
        .unwrap_or_else(|| panic!("started on {what}"))
        .to_string()
}

#[tokio::test]
async fn compaction_keeps_a_line_table_set_a_line_table() {
    use suppressd::engine::fuse::FilterWidth;
    use suppressd::engine::number::Number;
    use suppressd::engine::set::{Layout, LayoutChoice, SetBuilder, SetSpec, SuppressionSet};
    use suppressd::engine::snapshot::SetKind;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_all_sets(&data, Day(Day::today().0 - 1));
    // The internal list, rebuilt as a line table (dense numbers around INTERNAL).
    let spec = SetSpec {
        name: "acme-dnc".into(),
        kind: SetKind::Block,
        filter: FilterWidth::Fuse8,
        source: "test".into(),
        source_date: None,
        version: 2,
        build_time: 0,
    };
    let mut builder = SetBuilder::new(spec, None).unwrap();
    builder.layout(LayoutChoice::LinesWhenSuitable);
    for n in 12_015_550_000..12_015_554_000u64 {
        builder.push(Number::from_u64(n).unwrap(), None).unwrap();
    }
    let image = builder.build(1).unwrap().image;
    image.write_atomic(&data.join("acme-dnc.2.snap")).unwrap();
    let opened = SuppressionSet::open(&data.join("acme-dnc.2.snap"), None).unwrap();
    assert_eq!(
        opened.set_layout(),
        Layout::Lines,
        "test set is not a line table"
    );
    drop(opened);
    let daemon = start(dir).await;
    let (mut admin, mut client) = (admin_client(&daemon).await, daemon.client().await);
    admin
        .suppress(suppress("lines-1", &[12_015_559_999]))
        .await
        .unwrap();
    let compacted = admin.compact(CompactRequest {}).await.unwrap().into_inner();
    assert!(
        compacted.written.contains(&"acme/dnc@3".to_string()),
        "{compacted:?}"
    );
    let rebuilt = SuppressionSet::open(&daemon.data_dir().join("acme-dnc.3.snap"), None).unwrap();
    assert_eq!(rebuilt.set_layout(), Layout::Lines);
    for number in [INTERNAL, 12_015_559_999] {
        assert_eq!(
            reasons(&check(&mut client, &e164(number), "outbound").await.reasons),
            [Reason::InternalDnc]
        );
    }
    daemon.shutdown().await;
}
