//! A fault-injection seam for tests: the writer's segment writes, fsyncs and rollbacks go
//! through [`Faults`], which can make them fail on demand. Not part of the stable API.

use std::fs::File;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

/// Faults to inject into a [`FileSink`](super::FileSink)'s writer (see
/// [`FileSink::faults`](super::FileSink::faults)). Each fault fires once.
#[doc(hidden)]
#[derive(Debug)]
pub struct Faults {
    /// Bytes the writer may still write before a write fails (`u64::MAX`: no fault).
    write_budget: AtomicU64,
    fail_sync: AtomicBool,
    fail_rollback: AtomicBool,
    /// Every early writeback the writer started (segment offset ranges), while recording.
    writebacks: Mutex<Option<Vec<(u64, u64)>>>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            write_budget: AtomicU64::new(u64::MAX),
            fail_sync: AtomicBool::new(false),
            fail_rollback: AtomicBool::new(false),
            writebacks: Mutex::new(None),
        }
    }
}

impl Faults {
    /// The write that would take the bytes written from now on past `bytes` writes only up to
    /// that point and then fails, as a full disk does.
    pub fn fail_writes_after(&self, bytes: u64) {
        self.write_budget.store(bytes, Ordering::SeqCst);
    }

    /// The next fsync of a segment fails, as an I/O error does.
    pub fn fail_next_sync(&self) {
        self.fail_sync.store(true, Ordering::SeqCst);
    }

    /// The rollback after the next failure cannot truncate the segment.
    pub fn fail_rollback(&self) {
        self.fail_rollback.store(true, Ordering::SeqCst);
    }

    /// From now on, remembers the byte ranges of each early writeback the writer starts (see
    /// [`FileSinkConfig::writeback_bytes`](super::FileSinkConfig::writeback_bytes)).
    pub fn record_writebacks(&self) {
        *self.writebacks.lock() = Some(Vec::new());
    }

    /// The ranges remembered since [`record_writebacks`](Self::record_writebacks), in order:
    /// `(from, to)` offsets within the live segment.
    pub fn writebacks(&self) -> Vec<(u64, u64)> {
        self.writebacks.lock().clone().unwrap_or_default()
    }

    pub(super) fn writeback(&self, file: &File, from: u64, to: u64) {
        if let Some(seen) = self.writebacks.lock().as_mut() {
            seen.push((from, to));
        }
        super::writeback::start(file, from, to);
    }

    pub(super) fn write(&self, file: &mut File, buf: &[u8]) -> io::Result<()> {
        if self.write_budget.load(Ordering::Relaxed) != u64::MAX {
            let budget = self.write_budget.load(Ordering::SeqCst);
            let len = buf.len() as u64;
            if len > budget {
                self.write_budget.store(u64::MAX, Ordering::SeqCst);
                file.write_all(&buf[..budget as usize])?;
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    format!("injected fault: no space left after {budget} of {len} bytes"),
                ));
            }
            self.write_budget.store(budget - len, Ordering::SeqCst);
        }
        file.write_all(buf)
    }

    pub(super) fn sync(&self, file: &File) -> io::Result<()> {
        if self.fail_sync.swap(false, Ordering::SeqCst) {
            return Err(io::Error::other("injected fault: fsync failed"));
        }
        file.sync_data()
    }

    pub(super) fn rollback_allowed(&self) -> io::Result<()> {
        if self.fail_rollback.swap(false, Ordering::SeqCst) {
            return Err(io::Error::other("injected fault: truncation failed"));
        }
        Ok(())
    }
}
