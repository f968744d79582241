//! How values are written into records: sensitive values (a placeholder or a keyed hash), and
//! values too large or too deeply nested to be written as they are.
//!
//! # Oversized and too-deep values
//!
//! An agent chooses its arguments, its tool names, its call ids and its reasoning; a tool chooses
//! its output and its error text. None of them may fill the disk through the audit trail, and
//! none may produce a record that a reader cannot read. So every value an event holds is
//! bounded when it is written, by every sink:
//!
//! - a value whose written form would exceed [`Redaction::value_limit`] bytes (default
//!   [`DEFAULT_MAX_VALUE_BYTES`], 64 KiB) is written as
//!   `{"tollgate.omitted":"too_large","bytes":N,"hash":H,"prefix":P}`;
//! - a JSON value (arguments) nested deeper than
//!   `MAX_DEPTH_CAP` (64: `{}` is depth 1; the one nesting limit every writer and reader of
//!   tollgate's records shares) is never
//!   written as JSON: it becomes `{"tollgate.omitted":"too_deep","bytes":N,"hash":H,"prefix":P}`.
//!
//! `N` is the length in bytes of the value as received (a string's UTF-8 bytes, raw argument
//! text as given, a parsed value's compact JSON), `H` its hash and `P` its first
//! [`Redaction::prefix_limit`] bytes (default [`DEFAULT_PREFIX_BYTES`], cut back to a character
//! boundary). `H` is `"hmac-sha256:<key id>:<64 hex>"` under the redaction's key when it has one
//! ([`Redaction::keyed_hash`]), otherwise a plain `"sha256:<64 hex>"`: the prefix says which.
//!
//! The hash and the prefix are only ever taken of values already redacted: a secret value is
//! replaced by its placeholder first, and arguments of a tool with marked fields that cannot be
//! redacted (raw text that does not parse, or text over
//! [`MAX_EVENT_BYTES`](super::file::MAX_EVENT_BYTES) that is not even parsed) are written as
//! `{"tollgate.omitted":"too_large","bytes":N,"redacted":true}` or the unparseable placeholder,
//! with neither hash nor prefix. (A plain SHA-256 of a low-entropy secret would be a leak: anyone
//! could try every candidate.)
//!
//! With every value bounded, an event stays far below the file sink's
//! [`MAX_EVENT_BYTES`](super::file::MAX_EVENT_BYTES), so an oversized attempt is always recorded
//! instead of being refused, and an event is nested at most `MAX_DEPTH_CAP + 1` deep, within
//! what every reader (verify, query, retention) accepts.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{AuditError, SECRET_PLACEHOLDER, SENSITIVE_PLACEHOLDER};
use crate::boundary::Sensitivity;

/// The default [`Redaction::value_limit`]: 64 KiB.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 64 * 1024;
/// The largest [`Redaction::value_limit`] accepted: 512 KiB. An event holds a few dozen values
/// at most, so this keeps every event below the file sink's 16 MiB record limit.
pub const MAX_VALUE_BYTES_LIMIT: usize = 512 * 1024;
/// The smallest [`Redaction::value_limit`] accepted: 256 bytes.
pub const MIN_VALUE_BYTES_LIMIT: usize = 256;
/// The default [`Redaction::prefix_limit`]: 64 bytes.
pub const DEFAULT_PREFIX_BYTES: usize = 64;
/// The largest [`Redaction::prefix_limit`] accepted: 1 KiB.
pub const MAX_PREFIX_BYTES: usize = 1024;

/// How a sink writes values: those marked *sensitive* (secret values are never written, whatever
/// this says), and those too large or too deeply nested to be written as they are (see the
/// [module docs](self)). The default is [`Redaction::placeholder`] with the default limits.
///
/// ```
/// use tollgate::audit::Redaction;
///
/// let hashed = Redaction::keyed_hash("k2026", b"a key of at least 32 bytes, kept in a vault".to_vec())?
///     .max_value_bytes(16 * 1024)?
///     .prefix_bytes(32)?;
/// assert!(format!("{hashed:?}").contains("k2026") && !format!("{hashed:?}").contains("vault"));
/// assert_eq!((hashed.value_limit(), hashed.prefix_limit()), (16 * 1024, 32));
/// assert!(Redaction::placeholder().max_value_bytes(10).is_err());
/// # Ok::<(), tollgate::audit::AuditError>(())
/// ```
#[derive(Clone)]
pub struct Redaction {
    hash: Option<Arc<HashKey>>,
    max_value_bytes: usize,
    prefix_bytes: usize,
}

