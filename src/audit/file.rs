//! A durable, tamper-evident audit trail: hash-chained JSON Lines segments on disk.
//!
//! [`FileSink`] appends every [`AuditEvent`] to `audit-000001.jsonl`, `audit-000002.jsonl`, ... in
//! one directory. Each line is one record:
//!
//! ```text
//! {"seq":N,"prev":"<64 hex>","hash":"<64 hex>","event":<event JSON>}
//! ```
//!
//! - `seq` is the sink's own record number: 1, 2, 3, ... with no gaps, continuing across reopen and
//!   across segments (it is independent of the guard's event `seq` inside `event`);
//! - `event` is [`AuditEvent::to_json`] serialised compactly;
//! - `prev` is the previous record's `hash` ([`GENESIS`], 64 zeros, for record 1) and
//!   `hash = SHA-256(prev_hex || "\n" || seq_decimal || "\n" || event_bytes)`, lowercase hex,
//!   computed over the exact `event` bytes in the file.
//!
//! Changing, deleting, inserting, duplicating or reordering any record breaks the chain at that
//! record, and [`verify`] names it. (Cutting records off the *end* of the log, or rewriting the
//! whole chain from some point on, cannot be detected from the log alone: anchor
//! [`VerifyReport::head_hash`] somewhere the writer of the log cannot change.)
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
//! been acknowledged, since acknowledged bytes are fsync'd and a crash only damages what was not.) Any other damage — a bad hash, a broken link, a gap, garbage before the last line
//! — makes `open` fail with the [`VerifyError`] naming the file, line and seq (get it back from the
//! [`AuditError`] with [`corruption`]); nothing is silently accepted or rewritten.
//!
//! One process at a time may write a directory; nothing here locks it.
//!
//! ```
//! use std::sync::Arc;
//! use tollgate::audit::file::{self, FileSink, FileSinkConfig};
//! use tollgate::boundary::{ActionBoundary, RoleSpec, ToolSpec};
//! use tollgate::{Guard, RunContext, ToolCall};
//!
//! let dir = std::env::temp_dir().join(format!("tollgate-doc-{}", std::process::id()));
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

use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{AuditError, AuditEvent, AuditSink};

/// The `prev` of the first record of a chain: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The largest serialised event the sink accepts, in bytes. A larger event is refused (and the
/// guard denies the call) rather than truncated; the bound also caps the memory [`verify`] and
/// recovery use per line.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// Frame bytes around the event on one line: `{"seq":` + 20 digits + the two hashes + `}\n`.
const MAX_LINE_BYTES: usize = MAX_EVENT_BYTES + 256;

const SINK_NAME: &str = "file";

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
}

impl Default for FileSinkConfig {
    fn default() -> Self {
        Self {
            durability: Durability::default(),
            backpressure: Backpressure::default(),
            queue_capacity: 1024,
            max_segment_bytes: 64 * 1024 * 1024,
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
}

/// What [`FileSink::open`] found and repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// Valid records already in the log.
    pub records: u64,
    /// The seq of the last valid record (0 if none); the next record gets `last_seq + 1`.
    pub last_seq: u64,
    /// The hash of the last valid record ([`GENESIS`] if none); the next record's `prev`.
    pub head_hash: String,
    /// Bytes cut off the end of the last segment (0 if the log ended cleanly).
    pub truncated_bytes: u64,
    /// The segment and byte offset where the cut-off torn line started.
    pub torn_line_at: Option<(PathBuf, u64)>,
}

/// The result of a successful [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Segment files walked.
    pub segments: u64,
    /// Records verified.
    pub records: u64,
    /// The first record's seq (0 if the log is empty; otherwise always 1).
    pub first_seq: u64,
    /// The last record's seq (0 if the log is empty).
    pub last_seq: u64,
    /// The last record's hash ([`GENESIS`] if the log is empty). Anchoring it elsewhere makes
    /// truncation of the log detectable too.
    pub head_hash: String,
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
    /// Segment files are missing: numbering must run 1, 2, 3, ... without gaps.
    #[error("missing segment {expected} (segments must be numbered from 1 without gaps)")]
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
            | VerifyError::Malformed { at, .. } => Some(at),
            VerifyError::MissingSegment { .. }
            | VerifyError::NotADirectory(_)
            | VerifyError::Io { .. } => None,
        }
    }
}

