//! Explicit, audited repair: removing damaged records from the end of a log with a declaration
//! in the chain that says what was removed.
//!
//! [`FileSink::open`] never cuts anything but a torn write. Damage (a zeroed block, garbage, a
//! record whose hash no longer matches, a rollback a failed writer could not do, records a
//! forged declaration would have an `open` act on) makes it refuse, naming file, line and seq.
//! Repair is the way on, and it is a human decision in two steps:
//!
//! 1. [`FileSink::plan_repair`] finds the cut: the first line that fails verification (or the
//!    record after [`RepairOptions::cut_after`]), and describes everything from there to the
//!    end of the log: lines, bytes, SHA-256, the seqs they claim;
//! 2. [`FileSink::repair`] carries out exactly that plan (it re-plans and refuses if the log
//!    changed): it keeps the removed bytes in `repair-<time>.removed` in the directory, then
//!    writes a `repair` declaration after the last record kept, with a checkpoint when a key is
//!    given, and publishes the new head to the witness.
//!
//! The declaration takes the seq after every seq the removed lines claimed (and after the
//! witnessed head, if the cut removes it), so no seq is ever used twice: [`verify`](super::verify())
//! accepts the jump only at a repair declaration that states it, and reports it as
//! [`Notice::Repaired`](super::Notice::Repaired). Under a key, a repair declaration counts only
//! if a checkpoint its writer wrote covers it: a repair of a keyed log needs the key.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::FileSink;
use super::chain::ChainCheck;
use super::checkpoint::{CheckpointConfig, MacFields};
use super::lock;
use super::pending::{self, PendingFile};
use super::reader::{LogReader, TailPolicy, list_segments, segment_name};
use super::record::{
    CheckpointBody, GENESIS_HEX, Hex64, RepairBody, append_record, chain_hash, hex_str, parse_seq,
    unix_nanos,
};
use super::sink::{corrupt, refused, sync_dir};
use super::verify::{VerifyError, check_is_dir};
use super::witness::{WitnessConfig, WitnessedHead};
use crate::audit::AuditError;

/// How to repair a log (see the [module docs](self)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepairOptions {
    /// The log's checkpoint key (and retired keys): existing checkpoints are verified with them,
    /// and the repair declaration is covered by a checkpoint signed with the key. Required for
    /// a log that has checkpoints.
    pub checkpoint: Option<CheckpointConfig>,
    /// Cut after this record instead of at the first damage (it must come before any damage).
    /// Used to remove a rollback a failed writer could not do, or records after a declaration
    /// that `open` refuses to act on.
    pub cut_after: Option<u64>,
    /// Why, in the operator's words (recorded in the declaration).
    pub reason: Option<String>,
    /// The log's witness: a head the cut removes is declared gone, and the new head is
    /// published to it.
    pub witness: Option<WitnessConfig>,
}

impl RepairOptions {
    /// Cut at the first damage, no key, no witness.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`checkpoint`](Self::checkpoint).
    pub fn checkpoint(mut self, checkpoint: CheckpointConfig) -> Self {
        self.checkpoint = Some(checkpoint);
        self
    }

    /// Sets [`cut_after`](Self::cut_after).
    pub fn cut_after(mut self, seq: u64) -> Self {
        self.cut_after = Some(seq);
        self
    }

    /// Sets [`reason`](Self::reason).
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Sets [`witness`](Self::witness).
    pub fn witness(mut self, witness: WitnessConfig) -> Self {
        self.witness = Some(witness);
        self
    }
}

/// What a repair would remove (see [`FileSink::plan_repair`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepairPlan {
    /// The last record kept (0 if none is).
    pub after_seq: u64,
    /// Its hash.
    pub after_hash: String,
    /// The segment where the cut starts.
    pub cut_file: PathBuf,
    /// The byte offset in it.
    pub cut_offset: u64,
    /// The line there (from 1).
    pub cut_line: u64,
    /// Later segments, removed whole.
    pub removed_segments: Vec<PathBuf>,
    /// Lines removed (a last line without newline counts).
    pub removed_lines: u64,
    /// Bytes removed.
    pub removed_bytes: u64,
    /// SHA-256 of the removed bytes, in log order (hex).
    pub removed_sha256: String,
    /// The seqs the removed lines claim, where they can be read (and are plausible: within
    /// one per removed line after `after_seq`).
    pub removed_seqs: Option<RangeInclusive<u64>>,
    /// Every seq after `after_seq` up to this one is declared gone.
    pub removed_through_seq: u64,
    /// What is wrong there.
    pub problem: String,
    records_since_checkpoint: u64,
}

