//! A durable, tamper-evident audit trail: hash-chained JSON Lines segments on disk, with optional
//! keyed checkpoints and retention.
//!
//! [`FileSink`] appends every [`AuditEvent`] to `audit-000001.jsonl`, `audit-000002.jsonl`, ... in
//! one directory. Each line is one record:
//!
//! ```text
//! {"seq":N,"prev":"<64 hex>","hash":"<64 hex>","event":<event JSON>}
//! ```
//!
//! - `seq` is the sink's own record number: 1, 2, 3, ... with no gaps, continuing across reopen and
//!   across segments (it is independent of the guard's event `seq` inside `event`); after
//!   [retention](#retention) the log starts at a later seq;
//! - `event` is the event's JSON object as [`AuditEvent::write_json`] writes it (redacted per
//!   [`FileSinkConfig::redaction`]), on one line;
//! - `prev` is the previous record's `hash` ([`GENESIS`], 64 zeros, for record 1) and
//!   `hash = SHA-256(prev_hex || "\n" || seq_decimal || "\n" || event_bytes)`, lowercase hex,
//!   computed over the exact `event` bytes in the file.
//!
//! Changing, deleting, inserting, duplicating or reordering any record breaks the chain at that
//! record, and [`verify`] names it. Cutting records off the *end* of the log, or rewriting the
//! whole chain from some point on, cannot be detected from the chain alone: that is what keyed
//! checkpoints are for (below), and anchoring [`VerifyReport::head_hash`] somewhere the writer
//! of the log cannot change remains the strongest defence.
//!
//! # The sink's own records
//!
//! Besides the guard's events the writer appends two kinds of record of its own, chained like
//! every other record. Their `event` object always starts with its `"event"` key, exactly as
//! shown, which is how readers recognise them (a guard event never has these kinds):
//!
//! ```text
//! {"event":"checkpoint","time_unix_nano":T,"tollgate.checkpoint.seq":N,
//!  "tollgate.checkpoint.head":"<hash of record N>","tollgate.checkpoint.adopted":A,
//!  "tollgate.checkpoint.key_id":"<id>","tollgate.checkpoint.mac":"<64 hex>"}
//! {"event":"retention_applied","time_unix_nano":T,"tollgate.retention.evaluated_at":T2,
//!  "tollgate.retention.dropped.first_seq":F,"tollgate.retention.dropped.last_seq":L,
//!  "tollgate.retention.dropped.head":"<hash of record L>",
//!  "tollgate.retention.dropped.first_segment":I,"tollgate.retention.dropped.last_segment":J,
//!  "tollgate.retention.policy":{"<class>":<seconds or null>,...}}
//! ```
//!
//! (each on one line). A checkpoint at seq `N + 1` always describes the record just before it.
//!
//! # Keyed checkpoints
//!
//! With [`FileSinkConfig::checkpoint`] set, the writer appends a checkpoint every
//! [`every_records`](CheckpointConfig::every_records) records and/or every
//! [`every_ms`](CheckpointConfig::every_ms) milliseconds while records are uncovered, and always
//! on [`flush`](AuditSink::flush), on close and right after a retention declaration. Its `mac`
//! is HMAC-SHA-256 under the [`CheckpointKey`] over
//! `"tollgate-audit-checkpoint-v1\n" || key_id || "\n" || N || "\n" || head || "\n" || T || "\n" || A`.
//! [`verify_keyed`] (or [`verify_with`]) checks every MAC and reports, in [`VerifyReport`], how
//! many checkpoints it verified and how many trailing records no checkpoint covers.
//!
//! What a keyed verification **detects**, for someone who can write the files but does not hold
//! the key:
//!
//! - any change to a record that a checkpoint follows, *even if every hash after it was
//!   recomputed*: the first checkpoint after the change no longer matches the chain
//!   ([`VerifyError::CheckpointMismatch`]) or its MAC fails ([`VerifyError::CheckpointMac`]),
//!   with that checkpoint's seq. A forger who also deletes every checkpoint after the change
//!   leaves the changed records uncovered, which the next point reports;
//! - removal of records from the end: visible as [`VerifyReport::uncovered_records`] (records
//!   after the last checkpoint) unless the cut lands exactly after a checkpoint, and as an old
//!   [`VerifyReport::last_checkpoint_unix_nano`];
//! - a forged chain that carries no checkpoints at all: it verifies, but with
//!   `checkpoints == 0` and every record uncovered ([`VerifyOptions::require_coverage`] turns
//!   that into an error).
//!
//! - a prefix deleted under a forged retention declaration: appending records needs no key, but
//!   a keyed verification requires the declaration that explains a missing prefix to be followed
//!   by a valid checkpoint ([`VerifyError::RetentionMismatch`] otherwise).
//!
//! What it does **not** detect: a cut exactly after a checkpoint (the log then looks like a log
//! that stopped there: compare the last checkpoint's time with when the writer last ran);
//! records appended after the last checkpoint (they are counted as uncovered, not refused);
//! replacing the directory with an older copy of itself; anything done by a holder of the key
//! (the writing process holds it, so checkpoints protect the log from whoever can reach the files
//! but not the writer's memory or configuration, e.g. a shared log store, backups, operators).
//!
//! When [`FileSink::open`] finds records that no checkpoint covers (the tail a crash left, or a
//! log that had no checkpoints), its first checkpoint vouches for them and says how many in
//! `tollgate.checkpoint.adopted`; [`VerifyReport::adopted_records`] sums these, so a large figure
//! (a whole chain adopted) stands out. `open` with a key also verifies every existing checkpoint
//! (the key and [`CheckpointConfig::retired_keys`]) and refuses a log that fails, so a rewritten
//! log is never signed over.
//!
//! # Retention
//!
//! [`FileSink::retain`] applies a [`RetentionPolicy`] (a keep duration per retention class; an
//! event's class is its `tollgate.retention` field, `"default"` when absent or null). It drops
//! whole segments from the oldest end only, and only segments in which every event is past
//! `time + keep(class)` (strictly: an event at exactly that instant is kept); a class the
//! policy does not know, a class kept forever, or an event whose time or class cannot be read
//! keeps its segment and every later one. The live segment is never dropped. The sink's own
//! records never hold a segment back.
//!
//! Before deleting anything the writer appends (and fsyncs) a `retention_applied` declaration:
//! "every record up to seq L may be gone, and record L's hash was H". [`verify`] accepts a log
//! whose first record has seq `S > 1` and `prev` P only if some record in the chain declares
//! `L = S - 1` with `H = P` (or, after a deletion that was interrupted, `L >= S` with `H` the
//! hash of record L, still present); otherwise the missing prefix is reported as
//! [`VerifyError::SeqGap`] at the first record, after the whole log has been read. Deleting
//! further segments by hand is therefore detected; so is deleting a segment in the middle
//! ([`VerifyError::MissingSegment`]), starting segment `audit-000001.jsonl` anywhere but at seq
//! 1, or leaving only empty segments numbered after 1. `open` finishes a deletion that a crash
//! interrupted. Declarations are cumulative (each states the last seq dropped so far), so the
//! newest one always explains the current start, however many retentions ran before.
//!
//! # Threads and durability
//!
//! The calling thread serialises the event (it borrows the caller's data) and hands the bytes to a
//! dedicated writer thread through a bounded queue; the writer hashes, chains, writes and fsyncs.
//! [`Durability`] chooses when [`AuditSink::record`] returns, [`Backpressure`] what happens when the
//! queue is full. No event is ever dropped silently: an event is either accepted (and written, or
//! the writer's failure is reported by every later call) or refused with an error, and a refused
//! event makes the guard deny the call it describes. A writer I/O error is sticky: every later
//! `record` and `flush` fails (fail closed) until the sink is reopened, which repairs the tail.
//!
//! # Recovery
//!
//! [`FileSink::open`] re-verifies every segment. A crash can leave the last line of the last
//! segment incomplete (no newline) or unparseable: that line is cut off, and the cut is reported
//! in [`Recovery`]. (If the damage also destroyed the newline of the record before it, the two
//! form one unparseable last line and both go; with [`Durability::EveryRecord`] neither can have
//! been acknowledged, since acknowledged bytes are fsync'd and a crash only damages what was
//! not.) Any other damage — a bad hash, a broken link, a gap, garbage before the last line —
//! makes `open` fail with the [`VerifyError`] naming the file, line and seq (get it back from the
//! [`AuditError`] with [`corruption`]); nothing is silently accepted or rewritten.
//!
//! # One writer per directory
//!
//! Two sinks on one directory would both acknowledge records and leave a log nobody can open.
//! [`FileSink::open`] therefore takes an exclusive OS lock on [`LOCK_FILE`] in the directory
//! (std's [`File::try_lock`](std::fs::File::try_lock): `flock` on Unix) and holds it until the
//! sink is closed or dropped, or its process dies. A second `open`, from the same process or
//! another, fails with [`AuditError::DirectoryLocked`] naming the holder ([`LockHolder`]: pid,
//! host and since when, as the holder wrote them into the lock file). [`verify`] and queries
//! only read, and need no lock.
//!
//! ```
//! use std::sync::Arc;
//! use tollgate::audit::file::{self, FileSink, FileSinkConfig};
//! use tollgate::boundary::{ActionBoundary, RoleSpec, ToolSpec};
//! use tollgate::{Guard, RunContext, ToolCall};
//!
//! let dir = std::env::temp_dir().join(format!("tollgate-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let (sink, recovery) = FileSink::open(&dir, FileSinkConfig::default())?;
//! assert_eq!(recovery.records, 0);
//! let sink = Arc::new(sink);
//! let boundary = ActionBoundary::builder()
//!     .tool("look", ToolSpec::read())
//!     .role("reader", RoleSpec::new().tools(["look"]))
//!     .build()?;
//! let guard = Guard::builder(boundary).audit(sink.clone()).build();
//! let run = guard.start_run(RunContext::new("bot", "reader"))?;
//! assert!(guard.check(&run, &ToolCall::without_args("nope")).denial().is_some());
//! run.finish()?;
//! drop(guard);
//! drop(sink); // flushes and joins the writer
//!
//! let report = file::verify(&dir)?;
//! assert_eq!(report.records, 3); // run start, decision, run end
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Checkpoints and retention on a live sink:
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use tollgate::audit::file::{
//!     self, CheckpointConfig, CheckpointKey, FileSink, FileSinkConfig, RetentionPolicy,
//! };
//! use tollgate::audit::{AuditEvent, AuditSink, EventKind};
//!
//! let dir = std::env::temp_dir().join(format!("tollgate-doc-keyed-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let key = CheckpointKey::new("k1", b"a secret of at least 32 bytes, from a vault".to_vec())?;
//! let config = FileSinkConfig::default()
//!     .max_segment_bytes(300) // tiny segments, to have something to drop
//!     .checkpoint(CheckpointConfig::new(key.clone()).every_records(Some(100)));
//! let (sink, _) = FileSink::open(&dir, config)?;
//! let day = Duration::from_secs(86_400);
//! let long_ago = SystemTime::now() - 30 * day;
//! for seq in 1..=5 {
//!     let at = if seq <= 3 { long_ago } else { SystemTime::now() };
//!     sink.record(&AuditEvent::new(seq, at, None, None, EventKind::RunFinished {
//!         duration: Duration::ZERO,
//!     }))?;
//! }
//! sink.flush()?; // also writes a checkpoint
//!
//! let report = sink.retain(&RetentionPolicy::new(Some(7 * day)), SystemTime::now())?;
//! assert!(report.segments_dropped >= 1);
//! sink.close()?;
//!
//! let verified = file::verify_keyed(&dir, &key)?;
//! assert!(verified.first_seq > 1); // a declared drop
//! assert_eq!(verified.dropped_through, verified.first_seq - 1);
//! assert!(verified.checkpoints >= 1);
//! assert_eq!(verified.uncovered_records, 0); // close wrote a final checkpoint
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod checkpoint;
mod lock;
mod open;
mod reader;
mod record;
mod retention;
mod sink;
mod verify;
mod writer;

use std::path::PathBuf;

#[cfg(doc)]
use crate::audit::{AuditError, AuditEvent, AuditSink};

pub use checkpoint::{CheckpointConfig, CheckpointKey, CheckpointKeyError};
pub use lock::{LOCK_FILE, LockHolder};
pub(in crate::audit) use reader::{LogReader, TailPolicy, list_segments};
pub(in crate::audit) use record::{hex_str, split_record};
pub use retention::{Kept, KeptReason, RetainReport, RetentionPolicy};
pub use sink::{FileSink, WriterPause};
pub(in crate::audit) use verify::{ChainCheck, check_is_dir};
pub use verify::{
    Location, VerifyError, VerifyOptions, VerifyReport, corruption, verify, verify_keyed,
    verify_with,
};

/// The `prev` of the first record of a chain: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The largest serialised event the sink accepts, in bytes. A larger event is refused (and the
/// guard denies the call) rather than truncated; the bound also caps the memory [`verify`] and
/// recovery use per line.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// Frame bytes around the event on one line: `{"seq":` + 20 digits + the two hashes + `}\n`.
const MAX_LINE_BYTES: usize = MAX_EVENT_BYTES + 256;

const SINK_NAME: &str = "file";

/// The exact start of a checkpoint record's `event` object.
const CHECKPOINT_PREFIX: &[u8] = b"{\"event\":\"checkpoint\",";
/// The exact start of a retention declaration's `event` object.
const RETENTION_PREFIX: &[u8] = b"{\"event\":\"retention_applied\",";
/// Domain separation for checkpoint MACs.
const CHECKPOINT_MAC_DOMAIN: &[u8] = b"tollgate-audit-checkpoint-v1\n";

/// When [`AuditSink::record`] returns relative to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// `record` returns only once its record is written and fsync'd (`fdatasync`). Records from
    /// concurrent callers waiting together share one write and one fsync (group commit). The
    /// default: a decision is acted on only once its record is on disk.
    #[default]
    EveryRecord,
    /// `record` returns once the event is queued; the writer fsyncs at least every `interval_ms`
    /// while it has unsynced records. A crash can lose up to one interval of acknowledged records.
    GroupCommit {
        /// Longest time, in milliseconds, a written record stays unsynced.
        interval_ms: u64,
    },
    /// `record` returns once the event is queued; the writer fsyncs only on
    /// [`flush`](AuditSink::flush), segment rotation and close. A process crash loses nothing
    /// already written, a machine crash can lose everything since the last flush.
    OsBuffered,
}

