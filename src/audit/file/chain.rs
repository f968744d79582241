//! The chain check every reader shares (verify, recovery, repair, query, retention): one record
//! at a time, in order, across segments.

use std::fmt;
use std::ops::RangeInclusive;
use std::path::PathBuf;

use super::checkpoint::{CheckpointKey, MacFields};
use super::reader::{Line, segment_name};
use super::record::{
    CheckpointBody, GENESIS_HEX, Hex64, LossBody, RepairBody, RetentionBody, chain_hash,
    event_depth_ok, event_is_json, hex_str, parse_frame, parse_hex64,
};
use super::verify::{Location, Notice, VerifyError, VerifyReport};
use super::witness::WitnessedHead;
use super::{CHECKPOINT_PREFIX, LOSS_PREFIX, REPAIR_PREFIX, RETENTION_PREFIX};

/// Where the chain stands after the records read so far.
#[derive(Debug, Clone)]
pub(super) struct Chain {
    pub(super) next_seq: u64,
    pub(super) prev: Hex64,
    pub(super) records: u64,
}

impl Chain {
    pub(super) fn new() -> Self {
        Self {
            next_seq: 1,
            prev: GENESIS_HEX,
            records: 0,
        }
    }
}

/// The records one segment holds: its first record's seq and `prev`, its last record's seq and
/// hash.
#[derive(Debug, Clone)]
pub(in crate::audit) struct Span {
    pub(super) index: u64,
    pub(super) first_seq: u64,
    pub(super) first_prev: Hex64,
    pub(super) last_seq: u64,
    pub(super) last_hash: Hex64,
}

/// The first record of the log.
struct Start {
    seq: u64,
    prev: Hex64,
    at: Location,
}

/// A line that passed [`ChainCheck::check`].
pub(in crate::audit) struct Checked<'a> {
    /// The record's seq.
    pub(in crate::audit) seq: u64,
    /// The record's hash.
    pub(in crate::audit) hash: Hex64,
    /// The exact event bytes.
    pub(in crate::audit) event: &'a [u8],
}

/// A declaration that has an effect on what the log may lack (a retention declaration, a
/// repair), and whether a checkpoint its writer wrote covers it.
#[derive(Debug, Clone)]
struct Decl {
    seq: u64,
    at: Location,
    /// A checkpoint follows it that did not merely adopt it.
    covered: bool,
}

/// A retention deletion declared but not finished: the records it drops are still here.
#[derive(Debug, Clone)]
pub(super) struct PendingDrop {
    /// The last seq the declaration drops.
    pub(super) through: u64,
    /// The declaration.
    pub(super) decl_seq: u64,
    pub(super) at: Location,
    /// Covered by a checkpoint its writer wrote (only meaningful when keys were given).
    pub(super) covered: bool,
}

/// Verifies records one at a time, in order, across segments.
pub(in crate::audit) struct ChainCheck {
    pub(super) chain: Chain,
    keys: Vec<CheckpointKey>,
    /// The first record; `None` until one is seen.
    start: Option<Start>,
    /// Whether the records before the first one are accounted for (it is seq 1, or a retention
    /// declaration covers the gap).
    prefix_declared: bool,
    /// The largest `last_seq` of any retention declaration seen.
    declared_through: u64,
    /// Retention and repair declarations, in chain order.
    decls: Vec<Decl>,
    /// The largest declared drop at or after the first record (index into `decls`).
    pending_drop: Option<(u64, usize)>,
    /// The first declaration that explains a start after seq 1 (index into `decls`).
    explained_by: Option<usize>,
    pub(super) spans: Vec<Span>,
    checkpoints: u64,
    last_checkpoint: Option<(u64, u64)>,
    /// Runs of consecutive seqs since the last checkpoint (a repair breaks a run).
    since_checkpoint: Vec<(u64, u64)>,
    /// Declarations since the last checkpoint (indices into `decls`).
    awaiting: Vec<usize>,
    adopted: u64,
    notices: Vec<Notice>,
    /// The head a witness vouches for, and whether the chain reached it (or declared it gone).
    witness: Option<WitnessedHead>,
    witness_reached: bool,
    /// The reader parses every event in full itself: the event's JSON syntax is left to it
    /// (its depth is still checked here).
    syntax_left_to_reader: bool,
}

