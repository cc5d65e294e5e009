//! SIP answers: from a parsed request and a check's result to the response bytes.
//!
//! Owns what the dip answers ([`Answer`], the table in the module doc of `sip`), the one
//! mapping of error classes to SIP answers ([`sip_refusal`]), the dialled number in a
//! Request-URI, and the wire rules of responses (echoed headers, `rport`/`received`, the
//! derived To tag). `respond*` are pure functions of their inputs (fuzzed); [`decide`] asks the
//! transport-neutral check and counts it like every API's checks; nothing here reads a socket,
//! sends, or counts messages (the transports do).

use super::parse::{Echo, Method, SipError, SipErrorKind, SipRequest, TopVia};
use super::parse::{TrimLws, find_unquoted, split_unquoted};
use crate::config::{SipConfig, SipSource};
use crate::metrics::{Api, Shed, metrics};
use crate::policy::{Reason, Reasons};
use crate::server::checks::{CheckError, CheckOutcome, count_verdicts, now_moment};
use crate::server::errors::{Classify, ErrorClass};
use crate::server::state::State;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Longest user part taken as a number; longer ones are invalid numbers.
pub const MAX_NUMBER_CHARS: usize = 64;
/// The methods the dip answers (OPTIONS and 405 answers list them).
const ALLOW: &str = "INVITE, OPTIONS, ACK";

