//! What binds an approval to the exact arguments approved: a keyed hash of their canonical form
//! ([`ArgsHash`] under an [`ArgsKey`]), and the helpers that turn a call's arguments into what
//! approvers are shown.
//!
//! # Why keyed
//!
//! The binding hash travels further than the arguments: it is stored with the request, carried
//! in every [`Ticket`](super::Ticket) and [`Grant`](super::Grant), shown to approvers and quoted
//! in refusals, next to arguments whose secret values are redacted. A plain digest would give
//! every such reader an offline oracle for those values: with the rest of the arguments in
//! view, a 6-digit one-time code falls to a million guesses, a PIN or a card number with a known
//! prefix to not many more. An HMAC under a key only the queue (and its store) holds admits no
//! such guess. A guess needs the key, and the key holder already sees the arguments.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use sha2::Sha256;

use super::error::ArgsError;
use super::store::StoreKey;
use crate::call::Args;
use crate::call::canonical::{self, CanonicalSink};
use crate::call::json::{JsonError, RawJson};
use crate::hex::{decode_array as unhex, encode as hex};

type HmacSha256 = Hmac<Sha256>;

/// Domain separation of the argument MAC.
const ARGS_DOMAIN: &[u8] = b"tollgate-approval-args-v1\n";
/// Domain separation of the argument key derived from a store key.
const DERIVE_DOMAIN: &[u8] = b"tollgate-approval-args-key-v1\n";
/// Bytes of a generated or derived key.
const KEY_BYTES: usize = 32;

/// The secret that keys [`ArgsHash`]. An [`ApprovalQueue`](super::ApprovalQueue) holds its own:
/// derived from its store's key when the store survives a restart (see
/// [`ApprovalStore::args_keys`](super::ApprovalStore::args_keys); a [`FileApprovalStore`](super::FileApprovalStore)
/// derives one from each of its [`StoreKey`]s), otherwise generated at random when the queue
/// opens. Tickets and requests of a queue whose key is random are usable only by that process.
///
/// The secret lives in a [`secrecy`] box: `Debug` never shows it. Cloning shares it.
///
/// ```
/// use serde_json::json;
/// use tollgate::escalation::{ArgsKey, StoreKey};
///
/// let key = ArgsKey::from_store_key(&StoreKey::new("approvals-1", vec![7; 32])?);
/// let a = key.hash(&json!({"amount": 5, "to": "x"}))?;
/// assert_eq!(a, key.hash(r#"{ "to": "\u0078", "amount": 5.0 }"#)?);
/// // Another key, another hash: nobody without the key can test a guess.
/// let other = ArgsKey::from_store_key(&StoreKey::new("approvals-1", vec![8; 32])?);
/// assert_ne!(a, other.hash(&json!({"amount": 5, "to": "x"}))?);
/// assert!(!format!("{key:?}").contains("07"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ArgsKey {
    secret: Arc<SecretSlice<u8>>,
}

impl ArgsKey {
    /// A fresh random key from the operating system's generator (for a queue whose requests do
    /// not outlive the process).
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut b = vec![0u8; KEY_BYTES];
        getrandom::fill(&mut b)?;
        Ok(Self::from_secret(b))
    }

    /// The key derived from `store` (`HMAC-SHA-256(store secret, "tollgate-approval-args-key-v1\n"
    /// || key id)`): the same store key gives the same argument key in every process, so a
    /// ticket stays usable across a restart, and the argument key is independent of the MACs the
    /// store key makes over records.
    pub fn from_store_key(store: &StoreKey) -> Self {
        Self::from_secret(store.derive(DERIVE_DOMAIN))
    }

    fn from_secret(secret: Vec<u8>) -> Self {
        Self {
            secret: Arc::new(SecretSlice::from(secret)),
        }
    }

    /// The keyed hash of `args` (a `&Value`, raw JSON text, or [`Args::None`], which hashes as
    /// `{}`): `HMAC-SHA-256(key, "tollgate-approval-args-v1\n" || canonical form)`. Raw text is
    /// validated strictly first (duplicate keys, lone surrogates, trailing data are refused:
    /// they could mean different things to different parsers) and its number literals are kept
    /// exactly; a value nested deeper than [`canonical::MAX_DEPTH`] is refused. The canonical
    /// bytes stream into the MAC; no string is built.
    pub fn hash<'a>(&self, args: impl Into<Args<'a>>) -> Result<ArgsHash, JsonError> {
        // `Hmac::new_from_slice` accepts keys of any length; the fallback cannot happen.
        let mut mac = HmacSha256::new_from_slice(self.secret.expose_secret())
            .unwrap_or_else(|_| HmacSha256::new(&Default::default()));
        mac.update(ARGS_DOMAIN);
        let mut sink = MacSink(mac);
        canonical::write(args.into(), &mut sink)?;
        Ok(ArgsHash(sink.0.finalize().into_bytes().into()))
    }
}

impl fmt::Debug for ArgsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ArgsKey([REDACTED])")
    }
}

/// Streams canonical bytes into the MAC.
struct MacSink(HmacSha256);

