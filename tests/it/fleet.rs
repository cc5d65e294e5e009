//! A fleet that agrees: daemons on port 0 with their own data directories, real NATS
//! JetStream servers (`nats.rs`), no mocks. An opt-out or erasure taken on one host is in force
//! on every host; a daemon killed mid-stream catches up; losing one NATS node of three loses
//! nothing; the same request id on two hosts at once is applied once; NATS going away fails
//! closed after `max_lag_seconds`; the stream never carries a number in the clear.

use crate::admin::{admin_client as admin, suppress};
use crate::crash::{numbers_of, start_ready_env, start_ready_with, verify_in_force};
use crate::nats::{Nats, fleet_section, write_fleet_key};
use crate::server::{CLEAN, CONFIG, CONSENTED, TestDaemon, check, e164, reasons, write_all_sets};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use suppressd::engine::date::Day;
use suppressd::proto::admin::admin_client::AdminClient;
use suppressd::proto::admin::{EraseRequest, SuppressRequest};
use suppressd::proto::suppression_client::SuppressionClient;
use suppressd::proto::{Reason, Verdict};
use tonic::transport::Channel;

pub(crate) fn fleet_config(nats: &Nats, host: &str, extra: &str) -> String {
    // The lenient campaign allows with a warning while its host lags.
    let lenient = "stale_list = \"allow_with_warning\"\n";
    assert!(CONFIG.contains(lenient));
    CONFIG
        .replace(lenient, &format!("{lenient}fleet_lag = \"allow_with_warning\"\n"))
        .replace(
        "[server]\n",
        "[server]\nadmin_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\ncompact_max_age_seconds = 3600\n",
    ) + &fleet_section(&nats.urls(), host, extra)
}

