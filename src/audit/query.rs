//! Streaming queries over a [`FileSink`](super::file::FileSink) directory.
//!
//! A [`Query`] is a filter (run id, agent id, tool name, event kind, decision, a time range
//! `[since, until)`); [`Query::open`] streams the log's segments in order, line by line, and
//! yields the matching [`Record`]s. Memory stays independent of the log's size: one line (at most
//! [`MAX_EVENT_BYTES`](super::file::MAX_EVENT_BYTES) plus its frame), the current record's parsed
//! event, and a few words per segment for the chain check.
//!
//! # Filters
//!
//! Each filter names an event field; a record matches when, for every filter set, the field is
//! present and equals one of the values given (values of one filter are alternatives, filters
//! combine with *and*):
//!
//! | builder method | event field |
//! |---|---|
//! | [`run`](Query::run) | `tollgate.run.id` |
//! | [`agent`](Query::agent) | `gen_ai.agent.id` |
//! | [`tool`](Query::tool) | `gen_ai.tool.name` |
//! | [`kind`](Query::kind) | `event` (`decision`, `outcome`, `checkpoint`, `retention_applied`, ...) |
//! | [`decision`](Query::decision) | `tollgate.decision` (`allow`, `escalate`, `deny`) |
//! | [`since`](Query::since) / [`until`](Query::until) | `time_unix_nano`: `since <= t < until` |
//!
//! Without filters every record matches, the sink's own checkpoint and retention records
//! included.
//!
//! # Verification while reading
//!
//! On by default ([`Query::verify_while_reading`]): every record, matching or not, is checked
//! against the chain exactly as [`verify`](super::file::verify) does (with
//! [`checkpoint_key`](Query::checkpoint_key), checkpoint MACs too), and the iterator yields the
//! [`VerifyError`] instead of the first bad record and then stops. Records yielded before it came
//! from an intact chain up to that point, but a log that lost its prefix without a retention
//! declaration is only known to be bad at the end (the declaration could be anywhere), so that
//! error comes last: **a query whose iterator yields an error must be treated as tampered as a
//! whole**. With verification off, lines are still parsed (a malformed line is an error) but
//! neither hashes nor seqs are checked.
//!
//! An incomplete last line (a writer still writing, or a crash not yet recovered by
//! [`FileSink::open`](super::file::FileSink::open)) is reported as
//! [`VerifyError::Truncated`]; query a live log after [`flush`](super::AuditSink::flush).
//!
//! ```
//! use std::time::{Duration, SystemTime, UNIX_EPOCH};
//! use tollgate::audit::file::{FileSink, FileSinkConfig};
//! use tollgate::audit::query::Query;
//! use tollgate::audit::{AuditEvent, AuditSink, EventKind};
//! use tollgate::{AgentId, RunId};
//!
//! let dir = tempfile::tempdir()?; // removed when dropped
//! let (sink, _) = FileSink::open(dir.path(), FileSinkConfig::default())?;
//! let (run_a, run_b, agent) = (RunId::new("run-a"), RunId::new("run-b"), AgentId::new("bot"));
//! let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! for (seq, run) in [(1, &run_a), (2, &run_b), (3, &run_a)] {
//!     let at = t0 + Duration::from_secs(seq);
//!     let kind = EventKind::RunFinished { duration: Duration::ZERO };
//!     sink.record(&AuditEvent::new(seq, at, Some(run), Some(&agent), kind))?;
//! }
//! sink.close()?;
//!
//! let hits: Vec<u64> = Query::new()
//!     .run("run-a")
//!     .since(t0 + Duration::from_secs(2))
//!     .open(dir.path())?
//!     .map(|r| r.map(|r| r.seq))
//!     .collect::<Result<_, _>>()?;
//! assert_eq!(hits, [3]);
//! # dir.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::Path;
use std::time::SystemTime;

use serde_json::Value;

use super::file::{
    ChainCheck, CheckpointKey, LogReader, Progress, ProgressHook, ProgressTracker, TailPolicy,
    VerifyError, VerifyReport, check_is_dir, hex_str, list_segments, split_record,
};

/// A filter over audit records, and how to read them (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    runs: Vec<String>,
    agents: Vec<String>,
    tools: Vec<String>,
    kinds: Vec<String>,
    decisions: Vec<String>,
    since: Option<u64>,
    until: Option<u64>,
    verify: bool,
    keys: Vec<CheckpointKey>,
    progress: Option<ProgressHook>,
}

impl Default for Query {
    fn default() -> Self {
        Self::new()
    }
}

impl Query {
    /// Matches every record; verifies while reading.
    pub fn new() -> Self {
        Self {
            runs: Vec::new(),
            agents: Vec::new(),
            tools: Vec::new(),
            kinds: Vec::new(),
            decisions: Vec::new(),
            since: None,
            until: None,
            verify: true,
            keys: Vec::new(),
            progress: None,
        }
    }

    /// Records of this run (`tollgate.run.id`); repeat for alternatives.
    pub fn run(mut self, id: impl Into<String>) -> Self {
        self.runs.push(id.into());
        self
    }

    /// Records of this agent (`gen_ai.agent.id`); repeat for alternatives.
    pub fn agent(mut self, id: impl Into<String>) -> Self {
        self.agents.push(id.into());
        self
    }

    /// Records about this tool (`gen_ai.tool.name`); repeat for alternatives.
    pub fn tool(mut self, name: impl Into<String>) -> Self {
        self.tools.push(name.into());
        self
    }

