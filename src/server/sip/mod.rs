//! The SIP redirect dip: a SIP proxy forwards each INVITE here and acts on the answer.
//!
//! This is the standard way for a proxy to consult an outside decision engine without modules
//! (number portability and caller-name dips work the same way). The dip is stateless: every
//! request gets one response computed from that request alone, so retransmissions get the same
//! answer (the To tag is derived from the request, not random).
//!
//! # Answers
//!
//! | request | answer |
//! |---|---|
//! | INVITE, number allowed | `302 Moved Temporarily`, `Contact: <Request-URI>` (go on to the original target) |
//! | INVITE, number blocked | `603 Decline` (or `608 Rejected`, `sip.block_status`), `Reason: SIP;cause=603;text="NATIONAL_REGISTRY"` naming every reason, `X-Suppressd-Sets` naming the sets hit |
//! | INVITE, number not a valid number | blocked (fail closed), reason `INVALID_NUMBER` |
//! | INVITE, cannot decide (a set the campaign needs is not loaded) | `503 Service Unavailable`, `Reason: ...;text="NOT_READY"`, no `Retry-After` |
//! | INVITE, refused by a limit: `server.max_in_flight` checks in flight, or the tenant over its `max_checks_per_second` | `503 Service Unavailable`, `Reason: ...;text="OVERLOADED"` (or `RATE_LIMITED`), `Retry-After: <seconds>` |
//! | INVITE, unknown tenant or campaign (or none given and no default) | `403 Forbidden`, `Reason: ...;text="UNKNOWN_TENANT"` (or `UNKNOWN_CAMPAIGN`, `NO_TENANT`, `NO_CAMPAIGN`) |
//! | INVITE naming a tenant or campaign its source is not bound to (`[[sip.source]]`) | `403 Forbidden`, `Reason: ...;text="TENANT_NOT_ALLOWED"` (or `CAMPAIGN_NOT_ALLOWED`) |
//! | OPTIONS | `200 OK` with `Allow` (proxies use it as a keepalive) |
//! | ACK | nothing (absorbed: it acknowledges our own non-2xx answer) |
//! | CANCEL, BYE, anything else | `405 Method Not Allowed`, `Allow: INVITE, OPTIONS, ACK` |
//! | malformed | `400 Bad Request` with a `Warning` naming the fault when Via, From, To, Call-ID and CSeq allow a response; otherwise dropped. Both are counted (`suppressd_sip_messages_total`, `outcome` `malformed_answered` or `malformed_dropped`). |
//!
//! A number that is on a loaded block list is blocked even while another set the campaign needs
//! is missing: that answer is certain. Only numbers the dip cannot decide get 503.
//!
//! Unknown tenants get 403, not 404: a 404 relayed to a dialer reads as "this number does not
//! exist" and may get a good number removed from a calling list; 403 says "refused here".
//!
//! # Inputs
//!
//! - The dialled number is the Request-URI's user part (`sip:`, `sips:`) or the `tel:` number,
//!   with `;params` stripped, `%XX` escapes decoded and visual separators (`-`, `.`, `(`, `)`,
//!   space) removed. It is parsed with the tenant's parser, so `+E.164` and the tenant's national
//!   formats both work.
//! - Tenant and campaign come from the headers named by `sip.tenant_header` and
//!   `sip.campaign_header` (default `X-Tenant`, `X-Campaign`); absent or empty: the config's
//!   defaults.
//!
//! # Wire rules
//!
//! - Via (every value, in order), From, To (with a `tag` added when absent), Call-ID and CSeq are
//!   echoed; `Content-Length: 0`.
//! - UDP responses go to the request's source address, at the top Via's sent-by port (5060 when
//!   absent), or at the source port when the Via carries `rport` (RFC 3581). `received=<source
//!   ip>` is added when the sent-by host is not the source address or `rport` is present, and a
//!   bare `rport` is filled in. The sent-by host is never resolved nor used as a destination, so
//!   the dip cannot be made to send packets to a third party. `maddr` is ignored.
//! - TCP: messages are framed by Content-Length (mandatory on streams; without it the dip answers
//!   400 when it can and closes the connection), and answered on the same connection. A
//!   double-CRLF keepalive (RFC 5626) gets a CRLF back. Idle connections close after
//!   `sip.tcp_idle_seconds` (60); at most `sip.tcp_max_connections` (1024) at a time, and
//!   `sip.tcp_max_connections_per_source` (32) from one address; more are closed at accept.
//! - Sources: `sip.allowed_sources` (any tenant) and `[[sip.source]]` (a network bound to its
//!   tenants and campaigns). Datagrams from other sources are dropped unanswered, malformed or
//!   not, and TCP connections from them closed at accept, both counted; with neither set (only
//!   allowed on loopback) every source is answered. A source naming a tenant or campaign it is
//!   not bound to gets `403` with `TENANT_NOT_ALLOWED` (or `CAMPAIGN_NOT_ALLOWED`).
//! - Answers carry nothing beyond what the proxy needs (no `Server` header; `Reason` only on
//!   refusals), so a spoofed request reflects at most ~1.7x its size (RUNBOOK, "Hardening").
//! - Parsing is strict and bounded: CRLF line ends, no header folding, at most
//!   [`MAX_MESSAGE_BYTES`] per message, [`MAX_HEADERS`] headers and [`MAX_VIAS`] Via values.
//!   [`parse_request`] and [`respond`] are pure functions of their inputs (fuzzed).
//! - Phone numbers never appear in logs or error texts: errors are static descriptions.
//!
//! # Rooms
//!
//! [`parse`] turns bytes into a request (and frames TCP streams); [`answer`] turns a request and
//! a check's result into an [`Answer`] and the response bytes, and holds the one mapping of
//! error classes to SIP answers; [`transport`] owns the sockets and counts every message
//! (`suppressd_sip_messages_total{transport,outcome}`, `suppressd_sip_send_errors_total`,
//! `suppressd_sip_source_refused_total`). This file only says what the dip is and re-exports
//! the entry points; it holds no logic.

