//! Keyed checkpoints: cadence (records, time, flush, close), MAC verification, what a forger
//! without the key can and cannot hide (a re-hashed chain, stripped checkpoints, a cut tail),
//! wrong and unknown keys, retired keys, adoption of uncovered records on reopen, key files.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use tollgate::audit::file::{
    self, CheckpointConfig, CheckpointKey, CheckpointKeyError, Durability, FileSink,
    FileSinkConfig, VerifyError, VerifyOptions,
};
use tollgate::audit::query::Query;
use tollgate::audit::{AuditEvent, AuditSink, EventKind};

#[path = "common/tempdir.rs"]
mod tempdir;

use tempfile::TempDir;

/// A fresh directory for one test under the system temp dir, deleted when the value drops.
fn temp_dir(name: &str) -> TempDir {
    tempdir::temp_dir("audit-checkpoint", name)
}

fn key(id: &str, byte: u8) -> CheckpointKey {
    CheckpointKey::new(id, vec![byte; 32]).unwrap()
}

fn k1() -> CheckpointKey {
    key("k1", 0x11)
}

fn keyed(key: CheckpointKey, every: Option<u64>) -> FileSinkConfig {
    FileSinkConfig::default()
        .durability(Durability::OsBuffered)
        .checkpoint(
            CheckpointConfig::new(key)
                .every_records(every)
                .every_ms(None),
        )
}

fn record(sink: &FileSink, seq: u64) {
    let event = AuditEvent::new(
        seq,
        SystemTime::now(),
        None,
        None,
        EventKind::RunFinished {
            duration: Duration::from_millis(seq),
        },
    );
    sink.record(&event).unwrap();
}

/// Writes `n` events with `config` and closes the sink.
fn write(dir: &Path, config: FileSinkConfig, n: u64) -> file::Recovery {
    let (sink, recovery) = FileSink::open(dir, config).unwrap();
    for seq in 1..=n {
        record(&sink, seq);
    }
    sink.close().unwrap();
    recovery
}

fn segment(dir: &Path) -> PathBuf {
    dir.join("audit-000001.jsonl")
}

