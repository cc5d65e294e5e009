//! SIP request parsing and TCP framing: bytes in, a borrowed [`SipRequest`] or a typed
//! [`SipError`] out.
//!
//! Owns the wire grammar the dip accepts (strict and bounded: CRLF line ends, no folding, at
//! most [`MAX_MESSAGE_BYTES`], [`MAX_HEADERS`] headers and [`MAX_VIAS`] Via values) and
//! Content-Length framing of TCP streams ([`frame`]). Pure functions of their input (fuzzed):
//! never panics, never allocates beyond the header and Via lists, never does I/O, never decides
//! an answer, and never puts input in an error text (errors are static descriptions).

use std::fmt;

/// Largest SIP message accepted (an INVITE with SDP is 1-4 KB).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Most header lines in one message.
pub const MAX_HEADERS: usize = 100;
/// Most Via values in one message (as many as the usual Max-Forwards of 70 hops).
pub const MAX_VIAS: usize = 70;

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
pub(super) trait TrimLws {
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
pub(super) fn find_unquoted(text: &str, separator: u8) -> Option<usize> {
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
pub(super) fn split_unquoted(text: &str, separator: u8) -> impl Iterator<Item = &str> {
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

/// Step 1: bounds, leading CRLFs (RFC 3261 §7.5), responses, and the split at the blank line
/// into the head, the bytes after it, and whether there was a blank line.
fn split_message(bytes: &[u8]) -> Result<(&[u8], &[u8], bool), SipError<'static>> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(SipError::fatal(SipErrorKind::TooLarge));
    }
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
    Ok(match memchr::memmem::find(bytes, b"\r\n\r\n") {
        Some(end) => (&bytes[..end], &bytes[end + 4..], true),
        None => (bytes.strip_suffix(b"\r\n").unwrap_or(bytes), &[][..], false),
    })
}

/// The head's lines, split with memchr, each with whether a `\n` ended it (false only for
/// the last one).
fn lines(head: &[u8]) -> impl Iterator<Item = (&[u8], bool)> {
    let mut rest = Some(head);
    std::iter::from_fn(move || {
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
    })
}

/// What the scan of a head has found so far. The first fault is kept and scanning goes on,
/// so a 400 can still echo the headers.
#[derive(Default)]
struct Scan<'a> {
    fault: Option<SipErrorKind>,
    method: Option<Method>,
    method_text: Option<&'a str>,
    uri: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    vias: Vec<&'a str>,
    from: Option<&'a str>,
    to: Option<&'a str>,
    call_id: Option<&'a str>,
    cseq: Option<&'a str>,
    content_length: Option<usize>,
}

impl<'a> Scan<'a> {
    fn note(&mut self, kind: SipErrorKind) {
        self.fault.get_or_insert(kind);
    }

    /// Step 2: one raw line as text, checking its line end. None: skip it (noted). A fault in
    /// the request line is fatal: nothing can be answered without it.
    fn line_text(
        &mut self,
        raw: &'a [u8],
        terminated: bool,
        first: bool,
    ) -> Result<Option<&'a str>, SipError<'static>> {
        let line = match (terminated, raw.strip_suffix(b"\r")) {
            (false, _) => raw,
            (true, Some(line)) => line,
            (true, None) => {
                self.note(SipErrorKind::BadLineEnding);
                raw
            }
        };
        if memchr::memchr2(b'\r', 0, line).is_some() {
            self.note(SipErrorKind::BadLineEnding);
            return match first {
                true => Err(SipError::fatal(SipErrorKind::BadRequestLine)),
                false => Ok(None),
            };
        }
        match std::str::from_utf8(line) {
            Ok(line) => Ok(Some(line)),
            Err(_) if first => Err(SipError::fatal(SipErrorKind::NotUtf8)),
            Err(_) => {
                self.note(SipErrorKind::NotUtf8);
                Ok(None)
            }
        }
    }

