//! Derived tokens: self-describing, HMAC-SHA256-signed credentials that a
//! downstream service can verify with a shared key.
//!
//! # Format
//!
//! ```text
//! tg1.<kid>.<base64url(payload)>.<base64url(mac)>
//! ```
//!
//! * `tg1` is the format version. Any other prefix is rejected.
//! * `<kid>` names the signing key: 1 to 32 characters from `[A-Za-z0-9_-]`.
//! * `payload` is the compact JSON serialisation of [`TokenClaims`].
//! * `mac` is HMAC-SHA256 (32 bytes) over the ASCII text `tg1.<kid>.<payload b64>`,
//!   i.e. everything before the last dot. The key id and the version are
//!   therefore authenticated too: swapping the kid of a token invalidates it.
//!
//! Base64url is the RFC 4648 §5 alphabet without padding. Decoding is strict:
//! padding, characters outside the alphabet and non-canonical trailing bits are
//! rejected, so every token has exactly one textual form.
//!
//! # Security rationale
//!
//! * **Authenticate first, parse later.** [`TokenVerifier::verify`] checks the
//!   length, the shape and the MAC before the payload is JSON-parsed and before
//!   any claim (expiry included) is looked at: unauthenticated JSON is never
//!   fed to a parser and an attacker learns nothing from timing or error
//!   variants about claims they cannot sign.
//! * **Constant-time comparison.** The MAC is checked with
//!   [`hmac::Mac::verify_slice`], which compares in constant time, so a forger
//!   cannot discover a valid tag byte by byte.
//! * **Key id in the token.** The verifier picks exactly one key by id instead
//!   of trying every key it knows, which makes rotation cheap and prevents a
//!   token signed with one key from being "upgraded" to another.
//! * **Rotation with grace.** [`TokenSigner::rotate`] makes a new key current
//!   and *retires* the old one: it keeps verifying for `grace_secs` so tokens
//!   already in flight stay usable, then verification fails with
//!   [`VerifyError::KeyRetired`], and once the grace is over the key is dropped
//!   at the next rotation. The key ring lives behind an
//!   `Arc<ArcSwap<KeyRing>>`, so a rotation is a single atomic pointer swap and
//!   never blocks a verifier.
//! * **Claims are not encrypted.** The claims say which run may call which
//!   tool on which resource until when; they are not secret, and a service
//!   must be able to read them. Integrity is what matters and the MAC provides
//!   it. The *token as a whole* is a bearer credential, so [`TokenSigner::sign`]
//!   returns a [`SecretString`] whose `Debug` output is redacted.
//! * **Secrets never leak through formatting.** Key material is held in
//!   [`secrecy`] types (zeroized on drop); no `Debug`, `Display` or error value
//!   in this module contains key bytes or token text.
//!
//! # Time
//!
//! The module never reads the system clock: every time is unix seconds passed
//! in by the caller. `expires_at` is **exclusive** (a token is valid while
//! `now < expires_at`), a retired key verifies while `now < retired_at + grace`,
//! and a token whose `issued_at` lies more than [`CLOCK_SKEW_SECS`] in the
//! future is rejected with [`VerifyError::NotYetValid`].

use std::fmt;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use hmac::{Hmac, Mac};
use secrecy::zeroize::Zeroize;
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Version prefix of every token in this format.
pub const TOKEN_VERSION: &str = "tg1";
/// Longest token (in bytes) [`TokenVerifier::verify`] accepts; longer input is
/// rejected as malformed before any other work is done.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// How far in the future `issued_at` may lie before a token is "not yet valid".
pub const CLOCK_SKEW_SECS: u64 = 60;
/// Minimum secret length of a [`SigningKey`], in bytes.
pub const MIN_SECRET_LEN: usize = 32;
/// Maximum length of a key id, in characters.
pub const MAX_KID_LEN: usize = 32;
const MAC_LEN: usize = 32;

/// What a token authorises. Serialised as compact JSON inside the token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenClaims {
    /// Id of the credential this token was derived from.
    pub credential_id: String,
    /// The agent run the token was minted for.
    pub run: String,
    /// Tools the bearer may call.
    pub tools: Vec<String>,
    /// Permitted operations, e.g. `"read"` / `"write"`.
    pub operations: Vec<String>,
    /// A resource pattern such as `"matter/M-1001/*"`.
    pub resource: String,
    /// Issue time, unix seconds.
    pub issued_at: u64,
    /// Expiry, unix seconds, exclusive: valid while `now < expires_at`.
    pub expires_at: u64,
    /// 128 random bits as 32 lowercase hex chars (see [`TokenSigner::nonce`]).
    pub nonce: String,
}

