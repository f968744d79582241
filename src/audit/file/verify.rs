//! Verification: the report, the errors, and the chain check every reader shares.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::checkpoint::{CheckpointKey, MacFields};
use super::reader::TailPolicy;
use super::reader::{Line, segment_name, walk};
use super::record::{
    CheckpointBody, GENESIS_HEX, Hex64, RetentionBody, chain_hash, event_is_json, hex_str,
    parse_frame, parse_hex64,
};
use super::{CHECKPOINT_PREFIX, RETENTION_PREFIX};
#[cfg(doc)]
use super::{FileSink, GENESIS};
use crate::audit::AuditError;

/// The result of a successful [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Segment files walked.
    pub segments: u64,
    /// Records verified.
    pub records: u64,
    /// The first record's seq: 0 if the log is empty, 1 unless retention dropped a prefix.
    pub first_seq: u64,
    /// The last record's seq (0 if the log is empty).
    pub last_seq: u64,
    /// The last record's hash ([`GENESIS`] if the log is empty). Anchoring it elsewhere makes
    /// truncation of the log detectable too.
    pub head_hash: String,
    /// Records up to this seq were dropped under a retention declaration found in the chain
    /// (`first_seq - 1`; 0 if nothing was dropped).
    pub dropped_through: u64,
    /// Checkpoint records in the chain (their MACs were verified only if `macs_verified`).
    pub checkpoints: u64,
    /// Whether checkpoint MACs were verified (a key was given).
    pub macs_verified: bool,
    /// The seq of the last checkpoint record.
    pub last_checkpoint_seq: Option<u64>,
    /// The time the last checkpoint was written, unix nanoseconds.
    pub last_checkpoint_unix_nano: Option<u64>,
    /// Records after the last checkpoint (all records if there is none): no MAC covers them, so a
    /// keyed verification cannot tell whether more records after them were cut off.
    pub uncovered_records: u64,
    /// Records that were uncovered when a sink was (re)opened and that its first checkpoint
    /// vouched for (see the [module docs](super)).
    pub adopted_records: u64,
}

impl VerifyReport {
    /// Whether MACs were verified and every record is covered by a checkpoint.
    pub fn fully_covered(&self) -> bool {
        self.macs_verified && self.uncovered_records == 0
    }
}

/// Where a bad record is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Location {
    /// The segment file.
    pub file: PathBuf,
    /// The line in that file, from 1.
    pub line: u64,
    /// Byte offset of the start of that line.
    pub offset: u64,
    /// The seq the line claims, if it could be read.
    pub seq: Option<u64>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} line {} (byte {})",
            self.file.display(),
            self.line,
            self.offset
        )?;
        match self.seq {
            Some(seq) => write!(f, ", seq {seq}"),
            None => write!(f, ", seq unreadable"),
        }
    }
}