/// The [`VerifyError`] inside an [`AuditError`] returned by [`FileSink::open`] for a damaged log.
///
/// `open` returns [`AuditError::Io`] with [`io::ErrorKind::InvalidData`] wrapping the
/// `VerifyError` (file, line, seq, what is wrong); this gets it back.
pub fn corruption(err: &AuditError) -> Option<&VerifyError> {
    match err {
        AuditError::Io(e) => e.get_ref()?.downcast_ref::<VerifyError>(),
        _ => None,
    }
}

/// Checks a whole audit log: every line well formed, seqs 1, 2, 3, ... without gaps, every `prev`
/// the previous record's hash, every hash recomputed from the exact bytes in the file. Streams the
/// segments line by line in constant memory. Returns the first bad record.
///
/// A directory without segments verifies as an empty log.
pub fn verify(dir: impl AsRef<Path>) -> Result<VerifyReport, VerifyError> {
    let dir = dir.as_ref();
    match fs::metadata(dir) {
        Ok(m) if !m.is_dir() => return Err(VerifyError::NotADirectory(dir.to_owned())),
        Ok(_) => {}
        Err(source) => {
            return Err(VerifyError::Io {
                path: dir.to_owned(),
                source,
            });
        }
    }
    let walk = walk(dir, TailPolicy::Report)?;
    Ok(VerifyReport {
        segments: walk.segments.len() as u64,
        records: walk.chain.records,
        first_seq: u64::from(walk.chain.records > 0),
        last_seq: walk.chain.next_seq - 1,
        head_hash: hex_str(&walk.chain.prev),
    })
}

// ------------------------------------------------------------------------------------------------
// Record format
// ------------------------------------------------------------------------------------------------

type Hex64 = [u8; 64];

const GENESIS_HEX: Hex64 = [b'0'; 64];

fn hex_str(h: &Hex64) -> String {
    // Always ASCII hex, written by this module.
    String::from_utf8_lossy(h).into_owned()
}

fn chain_hash(prev: &Hex64, seq: u64, event: &[u8]) -> Hex64 {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut h = Sha256::new();
    h.update(prev);
    h.update(b"\n");
    h.update(seq.to_string().as_bytes());
    h.update(b"\n");
    h.update(event);
    let digest = h.finalize();
    let mut out = [0u8; 64];
    for (i, b) in digest.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0x0f)];
    }
    out
}

fn append_record(buf: &mut Vec<u8>, seq: u64, prev: &Hex64, hash: &Hex64, event: &[u8]) {
    buf.extend_from_slice(b"{\"seq\":");
    buf.extend_from_slice(seq.to_string().as_bytes());
    buf.extend_from_slice(b",\"prev\":\"");
    buf.extend_from_slice(prev);
    buf.extend_from_slice(b"\",\"hash\":\"");
    buf.extend_from_slice(hash);
    buf.extend_from_slice(b"\",\"event\":");
    buf.extend_from_slice(event);
    buf.extend_from_slice(b"}\n");
}

/// One record line, split into its fields without re-serialising anything.
struct Frame<'a> {
    seq: u64,
    prev: &'a [u8],
    hash: &'a [u8],
    event: &'a [u8],
}

/// A line that is not a record; carries the seq if that much could be read.
struct Unparseable {
    reason: String,
    seq: Option<u64>,
}

fn strip<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    s.strip_prefix(prefix)
}

/// Reads `{"seq":<digits>,` and returns the seq and the rest after the comma.
fn parse_seq(line: &[u8]) -> Option<(u64, &[u8])> {
    let rest = strip(line, b"{\"seq\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 || (digits > 1 && rest[0] == b'0') {
        return None;
    }
    let mut seq: u64 = 0;
    for &d in &rest[..digits] {
        seq = seq.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    let rest = strip(&rest[digits..], b",")?;
    Some((seq, rest))
}

fn take_hex64<'a>(s: &'a [u8], key: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    let rest = strip(s, key)?;
    if rest.len() < 65 || rest[64] != b'"' {
        return None;
    }
    let (hex, rest) = rest.split_at(64);
    if !hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    Some((hex, &rest[1..]))
}

