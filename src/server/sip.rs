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
//! | malformed | `400 Bad Request` with a `Warning` naming the fault when Via, From, To, Call-ID and CSeq allow a response; otherwise dropped. Both are counted ([`COUNTERS`]). |
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

use crate::config::{SipConfig, SipSource};
use crate::policy::{PolicyError, Reason, Reasons};
use crate::server::checks::{CheckError, CheckOutcome};
use crate::server::state::State;
use std::fmt;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;

/// Largest SIP message accepted (an INVITE with SDP is 1-4 KB).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Most header lines in one message.
pub const MAX_HEADERS: usize = 100;
/// Most Via values in one message (as many as the usual Max-Forwards of 70 hops).
pub const MAX_VIAS: usize = 70;
/// Longest user part taken as a number; longer ones are invalid numbers.
const MAX_NUMBER_CHARS: usize = 64;
/// Datagrams handled before the UDP loop yields to other tasks.
const UDP_BURST: usize = 256;
const ALLOW: &str = "INVITE, OPTIONS, ACK";

/// What the dip did, for monitoring (process-wide; metrics export them later).
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages (datagrams or TCP frames) received.
    pub received: AtomicU64,
    pub redirected: AtomicU64,
    pub blocked: AtomicU64,
    pub unavailable: AtomicU64,
    pub refused: AtomicU64,
    pub options: AtomicU64,
    pub not_allowed: AtomicU64,
    pub acks_absorbed: AtomicU64,
    /// Malformed requests answered 400.
    pub malformed_answered: AtomicU64,
    /// Malformed messages dropped (no response possible).
    pub malformed_dropped: AtomicU64,
    /// SIP responses received (the dip sends no requests, so these are ignored).
    pub responses_ignored: AtomicU64,
    pub send_errors: AtomicU64,
    /// Datagrams dropped and connections closed from sources not in `sip.allowed_sources`.
    pub sources_refused: AtomicU64,
    /// TCP connections closed at accept over `sip.tcp_max_connections` (per source or in all).
    pub connections_refused: AtomicU64,
}

pub static COUNTERS: Counters = Counters {
    received: AtomicU64::new(0),
    redirected: AtomicU64::new(0),
    blocked: AtomicU64::new(0),
    unavailable: AtomicU64::new(0),
    refused: AtomicU64::new(0),
    options: AtomicU64::new(0),
    not_allowed: AtomicU64::new(0),
    acks_absorbed: AtomicU64::new(0),
    malformed_answered: AtomicU64::new(0),
    malformed_dropped: AtomicU64::new(0),
    responses_ignored: AtomicU64::new(0),
    send_errors: AtomicU64::new(0),
    sources_refused: AtomicU64::new(0),
    connections_refused: AtomicU64::new(0),
};

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Request methods the dip tells apart (SIP methods are case-sensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Invite,
    Ack,
    Options,
    Cancel,
    Bye,
    Other,
}

impl Method {
    fn from_token(token: &str) -> Method {
        match token {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "OPTIONS" => Method::Options,
            "CANCEL" => Method::Cancel,
            "BYE" => Method::Bye,
            _ => Method::Other,
        }
    }
}

/// Why a message was refused. The texts are static: they never repeat input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SipErrorKind {
    Empty,
    TooLarge,
    /// A SIP response, not a request.
    IsResponse,
    BadRequestLine,
    BadVersion,
    BadUri,
    BadLineEnding,
    NotUtf8,
    Folding,
    BadHeader,
    TooManyHeaders,
    TooManyVias,
    MissingHeader(&'static str),
    DuplicateHeader(&'static str),
    BadVia,
    BadCSeq,
    CSeqMethodMismatch,
    BadContentLength,
    /// Over TCP, Content-Length is mandatory (RFC 3261 §18.3).
    MissingContentLength,
    BodyTooShort,
    NoBlankLine,
}

impl SipErrorKind {
    pub fn text(self) -> &'static str {
        match self {
            SipErrorKind::Empty => "empty message",
            SipErrorKind::TooLarge => "message too large",
            SipErrorKind::IsResponse => "a response, not a request",
            SipErrorKind::BadRequestLine => "malformed request line",
            SipErrorKind::BadVersion => "unsupported SIP version",
            SipErrorKind::BadUri => "malformed Request-URI",
            SipErrorKind::BadLineEnding => "lines must end with CRLF",
            SipErrorKind::NotUtf8 => "header not UTF-8",
            SipErrorKind::Folding => "folded header lines are not supported",
            SipErrorKind::BadHeader => "malformed header line",
            SipErrorKind::TooManyHeaders => "too many headers",
            SipErrorKind::TooManyVias => "too many Via values",
            SipErrorKind::MissingHeader(name) => match name {
                "Via" => "missing Via",
                "From" => "missing From",
                "To" => "missing To",
                "Call-ID" => "missing Call-ID",
                _ => "missing CSeq",
            },
            SipErrorKind::DuplicateHeader(name) => match name {
                "From" => "more than one From",
                "To" => "more than one To",
                "Call-ID" => "more than one Call-ID",
                "CSeq" => "more than one CSeq",
                _ => "conflicting Content-Length",
            },
            SipErrorKind::BadVia => "malformed Via",
            SipErrorKind::BadCSeq => "malformed CSeq",
            SipErrorKind::CSeqMethodMismatch => "CSeq method differs from the request method",
            SipErrorKind::BadContentLength => "malformed Content-Length",
            SipErrorKind::MissingContentLength => "Content-Length is required over TCP",
            SipErrorKind::BodyTooShort => "body shorter than Content-Length",
            SipErrorKind::NoBlankLine => "no empty line after the headers",
        }
    }
}

/// A refused message, with what is needed to answer it 400 when that is possible.
#[derive(Debug)]
pub struct SipError<'a> {
    pub kind: SipErrorKind,
    /// The request method, when the request line could be read.
    pub method: Option<Method>,
    /// Present when Via, From, To, Call-ID and CSeq were all found and the top Via is valid.
    /// Boxed: errors stay small, and only the rare malformed message pays the allocation.
    pub echo: Option<Box<Echo<'a>>>,
}

impl fmt::Display for SipError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.text())
    }
}

impl std::error::Error for SipError<'_> {}

impl SipError<'_> {
    fn fatal(kind: SipErrorKind) -> SipError<'static> {
        SipError {
            kind,
            method: None,
            echo: None,
        }
    }
}

/// The top Via, parsed: where a response goes and how its Via is rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopVia<'a> {
    /// "UDP", "TCP", ... as sent.
    pub transport: &'a str,
    /// Host of sent-by, without IPv6 brackets.
    pub host: &'a str,
    pub port: Option<u16>,
    /// `rport` present (with or without a value).
    pub rport: bool,
    pub branch: Option<&'a str>,
}

/// The headers a response echoes.
#[derive(Debug, Clone)]
pub struct Echo<'a> {
    /// Every Via value, in order (values of one header split at commas).
    pub vias: Vec<&'a str>,
    pub top_via: TopVia<'a>,
    pub from: &'a str,
    pub to: &'a str,
    pub call_id: &'a str,
    pub cseq: &'a str,
}

/// A parsed request; borrows the message bytes.
#[derive(Debug, Clone)]
pub struct SipRequest<'a> {
    pub method: Method,
    pub method_text: &'a str,
    pub uri: &'a str,
    pub echo: Echo<'a>,
    /// Every header as (name as sent, trimmed value), in order.
    pub headers: Vec<(&'a str, &'a str)>,
    pub content_length: Option<usize>,
    pub body: &'a [u8],
}

impl<'a> SipRequest<'a> {
    /// The first header called `name` (case-insensitive; long names only).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, v)| v)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Known {
    Via,
    From,
    To,
    CallId,
    CSeq,
    ContentLength,
    Other,
}

fn known(name: &str) -> Known {
    let is = |long: &str| name.eq_ignore_ascii_case(long);
    // By length first: most headers are none of these, and are ruled out without comparing.
    match name.len() {
        1 => match name.as_bytes()[0].to_ascii_lowercase() {
            b'v' => Known::Via,
            b'f' => Known::From,
            b't' => Known::To,
            b'i' => Known::CallId,
            b'l' => Known::ContentLength,
            _ => Known::Other,
        },
        2 if is("to") => Known::To,
        3 if is("via") => Known::Via,
        4 if is("from") => Known::From,
        4 if is("cseq") => Known::CSeq,
        7 if is("call-id") => Known::CallId,
        14 if is("content-length") => Known::ContentLength,
        _ => Known::Other,
    }
}

