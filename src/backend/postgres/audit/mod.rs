//! The audit trail in PostgreSQL: one table every host of a fleet writes, with a
//! tamper-evident chain per writer anchored by keyed checkpoints (feature `postgres`).
//!
//! # Design: one chain per writer
//!
//! Every writing process has a **writer** name ([`PgAuditConfig::writer`]; default
//! `<hostname>-<pid>`) and appends to its own hash chain, exactly like the file sink's chain
//! but with the writer's name inside each hash:
//!
//! ```text
//! hash = SHA-256("tollgate-pg-audit-v1\n" || writer || "\n" || prev || "\n" || seq || "\n" || event)
//! ```
//!
//! Rows of `{schema}.audit_records` are `(part, writer, seq, at_ns, kind, prev, hash, event)`;
//! `event` holds the exact bytes [`AuditEvent::write_json`](crate::audit::AuditEvent::write_json)
//! wrote (redacted per [`PgAuditConfig::redaction`]), as `bytea` so no byte is re-encoded. A
//! single global chain would make every host wait for every other one on each batch (the head
//! is one row); per-writer chains let the hosts commit in parallel, which is what reaches tens
//! of thousands of records per second. A session-level advisory lock keeps one live process per
//! writer name: a second sink with the same name is refused ([`PgAuditError::WriterBusy`]),
//! and a dead process's lock goes with its connection.
//!
//! With a [`CheckpointKey`] ([`PgAuditConfig::checkpoint_key`]) the writer appends a signed
//! checkpoint to its chain every [`checkpoint_every_records`](AuditSection::checkpoint_every_records)
//! records or [`checkpoint_every`](AuditSection::checkpoint_every) after the first uncovered one,
//! on every [`flush`](AuditSink::flush), on close and after a retention declaration:
//!
//! ```text
//! {"event":"checkpoint","time_unix_nano":T,"tollgate.checkpoint.writer":W,
//!  "tollgate.checkpoint.seq":N,"tollgate.checkpoint.head":"<hash of record N>",
//!  "tollgate.checkpoint.key_id":K,"tollgate.checkpoint.mac":"<HMAC-SHA-256 hex>"}
//! ```
//!
//! `mac = HMAC(key, "tollgate-pg-audit-checkpoint-v1\n" || K || "\n" || W || "\n" || N || "\n" || head || "\n" || T)`.
//!
//! # What [`verify()`] detects, for someone who can write the database
//!
//! | change | chain only | with the checkpoint key |
//! |---|---|---|
//! | a row's event, seq, prev or hash changed (`UPDATE`), a row deleted in the middle, rows reordered or copied between writers | detected at that row, named by writer and seq | detected |
//! | a prefix of a chain deleted without a retention declaration | detected | detected |
//! | a chain rewritten from some record on with recomputed hashes | **not** detected | detected at the first checkpoint after the change |
//! | rows cut off the end of a chain | **not** detected | **not** detected after a checkpoint; otherwise reported as uncovered records |
//! | a forged retention declaration | **not** detected | detected unless a checkpoint signed by the key follows it |
//! | a whole writer's chain and its `audit_writers` row deleted | **not** detected | **not** detected |
//!
//! A row of a registered writer with no chain left is reported
//! ([`PgVerifyError::MissingChain`]) unless a declaration dropped it. The key is held by every
//! writing process: checkpoints protect the trail from whoever can reach the database
//! (operators, a compromised replica, backups), not from the writers' memory.
//!
//! # Throughput, durability and failures
//!
//! `record` serialises the event on the calling thread and hands the bytes to the writer
//! thread through a bounded queue ([`queue_capacity`](AuditSection::queue_capacity)); the
//! writer takes up to [`max_batch`](AuditSection::max_batch) events, chains them, and writes
//! them with one binary `COPY` in one transaction (group commit). With
//! [`wait_for_commit`](AuditSection::wait_for_commit) the caller waits for that commit; by
//! default it returns at once and [`flush`](AuditSink::flush) waits.
//!
//! Fail closed, never silent:
//! - a full queue refuses the event ([`AuditBackpressure::Fail`], the guard denies the call) or
//!   waits at most [`stall_timeout`](AuditSection::stall_timeout) ([`AuditBackpressure::Block`]);
//! - a batch that fails (the database lost, a cut connection) makes every later `record` and
//!   `flush` fail until the writer has reconnected (every
//!   [`retry_interval`](AuditSection::retry_interval)) and rewritten the batch; a batch not
//!   committed within `stall_timeout` does the same, for a connection that hangs rather than
//!   fails;
//! - nothing acknowledged is dropped: without `wait_for_commit` the acknowledged batch and the
//!   queue stay in memory and are written once the database answers (a crash of the process in
//!   the meantime loses them, as with the file sink's group commit); with it, the callers of a
//!   failed batch all get the error (their calls are denied) and the batch is discarded. After
//!   reconnecting, the writer reads its chain's head: if the failed commit did land, it goes
//!   on from there. A commit whose acknowledgement was lost may therefore leave records of calls
//!   that were denied; never the reverse.
//!
//! # Retention
//!
//! Records go to partition `floor(write time / partition_span)` (never decreasing per writer),
//! so every partition holds a contiguous range of each writer's chain and the oldest
//! partitions hold a prefix of every chain. [`PgAuditSink::retain`] drops whole partitions from
//! the oldest end only, only those older than the previous span, and only while every event in
//! them is past its class's keep ([`RetentionPolicy`], as the file sink). In one transaction it
//! appends a declaration to its own chain
//!
//! ```text
//! {"event":"retention_applied","time_unix_nano":T,"tollgate.retention.evaluated_at":E,
//!  "tollgate.retention.partitions":[p,...],
//!  "tollgate.retention.dropped":{"<writer>":{"last_seq":L,"head":"<hash of L>"},...}}
//! ```
//!
//! followed by a checkpoint when keyed, and drops the partitions. [`verify()`] accepts a chain
//! starting at seq `S > 1` only if some declaration states `last_seq = S - 1` with the `head`
//! equal to its first row's `prev` (and, when verifying with a key, a checkpoint covers that
//! declaration).

