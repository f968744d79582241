//! Verification: the report, the errors, and the chain check every reader shares.

use std::fmt;
use std::fs;
use std::io;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::chain::ranges_text;
use super::checkpoint::CheckpointKey;
use super::reader::{Line, TailPolicy, walk};
use super::witness::{Witness, WitnessedHead};
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
    /// adopted (see the [module docs](super)): authenticated from then on, but never by the
    /// writer that wrote them. Each adoption is also a [`Notice::Adopted`].
    pub adopted_records: u64,
    /// The witnessed head's seq the chain was checked against, if one was given.
    pub witnessed_seq: Option<u64>,
    /// What the log declares about itself besides its records, in chain order: records
    /// adopted on reopen, events lost by a failed writer, records removed by a repair, a
    /// retention deletion not finished.
    pub notices: Vec<Notice>,
}

impl VerifyReport {
    /// Whether MACs were verified and every record is covered by a checkpoint its writer wrote
    /// (none after the last checkpoint, none merely adopted on reopen).
    pub fn fully_covered(&self) -> bool {
        self.macs_verified && self.uncovered_records == 0 && self.adopted_records == 0
    }

    /// Whether the log declares nothing about itself: no adoption, loss, repair or pending
    /// deletion (see [`notices`](Self::notices)).
    pub fn is_clean(&self) -> bool {
        self.notices.is_empty()
    }
}

