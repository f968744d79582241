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
//! `http://`. The client follows no redirects (an `https://` endpoint cannot send the session
//! to `http://` or to another host), is `https_only` for an `https://` URL, and uses no proxy
//! from the environment.
//!
//! Mutual TLS: with `client_cert_file` and `client_key_file` the gateway presents that
//! certificate to a server that asks for one ([`identity`] reads and checks the files). A
//! server that requires a client certificate the gateway does not have, or refuses the one it
//! presented, fails the connection the same way, and the error says which ([`Refusals`]).
//! The files are read again each time the gateway (re)connects a server: a renewed
//! certificate is used from the next reconnection on, but the gateway neither watches the
//! files nor reconnects for them (an HTTP connection the server drops is re-established by the
//! client with the identity already loaded).

pub(crate) mod identity;
mod observe;

use crate::error_chain::error_chain;
use std::sync::Arc;

use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

pub(crate) use crate::pem_files::read_ca_file;

use super::config::ServerSpec;
use identity::ClientIdentity;
pub(crate) use observe::Observed;

/// What went wrong in a server's TLS handshakes, and why: rmcp reports a failed request by
/// reqwest's message alone (`error sending request for url (...)`), whose cause chain it drops,
/// so the gateway reads the reason here to name it in its error and log.
#[derive(Debug, Clone, Default)]
pub(crate) struct Refusals(Arc<Mutex<Seen>>);

#[derive(Debug, Default)]
struct Seen {
    /// The last server certificate the verifier refused.
    certificate: Option<rustls::Error>,
    /// The last TLS error a request failed with ([`Observed`]): an alert from the server...
    alert: Option<rustls::Error>,
    /// The cause chain of the last request that failed without a TLS error in it: the
    /// connection reset or closed...
    failure: Option<String>,
    /// Whether the server asked for a client certificate, and if so whether one was presented.
    asked: Option<bool>,
}

impl Refusals {
    /// Why the latest handshakes failed, in a sentence, if TLS is why, for a connection that
    /// failed (`timed_out`: by ending in the start timeout); taken (so an old reason is never
    /// reported for a newer failure).
    pub(crate) fn take(&self, timed_out: bool) -> Option<String> {
        let seen = std::mem::take(&mut *self.0.lock());
        if let Some(refused) = seen.certificate {
            return Some(format!("TLS certificate refused: {refused}"));
        }
        if let Some(alert) = seen.alert {
            return Some(match seen.asked {
                Some(false) => format!(
                    "the server requires a client certificate (mutual TLS) and none is \
                     configured for it: set `client_cert_file` and `client_key_file` ({alert})"
                ),
                Some(true) => {
                    format!("the server refused the gateway's client certificate ({alert})")
                }
                None => format!("TLS handshake failed: {alert}"),
            });
        }
        // A TLS 1.3 server refuses a client certificate (or its absence) after the client has
        // finished its handshake and sent its request: the server's alert can be lost to the
        // connection reset that follows it, and, rarely, the request is not failed at all and
        // only the start timeout ends it (seen about once in 600 refused starts under load;
        // the server had closed the connection). Only a server that asked for a certificate is
        // suspected (a server may ask without requiring one), and the message says what was
        // seen.
        let outcome = match &seen.failure {
            Some(failure) => format!("dropped the connection: {failure}"),
            None if timed_out => "did not answer the request".to_owned(),
            // It answered (an HTTP error...): rmcp's error says more than a guess.
            None => return None,
        };
        Some(if seen.asked? {
            format!(
                "the server received the gateway's client certificate and {outcome} (it may not \
                 accept the certificate)"
            )
        } else {
            format!(
                "the server asked for a client certificate (mutual TLS), none is configured for \
                 it (`client_cert_file`, `client_key_file`), and it {outcome}"
            )
        })
    }

    fn keep_certificate(&self, e: &rustls::Error) {
        self.0.lock().certificate = Some(e.clone());
    }

    fn keep_alert(&self, e: rustls::Error) {
        self.0.lock().alert = Some(e);
    }

    fn keep_failure(&self, chain: String) {
        self.0.lock().failure = Some(chain);
    }

    fn keep_asked(&self, presented: bool) {
        self.0.lock().asked = Some(presented);
    }
}

/// The gateway's answer to a server's request for a client certificate: its identity, if the
/// document gives it one, and a note in [`Refusals`] that the server asked. Used instead of
/// `with_client_auth_cert` (which builds the same single-certificate answer from the same
/// checked [`CertifiedKey`]) only for that note.
#[derive(Debug)]
struct ClientAuth {
    identity: Option<ClientIdentity>,
    refusals: Refusals,
}

