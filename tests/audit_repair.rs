//! Damaged records are refused, never cut (issue 10, finding 10), and removed only by an
//! explicit repair that declares what it removed.

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tollgate::audit::file::{
    self, CheckpointConfig, CheckpointKey, FileSink, FileSinkConfig, Notice, RepairOptions,
    VerifyError,
};
use tollgate::audit::{AuditEvent, AuditSink, EventKind};

#[path = "common/tempdir.rs"]
mod tempdir;

use tempfile::TempDir;

/// A fresh directory for one test under the system temp dir, deleted when the value drops.
fn temp_dir(name: &str) -> TempDir {
    tempdir::temp_dir("audit-repair", name)
}

/// Paths inside a test's log directory.
trait LogDir {
    /// Segment `index` of the log written straight into the directory.
    fn seg(&self, index: u64) -> PathBuf;
}

impl LogDir for TempDir {
    fn seg(&self, index: u64) -> PathBuf {
        self.path().join(format!("audit-{index:06}.jsonl"))
    }
}

fn event(seq: u64) -> AuditEvent<'static> {
    AuditEvent::new(
        seq,
        SystemTime::now(),
        None,
        None,
        EventKind::RunFinished {
            duration: Duration::from_millis(seq),
        },
    )
}

/// A log of `n` acknowledged (fsync'd) records.
fn log(name: &str, n: u64, config: FileSinkConfig) -> TempDir {
    let dir = temp_dir(name);
    let (sink, _) = FileSink::open(dir.path(), config).unwrap();
    for seq in 1..=n {
        sink.record(&event(seq)).unwrap();
    }
    sink.close().unwrap();
    dir
}

fn line_starts(data: &[u8]) -> Vec<usize> {
    std::iter::once(0)
        .chain(
            data.iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .filter(|&i| i < data.len())
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn damaged_final_records_are_refused_not_cut() {
    // Each damage leaves acknowledged records unreadable; none is what a crash leaves.
    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage); 8] = [
        ("zero-filled tail, no newline", |d| d.extend([0u8; 300])),
        ("a zero line", |d| d.extend(b"\0\0\0\0\n")),
        ("a garbage line", |d| {
            d.extend(b"{\"seq\":41,\"prev\":\"zz\"}\n")
        }),
        ("the final 4 KiB block zeroed", |d| {
            let from = (d.len() - 1) / 4096 * 4096;
            d[from..].fill(0);
        }),
        ("the end of the last record zeroed", |d| {
            let n = d.len();
            d[n - 40..].fill(0);
        }),
        ("the last record's digits changed", |d| {
            let n = d.len();
            let last = line_starts(d).last().copied().unwrap();
            let pos = last + (n - last) / 2;
            d[pos] = if d[pos] == b'0' { b'1' } else { b'0' };
        }),
        // Without its newline the last line looks like a record the writer was appending, but
        // its whole event is there and the hash shows it was changed.
        ("the last record's event changed, its newline gone", |d| {
            assert_eq!(d.pop(), Some(b'\n'));
            let n = d.len();
            let at = n - 3;
            d[at] = if d[at] == b'1' { b'2' } else { b'1' };
        }),
        ("another record run on after the last, no newline", |d| {
            assert_eq!(d.pop(), Some(b'\n'));
            d.extend(b" {\"seq\":41,\"evil\":1}");
        }),
    ];
    for (what, damage) in damages {
        let dir = log("damaged", 40, FileSinkConfig::default());
        let seg = dir.seg(1);
        let mut data = fs::read(&seg).unwrap();
        damage(&mut data);
        fs::write(&seg, &data).unwrap();
        let err = FileSink::open(dir.path(), FileSinkConfig::default())
            .expect_err(&format!("{what}: open accepted the damaged log"));
        let v = file::corruption(&err).unwrap_or_else(|| panic!("{what}: {err}"));
        let at = v.location().unwrap_or_else(|| panic!("{what}: {v}"));
        assert_eq!(at.file, seg, "{what}");
        assert!(at.line >= 1, "{what}");
        assert_eq!(fs::read(&seg).unwrap(), data, "{what}: open cut the damage");
        assert!(file::verify(dir.path()).is_err(), "{what}");
    }
}

