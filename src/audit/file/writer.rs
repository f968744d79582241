//! The writer thread: batches, group commit, rotation, checkpoints, retention deletions.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::Durability;
use super::chain::{Chain, Span};
use super::checkpoint::{CheckpointConfig, MacFields};
use super::pending::{Pending, PendingFile};
use super::reader::segment_name;
use super::record::{
    CheckpointBody, Hex64, LossBody, PolicyField, RetentionBody, append_record, chain_hash,
    event_seq_and_time, hex_str, unix_nanos,
};
use super::sink::{
    Batch, ClosedSegment, Failure, PanicGuard, RetainDone, RetainJob, Shared, sync_dir,
};
use super::witness::{WitnessConfig, WitnessedHead};
use crate::breaker::{Alert, AlertKind, AlertSink};

/// The writer hands its buffer to the OS once it holds this much, mid-batch too (large
/// batches neither grow the buffer without bound nor fault in fresh pages for each write).
const WRITE_CHUNK_BYTES: usize = 256 * 1024;

pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) dir: PathBuf,
    pub(super) file: File,
    pub(super) index: u64,
    /// Bytes of the live segment, counting what is buffered (decides rotation).
    pub(super) seg_len: u64,
    /// Bytes written to the live segment's file.
    pub(super) written_len: u64,
    /// Offset up to which the live segment's writeback has been started.
    pub(super) kicked_len: u64,
    /// The live segment's first record's seq and `prev` (`None` while it is empty).
    pub(super) live_first: Option<(u64, Hex64)>,
    pub(super) max_segment_bytes: u64,
    /// Written bytes after which the live segment's writeback is started (zero: never; see
    /// [`FileSinkConfig::writeback_bytes`](super::FileSinkConfig::writeback_bytes)).
    pub(super) writeback_bytes: u64,
    /// Whether each new segment reserves `max_segment_bytes` of disk (see
    /// [`FileSinkConfig::preallocate_segments`](super::FileSinkConfig::preallocate_segments)).
    pub(super) preallocate: bool,
    pub(super) chain: Chain,
    pub(super) durability: Durability,
    /// How long the writer gathers a batch before writing it when nobody waits (see
    /// [`FileSinkConfig::write_delay`](super::FileSinkConfig::write_delay)).
    pub(super) write_delay: Duration,
    /// Queue length at which it stops gathering.
    pub(super) high_water: usize,
    pub(super) checkpoint: Option<CheckpointConfig>,
    /// Records written since the last checkpoint.
    pub(super) since_checkpoint: u64,
    pub(super) last_checkpoint: Instant,
    /// Explicit flushes already carried out.
    pub(super) flushes_seen: u64,
    pub(super) buf: Vec<u8>,
    /// Where each queued event's bytes lie in `buf` (for the loss report of a failure).
    pub(super) buf_events: Vec<(usize, usize)>,
    /// Bytes written to the current segment since its last fsync.
    pub(super) dirty: bool,
    pub(super) last_sync: Instant,
    /// Where a failure rolls the log back to (see [`Mark`]).
    pub(super) mark: Mark,
    /// The note a failure leaves for the next `open` (`None` if it could not be reserved).
    pub(super) pending: Option<PendingFile>,
    pub(super) alerts: Option<Arc<dyn AlertSink>>,
    pub(super) witness: Option<WitnessConfig>,
    /// The last seq published to the witness.
    pub(super) published: u64,
    pub(super) last_publish: Instant,
    /// The witness refused the last head (alert once, not on every retry).
    pub(super) witness_failing: bool,
}

/// The position a failure rolls the log back to.
///
/// With [`Durability::EveryRecord`] it is where the current batch began: nobody has been told
/// that a record after it exists, so cutting them all makes every caller of the batch see an
/// error (and its call denied) while the log holds none of their records; a denied call is
/// never recorded as allowed. With the asynchronous modes it is the end of the last complete
/// write: every record before it was acknowledged and is true, only a write that failed half-way
/// is cut (and its events, with those still queued, are declared lost).
#[derive(Debug, Clone)]
pub(super) struct Mark {
    pub(super) index: u64,
    pub(super) offset: u64,
    pub(super) chain: Chain,
}

