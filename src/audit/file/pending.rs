//! The note a failed writer leaves for the next `open`: `audit.pending` in the directory.
//!
//! `open` reserves the file (4 KiB of zeros, fsync'd), so a writer that fails because the disk
//! is full can still overwrite it in place: no new block is needed on filesystems that rewrite
//! blocks in place (ext4, XFS; not on copy-on-write ones such as btrfs or ZFS, where the note
//! may not be written — the failure is still reported to every caller and raised as an alert).
//!
//! The note says where the log was rolled back to, whether the rollback succeeded, and how many
//! acknowledged events were lost. The next `open` refuses a log whose rollback did not happen
//! (naming the records to remove with [`FileSink::repair`](super::FileSink::repair)) and writes
//! a `records_lost` declaration into the chain for a loss, then clears the note. The note is
//! not authenticated: whoever can write the directory can make `open` refuse or declare a loss
//! that did not happen, never remove or adopt a record.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The note's file name in the audit directory.
pub(super) const PENDING_FILE: &str = "audit.pending";
/// Bytes reserved for the note.
const RESERVED: usize = 4096;

/// What a failed writer leaves for the next `open`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Pending {
    /// Unique per failure, so a declaration is written once.
    pub(super) id: String,
    /// The last record kept.
    pub(super) after_seq: u64,
    /// Its hash.
    pub(super) after_hash: String,
    /// Whether the log was rolled back to `after_seq`; if not, the records after it were
    /// written for calls that were refused.
    pub(super) rolled_back: bool,
    /// Where the rollback had to cut: segment file name and byte offset.
    pub(super) rollback_to: (String, u64),
    /// Acknowledged events that never reached the log.
    pub(super) lost: u64,
    pub(super) event_seq_first: Option<u64>,
    pub(super) event_seq_last: Option<u64>,
    pub(super) first_time_unix_nano: Option<u64>,
    pub(super) last_time_unix_nano: Option<u64>,
    pub(super) failed_at_unix_nano: u64,
    pub(super) error: String,
}

/// The reserved note file, held open by the writer.
#[derive(Debug)]
pub(super) struct PendingFile {
    file: File,
}

impl PendingFile {
    /// Opens the note file of `dir`, reserving its space.
    pub(super) fn open(dir: &Path) -> io::Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(PENDING_FILE))?;
        if file.metadata()?.len() < RESERVED as u64 {
            let mut existing = Vec::new();
            file.read_to_end(&mut existing)?;
            existing.resize(RESERVED, 0);
            file.seek(SeekFrom::Start(0))?;
            file.write_all(&existing)?;
            file.sync_all()?;
        }
        Ok(Self { file })
    }

    /// Writes `note` over the reserved space and fsyncs it.
    pub(super) fn write(&mut self, note: &Pending) -> io::Result<()> {
        let mut note = note.clone();
        let mut text = serde_json::to_vec(&note).map_err(io::Error::other)?;
        if text.len() >= RESERVED {
            // Only the error text can be long.
            let over = text.len() + 1 - RESERVED;
            let keep = note.error.len().saturating_sub(over + 3);
            let mut cut = keep;
            while !note.error.is_char_boundary(cut) {
                cut -= 1;
            }
            note.error.truncate(cut);
            note.error.push_str("...");
            text = serde_json::to_vec(&note).map_err(io::Error::other)?;
        }
        text.push(b'\n');
        text.resize(RESERVED, 0);
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(&text)?;
        self.file.sync_data()
    }

    /// Clears the note (zeros) and fsyncs.
    pub(super) fn clear(&mut self) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(&[0; RESERVED])?;
        self.file.sync_data()
    }
}

/// The note in `dir`, if a failed writer left one.
pub(super) fn read(dir: &Path) -> io::Result<Option<Pending>> {
    let path = dir.join(PENDING_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let end = bytes
        .iter()
        .position(|&b| b == b'\n' || b == 0)
        .unwrap_or(bytes.len());
    if end == 0 {
        return Ok(None);
    }
    serde_json::from_slice(&bytes[..end])
        .map(Some)
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is not a note a failed writer left ({e}); inspect it, and delete it to \
                 open the log",
                    path.display()
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_round_trips_through_the_reserved_file_and_clears() {
        let tmp = tempfile::Builder::new()
            .prefix("tollgate-pending-")
            .tempdir()
            .unwrap();
        let dir = tmp.path().to_path_buf();
        let mut f = PendingFile::open(&dir).unwrap();
        assert_eq!(read(&dir).unwrap(), None);
        let note = Pending {
            id: "ab".into(),
            after_seq: 7,
            after_hash: "00".repeat(32),
            rolled_back: true,
            rollback_to: ("audit-000001.jsonl".into(), 10),
            lost: 3,
            event_seq_first: Some(1),
            event_seq_last: Some(3),
            first_time_unix_nano: None,
            last_time_unix_nano: None,
            failed_at_unix_nano: 9,
            error: "é".repeat(5000),
        };
        f.write(&note).unwrap();
        assert_eq!(
            std::fs::metadata(dir.join(PENDING_FILE)).unwrap().len(),
            4096
        );
        let back = read(&dir).unwrap().unwrap();
        assert_eq!(back.after_seq, 7);
        assert!(back.error.ends_with("..."));
        f.clear().unwrap();
        assert_eq!(read(&dir).unwrap(), None);
        std::fs::write(dir.join(PENDING_FILE), b"garbage").unwrap();
        assert!(read(&dir).is_err());
    }
}