/// A fleet daemon in this process, with the test sets and the fleet key, connected to NATS.
pub(crate) async fn host(nats: &Nats, name: &str, extra: &str) -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_all_sets(&data, Day(Day::today().0 - 1));
    write_fleet_key(dir.path());
    let daemon = TestDaemon::start_in(dir, &fleet_config(nats, name, extra)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !daemon.handle.state.fleet.get().unwrap().following() {
        assert!(
            Instant::now() < deadline,
            "host {name} never connected to NATS"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon
}

/// Waits until `number` gets `verdict` on `campaign`; returns how long that took.
async fn wait_verdict(
    client: &mut SuppressionClient<Channel>,
    number: u64,
    campaign: &str,
    verdict: Verdict,
) -> Duration {
    let started = Instant::now();
    loop {
        if check(client, &e164(number), campaign).await.verdict == verdict as i32 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{number} never became {verdict:?} on {campaign}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opt_outs_and_erasures_on_one_host_are_in_force_on_every_host() {
    let Some(nats) = Nats::single().await else {
        return;
    };
    let a = host(&nats, "a", "").await;
    let b = host(&nats, "b", "").await;
    let c = host(&nats, "c", "").await;
    let mut others = [b.client().await, c.client().await];
    for client in &mut others {
        assert_eq!(
            check(client, &e164(CLEAN), "outbound").await.verdict,
            Verdict::Allow as i32
        );
    }
    let acked = admin(&a)
        .await
        .suppress(suppress("fleet-opt-1", &[CLEAN]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((acked.applied, acked.duplicate), (1, false));
    // In force on A when acknowledged, then on B and C.
    let mut on_a = a.client().await;
    let now = check(&mut on_a, &e164(CLEAN), "outbound").await;
    assert_eq!(reasons(&now.reasons), [Reason::InternalDnc]);
    for (client, name) in others.iter_mut().zip(["b", "c"]) {
        let took = wait_verdict(client, CLEAN, "outbound", Verdict::Block).await;
        eprintln!("opt-out on a -> BLOCK on {name}: {took:?} after the ack");
        let answer = check(client, &e164(CLEAN), "outbound").await;
        assert_eq!(reasons(&answer.reasons), [Reason::InternalDnc]);
    }
    let erased = admin(&a)
        .await
        .erase(EraseRequest {
            tenant: "acme".into(),
            number: e164(CONSENTED),
            request_id: "fleet-erase-1".into(),
            ..EraseRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!erased.duplicate);
    for client in &mut others {
        wait_verdict(client, CONSENTED, "outbound", Verdict::Block).await;
        let answer = check(client, &e164(CONSENTED), "outbound").await;
        assert_eq!(reasons(&answer.reasons), [Reason::Erased]);
        let consent = check(client, &e164(CONSENTED), "consented").await;
        assert_eq!(consent.verdict, Verdict::Block as i32, "consent removed");
    }
    // The request ledger is the fleet's: a retry through another host is a repeat, and the id
    // reused for another number is refused there too.
    let repeat = admin(&b)
        .await
        .suppress(suppress("fleet-opt-1", &[CLEAN]))
        .await
        .unwrap()
        .into_inner();
    assert!(repeat.duplicate);
    let reused = admin(&c)
        .await
        .suppress(suppress("fleet-opt-1", &[CLEAN + 100]))
        .await
        .unwrap_err();
    assert_eq!(reused.code(), tonic::Code::AlreadyExists, "{reused:?}");
    for daemon in [a, b, c] {
        daemon.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_subscriber_on_the_stream_sees_no_number_in_the_clear() {
    let Some(nats) = Nats::single().await else {
        return;
    };
    let a = host(&nats, "a", "").await;
    let raw = async_nats::connect(nats.urls()[0].clone()).await.unwrap();
    let mut messages = raw.subscribe("suppressd.test.>").await.unwrap();
    raw.flush().await.unwrap();
    let mut admin = admin(&a).await;
    admin.suppress(suppress("clear-1", &[CLEAN])).await.unwrap();
    admin
        .erase(EraseRequest {
            tenant: "acme".into(),
            number: e164(CONSENTED),
            request_id: "clear-2".into(),
            ..EraseRequest::default()
        })
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        // Generous: under a loaded machine (the whole suite on 2 cores) delivery has taken >10 s.
        let message = tokio::time::timeout(Duration::from_secs(30), futures_next(&mut messages))
            .await
            .expect("the raw subscriber saw both mutations")
            .unwrap();
        assert_eq!(message.subject.as_str(), "suppressd.test.acme");
        let mut bytes = message.payload.to_vec();
        for (name, values) in message.headers.iter().flat_map(|h| h.iter()) {
            bytes.extend_from_slice(name.to_string().as_bytes());
            for value in values {
                bytes.extend_from_slice(value.as_str().as_bytes());
            }
        }
        seen.push(bytes);
    }
    for bytes in &seen {
        for number in [CLEAN, CONSENTED] {
            let text = number.to_string();
            let forms: [&[u8]; 4] = [
                text.as_bytes(),
                &text.as_bytes()[1..],
                &number.to_le_bytes(),
                &number.to_be_bytes(),
            ];
            for form in forms {
                assert!(
                    !bytes.windows(form.len()).any(|w| w == form),
                    "a number's bytes are on the stream in the clear"
                );
            }
        }
    }
    a.shutdown().await;
}

async fn futures_next(subscriber: &mut async_nats::Subscriber) -> Option<async_nats::Message> {
    use tokio_stream::StreamExt;
    subscriber.next().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_id_sent_to_two_hosts_at_once_is_applied_once() {
    let Some(nats) = Nats::single().await else {
        return;
    };
    let a = host(&nats, "a", "").await;
    let b = host(&nats, "b", "").await;
    let (admin_a, admin_b) = (admin(&a).await, admin(&b).await);
    const IDS: u64 = 20;
    let base = 13_205_000_000u64;
    let mut calls = Vec::new();
    for i in 0..IDS {
        // Same id, other numbers: one wins everywhere, the other is refused.
        let (mut to_a, mut to_b) = (admin_a.clone(), admin_b.clone());
        let id = format!("twice-{i}");
        let (x, y) = (base + 2 * i, base + 2 * i + 1);
        calls.push(tokio::spawn(async move {
            let (first, second) = tokio::join!(
                to_a.suppress(suppress(&id, &[x])),
                to_b.suppress(suppress(&id, &[y]))
            );
            (
                first.map(|r| r.into_inner()),
                second.map(|r| r.into_inner()),
            )
        }));
    }
    let mut outcomes = Vec::new();
    for call in calls {
        outcomes.push(call.await.unwrap());
    }
    let (mut on_a, mut on_b) = (a.client().await, b.client().await);
    for (i, (first, second)) in outcomes.into_iter().enumerate() {
        let i = i as u64;
        let (x, y) = (base + 2 * i, base + 2 * i + 1);
        let winner = match (&first, &second) {
            (Ok(_), Err(refused)) => {
                assert_eq!(refused.code(), tonic::Code::AlreadyExists, "{refused:?}");
                x
            }
            (Err(refused), Ok(_)) => {
                assert_eq!(refused.code(), tonic::Code::AlreadyExists, "{refused:?}");
                y
            }
            other => panic!("id twice-{i}: both or neither acknowledged: {other:?}"),
        };
        let loser = if winner == x { y } else { x };
        for client in [&mut on_a, &mut on_b] {
            wait_verdict(client, winner, "outbound", Verdict::Block).await;
            assert_eq!(
                check(client, &e164(loser), "outbound").await.verdict,
                Verdict::Allow as i32,
                "id twice-{i}: the refused request was applied"
            );
        }
    }
    // Same id, same request on both hosts at once: both answered, one of them as a repeat.
    let (mut to_a, mut to_b) = (admin_a.clone(), admin_b.clone());
    let (first, second) = tokio::join!(
        to_a.suppress(suppress("same-payload", &[base + 99])),
        to_b.suppress(suppress("same-payload", &[base + 99]))
    );
    let (first, second) = (first.unwrap().into_inner(), second.unwrap().into_inner());
    assert!(first.duplicate ^ second.duplicate, "{first:?} {second:?}");
    for daemon in [a, b] {
        daemon.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_mid_stream_catches_up_with_nothing_acknowledged_missing() {
    let Some(nats) = Nats::single().await else {
        return;
    };
    let follower = host(&nats, "follower", "").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("erased.key"), crate::server::KEY_TEXT).unwrap();
    write_fleet_key(dir.path());
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    write_all_sets(&dir.path().join("data"), Day::today());
    let section = fleet_section(&nats.urls(), "killed", "");
    let outcomes: Arc<Mutex<HashMap<u64, bool>>> = Arc::default();
    let mut next = 0u64;
    for cycle in 0..3u64 {
        let (mut daemon, client, admin) = start_ready_with(dir.path(), &section).await;
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
                        request_id: format!("kill-{mutation}"),
                        ..SuppressRequest::default()
                    };
                    match admin.suppress(request).await {
                        Ok(_) => {
                            outcomes.lock().unwrap().insert(mutation, true);
                        }
                        // Refused while still connecting: try the next one.
                        Err(status) if status.code() == tonic::Code::Unavailable => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(_) => return,
                    }
                }
            }));
        }
        next += 4 * 10_000;
        tokio::time::sleep(Duration::from_millis(700 + 300 * cycle)).await;
        daemon.child.kill().unwrap();
        daemon.child.wait().unwrap();
        for writer in writers {
            writer.await.unwrap();
        }
        // The killed host, restarted, and the other host hold every acknowledged mutation.
        let (mut restarted, mut client_again, _) = start_ready_with(dir.path(), &section).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut on_follower = follower.client().await;
        loop {
            let complete = verify_in_force(&mut client_again, &outcomes, false).await
                && verify_in_force(&mut on_follower, &outcomes, false).await;
            if complete {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "acknowledged mutations missing after 20 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        verify_in_force(&mut client_again, &outcomes, true).await;
        verify_in_force(&mut on_follower, &outcomes, true).await;
        drop(client);
        restarted.child.kill().unwrap();
        restarted.child.wait().unwrap();
    }
    let acknowledged = outcomes.lock().unwrap().values().filter(|a| **a).count();
    assert!(
        acknowledged > 30,
        "only {acknowledged} mutations acknowledged"
    );
    follower.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_nats_node_of_three_loses_no_acknowledged_mutation() {
    let Some(mut nats) = Nats::cluster_of(3).await else {
        return;
    };
    let a = host(&nats, "a", "replicas = 3\n").await;
    let b = host(&nats, "b", "replicas = 3\n").await;
    let outcomes: Arc<Mutex<HashMap<u64, bool>>> = Arc::default();
    let acked_after_kill = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Writers run until 50 mutations were acknowledged after the kill (a new stream leader
    // is elected within seconds, slower when the whole suite loads the 2 cores), or 60 s.
    let stop_at = Instant::now() + Duration::from_secs(60);
    let mut writers = Vec::new();
    for writer in 0..3u64 {
        let mut admin = admin(&a).await;
        let (outcomes, acked_after_kill, killed) =
            (outcomes.clone(), acked_after_kill.clone(), killed.clone());
        writers.push(tokio::spawn(async move {
            for mutation in writer * 100_000.. {
                if Instant::now() > stop_at
                    || acked_after_kill.load(std::sync::atomic::Ordering::Acquire) >= 50
                {
                    return;
                }
                outcomes.lock().unwrap().insert(mutation, false);
                let request = SuppressRequest {
                    tenant: "acme".into(),
                    numbers: numbers_of(mutation).iter().map(|&n| e164(n)).collect(),
                    request_id: format!("quorum-{mutation}"),
                    ..SuppressRequest::default()
                };
                match admin.suppress(request).await {
                    Ok(_) => {
                        outcomes.lock().unwrap().insert(mutation, true);
                        if killed.load(std::sync::atomic::Ordering::Acquire) {
                            acked_after_kill.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                        }
                    }
                    Err(status) => {
                        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nats.nodes[1].kill();
    killed.store(true, std::sync::atomic::Ordering::Release);
    for writer in writers {
        writer.await.unwrap();
    }
    let after = acked_after_kill.load(std::sync::atomic::Ordering::Acquire);
    assert!(
        after > 10,
        "only {after} mutations acknowledged after a node was killed"
    );
    for daemon in [&a, &b] {
        let mut client = daemon.client().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !verify_in_force(&mut client, &outcomes, false).await {
            assert!(Instant::now() < deadline, "acknowledged mutations missing");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for daemon in [a, b] {
        daemon.shutdown().await;
    }
}

async fn health_of(daemon: &TestDaemon) -> i32 {
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        Channel::from_shared(format!("http://{}", daemon.addr))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "suppressd.v1.Suppression".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

/// The status line of `GET /readyz`.
fn readyz(daemon: &TestDaemon) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(daemon.handle.http_addr.unwrap()).unwrap();
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nats_a_host_serves_until_max_lag_then_fails_closed_and_recovers() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let Some(mut nats) = Nats::single().await else {
        return;
    };
    let a = host(&nats, "a", "max_lag_seconds = 2\n").await;
    let b = host(&nats, "b", "max_lag_seconds = 2\n").await;
    let (mut admin_a, mut admin_b) = (admin(&a).await, admin(&b).await);
    let (mut on_a, mut on_b) = (a.client().await, b.client().await);
    admin_a
        .suppress(suppress("before-1", &[CLEAN]))
        .await
        .unwrap();
    wait_verdict(&mut on_b, CLEAN, "outbound", Verdict::Block).await;
    let serving = ServingStatus::Serving as i32;
    let deadline = Instant::now() + Duration::from_secs(10);
    while health_of(&a).await != serving {
        assert!(Instant::now() < deadline, "never SERVING");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nats.nodes[0].kill();
    let stopped = Instant::now();
    // Within max_lag: checks answer from what the host has; mutations are refused.
    let answer = check(&mut on_a, &e164(CONSENTED + 1000), "outbound").await;
    if stopped.elapsed() < Duration::from_millis(1500) {
        assert_eq!(answer.verdict, Verdict::Allow as i32);
    }
    let refused = admin_a
        .suppress(suppress("during-1", &[CLEAN + 1]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    // Past max_lag: BLOCK with FLEET_LAG, NOT_SERVING, /readyz 503, on both hosts.
    for daemon in [&a, &b] {
        let mut client = daemon.client().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = check(&mut client, &e164(CONSENTED + 1000), "outbound").await;
            if answer.verdict == Verdict::Block as i32 {
                assert_eq!(reasons(&answer.reasons), [Reason::FleetLag]);
                let lenient = check(&mut client, &e164(CONSENTED + 1000), "lenient").await;
                assert_eq!(lenient.verdict, Verdict::Allow as i32);
                assert!(
                    lenient
                        .warnings
                        .iter()
                        .any(|w| w.contains("lags behind the fleet")),
                    "{:?}",
                    lenient.warnings
                );
                break;
            }
            assert!(Instant::now() < deadline, "never FLEET_LAG");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(stopped.elapsed() >= Duration::from_secs(2));
        let deadline = Instant::now() + Duration::from_secs(5);
        while health_of(daemon).await != ServingStatus::NotServing as i32 {
            assert!(
                Instant::now() < deadline,
                "health stayed SERVING while lagging"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(readyz(daemon).contains(" 503 "), "{}", readyz(daemon));
        let refused = admin(daemon)
            .await
            .suppress(suppress("during-2", &[CLEAN + 2]))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    }
    // NATS back: caught up, SERVING, nothing lost, mutations flow again.
    nats.restart(0).await;
    for daemon in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while health_of(daemon).await != serving {
            assert!(Instant::now() < deadline, "never SERVING again");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(readyz(daemon).contains(" 200 "), "{}", readyz(daemon));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let acked = loop {
        match admin_b.suppress(suppress("after-1", &[CLEAN + 3])).await {
            Ok(acked) => break acked.into_inner(),
            Err(status) if status.code() == tonic::Code::Unavailable => {
                assert!(
                    Instant::now() < deadline,
                    "mutations still refused: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    };
    assert_eq!(acked.applied, 1);
    for client in [&mut on_a, &mut on_b] {
        wait_verdict(client, CLEAN + 3, "outbound", Verdict::Block).await;
        assert_eq!(
            reasons(&check(client, &e164(CLEAN), "outbound").await.reasons),
            [Reason::InternalDnc]
        );
        assert_eq!(
            check(client, &e164(CONSENTED + 1000), "outbound")
                .await
                .verdict,
            Verdict::Allow as i32
        );
    }
    for daemon in [a, b] {
        daemon.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_delivered_but_never_acked_before_a_crash_are_not_skipped() {
    let Some(nats) = Nats::single().await else {
        return;
    };
    let a = host(&nats, "a", "").await;
    let mut admin_a = admin(&a).await;
    let numbers: Vec<u64> = (0..10).map(|i| 13_305_000_000 + i).collect();
    for (i, &number) in numbers.iter().enumerate() {
        admin_a
            .suppress(suppress(&format!("crash-window-{i}"), &[number]))
            .await
            .unwrap();
    }
    // Host b's durable consumer as a crash leaves it: the first messages delivered, never
    // acked (the process died before its fsync), so JetStream holds them back for ack_wait.
    let raw =
        async_nats::jetstream::new(async_nats::connect(nats.urls()[0].clone()).await.unwrap());
    let stream = raw.get_stream("suppressd-test").await.unwrap();
    let consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("b".into()),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::All,
            ack_wait: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut delivered = consumer.fetch().max_messages(5).messages().await.unwrap();
    let mut held = 0;
    while futures_next_js(&mut delivered).await.is_some() {
        held += 1;
    }
    assert_eq!(held, 5);
    let b = host(&nats, "b", "").await;
    let mut on_b = b.client().await;
    for &number in &numbers {
        let took = wait_verdict(&mut on_b, number, "outbound", Verdict::Block).await;
        assert!(
            took < Duration::from_secs(5),
            "{number} took {took:?} to arrive"
        );
    }
    for daemon in [a, b] {
        daemon.shutdown().await;
    }
}

async fn futures_next_js(
    batch: &mut async_nats::jetstream::consumer::pull::Batch,
) -> Option<async_nats::jetstream::Message> {
    use tokio_stream::StreamExt;
    batch.next().await.map(|message| message.unwrap())
}

/// `[fleet]` is checked, and its key and credential files loaded, before any port is bound:
/// each fault exits 64 naming the config file, the key and the file (no NATS server needed;
/// the held gRPC port would exit 1 were it tried).
#[test]
fn fleet_config_faults_and_unreadable_fleet_files_exit_64_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("erased.key"), crate::server::KEY_TEXT).unwrap();
    write_fleet_key(dir.path());
    std::fs::write(
        dir.path().join("short.key"),
        crate::server::KEY_TEXT.replace("acme-erased-1", "fleet-short"),
    )
    .unwrap();
    std::fs::write(dir.path().join("garbage.creds"), "not a creds file\n").unwrap();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let base = CONFIG.replace(
        "grpc_listen = \"127.0.0.1:0\"",
        &format!("grpc_listen = \"127.0.0.1:{port}\""),
    );
    let fleet = |extra: &str| {
        format!(
            "\n[fleet]\nservers = [\"nats://127.0.0.1:1\"]\nname = \"t\"\nhost_id = \"h\"\n{extra}"
        )
    };
    for (section, key, names) in [
        (
            fleet("key_files = [\"missing.key\"]\n"),
            "fleet",
            "missing.key",
        ),
        (fleet("key_files = [\"short.key\"]\n"), "fleet", "64 hex"),
        (
            fleet("key_files = [\"fleet.key\"]\ntoken_file = \"missing.token\"\n"),
            "fleet",
            "missing.token",
        ),
        (
            fleet("key_files = [\"fleet.key\"]\ncreds_file = \"garbage.creds\"\n"),
            "fleet",
            "garbage.creds",
        ),
        (
            fleet("key_files = [\"fleet.key\"]\nreplicas = 0\n"),
            "fleet.replicas",
            "1..=5",
        ),
        (fleet("key_files = []\n"), "fleet.key_files", "fleet key"),
    ] {
        std::fs::write(dir.path().join("fleet.toml"), format!("{base}{section}")).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_suppressd"))
            .args(["serve", "--config"])
            .arg(dir.path().join("fleet.toml"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{key}: {stderr}");
        assert!(
            stderr.contains("fleet.toml")
                && stderr.contains(&format!(": {key}: "))
                && stderr.contains(names),
            "{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_mutation_reaches_every_host_and_survives_compaction_and_restart() {
    use suppressd::proto::admin::{ApplyChangesRequest, CompactRequest, ConsentRequest};
    let Some(nats) = Nats::single().await else {
        return;
    };
    let a = host(&nats, "a", "").await;
    let b = host(&nats, "b", "").await;
    let mut admin_a = admin(&a).await;
    let consent = |id: &str| ConsentRequest {
        tenant: "acme".into(),
        numbers: vec![e164(CLEAN)],
        request_id: id.into(),
        ..ConsentRequest::default()
    };
    admin_a.grant_consent(consent("kind-grant")).await.unwrap();
    // A registry change list has no tenant: it goes to the `_global` subject.
    admin_a
        .apply_changes(ApplyChangesRequest {
            set: "us-dnc".into(),
            additions: vec![CLEAN + 10],
            deletions: vec![crate::server::REGISTRY],
            request_id: "kind-changes".into(),
            source_date: Day::today().to_string(),
        })
        .await
        .unwrap();
    admin_a
        .suppress(suppress("kind-suppress", &[CLEAN + 20]))
        .await
        .unwrap();
    let mut unsuppress = suppress("kind-unsuppress", &[crate::server::INTERNAL]);
    unsuppress.reason = String::new();
    admin_a.unsuppress(unsuppress).await.unwrap();
    // Compaction on B folds what it applied into snapshots and deletes journal segments; the
    // applied stream sequence survives in fleet.applied.
    let mut admin_b = admin(&b).await;
    let mut on_b = b.client().await;
    wait_verdict(
        &mut on_b,
        crate::server::INTERNAL,
        "outbound",
        Verdict::Allow,
    )
    .await;
    assert_eq!(
        check(&mut on_b, &e164(CLEAN), "consented").await.verdict,
        Verdict::Allow as i32,
        "the grant reached B"
    );
    // B applied all A acknowledged (A answers only once it applied each itself).
    let stream_end = a.handle.state.fleet.get().unwrap().applied();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while b.handle.state.fleet.get().unwrap().applied() < stream_end
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    admin_b.compact(CompactRequest {}).await.unwrap();
    let applied = b.handle.state.fleet.get().unwrap().applied();
    assert_eq!(applied, stream_end, "B applied what A acknowledged");
    assert!(b.data_dir().join("fleet.applied").exists());
    let dir = b.stop().await;
    admin_a
        .revoke_consent(consent("kind-revoke"))
        .await
        .unwrap();
    let b = TestDaemon::start_in(dir, &fleet_config(&nats, "b", "")).await;
    assert!(b.handle.state.fleet.get().unwrap().applied() >= applied);
    let mut on_b = b.client().await;
    // Applied after the restart, from where it stopped: the revocation.
    wait_verdict(&mut on_b, CLEAN, "consented", Verdict::Block).await;
    for (number, campaign, verdict) in [
        (CLEAN + 10, "outbound", Verdict::Block),
        (crate::server::REGISTRY, "outbound", Verdict::Allow),
        (CLEAN + 20, "outbound", Verdict::Block),
        (crate::server::INTERNAL, "outbound", Verdict::Allow),
    ] {
        assert_eq!(
            check(&mut on_b, &e164(number), campaign).await.verdict,
            verdict as i32,
            "{number} on {campaign}"
        );
    }
    // Nothing applied twice: B's journal holds the revocation alone after the restart. The
    // overlay (what the check above saw) changes in the journal's completion, a moment before
    // the follower moves its applied sequence, so wait for the sequence, then compare.
    let status = b.handle.state.fleet.get().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while status.applied() < applied + 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(status.applied(), applied + 1);
    for daemon in [a, b] {
        daemon.shutdown().await;
    }
}

/// Host "a" (max_lag_seconds 2) with three Suppresses applied (stream sequences 1-3), then
/// its stream deleted under it through a raw client.
async fn host_whose_stream_is_deleted(nats: &Nats) -> (TestDaemon, AdminClient<Channel>) {
    let a = host(nats, "a", "max_lag_seconds = 2\n").await;
    let mut admin_a = admin(&a).await;
    for i in 0..3u64 {
        admin_a
            .suppress(suppress(&format!("old-stream-{i}"), &[CLEAN + i]))
            .await
            .unwrap();
    }
    let raw =
        async_nats::jetstream::new(async_nats::connect(nats.urls()[0].clone()).await.unwrap());
    raw.delete_stream("suppressd-test").await.unwrap();
    (a, admin_a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_deleted_under_the_fleet_is_not_followed_and_fails_closed() {
    let Some(nats) = Nats::single().await else {
        return;
    };
    // The stream goes away and comes back empty (an operator, a wiped store): its sequences
    // 1, 2, 3 would look applied to this host.
    let (a, mut admin_a) = host_whose_stream_is_deleted(&nats).await;
    let mut on_a = a.client().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = check(&mut on_a, &e164(CONSENTED + 1000), "outbound").await;
        if answer.verdict == Verdict::Block as i32 {
            assert_eq!(reasons(&answer.reasons), [Reason::FleetLag]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a replaced stream was followed as if applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = admin_a
        .suppress(suppress("new-stream-1", &[CLEAN + 50]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    // What it had applied stays in force.
    assert_eq!(
        reasons(&check(&mut on_a, &e164(CLEAN), "outbound").await.reasons),
        [Reason::InternalDnc, Reason::FleetLag]
    );
    a.shutdown().await;
}

/// A follower puts a message in force before its journal fsync (the stream is the durable
/// copy) and acks it only after: killed in between, it restarts, is redelivered what it had
/// not made durable, and holds every acknowledged mutation, a suppress then unsuppress of one
/// number included. The follower's fsync is held 3 s (a debug-build test hook), so on code
/// that applies only after the fsync the first assertion fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_between_overlay_apply_and_fsync_loses_nothing() {
    let Some(nats) = Nats::single().await else {
        return;
    };
    let a = host(&nats, "a", "").await;
    let mut admin_a = admin(&a).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("erased.key"), crate::server::KEY_TEXT).unwrap();
    write_fleet_key(dir.path());
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    write_all_sets(&dir.path().join("data"), Day::today());
    let section = fleet_section(&nats.urls(), "slow", "");
    let slow_fsync = [("SUPPRESSD_TEST_JOURNAL_FSYNC_DELAY_MS", "3000")];
    let (mut follower, mut on_follower, _) =
        start_ready_env(dir.path(), &section, &slow_fsync).await;
    // The follower has its consumer once a first mutation reaches it.
    admin_a
        .suppress(suppress("before-fsync-warmup", &[CLEAN + 900]))
        .await
        .unwrap();
    wait_verdict(&mut on_follower, CLEAN + 900, "outbound", Verdict::Block).await;
    let numbers: Vec<u64> = (0..5).map(|i| 13_306_000_000 + i).collect();
    for (i, &number) in numbers.iter().enumerate() {
        admin_a
            .suppress(suppress(&format!("before-fsync-{i}"), &[number]))
            .await
            .unwrap();
        // In force on the follower long before its 3 s fsync could have finished.
        let took = wait_verdict(&mut on_follower, number, "outbound", Verdict::Block).await;
        assert!(
            took < Duration::from_millis(1500),
            "{number} took {took:?} to be in force on the follower (waited for its fsync)"
        );
    }
    // Suppressed and then unsuppressed while neither record is durable on the follower.
    let undone = numbers[4];
    admin_a
        .unsuppress(suppress("before-fsync-undo", &[undone]))
        .await
        .unwrap();
    let took = wait_verdict(&mut on_follower, undone, "outbound", Verdict::Allow).await;
    assert!(
        took < Duration::from_millis(1500),
        "unsuppress took {took:?}"
    );
    follower.child.kill().unwrap();
    follower.child.wait().unwrap();
    // Restarted (fsync no longer held): what it had only in force comes back from the stream.
    let (mut restarted, mut on_restarted, _) = start_ready_with(dir.path(), &section).await;
    for &number in &numbers[..4] {
        wait_verdict(&mut on_restarted, number, "outbound", Verdict::Block).await;
    }
    wait_verdict(&mut on_restarted, CLEAN + 900, "outbound", Verdict::Block).await;
    // The unsuppress, last in the stream, wins here as on host a.
    let mut on_a = a.client().await;
    for client in [&mut on_restarted, &mut on_a] {
        assert_eq!(
            check(client, &e164(undone), "outbound").await.verdict,
            Verdict::Allow as i32
        );
        for &number in &numbers[..4] {
            assert_eq!(
                check(client, &e164(number), "outbound").await.verdict,
                Verdict::Block as i32
            );
        }
    }
    // Restarted again without NATS: all of it is in its own journal (its fsync, no longer
    // held, takes milliseconds; the second is margin), served within max_lag_seconds.
    tokio::time::sleep(Duration::from_secs(1)).await;
    restarted.child.kill().unwrap();
    restarted.child.wait().unwrap();
    a.shutdown().await;
    drop(nats);
    let (mut offline, mut on_offline, _) = start_ready_with(dir.path(), &section).await;
    for &number in &numbers[..4] {
        assert_eq!(
            check(&mut on_offline, &e164(number), "outbound")
                .await
                .verdict,
            Verdict::Block as i32,
            "{number} not in the follower's own journal"
        );
    }
    offline.child.kill().unwrap();
    offline.child.wait().unwrap();
}

/// A stream deleted and made again, then grown past what a host applied (another host, new
/// to the fleet, follows it and takes mutations), is told apart by its creation time: the
/// host that applied the old one does not follow it (FLEET_LAG, mutations refused) instead
/// of applying its sequences 4 and 5 and skipping 1 to 3. The RUNBOOK's re-seed (compact,
/// stop, remove fleet.applied and fleet.stream, start) then follows the new stream from 1,
/// keeping what the old one carried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_made_again_and_grown_past_a_host_is_not_followed_until_reseeded() {
    let Some(nats) = Nats::single().await else {
        return;
    };
    let (a, mut admin_a) = host_whose_stream_is_deleted(&nats).await;
    // A new host follows whatever stream it finds (making it if it is missing) and takes
    // five mutations: the new stream's sequences 1 to 5, past a's 3.
    let b = host(&nats, "b", "").await;
    let mut admin_b = admin(&b).await;
    let new_numbers: Vec<u64> = (0..5).map(|i| 13_307_000_000 + i).collect();
    for (i, &number) in new_numbers.iter().enumerate() {
        admin_b
            .suppress(suppress(&format!("new-stream-{i}"), &[number]))
            .await
            .unwrap();
    }
    // Followed, a would apply the new stream's 4 and 5 (past its 3) within a second; it must
    // not, and must fail closed once max_lag_seconds has passed.
    let mut on_a = a.client().await;
    let watched = Instant::now();
    loop {
        let last = check(&mut on_a, &e164(new_numbers[4]), "outbound").await;
        assert!(
            !reasons(&last.reasons).contains(&Reason::InternalDnc),
            "a replaced stream grown past this host was followed from its sequence 4"
        );
        if watched.elapsed() > Duration::from_secs(4) {
            let first = check(&mut on_a, &e164(new_numbers[0]), "outbound").await;
            assert_eq!(first.verdict, Verdict::Block as i32);
            assert_eq!(reasons(&first.reasons), [Reason::FleetLag]);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!a.handle.state.fleet.get().unwrap().following());
    let refused = admin_a
        .suppress(suppress("on-a-meanwhile", &[CLEAN + 50]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    // Re-seed a (RUNBOOK "stream replaced"): compact, stop, remove the two files, start.
    admin_a
        .compact(suppressd::proto::admin::CompactRequest {})
        .await
        .unwrap();
    let dir = a.stop().await;
    for file in ["fleet.applied", "fleet.stream"] {
        std::fs::remove_file(dir.path().join("data").join(file)).unwrap();
    }
    let a = TestDaemon::start_in(dir, &fleet_config(&nats, "a", "max_lag_seconds = 2\n")).await;
    let mut on_a = a.client().await;
    for &number in &new_numbers {
        wait_verdict(&mut on_a, number, "outbound", Verdict::Block).await;
    }
    for i in 0..3u64 {
        assert_eq!(
            reasons(&check(&mut on_a, &e164(CLEAN + i), "outbound").await.reasons),
            [Reason::InternalDnc],
            "the old stream's mutations kept through the re-seed"
        );
    }
    for daemon in [a, b] {
        daemon.shutdown().await;
    }
}

/// Two daemons with one host id would share one durable consumer (each seeing part of the
/// stream). The second, with its own data directory, finds the id claimed in the hosts
/// bucket: it does not follow, answers FLEET_LAG at once and refuses mutations, while the
/// first carries on; when the first stops (and frees its claim) the second takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_with_the_same_host_id_waits_until_the_first_stops() {
    let Some(nats) = Nats::single().await else {
        return;
    };
    let first = host(&nats, "twin", "").await;
    let mut admin_first = admin(&first).await;
    admin_first
        .suppress(suppress("twin-1", &[CLEAN]))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_all_sets(&data, Day(Day::today().0 - 1));
    write_fleet_key(dir.path());
    let second = TestDaemon::start_in(dir, &fleet_config(&nats, "twin", "")).await;
    let mut on_second = second.client().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = check(&mut on_second, &e164(CLEAN + 1), "outbound").await;
        if answer.verdict == Verdict::Block as i32 {
            assert_eq!(reasons(&answer.reasons), [Reason::FleetLag]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a second daemon with a host id already held served as that host"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!second.handle.state.fleet.get().unwrap().following());
    let refused = admin(&second)
        .await
        .suppress(suppress("twin-2", &[CLEAN + 2]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    // The first carries on.
    admin_first
        .suppress(suppress("twin-3", &[CLEAN + 3]))
        .await
        .unwrap();
    // Admin Status shows each side of it.
    let status = |admin: &mut AdminClient<Channel>| {
        let mut admin = admin.clone();
        async move {
            admin
                .status(suppressd::proto::admin::AdminStatusRequest {})
                .await
                .unwrap()
                .into_inner()
                .fleet
                .expect("a fleet host reports its fleet")
        }
    };
    let on_first = status(&mut admin_first).await;
    assert_eq!(
        (on_first.name.as_str(), on_first.host_id.as_str()),
        ("test", "twin")
    );
    assert!(on_first.connected && on_first.following && !on_first.refusing && !on_first.lagging);
    assert!(on_first.applied_sequence >= 2, "{on_first:?}");
    assert!(
        on_first.stream_last_sequence >= on_first.applied_sequence - 1,
        "{on_first:?}"
    );
    assert_eq!(on_first.hosts_error, "");
    let listed: Vec<_> = on_first
        .hosts
        .iter()
        .map(|h| (h.host_id.as_str(), h.instance.as_str()))
        .collect();
    assert_eq!(
        listed,
        [("twin", on_first.instance.as_str())],
        "{on_first:?}"
    );
    assert!(on_first.hosts[0].heartbeat_unix_ms > 0 && !on_first.hosts[0].versions.is_empty());
    let of_second = status(&mut admin(&second).await).await;
    assert!(of_second.connected && !of_second.following && of_second.refusing && of_second.lagging);
    assert_ne!(of_second.instance, on_first.instance);
    // The bucket names the holder (record format 1).
    let raw =
        async_nats::jetstream::new(async_nats::connect(nats.urls()[0].clone()).await.unwrap());
    let bucket = raw.get_key_value("suppressd-test-hosts").await.unwrap();
    let entry = bucket.get("twin").await.unwrap().unwrap();
    let record: serde_json::Value = serde_json::from_slice(&entry).unwrap();
    assert_eq!(record["format"], 1, "{record}");
    assert_eq!(record["host_id"], "twin", "{record}");
    assert_eq!(record["instance"].as_str().unwrap().len(), 16, "{record}");
    first.shutdown().await;
    // Freed: the second takes the id and catches up.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = check(&mut on_second, &e164(CLEAN + 3), "outbound").await;
        if reasons(&answer.reasons) == [Reason::InternalDnc] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second daemon never took the freed host id"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    second.shutdown().await;
}

/// The same host restarted after a crash (SIGKILL: its claim not freed, its heartbeat fresh)
/// takes its own entry back at once, by the instance id kept in its data directory, instead
/// of waiting for the claim to expire (30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_restarted_after_a_crash_takes_its_claim_back_at_once() {
    let Some(nats) = Nats::single().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("erased.key"), crate::server::KEY_TEXT).unwrap();
    write_fleet_key(dir.path());
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    write_all_sets(&dir.path().join("data"), Day::today());
    let section = fleet_section(&nats.urls(), "phoenix", "");
    for life in 0..2u64 {
        let started = Instant::now();
        let (mut daemon, _, mut admin) = start_ready_with(dir.path(), &section).await;
        loop {
            match admin
                .suppress(suppress(&format!("phoenix-{life}"), &[CLEAN + life]))
                .await
            {
                Ok(_) => break,
                Err(status) if status.code() == tonic::Code::Unavailable => {}
                Err(status) => panic!("{status:?}"),
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "life {life}: mutations refused for 15 s (its own claim not taken back)"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        daemon.child.kill().unwrap();
        daemon.child.wait().unwrap();
    }
}
