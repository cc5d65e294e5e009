//! `suppressd serve`: the daemon's process main.
//!
//! Owns the process around `server`: reading the config (or the embedded example and its demo
//! data), loading the secrets it names, logging, the file limit, the tokio runtime, signals
//! (SIGTERM/SIGINT drain, SIGHUP reloads), systemd notifications and exit codes: 0 after a
//! clean shutdown, [`EXIT_USAGE`] (64) for a configuration error, found before any port is
//! bound, [`EXIT_RUNTIME`] (1) for anything else. Never decides anything about requests.

use super::{EXIT_RUNTIME, EXIT_USAGE};
use crate::config::{Config, LogConfig, LogFormat};
use crate::server::state::State;
use crate::server::{RunOptions, Startup, limits, samples};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Validates the config and loads its secrets before binding anything, then serves until
/// SIGTERM or SIGINT; SIGHUP reloads the data directory and the certificates.
pub fn main(config_path: Option<&Path>, options: RunOptions) -> ExitCode {
    let config = match config_path {
        Some(path) => Config::load(path),
        None => match samples::ensure_demo_key(Path::new(".")) {
            Ok(()) => Config::example(Path::new(".")),
            Err(error) => {
                eprintln!("suppressd: {error}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        },
    };
    let startup = match config.and_then(|config| Startup::prepare(config, options)) {
        Ok(startup) => startup,
        Err(error) => {
            eprintln!("suppressd: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let config = &startup.config;
    init_logging(config.log());
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        git_sha = env!("SUPPRESSD_GIT_SHA"),
        config = %config.path,
        data_dir = %config.data_dir.display(),
        sets = config.sets.len(),
        tenants = config.tenants().len(),
        "starting"
    );
    if config.server().generate_samples
        && let Err(error) = samples::generate_missing(config)
    {
        eprintln!("suppressd: {error}");
        return ExitCode::from(EXIT_RUNTIME);
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
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match runtime.block_on(serve(startup)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("suppressd: {error}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Binds the gRPC data plane, starts the daemon and serves until a signal stops it.
async fn serve(startup: Startup) -> Result<(), String> {
    // Install the handlers before anything can signal us: an unhandled SIGHUP or SIGTERM
    // would kill the process instead of reloading or draining.
    use tokio::signal::unix::{SignalKind, signal};
    let hangups = signal(SignalKind::hangup()).map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
    let terminate =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    let interrupt =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot handle SIGINT: {e}"))?;
    let address = startup.config.grpc_listen;
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(address = %local, "gRPC data plane listening");
    let (handle, server) =
        crate::server::start_prepared(startup, listener, shutdown_signal(terminate, interrupt))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(reload_on_sighup(handle.state.clone(), hangups));
    tokio::spawn(watchdog());
    // systemd (Type=notify): the first load is done and every listener is bound.
    let status = if handle.state.is_ready() {
        "serving"
    } else {
        "serving, failing closed: sets missing"
    };
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
    let result = server.await.map_err(|e| e.to_string());
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    result
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
        if let Some(tls) = &state.secrets.tls {
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
pub fn init_logging(config: &LogConfig) {
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
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
