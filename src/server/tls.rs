//! TLS and mutual TLS for every TCP listener, with certificates reloaded on SIGHUP.
//!
//! rustls with the ring provider (no C crypto build). The server configuration lives in an
//! `ArcSwap`: each new connection handshakes with the configuration in force when it arrived, so
//! a reload changes certificates for new connections and never drops one in flight. Handshakes
//! run in their own tasks (`server::accept`), each within `server.tls_handshake_timeout_ms`.
//! A client certificate's subject common name maps to a tenant and role (`[[tls.client]]`),
//! the mTLS counterpart of bearer tokens.

use crate::config::{ClientMapping, TlsConfig};
use crate::server::auth::Identity;
use arc_swap::ArcSwap;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

/// The certificate files (paths resolved by `config`), and the current rustls configuration.
pub struct Tls {
    files: TlsConfig,
    current: ArcSwap<rustls::ServerConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert_file", &self.files.cert_file)
            .finish_non_exhaustive()
    }
}

fn build(files: &TlsConfig) -> Result<rustls::ServerConfig, String> {
    let (cert_path, key_path) = (&files.cert_file, &files.key_file);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| format!("{}: {e}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert_path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", cert_path.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| format!("{}: {e}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &files.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca_path)
                .map_err(|e| format!("{}: {e}", ca_path.display()))?
            {
                roots
                    .add(cert.map_err(|e| format!("{}: {e}", ca_path.display()))?)
                    .map_err(|e| format!("{}: {e}", ca_path.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let verifier = if files.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("{}: {e}", ca_path.display()))?,
            )
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("{} / {}: {e}", cert_path.display(), key_path.display()))?;
    // gRPC needs HTTP/2; SIP proxies' HTTP clients speak HTTP/1.1.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

impl Tls {
    /// Loads and validates certificates (before binding: errors exit 64).
    pub fn load(files: TlsConfig) -> Result<Tls, String> {
        for (index, mapping) in files.client.iter().enumerate() {
            let names = [&mapping.common_name, &mapping.uri_san, &mapping.dns_san]
                .iter()
                .filter(|name| name.is_some())
                .count();
            if names != 1 {
                return Err(format!(
                    "client {}: give exactly one of common_name, uri_san, dns_san",
                    index + 1
                ));
            }
        }
        let config = build(&files)?;
        Ok(Tls {
            files,
            current: ArcSwap::from_pointee(config),
        })
    }

    /// Re-reads the certificate files; on error the configuration in force keeps serving.
    pub fn reload(&self) -> Result<(), String> {
        let config = build(&self.files)?;
        self.current.store(Arc::new(config));
        Ok(())
    }

    /// The identity a client certificate maps to, if any: URI SANs first, then DNS SANs,
    /// then the subject CN.
    pub fn identity_for(&self, names: &CertificateNames) -> Option<Identity> {
        let by_uri = names.uris.iter().find_map(|uri| {
            self.files
                .client
                .iter()
                .find(|c| c.uri_san.as_deref() == Some(uri.as_str()))
        });
        let by_dns = || {
            names.dns.iter().find_map(|dns| {
                self.files
                    .client
                    .iter()
                    .find(|c| c.dns_san.as_deref() == Some(dns.as_str()))
            })
        };
        let by_cn = || {
            let cn = names.common_name.as_deref()?;
            self.files
                .client
                .iter()
                .find(|c| c.common_name.as_deref() == Some(cn))
        };
        by_uri.or_else(by_dns).or_else(by_cn).map(|c| Identity {
            name: format!("cert:{}", c.label()),
            tenant: c.tenant.clone(),
            role: c.role,
        })
    }

    pub fn mappings(&self) -> &[ClientMapping] {
        &self.files.client
    }

    /// Completes the TLS handshake of an accepted connection within `timeout`, with the
    /// configuration in force now; None (logged at debug) when it fails or takes too long.
    /// Accept loops, caps and back-off are `server::accept`'s.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        remote: SocketAddr,
        timeout: std::time::Duration,
    ) -> Option<TlsConn> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.current.load_full());
        match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => {
                let info = TlsInfo::of(&stream, remote, self);
                Some(TlsConn { stream, info })
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, %remote, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(%remote, "TLS handshake timed out");
                None
            }
        }
    }
}

/// The names a client certificate carries.
#[derive(Clone, Debug, Default)]
pub struct CertificateNames {
    pub common_name: Option<String>,
    pub uris: Vec<String>,
    pub dns: Vec<String>,
}

/// What is known about a TLS peer; tonic puts it in every request's extensions, and the HTTP
/// plane too (`server::accept`).
#[derive(Clone, Debug)]
pub struct TlsInfo {
    pub remote: SocketAddr,
    /// True when the peer presented a (verified) client certificate.
    pub certificate: bool,
    pub common_name: Option<String>,
    pub identity: Option<Arc<Identity>>,
}

impl TlsInfo {
    /// The credential a client certificate gives, for a caller without a bearer token: None
    /// without a certificate; a certificate that maps to nobody is no credential
    /// (Unauthenticated).
    pub fn credential(&self) -> Option<Result<Arc<Identity>, crate::server::auth::AuthError>> {
        if !self.certificate {
            return None;
        }
        Some(
            self.identity
                .clone()
                .ok_or(crate::server::auth::AuthError::Unauthenticated),
        )
    }
}

impl TlsInfo {
    fn of(
        stream: &tokio_rustls::server::TlsStream<TcpStream>,
        remote: SocketAddr,
        tls: &Tls,
    ) -> TlsInfo {
        let names = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|cert| certificate_names(cert.as_ref()));
        let identity = names
            .as_ref()
            .and_then(|names| tls.identity_for(names))
            .map(Arc::new);
        TlsInfo {
            remote,
            certificate: names.is_some(),
            common_name: names.and_then(|n| n.common_name),
            identity,
        }
    }
}

/// Subject CN and URI and DNS SANs of a DER certificate; None when it does not parse.
fn certificate_names(der: &[u8]) -> Option<CertificateNames> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    let mut names = CertificateNames {
        common_name,
        ..CertificateNames::default()
    };
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::URI(uri) => names.uris.push(uri.to_string()),
                x509_parser::extensions::GeneralName::DNSName(dns) => {
                    names.dns.push(dns.to_string())
                }
                _ => {}
            }
        }
    }
    Some(names)
}

/// One accepted TLS connection.
pub struct TlsConn {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    pub info: TlsInfo,
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = TlsInfo;
    fn connect_info(&self) -> TlsInfo {
        self.info.clone()
    }
}
