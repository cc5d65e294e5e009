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
        ..Default::default()
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
        .secrets
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

impl Pki {
    /// (certificate PEM, key PEM) with subject CN `common_name` and the given SANs.
    fn leaf_with_sans(&self, common_name: &str, sans: Vec<rcgen::SanType>) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// One HTTP/1.1 GET over mutual TLS to the HTTP plane; the status code.
async fn https_get(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    client: (String, String),
    target: &str,
) -> u16 {
    use rustls_pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let chain =
        vec![rustls_pki_types::CertificateDer::from_pem_slice(client.0.as_bytes()).unwrap()];
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(client.1.as_bytes()).unwrap();
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = connector.connect(name, tcp).await.unwrap();
    stream
        .write_all(
            format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    text.split(' ').nth(1).unwrap().parse().unwrap()
}

/// Client certificates map by URI SAN, then DNS SAN, then subject CN (the first that has a
/// mapping wins), on gRPC and on the HTTP plane alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_map_by_san_on_grpc_and_http() {
    let pki = Pki::new("test-ca");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    write_all_sets(&dir.path().join("data"), Day::today());
    write_server_files(dir.path(), &pki);
    let config = format!(
        "{}\n[tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\nclient_ca_file = \"clients-ca.pem\"\nrequire_client_cert = true\n\n[[tls.client]]\ncommon_name = \"dialer-acme\"\ntenant = \"acme\"\nrole = \"check\"\n\n[[tls.client]]\nuri_san = \"spiffe://dialers/other\"\ntenant = \"other\"\nrole = \"check\"\n\n[[tls.client]]\ndns_san = \"dialer.acme.internal\"\ntenant = \"acme\"\nrole = \"check\"\n",
        CONFIG.replace("[server]\n", "[server]\nhttp_listen = \"127.0.0.1:0\"\n")
    );
    let daemon = TestDaemon::start_in(dir, &config).await;
    let request = |tenant: &str| CheckRequest {
        number: e164(CLEAN),
        tenant: tenant.into(),
        campaign: String::new(),
        ..Default::default()
    };
    // URI SAN wins over the CN "dialer-acme": this certificate is tenant "other".
    let uri = pki.leaf_with_sans(
        "dialer-acme",
        vec![
            rcgen::SanType::URI(
                rcgen::string::Ia5String::try_from("spiffe://dialers/other").unwrap(),
            ),
            rcgen::SanType::DnsName(rcgen::string::Ia5String::try_from("localhost").unwrap()),
        ],
    );
    let mut other = connect(&daemon, &pki.ca_pem, Some(uri.clone()))
        .await
        .unwrap();
    assert_eq!(
        other.check(request("")).await.unwrap().into_inner().tenant,
        "other"
    );
    assert_eq!(
        other.check(request("acme")).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
    // A DNS SAN mapping, with an unmapped CN.
    let dns = pki.leaf_with_sans(
        "unmapped",
        vec![rcgen::SanType::DnsName(
            rcgen::string::Ia5String::try_from("dialer.acme.internal").unwrap(),
        )],
    );
    let mut acme = connect(&daemon, &pki.ca_pem, Some(dns.clone()))
        .await
        .unwrap();
    assert_eq!(
        acme.check(request("")).await.unwrap().into_inner().tenant,
        "acme"
    );
    // The HTTP plane honours the same mapping: no bearer token needed, another tenant is 403.
    let http = daemon.handle.http_addr.unwrap();
    let target = |tenant: &str| format!("/v1/check?number=%2B{CLEAN}&tenant={tenant}");
    assert_eq!(
        https_get(http, &pki.ca_pem, uri.clone(), &target("other")).await,
        200
    );
    assert_eq!(
        https_get(http, &pki.ca_pem, uri, &target("acme")).await,
        403
    );
    assert_eq!(
        https_get(http, &pki.ca_pem, dns, &target("acme")).await,
        200
    );
    // A certificate the CA signed but nothing maps: not a credential on HTTP either.
    let stranger = pki.leaf("unknown-box");
    assert_eq!(
        https_get(http, &pki.ca_pem, stranger, &target("acme")).await,
        401
    );
    daemon.shutdown().await;
}
