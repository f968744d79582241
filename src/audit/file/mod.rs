//! A durable, tamper-evident audit trail: hash-chained JSON Lines segments on disk, with optional
//! keyed checkpoints, a witness outside the directory, retention and audited repair.
//!
//! [`FileSink`] appends every [`AuditEvent`] to `audit-000001.jsonl`, `audit-000002.jsonl`, ... in
//! one directory. Each line is one record:
//!
//! ```text
//! {"seq":N,"prev":"<64 hex>","hash":"<64 hex>","event":<event JSON>}
//! ```
//!
//! - `seq` is the sink's own record number: 1, 2, 3, ... continuing across reopen and across
//!   segments (it is independent of the guard's event `seq` inside `event`); after
//!   [retention](#retention) the log starts at a later seq, and a [repair](#recovery-and-repair)
//!   declaration skips the seqs of the records it removed, so no seq is ever used twice;
//! - `event` is the event's JSON object as [`AuditEvent::write_json`] writes it (redacted and
//!   bounded per [`FileSinkConfig::redaction`]), on one line;
//! - `prev` is the previous record's `hash` ([`GENESIS`], 64 zeros, for record 1) and
//!   `hash = SHA-256(prev_hex || "\n" || seq_decimal || "\n" || event_bytes)`, lowercase hex,
//!   computed over the exact `event` bytes in the file.
//!
//! # What verify detects
//!
//! For someone who can write the directory, exactly:
//!
//! | change | chain only ([`verify()`]) | with a checkpoint key ([`verify_keyed`]) | with a [witness](#witnesses) |
//! |---|---|---|---|
//! | a record changed, inserted, duplicated, reordered, deleted in the middle | detected, at that record | detected | detected |
//! | a segment deleted in the middle, a prefix deleted without a declaration | detected | detected | detected |
//! | the whole chain rewritten from some record on, hashes recomputed | **not** detected | detected at the first checkpoint after the change (unless every later checkpoint is deleted too: then those records show as uncovered) | detected at the witnessed head |
//! | records cut off the end (last segment deleted, tail truncated) | **not** detected: the log looks like a shorter log | **not** detected if the cut lands right after a checkpoint; otherwise only visible as [`VerifyReport::uncovered_records`] and an old [`VerifyReport::last_checkpoint_unix_nano`] | detected ([`VerifyError::BehindWitness`]), for records up to the last published head |
//! | records appended, correctly chained | **not** detected | reported as uncovered, and as [adopted](#keyed-checkpoints) once a sink reopens the log, never as covered | reported likewise |
//! | a prefix deleted under a forged retention declaration | **not** detected | detected: the declaration must be covered by a checkpoint its writer wrote | as with a key |
//! | the directory replaced by an older copy of itself | **not** detected | **not** detected | detected, unless the witness was rolled back too |
//!
//! Nothing here protects against a holder of the checkpoint key: the writing process holds it,
//! so checkpoints protect the log from whoever can reach the files (a shared log store,
//! backups, operators), not from the writer's memory or configuration.
//!
//! # The sink's own records
//!
//! Besides the guard's events the writer appends records of its own, chained like every other
//! record. Their `event` object always starts with its `"event"` key, exactly as shown, which
//! is how readers recognise them (a guard event never starts that way):
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
//! {"event":"records_lost","time_unix_nano":T,"tollgate.loss.id":"<32 hex>",
//!  "tollgate.loss.count":C,"tollgate.loss.after_seq":K,"tollgate.loss.event_seq_first":a,
//!  "tollgate.loss.event_seq_last":b,"tollgate.loss.first_time_unix_nano":t1,
//!  "tollgate.loss.last_time_unix_nano":t2,"tollgate.loss.failed_at_unix_nano":T3,
//!  "tollgate.loss.error":"<what failed>"}
//! {"event":"repair","time_unix_nano":T,"tollgate.repair.after_seq":K,
//!  "tollgate.repair.removed_through_seq":R,"tollgate.repair.removed_first_seq":a,
//!  "tollgate.repair.removed_last_seq":b,"tollgate.repair.removed_lines":n,
//!  "tollgate.repair.removed_bytes":B,"tollgate.repair.removed_sha256":"<64 hex>",
//!  "tollgate.repair.cut_at":"<segment>:<offset>","tollgate.repair.saved_as":"<file>",
//!  "tollgate.repair.reason":"<why>"}
//! ```
//!
//! (each on one line). A checkpoint at seq `N + 1` always describes the record just before it.
//! [`verify()`] reports losses, repairs, adoptions and unfinished deletions as
//! [`VerifyReport::notices`]: a log that declares any of them is not [clean](VerifyReport::is_clean).
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
//! **Adoption.** Records after the last checkpoint are the tail a crash left, or records someone
//! else appended: nothing tells them apart. When [`FileSink::open`] (with a key) finds such
//! records, its first checkpoint *adopts* them and says how many (`A`, inside the MAC): they are
//! the first `A` records after the previous checkpoint. The guarantee is precise:
//!
//! - every record is either **covered** (a checkpoint written by the sink that wrote the record
//!   follows it), **adopted** (found uncovered by a later `open` and signed over, reported as
//!   [`Notice::Adopted`] with their seqs and counted in [`VerifyReport::adopted_records`]), or
//!   **uncovered** (after the last checkpoint). [`VerifyReport::fully_covered`] holds only when
//!   every record is covered;
//! - adoption protects the adopted records from later change, but never vouches for who wrote
//!   them: a retention or repair declaration among adopted records authorises nothing
//!   ([`VerifyError::RetentionMismatch`], [`VerifyError::NotAuthenticated`]), and `open` never
//!   acts on one ([`VerifyError::RetentionNotAuthenticated`]).
//!
//! `open` with a key also verifies every existing checkpoint (the key and
//! [`CheckpointConfig::retired_keys`]) and refuses a log that fails, so a rewritten log is never
//! signed over.
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
//! Before deleting anything the writer appends (and fsyncs) a `retention_applied` declaration,
//! followed at once by a checkpoint when keyed: "every record up to seq L may be gone, and
//! record L's hash was H". [`verify()`] accepts a log whose first record has seq `S > 1` and
//! `prev` P only if some record in the chain declares `L = S - 1` with `H = P` (or, after a
//! deletion that was interrupted, `L >= S` with `H` the hash of record L, still present);
//! otherwise the missing prefix is reported as [`VerifyError::SeqGap`] at the first record,
//! after the whole log has been read. Deleting further segments by hand is therefore detected;
//! so is deleting a segment in the middle ([`VerifyError::MissingSegment`]), starting segment
//! `audit-000001.jsonl` anywhere but at seq 1, or leaving only empty segments numbered after 1.
//! Declarations are cumulative (each states the last seq dropped so far), so the newest one
//! always explains the current start, however many retentions ran before.
//!
//! `open` finishes a deletion that a crash interrupted only if its declaration is covered by a
//! checkpoint its writer wrote, which needs a checkpoint key: anyone who can write the directory
//! can append a correctly chained declaration, and a sink that deleted on its word would carry
//! out the forgery. Otherwise `open` refuses with [`VerifyError::RetentionNotAuthenticated`],
//! naming the declaration, and deletes nothing.
//!
//! # Threads, durability and failures
//!
//! The calling thread serialises the event (it borrows the caller's data) and hands the bytes to a
//! dedicated writer thread through a bounded queue; the writer hashes, chains, writes and fsyncs.
//! [`Durability`] chooses when [`AuditSink::record`] returns, [`Backpressure`] what happens when the
//! queue is full. An event is either accepted or refused with an error, and a refused event makes
//! the guard deny the call it describes.
//!
//! A writer I/O error (a full disk, a failed fsync) is sticky: every later `record` and `flush`
//! fails (fail closed) until the sink is reopened. Before that the writer
//!
//! - **rolls the log back**. With [`Durability::EveryRecord`] it truncates to where the failed
//!   batch began (removing any segment begun since): every caller of that batch gets the error
//!   and its call is denied, and the log holds none of their records, so it never says a denied
//!   call was allowed. With the asynchronous modes it cuts only the write that failed half-way;
//! - **counts what was lost**. With [`Durability::EveryRecord`] nothing acknowledged is lost.
//!   With [`Durability::GroupCommit`] and [`Durability::OsBuffered`] `record` returned when the
//!   event was queued, so the loss is exactly: the events of the write that failed, the events of
//!   the batch not yet written, and every event still in the queue (at most
//!   [`FileSinkConfig::queue_capacity`] plus one batch). Records written before the failure stay
//!   in the log (they are true: those calls were allowed); after a failed fsync their
//!   durability is unknown, as after a machine crash;
//! - **reports it**: the error every later call returns says what happened and how many
//!   acknowledged events were lost with their guard event seq range; so does an
//!   [`AlertKind::AuditWriterFailed`](crate::breaker::AlertKind::AuditWriterFailed) alert to
//!   [`FileSinkConfig::alerts`], and a `tracing` error;
//! - **leaves a note** (`audit.pending`, space reserved at open so it can be written on a full
//!   disk): the next `open` writes a `records_lost` declaration into the chain
//!   ([`Notice::Lost`]), so [`verify()`] reports the loss instead of a clean chain. If the
//!   rollback itself failed, the next `open` refuses until [`FileSink::repair`] removes the
//!   records of the refused calls.
//!
//! A crash is the other way to lose acknowledged records: with [`Durability::EveryRecord`] none
//! (acknowledged bytes are fsync'd); with [`Durability::GroupCommit`] those acknowledged in the
//! last `interval_ms` plus the queue; with [`Durability::OsBuffered`] a process crash loses the
//! queue and a machine crash everything since the last flush. A crash's loss is not declared
//! (nothing survives to declare it): a [witness](#witnesses) bounds what can go unnoticed.
//!
//! # Recovery and repair
//!
//! [`FileSink::open`] re-verifies every segment. A crash while appending can leave the last line
//! incomplete: if that line is a strict beginning of the record the writer was appending (the
//! next seq, the chain's `prev`, only bytes the writer emits, and, once the event's JSON is
//! whole, nothing after it but the record's closing `}` and a hash that matches it: a crash cuts
//! bytes off, it does not change them), it is a torn write and is cut off, and the cut is
//! reported in [`Recovery`]. Anything else is damage — an incomplete line that is not such a
//! beginning (a zeroed block, garbage, an altered event, a record with bytes run on after it), a
//! complete line that is not a valid record, a bad hash, a broken link, a gap, a seq of
//! `u64::MAX` (no record could follow it), a file named like a segment but not as the writer
//! names them ([`VerifyError::SegmentName`]) — and makes `open` fail with the [`VerifyError`] naming file,
//! line and seq (get it back from the [`AuditError`] with [`corruption`]); nothing is cut,
//! accepted or rewritten. [`FileSink::plan_repair`] and [`FileSink::repair`] (the
//! `tollgate audit repair` command) then remove the damaged end explicitly: the removed bytes are
//! kept in a file in the directory and a `repair` declaration in the chain names the removed seqs,
//! lines, bytes and SHA-256 ([`Notice::Repaired`]); see [`repair`].
//!
//! # One writer per directory
//!
//! Two sinks on one directory would both acknowledge records and leave a log nobody can open.
//! [`FileSink::open`] therefore takes an exclusive OS lock on [`LOCK_FILE`] in the directory
//! (std's [`File::try_lock`](std::fs::File::try_lock): `flock` on Unix) and holds it until the
//! sink is closed or dropped, or its process dies. A second `open`, from the same process or
//! another, fails with [`AuditError::DirectoryLocked`] naming the holder ([`LockHolder`]: pid,
//! host and since when, as the holder wrote them into the lock file). [`verify()`] and queries
//! only read, and need no lock; [`FileSink::repair`] takes it.
//!
//! # Witnesses
//!
//! The chain and its checkpoints live in the directory they protect, so whoever can write it can
//! cut records off the end and leave a valid shorter log. A [`Witness`]
//! ([`FileSinkConfig::witness`]) keeps the log's head somewhere that person cannot reach:
//! [`DirWitness`] (a file in another directory, ideally another volume or host) or
//! [`TracingWitness`] (a `tracing` event for a log shipper). The writer publishes the head it
//! has made durable — never before the fsync — at most every [`WitnessConfig::every_ms`] while
//! new records are durable, and always on flush, after a checkpoint, on close and at the end of
//! `open`; with a checkpoint key the head carries an HMAC ([`WitnessedHead`]). [`FileSink::open`]
//! and [`verify_with`] (with [`VerifyOptions::witnessed_head`] or [`VerifyOptions::witness`])
//! require the chain to reach the witnessed head with the same hash
//! ([`VerifyError::BehindWitness`], [`VerifyError::WitnessMismatch`]), or to declare it gone by
//! retention or repair. A witness that refuses a head does not stop the log: it is logged,
//! alerted ([`AlertKind::AuditWitnessFailed`](crate::breaker::AlertKind::AuditWitnessFailed)) and
//! retried. Records written after the last publication are not protected: flush publishes.
//!
//! ```
//! use std::sync::Arc;
//! use tollgate::audit::file::{self, FileSink, FileSinkConfig};
//! use tollgate::boundary::{ActionBoundary, RoleSpec, ToolSpec};
//! use tollgate::{Guard, RunContext, ToolCall};
//!
//! let dir = tempfile::tempdir()?; // removed when dropped
//! let (sink, recovery) = FileSink::open(dir.path(), FileSinkConfig::default())?;
//! assert_eq!(recovery.records, 0);
//! let sink = Arc::new(sink);
//! let boundary = ActionBoundary::builder()
//!     .tool("look", ToolSpec::read())
//!     .role("reader", RoleSpec::new().tools(["look"]))
//!     .build()?;
//! let guard = Guard::builder(boundary).audit(sink.clone()).build()?;
//! let run = guard.start_run(RunContext::new("bot", "reader"))?;
//! assert!(guard.check(&run, &ToolCall::without_args("nope")).denial().is_some());
//! run.finish()?;
//! drop(guard);
//! drop(sink); // flushes and joins the writer
//!
//! let report = file::verify(dir.path())?;
//! assert_eq!(report.records, 3); // run start, decision, run end
//! # dir.close()?;
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
//! let dir = tempfile::tempdir()?; // removed when dropped
//! let key = CheckpointKey::new("k1", b"a secret of at least 32 bytes, from a vault".to_vec())?;
//! let config = FileSinkConfig::default()
//!     .max_segment_bytes(300) // tiny segments, to have something to drop
//!     .checkpoint(CheckpointConfig::new(key.clone()).every_records(Some(100)));
//! let (sink, _) = FileSink::open(dir.path(), config)?;
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
//! let verified = file::verify_keyed(dir.path(), &key)?;
//! assert!(verified.first_seq > 1); // a declared drop
//! assert_eq!(verified.dropped_through, verified.first_seq - 1);
//! assert!(verified.checkpoints >= 1);
//! assert_eq!(verified.uncovered_records, 0); // close wrote a final checkpoint
//! # dir.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod chain;
mod checkpoint;
mod faults;
mod lock;
mod open;
mod pending;
mod raw;
mod reader;
mod record;
pub mod repair;
mod retention;
mod sink;
mod verify;
mod vouch;
mod witness;
mod writeback;
mod writer;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::breaker::AlertSink;

