//! Attempt caps through the real daemon: 100 concurrent reservations with a cap of 3 grant
//! exactly 3; retries get the first answer; an unconfirmed reservation expires; a plain check
//! reports the budget; compaction then restart keeps the log; SIGKILL between reserve and
//! commit forgets nothing granted; a damaged state file is refused; two fleet hosts with a
//! real nats-server grant 3 between them; HTTP and the CLI speak the same.

use crate::admin::admin_client;
use crate::crash::start_ready_with;
use crate::http::Connection;
use crate::nats::{Nats, fleet_section, write_fleet_key};
use crate::server::{CLEAN, CONFIG, TestDaemon, e164, reasons, write_all_sets};
use crate::sip::metric;
use std::time::{Duration, Instant};
use suppressd::engine::date::Day;
use suppressd::proto::admin::CompactRequest;
use suppressd::proto::suppression_client::SuppressionClient;
use suppressd::proto::{
    AttemptOutcome, AttemptRequest, AttemptResponse, CheckRequest, Reason, Verdict,
};
use tonic::transport::Channel;

/// Campaigns with caps: Florida's 3 per 24 h (TTL 2 s), and Regulation F.
const CAPPED: &str = "\n[tenants.acme.campaigns.capped]\nblock_sets = [\"us-dnc\", \"dnc\"]\n\
                      attempt_rules = [\"fl-ok-md\"]\nattempt_ttl_seconds = 2\n\n\
                      [tenants.acme.campaigns.collections]\nblock_sets = [\"us-dnc\"]\n\
                      attempt_rules = [\"reg-f\"]\n";

fn config() -> String {
    CONFIG.replace(
        "[server]\n",
        "[server]\nadmin_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\ncompact_max_age_seconds = 3600\n",
    ) + CAPPED
}

async fn start_in(dir: tempfile::TempDir) -> TestDaemon {
    TestDaemon::start_in(dir, &config()).await
}

async fn start() -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    write_all_sets(&dir.path().join("data"), Day::today());
    start_in(dir).await
}

fn ask(call_id: &str, number: u64) -> AttemptRequest {
    AttemptRequest {
        call_id: call_id.into(),
        number: e164(number),
        campaign: "capped".into(),
        ..Default::default()
    }
}

async fn reserve(
    client: &mut SuppressionClient<Channel>,
    call_id: &str,
    number: u64,
) -> AttemptResponse {
    client
        .reserve_attempt(ask(call_id, number))
        .await
        .unwrap()
        .into_inner()
}