/// What the dip answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 302: go on to the original target.
    Redirect,
    /// 603 or 608, naming the reasons and the sets hit; with `Retry-After` (seconds until
    /// `next_allowed_at`) when only time stands in the way (calling windows, attempt caps).
    Blocked {
        reasons: Reasons,
        sets: Vec<String>,
        retry_after_seconds: Option<u32>,
    },
    /// 503: cannot decide.
    Unavailable,
    /// 503 with `Retry-After`: refused by a limit before checking; the text names which
    /// (`OVERLOADED`: `server.max_in_flight`; `RATE_LIMITED`: the tenant's rate).
    Busy {
        text: &'static str,
        retry_after_seconds: u32,
    },
    /// 403: refused here (unknown tenant or campaign, a source not bound to them); the text
    /// names which.
    Refused(&'static str),
    /// 500: a fault of the daemon; the text names it (no check today can end so).
    Failed(&'static str),
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

/// The SIP answer of each error class: the one place SIP maps errors. `code` names the error
/// in the `Reason` text; `retry_after` (1 s when unknown) goes in `Retry-After`. Never 404: a
/// 404 relayed to a dialer reads as "this number does not exist" (module doc).
pub fn sip_refusal(class: ErrorClass, code: &'static str, retry_after: Option<Duration>) -> Answer {
    match class {
        ErrorClass::InvalidArgument
        | ErrorClass::Unauthenticated
        | ErrorClass::PermissionDenied
        | ErrorClass::NotFound
        | ErrorClass::AlreadyExists => Answer::Refused(code),
        ErrorClass::ResourceExhausted | ErrorClass::Unavailable => {
            let after = retry_after.unwrap_or(Duration::from_secs(1));
            // Whole seconds, rounded up: a proxy that waits this long finds room again.
            let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            Answer::Busy {
                text: code,
                retry_after_seconds: seconds.clamp(1, 3600) as u32,
            }
        }
        ErrorClass::Internal => Answer::Failed(code),
    }
}

/// The answer to an INVITE, from the check's result.
pub fn answer_for(result: Result<CheckOutcome<'_>, CheckError>) -> Answer {
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(error) => {
            if error.is_rate_limit() {
                metrics().shed(Api::Sip, Shed::RateLimit);
            }
            return sip_refusal(error.classify(), error.code(), error.retry_after());
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
        retry_after_seconds: retry_after(
            reasons,
            outcome.next_allowed_at_ms,
            crate::server::state::now_ms(),
        ),
    }
}

/// Seconds until `next_allowed_at_ms` (rounded up, at least 1), when every reason is one time
/// lifts (outside the calling window, attempt limit): a proxy may then requeue the call. Never
/// when anything else blocks it too, which no wait would lift.
fn retry_after(reasons: Reasons, next_allowed_at_ms: Option<i64>, now_ms: i64) -> Option<u32> {
    const TIMED: [Reason; 2] = [Reason::OutsideCallingWindow, Reason::AttemptLimit];
    let next = next_allowed_at_ms.filter(|&next| next > 0)?;
    if !reasons.iter().all(|r| TIMED.contains(&r)) {
        return None;
    }
    let seconds = (next - now_ms).saturating_add(999) / 1000;
    Some(seconds.clamp(1, i64::from(u32::MAX)) as u32)
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
        return Some(sip_refusal(
            ErrorClass::PermissionDenied,
            "TENANT_NOT_ALLOWED",
            None,
        ));
    }
    let campaigns = rule.campaigns.as_ref()?;
    match state.policy.resolve(tenant, campaign) {
        Ok((_, found)) if !campaigns.contains(&found.name) => Some(sip_refusal(
            ErrorClass::PermissionDenied,
            "CAMPAIGN_NOT_ALLOWED",
            None,
        )),
        // Unknown or missing campaigns get the check's own answer.
        _ => None,
    }
}

/// The answer to a parsed request, or None for ACK (absorbed). `rule` is the source's entry
/// in the source list (None when every source may ask for anything).
pub fn decide(request: &SipRequest<'_>, state: &State, rule: Option<&SipSource>) -> Option<Answer> {
    let config = state.config.sip();
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
                metrics().shed(Api::Sip, Shed::Overload);
                return Some(sip_refusal(
                    ErrorClass::ResourceExhausted,
                    "OVERLOADED",
                    None,
                ));
            };
            let started = std::time::Instant::now();
            let mut buffer = [0u8; MAX_NUMBER_CHARS];
            let number = dialled_number(request.uri, &mut buffer);
            let result = state.check_text(tenant, campaign, number, now_moment());
            if let Ok(outcome) = &result {
                // Counted like every API's checks (verdicts, reasons, duration).
                count_verdicts(Api::Sip, [(outcome.number.is_some(), outcome.reasons)]);
                metrics().latency(Api::Sip, started);
            }
            answer_for(result)
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

/// The status code of an answer (`block_status`: 603 or 608, `sip.block_status`).
pub fn status_code(answer: &Answer, block_status: u16) -> u16 {
    match answer {
        Answer::Redirect => 302,
        // Validated to be 603 or 608; anything else declines.
        Answer::Blocked { .. } if block_status == 608 => 608,
        Answer::Blocked { .. } => 603,
        Answer::Unavailable | Answer::Busy { .. } => 503,
        Answer::Refused(_) => 403,
        Answer::Failed(_) => 500,
        Answer::Options => 200,
        Answer::NotAllowed => 405,
        Answer::BadRequest(_) => 400,
    }
}

/// The status line of an answer, from its [`status_code`].
fn status_line(answer: &Answer, config: &SipConfig) -> &'static str {
    match status_code(answer, config.block_status) {
        302 => "SIP/2.0 302 Moved Temporarily\r\n",
        608 => "SIP/2.0 608 Rejected\r\n",
        603 => "SIP/2.0 603 Decline\r\n",
        503 => "SIP/2.0 503 Service Unavailable\r\n",
        403 => "SIP/2.0 403 Forbidden\r\n",
        500 => "SIP/2.0 500 Server Internal Error\r\n",
        200 => "SIP/2.0 200 OK\r\n",
        405 => "SIP/2.0 405 Method Not Allowed\r\n",
        _ => "SIP/2.0 400 Bad Request\r\n",
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
        Answer::Blocked {
            reasons,
            sets,
            retry_after_seconds,
        } => {
            if let Some(seconds) = retry_after_seconds {
                let _ = write!(out, "Retry-After: {seconds}\r\n");
            }
            let _ = write!(out, "Reason: SIP;cause={};text=\"", config.block_status);
            for (index, reason) in reasons.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(reason.label().as_bytes());
            }
            out.extend_from_slice(b"\"\r\n");
            if !sets.is_empty() {
                out.extend_from_slice(b"X-Suppressd-Sets: ");
                out.extend_from_slice(sets.join(",").as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        Answer::Unavailable => {
            let _ = write!(
                out,
                "Reason: SIP;cause=503;text=\"{}\"\r\n",
                Reason::NotReady.label()
            );
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
        Answer::Failed(text) => {
            let _ = write!(out, "Reason: SIP;cause=500;text=\"{text}\"\r\n");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyError;
    use crate::server::sip::parse::parse_request;
    use crate::server::sip::tests::{
        COMPACT_INVITE, KAMAILIO_INVITE, SIPP_INVITE, config, header_lines, source, text,
    };

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
    fn time_refusals_say_when_to_retry_and_nothing_else_does() {
        let mut window = Reasons::default();
        window.insert(Reason::OutsideCallingWindow);
        assert_eq!(retry_after(window, Some(10_500), 1_000), Some(10));
        assert_eq!(retry_after(window, Some(1_001), 1_000), Some(1));
        assert_eq!(retry_after(window, None, 1_000), None);
        let mut both = window;
        both.insert(Reason::AttemptLimit);
        assert_eq!(retry_after(both, Some(61_000), 1_000), Some(60));
        let mut listed = window;
        listed.insert(Reason::InternalDnc);
        assert_eq!(retry_after(listed, Some(61_000), 1_000), None);
        let blocked = Answer::Blocked {
            reasons: window,
            sets: vec![],
            retry_after_seconds: Some(3600),
        };
        let response = answer(SIPP_INVITE, &blocked, &config(), source());
        assert_eq!(header_lines(&response, "Retry-After"), ["3600"]);
        assert_eq!(
            header_lines(&response, "Reason"),
            ["SIP;cause=603;text=\"OUTSIDE_CALLING_WINDOW\""]
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
            retry_after_seconds: None,
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
            next_allowed_at_ms: None,
            attempts: None,
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
}
