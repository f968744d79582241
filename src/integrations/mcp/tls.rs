//! The HTTP client of one streamable-HTTP downstream server: `https://` through rustls on the
//! ring provider (never aws-lc-rs, which needs a C/cmake build), `http://` only where the
//! document allows it.
//!
//! Trust, for an `https://` server:
//! - with `ca_file`: only the CA certificates of that PEM file (a private CA); the operating
//!   system's store is not consulted, so no public CA can vouch for the server;
//! - without: the operating system's trust store through `rustls-platform-verifier`. Chosen over
//!   a compiled-in root list (`webpki-roots`) because reqwest's `rustls-no-provider` feature
//!   already builds it (no new crate), because it follows what the host's administrators trust
//!   (corporate roots added, roots removed, `SSL_CERT_FILE`/`SSL_CERT_DIR` on Linux, where it
//!   reads the store with `rustls-native-certs` and verifies with webpki; the OS verifier with its
//!   revocation checks on macOS and Windows), and because a root list compiled into the binary
//!   only changes when the gateway is rebuilt.
//!
//! A certificate that does not verify (unknown CA, another host's name, expired) fails the
//! connection: the server is unavailable and the reason is in the error, never retried over
//! `http://`. The client follows no redirects (an `https://` endpoint cannot send the session to
//! `http://` or to another host), is `https_only` for an `https://` URL, and uses no proxy from
//! the environment.

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::config::ServerSpec;

/// Reads a `ca_file`: at least one PEM `CERTIFICATE` block, each a certificate usable as a trust
/// anchor. The error says which file and what is wrong with it.
pub(crate) fn read_ca_file(path: &Path) -> Result<RootCertStore, String> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("cannot read CA file `{shown}`: {e}"))?;
    let mut roots = RootCertStore::empty();
    for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let cert = cert.map_err(|e| format!("CA file `{shown}` is not valid PEM: {e}"))?;
        roots.add(cert).map_err(|e| {
            format!(
                "certificate {} of CA file `{shown}` is not a usable CA certificate: {e}",
                i + 1
            )
        })?;
    }
    if roots.is_empty() {
        return Err(format!(
            "CA file `{shown}` holds no PEM `CERTIFICATE` block"
        ));
    }
    Ok(roots)
}

/// The last certificate a server's client refused, and why: rmcp reports a failed request by
/// reqwest's message alone (`error sending request for url (...)`), whose cause chain it drops,
/// so the gateway reads the reason here to name it in its error and log.
#[derive(Debug, Clone, Default)]
pub(crate) struct Refusals(Arc<Mutex<Option<rustls::Error>>>);

impl Refusals {
    /// The latest refusal, taken (so an old one is never reported for a newer failure).
    pub(crate) fn take(&self) -> Option<rustls::Error> {
        self.0.lock().take()
    }
}

/// A certificate verifier that does exactly what `inner` does and keeps its last refusal in
/// [`Refusals`]. Written by hand because rustls has no hook for observing a verifier's
/// decision; every method delegates, and nothing is accepted that `inner` refuses.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn ServerCertVerifier>,
    refusals: Refusals,
}

impl Recording {
    fn keep<T>(&self, r: Result<T, rustls::Error>) -> Result<T, rustls::Error> {
        if let Err(e) = &r {
            *self.refusals.0.lock() = Some(e.clone());
        }
        r
    }
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.keep(self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.keep(self.inner.verify_tls12_signature(message, cert, dss))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.keep(self.inner.verify_tls13_signature(message, cert, dss))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

/// The reqwest client of the server `spec` (whose `url` is set) and where its certificate
/// refusals are kept; or the refusal of a plain-`http://` URL the document does not allow
/// (checked again here with the URL parser reqwest itself uses). The error is a complete
/// sentence for the gateway's log.
pub(crate) fn http_client(spec: &ServerSpec) -> Result<(reqwest::Client, Refusals), String> {
    let url = spec.url.as_deref().unwrap_or_default();
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid url `{url}`: {e}"))?;
    let https = match parsed.scheme() {
        "https" => true,
        "http" => {
            // The parsed host: a name, an IPv4 address, or an IPv6 address in brackets.
            let host = parsed.host_str().unwrap_or_default();
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|a| a.is_loopback());
            if !loopback && spec.allow_plain_http != Some(true) {
                return Err(format!(
                    "plain http to the non-loopback host of `{url}` is not allowed \
                     (use https, or set `allow_plain_http = true`)"
                ));
            }
            false
        }
        other => return Err(format!("unsupported url scheme `{other}` in `{url}`")),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inner: Arc<dyn ServerCertVerifier> = if !https {
        // Plain http negotiates no TLS (and no redirect is followed to an https URL).
        Arc::new(Refuse)
    } else if let Some(ca_file) = &spec.ca_file {
        // Only this file's CAs, never the system's.
        let roots = Arc::new(read_ca_file(ca_file)?);
        WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
            .build()
            .map_err(|e| format!("TLS configuration: {e}"))?
    } else {
        Arc::new(
            rustls_platform_verifier::Verifier::new(Arc::clone(&provider))
                .map_err(|e| format!("the operating system's trust store: {e}"))?,
        )
    };
    let refusals = Refusals::default();
    let verifier = Arc::new(Recording {
        inner,
        refusals: refusals.clone(),
    });
    let tls = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        // Not a relaxation: `Recording` delegates every decision to the verifier above.
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .https_only(https)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| format!("HTTP client: {}", error_chain(&e)))?;
    Ok((client, refusals))
}

/// The verifier of a client that must never speak TLS (a plain-`http://` server): refuses
/// every certificate.
#[derive(Debug)]
struct Refuse;

/// What [`Refuse`] answers to every step of a handshake.
fn no_tls_expected() -> rustls::Error {
    rustls::Error::General("TLS is not expected from a plain-http server".into())
}

impl ServerCertVerifier for Refuse {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Err(no_tls_expected())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls_expected())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls_expected())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// An error and its sources, `: `-separated (reqwest's own message omits the cause).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        // Some layers repeat their source's message in their own.
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}
