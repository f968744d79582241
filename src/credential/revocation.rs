//! Revocation lists: the credential ids (`jti`) whose tokens must fail verification although
//! they are signed and unexpired, because their run ended, was stopped by the kill switch, or
//! was revoked on request.
//!
//! # The bound
//!
//! * **In process:** a [`TokenVerifier`](super::token::TokenVerifier) that shares the list (the
//!   one a [`JwtProvider`](super::JwtProvider) hands out does) refuses a token from the moment
//!   [`RevocationList::revoke`] returns, which happens before `Run::finish`,
//!   `Run::revoke_credentials` or the drop of the run returns. There is no window.
//! * **Downstream:** a service polls [`RevocationList::export_json`] (serve it on an internal
//!   endpoint, or push it to a shared store) and refuses the `jti`s listed. It sees a revocation
//!   within one polling interval, plus the time the export takes to reach it. Choose the interval
//!   well below the credentials' TTL: a token stays usable downstream for at most
//!   `min(polling interval + propagation, remaining TTL)` after its run ends. A Rust service can
//!   [`merge`](RevocationList::merge) what it polled into a list and give that to its verifier.
//!
//! # Size
//!
//! An entry is needed only until its token expires: every entry carries the token's `exp`, and
//! [`prune`](RevocationList::prune) (run by the provider as it revokes, and by every export)
//! drops entries whose `exp` has passed, so the list holds at most the credentials revoked within
//! one TTL (24 hours at most, [`MAX_TTL`](super::MAX_TTL)).
//!
//! # Export format
//!
//! ```json
//! {"version": 42, "generated_at": 1767225600, "revoked": [{"jti": "cred-…-7", "exp": 1767225900}]}
//! ```
//!
//! `version` grows with every change (use it as an ETag); `generated_at` is the exporter's unix
//! time; `revoked` is sorted by `jti` and holds only entries with `exp > generated_at`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

/// One revoked credential in an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokedToken {
    /// The credential id (the token's `jti`).
    pub jti: String,
    /// The token's `exp`: after it, the entry is no longer needed.
    pub exp: u64,
}

/// What [`RevocationList::export`] produces and a downstream service polls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationExport {
    /// Grows with every change to the list.
    pub version: u64,
    /// The exporter's unix time.
    pub generated_at: u64,
    /// Revoked, unexpired credentials, sorted by `jti`.
    pub revoked: Vec<RevokedToken>,
}

#[derive(Default)]
struct Inner {
    /// `jti` -> `exp`.
    entries: RwLock<HashMap<String, u64>>,
    /// Number of entries (read without the lock on the verify path).
    len: AtomicUsize,
    version: AtomicU64,
    /// Size after the last prune, to prune again once the list has doubled.
    pruned_len: AtomicUsize,
}

/// A shared list of revoked credential ids. Clones share the list.
#[derive(Clone, Default)]
pub struct RevocationList {
    inner: Arc<Inner>,
}