impl fmt::Debug for ChainCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainCheck")
            .field("next_seq", &self.chain.next_seq)
            .field("records", &self.chain.records)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl ChainCheck {
    /// A check of a whole log, from its first record; `keys` verify checkpoint MACs (none: MACs
    /// are not checked).
    pub(in crate::audit) fn new(keys: Vec<CheckpointKey>) -> Self {
        Self {
            chain: Chain::new(),
            keys,
            start: None,
            prefix_declared: false,
            declared_through: 0,
            decls: Vec::new(),
            pending_drop: None,
            explained_by: None,
            spans: Vec::new(),
            checkpoints: 0,
            last_checkpoint: None,
            since_checkpoint: Vec::new(),
            awaiting: Vec::new(),
            adopted: 0,
            notices: Vec::new(),
            witness: None,
            witness_reached: false,
            syntax_left_to_reader: false,
        }
    }

    /// For a reader that parses every event in full and treats an event it cannot parse as a
    /// malformed record: checks everything but the event's JSON syntax, which that parse
    /// checks (one parse of each event instead of two). The sink's own records are still
    /// parsed here.
    pub(super) fn leaving_syntax_to_reader(mut self) -> Self {
        self.syntax_left_to_reader = true;
        self
    }

    /// Also requires the chain to reach `head` (see [`Witness`](super::Witness)); its MAC is
    /// checked with the keys, if it has one and keys were given.
    pub(super) fn expecting(mut self, head: Option<WitnessedHead>) -> Result<Self, VerifyError> {
        if let Some(h) = &head
            && let Err(reason) = h.check(&self.keys)
        {
            return Err(VerifyError::WitnessInvalid { seq: h.seq, reason });
        }
        self.witness = head;
        Ok(self)
    }

    /// A check of a run of records known to start at `seq` after a record whose hash is `prev`.
    pub(super) fn continuing(seq: u64, prev: Hex64, at: Location) -> Self {
        let mut c = Self::new(Vec::new());
        c.chain.next_seq = seq;
        c.chain.prev = prev;
        c.start = Some(Start { seq, prev, at });
        c.prefix_declared = true;
        c
    }

    /// The declared deletion not finished yet, if any.
    pub(super) fn pending_drop(&self) -> Option<PendingDrop> {
        let (through, i) = self.pending_drop?;
        let d = &self.decls[i];
        Some(PendingDrop {
            through,
            decl_seq: d.seq,
            at: d.at.clone(),
            covered: d.covered,
        })
    }

    /// Checks the next line; on success advances the chain.
    pub(in crate::audit) fn check<'a>(
        &mut self,
        line: &Line<'a>,
    ) -> Result<Checked<'a>, VerifyError> {
        self.check_vouched(line, false)
    }

    /// [`check`](Self::check) of a line that, if `vouched`, was found to vouch for itself
    /// ([`vouches`](super::vouch::vouches): its hash is that of its own `prev`, seq and event,
    /// and its event is JSON). Its hash is then not computed again: once its `prev` is checked
    /// to be the previous record's hash, the vouched hash is the one the chain would compute.
    pub(in crate::audit) fn check_vouched<'a>(
        &mut self,
        line: &Line<'a>,
        vouched: bool,
    ) -> Result<Checked<'a>, VerifyError> {
        let content = line.content;
        let frame = parse_frame(content).map_err(|u| VerifyError::Malformed {
            at: line.location(u.seq),
            reason: u.reason,
        })?;
        let seq = frame.seq;
        let at = || line.location(Some(seq));
        if seq == u64::MAX {
            // The writer never gives it (no seq would be left for the next record), and every
            // `seq + 1` below relies on it being absent.
            return Err(VerifyError::Malformed {
                at: at(),
                reason: format!("seq {seq} is the largest there is: no record could follow it"),
            });
        }
        if self.start.is_none() {
            let mut prev = GENESIS_HEX;
            // Retention drops whole segments, so only a log whose first segment is not number 1
            // can start after seq 1: accepted for now, checked against its declaration at the end.
            if seq > 1 && line.segment != 1 {
                prev = *frame.prev;
                self.chain.next_seq = seq;
                self.chain.prev = prev;
            }
            self.prefix_declared = seq <= 1;
            self.start = Some(Start {
                seq: seq.max(1),
                prev,
                at: at(),
            });
        }
        let expected = self.chain.next_seq;
        let repair = frame.event.starts_with(REPAIR_PREFIX);
        if seq > expected && !repair {
            return Err(VerifyError::SeqGap {
                at: at(),
                expected,
                found: seq,
            });
        }
        if seq < expected {
            return Err(VerifyError::Reordered {
                at: at(),
                expected,
                found: seq,
            });
        }
        if *frame.prev != self.chain.prev {
            return Err(VerifyError::BrokenLink { at: at() });
        }
        let hash = if vouched {
            *frame.hash
        } else {
            let hash = chain_hash(&self.chain.prev, seq, frame.event);
            if *frame.hash != hash {
                return Err(VerifyError::Modified { at: at() });
            }
            if self.syntax_left_to_reader {
                event_depth_ok(frame.event)
            } else {
                event_is_json(frame.event)
            }
            .map_err(|reason| VerifyError::Malformed { at: at(), reason })?;
            hash
        };
        let checkpoint = frame.event.starts_with(CHECKPOINT_PREFIX);
        if checkpoint {
            self.on_checkpoint(seq, frame.event, line)?;
        } else if frame.event.starts_with(RETENTION_PREFIX) {
            self.on_retention(seq, frame.event, line)?;
        } else if repair {
            self.on_repair(seq, expected, frame.event, line)?;
        } else if frame.event.starts_with(LOSS_PREFIX) {
            self.on_loss(seq, frame.event, line)?;
        }
        if let Some(w) = &self.witness
            && w.seq == seq
        {
            if w.hash.as_bytes() != hash {
                return Err(VerifyError::WitnessMismatch {
                    at: at(),
                    seq,
                    witnessed: w.hash.clone(),
                });
            }
            self.witness_reached = true;
        }
        match self.spans.last_mut() {
            Some(s) if s.index == line.segment => {
                s.last_seq = seq;
                s.last_hash = hash;
            }
            _ => self.spans.push(Span {
                index: line.segment,
                first_seq: seq,
                first_prev: self.chain.prev,
                last_seq: seq,
                last_hash: hash,
            }),
        }
        if !checkpoint {
            match self.since_checkpoint.last_mut() {
                Some((_, last)) if *last + 1 == seq => *last = seq,
                _ => self.since_checkpoint.push((seq, seq)),
            }
        }
        self.chain.prev = hash;
        self.chain.next_seq = seq + 1;
        self.chain.records += 1;
        Ok(Checked {
            seq,
            hash,
            event: frame.event,
        })
    }

    pub(super) fn records_since_checkpoint(&self) -> u64 {
        self.since_checkpoint.iter().map(|(a, b)| b - a + 1).sum()
    }

    fn on_checkpoint(
        &mut self,
        seq: u64,
        event: &[u8],
        line: &Line<'_>,
    ) -> Result<(), VerifyError> {
        let at = || line.location(Some(seq));
        let cp: CheckpointBody<'_> =
            serde_json::from_slice(event).map_err(|e| VerifyError::Malformed {
                at: at(),
                reason: format!("checkpoint record: {e}"),
            })?;
        let mismatch = |reason: String| VerifyError::CheckpointMismatch {
            at: at(),
            seq,
            reason,
        };
        if cp.event != "checkpoint" {
            return Err(mismatch("its kind is ambiguous".into()));
        }
        if cp.seq.checked_add(1) != Some(seq) {
            return Err(mismatch(format!(
                "it covers seq {} instead of the record before it",
                cp.seq
            )));
        }
        if cp.head.as_bytes() != self.chain.prev {
            return Err(mismatch(
                "its head is not the hash of the record before it".into(),
            ));
        }
        let before = self.records_since_checkpoint();
        // The first checkpoint of a log whose prefix retention dropped may have adopted records
        // that are gone now.
        let prefix_gone = self.checkpoints == 0 && self.start.as_ref().is_some_and(|s| s.seq > 1);
        if cp.adopted > before && !prefix_gone {
            return Err(mismatch(format!(
                "it adopts {} records, but only {before} precede it since the previous checkpoint",
                cp.adopted
            )));
        }
        if !self.keys.is_empty() {
            let Some(key) = self.keys.iter().find(|k| k.id() == cp.key_id) else {
                return Err(VerifyError::CheckpointKeyUnknown {
                    at: at(),
                    seq,
                    key_id: cp.key_id.into_owned(),
                });
            };
            let fields = MacFields {
                seq: cp.seq,
                head: cp.head.as_bytes(),
                time_unix_nano: cp.time_unix_nano,
                adopted: cp.adopted,
            };
            if !key.check(&fields, &cp.mac) {
                return Err(VerifyError::CheckpointMac {
                    at: at(),
                    seq,
                    key_id: cp.key_id.into_owned(),
                });
            }
        }
        // The records it adopted: the first `adopted` since the previous checkpoint (all of
        // them, where that count reaches into a dropped prefix).
        let mut adopted = Vec::new();
        let mut left = if prefix_gone && cp.adopted > 0 {
            before
        } else {
            cp.adopted
        };
        for &(a, b) in &self.since_checkpoint {
            if left == 0 {
                break;
            }
            let n = (b - a + 1).min(left);
            adopted.push(a..=a + n - 1);
            left -= n;
        }
        for &i in &self.awaiting {
            let d = &mut self.decls[i];
            d.covered = !adopted.iter().any(|r| r.contains(&d.seq));
        }
        self.awaiting.clear();
        self.since_checkpoint.clear();
        if cp.adopted > 0 {
            self.notices.push(Notice::Adopted {
                checkpoint_seq: seq,
                count: cp.adopted,
                records: adopted,
            });
        }
        self.checkpoints += 1;
        self.last_checkpoint = Some((seq, cp.time_unix_nano));
        self.adopted = self.adopted.saturating_add(cp.adopted);
        Ok(())
    }

    fn declare(&mut self, seq: u64, at: Location) -> usize {
        self.decls.push(Decl {
            seq,
            at,
            covered: false,
        });
        self.awaiting.push(self.decls.len() - 1);
        self.decls.len() - 1
    }

    fn on_retention(&mut self, seq: u64, event: &[u8], line: &Line<'_>) -> Result<(), VerifyError> {
        let at = || line.location(Some(seq));
        let malformed = |reason: String| VerifyError::Malformed { at: at(), reason };
        let d: RetentionBody<'_> = serde_json::from_slice(event)
            .map_err(|e| malformed(format!("retention declaration: {e}")))?;
        if d.event != "retention_applied" {
            return Err(malformed(
                "retention declaration: its kind is ambiguous".into(),
            ));
        }
        if d.first_seq == 0 || d.first_seq > d.last_seq || d.last_seq >= seq {
            return Err(malformed(format!(
                "retention declaration drops seq {}..={}, which does not lie before it",
                d.first_seq, d.last_seq
            )));
        }
        let Some(head) = parse_hex64(&d.head) else {
            return Err(malformed(
                "retention declaration: head is not 64 lowercase hex digits".into(),
            ));
        };
        let mismatch = |reason: String| VerifyError::RetentionMismatch {
            at: at(),
            seq,
            reason,
        };
        self.declared_through = self.declared_through.max(d.last_seq);
        let index = self.declare(seq, at());
        let Some(start) = &self.start else {
            return Ok(());
        };
        let start_seq = start.seq;
        if d.last_seq.checked_add(1) == Some(start.seq) {
            if head != start.prev {
                return Err(mismatch(format!(
                    "it drops through seq {}, but the first record's `prev` is not the hash it states",
                    d.last_seq
                )));
            }
            self.prefix_declared = true;
        } else if d.last_seq >= start.seq {
            // The deletion was interrupted (or has not happened yet): the last record it drops is
            // still here, and must end a segment before this one and have the stated hash.
            let ok = self.spans.iter().any(|s| {
                s.index != line.segment && s.last_seq == d.last_seq && s.last_hash == head
            });
            if !ok {
                return Err(mismatch(format!(
                    "it drops through seq {}, which is still present but is not the end of an \
                     earlier segment with the hash it states",
                    d.last_seq
                )));
            }
            self.prefix_declared = true;
            if self.pending_drop.is_none_or(|(t, _)| d.last_seq > t) {
                self.pending_drop = Some((d.last_seq, index));
            }
        }
        if start_seq > 1 && d.last_seq.saturating_add(1) >= start_seq && self.explained_by.is_none()
        {
            self.explained_by = Some(index);
        }
        Ok(())
    }

    fn on_repair(
        &mut self,
        seq: u64,
        expected: u64,
        event: &[u8],
        line: &Line<'_>,
    ) -> Result<(), VerifyError> {
        let at = || line.location(Some(seq));
        let malformed = |reason: String| VerifyError::Malformed { at: at(), reason };
        let r: RepairBody<'_> = serde_json::from_slice(event)
            .map_err(|e| malformed(format!("repair declaration: {e}")))?;
        if r.event != "repair" {
            return Err(malformed(
                "repair declaration: its kind is ambiguous".into(),
            ));
        }
        if r.after_seq.checked_add(1) != Some(expected)
            || r.removed_through_seq.checked_add(1) != Some(seq)
        {
            return Err(VerifyError::SeqGap {
                at: at(),
                expected,
                found: seq,
            });
        }
        if let Some(w) = &self.witness
            && w.seq > r.after_seq
            && w.seq <= r.removed_through_seq
        {
            // The witnessed record is among those the repair declares removed.
            self.witness_reached = true;
        }
        self.declare(seq, at());
        self.notices.push(Notice::Repaired {
            seq,
            after_seq: r.after_seq,
            removed_through_seq: r.removed_through_seq,
            removed_seqs: match (r.removed_first_seq, r.removed_last_seq) {
                (Some(a), Some(b)) => Some(a..=b),
                _ => None,
            },
            removed_lines: r.removed_lines,
            removed_bytes: r.removed_bytes,
            removed_sha256: r.removed_sha256.into_owned(),
            saved_as: r.saved_as.into_owned(),
            reason: r.reason.into_owned(),
        });
        Ok(())
    }

    fn on_loss(&mut self, seq: u64, event: &[u8], line: &Line<'_>) -> Result<(), VerifyError> {
        let l: LossBody<'_> =
            serde_json::from_slice(event).map_err(|e| VerifyError::Malformed {
                at: line.location(Some(seq)),
                reason: format!("loss declaration: {e}"),
            })?;
        self.notices.push(Notice::Lost {
            seq,
            id: l.id.into_owned(),
            count: l.count,
            after_seq: l.after_seq,
            event_seqs: match (l.event_seq_first, l.event_seq_last) {
                (Some(a), Some(b)) => Some(a..=b),
                _ => None,
            },
            error: l.error.into_owned(),
        });
        Ok(())
    }

    /// Ends the check of the log whose segments were `segments`: a missing prefix nobody
    /// declared is an error now, and so is a log without records whose first segment is not
    /// number 1 (its history is gone, and no declaration is left to say so: retention always
    /// leaves its declaration behind). With keys, every declaration that explains missing
    /// records must be covered by a checkpoint its writer wrote; with a witnessed head, the
    /// chain must have reached it.
    pub(in crate::audit) fn finish(
        &self,
        segments: &[(u64, PathBuf)],
    ) -> Result<VerifyReport, VerifyError> {
        if self.chain.records == 0
            && let Some((first, path)) = segments.first()
            && *first > 1
        {
            return Err(VerifyError::MissingSegment {
                expected: path.with_file_name(segment_name(1)),
            });
        }
        if let Some(start) = &self.start
            && !self.prefix_declared
        {
            return Err(VerifyError::SeqGap {
                at: start.at.clone(),
                expected: self.declared_through + 1,
                found: start.seq,
            });
        }
        if !self.keys.is_empty() {
            if let Some(i) = self.explained_by
                && !self.decls[i].covered
            {
                let d = &self.decls[i];
                return Err(VerifyError::RetentionMismatch {
                    at: d.at.clone(),
                    seq: d.seq,
                    reason: if self.last_checkpoint.is_none_or(|(cp, _)| cp < d.seq) {
                        "no checkpoint follows it, so nothing authenticates the drop it declares"
                            .into()
                    } else {
                        "the checkpoint after it only adopted it on reopen, so its writer never \
                         authenticated the drop it declares"
                            .into()
                    },
                });
            }
            for n in &self.notices {
                if let Notice::Repaired { seq, .. } = n
                    && let Some(d) = self.decls.iter().find(|d| d.seq == *seq)
                    && !d.covered
                {
                    return Err(VerifyError::NotAuthenticated {
                        at: d.at.clone(),
                        seq: d.seq,
                        what: "repair declaration".into(),
                    });
                }
            }
        }
        let records = self.chain.records;
        let first_seq = if records == 0 {
            0
        } else {
            self.start.as_ref().map_or(1, |s| s.seq)
        };
        let last_seq = if records == 0 {
            0
        } else {
            self.chain.next_seq - 1
        };
        if let Some(w) = &self.witness
            && !self.witness_reached
        {
            // Dropped under a declared retention: fine. Otherwise the chain stops short of it.
            let dropped = records > 0 && w.seq < first_seq && self.prefix_declared;
            if !dropped {
                return Err(VerifyError::BehindWitness {
                    witnessed_seq: w.seq,
                    witnessed_hash: w.hash.clone(),
                    last_seq,
                });
            }
        }
        let mut notices = self.notices.clone();
        if let Some(p) = self.pending_drop() {
            notices.push(Notice::RetentionPending {
                seq: p.decl_seq,
                through: p.through,
            });
        }
        Ok(VerifyReport {
            segments: segments.len() as u64,
            records,
            first_seq,
            last_seq,
            head_hash: hex_str(&self.chain.prev),
            dropped_through: first_seq.saturating_sub(1),
            checkpoints: self.checkpoints,
            macs_verified: !self.keys.is_empty(),
            last_checkpoint_seq: self.last_checkpoint.map(|c| c.0),
            last_checkpoint_unix_nano: self.last_checkpoint.map(|c| c.1),
            uncovered_records: self.records_since_checkpoint(),
            adopted_records: self.adopted,
            witnessed_seq: self.witness.as_ref().map(|w| w.seq),
            notices,
        })
    }
}

