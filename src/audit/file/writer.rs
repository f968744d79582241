//! The writer thread: batches, group commit, rotation, checkpoints, retention deletions.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::Durability;
use super::checkpoint::{CheckpointConfig, MacFields};
use super::reader::segment_name;
use super::record::{
    CheckpointBody, Hex64, PolicyField, RetentionBody, append_record, chain_hash, hex_str,
    unix_nanos,
};
use super::sink::{ClosedSegment, Failure, PanicGuard, RetainDone, RetainJob, Shared, sync_dir};
use super::verify::{Chain, Span};

pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) dir: PathBuf,
    pub(super) file: File,
    pub(super) index: u64,
    pub(super) seg_len: u64,
    /// The live segment's first record's seq and `prev` (`None` while it is empty).
    pub(super) live_first: Option<(u64, Hex64)>,
    pub(super) max_segment_bytes: u64,
    pub(super) chain: Chain,
    pub(super) durability: Durability,
    pub(super) checkpoint: Option<CheckpointConfig>,
    /// Records written since the last checkpoint.
    pub(super) since_checkpoint: u64,
    pub(super) last_checkpoint: Instant,
    /// Explicit flushes already carried out.
    pub(super) flushes_seen: u64,
    pub(super) buf: Vec<u8>,
    /// Bytes written to the current segment since its last fsync.
    pub(super) dirty: bool,
    pub(super) last_sync: Instant,
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
        match (sync, checkpoint) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(super) fn run(mut self) {
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
                            shared.work.wait_for(&mut st, due - now);
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

    pub(super) fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        self.dirty = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    pub(super) fn write_out(&mut self) -> Result<(), Failure> {
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
    pub(super) fn append(&mut self, event: &[u8]) -> Result<(), Failure> {
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

    pub(super) fn write_batch(&mut self, batch: &mut VecDeque<Vec<u8>>) -> Result<(), Failure> {
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
