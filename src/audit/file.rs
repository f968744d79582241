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
//! One process at a time may write a directory; nothing here locks it.
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

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use serde::{Deserialize, Serialize};
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

// ------------------------------------------------------------------------------------------------
// Checkpoint keys
// ------------------------------------------------------------------------------------------------

type HmacSha256 = Hmac<Sha256>;

/// The secret that signs (writer) and checks (auditor) checkpoints, with the id that names it in
/// every checkpoint record so a rotated key stays identifiable.
///
/// The secret lives in a [`secrecy`] box: `Debug` shows the id only. Cloning shares the secret.
/// Two keys are equal when both id and secret are (compared in constant time).
///
/// ```
/// use tollgate::audit::file::CheckpointKey;
///
/// let key = CheckpointKey::from_hex("audit-2026", &"ab".repeat(32))?;
/// assert_eq!(key.id(), "audit-2026");
/// assert!(!format!("{key:?}").contains("abab"));
/// assert!(CheckpointKey::new("k", b"too short".to_vec()).is_err());
/// # Ok::<(), tollgate::audit::file::CheckpointKeyError>(())
/// ```
#[derive(Clone)]
pub struct CheckpointKey {
    inner: Arc<KeyInner>,
}

struct KeyInner {
    id: Box<str>,
    secret: SecretSlice<u8>,
}

/// A checkpoint key could not be built or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointKeyError {
    /// The secret is shorter than [`CheckpointKey::MIN_SECRET_BYTES`].
    #[error(
        "checkpoint key `{id}`: the secret is {len} bytes, at least {} are required",
        CheckpointKey::MIN_SECRET_BYTES
    )]
    TooShort {
        /// The key's id.
        id: String,
        /// The secret's length in bytes.
        len: usize,
    },
    /// The key id is not 1-64 characters of `[A-Za-z0-9._-]`.
    #[error(
        "checkpoint key id {id:?} is invalid: use 1-64 characters of letters, digits, `.`, `_` or `-`"
    )]
    BadId {
        /// The id given.
        id: String,
    },
    /// The secret is not an even number of hexadecimal digits.
    #[error("checkpoint key `{id}`: the secret is not hexadecimal (an even number of 0-9, a-f)")]
    BadHex {
        /// The key's id.
        id: String,
    },
    /// A key file could not be read or is not `<key id>:<hex secret>`.
    #[error("checkpoint key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the secret).
        reason: String,
    },
}

impl CheckpointKey {
    /// The shortest secret accepted: 32 bytes (the size of a SHA-256 output).
    pub const MIN_SECRET_BYTES: usize = 32;

    /// A key named `id` (1-64 characters of `[A-Za-z0-9._-]`) with `secret` (at least
    /// [`MIN_SECRET_BYTES`](Self::MIN_SECRET_BYTES) bytes).
    pub fn new(id: &str, secret: Vec<u8>) -> Result<Self, CheckpointKeyError> {
        let secret = SecretSlice::from(secret);
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(CheckpointKeyError::BadId { id: id.to_owned() });
        }
        let len = secret.expose_secret().len();
        if len < Self::MIN_SECRET_BYTES {
            return Err(CheckpointKeyError::TooShort {
                id: id.to_owned(),
                len,
            });
        }
        Ok(Self {
            inner: Arc::new(KeyInner {
                id: id.into(),
                secret,
            }),
        })
    }

    /// A key whose secret is given as hexadecimal digits (either case).
    pub fn from_hex(id: &str, hex: &str) -> Result<Self, CheckpointKeyError> {
        let secret = crate::hex::decode(hex.trim().as_bytes())
            .ok_or_else(|| CheckpointKeyError::BadHex { id: id.to_owned() })?;
        Self::new(id, secret)
    }

    /// Reads a key file: one line `<key id>:<hex secret>` (surrounding whitespace ignored). This
    /// is the format the `audit` command's `--key-file` takes.
    pub fn from_key_file(path: impl AsRef<Path>) -> Result<Self, CheckpointKeyError> {
        let path = path.as_ref();
        let bad = |reason: String| CheckpointKeyError::KeyFile {
            path: path.to_owned(),
            reason,
        };
        let bytes = SecretSlice::from(fs::read(path).map_err(|e| bad(e.to_string()))?);
        let text = SecretString::from(
            std::str::from_utf8(bytes.expose_secret()).map_err(|_| bad("not UTF-8 text".into()))?,
        );
        let line = text.expose_secret().trim();
        let Some((id, hex)) = line.split_once(':') else {
            return Err(bad("expected one line `<key id>:<hex secret>`".into()));
        };
        if hex.contains(['\n', '\r']) {
            return Err(bad("expected one line `<key id>:<hex secret>`".into()));
        }
        Self::from_hex(id.trim(), hex).map_err(|e| bad(e.to_string()))
    }

    /// The key's id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    fn mac(&self, fields: &MacFields<'_>) -> HmacSha256 {
        // `Hmac::new_from_slice` accepts keys of any length; the fallback cannot happen.
        let mut mac = HmacSha256::new_from_slice(self.inner.secret.expose_secret())
            .unwrap_or_else(|_| HmacSha256::new(&Default::default()));
        mac.update(CHECKPOINT_MAC_DOMAIN);
        mac.update(self.inner.id.as_bytes());
        mac.update(b"\n");
        mac.update(fields.seq.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(fields.head);
        mac.update(b"\n");
        mac.update(fields.time_unix_nano.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(fields.adopted.to_string().as_bytes());
        mac
    }

    fn sign(&self, fields: &MacFields<'_>) -> Hex64 {
        let tag = self.mac(fields).finalize().into_bytes();
        hex64(&tag)
    }

    /// Constant-time check of a hex MAC.
    fn check(&self, fields: &MacFields<'_>, mac_hex: &str) -> bool {
        match crate::hex::decode(mac_hex.as_bytes()) {
            Some(tag) if tag.len() == 32 => self.mac(fields).verify_slice(&tag).is_ok(),
            _ => false,
        }
    }
}

