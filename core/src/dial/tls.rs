//! The in-band TLS upgrade: PostgreSQL (SSLRequest) and MySQL (SSL request
//! packet) ask for TLS inside their own protocol, then hand the TCP stream
//! here. The rustls configuration is built once per dialer, because reading
//! certificate files and system roots on every connect would put file I/O on
//! the connect path.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;

use crate::config::{SslMode, TlsOptions};
use crate::deadline::{self, Deadline};
use crate::error::{Code, Error, Layer, Result};

/// A ready rustls client configuration for one set of [`TlsOptions`].
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<ClientConfig>,
    mode: SslMode,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("mode", &self.mode)
            .finish()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(what: &str, path: &std::path::Path, e: impl std::fmt::Display) -> Error {
    Error::invalid_argument(format!("{what} {}: {e}", path.display()))
        .with_hint("check the file's path, permissions and PEM format")
}

impl TlsConnector {
    /// Reads the certificate files the options name and builds the rustls
    /// configuration. Returns `None` when the mode never uses TLS.
    pub fn new(opts: &TlsOptions) -> Result<Option<TlsConnector>> {
        if !opts.sslmode.wants_tls() {
            return Ok(None);
        }
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::internal(format!("TLS protocol versions: {e}")))?;

        // libpq: with `require`, a given root certificate makes it verify-ca.
        let verify = match opts.sslmode {
            SslMode::VerifyCa | SslMode::VerifyFull => true,
            SslMode::Require => opts.sslrootcert.is_some(),
            _ => false,
        };
        let verifier: Arc<dyn ServerCertVerifier> = if verify {
            let roots = Arc::new(load_roots(opts)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| Error::invalid_argument(format!("TLS roots: {e}")))?;
            if opts.sslmode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(ChainOnly { inner: webpki })
            }
        } else {
            Arc::new(NoVerification { provider })
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match (&opts.sslcert, &opts.sslkey) {
            (Some(cert), Some(key)) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| config_error("sslcert", cert, e))?
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|e| config_error("sslcert", cert, e))?;
                if chain.is_empty() {
                    return Err(config_error("sslcert", cert, "no certificate in the file"));
                }
                let key_der = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| config_error("sslkey", key, e))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| config_error("sslkey", key, e))?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Some(TlsConnector {
            config: Arc::new(config),
            mode: opts.sslmode,
        }))
    }

    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// Runs the TLS handshake over `stream` under the earlier of
    /// `tls_timeout` and the caller's deadline. `host` is the name we dialed
    /// (checked against the certificate with verify-full), `peer` is for
    /// messages.
    pub async fn upgrade<S>(
        &self,
        stream: S,
        host: &str,
        peer: &str,
        tls_timeout: Option<Duration>,
        caller: Option<Deadline>,
    ) -> Result<(TlsStream<S>, Duration)>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let start = Instant::now();
        let name = ServerName::try_from(host.to_string()).map_err(|_| {
            Error::new(
                Code::TlsError,
                format!("TLS to {peer}: {host:?} is not a valid server name"),
            )
            .with_peer(peer)
        })?;
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let limit = Deadline::earliest(Deadline::from_option("tls_timeout", tls_timeout), caller);
        match deadline::run(limit, connector.connect(name, stream)).await {
            Ok(Ok(tls)) => Ok((tls, start.elapsed())),
            Ok(Err(io)) => Err(handshake_error(io, peer, host, start.elapsed())),
            Err(deadline::Fired(d)) => {
                let hint = if d.is_caller() {
                    "the caller's deadline passed during the handshake"
                } else {
                    "is this port a database with TLS enabled? raise tls_timeout for a very slow server"
                };
                Err(Error::new(
                    Code::TlsTimeout,
                    format!("TLS handshake with {peer} timed out"),
                )
                .with_limit(d.limit())
                .with_elapsed(start.elapsed())
                .with_peer(peer)
                .with_cause("the server accepted the connection but did not complete the handshake")
                .with_hint(hint))
            }
        }
    }
}

fn handshake_error(io: std::io::Error, peer: &str, host: &str, elapsed: Duration) -> Error {
    let mut hint = "check sslmode, sslrootcert and the server's certificate";
    // A certificate or protocol verdict repeats on every try (permanent);
    // a connection dropped mid-handshake may not.
    let mut retryable = false;
    let cause = match io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(cert)) => {
            match cert {
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => {
                    hint = "the certificate does not name the host that was dialed; connect by a name the certificate lists, or use sslmode=verify-ca";
                }
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    hint = "the certificate is not signed by a trusted CA; give the server's CA in sslrootcert";
                }
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    hint = "the server's certificate has expired";
                }
                _ => {}
            }
            // rustls's Display names the expected and presented names.
            format!(
                "{} (dialed {host:?})",
                rustls::Error::InvalidCertificate(cert.clone())
            )
        }
        Some(other) => other.to_string(),
        None => {
            retryable = true;
            if matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ) {
                hint = "the server closed the connection during the handshake; does it speak TLS on this port?";
            }
            io.to_string()
        }
    };
    Error::new(Code::TlsError, format!("TLS handshake with {peer} failed"))
        .with_layer(Layer::Dial)
        .with_elapsed(elapsed)
        .with_peer(peer)
        .with_cause(cause)
        .with_hint(hint)
        .with_retryable(retryable)
        .with_source(io)
}

fn load_roots(opts: &TlsOptions) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match &opts.sslrootcert {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| config_error("sslrootcert", path, e))?;
            for cert in certs {
                let cert = cert.map_err(|e| config_error("sslrootcert", path, e))?;
                roots
                    .add(cert)
                    .map_err(|e| config_error("sslrootcert", path, e))?;
            }
            if roots.is_empty() {
                return Err(config_error(
                    "sslrootcert",
                    path,
                    "no certificate in the file",
                ));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A malformed system root is skipped, as browsers do.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(Error::invalid_argument(
                    "no system root certificates found for verify-ca/verify-full",
                )
                .with_hint("install ca-certificates or give sslrootcert"));
            }
        }
    }
    Ok(roots)
}

/// verify-ca: the chain must be trusted, the name is not checked.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain before the name, so a name error means the
        // chain itself was trusted.
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// prefer/require without a root: encryption without authentication, as
/// libpq does. Handshake signatures are still checked so the session key
/// belongs to whoever holds the presented certificate.
#[derive(Debug)]
struct NoVerification {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
