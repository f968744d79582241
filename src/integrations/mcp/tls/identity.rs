//! The gateway's client certificate for one `https://` server (mutual TLS): the PEM files of
//! `client_cert_file` (the certificate, optionally followed by its intermediates) and
//! `client_key_file` (exactly one private key), read and checked against each other when the
//! document is loaded and again at every (re)connection, with the gateway's own certificate's
//! validity dates: one that has expired or is not valid yet is refused there, by date, instead
//! of being sent to a server that can only answer with a TLS alert.
//!
//! The key never leaves this module except inside rustls's [`CertifiedKey`]: errors name the
//! file and what is wrong (never a byte of its content, not even the PEM decoder's message,
//! which can quote a line), [`ClientIdentity`]'s `Debug` names the certificates only, and the
//! buffer the key file is read into is zeroed when dropped.
//!
//! On unix the key file must not be open to other users, with the rule PostgreSQL's libpq
//! applies to its client keys: owned by anyone but root, no access for group or others
//! (`chmod 600`, what ssh demands); owned by root, the group may read it (`0640`: a key an
//! administrator, or a secret volume with a `fsGroup`, gave the gateway's group), nothing more.
//! Others never. There is deliberately no switch to skip the check (see the field's docs).

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::pem_files::read_bounded;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// Which of a client identity's two files an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdentityFile {
    /// `client_cert_file`.
    Cert,
    /// `client_key_file`.
    Key,
}

impl IdentityFile {
    /// The document field of this file.
    pub(crate) fn field(self) -> &'static str {
        match self {
            IdentityFile::Cert => "client_cert_file",
            IdentityFile::Key => "client_key_file",
        }
    }
}

/// A client certificate chain and the private key of its first certificate, checked to match.
#[derive(Clone)]
pub(crate) struct ClientIdentity(pub(crate) Arc<CertifiedKey>);

impl fmt::Debug for ClientIdentity {
    /// The number of certificates only: never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("certificates", &self.0.cert.len())
            .finish_non_exhaustive()
    }
}

/// Reads and checks the client certificate `cert` and its private key `key`, the certificate
/// valid at `now` (from its `notBefore` to its `notAfter`, both included, as RFC 5280 has it).
/// The error says which file is wrong and why, in a sentence naming the file; it never quotes
/// the key.
pub(crate) fn read_client_identity(
    cert: &Path,
    key: &Path,
    now: SystemTime,
) -> Result<ClientIdentity, (IdentityFile, String)> {
    let chain = read_chain(cert, key).map_err(|e| (IdentityFile::Cert, e))?;
    if let Some(problem) = validity_problem(&chain[0], now) {
        let shown = cert.display();
        return Err((
            IdentityFile::Cert,
            format!("the client certificate in `{shown}` {problem}"),
        ));
    }
    let key_der = read_key(key).map_err(|e| (IdentityFile::Key, e))?;
    let (cert_shown, key_shown) = (cert.display(), key.display());
    let signing_key = any_supported_type(&key_der).map_err(|_| {
        (
            IdentityFile::Key,
            format!(
                "the private key in `{key_shown}` is not an RSA, ECDSA (P-256, P-384) or \
                 Ed25519 key usable for TLS"
            ),
        )
    })?;
    drop(key_der);
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(ClientIdentity(Arc::new(certified))),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Err((
            IdentityFile::Key,
            format!(
                "the private key in `{key_shown}` does not belong to the certificate in \
                 `{cert_shown}` (the file's first certificate must be the gateway's own)"
            ),
        )),
        // Not provable either way: refused rather than sent (the ring keys always know their
        // public key, so this is not expected).
        Err(rustls::Error::InconsistentKeys(_)) => Err((
            IdentityFile::Key,
            format!(
                "cannot check that the private key in `{key_shown}` belongs to the certificate \
                 in `{cert_shown}`"
            ),
        )),
        Err(e) => Err((
            IdentityFile::Cert,
            format!("the first certificate in `{cert_shown}` cannot be parsed: {e}"),
        )),
    }
}

