//! Durable approval records: the [`ApprovalStore`] trait, an in-memory store and an append-only
//! JSON Lines file store.
//!
//! The queue is event-sourced: every transition is one [`StoreRecord`], appended (and, for the
//! file store, synced) before the queue applies it in memory or reports success. Reopening a
//! queue replays the records, so pending requests stay pending, decisions stay decided and a
//! consumed grant stays consumed.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::request::{ApprovalId, ApprovalRequest, Approver, Decision};

/// One transition of one request, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum StoreRecord {
    /// A request was opened.
    Submitted {
        /// The request as created.
        request: ApprovalRequest,
    },
    /// An undecided request moved to a later chain level.
    Escalated {
        /// The request.
        id: ApprovalId,
        /// The level reached.
        level: usize,
        /// When (unix ms).
        at_ms: u64,
    },
    /// An approver decided.
    Decided {
        /// The request.
        id: ApprovalId,
        /// Who.
        approver: Approver,
        /// What.
        decision: Decision,
        /// Why.
        reason: String,
        /// When (unix ms).
        at_ms: u64,
    },
    /// The deadline passed with no decision.
    TimedOut {
        /// The request.
        id: ApprovalId,
        /// Whether the timeout approved (else it denied).
        approved: bool,
        /// When (unix ms).
        at_ms: u64,
    },
    /// The grant was consumed.
    Consumed {
        /// The request.
        id: ApprovalId,
        /// When (unix ms).
        at_ms: u64,
    },
}

impl StoreRecord {
    /// The request the record is about.
    pub fn id(&self) -> &ApprovalId {
        match self {
            StoreRecord::Submitted { request } => &request.id,
            StoreRecord::Escalated { id, .. }
            | StoreRecord::Decided { id, .. }
            | StoreRecord::TimedOut { id, .. }
            | StoreRecord::Consumed { id, .. } => id,
        }
    }
}

/// Where the queue keeps its records. `append` must make the record durable (as durable as the
/// store promises) before it returns `Ok`; the queue applies a transition only after that.
pub trait ApprovalStore: Send + Sync {
    /// Appends one record.
    fn append(&self, rec: &StoreRecord) -> Result<(), StoreError>;
    /// Every record, in append order.
    fn load(&self) -> Result<Vec<StoreRecord>, StoreError>;
}

/// Records in memory (tests, or processes that accept losing pending approvals on restart).
#[derive(Debug, Default)]
pub struct MemoryApprovalStore {
    records: Mutex<Vec<StoreRecord>>,
}

impl MemoryApprovalStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of every record so far.
    pub fn records(&self) -> Vec<StoreRecord> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Whether no record was appended.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ApprovalStore for MemoryApprovalStore {
    fn append(&self, rec: &StoreRecord) -> Result<(), StoreError> {
        self.records
            .lock()
            .map_err(|_| StoreError::Poisoned)?
            .push(rec.clone());
        Ok(())
    }

    fn load(&self) -> Result<Vec<StoreRecord>, StoreError> {
        Ok(self
            .records
            .lock()
            .map_err(|_| StoreError::Poisoned)?
            .clone())
    }
}

/// What [`FileApprovalStore::open`] removed from the end of the file: a record whose append
/// never completed (no trailing newline, or an unparseable last line). Such a record was never
/// acknowledged to the queue, so no caller acted on it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TornTail {
    /// 1-based line number of the removed line.
    pub line: usize,
    /// Bytes removed.
    pub bytes: u64,
    /// Why the line was considered torn.
    pub reason: String,
}

/// An append-only JSON Lines file: one [`StoreRecord`] per line, `sync_data` after every append.
///
/// Opening checks every line. A torn last line (a crash during an append) is truncated and
/// reported through [`recovered`](Self::recovered) and a `tracing` warning; damage anywhere
/// else is a [`StoreError::Corrupt`] naming the line, never repaired silently. One process at a
/// time may use a file.
#[derive(Debug)]
pub struct FileApprovalStore {
    path: PathBuf,
    inner: Mutex<FileInner>,
    recovered: Option<TornTail>,
}

#[derive(Debug)]
struct FileInner {
    file: File,
    /// Length of the file's valid content.
    len: u64,
    /// An append failed and could not be rolled back.
    broken: bool,
}

