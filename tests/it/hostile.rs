//! Hostile input and overload, every interface: a table of malformed inputs over gRPC (typed and
//! raw HTTP/2 frames), HTTP/1.1 (raw bytes) and the SIP dip (UDP and TCP), each row naming the
//! answer it must get, and after every row a good check must still be answered on all three.
//! Then the per-tenant rate limit, shedding over `server.max_in_flight` (deterministic and under
//! a flood, with the process RSS bounded), and the SIP source allow-list.

use crate::free_port;
use crate::server::{CLEAN, CONFIG, REGISTRY, TestDaemon, e164, write_all_sets};
use http_body_util::BodyExt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};
use suppressd::engine::date::Day;
use suppressd::proto::suppression_client::SuppressionClient;
use suppressd::proto::{CheckBatchRequest, CheckRequest, Verdict};
use tonic::Code;
use tonic::codegen::Service;

const TIMEOUT: Duration = Duration::from_secs(3);

/// CONFIG with every interface on (HTTP, SIP UDP and TCP) and `extra` lines in `[server]`.
fn config(server_extra: &str, tail: &str) -> String {
    let head = CONFIG.replace(
        "[server]\n",
        &format!("[server]\nhttp_listen = \"127.0.0.1:0\"\n{server_extra}"),
    );
    format!("{head}\n{tail}\n[sip]\nlisten_udp = \"127.0.0.1:0\"\nlisten_tcp = \"127.0.0.1:0\"\n")
}

async fn start(config_text: &str) -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    write_all_sets(&dir.path().join("data"), Day::today());
    TestDaemon::start_in(dir, config_text).await
}

// ---------------------------------------------------------------------------------------------
// Raw clients.

/// One HTTP/1.1 exchange on a fresh connection: the status code, headers and body, or None when
/// the server closed without answering.
fn http_raw(addr: SocketAddr, request: &[u8]) -> Option<(u16, String, String)> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    // The server may answer and close before reading everything (oversized input).
    let _ = stream.write_all(request);
    let mut response = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                response.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&response);
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if response.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, head.to_owned(), body.to_owned()))
}

