//! The HTTP/1.1 plane end to end: raw HTTP over a keep-alive TCP connection, as a SIP proxy's
//! HTTP client would send it.

use crate::server::{
    CLEAN, CONFIG, INTERNAL, REGISTRY, TestDaemon, e164, write_all_sets, write_set,
};
use std::io::{BufRead, BufReader, Read, Write};
use suppressd::engine::date::Day;
use suppressd::engine::snapshot::SetKind;

fn http_config() -> String {
    CONFIG.replace("[server]\n", "[server]\nhttp_listen = \"127.0.0.1:0\"\n")
}

/// Sends requests on one connection and reads each response (status, JSON body).
pub(crate) struct Connection {
    reader: BufReader<std::net::TcpStream>,
}

impl Connection {
    pub(crate) fn open(addr: std::net::SocketAddr) -> Connection {
        let stream = std::net::TcpStream::connect(addr).unwrap();
        Connection {
            reader: BufReader::new(stream),
        }
    }

    pub(crate) fn send(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.reader.get_mut().write_all(request.as_bytes()).unwrap();
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).unwrap();
        let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut length = 0;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        let value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::String(
            String::from_utf8_lossy(&body).into(),
        ));
        (status, value)
    }
}

async fn start(write_sets: bool) -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    if write_sets {
        write_all_sets(&dir.path().join("data"), Day::today());
    }
    TestDaemon::start_in(dir, &http_config()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_over_one_keep_alive_connection() {
    let daemon = start(true).await;
    let addr = daemon.handle.http_addr.unwrap();
    tokio::task::spawn_blocking(move || {
        let mut connection = Connection::open(addr);
        let (status, body) = connection.send("GET", &format!("/v1/check?number=%2B{REGISTRY}"), "");
        assert_eq!(status, 200);
        assert_eq!(body["verdict"], "BLOCK");
        assert_eq!(body["reasons"], serde_json::json!(["NATIONAL_REGISTRY"]));
        assert_eq!(body["sets"], serde_json::json!(["us-dnc"]));
        assert_eq!(body["versions"]["us-dnc"], 1);
        let (status, body) = connection.send(
            "GET",
            &format!("/v1/check?number=%2B{CLEAN}&tenant=acme&campaign=outbound"),
            "",
        );
        assert_eq!((status, body["verdict"].as_str()), (200, Some("ALLOW")));
        let (status, body) = connection.send("GET", "/v1/check?number=12abc", "");
        assert_eq!(status, 400);
        assert_eq!(body["verdict"], "BLOCK");
        assert!(body["error"].is_string());
        let (status, _) = connection.send(
            "GET",
            &format!("/v1/check?number=%2B{CLEAN}&tenant=nobody"),
            "",
        );
        assert_eq!(status, 404);
        let batch = format!(
            "{{\"numbers\": [\"{}\", \"{}\", \"junk\"]}}",
            e164(INTERNAL),
            e164(CLEAN)
        );
        let (status, body) = connection.send("POST", "/v1/check", &batch);
        assert_eq!(status, 200);
        let verdicts: Vec<&str> = body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["verdict"].as_str().unwrap())
            .collect();
        assert_eq!(verdicts, ["BLOCK", "ALLOW", "INVALID"]);
        assert_eq!(body["results"][0]["sets"], serde_json::json!(["acme/dnc"]));
        let (status, body) = connection.send("POST", "/v1/check", "{\"numbers\": 5}");
        assert_eq!(status, 400, "{body}");
        let (status, _) = connection.send("GET", "/readyz", "");
        assert_eq!(status, 200);
        let (status, _) = connection.send("GET", "/healthz", "");
        assert_eq!(status, 200);
    })
    .await
    .unwrap();
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_is_503_with_block() {
    let daemon = start(false).await;
    write_set(
        &daemon.data_dir(),
        "us-dnc.1.snap",
        SetKind::Block,
        &[REGISTRY],
        1,
        Some(Day::today()),
        false,
    );
    daemon.handle.reload.notify_one();
    let addr = daemon.handle.http_addr.unwrap();
    tokio::task::spawn_blocking(move || {
        let mut connection = Connection::open(addr);
        let (status, body) = connection.send("GET", &format!("/v1/check?number=%2B{CLEAN}"), "");
        assert_eq!(status, 503);
        assert_eq!(body["verdict"], "BLOCK");
        assert_eq!(body["reasons"], serde_json::json!(["NOT_READY"]));
        let (status, _) = connection.send("GET", "/readyz", "");
        assert_eq!(status, 503);
    })
    .await
    .unwrap();
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_exposed_with_bounded_labels() {
    let daemon = start(true).await;
    let addr = daemon.handle.http_addr.unwrap();
    suppressd::server::gauges::refresh(&daemon.handle.state, Some(&daemon.handle.mutator));
    let text = tokio::task::spawn_blocking(move || {
        let mut connection = Connection::open(addr);
        connection.send("GET", &format!("/v1/check?number=%2B{REGISTRY}"), "");
        let (status, body) = connection.send("GET", "/metrics", "");
        assert_eq!(status, 200);
        body.as_str().unwrap().to_owned()
    })
    .await
    .unwrap();
    for needle in [
        "suppressd_checks_total{api=\"http\",verdict=\"block\"}",
        "suppressd_check_reasons_total{api=\"http\",reason=\"national_registry\"}",
        "suppressd_check_duration_seconds_bucket{api=\"http\",le=\"0.000025\"}",
        // Gauges are process-wide and other daemons of this test binary refresh them too, so
        // their values are not this daemon's: only the series are checked.
        "suppressd_set_keys{set=\"us-dnc\"} ",
        "suppressd_set_version{set=\"acme/dnc\"} ",
        "suppressd_build_info{",
        "# HELP suppressd_checks_total",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    assert!(
        !text.contains(&REGISTRY.to_string()),
        "a number leaked into metrics"
    );
    daemon.shutdown().await;
}