/// Splits a line (without its newline) into a [`Frame`]. The frame is fixed — the writer emits
/// exactly this shape — so anything else is malformed. The event's JSON is checked separately.
fn parse_frame(line: &[u8]) -> Result<Frame<'_>, Unparseable> {
    let bad = |reason: &str, seq| Unparseable {
        reason: reason.to_owned(),
        seq,
    };
    let Some((seq, rest)) = parse_seq(line) else {
        return Err(bad("line does not start with {\"seq\":<number>,", None));
    };
    let Some((prev, rest)) = take_hex64(rest, b"\"prev\":\"") else {
        return Err(bad(
            "`prev` is missing or not 64 lowercase hex digits",
            Some(seq),
        ));
    };
    let Some((hash, rest)) = take_hex64(rest, b",\"hash\":\"") else {
        return Err(bad(
            "`hash` is missing or not 64 lowercase hex digits",
            Some(seq),
        ));
    };
    let Some(rest) = strip(rest, b",\"event\":") else {
        return Err(bad("`event` is missing", Some(seq)));
    };
    let Some(event) = rest.strip_suffix(b"}") else {
        return Err(bad("record does not end with `}`", Some(seq)));
    };
    if event.first() != Some(&b'{') || event.last() != Some(&b'}') {
        return Err(bad("`event` is not a JSON object", Some(seq)));
    }
    Ok(Frame {
        seq,
        prev,
        hash,
        event,
    })
}

fn event_is_json(event: &[u8]) -> Result<(), String> {
    serde_json::from_slice::<serde::de::IgnoredAny>(event)
        .map(|_| ())
        .map_err(|e| format!("`event` is not valid JSON: {e}"))
}

/// Whether a line is a well-formed record at all (frame and event JSON), ignoring the chain.
fn parseable(line: &[u8]) -> bool {
    parse_frame(line).is_ok_and(|f| event_is_json(f.event).is_ok())
}

/// Where the chain stands after the records read so far.
#[derive(Debug, Clone)]
struct Chain {
    next_seq: u64,
    prev: Hex64,
    records: u64,
}

impl Chain {
    fn new() -> Self {
        Self {
            next_seq: 1,
            prev: GENESIS_HEX,
            records: 0,
        }
    }
}

enum Problem {
    Malformed(String),
    SeqGap { expected: u64, found: u64 },
    Reordered { expected: u64, found: u64 },
    BrokenLink,
    Modified,
}

/// Checks one line against the chain; on success advances the chain.
fn check_record(line: &[u8], chain: &mut Chain) -> Result<(), (Problem, Option<u64>)> {
    let frame = parse_frame(line).map_err(|u| (Problem::Malformed(u.reason), u.seq))?;
    let seq = Some(frame.seq);
    let expected = chain.next_seq;
    if frame.seq > expected {
        return Err((
            Problem::SeqGap {
                expected,
                found: frame.seq,
            },
            seq,
        ));
    }
    if frame.seq < expected {
        return Err((
            Problem::Reordered {
                expected,
                found: frame.seq,
            },
            seq,
        ));
    }
    if frame.prev != chain.prev {
        return Err((Problem::BrokenLink, seq));
    }
    let hash = chain_hash(&chain.prev, frame.seq, frame.event);
    if frame.hash != hash {
        return Err((Problem::Modified, seq));
    }
    event_is_json(frame.event).map_err(|r| (Problem::Malformed(r), seq))?;
    chain.prev = hash;
    chain.next_seq = expected + 1;
    chain.records += 1;
    Ok(())
}

fn problem_error(problem: Problem, at: Location) -> VerifyError {
    match problem {
        Problem::Malformed(reason) => VerifyError::Malformed { at, reason },
        Problem::SeqGap { expected, found } => VerifyError::SeqGap {
            at,
            expected,
            found,
        },
        Problem::Reordered { expected, found } => VerifyError::Reordered {
            at,
            expected,
            found,
        },
        Problem::BrokenLink => VerifyError::BrokenLink { at },
        Problem::Modified => VerifyError::Modified { at },
    }
}

// ------------------------------------------------------------------------------------------------
// Walking the segments (verify and recovery)
// ------------------------------------------------------------------------------------------------

fn segment_name(index: u64) -> String {
    format!("audit-{index:06}.jsonl")
}