/// The acknowledged events a failure lost, for the alert and the declaration.
#[derive(Debug, Default)]
struct Tally {
    count: u64,
    seqs: Option<(u64, u64)>,
    times: Option<(u64, u64)>,
}

impl Tally {
    fn add(&mut self, event: &[u8]) {
        self.count += 1;
        let (seq, time) = event_seq_and_time(event);
        let widen = |r: &mut Option<(u64, u64)>, v: Option<u64>| {
            if let Some(v) = v {
                *r = Some(r.map_or((v, v), |(a, b)| (a.min(v), b.max(v))));
            }
        };
        widen(&mut self.seqs, seq);
        widen(&mut self.times, time);
    }
}

impl Writer {
    pub(super) fn group_interval(&self) -> Option<Duration> {
        match self.durability {
            Durability::GroupCommit { interval_ms } => Some(Duration::from_millis(interval_ms)),
            _ => None,
        }
    }

    pub(super) fn checkpoint_interval(&self) -> Option<Duration> {
        self.checkpoint
            .as_ref()
            .and_then(|c| c.every_ms)
            .map(Duration::from_millis)
    }

    /// When the writer must wake up by itself: the group-commit fsync or a timed checkpoint.
    pub(super) fn deadline(&self) -> Option<Instant> {
        let sync = self
            .group_interval()
            .filter(|_| self.dirty)
            .map(|iv| self.last_sync + iv);
        let checkpoint = self
            .checkpoint_interval()
            .filter(|_| self.since_checkpoint > 0)
            .map(|iv| self.last_checkpoint + iv);
        let publish = self
            .witness
            .as_ref()
            .filter(|_| !self.dirty && self.head_seq() > self.published)
            .map(|w| self.last_publish + Duration::from_millis(w.every_ms));
        [sync, checkpoint, publish].into_iter().flatten().min()
    }

    fn head_seq(&self) -> u64 {
        self.chain.next_seq - 1
    }

    /// Moves the rollback point to the end of what is written (the buffer must be empty).
    pub(super) fn set_mark(&mut self) {
        self.mark = Mark {
            index: self.index,
            offset: self.written_len,
            chain: self.chain.clone(),
        };
    }

