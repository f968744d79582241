//! Checkpoint keys (HMAC-SHA-256) and the checkpoint cadence.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use sha2::Sha256;

use super::CHECKPOINT_MAC_DOMAIN;
use super::record::{Hex64, hex64};
use super::sink::refused;
use crate::audit::AuditError;

// ------------------------------------------------------------------------------------------------
// Checkpoint keys
// ------------------------------------------------------------------------------------------------

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// The secret that signs (writer) and checks (auditor) checkpoints, with the id that names it in
/// every checkpoint record so a rotated key stays identifiable.
///
/// The secret lives in a [`secrecy`] box: `Debug` shows the id only. Cloning shares the secret.
/// Two keys are equal when both id and secret are (compared in constant time).
///
/// ```
/// use tollgate::audit::file::CheckpointKey;
///
/// let key = CheckpointKey::from_hex("audit-2026", &"ab".repeat(32))?;
/// assert_eq!(key.id(), "audit-2026");
/// assert!(!format!("{key:?}").contains("abab"));
/// assert!(CheckpointKey::new("k", b"too short".to_vec()).is_err());
/// # Ok::<(), tollgate::audit::file::CheckpointKeyError>(())
/// ```
#[derive(Clone)]
pub struct CheckpointKey {
    pub(super) inner: Arc<KeyInner>,
}

pub(super) struct KeyInner {
    pub(super) id: Box<str>,
    pub(super) secret: SecretSlice<u8>,
}

/// A checkpoint key could not be built or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointKeyError {
    /// The secret is shorter than [`CheckpointKey::MIN_SECRET_BYTES`].
    #[error(
        "checkpoint key `{id}`: the secret is {len} bytes, at least {} are required",
        CheckpointKey::MIN_SECRET_BYTES
    )]
    TooShort {
        /// The key's id.
        id: String,
        /// The secret's length in bytes.
        len: usize,
    },
    /// The key id is not 1-64 characters of `[A-Za-z0-9._-]`.
    #[error(
        "checkpoint key id {id:?} is invalid: use 1-64 characters of letters, digits, `.`, `_` or `-`"
    )]
    BadId {
        /// The id given.
        id: String,
    },
    /// The secret is not an even number of hexadecimal digits.
    #[error("checkpoint key `{id}`: the secret is not hexadecimal (an even number of 0-9, a-f)")]
    BadHex {
        /// The key's id.
        id: String,
    },
    /// A key file could not be read or is not `<key id>:<hex secret>`.
    #[error("checkpoint key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the secret).
        reason: String,
    },
}

impl CheckpointKey {
    /// The shortest secret accepted: 32 bytes (the size of a SHA-256 output).
    pub const MIN_SECRET_BYTES: usize = 32;

    /// A key named `id` (1-64 characters of `[A-Za-z0-9._-]`) with `secret` (at least
    /// [`MIN_SECRET_BYTES`](Self::MIN_SECRET_BYTES) bytes).
    pub fn new(id: &str, secret: Vec<u8>) -> Result<Self, CheckpointKeyError> {
        let secret = SecretSlice::from(secret);
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(CheckpointKeyError::BadId { id: id.to_owned() });
        }
        let len = secret.expose_secret().len();
        if len < Self::MIN_SECRET_BYTES {
            return Err(CheckpointKeyError::TooShort {
                id: id.to_owned(),
                len,
            });
        }
        Ok(Self {
            inner: Arc::new(KeyInner {
                id: id.into(),
                secret,
            }),
        })
    }

    /// A key whose secret is given as hexadecimal digits (either case).
    pub fn from_hex(id: &str, hex: &str) -> Result<Self, CheckpointKeyError> {
        let secret = crate::hex::decode(hex.trim().as_bytes())
            .ok_or_else(|| CheckpointKeyError::BadHex { id: id.to_owned() })?;
        Self::new(id, secret)
    }

    /// Reads a key file: one line `<key id>:<hex secret>` (surrounding whitespace ignored). This
    /// is the format `tollgate audit`'s `--key-file` takes.
    pub fn from_key_file(path: impl AsRef<Path>) -> Result<Self, CheckpointKeyError> {
        let path = path.as_ref();
        let bad = |reason: String| CheckpointKeyError::KeyFile {
            path: path.to_owned(),
            reason,
        };
        let bytes = SecretSlice::from(fs::read(path).map_err(|e| bad(e.to_string()))?);
        let text = SecretString::from(
            std::str::from_utf8(bytes.expose_secret()).map_err(|_| bad("not UTF-8 text".into()))?,
        );
        let line = text.expose_secret().trim();
        let Some((id, hex)) = line.split_once(':') else {
            return Err(bad("expected one line `<key id>:<hex secret>`".into()));
        };
        if hex.contains(['\n', '\r']) {
            return Err(bad("expected one line `<key id>:<hex secret>`".into()));
        }
        Self::from_hex(id.trim(), hex).map_err(|e| bad(e.to_string()))
    }

    /// The key's id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// An HMAC-SHA-256 keyed with the secret, nothing fed yet.
    /// (Also used by the PostgreSQL audit sink for its checkpoints.)
    pub(crate) fn hmac(&self) -> HmacSha256 {
        // `Hmac::new_from_slice` accepts keys of any length; the fallback cannot happen.
        HmacSha256::new_from_slice(self.inner.secret.expose_secret())
            .unwrap_or_else(|_| HmacSha256::new(&Default::default()))
    }

    pub(super) fn mac(&self, fields: &MacFields<'_>) -> HmacSha256 {
        let mut mac = self.hmac();
        mac.update(CHECKPOINT_MAC_DOMAIN);
        mac.update(self.inner.id.as_bytes());
        mac.update(b"\n");
        mac.update(fields.seq.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(fields.head);
        mac.update(b"\n");
        mac.update(fields.time_unix_nano.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(fields.adopted.to_string().as_bytes());
        mac
    }

    pub(super) fn sign(&self, fields: &MacFields<'_>) -> Hex64 {
        let tag = self.mac(fields).finalize().into_bytes();
        hex64(&tag)
    }

    /// Constant-time check of a hex MAC.
    pub(super) fn check(&self, fields: &MacFields<'_>, mac_hex: &str) -> bool {
        match crate::hex::decode(mac_hex.as_bytes()) {
            Some(tag) if tag.len() == 32 => self.mac(fields).verify_slice(&tag).is_ok(),
            _ => false,
        }
    }
}

pub(super) struct MacFields<'a> {
    pub(super) seq: u64,
    pub(super) head: &'a [u8],
    pub(super) time_unix_nano: u64,
    pub(super) adopted: u64,
}

