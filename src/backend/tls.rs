//! TLS on the connections of a `postgres` backend: the `[backend]` keys `tls` and
//! `tls_root_cert`, checked when the document is loaded (the connections themselves are made in
//! [`postgres`](super::postgres), feature `postgres`).
//!
//! ```toml
//! [backend]
//! kind = "postgres"
//! url_env = "TOLLGATE_PG_URL"
//! # Encrypted, the server's certificate chained to this CA and issued for the host named in
//! # the connection string. The recommended setting.
//! tls = "verify-full"
//! tls_root_cert = "/etc/tollgate/db-ca.pem"
//! ```
//!
//! The modes are libpq's `sslmode`s, with libpq's meaning; from weakest to strongest:
//!
//! | `tls` | encrypted | the certificate is checked |
//! |---|---|---|
//! | `disable` | never | - |
//! | `prefer` | when the server offers TLS, else plaintext | no |
//! | `require` | always: a server without TLS fails the connection | only with `tls_root_cert` (the chain, as `verify-ca`) |
//! | `verify-ca` | always | chained to `tls_root_cert` (the host name is not checked) |
//! | `verify-full` | always | chained to `tls_root_cert`, else to the operating system's trust store, and issued for the host the connection string names |
//!
//! Without `tls`, the connection string's own `sslmode` governs (`disable`, `prefer` or
//! `require`; `prefer` when it says nothing, as libpq's default), without certificate checks.
//! With `tls`, the document governs, except that a connection string's `sslmode=require` is
//! never weakened by a document's `disable` or `prefer`. The connection string cannot say
//! `verify-ca` or `verify-full` (the driver does not parse them): the document does.
//!
//! `prefer` and `require` without `tls_root_cert` protect against a passive eavesdropper only:
//! whoever can intercept the connection can present a certificate of their own (and, under
//! `prefer`, simply answer that it has no TLS). Use `verify-full`; `verify-ca` is for servers
//! whose certificates do not name the host they are reached at (e.g. some Cloud SQL instances).
//!
//! Nothing falls back silently: a mode that needs TLS fails the connection when the server does
//! not offer it, or when its certificate does not verify, and the error says why. TLS does not
//! run over Unix sockets: a Unix-socket host under `require`, `verify-ca` or `verify-full` is
//! refused when the backend is opened.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{BackendKind, BackendSection};
use crate::policy::DocumentError;

/// How a `postgres` backend protects its connections (`[backend] tls`): libpq's `sslmode`
/// names and meaning, ordered from the weakest to the strongest (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum TlsMode {
    /// Plaintext: no TLS.
    Disable,
    /// TLS when the server offers it, plaintext otherwise; the certificate is not checked
    /// (libpq's default, and the connection string's when it says nothing).
    Prefer,
    /// TLS or no connection; the certificate is checked only when a root certificate is given
    /// (then its chain, as [`VerifyCa`](Self::VerifyCa)).
    Require,
    /// TLS, the server's certificate chained to the given root certificate; the host name is
    /// not checked.
    VerifyCa,
    /// TLS, the server's certificate chained to the given root certificate (or to the operating
    /// system's trust store without one) and issued for the host the connection string names.
    VerifyFull,
}

impl TlsMode {
    /// The name written in the document (`"verify-full"`...).
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::VerifyFull => "verify-full",
        }
    }

    /// Whether a connection without TLS is refused.
    pub fn requires_tls(self) -> bool {
        self >= TlsMode::Require
    }
}