/// Seq ranges as text: `3..=5, 9..=9`.
pub(super) fn ranges_text(r: &[RangeInclusive<u64>]) -> String {
    r.iter()
        .map(|r| format!("{}..={}", r.start(), r.end()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::file::record::PolicyField;
    use std::collections::BTreeMap;
    use std::path::Path;

    use crate::audit::file::record::test_line as line;

    fn at<'a>(content: &'a [u8], segment: u64, n: u64) -> Line<'a> {
        Line {
            content,
            file: Path::new("audit-000001.jsonl"),
            segment,
            line: n,
            offset: 0,
        }
    }

    #[test]
    fn a_missing_prefix_needs_a_matching_declaration() {
        // Records 3.. of a chain whose records 1 and 2 are gone.
        let (_, h1) = line(1, &GENESIS_HEX, br#"{"n":1}"#);
        let (_, h2) = line(2, &h1, br#"{"n":2}"#);
        let (l3, h3) = line(3, &h2, br#"{"n":3}"#);
        let decl = |head: &Hex64| {
            serde_json::to_vec(&RetentionBody {
                event: "retention_applied",
                time_unix_nano: 1,
                evaluated_at: 1,
                first_seq: 1,
                last_seq: 2,
                head: hex_str(head).into(),
                first_segment: 1,
                last_segment: 1,
                policy: PolicyField::Write(BTreeMap::new()),
            })
            .unwrap()
        };
        let strip = |l: &[u8]| l[..l.len() - 1].to_vec();
        // No declaration: a gap at the first record, reported at the end.
        let mut check = ChainCheck::new(Vec::new());
        check.check(&at(&strip(&l3), 2, 1)).unwrap();
        assert!(matches!(
            check.finish(&[]),
            Err(VerifyError::SeqGap {
                expected: 1,
                found: 3,
                ..
            })
        ));
        // The right declaration.
        let (l4, _) = line(4, &h3, &decl(&h2));
        let mut check = ChainCheck::new(Vec::new());
        check.check(&at(&strip(&l3), 2, 1)).unwrap();
        check.check(&at(&strip(&l4), 2, 2)).unwrap();
        let report = check.finish(&[]).unwrap();
        assert_eq!((report.first_seq, report.dropped_through), (3, 2));
        // A declaration stating another hash.
        let (l4, _) = line(4, &h3, &decl(&h3));
        let mut check = ChainCheck::new(Vec::new());
        check.check(&at(&strip(&l3), 2, 1)).unwrap();
        assert!(matches!(
            check.check(&at(&strip(&l4), 2, 2)),
            Err(VerifyError::RetentionMismatch { seq: 4, .. })
        ));
    }
}
