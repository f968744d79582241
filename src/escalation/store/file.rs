//! [`FileApprovalStore`]: the approval records in one hash-chained, keyed JSON Lines file, with a
//! head file against truncation and an OS lock against a second writer.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use super::frame::{self, GENESIS, RECORD_MAC, SLOT};
use super::key::{Keys, StoreKey};
use super::{ApprovalStore, StoreRecord, check_record};
use crate::escalation::binding::ArgsKey;
use crate::escalation::error::StoreError;

/// What [`FileApprovalStore::open`] removed from the end of the file: a final line with no
/// newline, as a crash during an append leaves it. Such a record was never acknowledged (the
/// head, written after the record's fsync, does not vouch for it), so no caller acted on it.
/// Anything else that does not verify is damage, never cut ([`StoreError::Corrupt`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TornTail {
    /// 1-based line number of the removed line.
    pub line: usize,
    /// Bytes removed.
    pub bytes: u64,
}

/// Approval records in an append-only JSON Lines file, one record per line, each chained to the
/// one before it and authenticated with the process's [`StoreKey`]; `fsync` after every append.
///
/// # Layout
///
/// ```text
/// approvals.jsonl        {"seq":N,"prev":"<hash N-1>","hash":"<hash N>","key":"<key id>","mac":"<mac>","record":{...}}
/// approvals.jsonl.head   two 256-byte slots: the last seq and hash, MAC'd
/// approvals.jsonl.lock   the OS lock; holds the owner's process id
/// ```
///
/// `hash = SHA-256("tollgate-approval-chain-v1\n" || prev || "\n" || seq || "\n" || record)`
/// over the exact record bytes, `mac = HMAC-SHA-256(key, "tollgate-approval-record-v1\n" ||
/// key_id || "\n" || seq || "\n" || hash)`. After each record is synced, the head slot
/// `seq % 2` is rewritten with the new seq and hash and synced; the other slot keeps the
/// previous head, so a torn head write always leaves one valid slot. A slot's MAC has its own
/// domain per position (`"tollgate-approval-head-v2\nslot <0|1>\n"`): a slot copied over the
/// other one does not authenticate there.
///
/// # What opening checks
///
/// [`open`](Self::open) takes an exclusive OS lock ([`StoreError::Locked`], naming the holder's
/// process id where the OS lets the lock file be read), then verifies every line and the head:
///
/// - a line appended without the key (an approval "by" an outsider), a changed byte anywhere, a
///   removed, duplicated or reordered line: [`StoreError::Corrupt`] naming the line and record;
/// - records removed from the end (a deleted final `consumed` line would re-arm a single-use
///   grant): the head vouches for a later seq, [`StoreError::Truncated`];
/// - a missing or unauthenticated head while records exist: [`StoreError::HeadDamaged`];
/// - one slot missing or unauthenticated while the file holds no record after the seq the other
///   slot vouches for: [`StoreError::HeadDamaged`]. A torn head write damages the slot of a
///   record that was synced *before* it, so only a file with that record proves a crash;
///   without it, the newest records and the slot that vouched for them were removed (zeroing
///   the newest slot would otherwise let the older one vouch for a file whose final `consumed`
///   line is gone). A damaged slot that a crash explains is rewritten when the store opens;
/// - only a final line *without a newline* is a torn write: it is cut and reported in
///   [`recovered`](Self::recovered). A complete final line that fails verification (a flipped
///   byte in the last `deny` or `consumed` record) is damage like any other.
///
/// Nothing is ever cut or rewritten except that torn tail; [`repair`](Self::repair) removes
/// damage explicitly and declares it in the chain. The queue then re-checks every decision of
/// a still-open request against the current groups (see
/// [`ApprovalQueue::open`](crate::escalation::ApprovalQueue::open)).
///
/// Requests bind their arguments with an [`ArgsKey`] derived from the store key (and one from
/// each retired key, accepted for requests recorded under it), so tickets stay usable across a
/// restart ([`ApprovalStore::args_keys`]).
///
/// What the key does **not** protect against: the holder of the key (the process, its
/// configuration and memory), and replacing all three files with an older copy of themselves
/// (a rollback to an earlier consistent state: anchor the head's seq elsewhere if that matters).
#[derive(Debug)]
pub struct FileApprovalStore {
    path: PathBuf,
    head_path: PathBuf,
    keys: Keys,
    /// Derived from `keys`, current first.
    args_keys: Vec<ArgsKey>,
    inner: Mutex<FileInner>,
    recovered: Option<TornTail>,
    _lock: StoreLock,
}