/// Why a token was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The token is not in the `tg1` format (length, segments, version, key id
    /// syntax, base64url, MAC length, or authenticated-but-invalid JSON).
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// No key with this id is known to the verifier.
    #[error("unknown signing key id {0:?}")]
    UnknownKey(String),
    /// The MAC does not match: the token was tampered with or forged.
    #[error("bad token signature")]
    BadSignature,
    /// The signing key was retired and its grace period is over.
    #[error("signing key {kid:?} is retired")]
    KeyRetired {
        /// Id of the retired key.
        kid: String,
    },
    /// The token expired (`now >= expires_at`).
    #[error("token expired at {expired_at}")]
    Expired {
        /// The token's `expires_at`.
        expired_at: u64,
    },
    /// `issued_at` lies more than [`CLOCK_SKEW_SECS`] in the future.
    #[error("token not valid before {issued_at}")]
    NotYetValid {
        /// The token's `issued_at`.
        issued_at: u64,
    },
}

/// Errors creating keys, rotating, or drawing randomness.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The key id is empty, longer than [`MAX_KID_LEN`], or uses characters
    /// outside `[A-Za-z0-9_-]`.
    #[error("invalid key id {0:?}: need 1..=32 chars of [A-Za-z0-9_-]")]
    InvalidKeyId(String),
    /// The secret is shorter than [`MIN_SECRET_LEN`] bytes.
    #[error("signing key secret too short: {len} bytes, need at least 32")]
    KeyTooShort {
        /// Length of the rejected secret.
        len: usize,
    },
    /// A key with this id is already in the ring.
    #[error("key id {0:?} is already in the key ring")]
    DuplicateKeyId(String),
    /// The OS random number generator failed.
    #[error("random number generator failed: {0}")]
    Random(String),
}

/// A signing key: an id and at least 32 secret bytes. The secret is held in a
/// [`secrecy`] box (zeroized on drop) and redacted from `Debug`.
pub struct SigningKey {
    kid: String,
    secret: SecretSlice<u8>,
}

impl SigningKey {
    /// Creates a key from `secret`, which must be at least 32 bytes; `kid`
    /// must be 1..=32 chars of `[A-Za-z0-9_-]`. The passed vector is zeroized
    /// whether or not the key is accepted.
    pub fn new(kid: impl Into<String>, mut secret: Vec<u8>) -> Result<Self, TokenError> {
        let kid = kid.into();
        let checked = if !valid_kid(&kid) {
            Err(TokenError::InvalidKeyId(kid))
        } else if secret.len() < MIN_SECRET_LEN {
            Err(TokenError::KeyTooShort { len: secret.len() })
        } else {
            // Copy into an exact-size box so no spare capacity keeps a copy.
            let boxed: Box<[u8]> = secret.as_slice().into();
            Ok(Self {
                kid,
                secret: SecretSlice::from(boxed),
            })
        };
        secret.zeroize();
        checked
    }

    /// Creates a key with 32 fresh random bytes from the OS.
    pub fn generate(kid: impl Into<String>) -> Result<Self, TokenError> {
        let mut secret = vec![0u8; MIN_SECRET_LEN];
        getrandom::fill(&mut secret).map_err(|e| TokenError::Random(e.to_string()))?;
        Self::new(kid, secret)
    }

    /// The key id written into tokens signed with this key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    fn mac(&self) -> HmacSha256 {
        <HmacSha256 as Mac>::new_from_slice(self.secret.expose_secret())
            .expect("HMAC accepts keys of any length")
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Retirement {
    retired_at: u64,
    /// Exclusive end of the grace period.
    until: u64,
}

#[derive(Debug, Clone)]
struct RingEntry {
    key: Arc<SigningKey>,
    retired: Option<Retirement>,
}

/// The current key plus retired keys that still verify until their grace
/// ends. Shared between signer and verifier through `Arc<ArcSwap<KeyRing>>`
/// so rotation (a pointer swap) never blocks a reader.
///
/// In a signer's ring the first entry is the current (signing) key; a ring
/// built by [`TokenVerifier::from_keys`] holds only active keys.
#[derive(Debug)]
pub struct KeyRing {
    entries: Vec<RingEntry>,
}

impl KeyRing {
    /// Ids of all keys in the ring, current first.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.key.kid())
    }

    /// Whether a key with this id is in the ring (active or retired).
    pub fn contains(&self, kid: &str) -> bool {
        self.find(kid).is_some()
    }

    /// For a retired key, the (exclusive) end of its grace period; `None` for
    /// active or unknown keys.
    pub fn retired_until(&self, kid: &str) -> Option<u64> {
        self.find(kid)?.retired.map(|r| r.until)
    }

    fn find(&self, kid: &str) -> Option<&RingEntry> {
        self.entries.iter().find(|e| e.key.kid() == kid)
    }

    fn signing_key(&self) -> &SigningKey {
        &self
            .entries
            .first()
            .expect("a signer's ring always holds its current key")
            .key
    }
}

