//! Accept loops and connection limits for every TCP listener but the SIP dip's (which has its
//! own framing, `sip`), and the HTTP/1.1 connection loop.
//!
//! Owns: the per-plane connection cap and per-source cap ([`ConnectionCaps`], taken at accept,
//! released when the connection closes, pending TLS handshakes included); the bound on pending
//! handshakes; the time a connection gets to show it is a client (a TLS handshake, gRPC's first
//! bytes, an HTTP/1.1 request head, which is also the keep-alive idle timeout); and the
//! back-off after accept errors (`limits::AcceptBackoff`), so running out of file descriptors
//! never spins a core. Over a cap, a connection is closed at once and counted, never queued.
//! Never decides anything about requests: that is the services' job.

use crate::metrics::metrics;
use crate::server::limits::AcceptBackoff;
use crate::server::tls::{Tls, TlsConn};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// Handshakes (or first-byte waits) pending at once on one listener, over all sources.
const MAX_PENDING: usize = 512;

/// Connections open on one plane: in all, and per source address.
#[derive(Debug)]
pub struct ConnectionCaps {
    /// Index into `metrics::PLANES`, for the refusal counter.
    plane: usize,
    pub limit: usize,
    pub per_source_limit: usize,
    total: AtomicUsize,
    /// Touched on accept and close only, never per request.
    per_source: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in its plane's caps; dropping it frees the place.
#[derive(Debug)]
pub struct ConnectionPermit {
    caps: Arc<ConnectionCaps>,
    ip: IpAddr,
}

impl ConnectionCaps {
    pub fn new(plane: usize, limit: usize, per_source_limit: usize) -> Arc<ConnectionCaps> {
        Arc::new(ConnectionCaps {
            plane,
            limit,
            // No source may take more than an eighth of a plane, whatever is configured.
            per_source_limit: per_source_limit.min((limit / 8).max(1)),
            total: AtomicUsize::new(0),
            per_source: Mutex::new(HashMap::new()),
        })
    }