/// Trimming of SIP linear white space (spaces and tabs) by bytes: cheaper than char patterns
/// on the hot path, and byte positions of ASCII bytes are always char boundaries.
trait TrimLws {
    fn trim_lws(&self) -> &str;
    fn trim_lws_start(&self) -> &str;
    fn trim_lws_end(&self) -> &str;
}

impl TrimLws for str {
    fn trim_lws(&self) -> &str {
        self.trim_lws_start().trim_lws_end()
    }

    fn trim_lws_start(&self) -> &str {
        let start = self
            .bytes()
            .position(|b| b != b' ' && b != b'\t')
            .unwrap_or(self.len());
        &self[start..]
    }

    fn trim_lws_end(&self) -> &str {
        let end = self
            .bytes()
            .rposition(|b| b != b' ' && b != b'\t')
            .map_or(0, |last| last + 1);
        &self[..end]
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

fn is_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(is_token_byte)
}

/// Byte offset of the first `separator` outside double quotes (backslash escapes honoured).
fn find_unquoted(text: &str, separator: u8) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut quoted = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b if b == separator && !quoted => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Splits at every `separator` outside double quotes.
fn split_unquoted(text: &str, separator: u8) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match find_unquoted(current, separator) {
            Some(at) => {
                rest = Some(&current[at + 1..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// `host[:port]` of a Via sent-by; IPv6 in brackets.
fn parse_host_port(text: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(inner) = text.strip_prefix('[') {
        let close = inner.find(']')?;
        let host = &inner[..close];
        host.parse::<std::net::Ipv6Addr>().ok()?;
        let after = &inner[close + 1..];
        let port = if after.is_empty() {
            None
        } else {
            Some(after.strip_prefix(':')?)
        };
        (host, port)
    } else {
        let (host, port) = match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        };
        let valid = !host.is_empty()
            && host.len() <= 255
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !valid {
            return None;
        }
        (host, port)
    };
    let port = match port {
        None => None,
        Some(digits) => {
            if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            match digits.parse::<u16>() {
                Ok(0) | Err(_) => return None,
                Ok(port) => Some(port),
            }
        }
    };
    Some((host, port))
}

/// One Via value: `SIP/2.0/UDP host:port;branch=...;rport`.
fn parse_via(value: &str) -> Option<TopVia<'_>> {
    let split = value.find([' ', '\t'])?;
    let (protocol, rest) = (&value[..split], value[split..].trim_lws_start());
    let mut parts = protocol.split('/');
    let (name, version, transport) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || !name.eq_ignore_ascii_case("SIP")
        || version != "2.0"
        || !is_token(transport)
    {
        return None;
    }
    let mut pieces = split_unquoted(rest, b';');
    let sent_by = pieces.next()?.trim_lws();
    let (host, port) = parse_host_port(sent_by)?;
    let mut via = TopVia {
        transport,
        host,
        port,
        rport: false,
        branch: None,
    };
    for param in pieces {
        let param = param.trim_lws();
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim_lws_end(), Some(value.trim_lws_start())),
            None => (param, None),
        };
        if !is_token(name) || value.is_some_and(str::is_empty) {
            return None;
        }
        if name.eq_ignore_ascii_case("rport") {
            via.rport = true;
        } else if name.eq_ignore_ascii_case("branch") {
            via.branch = value;
        }
    }
    Some(via)
}

/// `CSeq: <number> <method>` where the method must be the request's.
fn check_cseq(cseq: &str, method_text: Option<&str>) -> Result<(), SipErrorKind> {
    let (number, method) = cseq.split_once([' ', '\t']).ok_or(SipErrorKind::BadCSeq)?;
    let method = method.trim_lws_start();
    let valid_number = !number.is_empty()
        && number.len() <= 10
        && number.bytes().all(|b| b.is_ascii_digit())
        && number.parse::<u64>().is_ok_and(|n| n < 1 << 31);
    if !valid_number || !is_token(method) {
        return Err(SipErrorKind::BadCSeq);
    }
    match method_text {
        Some(request_method) if request_method != method => Err(SipErrorKind::CSeqMethodMismatch),
        _ => Ok(()),
    }
}

/// A Request-URI: a scheme and no whitespace, angle brackets, quotes or control characters
/// (it is echoed into `Contact: <...>`).
fn valid_uri(uri: &str) -> bool {
    let Some(colon) = uri.find(':') else {
        return false;
    };
    let scheme = &uri[..colon];
    !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        && colon + 1 < uri.len()
        && uri
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"<>\"".contains(&b))
}

/// Stores a header that may appear once (From, To, Call-ID, CSeq).
fn single<'a>(
    slot: &mut Option<&'a str>,
    value: &'a str,
    label: &'static str,
    note: &mut dyn FnMut(SipErrorKind),
) {
    if slot.is_some() {
        note(SipErrorKind::DuplicateHeader(label));
    } else if value.is_empty() {
        note(SipErrorKind::MissingHeader(label));
    } else {
        *slot = Some(value);
    }
}

/// Parses one SIP request (a UDP datagram or one TCP frame). Never panics.
///
/// Strict: CRLF line ends, no folding, bounded sizes. A message with a body shorter than its
/// Content-Length is refused; bytes beyond it are ignored (RFC 3261 §18.3). Without
/// Content-Length the body is the rest of the datagram.
pub fn parse_request(bytes: &[u8]) -> Result<SipRequest<'_>, SipError<'_>> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(SipError::fatal(SipErrorKind::TooLarge));
    }
    // RFC 3261 §7.5: CRLFs before the start line are ignored.
    let mut bytes = bytes;
    while let Some(rest) = bytes.strip_prefix(b"\r\n") {
        bytes = rest;
    }
    if bytes.is_empty() {
        return Err(SipError::fatal(SipErrorKind::Empty));
    }
    if bytes.starts_with(b"SIP/") {
        return Err(SipError::fatal(SipErrorKind::IsResponse));
    }
    let (head, body, terminated) = match memchr::memmem::find(bytes, b"\r\n\r\n") {
        Some(end) => (&bytes[..end], &bytes[end + 4..], true),
        None => (bytes.strip_suffix(b"\r\n").unwrap_or(bytes), &[][..], false),
    };

    // The first fault found; scanning goes on so a 400 can still echo the headers.
    let mut fault: Option<SipErrorKind> = None;
    let mut note = |kind: SipErrorKind| {
        fault.get_or_insert(kind);
    };
    let mut method = None;
    let mut method_text = None;
    let mut uri = "";
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(16);
    let mut vias: Vec<&str> = Vec::with_capacity(4);
    let (mut from, mut to, mut call_id, mut cseq) = (None, None, None, None);
    let mut content_length: Option<usize> = None;

    // Lines, split with memchr; `terminated` is false only for the last one.
    let mut rest = Some(head);
    let lines = std::iter::from_fn(|| {
        let current = rest?;
        match memchr::memchr(b'\n', current) {
            Some(at) => {
                rest = Some(&current[at + 1..]);
                Some((&current[..at], true))
            }
            None => {
                rest = None;
                Some((current, false))
            }
        }
    });
    for (index, (raw, terminated)) in lines.enumerate() {
        let line = if terminated {
            match raw.strip_suffix(b"\r") {
                Some(line) => line,
                None => {
                    note(SipErrorKind::BadLineEnding);
                    raw
                }
            }
        } else {
            raw
        };
        if memchr::memchr2(b'\r', 0, line).is_some() {
            note(SipErrorKind::BadLineEnding);
            if index == 0 {
                return Err(SipError::fatal(SipErrorKind::BadRequestLine));
            }
            continue;
        }
        let Ok(line) = std::str::from_utf8(line) else {
            if index == 0 {
                return Err(SipError::fatal(SipErrorKind::NotUtf8));
            }
            note(SipErrorKind::NotUtf8);
            continue;
        };
        if index == 0 {
            let mut parts = line.split(' ');
            let (Some(m), Some(u), Some(version), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(SipError::fatal(SipErrorKind::BadRequestLine));
            };
            if !is_token(m) {
                return Err(SipError::fatal(SipErrorKind::BadRequestLine));
            }
            method = Some(Method::from_token(m));
            method_text = Some(m);
            if !version.eq_ignore_ascii_case("SIP/2.0") {
                note(SipErrorKind::BadVersion);
            }
            if !valid_uri(u) {
                note(SipErrorKind::BadUri);
            }
            uri = u;
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            note(SipErrorKind::Folding);
            continue;
        }
        if headers.len() == MAX_HEADERS {
            note(SipErrorKind::TooManyHeaders);
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            note(SipErrorKind::BadHeader);
            continue;
        };
        let name = name.trim_lws_end();
        if !is_token(name) {
            note(SipErrorKind::BadHeader);
            continue;
        }
        let value = value.trim_lws();
        headers.push((name, value));
        match known(name) {
            Known::Via => {
                for element in split_unquoted(value, b',') {
                    let element = element.trim_lws();
                    if element.is_empty() {
                        note(SipErrorKind::BadVia);
                    } else if vias.len() == MAX_VIAS {
                        note(SipErrorKind::TooManyVias);
                        break;
                    } else {
                        vias.push(element);
                    }
                }
            }
            Known::From => single(&mut from, value, "From", &mut note),
            Known::To => single(&mut to, value, "To", &mut note),
            Known::CallId => single(&mut call_id, value, "Call-ID", &mut note),
            Known::CSeq => single(&mut cseq, value, "CSeq", &mut note),
            Known::ContentLength => {
                let parsed = (!value.is_empty()
                    && value.len() <= 9
                    && value.bytes().all(|b| b.is_ascii_digit()))
                .then(|| value.parse::<usize>().ok())
                .flatten();
                match (parsed, content_length) {
                    (None, _) => note(SipErrorKind::BadContentLength),
                    (Some(new), Some(old)) if new != old => {
                        note(SipErrorKind::DuplicateHeader("Content-Length"))
                    }
                    (Some(new), _) => content_length = Some(new),
                }
            }
            Known::Other => {}
        }
    }

    let top_via = vias.first().and_then(|v| parse_via(v));
    let echo = match (top_via, from, to, call_id, cseq) {
        (Some(top_via), Some(from), Some(to), Some(call_id), Some(cseq)) => Some(Echo {
            vias,
            top_via,
            from,
            to,
            call_id,
            cseq,
        }),
        _ => {
            if vias.is_empty() {
                note(SipErrorKind::MissingHeader("Via"));
            } else if top_via.is_none() {
                note(SipErrorKind::BadVia);
            }
            for (slot, label) in [
                (from, "From"),
                (to, "To"),
                (call_id, "Call-ID"),
                (cseq, "CSeq"),
            ] {
                if slot.is_none() {
                    note(SipErrorKind::MissingHeader(label));
                }
            }
            None
        }
    };
    if let Some(cseq) = cseq
        && let Err(kind) = check_cseq(cseq, method_text)
    {
        note(kind);
    }
    if !terminated {
        note(SipErrorKind::NoBlankLine);
    }
    let body = match content_length {
        Some(length) if length > body.len() => {
            note(SipErrorKind::BodyTooShort);
            body
        }
        Some(length) => &body[..length],
        None => body,
    };
    if let Some(kind) = fault {
        return Err(SipError {
            kind,
            method,
            echo: echo.map(Box::new),
        });
    }
    let (Some(method), Some(method_text), Some(echo)) = (method, method_text, echo) else {
        // Unreachable: a missing piece noted a fault above. Refuse rather than assume.
        return Err(SipError::fatal(SipErrorKind::BadRequestLine));
    };
    Ok(SipRequest {
        method,
        method_text,
        uri,
        echo,
        headers,
        content_length,
        body,
    })
}