/// The certificates of `path`, the gateway's own first. A private key in the file is refused
/// unless the file is the key file itself (whose permissions are checked): certificate files
/// are usually readable by everyone.
fn read_chain(path: &Path, key_path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let pem = read_bounded(path, "client certificate", |_| Ok(()))?;
    let mut chain = Vec::new();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        chain.push(cert.map_err(|e| format!("`{shown}` is not valid PEM: {}", pem_problem(&e)))?);
    }
    if chain.is_empty() {
        return Err(format!(
            "client certificate file `{shown}` holds no PEM `CERTIFICATE` block"
        ));
    }
    if path != key_path && PrivateKeyDer::pem_slice_iter(&pem).next().is_some() {
        return Err(format!(
            "client certificate file `{shown}` also holds a private key: keep the key only in \
             `client_key_file`, whose permissions the gateway checks"
        ));
    }
    Ok(chain)
}

/// Why `cert` is not valid at `now`, if it is not: expired, not valid yet, or unreadable dates.
fn validity_problem(cert: &CertificateDer<'_>, now: SystemTime) -> Option<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Some("cannot be parsed as an X.509 certificate".into());
    };
    let validity = parsed.validity();
    let not_before = i128::from(validity.not_before.timestamp());
    let not_after = i128::from(validity.not_after.timestamp());
    // Whole seconds, as the certificate's dates are; a clock before 1970 reads as 1970.
    let clock = i128::from(now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
    if clock > not_after {
        Some(format!(
            "expired at {} (the clock reads {}): renew it; a server refuses an expired \
             certificate",
            rfc3339(not_after),
            rfc3339(clock)
        ))
    } else if clock < not_before {
        Some(format!(
            "is not valid before {} (the clock reads {}): check this host's clock or the \
             certificate's dates",
            rfc3339(not_before),
            rfc3339(clock)
        ))
    } else {
        None
    }
}

/// Seconds since 1970 as an RFC 3339 UTC date; outside what RFC 3339 writes (before 1970,
/// after 9999) as seconds, since humantime refuses those (its `Display` errs, which
/// `to_string` would turn into a panic).
fn rfc3339(secs: i128) -> String {
    const LAST_SECOND_OF_9999: u64 = 253_402_300_799;
    match u64::try_from(secs) {
        Ok(s) if s <= LAST_SECOND_OF_9999 => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s)).to_string()
        }
        _ => format!("{secs} s from 1970-01-01T00:00:00Z"),
    }
}

/// The one private key of `path` (PKCS#8, PKCS#1 or SEC1 PEM), after the file's permissions
/// passed [`mode_problem`].
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let shown = path.display();
    let pem = read_bounded(path, "client key", |meta| match mode_problem(meta, path) {
        Some(problem) => Err(format!("client key file `{shown}` {problem}")),
        None => Ok(()),
    })?;
    let mut keys = Vec::new();
    for key in PrivateKeyDer::pem_slice_iter(&pem) {
        keys.push(key.map_err(|e| format!("`{shown}` is not valid PEM: {}", pem_problem(&e)))?);
    }
    match keys.len() {
        1 => Ok(keys.remove(0)),
        0 if memchr::memmem::find(&pem, b"-----BEGIN ENCRYPTED PRIVATE KEY-----").is_some() => {
            Err(format!(
                "the private key in `{shown}` is encrypted and the gateway has no passphrase: \
                 store it unencrypted, readable only by the gateway's user \
                 (`openssl pkey -in {shown} -out <new file>`)"
            ))
        }
        0 => Err(format!(
            "client key file `{shown}` holds no PEM private key (`PRIVATE KEY`, \
             `RSA PRIVATE KEY` or `EC PRIVATE KEY` block)"
        )),
        n => Err(format!(
            "client key file `{shown}` holds {n} private keys: exactly one is needed"
        )),
    }
}