struct MacFields<'a> {
    seq: u64,
    head: &'a [u8],
    time_unix_nano: u64,
    adopted: u64,
}

impl fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointKey")
            .field("id", &self.inner.id)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

impl PartialEq for CheckpointKey {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (
            self.inner.secret.expose_secret(),
            other.inner.secret.expose_secret(),
        );
        self.inner.id == other.inner.id
            && a.len() == b.len()
            && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl Eq for CheckpointKey {}

/// Keyed checkpoints: which key signs them and how often (see the [module docs](self)).
///
/// Defaults: every 10 000 records and every 1 000 ms while records are uncovered, plus on every
/// flush, on close and after a retention declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckpointConfig {
    /// The key that signs new checkpoints (and verifies existing ones on open).
    pub key: CheckpointKey,
    /// Earlier keys whose checkpoints may still be in the log: `open` verifies those with them.
    pub retired_keys: Vec<CheckpointKey>,
    /// A checkpoint after this many records (`None`: no count cadence; `Some(0)` is refused).
    pub every_records: Option<u64>,
    /// A checkpoint this many milliseconds after the first uncovered record (`None`: no time
    /// cadence; `Some(0)` is refused).
    pub every_ms: Option<u64>,
}

impl CheckpointConfig {
    /// Checkpoints signed with `key`, at the default cadence.
    pub fn new(key: CheckpointKey) -> Self {
        Self {
            key,
            retired_keys: Vec::new(),
            every_records: Some(10_000),
            every_ms: Some(1_000),
        }
    }

    /// Sets [`every_records`](Self::every_records).
    pub fn every_records(mut self, n: Option<u64>) -> Self {
        self.every_records = n;
        self
    }

    /// Sets [`every_ms`](Self::every_ms).
    pub fn every_ms(mut self, ms: Option<u64>) -> Self {
        self.every_ms = ms;
        self
    }

    /// Adds a [retired key](Self::retired_keys).
    pub fn retired_key(mut self, key: CheckpointKey) -> Self {
        self.retired_keys.push(key);
        self
    }

    fn validate(&self) -> Result<(), AuditError> {
        if self.every_records == Some(0) {
            return Err(refused(
                "checkpoint.every_records must be at least 1 (or None)",
            ));
        }
        if self.every_ms == Some(0) {
            return Err(refused("checkpoint.every_ms must be at least 1 (or None)"));
        }
        Ok(())
    }

