//! Retention: which segments have expired, and dropping them under a declaration.

use std::collections::BTreeMap;
use std::io;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::chain::{ChainCheck, Span};
use super::reader::{LogReader, TailPolicy, list_segments};
use super::record::{hex_str, is_sink_record, unix_nanos};
use super::sink::{FileSink, RetainJob, corrupt};
use super::verify::{Location, VerifyError};
use crate::audit::{AuditError, AuditSink};

// ------------------------------------------------------------------------------------------------
// Retention
// ------------------------------------------------------------------------------------------------

/// How long each retention class is kept (see [`FileSink::retain`]).
///
/// An event's class is its `tollgate.retention` field (`"default"` when absent or null). A class
/// maps to a keep duration or to `None`, kept forever; a class the policy does not name is kept
/// forever too (nothing is deleted that the policy does not explicitly allow). In a policy
/// document it is a map from class to seconds or `null`:
///
/// ```
/// use std::time::Duration;
/// use tollgate::audit::file::RetentionPolicy;
///
/// let from_doc: RetentionPolicy =
///     serde_json::from_str(r#"{"default": 2592000, "debug": 86400, "legal_hold": null}"#)?;
/// let in_code = RetentionPolicy::new(Some(Duration::from_secs(30 * 86_400)))
///     .class("debug", Some(Duration::from_secs(86_400)))
///     .class("legal_hold", None);
/// assert_eq!(from_doc, in_code);
/// assert_eq!(in_code.keep_for("debug"), Some(Duration::from_secs(86_400)));
/// assert_eq!(in_code.keep_for("legal_hold"), None); // forever
/// assert_eq!(in_code.keep_for("no-such-class"), None); // unknown: forever
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "BTreeMap<String, Option<u64>>")]
pub struct RetentionPolicy {
    pub(super) classes: BTreeMap<String, Option<Duration>>,
}

impl From<BTreeMap<String, Option<u64>>> for RetentionPolicy {
    fn from(m: BTreeMap<String, Option<u64>>) -> Self {
        Self {
            classes: m
                .into_iter()
                .map(|(k, v)| (k, v.map(Duration::from_secs)))
                .collect(),
        }
    }
}

impl RetentionPolicy {
    /// The class name events without a `tollgate.retention` field belong to.
    pub const DEFAULT_CLASS: &'static str = "default";

    /// A policy keeping class `"default"` for `default_keep` (`None`: forever) and knowing no
    /// other class.
    pub fn new(default_keep: Option<Duration>) -> Self {
        Self {
            classes: BTreeMap::from([(Self::DEFAULT_CLASS.to_owned(), default_keep)]),
        }
    }

    /// Keeps `class` for `keep` (`None`: forever), replacing any earlier setting.
    pub fn class(mut self, class: impl Into<String>, keep: Option<Duration>) -> Self {
        self.classes.insert(class.into(), keep);
        self
    }

    /// How long `class` is kept: `None` when forever, whether by the policy or because the policy
    /// does not know the class.
    pub fn keep_for(&self, class: &str) -> Option<Duration> {
        self.classes.get(class).copied().flatten()
    }

    pub(super) fn summary(&self) -> BTreeMap<String, Option<f64>> {
        self.classes
            .iter()
            .map(|(k, v)| (k.clone(), v.map(|d| d.as_secs_f64())))
            .collect()
    }
}

/// What [`FileSink::retain`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetainReport {
    /// Segment files deleted.
    pub segments_dropped: u64,
    /// Records they held.
    pub records_dropped: u64,
    /// The seqs of the records dropped (`None` if nothing was).
    pub dropped_seqs: Option<RangeInclusive<u64>>,
    /// The hash of the last record dropped, as the declaration states it.
    pub dropped_head: Option<String>,
    /// The seq of the `retention_applied` declaration written.
    pub declaration_seq: Option<u64>,
    /// Why the oldest remaining segment was kept.
    pub kept: Option<Kept>,
}

/// The first segment [`FileSink::retain`] kept, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Kept {
    /// The segment.
    pub segment: PathBuf,
    /// The record that keeps it, if one does.
    pub seq: Option<u64>,
    /// Why.
    pub reason: KeptReason,
}

/// Why a segment is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeptReason {
    /// It is the segment being written.
    LiveSegment,
    /// A record of this class has not reached its keep duration.
    NotExpired {
        /// The class.
        class: String,
        /// When the record expires, unix nanoseconds.
        expires_unix_nano: u64,
    },
    /// The policy keeps this class forever.
    KeptForever {
        /// The class.
        class: String,
    },
    /// The policy does not know this class, so it is kept.
    UnknownClass {
        /// The class.
        class: String,
    },
    /// A record's time or class could not be read, so it is kept.
    NotUnderstood {
        /// What could not be read.
        reason: String,
    },
}