/// What [`FileSink::repair`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepairReport {
    /// The plan carried out.
    pub plan: RepairPlan,
    /// The repair declaration's seq.
    pub declaration_seq: u64,
    /// The file in the directory keeping the removed bytes.
    pub saved_as: PathBuf,
    /// The log's last seq now (the declaration, or the checkpoint after it).
    pub last_seq: u64,
}

/// Where the last good record ended.
struct Good {
    chain_next: u64,
    prev: Hex64,
    records_since_checkpoint: u64,
}

impl FileSink {
    /// Finds what a repair of the log in `dir` would remove, without changing anything (see the
    /// [module docs](super::repair)): `Ok(None)` if the log needs no repair. Takes the directory
    /// lock for the time it reads, so it fails while a sink has the log open.
    pub fn plan_repair(
        dir: impl AsRef<Path>,
        options: &RepairOptions,
    ) -> Result<Option<RepairPlan>, AuditError> {
        let dir = dir.as_ref();
        check_is_dir(dir).map_err(corrupt)?;
        let _lock = lock::lock(dir)?;
        plan(dir, options)
    }

    /// Carries out `plan` (from [`plan_repair`](Self::plan_repair) with the same `options`):
    /// keeps the removed bytes in `repair-<time>.removed` in the directory, removes them, and
    /// writes a `repair` declaration (and, with a key, a checkpoint covering it) after the last
    /// record kept. Refuses if the log no longer matches the plan. A crash during a repair
    /// leaves either the old log or the repaired one, or the old log without the segments
    /// after the cut one: plan and repair again (the removed bytes are kept before anything is
    /// removed).
    pub fn repair(
        dir: impl AsRef<Path>,
        options: &RepairOptions,
        plan_given: &RepairPlan,
    ) -> Result<RepairReport, AuditError> {
        let dir = dir.as_ref();
        check_is_dir(dir).map_err(corrupt)?;
        let _lock = lock::lock(dir)?;
        let Some(now) = plan(dir, options)? else {
            return Err(refused(
                "the log needs no repair (any more): nothing was changed",
            ));
        };
        if &now != plan_given {
            return Err(refused(
                "the log changed since the repair was planned: plan again; nothing was changed",
            ));
        }
        carry_out(dir, options, now)
    }
}