struct HashKey {
    id: Box<str>,
    key: SecretSlice<u8>,
}

impl Default for Redaction {
    fn default() -> Self {
        Self {
            hash: None,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            prefix_bytes: DEFAULT_PREFIX_BYTES,
        }
    }
}

impl fmt::Debug for Redaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.hash {
            None => f.write_str("Redaction::placeholder")?,
            Some(k) => write!(f, "Redaction::keyed_hash({:?}, [key hidden])", k.id)?,
        }
        write!(
            f,
            ".max_value_bytes({}).prefix_bytes({})",
            self.max_value_bytes, self.prefix_bytes
        )
    }
}

/// Two redactions are equal when they write the same thing: both placeholders, or keyed hashes
/// with the same key id and key, and the same limits.
impl PartialEq for Redaction {
    fn eq(&self, other: &Self) -> bool {
        let same_hash = match (&self.hash, &other.hash) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                let (ka, kb) = (a.key.expose_secret(), b.key.expose_secret());
                // Constant time in the key bytes (lengths are not secret).
                a.id == b.id
                    && ka.len() == kb.len()
                    && ka.iter().zip(kb).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
            }
            _ => false,
        };
        same_hash
            && self.max_value_bytes == other.max_value_bytes
            && self.prefix_bytes == other.prefix_bytes
    }
}

impl Eq for Redaction {}

fn refuse(reason: String) -> AuditError {
    AuditError::Refused {
        sink: "redaction",
        reason,
    }
}

impl Redaction {
    /// `true` if sensitive values are written as a keyed hash.
    pub fn is_keyed(&self) -> bool {
        self.hash.is_some()
    }

    /// Sensitive values become `"[REDACTED:sensitive]"`.
    pub fn placeholder() -> Self {
        Self::default()
    }

