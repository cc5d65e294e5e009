//! Attacks on two promises, the way they were broken: an erased person leaves no number in any
//! file (read with the engine's decoder, not only grepped), in every campaign of the tenant,
//! across SIGKILL and restart; and a request id means one thing, scoped per tenant.

use crate::crash::start_ready;
use crate::server::{
    CONFIG, CONSENTED, INTERNAL, KEY_TEXT, TestDaemon, check, e164, reasons, write_all_sets,
};
use std::path::{Path, PathBuf};
use suppressd::engine::date::Day;
use suppressd::engine::keys::SecretKey;
use suppressd::engine::number::Number;
use suppressd::engine::set::{Membership, SuppressionSet};
use suppressd::proto::admin::admin_client::AdminClient;
use suppressd::proto::admin::{
    CompactRequest, ConsentRequest, EraseRequest, ErasureState, GetErasureRequest, SuppressRequest,
};
use suppressd::proto::suppression_client::SuppressionClient;
use suppressd::proto::{CheckRequest, Reason, Verdict};
use tonic::Code;
use tonic::transport::Channel;

/// A second tenant with its own do-not-call and erased sets, so ids can collide across tenants.
fn two_tenant_config() -> String {
    CONFIG
        .replace(
            "[server]\n",
            "[server]\nadmin_listen = \"127.0.0.1:0\"\ncompact_max_age_seconds = 3600\n",
        )
        .replace(
            "[tenants.other.campaigns.only]\nblock_sets = [\"us-dnc\"]",
            "[tenants.other.sets.dnc]\nkind = \"block\"\nreason = \"internal_dnc\"\n\
             files = \"other-dnc.*.snap\"\ninitial_empty = true\n\n\
             [tenants.other.sets.erased]\nkind = \"block\"\nreason = \"erased\"\n\
             files = \"other-erased.*.snap\"\nkey_file = \"erased.key\"\ninitial_empty = true\n\n\
             [tenants.other.campaigns.only]\nblock_sets = [\"us-dnc\", \"dnc\"]",
        )
}

async fn fresh() -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    write_all_sets(&dir.path().join("data"), Day(Day::today().0 - 1));
    TestDaemon::start_in(dir, &two_tenant_config()).await
}

async fn admin_of(daemon: &TestDaemon) -> AdminClient<Channel> {
    AdminClient::connect(format!("http://{}", daemon.handle.admin_addr.unwrap()))
        .await
        .unwrap()
}