pub mod answer;
pub mod parse;
pub mod transport;

pub use answer::{
    Answer, MAX_NUMBER_CHARS, answer_for, decide, destination, dialled_number, respond,
    respond_bad_request, respond_into,
};
pub use parse::{
    Echo, Frame, MAX_HEADERS, MAX_MESSAGE_BYTES, MAX_VIAS, Method, SipError, SipErrorKind,
    SipRequest, TopVia, frame, parse_request,
};
pub use transport::{SourceRule, handle, source_allowed, source_rule, spawn};

#[cfg(test)]
mod tests {
    //! Fixtures the tests of every room share, and tests of the whole dip's pure path.

    use super::*;
    use crate::config::SipConfig;
    use proptest::prelude::*;
    use std::net::SocketAddr;

    /// An INVITE as SIPp's uac scenario sends it (with SDP).
    pub(super) const SIPP_INVITE: &str = "INVITE sip:+12015550123@127.0.0.1:5070 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4242-1-0\r\n\
From: sipp <sip:sipp@127.0.0.1:5061>;tag=4242SIPpTag001\r\n\
To: <sip:+12015550123@127.0.0.1:5070>\r\n\
Call-ID: 1-4242@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: sip:sipp@127.0.0.1:5061\r\n\
Max-Forwards: 70\r\n\
Subject: Performance Test\r\n\
Content-Type: application/sdp\r\n\
Content-Length:   129\r\n\
\r\n\
v=0\r\n\
o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n\
s=-\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

    /// An INVITE as Kamailio forwards it: two Vias (its own on top), Record-Route, rport.
    pub(super) const KAMAILIO_INVITE: &str = "INVITE sip:+1-201-555-0199;npdi@127.0.0.1:5090;user=phone SIP/2.0\r\n\
Record-Route: <sip:127.0.0.1:5060;lr>\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKcydzigwkX;rport\r\n\
Via: SIP/2.0/UDP 10.0.0.5:5061;received=10.0.0.5;rport=5061;branch=z9hG4bK-1, SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK-0\r\n\
From: \"Dialer, Inc\" <sip:dialer@example.com>;tag=abc\r\n\
To: <sip:+12015550199@example.com>\r\n\
Call-ID: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Max-Forwards: 69\r\n\
X-Tenant: acme\r\n\
x-campaign: outbound\r\n\
Content-Length: 0\r\n\
\r\n";

    /// Compact header forms throughout.
    pub(super) const COMPACT_INVITE: &str = "INVITE tel:+12015550123;phone-context=+1 SIP/2.0\r\n\
v: SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bK776\r\n\
f: <sip:a@example.com>;tag=1\r\n\
t: <tel:+12015550123>;tag=peer\r\n\
i: compact-1\r\n\
CSeq: 7 INVITE\r\n\
m: <sip:a@example.com>\r\n\
l: 0\r\n\
\r\n";

