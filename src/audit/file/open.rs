//! Opening a log: the directory lock, verification, recovery of a torn write, an interrupted
//! retention, a failed writer's note, adoption of uncovered records, the witness.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use super::chain::Span;
use super::checkpoint::CheckpointConfig;
#[cfg(doc)]
use super::corruption;
use super::lock;
use super::pending::{self, PENDING_FILE, PendingFile};
use super::reader::{TailPolicy, segment_name, walk};
use super::record::hex_str;
use super::sink::{ClosedSegment, Failure, FileSink, Shared, State, corrupt, refused, sync_dir};
use super::verify::{Notice, VerifyError};
use super::writer::{Mark, Writer};
use super::{Durability, FileSinkConfig, Recovery};
use crate::audit::AuditError;

/// The queue length at which the writer stops gathering a batch and writes: half the queue, so
/// callers are not held up by a writer that waits for more.
fn high_water(capacity: usize) -> usize {
    (capacity / 2).max(1)
}

impl FileSink {
    /// Opens (creating if needed) the log in `dir` and starts the writer thread continuing its
    /// chain. In order:
    ///
    /// 1. takes the directory lock (see [one writer per directory](super#one-writer-per-directory)):
    ///    [`AuditError::DirectoryLocked`], naming the holder, if another sink has it;
    /// 2. reads the note a failed writer may have left: a rollback it could not do makes `open`
    ///    refuse (records after it were written for calls that were refused; remove them with
    ///    [`FileSink::repair`]);
    /// 3. verifies every segment as [`verify`](super::verify()) does, on up to 8 threads for
    ///    the time it takes (its time grows with the log: about 5.6 s for 10 M records on 2
    ///    cores; retention bounds it) (with a checkpoint key, every checkpoint's MAC; with a
    ///    [witness](super::Witness), that the chain reaches its head): any damage makes `open`
    ///    fail with the [`VerifyError`] naming file, line and seq ([`corruption`] extracts it),
    ///    and nothing is changed. The one exception is a torn write: an incomplete last line
    ///    that is the beginning of the next record, which is cut off and reported in
    ///    [`Recovery`]. A damaged last line that is not (a zeroed block, garbage, a complete but
    ///    bad record) is damage: `open` refuses, and [`FileSink::repair`] removes it with a
    ///    declaration;
    /// 4. finishes a retention deletion a crash interrupted, but only if its declaration is
    ///    covered by a checkpoint its writer wrote (so only with a checkpoint key): otherwise
    ///    it refuses with [`VerifyError::RetentionNotAuthenticated`] naming the declaration,
    ///    and deletes nothing;
    /// 5. declares in the chain the acknowledged events a failed writer lost (a
    ///    `records_lost` record, [`Notice::Lost`]);
    /// 6. with a key, adopts the records no checkpoint covers with a checkpoint that says how
    ///    many (reported as adopted, never as covered: [`Notice::Adopted`]);
    /// 7. publishes the head to the witness.
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
        if config.witness.as_ref().is_some_and(|w| w.every_ms == 0) {
            return Err(refused("witness.every_ms must be at least 1"));
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
        // One writer per directory: held until the sink is closed (or the process dies).
        let dir_lock = lock::lock(&dir)?;

        let note = pending::read(&dir)?;
        if let Some(n) = &note
            && !n.rolled_back
        {
            return Err(refused(format!(
                "a previous writer of {} failed and could not roll the log back: records after \
                 seq {} ({} from byte {}) were written for calls that were refused and must not \
                 be read as allowed; remove them with FileSink::repair (cut after seq {}, or \
                 `tollgate audit repair {} --cut-after {}`), which declares what it removed ({} \
                 keeps the writer's note)",
                dir.display(),
                n.after_seq,
                n.rollback_to.0,
                n.rollback_to.1,
                n.after_seq,
                dir.display(),
                n.after_seq,
                PENDING_FILE
            )));
        }
        let keys = config
            .checkpoint
            .as_ref()
            .map(CheckpointConfig::all_keys)
            .unwrap_or_default();
        let witnessed = match &config.witness {
            Some(w) => w.witness.latest().map_err(|e| {
                corrupt(VerifyError::WitnessInvalid {
                    seq: 0,
                    reason: format!(
                        "the witness could not be read, so the log cannot be checked against \
                         it: {e}"
                    ),
                })
            })?,
            None => None,
        };
        let witnessed_seq = witnessed.as_ref().map(|w| w.seq);
        let walk = walk(&dir, TailPolicy::Repair, keys, witnessed, None).map_err(corrupt)?;
        if let Some(p) = &walk.pending_drop
            && !(config.checkpoint.is_some() && p.covered)
        {
            return Err(corrupt(VerifyError::RetentionNotAuthenticated {
                at: p.at.clone(),
                seq: p.decl_seq,
                through: p.through,
            }));
        }

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

        // Finish an authenticated retention whose deletion was interrupted: the declared
        // prefix, oldest first, closed segments only.
        let mut retention_completed = 0;
        let mut records = walk.report.records;
        if let Some(p) = &walk.pending_drop {
            let done = closed
                .iter()
                .take_while(|c| c.span.as_ref().is_some_and(|s| s.last_seq <= p.through))
                .count();
            for c in &closed[..done] {
                match fs::remove_file(&c.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
                retention_completed += 1;
                if let Some(span) = &c.span {
                    // A span counts the seqs it covers; a repair's gap inside it makes that more
                    // than the records it held, so saturate rather than underflow.
                    records = records.saturating_sub(span.last_seq - span.first_seq + 1);
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
        // Every batch is fsync'd: nothing is left for a writeback to start, and that mode's
        // per-batch fsync is left exactly as it was measured.
        let every_record = config.durability == Durability::EveryRecord;
        if !every_record && config.preallocate_segments {
            super::writeback::preallocate(&file, seg_len, config.max_segment_bytes);
        }
        // Reserved now, so a writer that fails on a full disk can still leave its note.
        let mut pending_file = PendingFile::open(&dir)?;

        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                closed,
                ..State::default()
            }),
            work: Condvar::new(),
            space: Condvar::new(),
            done: Condvar::new(),
            faults: Default::default(),
        });
        let uncovered = walk.report.uncovered_records;
        let mut writer = Writer {
            shared: Arc::clone(&shared),
            dir: dir.clone(),
            file,
            index: live_index,
            seg_len,
            written_len: seg_len,
            kicked_len: seg_len,
            live_first,
            max_segment_bytes: config.max_segment_bytes,
            writeback_bytes: if every_record {
                0
            } else {
                config.writeback_bytes
            },
            preallocate: !every_record && config.preallocate_segments,
            mark: Mark {
                index: live_index,
                offset: seg_len,
                chain: walk.chain.clone(),
            },
            chain: walk.chain,
            durability: config.durability,
            write_delay: config.write_delay,
            high_water: high_water(config.queue_capacity),
            checkpoint: config.checkpoint.clone(),
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            flushes_seen: 0,
            buf: Vec::with_capacity(64 * 1024),
            buf_events: Vec::new(),
            dirty: false,
            last_sync: Instant::now(),
            pending: None,
            alerts: config.alerts.clone(),
            witness: config.witness.clone(),
            published: 0,
            last_publish: Instant::now(),
            witness_failing: false,
        };
        let fatal = |f: Failure| f.to_error();
        // A loss a failed writer noted, declared once (its id tells whether it already is).
        let mut declared_lost = 0;
        if let Some(n) = &note
            && n.lost > 0
            && !walk
                .report
                .notices
                .iter()
                .any(|x| matches!(x, Notice::Lost { id, .. } if *id == n.id))
        {
            writer.append_loss(n).map_err(fatal)?;
            declared_lost = n.lost;
        }
        let mut adopted_records = 0;
        if writer.checkpoint.is_some() && (uncovered > 0 || declared_lost > 0) {
            // Adopt what no checkpoint covers, saying how much, before anything new (the loss
            // declaration just written is this sink's own, so it is covered, not adopted).
            writer.append_checkpoint(uncovered).map_err(fatal)?;
            adopted_records = uncovered;
        }
        writer.write_out().map_err(fatal)?;
        if writer.dirty {
            writer
                .sync()
                .map_err(|e| Failure::from_io("fsync of the records open wrote", &e))
                .map_err(fatal)?;
        }
        if note.is_some() {
            pending_file.clear()?;
        }
        writer.pending = Some(pending_file);
        writer.set_mark();
        if writer.chain.next_seq > 1 {
            writer.publish();
        }
        let written_by_open = u64::from(declared_lost > 0) + u64::from(adopted_records > 0);
        let recovery = Recovery {
            records: records + written_by_open,
            last_seq: writer.chain.next_seq - 1,
            head_hash: hex_str(&writer.chain.prev),
            truncated_bytes,
            torn_line_at,
            retention_completed,
            adopted_records,
            declared_lost,
            witnessed_seq,
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
            high_water: high_water(config.queue_capacity),
            checkpointing: config.checkpoint.is_some(),
            witnessing: config.witness.is_some(),
            redaction: config.redaction.clone(),
            retain_lock: Mutex::new(()),
            _dir_lock: dir_lock,
        };
        Ok((sink, recovery))
    }
}