pub(crate) fn every_file(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            out.extend(every_file(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Every trace of `number` under `root`: snapshot files whose plain keys hold it (opened and
/// looked up through the engine, since the exact table's encoding hides it from a byte scan),
/// snapshot-named files that cannot be decoded at all, and any file holding it as decimal text
/// or as a little- or big-endian 64-bit integer.
pub(crate) fn traces(root: &Path, number: u64) -> Vec<String> {
    let key = SecretKey::parse(KEY_TEXT).unwrap();
    let needles = [
        number.to_string().into_bytes(),
        number.to_le_bytes().to_vec(),
        number.to_be_bytes().to_vec(),
    ];
    let mut found = Vec::new();
    for path in every_file(root) {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.contains(".snap") {
            match SuppressionSet::open(&path, None) {
                Ok(set) => {
                    if matches!(
                        set.get(Number::from_u64(number).unwrap()),
                        Membership::Present { .. }
                    ) {
                        found.push(format!("{} holds it (decoded)", path.display()));
                    }
                }
                // Keyed files hold fingerprints only; anything else undecodable is a trace.
                Err(_) if SuppressionSet::open(&path, Some(&key)).is_ok() => {}
                Err(error) => found.push(format!("{} cannot be decoded: {error}", path.display())),
            }
        }
        let bytes = std::fs::read(&path).unwrap();
        for needle in &needles {
            if bytes.windows(needle.len()).any(|w| w == needle.as_slice()) {
                found.push(format!("{} holds its bytes", path.display()));
            }
        }
    }
    found
}

async fn campaign_reasons(
    client: &mut SuppressionClient<Channel>,
    tenant: &str,
    number: u64,
    campaign: &str,
) -> Vec<Reason> {
    let response = client
        .check(CheckRequest {
            number: e164(number),
            tenant: tenant.into(),
            campaign: campaign.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    reasons(&response.reasons)
}

fn suppress(tenant: &str, request_id: &str, numbers: &[u64]) -> SuppressRequest {
    SuppressRequest {
        tenant: tenant.into(),
        numbers: numbers.iter().map(|&n| e164(n)).collect(),
        request_id: request_id.into(),
        ..SuppressRequest::default()
    }
}

pub(crate) fn erase(tenant: &str, request_id: &str, number: u64) -> EraseRequest {
    EraseRequest {
        tenant: tenant.into(),
        number: e164(number),
        request_id: request_id.into(),
        ..EraseRequest::default()
    }
}

/// Consent granted, then an opt-out, then the erasure: the number is in the consent and
/// do-not-call snapshots (version 1), the journal, and the overlays.
async fn grant_suppress_erase(admin: &mut AdminClient<Channel>, number: u64) -> String {
    admin
        .grant_consent(ConsentRequest {
            tenant: "acme".into(),
            numbers: vec![e164(number)],
            request_id: "grant-1".into(),
            ..ConsentRequest::default()
        })
        .await
        .unwrap();
    admin
        .suppress(suppress("acme", "opt-out-1", &[number]))
        .await
        .unwrap();
    let receipt = admin
        .erase(erase("acme", "erase-1", number))
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap();
    assert_eq!(receipt.removed_from, ["acme/consent", "acme/dnc"]);
    assert_eq!(receipt.added_to, ["acme/erased"]);
    assert_eq!(receipt.retained_in, ["us-dnc"]);
    receipt.receipt_id
}

/// BLOCK / ERASED in every campaign of the tenant, including "consented", which does not list
/// the erased set.
async fn blocked_as_erased_everywhere(client: &mut SuppressionClient<Channel>, number: u64) {
    for campaign in ["outbound", "consented", "lenient"] {
        let found = campaign_reasons(client, "acme", number, campaign).await;
        assert!(
            found.contains(&Reason::Erased),
            "campaign {campaign}: {found:?}"
        );
    }
}

#[tokio::test]
async fn an_erased_number_leaves_no_decodable_trace_and_blocks_in_every_campaign() {
    let daemon = fresh().await;
    let data = daemon.data_dir();
    // Leftovers that hold the number too: a temporary file of a crashed write (its process is
    // gone) and a file the loader moved aside.
    for leftover in [
        ".acme-dnc.7.snap.tmp-4194300",
        ".acme-dnc.8.snap.fetch-4194301",
        "acme-dnc.9.snap.refused",
    ] {
        std::fs::copy(data.join("acme-dnc.1.snap"), data.join(leftover)).unwrap();
    }
    let (mut admin, mut client) = (admin_of(&daemon).await, daemon.client().await);
    let receipt_id = grant_suppress_erase(&mut admin, INTERNAL).await;
    blocked_as_erased_everywhere(&mut client, INTERNAL).await;
    assert!(
        !traces(daemon.dir.path(), INTERNAL).is_empty(),
        "the scan cannot see the number before compaction"
    );
    let compacted = admin.compact(CompactRequest {}).await.unwrap().into_inner();
    assert_eq!(compacted.erasures_completed, 1);
    let receipt = admin
        .get_erasure(GetErasureRequest {
            receipt_id: receipt_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(receipt.state, ErasureState::Complete as i32);
    assert_eq!(traces(daemon.dir.path(), INTERNAL), Vec::<String>::new());
    // Another person on the same lists is untouched.
    assert_eq!(
        check(&mut client, &e164(CONSENTED), "consented")
            .await
            .verdict,
        Verdict::Allow as i32
    );
    blocked_as_erased_everywhere(&mut client, INTERNAL).await;
    let daemon = TestDaemon::start_in(daemon.stop().await, &two_tenant_config()).await;
    let mut client = daemon.client().await;
    blocked_as_erased_everywhere(&mut client, INTERNAL).await;
    assert_eq!(traces(daemon.dir.path(), INTERNAL), Vec::<String>::new());
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_survives_sigkill_before_compaction_and_completes_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("erased.key"), KEY_TEXT).unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    write_all_sets(&dir.path().join("data"), Day::today());
    let (mut daemon, _, mut admin) = start_ready(dir.path()).await;
    let receipt_id = grant_suppress_erase(&mut admin, INTERNAL).await;
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    let (mut daemon, _, mut admin) = start_ready(dir.path()).await;
    let pending = admin
        .get_erasure(GetErasureRequest {
            receipt_id: receipt_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pending.state, ErasureState::Pending as i32);
    admin.compact(CompactRequest {}).await.unwrap();
    // Killed again right after the compaction, then restarted: nothing comes back.
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    let (mut daemon, mut client, mut admin) = start_ready(dir.path()).await;
    blocked_as_erased_everywhere(&mut client, INTERNAL).await;
    let done = admin
        .get_erasure(GetErasureRequest {
            receipt_id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.state, ErasureState::Complete as i32);
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    // The config, key file and the daemon's log are under `dir` too: none may hold it.
    assert_eq!(traces(dir.path(), INTERNAL), Vec::<String>::new());
}

const A_NUMBER: u64 = 12015550141;
const B_NUMBER: u64 = 12015550142;
const C_NUMBER: u64 = 12015550143;
const PERSON_X: u64 = 12015550144;
const PERSON_Y: u64 = 12015550145;
const PERSON_Z: u64 = 12015550146;

#[tokio::test]
async fn request_ids_are_scoped_by_tenant_and_never_reused_for_another_request() {
    let daemon = fresh().await;
    let (mut admin, mut client) = (admin_of(&daemon).await, daemon.client().await);
    // Two tenants, one id: both applied, each in its own tenant.
    let acme = admin
        .suppress(suppress("acme", "shared-1", &[A_NUMBER]))
        .await
        .unwrap()
        .into_inner();
    let other = admin
        .suppress(suppress("other", "shared-1", &[B_NUMBER]))
        .await
        .unwrap()
        .into_inner();
    assert!(!other.duplicate, "tenant other got acme's result");
    assert_ne!(other.sequence, acme.sequence);
    assert_eq!(
        campaign_reasons(&mut client, "other", B_NUMBER, "only").await,
        [Reason::InternalDnc]
    );
    // Both erase with one id: each gets its own receipt.
    let acme_receipt = admin
        .erase(erase("acme", "erase-shared", PERSON_X))
        .await
        .unwrap()
        .into_inner();
    let other_receipt = admin
        .erase(erase("other", "erase-shared", PERSON_Y))
        .await
        .unwrap()
        .into_inner();
    assert!(!other_receipt.duplicate);
    let (acme_receipt, other_receipt) = (
        acme_receipt.receipt.unwrap(),
        other_receipt.receipt.unwrap(),
    );
    assert_eq!(other_receipt.tenant, "other");
    assert_ne!(acme_receipt.receipt_id, other_receipt.receipt_id);
    // A receipt of another tenant is NOT_FOUND, exactly like a missing one.
    for receipt_id in [acme_receipt.receipt_id.clone(), "er-missing".to_string()] {
        let status = admin
            .get_erasure(GetErasureRequest {
                receipt_id,
                tenant: "other".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "no erasure with that receipt id");
    }
    attempt_reuses(&mut admin, &mut client).await;
    // The same holds after a compaction (journal gone, ledger only) and after a restart.
    admin.compact(CompactRequest {}).await.unwrap();
    attempt_reuses(&mut admin, &mut client).await;
    let daemon = TestDaemon::start_in(daemon.stop().await, &two_tenant_config()).await;
    let (mut admin, mut client) = (admin_of(&daemon).await, daemon.client().await);
    attempt_reuses(&mut admin, &mut client).await;
    daemon.shutdown().await;
}

/// Within tenant acme: a repeat of the same request is a duplicate; the same id for another
/// number, another operation or another person's erasure is refused and changes nothing.
async fn attempt_reuses(admin: &mut AdminClient<Channel>, client: &mut SuppressionClient<Channel>) {
    let repeat = admin
        .suppress(suppress("acme", "shared-1", &[A_NUMBER]))
        .await
        .unwrap()
        .into_inner();
    assert!(repeat.duplicate);
    let another_number = admin
        .suppress(suppress("acme", "shared-1", &[C_NUMBER]))
        .await
        .unwrap_err();
    assert_eq!(another_number.code(), Code::AlreadyExists);
    assert!(
        another_number.message().contains("shared-1"),
        "{another_number:?}"
    );
    let another_operation = admin
        .unsuppress(suppress("acme", "shared-1", &[A_NUMBER]))
        .await
        .unwrap_err();
    assert_eq!(another_operation.code(), Code::AlreadyExists);
    let another_person = admin
        .erase(erase("acme", "erase-shared", PERSON_Z))
        .await
        .unwrap_err();
    assert_eq!(another_person.code(), Code::AlreadyExists);
    let same_person = admin
        .erase(erase("acme", "erase-shared", PERSON_X))
        .await
        .unwrap()
        .into_inner();
    assert!(same_person.duplicate);
    // Nothing changed: C and Z may be called, A is still blocked, X still erased.
    for (number, expected) in [
        (C_NUMBER, vec![]),
        (PERSON_Z, vec![]),
        (A_NUMBER, vec![Reason::InternalDnc]),
        (PERSON_X, vec![Reason::Erased]),
    ] {
        assert_eq!(
            campaign_reasons(client, "acme", number, "outbound").await,
            expected,
            "number {number}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reuses_of_one_id_apply_exactly_one_request() {
    let daemon = fresh().await;
    let (admin, mut client) = (admin_of(&daemon).await, daemon.client().await);
    let before = daemon.handle.mutator.journal().stats().last_seq;
    let calls: Vec<_> = (0..24u64)
        .map(|i| {
            let mut admin = admin.clone();
            let number = if i % 2 == 0 { A_NUMBER } else { B_NUMBER };
            tokio::spawn(async move {
                let outcome = admin.suppress(suppress("acme", "race-1", &[number])).await;
                (number, outcome.map(|r| r.into_inner()))
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for call in calls {
        outcomes.push(call.await.unwrap());
    }
    let applied: Vec<_> = outcomes
        .iter()
        .filter(|(_, o)| o.as_ref().is_ok_and(|r| !r.duplicate))
        .collect();
    assert_eq!(applied.len(), 1, "exactly one request applied");
    let winner = applied[0].0;
    for (number, outcome) in &outcomes {
        match outcome {
            Ok(_) => assert_eq!(*number, winner, "a different payload got a result"),
            Err(status) => {
                assert_eq!(status.code(), Code::AlreadyExists);
                assert_ne!(*number, winner, "a repeat of the winner was refused");
            }
        }
    }
    assert_eq!(daemon.handle.mutator.journal().stats().last_seq, before + 1);
    let loser = if winner == A_NUMBER {
        B_NUMBER
    } else {
        A_NUMBER
    };
    assert_eq!(
        campaign_reasons(&mut client, "acme", winner, "outbound").await,
        [Reason::InternalDnc]
    );
    assert_eq!(
        campaign_reasons(&mut client, "acme", loser, "outbound").await,
        Vec::<Reason>::new()
    );
    daemon.shutdown().await;
}