#[derive(Debug)]
struct FileInner {
    file: File,
    head: File,
    /// What each head slot holds on disk (seq and hash), to restore a slot whose rewrite failed.
    slots: [Slot; 2],
    /// Length of the file's verified content.
    len: u64,
    /// Seq and hash of the last record (0 and [`GENESIS`] when empty).
    seq: u64,
    last: [u8; 64],
    /// An append failed and could not be rolled back (or is in progress: a panic inside it
    /// leaves this set), so the file's tail is unknown.
    broken: bool,
}

impl FileApprovalStore {
    /// Opens (or creates) the store at `path`, whose records are authenticated with `key`.
    pub fn open(path: impl AsRef<Path>, key: &StoreKey) -> Result<Self, StoreError> {
        Self::open_with_keys(path, key, &[])
    }

    /// [`open`](Self::open), also accepting records written under `retired` keys (new records
    /// are signed with `key`).
    pub fn open_with_keys(
        path: impl AsRef<Path>,
        key: &StoreKey,
        retired: &[StoreKey],
    ) -> Result<Self, StoreError> {
        let path = path.as_ref().to_owned();
        let keys = Keys {
            current: key.clone(),
            retired: retired.to_vec(),
        };
        let lock = StoreLock::acquire(&path)?;
        let head_path = sibling(&path, "head");
        let io = |p: &Path| {
            let p = p.to_owned();
            move |source| StoreError::Io { path: p, source }
        };
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io(&path))?;
        if !existed {
            sync_parent(&path).map_err(io(&path))?;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io(&path))?;
        let head = read_head(&head_path, &keys)?;
        let scan = scan(&bytes, &keys, head.vouched().map(|(s, _)| s));
        if let Some(d) = scan.damage {
            return Err(StoreError::Corrupt {
                path,
                line: d.line,
                record: d.record,
                reason: d.reason,
            });
        }
        check_head(&path, &head_path, &head, &scan)?;
        if let Some(t) = &scan.torn {
            file.set_len(scan.valid_len).map_err(io(&path))?;
            file.sync_data().map_err(io(&path))?;
            tracing::warn!(
                path = %path.display(),
                line = t.line,
                bytes = t.bytes,
                "approval store: cut a torn last line (an append a crash interrupted)"
            );
        }
        let (head_file, slots) = match head {
            Head::Valid {
                slots: [Some(a), Some(b)],
            } if a.0.max(b.0) == scan.last_seq => {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&head_path)
                    .map_err(io(&head_path))?;
                (f, [a, b])
            }
            // A new store; a crash between a record's sync and its head update, or during the
            // head update (`check_head` accepted a damaged slot only then): vouch for the file
            // now, both slots at once (an atomic replacement), so no damaged slot remains.
            _ => {
                let f = create_head(&head_path, scan.last_seq, &scan.last_hash, key)?;
                let vouched = (scan.last_seq, scan.last_hash);
                (f, [vouched, vouched])
            }
        };
        Ok(Self {
            inner: Mutex::new(FileInner {
                file,
                head: head_file,
                slots,
                len: scan.valid_len,
                seq: scan.last_seq,
                last: scan.last_hash,
                broken: false,
            }),
            args_keys: std::iter::once(&keys.current)
                .chain(&keys.retired)
                .map(ArgsKey::from_store_key)
                .collect(),
            path,
            head_path,
            keys,
            recovered: scan.torn,
            _lock: lock,
        })
    }

    /// The torn tail removed when the store was opened, if any.
    pub fn recovered(&self) -> Option<&TornTail> {
        self.recovered.as_ref()
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The head file.
    pub fn head_path(&self) -> &Path {
        &self.head_path
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Serialises `rec` and checks that it reads back to the very same bytes.
    fn encode(rec: &StoreRecord) -> Result<Vec<u8>, StoreError> {
        check_record(rec)?;
        let bytes = serde_json::to_vec(rec).map_err(|e| StoreError::Serialize(e.to_string()))?;
        let unreadable = |reason: String| StoreError::Unrepresentable {
            id: rec.id().cloned(),
            reason,
        };
        let back: StoreRecord = serde_json::from_slice(&bytes)
            .map_err(|e| unreadable(format!("it would not read back: {e}")))?;
        if serde_json::to_vec(&back).ok().as_deref() != Some(&bytes[..]) {
            return Err(unreadable("it would not read back unchanged".into()));
        }
        Ok(bytes)
    }
}

impl ApprovalStore for FileApprovalStore {
    fn append(&self, rec: &StoreRecord) -> Result<(), StoreError> {
        let record = Self::encode(rec)?;
        let key = &self.keys.current;
        let mut inner = self.inner.lock();
        if inner.broken {
            return Err(StoreError::Broken {
                path: self.path.clone(),
            });
        }
        let seq = inner.seq + 1;
        let hash = frame::chain_hash(&inner.last, seq, &record);
        let line = frame::encode_line(seq, &inner.last, &hash, key, &record);
        inner.broken = true;
        let inner = &mut *inner;
        let pos = slot_of(seq);
        let head_io = |source| StoreError::Io {
            path: self.head_path.clone(),
            source,
        };
        if let Err(e) = inner
            .file
            .write_all(&line)
            .and_then(|()| inner.file.sync_data())
        {
            // Roll the record back so the next append does not follow garbage and a record
            // nobody was told about is not replayed later; if that fails too, refuse appends
            // until the file is reopened (which reports the tail).
            if truncate(&mut inner.file, inner.len).is_ok() {
                inner.broken = false;
            }
            return Err(self.io(e));
        }
        if let Err(e) = write_slot(&mut inner.head, pos, seq, &hash, key) {
            // The slot may be half written. Put back what it held, *then* remove the record: a
            // crash in between leaves a record the head does not vouch for yet, which `open`
            // accepts like any crash between a record and its head; the other order would leave
            // a damaged slot with no record after the valid one, which `open` refuses.
            let (old_seq, old_hash) = inner.slots[pos];
            if write_slot(&mut inner.head, pos, old_seq, &old_hash, key).is_ok()
                && truncate(&mut inner.file, inner.len).is_ok()
            {
                inner.broken = false;
            }
            return Err(head_io(e));
        }
        inner.slots[pos] = (seq, hash);
        inner.len += line.len() as u64;
        inner.seq = seq;
        inner.last = hash;
        inner.broken = false;
        Ok(())
    }

    fn load(&self) -> Result<Vec<StoreRecord>, StoreError> {
        // Hold the append lock so no record is half-written while reading.
        let inner = self.inner.lock();
        let mut bytes = Vec::new();
        File::open(&self.path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| self.io(e))?;
        let len = usize::try_from(inner.len).unwrap_or(usize::MAX);
        let (seq, last) = (inner.seq, inner.last);
        drop(inner);
        bytes.truncate(len);
        let scan = scan(&bytes, &self.keys, Some(seq));
        if let Some(d) = scan.damage {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                line: d.line,
                record: d.record,
                reason: d.reason,
            });
        }
        if scan.last_seq != seq || scan.last_hash != last || scan.torn.is_some() {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                line: scan.lines,
                record: format!("seq {}", scan.last_seq),
                reason: "the file changed since the store was opened".into(),
            });
        }
        Ok(scan.records)
    }

    /// One [`ArgsKey`] derived from each store key, the current one first: a ticket stays
    /// usable across a restart and a key rotation (while the old key is configured as retired).
    fn args_keys(&self) -> Result<Vec<ArgsKey>, StoreError> {
        Ok(self.args_keys.clone())
    }
}

