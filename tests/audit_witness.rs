//! Tail truncation and witnesses (issue 10, finding 16): records cut off the end of a log pass
//! the chain (and often the checkpoints); a witness outside the directory catches them.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tollgate::audit::file::{
    self, CheckpointConfig, CheckpointKey, DirWitness, FileSink, FileSinkConfig, Notice,
    RepairOptions, TracingWitness, VerifyError, VerifyOptions, Witness, WitnessConfig,
    WitnessedHead,
};
use tollgate::audit::{AuditEvent, AuditSink, EventKind};
use tollgate::breaker::{Alert, AlertKind, AlertSink};

#[path = "common/tempdir.rs"]
mod tempdir;

use tempfile::TempDir;

/// A fresh directory for one test, deleted when the value drops: the log in `log/`, the witness
/// in `elsewhere/`.
fn temp_dir(name: &str) -> TempDir {
    let dir = tempdir::temp_dir("audit-witness", name);
    fs::create_dir(dir.path().join("log")).unwrap();
    fs::create_dir(dir.path().join("elsewhere")).unwrap();
    dir
}

/// Paths inside a test's directory.
trait WitnessDir {
    /// The log directory.
    fn log(&self) -> PathBuf;
    /// A witness whose head file is outside the log directory.
    fn witness(&self) -> DirWitness;
    /// The log's segment files, in order.
    fn segments(&self) -> Vec<PathBuf>;
}

impl WitnessDir for TempDir {
    fn log(&self) -> PathBuf {
        self.path().join("log")
    }

    fn witness(&self) -> DirWitness {
        DirWitness::new(self.path().join("elsewhere").join("head.json"))
    }

    fn segments(&self) -> Vec<PathBuf> {
        let mut s: Vec<PathBuf> = fs::read_dir(self.log())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        s.sort();
        s
    }
}

fn event(seq: u64) -> AuditEvent<'static> {
    AuditEvent::new(
        seq,
        SystemTime::now(),
        None,
        None,
        EventKind::RunFinished {
            duration: Duration::ZERO,
        },
    )
}

fn witnessed(dir: &TempDir, config: FileSinkConfig) -> FileSinkConfig {
    config.witness(WitnessConfig::new(Arc::new(dir.witness())).every_ms(60_000))
}

/// Thirty records in small segments, closed (which publishes the head).
fn written(dir: &TempDir, config: FileSinkConfig) {
    let (sink, _) = FileSink::open(dir.log(), config.max_segment_bytes(1_000)).unwrap();
    for seq in 1..=30 {
        sink.record(&event(seq)).unwrap();
    }
    sink.close().unwrap();
}

fn with_witness(dir: &TempDir) -> VerifyOptions {
    VerifyOptions::new().witness(&dir.witness()).unwrap()
}

#[test]
fn the_witness_catches_a_deleted_last_segment() {
    let dir = temp_dir("last-segment");
    written(&dir, witnessed(&dir, FileSinkConfig::default()));
    let head = dir
        .witness()
        .latest()
        .unwrap()
        .expect("close published the head");
    assert_eq!(head.seq, 30);
    assert_eq!(head.hash, file::verify(dir.log()).unwrap().head_hash);
    assert!(file::verify_with(dir.log(), &with_witness(&dir)).is_ok());

    fs::remove_file(dir.segments().last().unwrap()).unwrap();
    // The chain alone reads a perfectly good shorter log...
    let shorter = file::verify(dir.log()).unwrap();
    assert!(shorter.last_seq < 30);
    // ...the witness does not.
    match file::verify_with(dir.log(), &with_witness(&dir)).unwrap_err() {
        VerifyError::BehindWitness {
            witnessed_seq,
            last_seq,
            ..
        } => assert_eq!((witnessed_seq, last_seq), (30, shorter.last_seq)),
        e => panic!("{e}"),
    }
    // And a sink will not reopen it (it would overwrite the evidence with a new head).
    let err = FileSink::open(dir.log(), witnessed(&dir, FileSinkConfig::default())).unwrap_err();
    assert!(
        matches!(
            file::corruption(&err),
            Some(VerifyError::BehindWitness { .. })
        ),
        "{err}"
    );
    assert_eq!(dir.witness().latest().unwrap().unwrap().seq, 30);
}