/// Mints tokens with the ring's current key.
#[derive(Clone)]
pub struct TokenSigner {
    ring: Arc<ArcSwap<KeyRing>>,
    /// Serialises rotations (writers only; readers never take it).
    rotation: Arc<Mutex<()>>,
    grace_secs: u64,
}

impl TokenSigner {
    /// A signer whose current key is `key`.
    ///
    /// `grace_secs`: how long a retired key keeps verifying (set it to at
    /// least the longest TTL you mint).
    pub fn new(key: SigningKey, grace_secs: u64) -> Self {
        let ring = KeyRing {
            entries: vec![RingEntry {
                key: Arc::new(key),
                retired: None,
            }],
        };
        Self {
            ring: Arc::new(ArcSwap::from_pointee(ring)),
            rotation: Arc::new(Mutex::new(())),
            grace_secs,
        }
    }

    /// Signs `claims` with the current key:
    /// `tg1.<kid>.<base64url(payload json)>.<base64url(mac)>`, the MAC being
    /// over `tg1.<kid>.<payload b64>`.
    ///
    /// Tokens longer than [`MAX_TOKEN_LEN`] will not verify; keep claims small.
    pub fn sign(&self, claims: &TokenClaims) -> SecretString {
        let ring = self.ring.load();
        let key = ring.signing_key();
        let payload = serde_json::to_vec(claims)
            .expect("TokenClaims holds only strings and integers; JSON encoding cannot fail");
        let len = TOKEN_VERSION.len()
            + 1
            + key.kid().len()
            + 1
            + b64_encoded_len(payload.len())
            + 1
            + b64_encoded_len(MAC_LEN);
        // Exact capacity: `into_boxed_str` below must not reallocate and leave
        // an unzeroized copy of the token behind.
        let mut token = String::with_capacity(len);
        token.push_str(TOKEN_VERSION);
        token.push('.');
        token.push_str(key.kid());
        token.push('.');
        b64_encode_into(&payload, &mut token);
        let mut mac = key.mac();
        mac.update(token.as_bytes());
        let tag = mac.finalize().into_bytes();
        token.push('.');
        b64_encode_into(&tag, &mut token);
        debug_assert_eq!(token.len(), len);
        SecretString::from(token)
    }

    /// Makes `key` current; the previous current key is retired at `now` and
    /// keeps verifying until `now + grace_secs` (exclusive), after which it
    /// yields [`VerifyError::KeyRetired`]. Keys retired longer than their
    /// grace (`now > retired_at + grace`) are dropped from the ring. Returns
    /// the retired key's id.
    ///
    /// Rejects a kid still in the ring (after dropping expired keys) with
    /// [`TokenError::DuplicateKeyId`]. Rotations are serialised among
    /// themselves; verifiers and signers are never blocked.
    pub fn rotate(&self, key: SigningKey, now: u64) -> Result<String, TokenError> {
        let _writer = self
            .rotation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = self.ring.load_full();
        let mut entries = Vec::with_capacity(old.entries.len() + 1);
        let mut retired_kid = String::new();
        for (i, entry) in old.entries.iter().enumerate() {
            let retired = match entry.retired {
                None if i == 0 => Retirement {
                    retired_at: now,
                    until: now.saturating_add(self.grace_secs),
                },
                None => continue, // unreachable for a signer's ring
                Some(r) if now > r.until => continue,
                Some(r) => r,
            };
            if i == 0 {
                retired_kid = entry.key.kid().to_owned();
            }
            entries.push(RingEntry {
                key: Arc::clone(&entry.key),
                retired: Some(retired),
            });
        }
        if entries.iter().any(|e| e.key.kid() == key.kid()) {
            return Err(TokenError::DuplicateKeyId(key.kid().to_owned()));
        }
        entries.insert(
            0,
            RingEntry {
                key: Arc::new(key),
                retired: None,
            },
        );
        self.ring.store(Arc::new(KeyRing { entries }));
        Ok(retired_kid)
    }

    /// Id of the key new tokens are signed with.
    pub fn current_kid(&self) -> String {
        self.ring.load().signing_key().kid().to_owned()
    }

    /// A snapshot of the current key ring.
    pub fn key_ring(&self) -> Arc<KeyRing> {
        self.ring.load_full()
    }

    /// A verifier sharing this signer's ring (sees rotations immediately).
    pub fn verifier(&self) -> TokenVerifier {
        TokenVerifier {
            ring: Arc::clone(&self.ring),
        }
    }

    /// A fresh 128-bit nonce as 32 lowercase hex chars (OS randomness).
    pub fn nonce() -> Result<String, TokenError> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|e| TokenError::Random(e.to_string()))?;
        Ok(crate::hex::encode(&bytes))
    }
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigner")
            .field("ring", &**self.ring.load())
            .field("grace_secs", &self.grace_secs)
            .finish_non_exhaustive()
    }
}