// ------------------------------------------------------------------------------------------------
// Verification, shared with repair
// ------------------------------------------------------------------------------------------------

/// The first damaged complete line.
#[derive(Debug)]
pub(super) struct Damage {
    pub(super) line: usize,
    pub(super) record: String,
    pub(super) reason: String,
}

/// The verified prefix of a store file.
#[derive(Debug)]
pub(super) struct Scan {
    pub(super) records: Vec<StoreRecord>,
    /// Complete lines verified.
    pub(super) lines: usize,
    /// Bytes of the verified prefix.
    pub(super) valid_len: u64,
    pub(super) last_seq: u64,
    pub(super) last_hash: [u8; 64],
    /// The hash of the record with the seq asked for (`GENESIS` for 0), if verified.
    pub(super) hash_at: Option<[u8; 64]>,
    /// A final line without newline after the verified prefix (only when nothing is damaged).
    pub(super) torn: Option<TornTail>,
    /// The first complete line that does not verify; the prefix stops before it.
    pub(super) damage: Option<Damage>,
}

/// Verifies complete lines in order until the first damaged one.
pub(super) fn scan(bytes: &[u8], keys: &Keys, want: Option<u64>) -> Scan {
    let mut s = Scan {
        records: Vec::new(),
        lines: 0,
        valid_len: 0,
        last_seq: 0,
        last_hash: GENESIS,
        hash_at: (want == Some(0)).then_some(GENESIS),
        torn: None,
        damage: None,
    };
    let mut offset = 0usize;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            s.torn = Some(TornTail {
                line: s.lines + 1,
                bytes: rest.len() as u64,
            });
            break;
        };
        let line = &rest[..nl];
        match verify_line(line, s.last_seq + 1, &s.last_hash, keys) {
            Ok((seq, hash, rec)) => {
                s.records.push(rec);
                s.lines += 1;
                s.last_seq = seq;
                s.last_hash = hash;
                if want == Some(seq) {
                    s.hash_at = Some(hash);
                }
                offset += nl + 1;
                s.valid_len = offset as u64;
            }
            Err((record, reason)) => {
                s.damage = Some(Damage {
                    line: s.lines + 1,
                    record,
                    reason,
                });
                break;
            }
        }
    }
    s
}