    fn all_keys(&self) -> Vec<CheckpointKey> {
        std::iter::once(&self.key)
            .chain(&self.retired_keys)
            .cloned()
            .collect()
    }
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
    /// vouched for (see the [module docs](self)).
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

pub(super) fn check_is_dir(dir: &Path) -> Result<(), VerifyError> {
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
// Record format
// ------------------------------------------------------------------------------------------------

pub(super) type Hex64 = [u8; 64];

const GENESIS_HEX: Hex64 = [b'0'; 64];

pub(super) fn hex_str(h: &Hex64) -> String {
    // Always ASCII hex, written by this module.
    String::from_utf8_lossy(h).into_owned()
}

fn hex64(digest: &[u8]) -> Hex64 {
    let mut out = [b'0'; 64];
    for (i, b) in digest.iter().take(32).enumerate() {
        out[2 * i] = crate::hex::DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = crate::hex::DIGITS[usize::from(b & 0x0f)];
    }
    out
}

/// 64 lowercase hex digits, as a [`Hex64`].
fn parse_hex64(s: &str) -> Option<Hex64> {
    let b = s.as_bytes();
    if b.len() != 64 || !b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 64];
    out.copy_from_slice(b);
    Some(out)
}

fn chain_hash(prev: &Hex64, seq: u64, event: &[u8]) -> Hex64 {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(b"\n");
    h.update(super::json::u64_digits(&mut [0; 20], seq));
    h.update(b"\n");
    h.update(event);
    hex64(&h.finalize())
}

fn append_record(buf: &mut Vec<u8>, seq: u64, prev: &Hex64, hash: &Hex64, event: &[u8]) {
    buf.extend_from_slice(b"{\"seq\":");
    super::json::u64_to(buf, seq);
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

/// Splits a line into its seq, stored hash and event bytes (frame and event JSON checked, chain
/// not checked).
pub(super) fn split_record<'a>(line: &Line<'a>) -> Result<(u64, String, &'a [u8]), VerifyError> {
    let frame = parse_frame(line.content).map_err(|u| VerifyError::Malformed {
        at: line.location(u.seq),
        reason: u.reason,
    })?;
    event_is_json(frame.event).map_err(|reason| VerifyError::Malformed {
        at: line.location(Some(frame.seq)),
        reason,
    })?;
    Ok((
        frame.seq,
        String::from_utf8_lossy(frame.hash).into_owned(),
        frame.event,
    ))
}

/// Whether an event is one of the sink's own records (checkpoint, retention declaration).
pub(super) fn is_sink_record(event: &[u8]) -> bool {
    event.starts_with(CHECKPOINT_PREFIX) || event.starts_with(RETENTION_PREFIX)
}

/// A checkpoint record's `event` object. Field order is the on-disk order.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointBody<'a> {
    event: &'a str,
    time_unix_nano: u64,
    #[serde(rename = "tollgate.checkpoint.seq")]
    seq: u64,
    #[serde(rename = "tollgate.checkpoint.head", borrow)]
    head: std::borrow::Cow<'a, str>,
    #[serde(rename = "tollgate.checkpoint.adopted")]
    adopted: u64,
    #[serde(rename = "tollgate.checkpoint.key_id", borrow)]
    key_id: std::borrow::Cow<'a, str>,
    #[serde(rename = "tollgate.checkpoint.mac", borrow)]
    mac: std::borrow::Cow<'a, str>,
}

/// A retention declaration's `event` object. Field order is the on-disk order.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionBody<'a> {
    event: &'a str,
    time_unix_nano: u64,
    #[serde(rename = "tollgate.retention.evaluated_at")]
    evaluated_at: u64,
    #[serde(rename = "tollgate.retention.dropped.first_seq")]
    first_seq: u64,
    #[serde(rename = "tollgate.retention.dropped.last_seq")]
    last_seq: u64,
    #[serde(rename = "tollgate.retention.dropped.head", borrow)]
    head: std::borrow::Cow<'a, str>,
    #[serde(rename = "tollgate.retention.dropped.first_segment")]
    first_segment: u64,
    #[serde(rename = "tollgate.retention.dropped.last_segment")]
    last_segment: u64,
    #[serde(rename = "tollgate.retention.policy")]
    policy: PolicyField,
}

/// The policy summary in a retention declaration: written from the policy, ignored on reading.
enum PolicyField {
    Write(BTreeMap<String, Option<f64>>),
    Read,
}

impl Serialize for PolicyField {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PolicyField::Write(m) => m.serialize(s),
            PolicyField::Read => s.serialize_unit(),
        }
    }
}

impl<'de> Deserialize<'de> for PolicyField {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::<String, Option<f64>>::deserialize(d).map(|_| PolicyField::Read)
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

// ------------------------------------------------------------------------------------------------
// Checking the chain (verify, recovery, query, retention)
// ------------------------------------------------------------------------------------------------

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

/// The records one segment holds: its first record's seq and `prev`, its last record's seq and
/// hash.
#[derive(Debug, Clone)]
pub(super) struct Span {
    index: u64,
    first_seq: u64,
    first_prev: Hex64,
    last_seq: u64,
    last_hash: Hex64,
}

/// The first record of the log.
struct Start {
    seq: u64,
    prev: Hex64,
    at: Location,
}

/// A line that passed [`ChainCheck::check`].
pub(super) struct Checked<'a> {
    /// The record's seq.
    pub(super) seq: u64,
    /// The record's hash.
    pub(super) hash: Hex64,
    /// The exact event bytes.
    pub(super) event: &'a [u8],
}

/// Verifies records one at a time, in order, across segments.
pub(super) struct ChainCheck {
    chain: Chain,
    keys: Vec<CheckpointKey>,
    /// The first record; `None` until one is seen.
    start: Option<Start>,
    /// Whether the records before the first one are accounted for (it is seq 1, or a retention
    /// declaration covers the gap).
    prefix_declared: bool,
    /// The largest `last_seq` of any retention declaration seen.
    declared_through: u64,
    /// The largest declared `last_seq` at or after the first record: a deletion not finished.
    pending_drop: Option<u64>,
    /// The first declaration that explains a start after seq 1: its seq and place.
    explained_by: Option<(u64, Location)>,
    spans: Vec<Span>,
    checkpoints: u64,
    last_checkpoint: Option<(u64, u64)>,
    adopted: u64,
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
    pub(super) fn new(keys: Vec<CheckpointKey>) -> Self {
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
    fn continuing(seq: u64, prev: Hex64, at: Location) -> Self {
        let mut c = Self::new(Vec::new());
        c.chain.next_seq = seq;
        c.chain.prev = prev;
        c.start = Some(Start { seq, prev, at });
        c.prefix_declared = true;
        c
    }

    /// Checks the next line; on success advances the chain.
    pub(super) fn check<'a>(&mut self, line: &Line<'a>) -> Result<Checked<'a>, VerifyError> {
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