/// How one TCP stream buffer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// Need more bytes.
    Incomplete,
    /// A lone CRLF before a start line: skip it.
    Skip(usize),
    /// A double-CRLF keepalive (RFC 5626): answer CRLF, skip it.
    Ping(usize),
    /// A whole message of this many bytes.
    Message(usize),
    /// Headers of this length without a usable Content-Length: answer 400 if possible and close.
    Unframeable(usize, SipErrorKind),
    /// Over [`MAX_MESSAGE_BYTES`]: close.
    TooLarge,
}

/// Finds the first message in a TCP stream buffer (RFC 3261 §18.3: Content-Length frames it).
pub fn frame(buffer: &[u8]) -> Frame {
    if buffer.starts_with(b"\r\n\r\n") {
        return Frame::Ping(4);
    }
    if buffer.starts_with(b"\r\n") {
        // Could be the start of a ping: wait for two more bytes to tell.
        return match buffer.get(2) {
            None => Frame::Incomplete,
            Some(b'\r') if buffer.len() < 4 => Frame::Incomplete,
            Some(_) => Frame::Skip(2),
        };
    }
    if buffer == b"\r" {
        return Frame::Incomplete;
    }
    let window = &buffer[..buffer.len().min(MAX_MESSAGE_BYTES)];
    let Some(end) = memchr::memmem::find(window, b"\r\n\r\n") else {
        return if buffer.len() >= MAX_MESSAGE_BYTES {
            Frame::TooLarge
        } else {
            Frame::Incomplete
        };
    };
    let head_length = end + 4;
    let mut length: Option<usize> = None;
    for line in buffer[..end].split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = std::str::from_utf8(&line[..colon])
            .unwrap_or("")
            .trim_lws_end();
        if known(name) != Known::ContentLength {
            continue;
        }
        let value = std::str::from_utf8(&line[colon + 1..])
            .unwrap_or("")
            .trim_lws();
        let parsed =
            (!value.is_empty() && value.len() <= 9 && value.bytes().all(|b| b.is_ascii_digit()))
                .then(|| value.parse::<usize>().ok())
                .flatten();
        match (parsed, length) {
            (None, _) => return Frame::Unframeable(head_length, SipErrorKind::BadContentLength),
            (Some(new), Some(old)) if new != old => {
                return Frame::Unframeable(
                    head_length,
                    SipErrorKind::DuplicateHeader("Content-Length"),
                );
            }
            (Some(new), _) => length = Some(new),
        }
    }
    let Some(length) = length else {
        return Frame::Unframeable(head_length, SipErrorKind::MissingContentLength);
    };
    match head_length.checked_add(length) {
        Some(total) if total <= MAX_MESSAGE_BYTES => {
            if buffer.len() >= total {
                Frame::Message(total)
            } else {
                Frame::Incomplete
            }
        }
        _ => Frame::TooLarge,
    }
}

/// What the dip answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 302: go on to the original target.
    Redirect,
    /// 603 or 608, naming the reasons and the sets hit.
    Blocked { reasons: Reasons, sets: Vec<String> },
    /// 503: cannot decide.
    Unavailable,
    /// 503 with `Retry-After`: refused by a limit before checking; the text names which
    /// (`OVERLOADED`: `server.max_in_flight`; `RATE_LIMITED`: the tenant's rate).
    Busy {
        text: &'static str,
        retry_after_seconds: u32,
    },
    /// 403: unknown tenant or campaign; the text names which.
    Refused(&'static str),
    /// 200 to OPTIONS.
    Options,
    /// 405.
    NotAllowed,
    /// 400.
    BadRequest(SipErrorKind),
}

/// Reasons that settle a number whatever else is missing.
const DECISIVE: [Reason; 5] = [
    Reason::NationalRegistry,
    Reason::InternalDnc,
    Reason::Erased,
    Reason::BlockedPrefix,
    Reason::InvalidNumber,
];

/// The answer to an INVITE, from the check's result.
pub fn answer_for(result: Result<CheckOutcome<'_>, CheckError>) -> Answer {
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(CheckError::Policy(PolicyError::UnknownTenant(_))) => {
            return Answer::Refused("UNKNOWN_TENANT");
        }
        Err(CheckError::Policy(PolicyError::UnknownCampaign { .. })) => {
            return Answer::Refused("UNKNOWN_CAMPAIGN");
        }
        Err(CheckError::Policy(PolicyError::NoTenant)) => return Answer::Refused("NO_TENANT"),
        Err(CheckError::Policy(PolicyError::NoCampaign)) => return Answer::Refused("NO_CAMPAIGN"),
        Err(limited) => {
            crate::metrics::metrics()
                .shed(crate::metrics::Api::Sip, crate::metrics::Shed::RateLimit);
            let after = limited.retry_after().unwrap_or(Duration::from_secs(1));
            let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            return Answer::Busy {
                text: "RATE_LIMITED",
                retry_after_seconds: seconds.clamp(1, 3600) as u32,
            };
        }
    };
    if outcome.allowed() {
        return Answer::Redirect;
    }
    let reasons = outcome.reasons;
    if reasons.contains(Reason::NotReady) && !DECISIVE.iter().any(|&r| reasons.contains(r)) {
        return Answer::Unavailable;
    }
    Answer::Blocked {
        reasons,
        sets: outcome.matched_sets().map(str::to_owned).collect(),
    }
}