/// Whether one event has expired under `policy` at `now_ns`; `Err` says why it is kept.
pub(super) fn expired(
    event: &[u8],
    policy: &RetentionPolicy,
    now_ns: u64,
) -> Result<(), KeptReason> {
    let not_understood = |reason: &str| KeptReason::NotUnderstood {
        reason: reason.to_owned(),
    };
    let v: serde_json::Value =
        serde_json::from_slice(event).map_err(|_| not_understood("the event is not JSON"))?;
    let Some(time) = v.get("time_unix_nano").and_then(serde_json::Value::as_u64) else {
        return Err(not_understood("`time_unix_nano` is missing or not a u64"));
    };
    let class = match v.get("tollgate.retention") {
        None | Some(serde_json::Value::Null) => RetentionPolicy::DEFAULT_CLASS,
        Some(serde_json::Value::String(s)) => s.as_str(),
        Some(_) => return Err(not_understood("`tollgate.retention` is not a string")),
    };
    let keep = match policy.classes.get(class) {
        None => {
            return Err(KeptReason::UnknownClass {
                class: class.to_owned(),
            });
        }
        Some(None) => {
            return Err(KeptReason::KeptForever {
                class: class.to_owned(),
            });
        }
        Some(Some(d)) => d,
    };
    let expires = u64::try_from(keep.as_nanos())
        .ok()
        .and_then(|k| time.checked_add(k))
        .unwrap_or(u64::MAX);
    if now_ns > expires {
        Ok(())
    } else {
        Err(KeptReason::NotExpired {
            class: class.to_owned(),
            expires_unix_nano: expires,
        })
    }
}

/// Reads a closed segment, checks it is still exactly what the writer knows it to be, and
/// decides whether every event in it has expired. `Ok(None)`: expired; `Ok(Some(kept))`: kept.
pub(super) fn scan_segment(
    path: &Path,
    span: &Span,
    policy: &RetentionPolicy,
    now_ns: u64,
) -> Result<Option<Kept>, VerifyError> {
    let mut reader = LogReader::new(vec![(span.index, path.to_owned())], TailPolicy::Report);
    let start_at = Location {
        file: path.to_owned(),
        line: 1,
        offset: 0,
        seq: Some(span.first_seq),
    };
    let mut check = ChainCheck::continuing(span.first_seq, span.first_prev, start_at);
    let mut last = None;
    while let Some(line) = reader.next_line()? {
        let at = line.location(None);
        let rec = check.check(&line)?;
        if !is_sink_record(rec.event)
            && let Err(reason) = expired(rec.event, policy, now_ns)
        {
            return Ok(Some(Kept {
                segment: path.to_owned(),
                seq: Some(rec.seq),
                reason,
            }));
        }
        last = Some((rec.seq, rec.hash, at));
    }
    let changed = |at: Location, what: &str| VerifyError::Malformed {
        at,
        reason: format!("segment changed since the sink read it: {what}"),
    };
    match last {
        Some((seq, hash, _)) if seq == span.last_seq && hash == span.last_hash => Ok(None),
        Some((_, _, at)) => Err(changed(at, "it ends at a different record")),
        None => Err(changed(
            Location {
                file: path.to_owned(),
                line: 0,
                offset: 0,
                seq: None,
            },
            "it is empty",
        )),
    }
}

