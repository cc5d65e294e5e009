//! The SIP redirect dip end to end: the real daemon on loopback, driven with raw SIP over UDP
//! and TCP sockets, as a proxy would send it.

use crate::server::{
    CLEAN, CONFIG, CONSENTED, INTERNAL, REGISTRY, TestDaemon, e164, write_all_sets,
};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;
use suppressd::engine::date::Day;

/// The value of one series of the daemon's metrics (0 when absent), summed over the series of
/// `name` whose labels include every one of `labels`. The recorder is process-wide: compare
/// before and after, never absolute values.
pub fn metric(name: &str, labels: &[(&str, &str)]) -> f64 {
    suppressd::metrics::metrics()
        .render()
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
                && labels
                    .iter()
                    .all(|(key, value)| line.contains(&format!("{key}=\"{value}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Messages the dip counted with this transport and outcome.
fn sip_messages(transport: &str, outcome: &str) -> f64 {
    metric(
        "suppressd_sip_messages_total",
        &[("transport", transport), ("outcome", outcome)],
    )
}

fn sip_config() -> String {
    format!("{CONFIG}\n[sip]\nlisten_udp = \"127.0.0.1:0\"\nlisten_tcp = \"127.0.0.1:0\"\n")
}

async fn start(write_sets: bool) -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    if write_sets {
        write_all_sets(&dir.path().join("data"), Day::today());
    }
    TestDaemon::start_in(dir, &sip_config()).await
}

/// A request as a proxy sends it; `via_port` is the sent-by port, `extra` more header lines.
fn request(method: &str, uri: &str, via: &str, call: &str, extra: &str) -> String {
    format!(
        "{method} {uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {via};branch=z9hG4bK-{call}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:dialer@example.com>;tag=f-{call}\r\n\
         To: <{uri}>\r\n\
         Call-ID: {call}@test\r\n\
         CSeq: 1 {method}\r\n\
         {extra}\
         Content-Length: 0\r\n\r\n"
    )
}

fn invite_to(number: &str, via: &str, call: &str, extra: &str) -> String {
    request(
        "INVITE",
        &format!("sip:{number}@127.0.0.1:5090"),
        via,
        call,
        extra,
    )
}

/// A response: status code and headers.
struct Response {
    status: u16,
    text: String,
}

impl Response {
    fn parse(bytes: &[u8]) -> Response {
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let status = text.split(' ').nth(1).unwrap().parse().unwrap();
        Response { status, text }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.text.split("\r\n").find_map(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(": "))
        })
    }

    fn headers(&self, name: &str) -> Vec<&str> {
        self.text
            .split("\r\n")
            .filter_map(|line| {
                line.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(": "))
            })
            .collect()
    }
}

struct Udp {
    socket: UdpSocket,
    dip: SocketAddr,
}

impl Udp {
    fn open(dip: SocketAddr) -> Udp {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        Udp { socket, dip }
    }

    fn via(&self) -> String {
        self.socket.local_addr().unwrap().to_string()
    }

    fn send(&self, message: &str) {
        self.socket.send_to(message.as_bytes(), self.dip).unwrap();
    }

    fn receive(&self) -> Response {
        let mut buffer = [0u8; 65_536];
        let (length, from) = self
            .socket
            .recv_from(&mut buffer)
            .expect("no response from the dip");
        assert_eq!(from, self.dip);
        Response::parse(&buffer[..length])
    }

    fn ask(&self, message: &str) -> Response {
        self.send(message);
        self.receive()
    }

