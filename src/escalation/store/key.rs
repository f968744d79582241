//! The secret that authenticates the records of a [`FileApprovalStore`](super::FileApprovalStore).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The key that MACs every record (and the head) of a [`FileApprovalStore`](super::FileApprovalStore),
/// with the id that names it in each record so a rotated key stays identifiable. Configured
/// like the audit trail's [`CheckpointKey`](crate::audit::file::CheckpointKey): an id of 1-64
/// characters of `[A-Za-z0-9._-]` and a secret of at least 32 bytes, from code, hex or a key
/// file `<key id>:<hex secret>`.
///
/// The process that writes the store holds the key; whoever can reach the file but not the key
/// can neither append a record (an approval by an outsider), change one, nor remove one
/// unnoticed (see the [store docs](super::FileApprovalStore)). The key that binds approved
/// arguments ([`ArgsKey::from_store_key`](crate::escalation::ArgsKey::from_store_key)) is derived
/// from it, so it also keeps the argument hashes in records, tickets and requests from being
/// tested against guesses of secret values. Use a key of its own, not the audit key: the two
/// protect different files and rotate independently.
///
/// The secret lives in a [`secrecy`] box: `Debug` shows the id only. Cloning shares the secret.
///
/// ```
/// use tollgate::escalation::StoreKey;
///
/// let key = StoreKey::from_hex("approvals-2026", &"cd".repeat(32))?;
/// assert_eq!(key.id(), "approvals-2026");
/// assert!(!format!("{key:?}").contains("cdcd"));
/// assert!(StoreKey::new("k", b"too short".to_vec()).is_err());
/// # Ok::<(), tollgate::escalation::StoreKeyError>(())
/// ```
#[derive(Clone)]
pub struct StoreKey {
    inner: Arc<KeyInner>,
}

struct KeyInner {
    id: Box<str>,
    secret: SecretSlice<u8>,
}

/// A store key could not be built or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreKeyError {
    /// The secret is shorter than [`StoreKey::MIN_SECRET_BYTES`].
    #[error(
        "approval store key `{id}`: the secret is {len} bytes, at least {} are required",
        StoreKey::MIN_SECRET_BYTES
    )]
    TooShort {
        /// The key's id.
        id: String,
        /// The secret's length in bytes.
        len: usize,
    },
    /// The key id is not 1-64 characters of `[A-Za-z0-9._-]`.
    #[error(
        "approval store key id {id:?} is invalid: use 1-64 characters of letters, digits, `.`, `_` or `-`"
    )]
    BadId {
        /// The id given.
        id: String,
    },
    /// The secret is not an even number of hexadecimal digits.
    #[error(
        "approval store key `{id}`: the secret is not hexadecimal (an even number of 0-9, a-f)"
    )]
    BadHex {
        /// The key's id.
        id: String,
    },
    /// A key file could not be read or is not `<key id>:<hex secret>`.
    #[error("approval store key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the secret).
        reason: String,
    },
}

impl StoreKey {
    /// The shortest secret accepted: 32 bytes (the size of a SHA-256 output).
    pub const MIN_SECRET_BYTES: usize = 32;

    /// A key named `id` with `secret` (at least [`MIN_SECRET_BYTES`](Self::MIN_SECRET_BYTES)).
    pub fn new(id: &str, secret: Vec<u8>) -> Result<Self, StoreKeyError> {
        let secret = SecretSlice::from(secret);
        if !valid_id(id) {
            return Err(StoreKeyError::BadId { id: id.to_owned() });
        }
        let len = secret.expose_secret().len();
        if len < Self::MIN_SECRET_BYTES {
            return Err(StoreKeyError::TooShort {
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
    pub fn from_hex(id: &str, hex: &str) -> Result<Self, StoreKeyError> {
        let secret = crate::hex::decode(hex.trim().as_bytes())
            .ok_or_else(|| StoreKeyError::BadHex { id: id.to_owned() })?;
        Self::new(id, secret)
    }

    /// Reads a key file: one line `<key id>:<hex secret>` (surrounding whitespace ignored), the
    /// format the audit trail's key files use.
    pub fn from_key_file(path: impl AsRef<Path>) -> Result<Self, StoreKeyError> {
        let path = path.as_ref();
        let bad = |reason: String| StoreKeyError::KeyFile {
            path: path.to_owned(),
            reason,
        };
        let bytes = SecretSlice::from(std::fs::read(path).map_err(|e| bad(e.to_string()))?);
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

    /// HMAC-SHA-256 over `domain || key_id || "\n" || seq || "\n" || hash_hex`.
    fn mac(&self, domain: &[u8], seq: u64, hash_hex: &[u8]) -> HmacSha256 {
        // `Hmac::new_from_slice` accepts keys of any length; the fallback cannot happen.
        let mut mac = HmacSha256::new_from_slice(self.inner.secret.expose_secret())
            .unwrap_or_else(|_| HmacSha256::new(&Default::default()));
        mac.update(domain);
        mac.update(self.inner.id.as_bytes());
        mac.update(b"\n");
        mac.update(seq.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(hash_hex);
        mac
    }

    /// A secret for another purpose, independent of the record MACs: `HMAC-SHA-256(secret,
    /// domain || key_id)` (see [`ArgsKey::from_store_key`](crate::escalation::ArgsKey::from_store_key)).
    pub(crate) fn derive(&self, domain: &[u8]) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(self.inner.secret.expose_secret())
            .unwrap_or_else(|_| HmacSha256::new(&Default::default()));
        mac.update(domain);
        mac.update(self.inner.id.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// The MAC as 64 lower-case hex digits.
    pub(super) fn sign(&self, domain: &[u8], seq: u64, hash_hex: &[u8]) -> [u8; 64] {
        let tag = self.mac(domain, seq, hash_hex).finalize().into_bytes();
        let mut out = Vec::with_capacity(64);
        crate::hex::encode_into(&mut out, &tag);
        let mut hex = [0u8; 64];
        hex.copy_from_slice(&out);
        hex
    }

    /// Constant-time check of a hex MAC.
    pub(super) fn verify(&self, domain: &[u8], seq: u64, hash_hex: &[u8], mac_hex: &[u8]) -> bool {
        match crate::hex::decode(mac_hex) {
            Some(tag) if tag.len() == 32 => {
                self.mac(domain, seq, hash_hex).verify_slice(&tag).is_ok()
            }
            _ => false,
        }
    }
}

/// Whether `id` is 1-64 characters of `[A-Za-z0-9._-]` (so it is written into JSON unescaped).
pub(super) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreKey")
            .field("id", &self.inner.id)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

/// The key that signs new records and the retired keys older records may carry.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    pub(super) current: StoreKey,
    pub(super) retired: Vec<StoreKey>,
}

impl Keys {
    pub(super) fn find(&self, id: &str) -> Option<&StoreKey> {
        std::iter::once(&self.current)
            .chain(&self.retired)
            .find(|k| k.id() == id)
    }
}
