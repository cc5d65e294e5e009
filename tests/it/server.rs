//! The daemon end to end: the real gRPC server on port 0 with a temp data directory, driven by
//! the generated client.

use std::path::{Path, PathBuf};
use std::time::Duration;
use suppressd::config::Config;
use suppressd::engine::date::Day;
use suppressd::engine::fuse::FilterWidth;
use suppressd::engine::keys::SecretKey;
use suppressd::engine::number::Number;
use suppressd::engine::set::{SetBuilder, SetSpec};
use suppressd::engine::snapshot::SetKind;
use suppressd::proto::suppression_client::SuppressionClient;
use suppressd::proto::{CheckBatchRequest, CheckRequest, Reason, StatusRequest, Verdict};
use suppressd::server::{self, Handle};
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub(crate) const KEY_TEXT: &str =
    "id = \"acme-erased-1\"\nsecret = \"8f1e2d3c4b5a69788796a5b4c3d2e1f0\"\n";

/// The policy every test runs: a national registry, a tenant with internal, erased and consent
/// sets, and campaigns for each rule.
pub(crate) const CONFIG: &str = r#"
[server]
grpc_listen = "127.0.0.1:0"
data_dir = "data"
reload_poll_seconds = 1
max_batch = 100
shutdown_grace_seconds = 5

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

[tenants.acme.sets.erased]
kind = "block"
reason = "erased"
files = "acme-erased.*.snap"
key_file = "erased.key"

[tenants.acme.sets.consent]
kind = "consent"
files = "acme-consent.*.snap"

[tenants.acme.campaigns.outbound]
block_sets = ["us-dnc", "dnc", "erased"]
blocked_prefixes = ["+1900"]

[tenants.acme.campaigns.consented]
block_sets = ["us-dnc", "dnc"]
require_consent = true
consent_sets = ["consent"]

[tenants.acme.campaigns.lenient]
block_sets = ["us-dnc"]
stale_list = "allow_with_warning"

[tenants.other]
region = "PL"

[tenants.other.campaigns.only]
block_sets = ["us-dnc"]
"#;

// Numbers by role.
pub(crate) const REGISTRY: u64 = 12015550123;
pub(crate) const INTERNAL: u64 = 12015550124;
pub(crate) const ERASED: u64 = 12015550125;
pub(crate) const CONSENTED: u64 = 12015550126;
pub(crate) const CLEAN: u64 = 12015550127;
pub(crate) const PREMIUM: u64 = 19005550100;

pub(crate) fn e164(value: u64) -> String {
    format!("+{value}")
}

pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    pub addr: std::net::SocketAddr,
    pub handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestDaemon {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub(crate) async fn start_in(dir: tempfile::TempDir, config_text: &str) -> TestDaemon {
        std::fs::write(dir.path().join("erased.key"), KEY_TEXT).unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let config = Config::parse(config_text, "test.toml", dir.path()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let (handle, serving) = server::start(config, listener, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
        let task = tokio::spawn(async move {
            serving.await.unwrap();
        });
        TestDaemon {
            dir,
            addr,
            handle,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn client(&self) -> SuppressionClient<Channel> {
        SuppressionClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    /// Stops the daemon and hands back its directory, for a restart on the same files.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    /// Waits until the daemon has picked up `version` of `set` (reloads are asynchronous).
    pub async fn wait_for_version(&self, set: &str, version: u64) {
        for _ in 0..100 {
            let status = self
                .client()
                .await
                .status(StatusRequest {})
                .await
                .unwrap()
                .into_inner();
            if status
                .sets
                .iter()
                .any(|s| s.name == set && s.version == version)
            {
                return;
            }
            self.handle.reload.notify_one();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("set {set} never reached version {version}");
    }
}

fn key() -> SecretKey {
    SecretKey::parse(KEY_TEXT).unwrap()
}

/// Writes a snapshot of `numbers` as `<file>` in `dir`.
pub(crate) fn write_set(
    dir: &Path,
    file: &str,
    kind: SetKind,
    numbers: &[u64],
    version: u64,
    source_date: Option<Day>,
    keyed: bool,
) {
    let spec = SetSpec {
        name: file.split('.').next().unwrap().into(),
        kind,
        filter: FilterWidth::Fuse8,
        source: "test".into(),
        source_date,
        version,
        build_time: 0,
    };
    let mut builder = SetBuilder::new(spec, keyed.then(key)).unwrap();
    for &n in numbers {
        builder.push(Number::from_u64_unchecked(n), None).unwrap();
    }
    builder
        .build(1)
        .unwrap()
        .image
        .write_atomic(&dir.join(file))
        .unwrap();
}

pub(crate) fn write_all_sets(dir: &Path, registry_date: Day) {
    write_set(
        dir,
        "us-dnc.1.snap",
        SetKind::Block,
        &[REGISTRY],
        1,
        Some(registry_date),
        false,
    );
    write_set(
        dir,
        "acme-dnc.1.snap",
        SetKind::Block,
        &[INTERNAL],
        1,
        None,
        false,
    );
    write_set(
        dir,
        "acme-erased.1.snap",
        SetKind::Block,
        &[ERASED],
        1,
        None,
        true,
    );
    write_set(
        dir,
        "acme-consent.1.snap",
        SetKind::Consent,
        &[CONSENTED, INTERNAL],
        1,
        None,
        false,
    );
}

async fn ready_daemon() -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    write_all_sets(&dir.path().join("data"), Day(Day::today().0 - 3));
    TestDaemon::start_in(dir, CONFIG).await
}

pub(crate) fn reasons(values: &[i32]) -> Vec<Reason> {
    values
        .iter()
        .map(|&r| Reason::try_from(r).unwrap())
        .collect()
}

pub(crate) async fn check(
    client: &mut SuppressionClient<Channel>,
    number: &str,
    campaign: &str,
) -> suppressd::proto::CheckResponse {
    client
        .check(CheckRequest {
            number: number.into(),
            tenant: String::new(),
            campaign: campaign.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn every_block_reason_and_allow() {
    let daemon = ready_daemon().await;
    let mut client = daemon.client().await;
    // (number, campaign, verdict, reasons, matched sets)
    type Case<'a> = (u64, &'a str, Verdict, &'a [Reason], &'a [&'a str]);
    let cases: &[Case] = &[
        (CLEAN, "outbound", Verdict::Allow, &[], &[]),
        (
            REGISTRY,
            "outbound",
            Verdict::Block,
            &[Reason::NationalRegistry],
            &["us-dnc"],
        ),
        (
            INTERNAL,
            "outbound",
            Verdict::Block,
            &[Reason::InternalDnc],
            &["acme/dnc"],
        ),
        (
            ERASED,
            "outbound",
            Verdict::Block,
            &[Reason::Erased],
            &["acme/erased"],
        ),
        (
            PREMIUM,
            "outbound",
            Verdict::Block,
            &[Reason::BlockedPrefix],
            &[],
        ),
        (
            CLEAN,
            "consented",
            Verdict::Block,
            &[Reason::NoConsent],
            &[],
        ),
        (CONSENTED, "consented", Verdict::Allow, &[], &[]),
        // On an internal list and consented: the opt-out wins.
        (
            INTERNAL,
            "consented",
            Verdict::Block,
            &[Reason::InternalDnc],
            &["acme/dnc"],
        ),
    ];
    for &(number, campaign, verdict, expected, matched) in cases {
        let response = check(&mut client, &e164(number), campaign).await;
        assert_eq!(response.verdict, verdict as i32, "{number} in {campaign}");
        assert_eq!(
            reasons(&response.reasons),
            expected,
            "{number} in {campaign}"
        );
        assert_eq!(response.matched_sets, matched, "{number} in {campaign}");
        assert_eq!(response.normalized_number, e164(number));
        assert_eq!(response.tenant, "acme");
        assert_eq!(response.campaign, campaign);
        assert!(
            response.versions.iter().all(|v| v.version == 1),
            "{:?}",
            response.versions
        );
        assert!(response.checked_at_unix_ms > 0);
    }
    // The same cases through CheckBatch, one batch per campaign, as packed numbers: the batch
    // path's rules (prefix, consent, every set) must answer as the single check does.
    for batch_campaign in ["outbound", "consented"] {
        let batch: Vec<&Case> = cases.iter().filter(|c| c.1 == batch_campaign).collect();
        let response = client
            .check_batch(CheckBatchRequest {
                tenant: "acme".into(),
                campaign: batch_campaign.into(),
                e164: batch.iter().map(|c| c.0).collect(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for (index, &&(number, _, verdict, expected, _)) in batch.iter().enumerate() {
            assert_eq!(
                response.verdicts[index], verdict as u8,
                "{number} in batch {batch_campaign}"
            );
            let found = response.blocked.iter().find(|b| b.index == index as u32);
            let found_reasons = found.map(|b| reasons(&b.reasons)).unwrap_or_default();
            assert_eq!(
                found_reasons, expected,
                "{number} in batch {batch_campaign}"
            );
        }
    }
    let invalid = check(&mut client, "not a number", "outbound").await;
    assert_eq!(invalid.verdict, Verdict::Block as i32);
    assert_eq!(reasons(&invalid.reasons), [Reason::InvalidNumber]);
    let versions = check(&mut client, &e164(CLEAN), "outbound").await.versions;
    let names: Vec<&str> = versions.iter().map(|v| v.set.as_str()).collect();
    assert_eq!(names, ["us-dnc", "acme/dnc", "acme/erased"]);
    daemon.shutdown().await;
}

#[tokio::test]
async fn unknown_tenant_or_campaign_is_not_found() {
    let daemon = ready_daemon().await;
    let mut client = daemon.client().await;
    for (tenant, campaign) in [("nobody", ""), ("acme", "nothing")] {
        let status = client
            .check(CheckRequest {
                number: e164(CLEAN),
                tenant: tenant.into(),
                campaign: campaign.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    }
    // A tenant with one campaign needs no campaign name.
    let response = client
        .check(CheckRequest {
            number: e164(REGISTRY),
            tenant: "other".into(),
            campaign: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.campaign, "only");
    assert_eq!(response.verdict, Verdict::Block as i32);
    daemon.shutdown().await;
}

#[tokio::test]
async fn stale_registry_blocks_or_warns_by_campaign() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    write_all_sets(&dir.path().join("data"), Day(Day::today().0 - 32));
    let daemon = TestDaemon::start_in(dir, CONFIG).await;
    let mut client = daemon.client().await;
    let strict = check(&mut client, &e164(CLEAN), "outbound").await;
    assert_eq!(strict.verdict, Verdict::Block as i32);
    assert_eq!(reasons(&strict.reasons), [Reason::StaleList]);
    let lenient = check(&mut client, &e164(CLEAN), "lenient").await;
    assert_eq!(lenient.verdict, Verdict::Allow as i32);
    assert_eq!(lenient.warnings.len(), 1, "{:?}", lenient.warnings);
    // A fresh copy arriving clears the rule without a restart.
    write_set(
        &daemon.data_dir(),
        "us-dnc.2.snap",
        SetKind::Block,
        &[REGISTRY],
        2,
        Some(Day::today()),
        false,
    );
    daemon.wait_for_version("us-dnc", 2).await;
    let fresh = check(&mut client, &e164(CLEAN), "outbound").await;
    assert_eq!(fresh.verdict, Verdict::Allow as i32);
    daemon.shutdown().await;
}

#[tokio::test]
async fn fails_closed_until_every_set_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Everything but the internal list.
    write_set(
        &data,
        "us-dnc.1.snap",
        SetKind::Block,
        &[REGISTRY],
        1,
        Some(Day::today()),
        false,
    );
    write_set(
        &data,
        "acme-erased.1.snap",
        SetKind::Block,
        &[ERASED],
        1,
        None,
        true,
    );
    write_set(
        &data,
        "acme-consent.1.snap",
        SetKind::Consent,
        &[CONSENTED],
        1,
        None,
        false,
    );
    let daemon = TestDaemon::start_in(dir, CONFIG).await;
    let mut client = daemon.client().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        Channel::from_shared(format!("http://{}", daemon.addr))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let serving = |service: &str| tonic_health::pb::HealthCheckRequest {
        service: service.into(),
    };
    let status = health
        .check(serving("suppressd.v1.Suppression"))
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );
    let response = check(&mut client, &e164(CLEAN), "outbound").await;
    assert_eq!(response.verdict, Verdict::Block as i32);
    assert_eq!(reasons(&response.reasons), [Reason::NotReady]);
    // A campaign that does not need the missing set answers normally.
    let lenient = check(&mut client, &e164(CLEAN), "lenient").await;
    assert_eq!(lenient.verdict, Verdict::Allow as i32);
    assert!(
        !client
            .status(StatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    // The missing list arrives: ready, SERVING, and the number that was blocked is allowed.
    write_set(
        &daemon.data_dir(),
        "acme-dnc.1.snap",
        SetKind::Block,
        &[INTERNAL],
        1,
        None,
        false,
    );
    daemon.wait_for_version("acme/dnc", 1).await;
    let response = check(&mut client, &e164(CLEAN), "outbound").await;
    assert_eq!(response.verdict, Verdict::Allow as i32);
    let mut serving_now = false;
    for _ in 0..50 {
        let status = health.check(serving("")).await.unwrap().into_inner().status;
        if status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
            serving_now = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(serving_now, "health never became SERVING");
    assert!(
        client
            .status(StatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    daemon.shutdown().await;
}

#[tokio::test]
async fn batches_mix_text_and_packed_numbers() {
    let daemon = ready_daemon().await;
    let mut client = daemon.client().await;
    let response = client
        .check_batch(CheckBatchRequest {
            tenant: "acme".into(),
            campaign: "outbound".into(),
            numbers: vec![e164(CLEAN), "garbage".into(), e164(INTERNAL)],
            e164: vec![REGISTRY, CLEAN, 7, PREMIUM],
            batch_id: 42,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.batch_id, 42);
    let v = |x: Verdict| x as u8;
    assert_eq!(
        response.verdicts,
        [
            v(Verdict::Allow),
            v(Verdict::Invalid),
            v(Verdict::Block),
            v(Verdict::Block),
            v(Verdict::Allow),
            v(Verdict::Invalid),
            v(Verdict::Block)
        ]
    );
    let blocked: Vec<(u32, Vec<Reason>, Vec<u32>)> = response
        .blocked
        .iter()
        .map(|b| (b.index, reasons(&b.reasons), b.matched_sets.clone()))
        .collect();
    assert_eq!(
        blocked,
        [
            (1, vec![Reason::InvalidNumber], vec![]),
            (2, vec![Reason::InternalDnc], vec![1]),
            (3, vec![Reason::NationalRegistry], vec![0]),
            (5, vec![Reason::InvalidNumber], vec![]),
            (6, vec![Reason::BlockedPrefix], vec![]),
        ]
    );
    assert_eq!(response.versions[1].set, "acme/dnc");
    daemon.shutdown().await;
}

#[tokio::test]
async fn oversized_batch_names_the_limit() {
    let daemon = ready_daemon().await;
    let mut client = daemon.client().await;
    let status = client
        .check_batch(CheckBatchRequest {
            e164: vec![CLEAN; 101],
            ..CheckBatchRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("100"), "{}", status.message());
    daemon.shutdown().await;
}

#[tokio::test]
async fn stream_answers_each_batch_in_order() {
    let daemon = ready_daemon().await;
    let mut client = daemon.client().await;
    let requests: Vec<CheckBatchRequest> = (0..20u64)
        .map(|i| CheckBatchRequest {
            e164: vec![REGISTRY, CLEAN],
            batch_id: i,
            ..CheckBatchRequest::default()
        })
        .collect();
    let mut responses = client
        .check_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut seen = 0u64;
    while let Some(response) = responses.message().await.unwrap() {
        assert_eq!(response.batch_id, seen);
        assert_eq!(
            response.verdicts,
            [Verdict::Block as u8, Verdict::Allow as u8]
        );
        seen += 1;
    }
    assert_eq!(seen, 20);
    daemon.shutdown().await;
}

#[tokio::test]
async fn bad_snapshot_is_refused_while_the_old_one_serves() {
    let daemon = ready_daemon().await;
    let mut client = daemon.client().await;
    let data = daemon.data_dir();
    let good = std::fs::read(data.join("us-dnc.1.snap")).unwrap();
    // A newer version whose bytes are damaged, and a wrong-kind file.
    write_set(
        &data,
        "us-dnc.2.snap",
        SetKind::Block,
        &[CLEAN],
        2,
        Some(Day::today()),
        false,
    );
    let mut bad = std::fs::read(data.join("us-dnc.2.snap")).unwrap();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    std::fs::write(data.join("us-dnc.2.snap"), &bad).unwrap();
    daemon.handle.reload.notify_one();
    let mut refused = String::new();
    for _ in 0..100 {
        let status = client.status(StatusRequest {}).await.unwrap().into_inner();
        let us = status.sets.iter().find(|s| s.name == "us-dnc").unwrap();
        if !us.last_error.is_empty() {
            refused = us.last_error.clone();
            assert_eq!(us.version, 1);
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(
        refused.contains("us-dnc.2.snap") && refused.contains("checksum"),
        "{refused}"
    );
    let response = check(&mut client, &e164(REGISTRY), "outbound").await;
    assert_eq!(reasons(&response.reasons), [Reason::NationalRegistry]);
    assert_eq!(std::fs::read(data.join("us-dnc.1.snap")).unwrap(), good);
    daemon.shutdown().await;
}

#[tokio::test]
async fn reload_under_load_fails_no_call() {
    let daemon = ready_daemon().await;
    let addr = daemon.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let mut client = SuppressionClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            let (mut calls, mut failures, mut registry_hits) = (0u64, 0u64, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match client
                    .check_batch(CheckBatchRequest {
                        e164: vec![REGISTRY, CLEAN, INTERNAL],
                        ..CheckBatchRequest::default()
                    })
                    .await
                {
                    Ok(response) => {
                        let response = response.into_inner();
                        registry_hits += u64::from(response.verdicts[0] == Verdict::Block as u8);
                        // Old and new versions both hold these numbers: answers never change.
                        assert_eq!(response.verdicts, [2, 1, 2]);
                    }
                    Err(_) => failures += 1,
                }
                calls += 1;
            }
            (calls, failures, registry_hits)
        }));
    }
    for version in 2..=6u64 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let file = format!("us-dnc.{version}.snap");
        write_set(
            &daemon.data_dir(),
            &file,
            SetKind::Block,
            &[REGISTRY, 19995550100 + version],
            version,
            Some(Day::today()),
            false,
        );
        daemon.handle.reload.notify_one();
        daemon.wait_for_version("us-dnc", version).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for worker in workers {
        let (calls, failures, hits) = worker.await.unwrap();
        assert_eq!(failures, 0);
        assert_eq!(hits, calls);
        total += calls;
    }
    assert!(total > 50, "only {total} calls");
    daemon.shutdown().await;
}

#[tokio::test]
async fn reflection_lists_services_in_both_versions() {
    let daemon = ready_daemon().await;
    let channel = Channel::from_shared(format!("http://{}", daemon.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    use tokio_stream::StreamExt;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    let mut v1 = tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
        channel.clone(),
    );
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = v1
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(
        tonic_reflection::pb::v1::server_reflection_response::MessageResponse::ListServicesResponse(
            list,
        ),
    ) = response.message_response
    else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for wanted in ["suppressd.v1.Suppression", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == wanted), "{names:?}");
    }
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
    let mut alpha =
        tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient::new(
            channel,
        );
    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(AlphaRequest::ListServices(String::new())),
    };
    let mut responses = alpha
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    assert!(responses.next().await.unwrap().is_ok());
    daemon.shutdown().await;
}

#[tokio::test]
async fn shutdown_drains_calls_in_flight() {
    let daemon = ready_daemon().await;
    let mut client = daemon.client().await;
    // A stream that is open when shutdown starts keeps being answered until the caller ends it.
    let (send, requests) = tokio::sync::mpsc::channel::<CheckBatchRequest>(4);
    let batch = |id| CheckBatchRequest {
        e164: vec![REGISTRY, CLEAN],
        batch_id: id,
        ..CheckBatchRequest::default()
    };
    send.send(batch(1)).await.unwrap();
    let mut responses = client
        .check_stream(tokio_stream::wrappers::ReceiverStream::new(requests))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(responses.message().await.unwrap().unwrap().batch_id, 1);
    let TestDaemon {
        stop,
        task,
        dir: _dir,
        ..
    } = daemon;
    stop.unwrap().send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    send.send(batch(2)).await.unwrap();
    let late = responses
        .message()
        .await
        .unwrap()
        .expect("stream closed during drain");
    assert_eq!(late.batch_id, 2);
    assert_eq!(late.verdicts, [Verdict::Block as u8, Verdict::Allow as u8]);
    drop(send);
    assert!(responses.message().await.unwrap().is_none());
    tokio::time::timeout(Duration::from_secs(5), task.unwrap())
        .await
        .expect("server did not finish after the last stream ended")
        .unwrap();
    // Stopped: no new connections.
}

#[tokio::test]
async fn gzip_requests_and_responses() {
    let daemon = ready_daemon().await;
    let mut client = daemon
        .client()
        .await
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let response = client
        .check_batch(CheckBatchRequest {
            e164: vec![REGISTRY; 100],
            ..CheckBatchRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.verdicts, vec![Verdict::Block as u8; 100]);
    daemon.shutdown().await;
}