    /// Nothing arrives within `wait`.
    fn silent(&self, wait: Duration) -> bool {
        self.socket.set_read_timeout(Some(wait)).unwrap();
        let mut buffer = [0u8; 65_536];
        let silent = self.socket.recv_from(&mut buffer).is_err();
        self.socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        silent
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_answers_every_case() {
    let daemon = start(true).await;
    let dip = daemon.handle.sip_udp_addr.unwrap();
    tokio::task::spawn_blocking(move || {
        let udp = Udp::open(dip);
        let via = udp.via();

        // Allowed: 302 back to the original target, headers echoed, a To tag added.
        let invite = invite_to(&e164(CLEAN), &via, "clean", "");
        let response = udp.ask(&invite);
        assert_eq!(response.status, 302, "{}", response.text);
        assert_eq!(
            response.header("Contact"),
            Some(format!("<sip:{}@127.0.0.1:5090>", e164(CLEAN)).as_str())
        );
        assert_eq!(
            response.header("Via"),
            Some(format!("SIP/2.0/UDP {via};branch=z9hG4bK-clean").as_str())
        );
        assert_eq!(
            response.header("From"),
            Some("<sip:dialer@example.com>;tag=f-clean")
        );
        assert!(
            response
                .header("To")
                .unwrap()
                .starts_with(&format!("<sip:{}@127.0.0.1:5090>;tag=", e164(CLEAN)))
        );
        assert_eq!(response.header("Call-ID"), Some("clean@test"));
        assert_eq!(response.header("CSeq"), Some("1 INVITE"));
        assert_eq!(response.header("Content-Length"), Some("0"));
        // A retransmission gets the same answer, To tag included.
        assert_eq!(udp.ask(&invite).text, response.text);

        // Blocked: 603 naming the reason and the set.
        let response = udp.ask(&invite_to(&e164(REGISTRY), &via, "registry", ""));
        assert_eq!(response.status, 603, "{}", response.text);
        assert_eq!(
            response.header("Reason"),
            Some("SIP;cause=603;text=\"NATIONAL_REGISTRY\"")
        );
        assert_eq!(response.header("X-Suppressd-Sets"), Some("us-dnc"));
        assert!(response.header("Contact").is_none());
        let response = udp.ask(&invite_to(
            &e164(INTERNAL),
            &via,
            "internal",
            "X-Tenant: acme\r\nX-Campaign: outbound\r\n",
        ));
        assert_eq!(
            (response.status, response.header("Reason")),
            (603, Some("SIP;cause=603;text=\"INTERNAL_DNC\""))
        );
        // Visual separators and user parameters in the Request-URI.
        let dashed = format!(
            "+{}-{}-{};npdi",
            &CLEAN.to_string()[..1],
            &CLEAN.to_string()[1..4],
            &CLEAN.to_string()[4..]
        );
        assert_eq!(udp.ask(&invite_to(&dashed, &via, "dashed", "")).status, 302);
        let response = udp.ask(&request(
            "INVITE",
            &format!("tel:{}", e164(REGISTRY)),
            &via,
            "tel",
            "",
        ));
        assert_eq!(response.status, 603);

        // The campaign header selects the policy: consent required.
        let consented = "X-Campaign: consented\r\n";
        let response = udp.ask(&invite_to(&e164(CLEAN), &via, "no-consent", consented));
        assert_eq!(
            (response.status, response.header("Reason")),
            (603, Some("SIP;cause=603;text=\"NO_CONSENT\""))
        );
        assert_eq!(
            udp.ask(&invite_to(&e164(CONSENTED), &via, "consent", consented))
                .status,
            302
        );

        // Not a number: blocked, fail closed.
        let response = udp.ask(&invite_to("alice", &via, "alice", ""));
        assert_eq!(
            (response.status, response.header("Reason")),
            (603, Some("SIP;cause=603;text=\"INVALID_NUMBER\""))
        );

        // Unknown tenant or campaign: 403.
        let response = udp.ask(&invite_to(
            &e164(CLEAN),
            &via,
            "tenant",
            "X-Tenant: nobody\r\n",
        ));
        assert_eq!(
            (response.status, response.header("Reason")),
            (403, Some("SIP;cause=403;text=\"UNKNOWN_TENANT\""))
        );
        let response = udp.ask(&invite_to(
            &e164(CLEAN),
            &via,
            "campaign",
            "X-Campaign: nothing\r\n",
        ));
        assert_eq!(
            (response.status, response.header("Reason")),
            (403, Some("SIP;cause=403;text=\"UNKNOWN_CAMPAIGN\""))
        );

        // OPTIONS: 200 with Allow. Other methods: 405.
        let response = udp.ask(&request("OPTIONS", "sip:127.0.0.1", &via, "options", ""));
        assert_eq!(
            (response.status, response.header("Allow")),
            (200, Some("INVITE, OPTIONS, ACK"))
        );
        for method in ["BYE", "CANCEL", "REGISTER", "INFO"] {
            let response = udp.ask(&request(method, "sip:127.0.0.1", &via, method, ""));
            assert_eq!(
                (response.status, response.header("Allow")),
                (405, Some("INVITE, OPTIONS, ACK")),
                "{method}"
            );
            assert_eq!(
                response.header("CSeq"),
                Some(format!("1 {method}").as_str())
            );
        }

        // Malformed but answerable: 400 with a Warning. Unanswerable: dropped, counted.
        let answered = sip_messages("udp", "malformed_answered");
        let malformed = metric("suppressd_sip_malformed_total", &[]);
        let bad =
            invite_to(&e164(CLEAN), &via, "bad", "").replace("CSeq: 1 INVITE", "CSeq: one INVITE");
        let response = udp.ask(&bad);
        assert_eq!(
            (response.status, response.header("Warning")),
            (400, Some("399 suppressd \"malformed CSeq\""))
        );
        assert!(sip_messages("udp", "malformed_answered") > answered);
        let dropped = sip_messages("udp", "malformed_dropped");
        let absorbed = sip_messages("udp", "ack_absorbed");
        udp.send("\u{1}\u{2} not SIP at all");
        udp.send(
            &invite_to(&e164(CLEAN), &via, "no-call-id", "")
                .replace("Call-ID: no-call-id@test\r\n", ""),
        );
        // ACK is absorbed: nothing comes back.
        udp.send(&request(
            "ACK",
            &format!("sip:{}@127.0.0.1:5090", e164(REGISTRY)),
            &via,
            "registry",
            "",
        ));
        assert!(
            udp.silent(Duration::from_millis(300)),
            "the dip answered an ACK or garbage"
        );
        assert!(sip_messages("udp", "malformed_dropped") >= dropped + 2.0);
        assert!(sip_messages("udp", "ack_absorbed") > absorbed);
        // The dashboards' series counts both (it was described but never counted before).
        assert!(metric("suppressd_sip_malformed_total", &[]) >= malformed + 3.0);
        // The dip still answers after all that.
        assert_eq!(
            udp.ask(&request("OPTIONS", "sip:127.0.0.1", &via, "after", ""))
                .status,
            200
        );
    })
    .await
    .unwrap();
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_responses_follow_via_and_rport() {
    let daemon = start(true).await;
    let dip = daemon.handle.sip_udp_addr.unwrap();
    tokio::task::spawn_blocking(move || {
        let sender = Udp::open(dip);
        let other = Udp::open(dip);
        // No rport: the answer goes to the sent-by port (here another socket), from the same IP.
        let response = {
            sender.send(&invite_to(&e164(CLEAN), &other.via(), "sent-by", ""));
            other.receive()
        };
        assert_eq!(response.status, 302);
        assert_eq!(response.header("Via"), Some(format!("SIP/2.0/UDP {};branch=z9hG4bK-sent-by", other.via()).as_str()));
        assert!(sender.silent(Duration::from_millis(200)));
        // rport: the answer goes to the source port, and the Via says so (RFC 3581).
        let via = format!("{};rport", other.via());
        sender.send(&invite_to(&e164(REGISTRY), &via, "rport", ""));
        let response = sender.receive();
        assert_eq!(response.status, 603);
        let source = sender.socket.local_addr().unwrap();
        assert_eq!(
            response.header("Via"),
            Some(format!("SIP/2.0/UDP {};rport={};branch=z9hG4bK-rport;received=127.0.0.1", other.via(), source.port()).as_str())
        );
        assert!(other.silent(Duration::from_millis(200)));
        // Every Via comes back, in order.
        let two = invite_to(&e164(CLEAN), &sender.via(), "two", "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-a, SIP/2.0/TCP 10.0.0.2;branch=z9hG4bK-b\r\n");
        let response = sender.ask(&two);
        assert_eq!(
            response.headers("Via"),
            [
                format!("SIP/2.0/UDP {};branch=z9hG4bK-two", sender.via()).as_str(),
                "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-a",
                "SIP/2.0/TCP 10.0.0.2;branch=z9hG4bK-b"
            ]
        );
    })
    .await
    .unwrap();
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_answers_503() {
    let daemon = start(false).await;
    let dip = daemon.handle.sip_udp_addr.unwrap();
    tokio::task::spawn_blocking(move || {
        let udp = Udp::open(dip);
        let response = udp.ask(&invite_to(&e164(CLEAN), &udp.via(), "not-ready", ""));
        assert_eq!(response.status, 503, "{}", response.text);
        assert_eq!(
            response.header("Reason"),
            Some("SIP;cause=503;text=\"NOT_READY\"")
        );
        assert!(response.header("Retry-After").is_none());
        // Keepalives still work while not ready.
        assert_eq!(
            udp.ask(&request("OPTIONS", "sip:127.0.0.1", &udp.via(), "o", ""))
                .status,
            200
        );
    })
    .await
    .unwrap();
    daemon.shutdown().await;
}

/// Reads one response from a TCP stream (headers up to the blank line; Content-Length is 0).
fn read_tcp_response(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Response {
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let response = Response::parse(&pending[..end + 4]);
            pending.drain(..end + 4);
            return response;
        }
        let mut chunk = [0u8; 4096];
        let read = stream
            .read(&mut chunk)
            .expect("no response on the TCP connection");
        assert!(read > 0, "connection closed before a response");
        pending.extend_from_slice(&chunk[..read]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_frames_and_answers_on_the_connection() {
    let daemon = start(true).await;
    let dip = daemon.handle.sip_tcp_addr.unwrap();
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(dip).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let via = "127.0.0.1:5999";
        let tcp = |m: String| m.replace("SIP/2.0/UDP", "SIP/2.0/TCP");
        // Two INVITEs (one with a body) and an ACK in one write; then one split in two writes.
        let with_body = tcp(invite_to(
            &e164(CLEAN),
            via,
            "body",
            "Content-Type: application/sdp\r\n",
        ))
        .replace(
            "Content-Length: 0\r\n\r\n",
            "Content-Length: 10\r\n\r\nv=0\r\ns=-\r\n",
        );
        let batch = format!(
            "{}{}{}",
            tcp(invite_to(&e164(REGISTRY), via, "t1", "")),
            with_body,
            tcp(request("ACK", "sip:x@127.0.0.1", via, "t1", ""))
        );
        stream.write_all(batch.as_bytes()).unwrap();
        let mut pending = Vec::new();
        let first = read_tcp_response(&mut stream, &mut pending);
        assert_eq!(
            (first.status, first.header("Call-ID")),
            (603, Some("t1@test"))
        );
        let second = read_tcp_response(&mut stream, &mut pending);
        assert_eq!(
            (second.status, second.header("Call-ID")),
            (302, Some("body@test"))
        );
        let split = tcp(request("OPTIONS", "sip:127.0.0.1", via, "split", ""));
        let (a, b) = split.split_at(37);
        stream.write_all(a.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        stream.write_all(b.as_bytes()).unwrap();
        let third = read_tcp_response(&mut stream, &mut pending);
        assert_eq!(
            (third.status, third.header("Call-ID")),
            (200, Some("split@test")),
            "the ACK got no answer"
        );
        // A double-CRLF keepalive gets a CRLF (RFC 5626).
        stream.write_all(b"\r\n\r\n").unwrap();
        let mut pong = [0u8; 2];
        stream.read_exact(&mut pong).unwrap();
        assert_eq!(&pong, b"\r\n");
        // No Content-Length over TCP: 400, then the connection closes (framing is lost).
        let unframed = tcp(request("OPTIONS", "sip:127.0.0.1", via, "unframed", ""))
            .replace("Content-Length: 0\r\n", "");
        stream.write_all(unframed.as_bytes()).unwrap();
        let response = read_tcp_response(&mut stream, &mut pending);
        assert_eq!(
            (response.status, response.header("Warning")),
            (
                400,
                Some("399 suppressd \"Content-Length is required over TCP\"")
            )
        );
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        assert!(rest.is_empty());
        // A new connection works.
        let mut stream = TcpStream::connect(dip).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        stream
            .write_all(tcp(invite_to(&e164(CLEAN), via, "again", "")).as_bytes())
            .unwrap();
        assert_eq!(read_tcp_response(&mut stream, &mut Vec::new()).status, 302);
    })
    .await
    .unwrap();
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_status_608_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    write_all_sets(&dir.path().join("data"), Day::today());
    let config = format!(
        "{}block_status = 608\ntenant_header = \"P-Tenant\"\n",
        sip_config()
    );
    let daemon = TestDaemon::start_in(dir, &config).await;
    let dip = daemon.handle.sip_udp_addr.unwrap();
    tokio::task::spawn_blocking(move || {
        let udp = Udp::open(dip);
        let response = udp.ask(&invite_to(&e164(REGISTRY), &udp.via(), "608", ""));
        assert_eq!(
            (response.status, response.header("Reason")),
            (608, Some("SIP;cause=608;text=\"NATIONAL_REGISTRY\""))
        );
        assert!(response.text.starts_with("SIP/2.0 608 Rejected\r\n"));
        // The configured tenant header is used; X-Tenant is now just another header.
        let response = udp.ask(&invite_to(
            &e164(CLEAN),
            &udp.via(),
            "hdr",
            "p-tenant: nobody\r\nX-Tenant: acme\r\n",
        ));
        assert_eq!(response.status, 403);
    })
    .await
    .unwrap();
    daemon.shutdown().await;
}

/// The dip's checks count like every API's: verdicts, reasons and durations with `api="sip"`
/// (the latency alert and its promtool test rely on `suppressd_check_duration_seconds{api="sip"}`),
/// and every message in `suppressd_sip_messages_total` by transport and outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_checks_are_counted_like_every_api() {
    let daemon = start(true).await;
    let dip = daemon.handle.sip_udp_addr.unwrap();
    let checks = |verdict: &str| {
        metric(
            "suppressd_checks_total",
            &[("api", "sip"), ("verdict", verdict)],
        )
    };
    let before = (
        checks("allow"),
        checks("block"),
        checks("invalid"),
        metric(
            "suppressd_check_reasons_total",
            &[("api", "sip"), ("reason", "national_registry")],
        ),
        metric("suppressd_check_duration_seconds_count", &[("api", "sip")]),
        sip_messages("udp", "redirected"),
        sip_messages("udp", "blocked"),
    );
    tokio::task::spawn_blocking(move || {
        let udp = Udp::open(dip);
        let via = udp.via();
        assert_eq!(
            udp.ask(&invite_to(&e164(CLEAN), &via, "c1", "")).status,
            302
        );
        assert_eq!(
            udp.ask(&invite_to(&e164(REGISTRY), &via, "c2", "")).status,
            603
        );
        assert_eq!(udp.ask(&invite_to("12ab", &via, "c3", "")).status, 603);
    })
    .await
    .unwrap();
    assert!(checks("allow") > before.0, "no allow counted for api=sip");
    assert!(checks("block") > before.1, "no block counted for api=sip");
    assert!(
        checks("invalid") > before.2,
        "no invalid counted for api=sip"
    );
    assert!(
        metric(
            "suppressd_check_reasons_total",
            &[("api", "sip"), ("reason", "national_registry")],
        ) > before.3
    );
    assert!(
        metric("suppressd_check_duration_seconds_count", &[("api", "sip")]) >= before.4 + 3.0,
        "SIP check durations not recorded"
    );
    assert!(sip_messages("udp", "redirected") > before.5);
    assert!(sip_messages("udp", "blocked") >= before.6 + 2.0);
    daemon.shutdown().await;
}