#[test]
fn the_witness_catches_a_truncated_tail_even_right_after_a_checkpoint() {
    let dir = temp_dir("tail");
    let key = CheckpointKey::new("k1", vec![3; 32]).unwrap();
    let keyed = FileSinkConfig::default()
        .checkpoint(CheckpointConfig::new(key.clone()).every_records(Some(5)));
    written(&dir, witnessed(&dir, keyed));
    let head = dir.witness().latest().unwrap().unwrap();
    assert_eq!(head.key_id.as_deref(), Some("k1"), "a keyed head is signed");
    // Cut the log right after its second-to-last checkpoint: the keyed chain cannot tell.
    let mut ends: Vec<(PathBuf, usize)> = Vec::new();
    for seg in dir.segments() {
        let text = fs::read_to_string(&seg).unwrap();
        for (i, _) in text.match_indices("\"event\":{\"event\":\"checkpoint\"") {
            ends.push((seg.clone(), i + text[i..].find('\n').unwrap() + 1));
        }
    }
    assert!(ends.len() >= 2);
    let (seg, cut) = ends[ends.len() - 2].clone();
    let text = fs::read_to_string(&seg).unwrap();
    fs::write(&seg, &text[..cut]).unwrap();
    for later in dir.segments().into_iter().filter(|s| *s > seg) {
        fs::remove_file(later).unwrap();
    }
    let v = file::verify_keyed(dir.log(), &key).unwrap();
    assert_eq!(v.uncovered_records, 0, "the cut is invisible to the key");
    let options = with_witness(&dir).key(key);
    assert!(matches!(
        file::verify_with(dir.log(), &options),
        Err(VerifyError::BehindWitness { witnessed_seq, .. }) if witnessed_seq == head.seq
    ));
}

#[test]
fn a_rewritten_tail_and_a_forged_head_are_both_caught() {
    let dir = temp_dir("rewritten");
    let key = CheckpointKey::new("k1", vec![4; 32]).unwrap();
    written(
        &dir,
        witnessed(
            &dir,
            FileSinkConfig::default().checkpoint(CheckpointConfig::new(key.clone())),
        ),
    );
    let head = dir.witness().latest().unwrap().unwrap();
    // A head forged without the key (say, one that hides the records after seq 3).
    let mut forged = head.clone();
    forged.seq = 3;
    let options = VerifyOptions::new().key(key.clone()).witnessed_head(forged);
    assert!(matches!(
        file::verify_with(dir.log(), &options),
        Err(VerifyError::WitnessInvalid { seq: 3, .. })
    ));
    // The witnessed record itself changed (the same seq, another hash).
    let wrong = WitnessedHead::new(head.seq, "ab".repeat(32), 1);
    let options = VerifyOptions::new().witnessed_head(wrong);
    assert!(matches!(
        file::verify_with(dir.log(), &options),
        Err(VerifyError::WitnessMismatch { seq, .. }) if seq == head.seq
    ));
}

