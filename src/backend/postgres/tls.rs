//! The TLS client of the backend's connections: rustls on the ring provider (never aws-lc-rs,
//! which needs a C/cmake build), through `tokio-postgres-rustls` (the driver's maintained
//! rustls adapter, which also computes SCRAM's `tls-server-end-point` channel binding). What
//! each [`TlsMode`] checks is in [`crate::backend::tls`].
//!
//! Trust:
//! - with a root certificate: only the CA certificates of that PEM file (a private CA, or a
//!   cloud provider's bundle such as RDS's); the operating system's store is not consulted;
//! - `verify-full` without one: the operating system's trust store through
//!   `rustls-platform-verifier`, as the MCP gateway's `https://` servers without a `ca_file`
//!   (see `src/integrations/mcp/tls.rs` for why over a compiled-in root list).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::BackendError;
use crate::backend::TlsMode;
use crate::backend::tls::combination_problem;

/// Which certificates a connection's server may present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Trust {
    /// Any certificate (`prefer` and `require` without a root certificate): encrypted, not
    /// authenticated.
    Unchecked,
    /// Chained to the CAs of this file.
    RootCert(PathBuf),
    /// Chained to the operating system's trust store.
    OsStore,
}

/// A backend's TLS: the mode in force and the connector that carries it out (`None` for
/// `disable`).
#[derive(Clone)]
pub(super) struct PgTls {
    pub(super) mode: TlsMode,
    pub(super) trust: Trust,
    pub(super) connector: Option<MakeRustlsConnect>,
}

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTls")
            .field("mode", &self.mode)
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

/// The driver's `sslmode` for `mode`: `prefer` negotiates TLS and falls back to plaintext when
/// the server has none; every mode above it refuses that fallback.
pub(super) fn driver_ssl_mode(mode: TlsMode) -> postgres::config::SslMode {
    match mode {
        TlsMode::Disable => postgres::config::SslMode::Disable,
        TlsMode::Prefer => postgres::config::SslMode::Prefer,
        _ => postgres::config::SslMode::Require,
    }
}

/// The mode a connection string's `sslmode` means (a mode the driver adds later, unknown here,
/// is taken as `require`: never weaker than it asked).
pub(super) fn from_driver(mode: postgres::config::SslMode) -> TlsMode {
    match mode {
        postgres::config::SslMode::Disable => TlsMode::Disable,
        postgres::config::SslMode::Prefer => TlsMode::Prefer,
        _ => TlsMode::Require,
    }
}

impl PgTls {
    /// The TLS of `mode`, its certificates checked against `root_cert` when given; the root
    /// certificate is read here (the error names the file and what is wrong with it).
    pub(super) fn new(mode: TlsMode, root_cert: Option<&Path>) -> Result<Self, BackendError> {
        if let Some((key, reason)) = combination_problem(mode, root_cert) {
            return Err(BackendError::Tls { key, reason });
        }
        let trust = match (mode, root_cert) {
            (TlsMode::Disable, _) => {
                return Ok(PgTls {
                    mode,
                    trust: Trust::Unchecked,
                    connector: None,
                });
            }
            (_, Some(path)) => Trust::RootCert(path.to_path_buf()),
            (TlsMode::VerifyFull, None) => Trust::OsStore,
            (_, None) => Trust::Unchecked,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = match root_cert {
            Some(path) => Some(Arc::new(crate::pem_files::read_ca_file(path).map_err(
                |reason| BackendError::Tls {
                    key: "backend.tls_root_cert",
                    reason,
                },
            )?)),
            None => None,
        };
        let verifier: Arc<dyn ServerCertVerifier> = match (mode, roots) {
            (TlsMode::VerifyFull, Some(roots)) => {
                WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
                    .build()
                    .map_err(|e| BackendError::Tls {
                        key: "backend.tls_root_cert",
                        reason: e.to_string(),
                    })?
            }
            (TlsMode::VerifyFull, None) => Arc::new(
                rustls_platform_verifier::Verifier::new(Arc::clone(&provider)).map_err(|e| {
                    BackendError::Tls {
                        key: "backend.tls",
                        reason: format!("the operating system's trust store: {e}"),
                    }
                })?,
            ),
            // Refused above (`combination_problem`); kept out of the arm below, which would
            // take any certificate, should that check ever change.
            (TlsMode::VerifyCa, None) => {
                return Err(BackendError::Tls {
                    key: "backend.tls",
                    reason: "`verify-ca` needs `tls_root_cert`".into(),
                });
            }
            // `verify-ca` and `require` with a root certificate: the chain only; `prefer` and
            // `require` without one: nothing.
            (_, roots) => Arc::new(NameUnchecked {
                roots,
                algorithms: provider.signature_verification_algorithms,
            }),
        };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| BackendError::Tls {
                key: "backend.tls",
                reason: format!("TLS configuration: {e}"),
            })?
            // Not a relaxation beyond what `mode` says: see each verifier.
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        // What libpq 17 sends, and what a server accepting direct TLS (`sslnegotiation=direct`)
        // requires; servers before 17 ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(PgTls {
            mode,
            trust,
            connector: Some(MakeRustlsConnect::new(config)),
        })
    }
}

/// The certificate checks of the modes below `verify-full`: with `roots` (`verify-ca`, and
/// `require` with a root certificate: libpq's rule) the certificate must chain to them (valid
/// now, for server authentication) whatever host name it carries, which is what
/// [`WebPkiServerVerifier`] does minus the name check; without (`prefer` and `require` without
/// one: libpq's meaning) any certificate is taken, so the connection is encrypted but the
/// server is not authenticated. Either way the handshake's signatures are checked (the server
/// holds the key of the certificate it sent).
#[derive(Debug)]
struct NameUnchecked {
    roots: Option<Arc<RootCertStore>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NameUnchecked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = ParsedCertificate::try_from(end_entity)?;
            verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
