//! SIP transports: the UDP socket and TCP listener of the dip, and [`handle`], which takes one
//! message from either through parse, decide and respond.
//!
//! Owns the I/O of the dip: the receive loop and its burst bound, TCP framing per connection,
//! idle timeouts, connection caps, the source list at the door, and the counting of every
//! message read (`suppressd_sip_messages_total{transport,outcome}`, see `metrics.rs`). Binds
//! nothing (the server binds before it starts us); never builds an answer itself.

use super::answer::{Answer, decide, destination, respond_into};
use super::parse::{Frame, Method, SipError, SipErrorKind, frame, parse_request};
use crate::config::{SipConfig, SipSource};
use crate::metrics::{SipOutcome, SipTransport, sip_metrics};
use crate::server::state::State;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;

/// Datagrams handled before the UDP loop yields to other tasks.
const UDP_BURST: usize = 256;

/// Handles one message: appends the response (if any) to `out` and returns where it goes
/// (meaningful for UDP; TCP answers on its connection). Counts what it did, once.
pub fn handle(
    bytes: &[u8],
    source: SocketAddr,
    transport: SipTransport,
    state: &State,
    out: &mut Vec<u8>,
) -> Option<SocketAddr> {
    let config = state.config.sip();
    let rule = match source_rule(state, source) {
        SourceRule::Listed(rule) => Some(rule),
        SourceRule::Anyone => None,
        // The transports drop these before reading them; never answer one that got here.
        SourceRule::Refused => return None,
    };
    let request = match parse_request(bytes) {
        Ok(request) => request,
        Err(error) => return malformed(&error, transport, config, source, out),
    };
    let counter = sip_metrics();
    let Some(answer) = decide(&request, state, rule) else {
        counter.message(transport, SipOutcome::AckAbsorbed);
        return None;
    };
    counter.message(
        transport,
        match &answer {
            Answer::Redirect => SipOutcome::Redirected,
            Answer::Blocked { .. } => SipOutcome::Blocked,
            Answer::Unavailable => SipOutcome::Unavailable,
            Answer::Busy { .. } => SipOutcome::Busy,
            Answer::Refused(_) | Answer::Failed(_) => SipOutcome::Refused,
            Answer::Options => SipOutcome::Options,
            Answer::NotAllowed => SipOutcome::NotAllowed,
            Answer::BadRequest(_) => SipOutcome::MalformedAnswered,
        },
    );
    respond_into(out, &request.echo, &answer, request.uri, config, source);
    Some(destination(&request.echo.top_via, source))
}

/// Answers 400 when the message carries enough to answer, else drops it; counts either.
fn malformed(
    error: &SipError<'_>,
    transport: SipTransport,
    config: &SipConfig,
    source: SocketAddr,
    out: &mut Vec<u8>,
) -> Option<SocketAddr> {
    if error.kind == SipErrorKind::IsResponse {
        sip_metrics().message(transport, SipOutcome::ResponseIgnored);
        return None;
    }
    match &error.echo {
        Some(echo) if error.method != Some(Method::Ack) => {
            sip_metrics().message(transport, SipOutcome::MalformedAnswered);
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
            sip_metrics().message(transport, SipOutcome::MalformedDropped);
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
                sip_metrics().source_refused(SipTransport::Udp);
                tracing::debug!(%source, "SIP datagram from a source not in sip.allowed_sources dropped");
                continue;
            }
            out.clear();
            let handled = handle(
                &buffer[..length],
                source,
                SipTransport::Udp,
                &state,
                &mut out,
            );
            let Some(destination) = handled else {
                continue;
            };
            let sent = match socket.try_send_to(&out, destination) {
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    socket.send_to(&out, destination).await
                }
                other => other,
            };
            if let Err(error) = sent {
                sip_metrics().send_error(SipTransport::Udp);
                tracing::debug!(%error, %destination, "SIP UDP send failed");
            }
        }
        tokio::task::yield_now().await;
    }
}

async fn serve_tcp(listener: TcpListener, state: Arc<State>, mut stop: watch::Receiver<bool>) {
    let config = state.config.sip();
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
            sip_metrics().source_refused(SipTransport::Tcp);
            tracing::debug!(%peer, "SIP TCP connection from a source not in sip.allowed_sources closed");
            drop(stream);
            continue;
        }
        backoff.succeeded();
        // Over a cap: counted by `try_admit` (suppressd_connections_refused_total, plane sip).
        let Some(permit) = caps.try_admit(peer.ip()) else {
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
    let idle = Duration::from_secs(state.config.sip().tcp_idle_seconds);
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
                    let message = &buffer[consumed..consumed + length];
                    handle(message, peer, SipTransport::Tcp, &state, &mut out);
                    consumed += length;
                }
                Frame::Unframeable(length, kind) => {
                    let head = &buffer[consumed..consumed + length];
                    let config = state.config.sip();
                    let error = match parse_request(head) {
                        Ok(request) => SipError {
                            kind,
                            method: Some(request.method),
                            echo: Some(Box::new(request.echo)),
                        },
                        Err(error) => error,
                    };
                    malformed(&error, SipTransport::Tcp, config, peer, &mut out);
                    close = true;
                    break;
                }
                Frame::TooLarge => {
                    sip_metrics().message(SipTransport::Tcp, SipOutcome::MalformedDropped);
                    tracing::debug!(%peer, "SIP TCP message too large; closing");
                    close = true;
                    break;
                }
            }
        }
        buffer.drain(..consumed);
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                sip_metrics().send_error(SipTransport::Tcp);
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