/// Why an audit log failed verification: the first bad record, what is wrong with it and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The record's stored hash does not match its contents: the record was changed.
    #[error("{at}: record modified (its hash does not match its contents)")]
    Modified {
        /// The record.
        at: Location,
    },
    /// The seq jumps forward: records are missing here (deleted) or one was inserted or moved.
    /// A log whose first record is not seq 1 and whose missing prefix no retention declaration
    /// covers is reported this way too, at its first record, once the whole log has been read.
    #[error("{at}: seq gap: expected seq {expected}, found {found}")]
    SeqGap {
        /// The record.
        at: Location,
        /// The seq that should be here.
        expected: u64,
        /// The seq found.
        found: u64,
    },
    /// The seq goes backwards or repeats: a record was duplicated, swapped or replayed.
    #[error("{at}: records reordered or duplicated: expected seq {expected}, found {found}")]
    Reordered {
        /// The record.
        at: Location,
        /// The seq that should be here.
        expected: u64,
        /// The seq found.
        found: u64,
    },
    /// The record's `prev` is not the previous record's hash.
    #[error("{at}: broken chain: `prev` is not the previous record's hash")]
    BrokenLink {
        /// The record.
        at: Location,
    },
    /// The last line is incomplete (a torn write): it has no terminating newline.
    #[error("{at}: truncated record (torn last line)")]
    Truncated {
        /// The torn line.
        at: Location,
    },
    /// The line is not a well-formed record.
    #[error("{at}: malformed record: {reason}")]
    Malformed {
        /// The line.
        at: Location,
        /// What is wrong with it.
        reason: String,
    },
    /// A checkpoint does not describe the record before it (its seq or head hash differ): the
    /// chain before it was changed and re-hashed.
    #[error("{at}: checkpoint {seq} does not match the chain: {reason}")]
    CheckpointMismatch {
        /// The checkpoint record.
        at: Location,
        /// Its seq.
        seq: u64,
        /// What differs.
        reason: String,
    },
    /// A checkpoint's MAC does not verify under its key: the chain up to it was rewritten by
    /// someone without the key (or the key given is not the one that signed it).
    #[error(
        "{at}: checkpoint {seq} has a bad MAC under key `{key_id}` (the log was rewritten without the key, or the key is wrong)"
    )]
    CheckpointMac {
        /// The checkpoint record.
        at: Location,
        /// Its seq.
        seq: u64,
        /// The key id it names.
        key_id: String,
    },
    /// A checkpoint names a key id none of the keys given has, so it cannot be checked.
    #[error("{at}: checkpoint {seq} is signed with key `{key_id}`, which was not given")]
    CheckpointKeyUnknown {
        /// The checkpoint record.
        at: Location,
        /// Its seq.
        seq: u64,
        /// The key id it names.
        key_id: String,
    },
    /// A retention declaration contradicts the chain (the hash it states for the last dropped
    /// record is not that record's), or, in a keyed verification, the declaration that explains
    /// a missing prefix is not followed by any checkpoint.
    #[error("{at}: retention declaration {seq} contradicts the chain: {reason}")]
    RetentionMismatch {
        /// The declaration.
        at: Location,
        /// Its seq.
        seq: u64,
        /// What differs.
        reason: String,
    },
    /// [`VerifyOptions::require_coverage`] was set and records follow the last checkpoint.
    #[error(
        "{uncovered} record(s) after the last checkpoint ({}) are not covered by any checkpoint",
        match .last_checkpoint_seq { Some(s) => format!("seq {s}"), None => "there is none".into() }
    )]
    NotCovered {
        /// Records after the last checkpoint.
        uncovered: u64,
        /// The last checkpoint's seq.
        last_checkpoint_seq: Option<u64>,
    },
    /// Segment files are missing: numbering must run without gaps (retention removes segments
    /// from the start only), and a log that starts after segment 1 must still hold records
    /// (retention always leaves its declaration behind).
    #[error("missing segment {expected} (segments must be numbered without gaps)")]
    MissingSegment {
        /// The file that should exist.
        expected: PathBuf,
    },
    /// The log's path exists but is not a directory.
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    /// Reading the log failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory being read.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl VerifyError {
    /// Where the bad record is, for errors about one record.
    pub fn location(&self) -> Option<&Location> {
        match self {
            VerifyError::Modified { at }
            | VerifyError::SeqGap { at, .. }
            | VerifyError::Reordered { at, .. }
            | VerifyError::BrokenLink { at }
            | VerifyError::Truncated { at }
            | VerifyError::Malformed { at, .. }
            | VerifyError::CheckpointMismatch { at, .. }
            | VerifyError::CheckpointMac { at, .. }
            | VerifyError::CheckpointKeyUnknown { at, .. }
            | VerifyError::RetentionMismatch { at, .. } => Some(at),
            VerifyError::NotCovered { .. }
            | VerifyError::MissingSegment { .. }
            | VerifyError::NotADirectory(_)
            | VerifyError::Io { .. } => None,
        }
    }
}

/// The [`VerifyError`] inside an [`AuditError`] returned by [`FileSink::open`] or
/// [`FileSink::retain`] for a damaged log.
///
/// They return [`AuditError::Io`] with [`io::ErrorKind::InvalidData`] wrapping the
/// `VerifyError` (file, line, seq, what is wrong); this gets it back.
pub fn corruption(err: &AuditError) -> Option<&VerifyError> {
    match err {
        AuditError::Io(e) => e.get_ref()?.downcast_ref::<VerifyError>(),
        _ => None,
    }
}

/// How [`verify_with`] checks a log.
///
/// ```
/// use tollgate::audit::file::{CheckpointKey, VerifyOptions};
///
/// let current = CheckpointKey::new("k2", vec![7; 32])?;
/// let retired = CheckpointKey::new("k1", vec![9; 32])?;
/// let options = VerifyOptions::new().key(current).key(retired).require_coverage(true);
/// # let _ = options;
/// # Ok::<(), tollgate::audit::file::CheckpointKeyError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyOptions {
    /// Keys to check checkpoint MACs with (matched by key id). Empty: MACs are not checked, but
    /// each checkpoint must still describe the record before it.
    pub keys: Vec<CheckpointKey>,
    /// Fail with [`VerifyError::NotCovered`] if any record follows the last checkpoint (or there is
    /// no checkpoint). Meant for a log that was closed cleanly; a live log's tail is uncovered
    /// until its next checkpoint.
    pub require_coverage: bool,
}