    /// Step 3: `METHOD Request-URI SIP/2.0`.
    fn request_line(&mut self, line: &'a str) -> Result<(), SipError<'static>> {
        let mut parts = line.split(' ');
        let (Some(method), Some(uri), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(SipError::fatal(SipErrorKind::BadRequestLine));
        };
        if !is_token(method) {
            return Err(SipError::fatal(SipErrorKind::BadRequestLine));
        }
        self.method = Some(Method::from_token(method));
        self.method_text = Some(method);
        if !version.eq_ignore_ascii_case("SIP/2.0") {
            self.note(SipErrorKind::BadVersion);
        }
        if !valid_uri(uri) {
            self.note(SipErrorKind::BadUri);
        }
        self.uri = uri;
        Ok(())
    }

    /// Step 4: one header line. Returns false once no more headers may be read.
    fn header_line(&mut self, line: &'a str) -> bool {
        if line.is_empty() {
            return true;
        }
        if line.starts_with([' ', '\t']) {
            self.note(SipErrorKind::Folding);
            return true;
        }
        if self.headers.len() == MAX_HEADERS {
            self.note(SipErrorKind::TooManyHeaders);
            return false;
        }
        let Some((name, value)) = line.split_once(':') else {
            self.note(SipErrorKind::BadHeader);
            return true;
        };
        let name = name.trim_lws_end();
        if !is_token(name) {
            self.note(SipErrorKind::BadHeader);
            return true;
        }
        let value = value.trim_lws();
        self.headers.push((name, value));
        match known(name) {
            Known::Via => self.via_values(value),
            single @ (Known::From | Known::To | Known::CallId | Known::CSeq) => {
                self.single(single, value)
            }
            Known::ContentLength => self.content_length(value),
            Known::Other => {}
        }
        true
    }

    /// Every value of one Via header (comma-separated), bounded by [`MAX_VIAS`].
    fn via_values(&mut self, value: &'a str) {
        for element in split_unquoted(value, b',') {
            let element = element.trim_lws();
            if element.is_empty() {
                self.note(SipErrorKind::BadVia);
            } else if self.vias.len() == MAX_VIAS {
                self.note(SipErrorKind::TooManyVias);
                break;
            } else {
                self.vias.push(element);
            }
        }
    }

    /// A header that may appear once (From, To, Call-ID, CSeq).
    fn single(&mut self, which: Known, value: &'a str) {
        let (slot, label) = match which {
            Known::From => (&mut self.from, "From"),
            Known::To => (&mut self.to, "To"),
            Known::CallId => (&mut self.call_id, "Call-ID"),
            _ => (&mut self.cseq, "CSeq"),
        };
        if slot.is_some() {
            self.note(SipErrorKind::DuplicateHeader(label));
        } else if value.is_empty() {
            self.note(SipErrorKind::MissingHeader(label));
        } else {
            *slot = Some(value);
        }
    }

    /// Content-Length: digits; repeated only with the same value.
    fn content_length(&mut self, value: &str) {
        match (parse_length(value), self.content_length) {
            (None, _) => self.note(SipErrorKind::BadContentLength),
            (Some(new), Some(old)) if new != old => {
                self.note(SipErrorKind::DuplicateHeader("Content-Length"))
            }
            (Some(new), _) => self.content_length = Some(new),
        }
    }

    /// Step 5: the headers a response echoes, when all are there (what is missing is noted).
    fn echo(&mut self) -> Option<Echo<'a>> {
        let top_via = self.vias.first().and_then(|v| parse_via(v));
        if let (Some(top_via), Some(from), Some(to), Some(call_id), Some(cseq)) =
            (top_via, self.from, self.to, self.call_id, self.cseq)
        {
            return Some(Echo {
                vias: std::mem::take(&mut self.vias),
                top_via,
                from,
                to,
                call_id,
                cseq,
            });
        }
        if self.vias.is_empty() {
            self.note(SipErrorKind::MissingHeader("Via"));
        } else if top_via.is_none() {
            self.note(SipErrorKind::BadVia);
        }
        let singles = [self.from, self.to, self.call_id, self.cseq];
        for (slot, label) in singles.into_iter().zip(["From", "To", "Call-ID", "CSeq"]) {
            if slot.is_none() {
                self.note(SipErrorKind::MissingHeader(label));
            }
        }
        None
    }

    /// Step 6: what only the whole message tells: CSeq against the method, the blank line,
    /// and the body against Content-Length (bytes beyond it are ignored).
    fn finish_checks(&mut self, body: &'a [u8], terminated: bool) -> &'a [u8] {
        if let Some(cseq) = self.cseq
            && let Err(kind) = check_cseq(cseq, self.method_text)
        {
            self.note(kind);
        }
        if !terminated {
            self.note(SipErrorKind::NoBlankLine);
        }
        match self.content_length {
            Some(length) if length > body.len() => {
                self.note(SipErrorKind::BodyTooShort);
                body
            }
            Some(length) => &body[..length],
            None => body,
        }
    }
}

/// A Content-Length value: 1 to 9 digits.
fn parse_length(value: &str) -> Option<usize> {
    (!value.is_empty() && value.len() <= 9 && value.bytes().all(|b| b.is_ascii_digit()))
        .then(|| value.parse::<usize>().ok())
        .flatten()
}

/// Parses one SIP request (a UDP datagram or one TCP frame). Never panics.
///
/// Strict: CRLF line ends, no folding, bounded sizes. A message with a body shorter than its
/// Content-Length is refused; bytes beyond it are ignored (RFC 3261 §18.3). Without
/// Content-Length the body is the rest of the datagram.
pub fn parse_request(bytes: &[u8]) -> Result<SipRequest<'_>, SipError<'_>> {
    let (head, body, terminated) = split_message(bytes)?;
    let mut scan = Scan {
        headers: Vec::with_capacity(16),
        vias: Vec::with_capacity(4),
        ..Scan::default()
    };
    for (index, (raw, ended)) in lines(head).enumerate() {
        let Some(line) = scan.line_text(raw, ended, index == 0)? else {
            continue;
        };
        if index == 0 {
            scan.request_line(line)?;
        } else if !scan.header_line(line) {
            break;
        }
    }
    let echo = scan.echo();
    let body = scan.finish_checks(body, terminated);
    if let Some(kind) = scan.fault {
        return Err(SipError {
            kind,
            method: scan.method,
            echo: echo.map(Box::new),
        });
    }
    let (Some(method), Some(method_text), Some(echo)) = (scan.method, scan.method_text, echo)
    else {
        // Unreachable: a missing piece noted a fault above. Refuse rather than assume.
        return Err(SipError::fatal(SipErrorKind::BadRequestLine));
    };
    Ok(SipRequest {
        method,
        method_text,
        uri: scan.uri,
        echo,
        headers: scan.headers,
        content_length: scan.content_length,
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
        match (parse_length(value), length) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::sip::answer::{MAX_NUMBER_CHARS, dialled_number};
    use crate::server::sip::tests::{COMPACT_INVITE, KAMAILIO_INVITE, SIPP_INVITE};

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
}