/// The dialled number in a Request-URI, cleaned for the tenant's parser; "" when there is none
/// (the parser then reports an invalid number). Written into `buffer`: no allocation.
pub fn dialled_number<'b>(uri: &str, buffer: &'b mut [u8; MAX_NUMBER_CHARS]) -> &'b str {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return "";
    };
    let user = if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
        let Some(at) = rest.find('@') else {
            return "";
        };
        let user = &rest[..at];
        // Drop user parameters (";npdi", ";rn=") and a password (":secret").
        &user[..user.find([';', ':']).unwrap_or(user.len())]
    } else if scheme.eq_ignore_ascii_case("tel") {
        &rest[..rest.find(';').unwrap_or(rest.len())]
    } else {
        return "";
    };
    let bytes = user.as_bytes();
    let mut length = 0;
    let mut i = 0;
    while i < bytes.len() {
        let mut b = bytes[i];
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(decoded) = hex else {
                return "";
            };
            b = decoded;
            i += 2;
        }
        i += 1;
        match b {
            b'-' | b'.' | b'(' | b')' | b' ' => continue,
            b'+' if length == 0 => {}
            b'0'..=b'9' => {}
            _ => return "",
        }
        if length == MAX_NUMBER_CHARS {
            return "";
        }
        buffer[length] = b;
        length += 1;
    }
    // Only ASCII digits and '+' were written.
    std::str::from_utf8(&buffer[..length]).unwrap_or("")
}

/// Refuses a request naming a tenant (or campaign) its source is not bound to
/// (`[[sip.source]]`); names left empty are the configured defaults. None: allowed.
fn binding_refusal(
    rule: Option<&SipSource>,
    state: &State,
    tenant: &str,
    campaign: &str,
) -> Option<Answer> {
    let rule = rule?;
    let tenants = rule.tenants.as_ref()?;
    let tenant_name = if tenant.is_empty() {
        state.policy.default_tenant.as_deref().unwrap_or("")
    } else {
        tenant
    };
    if !tenants.iter().any(|t| t == tenant_name) {
        return Some(Answer::Refused("TENANT_NOT_ALLOWED"));
    }
    let campaigns = rule.campaigns.as_ref()?;
    match state.policy.resolve(tenant, campaign) {
        Ok((_, found)) if !campaigns.contains(&found.name) => {
            Some(Answer::Refused("CAMPAIGN_NOT_ALLOWED"))
        }
        // Unknown or missing campaigns get the check's own answer.
        _ => None,
    }
}

/// The answer to a parsed request, or None for ACK (absorbed). `rule` is the source's entry
/// in the source list (None when every source may ask for anything).
pub fn decide(request: &SipRequest<'_>, state: &State, rule: Option<&SipSource>) -> Option<Answer> {
    let config = &state.config.raw.sip;
    Some(match request.method {
        Method::Ack => return None,
        Method::Options => Answer::Options,
        Method::Invite => {
            let tenant = request.header(&config.tenant_header).unwrap_or("");
            let campaign = request.header(&config.campaign_header).unwrap_or("");
            if let Some(refusal) = binding_refusal(rule, state, tenant, campaign) {
                return Some(refusal);
            }
            // The in-flight limit: refused with 503 and Retry-After, never queued.
            let Some(_permit) = state.in_flight.try_enter() else {
                crate::metrics::metrics()
                    .shed(crate::metrics::Api::Sip, crate::metrics::Shed::Overload);
                return Some(Answer::Busy {
                    text: "OVERLOADED",
                    retry_after_seconds: 1,
                });
            };
            let mut buffer = [0u8; MAX_NUMBER_CHARS];
            let number = dialled_number(request.uri, &mut buffer);
            answer_for(state.check_text(tenant, campaign, number))
        }
        Method::Cancel | Method::Bye | Method::Other => Answer::NotAllowed,
    })
}

/// Where a UDP response goes: the source address, at the source port when the top Via asks
/// with `rport`, else at the sent-by port (5060 by default). See the module doc.
pub fn destination(via: &TopVia<'_>, source: SocketAddr) -> SocketAddr {
    let port = if via.rport {
        source.port()
    } else {
        via.port.unwrap_or(5060)
    };
    SocketAddr::new(source.ip(), port)
}

/// Builds the response to `request` (see the module doc). `source` is where the request came
/// from, for `rport` and `received`.
pub fn respond(
    request: &SipRequest<'_>,
    answer: &Answer,
    config: &SipConfig,
    source: SocketAddr,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    respond_into(&mut out, &request.echo, answer, request.uri, config, source);
    out
}

/// The 400 for a refused message, when it carries enough to answer (never for ACK).
pub fn respond_bad_request(
    error: &SipError<'_>,
    config: &SipConfig,
    source: SocketAddr,
) -> Option<Vec<u8>> {
    let echo = error.echo.as_ref()?;
    if error.method == Some(Method::Ack) || error.kind == SipErrorKind::IsResponse {
        return None;
    }
    let mut out = Vec::with_capacity(512);
    respond_into(
        &mut out,
        echo,
        &Answer::BadRequest(error.kind),
        "",
        config,
        source,
    );
    Some(out)
}

fn status_line(answer: &Answer, config: &SipConfig) -> &'static str {
    match answer {
        Answer::Redirect => "SIP/2.0 302 Moved Temporarily\r\n",
        Answer::Blocked { .. } if config.block_status == 608 => "SIP/2.0 608 Rejected\r\n",
        Answer::Blocked { .. } => "SIP/2.0 603 Decline\r\n",
        Answer::Unavailable | Answer::Busy { .. } => "SIP/2.0 503 Service Unavailable\r\n",
        Answer::Refused(_) => "SIP/2.0 403 Forbidden\r\n",
        Answer::Options => "SIP/2.0 200 OK\r\n",
        Answer::NotAllowed => "SIP/2.0 405 Method Not Allowed\r\n",
        Answer::BadRequest(_) => "SIP/2.0 400 Bad Request\r\n",
    }
}

/// The top Via with `rport` filled in and `received` added when RFC 3581 / 3261 §18.2.1 ask.
fn write_top_via(out: &mut Vec<u8>, value: &str, via: &TopVia<'_>, source: SocketAddr) {
    let mut pieces = split_unquoted(value, b';');
    out.extend_from_slice(pieces.next().unwrap_or("").trim_lws_end().as_bytes());
    for param in pieces {
        let param = param.trim_lws();
        let name = param.split('=').next().unwrap_or("").trim_lws_end();
        if name.eq_ignore_ascii_case("received") {
            continue;
        }
        out.push(b';');
        if param.eq_ignore_ascii_case("rport") {
            let _ = write!(out, "rport={}", source.port());
        } else {
            out.extend_from_slice(param.as_bytes());
        }
    }
    let same_host = via.host.parse::<IpAddr>().is_ok_and(|ip| ip == source.ip());
    if via.rport || !same_host {
        let _ = write!(out, ";received={}", source.ip());
    }
}

/// Whether a From/To value carries a `tag` parameter (after the URI, not inside it).
fn has_tag(value: &str) -> bool {
    let params = match find_unquoted(value, b'<') {
        Some(open) => match value[open..].find('>') {
            Some(close) => &value[open + close + 1..],
            None => return false,
        },
        None => value,
    };
    split_unquoted(params, b';').skip(1).any(|p| {
        p.split('=')
            .next()
            .unwrap_or("")
            .trim_lws()
            .eq_ignore_ascii_case("tag")
    })
}

/// A To tag derived from the request, so a retransmission gets the same response.
fn to_tag(echo: &Echo<'_>) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for part in [
        echo.call_id,
        echo.from,
        echo.cseq,
        echo.top_via.branch.unwrap_or(""),
        echo.to,
    ] {
        hasher.update(part.as_bytes());
        hasher.update(b"\n");
    }
    hasher.digest()
}

