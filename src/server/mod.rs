//! The daemon: listeners, reload triggers, health, reflection and graceful shutdown.
//!
//! [`run`] takes an already-bound listener and a shutdown future, so tests start the real
//! server on port 0 and stop it at will. The config has been validated before anything here
//! runs. Owns wiring only: decisions live in `policy`, lookups in `engine`.

pub mod accept;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod checks;
pub mod codec;
pub mod errors;
pub mod grpc;
pub mod http;
pub mod limits;
pub mod mutations;
pub mod samples;
pub mod sip;
pub mod state;
pub mod tls;

use crate::config::Config;
use crate::proto::suppression_server::SuppressionServer;
use grpc::SuppressionService;
use state::State;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tonic::codec::CompressionEncoding;

/// The fully qualified name health reports use for the data-plane service.
pub const SERVICE_NAME: &str = "suppressd.v1.Suppression";

/// A running daemon's handles, for tests and the admin service.
#[derive(Clone)]
pub struct Handle {
    pub state: Arc<State>,
    /// Wakes the reloader (SIGHUP, admin Reload and file events all end up here).
    pub reload: Arc<Notify>,
    pub mutator: Arc<mutations::Mutator>,
    /// Where the admin plane listens, when configured.
    pub admin_addr: Option<std::net::SocketAddr>,
    /// Where the HTTP plane listens, when configured.
    pub http_addr: Option<std::net::SocketAddr>,
    /// Where the metrics listener listens, when configured.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Where the SIP dip listens (UDP, TCP), when configured.
    pub sip_udp_addr: Option<std::net::SocketAddr>,
    pub sip_tcp_addr: Option<std::net::SocketAddr>,
}

/// Serves until `shutdown` completes, then drains requests in flight for at most the
/// configured grace period.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (handle, server) = start(config, listener, shutdown).await?;
    drop(handle);
    server.await
}

type ServerFuture = std::pin::Pin<
    Box<dyn Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + Send>,
>;