#[test]
fn a_zeroed_block_over_acknowledged_records_is_repaired_with_a_declaration() {
    let dir = log("zeroed", 40, FileSinkConfig::default());
    let seg = dir.seg(1);
    let mut data = fs::read(&seg).unwrap();
    let from = (data.len() - 1) / 4096 * 4096;
    let damaged_from = line_starts(&data)
        .into_iter()
        .rfind(|&s| s <= from)
        .unwrap();
    data[from..].fill(0);
    fs::write(&seg, &data).unwrap();
    let lost_lines = data[damaged_from..].split(|&b| b == b'\n').count() as u64;

    let options = RepairOptions::new().reason("disk firmware zeroed a block");
    let plan = FileSink::plan_repair(dir.path(), &options)
        .unwrap()
        .expect("damage to repair");
    let kept = data[..damaged_from].iter().filter(|&&b| b == b'\n').count() as u64;
    assert_eq!(plan.after_seq, kept);
    assert_eq!(plan.cut_file, seg);
    assert_eq!(plan.cut_offset, damaged_from as u64);
    assert_eq!(plan.removed_bytes, (data.len() - damaged_from) as u64);
    assert_eq!(plan.removed_sha256, sha256_hex(&data[damaged_from..]));
    assert!(plan.removed_lines >= 1 && plan.removed_lines <= lost_lines);
    // The first damaged record still shows its seq (unless the block starts with it); the
    // zeroed ones cannot.
    let readable = (damaged_from < from).then_some(kept + 1..=kept + 1);
    assert_eq!(plan.removed_seqs, readable);
    assert!(
        plan.problem.contains("audit-000001.jsonl"),
        "{}",
        plan.problem
    );

    let report = FileSink::repair(dir.path(), &options, &plan).unwrap();
    let decl = plan.removed_through_seq + 1;
    assert_eq!(report.declaration_seq, decl);
    assert_eq!(
        fs::read(&report.saved_as).unwrap(),
        &data[damaged_from..],
        "the removed bytes are kept"
    );
    let v = file::verify(dir.path()).unwrap();
    assert_eq!(v.last_seq, decl);
    match v.notices.as_slice() {
        [
            Notice::Repaired {
                seq,
                after_seq,
                removed_through_seq,
                removed_bytes,
                removed_sha256,
                reason,
                ..
            },
        ] => {
            let through = if damaged_from < from { kept + 1 } else { kept };
            assert_eq!(
                (*seq, *after_seq, *removed_through_seq),
                (through + 1, kept, through)
            );
            assert_eq!(*removed_bytes, plan.removed_bytes);
            assert_eq!(removed_sha256, &plan.removed_sha256);
            assert!(reason.contains("disk firmware"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // The log opens and goes on; no seq is used twice.
    let (sink, rec) = FileSink::open(dir.path(), FileSinkConfig::default()).unwrap();
    assert_eq!(rec.last_seq, decl);
    sink.record(&event(99)).unwrap();
    sink.close().unwrap();
    assert_eq!(file::verify(dir.path()).unwrap().last_seq, decl + 1);
    // Nothing left to repair.
    assert!(
        FileSink::plan_repair(dir.path(), &options)
            .unwrap()
            .is_none()
    );
}

/// Damage at the log's very first record leaves nothing to continue the chain from: a
/// declaration would have to be the log's first record, which no log may start with. Refused,
/// and nothing is changed (before, the repair wrote a log that neither `verify` nor `open` nor a
/// second repair accepted).
#[test]
fn repair_refuses_damage_at_the_first_record_of_the_log() {
    let dir = log("first", 3, FileSinkConfig::default());
    let seg = dir.seg(1);
    let mut data = fs::read(&seg).unwrap();
    let first_end = data.iter().position(|&b| b == b'\n').unwrap();
    data[first_end - 3] ^= 0x01;
    fs::write(&seg, &data).unwrap();
    let err = FileSink::plan_repair(dir.path(), &RepairOptions::new()).unwrap_err();
    assert!(err.to_string().contains("first record of the log"), "{err}");
    assert_eq!(fs::read(&seg).unwrap(), data, "nothing was changed");
}

#[test]
fn repair_refuses_a_log_that_changed_since_its_plan_and_a_cut_past_the_damage() {
    let dir = log("changed", 10, FileSinkConfig::default());
    let seg = dir.seg(1);
    let mut f = fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(b"garbage\n").unwrap();
    drop(f);
    let options = RepairOptions::new();
    let plan = FileSink::plan_repair(dir.path(), &options)
        .unwrap()
        .unwrap();
    assert_eq!(plan.after_seq, 10);
    let mut f = fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(b"more garbage\n").unwrap();
    drop(f);
    let before = fs::read(&seg).unwrap();
    let err = FileSink::repair(dir.path(), &options, &plan).unwrap_err();
    assert!(err.to_string().contains("changed since"), "{err}");
    assert_eq!(fs::read(&seg).unwrap(), before, "nothing was changed");
    let err = FileSink::plan_repair(dir.path(), &RepairOptions::new().cut_after(11)).unwrap_err();
    assert!(err.to_string().contains("damaged before it"), "{err}");
    // A repair while a sink is open is refused by the directory lock.
    let ok = log("locked", 3, FileSinkConfig::default());
    let (sink, _) = FileSink::open(ok.path(), FileSinkConfig::default()).unwrap();
    assert!(FileSink::plan_repair(ok.path(), &RepairOptions::new()).is_err());
    drop(sink);
}

#[test]
fn repair_of_a_keyed_log_is_covered_by_a_checkpoint_and_needs_the_key() {
    let key = CheckpointKey::new("k1", vec![1; 32]).unwrap();
    let keyed = CheckpointConfig::new(key.clone()).every_records(Some(5));
    let config = FileSinkConfig::default().checkpoint(keyed.clone());
    // Without the key the repair declaration has no checkpoint: a keyed open refuses it.
    let dir = log("keyed-nokey", 12, config.clone());
    let seg = dir.seg(1);
    fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(&[0u8; 64])
        .unwrap();
    let plain = RepairOptions::new();
    let plan = FileSink::plan_repair(dir.path(), &plain).unwrap().unwrap();
    FileSink::repair(dir.path(), &plain, &plan).unwrap();
    assert!(file::verify(dir.path()).is_ok());
    assert!(matches!(
        file::verify_keyed(dir.path(), &key),
        Err(VerifyError::NotAuthenticated { .. })
    ));
    assert!(FileSink::open(dir.path(), config.clone()).is_err());

    // With the key it is covered, and the log reopens fully verified.
    let dir = log("keyed", 12, config.clone());
    let seg = dir.seg(1);
    fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(&[0u8; 64])
        .unwrap();
    let options = RepairOptions::new().checkpoint(keyed);
    let plan = FileSink::plan_repair(dir.path(), &options)
        .unwrap()
        .unwrap();
    let done = FileSink::repair(dir.path(), &options, &plan).unwrap();
    assert_eq!(done.last_seq, done.declaration_seq + 1);
    let v = file::verify_keyed(dir.path(), &key).unwrap();
    assert_eq!(v.uncovered_records, 0);
    assert!(
        v.notices
            .iter()
            .any(|n| matches!(n, Notice::Repaired { .. }))
    );
    let (sink, rec) = FileSink::open(dir.path(), config).unwrap();
    assert_eq!(rec.adopted_records, 0);
    sink.close().unwrap();
}

#[test]
fn a_forged_repair_declaration_is_not_authenticated_by_the_key() {
    // An outsider cuts records 9..=12 off and covers the gap with a repair declaration.
    let key = CheckpointKey::new("k1", vec![5; 32]).unwrap();
    let config = FileSinkConfig::default()
        .checkpoint(CheckpointConfig::new(key.clone()).every_records(Some(4)));
    let dir = log("forged-repair", 12, config);
    let seg = dir.seg(1);
    let data = fs::read(&seg).unwrap();
    let starts = line_starts(&data);
    let keep = starts[8]; // lines 1..=8: events and checkpoints
    let kept: Vec<&[u8]> = data[..keep].split(|&b| b == b'\n').collect();
    let last: serde_json::Value = serde_json::from_slice(kept[kept.len() - 2]).unwrap();
    let (after, prev) = (
        last["seq"].as_u64().unwrap(),
        last["hash"].as_str().unwrap(),
    );
    let event = format!(
        "{{\"event\":\"repair\",\"time_unix_nano\":1,\"tollgate.repair.after_seq\":{after},\
         \"tollgate.repair.removed_through_seq\":{},\"tollgate.repair.removed_first_seq\":null,\
         \"tollgate.repair.removed_last_seq\":null,\"tollgate.repair.removed_lines\":0,\
         \"tollgate.repair.removed_bytes\":0,\"tollgate.repair.removed_sha256\":\"{}\",\
         \"tollgate.repair.cut_at\":\"x:0\",\"tollgate.repair.saved_as\":\"x\",\
         \"tollgate.repair.reason\":\"forged\"}}",
        after + 6,
        sha256_hex(b"")
    );
    let seq = after + 7;
    let hash = sha256_hex(format!("{prev}\n{seq}\n{event}").as_bytes());
    let mut text = data[..keep].to_vec();
    text.extend(
        format!("{{\"seq\":{seq},\"prev\":\"{prev}\",\"hash\":\"{hash}\",\"event\":{event}}}\n")
            .bytes(),
    );
    fs::write(&seg, text).unwrap();
    // The chain alone accepts the declared jump, but reports it...
    let v = file::verify(dir.path()).unwrap();
    assert!(
        v.notices
            .iter()
            .any(|n| matches!(n, Notice::Repaired { .. }))
    );
    // ...and the key says nobody who holds it wrote it.
    match file::verify_keyed(dir.path(), &key).unwrap_err() {
        VerifyError::NotAuthenticated { seq: s, .. } => assert_eq!(s, seq),
        e => panic!("{e}"),
    }
}