    /// Records of this kind (`event`, e.g. `"decision"`); repeat for alternatives.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kinds.push(kind.into());
        self
    }

    /// Decisions with this outcome (`tollgate.decision`: `"allow"`, `"escalate"` or `"deny"`);
    /// repeat for alternatives.
    pub fn decision(mut self, decision: impl Into<String>) -> Self {
        self.decisions.push(decision.into());
        self
    }

    /// Records at or after `t`.
    pub fn since(self, t: SystemTime) -> Self {
        self.since_unix_nanos(unix_nanos(t))
    }

    /// Records strictly before `t`.
    pub fn until(self, t: SystemTime) -> Self {
        self.until_unix_nanos(unix_nanos(t))
    }

    /// Records with `time_unix_nano >= ns`.
    pub fn since_unix_nanos(mut self, ns: u64) -> Self {
        self.since = Some(ns);
        self
    }

    /// Records with `time_unix_nano < ns`.
    pub fn until_unix_nanos(mut self, ns: u64) -> Self {
        self.until = Some(ns);
        self
    }

    /// Whether to check the chain while reading (default `true`).
    pub fn verify_while_reading(mut self, on: bool) -> Self {
        self.verify = on;
        self
    }

    /// Also checks checkpoint MACs with `key` while reading (turns verification on).
    pub fn checkpoint_key(mut self, key: CheckpointKey) -> Self {
        self.keys.push(key);
        self.verify = true;
        self
    }

    /// Calls `hook` with the [`Progress`] of the read after each record is read (matching or
    /// not; checked against the chain first when verifying), for a progress display over a large
    /// log: [`Records`] may read far without yielding when few records match. It is called
    /// once per record, so keep it cheap and throttle in it. It only observes: the records
    /// yielded are the same with or without.
    pub fn progress(mut self, hook: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(ProgressHook::new(hook));
        self
    }

    /// Whether an event (a record's `event` object) passes the filters.
    pub fn matches(&self, event: &Value) -> bool {
        let field = |name: &str, wanted: &[String]| {
            wanted.is_empty()
                || event
                    .get(name)
                    .and_then(Value::as_str)
                    .is_some_and(|v| wanted.iter().any(|w| w == v))
        };
        if !(field("tollgate.run.id", &self.runs)
            && field("gen_ai.agent.id", &self.agents)
            && field("gen_ai.tool.name", &self.tools)
            && field("event", &self.kinds)
            && field("tollgate.decision", &self.decisions))
        {
            return false;
        }
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Some(t) = event.get("time_unix_nano").and_then(Value::as_u64) else {
            return false;
        };
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u)
    }

    /// Streams the records of the log in `dir` that match. Fails at once if `dir` is not a
    /// readable directory or its segment numbering has a gap; every other problem comes out of
    /// the iterator.
    pub fn open(&self, dir: impl AsRef<Path>) -> Result<Records, VerifyError> {
        let dir = dir.as_ref();
        check_is_dir(dir)?;
        let segments = list_segments(dir)?;
        Ok(Records {
            progress: self
                .progress
                .as_ref()
                .map(|hook| ProgressTracker::new(hook.clone(), &segments)),
            reader: LogReader::new(segments, TailPolicy::Report),
            check: self.verify.then(|| ChainCheck::new(self.keys.clone())),
            query: self.clone(),
            done: false,
            report: None,
        })
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// One record a query yielded.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Record {
    /// The record's seq in the sink's chain.
    pub seq: u64,
    /// The record's hash (as stored; recomputed and checked when verifying).
    pub hash: String,
    /// The segment number (`audit-<segment>.jsonl`).
    pub segment: u64,
    /// The line in that segment, from 1.
    pub line: u64,
    /// The event object.
    pub event: Value,
}

/// The records a [`Query`] yields, in log order; an error ends the stream (see the [module
/// docs](self)).
#[derive(Debug)]
pub struct Records {
    reader: LogReader,
    check: Option<ChainCheck>,
    query: Query,
    done: bool,
    report: Option<VerifyReport>,
    progress: Option<ProgressTracker>,
}

impl Records {
    /// Once the stream has ended without error and verification was on: the verification report
    /// of the whole log.
    pub fn report(&self) -> Option<&VerifyReport> {
        self.report.as_ref()
    }

    fn step(&mut self) -> Result<Option<Record>, VerifyError> {
        loop {
            let Some(line) = self.reader.next_line()? else {
                if let Some(check) = &self.check {
                    self.report = Some(check.finish(self.reader.segments())?);
                }
                return Ok(None);
            };
            let (seq, hash, event) = match &mut self.check {
                Some(check) => {
                    let c = check.check(&line)?;
                    (c.seq, hex_str(&c.hash), c.event)
                }
                None => split_record(&line)?,
            };
            if let Some(t) = &mut self.progress {
                t.line(&line);
            }
            let event: Value =
                serde_json::from_slice(event).map_err(|e| VerifyError::Malformed {
                    at: line.location(Some(seq)),
                    reason: format!("`event` is not valid JSON: {e}"),
                })?;
            if self.query.matches(&event) {
                return Ok(Some(Record {
                    seq,
                    hash,
                    segment: line.segment,
                    line: line.line,
                    event,
                }));
            }
        }
    }
}

impl Iterator for Records {
    type Item = Result<Record, VerifyError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl std::iter::FusedIterator for Records {}
