//! The sink's handle: state shared with the writer thread, `record`, `flush` and `close`.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex, MutexGuard};
use std::cell::Cell;

thread_local! {
    /// This thread's serialisation buffer: an event is written into it as JSON, then copied
    /// into the shared queue under the lock (so the JSON encoding runs outside the lock, and the
    /// buffer never leaves the thread: no allocation per record once it has grown).
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

use super::chain::Span;
use super::verify::VerifyError;
use super::{Backpressure, Durability, MAX_EVENT_BYTES, SINK_NAME};
use crate::audit::{AuditError, AuditEvent, AuditSink};

// ------------------------------------------------------------------------------------------------
// The sink
// ------------------------------------------------------------------------------------------------

/// A writer failure, kept so every later call can report it.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    pub(super) kind: io::ErrorKind,
    pub(super) message: String,
}

impl Failure {
    pub(super) fn from_io(context: &str, e: &io::Error) -> Self {
        Self {
            kind: e.kind(),
            message: format!("{context}: {e}"),
        }
    }

    pub(super) fn to_error(&self) -> AuditError {
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
pub(super) struct ClosedSegment {
    pub(super) path: PathBuf,
    pub(super) span: Option<Span>,
}

/// A retention the caller decided and the writer carries out.
pub(super) struct RetainJob {
    /// The segments to delete, oldest first, with the records they hold.
    pub(super) drop: Vec<(PathBuf, Span)>,
    pub(super) policy: BTreeMap<String, Option<f64>>,
    pub(super) evaluated_at: u64,
}

/// What the writer did with a [`RetainJob`].
pub(super) struct RetainDone {
    pub(super) declaration_seq: u64,
    pub(super) deleted: u64,
    /// A deletion that failed (the declaration stands; a keyed `open` finishes the deletion).
    pub(super) error: Option<io::Error>,
}

/// Events waiting for the writer, back to back in one buffer (the writer swaps the whole batch
/// for its emptied one, so neither side allocates per record in steady state).
#[derive(Default, Debug)]
pub(super) struct Batch {
    bytes: Vec<u8>,
    /// Where each event ends in `bytes`.
    ends: Vec<usize>,
    /// Events before this index are consumed.
    front: usize,
}

/// A batch buffer that grew past this is shrunk back once written. Keeping a buffer that steady
/// batches fill was tried (2026-12-01): it saves the callers the page faults of regrowing it
/// (their CPU per call 1.64-1.67 -> 0.97-1.18 µs in `benches/scaling.rs`, 16 k-event queue), but
/// the writer then spent more per call (1.79-1.80 -> 2.07-3.21 µs) and the sustained pace was
/// slower (2.21-2.28 -> 2.92-4.68 µs per call, six alternating runs); not understood, not kept.
const BATCH_KEEP_BYTES: usize = 4 << 20;

impl Batch {
    /// Events not yet consumed.
    pub(super) fn len(&self) -> usize {
        self.ends.len() - self.front
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn push(&mut self, event: &[u8]) {
        self.bytes.extend_from_slice(event);
        self.ends.push(self.bytes.len());
    }

    fn span(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    /// The oldest event not yet consumed.
    pub(super) fn front(&self) -> Option<&[u8]> {
        (self.front < self.ends.len()).then(|| self.span(self.front))
    }

    /// Consumes the oldest event.
    pub(super) fn pop_front(&mut self) {
        if self.front < self.ends.len() {
            self.front += 1;
        }
    }

    /// The events not yet consumed, oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (self.front..self.ends.len()).map(|i| self.span(i))
    }

    /// Empties the batch, keeping its buffers (unless a burst made them large).
    pub(super) fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.front = 0;
        if self.bytes.capacity() > BATCH_KEEP_BYTES {
            self.bytes.shrink_to(BATCH_KEEP_BYTES / 4);
            self.ends.shrink_to(BATCH_KEEP_BYTES / 4 / 256);
        }
    }
}

#[derive(Default)]
pub(super) struct State {
    pub(super) queue: Batch,
    /// The writer sleeps with nothing to do: the next event must wake it. While it waits for
    /// a batch to fill (see [`FileSinkConfig::write_delay`](super::FileSinkConfig::write_delay))
    /// callers do not wake it, so a burst costs one wake-up, not one per record.
    pub(super) writer_idle: bool,
    /// Events ever accepted into the queue.
    pub(super) accepted: u64,
    /// Events written to the file.
    pub(super) written: u64,
    /// Events written and fsync'd.
    pub(super) durable: u64,
    /// Someone is waiting for events up to this count to be durable.
    pub(super) sync_requested: u64,
    /// Explicit flushes asked for (each writes a checkpoint when records are uncovered).
    pub(super) flushes_requested: u64,
    /// Explicit flushes carried out.
    pub(super) flushes_done: u64,
    /// Records written since the last checkpoint (checkpointing sinks only).
    pub(super) uncovered: u64,
    /// The seq of the last record written, and the last one published to the witness.
    pub(super) written_seq: u64,
    pub(super) published: u64,
    /// Closed segments, oldest first.
    pub(super) closed: Vec<ClosedSegment>,
    pub(super) retain_job: Option<RetainJob>,
    pub(super) retain_done: Option<RetainDone>,
    pub(super) failed: Option<Failure>,
    /// The writer is rolling back and counting a failure: callers wait for its full report.
    pub(super) failing: bool,
    pub(super) shutdown: bool,
    pub(super) paused: bool,
}

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// Wakes the writer.
    pub(super) work: Condvar,
    /// Wakes callers waiting for room in the queue.
    pub(super) space: Condvar,
    /// Wakes callers waiting for durability or a retention.
    pub(super) done: Condvar,
    /// Faults a test injects into the writer's I/O.
    pub(super) faults: super::faults::Faults,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation of State is a plain field update; a panic cannot leave it half-made. A
        // panicking writer thread marks the sink failed (see `PanicGuard`).
        self.state.lock()
    }