    /// Sensitive values become `"hmac-sha256:<key_id>:<hex>"`, an HMAC-SHA-256 under `key` of the
    /// value's canonical JSON (object keys sorted). The key must be at least 32 bytes; `key_id`
    /// (1–64 characters of `[A-Za-z0-9._-]`) names it in every record so a rotated key stays
    /// identifiable. The same key hashes oversized values (see the [module docs](self)).
    pub fn keyed_hash(key_id: &str, key: Vec<u8>) -> Result<Self, AuditError> {
        if key.len() < 32 {
            return Err(refuse(
                "the keyed-hash key must be at least 32 bytes".into(),
            ));
        }
        if key_id.is_empty()
            || key_id.len() > 64
            || !key_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(refuse(
                "the key id must be 1-64 characters of letters, digits, `.`, `_` or `-`".into(),
            ));
        }
        Ok(Self {
            hash: Some(Arc::new(HashKey {
                id: key_id.into(),
                key: key.into(),
            })),
            ..Self::default()
        })
    }

    /// Sets the largest written form of one value, in bytes (between
    /// [`MIN_VALUE_BYTES_LIMIT`] and [`MAX_VALUE_BYTES_LIMIT`]); a larger value is written as a
    /// placeholder with its size, hash and prefix.
    pub fn max_value_bytes(mut self, bytes: usize) -> Result<Self, AuditError> {
        if !(MIN_VALUE_BYTES_LIMIT..=MAX_VALUE_BYTES_LIMIT).contains(&bytes) {
            return Err(refuse(format!(
                "max_value_bytes is {bytes}: it must be between {MIN_VALUE_BYTES_LIMIT} and \
                 {MAX_VALUE_BYTES_LIMIT}"
            )));
        }
        self.max_value_bytes = bytes;
        Ok(self)
    }

    /// Sets how many leading bytes of an omitted value its placeholder keeps (at most
    /// [`MAX_PREFIX_BYTES`]; 0 keeps none).
    pub fn prefix_bytes(mut self, bytes: usize) -> Result<Self, AuditError> {
        if bytes > MAX_PREFIX_BYTES {
            return Err(refuse(format!(
                "prefix_bytes is {bytes}: it must be at most {MAX_PREFIX_BYTES}"
            )));
        }
        self.prefix_bytes = bytes;
        Ok(self)
    }

    /// The largest written form of one value, in bytes.
    pub fn value_limit(&self) -> usize {
        self.max_value_bytes
    }

    /// How many leading bytes of an omitted value its placeholder keeps.
    pub fn prefix_limit(&self) -> usize {
        self.prefix_bytes
    }

    /// What a marked value is replaced with.
    pub(super) fn replacement(&self, class: Sensitivity, v: &Value) -> Value {
        match (class, &self.hash) {
            (Sensitivity::Sensitive, Some(k)) => {
                let tag = k.mac(&serde_json::to_vec(v).unwrap_or_default());
                let mut s = Vec::with_capacity(80);
                k.write_tag(&mut s, &tag);
                Value::from(String::from_utf8(s).unwrap_or_default())
            }
            (Sensitivity::Sensitive, None) => Value::from(SENSITIVE_PLACEHOLDER),
            (Sensitivity::Secret, _) => Value::from(SECRET_PLACEHOLDER),
        }
    }

    /// Writes the placeholder of a value that is not written as it is: `raw` is the value as
    /// received (already redacted), which gives its size, hash and prefix.
    pub(super) fn write_omitted(&self, out: &mut Vec<u8>, why: Omitted, raw: &[u8]) {
        out.extend_from_slice(b"{\"tollgate.omitted\":\"");
        out.extend_from_slice(why.as_str().as_bytes());
        out.extend_from_slice(b"\",\"bytes\":");
        super::json::u64_to(out, raw.len() as u64);
        out.extend_from_slice(b",\"hash\":\"");
        match &self.hash {
            Some(k) => k.write_tag(out, &k.mac(raw)),
            None => {
                out.extend_from_slice(b"sha256:");
                crate::hex::encode_into(out, &Sha256::digest(raw));
            }
        }
        out.extend_from_slice(b"\",\"prefix\":");
        let mut end = self.prefix_bytes.min(raw.len());
        // `raw` is UTF-8 text here (strings, JSON text); cut back to a character boundary.
        let text = loop {
            match std::str::from_utf8(&raw[..end]) {
                Ok(t) => break t,
                Err(e) => end = e.valid_up_to(),
            }
        };
        super::json::string(out, text);
        out.push(b'}');
    }

    /// The placeholder of a value that could not be redacted, so neither hash nor prefix may be
    /// taken of it.
    pub(super) fn write_omitted_unredactable(out: &mut Vec<u8>, why: Omitted, bytes: usize) {
        out.extend_from_slice(b"{\"tollgate.omitted\":\"");
        out.extend_from_slice(why.as_str().as_bytes());
        out.extend_from_slice(b"\",\"bytes\":");
        super::json::u64_to(out, bytes as u64);
        out.extend_from_slice(b",\"redacted\":true}");
    }
}

impl HashKey {
    fn mac(&self, bytes: &[u8]) -> [u8; 32] {
        // `Hmac::new_from_slice` accepts keys of any length; the fallback cannot happen.
        let mut mac = Hmac::<Sha256>::new_from_slice(self.key.expose_secret())
            .unwrap_or_else(|_| Hmac::<Sha256>::new(&Default::default()));
        mac.update(bytes);
        mac.finalize().into_bytes().into()
    }

    /// `hmac-sha256:<id>:<hex>`.
    fn write_tag(&self, out: &mut Vec<u8>, tag: &[u8; 32]) {
        out.extend_from_slice(b"hmac-sha256:");
        out.extend_from_slice(self.id.as_bytes());
        out.push(b':');
        crate::hex::encode_into(out, tag);
    }
}