/// Starts the daemon and returns its handle and the future that serves it to completion.
pub async fn start(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(Handle, ServerFuture), Box<dyn std::error::Error + Send + Sync>> {
    let server_config = config.raw.server.clone();
    let admin_listen = config.admin_listen;
    let http_listen = config.http_listen;
    let metrics_listen = config.metrics_listen;
    let (sip_udp_listen, sip_tcp_listen) = (config.sip_udp_listen, config.sip_tcp_listen);
    let repair = config.repair_journal;
    let state = Arc::new(State::new(config));
    let reload = Arc::new(Notify::new());
    // Empty initial versions, then the journal replayed into the overlays, before serving.
    let opening = state.clone();
    let mutator = tokio::task::spawn_blocking(move || {
        mutations::create_initial_empty(&opening)?;
        mutations::Mutator::open(&opening, repair)
    })
    .await??;
    let mutator = Arc::new(mutator);
    let _ = state.mutator.set(Arc::downgrade(&mutator));
    let http_listener = match http_listen {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .map_err(|e| format!("cannot listen on {address}: {e}"))?,
        ),
        None => None,
    };
    let metrics_listener = match metrics_listen {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .map_err(|e| format!("cannot listen on {address}: {e}"))?,
        ),
        None => None,
    };
    let admin_listener = match admin_listen {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .map_err(|e| format!("cannot listen on {address}: {e}"))?,
        ),
        None => None,
    };
    let sip_udp = match sip_udp_listen {
        Some(address) => Some(
            tokio::net::UdpSocket::bind(address)
                .await
                .map_err(|e| format!("cannot listen on udp {address}: {e}"))?,
        ),
        None => None,
    };
    let sip_tcp = match sip_tcp_listen {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .map_err(|e| format!("cannot listen on tcp {address}: {e}"))?,
        ),
        None => None,
    };
    let handle = Handle {
        state: state.clone(),
        reload: reload.clone(),
        mutator: mutator.clone(),
        admin_addr: admin_listener.as_ref().and_then(|l| l.local_addr().ok()),
        http_addr: http_listener.as_ref().and_then(|l| l.local_addr().ok()),
        metrics_addr: metrics_listener.as_ref().and_then(|l| l.local_addr().ok()),
        sip_udp_addr: sip_udp.as_ref().and_then(|s| s.local_addr().ok()),
        sip_tcp_addr: sip_tcp.as_ref().and_then(|l| l.local_addr().ok()),
    };

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_not_serving::<SuppressionServer<SuppressionService>>()
        .await;
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;

    // First load before serving, so a daemon with valid files answers at once.
    let first = state.clone();
    tokio::task::spawn_blocking(move || first.reload()).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(reloader(
        state.clone(),
        reload.clone(),
        health_reporter,
        stop_rx.clone(),
    ));
    tokio::spawn(compactor(state.clone(), mutator.clone(), stop_rx.clone()));
    tokio::spawn(gauges(state.clone(), mutator.clone(), stop_rx.clone()));
    // Connection caps per TCP plane, from the file limit (raised at start by `serve_main`).
    let planes = 1
        + usize::from(http_listener.is_some())
        + usize::from(admin_listener.is_some())
        + usize::from(metrics_listener.is_some())
        + usize::from(handle.sip_tcp_addr.is_some());
    let per_plane = limits::connections_per_plane(&server_config, limits::file_limit(), planes);
    let caps = |plane: usize| {
        accept::ConnectionCaps::new(plane, per_plane, server_config.max_connections_per_source)
    };
    let header_timeout = Duration::from_millis(server_config.header_timeout_ms);
    let handshake_timeout = Duration::from_millis(server_config.tls_handshake_timeout_ms);
    tracing::info!(
        connections_per_plane = per_plane,
        per_source = server_config.max_connections_per_source.min(per_plane),
        "connection caps"
    );
    for (what, listener, app, plane) in [
        (
            "HTTP plane",
            http_listener,
            Some(http::router(state.clone())),
            1,
        ),
        ("metrics listener", metrics_listener, None, 1),
    ] {
        let Some(listener) = listener else { continue };
        let app = app.unwrap_or_else(|| {
            let loopback = listener
                .local_addr()
                .is_ok_and(|address| address.ip().is_loopback());
            http::metrics_router(state.clone(), loopback)
        });
        match state.config.tls.clone() {
            Some(tls) => accept::serve_http(
                what,
                app,
                accept::tls(what, listener, caps(plane), tls, handshake_timeout),
                header_timeout,
                stop_rx.clone(),
            ),
            None => accept::serve_http(
                what,
                app,
                accept::plain(what, listener, caps(plane), None),
                header_timeout,
                stop_rx.clone(),
            ),
        }
    }
    sip::spawn(state.clone(), sip_udp, sip_tcp, stop_rx.clone());
    if let Some(listener) = admin_listener {
        let admin = crate::proto::admin::admin_server::AdminServer::new(admin::AdminService::new(
            state.clone(),
            mutator.clone(),
        ))
        .max_decoding_message_size(server_config.max_message_bytes)
        .max_encoding_message_size(server_config.max_message_bytes);
        let admin = tonic::service::interceptor::InterceptedService::new(
            admin,
            grpc::authenticate(state.config.authenticator.clone()),
        );
        // Outermost: over admin_max_in_flight requests, refused before anything else.
        let admin = grpc::ShedOverload::every(
            admin,
            Arc::new(limits::InFlight::new(server_config.admin_max_in_flight)),
            "server.admin_max_in_flight",
        );
        let mut stop = stop_rx.clone();
        let admin_tls = state.config.tls.clone();
        let admin_caps = caps(2);
        let admin_timeout = Duration::from_millis(server_config.admin_request_timeout_ms);
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.changed().await;
            };
            let router = tonic::transport::Server::builder()
                .timeout(admin_timeout)
                .add_service(admin);
            let result = match admin_tls {
                Some(tls) => {
                    let connections = tokio_stream::wrappers::ReceiverStream::new(accept::tls(
                        "admin plane",
                        listener,
                        admin_caps,
                        tls,
                        handshake_timeout,
                    ));
                    router
                        .serve_with_incoming_shutdown(connections, stopped)
                        .await
                }
                None => {
                    let incoming = tokio_stream::wrappers::ReceiverStream::new(accept::plain(
                        "admin plane",
                        listener,
                        admin_caps,
                        Some(header_timeout),
                    ));
                    router.serve_with_incoming_shutdown(incoming, stopped).await
                }
            };
            if let Err(error) = result {
                tracing::error!(%error, "admin plane stopped");
            }
        });
    }

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // The admin service shares the descriptor set but not this port: list only what is here.
        .with_service_name(SERVICE_NAME)
        .with_service_name("grpc.health.v1.Health")
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // The admin service shares the descriptor set but not this port: list only what is here.
        .with_service_name(SERVICE_NAME)
        .with_service_name("grpc.health.v1.Health")
        .build_v1alpha()?;

    // Limits and compression go on the generated service itself (see NOTES: wrapping first
    // hides these setters).
    // Decoding is bounded by what max_batch numbers can take, not only by max_message_bytes:
    // a batch over the limit is refused from its length (and its count, `codec`) before it is
    // allocated.
    codec::register_max_batch(server_config.max_batch);
    let data_plane = SuppressionServer::new(SuppressionService::new(state.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limits::grpc_decode_limit(&server_config))
        .max_encoding_message_size(server_config.max_message_bytes);

    let data_plane = tonic::service::interceptor::InterceptedService::new(
        data_plane,
        grpc::authenticate(state.config.authenticator.clone()),
    );
    // Outermost: overload is refused before authentication, decoding or any lookup.
    let data_plane = grpc::ShedOverload::checks(data_plane, state.clone());
    let tls = state.config.tls.clone();
    let grace = Duration::from_secs(server_config.shutdown_grace_seconds);
    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let router = tonic::transport::Server::builder()
        .timeout(Duration::from_millis(server_config.request_timeout_ms))
        .concurrency_limit_per_connection(server_config.concurrency_per_connection as usize)
        .http2_keepalive_interval(Some(Duration::from_secs(
            server_config.http2_keepalive_interval_seconds,
        )))
        .http2_keepalive_timeout(Some(Duration::from_secs(
            server_config.http2_keepalive_timeout_seconds,
        )))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(data_plane);
    let drained = async move {
        let _ = drain_rx.await;
    };
    let serving: std::pin::Pin<
        Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>,
    > = match &tls {
        Some(tls) => {
            let connections = tokio_stream::wrappers::ReceiverStream::new(accept::tls(
                "gRPC data plane",
                listener,
                caps(0),
                tls.clone(),
                handshake_timeout,
            ));
            Box::pin(router.serve_with_incoming_shutdown(connections, drained))
        }
        None => {
            let incoming = tokio_stream::wrappers::ReceiverStream::new(accept::plain(
                "gRPC data plane",
                listener,
                caps(0),
                Some(header_timeout),
            ));
            Box::pin(router.serve_with_incoming_shutdown(incoming, drained))
        }
    };
    let server: ServerFuture = Box::pin(async move {
        let mut serving = std::pin::pin!(serving);
        tokio::select! {
            result = &mut serving => return result.map_err(Into::into),
            () = shutdown => {}
        }
        tracing::info!(
            grace_seconds = grace.as_secs(),
            "shutting down: draining requests in flight"
        );
        let _ = stop_tx.send(true);
        let _ = drain_tx.send(());
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
    });
    Ok((handle, server))
}

