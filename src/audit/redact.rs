//! Redaction of tool arguments in audit records, and the retention class events carry.
//!
//! A policy marks arguments with [`Arg::redact`](crate::boundary::Arg::redact):
//!
//! - **secret** (passwords, API keys, card numbers): the value is never written by any sink; the
//!   record keeps the field with the placeholder `"[REDACTED:secret]"`, so an investigator sees
//!   that a value was given, never what it was.
//! - **sensitive** (PHI, privileged material): each sink's [`Redaction`] decides: the placeholder
//!   `"[REDACTED:sensitive]"` (the default), or a keyed hash `"hmac-sha256:<key id>:<64 hex>"` of
//!   the value's canonical JSON, so investigators holding the key can tell whether two records
//!   name the same patient without the log revealing who.
//!
//! The marks apply to the arguments of every decision on that tool, allowed or denied, given as a
//! JSON value or as raw text. Raw text that cannot be parsed is written verbatim (escaped) only
//! for tools with no marked argument: for a tool with one, it is replaced by a placeholder, since
//! nobody can tell where in it the secret sits. Denial reasons about a marked argument leave its
//! value out.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use serde_json::Value;
use sha2::Sha256;

use crate::boundary::Sensitivity;

/// The placeholder written instead of a secret value.
pub const SECRET_PLACEHOLDER: &str = "[REDACTED:secret]";
/// The placeholder written instead of a sensitive value under [`Redaction::placeholder`].
pub const SENSITIVE_PLACEHOLDER: &str = "[REDACTED:sensitive]";
/// Written as the arguments of a call to a tool with marked arguments whose raw text does not
/// parse.
pub const UNPARSEABLE_PLACEHOLDER: &str =
    "[REDACTED:unparseable arguments of a tool with marked fields]";

/// What the policy says about one tool's records: which argument paths are redacted, and the
/// retention class of its data tier. Obtained from
/// [`ActionBoundary::audit_marks`](crate::ActionBoundary::audit_marks).
#[derive(Debug, Default)]
pub struct AuditMarks {
    redactions: Vec<Marked>,
    retention: Option<Arc<str>>,
}

#[derive(Debug)]
struct Marked {
    /// `(name, each element)` segments, as in the policy's argument paths.
    path: Box<[(Box<str>, bool)]>,
    class: Sensitivity,
}

static NO_MARKS: AuditMarks = AuditMarks {
    redactions: Vec::new(),
    retention: None,
};

impl AuditMarks {
    /// Marks that redact nothing and name no retention class.
    pub fn none() -> &'static AuditMarks {
        &NO_MARKS
    }

    pub(crate) fn new(
        redactions: Vec<(Vec<(&str, bool)>, Sensitivity)>,
        retention: Option<Arc<str>>,
    ) -> Self {
        Self {
            redactions: redactions
                .into_iter()
                .map(|(path, class)| Marked {
                    path: path.into_iter().map(|(n, i)| (n.into(), i)).collect(),
                    class,
                })
                .collect(),
            retention,
        }
    }

    /// Whether any argument is marked.
    pub fn redacts(&self) -> bool {
        !self.redactions.is_empty()
    }

    /// The retention class of the tool's data tier, if the policy names one.
    pub fn retention(&self) -> Option<&str> {
        self.retention.as_deref()
    }

    /// Replaces the values marked secret in `args` (sensitive ones stay: e.g. approvers need them
    /// to decide).
    pub(crate) fn redact_secrets(&self, args: &mut Value) {
        for m in self
            .redactions
            .iter()
            .filter(|m| m.class == Sensitivity::Secret)
        {
            redact_at(args, &m.path, m.class, &Redaction::placeholder());
        }
    }

    /// Replaces every marked value in `args` as `how` says. Sensitive marks go first and secret
    /// ones last, so where a secret path and a sensitive path overlap (or meet a value of the
    /// wrong shape) the secret placeholder is what remains.
    pub(crate) fn apply(&self, args: &mut Value, how: &Redaction) {
        for m in self
            .redactions
            .iter()
            .filter(|m| m.class != Sensitivity::Secret)
            .chain(
                self.redactions
                    .iter()
                    .filter(|m| m.class == Sensitivity::Secret),
            )
        {
            redact_at(args, &m.path, m.class, how);
        }
    }
}