fn segment_index(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segments in `dir`, in order; numbering must run 1, 2, 3, ... without gaps.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, VerifyError> {
    let io_err = |source| VerifyError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let name = entry.file_name();
        if let Some(index) = name.to_str().and_then(segment_index) {
            segments.push((index, entry.path()));
        }
    }
    segments.sort_unstable_by_key(|s| s.0);
    for (want, (index, _)) in (1u64..).zip(&segments) {
        if *index != want {
            return Err(VerifyError::MissingSegment {
                expected: dir.join(segment_name(want)),
            });
        }
    }
    Ok(segments)
}

/// What to do with a damaged last line of the last segment.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TailPolicy {
    /// Report it as an error (verify).
    Report,
    /// Note it for truncation (recovery) if it is incomplete or unparseable.
    Repair,
}

struct Walk {
    segments: Vec<(u64, PathBuf)>,
    chain: Chain,
    /// Where to cut the last segment, with the length of what is cut.
    torn: Option<(PathBuf, u64, u64)>,
}

enum LineRead {
    Eof,
    Line {
        /// Bytes consumed, newline included.
        consumed: u64,
        /// Ended with a newline.
        complete: bool,
        /// Longer than [`MAX_LINE_BYTES`]; its content was skipped and `buf` is partial.
        too_long: bool,
    },
}

/// Reads one line into `buf` (cleared first), holding at most [`MAX_LINE_BYTES`] in memory.
fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<LineRead> {
    buf.clear();
    let n = io::Read::take(&mut *r, MAX_LINE_BYTES as u64).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(LineRead::Eof);
    }
    if buf.last() == Some(&b'\n') {
        return Ok(LineRead::Line {
            consumed: n as u64,
            complete: true,
            too_long: false,
        });
    }
    if n < MAX_LINE_BYTES {
        return Ok(LineRead::Line {
            consumed: n as u64,
            complete: false,
            too_long: false,
        });
    }
    // Too long: skip to the end of the line without keeping it.
    let mut consumed = n as u64;
    loop {
        let avail = r.fill_buf()?;
        if avail.is_empty() {
            return Ok(LineRead::Line {
                consumed,
                complete: false,
                too_long: true,
            });
        }
        if let Some(i) = avail.iter().position(|&b| b == b'\n') {
            r.consume(i + 1);
            consumed += i as u64 + 1;
            return Ok(LineRead::Line {
                consumed,
                complete: true,
                too_long: true,
            });
        }
        let len = avail.len();
        r.consume(len);
        consumed += len as u64;
    }
}

fn walk(dir: &Path, policy: TailPolicy) -> Result<Walk, VerifyError> {
    let segments = list_segments(dir)?;
    let mut chain = Chain::new();
    let mut torn = None;
    let mut buf = Vec::new();
    let count = segments.len();
    for (i, (_, path)) in segments.iter().enumerate() {
        let io_err = |source| VerifyError::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let mut r = BufReader::with_capacity(64 * 1024, file);
        let last_segment = i + 1 == count;
        let mut offset = 0u64;
        let mut line_no = 0u64;
        loop {
            let (consumed, complete, too_long) =
                match read_line(&mut r, &mut buf).map_err(io_err)? {
                    LineRead::Eof => break,
                    LineRead::Line {
                        consumed,
                        complete,
                        too_long,
                    } => (consumed, complete, too_long),
                };
            line_no += 1;
            let at_eof = r.fill_buf().map_err(io_err)?.is_empty();
            let final_line = last_segment && at_eof;
            let content = buf.strip_suffix(b"\n").unwrap_or(&buf);
            let at = Location {
                file: path.clone(),
                line: line_no,
                offset,
                seq: parse_seq(content).map(|(s, _)| s),
            };
            if final_line
                && policy == TailPolicy::Repair
                && (too_long || !complete || !parseable(content))
            {
                torn = Some((path.clone(), offset, consumed));
                break;
            }
            if !complete {
                return Err(VerifyError::Truncated { at });
            }
            if too_long {
                return Err(VerifyError::Malformed {
                    at,
                    reason: format!("line longer than {MAX_LINE_BYTES} bytes"),
                });
            }
            if let Err((problem, seq)) = check_record(content, &mut chain) {
                return Err(problem_error(problem, Location { seq, ..at }));
            }
            offset += consumed;
        }
    }
    Ok(Walk {
        segments,
        chain,
        torn,
    })
}