    fn on_checkpoint(
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

    fn on_retention(&mut self, seq: u64, event: &[u8], line: &Line<'_>) -> Result<(), VerifyError> {
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
    pub(super) fn finish(&self, segments: &[(u64, PathBuf)]) -> Result<VerifyReport, VerifyError> {
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

// ------------------------------------------------------------------------------------------------
// Reading the segments line by line
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

/// The segments in `dir`, in order. Numbering must run without gaps; it starts at 1, or later
/// once retention has dropped the oldest segments.
pub(super) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, VerifyError> {
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
    for pair in segments.windows(2) {
        if pair[1].0 != pair[0].0 + 1 {
            return Err(VerifyError::MissingSegment {
                expected: dir.join(segment_name(pair[0].0 + 1)),
            });
        }
    }
    Ok(segments)
}

/// What to do with a damaged last line of the last segment.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum TailPolicy {
    /// Report it as an error (verify, query).
    Report,
    /// Note it for truncation (recovery) if it is incomplete or unparseable.
    Repair,
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

/// One complete line of a segment, without its newline.
pub(super) struct Line<'a> {
    pub(super) content: &'a [u8],
    pub(super) file: &'a Path,
    pub(super) segment: u64,
    pub(super) line: u64,
    pub(super) offset: u64,
}

impl Line<'_> {
    pub(super) fn location(&self, seq: Option<u64>) -> Location {
        Location {
            file: self.file.to_owned(),
            line: self.line,
            offset: self.offset,
            seq,
        }
    }
}

struct OpenSegment {
    /// Position in [`LogReader::segments`].
    pos: usize,
    reader: BufReader<File>,
    offset: u64,
    line: u64,
}

/// Streams the lines of a log's segments in order, holding one line (at most
/// [`MAX_LINE_BYTES`]) in memory.
pub(super) struct LogReader {
    segments: Vec<(u64, PathBuf)>,
    next: usize,
    open: Option<OpenSegment>,
    buf: Vec<u8>,
    tail: TailPolicy,
    /// A damaged last line found under [`TailPolicy::Repair`]: segment, offset, length.
    torn: Option<(PathBuf, u64, u64)>,
}

impl fmt::Debug for LogReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogReader")
            .field("segments", &self.segments.len())
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl LogReader {
    pub(super) fn new(segments: Vec<(u64, PathBuf)>, tail: TailPolicy) -> Self {
        Self {
            segments,
            next: 0,
            open: None,
            buf: Vec::new(),
            tail,
            torn: None,
        }
    }

    pub(super) fn segments(&self) -> &[(u64, PathBuf)] {
        &self.segments
    }

    /// The next line, `None` at the end of the last segment.
    pub(super) fn next_line(&mut self) -> Result<Option<Line<'_>>, VerifyError> {
        loop {
            let Some(seg) = self.open.as_mut() else {
                let Some((_, path)) = self.segments.get(self.next) else {
                    return Ok(None);
                };
                let file = File::open(path).map_err(|source| VerifyError::Io {
                    path: path.clone(),
                    source,
                })?;
                self.open = Some(OpenSegment {
                    pos: self.next,
                    reader: BufReader::with_capacity(64 * 1024, file),
                    offset: 0,
                    line: 0,
                });
                self.next += 1;
                continue;
            };
            let (index, path) = &self.segments[seg.pos];
            let io_err = |source| VerifyError::Io {
                path: path.clone(),
                source,
            };
            let (consumed, complete, too_long) =
                match read_line(&mut seg.reader, &mut self.buf).map_err(io_err)? {
                    LineRead::Eof => {
                        self.open = None;
                        continue;
                    }
                    LineRead::Line {
                        consumed,
                        complete,
                        too_long,
                    } => (consumed, complete, too_long),
                };
            seg.line += 1;
            let offset = seg.offset;
            let at_eof = seg.reader.fill_buf().map_err(io_err)?.is_empty();
            let final_line = seg.pos + 1 == self.segments.len() && at_eof;
            let content = self.buf.strip_suffix(b"\n").unwrap_or(&self.buf);
            let line = Line {
                content,
                file: path,
                segment: *index,
                line: seg.line,
                offset,
            };
            if final_line
                && self.tail == TailPolicy::Repair
                && (too_long || !complete || !parseable(content))
            {
                self.torn = Some((path.clone(), offset, consumed));
                self.open = None;
                self.next = self.segments.len();
                return Ok(None);
            }
            if !complete {
                return Err(VerifyError::Truncated {
                    at: line.location(parse_seq(content).map(|s| s.0)),
                });
            }
            if too_long {
                return Err(VerifyError::Malformed {
                    at: line.location(parse_seq(content).map(|s| s.0)),
                    reason: format!("line longer than {MAX_LINE_BYTES} bytes"),
                });
            }
            seg.offset += consumed;
            return Ok(Some(line));
        }
    }
}

struct Walk {
    segments: Vec<(u64, PathBuf)>,
    chain: Chain,
    spans: Vec<Span>,
    report: VerifyReport,
    pending_drop: Option<u64>,
    /// Where to cut the last segment, with the length of what is cut.
    torn: Option<(PathBuf, u64, u64)>,
}

fn walk(dir: &Path, policy: TailPolicy, keys: Vec<CheckpointKey>) -> Result<Walk, VerifyError> {
    let mut reader = LogReader::new(list_segments(dir)?, policy);
    let mut check = ChainCheck::new(keys);
    while let Some(line) = reader.next_line()? {
        check.check(&line)?;
    }
    let report = check.finish(&reader.segments)?;
    Ok(Walk {
        segments: reader.segments,
        chain: check.chain,
        spans: check.spans,
        report,
        pending_drop: check.pending_drop,
        torn: reader.torn,
    })
}

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
    classes: BTreeMap<String, Option<Duration>>,
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

