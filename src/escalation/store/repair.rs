//! [`FileApprovalStore::repair`]: removing damage explicitly, and declaring it in the chain.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::Path;
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use super::StoreRecord;
use super::file::{
    FileApprovalStore, StoreLock, check_head, create_head, read_head, scan, sibling, sync_parent,
};
use super::frame;
use super::key::{Keys, StoreKey};
use crate::clock::Clock;
use crate::escalation::error::StoreError;

/// What a repair removed, as declared in its [`StoreRecord::Repaired`] record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Removal {
    /// Why the store could not be opened (the error, as text).
    pub damage: String,
    /// 1-based line number of the first line removed; `None` when no line was removed (records
    /// were missing from the end, or only the head was damaged).
    pub first_line: Option<usize>,
    /// Lines removed (a final line without newline counts as one).
    pub lines: usize,
    /// Bytes removed.
    pub bytes: u64,
    /// SHA-256 of the removed bytes, 64 hex digits.
    pub sha256: String,
    /// The seq of the last record kept.
    pub kept_seq: u64,
    /// The last seq the head vouched for, when that is beyond the records kept (records that
    /// were removed from the end, or that this repair removed).
    pub head_seq: Option<u64>,
    /// The file (in the store's directory) the removed bytes were saved to, if any.
    pub saved_as: Option<String>,
}

/// What [`FileApprovalStore::repair`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepairReport {
    /// What was removed and declared; `None` when the store opened cleanly and nothing was
    /// changed.
    pub removal: Option<Removal>,
    /// The seq of the [`StoreRecord::Repaired`] record appended, if any.
    pub seq: Option<u64>,
}

impl FileApprovalStore {
    /// Repairs a store that [`open`](Self::open) refuses, explicitly and on the record: takes
    /// the store's lock, keeps the longest prefix of records that verify, saves every byte after
    /// it to `<store>.removed-<seq>` beside the store, truncates the store to the prefix, and
    /// appends a [`StoreRecord::Repaired`] record (chained and MAC'd like every record) that
    /// declares what was removed (line, count, bytes, SHA-256, the head's claim, `reason`).
    /// Records after the first damaged line are removed with it: each is chained to the one
    /// before.
    ///
    /// When the queue replays the declaration it voids every request still open at that point
    /// ([`RequestState::Voided`](crate::escalation::RequestState::Voided)): a removed record may
    /// have been the veto or consumption that closed it, so none of them may be approved or
    /// consumed any more; they must be submitted again. Closed requests stay closed.
    ///
    /// Needs the store key (an outsider cannot declare a repair either). Returns a report with
    /// no removal, and changes nothing, when the store opens cleanly; a torn last line alone is
    /// left to [`open`](Self::open).
    pub fn repair(
        path: impl AsRef<Path>,
        key: &StoreKey,
        clock: &dyn Clock,
        reason: &str,
    ) -> Result<RepairReport, StoreError> {
        Self::repair_with_keys(path, key, &[], clock, reason)
    }

    /// [`repair`](Self::repair), also accepting records under `retired` keys.
    pub fn repair_with_keys(
        path: impl AsRef<Path>,
        key: &StoreKey,
        retired: &[StoreKey],
        clock: &dyn Clock,
        reason: &str,
    ) -> Result<RepairReport, StoreError> {
        let path = path.as_ref();
        let keys = Keys {
            current: key.clone(),
            retired: retired.to_vec(),
        };
        let _lock = StoreLock::acquire(path)?;
        let io = |p: &Path| {
            let p = p.to_owned();
            move |source| StoreError::Io { path: p, source }
        };
        let mut bytes = Vec::new();
        match File::open(path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes).map_err(io(path))?;
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io(path)(e)),
        }
        let head_path = sibling(path, "head");
        let head = read_head(&head_path, &keys)?;
        let scan = scan(&bytes, &keys, head.vouched().map(|(s, _)| s));
        let damage = match &scan.damage {
            Some(d) => StoreError::Corrupt {
                path: path.to_owned(),
                line: d.line,
                record: d.record.clone(),
                reason: d.reason.clone(),
            },
            None => match check_head(path, &head_path, &head, &scan) {
                Ok(()) => {
                    return Ok(RepairReport {
                        removal: None,
                        seq: None,
                    });
                }
                Err(e) => e,
            },
        };
        let valid_len = usize::try_from(scan.valid_len).unwrap_or(bytes.len());
        let removed = &bytes[valid_len.min(bytes.len())..];
        let seq = scan.last_seq + 1;
        let saved_as = if removed.is_empty() {
            None
        } else {
            let saved = sibling(path, &format!("removed-{seq}"));
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&saved)
                .map_err(io(&saved))?;
            f.write_all(removed)
                .and_then(|()| f.sync_all())
                .map_err(io(&saved))?;
            sync_parent(&saved).map_err(io(&saved))?;
            saved.file_name().map(|n| n.to_string_lossy().into_owned())
        };
        let head_seq = match head.vouched() {
            Some((seq, _)) if seq > scan.last_seq => Some(seq),
            _ => None,
        };
        let lines = removed
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
        let removal = Removal {
            damage: damage.to_string(),
            first_line: (!removed.is_empty()).then_some(scan.lines + 1),
            lines,
            bytes: removed.len() as u64,
            sha256: frame::sha256_hex(removed),
            kept_seq: scan.last_seq,
            head_seq,
            saved_as,
        };
        let at_ms = clock
            .wall()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let rec = StoreRecord::Repaired {
            at_ms,
            reason: reason.to_owned(),
            removed: removal.clone(),
        };
        let record = serde_json::to_vec(&rec).map_err(|e| StoreError::Serialize(e.to_string()))?;
        let hash = frame::chain_hash(&scan.last_hash, seq, &record);
        let line = frame::encode_line(seq, &scan.last_hash, &hash, key, &record);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io(path))?;
        file.set_len(scan.valid_len)
            .and_then(|()| file.sync_data())
            .map_err(io(path))?;
        drop(file);
        let mut file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io(path))?;
        file.write_all(&line)
            .and_then(|()| file.sync_data())
            .map_err(io(path))?;
        sync_parent(path).map_err(io(path))?;
        create_head(&head_path, seq, &hash, key)?;
        tracing::warn!(
            path = %path.display(),
            seq,
            removed_bytes = removal.bytes,
            damage = %removal.damage,
            "approval store repaired: damage removed and declared; open requests are voided"
        );
        Ok(RepairReport {
            removal: Some(removal),
            seq: Some(seq),
        })
    }
}
