//! Calling windows through the real daemon (gRPC and HTTP): a Florida number refused at 20:30
//! local time with its `next_allowed_at`, the instant and location hints a request carries,
//! UNKNOWN_LOCATION, a batch, and the config errors found before any port is bound.

use crate::http::Connection;
use crate::server::{CONFIG, KEY_TEXT, REGISTRY, TestDaemon, e164, reasons, write_all_sets};
use jiff::civil::DateTime;
use suppressd::config::Config;
use suppressd::engine::date::Day;
use suppressd::proto::{CheckBatchRequest, CheckRequest, LocationHints, Reason, Verdict};

/// Miami: Florida, Eastern time; in no set of the test data.
const FLORIDA: &str = "+13055550123";
/// International freephone (+800): no place in the prefix table.
const UNPLACED: &str = "+80012345678";

fn windows_config() -> String {
    CONFIG
        .replace("[server]\n", "[server]\nhttp_listen = \"127.0.0.1:0\"\n")
        .replace(
            "[tenants.other]\n",
            "[tenants.acme.campaigns.windows]\nblock_sets = [\"us-dnc\"]\n\
             calling_windows = [\"us-federal\", \"us-states\"]\n\n[tenants.other]\n",
        )
}

/// Unix ms of a wall-clock time in `zone`.
fn local(zone: &str, when: &str) -> i64 {
    let dt: DateTime = when.parse().unwrap();
    dt.to_zoned(jiff::tz::TimeZone::get(zone).unwrap())
        .unwrap()
        .timestamp()
        .as_millisecond()
}

async fn start() -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    write_all_sets(&dir.path().join("data"), Day::today());
    TestDaemon::start_in(dir, &windows_config()).await
}