#[cfg(doc)]
use crate::audit::{AuditError, AuditEvent, AuditSink};

pub(in crate::audit) use chain::ChainCheck;
pub use checkpoint::{CheckpointConfig, CheckpointKey, CheckpointKeyError};
#[doc(hidden)]
pub use faults::Faults;
pub use lock::{INHERITED_LOCK_WAIT, LOCK_FILE, LockHolder};
pub(crate) use raw::RawRecords;
pub(in crate::audit) use reader::{LogReader, TailPolicy, list_segments};
pub(in crate::audit) use record::{hex_str, split_record};
pub use repair::{RepairOptions, RepairPlan, RepairReport};
pub use retention::{Kept, KeptReason, RetainReport, RetentionPolicy};
pub use sink::{FileSink, WriterPause};
pub use verify::{
    Location, Notice, Progress, ProgressHook, VerifyError, VerifyOptions, VerifyReport, corruption,
    verify, verify_keyed, verify_with,
};
pub(in crate::audit) use verify::{ProgressTracker, check_is_dir};
pub use witness::{DirWitness, TracingWitness, Witness, WitnessConfig, WitnessedHead};

/// The `prev` of the first record of a chain: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The largest serialised event the sink accepts, in bytes. A larger event is refused (and the
/// guard denies the call) rather than truncated; the bound also caps the memory [`verify()`] and
/// recovery use per line.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// Frame bytes around the event on one line: `{"seq":` + 20 digits + the two hashes + `}\n`.
const MAX_LINE_BYTES: usize = MAX_EVENT_BYTES + 256;