    pub(super) fn run(mut self) {
        let shared = Arc::clone(&self.shared);
        let _guard = PanicGuard(Arc::clone(&shared));
        let mut batch = Batch::default();
        loop {
            let (sync_target, durable, flush_target, job, shutdown) = {
                let mut st = shared.lock();
                // Until when the writer gathers the queued events into one write.
                let mut gather_until: Option<Instant> = None;
                loop {
                    let runnable = !st.paused;
                    if runnable
                        && (st.sync_requested > st.durable
                            || st.flushes_requested > self.flushes_seen
                            || st.retain_job.is_some()
                            || st.shutdown)
                    {
                        break;
                    }
                    let now = Instant::now();
                    if runnable && !st.queue.is_empty() {
                        // Nobody waits for these events: gather more for up to `write_delay`
                        // (one write and one wake-up per batch instead of per record).
                        if self.write_delay.is_zero() || st.queue.len() >= self.high_water {
                            break;
                        }
                        let until = *gather_until.get_or_insert(now + self.write_delay);
                        let due = self.deadline().map_or(until, |d| d.min(until));
                        if now >= due {
                            break;
                        }
                        shared.work.wait_for(&mut st, due - now);
                        continue;
                    }
                    let due = self.deadline().filter(|_| runnable);
                    if due.is_some_and(|due| now >= due) {
                        break;
                    }
                    // Idle: the next event wakes the writer (see `FileSink::enqueue`).
                    st.writer_idle = true;
                    match due {
                        Some(due) => {
                            shared.work.wait_for(&mut st, due - now);
                        }
                        None => st = shared.wait(&shared.work, st),
                    }
                    st.writer_idle = false;
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
            let flushing = flush_target > self.flushes_seen;
            let mut checkpointed = false;
            if self.durability == Durability::EveryRecord {
                // Everything before this batch is durable and acknowledged.
                self.set_mark();
            }
            let step = || {
                // A retention first, on its own: once its declaration is durable its segments
                // go, and nothing after may roll it back.
                if let Some(job) = job {
                    retained = Some(self.apply_retention(job)?);
                    if self.durability == Durability::EveryRecord {
                        self.set_mark();
                    }
                }
                self.write_batch(&mut batch)?;
                let checkpoint_due = self
                    .checkpoint_interval()
                    .is_some_and(|iv| self.last_checkpoint.elapsed() >= iv);
                if self.since_checkpoint > 0 && (flushing || shutdown || checkpoint_due) {
                    self.append_checkpoint(0)?;
                    self.write_out()?;
                    checkpointed = true;
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
                Ok::<(), Failure>(())
            };
            if let Err(failure) = step() {
                self.fail(failure, &mut batch);
                return;
            }
            if self.witness.is_some() && !self.dirty && self.head_seq() > self.published {
                let every = self
                    .witness
                    .as_ref()
                    .map_or(Duration::ZERO, |w| Duration::from_millis(w.every_ms));
                if flushing || shutdown || checkpointed || self.last_publish.elapsed() >= every {
                    self.publish();
                }
            }
            self.flushes_seen = flush_target;
            let mut st = shared.lock();
            st.written += n;
            if !self.dirty {
                st.durable = st.written;
            }
            st.flushes_done = flush_target;
            st.uncovered = self.since_checkpoint;
            st.written_seq = self.head_seq();
            st.published = self.published;
            if retained.is_some() {
                st.retain_done = retained;
            }
            drop(st);
            // Emptied, its buffers go back to the callers at the next swap.
            batch.clear();
            shared.done.notify_all();
            if shutdown {
                return;
            }
        }
    }

    pub(super) fn sync(&mut self) -> io::Result<()> {
        self.shared.faults.sync(&self.file)?;
        self.dirty = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    pub(super) fn write_out(&mut self) -> Result<(), Failure> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let written = self.shared.faults.write(&mut self.file, &self.buf);
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
        self.written_len += self.buf.len() as u64;
        if self.writeback_bytes > 0
            && self.written_len.saturating_sub(self.kicked_len) >= self.writeback_bytes
        {
            self.shared
                .faults
                .writeback(&self.file, self.kicked_len, self.written_len);
            self.kicked_len = self.written_len;
        }
        self.buf.clear();
        self.buf_events.clear();
        if self.buf.capacity() > 1024 * 1024 {
            self.buf.shrink_to(64 * 1024);
        }
        if self.durability != Durability::EveryRecord {
            self.set_mark();
        }
        Ok(())
    }

    pub(super) fn rotate(&mut self) -> Result<(), Failure> {
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
        if self.preallocate {
            super::writeback::preallocate(&file, 0, self.max_segment_bytes);
        }
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
        self.written_len = 0;
        self.kicked_len = 0;
        if self.durability != Durability::EveryRecord {
            self.set_mark();
        }
        Ok(())
    }

    /// Chains one record into the buffer, rotating first if the segment is full.
    pub(super) fn append(&mut self, event: &[u8]) -> Result<(), Failure> {
        if self.seg_len > 0 && self.seg_len >= self.max_segment_bytes {
            self.rotate()?;
        }
        let seq = self.chain.next_seq;
        if seq == u64::MAX {
            // Verification refuses this seq (no record could follow it): fail, do not write.
            return Err(Failure {
                kind: std::io::ErrorKind::Other,
                message: "the log has used every seq number".into(),
            });
        }
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
    pub(super) fn append_checkpoint(&mut self, adopted: u64) -> Result<(), Failure> {
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

    /// Chains the batch's events into the buffer and writes it (in chunks of
    /// [`WRITE_CHUNK_BYTES`]). An event leaves `batch` only once it is in the buffer, so on
    /// failure `batch` holds exactly those never buffered.
    pub(super) fn write_batch(&mut self, batch: &mut Batch) -> Result<(), Failure> {
        let every = self.checkpoint.as_ref().and_then(|c| c.every_records);
        while let Some(event) = batch.front() {
            self.append(event)?;
            // `append` ends the record with `}` and a newline after the event's bytes.
            let end = self.buf.len() - 2;
            self.buf_events.push((end - event.len(), end));
            batch.pop_front();
            if every.is_some_and(|n| self.since_checkpoint >= n) {
                self.append_checkpoint(0)?;
            }
            if self.buf.len() >= WRITE_CHUNK_BYTES {
                self.write_out()?;
            }
        }
        self.write_out()
    }

    /// Appends a declaration that `note.lost` acknowledged events never reached the log.
    pub(super) fn append_loss(&mut self, note: &Pending) -> Result<(), Failure> {
        let body = LossBody {
            event: "records_lost",
            time_unix_nano: unix_nanos(SystemTime::now()),
            id: note.id.as_str().into(),
            count: note.lost,
            after_seq: note.after_seq,
            event_seq_first: note.event_seq_first,
            event_seq_last: note.event_seq_last,
            first_time_unix_nano: note.first_time_unix_nano,
            last_time_unix_nano: note.last_time_unix_nano,
            failed_at_unix_nano: note.failed_at_unix_nano,
            error: note.error.as_str().into(),
        };
        let bytes = serde_json::to_vec(&body).map_err(|e| Failure {
            kind: io::ErrorKind::Other,
            message: format!("serialising a loss declaration: {e}"),
        })?;
        self.append(&bytes)
    }

    /// Publishes the durable head to the witness (signed with the checkpoint key, if any). A
    /// witness that refuses is reported (log and alert), never fatal: the log itself is intact.
    pub(super) fn publish(&mut self) {
        let Some(w) = &self.witness else {
            return;
        };
        let seq = self.head_seq();
        let mut head = WitnessedHead::new(
            seq,
            hex_str(&self.chain.prev),
            unix_nanos(SystemTime::now()),
        );
        if let Some(cp) = &self.checkpoint {
            head = head.signed(&cp.key);
        }
        self.last_publish = Instant::now();
        match w.witness.publish(&head) {
            Ok(()) => {
                self.published = seq;
                self.witness_failing = false;
            }
            Err(e) => {
                tracing::warn!(
                    target: "tollgate::audit",
                    dir = %self.dir.display(),
                    seq,
                    error = %e,
                    "the audit log's witness refused its head"
                );
                if !self.witness_failing {
                    self.witness_failing = true;
                    self.alert(
                        AlertKind::AuditWitnessFailed,
                        format!(
                            "the witness of audit log {} refused head seq {seq}: {e} (retrying; \
                             records after the last witnessed head are not protected against \
                             truncation meanwhile)",
                            self.dir.display()
                        ),
                    );
                }
            }
        }
    }

    fn alert(&self, kind: AlertKind, detail: String) {
        if let Some(a) = &self.alerts {
            a.alert(&Alert {
                kind,
                agent: None,
                run: None,
                tool: None,
                detail,
            });
        }
    }

    /// The writer failed: refuse everything from now on, roll the log back to the mark, count
    /// what was acknowledged and is lost, leave a note for the next `open`, alert, and report
    /// the whole story in the sticky error.
    fn fail(&mut self, failure: Failure, batch: &mut Batch) {
        let shared = Arc::clone(&self.shared);
        // From here on nothing more is accepted; callers wait for the full report below.
        let queued = {
            let mut st = shared.lock();
            st.failing = true;
            std::mem::take(&mut st.queue)
        };
        let rolled_back = self.roll_back();
        let mut lost = Tally::default();
        if self.durability != Durability::EveryRecord {
            // Acknowledged when queued: every event not written for good is lost.
            for &(a, b) in &self.buf_events {
                lost.add(&self.buf[a..b]);
            }
            for e in batch.iter().chain(queued.iter()) {
                lost.add(e);
            }
        }
        let after_seq = self.mark.chain.next_seq - 1;
        let mut story = match &rolled_back {
            Ok(()) => format!(
                "the log was rolled back to seq {after_seq} ({} byte {})",
                segment_name(self.mark.index),
                self.mark.offset
            ),
            Err(e) => format!(
                "rolling the log back to seq {after_seq} ({} byte {}) failed ({e}): records \
                 after it may be on disk for calls that were refused; the next open refuses \
                 the log until FileSink::repair removes them",
                segment_name(self.mark.index),
                self.mark.offset
            ),
        };
        if lost.count > 0 {
            story.push_str(&format!(
                "; {} acknowledged event(s) were lost{}{}",
                lost.count,
                lost.seqs
                    .map(|(a, b)| format!(" (guard event seqs {a}..={b})"))
                    .unwrap_or_default(),
                if self.pending.is_some() {
                    ", declared in the log when it is reopened"
                } else {
                    ""
                }
            ));
        } else if self.durability == Durability::EveryRecord {
            story.push_str("; no acknowledged event was lost (every waiting caller was refused)");
        }
        if lost.count > 0 || rolled_back.is_err() {
            let mut id = [0u8; 16];
            let _ = getrandom::fill(&mut id);
            let note = Pending {
                id: crate::hex::encode(&id),
                after_seq,
                after_hash: hex_str(&self.mark.chain.prev),
                rolled_back: rolled_back.is_ok(),
                rollback_to: (segment_name(self.mark.index), self.mark.offset),
                lost: lost.count,
                event_seq_first: lost.seqs.map(|s| s.0),
                event_seq_last: lost.seqs.map(|s| s.1),
                first_time_unix_nano: lost.times.map(|t| t.0),
                last_time_unix_nano: lost.times.map(|t| t.1),
                failed_at_unix_nano: unix_nanos(SystemTime::now()),
                error: failure.message.clone(),
            };
            let noted = match &mut self.pending {
                Some(p) => p.write(&note).map_err(|e| e.to_string()),
                None => Err("its note file could not be reserved at open".into()),
            };
            if let Err(e) = noted {
                story.push_str(&format!(
                    "; the note for the next open could not be written ({e}): only this error \
                     and the alert tell"
                ));
            }
        }
        tracing::error!(
            target: "tollgate::audit",
            dir = %self.dir.display(),
            error = %failure.message,
            "{story}"
        );
        self.alert(
            AlertKind::AuditWriterFailed,
            format!(
                "the audit writer of {} failed ({}); every later call is denied until the sink \
                 is reopened; {story}",
                self.dir.display(),
                failure.message
            ),
        );
        let mut st = shared.lock();
        st.failed = Some(Failure {
            kind: failure.kind,
            message: format!("{}; {story}", failure.message),
        });
        st.failing = false;
        drop(st);
        shared.space.notify_all();
        shared.done.notify_all();
    }

    /// Cuts the log back to the mark: segments begun after it are removed, its segment is
    /// truncated to its offset.
    fn roll_back(&mut self) -> io::Result<()> {
        self.shared.faults.rollback_allowed()?;
        for i in self.mark.index + 1..=self.index {
            match fs::remove_file(self.dir.join(segment_name(i))) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let f = OpenOptions::new()
            .write(true)
            .open(self.dir.join(segment_name(self.mark.index)))?;
        if f.metadata()?.len() > self.mark.offset {
            f.set_len(self.mark.offset)?;
        }
        f.sync_all()?;
        sync_dir(&self.dir);
        Ok(())
    }

    /// Writes and fsyncs the declaration (and a checkpoint), then deletes the segments, oldest
    /// first. A write or fsync failure is the writer's (sticky); a deletion failure is only
    /// reported, since the log is consistent either way.
    pub(super) fn apply_retention(&mut self, job: RetainJob) -> Result<RetainDone, Failure> {
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