impl fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointKey")
            .field("id", &self.inner.id)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

impl PartialEq for CheckpointKey {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (
            self.inner.secret.expose_secret(),
            other.inner.secret.expose_secret(),
        );
        self.inner.id == other.inner.id
            && a.len() == b.len()
            && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl Eq for CheckpointKey {}

/// Keyed checkpoints: which key signs them and how often (see the [module docs](super)).
///
/// Defaults: every 10 000 records and every 1 000 ms while records are uncovered, plus on every
/// flush, on close and after a retention declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckpointConfig {
    /// The key that signs new checkpoints (and verifies existing ones on open).
    pub key: CheckpointKey,
    /// Earlier keys whose checkpoints may still be in the log: `open` verifies those with them.
    pub retired_keys: Vec<CheckpointKey>,
    /// A checkpoint after this many records (`None`: no count cadence; `Some(0)` is refused).
    pub every_records: Option<u64>,
    /// A checkpoint this many milliseconds after the first uncovered record (`None`: no time
    /// cadence; `Some(0)` is refused).
    pub every_ms: Option<u64>,
}

impl CheckpointConfig {
    /// Checkpoints signed with `key`, at the default cadence.
    pub fn new(key: CheckpointKey) -> Self {
        Self {
            key,
            retired_keys: Vec::new(),
            every_records: Some(10_000),
            every_ms: Some(1_000),
        }
    }

    /// Sets [`every_records`](Self::every_records).
    pub fn every_records(mut self, n: Option<u64>) -> Self {
        self.every_records = n;
        self
    }

    /// Sets [`every_ms`](Self::every_ms).
    pub fn every_ms(mut self, ms: Option<u64>) -> Self {
        self.every_ms = ms;
        self
    }

    /// Adds a [retired key](Self::retired_keys).
    pub fn retired_key(mut self, key: CheckpointKey) -> Self {
        self.retired_keys.push(key);
        self
    }

    pub(super) fn validate(&self) -> Result<(), AuditError> {
        if self.every_records == Some(0) {
            return Err(refused(
                "checkpoint.every_records must be at least 1 (or None)",
            ));
        }
        if self.every_ms == Some(0) {
            return Err(refused("checkpoint.every_ms must be at least 1 (or None)"));
        }
        Ok(())
    }

    pub(super) fn all_keys(&self) -> Vec<CheckpointKey> {
        std::iter::once(&self.key)
            .chain(&self.retired_keys)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::file::record::hex_str;

    #[test]
    fn checkpoint_mac_binds_every_field() {
        let key = CheckpointKey::new("k1", vec![3; 32]).unwrap();
        let other = CheckpointKey::new("k1", vec![4; 32]).unwrap();
        let head = [b'a'; 64];
        let f = |seq, time, adopted| MacFields {
            seq,
            head: &head,
            time_unix_nano: time,
            adopted,
        };
        let mac = hex_str(&key.sign(&f(5, 9, 0)));
        assert!(key.check(&f(5, 9, 0), &mac));
        assert!(!other.check(&f(5, 9, 0), &mac));
        assert!(!key.check(&f(6, 9, 0), &mac));
        assert!(!key.check(&f(5, 8, 0), &mac));
        assert!(!key.check(&f(5, 9, 1), &mac));
        assert!(!key.check(&f(5, 9, 0), &mac[..63]));
        assert!(!key.check(&f(5, 9, 0), "zz"));
        assert_ne!(key, other);
        assert_eq!(key, key.clone());
    }
}