impl RevocationList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Revokes `jti` until `exp` (the token's expiry). Idempotent; a later `exp` for the same id
    /// extends the entry.
    pub fn revoke(&self, jti: &str, exp: u64) {
        let mut map = self.inner.entries.write();
        let slot = map.entry(jti.to_owned()).or_insert(0);
        if exp > *slot {
            *slot = exp;
            self.inner.version.fetch_add(1, Ordering::AcqRel);
        }
        self.inner.len.store(map.len(), Ordering::Release);
    }

    /// Revokes `jti` until `exp` and, once the list has doubled since the last prune, drops the
    /// entries that expired by `now`: the bookkeeping a provider does on every revocation.
    pub fn revoke_and_prune(&self, jti: &str, exp: u64, now: u64) {
        self.revoke(jti, exp);
        let len = self.len();
        if len > 64 && len > 2 * self.inner.pruned_len.load(Ordering::Acquire) {
            self.prune(now);
        }
    }

    /// Whether `jti` is revoked.
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.inner.len.load(Ordering::Acquire) != 0 && self.inner.entries.read().contains_key(jti)
    }

    /// Drops entries whose token expired by `now` (`exp <= now`); returns how many.
    pub fn prune(&self, now: u64) -> usize {
        let mut map = self.inner.entries.write();
        let before = map.len();
        map.retain(|_, exp| *exp > now);
        let removed = before - map.len();
        if removed > 0 {
            self.inner.version.fetch_add(1, Ordering::AcqRel);
        }
        self.inner.len.store(map.len(), Ordering::Release);
        self.inner.pruned_len.store(map.len(), Ordering::Release);
        removed
    }

    /// Number of entries (including expired ones not yet pruned).
    pub fn len(&self) -> usize {
        self.inner.len.load(Ordering::Acquire)
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Grows with every change (an ETag for pollers).
    pub fn version(&self) -> u64 {
        self.inner.version.load(Ordering::Acquire)
    }

    /// Prunes at `now`, then returns the unexpired entries sorted by `jti`.
    pub fn export(&self, now: u64) -> RevocationExport {
        self.prune(now);
        let map = self.inner.entries.read();
        let mut revoked: Vec<RevokedToken> = map
            .iter()
            .map(|(jti, &exp)| RevokedToken {
                jti: jti.clone(),
                exp,
            })
            .collect();
        let version = self.version();
        drop(map);
        revoked.sort_by(|a, b| a.jti.cmp(&b.jti));
        RevocationExport {
            version,
            generated_at: now,
            revoked,
        }
    }

    /// [`export`](Self::export) as JSON text (see the module documentation for the format).
    pub fn export_json(&self, now: u64) -> String {
        serde_json::to_string(&self.export(now))
            .expect("an export holds only strings and integers; JSON encoding cannot fail")
    }

    /// Adds every entry of an export (what a downstream service polled) to this list.
    pub fn merge(&self, export: &RevocationExport) {
        for t in &export.revoked {
            self.revoke(&t.jti, t.exp);
        }
    }

    /// Parses an export's JSON text and [`merge`](Self::merge)s it.
    pub fn merge_json(&self, json: &str) -> Result<(), serde_json::Error> {
        let export: RevocationExport = serde_json::from_str(json)?;
        self.merge(&export);
        Ok(())
    }
}

impl fmt::Debug for RevocationList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationList")
            .field("len", &self.len())
            .field("version", &self.version())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoked_ids_are_seen_by_every_clone_at_once() {
        let list = RevocationList::new();
        let verifier_side = list.clone();
        assert!(!verifier_side.is_revoked("cred-1"));
        list.revoke("cred-1", 1_000);
        assert!(verifier_side.is_revoked("cred-1"));
        assert!(!verifier_side.is_revoked("cred-2"));
    }

    #[test]
    fn export_prunes_expired_entries_and_sorts() {
        let list = RevocationList::new();
        list.revoke("b", 200);
        list.revoke("a", 300);
        list.revoke("old", 100);
        let v = list.version();
        let export = list.export(100);
        assert_eq!(
            export.revoked,
            [
                RevokedToken {
                    jti: "a".into(),
                    exp: 300
                },
                RevokedToken {
                    jti: "b".into(),
                    exp: 200
                },
            ]
        );
        assert_eq!(export.generated_at, 100);
        assert!(export.version > v, "pruning is a change");
        assert!(!list.is_revoked("old"));
        let json = list.export_json(250);
        assert_eq!(
            json,
            format!(
                r#"{{"version":{},"generated_at":250,"revoked":[{{"jti":"a","exp":300}}]}}"#,
                list.version()
            )
        );
    }

    #[test]
    fn merge_round_trips_an_export() {
        let upstream = RevocationList::new();
        upstream.revoke("x", 500);
        upstream.revoke("y", 600);
        let downstream = RevocationList::new();
        downstream.merge_json(&upstream.export_json(10)).unwrap();
        assert!(downstream.is_revoked("x") && downstream.is_revoked("y"));
        assert!(downstream.merge_json(r#"{"revoked":[]}"#).is_err());
        assert!(
            downstream
                .merge_json(r#"{"version":1,"generated_at":1,"revoked":[],"extra":1}"#)
                .is_err()
        );
    }

    #[test]
    fn revoke_and_prune_keeps_the_list_bounded() {
        let list = RevocationList::new();
        for i in 0..10_000u64 {
            // Each credential lives 100 s; revoked at time i.
            list.revoke_and_prune(&format!("c{i}"), i + 100, i);
        }
        assert!(list.len() < 400, "{} entries", list.len());
        assert!(list.is_revoked("c9999") && list.is_revoked("c9901"));
    }

    #[test]
    fn a_later_expiry_extends_and_an_earlier_one_does_not_shorten() {
        let list = RevocationList::new();
        list.revoke("a", 100);
        list.revoke("a", 50);
        assert_eq!(list.export(60).revoked.len(), 1);
        list.revoke("a", 200);
        assert_eq!(list.export(150).revoked[0].exp, 200);
    }
}