const SINK_NAME: &str = "file";

/// The exact start of a checkpoint record's `event` object.
const CHECKPOINT_PREFIX: &[u8] = b"{\"event\":\"checkpoint\",";
/// The exact start of a retention declaration's `event` object.
const RETENTION_PREFIX: &[u8] = b"{\"event\":\"retention_applied\",";
/// The exact start of a repair declaration's `event` object.
const REPAIR_PREFIX: &[u8] = b"{\"event\":\"repair\",";
/// The exact start of a loss declaration's `event` object.
const LOSS_PREFIX: &[u8] = b"{\"event\":\"records_lost\",";
/// Domain separation for checkpoint MACs.
const CHECKPOINT_MAC_DOMAIN: &[u8] = b"tollgate-audit-checkpoint-v1\n";

/// When [`AuditSink::record`] returns relative to the disk.
///
/// What each mode can lose of the events `record` acknowledged (see [threads, durability and
/// failures](self#threads-durability-and-failures)):
///
/// | mode | writer I/O error | process crash | machine crash |
/// |---|---|---|---|
/// | `EveryRecord` | nothing (every waiting caller gets the error; the batch is rolled back) | nothing | nothing |
/// | `GroupCommit` | the failed write, the rest of its batch and the queue: counted, alerted, declared on reopen | the queue and the batch being written | also what was written in the last `interval_ms` |
/// | `OsBuffered` | as `GroupCommit` | as `GroupCommit` | everything since the last flush, rotation or close |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// `record` returns only once its record is written and fsync'd (`fdatasync`). Records from
    /// concurrent callers waiting together share one write and one fsync (group commit). The
    /// default: a decision is acted on only once its record is on disk, and a failure loses no
    /// acknowledged record.
    #[default]
    EveryRecord,
    /// `record` returns once the event is queued; the writer fsyncs at least every `interval_ms`
    /// while it has unsynced records. A machine crash can lose up to one interval of
    /// acknowledged records plus the queue; a writer failure loses the queue and the batch
    /// being written, and says how many (error, alert, declaration on reopen).
    GroupCommit {
        /// Longest time, in milliseconds, a written record stays unsynced.
        interval_ms: u64,
    },
    /// `record` returns once the event is queued; the writer fsyncs only on
    /// [`flush`](AuditSink::flush), segment rotation and close. A process crash loses the queue
    /// and the batch being written, a machine crash everything since the last flush; a writer
    /// failure loses the queue and the batch being written, and says how many.
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
#[derive(Clone)]
#[non_exhaustive]
pub struct FileSinkConfig {
    /// When `record` returns (default [`Durability::EveryRecord`]).
    pub durability: Durability,
    /// What a full queue does (default [`Backpressure::Block`]).
    pub backpressure: Backpressure,
    /// Events queued for the writer at most (default 1024, at least 1).
    pub queue_capacity: usize,
    /// How long the writer may gather events into one batch before writing them, when nobody
    /// waits for them (default 1 ms; zero: write whatever is queued at once). It bounds how
    /// late an acknowledged record reaches the operating system under
    /// [`Durability::OsBuffered`] and [`Durability::GroupCommit`] (a process crash loses what is
    /// queued, as before, now up to this much more); it does not apply to
    /// [`Durability::EveryRecord`], to [`flush`](AuditSink::flush) or to a queue half full,
    /// which the writer serves at once. Gathering turns one write system call and one wake-up
    /// per record into one per batch: with a busy caller this is most of the audited call's
    /// cost.
    pub write_delay: std::time::Duration,
    /// A segment that has reached this many bytes takes no more records; the next record starts a
    /// new segment (default 64 MiB). A single record larger than this still goes whole into one
    /// segment.
    pub max_segment_bytes: u64,
    /// Under [`Durability::OsBuffered`] and [`Durability::GroupCommit`], the writer asks the
    /// operating system to start writing the live segment to disk (and to drop those pages from
    /// its cache once written) every time this many bytes have been written since it last asked
    /// (default 4 MiB; zero: never). Without it, the fsync that closes a full segment waits for
    /// the whole segment to reach the disk while callers queue behind it: on the development
    /// machine that stall was a fifth of a sustained audited call. Nothing a mode promises
    /// changes: the fsyncs are where they were. Linux only (`posix_fadvise`); elsewhere a no-op.
    pub writeback_bytes: u64,
    /// Under [`Durability::OsBuffered`] and [`Durability::GroupCommit`], reserve each segment's
    /// [`max_segment_bytes`](Self::max_segment_bytes) of disk when it becomes the live one
    /// (`fallocate` keeping its length; default `true`). Appends then find their blocks
    /// allocated: on ext4 the writer spent a tenth of its CPU reserving them one by one, and
    /// the sustained audited call took 7 % less time with it. Readers see the same lengths and
    /// bytes; disk usage counts the reservation, so the live segment occupies up to
    /// `max_segment_bytes` however little it holds. Linux only; best effort (a file system
    /// without `fallocate` or without the space leaves the segment to grow as it is written).
    pub preallocate_segments: bool,
    /// Keyed checkpoints (default `None`: none are written).
    pub checkpoint: Option<CheckpointConfig>,
    /// How sensitive arguments are written, and how large or deep a value may be (default: a
    /// placeholder; secret ones never are; see [`values`](super::values)).
    pub redaction: super::Redaction,
    /// Where the writer reports its failure (with the acknowledged events it lost) and a
    /// witness that refuses a head (default `None`: only the errors of later calls, and the
    /// `tracing` log, tell).
    pub alerts: Option<Arc<dyn AlertSink>>,
    /// A witness outside the directory that keeps the log's signed head (default `None`: see
    /// [what verify detects](self#what-verify-detects)).
    pub witness: Option<WitnessConfig>,
}