// ------------------------------------------------------------------------------------------------
// The sink
// ------------------------------------------------------------------------------------------------

/// A writer failure, kept so every later call can report it.
#[derive(Debug, Clone)]
struct Failure {
    kind: io::ErrorKind,
    message: String,
}

impl Failure {
    fn from_io(context: &str, e: &io::Error) -> Self {
        Self {
            kind: e.kind(),
            message: format!("{context}: {e}"),
        }
    }

    fn to_error(&self) -> AuditError {
        AuditError::Io(io::Error::new(
            self.kind,
            format!(
                "the audit writer failed and accepts nothing more until reopened: {}",
                self.message
            ),
        ))
    }
}

#[derive(Default)]
struct State {
    queue: VecDeque<Vec<u8>>,
    /// Events ever accepted into the queue.
    accepted: u64,
    /// Events written to the file.
    written: u64,
    /// Events written and fsync'd.
    durable: u64,
    /// Someone is waiting for events up to this count to be durable.
    sync_requested: u64,
    failed: Option<Failure>,
    shutdown: bool,
    paused: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer.
    work: Condvar,
    /// Wakes callers waiting for room in the queue.
    space: Condvar,
    /// Wakes callers waiting for durability.
    done: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation of State is a plain field update; a panic cannot leave it half-made.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, cv: &Condvar, g: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        cv.wait(g).unwrap_or_else(PoisonError::into_inner)
    }

    fn fail(&self, failure: Failure) {
        let mut st = self.lock();
        if st.failed.is_none() {
            st.failed = Some(failure);
        }
        drop(st);
        self.space.notify_all();
        self.done.notify_all();
    }

    /// Waits until the first `ticket` events are durable, or the writer failed.
    fn wait_durable(&self, mut st: MutexGuard<'_, State>, ticket: u64) -> Result<(), AuditError> {
        loop {
            if st.durable >= ticket {
                return Ok(());
            }
            if let Some(f) = &st.failed {
                return Err(f.to_error());
            }
            st = self.wait(&self.done, st);
        }
    }
}

/// A durable, hash-chained audit sink writing JSON Lines segments (see the [module
/// docs](self)). Share it as `Arc<FileSink>`; dropping the last handle flushes and joins the
/// writer thread.
pub struct FileSink {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
    dir: PathBuf,
    durability: Durability,
    backpressure: Backpressure,
    capacity: usize,
}