mod chain;
mod retention;
mod schema;
mod verify;
mod writer;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex};
use thiserror::Error;

use super::{BackendError, PgBackend};
use crate::audit::file::{CheckpointKey, RetentionPolicy};
use crate::audit::{AuditError, AuditEvent, AuditSink, Redaction, SinkDurability, SinkGuarantees};
use crate::backend::audit::{AuditBackpressure, AuditSection, is_writer_name};
use crate::clock::{Clock, SystemClock};

pub use chain::GENESIS;
pub use retention::PgRetainReport;
pub use verify::{PgRecord, PgVerifyError, PgVerifyReport, query, verify};

const SINK_NAME: &str = "postgres";

fn refused(reason: impl Into<String>) -> AuditError {
    AuditError::Refused {
        sink: SINK_NAME,
        reason: reason.into(),
    }
}

/// Why a [`PgAuditSink`] could not open.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PgAuditError {
    /// The database could not be reached or refused a statement.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Another live process writes under this writer name.
    #[error(
        "audit writer `{writer}` is held by another live process (one process per writer name)"
    )]
    WriterBusy {
        /// The name.
        writer: String,
    },
    /// A setting is out of range.
    #[error("invalid audit setting `{field}`: {reason}")]
    Invalid {
        /// Which setting.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The writer's chain head does not verify (its last row's hash is not what its fields
    /// give): the chain was changed; nothing is appended to it.
    #[error(
        "audit writer `{writer}`: the chain's last record (seq {seq}) does not verify: {reason}"
    )]
    Corrupt {
        /// The writer.
        writer: String,
        /// The record.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
}

/// Configures a [`PgAuditSink`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PgAuditConfig {
    /// This process's chain.
    pub writer: String,
    /// Queue, batch, backpressure, timeouts, checkpoint cadence, partition span.
    pub settings: AuditSection,
    /// Signs checkpoints (`None`: none are written).
    pub checkpoint_key: Option<CheckpointKey>,
    /// How sensitive arguments are written.
    pub redaction: Redaction,
    /// The wall clock that numbers partitions and stamps checkpoints and declarations (default
    /// the system's; tests use a [`ManualClock`](crate::clock::ManualClock)).
    pub clock: Arc<dyn Clock>,
}

