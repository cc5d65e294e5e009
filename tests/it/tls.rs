//! TLS and mutual TLS on the data plane: client certificates map to tenants, plain text is
//! refused, and a certificate reload keeps connections in flight.

use crate::server::{CLEAN, CONFIG, TestDaemon, e164, write_all_sets};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use suppressd::engine::date::Day;
use suppressd::proto::CheckRequest;
use suppressd::proto::suppression_client::SuppressionClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca = params.self_signed(&key).unwrap();
        Pki {
            ca_pem: ca.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// (certificate PEM, key PEM) for `common_name`, valid for localhost.
    fn leaf(&self, common_name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write_server_files(dir: &std::path::Path, pki: &Pki) {
    let (cert, key) = pki.leaf("suppressd");
    std::fs::write(dir.join("server.pem"), cert).unwrap();
    std::fs::write(dir.join("server.key"), key).unwrap();
    std::fs::write(dir.join("clients-ca.pem"), &pki.ca_pem).unwrap();
}

async fn start(pki: &Pki) -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    write_all_sets(&dir.path().join("data"), Day::today());
    write_server_files(dir.path(), pki);
    let config = format!(
        "{CONFIG}\n[tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\nclient_ca_file = \"clients-ca.pem\"\nrequire_client_cert = true\n\n[[tls.client]]\ncommon_name = \"dialer-acme\"\ntenant = \"acme\"\nrole = \"check\"\n"
    );
    TestDaemon::start_in(dir, &config).await
}

async fn connect(
    daemon: &TestDaemon,
    ca_pem: &str,
    client: Option<(String, String)>,
) -> Result<SuppressionClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = client {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Channel::from_shared(format!("https://{}", daemon.addr))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(SuppressionClient::new(channel))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_maps_certificates_to_tenants_and_reloads() {
    let pki = Pki::new("test-ca");
    let daemon = start(&pki).await;
    let mut acme = connect(&daemon, &pki.ca_pem, Some(pki.leaf("dialer-acme")))
        .await
        .unwrap();
    let request = |tenant: &str| CheckRequest {
        number: e164(CLEAN),
        tenant: tenant.into(),
        campaign: String::new(),
    };
    let answer = acme.check(request("")).await.unwrap().into_inner();
    assert_eq!(answer.tenant, "acme");
    assert_eq!(
        acme.check(request("other")).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
    // A certificate the CA signed but the config does not map: no identity, refused.
    if let Ok(mut stranger) = connect(&daemon, &pki.ca_pem, Some(pki.leaf("unknown-box"))).await {
        assert!(stranger.check(request("acme")).await.is_err());
    }
    // No client certificate at all: the handshake fails.
    if let Ok(mut anonymous) = connect(&daemon, &pki.ca_pem, None).await {
        assert!(anonymous.check(request("acme")).await.is_err());
    }
    // Plain text against the TLS port fails.
    if let Ok(mut plain) = SuppressionClient::connect(format!("http://{}", daemon.addr)).await {
        assert!(plain.check(request("acme")).await.is_err());
    }
    // Reload with a server certificate from a new CA (client CA unchanged): new connections
    // need the new CA, the connection in flight keeps working.
    let next = Pki::new("next-ca");
    let (cert, key) = next.leaf("suppressd");
    std::fs::write(daemon.dir.path().join("server.pem"), cert).unwrap();
    std::fs::write(daemon.dir.path().join("server.key"), key).unwrap();
    daemon
        .handle
        .state
        .config
        .tls
        .as_ref()
        .unwrap()
        .reload()
        .unwrap();
    assert_eq!(
        acme.check(request("")).await.unwrap().into_inner().tenant,
        "acme"
    );
    assert!(
        connect(&daemon, &pki.ca_pem, Some(pki.leaf("dialer-acme")))
            .await
            .is_err()
            || {
                let mut old = connect(&daemon, &pki.ca_pem, Some(pki.leaf("dialer-acme")))
                    .await
                    .unwrap();
                old.check(request("")).await.is_err()
            }
    );
    let mut renewed = connect(&daemon, &next.ca_pem, Some(pki.leaf("dialer-acme")))
        .await
        .unwrap();
    assert_eq!(
        renewed
            .check(request(""))
            .await
            .unwrap()
            .into_inner()
            .tenant,
        "acme"
    );
    daemon.shutdown().await;
}

#[test]
fn plain_text_on_a_public_address_needs_tls_or_consent() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("erased.key"), crate::server::KEY_TEXT).unwrap();
    let public = CONFIG.replace(
        "grpc_listen = \"127.0.0.1:0\"",
        "grpc_listen = \"0.0.0.0:0\"",
    );
    let error = suppressd::config::Config::parse(&public, "t.toml", dir.path()).unwrap_err();
    assert_eq!(error.key, "server.grpc_listen");
    let consented = public.replace("[server]\n", "[server]\nallow_plaintext = true\n");
    assert!(suppressd::config::Config::parse(&consented, "t.toml", dir.path()).is_ok());
}

/// 600 idle sockets (from 127.0.0.2) that never start a handshake neither delay a legitimate
/// mTLS check (from 127.0.0.1: under 1 s) nor stay open past the handshake timeout
/// (`server.tls_handshake_timeout_ms`, 1 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_handshakes_do_not_delay_others() {
    let pki = Pki::new("test-ca");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    write_all_sets(&dir.path().join("data"), Day::today());
    write_server_files(dir.path(), &pki);
    let config = format!(
        "{}\n[tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\nclient_ca_file = \"clients-ca.pem\"\nrequire_client_cert = true\n\n[[tls.client]]\ncommon_name = \"dialer-acme\"\ntenant = \"acme\"\nrole = \"check\"\n",
        CONFIG.replace("[server]\n", "[server]\ntls_handshake_timeout_ms = 1000\n")
    );
    let daemon = TestDaemon::start_in(dir, &config).await;
    let addr = daemon.addr;
    let started = std::time::Instant::now();
    let mut idle = tokio::task::spawn_blocking(move || {
        (0..600)
            .filter_map(|_| {
                let socket =
                    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                        .unwrap();
                socket
                    .bind(
                        &"127.0.0.2:0"
                            .parse::<std::net::SocketAddr>()
                            .unwrap()
                            .into(),
                    )
                    .unwrap();
                socket.connect(&addr.into()).ok()?;
                Some(std::net::TcpStream::from(socket))
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let asked = std::time::Instant::now();
    let mut client = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        connect(&daemon, &pki.ca_pem, Some(pki.leaf("dialer-acme"))),
    )
    .await
    .expect("the mTLS handshake waited behind idle sockets")
    .unwrap();
    let answer = client
        .check(CheckRequest {
            number: e164(CLEAN),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.tenant, "acme");
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    // Every idle socket is closed within the handshake timeout of its admission; sockets over
    // the per-source cap are closed at once and some reconnect-era ones are admitted as earlier
    // ones time out, so allow a few timeouts' worth.
    let open = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let deadline = started + std::time::Duration::from_secs(6);
        idle.iter_mut()
            .filter(|stream| {
                let mut stream: &std::net::TcpStream = stream;
                let left = deadline
                    .saturating_duration_since(std::time::Instant::now())
                    .max(std::time::Duration::from_millis(10));
                stream.set_read_timeout(Some(left)).unwrap();
                let mut byte = [0u8; 1];
                matches!(stream.read(&mut byte), Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
            })
            .count()
    })
    .await
    .unwrap();
    assert_eq!(open, 0, "idle sockets outlived the handshake timeout");
    daemon.shutdown().await;
}