impl Default for FileSinkConfig {
    fn default() -> Self {
        Self {
            durability: Durability::default(),
            backpressure: Backpressure::default(),
            queue_capacity: 1024,
            write_delay: std::time::Duration::from_millis(1),
            max_segment_bytes: 64 * 1024 * 1024,
            writeback_bytes: 4 * 1024 * 1024,
            preallocate_segments: true,
            checkpoint: None,
            redaction: super::Redaction::placeholder(),
            alerts: None,
            witness: None,
        }
    }
}

impl fmt::Debug for FileSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSinkConfig")
            .field("durability", &self.durability)
            .field("backpressure", &self.backpressure)
            .field("queue_capacity", &self.queue_capacity)
            .field("write_delay", &self.write_delay)
            .field("max_segment_bytes", &self.max_segment_bytes)
            .field("writeback_bytes", &self.writeback_bytes)
            .field("preallocate_segments", &self.preallocate_segments)
            .field("checkpoint", &self.checkpoint)
            .field("redaction", &self.redaction)
            .field("alerts", &self.alerts.is_some())
            .field("witness", &self.witness)
            .finish()
    }
}

/// Two configurations are equal when every setting is, alert sinks compared by identity.
impl PartialEq for FileSinkConfig {
    fn eq(&self, other: &Self) -> bool {
        self.durability == other.durability
            && self.backpressure == other.backpressure
            && self.queue_capacity == other.queue_capacity
            && self.write_delay == other.write_delay
            && self.max_segment_bytes == other.max_segment_bytes
            && self.writeback_bytes == other.writeback_bytes
            && self.preallocate_segments == other.preallocate_segments
            && self.checkpoint == other.checkpoint
            && self.redaction == other.redaction
            && match (&self.alerts, &other.alerts) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
            && self.witness == other.witness
    }
}