impl PgAuditConfig {
    /// The settings of a `[backend.audit]` section, with the writer it names (or
    /// `<hostname>-<pid>`).
    pub fn from_section(section: &AuditSection) -> Self {
        let writer = section
            .writer
            .clone()
            .unwrap_or_else(crate::backend::deploy::default_host);
        Self {
            writer,
            settings: section.clone(),
            checkpoint_key: None,
            redaction: Redaction::placeholder(),
            clock: Arc::new(SystemClock::new()),
        }
    }

    /// Default settings under writer name `writer`.
    pub fn new(writer: &str) -> Self {
        Self {
            writer: writer.to_owned(),
            ..Self::from_section(&AuditSection::default())
        }
    }

    /// Sets [`checkpoint_key`](Self::checkpoint_key).
    pub fn checkpoint_key(mut self, key: CheckpointKey) -> Self {
        self.checkpoint_key = Some(key);
        self
    }

    /// Sets [`redaction`](Self::redaction).
    pub fn redaction(mut self, redaction: Redaction) -> Self {
        self.redaction = redaction;
        self
    }

    /// Sets [`clock`](Self::clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets [`settings`](Self::settings).
    pub fn settings(mut self, settings: AuditSection) -> Self {
        self.settings = settings;
        self
    }
}

/// What [`PgAuditSink::open`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgRecovery {
    /// The writer's name.
    pub writer: String,
    /// The seq of the chain's last record (0: a new chain).
    pub last_seq: u64,
    /// Its hash ([`GENESIS`] for a new chain).
    pub head_hash: String,
}

/// One event waiting for the writer.
pub(super) struct Item {
    pub(super) ticket: u64,
    pub(super) at_ns: i64,
    pub(super) event: Vec<u8>,
}

/// A request to the writer thread that is not an event.
pub(super) enum Command {
    Retain {
        policy: RetentionPolicy,
        now: SystemTime,
        reply: std::sync::mpsc::Sender<Result<PgRetainReport, AuditError>>,
    },
}

#[derive(Default)]
pub(super) struct State {
    pub(super) queue: std::collections::VecDeque<Item>,
    /// Tickets handed out (the last one).
    pub(super) enqueued: u64,
    /// Every ticket up to this one is committed.
    pub(super) committed: u64,
    /// Tickets up to this one were discarded after a failure (their callers got an error).
    pub(super) discarded: u64,
    /// Why records are refused now (`None`: they are not).
    pub(super) failed: Option<String>,
    /// The failure is the writer's (a stall detected by a caller clears when the batch ends).
    pub(super) writer_failed: bool,
    pub(super) closing: bool,
    pub(super) in_flight_since: Option<Instant>,
    pub(super) flush_req: u64,
    pub(super) flush_done: u64,
    pub(super) commands: std::collections::VecDeque<Command>,
    /// Events the writer lost for good (a permanent failure with events still queued).
    pub(super) lost: u64,
    /// The writer thread has ended.
    pub(super) stopped: bool,
}

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// The writer waits on this.
    pub(super) work: Condvar,
    /// Callers wait on this (commit, room, flush).
    pub(super) done: Condvar,
    pub(super) settings: AuditSection,
    pub(super) clock: Arc<dyn Clock>,
}

impl Shared {
    /// Refuses when the sink failed, or a batch has been in flight longer than the stall
    /// timeout (which marks it failed).
    fn check(&self, st: &mut State) -> Result<(), AuditError> {
        if let Some(since) = st.in_flight_since
            && st.failed.is_none()
            && since.elapsed() > self.settings.stall_timeout
        {
            st.failed = Some(format!(
                "a batch has not been committed for {} (stall_timeout): the database does not answer",
                crate::units::format_duration(self.settings.stall_timeout)
            ));
            self.done.notify_all();
        }
        match &st.failed {
            Some(why) => Err(refused(format!("the audit writer is failed: {why}"))),
            None => Ok(()),
        }
    }
}