/// Reload triggers: explicit wake-ups (SIGHUP, admin calls, file events) and a periodic scan.
async fn reloader(
    state: Arc<State>,
    wake: Arc<Notify>,
    health: tonic_health::server::HealthReporter,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let poll = Duration::from_secs(state.config.raw.server.reload_poll_seconds);
    let _watcher = watch_directory(&state.config.data_dir, wake.clone());
    let mut reported_ready = false;
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

/// Refreshes per-set gauges (ages grow with time) and runs the exporter's upkeep.
async fn gauges(
    state: Arc<State>,
    mutator: Arc<mutations::Mutator>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        crate::metrics::refresh_gauges(&state, Some(&mutator));
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
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
        if !mutator.should_compact(&state) {
            continue;
        }
        let (state, mutator) = (state.clone(), mutator.clone());
        match tokio::task::spawn_blocking(move || mutator.compact(&state)).await {
            Ok(Ok(_)) => {}
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

/// Exit code for configuration errors (EX_CONFIG-style usage error, as sysexits' EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;

/// `suppressd serve`: validate the config before binding anything, then serve until SIGTERM or
/// SIGINT; SIGHUP reloads the data directory.
pub fn serve_main(
    config_path: Option<&std::path::Path>,
    repair_journal: bool,
) -> std::process::ExitCode {
    use std::process::ExitCode;
    let config = match config_path {
        Some(path) => Config::load(path),
        None => match samples::ensure_demo_key(std::path::Path::new(".")) {
            Ok(()) => Config::example(std::path::Path::new(".")),
            Err(error) => {
                eprintln!("suppressd: {error}");
                return ExitCode::from(1);
            }
        },
    };
    let config = match config {
        Ok(mut config) => {
            config.repair_journal = repair_journal;
            config
        }
        Err(error) => {
            eprintln!("suppressd: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging(&config.raw.log);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        git_sha = env!("SUPPRESSD_GIT_SHA"),
        config = %config.path,
        data_dir = %config.data_dir.display(),
        sets = config.sets.len(),
        tenants = config.raw.tenants.len(),
        "starting"
    );
    if config.raw.server.generate_samples
        && let Err(error) = samples::generate_missing(&config)
    {
        eprintln!("suppressd: {error}");
        return ExitCode::from(1);
    }
    // Before any socket exists: the connection caps are sized from this limit.
    let files = limits::raise_file_limit();
    tracing::info!(open_files = files, "file descriptor limit");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("suppressd: cannot start the runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        // Install the handlers before anything can signal us: an unhandled SIGHUP or SIGTERM
        // would kill the process instead of reloading or draining.
        use tokio::signal::unix::{SignalKind, signal};
        let hangups = signal(SignalKind::hangup()).map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
        let terminate = signal(SignalKind::terminate()).map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
        let interrupt = signal(SignalKind::interrupt()).map_err(|e| format!("cannot handle SIGINT: {e}"))?;
        let listener = TcpListener::bind(config.grpc_listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.grpc_listen))?;
        tracing::info!(address = %listener.local_addr().map_err(|e| e.to_string())?, "gRPC data plane listening");
        let (handle, server) = start(config, listener, shutdown_signal(terminate, interrupt))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(reload_on_sighup(handle.state.clone(), hangups));
        tokio::spawn(watchdog());
        // systemd (Type=notify): the first load is done and every listener is bound.
        let _ = sd_notify::notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(if handle.state.is_ready() { "serving" } else { "serving, failing closed: sets missing" }),
        ]);
        let result = server.await.map_err(|e| e.to_string());
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("suppressd: {error}");
            ExitCode::from(1)
        }
    }
}

/// Completes on SIGTERM or SIGINT (streams installed at start).
pub async fn shutdown_signal(
    mut terminate: tokio::signal::unix::Signal,
    mut interrupt: tokio::signal::unix::Signal,
) {
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
}

/// SIGHUP reloads the data directory, telling systemd it is reloading (RELOADING=1 with the
/// monotonic time, then READY=1 when done).
async fn reload_on_sighup(state: Arc<State>, mut hangups: tokio::signal::unix::Signal) {
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the data directory");
        let mut reloading = vec![sd_notify::NotifyState::Reloading];
        reloading.extend(sd_notify::NotifyState::monotonic_usec_now().ok());
        let _ = sd_notify::notify(&reloading);
        if let Some(tls) = &state.config.tls {
            match tls.reload() {
                Ok(()) => tracing::info!("TLS certificates reloaded"),
                Err(error) => {
                    tracing::error!(%error, "TLS reload failed; the certificates in force keep serving")
                }
            }
        }
        let pass = state.clone();
        let report = tokio::task::spawn_blocking(move || pass.reload()).await;
        if let Ok(report) = report {
            tracing::info!(
                loaded = report.loaded.len(),
                refused = report.refused.len(),
                "SIGHUP reload done"
            );
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    }
}

/// Pets systemd's watchdog at half its interval while the runtime schedules tasks.
async fn watchdog() {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    loop {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        tokio::time::sleep(interval / 2).await;
    }
}

/// Logs to stderr as text or JSON; `RUST_LOG` overrides the configured filter. Never logs
/// phone numbers: every `Number` formats masked and errors mask their input.
pub fn init_logging(config: &crate::config::LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.filter))
        // rlibphonenumber's trace records contain the numbers it parses: never let them through.
        .add_directive("rlibphonenumber=off".parse().expect("static directive"));
    use std::io::IsTerminal;
    // Colours only for a person at a terminal, never into journald or container logs.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match config.format {
        crate::config::LogFormat::Text => builder.try_init(),
        crate::config::LogFormat::Json => builder.json().try_init(),
    };
}