/// Why a value was not written as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Omitted {
    /// Its written form would exceed the limit.
    TooLarge,
    /// It is nested deeper than `MAX_DEPTH_CAP`.
    TooDeep,
}

impl Omitted {
    fn as_str(self) -> &'static str {
        match self {
            Omitted::TooLarge => "too_large",
            Omitted::TooDeep => "too_deep",
        }
    }
}

/// Whether `v` nests arrays and objects deeper than `max` (`{}` has depth 1). Stops descending
/// at `max + 1`, so its own recursion is bounded whatever `v` is. The reference the audit
/// writer's one-walk encoder (`json::compact`) is tested against.
#[cfg(test)]
pub(super) fn deeper_than(v: &Value, max: usize) -> bool {
    fn go(v: &Value, left: usize) -> bool {
        match v {
            Value::Array(a) => match left.checked_sub(1) {
                None => true,
                Some(left) => a.iter().any(|c| go(c, left)),
            },
            Value::Object(o) => match left.checked_sub(1) {
                None => true,
                Some(left) => o.values().any(|c| go(c, left)),
            },
            _ => false,
        }
    }
    go(v, max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn depth_counts_containers_like_the_raw_scanner() {
        assert!(!deeper_than(&json!(1), 0));
        assert!(deeper_than(&json!({}), 0));
        assert!(!deeper_than(&json!({}), 1));
        assert!(!deeper_than(&json!({"a": [1]}), 2));
        assert!(deeper_than(&json!({"a": [[]]}), 2));
        let mut v = json!(0);
        for _ in 0..70 {
            v = json!([v]);
        }
        assert!(deeper_than(&v, 64));
        assert!(!deeper_than(&v, 70));
        for (depth, text) in [(1, "{}"), (2, r#"{"a":[1]}"#), (3, "[[[]]]")] {
            let parsed: Value = serde_json::from_str(text).unwrap();
            let limits = crate::call::json::JsonLimits {
                max_bytes: 100,
                max_depth: depth,
            };
            assert!(crate::call::json::RawJson::parse(text, limits).is_ok());
            assert!(!deeper_than(&parsed, depth));
            assert!(deeper_than(&parsed, depth - 1));
        }
    }

    #[test]
    fn placeholders_carry_size_hash_and_a_prefix_cut_at_a_character() {
        let raw = "é".repeat(100); // 200 bytes
        let mut out = Vec::new();
        Redaction::placeholder()
            .prefix_bytes(5)
            .unwrap()
            .write_omitted(&mut out, Omitted::TooLarge, raw.as_bytes());
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["tollgate.omitted"], "too_large");
        assert_eq!(v["bytes"], 200);
        assert_eq!(v["prefix"], "éé");
        let want = format!(
            "sha256:{}",
            crate::hex::encode(&Sha256::digest(raw.as_bytes()))
        );
        assert_eq!(v["hash"], want);

        let mut out = Vec::new();
        let keyed = Redaction::keyed_hash("k1", vec![1; 32]).unwrap();
        keyed.write_omitted(&mut out, Omitted::TooDeep, b"[[[[");
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["tollgate.omitted"], "too_deep");
        assert!(v["hash"].as_str().unwrap().starts_with("hmac-sha256:k1:"));
        assert_eq!(v["prefix"], "[[[[");

        let mut out = Vec::new();
        Redaction::write_omitted_unredactable(&mut out, Omitted::TooLarge, 7);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"tollgate.omitted": "too_large", "bytes": 7, "redacted": true})
        );
    }

    #[test]
    fn limits_validate_and_take_part_in_equality() {
        assert!(Redaction::placeholder().max_value_bytes(255).is_err());
        assert!(
            Redaction::placeholder()
                .max_value_bytes(MAX_VALUE_BYTES_LIMIT + 1)
                .is_err()
        );
        assert!(
            Redaction::placeholder()
                .prefix_bytes(MAX_PREFIX_BYTES + 1)
                .is_err()
        );
        let a = Redaction::placeholder().max_value_bytes(1000).unwrap();
        assert_ne!(a, Redaction::placeholder());
        assert_eq!(a, Redaction::placeholder().max_value_bytes(1000).unwrap());
    }
}