impl CanonicalSink for MacSink {
    fn put(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// The keyed hash of a call's arguments in the crate's [canonical form](crate::call::canonical),
/// made by an [`ArgsKey`]: what an approval grant is bound to. Object keys are sorted by their
/// unescaped text, strings compared unescaped, no whitespace, and every number is one *exact*
/// decimal literal. The same arguments with keys in another order, other escapes, other spacing
/// or another spelling of the same number (`1.0`, `1e0`, `10e-1`) hash equal, raw text and
/// parsed value alike; two different literals never do, however large
/// (`100000000000000000000` and `100000000000000008191` are different amounts). Serialised as
/// 64 hex digits.
///
/// It covers every argument, secret ones included, so it is keyed (an HMAC), never a plain
/// digest. It travels further than the arguments: it is stored with the request, carried in
/// every [`Ticket`](super::Ticket) and [`Grant`](super::Grant), shown to approvers and quoted in
/// refusals, next to arguments whose secret values are redacted. A plain digest would give every
/// such reader an offline oracle for those values: with the rest of the arguments in view, a
/// 6-digit one-time code falls to a million guesses, a PIN or a card number with a known prefix
/// to not many more. Under a key only the queue (and its store) holds, a guess cannot be
/// tested. Comparing two hashes is meaningful only under the same key. The audit trail records
/// the request id, never this hash.
///
/// A parsed [`Value`] (built without `serde_json`'s `arbitrary_precision`) holds a number it
/// cannot represent exactly as the nearest `f64`, and hashes as that `f64`; raw text hashes its
/// literal. Hash what the tool will execute: the guard binds grants to the call's own
/// arguments and refuses to queue raw arguments a `Value` cannot show exactly
/// ([`exact_args`]).
///
/// ```
/// use serde_json::json;
/// use tollgate::escalation::{ArgsKey, StoreKey};
///
/// let key = ArgsKey::from_store_key(&StoreKey::new("approvals-1", vec![7; 32])?);
/// let a = key.hash(&json!({"amount": 5, "to": "x"}))?;
/// assert_eq!(a, key.hash(r#"{ "to": "\u0078", "amount": 5.0 }"#)?);
/// assert_ne!(a, key.hash(r#"{"to": "x", "amount": 6}"#)?);
/// assert_ne!(
///     key.hash(r#"{"amount": 100000000000000000000}"#)?,
///     key.hash(r#"{"amount": 100000000000000008191}"#)?,
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArgsHash([u8; 32]);

impl ArgsHash {
    /// The raw MAC.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ArgsHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for ArgsHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArgsHash({})", hex(&self.0[..6]))
    }
}

impl Serialize for ArgsHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ArgsHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        unhex::<32>(&s)
            .map(ArgsHash)
            .ok_or_else(|| serde::de::Error::custom("an args hash must be 64 hexadecimal digits"))
    }
}

/// Parses raw JSON arguments strictly into a [`Value`] (for [`Submission`](super::Submission)s
/// built from raw text). A number the `Value` cannot hold exactly becomes the nearest `f64`; use
/// [`exact_args`] where that must not happen.
pub fn parse_args(text: &str) -> Result<Value, JsonError> {
    RawJson::parse(text, canonical::LIMITS)?;
    serde_json::from_str(text).map_err(|_| JsonError::Syntax {
        offset: 0,
        expected: "a JSON document serde_json can read",
    })
}

/// [`Args`] as an owned [`Value`] ([`Args::None`] is `{}`), raw text parsed strictly (numbers
/// as [`parse_args`] reads them).
pub fn args_value(args: Args<'_>) -> Result<Value, JsonError> {
    match args {
        Args::None => Ok(Value::Object(serde_json::Map::new())),
        Args::Value(v) => Ok(v.clone()),
        Args::Json(t) => parse_args(t),
    }
}

/// The arguments as approvers are shown them (an owned [`Value`]) and the [`ArgsHash`] under
/// `key` a grant binds, refusing arguments for which the two could disagree: raw text holding a
/// number that a parsed `Value` cannot represent exactly ([`ArgsError::Inexact`]: an approver
/// would see a rounded amount while the grant authorises the literal), or arguments nested
/// deeper than [`canonical::MAX_DEPTH`]. [`ApprovalQueue::exact_args`](super::ApprovalQueue::exact_args)
/// does this under the queue's own key.
///
/// ```
/// use tollgate::Args;
/// use tollgate::escalation::{ArgsError, ArgsKey, StoreKey, exact_args};
///
/// let key = ArgsKey::from_store_key(&StoreKey::new("approvals-1", vec![7; 32])?);
/// let (shown, hash) = exact_args(&key, Args::Json(r#"{"amount": 1.50e3}"#))?;
/// assert_eq!(shown["amount"], 1500.0);
/// assert_eq!(hash, key.hash(&shown)?);
/// assert!(matches!(
///     exact_args(&key, Args::Json(r#"{"amount": 100000000000000008191}"#)),
///     Err(ArgsError::Inexact { offset: 11, .. })
/// ));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn exact_args(key: &ArgsKey, args: Args<'_>) -> Result<(Value, ArgsHash), ArgsError> {
    let hash = key.hash(args)?;
    if let Args::Json(text) = args
        && let Some((offset, literal)) = canonical::first_inexact_number(text)?
    {
        const SHOWN: usize = 40;
        let mut literal = literal.to_owned();
        if literal.len() > SHOWN {
            literal.truncate(SHOWN);
            literal.push_str("...");
        }
        return Err(ArgsError::Inexact { offset, literal });
    }
    Ok((args_value(args)?, hash))
}

/// Whether [`exact_args`] accepts `args` (under any key: the key changes the hash, never the
/// answer), for a caller that needs no hash, such as a policy replay deciding whether the guard
/// could queue a call.
pub(crate) fn args_are_exact(args: Args<'_>) -> bool {
    exact_args(&ArgsKey::from_secret(vec![0; KEY_BYTES]), args).is_ok()
}