fn plan(dir: &Path, options: &RepairOptions) -> Result<Option<RepairPlan>, AuditError> {
    let keys = options
        .checkpoint
        .as_ref()
        .map(CheckpointConfig::all_keys)
        .unwrap_or_default();
    let witnessed = match &options.witness {
        Some(w) => w.witness.latest()?,
        None => None,
    };
    let note = pending::read(dir)?;
    let cut_after = options.cut_after.or(note
        .as_ref()
        .filter(|n| !n.rolled_back)
        .map(|n| n.after_seq));
    let segments = list_segments(dir).map_err(corrupt)?;
    let mut reader = LogReader::new(segments.clone(), TailPolicy::Report);
    let mut check = ChainCheck::new(keys)
        .expecting(witnessed.clone())
        .map_err(corrupt)?;
    let mut good = Good {
        chain_next: 1,
        prev: GENESIS_HEX,
        records_since_checkpoint: 0,
    };
    // The cut: where, and why.
    let mut cut: Option<(PathBuf, u64, u64, String)> = None;
    loop {
        let line = match reader.next_line() {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => match e.location() {
                Some(at) => {
                    cut = Some((at.file.clone(), at.offset, at.line, e.to_string()));
                    break;
                }
                None => return Err(corrupt(e)),
            },
        };
        if cut_after.is_some_and(|k| good.chain_next > k) {
            cut = Some((
                line.file.to_owned(),
                line.offset,
                line.line,
                format!("cut after seq {} as asked", good.chain_next - 1),
            ));
            break;
        }
        let at = line.location(None);
        match check.check(&line) {
            Ok(_) => {
                good = Good {
                    chain_next: check.chain.next_seq,
                    prev: check.chain.prev,
                    records_since_checkpoint: check.records_since_checkpoint(),
                };
            }
            Err(e) => {
                if good.chain_next == 1 && at.line == 1 {
                    // In segment 1 too: a declaration after seq 0 would be the log's first
                    // record, which verification (rightly) requires to be seq 1.
                    return Err(refused(format!(
                        "the first record of the log is damaged ({e}): there is no record to \
                         continue the chain from, so it cannot be repaired by cutting (keep the \
                         directory as evidence and start a new log in another)"
                    )));
                }
                cut = Some((at.file, at.offset, at.line, e.to_string()));
                break;
            }
        }
    }
    let after_seq = good.chain_next - 1;
    if let Some(k) = cut_after
        && k > after_seq
    {
        return Err(refused(match &cut {
            Some((_, _, _, problem)) => format!(
                "cannot cut after seq {k}: the log is damaged before it, after seq {after_seq} \
                 ({problem})"
            ),
            None => format!("cannot cut after seq {k}: the log ends at seq {after_seq}"),
        }));
    }
    let cut = match cut {
        Some(c) => c,
        None => match check.finish(reader.segments()) {
            Ok(_) => return Ok(None),
            Err(e @ VerifyError::BehindWitness { .. }) => {
                // Records cut off the end: nothing to remove, the gap to declare.
                let (index, path) = segments
                    .last()
                    .cloned()
                    .unwrap_or((1, dir.join(segment_name(1))));
                let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                let lines = count_lines(&path)?;
                let _ = index;
                (path, len, lines + 1, e.to_string())
            }
            Err(e) => return Err(corrupt(e)),
        },
    };
    let (cut_file, cut_offset, cut_line, problem) = cut;
    let cut_index = segments
        .iter()
        .find(|(_, p)| *p == cut_file)
        .map(|(i, _)| *i)
        .unwrap_or(1);
    let removed_segments: Vec<PathBuf> = segments
        .iter()
        .filter(|(i, _)| *i > cut_index)
        .map(|(_, p)| p.clone())
        .collect();
    // Everything from the cut to the end of the log, in order.
    let mut hasher = Sha256::new();
    let (mut bytes, mut lines) = (0u64, 0u64);
    let mut claimed: Vec<u64> = Vec::new();
    let mut scan = |path: &Path, from: u64| -> io::Result<()> {
        let mut f = File::open(path)?;
        f.seek(SeekFrom::Start(from))?;
        let mut data = Vec::new();
        f.read_to_end(&mut data)?;
        hasher.update(&data);
        bytes += data.len() as u64;
        for l in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            lines += 1;
            if let Some((seq, _)) = parse_seq(l) {
                claimed.push(seq);
            }
        }
        Ok(())
    };
    scan(&cut_file, cut_offset)?;
    for p in &removed_segments {
        scan(p, 0)?;
    }
    // Only seqs a record in that place could have: one per removed line after `after_seq`.
    let plausible = |s: &u64| *s > after_seq && *s <= after_seq.saturating_add(lines);
    let removed_seqs = match (
        claimed.iter().copied().filter(plausible).min(),
        claimed.iter().copied().filter(plausible).max(),
    ) {
        (Some(a), Some(b)) => Some(a..=b),
        _ => None,
    };
    let removed_through_seq = removed_seqs
        .as_ref()
        .map_or(after_seq, |r| *r.end())
        .max(witnessed.as_ref().map_or(0, |w| w.seq))
        .max(after_seq);
    if removed_through_seq >= u64::MAX - 1 {
        // The declaration (and a checkpoint after it) need the next seqs.
        return Err(refused(format!(
            "the records to remove claim seqs up to {removed_through_seq}: no seq is left for \
             the declaration"
        )));
    }
    Ok(Some(RepairPlan {
        after_seq,
        after_hash: hex_str(&good.prev),
        cut_file,
        cut_offset,
        cut_line,
        removed_segments,
        removed_lines: lines,
        removed_bytes: bytes,
        removed_sha256: crate::hex::encode(&hasher.finalize()),
        removed_seqs,
        removed_through_seq,
        problem,
        records_since_checkpoint: good.records_since_checkpoint,
    }))
}