impl fmt::Debug for FileSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSink")
            .field("dir", &self.dir)
            .field("durability", &self.durability)
            .field("backpressure", &self.backpressure)
            .field("queue_capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

fn refused(reason: impl Into<String>) -> AuditError {
    AuditError::Refused {
        sink: SINK_NAME,
        reason: reason.into(),
    }
}

fn sync_dir(dir: &Path) {
    // Makes a new segment's directory entry durable. Some platforms refuse to open or fsync a
    // directory; the file's own fsyncs still hold there.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

impl FileSink {
    /// Opens (creating if needed) the log in `dir`: verifies every existing segment, cuts off a
    /// torn last line, and starts the writer thread continuing the chain.
    ///
    /// Fails if `dir` is not a directory, the configuration is invalid, or the log is damaged
    /// anywhere but its last line — then the error wraps a [`VerifyError`] naming the file, line
    /// and seq ([`corruption`] extracts it).
    pub fn open(
        dir: impl AsRef<Path>,
        config: FileSinkConfig,
    ) -> Result<(FileSink, Recovery), AuditError> {
        let dir = dir.as_ref().to_owned();
        if config.queue_capacity == 0 {
            return Err(refused("queue_capacity must be at least 1"));
        }
        match fs::metadata(&dir) {
            Ok(m) if !m.is_dir() => {
                return Err(AuditError::Io(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    VerifyError::NotADirectory(dir),
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&dir)?;
                if let Some(parent) = dir.parent() {
                    sync_dir(parent);
                }
            }
            Err(e) => return Err(e.into()),
        }
        let walk = walk(&dir, TailPolicy::Repair).map_err(|e| match e {
            VerifyError::Io { source, path } => AuditError::Io(io::Error::new(
                source.kind(),
                VerifyError::Io { source, path },
            )),
            other => AuditError::Io(io::Error::new(io::ErrorKind::InvalidData, other)),
        })?;

        let mut truncated_bytes = 0;
        let mut torn_line_at = None;
        if let Some((path, offset, len)) = walk.torn {
            let f = OpenOptions::new().write(true).open(&path)?;
            f.set_len(offset)?;
            f.sync_all()?;
            truncated_bytes = len;
            torn_line_at = Some((path, offset));
        }

        let (index, path) = match walk.segments.last() {
            Some((index, path)) => (*index, path.clone()),
            None => (1, dir.join(segment_name(1))),
        };
        let created = walk.segments.is_empty();
        let file = OpenOptions::new()
            .create(created)
            .append(true)
            .open(&path)?;
        if created {
            file.sync_all()?;
            sync_dir(&dir);
        }
        let seg_len = file.metadata()?.len();

        let recovery = Recovery {
            records: walk.chain.records,
            last_seq: walk.chain.next_seq - 1,
            head_hash: hex_str(&walk.chain.prev),
            truncated_bytes,
            torn_line_at,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            space: Condvar::new(),
            done: Condvar::new(),
        });
        let writer = Writer {
            shared: Arc::clone(&shared),
            dir: dir.clone(),
            file,
            index,
            seg_len,
            max_segment_bytes: config.max_segment_bytes,
            chain: walk.chain,
            durability: config.durability,
            buf: Vec::with_capacity(64 * 1024),
            dirty: false,
            last_sync: Instant::now(),
        };
        let handle = std::thread::Builder::new()
            .name("tollgate-audit-writer".into())
            .spawn(move || writer.run())?;
        let sink = FileSink {
            shared,
            writer: Some(handle),
            dir,
            durability: config.durability,
            backpressure: config.backpressure,
            capacity: config.queue_capacity,
        };
        Ok((sink, recovery))
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Flushes, stops the writer thread and reports any writer failure (dropping the sink does
    /// the same and discards the result).
    pub fn close(mut self) -> Result<(), AuditError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), AuditError> {
        let Some(handle) = self.writer.take() else {
            return Ok(());
        };
        {
            let mut st = self.shared.lock();
            st.shutdown = true;
            st.paused = false;
            st.sync_requested = st.accepted;
        }
        self.shared.work.notify_all();
        let joined = handle.join();
        let st = self.shared.lock();
        if let Some(f) = &st.failed {
            return Err(f.to_error());
        }
        if joined.is_err() {
            return Err(refused("the audit writer thread panicked"));
        }
        Ok(())
    }

    /// Test hook: holds the writer thread before its next batch until the returned guard is
    /// dropped, so tests can fill the queue deterministically. Not part of the stable API.
    #[doc(hidden)]
    pub fn pause_writer(&self) -> WriterPause<'_> {
        self.shared.lock().paused = true;
        WriterPause { sink: self }
    }
}

/// Returned by [`FileSink::pause_writer`]; resumes the writer when dropped.
#[doc(hidden)]
#[derive(Debug)]
pub struct WriterPause<'a> {
    sink: &'a FileSink,
}

impl Drop for WriterPause<'_> {
    fn drop(&mut self) {
        self.sink.shared.lock().paused = false;
        self.sink.shared.work.notify_all();
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl AuditSink for FileSink {
    fn record(&self, event: &AuditEvent<'_>) -> Result<(), AuditError> {
        let bytes = serde_json::to_vec(&event.to_json())
            .map_err(|e| refused(format!("the event could not be serialised: {e}")))?;
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(refused(format!(
                "the event is {} bytes, more than the {MAX_EVENT_BYTES} a record may hold",
                bytes.len()
            )));
        }
        let shared = &*self.shared;
        let mut st = shared.lock();
        loop {
            if let Some(f) = &st.failed {
                return Err(f.to_error());
            }
            if st.queue.len() < self.capacity {
                break;
            }
            match self.backpressure {
                Backpressure::Fail => {
                    return Err(refused(format!(
                        "the writer queue is full ({} events waiting)",
                        self.capacity
                    )));
                }
                Backpressure::Block => st = shared.wait(&shared.space, st),
            }
        }
        st.queue.push_back(bytes);
        st.accepted += 1;
        let ticket = st.accepted;
        let wait = self.durability == Durability::EveryRecord;
        if wait {
            st.sync_requested = st.sync_requested.max(ticket);
        }
        shared.work.notify_one();
        if wait {
            shared.wait_durable(st, ticket)
        } else {
            Ok(())
        }
    }

    fn flush(&self) -> Result<(), AuditError> {
        let shared = &*self.shared;
        let mut st = shared.lock();
        if let Some(f) = &st.failed {
            return Err(f.to_error());
        }
        let ticket = st.accepted;
        if st.durable >= ticket {
            return Ok(());
        }
        st.sync_requested = st.sync_requested.max(ticket);
        shared.work.notify_one();
        shared.wait_durable(st, ticket)
    }
}

/// Marks the sink failed if the writer thread exits by panicking, so no caller waits forever.
struct PanicGuard(Arc<Shared>);

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fail(Failure {
                kind: io::ErrorKind::Other,
                message: "the audit writer thread panicked".into(),
            });
        }
    }
}

