//! The daemon: [`start`] in named steps, the listeners of every plane, health, reflection,
//! background tasks and graceful shutdown.
//!
//! [`start`] and [`run`] take an already-bound gRPC listener and a shutdown future, so tests
//! start the real server on port 0 and stop it at will. The config has been validated and its
//! secrets loaded ([`Startup::prepare`]) before anything here binds. Owns wiring only:
//! decisions live in `policy`, lookups in `engine`, the process (logging, runtime, signals,
//! exit codes) in `cli::serve`. Never imports `cli`.

pub mod accept;
pub mod admin;
pub mod auth;
pub mod checks;
pub mod codec;
pub mod errors;
pub mod gauges;
pub mod grpc;
pub mod http;
pub mod limits;
pub mod mutations;
pub mod samples;
pub mod secrets;
pub mod sip;
pub mod state;
pub mod tls;

pub use secrets::Secrets;

use crate::config::{Config, ConfigError};
use crate::proto::suppression_server::SuppressionServer;
use grpc::SuppressionService;
use state::State;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{Notify, oneshot, watch};
use tonic::codec::CompressionEncoding;
use tonic::transport::server::{Connected, Router};

/// The fully qualified name health reports use for the data-plane service.
pub const SERVICE_NAME: &str = "suppressd.v1.Suppression";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a run needs that is not configuration: the flags of `suppressd serve`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// `--repair-journal`: truncate a damaged journal at the damage instead of refusing to
    /// start (loses the acknowledged mutations after it).
    pub repair_journal: bool,
}

/// A validated config with the secrets it names loaded: everything checked before binding.
pub struct Startup {
    pub config: Config,
    pub secrets: Secrets,
    pub options: RunOptions,
}

impl Startup {
    /// Loads the certificates, tokens file and audit key the config names. Binds nothing; an
    /// error is a configuration error (the process exits 64).
    pub fn prepare(config: Config, options: RunOptions) -> Result<Startup, ConfigError> {
        let secrets = Secrets::load(&config)?;
        Ok(Startup {
            config,
            secrets,
            options,
        })
    }
}

/// A running daemon's handles, for tests and the admin service.
#[derive(Clone)]
pub struct Handle {
    pub state: Arc<State>,
    /// Wakes the reloader (SIGHUP, admin Reload and file events all end up here).
    pub reload: Arc<Notify>,
    pub mutator: Arc<mutations::Mutator>,
    /// Where the admin plane listens, when configured.
    pub admin_addr: Option<SocketAddr>,
    /// Where the HTTP plane listens, when configured.
    pub http_addr: Option<SocketAddr>,
    /// Where the metrics listener listens, when configured.
    pub metrics_addr: Option<SocketAddr>,
    /// Where the SIP dip listens (UDP, TCP), when configured.
    pub sip_udp_addr: Option<SocketAddr>,
    pub sip_tcp_addr: Option<SocketAddr>,
}

/// Serves until `shutdown` completes, then drains requests in flight for at most the
/// configured grace period.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    let (handle, server) = start(config, listener, shutdown).await?;
    drop(handle);
    server.await
}

/// The future that serves a started daemon to completion.
pub type ServerFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