impl std::fmt::Display for TlsMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why `mode` cannot be used with (or without) a root certificate, naming the key to change:
/// `(key, reason)`. Shared by the document's check and the backend's.
pub(crate) fn combination_problem(
    mode: TlsMode,
    root_cert: Option<&Path>,
) -> Option<(&'static str, String)> {
    match (mode, root_cert) {
        (TlsMode::Disable | TlsMode::Prefer, Some(_)) => Some((
            "backend.tls_root_cert",
            format!(
                "is not used with `tls = \"{mode}\"`: {}; use `tls = \"verify-full\"` (or \
                 `verify-ca`) to have the server's certificate checked against it",
                if mode == TlsMode::Disable {
                    "no TLS is negotiated"
                } else {
                    "a server (or whoever intercepts the connection) that answers without TLS \
                     gets a plaintext connection anyway"
                }
            ),
        )),
        (TlsMode::VerifyCa, None) => Some((
            "backend.tls",
            "`verify-ca` needs `tls_root_cert` (the CA that issued the server's certificate): \
             without it any certificate a public CA issued, for any name, would pass; use \
             `verify-full` to rely on the operating system's trust store"
                .to_owned(),
        )),
        _ => None,
    }
}

impl BackendSection {
    /// The checks of `tls` and `tls_root_cert` (see the [module docs](self)): they apply to a
    /// `postgres` backend, `tls_root_cert` needs a `tls` that checks certificates, `verify-ca`
    /// needs `tls_root_cert`; in builds with the `postgres` feature the root certificate is
    /// read and parsed, so a missing, unreadable or non-PEM file is refused when the document
    /// is loaded, not at the first connection.
    pub(super) fn validate_tls(&self) -> Result<(), DocumentError> {
        if self.kind != BackendKind::Postgres {
            for (key, set) in [
                ("backend.tls", self.tls.is_some()),
                ("backend.tls_root_cert", self.tls_root_cert.is_some()),
            ] {
                if set {
                    return Err(DocumentError::invalid(
                        key,
                        "applies to a `postgres` backend (the files backend makes no \
                         connections)",
                    ));
                }
            }
            return Ok(());
        }
        let root_cert = self.tls_root_cert.as_deref();
        if root_cert.is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(DocumentError::invalid(
                "backend.tls_root_cert",
                "must not be empty",
            ));
        }
        match self.tls {
            None if root_cert.is_some() => {
                return Err(DocumentError::invalid(
                    "backend.tls_root_cert",
                    "needs `tls` (`verify-full`, `verify-ca` or `require`): without it the \
                     connection string's `sslmode` governs, which never checks a certificate",
                ));
            }
            None => {}
            Some(mode) => {
                if let Some((key, reason)) = combination_problem(mode, root_cert) {
                    return Err(DocumentError::invalid(key, reason));
                }
            }
        }
        // Read and parsed only where the backend is built (it alone has the TLS crates).
        #[cfg(feature = "postgres")]
        if let Some(path) = root_cert {
            crate::pem_files::read_ca_file(path)
                .map_err(|reason| DocumentError::invalid("backend.tls_root_cert", reason))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn modes_are_ordered_from_the_weakest() {
        use TlsMode::*;
        let modes = [Disable, Prefer, Require, VerifyCa, VerifyFull];
        assert!(modes.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            modes.map(TlsMode::requires_tls),
            [false, false, true, true, true]
        );
        for m in modes {
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{m}\""));
            assert_eq!(serde_json::from_str::<TlsMode>(&json).unwrap(), m);
        }
    }

    /// The document's keys (TOML, for the line numbers).
    #[cfg(feature = "toml")]
    mod document {
        use super::*;
        use crate::policy::Policy;

        const DOC: &str = r#"
[policy]
name = "t"
owner = "o"
purpose = "p"
scope = "s"
liability_owner = "l"
review_cadence = "90d"
data_handling = "d"

[tools.read_file]
effect = "read"

[roles.r]
tools = ["read_file"]

[backend]
kind = "postgres"
url_env = "TOLLGATE_PG_URL"
"#;

        /// The document with `extra` in its `[backend]` section: the section, or the error's text
        /// and line.
        fn load(extra: &str) -> Result<BackendSection, (String, Option<usize>)> {
            match Policy::from_toml(&format!("{DOC}{extra}")) {
                Ok(p) => Ok(p.document().backend.clone().unwrap()),
                Err(e) => Err((e.to_string(), e.location().map(|l| l.line))),
            }
        }

        /// The line (1-based) of the document on which `extra`'s key `key` is written.
        fn line_of(extra: &str, key: &str) -> usize {
            let text = format!("{DOC}{extra}");
            text.lines()
                .position(|l| l.starts_with(key))
                .expect("key in the text")
                + 1
        }

        #[test]
        fn the_section_reads_the_mode_and_the_root_certificate() {
            let s = load("").unwrap();
            assert_eq!((s.tls, s.tls_root_cert), (None, None));
            let s = load("tls = \"require\"\n").unwrap();
            assert_eq!(s.tls, Some(TlsMode::Require));
            let s = load("tls = \"verify-full\"\n").unwrap();
            assert_eq!(s.tls, Some(TlsMode::VerifyFull));
        }

        #[test]
        fn a_mistyped_mode_is_refused_with_its_key_and_line() {
            let extra = "tls = \"verify_full\"\n";
            let (e, line) = load(extra).unwrap_err();
            assert!(
                e.contains("backend.tls") && e.contains("verify-full"),
                "{e}"
            );
            assert_eq!(line, Some(line_of(extra, "tls =")), "{e}");
        }

        #[test]
        fn settings_that_do_not_fit_together_are_refused_with_their_key() {
            for (extra, key, says) in [
                (
                    "tls_root_cert = \"/etc/ca.pem\"\n",
                    "backend.tls_root_cert",
                    "needs `tls`",
                ),
                (
                    "tls = \"prefer\"\ntls_root_cert = \"/etc/ca.pem\"\n",
                    "backend.tls_root_cert",
                    "plaintext connection anyway",
                ),
                (
                    "tls = \"disable\"\ntls_root_cert = \"/etc/ca.pem\"\n",
                    "backend.tls_root_cert",
                    "no TLS is negotiated",
                ),
                (
                    "tls = \"verify-ca\"\n",
                    "backend.tls",
                    "needs `tls_root_cert`",
                ),
                (
                    "tls = \"verify-full\"\ntls_root_cert = \"\"\n",
                    "backend.tls_root_cert",
                    "must not be empty",
                ),
            ] {
                let (e, line) = load(extra).unwrap_err();
                assert!(
                    e.contains(&format!("`{key}`")) && e.contains(says),
                    "{extra}: {e}"
                );
                let written = key.strip_prefix("backend.").unwrap();
                assert_eq!(line, Some(line_of(extra, &format!("{written} ="))), "{e}");
            }
            // The files backend makes no connections.
            let files = DOC.replace("kind = \"postgres\"\nurl_env = \"TOLLGATE_PG_URL\"", "");
            let e = Policy::from_toml(&format!("{files}tls = \"verify-full\"\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("`backend.tls`") && e.contains("postgres"), "{e}");
        }

        #[cfg(feature = "postgres")]
        #[test]
        fn a_root_certificate_that_does_not_read_is_refused_when_the_document_loads() {
            let dir = tempfile::tempdir().unwrap();
            let missing = dir.path().join("missing.pem");
            let junk = dir.path().join("junk.pem");
            std::fs::write(&junk, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
            for (path, says) in [
                (&missing, "cannot read CA file"),
                (&junk, "not valid PEM"),
                (&dir.path().to_path_buf(), "not a regular file"),
            ] {
                let extra = format!("tls = \"verify-full\"\ntls_root_cert = {path:?}\n");
                let (e, line) = load(&extra).unwrap_err();
                assert!(
                    e.contains("`backend.tls_root_cert`") && e.contains(says),
                    "{e}"
                );
                assert_eq!(line, Some(line_of(&extra, "tls_root_cert =")), "{e}");
            }
            // A CA certificate loads.
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let key = rcgen::KeyPair::generate().unwrap();
            let ca = dir.path().join("ca.pem");
            std::fs::write(&ca, params.self_signed(&key).unwrap().pem()).unwrap();
            let s = load(&format!("tls = \"verify-full\"\ntls_root_cert = {ca:?}\n")).unwrap();
            assert_eq!(s.tls_root_cert.as_deref(), Some(ca.as_path()));
        }
    }
}