struct Writer {
    shared: Arc<Shared>,
    dir: PathBuf,
    file: File,
    index: u64,
    seg_len: u64,
    max_segment_bytes: u64,
    chain: Chain,
    durability: Durability,
    buf: Vec<u8>,
    /// Bytes written to the current segment since its last fsync.
    dirty: bool,
    last_sync: Instant,
}

impl Writer {
    fn group_interval(&self) -> Option<Duration> {
        match self.durability {
            Durability::GroupCommit { interval_ms } => Some(Duration::from_millis(interval_ms)),
            _ => None,
        }
    }

    fn run(mut self) {
        let shared = Arc::clone(&self.shared);
        let _guard = PanicGuard(Arc::clone(&shared));
        let mut batch = VecDeque::new();
        loop {
            let (sync_target, durable, shutdown) = {
                let mut st = shared.lock();
                loop {
                    let runnable = !st.paused;
                    if runnable
                        && (!st.queue.is_empty() || st.sync_requested > st.durable || st.shutdown)
                    {
                        break;
                    }
                    match self.group_interval() {
                        Some(iv) if runnable && self.dirty => {
                            let due = self.last_sync + iv;
                            let now = Instant::now();
                            if now >= due {
                                break;
                            }
                            st = shared
                                .work
                                .wait_timeout(st, due - now)
                                .unwrap_or_else(PoisonError::into_inner)
                                .0;
                        }
                        _ => st = shared.wait(&shared.work, st),
                    }
                }
                std::mem::swap(&mut st.queue, &mut batch);
                (st.sync_requested, st.durable, st.shutdown)
            };
            shared.space.notify_all();
            let n = batch.len() as u64;
            let step = self.write_batch(&mut batch).and_then(|()| {
                let timer_due = self
                    .group_interval()
                    .is_some_and(|iv| self.last_sync.elapsed() >= iv);
                let must = sync_target > durable
                    || shutdown
                    || timer_due
                    || self.durability == Durability::EveryRecord;
                if self.dirty && must {
                    self.sync()
                        .map_err(|e| Failure::from_io("fsync failed", &e))?;
                }
                Ok(())
            });
            if let Err(failure) = step {
                shared.fail(failure);
                return;
            }
            let mut st = shared.lock();
            st.written += n;
            if !self.dirty {
                st.durable = st.written;
            }
            drop(st);
            shared.done.notify_all();
            if shutdown {
                return;
            }
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        self.dirty = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    fn write_out(&mut self) -> Result<(), Failure> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let written = self.file.write_all(&self.buf);
        self.dirty = true;
        written.map_err(|e| {
            Failure::from_io(
                &format!(
                    "writing {}",
                    self.dir.join(segment_name(self.index)).display()
                ),
                &e,
            )
        })?;
        self.buf.clear();
        if self.buf.capacity() > 1024 * 1024 {
            self.buf.shrink_to(64 * 1024);
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), Failure> {
        self.write_out()?;
        if self.dirty {
            self.sync()
                .map_err(|e| Failure::from_io("fsync before rotation failed", &e))?;
        }
        let next = self.index + 1;
        let path = self.dir.join(segment_name(next));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| Failure::from_io(&format!("creating {}", path.display()), &e))?;
        file.sync_all()
            .map_err(|e| Failure::from_io(&format!("fsync of {}", path.display()), &e))?;
        sync_dir(&self.dir);
        self.file = file;
        self.index = next;
        self.seg_len = 0;
        Ok(())
    }

    fn write_batch(&mut self, batch: &mut VecDeque<Vec<u8>>) -> Result<(), Failure> {
        for event in batch.drain(..) {
            if self.seg_len > 0 && self.seg_len >= self.max_segment_bytes {
                self.rotate()?;
            }
            let seq = self.chain.next_seq;
            let hash = chain_hash(&self.chain.prev, seq, &event);
            let before = self.buf.len();
            append_record(&mut self.buf, seq, &self.chain.prev, &hash, &event);
            self.seg_len += (self.buf.len() - before) as u64;
            self.chain.prev = hash;
            self.chain.next_seq += 1;
            self.chain.records += 1;
        }
        self.write_out()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, prev: &Hex64, event: &[u8]) -> (Vec<u8>, Hex64) {
        let hash = chain_hash(prev, seq, event);
        let mut buf = Vec::new();
        append_record(&mut buf, seq, prev, &hash, event);
        (buf, hash)
    }

    #[test]
    fn hash_is_sha256_of_prev_seq_and_event_bytes() {
        let event = br#"{"a":1}"#;
        let h = chain_hash(&GENESIS_HEX, 7, event);
        let mut d = Sha256::new();
        d.update(format!("{GENESIS}\n7\n{{\"a\":1}}").as_bytes());
        let want: String = d.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex_str(&h), want);
    }