fn count_lines(path: &Path) -> io::Result<u64> {
    match fs::read(path) {
        Ok(d) => Ok(d.iter().filter(|&&b| b == b'\n').count() as u64),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

fn carry_out(
    dir: &Path,
    options: &RepairOptions,
    plan: RepairPlan,
) -> Result<RepairReport, AuditError> {
    let now = unix_nanos(SystemTime::now());
    // 1. Keep what is removed.
    let saved_name = format!("repair-{now}.removed");
    let saved_as = dir.join(&saved_name);
    {
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&saved_as)?;
        let mut copy = |path: &Path, from: u64| -> io::Result<()> {
            let mut f = File::open(path)?;
            f.seek(SeekFrom::Start(from))?;
            io::copy(&mut f, &mut out)?;
            Ok(())
        };
        copy(&plan.cut_file, plan.cut_offset)?;
        for p in &plan.removed_segments {
            copy(p, 0)?;
        }
        out.sync_all()?;
        sync_dir(dir);
    }
    // 2. The declaration (and its checkpoint), after the last record kept.
    let mut prev = [0u8; 64];
    prev.copy_from_slice(plan.after_hash.as_bytes());
    let cut_name = plan
        .cut_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let body = RepairBody {
        event: "repair",
        time_unix_nano: now,
        after_seq: plan.after_seq,
        removed_through_seq: plan.removed_through_seq,
        removed_first_seq: plan.removed_seqs.as_ref().map(|r| *r.start()),
        removed_last_seq: plan.removed_seqs.as_ref().map(|r| *r.end()),
        removed_lines: plan.removed_lines,
        removed_bytes: plan.removed_bytes,
        removed_sha256: plan.removed_sha256.as_str().into(),
        cut_at: format!("{cut_name}:{}", plan.cut_offset).into(),
        saved_as: saved_name.as_str().into(),
        reason: match &options.reason {
            Some(r) => format!("{r} ({})", plan.problem),
            None => plan.problem.clone(),
        }
        .into(),
    };
    let event = serde_json::to_vec(&body).map_err(io::Error::other)?;
    let decl_seq = plan.removed_through_seq + 1;
    let decl_hash = chain_hash(&prev, decl_seq, &event);
    let mut tail = Vec::new();
    append_record(&mut tail, decl_seq, &prev, &decl_hash, &event);
    let (mut last_seq, mut last_hash) = (decl_seq, decl_hash);
    if let Some(cp) = &options.checkpoint {
        // The records before the cut since the last checkpoint were never authenticated by
        // their writer: adopted, like `open` does; the declaration is this repair's own.
        let adopted = plan.records_since_checkpoint;
        let fields = MacFields {
            seq: decl_seq,
            head: &decl_hash,
            time_unix_nano: now,
            adopted,
        };
        let mac = cp.key.sign(&fields);
        let body = CheckpointBody {
            event: "checkpoint",
            time_unix_nano: now,
            seq: decl_seq,
            head: hex_str(&decl_hash).into(),
            adopted,
            key_id: cp.key.id().into(),
            mac: hex_str(&mac).into(),
        };
        let event = serde_json::to_vec(&body).map_err(io::Error::other)?;
        last_seq = decl_seq + 1;
        last_hash = chain_hash(&decl_hash, last_seq, &event);
        append_record(&mut tail, last_seq, &decl_hash, &last_hash, &event);
    }
    // 3. Later segments go (newest first), then the cut segment is replaced by its kept prefix
    // and the new tail, atomically.
    for p in plan.removed_segments.iter().rev() {
        fs::remove_file(p)?;
    }
    let mut tmp = plan.cut_file.clone().into_os_string();
    tmp.push(".repair");
    let tmp = PathBuf::from(tmp);
    {
        let mut kept = File::open(&plan.cut_file)?.take(plan.cut_offset);
        let mut out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        io::copy(&mut kept, &mut out)?;
        out.write_all(&tail)?;
        out.sync_all()?;
    }
    fs::rename(&tmp, &plan.cut_file)?;
    sync_dir(dir);
    // 4. A failed writer's note: its rollback is done now.
    if let Some(mut note) = pending::read(dir)?
        && !note.rolled_back
        && plan.after_seq <= note.after_seq
    {
        note.rolled_back = true;
        PendingFile::open(dir)?.write(&note)?;
    }
    // 5. The witness learns the new head.
    if let Some(w) = &options.witness {
        let mut head = WitnessedHead::new(last_seq, hex_str(&last_hash), now);
        if let Some(cp) = &options.checkpoint {
            head = head.signed(&cp.key);
        }
        w.witness.publish(&head)?;
    }
    Ok(RepairReport {
        plan,
        declaration_seq: decl_seq,
        saved_as,
        last_seq,
    })
}