/// Writes the response into `out` (appending). `contact` is the Request-URI (used by 302).
pub fn respond_into(
    out: &mut Vec<u8>,
    echo: &Echo<'_>,
    answer: &Answer,
    contact: &str,
    config: &SipConfig,
    source: SocketAddr,
) {
    out.extend_from_slice(status_line(answer, config).as_bytes());
    for (index, via) in echo.vias.iter().enumerate() {
        out.extend_from_slice(b"Via: ");
        if index == 0 {
            write_top_via(out, via, &echo.top_via, source);
        } else {
            out.extend_from_slice(via.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"From: ");
    out.extend_from_slice(echo.from.as_bytes());
    out.extend_from_slice(b"\r\nTo: ");
    out.extend_from_slice(echo.to.as_bytes());
    if !has_tag(echo.to) {
        let _ = write!(out, ";tag=sd{:016x}", to_tag(echo));
    }
    out.extend_from_slice(b"\r\nCall-ID: ");
    out.extend_from_slice(echo.call_id.as_bytes());
    out.extend_from_slice(b"\r\nCSeq: ");
    out.extend_from_slice(echo.cseq.as_bytes());
    out.extend_from_slice(b"\r\n");
    match answer {
        Answer::Redirect => {
            out.extend_from_slice(b"Contact: <");
            out.extend_from_slice(contact.as_bytes());
            out.extend_from_slice(b">\r\n");
        }
        Answer::Blocked { reasons, sets } => {
            let _ = write!(out, "Reason: SIP;cause={};text=\"", config.block_status);
            for (index, reason) in reasons.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(reason.name().as_bytes());
            }
            out.extend_from_slice(b"\"\r\n");
            if !sets.is_empty() {
                out.extend_from_slice(b"X-Suppressd-Sets: ");
                out.extend_from_slice(sets.join(",").as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        Answer::Unavailable => {
            out.extend_from_slice(b"Reason: SIP;cause=503;text=\"NOT_READY\"\r\n")
        }
        Answer::Busy {
            text,
            retry_after_seconds,
        } => {
            let _ = write!(
                out,
                "Reason: SIP;cause=503;text=\"{text}\"\r\nRetry-After: {retry_after_seconds}\r\n"
            );
        }
        Answer::Refused(text) => {
            let _ = write!(out, "Reason: SIP;cause=403;text=\"{text}\"\r\n");
        }
        Answer::Options | Answer::NotAllowed => {
            let _ = write!(out, "Allow: {ALLOW}\r\n");
        }
        Answer::BadRequest(kind) => {
            let _ = write!(out, "Warning: 399 suppressd \"{}\"\r\n", kind.text());
        }
    }
    // No Server header: every byte of an answer is a byte a spoofed request could reflect.
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
}

/// Handles one message: appends the response (if any) to `out` and returns where it goes
/// (meaningful for UDP; TCP answers on its connection). Counts what it did.
pub fn handle(
    bytes: &[u8],
    source: SocketAddr,
    state: &State,
    out: &mut Vec<u8>,
) -> Option<SocketAddr> {
    count(&COUNTERS.received);
    let config = &state.config.raw.sip;
    let rule = match source_rule(state, source) {
        SourceRule::Listed(rule) => Some(rule),
        SourceRule::Anyone => None,
        // The transports drop these before reading them; never answer one that got here.
        SourceRule::Refused => return None,
    };
    let request = match parse_request(bytes) {
        Ok(request) => request,
        Err(error) => return malformed(&error, config, source, out),
    };
    let Some(answer) = decide(&request, state, rule) else {
        count(&COUNTERS.acks_absorbed);
        return None;
    };
    count(match &answer {
        Answer::Redirect => &COUNTERS.redirected,
        Answer::Blocked { .. } => &COUNTERS.blocked,
        Answer::Unavailable | Answer::Busy { .. } => &COUNTERS.unavailable,
        Answer::Refused(_) => &COUNTERS.refused,
        Answer::Options => &COUNTERS.options,
        Answer::NotAllowed => &COUNTERS.not_allowed,
        Answer::BadRequest(_) => &COUNTERS.malformed_answered,
    });
    respond_into(out, &request.echo, &answer, request.uri, config, source);
    Some(destination(&request.echo.top_via, source))
}

fn malformed(
    error: &SipError<'_>,
    config: &SipConfig,
    source: SocketAddr,
    out: &mut Vec<u8>,
) -> Option<SocketAddr> {
    if error.kind == SipErrorKind::IsResponse {
        count(&COUNTERS.responses_ignored);
        return None;
    }
    match &error.echo {
        Some(echo) if error.method != Some(Method::Ack) => {
            count(&COUNTERS.malformed_answered);
            tracing::debug!(%source, error = error.kind.text(), "malformed SIP request answered 400");
            respond_into(
                out,
                echo,
                &Answer::BadRequest(error.kind),
                "",
                config,
                source,
            );
            Some(destination(&echo.top_via, source))
        }
        _ => {
            count(&COUNTERS.malformed_dropped);
            tracing::debug!(%source, error = error.kind.text(), "malformed SIP message dropped");
            None
        }
    }
}

/// Binds nothing: serves already-bound sockets until `stop` changes.
pub fn spawn(
    state: Arc<State>,
    udp: Option<UdpSocket>,
    tcp: Option<TcpListener>,
    stop: watch::Receiver<bool>,
) {
    if let Some(socket) = udp {
        tokio::spawn(serve_udp(socket, state.clone(), stop.clone()));
    }
    if let Some(listener) = tcp {
        tokio::spawn(serve_tcp(listener, state, stop));
    }
}

/// Who a source is to the dip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceRule<'a> {
    /// No source list: every source, any tenant.
    Anyone,
    /// The most specific entry of the source list holding the source.
    Listed(&'a SipSource),
    /// Not in the source list: dropped.
    Refused,
}

/// The rule for `source`.
pub fn source_rule(state: &State, source: SocketAddr) -> SourceRule<'_> {
    match &state.config.sip_sources {
        None => SourceRule::Anyone,
        Some(sources) => sources
            .iter()
            .find(|s| s.network.contains(source.ip()))
            .map_or(SourceRule::Refused, SourceRule::Listed),
    }
}

/// True when the source list is unset or holds a network containing `source`.
pub fn source_allowed(state: &State, source: SocketAddr) -> bool {
    source_rule(state, source) != SourceRule::Refused
}

/// Receive buffer asked for the dip's UDP socket. The kernel default (~208 KiB, about a hundred
/// INVITEs once per-packet overhead is counted) overflows in a burst whenever the task is
/// descheduled for a moment, and every lost INVITE comes back 500 ms later as a retransmission
/// (measured: BENCHMARKS.md). Linux caps the request at `net.core.rmem_max`.
const UDP_RECEIVE_BUFFER: usize = 8 << 20;

/// One socket, one buffer, one task: read every datagram that is ready, answer it at once.
async fn serve_udp(socket: UdpSocket, state: Arc<State>, mut stop: watch::Receiver<bool>) {
    let socket_ref = socket2::SockRef::from(&socket);
    if let Err(error) = socket_ref.set_recv_buffer_size(UDP_RECEIVE_BUFFER) {
        tracing::warn!(%error, "cannot enlarge the SIP UDP receive buffer");
    }
    tracing::debug!(
        bytes = socket_ref.recv_buffer_size().unwrap_or(0),
        "SIP UDP receive buffer"
    );
    let mut buffer = vec![0u8; 65_536];
    let mut out = Vec::with_capacity(2048);
    loop {
        tokio::select! {
            ready = socket.readable() => {
                if let Err(error) = ready {
                    tracing::error!(%error, "SIP UDP socket failed; the dip stops");
                    return;
                }
            }
            _ = stop.changed() => return,
        }
        for _ in 0..UDP_BURST {
            let (length, source) = match socket.try_recv_from(&mut buffer) {
                Ok(received) => received,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(error) => {
                    // ICMP errors for earlier sends surface here on some systems: not fatal.
                    tracing::debug!(%error, "SIP UDP receive error");
                    continue;
                }
            };
            if !source_allowed(&state, source) {
                crate::metrics::metrics().sip_source_refused[0].increment(1);
                count(&COUNTERS.sources_refused);
                tracing::debug!(%source, "SIP datagram from a source not in sip.allowed_sources dropped");
                continue;
            }
            out.clear();
            let Some(destination) = handle(&buffer[..length], source, &state, &mut out) else {
                continue;
            };
            let sent = match socket.try_send_to(&out, destination) {
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    socket.send_to(&out, destination).await
                }
                other => other,
            };
            if let Err(error) = sent {
                count(&COUNTERS.send_errors);
                tracing::debug!(%error, %destination, "SIP UDP send failed");
            }
        }
        tokio::task::yield_now().await;
    }
}

async fn serve_tcp(listener: TcpListener, state: Arc<State>, mut stop: watch::Receiver<bool>) {
    let config = &state.config.raw.sip;
    let (max_connections, per_source) = (
        config.tcp_max_connections,
        config.tcp_max_connections_per_source,
    );
    let caps = crate::server::accept::ConnectionCaps::new(3, max_connections, per_source);
    let mut backoff = crate::server::limits::AcceptBackoff::new("SIP TCP");
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                backoff.failed(&error).await;
                continue;
            }
        };
        if !source_allowed(&state, peer) {
            crate::metrics::metrics().sip_source_refused[1].increment(1);
            count(&COUNTERS.sources_refused);
            tracing::debug!(%peer, "SIP TCP connection from a source not in sip.allowed_sources closed");
            drop(stream);
            continue;
        }
        backoff.succeeded();
        let Some(permit) = caps.try_admit(peer.ip()) else {
            count(&COUNTERS.connections_refused);
            tracing::debug!(%peer, max_connections, per_source, "SIP TCP connection cap reached; closing the new one");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (state, stop) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            serve_connection(stream, peer, state, stop).await;
            drop(permit);
        });
    }
}