/// What [`AuditSink::record`] does when the writer's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Backpressure {
    /// Wait for room (the default). Never drops and never fails for lack of room.
    #[default]
    Block,
    /// Return an [`AuditError`] at once; the guard then denies the call being recorded.
    Fail,
}

/// Configures a [`FileSink`]. Start from [`FileSinkConfig::default`] and adjust.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileSinkConfig {
    /// When `record` returns (default [`Durability::EveryRecord`]).
    pub durability: Durability,
    /// What a full queue does (default [`Backpressure::Block`]).
    pub backpressure: Backpressure,
    /// Events queued for the writer at most (default 1024, at least 1).
    pub queue_capacity: usize,
    /// A segment that has reached this many bytes takes no more records; the next record starts a
    /// new segment (default 64 MiB). A single record larger than this still goes whole into one
    /// segment.
    pub max_segment_bytes: u64,
    /// Keyed checkpoints (default `None`: none are written).
    pub checkpoint: Option<CheckpointConfig>,
    /// How sensitive arguments are written (default: a placeholder; secret ones never are).
    pub redaction: super::Redaction,
}

impl Default for FileSinkConfig {
    fn default() -> Self {
        Self {
            durability: Durability::default(),
            backpressure: Backpressure::default(),
            queue_capacity: 1024,
            max_segment_bytes: 64 * 1024 * 1024,
            checkpoint: None,
            redaction: super::Redaction::placeholder(),
        }
    }
}