fn kinds(dir: &Path) -> Vec<String> {
    fs::read_to_string(segment(dir))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["event"]["event"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn hash(prev: &str, seq: u64, event: &str) -> String {
    let mut h = Sha256::new();
    h.update(format!("{prev}\n{seq}\n{event}").as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// What a forger without the key does to a one-segment log: `edit` changes (or, returning
/// `false`, drops) each record's event text, then seqs and hashes are recomputed from the first
/// record on. With `fix_checkpoints`, checkpoint records are updated to name the new seq and head
/// (their MAC cannot be).
fn forge(dir: &Path, fix_checkpoints: bool, mut edit: impl FnMut(u64, &mut String) -> bool) {
    let text = fs::read_to_string(segment(dir)).unwrap();
    let mut out = String::new();
    let mut prev = "0".repeat(64);
    let mut seq = 1;
    for line in text.lines() {
        let old_seq: u64 = line[7..line.find(',').unwrap()].parse().unwrap();
        let start = line.find(",\"event\":").unwrap() + 9;
        let mut event = line[start..line.len() - 1].to_owned();
        if !edit(old_seq, &mut event) {
            continue;
        }
        if fix_checkpoints && event.starts_with("{\"event\":\"checkpoint\",") {
            let v: serde_json::Value = serde_json::from_str(&event).unwrap();
            let old_head = v["tollgate.checkpoint.head"].as_str().unwrap();
            let old_cover = v["tollgate.checkpoint.seq"].as_u64().unwrap();
            event = event.replace(old_head, &prev).replace(
                &format!("\"tollgate.checkpoint.seq\":{old_cover},"),
                &format!("\"tollgate.checkpoint.seq\":{},", seq - 1),
            );
        }
        let h = hash(&prev, seq, &event);
        out.push_str(&format!(
            "{{\"seq\":{seq},\"prev\":\"{prev}\",\"hash\":\"{h}\",\"event\":{event}}}\n"
        ));
        prev = h;
        seq += 1;
    }
    fs::write(segment(dir), out).unwrap();
}

// ------------------------------------------------------------------------------------------------

#[test]
fn a_keyed_log_verifies_with_every_record_covered() {
    let dir = temp_dir("basic");
    write(dir.path(), keyed(k1(), Some(10)), 35);
    // 10 events, checkpoint, 10, checkpoint, 10, checkpoint, 5, checkpoint on close.
    let kinds = kinds(dir.path());
    assert_eq!(kinds.len(), 39);
    let at: Vec<usize> = (0..kinds.len())
        .filter(|&i| kinds[i] == "checkpoint")
        .map(|i| i + 1)
        .collect();
    assert_eq!(at, [11, 22, 33, 39]);

    let report = file::verify_keyed(dir.path(), &k1()).unwrap();
    assert_eq!(report.records, 39);
    assert_eq!(report.checkpoints, 4);
    assert!(report.macs_verified);
    assert_eq!(report.last_checkpoint_seq, Some(39));
    assert!(report.last_checkpoint_unix_nano.is_some());
    assert_eq!(report.uncovered_records, 0);
    assert_eq!(report.adopted_records, 0);
    assert!(report.fully_covered());

    // Without the key: the chain and each checkpoint's shape are checked, the MACs are not.
    let plain = file::verify(dir.path()).unwrap();
    assert_eq!(plain.checkpoints, 4);
    assert!(!plain.macs_verified && !plain.fully_covered());
    assert_eq!(plain.head_hash, report.head_hash);

    // The checkpoint records carry what the docs say.
    let cps: Vec<_> = Query::new()
        .kind("checkpoint")
        .checkpoint_key(k1())
        .open(dir.path())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(cps.len(), 4);
    let first = &cps[0].event;
    assert_eq!(first["tollgate.checkpoint.seq"], 10);
    assert_eq!(first["tollgate.checkpoint.key_id"], "k1");
    assert_eq!(first["tollgate.checkpoint.adopted"], 0);
    assert_eq!(first["tollgate.checkpoint.mac"].as_str().unwrap().len(), 64);
    assert_eq!(
        first["tollgate.checkpoint.head"].as_str().unwrap().len(),
        64
    );
}

#[test]
fn a_rehashed_chain_is_caught_by_the_next_checkpoint() {
    let dir = temp_dir("rehash");
    write(dir.path(), keyed(k1(), Some(10)), 35);
    let original = fs::read(segment(dir.path())).unwrap();

    // Change record 15, re-hash everything after it, leave checkpoints alone: even a keyless
    // verify sees that checkpoint 22 no longer describes the chain.
    forge(dir.path(), false, |seq, e| {
        if seq == 15 {
            *e = e.replace("\"tollgate.duration_ns\":", "\"tollgate.duration_ns\":9");
        }
        true
    });
    match file::verify(dir.path()).unwrap_err() {
        VerifyError::CheckpointMismatch { seq, at, .. } => {
            assert_eq!((seq, at.line), (22, 22));
        }
        e => panic!("{e}"),
    }

    // The forger also fixes the checkpoints' heads: only the key tells.
    fs::write(segment(dir.path()), &original).unwrap();
    forge(dir.path(), true, |seq, e| {
        if seq == 15 {
            *e = e.replace("\"tollgate.duration_ns\":", "\"tollgate.duration_ns\":9");
        }
        true
    });
    assert!(file::verify(dir.path()).is_ok(), "keyless verify is fooled");
    match file::verify_keyed(dir.path(), &k1()).unwrap_err() {
        VerifyError::CheckpointMac { seq, key_id, at } => {
            assert_eq!((seq, key_id.as_str(), at.seq), (22, "k1", Some(22)));
        }
        e => panic!("{e}"),
    }
    // Checkpoint 11, before the change, still verifies: the error is at the first one after it.
    let before: Vec<_> = Query::new()
        .checkpoint_key(k1())
        .open(dir.path())
        .unwrap()
        .collect();
    let oks = before.iter().filter(|r| r.is_ok()).count();
    assert_eq!(oks, 21);
    // Opening a sink with the key refuses the forged log rather than sign over it.
    let err = FileSink::open(dir.path(), keyed(k1(), Some(10))).unwrap_err();
    assert!(
        matches!(
            file::corruption(&err),
            Some(VerifyError::CheckpointMac { seq: 22, .. })
        ),
        "{err}"
    );
}

#[test]
fn a_chain_stripped_of_checkpoints_verifies_but_is_uncovered() {
    let dir = temp_dir("strip");
    write(dir.path(), keyed(k1(), Some(10)), 35);
    forge(dir.path(), false, |_, e| {
        !e.starts_with("{\"event\":\"checkpoint\",")
    });
    let report = file::verify_keyed(dir.path(), &k1()).unwrap();
    assert_eq!(report.records, 35);
    assert_eq!(report.checkpoints, 0);
    assert_eq!(report.uncovered_records, 35);
    assert!(!report.fully_covered());
    let err = file::verify_with(
        dir.path(),
        &VerifyOptions::new().key(k1()).require_coverage(true),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::NotCovered {
                uncovered: 35,
                last_checkpoint_seq: None
            }
        ),
        "{err}"
    );
}

#[test]
fn a_cut_tail_shows_as_uncovered_unless_cut_at_a_checkpoint() {
    let dir = temp_dir("cut");
    write(dir.path(), keyed(k1(), Some(10)), 25);
    // Records: checkpoints at 11 and 22, events 23..=27, close checkpoint 28.
    let text = fs::read_to_string(segment(dir.path())).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 28);
    let keep = |n: usize| {
        fs::write(segment(dir.path()), lines[..n].join("\n") + "\n").unwrap();
        file::verify_keyed(dir.path(), &k1()).unwrap()
    };
    let r = keep(25);
    assert_eq!((r.uncovered_records, r.last_checkpoint_seq), (3, Some(22)));
    assert!(!r.fully_covered());
    // Cut exactly after a checkpoint: indistinguishable from a log that ended there (documented).
    let r = keep(22);
    assert_eq!((r.uncovered_records, r.last_checkpoint_seq), (0, Some(22)));
    assert!(r.fully_covered());
}

#[test]
fn wrong_and_unknown_keys_are_errors() {
    let dir = temp_dir("keys");
    write(dir.path(), keyed(k1(), Some(10)), 12);
    match file::verify_keyed(dir.path(), &key("k1", 0x22)).unwrap_err() {
        VerifyError::CheckpointMac { seq, .. } => assert_eq!(seq, 11),
        e => panic!("{e}"),
    }
    match file::verify_keyed(dir.path(), &key("k2", 0x11)).unwrap_err() {
        VerifyError::CheckpointKeyUnknown { seq, key_id, .. } => {
            assert_eq!((seq, key_id.as_str()), (11, "k1"));
        }
        e => panic!("{e}"),
    }
    let err = FileSink::open(dir.path(), keyed(key("k1", 0x22), None)).unwrap_err();
    assert!(matches!(
        file::corruption(&err),
        Some(VerifyError::CheckpointMac { .. })
    ));
}

#[test]
fn retired_keys_keep_old_checkpoints_verifiable() {
    let dir = temp_dir("rotate");
    write(dir.path(), keyed(k1(), Some(5)), 6);
    let k2 = key("k2", 0x22);
    // Opening with only the new key cannot check the old checkpoints: refused.
    let err = FileSink::open(dir.path(), keyed(k2.clone(), Some(5))).unwrap_err();
    assert!(matches!(
        file::corruption(&err),
        Some(VerifyError::CheckpointKeyUnknown { .. })
    ));
    let config = FileSinkConfig::default().checkpoint(
        CheckpointConfig::new(k2.clone())
            .retired_key(k1())
            .every_records(Some(5)),
    );
    write(dir.path(), config, 6);
    let both = VerifyOptions::new().key(k2.clone()).key(k1());
    let report = file::verify_with(dir.path(), &both).unwrap();
    assert!(report.fully_covered());
    let ids: Vec<String> = Query::new()
        .kind("checkpoint")
        .open(dir.path())
        .unwrap()
        .map(|r| {
            r.unwrap().event["tollgate.checkpoint.key_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids, ["k1", "k1", "k2", "k2"]);
    assert!(matches!(
        file::verify_keyed(dir.path(), &k2),
        Err(VerifyError::CheckpointKeyUnknown { .. })
    ));
}

#[test]
fn flushes_write_checkpoints_and_records_alone_do_not() {
    let dir = temp_dir("flush");
    let config = FileSinkConfig::default() // EveryRecord: each record fsync'd on its own
        .checkpoint(
            CheckpointConfig::new(k1())
                .every_records(None)
                .every_ms(None),
        );
    let (sink, _) = FileSink::open(dir.path(), config).unwrap();
    for seq in 1..=3 {
        record(&sink, seq);
    }
    let r = file::verify_keyed(dir.path(), &k1()).unwrap();
    assert_eq!((r.records, r.checkpoints, r.uncovered_records), (3, 0, 3));
    sink.flush().unwrap();
    let r = file::verify_keyed(dir.path(), &k1()).unwrap();
    assert_eq!((r.records, r.checkpoints, r.uncovered_records), (4, 1, 0));
    sink.flush().unwrap(); // nothing new: no new checkpoint
    assert_eq!(file::verify(dir.path()).unwrap().records, 4);
    record(&sink, 4);
    sink.flush().unwrap();
    let r = file::verify_keyed(dir.path(), &k1()).unwrap();
    assert_eq!((r.records, r.checkpoints, r.uncovered_records), (6, 2, 0));
    sink.close().unwrap(); // already covered: close adds nothing
    assert_eq!(file::verify(dir.path()).unwrap().records, 6);
}

#[test]
fn timed_checkpoints_follow_uncovered_records_and_not_idleness() {
    let dir = temp_dir("timed");
    let config = FileSinkConfig::default()
        .durability(Durability::OsBuffered)
        .checkpoint(
            CheckpointConfig::new(k1())
                .every_records(None)
                .every_ms(Some(30)),
        );
    let (sink, _) = FileSink::open(dir.path(), config).unwrap();
    record(&sink, 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = file::verify_keyed(dir.path(), &k1()).unwrap();
        if r.checkpoints == 1 {
            assert_eq!(r.uncovered_records, 0);
            break;
        }
        assert!(Instant::now() < deadline, "no timed checkpoint");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(
        file::verify(dir.path()).unwrap().checkpoints,
        1,
        "idle: none"
    );
    drop(sink);
}

#[test]
fn reopening_adopts_uncovered_records_and_says_so() {
    let dir = temp_dir("adopt");
    write(dir.path(), FileSinkConfig::default(), 5); // no checkpoints
    let recovery = write(dir.path(), keyed(k1(), None), 2);
    assert_eq!(recovery.adopted_records, 5);
    assert_eq!((recovery.records, recovery.last_seq), (6, 6)); // with the adoption checkpoint
    // adoption checkpoint (6), two events (7, 8), close checkpoint (9)
    let r = file::verify_keyed(dir.path(), &k1()).unwrap();
    assert_eq!((r.records, r.checkpoints), (9, 2));
    assert_eq!((r.adopted_records, r.uncovered_records), (5, 0));
    let first = Query::new()
        .kind("checkpoint")
        .open(dir.path())
        .unwrap()
        .next();
    let first = first.unwrap().unwrap();
    assert_eq!(first.seq, 6);
    assert_eq!(first.event["tollgate.checkpoint.adopted"], 5);
    // A log that ended with a checkpoint has nothing to adopt.
    let again = write(dir.path(), keyed(k1(), None), 0);
    assert_eq!(again.adopted_records, 0);
    assert_eq!(file::verify(dir.path()).unwrap().records, 9);
}

#[test]
fn concurrent_writers_under_a_key_keep_one_verified_chain() {
    let dir = temp_dir("threads");
    let config = FileSinkConfig::default().queue_capacity(8).checkpoint(
        CheckpointConfig::new(k1())
            .every_records(Some(7))
            .every_ms(Some(5)),
    );
    let (sink, _) = FileSink::open(dir.path(), config).unwrap();
    let sink = Arc::new(sink);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let sink = &sink;
            s.spawn(move || {
                for i in 0..100 {
                    record(sink, t * 1000 + i);
                    if i % 37 == 0 {
                        sink.flush().unwrap();
                    }
                }
            });
        }
    });
    Arc::try_unwrap(sink).unwrap().close().unwrap();
    let r = file::verify_keyed(dir.path(), &k1()).unwrap();
    assert_eq!(r.records - r.checkpoints, 400);
    assert!(r.checkpoints >= 400 / 7);
    assert!(r.fully_covered());
}

#[test]
fn keys_validate_and_never_show_their_secret() {
    assert!(matches!(
        CheckpointKey::new("k", vec![1; 31]),
        Err(CheckpointKeyError::TooShort { len: 31, .. })
    ));
    for id in ["", "has space", "x/y", &"a".repeat(65)] {
        assert!(
            matches!(
                CheckpointKey::new(id, vec![1; 32]),
                Err(CheckpointKeyError::BadId { .. })
            ),
            "{id:?}"
        );
    }
    assert!(matches!(
        CheckpointKey::from_hex("k", "abc"),
        Err(CheckpointKeyError::BadHex { .. })
    ));
    let secret_hex = "5ec7e75ec7e7".repeat(6);
    let k = CheckpointKey::from_hex("k.1_x-2", &secret_hex).unwrap();
    assert_eq!(k.id(), "k.1_x-2");
    let shown = format!("{k:?}");
    assert!(
        shown.contains("k.1_x-2") && shown.contains("REDACTED"),
        "{shown}"
    );
    assert!(!shown.contains("5ec7"), "{shown}");
    let config = format!("{:?}", keyed(k.clone(), Some(1)));
    assert!(!config.contains("5ec7"), "{config}");

    let dir = temp_dir("keyfile");
    let path = dir.path().join("key");
    fs::write(&path, format!("k.1_x-2:{secret_hex}\n")).unwrap();
    assert_eq!(CheckpointKey::from_key_file(&path).unwrap(), k);
    for bad in [
        "no colon here".to_owned(),
        format!("k:{}", "zz".repeat(32)),
        format!("k:{}", "ab".repeat(8)),
        format!("k:{secret_hex}\nsecond line"),
    ] {
        fs::write(&path, &bad).unwrap();
        let err = CheckpointKey::from_key_file(&path).unwrap_err();
        assert!(matches!(err, CheckpointKeyError::KeyFile { .. }), "{err}");
        assert!(!err.to_string().contains("abab"), "{err}");
    }
    assert!(CheckpointKey::from_key_file(dir.path().join("missing")).is_err());
}

#[test]
fn zero_cadences_are_refused_with_the_field_named() {
    let dir = temp_dir("cadence");
    for (config, field) in [
        (
            CheckpointConfig::new(k1()).every_records(Some(0)),
            "every_records",
        ),
        (CheckpointConfig::new(k1()).every_ms(Some(0)), "every_ms"),
    ] {
        let err =
            FileSink::open(dir.path(), FileSinkConfig::default().checkpoint(config)).unwrap_err();
        assert!(err.to_string().contains(field), "{err}");
    }
}