/// One TCP connection: frame, answer every complete message, write the answers in one go.
async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
) {
    let idle = Duration::from_secs(state.config.raw.sip.tcp_idle_seconds);
    let mut buffer: Vec<u8> = Vec::with_capacity(8192);
    let mut out: Vec<u8> = Vec::with_capacity(2048);
    loop {
        let mut consumed = 0;
        let mut close = false;
        loop {
            match frame(&buffer[consumed..]) {
                Frame::Incomplete => break,
                Frame::Skip(length) => consumed += length,
                Frame::Ping(length) => {
                    out.extend_from_slice(b"\r\n");
                    consumed += length;
                }
                Frame::Message(length) => {
                    handle(&buffer[consumed..consumed + length], peer, &state, &mut out);
                    consumed += length;
                }
                Frame::Unframeable(length, kind) => {
                    count(&COUNTERS.received);
                    let head = &buffer[consumed..consumed + length];
                    let config = &state.config.raw.sip;
                    let error = match parse_request(head) {
                        Ok(request) => SipError {
                            kind,
                            method: Some(request.method),
                            echo: Some(Box::new(request.echo)),
                        },
                        Err(error) => error,
                    };
                    malformed(&error, config, peer, &mut out);
                    close = true;
                    break;
                }
                Frame::TooLarge => {
                    count(&COUNTERS.received);
                    count(&COUNTERS.malformed_dropped);
                    tracing::debug!(%peer, "SIP TCP message too large; closing");
                    close = true;
                    break;
                }
            }
        }
        buffer.drain(..consumed);
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                count(&COUNTERS.send_errors);
                return;
            }
            out.clear();
        }
        if close {
            let _ = stream.shutdown().await;
            return;
        }
        if buffer.capacity() - buffer.len() < 4096 {
            buffer.reserve(8192);
        }
        let read = tokio::select! {
            read = tokio::time::timeout(idle, stream.read_buf(&mut buffer)) => read,
            _ = stop.changed() => return,
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An INVITE as SIPp's uac scenario sends it (with SDP).
    const SIPP_INVITE: &str = "INVITE sip:+12015550123@127.0.0.1:5070 SIP/2.0\r\n\
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
    const KAMAILIO_INVITE: &str = "INVITE sip:+1-201-555-0199;npdi@127.0.0.1:5090;user=phone SIP/2.0\r\n\
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
    const COMPACT_INVITE: &str = "INVITE tel:+12015550123;phone-context=+1 SIP/2.0\r\n\
v: SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bK776\r\n\
f: <sip:a@example.com>;tag=1\r\n\
t: <tel:+12015550123>;tag=peer\r\n\
i: compact-1\r\n\
CSeq: 7 INVITE\r\n\
m: <sip:a@example.com>\r\n\
l: 0\r\n\
\r\n";

    fn source() -> SocketAddr {
        "127.0.0.1:40000".parse().unwrap()
    }

    fn config() -> SipConfig {
        SipConfig::default()
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn header_lines<'t>(response: &'t str, name: &str) -> Vec<&'t str> {
        response
            .split("\r\n")
            .filter_map(|line| {
                line.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(": "))
            })
            .collect()
    }

    #[test]
    fn parses_a_sipp_invite_with_body() {
        let request = parse_request(SIPP_INVITE.as_bytes()).unwrap();
        assert_eq!(request.method, Method::Invite);
        assert_eq!(request.uri, "sip:+12015550123@127.0.0.1:5070");
        assert_eq!(
            request.echo.vias,
            ["SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4242-1-0"]
        );
        assert_eq!(request.echo.top_via.port, Some(5061));
        assert_eq!(request.echo.top_via.branch, Some("z9hG4bK-4242-1-0"));
        assert!(!request.echo.top_via.rport);
        assert_eq!(request.echo.call_id, "1-4242@127.0.0.1");
        assert_eq!(request.echo.cseq, "1 INVITE");
        assert_eq!(request.content_length, Some(129));
        assert!(request.body.starts_with(b"v=0\r\n") && request.body.ends_with(b"PCMU/8000\r\n"));
        assert_eq!(request.header("subject"), Some("Performance Test"));
    }

    #[test]
    fn parses_a_kamailio_invite_with_many_vias() {
        let request = parse_request(KAMAILIO_INVITE.as_bytes()).unwrap();
        assert_eq!(
            request.echo.vias.len(),
            3,
            "comma-separated Via values are split"
        );
        assert_eq!(
            request.echo.vias[2],
            "SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK-0"
        );
        assert!(request.echo.top_via.rport);
        assert_eq!(
            request.echo.from,
            "\"Dialer, Inc\" <sip:dialer@example.com>;tag=abc"
        );
        assert_eq!(request.header("X-Campaign"), Some("outbound"));
        let mut buffer = [0; MAX_NUMBER_CHARS];
        assert_eq!(dialled_number(request.uri, &mut buffer), "+12015550199");
    }

    #[test]
    fn parses_compact_headers_and_ipv6() {
        let request = parse_request(COMPACT_INVITE.as_bytes()).unwrap();
        assert_eq!(request.echo.top_via.host, "2001:db8::1");
        assert_eq!(request.echo.top_via.transport, "TCP");
        assert_eq!(request.echo.from, "<sip:a@example.com>;tag=1");
        assert_eq!(request.echo.to, "<tel:+12015550123>;tag=peer");
        assert_eq!(request.echo.call_id, "compact-1");
        assert_eq!(request.content_length, Some(0));
        let mut buffer = [0; MAX_NUMBER_CHARS];
        assert_eq!(dialled_number(request.uri, &mut buffer), "+12015550123");
    }

    #[test]
    fn dialled_numbers_from_uris() {
        let cases = [
            ("sip:+12015550123@h", "+12015550123"),
            ("sips:+1(201)555.0123@h:5061;transport=tls", "+12015550123"),
            ("SIP:%2B12015550123@h", "+12015550123"),
            (
                "sip:2015550123;npdi;rn=+12015550000@h;user=phone",
                "2015550123",
            ),
            ("sip:+12015550123:secret@h", "+12015550123"),
            (
                "tel:+1-201-555-0123;phone-context=example.com",
                "+12015550123",
            ),
            ("sip:alice@h", ""),
            ("sip:h", ""),
            ("sip:1+2@h", ""),
            ("sip:%2@h", ""),
            ("sip:%ZZ1@h", ""),
            ("urn:service:sos", ""),
            ("sip:+12015550123", ""),
        ];
        for (uri, expected) in cases {
            let mut buffer = [0; MAX_NUMBER_CHARS];
            assert_eq!(dialled_number(uri, &mut buffer), expected, "{uri}");
        }
        let long = format!("sip:+{}@h", "1".repeat(80));
        let mut buffer = [0; MAX_NUMBER_CHARS];
        assert_eq!(dialled_number(&long, &mut buffer), "");
    }

    fn kind_of(message: &str) -> SipErrorKind {
        parse_request(message.as_bytes())
            .expect_err("accepted a bad message")
            .kind
    }

    #[test]
    fn rejects_garbage_with_a_reason() {
        assert_eq!(kind_of(""), SipErrorKind::Empty);
        assert_eq!(kind_of("\r\n\r\n"), SipErrorKind::Empty);
        assert_eq!(kind_of("hello"), SipErrorKind::BadRequestLine);
        assert_eq!(kind_of("SIP/2.0 200 OK\r\n\r\n"), SipErrorKind::IsResponse);
        assert_eq!(
            kind_of(&SIPP_INVITE.replace("SIP/2.0\r\nVia", "SIP/3.0\r\nVia")),
            SipErrorKind::BadVersion
        );
        assert_eq!(
            kind_of(&SIPP_INVITE.replace("INVITE sip:", "INVITE  sip:")),
            SipErrorKind::BadRequestLine
        );
        assert_eq!(
            kind_of(&SIPP_INVITE.replace("sip:+12015550123@127.0.0.1:5070 ", "<sip:x@y> ")),
            SipErrorKind::BadUri
        );
        assert_eq!(
            kind_of(&SIPP_INVITE.replace("Call-ID: 1-4242@127.0.0.1\r\n", "")),
            SipErrorKind::MissingHeader("Call-ID")
        );
        assert_eq!(
            kind_of(&SIPP_INVITE.replace("CSeq: 1 INVITE", "CSeq: 1 BYE")),
            SipErrorKind::CSeqMethodMismatch
        );
        assert_eq!(
            kind_of(&SIPP_INVITE.replace("CSeq: 1 INVITE", "CSeq: x INVITE")),
            SipErrorKind::BadCSeq
        );
        assert_eq!(
            kind_of(&SIPP_INVITE.replace("CSeq: 1 INVITE", "CSeq: 4294967296 INVITE")),
            SipErrorKind::BadCSeq
        );
        assert_eq!(
            kind_of(&SIPP_INVITE.replace("Length:   129", "Length: 500")),
            SipErrorKind::BodyTooShort
        );
        assert_eq!(
            kind_of(&SIPP_INVITE.replace("Length:   129", "Length: -1")),
            SipErrorKind::BadContentLength
        );
        assert_eq!(
            kind_of(&SIPP_INVITE.replace("Subject:", " Subject:")),
            SipErrorKind::Folding
        );
        assert_eq!(
            kind_of(&SIPP_INVITE.replace("Subject:", "Sub ject:")),
            SipErrorKind::BadHeader
        );
        assert_eq!(
            kind_of(&SIPP_INVITE.replace("Subject: Performance Test\r\n", "Subject\r\n")),
            SipErrorKind::BadHeader
        );
        assert_eq!(
            kind_of(&SIPP_INVITE.replace("127.0.0.1:5061;branch", "127.0.0.1:99999;branch")),
            SipErrorKind::BadVia
        );
        assert_eq!(
            kind_of(&SIPP_INVITE.replace("SIP/2.0/UDP 127", "SIP/2.0/UDP")),
            SipErrorKind::BadVia
        );
        assert_eq!(
            kind_of(&SIPP_INVITE.replace("\r\nMax-Forwards", "\nMax-Forwards")),
            SipErrorKind::BadLineEnding
        );
        assert_eq!(
            kind_of(&SIPP_INVITE.replace("To: <", "To: <\r")),
            SipErrorKind::BadLineEnding
        );
        assert_eq!(
            kind_of(&format!(
                "{}\r\nFrom: x\r\n\r\n",
                SIPP_INVITE.split("\r\n\r\n").next().unwrap()
            )),
            SipErrorKind::DuplicateHeader("From")
        );
        assert_eq!(
            kind_of(KAMAILIO_INVITE.trim_end_matches("\r\n")),
            SipErrorKind::NoBlankLine
        );
        let many = format!(
            "OPTIONS sip:h SIP/2.0\r\n{}\r\n",
            "X-A: 1\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(kind_of(&many), SipErrorKind::TooManyHeaders);
        let vias = format!(
            "OPTIONS sip:h SIP/2.0\r\nVia: {}\r\n\r\n",
            vec!["SIP/2.0/UDP h"; MAX_VIAS + 1].join(",")
        );
        assert_eq!(kind_of(&vias), SipErrorKind::TooManyVias);
        assert_eq!(
            parse_request(&vec![b'A'; MAX_MESSAGE_BYTES + 1])
                .unwrap_err()
                .kind,
            SipErrorKind::TooLarge
        );
        let mut latin1 = SIPP_INVITE.as_bytes().to_vec();
        let at = SIPP_INVITE.find("Performance").unwrap();
        latin1[at] = 0xE9;
        assert_eq!(
            parse_request(&latin1).unwrap_err().kind,
            SipErrorKind::NotUtf8
        );
    }

    #[test]
    fn leading_crlf_and_extra_body_bytes_are_tolerated() {
        let message = format!("\r\n\r\n{KAMAILIO_INVITE}trailing junk");
        let request = parse_request(message.as_bytes()).unwrap();
        assert!(request.body.is_empty());
    }

    #[test]
    fn malformed_requests_are_answered_400_only_with_the_five_headers() {
        let bad_cseq = SIPP_INVITE.replace("CSeq: 1 INVITE", "CSeq: 1 BYE");
        let error = parse_request(bad_cseq.as_bytes()).unwrap_err();
        let response = text(&respond_bad_request(&error, &config(), source()).unwrap());
        assert!(
            response.starts_with("SIP/2.0 400 Bad Request\r\n"),
            "{response}"
        );
        assert_eq!(header_lines(&response, "CSeq"), ["1 BYE"]);
        assert_eq!(
            header_lines(&response, "Warning"),
            ["399 suppressd \"CSeq method differs from the request method\""]
        );
        let no_call_id = SIPP_INVITE.replace("Call-ID: 1-4242@127.0.0.1\r\n", "");
        assert!(
            respond_bad_request(
                &parse_request(no_call_id.as_bytes()).unwrap_err(),
                &config(),
                source()
            )
            .is_none()
        );
        let bad_ack = SIPP_INVITE
            .replace("INVITE", "ACK")
            .replace("Subject:", " Subject:");
        let error = parse_request(bad_ack.as_bytes()).unwrap_err();
        assert_eq!(error.method, Some(Method::Ack));
        assert!(
            respond_bad_request(&error, &config(), source()).is_none(),
            "never answer an ACK"
        );
    }

    fn answer(message: &str, answer: &Answer, config: &SipConfig, from: SocketAddr) -> String {
        let request = parse_request(message.as_bytes()).unwrap();
        text(&respond(&request, answer, config, from))
    }

    #[test]
    fn redirect_echoes_headers_and_points_back() {
        let response = answer(
            SIPP_INVITE,
            &Answer::Redirect,
            &config(),
            "127.0.0.1:5061".parse().unwrap(),
        );
        assert!(
            response.starts_with("SIP/2.0 302 Moved Temporarily\r\n"),
            "{response}"
        );
        assert_eq!(
            header_lines(&response, "Via"),
            ["SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4242-1-0"]
        );
        assert_eq!(
            header_lines(&response, "From"),
            ["sipp <sip:sipp@127.0.0.1:5061>;tag=4242SIPpTag001"]
        );
        let to = header_lines(&response, "To");
        assert!(
            to[0].starts_with("<sip:+12015550123@127.0.0.1:5070>;tag=sd"),
            "{to:?}"
        );
        assert_eq!(header_lines(&response, "Call-ID"), ["1-4242@127.0.0.1"]);
        assert_eq!(header_lines(&response, "CSeq"), ["1 INVITE"]);
        assert_eq!(
            header_lines(&response, "Contact"),
            ["<sip:+12015550123@127.0.0.1:5070>"]
        );
        assert_eq!(header_lines(&response, "Content-Length"), ["0"]);
        assert!(response.ends_with("\r\n\r\n"));
        // A retransmission gets the very same response (same To tag).
        assert_eq!(
            response,
            answer(
                SIPP_INVITE,
                &Answer::Redirect,
                &config(),
                "127.0.0.1:5061".parse().unwrap()
            )
        );
        // The response parses as SIP: every line is "Name: value".
        for line in response.split("\r\n").skip(1).filter(|l| !l.is_empty()) {
            assert!(line.contains(": "), "{line}");
        }
    }

    #[test]
    fn every_via_in_order_and_existing_tags_kept() {
        let response = answer(
            KAMAILIO_INVITE,
            &Answer::Redirect,
            &config(),
            "127.0.0.1:5060".parse().unwrap(),
        );
        assert_eq!(
            header_lines(&response, "Via"),
            [
                "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKcydzigwkX;rport=5060;received=127.0.0.1",
                "SIP/2.0/UDP 10.0.0.5:5061;received=10.0.0.5;rport=5061;branch=z9hG4bK-1",
                "SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK-0",
            ]
        );
        assert_eq!(
            header_lines(&response, "Contact"),
            ["<sip:+1-201-555-0199;npdi@127.0.0.1:5090;user=phone>"]
        );
        let compact = answer(COMPACT_INVITE, &Answer::Options, &config(), source());
        assert_eq!(
            header_lines(&compact, "To"),
            ["<tel:+12015550123>;tag=peer"],
            "a To tag is never replaced"
        );
        assert_eq!(
            header_lines(&compact, "Via"),
            ["SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bK776;received=127.0.0.1"]
        );
    }

    #[test]
    fn tag_inside_the_uri_is_not_a_header_tag() {
        assert!(!has_tag("<sip:a@b;tag=x>"));
        assert!(has_tag("<sip:a@b>;tag=x"));
        assert!(has_tag("sip:a@b;tag=x"));
        assert!(!has_tag("\"a;tag=x <\" <sip:a@b>"));
        assert!(has_tag("\"a;tag=x <\" <sip:a@b> ; TAG = y"));
        assert!(!has_tag("<sip:a@b"));
    }

    #[test]
    fn rport_and_received() {
        let via =
            |v: &str| SIPP_INVITE.replace("SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4242-1-0", v);
        let nat: SocketAddr = "192.0.2.7:31000".parse().unwrap();
        // rport: filled with the source port, received added, and the response goes there.
        let message = via("SIP/2.0/UDP 10.1.1.1:5061;rport;branch=z9hG4bK-1");
        let response = answer(&message, &Answer::Redirect, &config(), nat);
        assert_eq!(
            header_lines(&response, "Via"),
            ["SIP/2.0/UDP 10.1.1.1:5061;rport=31000;branch=z9hG4bK-1;received=192.0.2.7"]
        );
        let request = parse_request(message.as_bytes()).unwrap();
        assert_eq!(destination(&request.echo.top_via, nat), nat);
        // No rport, sent-by differs: received added; source IP with the sent-by port.
        let message = via("SIP/2.0/UDP 10.1.1.1:5061;branch=z9hG4bK-1");
        let response = answer(&message, &Answer::Redirect, &config(), nat);
        assert_eq!(
            header_lines(&response, "Via"),
            ["SIP/2.0/UDP 10.1.1.1:5061;branch=z9hG4bK-1;received=192.0.2.7"]
        );
        let request = parse_request(message.as_bytes()).unwrap();
        assert_eq!(
            destination(&request.echo.top_via, nat),
            "192.0.2.7:5061".parse().unwrap()
        );
        // A host name is never resolved: received added; default port 5060.
        let message = via("SIP/2.0/UDP proxy.example.com;branch=z9hG4bK-1;received=1.2.3.4");
        let response = answer(&message, &Answer::Redirect, &config(), nat);
        assert_eq!(
            header_lines(&response, "Via"),
            ["SIP/2.0/UDP proxy.example.com;branch=z9hG4bK-1;received=192.0.2.7"]
        );
        let request = parse_request(message.as_bytes()).unwrap();
        assert_eq!(
            destination(&request.echo.top_via, nat),
            "192.0.2.7:5060".parse().unwrap()
        );
        // Sent-by is the source: nothing added.
        let message = via("SIP/2.0/UDP 192.0.2.7:5061;branch=z9hG4bK-1");
        let response = answer(&message, &Answer::Redirect, &config(), nat);
        assert_eq!(
            header_lines(&response, "Via"),
            ["SIP/2.0/UDP 192.0.2.7:5061;branch=z9hG4bK-1"]
        );
    }

    #[test]
    fn status_lines_and_answer_headers() {
        let mut reasons = Reasons::default();
        reasons.insert(Reason::NationalRegistry);
        reasons.insert(Reason::InternalDnc);
        let blocked = Answer::Blocked {
            reasons,
            sets: vec!["us-dnc".into(), "acme/dnc".into()],
        };
        let response = answer(SIPP_INVITE, &blocked, &config(), source());
        assert!(response.starts_with("SIP/2.0 603 Decline\r\n"));
        assert_eq!(
            header_lines(&response, "Reason"),
            ["SIP;cause=603;text=\"NATIONAL_REGISTRY,INTERNAL_DNC\""]
        );
        assert_eq!(
            header_lines(&response, "X-Suppressd-Sets"),
            ["us-dnc,acme/dnc"]
        );
        let rejected = SipConfig {
            block_status: 608,
            ..config()
        };
        let response = answer(SIPP_INVITE, &blocked, &rejected, source());
        assert!(response.starts_with("SIP/2.0 608 Rejected\r\n"));
        assert_eq!(
            header_lines(&response, "Reason"),
            ["SIP;cause=608;text=\"NATIONAL_REGISTRY,INTERNAL_DNC\""]
        );
        let response = answer(SIPP_INVITE, &Answer::Unavailable, &config(), source());
        assert!(response.starts_with("SIP/2.0 503 Service Unavailable\r\n"));
        assert!(header_lines(&response, "Retry-After").is_empty());
        let response = answer(
            SIPP_INVITE,
            &Answer::Refused("UNKNOWN_TENANT"),
            &config(),
            source(),
        );
        assert!(response.starts_with("SIP/2.0 403 Forbidden\r\n"));
        assert_eq!(
            header_lines(&response, "Reason"),
            ["SIP;cause=403;text=\"UNKNOWN_TENANT\""]
        );
        let response = answer(SIPP_INVITE, &Answer::NotAllowed, &config(), source());
        assert!(response.starts_with("SIP/2.0 405 Method Not Allowed\r\n"));
        assert_eq!(header_lines(&response, "Allow"), ["INVITE, OPTIONS, ACK"]);
        assert!(header_lines(&response, "Contact").is_empty());
    }

    fn outcome(reasons: &[Reason]) -> CheckOutcome<'static> {
        let mut set = Reasons::default();
        for &reason in reasons {
            set.insert(reason);
        }
        CheckOutcome {
            reasons: set,
            matched: 0,
            number: None,
            proof: crate::server::checks::Proof::empty(),
            warnings: vec![],
            tenant: "t",
            campaign: "c",
        }
    }

    #[test]
    fn answers_from_outcomes() {
        assert_eq!(answer_for(Ok(outcome(&[]))), Answer::Redirect);
        assert_eq!(
            answer_for(Ok(outcome(&[Reason::NotReady]))),
            Answer::Unavailable
        );
        assert_eq!(
            answer_for(Ok(outcome(&[Reason::NotReady, Reason::StaleList]))),
            Answer::Unavailable
        );
        assert!(matches!(
            answer_for(Ok(outcome(&[Reason::NotReady, Reason::NationalRegistry]))),
            Answer::Blocked { .. }
        ));
        assert!(matches!(
            answer_for(Ok(outcome(&[Reason::InvalidNumber]))),
            Answer::Blocked { .. }
        ));
        assert!(matches!(
            answer_for(Ok(outcome(&[Reason::NoConsent]))),
            Answer::Blocked { .. }
        ));
        assert_eq!(
            answer_for(Err(PolicyError::UnknownTenant("x".into()).into())),
            Answer::Refused("UNKNOWN_TENANT")
        );
        assert_eq!(
            answer_for(Err(PolicyError::NoCampaign.into())),
            Answer::Refused("NO_CAMPAIGN")
        );
        assert_eq!(
            answer_for(Err(CheckError::RateLimited {
                tenant: "t".into(),
                rate: 10,
                burst: 10,
                retry_after: Duration::from_millis(1500),
            })),
            Answer::Busy {
                text: "RATE_LIMITED",
                retry_after_seconds: 2
            }
        );
    }

    #[test]
    fn tcp_framing() {
        let invite = SIPP_INVITE.as_bytes();
        assert_eq!(frame(invite), Frame::Message(invite.len()));
        let two = [invite, invite].concat();
        assert_eq!(frame(&two), Frame::Message(invite.len()));
        assert_eq!(frame(&invite[..invite.len() - 1]), Frame::Incomplete);
        assert_eq!(frame(&invite[..40]), Frame::Incomplete);
        assert_eq!(frame(b"\r\n\r\n"), Frame::Ping(4));
        assert_eq!(frame(b"\r\n"), Frame::Incomplete);
        assert_eq!(frame(b"\r\n\r"), Frame::Incomplete);
        assert_eq!(frame(b"\r"), Frame::Incomplete);
        assert_eq!(frame(b"\r\nINVITE"), Frame::Skip(2));
        let no_length = KAMAILIO_INVITE.replace("Content-Length: 0\r\n", "");
        assert_eq!(
            frame(no_length.as_bytes()),
            Frame::Unframeable(no_length.len(), SipErrorKind::MissingContentLength)
        );
        let huge = SIPP_INVITE.replace("Length:   129", "Length: 99999");
        assert_eq!(frame(huge.as_bytes()), Frame::TooLarge);
        assert_eq!(frame(&vec![b'A'; MAX_MESSAGE_BYTES]), Frame::TooLarge);
        assert_eq!(frame(&[b'A'; 100]), Frame::Incomplete);
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
        assert_eq!(config.raw.sip.tenant_header, "X-Tenant");
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