fn http_get(addr: SocketAddr, target: &str) -> Option<(u16, String, String)> {
    http_raw(
        addr,
        format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn http_post(addr: SocketAddr, body: &[u8]) -> Option<(u16, String, String)> {
    let mut request = format!(
        "POST /v1/check HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    http_raw(addr, &request)
}

fn sip_invite(number: &str, call: &str, extra: &str, transport: &str, via: &str) -> String {
    format!(
        "INVITE sip:{number}@127.0.0.1:5090 SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {via};branch=z9hG4bK-{call};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:dialer@example.com>;tag=f-{call}\r\n\
         To: <sip:{number}@127.0.0.1>\r\n\
         Call-ID: {call}@test\r\n\
         CSeq: 1 INVITE\r\n\
         {extra}\
         Content-Length: 0\r\n\r\n"
    )
}

/// The status code of the dip's answer over UDP, or None when nothing came within `wait`.
fn sip_udp(socket: &UdpSocket, dip: SocketAddr, message: &[u8], wait: Duration) -> Option<u16> {
    socket.set_read_timeout(Some(wait)).unwrap();
    socket.send_to(message, dip).unwrap();
    let mut buffer = [0u8; 65_536];
    let (length, _) = socket.recv_from(&mut buffer).ok()?;
    let text = String::from_utf8_lossy(&buffer[..length]);
    text.split(' ').nth(1)?.parse().ok()
}

/// The first answer on a fresh TCP connection, or None when the dip closed it or said nothing.
fn sip_tcp(dip: SocketAddr, message: &[u8], wait: Duration) -> Option<u16> {
    let mut stream = TcpStream::connect(dip).unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    let _ = stream.write_all(message);
    let mut buffer = vec![0u8; 65_536];
    let mut length = 0;
    while !String::from_utf8_lossy(&buffer[..length]).contains("\r\n\r\n") {
        match stream.read(&mut buffer[length..]) {
            Ok(0) | Err(_) => return None,
            Ok(n) => length += n,
        }
    }
    let text = String::from_utf8_lossy(&buffer[..length]);
    text.split(' ').nth(1)?.parse().ok()
}

/// A raw gRPC call: `frames` are sent as the request body exactly as given. Returns the
/// grpc-status (from trailers or a trailers-only response).
async fn grpc_raw(addr: SocketAddr, method: &str, frames: Vec<u8>) -> Code {
    let mut channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let request = tonic::codegen::http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/suppressd.v1.Suppression/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(http_body_util::Full::new(
            tonic::codegen::Bytes::from(frames),
        )))
        .unwrap();
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .unwrap();
    let response = tokio::time::timeout(TIMEOUT, channel.call(request))
        .await
        .expect("raw gRPC call hung")
        .unwrap();
    let status_of = |headers: &tonic::codegen::http::HeaderMap| {
        headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .map(Code::from_i32)
    };
    if let Some(code) = status_of(response.headers()) {
        return code;
    }
    let collected = tokio::time::timeout(TIMEOUT, response.into_body().collect())
        .await
        .expect("raw gRPC body hung")
        .unwrap();
    status_of(collected.trailers().expect("no trailers")).expect("no grpc-status")
}

/// A gRPC frame: compressed flag, big-endian length, payload.
fn frame(declared_length: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&declared_length.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Every interface still answers a good check (a clean number is allowed everywhere).
async fn assert_serving(daemon: &TestDaemon, after: &str) {
    let mut client = daemon.client().await;
    let answer = tokio::time::timeout(
        TIMEOUT,
        client.check(CheckRequest {
            number: e164(CLEAN),
            ..Default::default()
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("gRPC hung after {after}"))
    .unwrap_or_else(|e| panic!("gRPC failed after {after}: {e}"))
    .into_inner();
    assert_eq!(answer.verdict, Verdict::Allow as i32, "after {after}");
    let http = daemon.handle.http_addr.unwrap();
    let udp = daemon.handle.sip_udp_addr.unwrap();
    let tcp = daemon.handle.sip_tcp_addr.unwrap();
    let after_owned = after.to_owned();
    tokio::task::spawn_blocking(move || {
        let target = format!("/v1/check?number=%2B{CLEAN}");
        let (status, _, body) = http_get(http, &target).expect("HTTP closed");
        assert_eq!(status, 200, "HTTP after {after_owned}: {body}");
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let via = socket.local_addr().unwrap().to_string();
        let invite = sip_invite(&e164(CLEAN), "good", "", "UDP", &via);
        assert_eq!(
            sip_udp(&socket, udp, invite.as_bytes(), TIMEOUT),
            Some(302),
            "SIP UDP after {after_owned}"
        );
        let invite = sip_invite(&e164(CLEAN), "good", "", "TCP", "127.0.0.1:5999");
        assert_eq!(
            sip_tcp(tcp, invite.as_bytes(), TIMEOUT),
            Some(302),
            "SIP TCP after {after_owned}"
        );
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------------------------
// (a) The table of malformed inputs.

const ARABIC_INDIC_REGISTRY: &str = "+١٢٠١٥٥٥٠١٢٣"; // +12015550123
const FULLWIDTH_REGISTRY: &str = "+１２０１５５５０１２３";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_grpc_inputs_get_clear_answers() {
    let daemon = start(&config("", "")).await;
    assert_eq!(e164(REGISTRY), "+12015550123");
    let mut client = daemon.client().await;
    /// What a row must get: a verdict of BLOCK (with INVALID_NUMBER when `invalid`), or a code.
    enum Expect {
        Block { invalid: bool },
        Code(Code),
    }
    let overlong = format!("+1{}", "2".repeat(200));
    let rows: Vec<(&str, String, Expect)> = vec![
        ("empty", String::new(), Expect::Block { invalid: true }),
        ("overlong", overlong, Expect::Block { invalid: true }),
        // Unicode digits either normalise to the registry number or are invalid: never ALLOW.
        (
            "arabic-indic digits",
            ARABIC_INDIC_REGISTRY.into(),
            Expect::Block { invalid: false },
        ),
        (
            "fullwidth digits",
            FULLWIDTH_REGISTRY.into(),
            Expect::Block { invalid: false },
        ),
        (
            "NUL byte",
            "+1201555\u{0}0127".into(),
            Expect::Block { invalid: true },
        ),
        (
            "only NULs",
            "\u{0}\u{0}\u{0}".into(),
            Expect::Block { invalid: true },
        ),
        (
            "unknown tenant",
            "tenant:nobody".into(),
            Expect::Code(Code::NotFound),
        ),
    ];
    for (name, number, expect) in rows {
        let tenant = if number == "tenant:nobody" {
            "nobody"
        } else {
            ""
        };
        let result = client
            .check(CheckRequest {
                number: number.clone(),
                tenant: tenant.into(),
                campaign: String::new(),
                ..Default::default()
            })
            .await;
        match (expect, result) {
            (Expect::Block { invalid }, Ok(response)) => {
                let response = response.into_inner();
                assert_eq!(response.verdict, Verdict::Block as i32, "{name}");
                if invalid {
                    assert!(
                        response
                            .reasons
                            .contains(&(suppressd::proto::Reason::InvalidNumber as i32)),
                        "{name}: {response:?}"
                    );
                }
            }
            (Expect::Code(code), Err(status)) => assert_eq!(status.code(), code, "{name}"),
            (_, other) => panic!("{name}: unexpected {other:?}"),
        }
        assert_serving(&daemon, name).await;
    }
    // A batch over server.max_batch (100 in CONFIG), as text and as packed E.164.
    for (name, numbers, packed) in [
        ("batch of 101 texts", vec![e164(CLEAN); 101], vec![]),
        ("batch of 101 packed", vec![], vec![CLEAN; 101]),
    ] {
        let status = client
            .check_batch(CheckBatchRequest {
                numbers,
                e164: packed,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{name}");
        assert!(status.message().contains("server.max_batch"), "{name}");
        assert_serving(&daemon, name).await;
    }
    // Raw frames: CheckRequest { number (1): string }.
    let invalid_utf8 = vec![0x0a, 0x04, 0xff, 0xfe, 0x00, 0x80];
    let truncated = vec![0x0a, 0x32, b'+', b'1']; // field 1 says 50 bytes, 2 follow
    // "+1\u{D800}5": a surrogate encoded as UTF-8 would be (CESU-8), which UTF-8 forbids.
    let lone_surrogate = vec![0x0a, 0x06, b'+', b'1', 0xed, 0xa0, 0x80, b'5'];
    let good = {
        let mut m = vec![0x0a, 12];
        m.extend_from_slice(e164(CLEAN).as_bytes());
        m
    };
    let raw_rows: Vec<(&str, Vec<u8>, Code)> = vec![
        // Malformed messages are the caller's fault: INVALID_ARGUMENT, not INTERNAL.
        (
            "protobuf string with invalid UTF-8",
            frame(6, &invalid_utf8),
            Code::InvalidArgument,
        ),
        (
            "a lone UTF-16 surrogate in a string",
            frame(lone_surrogate.len() as u32, &lone_surrogate),
            Code::InvalidArgument,
        ),
        (
            "truncated protobuf",
            frame(4, &truncated),
            Code::InvalidArgument,
        ),
        (
            "length prefix longer than the body",
            frame(100, &good),
            Code::Internal,
        ),
        ("frame header cut short", vec![0, 0, 0], Code::Internal),
        (
            "declared length over max_message_bytes",
            frame(64 << 20, &good),
            Code::OutOfRange,
        ),
        (
            "compressed flag without an encoding",
            {
                let mut f = frame(good.len() as u32, &good);
                f[0] = 1;
                f
            },
            Code::Internal,
        ),
        // tonic answers the first message of a unary call and ignores the rest.
        (
            "two messages on a unary call",
            {
                let mut f = frame(good.len() as u32, &good);
                f.extend(frame(good.len() as u32, &good));
                f
            },
            Code::Ok,
        ),
        (
            "garbage",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            Code::Internal,
        ),
    ];
    for (name, frames, expected) in raw_rows {
        let code = grpc_raw(daemon.addr, "Check", frames).await;
        assert_eq!(code, expected, "{name}");
        assert_serving(&daemon, name).await;
    }
    // The good frame sent raw is answered: the raw client itself is sound.
    assert_eq!(
        grpc_raw(daemon.addr, "Check", frame(good.len() as u32, &good)).await,
        Code::Ok
    );
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http_inputs_get_clear_answers() {
    let daemon = start(&config("request_timeout_ms = 500\n", "")).await;
    let addr = daemon.handle.http_addr.unwrap();
    let percent = |text: &str| -> String { text.bytes().map(|b| format!("%{b:02X}")).collect() };
    let batch = |n: usize| {
        format!(
            "{{\"numbers\": [{}]}}",
            vec![format!("\"{}\"", e164(CLEAN)); n].join(",")
        )
        .into_bytes()
    };
    let mut invalid_utf8_body = b"{\"numbers\": [\"+1201555".to_vec();
    invalid_utf8_body.extend_from_slice(&[0xff, 0xfe]);
    invalid_utf8_body.extend_from_slice(b"\"]}");
    let mut raw_utf8_query = b"GET /v1/check?number=%2B1".to_vec();
    raw_utf8_query.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    raw_utf8_query.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let huge_header = format!(
        "GET /v1/check?number=%2B{CLEAN} HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let many_headers = format!(
        "GET /v1/check?number=%2B{CLEAN} HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n",
        "X-A: 1\r\n".repeat(1000)
    );
    let oversized_body = format!(
        "POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{{",
        32 << 20
    );
    // Declares 100 bytes, sends 1: the daemon must not wait past request_timeout_ms (500 ms).
    let slow_body = b"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{".to_vec();
    // Under the body bound of 100 numbers (max_batch), so it reaches the parser.
    let nested = format!("{}{}", "[".repeat(4_000), "]".repeat(4_000)).into_bytes();
    // (name, raw request, expected status; 0: the connection is closed without an answer; 1:
    // 200 or 400 with verdict BLOCK; HYPER | status: refused by the HTTP layer itself, no JSON)
    const HYPER: u16 = 0x8000;
    let rows: Vec<(&str, Vec<u8>, u16)> = vec![
        ("empty number", get("/v1/check?number="), 400),
        ("no number at all", get("/v1/check"), 400),
        ("overlong number", get(&format!("/v1/check?number=%2B1{}", "2".repeat(5000))), 400),
        ("NUL byte", get("/v1/check?number=%2B1201555%000127"), 400),
        ("percent-encoded invalid UTF-8", get("/v1/check?number=%FF%FE%2B1"), 400),
        ("arabic-indic digits", get(&format!("/v1/check?number={}", percent(ARABIC_INDIC_REGISTRY))), 1),
        ("fullwidth digits", get(&format!("/v1/check?number={}", percent(FULLWIDTH_REGISTRY))), 1),
        ("raw invalid UTF-8 in the query", raw_utf8_query, HYPER | 400),
        ("unknown tenant", get(&format!("/v1/check?number=%2B{CLEAN}&tenant=nobody")), 404),
        ("oversized header", huge_header.into_bytes(), HYPER | 431),
        ("a thousand headers", many_headers.into_bytes(), HYPER | 431),
        ("invalid UTF-8 in the JSON body", post(&invalid_utf8_body), 400),
        ("truncated JSON body", post(b"{\"numbers\": [\"+1201"), 400),
        ("empty JSON body", post(b""), 400),
        ("JSON of the wrong shape", post(b"{\"numbers\": 5}"), 400),
        ("unknown JSON field", post(b"{\"numbers\": [], \"evil\": 1}"), 400),
        ("deeply nested JSON", post(&nested), 400),
        ("batch over max_batch", post(&batch(101)), 400),
        ("NUL in a JSON number string", post(b"{\"numbers\": [\"\\u0000\"]}"), 200),
        ("body over max_message_bytes", oversized_body.into_bytes(), 413),
        ("body slower than request_timeout_ms", slow_body, 408),
        ("wrong content type", b"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}".to_vec(), 415),
        ("not HTTP at all", b"\x16\x03\x01\x00\xff\x01\x00\x00\r\n\r\n".to_vec(), HYPER | 400),
    ];
    for (name, request, expected) in rows {
        let answer = tokio::task::spawn_blocking(move || http_raw(addr, &request))
            .await
            .unwrap();
        match expected {
            0 => assert!(answer.is_none(), "{name}: {answer:?}"),
            // Unicode digits: normalised to the registry number or invalid; BLOCK either way.
            1 => {
                let (status, _, body) = answer.unwrap_or_else(|| panic!("{name}: no answer"));
                assert!(matches!(status, 200 | 400), "{name}: {status} {body}");
                let body: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(body["verdict"], "BLOCK", "{name}");
            }
            _ => {
                let (status, _, body) = answer.unwrap_or_else(|| panic!("{name}: no answer"));
                assert_eq!(status, expected & !HYPER, "{name}: {body}");
                if (400..500).contains(&status) && expected & HYPER == 0 {
                    // Our own refusals are JSON with an error text and never ALLOW.
                    let body: serde_json::Value = serde_json::from_str(&body)
                        .unwrap_or_else(|_| panic!("{name}: not JSON: {body}"));
                    assert!(body["error"].is_string(), "{name}: {body}");
                    assert_ne!(body["verdict"], "ALLOW", "{name}");
                }
            }
        }
        assert_serving(&daemon, name).await;
    }
    daemon.shutdown().await;

    fn get(target: &str) -> Vec<u8> {
        format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
    }
    fn post(body: &[u8]) -> Vec<u8> {
        let mut request = format!(
            "POST /v1/check HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        request
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_sip_inputs_get_clear_answers() {
    let daemon = start(&config("", "")).await;
    let udp = daemon.handle.sip_udp_addr.unwrap();
    let tcp = daemon.handle.sip_tcp_addr.unwrap();
    let good = sip_invite(&e164(CLEAN), "x", "", "UDP", "127.0.0.1:5999");
    let without = |header: &str| -> Vec<u8> {
        good.split("\r\n")
            .filter(|line| !line.starts_with(header))
            .collect::<Vec<_>>()
            .join("\r\n")
            .into_bytes()
    };
    let with_bytes = |bytes: &[u8]| -> Vec<u8> {
        let mut message = good.clone().into_bytes();
        let at = message.windows(8).position(|w| w == b"Call-ID:").unwrap() + 8;
        message.splice(at..at, bytes.iter().copied());
        message
    };
    let invite = |number: &str| sip_invite(number, "n", "", "UDP", "127.0.0.1:5999").into_bytes();
    let oversized = sip_invite(
        &e164(CLEAN),
        "big",
        &format!("X-Pad: {}\r\n", "a".repeat(20_000)),
        "UDP",
        "127.0.0.1:5999",
    );
    // (name, message, expected status; None: silently dropped, or closed on TCP)
    let rows: Vec<(&str, Vec<u8>, Option<u16>)> = vec![
        ("empty user part", invite(""), Some(603)),
        (
            "overlong number",
            invite(&format!("+1{}", "2".repeat(200))),
            Some(603),
        ),
        // Not ASCII: not a valid Request-URI, so 400 before any number parsing.
        (
            "arabic-indic digits",
            invite(ARABIC_INDIC_REGISTRY),
            Some(400),
        ),
        ("fullwidth digits", invite(FULLWIDTH_REGISTRY), Some(400)),
        (
            "percent-encoded NUL in the number",
            invite("+1201555%000127"),
            Some(603),
        ),
        (
            "NUL byte in Call-ID (cannot be echoed)",
            with_bytes(b"\0"),
            None,
        ),
        ("invalid UTF-8 in Call-ID", with_bytes(&[0xff, 0xfe]), None),
        ("without Via", without("Via:"), None),
        ("without Call-ID", without("Call-ID:"), None),
        ("without CSeq", without("CSeq:"), None),
        ("without From", without("From:"), None),
        ("without To", without("To:"), None),
        ("oversized message", oversized.into_bytes(), None),
        ("empty datagram", Vec::new(), None),
        (
            "garbage",
            vec![0xde, 0xad, 0xbe, 0xef, b'\r', b'\n', b'\r', b'\n'],
            None,
        ),
    ];
    for (name, message, expected) in rows {
        let tcp_message = match std::str::from_utf8(&message) {
            Ok(text) => text.replace("SIP/2.0/UDP", "SIP/2.0/TCP").into_bytes(),
            Err(_) => message.clone(),
        };
        let udp_message = message;
        let (got_udp, got_tcp) = tokio::task::spawn_blocking(move || {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            // The Via names port 5999, so answers to our socket need rport: add it.
            let udp_message = rport(&udp_message, socket.local_addr().unwrap());
            let wait = if expected.is_some() {
                TIMEOUT
            } else {
                Duration::from_millis(300)
            };
            let got_udp = sip_udp(&socket, udp, &udp_message, wait);
            let got_tcp = sip_tcp(tcp, &tcp_message, wait);
            (got_udp, got_tcp)
        })
        .await
        .unwrap();
        assert_eq!(got_udp, expected, "{name} over UDP");
        // On TCP, an empty message is no message: nothing to answer either.
        assert_eq!(got_tcp, expected, "{name} over TCP");
        assert_serving(&daemon, name).await;
    }
    daemon.shutdown().await;

    fn rport(message: &[u8], local: SocketAddr) -> Vec<u8> {
        match std::str::from_utf8(message) {
            Ok(text) => text
                .replace("127.0.0.1:5999", &local.to_string())
                .into_bytes(),
            Err(_) => {
                let from = b"127.0.0.1:5999";
                let mut out = message.to_vec();
                if let Some(at) = out.windows(from.len()).position(|w| w == from) {
                    out.splice(at..at + from.len(), local.to_string().into_bytes());
                }
                out
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (b) Per-tenant rate limit.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_rate_is_refused_and_others_are_not() {
    // Tenant "other" may check 1 number per second with a burst of 5.
    let text = config("", "").replace(
        "[tenants.other]\nregion = \"PL\"\n",
        "[tenants.other]\nregion = \"PL\"\nmax_checks_per_second = 1\nburst = 5\n",
    );
    assert!(text.contains("max_checks_per_second = 1"));
    let daemon = start(&text).await;
    let mut client = daemon.client().await;
    let other = |number: String| CheckRequest {
        number,
        tenant: "other".into(),
        campaign: "only".into(),
        ..Default::default()
    };
    // A batch larger than the burst can never pass.
    let status = client
        .check_batch(CheckBatchRequest {
            tenant: "other".into(),
            campaign: "only".into(),
            e164: vec![CLEAN; 6],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("burst"), "{}", status.message());
    // gRPC: the burst passes, then RESOURCE_EXHAUSTED (within a few tries: tokens refill 1/s).
    let mut refused = None;
    for _ in 0..10 {
        match client.check(other(e164(CLEAN))).await {
            Ok(_) => {}
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
    }
    let status = refused.expect("gRPC never refused over the rate");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("rate limit"),
        "{}",
        status.message()
    );
    // The other tenant is unaffected, on every interface.
    for _ in 0..20 {
        let answer = client.check(CheckRequest {
            number: e164(CLEAN),
            ..Default::default()
        });
        assert_eq!(
            answer.await.unwrap().into_inner().verdict,
            Verdict::Allow as i32
        );
    }
    assert_serving(&daemon, "tenant other over its rate").await;
    // HTTP: 429 with Retry-After and a JSON error.
    let http = daemon.handle.http_addr.unwrap();
    let udp = daemon.handle.sip_udp_addr.unwrap();
    tokio::task::spawn_blocking(move || {
        let target = format!("/v1/check?number=%2B{CLEAN}&tenant=other&campaign=only");
        let refused = (0..10)
            .map(|_| http_get(http, &target).unwrap())
            .find(|(status, _, _)| *status != 200)
            .expect("HTTP never refused over the rate");
        let (status, head, body) = refused;
        assert_eq!(status, 429, "{body}");
        assert!(
            head.to_ascii_lowercase().contains("retry-after: "),
            "{head}"
        );
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["verdict"], "BLOCK");
        assert!(body["error"].as_str().unwrap().contains("rate limit"));
        let body = format!(
            "{{\"tenant\": \"other\", \"campaign\": \"only\", \"numbers\": [\"{}\", \"{}\"]}}",
            e164(CLEAN),
            e164(CLEAN)
        );
        assert_eq!(http_post(http, body.as_bytes()).unwrap().0, 429);
        // SIP: 503 with Retry-After, reason RATE_LIMITED.
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(TIMEOUT)).unwrap();
        let via = socket.local_addr().unwrap().to_string();
        let mut answer = String::new();
        for call in 0..10 {
            let invite = sip_invite(
                &e164(CLEAN),
                &format!("rate-{call}"),
                "X-Tenant: other\r\nX-Campaign: only\r\n",
                "UDP",
                &via,
            );
            socket.send_to(invite.as_bytes(), udp).unwrap();
            let mut buffer = [0u8; 8192];
            let (length, _) = socket.recv_from(&mut buffer).unwrap();
            answer = String::from_utf8_lossy(&buffer[..length]).into_owned();
            if !answer.starts_with("SIP/2.0 302") {
                break;
            }
        }
        assert!(answer.starts_with("SIP/2.0 503 "), "{answer}");
        assert!(answer.contains("text=\"RATE_LIMITED\""), "{answer}");
        assert!(answer.contains("\r\nRetry-After: "), "{answer}");
    })
    .await
    .unwrap();
    assert_serving(&daemon, "every interface over the rate").await;
    let metrics = suppressd::metrics::metrics().render();
    for api in ["grpc", "http", "sip"] {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with("suppressd_requests_shed_total")
                    && l.contains(&format!("api=\"{api}\""))
                    && l.contains("reason=\"rate_limit\"")
            })
            .unwrap_or_else(|| panic!("no rate_limit shed series for {api}"));
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(value >= 1.0, "{line}");
    }
    daemon.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// (c) Overload: refused, never queued; memory bounded under a flood.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_interface_refuses_when_max_in_flight_is_reached() {
    let daemon = start(&config("max_in_flight = 4\n", "")).await;
    let state = daemon.handle.state.clone();
    // Hold every permit, as four slow requests would.
    let held: Vec<_> = (0..4)
        .map(|_| state.in_flight.try_enter().unwrap())
        .collect();
    assert_eq!(state.in_flight.in_flight(), 4);
    let mut client = daemon.client().await;
    let started = Instant::now();
    let status = client
        .check(CheckRequest {
            number: e164(CLEAN),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("server.max_in_flight"));
    let status = client
        .check_batch(CheckBatchRequest {
            e164: vec![CLEAN; 3],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    // Ping and Status are not checks: they pass.
    client
        .ping(CheckRequest::default())
        .await
        .expect("ping is not shed");
    let http = daemon.handle.http_addr.unwrap();
    let udp = daemon.handle.sip_udp_addr.unwrap();
    tokio::task::spawn_blocking(move || {
        let (status, head, body) = http_get(http, &format!("/v1/check?number=%2B{CLEAN}")).unwrap();
        assert_eq!(status, 429, "{body}");
        assert!(
            head.to_ascii_lowercase().contains("retry-after: 1"),
            "{head}"
        );
        assert!(body.contains("server.max_in_flight"), "{body}");
        assert_eq!(http_get(http, "/healthz").unwrap().0, 200, "probes pass");
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(TIMEOUT)).unwrap();
        let via = socket.local_addr().unwrap().to_string();
        socket
            .send_to(
                sip_invite(&e164(CLEAN), "busy", "", "UDP", &via).as_bytes(),
                udp,
            )
            .unwrap();
        let mut buffer = [0u8; 8192];
        let (length, _) = socket.recv_from(&mut buffer).unwrap();
        let answer = String::from_utf8_lossy(&buffer[..length]);
        assert!(answer.starts_with("SIP/2.0 503 "), "{answer}");
        assert!(answer.contains("text=\"OVERLOADED\""), "{answer}");
        assert!(answer.contains("\r\nRetry-After: 1\r\n"), "{answer}");
    })
    .await
    .unwrap();
    // Refused at once, not after waiting for a permit.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop(held);
    assert_eq!(state.in_flight.in_flight(), 0);
    assert_serving(&daemon, "permits released").await;
    daemon.shutdown().await;
}

/// Resident set size of this process (the daemon runs in it), in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Bound on RSS growth over the flood (measured: a few MiB). Holding the flood's requests in a
/// queue instead (20 000 calls, and 100 batches of 5 000 packed numbers of 40 KB each) would
/// exceed it.
const FLOOD_RSS_BOUND: u64 = 48 << 20;

/// The flood runs in a child process (this test binary, this test alone), so the RSS measured
/// is the daemon's and the flood's, not that of the other tests running in parallel here.
#[test]
fn a_flood_is_shed_and_memory_stays_bounded() {
    if std::env::var_os("SUPPRESSD_FLOOD_CHILD").is_some() {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(flood_in_this_process());
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "hostile::a_flood_is_shed_and_memory_stays_bounded",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SUPPRESSD_FLOOD_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!(
        "{}",
        stderr
            .lines()
            .filter(|l| l.starts_with("flood:"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        output.status.success(),
        "the flood child failed:\n{stderr}\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        stderr.contains("flood: "),
        "the child ran no flood:\n{stderr}"
    );
}

async fn flood_in_this_process() {
    let text =
        config("max_in_flight = 16\n", "").replace("max_batch = 100\n", "max_batch = 5000\n");
    let daemon = start(&text).await;
    let clients: Vec<SuppressionClient<_>> = {
        let mut clients = Vec::new();
        for _ in 0..8 {
            clients.push(daemon.client().await);
        }
        clients
    };
    /// Sends `count` checks from `workers` tasks; returns (ok, shed, other, slowest).
    async fn flood(
        clients: &[SuppressionClient<tonic::transport::Channel>],
        workers: usize,
        count: usize,
        batch: usize,
    ) -> (usize, usize, usize, Duration) {
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..workers {
            let mut client = clients[worker % clients.len()].clone();
            let share = count / workers + usize::from(worker < count % workers);
            tasks.spawn(async move {
                let (mut ok, mut shed, mut other, mut slowest) = (0, 0, 0, Duration::ZERO);
                for _ in 0..share {
                    let started = Instant::now();
                    let result = if batch == 0 {
                        let call = client.check(CheckRequest {
                            number: e164(CLEAN),
                            ..Default::default()
                        });
                        tokio::time::timeout(Duration::from_secs(5), call)
                            .await
                            .expect("a check hung past 5 s")
                            .map(|_| ())
                    } else {
                        let call = client.check_batch(CheckBatchRequest {
                            e164: vec![CLEAN; batch],
                            ..Default::default()
                        });
                        tokio::time::timeout(Duration::from_secs(5), call)
                            .await
                            .expect("a batch hung past 5 s")
                            .map(|_| ())
                    };
                    slowest = slowest.max(started.elapsed());
                    match result {
                        Ok(()) => ok += 1,
                        Err(status) if status.code() == Code::ResourceExhausted => shed += 1,
                        Err(status) => {
                            eprintln!("flood: unexpected {status:?}");
                            other += 1
                        }
                    }
                }
                (ok, shed, other, slowest)
            });
        }
        let mut total = (0, 0, 0, Duration::ZERO);
        while let Some(result) = tasks.join_next().await {
            let (ok, shed, other, slowest) = result.unwrap();
            total = (
                total.0 + ok,
                total.1 + shed,
                total.2 + other,
                total.3.max(slowest),
            );
        }
        total
    }
    // Warm up allocator pools and connections, then measure.
    flood(&clients, 64, 2_000, 0).await;
    flood(&clients, 8, 20, 5_000).await;
    let before = rss_bytes();
    let started = Instant::now();
    let (small, large) = tokio::join!(
        flood(&clients, 256, 20_000, 0),
        flood(&clients, 32, 100, 5_000)
    );
    let elapsed = started.elapsed();
    let after = rss_bytes();
    let growth = after.saturating_sub(before);
    eprintln!(
        "flood: {elapsed:?}; checks ok {} shed {} other {} slowest {:?}; batches ok {} shed {} other {} slowest {:?}; RSS {} -> {} MiB (+{} KiB)",
        small.0,
        small.1,
        small.2,
        small.3,
        large.0,
        large.1,
        large.2,
        large.3,
        before >> 20,
        after >> 20,
        growth >> 10
    );
    assert_eq!(small.0 + small.1 + small.2, 20_000);
    assert_eq!(large.0 + large.1 + large.2, 100);
    assert_eq!((small.2, large.2), (0, 0), "only OK or RESOURCE_EXHAUSTED");
    assert!(
        small.1 + large.1 > 0,
        "nothing was shed over max_in_flight = 16"
    );
    assert!(small.0 > 0 && large.0 > 0, "nothing was answered");
    assert!(growth < FLOOD_RSS_BOUND, "RSS grew {} MiB", growth >> 20);
    assert_eq!(
        daemon.handle.state.in_flight.in_flight(),
        0,
        "permits leaked"
    );
    assert_serving(&daemon, "the flood").await;
    daemon.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// (d) SIP source allow-list.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_answers_only_allowed_sources() {
    let text = config("", "").replace(
        "[sip]\n",
        "[sip]\nallowed_sources = [\"127.0.0.1/32\", \"::1/128\"]\n",
    );
    let daemon = start(&text).await;
    let udp = daemon.handle.sip_udp_addr.unwrap();
    let tcp = daemon.handle.sip_tcp_addr.unwrap();
    let refused_before = crate::sip::metric("suppressd_sip_source_refused_total", &[]);
    tokio::task::spawn_blocking(move || {
        // Allowed: 127.0.0.1.
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let via = socket.local_addr().unwrap().to_string();
        let invite = sip_invite(&e164(CLEAN), "allowed", "", "UDP", &via);
        assert_eq!(sip_udp(&socket, udp, invite.as_bytes(), TIMEOUT), Some(302));
        // Not allowed: 127.0.0.2 (loopback range, outside 127.0.0.1/32): dropped.
        let stranger = UdpSocket::bind("127.0.0.2:0").unwrap();
        let via = stranger.local_addr().unwrap().to_string();
        let invite = sip_invite(&e164(CLEAN), "stranger", "", "UDP", &via);
        assert_eq!(
            sip_udp(
                &stranger,
                udp,
                invite.as_bytes(),
                Duration::from_millis(500)
            ),
            None
        );
    })
    .await
    .unwrap();
    // TCP from 127.0.0.2: closed without an answer.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut stream = socket.connect(tcp).await.unwrap();
    let invite = sip_invite(&e164(CLEAN), "stranger-tcp", "", "TCP", "127.0.0.2:5999");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.write_all(invite.as_bytes()).await;
    let mut buffer = [0u8; 1024];
    let read = tokio::time::timeout(TIMEOUT, stream.read(&mut buffer))
        .await
        .expect("the connection was neither answered nor closed");
    assert!(matches!(read, Ok(0) | Err(_)), "answered: {read:?}");
    let refused = crate::sip::metric("suppressd_sip_source_refused_total", &[]) - refused_before;
    assert!(refused >= 2.0, "refused {refused}");
    let metrics = suppressd::metrics::metrics().render();
    for transport in ["udp", "tcp"] {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with("suppressd_sip_source_refused_total")
                    && l.contains(&format!("transport=\"{transport}\""))
            })
            .unwrap_or_else(|| panic!("no refused series for {transport}"));
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(value >= 1.0, "{line}");
    }
    assert_serving(&daemon, "refused sources").await;
    daemon.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// (e) Nothing is read, parsed or held before it is authenticated and bounded (issue 13, §2).

const DIALER: &str = "token-acme-dialer";

/// `config` with `auth.required` and one check token for acme.
async fn start_authenticated(server_extra: &str) -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    write_all_sets(&dir.path().join("data"), Day::today());
    std::fs::write(
        dir.path().join("tokens.toml"),
        suppressd::server::auth::token_entry(
            "dialer",
            DIALER,
            Some("acme"),
            suppressd::server::auth::Role::Check,
        ),
    )
    .unwrap();
    let text = config(server_extra, "").replace(
        "[server]\n",
        "[auth]\ntokens_file = \"tokens.toml\"\nrequired = true\n\n[server]\n",
    );
    TestDaemon::start_in(dir, &text).await
}

/// Sends only the head of a POST that declares `length` body bytes, and returns the answer
/// that comes without the body (None: nothing within `wait`).
fn post_head_only(
    addr: SocketAddr,
    length: usize,
    token: Option<&str>,
    wait: Duration,
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "POST /v1/check HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n{{\"numbers\": ["
    )
    .unwrap();
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = stream.read(&mut chunk) {
        if n == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
        if String::from_utf8_lossy(&response).contains("\r\n\r\n") {
            // Headers are in; the body of our refusals is small and follows at once.
            std::thread::sleep(Duration::from_millis(50));
            stream.set_nonblocking(true).unwrap();
            while let Ok(n) = stream.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                response.extend_from_slice(&chunk[..n]);
            }
            break;
        }
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    Some((status, text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bodies_are_authenticated_and_bounded_before_they_are_read() {
    let daemon = start_authenticated("request_timeout_ms = 2000\n").await;
    let http = daemon.handle.http_addr.unwrap();
    tokio::task::spawn_blocking(move || {
        // Without a credential: 401 at once, without waiting for (or reading) the 10 MB body.
        let started = Instant::now();
        let (status, text) = post_head_only(http, 10 << 20, None, TIMEOUT).expect("no answer");
        assert_eq!(status, 401, "{text}");
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        // An unauthenticated caller learns neither the batch limit nor the parser's messages.
        let (status, _, body) = http_post(http, b"{\"numbers\": 5}").unwrap();
        assert_eq!(status, 401, "{body}");
        assert!(!body.contains("max_batch") && !body.contains("JSON"), "{body}");
        let (status, _, body) = http_post(http, &vec![b' '; 300_000]).unwrap();
        assert_eq!(status, 401, "{body}");
        // With a credential, a body declared larger than max_batch (100) numbers can be is
        // refused from its Content-Length, before it is read: 413 naming the limit.
        let (status, text) =
            post_head_only(http, 1 << 20, Some(DIALER), TIMEOUT).expect("no answer");
        assert_eq!(status, 413, "{text}");
        assert!(text.contains("server.max_batch"), "{text}");
        // A good batch still passes.
        let body = format!("{{\"numbers\": [\"{}\"]}}", e164(CLEAN));
        let mut request = format!(
            "POST /v1/check HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {DIALER}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body.as_bytes());
        let (status, _, body) = http_raw(http, &request).unwrap();
        assert_eq!(status, 200, "{body}");
    })
    .await
    .unwrap();
    daemon.shutdown().await;
}

/// A raw protobuf CheckBatchRequest of `count` empty strings in `numbers` (field 3).
fn empty_strings(count: usize) -> Vec<u8> {
    [0x1a, 0x00].repeat(count)
}

/// `count` empty `LocationHints` (field 7): two wire bytes each, a vector entry once decoded.
fn empty_locations(count: usize) -> Vec<u8> {
    [0x3a, 0x00].repeat(count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_batches_are_bounded_by_max_batch_before_decoding() {
    let daemon = start(&config("", "")).await;
    // 1 MB of empty strings, far under max_message_bytes (16 MB) but over what 100 numbers
    // (max_batch) can take: refused by its length, before it is decoded.
    let message = empty_strings(500_000);
    let code = grpc_raw(
        daemon.addr,
        "CheckBatch",
        frame(message.len() as u32, &message),
    )
    .await;
    assert_eq!(code, Code::OutOfRange, "a 1 MB batch was decoded");
    // Small in bytes but over the count: refused before decoding, as INVALID_ARGUMENT.
    let message = empty_strings(101);
    let code = grpc_raw(
        daemon.addr,
        "CheckBatch",
        frame(message.len() as u32, &message),
    )
    .await;
    assert_eq!(code, Code::InvalidArgument);
    // One number and 101 empty locations: over the count too (locations are vectors too).
    let mut message = empty_strings(1);
    message.extend(empty_locations(101));
    let code = grpc_raw(
        daemon.addr,
        "CheckBatch",
        frame(message.len() as u32, &message),
    )
    .await;
    assert_eq!(code, Code::InvalidArgument);
    // Packed E.164 (fixed64) of 101 numbers: over the count too.
    let mut packed = vec![0x22, 0xa8, 0x06]; // field 4, length 808
    for _ in 0..101 {
        packed.extend_from_slice(&CLEAN.to_le_bytes());
    }
    let code = grpc_raw(
        daemon.addr,
        "CheckBatch",
        frame(packed.len() as u32, &packed),
    )
    .await;
    assert_eq!(code, Code::InvalidArgument);
    // The largest allowed batch passes: 100 numbers of 64 characters, each with the longest
    // location hints.
    let long = format!("+1{}", "2".repeat(62));
    let mut client = daemon.client().await;
    let answer = client
        .check_batch(CheckBatchRequest {
            tenant: "acme".repeat(16),
            campaign: "outbound".repeat(8),
            numbers: vec![long; 100],
            locations: vec![longest_location(); 100],
            ..Default::default()
        })
        .await;
    assert_eq!(
        answer.unwrap_err().code(),
        Code::NotFound,
        "decoded, then the tenant"
    );
    assert_serving(&daemon, "batches over max_batch").await;
    daemon.shutdown().await;
}

/// The daemon binary as a process of its own (production allocator, its own RSS), with every
/// interface on free loopback ports; `server_extra` goes into `[server]`, `sip_extra` into
/// `[sip]`, and `rlimit_nofile` (if any) is its file limit.
pub(crate) struct DaemonProcess {
    pub child: std::process::Child,
    pub _dir: tempfile::TempDir,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub sip_udp: SocketAddr,
    pub sip_tcp: SocketAddr,
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on fresh loopback ports and waits until /readyz says 200. A port picked by
/// [`free_port`] can be taken by another process before the daemon binds it; a daemon that
/// exits saying so is started again on other ports.
pub(crate) fn spawn_daemon(
    server_extra: &str,
    sip_extra: &str,
    rlimit_nofile: Option<u64>,
) -> DaemonProcess {
    for attempt in 1.. {
        match spawn_daemon_once(server_extra, sip_extra, rlimit_nofile) {
            Ok(daemon) => return daemon,
            Err(stderr) if attempt < 5 && stderr.contains("Address already in use") => {
                eprintln!("the daemon lost a port race (attempt {attempt}); new ports");
            }
            Err(stderr) => panic!("the daemon exited while starting: {stderr}"),
        }
    }
    unreachable!()
}

fn spawn_daemon_once(
    server_extra: &str,
    sip_extra: &str,
    rlimit_nofile: Option<u64>,
) -> Result<DaemonProcess, String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("erased.key"), crate::server::KEY_TEXT).unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    write_all_sets(&dir.path().join("data"), Day::today());
    let (grpc, http, sip) = (free_port(), free_port(), free_port());
    let base = if server_extra.contains("max_batch") {
        CONFIG.replace("max_batch = 100\n", "")
    } else {
        CONFIG.to_owned()
    };
    let text = base
        .replace(
            "grpc_listen = \"127.0.0.1:0\"",
            &format!("grpc_listen = \"127.0.0.1:{grpc}\""),
        )
        .replace(
            "[server]\n",
            &format!("[server]\nhttp_listen = \"127.0.0.1:{http}\"\n{server_extra}"),
        );
    let text = format!(
        "{text}\n[sip]\nlisten_udp = \"127.0.0.1:{sip}\"\nlisten_tcp = \"127.0.0.1:{sip}\"\n{sip_extra}"
    );
    std::fs::write(dir.path().join("config.toml"), text).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_suppressd"));
    command
        .args(["serve", "--config"])
        .arg(dir.path().join("config.toml"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if let Some(limit) = rlimit_nofile {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let rlimit = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let child = command.spawn().unwrap();
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let daemon = DaemonProcess {
        child,
        _dir: dir,
        grpc: at(grpc),
        http: at(http),
        sip_udp: at(sip),
        sip_tcp: at(sip),
    };
    let mut daemon = daemon;
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(daemon.http).is_err()
        || http_get(daemon.http, "/readyz").is_none_or(|(status, _, _)| status != 200)
    {
        if let Ok(Some(_)) = daemon.child.try_wait() {
            let mut stderr = String::new();
            if let Some(mut pipe) = daemon.child.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr);
            }
            return Err(stderr);
        }
        assert!(Instant::now() < deadline, "the daemon did not get ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(daemon)
}

/// Resident set size of process `pid`, in bytes.
pub(crate) fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// The longest location hints a number may carry (sizes the batch limits): the longest IANA
/// zone name, a state and a ZIP+4 code that agree.
fn longest_location() -> suppressd::proto::LocationHints {
    suppressd::proto::LocationHints {
        time_zone: "America/Argentina/ComodRivadavia".into(),
        us_state: "FL".into(),
        postal_code: "33101-1234".into(),
    }
}

/// With `max_in_flight` requests of the largest allowed size in flight (gRPC and HTTP), and
/// hostile ones beside them (messages of empty strings up to 2 MB, under max_message_bytes but
/// over what max_batch numbers take), the daemon's RSS grows less than the bound it computes
/// (`limits::in_flight_memory_bound`, RUNBOOK "Hardening"). The daemon runs as its own
/// process, so the clients' memory is not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_under_the_in_flight_bound() {
    let extra = "max_in_flight = 16\nmax_batch = 5000\n";
    let daemon = tokio::task::spawn_blocking(move || spawn_daemon(extra, "", None))
        .await
        .unwrap();
    // The daemon's [server], for the bound.
    let text = std::fs::read_to_string(daemon._dir.path().join("config.toml")).unwrap();
    let server = suppressd::config::Config::parse(&text, "bound.toml", daemon._dir.path())
        .unwrap()
        .server()
        .clone();
    let bound = suppressd::server::limits::in_flight_memory_bound(&server) as u64;
    let pid = daemon.child.id();
    let (grpc, http) = (daemon.grpc, daemon.http);
    let long = format!("+1{}", "2".repeat(62));
    // The largest allowed batches: every number of the longest text, with the longest hints.
    let grpc_batch = CheckBatchRequest {
        numbers: vec![long.clone(); server.max_batch],
        locations: vec![longest_location(); server.max_batch],
        ..Default::default()
    };
    let location = longest_location();
    let json = format!(
        "{{\"numbers\": [{}], \"locations\": [{}]}}",
        vec![format!("\"{long}\""); server.max_batch].join(","),
        vec![
            format!(
                "{{\"time_zone\": \"{}\", \"us_state\": \"{}\", \"postal_code\": \"{}\"}}",
                location.time_zone, location.us_state, location.postal_code
            );
            server.max_batch
        ]
        .join(",")
    );
    let hostile = frame(2 << 20, &empty_strings(1 << 20));
    let hostile_locations = frame(2 << 20, &empty_locations(1 << 20));
    let round = |rounds: usize| {
        let (grpc_batch, json) = (grpc_batch.clone(), json.clone());
        let (hostile, hostile_locations) = (hostile.clone(), hostile_locations.clone());
        async move {
            let mut tasks = tokio::task::JoinSet::new();
            for worker in 0..48 {
                let (batch, json) = (grpc_batch.clone(), json.clone());
                let hostile = if worker % 2 == 0 {
                    hostile.clone()
                } else {
                    hostile_locations.clone()
                };
                tasks.spawn(async move {
                    let mut client = SuppressionClient::connect(format!("http://{grpc}"))
                        .await
                        .unwrap();
                    let mut answered = 0usize;
                    for _ in 0..rounds {
                        match worker % 3 {
                            0 => {
                                if client.check_batch(batch.clone()).await.is_ok() {
                                    answered += 1;
                                }
                            }
                            1 => {
                                let json = json.clone();
                                let answer = tokio::task::spawn_blocking(move || {
                                    http_post(http, json.as_bytes())
                                })
                                .await
                                .unwrap();
                                if answer.is_some_and(|(status, _, _)| status == 200) {
                                    answered += 1;
                                }
                            }
                            _ => {
                                let code = grpc_raw(grpc, "CheckBatch", hostile.clone()).await;
                                assert_ne!(code, Code::Ok, "a hostile batch was answered");
                            }
                        }
                    }
                    answered
                });
            }
            let mut answered = 0;
            while let Some(result) = tasks.join_next().await {
                answered += result.unwrap();
            }
            answered
        }
    };
    round(2).await;
    let before = rss_of(pid);
    let started = Instant::now();
    // The peak, sampled every 20 ms while the requests run.
    let (done, mut finished) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        loop {
            peak = peak.max(rss_of(pid));
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = finished.changed() => return peak,
            }
        }
    });
    let answered = round(8).await;
    let _ = done.send(true);
    let after = sampler.await.unwrap();
    let growth = after.saturating_sub(before);
    eprintln!(
        "bound: {:?}; {answered} largest batches answered; daemon RSS {} -> peak {} MiB (+{} KiB); bound {} MiB ({} B per request x max_in_flight {})",
        started.elapsed(),
        before >> 20,
        after >> 20,
        growth >> 10,
        bound >> 20,
        suppressd::server::limits::request_memory_bound(&server),
        server.max_in_flight
    );
    assert!(answered > 0, "no largest batch was answered");
    assert!(
        growth < bound,
        "daemon RSS grew {} MiB, over the bound of {} MiB",
        growth >> 20,
        bound >> 20
    );
}

// ---------------------------------------------------------------------------------------------
// (f) The SIP dip is not an open door or a reflector (issue 13, §4).

#[test]
fn sip_off_loopback_needs_allowed_sources() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("erased.key"), crate::server::KEY_TEXT).unwrap();
    for listen in [
        "listen_udp = \"0.0.0.0:5070\"",
        "listen_tcp = \"10.0.0.1:5070\"",
    ] {
        let text = format!("{CONFIG}\n[sip]\n{listen}\n");
        let error = suppressd::config::Config::parse(&text, "test.toml", dir.path())
            .expect_err("an open SIP dip was accepted");
        assert!(error.key.contains("sip.allowed_sources"), "{error}");
        let text = format!("{CONFIG}\n[sip]\n{listen}\nallowed_sources = [\"10.0.0.0/8\"]\n");
        suppressd::config::Config::parse(&text, "test.toml", dir.path()).unwrap();
        let text = format!(
            "{CONFIG}\n[sip]\n{listen}\n\n[[sip.source]]\nnetwork = \"10.1.0.0/16\"\ntenants = [\"acme\"]\n"
        );
        suppressd::config::Config::parse(&text, "test.toml", dir.path()).unwrap();
    }
    // Bindings name tenants and campaigns that exist.
    for (binding, reason) in [
        (
            "network = \"10.1.0.0/16\"\ntenants = [\"nobody\"]\n",
            "no tenant named 'nobody'",
        ),
        (
            "network = \"10.1.0.0/16\"\ntenants = []\n",
            "at least one tenant",
        ),
        (
            "network = \"10.1.0.0/16\"\ntenants = [\"acme\"]\ncampaigns = [\"only\"]\n",
            "no campaign 'only'",
        ),
        (
            "network = \"10.1.0.1/16\"\ntenants = [\"acme\"]\n",
            "host bits",
        ),
    ] {
        let text =
            format!("{CONFIG}\n[sip]\nlisten_udp = \"127.0.0.1:0\"\n\n[[sip.source]]\n{binding}");
        let error =
            suppressd::config::Config::parse(&text, "test.toml", dir.path()).expect_err(binding);
        assert!(error.key.contains("sip.source"), "{error}");
        assert!(error.reason.contains(reason), "{error}");
    }
}

/// The status line and the whole answer of one UDP exchange from `socket`.
fn sip_udp_answer(socket: &UdpSocket, dip: SocketAddr, message: &[u8]) -> Option<(u16, String)> {
    socket
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    socket.send_to(message, dip).unwrap();
    let mut buffer = [0u8; 65_536];
    let (length, _) = socket.recv_from(&mut buffer).ok()?;
    let text = String::from_utf8_lossy(&buffer[..length]).into_owned();
    Some((text.split(' ').nth(1)?.parse().ok()?, text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_sources_are_bound_to_their_tenants() {
    // 127.0.0.1 may ask for acme only; 127.0.0.3 for acme's outbound campaign only; 127.0.0.2
    // for any tenant.
    let text = config("", "").replace("[sip]\n", "[sip]\nallowed_sources = [\"127.0.0.2/32\"]\n")
        + "\n[[sip.source]]\nnetwork = \"127.0.0.1/32\"\ntenants = [\"acme\"]\n\n[[sip.source]]\nnetwork = \"127.0.0.3\"\ntenants = [\"acme\"]\ncampaigns = [\"outbound\"]\n";
    let daemon = start(&text).await;
    let udp = daemon.handle.sip_udp_addr.unwrap();
    let tcp = daemon.handle.sip_tcp_addr.unwrap();
    tokio::task::spawn_blocking(move || {
        let ask = |from: &str, extra: &str| -> Option<(u16, String)> {
            let socket = UdpSocket::bind(format!("{from}:0")).unwrap();
            let via = socket.local_addr().unwrap().to_string();
            let invite = sip_invite(&e164(CLEAN), "bound", extra, "UDP", &via);
            sip_udp_answer(&socket, udp, invite.as_bytes())
        };
        // 127.0.0.1: acme (named or by default) yes, other no.
        assert_eq!(ask("127.0.0.1", "").unwrap().0, 302);
        assert_eq!(ask("127.0.0.1", "X-Tenant: acme\r\n").unwrap().0, 302);
        let (status, text) = ask("127.0.0.1", "X-Tenant: other\r\nX-Campaign: only\r\n").unwrap();
        assert_eq!(status, 403, "{text}");
        assert!(text.contains("TENANT_NOT_ALLOWED"), "{text}");
        // 127.0.0.3: acme's outbound only.
        assert_eq!(ask("127.0.0.3", "").unwrap().0, 302);
        let (status, text) = ask("127.0.0.3", "X-Campaign: lenient\r\n").unwrap();
        assert_eq!(status, 403, "{text}");
        assert!(text.contains("CAMPAIGN_NOT_ALLOWED"), "{text}");
        // 127.0.0.2: any tenant.
        assert_eq!(
            ask("127.0.0.2", "X-Tenant: other\r\nX-Campaign: only\r\n")
                .unwrap()
                .0,
            302
        );
        // 127.0.0.4: no entry at all: dropped, not even a 403.
        assert_eq!(ask("127.0.0.4", ""), None);
        // TCP follows the same bindings.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        socket.connect(&tcp.into()).unwrap();
        let mut stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let invite = sip_invite(
            &e164(CLEAN),
            "tcp-bound",
            "X-Tenant: other\r\nX-Campaign: only\r\n",
            "TCP",
            "127.0.0.1:5999",
        );
        stream.write_all(invite.as_bytes()).unwrap();
        let mut buffer = [0u8; 4096];
        let n = stream.read(&mut buffer).unwrap();
        let text = String::from_utf8_lossy(&buffer[..n]);
        assert!(text.starts_with("SIP/2.0 403 "), "{text}");
    })
    .await
    .unwrap();
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_answers_are_no_larger_than_needed() {
    let daemon = start(&config("", "")).await;
    let udp = daemon.handle.sip_udp_addr.unwrap();
    tokio::task::spawn_blocking(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let via = socket.local_addr().unwrap().to_string();
        // About the smallest INVITE a proxy can send (compact headers): the reflection case.
        let minimal = |number: &str| {
            format!(
                "INVITE sip:{number}@a SIP/2.0\r\nv: SIP/2.0/UDP {via};branch=z9hG4bK1;rport\r\nf: <sip:a>;tag=1\r\nt: <sip:b>\r\ni: 1\r\nCSeq: 1 INVITE\r\nl: 0\r\n\r\n"
            )
        };
        let request = minimal(&e164(CLEAN));
        let (status, answer) = sip_udp_answer(&socket, udp, request.as_bytes()).unwrap();
        assert_eq!(status, 302);
        assert!(!answer.contains("Reason:"), "{answer}");
        assert!(!answer.contains("Server:"), "{answer}");
        let factor = answer.len() as f64 / request.len() as f64;
        eprintln!("sip amplification: {} -> {} bytes ({factor:.2}x)", request.len(), answer.len());
        assert!(factor <= 1.75, "{} -> {} bytes: {factor:.2}x", request.len(), answer.len());
        // Blocks carry their Reason (the proxy relays it to the dialer).
        let (status, answer) =
            sip_udp_answer(&socket, udp, minimal(&e164(REGISTRY)).as_bytes()).unwrap();
        assert_eq!(status, 603);
        assert!(answer.contains("Reason: SIP;cause=603;text=\"NATIONAL_REGISTRY\""), "{answer}");
    })
    .await
    .unwrap();
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sip_tcp_source_cannot_hold_the_dip() {
    let text = config("", "").replace(
        "[sip]\n",
        "[sip]\ntcp_max_connections_per_source = 4\ntcp_idle_seconds = 2\n",
    );
    let daemon = start(&text).await;
    let tcp = daemon.handle.sip_tcp_addr.unwrap();
    tokio::task::spawn_blocking(move || {
        let connect_from = |ip: &str| -> TcpStream {
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.bind(&format!("{ip}:0").parse::<SocketAddr>().unwrap().into()).unwrap();
            socket.connect(&tcp.into()).unwrap();
            let stream: TcpStream = socket.into();
            stream.set_read_timeout(Some(TIMEOUT)).unwrap();
            stream
        };
        let closed = |stream: &mut TcpStream, within: Duration| -> bool {
            stream.set_read_timeout(Some(within)).unwrap();
            let mut byte = [0u8; 1];
            matches!(stream.read(&mut byte), Ok(0))
                || matches!(stream.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
        };
        let started = Instant::now();
        let mut held: Vec<TcpStream> = (0..4).map(|_| connect_from("127.0.0.1")).collect();
        std::thread::sleep(Duration::from_millis(200));
        // The fifth from the same source is closed at once...
        let mut fifth = connect_from("127.0.0.1");
        assert!(closed(&mut fifth, Duration::from_millis(800)), "a fifth connection from one source was kept");
        // ...while another source is served.
        let invite = sip_invite(&e164(CLEAN), "other-source", "", "TCP", "127.0.0.5:5999");
        let mut other = connect_from("127.0.0.5");
        other.write_all(invite.as_bytes()).unwrap();
        let mut buffer = [0u8; 4096];
        let n = other.read(&mut buffer).unwrap();
        assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("SIP/2.0 302 "));
        // Idle connections are closed after tcp_idle_seconds (2 s), not 5 minutes.
        for stream in &mut held {
            assert!(closed(stream, Duration::from_secs(4)), "an idle connection stayed open");
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        // And the source may connect again.
        let mut again = connect_from("127.0.0.1");
        let invite = sip_invite(&e164(CLEAN), "again", "", "TCP", "127.0.0.1:5999");
        again.write_all(invite.as_bytes()).unwrap();
        let n = again.read(&mut buffer).unwrap();
        assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("SIP/2.0 302 "));
    })
    .await
    .unwrap();
    daemon.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// (g) Connections are bounded, timed out, and accept loops never spin (issue 13, §3).

/// CPU seconds (user + system) process `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// A TCP connection from `source` to `to`, or None when refused at once.
fn connect_from(source: &str, to: SocketAddr) -> Option<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&format!("{source}:0").parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.connect(&to.into()).ok()?;
    Some(socket.into())
}

/// True when the peer has closed `stream` (EOF or reset) within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buffer = [0u8; 512];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue, // an answer (a 408) before the close
            Err(error) => {
                return !matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
}

/// Under `ulimit -n 256`, 300 idle and 50 slow-header HTTP connections, 100 idle gRPC and 100
/// idle SIP TCP connections: legitimate gRPC, HTTP and SIP checks are answered within 1 s
/// each, the daemon uses under 15 % of a core meanwhile, and the idle connections it admitted
/// are closed by the timeouts (header_timeout_ms = 1500, sip.tcp_idle_seconds = 2). The daemon
/// is a child process with its own file limit.
#[test]
fn idle_and_slow_connections_cannot_starve_the_daemon() {
    let daemon = spawn_daemon(
        "header_timeout_ms = 1500\n",
        "tcp_idle_seconds = 2\n",
        Some(256),
    );
    let pid = daemon.child.id();
    let started = Instant::now();
    let cpu_before = cpu_seconds(pid);
    let mut held: Vec<(&str, TcpStream)> = Vec::new();
    for _ in 0..300 {
        if let Some(stream) = connect_from("127.0.0.2", daemon.http) {
            held.push(("http idle", stream));
        }
    }
    let mut slow: Vec<TcpStream> = (0..50)
        .filter_map(|_| connect_from("127.0.0.3", daemon.http))
        .collect();
    for stream in &mut slow {
        let _ = stream.write_all(b"GET /v1/check?number=%2B12015550127 HTTP/1.1\r\n");
    }
    for _ in 0..100 {
        if let Some(stream) = connect_from("127.0.0.4", daemon.grpc) {
            held.push(("grpc idle", stream));
        }
        if let Some(stream) = connect_from("127.0.0.5", daemon.sip_tcp) {
            held.push(("sip idle", stream));
        }
    }
    // Slowloris: a header line every 300 ms, never the blank line.
    let trickle = std::thread::spawn(move || {
        for round in 0..8 {
            for stream in &mut slow {
                let _ = write!(stream, "X-Slow-{round}: 1\r\n");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        slow
    });
    // Legitimate checks from 127.0.0.1, each answered within 1 s.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for round in 0..3 {
        let asked = Instant::now();
        let grpc = daemon.grpc;
        let answer = runtime.block_on(async move {
            let mut client = tokio::time::timeout(
                Duration::from_secs(1),
                SuppressionClient::connect(format!("http://{grpc}")),
            )
            .await
            .expect("gRPC connect took over 1 s")
            .unwrap();
            tokio::time::timeout(
                Duration::from_secs(1),
                client.check(CheckRequest {
                    number: e164(CLEAN),
                    ..Default::default()
                }),
            )
            .await
            .expect("gRPC check took over 1 s")
            .unwrap()
            .into_inner()
        });
        assert_eq!(answer.verdict, Verdict::Allow as i32);
        let (status, _, body) =
            http_get(daemon.http, &format!("/v1/check?number=%2B{CLEAN}")).expect("HTTP closed");
        assert_eq!(status, 200, "{body}");
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let via = socket.local_addr().unwrap().to_string();
        let invite = sip_invite(&e164(CLEAN), &format!("legit-{round}"), "", "UDP", &via);
        assert_eq!(
            sip_udp(
                &socket,
                daemon.sip_udp,
                invite.as_bytes(),
                Duration::from_secs(1)
            ),
            Some(302)
        );
        let invite = sip_invite(
            &e164(CLEAN),
            &format!("legit-tcp-{round}"),
            "",
            "TCP",
            "127.0.0.1:5999",
        );
        assert_eq!(
            sip_tcp(daemon.sip_tcp, invite.as_bytes(), Duration::from_secs(1)),
            Some(302)
        );
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "round {round}: {:?}",
            asked.elapsed()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut slow = trickle.join().unwrap();
    // Every connection the daemon kept is closed by a timeout: HTTP and gRPC within
    // header_timeout_ms (1.5 s), SIP within tcp_idle_seconds (2 s); allow 3 s more.
    let deadline = started + Duration::from_secs(6);
    let mut open = Vec::new();
    for (what, stream) in held.iter_mut() {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(10));
        if !closed_within(stream, left) {
            open.push(*what);
        }
    }
    for stream in &mut slow {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(10));
        if !closed_within(stream, left) {
            open.push("http slow headers");
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_before;
    eprintln!(
        "starve: {} connections held by the attack, {} still open; daemon CPU {cpu:.2} s over {elapsed:.1} s",
        held.len() + slow.len(),
        open.len()
    );
    assert!(open.is_empty(), "still open after the timeouts: {open:?}");
    assert!(
        cpu < 0.15 * elapsed,
        "daemon CPU {cpu:.2} s over {elapsed:.1} s"
    );
}