impl ResolvesClientCert for ClientAuth {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let key = self.identity.as_ref().map(|i| &i.0);
        // rustls sends no certificate when the key cannot sign with any scheme offered.
        let presented = key.is_some_and(|k| k.key.choose_scheme(sigschemes).is_some());
        self.refusals.keep_asked(presented);
        key.cloned()
    }

    fn has_certs(&self) -> bool {
        self.identity.is_some()
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
            self.refusals.keep_certificate(e);
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

/// The HTTP client of the server `spec` (whose `url` is set) and where its TLS failures are
/// kept; or the refusal of a plain-`http://` URL the document does not allow (checked again
/// here with the URL parser reqwest itself uses), or of a CA or client certificate file that
/// no longer reads. The error is a complete sentence for the gateway's log.
pub(crate) fn http_client(spec: &ServerSpec) -> Result<(Observed, Refusals), String> {
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
    let identity = match (&spec.client_cert_file, &spec.client_key_file) {
        (Some(cert), Some(key)) if https => {
            let now = std::time::SystemTime::now();
            Some(identity::read_client_identity(cert, key, now).map_err(|(_, reason)| reason)?)
        }
        (None, None) => None,
        // The document refuses these; a spec that was not checked is refused here too.
        _ => {
            return Err(
                "`client_cert_file` and `client_key_file` go together, on an `https://` url only"
                    .into(),
            );
        }
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
        .with_client_cert_resolver(Arc::new(ClientAuth {
            identity,
            refusals: refusals.clone(),
        }));
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .https_only(https)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| format!("HTTP client: {}", error_chain(&e)))?;
    Ok((Observed::new(client, refusals.clone()), refusals))
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

#[cfg(test)]
mod tests {
    use super::Refusals;
    use rustls::AlertDescription;

    fn seen(
        alert: Option<AlertDescription>,
        failure: Option<&str>,
        asked: Option<bool>,
    ) -> Refusals {
        let r = Refusals::default();
        if let Some(a) = alert {
            r.keep_alert(rustls::Error::AlertReceived(a));
        }
        if let Some(f) = failure {
            r.keep_failure(f.to_owned());
        }
        if let Some(presented) = asked {
            r.keep_asked(presented);
        }
        r
    }

    #[test]
    fn a_refused_client_certificate_is_named_however_the_refusal_arrives() {
        use AlertDescription::{CertificateRequired, UnknownCA};
        let reset = Some("connection reset by peer");
        // The server's alert, after it asked for a certificate the gateway did not have.
        let r = seen(Some(CertificateRequired), None, Some(false)).take(false);
        let r = r.expect("a reason");
        assert!(r.contains("requires a client certificate"), "{r}");
        assert!(
            r.contains("client_cert_file") && r.contains("CertificateRequired"),
            "{r}"
        );
        // ... after it received the gateway's.
        let r = seen(Some(UnknownCA), None, Some(true)).take(false).unwrap();
        assert!(
            r.contains(
                "refused the gateway's client certificate (received fatal alert: UnknownCA)"
            ),
            "{r}"
        );
        // The alert lost to the connection reset.
        let r = seen(None, reset, Some(false)).take(false).unwrap();
        assert!(
            r.contains("none is configured") && r.contains("connection reset by peer"),
            "{r}"
        );
        let r = seen(None, reset, Some(true)).take(false).unwrap();
        assert!(
            r.contains("gateway's client certificate and dropped the connection"),
            "{r}"
        );
        // No failure seen at all, and the start timed out.
        let r = seen(None, None, Some(false)).take(true).unwrap();
        assert!(
            r.contains("none is configured") && r.contains("did not answer"),
            "{r}"
        );
        // A server that answered (an HTTP error), or never asked for a certificate: no guess.
        assert_eq!(seen(None, None, Some(false)).take(false), None);
        assert_eq!(seen(None, reset, None).take(false), None);
        assert_eq!(seen(None, None, None).take(true), None);
        // An alert from a server that never asked: a handshake failure, not a certificate.
        let r = seen(Some(AlertDescription::HandshakeFailure), None, None)
            .take(false)
            .unwrap();
        assert!(r.starts_with("TLS handshake failed"), "{r}");
        // Taken: an old reason is not reported again.
        let r = seen(Some(UnknownCA), None, Some(true));
        assert!(r.take(false).is_some());
        assert_eq!(r.take(true), None);
    }
}