/// Something the log declares about itself, which a clean log does not (see
/// [`VerifyReport::notices`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// A sink reopened the log, found records no checkpoint covered (a crash's tail, or a log
    /// that had no checkpoints) and its first checkpoint adopted them: tampering with them
    /// afterwards is detected, but whoever could write the directory before that reopen could
    /// have written them. They never authorise a retention or repair declaration among them.
    Adopted {
        /// The adopting checkpoint.
        checkpoint_seq: u64,
        /// How many records it adopted.
        count: u64,
        /// Their seqs (those still in the log).
        records: Vec<RangeInclusive<u64>>,
    },
    /// A writer failed after acknowledging events it never made durable (asynchronous
    /// durability modes); the next `open` declared them.
    Lost {
        /// The declaration.
        seq: u64,
        /// The failure's id.
        id: String,
        /// How many acknowledged events never reached the log.
        count: u64,
        /// The last record before the loss.
        after_seq: u64,
        /// The guard's event seqs of the lost events, lowest and highest, where known.
        event_seqs: Option<RangeInclusive<u64>>,
        /// The writer's error.
        error: String,
    },
    /// [`FileSink::repair`] removed damaged records.
    Repaired {
        /// The declaration.
        seq: u64,
        /// The last record kept.
        after_seq: u64,
        /// Every seq up to this one after `after_seq` is declared gone.
        removed_through_seq: u64,
        /// The seqs the removed lines claimed, where they could be read.
        removed_seqs: Option<RangeInclusive<u64>>,
        /// Lines removed.
        removed_lines: u64,
        /// Bytes removed.
        removed_bytes: u64,
        /// SHA-256 of the removed bytes (hex).
        removed_sha256: String,
        /// The file in the directory that keeps them.
        saved_as: String,
        /// Why.
        reason: String,
    },
    /// A retention declaration whose deletion has not happened (or not finished) yet: the
    /// records it drops are still in the log.
    RetentionPending {
        /// The declaration.
        seq: u64,
        /// The last seq it drops.
        through: u64,
    },
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::Adopted {
                checkpoint_seq,
                count,
                records,
            } => write!(
                f,
                "seq {checkpoint_seq}: {count} record(s) adopted on reopen, never authenticated \
                 by their writer ({})",
                ranges_text(records)
            ),
            Notice::Lost {
                seq,
                count,
                after_seq,
                event_seqs,
                error,
                ..
            } => {
                write!(
                    f,
                    "seq {seq}: {count} acknowledged event(s) lost after seq {after_seq}"
                )?;
                if let Some(r) = event_seqs {
                    write!(f, " (guard event seqs {}..={})", r.start(), r.end())?;
                }
                write!(f, ": {error}")
            }
            Notice::Repaired {
                seq,
                after_seq,
                removed_through_seq,
                removed_lines,
                removed_bytes,
                removed_sha256,
                saved_as,
                reason,
                ..
            } => write!(
                f,
                "seq {seq}: repair removed {removed_lines} line(s), {removed_bytes} bytes \
                 (sha256 {removed_sha256}, kept in {saved_as}) after seq {after_seq}; seqs \
                 {}..={removed_through_seq} declared gone: {reason}",
                after_seq + 1
            ),
            Notice::RetentionPending { seq, through } => write!(
                f,
                "seq {seq}: retention declared records up to seq {through} dropped, but they \
                 are still here (deletion not finished)"
            ),
        }
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
    /// A file named like a segment whose number is written differently from how the writer
    /// names segments (extra leading zeros), or is the largest number there is: it would alias
    /// another segment's number, or leave no number for the next one.
    #[error("{path}: not a segment name the writer could have made (expected `{expected}`)")]
    SegmentName {
        /// The file.
        path: PathBuf,
        /// The name the writer gives the segment of that number.
        expected: String,
    },
    /// A repair declaration (or another declaration that explains missing records) is not
    /// covered by a checkpoint its writer wrote: nothing authenticates it.
    #[error(
        "{at}: {what} {seq} is not authenticated: no checkpoint its writer wrote covers it \
         (none follows it, or the one that does only adopted it on reopen)"
    )]
    NotAuthenticated {
        /// The declaration.
        at: Location,
        /// Its seq.
        seq: u64,
        /// What it is.
        what: String,
    },
    /// [`FileSink::open`] found a retention declaration whose deletion is not finished, and no
    /// checkpoint its writer wrote covers it (or no checkpoint key was given to check one):
    /// finishing the deletion could carry out a forged declaration, so nothing was deleted.
    #[error(
        "{at}: retention declaration {seq} asks to finish deleting records up to seq {through}, \
         but it is not covered by a checkpoint its writer wrote (or no checkpoint key was given \
         to check one); nothing was deleted. If the declaration is genuine, delete the segments \
         it names by hand (the log then verifies); otherwise remove it with `FileSink::repair` \
         / `tollgate audit repair --cut-after {}`",
        .seq - 1
    )]
    RetentionNotAuthenticated {
        /// The declaration.
        at: Location,
        /// Its seq.
        seq: u64,
        /// The last seq it drops.
        through: u64,
    },
    /// A witnessed head's record is in the log with another hash: the log was rewritten from
    /// there on.
    #[error("{at}: record {seq} does not have the hash the witness holds for it ({witnessed})")]
    WitnessMismatch {
        /// The record.
        at: Location,
        /// Its seq.
        seq: u64,
        /// The hash the witness holds.
        witnessed: String,
    },
    /// The log ends before the head its witness holds: records were cut off its end.
    #[error(
        "the log ends at seq {last_seq}, before the witnessed head seq {witnessed_seq} (hash \
         {witnessed_hash}): records were cut off its end"
    )]
    BehindWitness {
        /// The witnessed seq.
        witnessed_seq: u64,
        /// The witnessed hash.
        witnessed_hash: String,
        /// The log's last seq.
        last_seq: u64,
    },
    /// The witnessed head cannot be trusted (its MAC fails) or read.
    #[error("witnessed head seq {seq}: {reason}")]
    WitnessInvalid {
        /// The head's seq (0 if it could not be read).
        seq: u64,
        /// What is wrong.
        reason: String,
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
            | VerifyError::RetentionMismatch { at, .. }
            | VerifyError::NotAuthenticated { at, .. }
            | VerifyError::RetentionNotAuthenticated { at, .. }
            | VerifyError::WitnessMismatch { at, .. } => Some(at),
            VerifyError::NotCovered { .. }
            | VerifyError::BehindWitness { .. }
            | VerifyError::WitnessInvalid { .. }
            | VerifyError::MissingSegment { .. }
            | VerifyError::SegmentName { .. }
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
    /// A head published to a [`Witness`]: the chain must reach it with the same hash (or
    /// declare it gone by retention or repair), else [`VerifyError::BehindWitness`] or
    /// [`VerifyError::WitnessMismatch`]. Without one, records cut off the end of the log are
    /// not detected (see the [module docs](super#what-verify-detects)).
    pub witnessed_head: Option<WitnessedHead>,
    /// Called with the [`Progress`] of the walk after each record is checked (see
    /// [`progress`](Self::progress)). It only observes: the result is the same with or without.
    pub progress: Option<ProgressHook>,
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

    /// Sets [`witnessed_head`](Self::witnessed_head).
    pub fn witnessed_head(mut self, head: WitnessedHead) -> Self {
        self.witnessed_head = Some(head);
        self
    }

    /// Sets [`witnessed_head`](Self::witnessed_head) to what `witness` holds now (nothing, if
    /// it holds no head).
    pub fn witness(mut self, witness: &dyn Witness) -> Result<Self, VerifyError> {
        self.witnessed_head = witness.latest().map_err(|e| VerifyError::WitnessInvalid {
            seq: 0,
            reason: format!("the witness could not be read: {e}"),
        })?;
        Ok(self)
    }

    /// Calls `hook` with the [`Progress`] of the walk after each record is checked (from the
    /// thread running [`verify_with`]), for a progress display over a large log. It is called
    /// once per record, so keep it cheap and throttle in it (e.g. redraw every 250 ms).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use tollgate::audit::file::{self, VerifyOptions};
    ///
    /// # let scratch = tempfile::tempdir()?;
    /// # let dir = scratch.path();
    /// let seen = Arc::new(AtomicU64::new(0));
    /// let counter = Arc::clone(&seen);
    /// let options = VerifyOptions::new().progress(move |p| counter.store(p.records, Ordering::Relaxed));
    /// let report = file::verify_with(&dir, &options)?;
    /// assert_eq!(seen.load(Ordering::Relaxed), report.records);
    /// # scratch.close()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn progress(mut self, hook: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(ProgressHook::new(hook));
        self
    }
}