    pub(super) fn wait<'a>(
        &self,
        cv: &Condvar,
        mut g: MutexGuard<'a, State>,
    ) -> MutexGuard<'a, State> {
        cv.wait(&mut g);
        g
    }

    pub(super) fn fail(&self, failure: Failure) {
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
    pub(super) fn wait_durable(
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
/// docs](super)). Share it as `Arc<FileSink>`; dropping the last handle flushes and joins the
/// writer thread.
pub struct FileSink {
    pub(super) shared: Arc<Shared>,
    pub(super) writer: Option<JoinHandle<()>>,
    pub(super) dir: PathBuf,
    pub(super) durability: Durability,
    pub(super) backpressure: Backpressure,
    pub(super) capacity: usize,
    /// Queue length at which the writer stops gathering and writes at once.
    pub(super) high_water: usize,
    pub(super) checkpointing: bool,
    /// A witness is configured: every flush goes through the writer, which publishes.
    pub(super) witnessing: bool,
    pub(super) redaction: crate::audit::Redaction,
    /// One retention at a time.
    pub(super) retain_lock: Mutex<()>,
    /// The directory lock, released after the writer is joined (fields drop after `drop`).
    pub(super) _dir_lock: super::lock::DirLock,
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

pub(super) fn refused(reason: impl Into<String>) -> AuditError {
    AuditError::Refused {
        sink: SINK_NAME,
        reason: reason.into(),
    }
}

pub(super) fn sync_dir(dir: &Path) {
    // Makes a new segment's directory entry durable. Some platforms refuse to open or fsync a
    // directory; the file's own fsyncs still hold there.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// A [`VerifyError`] as the [`AuditError`] `open` and `retain` return (see [`corruption`](super::corruption)).
pub(super) fn corrupt(e: VerifyError) -> AuditError {
    match e {
        VerifyError::Io { source, path } => AuditError::Io(io::Error::new(
            source.kind(),
            VerifyError::Io { source, path },
        )),
        other => AuditError::Io(io::Error::new(io::ErrorKind::InvalidData, other)),
    }
}

impl FileSink {
    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Flushes, stops the writer thread and reports any writer failure (dropping the sink does
    /// the same and discards the result). With checkpoints, a final checkpoint covers every
    /// record.
    pub fn close(mut self) -> Result<(), AuditError> {
        self.shutdown()
    }

    pub(super) fn shutdown(&mut self) -> Result<(), AuditError> {
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

    /// Queues one serialised event for the writer (and, with [`Durability::EveryRecord`],
    /// waits until it is durable).
    fn enqueue(&self, bytes: &[u8]) -> Result<(), AuditError> {
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
            if st.failing {
                st = shared.wait(&shared.done, st);
                continue;
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
        st.queue.push(bytes);
        st.accepted += 1;
        let ticket = st.accepted;
        let wait = self.durability == Durability::EveryRecord;
        if wait {
            st.sync_requested = st.sync_requested.max(ticket);
        }
        // Wake the writer only when it must act now: it sleeps idle, a caller waits for this
        // record, or the queue reached the point where the writer stops gathering. Otherwise
        // it is gathering a batch and wakes by itself (no futex wake-up per record).
        if st.writer_idle || wait || st.queue.len() == self.high_water {
            st.writer_idle = false;
            shared.work.notify_one();
        }
        if wait {
            shared.wait_durable(st, ticket, None)
        } else {
            Ok(())
        }
    }

    /// Test hook: faults to inject into the writer's I/O (a write that fails half-way, a failed
    /// fsync, a rollback that cannot truncate). Not part of the stable API.
    #[doc(hidden)]
    pub fn faults(&self) -> &super::faults::Faults {
        &self.shared.faults
    }

    /// Test hook: events queued for the writer right now. Not part of the stable API.
    #[doc(hidden)]
    pub fn queued_events(&self) -> usize {
        self.shared.lock().queue.len()
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
    pub(super) sink: &'a FileSink,
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
    fn guarantees(&self) -> Option<crate::audit::SinkGuarantees> {
        use crate::audit::{SinkDurability, SinkGuarantees};
        let durability = match self.durability {
            Durability::EveryRecord => SinkDurability::EveryRecord,
            Durability::GroupCommit { interval_ms } => {
                SinkDurability::GroupCommit(std::time::Duration::from_millis(interval_ms))
            }
            Durability::OsBuffered => SinkDurability::OsBuffered,
        };
        Some(SinkGuarantees::new(
            durability,
            matches!(self.backpressure, Backpressure::Fail),
            self.redaction.is_keyed(),
        ))
    }

    fn record(&self, event: &AuditEvent<'_>) -> Result<(), AuditError> {
        let mut bytes = SCRATCH.with(Cell::take);
        bytes.clear();
        event.write_json(&mut bytes, &self.redaction);
        let result = self.enqueue(&bytes);
        SCRATCH.with(|s| s.set(bytes));
        result
    }

    /// Returns once every event recorded before the call is written and fsync'd; with
    /// checkpoints, also covered by a checkpoint.
    fn flush(&self) -> Result<(), AuditError> {
        let shared = &*self.shared;
        let mut st = shared.lock();
        while st.failing {
            st = shared.wait(&shared.done, st);
        }
        if let Some(f) = &st.failed {
            return Err(f.to_error());
        }
        let ticket = st.accepted;
        if st.durable >= ticket
            && (!self.checkpointing || st.uncovered == 0)
            && (!self.witnessing || st.published >= st.written_seq)
        {
            return Ok(());
        }
        st.sync_requested = st.sync_requested.max(ticket);
        let flush = if self.checkpointing || self.witnessing {
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
pub(super) struct PanicGuard(pub(super) Arc<Shared>);

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