/// Verifies tokens, for the downstream service.
#[derive(Clone)]
pub struct TokenVerifier {
    ring: Arc<ArcSwap<KeyRing>>,
}

impl TokenVerifier {
    /// A standalone verifier for a service that holds the keys itself (no
    /// signer in-process). All keys are active (never retired). If several
    /// keys share an id, the first one is used and the others are ignored.
    pub fn from_keys(keys: Vec<SigningKey>) -> Self {
        let mut entries: Vec<RingEntry> = Vec::with_capacity(keys.len());
        for key in keys {
            if entries.iter().all(|e| e.key.kid() != key.kid()) {
                entries.push(RingEntry {
                    key: Arc::new(key),
                    retired: None,
                });
            }
        }
        Self {
            ring: Arc::new(ArcSwap::from_pointee(KeyRing { entries })),
        }
    }

    /// A snapshot of the key ring this verifier consults.
    pub fn key_ring(&self) -> Arc<KeyRing> {
        self.ring.load_full()
    }

    /// Checks, in this order: length, format, key id, MAC (constant time),
    /// retirement grace, then — only for an authenticated payload — the claims
    /// JSON, expiry (`now < expires_at`) and `issued_at <= now + 60`.
    pub fn verify(&self, token: &str, now: u64) -> Result<TokenClaims, VerifyError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(VerifyError::Malformed("token too long"));
        }
        let mut parts = token.split('.');
        let (Some(version), Some(kid), Some(payload_b64), Some(mac_b64), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(VerifyError::Malformed("expected 4 dot-separated segments"));
        };
        if version != TOKEN_VERSION {
            return Err(VerifyError::Malformed("unsupported token version"));
        }
        if !valid_kid(kid) {
            return Err(VerifyError::Malformed("invalid key id"));
        }
        let payload = b64_decode(payload_b64)
            .map_err(|_| VerifyError::Malformed("payload is not base64url"))?;
        let tag =
            b64_decode(mac_b64).map_err(|_| VerifyError::Malformed("mac is not base64url"))?;
        if tag.len() != MAC_LEN {
            return Err(VerifyError::Malformed("mac has the wrong length"));
        }

        let ring = self.ring.load();
        let entry = ring
            .find(kid)
            .ok_or_else(|| VerifyError::UnknownKey(kid.to_owned()))?;
        let signed_len = token.len() - mac_b64.len() - 1;
        let mut mac = entry.key.mac();
        mac.update(&token.as_bytes()[..signed_len]);
        mac.verify_slice(&tag)
            .map_err(|_| VerifyError::BadSignature)?;
        if let Some(r) = entry.retired
            && now >= r.until
        {
            return Err(VerifyError::KeyRetired {
                kid: kid.to_owned(),
            });
        }
        drop(ring);

        // Authenticated from here on.
        let claims: TokenClaims = serde_json::from_slice(&payload)
            .map_err(|_| VerifyError::Malformed("payload is not valid claims JSON"))?;
        if now >= claims.expires_at {
            return Err(VerifyError::Expired {
                expired_at: claims.expires_at,
            });
        }
        if claims.issued_at > now.saturating_add(CLOCK_SKEW_SECS) {
            return Err(VerifyError::NotYetValid {
                issued_at: claims.issued_at,
            });
        }
        Ok(claims)
    }
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("ring", &**self.ring.load())
            .finish()
    }
}

fn valid_kid(kid: &str) -> bool {
    (1..=MAX_KID_LEN).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

// ---------------------------------------------------------------------------
// base64url without padding (RFC 4648 §5), strict decoding.

const B64_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64_encoded_len(n: usize) -> usize {
    n / 3 * 4 + [0, 2, 3][n % 3]
}

fn b64_encode_into(input: &[u8], out: &mut String) {
    let sym = |v: u32| char::from(B64_ALPHABET[(v & 63) as usize]);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(sym(n >> (18 - 6 * i)));
        }
    }
}

#[cfg(test)]
fn b64_encode(input: &[u8]) -> String {
    let mut out = String::with_capacity(b64_encoded_len(input.len()));
    b64_encode_into(input, &mut out);
    out
}

/// Why strict base64url decoding failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum B64Error {
    /// A character outside the url-safe alphabet (this includes `=`).
    InvalidChar,
    /// Length ≡ 1 (mod 4) cannot encode whole bytes.
    InvalidLength,
    /// The unused low bits of the last character are not zero.
    NonCanonical,
}

fn b64_value(c: u8) -> Result<u32, B64Error> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => return Err(B64Error::InvalidChar),
    };
    Ok(u32::from(v))
}