impl Eq for FileSinkConfig {}

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

    /// Sets [`write_delay`](Self::write_delay).
    pub fn write_delay(mut self, delay: std::time::Duration) -> Self {
        self.write_delay = delay;
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

    /// Sets [`writeback_bytes`](Self::writeback_bytes).
    pub fn writeback_bytes(mut self, bytes: u64) -> Self {
        self.writeback_bytes = bytes;
        self
    }

    /// Sets [`preallocate_segments`](Self::preallocate_segments).
    pub fn preallocate_segments(mut self, preallocate: bool) -> Self {
        self.preallocate_segments = preallocate;
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

    /// Sets [`alerts`](Self::alerts).
    pub fn alerts(mut self, alerts: Arc<dyn AlertSink>) -> Self {
        self.alerts = Some(alerts);
        self
    }

    /// Sets [`witness`](Self::witness).
    pub fn witness(mut self, witness: WitnessConfig) -> Self {
        self.witness = Some(witness);
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
    /// Records no checkpoint covered, adopted by the checkpoint `open` wrote (0 without a
    /// checkpoint key, or when the log ended with a checkpoint). [`verify()`] reports them as
    /// adopted ([`Notice::Adopted`]), never as covered.
    pub adopted_records: u64,
    /// Acknowledged events a failed writer lost, declared now in a `records_lost` record
    /// ([`Notice::Lost`]); 0 if there was no such loss to declare.
    pub declared_lost: u64,
    /// The witnessed head the log was checked against, if a witness is configured and holds
    /// one.
    pub witnessed_seq: Option<u64>,
}