impl FileApprovalStore {
    /// Opens (or creates) the store at `path`, repairing a torn last line.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_owned();
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io)?;
        if !existed {
            sync_parent(&path).map_err(io)?;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let (valid_len, torn) = scan(&path, &bytes)?;
        if let Some(t) = &torn {
            file.set_len(valid_len).map_err(io)?;
            file.sync_data().map_err(io)?;
            tracing::warn!(
                path = %path.display(),
                line = t.line,
                bytes = t.bytes,
                reason = %t.reason,
                "approval store: truncated a torn last line"
            );
        }
        Ok(Self {
            inner: Mutex::new(FileInner {
                file,
                len: valid_len,
                broken: false,
            }),
            path,
            recovered: torn,
        })
    }

    /// The torn tail removed when the store was opened, if any.
    pub fn recovered(&self) -> Option<&TornTail> {
        self.recovered.as_ref()
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

/// Makes a new file's directory entry durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(parent)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Checks every line; returns the length of the valid prefix and what was torn off the end.
fn scan(path: &Path, bytes: &[u8]) -> Result<(u64, Option<TornTail>), StoreError> {
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut lines: Vec<(usize, &[u8])> = Vec::new();
    let mut start = 0;
    for (i, &b) in bytes[..complete].iter().enumerate() {
        if b == b'\n' {
            lines.push((start, &bytes[start..i]));
            start = i + 1;
        }
    }
    // Without a trailing newline, the bytes after the last newline are the torn record and every
    // complete line must be valid; with one, the last complete line may be the torn record.
    let unterminated = complete < bytes.len();
    for (n, (offset, line)) in lines.iter().enumerate() {
        if let Err(message) = parse_line(line) {
            if !unterminated && n + 1 == lines.len() {
                return Ok((
                    *offset as u64,
                    Some(TornTail {
                        line: n + 1,
                        bytes: (bytes.len() - offset) as u64,
                        reason: message,
                    }),
                ));
            }
            return Err(StoreError::Corrupt {
                path: path.to_owned(),
                line: n + 1,
                message,
            });
        }
    }
    if unterminated {
        return Ok((
            complete as u64,
            Some(TornTail {
                line: lines.len() + 1,
                bytes: (bytes.len() - complete) as u64,
                reason: "no trailing newline".into(),
            }),
        ));
    }
    Ok((bytes.len() as u64, None))
}

fn parse_line(line: &[u8]) -> Result<StoreRecord, String> {
    let text = std::str::from_utf8(line).map_err(|e| format!("not UTF-8: {e}"))?;
    serde_json::from_str(text).map_err(|e| e.to_string())
}

impl ApprovalStore for FileApprovalStore {
    fn append(&self, rec: &StoreRecord) -> Result<(), StoreError> {
        let mut line = serde_json::to_vec(rec).map_err(|e| StoreError::Serialize(e.to_string()))?;
        line.push(b'\n');
        let mut inner = self.inner.lock().map_err(|_| StoreError::Poisoned)?;
        if inner.broken {
            return Err(StoreError::Broken {
                path: self.path.clone(),
            });
        }
        let result = inner
            .file
            .write_all(&line)
            .and_then(|()| inner.file.sync_data());
        match result {
            Ok(()) => {
                inner.len += line.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Roll the partial record back so the next append does not follow garbage; if
                // that fails too, refuse appends until the file is reopened (and repaired).
                let len = inner.len;
                if inner
                    .file
                    .set_len(len)
                    .and_then(|()| inner.file.sync_data())
                    .is_err()
                {
                    inner.broken = true;
                }
                Err(self.io(e))
            }
        }
    }

    fn load(&self) -> Result<Vec<StoreRecord>, StoreError> {
        // Hold the append lock so no record is half-written while reading.
        let inner = self.inner.lock().map_err(|_| StoreError::Poisoned)?;
        let mut bytes = Vec::new();
        File::open(&self.path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| self.io(e))?;
        bytes.truncate(inner.len as usize);
        drop(inner);
        // Valid content is empty or ends with a newline; no line inside it is empty.
        let Some(body) = bytes.strip_suffix(b"\n") else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (n, line) in body.split(|&b| b == b'\n').enumerate() {
            out.push(parse_line(line).map_err(|message| StoreError::Corrupt {
                path: self.path.clone(),
                line: n + 1,
                message,
            })?);
        }
        Ok(out)
    }
}