fn b64_decode(input: &str) -> Result<Vec<u8>, B64Error> {
    let bytes = input.as_bytes();
    if bytes.len() % 4 == 1 {
        return Err(B64Error::InvalidLength);
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3 + 2);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= b64_value(c)? << (18 - 6 * i);
        }
        let full = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let produced = chunk.len() - 1; // 4 chars -> 3 bytes, 3 -> 2, 2 -> 1
        // Bits below the last produced byte must be zero (canonical form).
        if produced < 3 && full[produced..].iter().any(|&b| b != 0) {
            return Err(B64Error::NonCanonical);
        }
        out.extend_from_slice(&full[..produced]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_700_000_000;

    fn key(kid: &str, fill: u8) -> SigningKey {
        SigningKey::new(kid, vec![fill; 32]).expect("valid key")
    }

    fn claims(issued_at: u64, ttl: u64) -> TokenClaims {
        TokenClaims {
            credential_id: "cred-1".into(),
            run: "run-42".into(),
            tools: vec!["docs.search".into(), "docs.fetch".into()],
            operations: vec!["read".into()],
            resource: "matter/M-1001/*".into(),
            issued_at,
            expires_at: issued_at + ttl,
            nonce: TokenSigner::nonce().expect("nonce"),
        }
    }

    fn signer() -> TokenSigner {
        TokenSigner::new(key("k1", 7), 600)
    }

    fn segments(token: &str) -> Vec<String> {
        token.split('.').map(str::to_owned).collect()
    }

    /// Re-signs arbitrary payload bytes with `key`, for tests that need an
    /// authenticated but otherwise odd token.
    fn forge(key: &SigningKey, payload: &[u8]) -> String {
        let mut t = format!("{TOKEN_VERSION}.{}.{}", key.kid(), b64_encode(payload));
        let mut mac = key.mac();
        mac.update(t.as_bytes());
        let tag = mac.finalize().into_bytes();
        t.push('.');
        t.push_str(&b64_encode(&tag));
        t
    }

    #[test]
    fn round_trip_and_format() {
        let s = signer();
        let c = claims(NOW, 300);
        let token = s.sign(&c);
        let text = token.expose_secret();
        let seg = segments(text);
        assert_eq!(seg.len(), 4);
        assert_eq!((seg[0].as_str(), seg[1].as_str()), ("tg1", "k1"));
        assert_eq!(
            b64_decode(&seg[2]).unwrap(),
            serde_json::to_vec(&c).unwrap()
        );
        // The MAC is HMAC-SHA256 over "tg1.<kid>.<payload b64>".
        let mut mac = HmacSha256::new_from_slice(&[7u8; 32]).unwrap();
        mac.update(format!("tg1.k1.{}", seg[2]).as_bytes());
        assert_eq!(
            b64_decode(&seg[3]).unwrap(),
            mac.finalize().into_bytes().to_vec()
        );
        assert_eq!(s.verifier().verify(text, NOW + 10), Ok(c.clone()));
        let standalone = TokenVerifier::from_keys(vec![key("other", 1), key("k1", 7)]);
        assert_eq!(standalone.verify(text, NOW), Ok(c));
    }

    #[test]
    fn tampered_payload_byte_is_bad_signature() {
        let s = signer();
        let text = s.sign(&claims(NOW, 300)).expose_secret().to_owned();
        let seg = segments(&text);
        let mut payload = b64_decode(&seg[2]).unwrap();
        let pos = payload.windows(4).position(|w| w == b"read").unwrap();
        payload[pos] ^= 0x01; // "read" -> "sead"
        let forged = format!("{}.{}.{}.{}", seg[0], seg[1], b64_encode(&payload), seg[3]);
        assert_eq!(
            s.verifier().verify(&forged, NOW),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn tampered_mac_bit_is_bad_signature() {
        let s = signer();
        let text = s.sign(&claims(NOW, 300)).expose_secret().to_owned();
        let seg = segments(&text);
        for byte in [0, 15, 31] {
            let mut tag = b64_decode(&seg[3]).unwrap();
            tag[byte] ^= 0x01;
            let forged = format!("{}.{}.{}.{}", seg[0], seg[1], seg[2], b64_encode(&tag));
            assert_eq!(
                s.verifier().verify(&forged, NOW),
                Err(VerifyError::BadSignature)
            );
        }
    }

    #[test]
    fn swapped_kid_is_bad_signature() {
        let (a, b) = (key("a", 1), key("b", 2));
        let text = forge(&a, &serde_json::to_vec(&claims(NOW, 300)).unwrap());
        let swapped = text.replacen("tg1.a.", "tg1.b.", 1);
        let v = TokenVerifier::from_keys(vec![a, b]);
        assert!(v.verify(&text, NOW).is_ok());
        assert_eq!(v.verify(&swapped, NOW), Err(VerifyError::BadSignature));
    }

    #[test]
    fn different_key_with_same_kid_is_bad_signature() {
        let attacker = TokenSigner::new(key("k1", 0xAA), 600);
        let text = attacker.sign(&claims(NOW, 300));
        let v = signer().verifier();
        assert_eq!(
            v.verify(text.expose_secret(), NOW),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn unknown_kid_is_rejected() {
        let other = TokenSigner::new(key("zz", 7), 600);
        let text = other.sign(&claims(NOW, 300));
        assert_eq!(
            signer().verifier().verify(text.expose_secret(), NOW),
            Err(VerifyError::UnknownKey("zz".into()))
        );
    }

    #[test]
    fn truncated_token_never_verifies() {
        let s = signer();
        let v = s.verifier();
        let text = s.sign(&claims(NOW, 300)).expose_secret().to_owned();
        for cut in 0..text.len() {
            let err = v.verify(&text[..cut], NOW).unwrap_err();
            assert!(
                matches!(err, VerifyError::Malformed(_) | VerifyError::BadSignature),
                "prefix of len {cut}: {err:?}"
            );
        }
        let three: Vec<_> = segments(&text)[..3].to_vec();
        assert!(matches!(
            v.verify(&three.join("."), NOW),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn extra_segment_is_malformed() {
        let s = signer();
        let text = s.sign(&claims(NOW, 300)).expose_secret().to_owned();
        let v = s.verifier();
        for bad in [format!("{text}.x"), format!("{text}."), format!(".{text}")] {
            assert!(
                matches!(v.verify(&bad, NOW), Err(VerifyError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn base64_padding_is_malformed() {
        let s = signer();
        let text = s.sign(&claims(NOW, 300)).expose_secret().to_owned();
        let seg = segments(&text);
        let v = s.verifier();
        let padded_mac = format!("{}.{}.{}.{}=", seg[0], seg[1], seg[2], seg[3]);
        let padded_payload = format!("{}.{}.{}==.{}", seg[0], seg[1], seg[2], seg[3]);
        assert!(matches!(
            v.verify(&padded_mac, NOW),
            Err(VerifyError::Malformed(_))
        ));
        assert!(matches!(
            v.verify(&padded_payload, NOW),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn non_base64_chars_are_malformed() {
        let s = signer();
        let text = s.sign(&claims(NOW, 300)).expose_secret().to_owned();
        let seg = segments(&text);
        let v = s.verifier();
        for bad in ['+', '/', '!', ' ', 'é'] {
            let mut p: Vec<char> = seg[2].chars().collect();
            p[4] = bad;
            let p: String = p.into_iter().collect();
            let forged = format!("{}.{}.{}.{}", seg[0], seg[1], p, seg[3]);
            assert_eq!(
                v.verify(&forged, NOW),
                Err(VerifyError::Malformed("payload is not base64url"))
            );
        }
    }

    #[test]
    fn bad_version_kid_or_mac_length_is_malformed() {
        let s = signer();
        let text = s.sign(&claims(NOW, 300)).expose_secret().to_owned();
        let seg = segments(&text);
        let v = s.verifier();
        let cases = [
            format!("tg2.{}.{}.{}", seg[1], seg[2], seg[3]),
            format!("tg1.k!1.{}.{}", seg[2], seg[3]),
            format!("tg1..{}.{}", seg[2], seg[3]),
            format!("tg1.{}.{}.{}", "k".repeat(33), seg[2], seg[3]),
            format!("tg1.{}.{}.{}", seg[1], seg[2], &seg[3][..40]),
        ];
        for bad in cases {
            assert!(
                matches!(v.verify(&bad, NOW), Err(VerifyError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn oversize_token_is_malformed_even_if_validly_signed() {
        let s = signer();
        let mut c = claims(NOW, 300);
        c.resource = "x".repeat(MAX_TOKEN_LEN);
        let text = s.sign(&c);
        assert_eq!(
            s.verifier().verify(text.expose_secret(), NOW),
            Err(VerifyError::Malformed("token too long"))
        );
    }

    #[test]
    fn unauthenticated_payload_is_never_parsed_and_mac_precedes_expiry() {
        let s = signer();
        let v = s.verifier();
        // Garbage JSON with a wrong MAC: the MAC failure is reported, not a parse error.
        let garbage = format!(
            "tg1.k1.{}.{}",
            b64_encode(b"{not json"),
            b64_encode(&[0u8; 32])
        );
        assert_eq!(v.verify(&garbage, NOW), Err(VerifyError::BadSignature));
        // An expired token with a broken MAC reports the MAC, not the expiry.
        let text = s.sign(&claims(NOW - 1000, 10)).expose_secret().to_owned();
        let seg = segments(&text);
        let mut tag = b64_decode(&seg[3]).unwrap();
        tag[0] ^= 0x80;
        let broken = format!("{}.{}.{}.{}", seg[0], seg[1], seg[2], b64_encode(&tag));
        assert_eq!(v.verify(&broken, NOW), Err(VerifyError::BadSignature));
        assert!(matches!(
            v.verify(&text, NOW),
            Err(VerifyError::Expired { .. })
        ));
        // Authenticated but invalid JSON (or unknown fields) is malformed.
        let k = key("k1", 7);
        for payload in [&b"{not json"[..], br#"{"credential_id":"x"}"#] {
            assert_eq!(
                v.verify(&forge(&k, payload), NOW),
                Err(VerifyError::Malformed("payload is not valid claims JSON"))
            );
        }
        let mut extra = serde_json::to_value(claims(NOW, 300)).unwrap();
        extra["admin"] = serde_json::Value::Bool(true);
        let t = forge(&k, &serde_json::to_vec(&extra).unwrap());
        assert!(matches!(v.verify(&t, NOW), Err(VerifyError::Malformed(_))));
    }

    #[test]
    fn expired_at_exactly_expires_at_is_rejected() {
        let s = signer();
        let c = claims(NOW, 300);
        let text = s.sign(&c);
        let v = s.verifier();
        assert!(v.verify(text.expose_secret(), c.expires_at - 1).is_ok());
        for now in [c.expires_at, c.expires_at + 1, u64::MAX] {
            assert_eq!(
                v.verify(text.expose_secret(), now),
                Err(VerifyError::Expired {
                    expired_at: c.expires_at
                })
            );
        }
    }

    #[test]
    fn future_issued_token_is_not_yet_valid() {
        let s = signer();
        let v = s.verifier();
        let within_skew = s.sign(&claims(NOW + CLOCK_SKEW_SECS, 300));
        assert!(v.verify(within_skew.expose_secret(), NOW).is_ok());
        let future = s.sign(&claims(NOW + CLOCK_SKEW_SECS + 1, 300));
        assert_eq!(
            v.verify(future.expose_secret(), NOW),
            Err(VerifyError::NotYetValid {
                issued_at: NOW + CLOCK_SKEW_SECS + 1
            })
        );
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_until_grace_ends() {
        let s = TokenSigner::new(key("k0", 1), 300);
        let v = s.verifier(); // created before the rotation
        let old = s.sign(&claims(NOW, 10_000));
        assert_eq!(s.rotate(key("k1", 2), NOW + 10).unwrap(), "k0");
        assert_eq!(s.current_kid(), "k1");
        let new = s.sign(&claims(NOW + 10, 10_000));
        assert_eq!(segments(new.expose_secret())[1], "k1");
        assert!(v.verify(new.expose_secret(), NOW + 11).is_ok());
        assert!(v.verify(old.expose_secret(), NOW + 11).is_ok());
        assert!(v.verify(old.expose_secret(), NOW + 10 + 299).is_ok());
        assert_eq!(s.key_ring().retired_until("k0"), Some(NOW + 310));
        for now in [NOW + 310, NOW + 5000] {
            assert_eq!(
                v.verify(old.expose_secret(), now),
                Err(VerifyError::KeyRetired { kid: "k0".into() })
            );
        }
        assert!(v.verify(new.expose_secret(), NOW + 5000).is_ok());
    }

    #[test]
    fn key_retired_longer_than_grace_is_dropped() {
        let s = TokenSigner::new(key("k0", 1), 300);
        let old = s.sign(&claims(NOW, 10_000));
        s.rotate(key("k1", 2), NOW).unwrap();
        // At exactly retired_at + grace the key is invalid but still known.
        s.rotate(key("k2", 3), NOW + 300).unwrap();
        assert!(s.key_ring().contains("k0"));
        s.rotate(key("k3", 4), NOW + 301).unwrap();
        let kids: Vec<String> = s.key_ring().kids().map(str::to_owned).collect();
        assert_eq!(kids, ["k3", "k2", "k1"]);
        assert_eq!(
            s.verifier().verify(old.expose_secret(), NOW + 301),
            Err(VerifyError::UnknownKey("k0".into()))
        );
    }

    #[test]
    fn rotate_rejects_duplicate_kid() {
        let s = TokenSigner::new(key("k0", 1), 300);
        s.rotate(key("k1", 2), NOW).unwrap();
        for dup in ["k0", "k1"] {
            assert!(matches!(
                s.rotate(key(dup, 9), NOW + 1),
                Err(TokenError::DuplicateKeyId(k)) if k == dup
            ));
        }
        assert_eq!(s.current_kid(), "k1");
    }

    #[test]
    fn concurrent_rotate_and_verify_never_fails_a_current_key_token() {
        let s = TokenSigner::new(SigningKey::generate("k0").unwrap(), 1_000_000);
        std::thread::scope(|scope| {
            let rotator = s.clone();
            scope.spawn(move || {
                for i in 1..=40u64 {
                    let k = SigningKey::generate(format!("k{i}")).unwrap();
                    rotator.rotate(k, NOW + i).unwrap();
                    std::thread::yield_now();
                }
            });
            for _ in 0..3 {
                let signer = s.clone();
                let verifier = s.verifier();
                scope.spawn(move || {
                    for _ in 0..200 {
                        let c = claims(NOW, 10_000);
                        let t = signer.sign(&c);
                        assert_eq!(verifier.verify(t.expose_secret(), NOW + 50), Ok(c));
                    }
                });
            }
        });
        assert_eq!(s.current_kid(), "k40");
    }

    #[test]
    fn debug_output_never_contains_secrets_or_token_text() {
        let secret = b"SUPERSECRETKEYMATERIAL0123456789".to_vec();
        let secret_dbg = format!("{secret:?}");
        let k = SigningKey::new("k1", secret.clone()).unwrap();
        let k_dbg = format!("{k:?}");
        let s = TokenSigner::new(k, 600);
        let token = s.sign(&claims(NOW, 300));
        let text = token.expose_secret();
        let payload = segments(text)[2].clone();
        let outputs = [
            k_dbg,
            format!("{s:?}"),
            format!("{:?}", s.key_ring()),
            format!("{:?}", s.verifier()),
            format!("{token:?}"),
        ];
        for out in &outputs {
            assert!(!out.contains("SUPERSECRET"), "{out}");
            assert!(!out.contains(&secret_dbg[1..20]), "{out}");
            assert!(!out.contains(text) && !out.contains(&payload), "{out}");
        }
        assert!(outputs[0].contains("k1") && outputs[0].contains("REDACTED"));
        assert!(outputs[4].contains("REDACTED"));
    }

    #[test]
    fn signing_key_validation() {
        assert!(matches!(
            SigningKey::new("", vec![0; 32]),
            Err(TokenError::InvalidKeyId(_))
        ));
        assert!(matches!(
            SigningKey::new("a".repeat(33), vec![0; 32]),
            Err(TokenError::InvalidKeyId(_))
        ));
        assert!(matches!(
            SigningKey::new("a.b", vec![0; 32]),
            Err(TokenError::InvalidKeyId(_))
        ));
        assert!(matches!(
            SigningKey::new("ok", vec![0; 31]),
            Err(TokenError::KeyTooShort { len: 31 })
        ));
        let long = "A-z_9".repeat(6) + "xy";
        assert_eq!(
            SigningKey::new(long.clone(), vec![0; 64]).unwrap().kid(),
            long
        );
        assert_eq!(SigningKey::generate("g").unwrap().kid(), "g");
    }

    #[test]
    fn nonce_is_128_bit_hex() {
        let (a, b) = (TokenSigner::nonce().unwrap(), TokenSigner::nonce().unwrap());
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }

    #[test]
    fn base64_known_vectors_and_strict_rejects() {
        let vectors: [(&[u8], &str); 8] = [
            (b"", ""),
            (b"f", "Zg"),
            (b"fo", "Zm8"),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg"),
            (b"fooba", "Zm9vYmE"),
            (b"foobar", "Zm9vYmFy"),
            (&[0xfb, 0xff, 0xbf], "-_-_"),
        ];
        for (raw, enc) in vectors {
            assert_eq!(b64_encode(raw), enc);
            assert_eq!(b64_decode(enc).unwrap(), raw);
        }
        assert_eq!(b64_decode("Zg=="), Err(B64Error::InvalidChar));
        assert_eq!(b64_decode("Zm9v+/"), Err(B64Error::InvalidChar));
        assert_eq!(b64_decode("Zm9vY"), Err(B64Error::InvalidLength));
        assert_eq!(b64_decode("Zh"), Err(B64Error::NonCanonical));
        assert_eq!(b64_decode("Zm9"), Err(B64Error::NonCanonical));
    }

    proptest! {
        #[test]
        fn base64_round_trips(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let enc = b64_encode(&data);
            prop_assert_eq!(enc.len(), b64_encoded_len(data.len()));
            prop_assert!(enc.bytes().all(|c| B64_ALPHABET.contains(&c)));
            prop_assert_eq!(b64_decode(&enc).unwrap(), data);
        }

        #[test]
        fn base64_decoding_is_canonical(s in "[A-Za-z0-9_-]{0,64}") {
            // Whatever decodes must re-encode to exactly the same text.
            if let Ok(bytes) = b64_decode(&s) {
                prop_assert_eq!(b64_encode(&bytes), s);
            } else {
                prop_assert!(s.len() % 4 != 0);
            }
        }

        #[test]
        fn base64_rejects_foreign_chars(
            s in "[A-Za-z0-9_-]{0,16}",
            bad in "[^A-Za-z0-9_-]",
            pos in 0usize..17,
        ) {
            let mut chars: Vec<char> = s.chars().collect();
            chars.insert(pos.min(chars.len()), bad.chars().next().unwrap());
            let text: String = chars.into_iter().collect();
            prop_assert!(b64_decode(&text).is_err());
        }
    }
}