/// Starts the daemon with default [`RunOptions`], loading the config's secrets first (tests;
/// `serve` loads them before binding its gRPC listener and calls [`start_prepared`]).
pub async fn start(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(Handle, ServerFuture), BoxError> {
    let startup = Startup::prepare(config, RunOptions::default())?;
    start_prepared(startup, listener, shutdown).await
}

/// Starts the daemon and returns its handle and the future that serves it to completion.
pub async fn start_prepared(
    startup: Startup,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(Handle, ServerFuture), BoxError> {
    let Startup {
        config,
        secrets,
        options,
    } = startup;
    let state = Arc::new(State::new(config, secrets));
    let mutator = open_store(&state, &options).await?;
    let fleet = join_fleet(&state, &mutator).await?;
    let listeners = bind_listeners(&state.config).await?;
    let reload = Arc::new(Notify::new());
    let handle = listeners.handle(&state, &reload, &mutator);
    let (health_reporter, health_service) = health().await;
    // First load before serving, so a daemon with valid files answers at once.
    let first = state.clone();
    tokio::task::spawn_blocking(move || first.reload()).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    spawn_background(&state, &reload, &mutator, fleet, health_reporter, &stop_rx);
    let admission = Admission::new(&state, &listeners);
    let Listeners {
        http,
        metrics,
        admin,
        sip_udp,
        sip_tcp,
    } = listeners;
    serve_http_planes(&state, &mutator, &admission, http, metrics, &stop_rx);
    sip::spawn(state.clone(), sip_udp, sip_tcp, stop_rx.clone());
    if let Some(admin) = admin {
        serve_admin(&state, &mutator, &admission, admin, stop_rx.clone());
    }
    let (drain_tx, drain_rx) = oneshot::channel::<()>();
    let drained = async move {
        let _ = drain_rx.await;
    };
    let router = data_plane(&state, &mutator, health_service)?;
    let serving = admission.serve(
        "gRPC data plane",
        listener,
        GRPC_PLANE,
        Some(admission.header_timeout),
        Grpc {
            router,
            shutdown: drained,
        },
    );
    let grace = Duration::from_secs(state.config.server().shutdown_grace_seconds);
    let server = drain_on_shutdown(serving, shutdown, stop_tx, drain_tx, grace, mutator);
    Ok((handle, server))
}

/// Opens the store: empty initial versions, then the journal replayed into the overlays,
/// before serving.
async fn open_store(
    state: &Arc<State>,
    options: &RunOptions,
) -> Result<Arc<mutations::Mutator>, BoxError> {
    let repair = options.repair_journal;
    let opening = state.clone();
    let mutator = tokio::task::spawn_blocking(move || {
        mutations::create_initial_empty(&opening)?;
        mutations::Mutator::open(&opening, repair)
    })
    .await??;
    let mutator = Arc::new(mutator);
    let health: Arc<dyn state::WriteHealth> = mutator.clone();
    let _ = state.mutator.set(Arc::downgrade(&health));
    Ok(mutator)
}

/// Fleet mode: connects to NATS (in the background: a host serves what its journal holds while
/// NATS is away) and makes the mutation path publish to the stream, before serving.
async fn join_fleet(
    state: &Arc<State>,
    mutator: &Arc<mutations::Mutator>,
) -> Result<Option<Arc<crate::fleet::Fleet>>, BoxError> {
    let (Some(settings), Some(secrets)) = (state.config.fleet(), state.secrets.fleet.clone())
    else {
        return Ok(None);
    };
    let applied = mutator.replayed_stream_seq();
    let fleet = crate::fleet::Fleet::connect(
        settings.clone(),
        secrets,
        applied,
        Some(state.config.data_dir.clone()),
    )
    .await?;
    tracing::info!(host = %settings.host_id, stream = %settings.stream, applied, "fleet: following the stream");
    let _ = state.fleet.set(fleet.status.clone());
    mutator.attach_fleet(fleet.clone());
    Ok(Some(fleet))
}

/// The listeners of every plane but the gRPC data plane (bound by the caller).
struct Listeners {
    http: Option<TcpListener>,
    metrics: Option<TcpListener>,
    admin: Option<TcpListener>,
    sip_udp: Option<UdpSocket>,
    sip_tcp: Option<TcpListener>,
}

/// Binds every configured listener; the first failure names its address.
async fn bind_listeners(config: &Config) -> Result<Listeners, BoxError> {
    async fn tcp(address: Option<SocketAddr>, what: &str) -> Result<Option<TcpListener>, String> {
        let Some(address) = address else {
            return Ok(None);
        };
        TcpListener::bind(address)
            .await
            .map(Some)
            .map_err(|e| format!("cannot listen on {what}{address}: {e}"))
    }
    let http = tcp(config.http_listen, "").await?;
    let metrics = tcp(config.metrics_listen, "").await?;
    let admin = tcp(config.admin_listen, "").await?;
    let sip_udp = match config.sip_udp_listen {
        Some(address) => Some(
            UdpSocket::bind(address)
                .await
                .map_err(|e| format!("cannot listen on udp {address}: {e}"))?,
        ),
        None => None,
    };
    let sip_tcp = tcp(config.sip_tcp_listen, "tcp ").await?;
    Ok(Listeners {
        http,
        metrics,
        admin,
        sip_udp,
        sip_tcp,
    })
}

impl Listeners {
    fn handle(
        &self,
        state: &Arc<State>,
        reload: &Arc<Notify>,
        mutator: &Arc<mutations::Mutator>,
    ) -> Handle {
        fn address(listener: &Option<TcpListener>) -> Option<SocketAddr> {
            listener.as_ref().and_then(|l| l.local_addr().ok())
        }
        Handle {
            state: state.clone(),
            reload: reload.clone(),
            mutator: mutator.clone(),
            admin_addr: address(&self.admin),
            http_addr: address(&self.http),
            metrics_addr: address(&self.metrics),
            sip_udp_addr: self.sip_udp.as_ref().and_then(|s| s.local_addr().ok()),
            sip_tcp_addr: address(&self.sip_tcp),
        }
    }
}

/// Standard gRPC health, NOT_SERVING until the reloader reports every needed set loaded.
async fn health() -> (
    tonic_health::server::HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_not_serving::<SuppressionServer<SuppressionService>>()
        .await;
    reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    (reporter, service)
}

/// The reloader, the compactor and the gauges, each until `stop` changes.
fn spawn_background(
    state: &Arc<State>,
    reload: &Arc<Notify>,
    mutator: &Arc<mutations::Mutator>,
    fleet: Option<Arc<crate::fleet::Fleet>>,
    health: tonic_health::server::HealthReporter,
    stop: &watch::Receiver<bool>,
) {
    if let Some(fleet) = fleet {
        let sink = Arc::new(mutations::FleetSink::new(mutator.clone(), state.clone()));
        tokio::spawn(crate::fleet::follow::run(fleet.clone(), sink, stop.clone()));
        let snapshots = Arc::new(mutations::FleetSnapshots {
            mutator: mutator.clone(),
            state: state.clone(),
        });
        tokio::spawn(crate::fleet::snapshots::follow_heads(
            fleet,
            snapshots,
            stop.clone(),
        ));
        tokio::spawn(fleet_health(state.clone(), health.clone(), stop.clone()));
    }
    tokio::spawn(reloader(
        state.clone(),
        reload.clone(),
        health,
        stop.clone(),
    ));
    tokio::spawn(compactor(state.clone(), mutator.clone(), stop.clone()));
    tokio::spawn(gauges(state.clone(), mutator.clone(), stop.clone()));
}

/// The planes' indexes into `metrics::PLANES`, where refused connections are counted (the
/// metrics listener counts as HTTP; the SIP dip's TCP listener caps itself, `sip`).
const GRPC_PLANE: usize = 0;
const HTTP_PLANE: usize = 1;
const ADMIN_PLANE: usize = 2;

/// How every TCP plane admits connections: TLS or plain text, caps and timeouts.
struct Admission {
    tls: Option<Arc<tls::Tls>>,
    per_plane: usize,
    per_source: usize,
    header_timeout: Duration,
    handshake_timeout: Duration,
}

impl Admission {
    /// Connection caps per TCP plane, from the file limit (raised at start by `cli::serve`).
    fn new(state: &State, listeners: &Listeners) -> Admission {
        let server = state.config.server();
        let planes = 1
            + usize::from(listeners.http.is_some())
            + usize::from(listeners.admin.is_some())
            + usize::from(listeners.metrics.is_some())
            + usize::from(listeners.sip_tcp.is_some());
        let per_plane = limits::connections_per_plane(server, limits::file_limit(), planes);
        tracing::info!(
            connections_per_plane = per_plane,
            per_source = server.max_connections_per_source.min(per_plane),
            "connection caps"
        );
        Admission {
            tls: state.secrets.tls.clone(),
            per_plane,
            per_source: server.max_connections_per_source,
            header_timeout: Duration::from_millis(server.header_timeout_ms),
            handshake_timeout: Duration::from_millis(server.tls_handshake_timeout_ms),
        }
    }

    /// Admits `listener`'s connections (TLS when configured; plain ones closed unless they
    /// send within `first_bytes`, if given) and hands them to `server`. The one place that
    /// chooses between TLS and plain text.
    fn serve<S: PlaneServer>(
        &self,
        what: &'static str,
        listener: TcpListener,
        plane: usize,
        first_bytes: Option<Duration>,
        server: S,
    ) -> S::Output {
        let caps = accept::ConnectionCaps::new(plane, self.per_plane, self.per_source);
        match &self.tls {
            Some(tls) => server.serve(accept::tls(
                what,
                listener,
                caps,
                tls.clone(),
                self.handshake_timeout,
            )),
            None => server.serve(accept::plain(what, listener, caps, first_bytes)),
        }
    }
}

/// An admitted connection, plain or TLS, as every server of ours takes it.
trait Connection:
    AsyncRead + AsyncWrite + Connected + accept::PeerInfo + Unpin + Send + 'static
{
}

impl<T> Connection for T where
    T: AsyncRead + AsyncWrite + Connected + accept::PeerInfo + Unpin + Send + 'static
{
}

/// A server of one plane's admitted connections, whichever stream type they are.
trait PlaneServer {
    type Output;
    fn serve<IO: Connection>(self, connections: accept::Incoming<IO>) -> Self::Output;
}

/// A tonic router serving until `shutdown` completes.
struct Grpc<F> {
    router: Router,
    shutdown: F,
}

type Serving = Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;

impl<F: Future<Output = ()> + Send + 'static> PlaneServer for Grpc<F> {
    type Output = Serving;
    fn serve<IO: Connection>(self, connections: accept::Incoming<IO>) -> Serving {
        let connections = tokio_stream::wrappers::ReceiverStream::new(connections);
        Box::pin(
            self.router
                .serve_with_incoming_shutdown(connections, self.shutdown),
        )
    }
}

/// An axum app served over HTTP/1.1 until `stop` changes.
struct Http {
    what: &'static str,
    app: axum::Router,
    header_timeout: Duration,
    stop: watch::Receiver<bool>,
}

impl PlaneServer for Http {
    type Output = ();
    fn serve<IO: Connection>(self, connections: accept::Incoming<IO>) {
        accept::serve_http(
            self.what,
            self.app,
            connections,
            self.header_timeout,
            self.stop,
        );
    }
}

/// The HTTP plane (`/v1/check`, health, metrics) and the metrics listener, when configured.
/// hyper's header-read timeout bounds silent connections, so no first-bytes wait here.
fn serve_http_planes(
    state: &Arc<State>,
    mutator: &Arc<mutations::Mutator>,
    admission: &Admission,
    http: Option<TcpListener>,
    metrics: Option<TcpListener>,
    stop: &watch::Receiver<bool>,
) {
    let planes = [
        ("HTTP plane", http, true),
        ("metrics listener", metrics, false),
    ];
    for (what, listener, checks) in planes {
        let Some(listener) = listener else { continue };
        let app = if checks {
            http::router(state.clone(), mutator.clone())
        } else {
            let loopback = listener
                .local_addr()
                .is_ok_and(|address| address.ip().is_loopback());
            http::metrics_router(state.clone(), loopback)
        };
        let server = Http {
            what,
            app,
            header_timeout: admission.header_timeout,
            stop: stop.clone(),
        };
        admission.serve(what, listener, HTTP_PLANE, None, server);
    }
}

/// The admin plane: mutations, receipts, reload and compaction, behind its own in-flight limit.
fn serve_admin(
    state: &Arc<State>,
    mutator: &Arc<mutations::Mutator>,
    admission: &Admission,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    let server = state.config.server();
    let admin = crate::proto::admin::admin_server::AdminServer::new(admin::AdminService::new(
        state.clone(),
        mutator.clone(),
    ))
    .max_decoding_message_size(server.max_message_bytes)
    .max_encoding_message_size(server.max_message_bytes);
    let admin = tonic::service::interceptor::InterceptedService::new(
        admin,
        grpc::authenticate(state.secrets.authenticator.clone()),
    );
    // Outermost: over admin_max_in_flight requests, refused before anything else.
    let admin = grpc::ShedOverload::every(
        admin,
        Arc::new(limits::InFlight::new(server.admin_max_in_flight)),
        "server.admin_max_in_flight",
    );
    let router = tonic::transport::Server::builder()
        .timeout(Duration::from_millis(server.admin_request_timeout_ms))
        .add_service(admin);
    let stopped = async move {
        let _ = stop.changed().await;
    };
    let serving = admission.serve(
        "admin plane",
        listener,
        ADMIN_PLANE,
        Some(admission.header_timeout),
        Grpc {
            router,
            shutdown: stopped,
        },
    );
    tokio::spawn(async move {
        if let Err(error) = serving.await {
            tracing::error!(%error, "admin plane stopped");
        }
    });
}

/// The gRPC data plane's router: health, reflection (v1 and v1alpha: Python's grpcio client
/// speaks only v1alpha) and the check service behind authentication and the overload gate.
fn data_plane(
    state: &Arc<State>,
    mutator: &Arc<mutations::Mutator>,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
) -> Result<Router, BoxError> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // The admin service shares the descriptor set but not this port: list only what
            // is here.
            .with_service_name(SERVICE_NAME)
            .with_service_name("grpc.health.v1.Health")
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let server = state.config.server();
    // Limits and compression go on the generated service itself: once it is wrapped in an
    // interceptor, these setters are out of reach.
    // Decoding is bounded by what max_batch numbers can take, not only by max_message_bytes:
    // a batch over the limit is refused from its length (and its count, `codec`) before it is
    // allocated.
    codec::register_max_batch(server.max_batch);
    let checks = SuppressionServer::new(SuppressionService::new(state.clone(), mutator.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limits::grpc_decode_limit(server))
        .max_encoding_message_size(server.max_message_bytes);
    let checks = tonic::service::interceptor::InterceptedService::new(
        checks,
        grpc::authenticate(state.secrets.authenticator.clone()),
    );
    // Outermost: overload is refused before authentication, decoding or any lookup.
    let checks = grpc::ShedOverload::checks(checks, state.clone());
    Ok(tonic::transport::Server::builder()
        .timeout(Duration::from_millis(server.request_timeout_ms))
        .concurrency_limit_per_connection(server.concurrency_per_connection as usize)
        .http2_keepalive_interval(Some(Duration::from_secs(
            server.http2_keepalive_interval_seconds,
        )))
        .http2_keepalive_timeout(Some(Duration::from_secs(
            server.http2_keepalive_timeout_seconds,
        )))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(checks))
}

/// Serves until `shutdown`, then stops the other planes and background tasks, drains the data
/// plane for at most `grace`, and flushes the mutation path.
fn drain_on_shutdown(
    serving: Serving,
    shutdown: impl Future<Output = ()> + Send + 'static,
    stop: watch::Sender<bool>,
    drain: oneshot::Sender<()>,
    grace: Duration,
    mutator: Arc<mutations::Mutator>,
) -> ServerFuture {
    Box::pin(async move {
        let mut serving = std::pin::pin!(serving);
        tokio::select! {
            result = &mut serving => return result.map_err(Into::into),
            () = shutdown => {}
        }
        tracing::info!(
            grace_seconds = grace.as_secs(),
            "shutting down: draining requests in flight"
        );
        let _ = stop.send(true);
        let _ = drain.send(());
        let result = match tokio::time::timeout(grace, serving).await {
            Ok(result) => result.map_err(Into::into),
            Err(_) => {
                tracing::warn!("grace period over: closing remaining connections");
                Ok(())
            }
        };
        // Audit entries and request ids are copied out of the journal in the background:
        // finish before saying we stopped, so a successor never races this process's writes.
        let _ = tokio::task::spawn_blocking(move || mutator.flush()).await;
        result
    })
}

/// Reload triggers: explicit wake-ups (SIGHUP, admin calls, file events) and a periodic scan.
async fn reloader(
    state: Arc<State>,
    wake: Arc<Notify>,
    health: tonic_health::server::HealthReporter,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let poll = Duration::from_secs(state.config.server().reload_poll_seconds);
    let _watcher = watch_directory(&state.config.data_dir, wake.clone());
    // In fleet mode health also follows the lag (`fleet_health`).
    let mut reported_ready = state.config.fleet().is_some();
    loop {
        if state.is_ready() && !reported_ready {
            health
                .set_serving::<SuppressionServer<SuppressionService>>()
                .await;
            health
                .set_service_status("", tonic_health::ServingStatus::Serving)
                .await;
            reported_ready = true;
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(poll) => {}
            _ = stop.changed() => return,
        }
        let pass = state.clone();
        if let Err(error) = tokio::task::spawn_blocking(move || pass.reload()).await {
            tracing::error!(%error, "reload task failed");
        }
    }
}

/// Fleet mode: recomputes the lag a few times a second; health is SERVING only while every
/// needed set is loaded and this host is caught up with the stream (within `max_lag`).
async fn fleet_health(
    state: Arc<State>,
    health: tonic_health::server::HealthReporter,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Some(status) = state.fleet.get().cloned() else {
        return;
    };
    let mut reported = None;
    loop {
        let serving = !status.refresh() && state.is_ready();
        if reported != Some(serving) {
            let (code, status_name) = if serving {
                (tonic_health::ServingStatus::Serving, "SERVING")
            } else {
                (tonic_health::ServingStatus::NotServing, "NOT_SERVING")
            };
            health
                .set_service_status(
                    <SuppressionServer<SuppressionService> as tonic::server::NamedService>::NAME,
                    code,
                )
                .await;
            health.set_service_status("", code).await;
            tracing::debug!(health = status_name, "fleet: health");
            reported = Some(serving);
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Refreshes per-set gauges (ages grow with time) and runs the exporter's upkeep.
async fn gauges(
    state: Arc<State>,
    mutator: Arc<mutations::Mutator>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        gauges::refresh(&state, Some(&mutator));
        crate::metrics::metrics().upkeep();
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Compacts in the background when the overlays pass the configured size or age.
async fn compactor(
    state: Arc<State>,
    mutator: Arc<mutations::Mutator>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    // Fleet mode: the erasure round (fold, and the lease holder's purge) runs every
    // FLEET_BUSY while erasures are pending fleet-wide, else every FLEET_IDLE.
    const FLEET_BUSY: Duration = Duration::from_secs(2);
    const FLEET_IDLE: Duration = Duration::from_secs(10);
    let mut next_round = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
        if mutator.fleet().is_some() && tokio::time::Instant::now() >= next_round {
            let (state, mutator) = (state.clone(), mutator.clone());
            let busy = mutator.pending_erasures() > 0;
            let round =
                tokio::task::spawn_blocking(move || mutator.fleet_erasure_round(&state)).await;
            let pending = match round {
                Ok(Ok(round)) => round.pending > 0,
                Ok(Err(error)) => {
                    tracing::warn!(%error, "fleet: erasure round failed; trying again");
                    true
                }
                Err(error) => {
                    tracing::error!(%error, "fleet: erasure round task failed");
                    true
                }
            };
            next_round = tokio::time::Instant::now()
                + if pending || busy {
                    FLEET_BUSY
                } else {
                    FLEET_IDLE
                };
        }
        if !mutator.should_compact(&state) {
            continue;
        }
        let (state, mutator) = (state.clone(), mutator.clone());
        match tokio::task::spawn_blocking(move || mutator.compact(&state)).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) if mutations::quiet_compaction_error(&error) => {
                tracing::debug!(%error, "fleet: not compacting now");
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "compaction failed; the overlay keeps the mutations in force")
            }
            Err(error) => tracing::error!(%error, "compaction task failed"),
        }
    }
}

/// Watches the data directory (not single files: ConfigMap-style symlink swaps replace them).
/// Failure to watch is logged; the periodic scan still finds new files.
fn watch_directory(dir: &std::path::Path, wake: Arc<Notify>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && (event.kind.is_create() || event.kind.is_modify())
        {
            wake.notify_one();
        }
    })
    .map_err(|error| tracing::warn!(%error, "cannot watch the data directory; polling only"))
    .ok()?;
    watcher
        .watch(dir, notify::RecursiveMode::NonRecursive)
        .map_err(|error| tracing::warn!(%error, dir = %dir.display(), "cannot watch the data directory; polling only"))
        .ok()?;
    Some(watcher)
}