    /// A place for a connection from `ip`, or None (counted) when a cap is reached.
    pub fn try_admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionPermit> {
        let ip = ip.to_canonical();
        let mut per_source = self.per_source.lock().unwrap_or_else(|e| e.into_inner());
        let from_source = per_source.entry(ip).or_insert(0);
        if *from_source >= self.per_source_limit || self.total.load(Ordering::Relaxed) >= self.limit
        {
            if *from_source == 0 {
                per_source.remove(&ip);
            }
            metrics().connections_refused[self.plane].increment(1);
            return None;
        }
        *from_source += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Some(ConnectionPermit {
            caps: self.clone(),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut per_source = self
            .caps
            .per_source
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = per_source.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                per_source.remove(&self.ip);
            }
        }
        self.caps.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An admitted connection: the stream and its place in the caps, freed when it is dropped.
pub struct Accepted<IO> {
    pub io: IO,
    pub remote: SocketAddr,
    _permit: ConnectionPermit,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Accepted<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Accepted<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<IO: tonic::transport::server::Connected> tonic::transport::server::Connected for Accepted<IO> {
    type ConnectInfo = IO::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// Admitted connections of one listener, ready for a server.
pub type Incoming<IO> = mpsc::Receiver<std::io::Result<Accepted<IO>>>;

/// Accepts until the receiver is dropped. Each connection is admitted by `caps` (or closed),
/// then prepared in a task of its own by `prepare` (None: closed), so a slow peer never holds
/// up the accept loop.
fn accept_loop<IO, F, Fut>(
    what: &'static str,
    listener: TcpListener,
    caps: Arc<ConnectionCaps>,
    prepare: F,
) -> Incoming<IO>
where
    IO: Send + 'static,
    F: Fn(TcpStream, SocketAddr) -> Fut + Send + 'static,
    Fut: Future<Output = Option<IO>> + Send + 'static,
{
    let (send, receive) = mpsc::channel(256);
    tokio::spawn(async move {
        let pending = Arc::new(AtomicUsize::new(0));
        let mut backoff = AcceptBackoff::new(what);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = send.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(accepted) => {
                    backoff.succeeded();
                    accepted
                }
                Err(error) => {
                    backoff.failed(&error).await;
                    continue;
                }
            };
            let Some(permit) = caps.try_admit(remote.ip()) else {
                tracing::debug!(%remote, listener = what, "connection cap reached; closed");
                continue;
            };
            if pending.fetch_add(1, Ordering::Relaxed) >= MAX_PENDING {
                pending.fetch_sub(1, Ordering::Relaxed);
                metrics().connections_refused[caps.plane].increment(1);
                tracing::debug!(%remote, listener = what, "too many pending handshakes; closed");
                continue;
            }
            let _ = tcp.set_nodelay(true);
            let (send, pending) = (send.clone(), pending.clone());
            let prepared = prepare(tcp, remote);
            tokio::spawn(async move {
                let io = prepared.await;
                pending.fetch_sub(1, Ordering::Relaxed);
                if let Some(io) = io {
                    let _ = send
                        .send(Ok(Accepted {
                            io,
                            remote,
                            _permit: permit,
                        }))
                        .await;
                }
            });
        }
    });
    receive
}

/// Plain-text connections. With `first_bytes`, a connection that sends nothing within that
/// long is closed before any server sees it (gRPC: the HTTP/2 preface comes at once).
pub fn plain(
    what: &'static str,
    listener: TcpListener,
    caps: Arc<ConnectionCaps>,
    first_bytes: Option<Duration>,
) -> Incoming<TcpStream> {
    accept_loop(what, listener, caps, move |tcp, remote| async move {
        let Some(wait) = first_bytes else {
            return Some(tcp);
        };
        // peek, not readable(): readiness may be reported spuriously, bytes may not.
        let mut first = [0u8; 1];
        match tokio::time::timeout(wait, tcp.peek(&mut first)).await {
            Ok(Ok(n)) if n > 0 => Some(tcp),
            _ => {
                tracing::debug!(%remote, listener = what, "nothing sent in time; closed");
                None
            }
        }
    })
}

/// TLS connections: the handshake must finish within `timeout`.
pub fn tls(
    what: &'static str,
    listener: TcpListener,
    caps: Arc<ConnectionCaps>,
    tls: Arc<Tls>,
    timeout: Duration,
) -> Incoming<TlsConn> {
    accept_loop(what, listener, caps, move |tcp, remote| {
        let tls = tls.clone();
        async move { tls.handshake(tcp, remote, timeout).await }
    })
}

/// Serves HTTP/1.1 on admitted connections until `stop` changes. A connection has
/// `header_timeout` to deliver a complete request head, counted from when it starts waiting
/// for one (after accept, and after each response: the keep-alive idle timeout too). The TLS
/// peer, if any, goes into each request's extensions.
pub fn serve_http<IO>(
    what: &'static str,
    app: axum::Router,
    mut connections: Incoming<IO>,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + PeerInfo + 'static,
{
    tokio::spawn(async move {
        loop {
            let connection = tokio::select! {
                connection = connections.recv() => connection,
                _ = stop.changed() => return,
            };
            let Some(Ok(connection)) = connection else {
                if connection.is_none() {
                    tracing::error!("{what}: accept loop ended");
                    return;
                }
                continue;
            };
            let app = app.clone();
            let mut stop = stop.clone();
            tokio::spawn(async move {
                let peer = connection.io.peer_info();
                let service = hyper::service::service_fn(
                    move |mut request: axum::http::Request<hyper::body::Incoming>| {
                        if let Some(peer) = &peer {
                            request.extensions_mut().insert(peer.clone());
                        }
                        // A Router is always ready: no poll_ready needed (axum's own serve does this).
                        let mut app = app.clone();
                        async move {
                            tonic::codegen::Service::<
                            axum::http::Request<hyper::body::Incoming>,
                        >::call(&mut app, request)
                        .await
                        }
                    },
                );
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .keep_alive(true);
                let serving =
                    builder.serve_connection(hyper_util::rt::TokioIo::new(connection), service);
                let mut serving = std::pin::pin!(serving);
                tokio::select! {
                    _ = serving.as_mut() => {}
                    _ = stop.changed() => {
                        serving.as_mut().graceful_shutdown();
                        let _ = serving.await;
                    }
                }
            });
        }
    });
}

/// What the HTTP plane learns of a connection beyond its bytes: the TLS peer, if any.
pub trait PeerInfo {
    fn peer_info(&self) -> Option<crate::server::tls::TlsInfo>;
}

impl PeerInfo for TcpStream {
    fn peer_info(&self) -> Option<crate::server::tls::TlsInfo> {
        None
    }
}

impl PeerInfo for TlsConn {
    fn peer_info(&self) -> Option<crate::server::tls::TlsInfo> {
        Some(self.info.clone())
    }
}

impl<IO: PeerInfo> PeerInfo for Accepted<IO> {
    fn peer_info(&self) -> Option<crate::server::tls::TlsInfo> {
        self.io.peer_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_per_source_and_in_all_and_free_on_drop() {
        let caps = ConnectionCaps::new(1, 16, 100);
        // No source may take more than an eighth of the plane: 2 of 16.
        assert_eq!(caps.per_source_limit, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let first = caps.try_admit(a).unwrap();
        let _second = caps
            .try_admit(mapped)
            .expect("a v4-mapped address is the same source");
        assert!(caps.try_admit(a).is_none(), "third from one source");
        drop(first);
        let _again = caps.try_admit(a).unwrap();
        let others: Vec<_> = (2..16)
            .filter_map(|i| caps.try_admit(format!("10.0.0.{i}").parse().unwrap()))
            .collect();
        assert_eq!(others.len(), 14);
        assert_eq!(caps.open(), 16);
        assert!(
            caps.try_admit("10.0.0.99".parse().unwrap()).is_none(),
            "over the plane"
        );
        drop(others);
        assert_eq!(caps.open(), 2);
        assert_eq!(
            caps.per_source.lock().unwrap().len(),
            1,
            "sources with no connection are forgotten"
        );
    }
}