/// What is wrong with a PEM file, without the decoder's own message (which quotes lines).
fn pem_problem(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a block has no `-----END` line",
        pem::Error::IllegalSectionStart { .. } => "a `-----BEGIN` line is malformed",
        pem::Error::Base64Decode(_) => "a block is not valid base64",
        pem::Error::SectionTooLarge => "a block is too large",
        _ => "cannot be decoded",
    }
}

/// Why a key file with this metadata is open to other users, if it is (unix; see the module
/// docs for the rule). `None` on other platforms, whose permissions are not modes.
#[cfg(unix)]
fn mode_problem(meta: &std::fs::Metadata, path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let mode = meta.mode() & 0o777;
    let root_owned = meta.uid() == 0;
    // Root-owned: the group may read (0o040); otherwise nothing for group or others.
    let forbidden = if root_owned { 0o037 } else { 0o077 };
    if mode & forbidden == 0 {
        return None;
    }
    Some(format!(
        "has mode {mode:04o}: a private key must not be open to other users \
         (run `chmod 600 {}`{})",
        path.display(),
        if root_owned {
            "; a key owned by root may also be 0640, readable by its group"
        } else {
            ""
        }
    ))
}

/// Why a key file with this metadata is open to other users: never, off unix.
#[cfg(not(unix))]
fn mode_problem(_meta: &std::fs::Metadata, _path: &Path) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, date_time_ymd};

    /// A self-signed certificate valid from `from` to `to` (year, month, day at 00:00:00 UTC).
    fn cert(from: (i32, u8, u8), to: (i32, u8, u8)) -> CertificateDer<'static> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.not_before = date_time_ymd(from.0, from.1, from.2);
        params.not_after = date_time_ymd(to.0, to.1, to.2);
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    fn at(rfc3339: &str) -> SystemTime {
        humantime::parse_rfc3339(rfc3339).unwrap()
    }

    #[test]
    fn a_certificate_is_valid_from_its_not_before_to_its_not_after_both_included() {
        let c = cert((2026, 1, 1), (2027, 1, 1));
        for inside in [
            "2026-01-01T00:00:00Z",
            "2026-06-15T12:00:00Z",
            "2027-01-01T00:00:00Z",
        ] {
            assert_eq!(validity_problem(&c, at(inside)), None, "{inside}");
        }
        let late = validity_problem(&c, at("2027-01-01T00:00:01Z")).unwrap();
        assert_eq!(
            late,
            "expired at 2027-01-01T00:00:00Z (the clock reads 2027-01-01T00:00:01Z): renew it; \
             a server refuses an expired certificate"
        );
        let early = validity_problem(&c, at("2025-12-31T23:59:59Z")).unwrap();
        assert!(
            early.starts_with(
                "is not valid before 2026-01-01T00:00:00Z (the clock reads 2025-12-31T23:59:59Z)"
            ),
            "{early}"
        );
    }

    #[test]
    fn dates_outside_what_rfc3339_writes_are_written_as_seconds_without_panicking() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(
            rfc3339(253_402_300_800),
            "253402300800 s from 1970-01-01T00:00:00Z"
        );
        assert_eq!(rfc3339(-1), "-1 s from 1970-01-01T00:00:00Z");
        // A certificate from before 1970 that is long expired, seen from a clock before 1970.
        let old = cert((1960, 1, 1), (1965, 1, 1));
        let problem = validity_problem(&old, UNIX_EPOCH - Duration::from_secs(10)).unwrap();
        assert!(problem.starts_with("expired at -1"), "{problem}");
    }

    #[test]
    fn bytes_that_are_not_a_certificate_are_a_problem_not_a_panic() {
        let junk = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
        assert_eq!(
            validity_problem(&junk, SystemTime::now()).as_deref(),
            Some("cannot be parsed as an X.509 certificate")
        );
    }
}