    fn summary(&self) -> BTreeMap<String, Option<f64>> {
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
fn expired(event: &[u8], policy: &RetentionPolicy, now_ns: u64) -> Result<(), KeptReason> {
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
fn scan_segment(
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

/// A closed segment: its file and the records it holds (`None`: none, which only a damaged or
/// hand-edited log has; retention stops there).
#[derive(Debug, Clone)]
struct ClosedSegment {
    path: PathBuf,
    span: Option<Span>,
}

/// A retention the caller decided and the writer carries out.
struct RetainJob {
    /// The segments to delete, oldest first, with the records they hold.
    drop: Vec<(PathBuf, Span)>,
    policy: BTreeMap<String, Option<f64>>,
    evaluated_at: u64,
}

/// What the writer did with a [`RetainJob`].
struct RetainDone {
    declaration_seq: u64,
    deleted: u64,
    /// A deletion that failed (the declaration stands; `open` finishes the deletion).
    error: Option<io::Error>,
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
    /// Explicit flushes asked for (each writes a checkpoint when records are uncovered).
    flushes_requested: u64,
    /// Explicit flushes carried out.
    flushes_done: u64,
    /// Records written since the last checkpoint (checkpointing sinks only).
    uncovered: u64,
    /// Closed segments, oldest first.
    closed: Vec<ClosedSegment>,
    retain_job: Option<RetainJob>,
    retain_done: Option<RetainDone>,
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
    /// Wakes callers waiting for durability or a retention.
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

    /// Waits until the first `ticket` events are durable (and, if `flush` is given, that many
    /// explicit flushes are done), or the writer failed.
    fn wait_durable(
        &self,
        mut st: MutexGuard<'_, State>,
        ticket: u64,
        flush: Option<u64>,
    ) -> Result<(), AuditError> {
        loop {
            if st.durable >= ticket && flush.is_none_or(|f| st.flushes_done >= f) {
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
    checkpointing: bool,
    redaction: super::Redaction,
    /// One retention at a time.
    retain_lock: Mutex<()>,
}

impl fmt::Debug for FileSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSink")
            .field("dir", &self.dir)
            .field("durability", &self.durability)
            .field("backpressure", &self.backpressure)
            .field("queue_capacity", &self.capacity)
            .field("checkpointing", &self.checkpointing)
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

/// A [`VerifyError`] as the [`AuditError`] `open` and `retain` return (see [`corruption`]).
fn corrupt(e: VerifyError) -> AuditError {
    match e {
        VerifyError::Io { source, path } => AuditError::Io(io::Error::new(
            source.kind(),
            VerifyError::Io { source, path },
        )),
        other => AuditError::Io(io::Error::new(io::ErrorKind::InvalidData, other)),
    }
}

impl FileSink {
    /// Opens (creating if needed) the log in `dir`: verifies every existing segment (and, with a
    /// checkpoint key, every checkpoint's MAC), cuts off a torn last line, finishes a retention
    /// a crash interrupted, vouches for uncovered records with a checkpoint if keyed, and starts
    /// the writer thread continuing the chain.
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
        if let Some(cp) = &config.checkpoint {
            cp.validate()?;
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
        let keys = config
            .checkpoint
            .as_ref()
            .map(CheckpointConfig::all_keys)
            .unwrap_or_default();
        let walk = walk(&dir, TailPolicy::Repair, keys).map_err(corrupt)?;

        let mut truncated_bytes = 0;
        let mut torn_line_at = None;
        if let Some((path, offset, len)) = walk.torn {
            let f = OpenOptions::new().write(true).open(&path)?;
            f.set_len(offset)?;
            f.sync_all()?;
            truncated_bytes = len;
            torn_line_at = Some((path, offset));
        }

        // Closed segments with what they hold; the last segment is the live one.
        let (live_index, live_path) = match walk.segments.last() {
            Some((index, path)) => (*index, path.clone()),
            None => (1, dir.join(segment_name(1))),
        };
        let mut spans: BTreeMap<u64, Span> = walk.spans.into_iter().map(|s| (s.index, s)).collect();
        let live_first = spans
            .remove(&live_index)
            .map(|s| (s.first_seq, s.first_prev));
        let mut closed: Vec<ClosedSegment> = walk
            .segments
            .iter()
            .filter(|(index, _)| *index != live_index)
            .map(|(index, path)| ClosedSegment {
                path: path.clone(),
                span: spans.remove(index),
            })
            .collect();

        // Finish a retention whose deletion was interrupted: the declared prefix, oldest first,
        // closed segments only.
        let mut retention_completed = 0;
        let mut records = walk.report.records;
        if let Some(through) = walk.pending_drop {
            let done = closed
                .iter()
                .take_while(|c| c.span.as_ref().is_some_and(|s| s.last_seq <= through))
                .count();
            for c in &closed[..done] {
                match fs::remove_file(&c.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
                retention_completed += 1;
                if let Some(span) = &c.span {
                    records -= span.last_seq - span.first_seq + 1;
                }
            }
            if done > 0 {
                sync_dir(&dir);
            }
            closed.drain(..done);
        }

        let created = walk.segments.is_empty();
        let file = OpenOptions::new()
            .create(created)
            .append(true)
            .open(&live_path)?;
        if created {
            file.sync_all()?;
            sync_dir(&dir);
        }
        let seg_len = file.metadata()?.len();

        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                closed,
                ..State::default()
            }),
            work: Condvar::new(),
            space: Condvar::new(),
            done: Condvar::new(),
        });
        let uncovered = walk.report.uncovered_records;
        let mut writer = Writer {
            shared: Arc::clone(&shared),
            dir: dir.clone(),
            file,
            index: live_index,
            seg_len,
            live_first,
            max_segment_bytes: config.max_segment_bytes,
            chain: walk.chain,
            durability: config.durability,
            checkpoint: config.checkpoint.clone(),
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            flushes_seen: 0,
            buf: Vec::with_capacity(64 * 1024),
            dirty: false,
            last_sync: Instant::now(),
        };
        let mut adopted_records = 0;
        if writer.checkpoint.is_some() && uncovered > 0 {
            // Vouch for what no checkpoint covers, saying how much, before anything new.
            writer
                .append_checkpoint(uncovered)
                .and_then(|()| writer.write_out())
                .and_then(|()| {
                    writer
                        .sync()
                        .map_err(|e| Failure::from_io("fsync of the adoption checkpoint", &e))
                })
                .map_err(|f| f.to_error())?;
            adopted_records = uncovered;
        }
        let recovery = Recovery {
            records: records + u64::from(adopted_records > 0),
            last_seq: writer.chain.next_seq - 1,
            head_hash: hex_str(&writer.chain.prev),
            truncated_bytes,
            torn_line_at,
            retention_completed,
            adopted_records,
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
            checkpointing: config.checkpoint.is_some(),
            redaction: config.redaction.clone(),
            retain_lock: Mutex::new(()),
        };
        Ok((sink, recovery))
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Applies `policy` at time `now`: drops the longest run of oldest closed segments in which
    /// every event has expired (see [`RetentionPolicy`] and the [module docs](self)), after
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
    /// finishes the deletion).
    pub fn retain(
        &self,
        policy: &RetentionPolicy,
        now: SystemTime,
    ) -> Result<RetainReport, AuditError> {
        let _one_at_a_time = self
            .retain_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
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
                     (the next open finishes the deletion): {e}",
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

    fn live_segment_path(&self) -> PathBuf {
        list_segments(&self.dir)
            .ok()
            .and_then(|s| s.last().map(|s| s.1.clone()))
            .unwrap_or_else(|| self.dir.clone())
    }

    /// Flushes, stops the writer thread and reports any writer failure (dropping the sink does
    /// the same and discards the result). With checkpoints, a final checkpoint covers every
    /// record.
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
        let mut bytes = Vec::with_capacity(512);
        event.write_json(&mut bytes, &self.redaction);
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
            shared.wait_durable(st, ticket, None)
        } else {
            Ok(())
        }
    }

    /// Returns once every event recorded before the call is written and fsync'd; with
    /// checkpoints, also covered by a checkpoint.
    fn flush(&self) -> Result<(), AuditError> {
        let shared = &*self.shared;
        let mut st = shared.lock();
        if let Some(f) = &st.failed {
            return Err(f.to_error());
        }
        let ticket = st.accepted;
        if st.durable >= ticket && (!self.checkpointing || st.uncovered == 0) {
            return Ok(());
        }
        st.sync_requested = st.sync_requested.max(ticket);
        let flush = if self.checkpointing {
            st.flushes_requested += 1;
            Some(st.flushes_requested)
        } else {
            None
        };
        shared.work.notify_one();
        shared.wait_durable(st, ticket, flush)
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
    /// The live segment's first record's seq and `prev` (`None` while it is empty).
    live_first: Option<(u64, Hex64)>,
    max_segment_bytes: u64,
    chain: Chain,
    durability: Durability,
    checkpoint: Option<CheckpointConfig>,
    /// Records written since the last checkpoint.
    since_checkpoint: u64,
    last_checkpoint: Instant,
    /// Explicit flushes already carried out.
    flushes_seen: u64,
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

    fn checkpoint_interval(&self) -> Option<Duration> {
        self.checkpoint
            .as_ref()
            .and_then(|c| c.every_ms)
            .map(Duration::from_millis)
    }

    /// When the writer must wake up by itself: the group-commit fsync or a timed checkpoint.
    fn deadline(&self) -> Option<Instant> {
        let sync = self
            .group_interval()
            .filter(|_| self.dirty)
            .map(|iv| self.last_sync + iv);
        let checkpoint = self
            .checkpoint_interval()
            .filter(|_| self.since_checkpoint > 0)
            .map(|iv| self.last_checkpoint + iv);
        match (sync, checkpoint) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn run(mut self) {
        let shared = Arc::clone(&self.shared);
        let _guard = PanicGuard(Arc::clone(&shared));
        let mut batch = VecDeque::new();
        loop {
            let (sync_target, durable, flush_target, job, shutdown) = {
                let mut st = shared.lock();
                loop {
                    let runnable = !st.paused;
                    if runnable
                        && (!st.queue.is_empty()
                            || st.sync_requested > st.durable
                            || st.flushes_requested > self.flushes_seen
                            || st.retain_job.is_some()
                            || st.shutdown)
                    {
                        break;
                    }
                    match self.deadline() {
                        Some(due) if runnable => {
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
                (
                    st.sync_requested,
                    st.durable,
                    st.flushes_requested,
                    st.retain_job.take(),
                    st.shutdown,
                )
            };
            shared.space.notify_all();
            let n = batch.len() as u64;
            let mut retained = None;
            let step = self.write_batch(&mut batch).and_then(|()| {
                if let Some(job) = job {
                    retained = Some(self.apply_retention(job)?);
                }
                let flushing = flush_target > self.flushes_seen;
                let checkpoint_due = self
                    .checkpoint_interval()
                    .is_some_and(|iv| self.last_checkpoint.elapsed() >= iv);
                if self.since_checkpoint > 0 && (flushing || shutdown || checkpoint_due) {
                    self.append_checkpoint(0)?;
                    self.write_out()?;
                }
                let timer_due = self
                    .group_interval()
                    .is_some_and(|iv| self.last_sync.elapsed() >= iv);
                let must = sync_target > durable
                    || flushing
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
            self.flushes_seen = flush_target;
            let mut st = shared.lock();
            st.written += n;
            if !self.dirty {
                st.durable = st.written;
            }
            st.flushes_done = flush_target;
            st.uncovered = self.since_checkpoint;
            if retained.is_some() {
                st.retain_done = retained;
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
        let finished = ClosedSegment {
            path: self.dir.join(segment_name(self.index)),
            span: self.live_first.take().map(|(first_seq, first_prev)| Span {
                index: self.index,
                first_seq,
                first_prev,
                last_seq: self.chain.next_seq - 1,
                last_hash: self.chain.prev,
            }),
        };
        self.shared.lock().closed.push(finished);
        self.file = file;
        self.index = next;
        self.seg_len = 0;
        Ok(())
    }

    /// Chains one record into the buffer, rotating first if the segment is full.
    fn append(&mut self, event: &[u8]) -> Result<(), Failure> {
        if self.seg_len > 0 && self.seg_len >= self.max_segment_bytes {
            self.rotate()?;
        }
        let seq = self.chain.next_seq;
        let hash = chain_hash(&self.chain.prev, seq, event);
        if self.live_first.is_none() {
            self.live_first = Some((seq, self.chain.prev));
        }
        let before = self.buf.len();
        append_record(&mut self.buf, seq, &self.chain.prev, &hash, event);
        self.seg_len += (self.buf.len() - before) as u64;
        self.chain.prev = hash;
        self.chain.next_seq += 1;
        self.chain.records += 1;
        if self.checkpoint.is_some() {
            if self.since_checkpoint == 0 {
                self.last_checkpoint = Instant::now();
            }
            self.since_checkpoint += 1;
        }
        Ok(())
    }

    /// Appends a checkpoint over the record just written (no-op without a key).
    fn append_checkpoint(&mut self, adopted: u64) -> Result<(), Failure> {
        let Some(cp) = &self.checkpoint else {
            return Ok(());
        };
        let covered = self.chain.next_seq - 1;
        let time_unix_nano = unix_nanos(SystemTime::now());
        let fields = MacFields {
            seq: covered,
            head: &self.chain.prev,
            time_unix_nano,
            adopted,
        };
        let mac = cp.key.sign(&fields);
        let body = CheckpointBody {
            event: "checkpoint",
            time_unix_nano,
            seq: covered,
            head: hex_str(&self.chain.prev).into(),
            adopted,
            key_id: cp.key.id().into(),
            mac: hex_str(&mac).into(),
        };
        let bytes = serde_json::to_vec(&body).map_err(|e| Failure {
            kind: io::ErrorKind::Other,
            message: format!("serialising a checkpoint: {e}"),
        })?;
        self.append(&bytes)?;
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    fn write_batch(&mut self, batch: &mut VecDeque<Vec<u8>>) -> Result<(), Failure> {
        let every = self.checkpoint.as_ref().and_then(|c| c.every_records);
        for event in batch.drain(..) {
            self.append(&event)?;
            if every.is_some_and(|n| self.since_checkpoint >= n) {
                self.append_checkpoint(0)?;
            }
        }
        self.write_out()
    }

    /// Writes and fsyncs the declaration (and a checkpoint), then deletes the segments, oldest
    /// first. A write or fsync failure is the writer's (sticky); a deletion failure is only
    /// reported, since the log is consistent either way.
    fn apply_retention(&mut self, job: RetainJob) -> Result<RetainDone, Failure> {
        let (Some((_, first)), Some((_, last))) = (job.drop.first(), job.drop.last()) else {
            return Ok(RetainDone {
                declaration_seq: 0,
                deleted: 0,
                error: None,
            });
        };
        let body = RetentionBody {
            event: "retention_applied",
            time_unix_nano: unix_nanos(SystemTime::now()),
            evaluated_at: job.evaluated_at,
            first_seq: first.first_seq,
            last_seq: last.last_seq,
            head: hex_str(&last.last_hash).into(),
            first_segment: first.index,
            last_segment: last.index,
            policy: PolicyField::Write(job.policy),
        };
        let bytes = serde_json::to_vec(&body).map_err(|e| Failure {
            kind: io::ErrorKind::Other,
            message: format!("serialising a retention declaration: {e}"),
        })?;
        self.append(&bytes)?;
        let declaration_seq = self.chain.next_seq - 1;
        self.append_checkpoint(0)?;
        self.write_out()?;
        self.sync()
            .map_err(|e| Failure::from_io("fsync of the retention declaration", &e))?;

        let mut deleted = 0;
        let mut error = None;
        for (path, _) in &job.drop {
            match fs::remove_file(path) {
                Ok(()) => deleted += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => deleted += 1,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        sync_dir(&self.dir);
        let mut st = self.shared.lock();
        let n = usize::try_from(deleted)
            .unwrap_or(usize::MAX)
            .min(st.closed.len());
        st.closed.drain(..n);
        Ok(RetainDone {
            declaration_seq,
            deleted,
            error,
        })
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
        let mut check = ChainCheck::new(Vec::new());
        assert!(check.check(&at(&l[..l.len() - 1], 1, 1)).is_ok());
        assert_eq!(check.chain.next_seq, 2);
        assert_eq!(check.chain.prev, hash);
    }

    #[test]
    fn checkpoint_mac_binds_every_field() {
        let key = CheckpointKey::new("k1", vec![3; 32]).unwrap();
        let other = CheckpointKey::new("k1", vec![4; 32]).unwrap();
        let head = [b'a'; 64];
        let f = |seq, time, adopted| MacFields {
            seq,
            head: &head,
            time_unix_nano: time,
            adopted,
        };
        let mac = hex_str(&key.sign(&f(5, 9, 0)));
        assert!(key.check(&f(5, 9, 0), &mac));
        assert!(!other.check(&f(5, 9, 0), &mac));
        assert!(!key.check(&f(6, 9, 0), &mac));
        assert!(!key.check(&f(5, 8, 0), &mac));
        assert!(!key.check(&f(5, 9, 1), &mac));
        assert!(!key.check(&f(5, 9, 0), &mac[..63]));
        assert!(!key.check(&f(5, 9, 0), "zz"));
        assert_ne!(key, other);
        assert_eq!(key, key.clone());
    }

    #[test]
    fn sink_records_are_recognised_by_their_exact_prefix() {
        let body = CheckpointBody {
            event: "checkpoint",
            time_unix_nano: 1,
            seq: 2,
            head: GENESIS.into(),
            adopted: 0,
            key_id: "k".into(),
            mac: GENESIS.into(),
        };
        let bytes = serde_json::to_vec(&body).unwrap();
        assert!(
            bytes.starts_with(CHECKPOINT_PREFIX),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        assert!(is_sink_record(&bytes));
        assert!(!is_sink_record(br#"{"seq":1,"event":"checkpoint"}"#));
        let decl = RetentionBody {
            event: "retention_applied",
            time_unix_nano: 1,
            evaluated_at: 1,
            first_seq: 1,
            last_seq: 2,
            head: GENESIS.into(),
            first_segment: 1,
            last_segment: 1,
            policy: PolicyField::Write(BTreeMap::from([("default".into(), Some(1.5))])),
        };
        let bytes = serde_json::to_vec(&decl).unwrap();
        assert!(bytes.starts_with(RETENTION_PREFIX));
        let back: RetentionBody<'_> = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.last_seq, 2);
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