/// How far a reader has got through a log: what a [`ProgressHook`] receives (see
/// [`VerifyOptions::progress`] and [`Query::progress`](crate::audit::query::Query::progress)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Records (lines) read so far.
    pub records: u64,
    /// Bytes of those records, newlines included.
    pub bytes: u64,
    /// The size of all segments when the read started (a live log may grow past it).
    pub total_bytes: u64,
    /// The segment being read, counted from 1 (the first segment retention left is 1).
    pub segment: u64,
    /// Segments in the log.
    pub segments: u64,
}

/// A callback receiving [`Progress`] while a log is read. Clones share the callback; two hooks
/// are equal when they are clones of one another.
#[derive(Clone)]
pub struct ProgressHook(Arc<dyn Fn(&Progress) + Send + Sync>);

impl ProgressHook {
    /// Wraps a callback.
    pub fn new(hook: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        Self(Arc::new(hook))
    }
}

impl fmt::Debug for ProgressHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProgressHook(..)")
    }
}

impl PartialEq for ProgressHook {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ProgressHook {}

/// Counts what a reader has read and hands it to a [`ProgressHook`].
#[derive(Debug)]
pub(in crate::audit) struct ProgressTracker {
    hook: ProgressHook,
    first_segment: u64,
    progress: Progress,
}

impl ProgressTracker {
    /// Starts counting over `segments` (sizes are read from the file system now; a segment
    /// whose size cannot be read counts as empty: this is for display only).
    pub(in crate::audit) fn new(hook: ProgressHook, segments: &[(u64, PathBuf)]) -> Self {
        let total_bytes = segments
            .iter()
            .filter_map(|(_, path)| fs::metadata(path).ok())
            .map(|m| m.len())
            .sum();
        Self {
            hook,
            first_segment: segments.first().map_or(0, |s| s.0),
            progress: Progress {
                total_bytes,
                segments: segments.len() as u64,
                ..Progress::default()
            },
        }
    }

    /// Counts one complete line (its newline included) and reports.
    pub(in crate::audit) fn line(&mut self, line: &Line<'_>) {
        let p = &mut self.progress;
        p.records += 1;
        p.bytes += line.content.len() as u64 + 1;
        p.segment = line.segment - self.first_segment + 1;
        (self.hook.0)(p);
    }
}

/// Checks a whole audit log: every line well formed, seqs consecutive, every `prev` the previous
/// record's hash, every hash recomputed from the exact bytes in the file, every checkpoint
/// describing the record before it, a missing prefix only where a retention declaration allows
/// it. Streams the segments in batches of lines in bounded memory (two batches of 2,048 lines
/// or about 2 MiB per thread, counting at least two threads, plus a few words per segment),
/// reading each line from the file once: what a
/// record can show alone (its hash over its own `prev`, seq and event; its event's syntax) is
/// checked on up to 8 threads (the machine's parallelism), the chain in order on the calling
/// one. Returns the first bad record, as a check of one line at a time would. Checkpoint MACs
/// are not checked: see [`verify_keyed`].
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
    let walk = walk(
        dir,
        TailPolicy::Report,
        options.keys.clone(),
        options.witnessed_head.clone(),
        options.progress.as_ref(),
    )?;
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