/// 100 reservations for one number at once, each on its own connection.
async fn hundred_at_once(
    addr: std::net::SocketAddr,
    number: u64,
    prefix: &str,
) -> Vec<AttemptResponse> {
    let mut tasks = Vec::new();
    for i in 0..100 {
        let call_id = format!("{prefix}-{i}");
        tasks.push(tokio::spawn(async move {
            let mut client = SuppressionClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            reserve(&mut client, &call_id, number).await
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_reservations_with_a_cap_of_three_grant_exactly_three() {
    let daemon = start().await;
    let answers = hundred_at_once(daemon.addr, CLEAN, "call").await;
    let granted: Vec<&AttemptResponse> = answers.iter().filter(|a| a.granted).collect();
    assert_eq!(granted.len(), 3, "{answers:?}");
    let mut left: Vec<u32> = granted.iter().map(|a| a.remaining).collect();
    left.sort();
    assert_eq!(left, [0, 1, 2]);
    let refused = answers.iter().find(|a| !a.granted).unwrap();
    assert_eq!(reasons(&refused.reasons), [Reason::AttemptLimit]);
    assert_eq!(refused.stage, "refused");
    let now = suppressd::server::state::now_ms();
    assert!(
        refused.next_allowed_at_unix_ms > now + 23 * 3_600_000
            && refused.next_allowed_at_unix_ms <= now + 24 * 3_600_000,
        "{refused:?}"
    );
    // A plain check reports the budget (none) and why, without reserving.
    let mut client = daemon.client().await;
    let check = client
        .check(CheckRequest {
            number: e164(CLEAN),
            campaign: "capped".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(check.verdict, Verdict::Block as i32);
    assert_eq!(reasons(&check.reasons), [Reason::AttemptLimit]);
    assert_eq!(check.attempts.unwrap().remaining, 0);
    assert_eq!(
        check.next_allowed_at_unix_ms,
        refused.next_allowed_at_unix_ms
    );
    // Another number has its whole budget; checks do not spend it.
    for _ in 0..5 {
        let other = client
            .check(CheckRequest {
                number: e164(CLEAN + 1000),
                campaign: "capped".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(other.verdict, Verdict::Allow as i32);
        assert_eq!(other.attempts.unwrap().remaining, 3);
    }
    // A campaign without caps reports no budget.
    let plain = client
        .check(CheckRequest {
            number: e164(CLEAN),
            campaign: "outbound".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(plain.attempts.is_none());
    assert_eq!(plain.verdict, Verdict::Allow as i32);
    // Retries: the first answer, granted or refused, marked duplicate.
    let first_granted = granted[0];
    let retry = reserve(&mut client, &first_granted.call_id, CLEAN).await;
    assert!(retry.duplicate && retry.granted);
    assert_eq!(retry.remaining, first_granted.remaining);
    let retry = reserve(&mut client, &refused.call_id, CLEAN).await;
    assert!(retry.duplicate && !retry.granted);
    // The same call id for another number: ALREADY_EXISTS, nothing changed.
    let status = client
        .reserve_attempt(ask(&first_granted.call_id, CLEAN + 1))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}");
    // Release gives a slot back at once; commit after release is refused.
    let released = client
        .release_attempt(ask(&first_granted.call_id, CLEAN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(released.stage, "released");
    assert!(reserve(&mut client, "after-release", CLEAN).await.granted);
    assert!(!reserve(&mut client, "after-release-2", CLEAN).await.granted);
    let status = client
        .commit_attempt(AttemptRequest {
            call_id: first_granted.call_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    // Unknown call ids: NOT_FOUND; campaigns without caps: INVALID_ARGUMENT.
    let status = client
        .commit_attempt(AttemptRequest {
            call_id: "never-reserved".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let mut uncapped = ask("x", CLEAN);
    uncapped.campaign = "outbound".into();
    let status = client.reserve_attempt(uncapped).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_reservation_expires_and_a_committed_one_does_not() {
    let daemon = start().await;
    let mut client = daemon.client().await;
    for i in 0..3 {
        assert!(reserve(&mut client, &format!("e{i}"), CLEAN).await.granted);
    }
    client
        .commit_attempt(AttemptRequest {
            call_id: "e0".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!reserve(&mut client, "e3", CLEAN).await.granted);
    // The TTL is 2 s: e1 and e2 expire and free their slots; e0 still counts.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(reserve(&mut client, "e4", CLEAN).await.granted);
    assert!(reserve(&mut client, "e5", CLEAN).await.granted);
    assert!(!reserve(&mut client, "e6", CLEAN).await.granted);
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_start_cooldowns_and_an_opt_out_suppresses_the_number() {
    let daemon = start().await;
    let mut client = daemon.client().await;
    let mut talk = ask("debt-1", CLEAN);
    talk.campaign = "collections".into();
    assert!(
        client
            .reserve_attempt(talk.clone())
            .await
            .unwrap()
            .into_inner()
            .granted
    );
    talk.outcome = AttemptOutcome::Contact as i32;
    let answered = client
        .record_outcome(talk.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (answered.stage.as_str(), answered.outcome),
        ("committed", AttemptOutcome::Contact as i32)
    );
    // Regulation F: 7 days after a conversation.
    let mut next = talk.clone();
    next.call_id = "debt-2".into();
    next.outcome = 0;
    let refused = client.reserve_attempt(next).await.unwrap().into_inner();
    assert!(!refused.granted);
    let now = suppressd::server::state::now_ms();
    assert!((refused.next_allowed_at_unix_ms - (now + 7 * 86_400_000)).abs() < 60_000);
    // Another outcome for the same call: ALREADY_EXISTS.
    talk.outcome = AttemptOutcome::Refusal as i32;
    assert_eq!(
        client.record_outcome(talk).await.unwrap_err().code(),
        tonic::Code::AlreadyExists
    );
    // An opt-out suppresses the number in the tenant's internal list.
    let number = CLEAN + 7;
    assert!(reserve(&mut client, "opt-1", number).await.granted);
    let mut opt_out = ask("opt-1", number);
    opt_out.outcome = AttemptOutcome::OptOut as i32;
    let answered = client
        .record_outcome(opt_out.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answered.suppression_request_id, "opt-out/opt-1");
    let check = client
        .check(CheckRequest {
            number: e164(number),
            campaign: "outbound".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reasons(&check.reasons), [Reason::InternalDnc]);
    // Retried: the same answer, the same suppression request (not another), and not
    // counted again.
    let opt_outs = || {
        metric(
            "suppressd_attempt_outcomes_total",
            &[("outcome", "opt_out")],
        )
    };
    let before = opt_outs();
    let again = client.record_outcome(opt_out).await.unwrap().into_inner();
    assert_eq!(again.suppression_request_id, "opt-out/opt-1");
    assert_eq!(opt_outs(), before);
    assert!(before >= 1.0);
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_reserves_like_grpc() {
    let daemon = start().await;
    // Counters are process-wide (other tests run daemons too): deltas, at least.
    let requests = |request: &str, result: &str| {
        metric(
            "suppressd_attempt_requests_total",
            &[("request", request), ("result", result)],
        )
    };
    let counted = [
        ("reserve", "granted", 3.0),
        ("reserve", "refused", 1.0),
        ("reserve", "duplicate", 1.0),
        ("commit", "done", 1.0),
        ("commit", "error", 1.0),
    ];
    let before: Vec<f64> = counted.iter().map(|(q, r, _)| requests(q, r)).collect();
    let mut http = Connection::open(daemon.handle.http_addr.unwrap());
    let body = |call: &str| {
        format!(
            "{{\"call_id\":\"{call}\",\"number\":\"{}\",\"campaign\":\"capped\"}}",
            e164(CLEAN)
        )
    };
    for (i, left) in [2, 1, 0].into_iter().enumerate() {
        let (status, answer) = http.send("POST", "/v1/attempts/reserve", &body(&format!("h{i}")));
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            (answer["granted"].as_bool(), answer["remaining"].as_u64()),
            (Some(true), Some(left))
        );
    }
    let (status, answer) = http.send("POST", "/v1/attempts/reserve", &body("h3"));
    assert_eq!(status, 200);
    assert_eq!(answer["granted"], false);
    assert_eq!(answer["reasons"][0], "ATTEMPT_LIMIT");
    assert!(answer["next_allowed_at_unix_ms"].as_i64().unwrap() > 0);
    let (status, answer) = http.send("POST", "/v1/attempts/commit", "{\"call_id\":\"h0\"}");
    assert_eq!((status, answer["stage"].as_str()), (200, Some("committed")));
    let (status, _) = http.send("POST", "/v1/attempts/commit", "{\"call_id\":\"nope\"}");
    assert_eq!(status, 404);
    let (status, answer) = http.send(
        "GET",
        &format!("/v1/check?number=%2B{CLEAN}&campaign=capped"),
        "",
    );
    assert_eq!(
        (status, answer["attempts_remaining"].as_u64()),
        (200, Some(0))
    );
    assert_eq!(answer["reasons"][0], "ATTEMPT_LIMIT");
    // Nothing in the answer carries the number.
    let (_, answer) = http.send("POST", "/v1/attempts/reserve", &body("h0"));
    assert!(!answer.to_string().contains(&CLEAN.to_string()), "{answer}");
    for ((request, result, at_least), before) in counted.iter().zip(before) {
        let delta = requests(request, result) - before;
        assert!(delta >= *at_least, "{request}/{result}: {delta}");
    }
    suppressd::server::gauges::refresh(&daemon.handle.state, Some(&daemon.handle.mutator));
    let (status, body) = http.send("GET", "/metrics", "");
    assert_eq!(status, 200);
    let text = body.as_str().unwrap();
    assert!(text.contains("\nsuppressd_attempt_calls "), "{text}");
    assert!(!text.contains(&CLEAN.to_string()));
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_then_restart_keeps_the_attempt_log_and_a_damaged_state_file_is_refused() {
    let daemon = start().await;
    let mut client = daemon.client().await;
    for i in 0..3 {
        assert!(reserve(&mut client, &format!("k{i}"), CLEAN).await.granted);
    }
    client
        .commit_attempt(AttemptRequest {
            call_id: "k0".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut admin = admin_client(&daemon).await;
    admin.compact(CompactRequest {}).await.unwrap();
    let data = daemon.data_dir();
    assert!(data.join("attempts.state").exists());
    let dir = daemon.stop().await;
    // The journal segments holding the reservations are gone: the state file carries them.
    let daemon = start_in(dir).await;
    let mut client = daemon.client().await;
    let refused = reserve(&mut client, "k3", CLEAN).await;
    assert!(!refused.granted, "{refused:?}");
    let retry = reserve(&mut client, "k1", CLEAN).await;
    assert!(retry.duplicate && retry.granted);
    let dir = daemon.stop().await;
    // A damaged state file: the daemon refuses to start, naming file and offset.
    let path = dir.path().join("data/attempts.state");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let config = suppressd::config::Config::parse(&config(), "test.toml", dir.path()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = match suppressd::server::start(config, listener, async {}).await {
        Ok(_) => panic!("started on a damaged attempt state file"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("attempts.state") && error.contains("offset"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_between_reserve_and_commit_forgets_nothing_granted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(dir.path().join("erased.key"), crate::server::KEY_TEXT).unwrap();
    write_all_sets(&data, Day::today());
    let capped = CAPPED.replace("attempt_ttl_seconds = 2", "attempt_ttl_seconds = 600");
    let (mut daemon, mut client, _) = start_ready_with(dir.path(), &capped).await;
    let mut granted = Vec::new();
    for i in 0..3 {
        let answer = reserve(&mut client, &format!("s{i}"), CLEAN).await;
        assert!(answer.granted);
        granted.push(answer);
    }
    // Killed between reserve and commit: nothing shut down cleanly.
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    let (mut daemon, mut client, _) = start_ready_with(dir.path(), &capped).await;
    assert!(!reserve(&mut client, "s3", CLEAN).await.granted);
    for first in &granted {
        let retry = reserve(&mut client, &first.call_id, CLEAN).await;
        assert_eq!(
            (retry.granted, retry.remaining, retry.duplicate),
            (true, first.remaining, true)
        );
        let committed = client
            .commit_attempt(AttemptRequest {
                call_id: first.call_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(committed.stage, "committed");
    }
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_fleet_hosts_with_fifty_concurrent_reservations_each_grant_three_between_them() {
    let Some(nats) = Nats::single().await else {
        eprintln!("skipped: no nats-server binary");
        return;
    };
    let mut hosts = Vec::new();
    for name in ["cap-a", "cap-b"] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        write_all_sets(&data, Day(Day::today().0 - 1));
        write_fleet_key(dir.path());
        let text = config() + &fleet_section(&nats.urls(), name, "");
        let daemon = TestDaemon::start_in(dir, &text).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !daemon.handle.state.fleet.get().unwrap().following() {
            assert!(Instant::now() < deadline, "{name} never connected to NATS");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        hosts.push(daemon);
    }
    let mut tasks = Vec::new();
    for (h, daemon) in hosts.iter().enumerate() {
        for i in 0..50 {
            let addr = daemon.addr;
            tasks.push(tokio::spawn(async move {
                let mut client = SuppressionClient::connect(format!("http://{addr}"))
                    .await
                    .unwrap();
                reserve(&mut client, &format!("f{h}-{i}"), CLEAN).await
            }));
        }
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    let granted: Vec<&AttemptResponse> = answers.iter().filter(|a| a.granted).collect();
    assert_eq!(granted.len(), 3, "{answers:?}");
    // Every host holds the same decisions: a retry on the other host gets the first answer.
    for first in &granted {
        let other = if first.call_id.starts_with("f0") {
            &hosts[1]
        } else {
            &hosts[0]
        };
        let retry = reserve(&mut other.client().await, &first.call_id, CLEAN).await;
        assert!(retry.granted && retry.duplicate, "{retry:?}");
        assert_eq!(retry.remaining, first.remaining);
    }
    for daemon in hosts {
        daemon.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reserves_and_checks_at_an_instant() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    write_all_sets(&dir.path().join("data"), Day::today());
    let text = config()
        + "\n[tenants.acme.campaigns.windows]\nblock_sets = [\"us-dnc\"]\n\
           calling_windows = [\"us-federal\", \"us-states\"]\n";
    let daemon = TestDaemon::start_in(dir, &text).await;
    let grpc = format!("http://{}", daemon.addr);
    let number = e164(CLEAN);
    for (call, granted) in [("a1", true), ("a2", true), ("a3", true), ("a4", false)] {
        let (code, stdout, stderr) = crate::cli_remote::suppressd(
            [
                "attempt",
                "--server",
                &grpc,
                "reserve",
                "--campaign",
                "capped",
                "--call-id",
                call,
                &number,
            ]
            .map(String::from)
            .to_vec(),
        )
        .await;
        assert_eq!(code, Some(0), "{stderr}");
        let answer: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(answer["granted"], granted, "{stdout}");
        assert!(
            !stdout.contains(&CLEAN.to_string()),
            "the number in the clear: {stdout}"
        );
        if !granted {
            assert_eq!(answer["reasons"][0], "ATTEMPT_LIMIT");
            assert!(answer["next_allowed_at"].as_str().unwrap().ends_with('Z'));
        }
    }
    // check --at: a Florida number at 20:30 local time is outside its window.
    let (code, stdout, stderr) = crate::cli_remote::suppressd(
        [
            "check",
            "--server",
            &grpc,
            "--campaign",
            "windows",
            "--json",
            "--at",
            "2026-06-15T20:30:00-04:00",
            "+13055550123",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let answer: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(answer["reasons"][0], "OUTSIDE_CALLING_WINDOW", "{stdout}");
    assert_eq!(
        answer["next_allowed_at_unix_ms"], 1_781_611_200_000i64,
        "{stdout}"
    );
    // An instant without an offset is refused (never local time).
    let (code, _, stderr) = crate::cli_remote::suppressd(
        [
            "check",
            "--server",
            &grpc,
            "--at",
            "2026-06-15T20:30:00",
            "+13055550123",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("RFC 3339"), "{stderr}");
    daemon.shutdown().await;
}