/// Checks one line; on failure, what the record looks like and what is wrong.
fn verify_line(
    line: &[u8],
    seq: u64,
    prev: &[u8; 64],
    keys: &Keys,
) -> Result<(u64, [u8; 64], StoreRecord), (String, String)> {
    let f = frame::decode_line(line).map_err(|r| ("unreadable".to_owned(), r))?;
    let record = match serde_json::from_slice::<StoreRecord>(f.record) {
        Ok(r) => Ok(r),
        Err(e) => Err(e.to_string()),
    };
    let describe = match &record {
        Ok(r) => match r.id() {
            Some(id) => format!("seq {}: {} of request `{id}`", f.seq, r.kind()),
            None => format!("seq {}: {}", f.seq, r.kind()),
        },
        Err(_) => format!("seq {}", f.seq),
    };
    let fail = |reason: String| Err((describe.clone(), reason));
    if f.seq != seq {
        return fail(format!(
            "sequence number {} where {seq} was expected (a record was removed, duplicated or reordered)",
            f.seq
        ));
    }
    if f.prev != *prev {
        return fail(
            "it does not follow the record before it (a record was removed, inserted or changed)"
                .into(),
        );
    }
    if frame::chain_hash(prev, seq, f.record) != f.hash {
        return fail("its content does not match its hash (changed after it was written)".into());
    }
    let Some(key) = keys.find(f.key) else {
        return fail(format!(
            "it is signed with key `{}`, which is not configured",
            f.key
        ));
    };
    if !key.verify(RECORD_MAC, seq, &f.hash, f.mac) {
        return fail(format!(
            "its MAC does not verify under key `{}` (written without the store key)",
            f.key
        ));
    }
    match record {
        Ok(r) => Ok((seq, f.hash, r)),
        Err(e) => fail(format!("its record cannot be read: {e}")),
    }
}

/// What one head slot vouches for: a seq and its record's hash.
pub(super) type Slot = (u64, [u8; 64]);

/// The head slot position a record's seq is written to.
fn slot_of(seq: u64) -> usize {
    usize::from(seq % 2 == 1)
}

/// What the head file says.
#[derive(Debug)]
pub(super) enum Head {
    /// No head file (a new store, or one deleted).
    Missing,
    /// At least one slot authenticates: each slot as it verified (`None`: missing, damaged, or
    /// not authentic at its position). The head vouches for the highest.
    Valid { slots: [Option<Slot>; 2] },
    /// A head file with no authenticated slot.
    Invalid(String),
}

impl Head {
    /// The seq and hash of the highest slot that authenticates.
    pub(super) fn vouched(&self) -> Option<Slot> {
        match self {
            Head::Valid { slots } => slots.iter().flatten().max_by_key(|(seq, _)| *seq).copied(),
            _ => None,
        }
    }
}

