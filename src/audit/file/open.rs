//! Opening a log: verification, recovery of a torn tail, interrupted retention, adoption.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use super::checkpoint::CheckpointConfig;
#[cfg(doc)]
use super::corruption;
use super::lock;
use super::reader::{TailPolicy, segment_name, walk};
use super::record::hex_str;
use super::sink::{ClosedSegment, Failure, FileSink, Shared, State, corrupt, refused, sync_dir};
use super::verify::{Span, VerifyError};
use super::writer::Writer;
use super::{FileSinkConfig, Recovery};
use crate::audit::AuditError;

impl FileSink {
    /// Opens (creating if needed) the log in `dir`: verifies every existing segment (and, with a
    /// checkpoint key, every checkpoint's MAC), cuts off a torn last line, finishes a retention
    /// a crash interrupted, vouches for uncovered records with a checkpoint if keyed, and starts
    /// the writer thread continuing the chain.
    ///
    /// Fails with [`AuditError::DirectoryLocked`], naming the holder, if another sink (in this
    /// process or another) has the directory open: it takes an exclusive lock on `audit.lock`
    /// in the directory and keeps it until the sink is closed.
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
        // One writer per directory: held until the sink is closed (or the process dies).
        let dir_lock = lock::lock(&dir)?;
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
            _dir_lock: dir_lock,
        };
        Ok((sink, recovery))
    }
}