    pub(super) fn source() -> SocketAddr {
        "127.0.0.1:40000".parse().unwrap()
    }

    pub(super) fn config() -> SipConfig {
        SipConfig::default()
    }

    pub(super) fn text(bytes: &[u8]) -> String {
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    pub(super) fn header_lines<'t>(response: &'t str, name: &str) -> Vec<&'t str> {
        response
            .split("\r\n")
            .filter_map(|line| {
                line.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(": "))
            })
            .collect()
    }

    #[test]
    fn config_section_is_validated() {
        use crate::config::Config;
        let base = "[tenants.t]\nregion = \"US\"\n[tenants.t.campaigns.c]\n";
        let parse = |sip: &str| {
            Config::parse(
                &format!("{sip}\n{base}"),
                "test.toml",
                std::path::Path::new("/b"),
            )
        };
        let config = parse("[sip]\nlisten_udp = \"127.0.0.1:5070\"\nlisten_tcp = \"127.0.0.1:5071\"\nblock_status = 608").unwrap();
        assert_eq!(
            config.sip_udp_listen,
            Some("127.0.0.1:5070".parse().unwrap())
        );
        assert_eq!(
            config.sip_tcp_listen,
            Some("127.0.0.1:5071".parse().unwrap())
        );
        assert_eq!(config.sip().tenant_header, "X-Tenant");
        assert!(parse("").unwrap().sip_udp_listen.is_none());
        for (text, key, reason) in [
            (
                "[sip]\nlisten_udp = \"localhost\"",
                "sip.listen_udp",
                "not an address",
            ),
            (
                "[sip]\nlisten_tcp = \"1.2.3.4\"",
                "sip.listen_tcp",
                "not an address",
            ),
            (
                "[sip]\nblock_status = 486",
                "sip.block_status",
                "neither 603",
            ),
            (
                "[sip]\ntenant_header = \"X Tenant\"",
                "sip.tenant_header",
                "not a SIP header name",
            ),
            (
                "[sip]\ncampaign_header = \"\"",
                "sip.campaign_header",
                "not a SIP header name",
            ),
            (
                "[sip]\ncampaign_header = \"x-tenant\"",
                "sip.campaign_header",
                "must differ",
            ),
        ] {
            let error = parse(text).expect_err(text);
            assert_eq!(
                (error.file.as_str(), error.key.as_str()),
                ("test.toml", key),
                "{error}"
            );
            assert!(error.reason.contains(reason), "{error}");
        }
        assert!(
            parse("[sip]\nbogus = 1")
                .unwrap_err()
                .reason
                .contains("unknown field")
        );
    }

    /// Parsing, framing and responding to arbitrary bytes: an answer or an error, never a panic,
    /// and every response is well-formed.
    fn exercise(bytes: &[u8]) {
        let _ = frame(bytes);
        match parse_request(bytes) {
            Ok(request) => {
                let mut buffer = [0; MAX_NUMBER_CHARS];
                let _ = dialled_number(request.uri, &mut buffer);
                for answer in [Answer::Redirect, Answer::Unavailable, Answer::Options] {
                    let response = respond(&request, &answer, &config(), source());
                    assert!(response.ends_with(b"Content-Length: 0\r\n\r\n"));
                    let reparsed = std::str::from_utf8(&response).expect("responses are UTF-8");
                    assert_eq!(
                        reparsed.matches("\r\n\r\n").count(),
                        1,
                        "one header block: {reparsed}"
                    );
                }
            }
            Err(error) => {
                let _ = error.to_string();
                if let Some(response) = respond_bad_request(&error, &config(), source()) {
                    assert!(response.starts_with(b"SIP/2.0 400 "));
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            exercise(&bytes);
        }

        #[test]
        fn never_panics_on_mutated_invites(
            which in 0usize..3,
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..8),
        ) {
            let mut bytes = [SIPP_INVITE, KAMAILIO_INVITE, COMPACT_INVITE][which].as_bytes().to_vec();
            for (index, byte, op) in edits {
                if bytes.is_empty() {
                    break;
                }
                let at = index.index(bytes.len());
                // Structural bytes are the interesting ones.
                const PICKS: &[u8] = b":;,\r\n <>\"@=[]%0";
                let pick = PICKS[byte as usize % PICKS.len()];
                match op {
                    0 => bytes[at] = byte,
                    1 => bytes[at] = pick,
                    2 => { bytes.remove(at); }
                    _ => bytes.insert(at, pick),
                }
            }
            exercise(&bytes);
        }
    }
}