/// The audit sink writing to PostgreSQL (see the [module docs](self)).
pub struct PgAuditSink {
    shared: Arc<Shared>,
    writer_name: String,
    redaction: Redaction,
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for PgAuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgAuditSink")
            .field("writer", &self.writer_name)
            .finish_non_exhaustive()
    }
}

impl PgAuditSink {
    /// Connects, creates the tables when missing, takes the writer's lock, reads the chain's
    /// head and starts the writer thread. Refuses to start without the database
    /// ([`PgAuditError::Backend`]): a guard bound to it cannot record, so it must not run.
    pub fn open(
        backend: &PgBackend,
        config: PgAuditConfig,
    ) -> Result<(Self, PgRecovery), PgAuditError> {
        let invalid = |field, reason: &str| PgAuditError::Invalid {
            field,
            reason: reason.to_owned(),
        };
        if !is_writer_name(&config.writer) {
            return Err(invalid(
                "writer",
                "use 1-64 characters of letters, digits, `.`, `_` or `-`",
            ));
        }
        config
            .settings
            .validate()
            .map_err(|e| invalid("settings", &e.to_string()))?;
        let mut client = backend.connect()?;
        schema::create(&mut client, backend.schema())?;
        if !schema::lock_writer(&mut client, backend.schema(), &config.writer)? {
            return Err(PgAuditError::WriterBusy {
                writer: config.writer,
            });
        }
        let chain = writer::Chain::load(&mut client, backend.schema(), &config.writer)?;
        let recovery = PgRecovery {
            writer: config.writer.clone(),
            last_seq: chain.seq,
            head_hash: chain.head.clone(),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            done: Condvar::new(),
            settings: config.settings.clone(),
            clock: config.clock.clone(),
        });
        let w = writer::Writer::new(
            backend.clone(),
            config.writer.clone(),
            config.checkpoint_key.clone(),
            shared.clone(),
            chain,
            client,
        );
        let handle = std::thread::Builder::new()
            .name(format!("tollgate-pg-audit-{}", config.writer))
            .spawn(move || w.run())
            .map_err(|e| invalid("writer", &format!("cannot start the writer thread: {e}")))?;
        Ok((
            Self {
                shared,
                writer_name: config.writer,
                redaction: config.redaction,
                handle: Mutex::new(Some(handle)),
            },
            recovery,
        ))
    }

    /// Opens the sink a document's `[backend]` section describes (`[backend.audit]` settings).
    pub fn from_section(
        section: &crate::backend::BackendSection,
        checkpoint_key: Option<CheckpointKey>,
    ) -> Result<(Self, PgRecovery), PgAuditError> {
        let backend = PgBackend::from_section(section)?;
        let mut config = PgAuditConfig::from_section(&section.audit);
        config.checkpoint_key = checkpoint_key;
        Self::open(&backend, config)
    }

    /// This sink's writer name (its chain).
    pub fn writer(&self) -> &str {
        &self.writer_name
    }

    /// Drops the expired partitions (see [retention](self#retention)), declaring them in the
    /// chain first. Runs on the writer thread, after the records queued before it.
    pub fn retain(
        &self,
        policy: &RetentionPolicy,
        now: SystemTime,
    ) -> Result<PgRetainReport, AuditError> {
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let mut st = self.shared.state.lock();
            self.shared.check(&mut st)?;
            st.commands.push_back(Command::Retain {
                policy: policy.clone(),
                now,
                reply: tx,
            });
        }
        self.shared.work.notify_one();
        rx.recv()
            .map_err(|_| refused("the audit writer stopped before applying retention"))?
    }

    /// Writes what is queued (and a final checkpoint when keyed), stops the writer thread and
    /// reports whether everything acknowledged was written.
    pub fn close(&self) -> Result<(), AuditError> {
        {
            let mut st = self.shared.state.lock();
            st.closing = true;
        }
        self.shared.work.notify_all();
        if let Some(h) = self.handle.lock().take() {
            h.join()
                .map_err(|_| refused("the audit writer thread panicked"))?;
        }
        let st = self.shared.state.lock();
        if st.lost > 0 {
            return Err(refused(format!(
                "{} acknowledged events could not be written before close: {}",
                st.lost,
                st.failed.as_deref().unwrap_or("the writer failed")
            )));
        }
        match &st.failed {
            Some(why) => Err(refused(format!("the audit writer is failed: {why}"))),
            None => Ok(()),
        }
    }

    fn wait_for(&self, ticket: u64) -> Result<(), AuditError> {
        let mut st = self.shared.state.lock();
        loop {
            if st.committed >= ticket {
                return Ok(());
            }
            if st.discarded >= ticket {
                return Err(refused(
                    "the batch holding this event failed and was discarded",
                ));
            }
            self.shared.check(&mut st)?;
            self.shared.done.wait_for(
                &mut st,
                Duration::from_millis(50).min(self.shared.settings.stall_timeout),
            );
        }
    }
}