impl FileSinkConfig {
    /// Sets [`durability`](Self::durability).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets [`backpressure`](Self::backpressure).
    pub fn backpressure(mut self, backpressure: Backpressure) -> Self {
        self.backpressure = backpressure;
        self
    }

    /// Sets [`queue_capacity`](Self::queue_capacity).
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// Sets [`max_segment_bytes`](Self::max_segment_bytes).
    pub fn max_segment_bytes(mut self, bytes: u64) -> Self {
        self.max_segment_bytes = bytes;
        self
    }

    /// Sets [`checkpoint`](Self::checkpoint).
    pub fn checkpoint(mut self, checkpoint: CheckpointConfig) -> Self {
        self.checkpoint = Some(checkpoint);
        self
    }

    /// Sets [`redaction`](Self::redaction).
    pub fn redaction(mut self, redaction: super::Redaction) -> Self {
        self.redaction = redaction;
        self
    }
}

/// What [`FileSink::open`] found and repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// Valid records in the log as `open` leaves it (after finishing an interrupted retention,
    /// and counting the adoption checkpoint `open` may have written).
    pub records: u64,
    /// The seq of the last record (0 if none); the next record gets `last_seq + 1`.
    pub last_seq: u64,
    /// The hash of the last record ([`GENESIS`] if none); the next record's `prev`.
    pub head_hash: String,
    /// Bytes cut off the end of the last segment (0 if the log ended cleanly).
    pub truncated_bytes: u64,
    /// The segment and byte offset where the cut-off torn line started.
    pub torn_line_at: Option<(PathBuf, u64)>,
    /// Segments deleted to finish a retention whose deletion a crash interrupted.
    pub retention_completed: u64,
    /// Records no checkpoint covered, vouched for by the checkpoint `open` wrote (0 without a
    /// checkpoint key, or when the log ended with a checkpoint).
    pub adopted_records: u64,
}