    #[test]
    fn record_line_has_the_documented_shape_and_is_json() {
        let (l, hash) = line(1, &GENESIS_HEX, br#"{"event":"x","n":[1,2]}"#);
        let text = std::str::from_utf8(&l).unwrap();
        assert!(text.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["seq"], 1);
        assert_eq!(v["prev"], GENESIS);
        assert_eq!(v["hash"], hex_str(&hash));
        assert_eq!(v["event"]["n"][1], 2);
        let mut chain = Chain::new();
        assert!(check_record(&l[..l.len() - 1], &mut chain).is_ok());
        assert_eq!(chain.next_seq, 2);
        assert_eq!(chain.prev, hash);
    }

    #[test]
    fn frame_parser_rejects_near_misses_without_panicking() {
        let (l, _) = line(12, &GENESIS_HEX, br#"{"k":"v"}"#);
        let l = &l[..l.len() - 1];
        for cut in 0..l.len() {
            assert!(parse_frame(&l[..cut]).is_err() || !parseable(&l[..cut]));
        }
        assert!(parse_seq(b"{\"seq\":012,").is_none());
        assert!(parse_seq(b"{\"seq\":99999999999999999999,").is_none());
        assert_eq!(parse_seq(b"{\"seq\":0,").map(|s| s.0), Some(0));
        let upper =
            String::from_utf8(l.to_vec())
                .unwrap()
                .replacen("\"prev\":\"0", "\"prev\":\"A", 1);
        assert!(parse_frame(upper.as_bytes()).is_err());
    }

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_name(1), "audit-000001.jsonl");
        assert_eq!(segment_index("audit-000001.jsonl"), Some(1));
        assert_eq!(segment_index(&segment_name(1_234_567)), Some(1_234_567));
        assert_eq!(segment_index("audit-1.jsonl"), None);
        assert_eq!(segment_index("audit-000001.jsonl.tmp"), None);
        assert_eq!(segment_index("audit-00000x.jsonl"), None);
    }

    #[test]
    fn overlong_lines_are_skipped_in_bounded_memory() {
        let mut data = vec![b'x'; MAX_LINE_BYTES + 10];
        data.push(b'\n');
        data.extend_from_slice(b"next\n");
        let mut r = BufReader::new(&data[..]);
        let mut buf = Vec::new();
        match read_line(&mut r, &mut buf).unwrap() {
            LineRead::Line {
                consumed,
                complete,
                too_long,
            } => {
                assert_eq!(consumed, MAX_LINE_BYTES as u64 + 11);
                assert!(complete && too_long);
            }
            LineRead::Eof => panic!(),
        }
        assert!(buf.len() <= MAX_LINE_BYTES);
        assert!(matches!(
            read_line(&mut r, &mut buf).unwrap(),
            LineRead::Line { consumed: 5, .. }
        ));
        assert!(matches!(
            read_line(&mut r, &mut buf).unwrap(),
            LineRead::Eof
        ));
    }
}