impl Drop for PgAuditSink {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(writer = %self.writer_name, error = %e, "postgres audit sink closed with an error");
        }
    }
}

fn unix_ns(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_nanos()).ok())
        .unwrap_or(0)
}

impl AuditSink for PgAuditSink {
    fn record(&self, event: &AuditEvent<'_>) -> Result<(), AuditError> {
        let mut bytes = Vec::with_capacity(256);
        event.write_json(&mut bytes, &self.redaction);
        if bytes.len() > crate::audit::file::MAX_EVENT_BYTES {
            return Err(refused(format!(
                "the event is {} bytes, more than the {} accepted",
                bytes.len(),
                crate::audit::file::MAX_EVENT_BYTES
            )));
        }
        let settings = &self.shared.settings;
        let ticket = {
            let mut st = self.shared.state.lock();
            self.shared.check(&mut st)?;
            if st.queue.len() >= settings.queue_capacity {
                match settings.backpressure {
                    AuditBackpressure::Fail => {
                        return Err(refused(format!(
                            "the writer's queue is full ({} events)",
                            settings.queue_capacity
                        )));
                    }
                    _ => {
                        let until = Instant::now() + settings.stall_timeout;
                        while st.queue.len() >= settings.queue_capacity {
                            self.shared.check(&mut st)?;
                            if self.shared.done.wait_until(&mut st, until).timed_out()
                                && st.queue.len() >= settings.queue_capacity
                            {
                                return Err(refused(format!(
                                    "the writer's queue stayed full ({} events) for {}",
                                    settings.queue_capacity,
                                    crate::units::format_duration(settings.stall_timeout)
                                )));
                            }
                        }
                    }
                }
            }
            st.enqueued += 1;
            let ticket = st.enqueued;
            st.queue.push_back(Item {
                ticket,
                at_ns: unix_ns(event.at),
                event: bytes,
            });
            ticket
        };
        self.shared.work.notify_one();
        if settings.wait_for_commit {
            self.wait_for(ticket)?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), AuditError> {
        let (req, target) = {
            let mut st = self.shared.state.lock();
            self.shared.check(&mut st)?;
            st.flush_req += 1;
            (st.flush_req, st.enqueued)
        };
        self.shared.work.notify_one();
        let mut st = self.shared.state.lock();
        loop {
            if st.committed >= target && st.flush_done >= req {
                return Ok(());
            }
            if st.discarded >= target && target > st.committed {
                return Err(refused("events recorded before the flush were discarded"));
            }
            self.shared.check(&mut st)?;
            if st.stopped {
                return Err(refused("the sink is closed"));
            }
            self.shared
                .done
                .wait_for(&mut st, Duration::from_millis(50));
        }
    }

    fn guarantees(&self) -> Option<SinkGuarantees> {
        let s = &self.shared.settings;
        Some(SinkGuarantees::new(
            if s.wait_for_commit {
                SinkDurability::EveryRecord
            } else {
                SinkDurability::GroupCommit(s.stall_timeout)
            },
            matches!(s.backpressure, AuditBackpressure::Fail),
            self.redaction.is_keyed(),
        ))
    }
}