/// Replaces the value at `path` below `v`. Wherever the path meets a value of another shape than
/// it expects (a string, number, boolean or array where it needs an object to descend into, or a
/// non-array where it expects `[]`), the whole value found there is replaced: the marked value
/// could be anywhere inside it, e.g. `{"auth": "<secret>"}` for the path `auth.password`, or
/// `{"cards": ["<number>"]}` for `cards[].number`. Only `null` and absent keys are left alone:
/// they hold nothing.
fn redact_at(v: &mut Value, path: &[(Box<str>, bool)], class: Sensitivity, how: &Redaction) {
    let Some(((name, items), rest)) = path.split_first() else {
        *v = how.replacement(class, v);
        return;
    };
    let child = match v {
        Value::Object(o) => match o.get_mut(&**name) {
            Some(child) => child,
            None => return,
        },
        Value::Null => return,
        // Not an object where the policy descends: the marked value may be anywhere inside.
        other => {
            *other = how.replacement(class, other);
            return;
        }
    };
    if *items {
        match child {
            Value::Array(elems) => {
                for e in elems {
                    redact_at(e, rest, class, how);
                }
            }
            Value::Null => {}
            // Not an array where the policy expects one: redact the whole value rather than
            // guess.
            other => *other = how.replacement(class, other),
        }
    } else {
        redact_at(child, rest, class, how);
    }
}

/// How a sink writes values marked *sensitive* (secret values are never written, whatever this
/// says). The default is [`Redaction::placeholder`].
///
/// ```
/// use tollgate::audit::Redaction;
///
/// let hashed = Redaction::keyed_hash("k2026", b"a key of at least 32 bytes, kept in a vault".to_vec())?;
/// assert!(format!("{hashed:?}").contains("k2026") && !format!("{hashed:?}").contains("vault"));
/// # Ok::<(), tollgate::audit::AuditError>(())
/// ```
#[derive(Clone, Default)]
pub struct Redaction {
    hash: Option<Arc<HashKey>>,
}

struct HashKey {
    id: Box<str>,
    key: SecretSlice<u8>,
}

impl fmt::Debug for Redaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.hash {
            None => f.write_str("Redaction::placeholder"),
            Some(k) => write!(f, "Redaction::keyed_hash({:?}, [key hidden])", k.id),
        }
    }
}

/// Two redactions are equal when they write the same thing: both placeholders, or keyed hashes
/// with the same key id and key.
impl PartialEq for Redaction {
    fn eq(&self, other: &Self) -> bool {
        match (&self.hash, &other.hash) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                let (ka, kb) = (a.key.expose_secret(), b.key.expose_secret());
                // Constant time in the key bytes (lengths are not secret).
                a.id == b.id
                    && ka.len() == kb.len()
                    && ka.iter().zip(kb).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
            }
            _ => false,
        }
    }
}

impl Eq for Redaction {}

impl Redaction {
    /// Sensitive values become `"[REDACTED:sensitive]"`.
    pub fn placeholder() -> Self {
        Self::default()
    }

    /// Sensitive values become `"hmac-sha256:<key_id>:<hex>"`, an HMAC-SHA-256 under `key` of the
    /// value's canonical JSON (object keys sorted). The key must be at least 32 bytes; `key_id`
    /// (1–64 characters of `[A-Za-z0-9._-]`) names it in every record so a rotated key stays
    /// identifiable.
    pub fn keyed_hash(key_id: &str, key: Vec<u8>) -> Result<Self, super::AuditError> {
        let refuse = |reason: &str| super::AuditError::Refused {
            sink: "redaction",
            reason: reason.to_owned(),
        };
        if key.len() < 32 {
            return Err(refuse("the keyed-hash key must be at least 32 bytes"));
        }
        if key_id.is_empty()
            || key_id.len() > 64
            || !key_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(refuse(
                "the key id must be 1-64 characters of letters, digits, `.`, `_` or `-`",
            ));
        }
        Ok(Self {
            hash: Some(Arc::new(HashKey {
                id: key_id.into(),
                key: key.into(),
            })),
        })
    }

    fn replacement(&self, class: Sensitivity, v: &Value) -> Value {
        match (class, &self.hash) {
            (Sensitivity::Sensitive, Some(k)) => {
                // `Hmac::new_from_slice` accepts keys of any length.
                let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(k.key.expose_secret()) else {
                    return Value::from(SENSITIVE_PLACEHOLDER);
                };
                mac.update(&serde_json::to_vec(v).unwrap_or_default());
                let tag = mac.finalize().into_bytes();
                let mut s = Vec::with_capacity(80);
                s.extend_from_slice(b"hmac-sha256:");
                s.extend_from_slice(k.id.as_bytes());
                s.push(b':');
                crate::hex::encode_into(&mut s, &tag);
                Value::from(String::from_utf8(s).unwrap_or_default())
            }
            (Sensitivity::Sensitive, None) => Value::from(SENSITIVE_PLACEHOLDER),
            (Sensitivity::Secret, _) => Value::from(SECRET_PLACEHOLDER),
        }
    }
}