impl FileSink {
    /// Applies `policy` at time `now`: drops the longest run of oldest closed segments in which
    /// every event has expired (see [`RetentionPolicy`] and the [module docs](super)), after
    /// appending a `retention_applied` declaration (and a checkpoint, if keyed) and fsyncing it.
    /// Safe on a live sink: records keep flowing meanwhile. It starts with a
    /// [`flush`](AuditSink::flush), so every event recorded before the call is judged.
    ///
    /// The closed segments are read on the calling thread (each is checked against the chain
    /// the writer knows, so a segment changed on disk is refused, never judged by forged times);
    /// the writer thread, which owns the segments, writes the declaration and deletes the files.
    /// Nothing expired: nothing is written, and the report says why the oldest segment stays.
    ///
    /// Errors: a failed writer (sticky, as for `record`), a changed or unreadable segment (an
    /// [`AuditError::Io`] wrapping the [`VerifyError`]; nothing is deleted), or a deletion that
    /// failed after the declaration was written (the log still verifies; the next `open`
    /// finishes the deletion if it has the checkpoint key, and refuses otherwise, since nothing
    /// can then tell the declaration from a forged one: see the [module docs](super#retention)).
    pub fn retain(
        &self,
        policy: &RetentionPolicy,
        now: SystemTime,
    ) -> Result<RetainReport, AuditError> {
        let _one_at_a_time = self.retain_lock.lock();
        // Every event recorded before the call is judged with the rest.
        self.flush()?;
        let closed = {
            let st = self.shared.lock();
            if let Some(f) = &st.failed {
                return Err(f.to_error());
            }
            st.closed.clone()
        };
        let now_ns = unix_nanos(now);
        let mut expired_segments = Vec::new();
        let mut kept = None;
        for c in &closed {
            let Some(span) = &c.span else {
                kept = Some(Kept {
                    segment: c.path.clone(),
                    seq: None,
                    reason: KeptReason::NotUnderstood {
                        reason: "the segment holds no record".into(),
                    },
                });
                break;
            };
            match scan_segment(&c.path, span, policy, now_ns).map_err(corrupt)? {
                None => expired_segments.push((c.path.clone(), span.clone())),
                Some(k) => {
                    kept = Some(k);
                    break;
                }
            }
        }
        if kept.is_none() {
            kept = Some(Kept {
                segment: self.live_segment_path(),
                seq: None,
                reason: KeptReason::LiveSegment,
            });
        }
        let (Some(first), Some(last)) = (expired_segments.first(), expired_segments.last()) else {
            return Ok(RetainReport {
                segments_dropped: 0,
                records_dropped: 0,
                dropped_seqs: None,
                dropped_head: None,
                declaration_seq: None,
                kept,
            });
        };
        let dropped_seqs = first.1.first_seq..=last.1.last_seq;
        let dropped_head = hex_str(&last.1.last_hash);
        let records_dropped = expired_segments
            .iter()
            .map(|(_, s)| s.last_seq - s.first_seq + 1)
            .sum();
        let job = RetainJob {
            drop: expired_segments,
            policy: policy.summary(),
            evaluated_at: now_ns,
        };
        let shared = &*self.shared;
        let mut st = shared.lock();
        st.retain_done = None;
        st.retain_job = Some(job);
        shared.work.notify_one();
        let done = loop {
            if let Some(done) = st.retain_done.take() {
                break done;
            }
            if let Some(f) = &st.failed {
                return Err(f.to_error());
            }
            st = shared.wait(&shared.done, st);
        };
        drop(st);
        if let Some(e) = done.error {
            return Err(AuditError::Io(io::Error::new(
                e.kind(),
                format!(
                    "retention declared at seq {} but only {} segment(s) could be deleted \
                     (the next open with the checkpoint key finishes the deletion): {e}",
                    done.declaration_seq, done.deleted
                ),
            )));
        }
        Ok(RetainReport {
            segments_dropped: done.deleted,
            records_dropped,
            dropped_seqs: Some(dropped_seqs),
            dropped_head: Some(dropped_head),
            declaration_seq: Some(done.declaration_seq),
            kept,
        })
    }

    pub(super) fn live_segment_path(&self) -> PathBuf {
        list_segments(&self.dir)
            .ok()
            .and_then(|s| s.last().map(|s| s.1.clone()))
            .unwrap_or_else(|| self.dir.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_follows_the_policy_and_keeps_what_it_does_not_understand() {
        let day = Duration::from_secs(86_400);
        let policy = RetentionPolicy::new(Some(day)).class("hold", None);
        let day_ns = 86_400_000_000_000u64;
        let ev = |extra: &str| format!(r#"{{"time_unix_nano":1000{extra}}}"#).into_bytes();
        assert!(expired(&ev(""), &policy, 1000 + day_ns + 1).is_ok());
        assert!(matches!(
            expired(&ev(""), &policy, 1000 + day_ns),
            Err(KeptReason::NotExpired { expires_unix_nano, .. }) if expires_unix_nano == 1000 + day_ns
        ));
        assert!(expired(&ev(r#","tollgate.retention":null"#), &policy, u64::MAX).is_ok());
        assert!(matches!(
            expired(&ev(r#","tollgate.retention":"hold""#), &policy, u64::MAX),
            Err(KeptReason::KeptForever { .. })
        ));
        assert!(matches!(
            expired(&ev(r#","tollgate.retention":"phi""#), &policy, u64::MAX),
            Err(KeptReason::UnknownClass { class }) if class == "phi"
        ));
        assert!(matches!(
            expired(&ev(r#","tollgate.retention":7"#), &policy, u64::MAX),
            Err(KeptReason::NotUnderstood { .. })
        ));
        assert!(matches!(
            expired(br#"{"time_unix_nano":"soon"}"#, &policy, u64::MAX),
            Err(KeptReason::NotUnderstood { .. })
        ));
    }
}