#[test]
fn a_flush_publishes_the_durable_head_and_a_log_without_a_witness_says_nothing() {
    let dir = temp_dir("flush");
    let (sink, rec) =
        FileSink::open(dir.log(), witnessed(&dir, FileSinkConfig::default())).unwrap();
    assert_eq!(rec.witnessed_seq, None);
    for seq in 1..=3 {
        sink.record(&event(seq)).unwrap();
    }
    sink.flush().unwrap();
    assert_eq!(dir.witness().latest().unwrap().unwrap().seq, 3);
    drop(sink);
    let (sink, rec) =
        FileSink::open(dir.log(), witnessed(&dir, FileSinkConfig::default())).unwrap();
    assert_eq!(rec.witnessed_seq, Some(3));
    drop(sink);
    assert_eq!(
        file::verify_with(dir.log(), &with_witness(&dir))
            .unwrap()
            .witnessed_seq,
        Some(3)
    );
    assert_eq!(file::verify(dir.log()).unwrap().witnessed_seq, None);
    // The tracing witness forwards heads; it cannot read them back.
    assert!(
        TracingWitness
            .publish(&WitnessedHead::new(1, "00".repeat(32), 1))
            .is_ok()
    );
    assert_eq!(TracingWitness.latest().unwrap(), None);
}

#[test]
fn records_removed_with_the_witnessed_head_are_declared_gone_by_repair() {
    let dir = temp_dir("repair");
    written(&dir, witnessed(&dir, FileSinkConfig::default()));
    fs::remove_file(dir.segments().last().unwrap()).unwrap();
    let shorter = file::verify(dir.log()).unwrap().last_seq;
    let options = RepairOptions::new()
        .witness(WitnessConfig::new(Arc::new(dir.witness())))
        .reason("the last segment was deleted");
    let plan = FileSink::plan_repair(dir.log(), &options)
        .unwrap()
        .expect("behind the witness");
    assert_eq!((plan.after_seq, plan.removed_through_seq), (shorter, 30));
    assert_eq!(plan.removed_bytes, 0);
    let done = FileSink::repair(dir.log(), &options, &plan).unwrap();
    assert_eq!(done.declaration_seq, 31);
    let v = file::verify_with(dir.log(), &with_witness(&dir)).unwrap();
    assert!(v.notices.iter().any(|n| matches!(n,
        Notice::Repaired { after_seq, removed_through_seq: 30, .. } if *after_seq == shorter)));
    assert_eq!(dir.witness().latest().unwrap().unwrap().seq, 31);
    let (sink, _) = FileSink::open(dir.log(), witnessed(&dir, FileSinkConfig::default())).unwrap();
    drop(sink);
}

/// A witness that refuses every head.
struct Down;

impl Witness for Down {
    fn publish(&self, _: &WitnessedHead) -> io::Result<()> {
        Err(io::Error::other("witness host unreachable"))
    }
    fn latest(&self) -> io::Result<Option<WitnessedHead>> {
        Ok(None)
    }
}

#[derive(Default)]
struct Alerts(Mutex<Vec<Alert>>);

impl AlertSink for Alerts {
    fn alert(&self, alert: &Alert) {
        self.0.lock().push(alert.clone());
    }
}

#[test]
fn a_witness_that_refuses_heads_is_alerted_once_and_the_log_goes_on() {
    let dir = temp_dir("down");
    let alerts = Arc::new(Alerts::default());
    let config = FileSinkConfig::default()
        .witness(WitnessConfig::new(Arc::new(Down)))
        .alerts(alerts.clone());
    let (sink, _) = FileSink::open(dir.log(), config).unwrap();
    for seq in 1..=3 {
        sink.record(&event(seq)).unwrap();
        sink.flush().unwrap();
    }
    sink.close().unwrap();
    assert_eq!(file::verify(dir.log()).unwrap().records, 3);
    let got = alerts.0.lock();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].kind, AlertKind::AuditWitnessFailed);
    assert!(got[0].detail.contains("unreachable"));
}

#[test]
fn an_unreadable_witness_makes_open_refuse() {
    let dir = temp_dir("unreadable");
    written(&dir, witnessed(&dir, FileSinkConfig::default()));
    fs::write(dir.witness().path(), b"not json").unwrap();
    let err = FileSink::open(dir.log(), witnessed(&dir, FileSinkConfig::default())).unwrap_err();
    assert!(
        matches!(
            file::corruption(&err),
            Some(VerifyError::WitnessInvalid { .. })
        ),
        "{err}"
    );
}
