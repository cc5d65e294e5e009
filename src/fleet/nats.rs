//! The NATS side of the fleet: credentials read from files, the connection (TLS with a CA),
//! the stream every host publishes to, and this host's durable pull consumer.
//!
//! The stream: file storage, `fleet.replicas` replicas, subjects `<prefix>.>` (one subject per
//! tenant), an explicit duplicate window (JetStream drops a publish whose `Nats-Msg-Id` it saw
//! within it). The consumer: durable, named after the host id, explicit "all" acks (one ack
//! covers a batch), started right after the sequence this host has applied. Never logs a
//! credential.

use super::{Fleet, FleetSecrets, Status};
use crate::config::{FleetAuth, FleetSettings};
use async_nats::jetstream::{self, consumer, stream};
use std::sync::Arc;

/// NATS credentials as read from their files.
#[derive(Clone)]
pub enum Credentials {
    None,
    UserPassword(String, String),
    Token(String),
    Nkey(String),
    /// The text of a `.creds` file (JWT and nkey seed).
    Creds(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::None => "None",
            Credentials::UserPassword(..) => "UserPassword(..)",
            Credentials::Token(_) => "Token(..)",
            Credentials::Nkey(_) => "Nkey(..)",
            Credentials::Creds(_) => "Creds(..)",
        })
    }
}

fn read_secret(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = text.trim().to_owned();
    if text.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(text)
}

impl Credentials {
    pub fn load(auth: &FleetAuth) -> Result<Credentials, String> {
        Ok(match auth {
            FleetAuth::None => Credentials::None,
            FleetAuth::UserPassword { user, password } => {
                Credentials::UserPassword(read_secret(user)?, read_secret(password)?)
            }
            FleetAuth::Token(path) => Credentials::Token(read_secret(path)?),
            FleetAuth::Nkey(path) => Credentials::Nkey(read_secret(path)?),
            FleetAuth::Creds(path) => {
                let text = read_secret(path)?;
                // Parsed now, so a bad file is a config error before binding, not a failed
                // connection later.
                async_nats::ConnectOptions::with_credentials(&text)
                    .map_err(|e| format!("{}: not a NATS .creds file: {e}", path.display()))?;
                Credentials::Creds(text)
            }
        })
    }
}

impl Fleet {
    /// Connects (in the background: the daemon serves what it has while NATS is away, and
    /// the client keeps reconnecting). `applied`: the stream sequence replay found;
    /// `data_dir`: a daemon's, where its instance id is kept (`None` for a command-line
    /// client such as `fleet publish`, which claims no host id and gets a passing one).
    pub async fn connect(
        settings: FleetSettings,
        secrets: FleetSecrets,
        applied: u64,
        data_dir: Option<std::path::PathBuf>,
    ) -> Result<Arc<Fleet>, String> {
        let status = Arc::new(Status::new(settings.max_lag, applied));
        let instance = match &data_dir {
            Some(data_dir) => super::hosts::instance_id(data_dir)?,
            None => format!("client-{:016x}", rand::random::<u64>()),
        };
        let events = status.clone();
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("suppressd {}", settings.host_id))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(settings.timeout)
            .request_timeout(Some(settings.timeout))
            // Reconnect fast: while disconnected, admin calls fail and the lag clock runs.
            .reconnect_delay_callback(|attempts| {
                std::time::Duration::from_millis((100 * attempts as u64).min(2000))
            })
            .event_callback(move |event| {
                let events = events.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!("fleet: connected to NATS");
                            events.set_connected(true);
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!("fleet: disconnected from NATS; reconnecting");
                            events.set_connected(false);
                        }
                        other => tracing::debug!(event = %other, "fleet: NATS event"),
                    }
                }
            });
        options = match secrets.credentials {
            Credentials::None => options,
            Credentials::UserPassword(user, password) => options.user_and_password(user, password),
            Credentials::Token(token) => options.token(token),
            Credentials::Nkey(seed) => options.nkey(seed),
            Credentials::Creds(text) => options
                .credentials(&text)
                .map_err(|e| format!("fleet credentials: {e}"))?,
        };
        if let Some(ca) = &settings.tls_ca_file {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &settings.tls_client {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        let servers = settings
            .servers
            .iter()
            .map(|url| {
                url.parse::<async_nats::ServerAddr>()
                    .map_err(|e| format!("fleet.servers: {url}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        status.set_connected(false);
        let client = options
            .connect(servers)
            .await
            .map_err(|e| format!("fleet: cannot connect to NATS: {e}"))?;
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(settings.timeout)
            .build(client.clone());
        Ok(Arc::new(Fleet {
            settings,
            // A client never follows, so it never reads the stream identity kept here.
            data_dir: data_dir.unwrap_or_default(),
            instance,
            sealer: secrets.sealer,
            status,
            client,
            jetstream,
        }))
    }

    /// The stream, created if missing. An existing stream is used as found; settings that
    /// differ from ours are logged (one host must not silently re-shape the fleet's log).
    pub async fn ensure_stream(&self) -> Result<stream::Stream, String> {
        let settings = &self.settings;
        let config = stream::Config {
            name: settings.stream.clone(),
            subjects: vec![format!("{}.>", settings.subject_prefix)],
            storage: stream::StorageType::File,
            num_replicas: settings.replicas,
            duplicate_window: settings.duplicate_window,
            ..Default::default()
        };
        let mut stream = self
            .jetstream
            .get_or_create_stream(config)
            .await
            .map_err(|e| format!("fleet: stream {}: {e}", settings.stream))?;
        let info = stream
            .info()
            .await
            .map_err(|e| format!("fleet: stream {}: {e}", settings.stream))?;
        if info.config.num_replicas != settings.replicas
            || info.config.duplicate_window != settings.duplicate_window
        {
            tracing::warn!(
                stream = %settings.stream,
                replicas = info.config.num_replicas,
                duplicate_window_seconds = info.config.duplicate_window.as_secs(),
                "fleet: the stream exists with other replicas or duplicate window than this host's config; using it as it is"
            );
        }
        Ok(stream)
    }

    /// This host's durable consumer, made anew right after `applied` each time the follower
    /// starts: one left from before may have delivered messages it never got acked (a crash
    /// between delivery and fsync) and would hold them back until their ack wait passed, or
    /// its position may be past a data directory restored from an older copy. Host ids must
    /// be unique in a fleet: two daemons with one id would take each other's consumer.
    pub async fn ensure_consumer(
        &self,
        stream: &stream::Stream,
        applied: u64,
    ) -> Result<consumer::PullConsumer, String> {
        let name = &self.settings.host_id;
        let failed = |e: &dyn std::fmt::Display| format!("fleet: consumer {name}: {e}");
        if let Ok(info) = stream.consumer_info(name).await {
            tracing::debug!(
                consumer = %name,
                ack_floor = info.ack_floor.stream_sequence,
                applied,
                "fleet: consumer made anew after the journal"
            );
            stream.delete_consumer(name).await.map_err(|e| failed(&e))?;
        }
        let config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: applied + 1,
            },
            ack_policy: consumer::AckPolicy::All,
            ack_wait: std::time::Duration::from_secs(30),
            max_ack_pending: 100_000,
            // A host gone for a week leaves no consumer behind; when it comes back its
            // consumer is made again after its journal (this function).
            inactive_threshold: std::time::Duration::from_secs(7 * 86_400),
            ..Default::default()
        };
        stream.create_consumer(config).await.map_err(|e| failed(&e))
    }
}