fn request(number: &str, campaign: &str, at: i64) -> CheckRequest {
    CheckRequest {
        number: number.into(),
        campaign: campaign.into(),
        at_unix_ms: at,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_refuses_outside_the_window_and_says_when() {
    let daemon = start().await;
    let mut client = daemon.client().await;
    let evening = local("America/New_York", "2026-06-15T20:30");
    let answer = client
        .check(request(FLORIDA, "windows", evening))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.verdict, Verdict::Block as i32);
    assert_eq!(reasons(&answer.reasons), [Reason::OutsideCallingWindow]);
    assert_eq!(
        answer.next_allowed_at_unix_ms,
        local("America/New_York", "2026-06-16T08:00")
    );
    // An hour earlier the call is allowed, and says no next instant.
    let answer = client
        .check(request(FLORIDA, "windows", evening - 3_600_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (answer.verdict, answer.next_allowed_at_unix_ms),
        (Verdict::Allow as i32, 0)
    );
    // A campaign without windows answers as before, at any hour.
    let answer = client
        .check(request(FLORIDA, "outbound", evening))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.verdict, Verdict::Allow as i32);
    // Every reason that applies: the registry and the window.
    let answer = client
        .check(request(
            &e164(REGISTRY),
            "windows",
            local("America/New_York", "2026-06-15T22:00"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reasons(&answer.reasons),
        [Reason::NationalRegistry, Reason::OutsideCallingWindow]
    );
    // A hint moves the called party to California: 17:30 there.
    let mut hinted = request(FLORIDA, "windows", evening);
    hinted.location = Some(LocationHints {
        time_zone: "America/Los_Angeles".into(),
        ..Default::default()
    });
    let answer = client.check(hinted.clone()).await.unwrap().into_inner();
    assert_eq!(answer.verdict, Verdict::Allow as i32);
    // A ZIP code does the same (Beverly Hills), and one in Pensacola keeps Florida's rules on
    // Central time: 19:30 there, allowed.
    for zip in ["90210", "32501-0001"] {
        hinted.location = Some(LocationHints {
            postal_code: zip.into(),
            ..Default::default()
        });
        let answer = client.check(hinted.clone()).await.unwrap().into_inner();
        assert_eq!(answer.verdict, Verdict::Allow as i32, "{zip}");
    }
    // A ZIP code in Miami for a Californian number: Florida's 20:00 rule applies.
    let mut moved = request("+12135550123", "windows", evening);
    moved.location = Some(LocationHints {
        postal_code: "33101".into(),
        ..Default::default()
    });
    let answer = client.check(moved).await.unwrap().into_inner();
    assert_eq!(reasons(&answer.reasons), [Reason::OutsideCallingWindow]);
    // A ZIP code that contradicts the state hint is refused.
    hinted.location = Some(LocationHints {
        us_state: "GA".into(),
        postal_code: "33101".into(),
        ..Default::default()
    });
    let status = client.check(hinted.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("is in FL"),
        "{}",
        status.message()
    );
    // A hint that names nothing is refused, not ignored.
    hinted.location = Some(LocationHints {
        us_state: "XX".into(),
        ..Default::default()
    });
    let status = client.check(hinted).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("unknown US state 'XX'"),
        "{}",
        status.message()
    );
    // No place for the number: BLOCK with UNKNOWN_LOCATION (the default policy).
    let answer = client
        .check(request(UNPLACED, "windows", evening))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reasons(&answer.reasons), [Reason::UnknownLocation]);
    // A batch at one instant: the Florida number with its next instant, a Paris number (no
    // French pack named: allowed), the unplaced one.
    let batch = client
        .check_batch(CheckBatchRequest {
            campaign: "windows".into(),
            numbers: vec![FLORIDA.into(), "+33142000000".into(), UNPLACED.into()],
            at_unix_ms: evening,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        batch.verdicts,
        [
            Verdict::Block as u8,
            Verdict::Allow as u8,
            Verdict::Block as u8
        ]
    );
    assert_eq!(
        batch.blocked[0].next_allowed_at_unix_ms,
        local("America/New_York", "2026-06-16T08:00")
    );
    assert_eq!(
        reasons(&batch.blocked[1].reasons),
        [Reason::UnknownLocation]
    );
    // Hints per number, in batch order (text numbers, then E.164): a Florida number living in
    // Los Angeles, one without hints, a Californian number living in Miami (packed E.164).
    let hint = |time_zone: &str, postal_code: &str| LocationHints {
        time_zone: time_zone.into(),
        postal_code: postal_code.into(),
        ..Default::default()
    };
    let hinted = CheckBatchRequest {
        campaign: "windows".into(),
        numbers: vec![FLORIDA.into(), FLORIDA.into()],
        e164: vec![12135550123],
        at_unix_ms: evening,
        locations: vec![
            hint("America/Los_Angeles", ""),
            hint("", ""),
            hint("", "33101"),
        ],
        ..Default::default()
    };
    let batch = client
        .check_batch(hinted.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        batch.verdicts,
        [
            Verdict::Allow as u8,
            Verdict::Block as u8,
            Verdict::Block as u8
        ]
    );
    for item in &batch.blocked {
        assert_eq!(reasons(&item.reasons), [Reason::OutsideCallingWindow]);
    }
    // One location applies to every number: all three in Los Angeles, 17:30 there.
    let mut everyone = hinted.clone();
    everyone.locations = vec![hint("America/Los_Angeles", "")];
    let batch = client.check_batch(everyone).await.unwrap().into_inner();
    assert_eq!(batch.verdicts, [Verdict::Allow as u8; 3]);
    // Any other count, or a hint that names nothing, is refused with its position.
    let mut short = hinted.clone();
    short.locations.pop();
    let status = client.check_batch(short).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("2 locations for 3 numbers"),
        "{}",
        status.message()
    );
    let mut wrong = hinted.clone();
    wrong.locations[2].postal_code = "00000".into();
    let status = client.check_batch(wrong).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("locations[2]"),
        "{}",
        status.message()
    );
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_answers_carry_next_allowed_at() {
    let daemon = start().await;
    let addr = daemon.handle.http_addr.unwrap();
    let evening = local("America/New_York", "2026-06-15T20:30");
    let next = local("America/New_York", "2026-06-16T08:00");
    tokio::task::spawn_blocking(move || {
        let mut connection = Connection::open(addr);
        let (status, body) = connection.send(
            "GET",
            &format!("/v1/check?number=%2B13055550123&campaign=windows&at_unix_ms={evening}"),
            "",
        );
        assert_eq!(status, 200);
        assert_eq!(body["verdict"], "BLOCK");
        assert_eq!(body["reasons"], serde_json::json!(["OUTSIDE_CALLING_WINDOW"]));
        assert_eq!(body["next_allowed_at_unix_ms"], next);
        // The hint fields of the query.
        let (_, body) = connection.send(
            "GET",
            &format!(
                "/v1/check?number=%2B13055550123&campaign=windows&at_unix_ms={evening}&time_zone=America/Los_Angeles"
            ),
            "",
        );
        assert_eq!(body["verdict"], "ALLOW");
        assert!(body.get("next_allowed_at_unix_ms").is_none(), "{body}");
        let (_, body) = connection.send(
            "GET",
            &format!(
                "/v1/check?number=%2B13055550123&campaign=windows&at_unix_ms={evening}&postal_code=90210"
            ),
            "",
        );
        assert_eq!(body["verdict"], "ALLOW", "{body}");
        let (status, body) = connection.send(
            "GET",
            "/v1/check?number=%2B13055550123&campaign=windows&postal_code=00000",
            "",
        );
        assert_eq!(status, 400, "{body}");
        let (status, body) = connection.send(
            "GET",
            "/v1/check?number=%2B13055550123&campaign=windows&time_zone=Mars/Olympus",
            "",
        );
        assert_eq!(status, 400, "{body}");
        // A batch with its instant.
        let (status, body) = connection.send(
            "POST",
            "/v1/check",
            &format!(r#"{{"campaign":"windows","numbers":["+13055550123"],"at_unix_ms":{evening}}}"#),
        );
        assert_eq!(status, 200);
        assert_eq!(body["results"][0]["next_allowed_at_unix_ms"], next, "{body}");
        assert_eq!(body["results"][0]["reasons"], serde_json::json!(["OUTSIDE_CALLING_WINDOW"]));
        // Hints per number: the first in Los Angeles, the second where its number says.
        let (status, body) = connection.send(
            "POST",
            "/v1/check",
            &format!(
                r#"{{"campaign":"windows","numbers":["+13055550123","+13055550123"],"at_unix_ms":{evening},"locations":[{{"postal_code":"90210"}},{{}}]}}"#
            ),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["results"][0]["verdict"], "ALLOW", "{body}");
        assert_eq!(body["results"][1]["verdict"], "BLOCK", "{body}");
        // More locations than max_batch numbers: refused while parsing, before any is kept.
        let many = vec!["{}"; 150].join(","); // max_batch is 100 here
        let (status, body) = connection.send(
            "POST",
            "/v1/check",
            &format!(r#"{{"campaign":"windows","numbers":["+13055550123"],"locations":[{many}]}}"#),
        );
        assert_eq!(status, 400, "{body}");
        assert!(body.to_string().contains("locations (server.max_batch)"), "{body}");
    })
    .await
    .unwrap();
    daemon.shutdown().await;
}

#[test]
fn bad_windows_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("erased.key"), KEY_TEXT).unwrap();
    let with = |line: &str| {
        windows_config().replace(
            "calling_windows = [\"us-federal\", \"us-states\"]\n",
            &format!("{line}\n"),
        )
    };
    let error = Config::parse(
        &with("calling_windows = [\"us-fedral\"]"),
        "test.toml",
        dir.path(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("tenants.acme.campaigns.windows.calling_windows")
            && error.contains("unknown calling-window pack 'us-fedral'"),
        "{error}"
    );
    let error = Config::parse(
        &with("custom_windows = [\"mon-fri 9-17\"]"),
        "test.toml",
        dir.path(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("custom_windows") && error.contains("'9' is not a time HH:MM"),
        "{error}"
    );
    let error = Config::parse(
        &with("unknown_location = \"maybe\""),
        "test.toml",
        dir.path(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("unknown_location") || error.contains("maybe"),
        "{error}"
    );
    Config::parse(
        &with("custom_windows = [\"mon-fri 09:00-17:00\"]\nunknown_location = \"allow\""),
        "test.toml",
        dir.path(),
    )
    .unwrap();
}