pub(super) fn read_head(path: &Path, keys: &Keys) -> Result<Head, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Head::Missing),
        Err(source) => {
            return Err(StoreError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let slot = |pos: usize| {
        bytes
            .get(pos * SLOT..(pos + 1) * SLOT)
            .and_then(|b| frame::decode_slot(pos, b, |id| keys.find(id).cloned()))
    };
    let slots = [slot(0), slot(1)];
    Ok(if slots.iter().any(Option::is_some) {
        Head::Valid { slots }
    } else if bytes.is_empty() {
        Head::Invalid("is empty".into())
    } else {
        Head::Invalid("has no slot that authenticates under the configured keys".into())
    })
}

/// Refuses a head that does not vouch for the verified file.
///
/// One slot may fail to authenticate only after a torn head write. The head is written after
/// the record it vouches for is synced, so such a crash leaves that record in the file, past the
/// seq of the slot that still authenticates. A damaged slot with no such record is refused
/// ([`StoreError::HeadDamaged`]): it is what someone without the key produces by removing the
/// last records and destroying the slot that vouched for them, so that the older slot vouches
/// for the shorter file (a consumed grant would be usable again).
pub(super) fn check_head(
    store: &Path,
    path: &Path,
    head: &Head,
    scan: &Scan,
) -> Result<(), StoreError> {
    let damaged = |reason: String| StoreError::HeadDamaged {
        path: path.to_owned(),
        reason,
    };
    let slots = match head {
        Head::Missing if scan.last_seq == 0 => return Ok(()),
        Head::Missing => {
            return Err(damaged(format!(
                "is missing while the store holds {} records (records may have been removed from the end)",
                scan.last_seq
            )));
        }
        Head::Invalid(reason) => return Err(damaged(reason.clone())),
        Head::Valid { slots } => slots,
    };
    let Some((seq, hash)) = head.vouched() else {
        return Err(damaged("has no slot that authenticates".into()));
    };
    if seq > scan.last_seq {
        return Err(StoreError::Truncated {
            path: store.to_owned(),
            last_seq: scan.last_seq,
            head_seq: seq,
        });
    }
    if scan.hash_at != Some(hash) {
        return Err(damaged(format!(
            "vouches for record {seq} with another hash than the file's (the file was rewritten)"
        )));
    }
    match slots.iter().position(Option::is_none) {
        Some(pos) if scan.last_seq <= seq => Err(damaged(format!(
            "slot {pos} is missing or does not authenticate, and the store holds no record after \
             seq {seq} (the one the other slot vouches for): not a torn head write, so the newest \
             records and the slot that vouched for them may have been removed"
        ))),
        _ => Ok(()),
    }
}

/// Writes `seq` into slot `pos` and syncs.
fn write_slot(
    head: &mut File,
    pos: usize,
    seq: u64,
    hash: &[u8; 64],
    key: &StoreKey,
) -> std::io::Result<()> {
    let slot = frame::encode_slot(pos, seq, hash, key);
    head.seek(SeekFrom::Start((pos * SLOT) as u64))?;
    head.write_all(&slot)?;
    head.sync_data()
}

/// Cuts `file` back to `len` bytes and syncs.
fn truncate(file: &mut File, len: u64) -> std::io::Result<()> {
    file.set_len(len).and_then(|()| file.sync_data())
}

/// Creates (or replaces) the head file atomically, both slots vouching for `seq`.
pub(super) fn create_head(
    path: &Path,
    seq: u64,
    hash: &[u8; 64],
    key: &StoreKey,
) -> Result<File, StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = sibling(path, "tmp");
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(&frame::encode_slot(0, seq, hash, key))
        .and_then(|()| f.write_all(&frame::encode_slot(1, seq, hash, key)))
        .and_then(|()| f.sync_all())
        .map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)?;
    sync_parent(path).map_err(io)?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)
}

/// `path` with `.ext` appended to its file name.
pub(super) fn sibling(path: &Path, ext: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".");
    name.push(ext);
    path.with_file_name(name)
}

/// Makes a new file's directory entry durable.
pub(super) fn sync_parent(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(parent)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// The lock
// ------------------------------------------------------------------------------------------------

/// The exclusive OS lock on `<store>.lock`, held for the store's life (closing the file
/// releases it, also when the process dies).
#[derive(Debug)]
pub(super) struct StoreLock {
    _file: File,
}

impl StoreLock {
    pub(super) fn acquire(store: &Path) -> Result<Self, StoreError> {
        let path = sibling(store, "lock");
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                // The holder wrote its pid after locking; some systems do not let a locked
                // file be read by others, then the holder is unknown.
                let mut text = String::new();
                let holder = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(StoreError::Locked {
                    path: store.to_owned(),
                    lock: path,
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        // Informational only (the lock is what excludes): not synced.
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)).map(drop))
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(io)?;
        Ok(Self { _file: file })
    }
}
