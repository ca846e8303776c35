//! TLS and bearer tokens, as a real API server serves its clients: a CA made for the test run,
//! a serving certificate for the server's address signed by it, and the token a kubeconfig's
//! `tokenFile` holds. Lets a test give the daemon kubeadm's kind of kubeconfig.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::error::FakeApiError;
use super::shared::Shared;

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's TLS identity and the token it requires.
#[derive(Clone)]
pub struct TlsIdentity {
    ca_pem: String,
    token: String,
    config: Arc<ServerConfig>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// A fresh CA and a serving certificate for `address` (and `localhost`), requiring the
    /// bearer token `token`.
    pub fn new(address: IpAddr, token: &str) -> Result<TlsIdentity, FakeApiError> {
        let tls = |e: &dyn std::fmt::Display| FakeApiError::Tls(e.to_string());
        let ca_key = KeyPair::generate().map_err(|e| tls(&e))?;
        let mut ca_params = CertificateParams::new(Vec::new()).map_err(|e| tls(&e))?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "fake-kubernetes-ca");
        let ca_cert = ca_params.self_signed(&ca_key).map_err(|e| tls(&e))?;
        let issuer = Issuer::new(ca_params, ca_key);

        let key = KeyPair::generate().map_err(|e| tls(&e))?;
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).map_err(|e| tls(&e))?;
        params.subject_alt_names.push(SanType::IpAddress(address));
        params.distinguished_name.push(rcgen::DnType::CommonName, "kube-apiserver");
        let cert = params.signed_by(&key, &issuer).map_err(|e| tls(&e))?;

        let chain = vec![CertificateDer::from(cert.der().to_vec())];
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls(&e))?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(|e| tls(&e))?;
        Ok(TlsIdentity { ca_pem: ca_cert.pem(), token: token.to_string(), config: Arc::new(config) })
    }

    /// The CA certificate (PEM), what a kubeconfig's `certificate-authority` file holds.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The bearer token clients must send.
    pub fn token(&self) -> &str {
        &self.token
    }

    pub(crate) fn listener(&self, tcp: TcpListener) -> TlsListener {
        TlsListener { tcp, acceptor: TlsAcceptor::from(self.config.clone()) }
    }
}

/// Accepts TCP connections and completes their TLS handshakes, for `axum::serve`.
pub(crate) struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (tcp, peer) = match self.tcp.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors and the like: back off as axum's own listener does.
                    tracing::warn!(%error, "fake API server: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // As the real API server (Go sets TCP_NODELAY on every connection).
            let _ = tcp.set_nodelay(true);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => return (tls, peer),
                Ok(Err(error)) => tracing::warn!(%error, %peer, "fake API server: TLS handshake failed"),
                Err(_) => tracing::warn!(%peer, "fake API server: TLS handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Refuses an API request without the bearer token when the server has a TLS identity. As
/// on a real API server, `/version` and the health paths are anonymous; the `/fake` control
/// paths are the test's own.
pub(crate) async fn authenticate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    if let Some(tls) = &shared.config.tls {
        let path = request.uri().path();
        let anonymous = matches!(path, "/version" | "/healthz" | "/livez" | "/readyz") || path.starts_with("/fake/");
        let bearer = request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !anonymous && bearer != Some(tls.token.as_str()) {
            return super::api::failure(&FakeApiError::Unauthorized);
        }
    }
    next.run(request).await
}