impl VerifyOptions {
    /// Chain checks only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key to check checkpoint MACs with.
    pub fn key(mut self, key: CheckpointKey) -> Self {
        self.keys.push(key);
        self
    }

    /// Sets [`require_coverage`](Self::require_coverage).
    pub fn require_coverage(mut self, on: bool) -> Self {
        self.require_coverage = on;
        self
    }
}

/// Checks a whole audit log: every line well formed, seqs consecutive, every `prev` the previous
/// record's hash, every hash recomputed from the exact bytes in the file, every checkpoint
/// describing the record before it, a missing prefix only where a retention declaration allows
/// it. Streams the segments line by line in constant memory (plus a few words per segment).
/// Returns the first bad record. Checkpoint MACs are not checked: see [`verify_keyed`].
///
/// A directory without segments verifies as an empty log.
pub fn verify(dir: impl AsRef<Path>) -> Result<VerifyReport, VerifyError> {
    verify_with(dir, &VerifyOptions::new())
}

/// [`verify`], and also checks every checkpoint's MAC with `key` (a checkpoint naming another
/// key id is an error). Check [`VerifyReport::uncovered_records`]: records after the last
/// checkpoint are chained but not authenticated.
pub fn verify_keyed(
    dir: impl AsRef<Path>,
    key: &CheckpointKey,
) -> Result<VerifyReport, VerifyError> {
    verify_with(dir, &VerifyOptions::new().key(key.clone()))
}

/// [`verify`] with options: keys for checkpoint MACs, and whether an uncovered tail is an error.
pub fn verify_with(
    dir: impl AsRef<Path>,
    options: &VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    let dir = dir.as_ref();
    check_is_dir(dir)?;
    let walk = walk(dir, TailPolicy::Report, options.keys.clone())?;
    let report = walk.report;
    if options.require_coverage && report.uncovered_records > 0 {
        return Err(VerifyError::NotCovered {
            uncovered: report.uncovered_records,
            last_checkpoint_seq: report.last_checkpoint_seq,
        });
    }
    Ok(report)
}

pub(in crate::audit) fn check_is_dir(dir: &Path) -> Result<(), VerifyError> {
    match fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(VerifyError::NotADirectory(dir.to_owned())),
        Ok(_) => Ok(()),
        Err(source) => Err(VerifyError::Io {
            path: dir.to_owned(),
            source,
        }),
    }
}

// ------------------------------------------------------------------------------------------------
// Checking the chain (verify, recovery, query, retention)
// ------------------------------------------------------------------------------------------------

/// Where the chain stands after the records read so far.
#[derive(Debug, Clone)]
pub(super) struct Chain {
    pub(super) next_seq: u64,
    pub(super) prev: Hex64,
    pub(super) records: u64,
}

impl Chain {
    pub(super) fn new() -> Self {
        Self {
            next_seq: 1,
            prev: GENESIS_HEX,
            records: 0,
        }
    }
}

/// The records one segment holds: its first record's seq and `prev`, its last record's seq and
/// hash.
#[derive(Debug, Clone)]
pub(in crate::audit) struct Span {
    pub(super) index: u64,
    pub(super) first_seq: u64,
    pub(super) first_prev: Hex64,
    pub(super) last_seq: u64,
    pub(super) last_hash: Hex64,
}

/// The first record of the log.
pub(super) struct Start {
    pub(super) seq: u64,
    pub(super) prev: Hex64,
    pub(super) at: Location,
}

/// A line that passed [`ChainCheck::check`].
pub(in crate::audit) struct Checked<'a> {
    /// The record's seq.
    pub(in crate::audit) seq: u64,
    /// The record's hash.
    pub(in crate::audit) hash: Hex64,
    /// The exact event bytes.
    pub(in crate::audit) event: &'a [u8],
}

/// Verifies records one at a time, in order, across segments.
pub(in crate::audit) struct ChainCheck {
    pub(super) chain: Chain,
    pub(super) keys: Vec<CheckpointKey>,
    /// The first record; `None` until one is seen.
    pub(super) start: Option<Start>,
    /// Whether the records before the first one are accounted for (it is seq 1, or a retention
    /// declaration covers the gap).
    pub(super) prefix_declared: bool,
    /// The largest `last_seq` of any retention declaration seen.
    pub(super) declared_through: u64,
    /// The largest declared `last_seq` at or after the first record: a deletion not finished.
    pub(super) pending_drop: Option<u64>,
    /// The first declaration that explains a start after seq 1: its seq and place.
    pub(super) explained_by: Option<(u64, Location)>,
    pub(super) spans: Vec<Span>,
    pub(super) checkpoints: u64,
    pub(super) last_checkpoint: Option<(u64, u64)>,
    pub(super) adopted: u64,
}

impl fmt::Debug for ChainCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainCheck")
            .field("next_seq", &self.chain.next_seq)
            .field("records", &self.chain.records)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl ChainCheck {
    /// A check of a whole log, from its first record; `keys` verify checkpoint MACs (none: MACs
    /// are not checked).
    pub(in crate::audit) fn new(keys: Vec<CheckpointKey>) -> Self {
        Self {
            chain: Chain::new(),
            keys,
            start: None,
            prefix_declared: false,
            declared_through: 0,
            pending_drop: None,
            explained_by: None,
            spans: Vec::new(),
            checkpoints: 0,
            last_checkpoint: None,
            adopted: 0,
        }
    }

    /// A check of a run of records known to start at `seq` after a record whose hash is `prev`.
    pub(super) fn continuing(seq: u64, prev: Hex64, at: Location) -> Self {
        let mut c = Self::new(Vec::new());
        c.chain.next_seq = seq;
        c.chain.prev = prev;
        c.start = Some(Start { seq, prev, at });
        c.prefix_declared = true;
        c
    }

    /// Checks the next line; on success advances the chain.
    pub(in crate::audit) fn check<'a>(
        &mut self,
        line: &Line<'a>,
    ) -> Result<Checked<'a>, VerifyError> {
        let content = line.content;
        let frame = parse_frame(content).map_err(|u| VerifyError::Malformed {
            at: line.location(u.seq),
            reason: u.reason,
        })?;
        let seq = frame.seq;
        let at = || line.location(Some(seq));
        if self.start.is_none() {
            let mut prev = GENESIS_HEX;
            // Retention drops whole segments, so only a log whose first segment is not number 1
            // can start after seq 1: accepted for now, checked against its declaration at the end.
            if seq > 1 && line.segment != 1 {
                prev.copy_from_slice(frame.prev);
                self.chain.next_seq = seq;
                self.chain.prev = prev;
            }
            self.prefix_declared = seq <= 1;
            self.start = Some(Start {
                seq: seq.max(1),
                prev,
                at: at(),
            });
        }
        let expected = self.chain.next_seq;
        if seq > expected {
            return Err(VerifyError::SeqGap {
                at: at(),
                expected,
                found: seq,
            });
        }
        if seq < expected {
            return Err(VerifyError::Reordered {
                at: at(),
                expected,
                found: seq,
            });
        }
        if frame.prev != self.chain.prev {
            return Err(VerifyError::BrokenLink { at: at() });
        }
        let hash = chain_hash(&self.chain.prev, seq, frame.event);
        if frame.hash != hash {
            return Err(VerifyError::Modified { at: at() });
        }
        event_is_json(frame.event).map_err(|reason| VerifyError::Malformed { at: at(), reason })?;
        if frame.event.starts_with(CHECKPOINT_PREFIX) {
            self.on_checkpoint(seq, frame.event, line)?;
        } else if frame.event.starts_with(RETENTION_PREFIX) {
            self.on_retention(seq, frame.event, line)?;
        }
        match self.spans.last_mut() {
            Some(s) if s.index == line.segment => {
                s.last_seq = seq;
                s.last_hash = hash;
            }
            _ => self.spans.push(Span {
                index: line.segment,
                first_seq: seq,
                first_prev: self.chain.prev,
                last_seq: seq,
                last_hash: hash,
            }),
        }
        self.chain.prev = hash;
        self.chain.next_seq = seq + 1;
        self.chain.records += 1;
        Ok(Checked {
            seq,
            hash,
            event: frame.event,
        })
    }

    pub(super) fn on_checkpoint(
        &mut self,
        seq: u64,
        event: &[u8],
        line: &Line<'_>,
    ) -> Result<(), VerifyError> {
        let at = || line.location(Some(seq));
        let cp: CheckpointBody<'_> =
            serde_json::from_slice(event).map_err(|e| VerifyError::Malformed {
                at: at(),
                reason: format!("checkpoint record: {e}"),
            })?;
        let mismatch = |reason: String| VerifyError::CheckpointMismatch {
            at: at(),
            seq,
            reason,
        };
        if cp.event != "checkpoint" {
            return Err(mismatch("its kind is ambiguous".into()));
        }
        if cp.seq.checked_add(1) != Some(seq) {
            return Err(mismatch(format!(
                "it covers seq {} instead of the record before it",
                cp.seq
            )));
        }
        if cp.head.as_bytes() != self.chain.prev {
            return Err(mismatch(
                "its head is not the hash of the record before it".into(),
            ));
        }
        if !self.keys.is_empty() {
            let Some(key) = self.keys.iter().find(|k| k.id() == cp.key_id) else {
                return Err(VerifyError::CheckpointKeyUnknown {
                    at: at(),
                    seq,
                    key_id: cp.key_id.into_owned(),
                });
            };
            let fields = MacFields {
                seq: cp.seq,
                head: cp.head.as_bytes(),
                time_unix_nano: cp.time_unix_nano,
                adopted: cp.adopted,
            };
            if !key.check(&fields, &cp.mac) {
                return Err(VerifyError::CheckpointMac {
                    at: at(),
                    seq,
                    key_id: cp.key_id.into_owned(),
                });
            }
        }
        self.checkpoints += 1;
        self.last_checkpoint = Some((seq, cp.time_unix_nano));
        self.adopted = self.adopted.saturating_add(cp.adopted);
        Ok(())
    }

    pub(super) fn on_retention(
        &mut self,
        seq: u64,
        event: &[u8],
        line: &Line<'_>,
    ) -> Result<(), VerifyError> {
        let at = || line.location(Some(seq));
        let malformed = |reason: String| VerifyError::Malformed { at: at(), reason };
        let d: RetentionBody<'_> = serde_json::from_slice(event)
            .map_err(|e| malformed(format!("retention declaration: {e}")))?;
        if d.event != "retention_applied" {
            return Err(malformed(
                "retention declaration: its kind is ambiguous".into(),
            ));
        }
        if d.first_seq == 0 || d.first_seq > d.last_seq || d.last_seq >= seq {
            return Err(malformed(format!(
                "retention declaration drops seq {}..={}, which does not lie before it",
                d.first_seq, d.last_seq
            )));
        }
        let Some(head) = parse_hex64(&d.head) else {
            return Err(malformed(
                "retention declaration: head is not 64 lowercase hex digits".into(),
            ));
        };
        let mismatch = |reason: String| VerifyError::RetentionMismatch {
            at: at(),
            seq,
            reason,
        };
        self.declared_through = self.declared_through.max(d.last_seq);
        let Some(start) = &self.start else {
            return Ok(());
        };
        let start_seq = start.seq;
        if d.last_seq + 1 == start.seq {
            if head != start.prev {
                return Err(mismatch(format!(
                    "it drops through seq {}, but the first record's `prev` is not the hash it states",
                    d.last_seq
                )));
            }
            self.prefix_declared = true;
        } else if d.last_seq >= start.seq {
            // The deletion was interrupted (or has not happened yet): the last record it drops is
            // still here, and must end a segment before this one and have the stated hash.
            let ok = self.spans.iter().any(|s| {
                s.index != line.segment && s.last_seq == d.last_seq && s.last_hash == head
            });
            if !ok {
                return Err(mismatch(format!(
                    "it drops through seq {}, which is still present but is not the end of an \
                     earlier segment with the hash it states",
                    d.last_seq
                )));
            }
            self.prefix_declared = true;
            self.pending_drop = Some(self.pending_drop.unwrap_or(0).max(d.last_seq));
        }
        if start_seq > 1 && d.last_seq + 1 >= start_seq && self.explained_by.is_none() {
            self.explained_by = Some((seq, at()));
        }
        Ok(())
    }

    /// Ends the check of the log whose segments were `segments`: a missing prefix nobody
    /// declared is an error now, and so is a log without records whose first segment is not
    /// number 1 (its history is gone, and no declaration is left to say so: retention always
    /// leaves its declaration behind).
    pub(in crate::audit) fn finish(
        &self,
        segments: &[(u64, PathBuf)],
    ) -> Result<VerifyReport, VerifyError> {
        if self.chain.records == 0
            && let Some((first, path)) = segments.first()
            && *first > 1
        {
            return Err(VerifyError::MissingSegment {
                expected: path.with_file_name(segment_name(1)),
            });
        }
        if let Some(start) = &self.start
            && !self.prefix_declared
        {
            return Err(VerifyError::SeqGap {
                at: start.at.clone(),
                expected: self.declared_through + 1,
                found: start.seq,
            });
        }
        if !self.keys.is_empty()
            && let Some((seq, at)) = &self.explained_by
            && self.last_checkpoint.is_none_or(|(cp, _)| cp < *seq)
        {
            return Err(VerifyError::RetentionMismatch {
                at: at.clone(),
                seq: *seq,
                reason: "no checkpoint follows it, so nothing authenticates the drop it declares"
                    .into(),
            });
        }
        let records = self.chain.records;
        let first_seq = if records == 0 {
            0
        } else {
            self.start.as_ref().map_or(1, |s| s.seq)
        };
        let last_seq = if records == 0 {
            0
        } else {
            self.chain.next_seq - 1
        };
        let uncovered = match self.last_checkpoint {
            Some((seq, _)) => last_seq - seq,
            None => records,
        };
        Ok(VerifyReport {
            segments: segments.len() as u64,
            records,
            first_seq,
            last_seq,
            head_hash: hex_str(&self.chain.prev),
            dropped_through: first_seq.saturating_sub(1),
            checkpoints: self.checkpoints,
            macs_verified: !self.keys.is_empty(),
            last_checkpoint_seq: self.last_checkpoint.map(|c| c.0),
            last_checkpoint_unix_nano: self.last_checkpoint.map(|c| c.1),
            uncovered_records: uncovered,
            adopted_records: self.adopted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::file::record::{PolicyField, append_record};
    use std::collections::BTreeMap;

    fn line(seq: u64, prev: &Hex64, event: &[u8]) -> (Vec<u8>, Hex64) {
        let hash = chain_hash(prev, seq, event);
        let mut buf = Vec::new();
        append_record(&mut buf, seq, prev, &hash, event);
        (buf, hash)
    }

    fn at<'a>(content: &'a [u8], segment: u64, n: u64) -> Line<'a> {
        Line {
            content,
            file: Path::new("audit-000001.jsonl"),
            segment,
            line: n,
            offset: 0,
        }
    }

    #[test]
    fn a_missing_prefix_needs_a_matching_declaration() {
        // Records 3.. of a chain whose records 1 and 2 are gone.
        let (_, h1) = line(1, &GENESIS_HEX, br#"{"n":1}"#);
        let (_, h2) = line(2, &h1, br#"{"n":2}"#);
        let (l3, h3) = line(3, &h2, br#"{"n":3}"#);
        let decl = |head: &Hex64| {
            serde_json::to_vec(&RetentionBody {
                event: "retention_applied",
                time_unix_nano: 1,
                evaluated_at: 1,
                first_seq: 1,
                last_seq: 2,
                head: hex_str(head).into(),
                first_segment: 1,
                last_segment: 1,
                policy: PolicyField::Write(BTreeMap::new()),
            })
            .unwrap()
        };
        let strip = |l: &[u8]| l[..l.len() - 1].to_vec();
        // No declaration: a gap at the first record, reported at the end.
        let mut check = ChainCheck::new(Vec::new());
        check.check(&at(&strip(&l3), 2, 1)).unwrap();
        assert!(matches!(
            check.finish(&[]),
            Err(VerifyError::SeqGap {
                expected: 1,
                found: 3,
                ..
            })
        ));
        // The right declaration.
        let (l4, _) = line(4, &h3, &decl(&h2));
        let mut check = ChainCheck::new(Vec::new());
        check.check(&at(&strip(&l3), 2, 1)).unwrap();
        check.check(&at(&strip(&l4), 2, 2)).unwrap();
        let report = check.finish(&[]).unwrap();
        assert_eq!((report.first_seq, report.dropped_through), (3, 2));
        // A declaration stating another hash.
        let (l4, _) = line(4, &h3, &decl(&h3));
        let mut check = ChainCheck::new(Vec::new());
        check.check(&at(&strip(&l3), 2, 1)).unwrap();
        assert!(matches!(
            check.check(&at(&strip(&l4), 2, 2)),
            Err(VerifyError::RetentionMismatch { seq: 4, .. })
        ));
    }
}
