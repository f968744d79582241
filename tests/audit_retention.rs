//! Retention: a policy per class drops exactly the expired prefix of segments (never the live
//! one, never past an unknown or kept-forever class), the chain still verifies after the drop
//! and after reopening, a hand-deleted segment is still detected, a changed segment is refused,
//! an interrupted deletion verifies and is finished by `open` only when a checkpoint its writer
//! wrote authenticates it, a forged declaration is refused, and it all works on a live sink.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use hmac::{Hmac, Mac};
use tollgate::ActionBoundary;
use tollgate::audit::file::{
    self, CheckpointConfig, CheckpointKey, Durability, FileSink, FileSinkConfig, KeptReason,
    Notice, RetentionPolicy, VerifyError,
};
use tollgate::audit::query::Query;
use tollgate::audit::{AuditEvent, AuditSink, EventKind};

#[path = "common/tempdir.rs"]
mod tempdir;

use tempfile::TempDir;

/// A fresh directory for one test under the system temp dir, deleted when the value drops.
fn temp_dir(name: &str) -> TempDir {
    tempdir::temp_dir("audit-retention", name)
}

/// Paths inside a test's log directory.
trait LogDir {
    /// Segment `index` of the log written straight into the directory.
    fn seg(&self, index: u64) -> PathBuf;
    /// The indices of the segments present, in order.
    fn segments(&self) -> Vec<u64>;
}

impl LogDir for TempDir {
    fn seg(&self, index: u64) -> PathBuf {
        self.path().join(format!("audit-{index:06}.jsonl"))
    }

    fn segments(&self) -> Vec<u64> {
        let mut v: Vec<u64> = fs::read_dir(self.path())
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                name.strip_prefix("audit-")?
                    .strip_suffix(".jsonl")?
                    .parse()
                    .ok()
            })
            .collect();
        v.sort_unstable();
        v
    }
}

const DAY: Duration = Duration::from_secs(86_400);

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// Tools whose tiers carry the retention classes `phi`, `legal_hold` and `mystery`; `look`
/// carries none (class `default`).
fn boundary() -> ActionBoundary {
    ActionBoundary::from_json(
        r#"{
        "tiers": ["public", "phi", "hold", "odd"],
        "tools": {
            "look": {"effect": "read", "tier": "public"},
            "chart": {"effect": "read", "tier": "phi"},
            "keep": {"effect": "read", "tier": "hold"},
            "odd": {"effect": "read", "tier": "odd"}
        },
        "retention": {"phi": "phi", "hold": "legal_hold", "odd": "mystery"}
    }"#,
    )
    .unwrap()
}

/// One record per segment: every record after the first in a segment starts a new one.
fn one_per_segment() -> FileSinkConfig {
    FileSinkConfig::default()
        .durability(Durability::OsBuffered)
        .max_segment_bytes(1)
}

/// Records one event at `at` whose class is that of `tool`'s tier.
fn record(sink: &FileSink, b: &ActionBoundary, tool: &str, seq: u64, at: SystemTime) {
    let event = AuditEvent::new(
        seq,
        at,
        None,
        None,
        EventKind::RunFinished {
            duration: Duration::ZERO,
        },
    )
    .with_marks(b.audit_marks(tool));
    sink.record(&event).unwrap();
}

fn policy() -> RetentionPolicy {
    RetentionPolicy::new(Some(7 * DAY))
        .class("phi", Some(30 * DAY))
        .class("legal_hold", None)
}

#[test]
fn retain_drops_exactly_the_expired_prefix_and_the_chain_still_verifies() {
    let dir = temp_dir("prefix");
    let b = boundary();
    let (sink, _) = FileSink::open(dir.path(), one_per_segment()).unwrap();
    // seq: tool (class), time
    let plan = [
        ("look", t0()),            // 1 default, expires t0 + 7d
        ("look", t0() + DAY),      // 2 default, expires t0 + 8d
        ("chart", t0() + 2 * DAY), // 3 phi, expires t0 + 32d
        ("look", t0() + 3 * DAY),  // 4
        ("look", t0() + 20 * DAY), // 5
        ("look", t0() + 21 * DAY), // 6, in the live segment
    ];
    for (i, (tool, at)) in plan.iter().enumerate() {
        record(&sink, &b, tool, i as u64 + 1, *at);
    }
    sink.flush().unwrap();
    assert_eq!(dir.segments(), [1, 2, 3, 4, 5, 6]);
    let seg1_head = file::verify(dir.path()).unwrap();
    assert_eq!(seg1_head.records, 6);

    // At exactly t0 + 8d record 2 is not yet *past* its keep: only segment 1 goes.
    let r = sink.retain(&policy(), t0() + 8 * DAY).unwrap();
    assert_eq!(r.segments_dropped, 1);
    assert_eq!(r.records_dropped, 1);
    assert_eq!(r.dropped_seqs, Some(1..=1));
    assert_eq!(r.declaration_seq, Some(7));
    let kept = r.kept.unwrap();
    assert_eq!((kept.segment, kept.seq), (dir.seg(2), Some(2)));
    assert_eq!(
        kept.reason,
        KeptReason::NotExpired {
            class: "default".into(),
            expires_unix_nano: nanos(t0() + 8 * DAY)
        }
    );
    assert_eq!(dir.segments(), [2, 3, 4, 5, 6, 7]);
    let v = file::verify(dir.path()).unwrap();
    assert_eq!((v.first_seq, v.last_seq, v.records), (2, 7, 6));
    assert_eq!(v.dropped_through, 1);
    let decl = Query::new()
        .kind("retention_applied")
        .open(dir.path())
        .unwrap()
        .next();
    let decl = decl.unwrap().unwrap();
    assert_eq!(decl.seq, 7);
    assert_eq!(decl.event["tollgate.retention.dropped.first_seq"], 1);
    assert_eq!(decl.event["tollgate.retention.dropped.last_seq"], 1);
    assert_eq!(
        decl.event["tollgate.retention.dropped.head"].as_str(),
        r.dropped_head.as_deref()
    );
    assert_eq!(
        decl.event["tollgate.retention.policy"]["phi"],
        30.0 * 86_400.0
    );
    assert!(decl.event["tollgate.retention.policy"]["legal_hold"].is_null());
    assert_eq!(
        decl.event["tollgate.retention.evaluated_at"],
        nanos(t0() + 8 * DAY)
    );

    // One nanosecond later record 2 has expired; record 3 (phi, 30 days) holds the rest.
    let r = sink
        .retain(&policy(), t0() + 8 * DAY + Duration::from_nanos(1))
        .unwrap();
    assert_eq!(r.dropped_seqs, Some(2..=2));
    assert!(matches!(
        r.kept.unwrap().reason,
        KeptReason::NotExpired { class, .. } if class == "phi"
    ));

    // Much later everything closed goes, declarations included; the live segment stays.
    let r = sink.retain(&policy(), t0() + 40 * DAY).unwrap();
    assert_eq!(r.dropped_seqs, Some(3..=7));
    assert_eq!(r.segments_dropped, 5);
    assert_eq!(r.kept.unwrap().reason, KeptReason::LiveSegment);
    sink.close().unwrap();
    let v = file::verify(dir.path()).unwrap();
    assert_eq!((v.first_seq, v.last_seq, v.dropped_through), (8, 9, 7));
    let left: Vec<String> = Query::new()
        .open(dir.path())
        .unwrap()
        .map(|r| r.unwrap().event["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left, ["retention_applied", "retention_applied"]);

    // Reopening continues the chain after a dropped prefix.
    let (sink, rec) = FileSink::open(dir.path(), one_per_segment()).unwrap();
    assert_eq!(
        (rec.records, rec.last_seq, rec.retention_completed),
        (2, 9, 0)
    );
    record(&sink, &b, "look", 7, t0() + 41 * DAY);
    sink.close().unwrap();
    let v = file::verify(dir.path()).unwrap();
    assert_eq!((v.first_seq, v.last_seq), (8, 10));
}

#[test]
fn a_hand_deleted_segment_is_still_detected_after_retention() {
    let dir = temp_dir("by-hand");
    let b = boundary();
    let (sink, _) = FileSink::open(dir.path(), one_per_segment()).unwrap();
    for seq in 1..=5 {
        record(&sink, &b, "look", seq, t0());
    }
    record(&sink, &b, "look", 6, t0() + 30 * DAY);
    record(&sink, &b, "look", 7, t0() + 30 * DAY);
    let r = sink.retain(&policy(), t0() + 10 * DAY).unwrap();
    assert_eq!(r.dropped_seqs, Some(1..=5));
    sink.close().unwrap();
    assert_eq!(file::verify(dir.path()).unwrap().first_seq, 6);

    // Removing the oldest remaining segment: the prefix is no longer what was declared.
    let saved = fs::read(dir.seg(6)).unwrap();
    fs::remove_file(dir.seg(6)).unwrap();
    match file::verify(dir.path()).unwrap_err() {
        VerifyError::SeqGap {
            at,
            expected,
            found,
        } => {
            assert_eq!((expected, found), (6, 7));
            assert_eq!((at.file, at.line), (dir.seg(7), 1));
        }
        e => panic!("{e}"),
    }
    let err = FileSink::open(dir.path(), one_per_segment()).unwrap_err();
    assert!(matches!(
        file::corruption(&err),
        Some(VerifyError::SeqGap { expected: 6, .. })
    ));
    fs::write(dir.seg(6), &saved).unwrap();

    // Removing one in the middle.
    let saved7 = fs::read(dir.seg(7)).unwrap();
    fs::remove_file(dir.seg(7)).unwrap();
    assert!(matches!(
        file::verify(dir.path()),
        Err(VerifyError::MissingSegment { expected }) if expected == dir.seg(7)
    ));
    fs::write(dir.seg(7), saved7).unwrap();
    assert!(file::verify(dir.path()).is_ok());

    // Removing every record, leaving an empty segment numbered after 1: history is gone and
    // nothing says why.
    for i in dir.segments() {
        fs::remove_file(dir.seg(i)).unwrap();
    }
    fs::write(dir.seg(9), b"").unwrap();
    assert!(matches!(
        file::verify(dir.path()),
        Err(VerifyError::MissingSegment { expected }) if expected == dir.seg(1)
    ));
    assert!(FileSink::open(dir.path(), one_per_segment()).is_err());
}

#[test]
fn unknown_and_forever_classes_keep_their_segment_and_everything_after() {
    for (tool, reason) in [
        (
            "odd",
            KeptReason::UnknownClass {
                class: "mystery".into(),
            },
        ),
        (
            "keep",
            KeptReason::KeptForever {
                class: "legal_hold".into(),
            },
        ),
    ] {
        let dir = temp_dir("kept");
        let b = boundary();
        let (sink, _) = FileSink::open(dir.path(), one_per_segment()).unwrap();
        record(&sink, &b, "look", 1, t0());
        record(&sink, &b, tool, 2, t0());
        record(&sink, &b, "look", 3, t0());
        record(&sink, &b, "look", 4, t0());
        let far = t0() + 10_000 * DAY;
        let r = sink.retain(&policy(), far).unwrap();
        assert_eq!(r.dropped_seqs, Some(1..=1), "{tool}");
        let kept = r.kept.unwrap();
        assert_eq!((kept.seq, kept.reason), (Some(2), reason.clone()));
        // Nothing more goes, however late.
        let r = sink.retain(&policy(), far + 10_000 * DAY).unwrap();
        assert_eq!((r.segments_dropped, r.declaration_seq), (0, None));
        assert_eq!(r.kept.unwrap().reason, reason);
        sink.close().unwrap();
        let v = file::verify(dir.path()).unwrap();
        assert_eq!((v.first_seq, v.last_seq), (2, 5));
    }

    // A policy that keeps the default class forever drops nothing and writes nothing.
    let dir = temp_dir("forever");
    let b = boundary();
    let (sink, _) = FileSink::open(dir.path(), one_per_segment()).unwrap();
    for seq in 1..=3 {
        record(&sink, &b, "look", seq, t0());
    }
    let r = sink
        .retain(&RetentionPolicy::new(None), t0() + 10_000 * DAY)
        .unwrap();
    assert_eq!(
        (r.segments_dropped, r.dropped_seqs, r.declaration_seq),
        (0, None, None)
    );
    sink.close().unwrap();
    assert_eq!(file::verify(dir.path()).unwrap().records, 3);
}

#[test]
fn a_segment_changed_on_disk_is_refused_not_judged() {
    let dir = temp_dir("changed");
    let b = boundary();
    let (sink, _) = FileSink::open(dir.path(), one_per_segment()).unwrap();
    record(&sink, &b, "look", 1, t0() + 100 * DAY);
    record(&sink, &b, "look", 2, t0() + 100 * DAY);
    record(&sink, &b, "look", 3, t0() + 100 * DAY);
    sink.flush().unwrap();
    // Someone back-dates record 1 so that retention would delete it.
    let text = fs::read_to_string(dir.seg(1)).unwrap();
    let new_ns = nanos(t0() + 100 * DAY).to_string();
    let forged = text.replace(&new_ns, &nanos(t0()).to_string());
    assert_ne!(forged, text);
    fs::write(dir.seg(1), &forged).unwrap();
    let err = sink.retain(&policy(), t0() + 10 * DAY).unwrap_err();
    assert!(
        matches!(file::corruption(&err), Some(VerifyError::Modified { at }) if at.seq == Some(1)),
        "{err}"
    );
    assert_eq!(dir.segments(), [1, 2, 3], "nothing deleted");
    drop(sink);
}

/// A keyed log of one record per segment: 4 old records and a new one, retained at
/// `t0 + 10 days` (drops 1..=4), with the segment files as they were before the deletion.
fn retained_log(dir: &TempDir, config: FileSinkConfig) -> (file::VerifyReport, Vec<Vec<u8>>) {
    let b = boundary();
    let (sink, _) = FileSink::open(dir.path(), config).unwrap();
    for seq in 1..=4 {
        record(&sink, &b, "look", seq, t0());
    }
    record(&sink, &b, "look", 5, t0() + 30 * DAY);
    sink.flush().unwrap();
    let saved: Vec<Vec<u8>> = (1..=4).map(|i| fs::read(dir.seg(i)).unwrap()).collect();
    let r = sink.retain(&policy(), t0() + 10 * DAY).unwrap();
    assert_eq!(r.dropped_seqs, Some(1..=4));
    sink.close().unwrap();
    (file::verify(dir.path()).unwrap(), saved)
}

fn keyed_one_per_segment(key: &CheckpointKey) -> FileSinkConfig {
    one_per_segment().checkpoint(CheckpointConfig::new(key.clone()).every_records(Some(1000)))
}

#[test]
fn an_interrupted_deletion_verifies_and_a_keyed_open_finishes_it() {
    let dir = temp_dir("interrupted");
    let key = CheckpointKey::new("k1", vec![3; 32]).unwrap();
    let (done, saved) = retained_log(&dir, keyed_one_per_segment(&key));

    // A crash after the declaration, before any deletion: everything is still there.
    for (i, data) in saved.iter().enumerate() {
        fs::write(dir.seg(i as u64 + 1), data).unwrap();
    }
    let v = file::verify_keyed(dir.path(), &key).unwrap();
    assert_eq!((v.first_seq, v.last_seq), (1, done.last_seq));
    assert!(
        v.notices
            .iter()
            .any(|n| matches!(n, Notice::RetentionPending { through: 4, .. }))
    );
    // A crash half-way: the oldest two gone, the next two not.
    fs::remove_file(dir.seg(1)).unwrap();
    fs::remove_file(dir.seg(2)).unwrap();
    let v = file::verify(dir.path()).unwrap();
    assert_eq!(v.first_seq, 3);

    // The declaration is covered by the checkpoint its writer wrote right after it: finished.
    let (sink, rec) = FileSink::open(dir.path(), keyed_one_per_segment(&key)).unwrap();
    assert_eq!(rec.retention_completed, 2);
    assert_eq!(rec.records, done.records);
    drop(sink);
    assert_eq!(dir.segments()[0], 5);
    let v = file::verify_keyed(dir.path(), &key).unwrap();
    assert_eq!((v.first_seq, v.dropped_through), (5, 4));
    assert_eq!(v.head_hash, done.head_hash);
}

#[test]
fn without_a_key_open_refuses_to_finish_a_deletion_and_names_the_declaration() {
    let dir = temp_dir("interrupted-keyless");
    let (done, saved) = retained_log(&dir, one_per_segment());
    for (i, data) in saved.iter().enumerate() {
        fs::write(dir.seg(i as u64 + 1), data).unwrap();
    }
    // Nothing can authenticate the declaration, so nothing is deleted on its word.
    let err = FileSink::open(dir.path(), one_per_segment()).unwrap_err();
    match file::corruption(&err) {
        Some(VerifyError::RetentionNotAuthenticated { at, seq, through }) => {
            assert_eq!(*through, 4);
            assert_eq!(at.seq, Some(*seq));
            assert!(*seq > 5 && *seq <= done.last_seq);
        }
        other => panic!("{other:?}: {err}"),
    }
    assert_eq!(dir.segments()[0], 1, "nothing deleted");
    assert!(err.to_string().contains("nothing was deleted"), "{err}");
}

/// The event of a `retention_applied` declaration dropping `1..=last` whose last record's hash
/// is `head`.
fn declaration(last: u64, head: &str) -> String {
    format!(
        "{{\"event\":\"retention_applied\",\"time_unix_nano\":1,\
         \"tollgate.retention.evaluated_at\":1,\"tollgate.retention.dropped.first_seq\":1,\
         \"tollgate.retention.dropped.last_seq\":{last},\"tollgate.retention.dropped.head\":\"{head}\",\
         \"tollgate.retention.dropped.first_segment\":1,\
         \"tollgate.retention.dropped.last_segment\":{last},\"tollgate.retention.policy\":{{}}}}"
    )
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Appends `event` as the next record of the log, correctly chained (no key needed); returns
/// its seq and hash.
fn append_chained(dir: &TempDir, event: &str) -> (u64, String) {
    let v = file::verify(dir.path()).unwrap();
    let seq = v.last_seq + 1;
    let hash = sha256_hex(format!("{}\n{seq}\n{event}", v.head_hash).as_bytes());
    let last = *dir.segments().last().unwrap();
    let mut text = fs::read_to_string(dir.seg(last)).unwrap();
    text.push_str(&format!(
        "{{\"seq\":{seq},\"prev\":\"{}\",\"hash\":\"{hash}\",\"event\":{event}}}\n",
        v.head_hash
    ));
    fs::write(dir.seg(last), text).unwrap();
    (seq, hash)
}

fn record_hash(dir: &TempDir, seq: u64) -> String {
    Query::new()
        .open(dir.path())
        .unwrap()
        .map(|r| r.unwrap())
        .find(|r| r.seq == seq)
        .unwrap()
        .hash
}

#[test]
fn forged_retention_record_is_refused_on_open() {
    // Write access to the directory, no key: one correctly chained declaration claiming
    // records 1..=3 were dropped (they are still there: a deletion "to finish").
    let dir = temp_dir("forged-pending");
    let key = CheckpointKey::new("k1", vec![4; 32]).unwrap();
    let config = keyed_one_per_segment(&key);
    let b = boundary();
    let (sink, _) = FileSink::open(dir.path(), config.clone()).unwrap();
    for seq in 1..=3 {
        record(&sink, &b, "look", seq, SystemTime::now());
    }
    sink.close().unwrap(); // 3 events, checkpoint 4
    let head3 = record_hash(&dir, 3);
    let (forged, _) = append_chained(&dir, &declaration(3, &head3));
    let before = dir.segments();

    for config in [config.clone(), one_per_segment()] {
        let err = FileSink::open(dir.path(), config).unwrap_err();
        match file::corruption(&err) {
            Some(VerifyError::RetentionNotAuthenticated { seq, through, at }) => {
                assert_eq!((*seq, *through), (forged, 3));
                assert_eq!(at.seq, Some(forged));
            }
            other => panic!("{other:?}: {err}"),
        }
        assert_eq!(dir.segments(), before, "nothing deleted");
    }
    // The log itself still reads as it is: the declaration is uncovered, its drop pending.
    let v = file::verify_keyed(dir.path(), &key).unwrap();
    assert_eq!((v.first_seq, v.uncovered_records), (1, 1));
    assert!(!v.fully_covered());
}

/// The checkpoint record a sink with `key` writes over record `seq` (hash `head`), adopting
/// `adopted` records: what an `open` that signed over a forged tail would have written.
fn checkpoint_event(key: &[u8], seq: u64, head: &str, adopted: u64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(format!("tollgate-audit-checkpoint-v1\nk1\n{seq}\n{head}\n5\n{adopted}").as_bytes());
    let tag: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "{{\"event\":\"checkpoint\",\"time_unix_nano\":5,\"tollgate.checkpoint.seq\":{seq},\
         \"tollgate.checkpoint.head\":\"{head}\",\"tollgate.checkpoint.adopted\":{adopted},\
         \"tollgate.checkpoint.key_id\":\"k1\",\"tollgate.checkpoint.mac\":\"{tag}\"}}"
    )
}

#[test]
fn a_forged_declaration_signed_over_by_an_adoption_still_authorises_nothing() {
    // The laundering path of the old `open`: forged declaration, then an adoption checkpoint
    // over it (signed with the key, as a sink reopening the log would), then the deletion.
    let dir = temp_dir("laundered");
    let secret = vec![6; 32];
    let key = CheckpointKey::new("k1", secret.clone()).unwrap();
    let config = keyed_one_per_segment(&key);
    let b = boundary();
    let (sink, _) = FileSink::open(dir.path(), config.clone()).unwrap();
    for seq in 1..=3 {
        record(&sink, &b, "look", seq, SystemTime::now());
    }
    sink.close().unwrap(); // checkpoint at 4
    let head3 = record_hash(&dir, 3);
    let (decl, decl_hash) = append_chained(&dir, &declaration(3, &head3));
    append_chained(&dir, &checkpoint_event(&secret, decl, &decl_hash, 1));
    for seg in 1..=3 {
        fs::remove_file(dir.seg(seg)).unwrap();
    }
    // The chain alone is fooled; the key says the declaration was only ever adopted.
    assert_eq!(file::verify(dir.path()).unwrap().first_seq, 4);
    match file::verify_keyed(dir.path(), &key).unwrap_err() {
        VerifyError::RetentionMismatch { seq, reason, .. } => {
            assert_eq!(seq, decl);
            assert!(reason.contains("adopted"), "{reason}");
        }
        e => panic!("{e}"),
    }
    assert!(FileSink::open(dir.path(), config).is_err());
}

#[test]
fn an_outsider_record_after_the_last_checkpoint_is_adopted_and_reported_never_covered() {
    let dir = temp_dir("adopted-outsider");
    let key = CheckpointKey::new("k1", vec![8; 32]).unwrap();
    let config = keyed_one_per_segment(&key);
    let b = boundary();
    let (sink, _) = FileSink::open(dir.path(), config.clone()).unwrap();
    record(&sink, &b, "look", 1, SystemTime::now());
    sink.close().unwrap(); // checkpoint at 2
    let (outsider, _) = append_chained(
        &dir,
        r#"{"seq":99,"time_unix_nano":1,"event":"decision","tollgate.decision":"allow"}"#,
    );
    let (sink, rec) = FileSink::open(dir.path(), config).unwrap();
    assert_eq!(rec.adopted_records, 1);
    sink.close().unwrap();
    let v = file::verify_keyed(dir.path(), &key).unwrap();
    assert_eq!(v.uncovered_records, 0);
    assert_eq!(v.adopted_records, 1);
    assert!(!v.fully_covered(), "adopted is not covered");
    assert!(
        v.notices
            .iter()
            .any(|n| matches!(n, Notice::Adopted { records, count: 1, .. }
            if records == &vec![outsider..=outsider])),
        "{:?}",
        v.notices
    );
    assert!(!v.is_clean());
}

#[test]
fn retention_on_a_live_keyed_sink_keeps_every_new_record_and_stays_covered() {
    let dir = temp_dir("live");
    let key = CheckpointKey::new("k1", vec![7; 32]).unwrap();
    let config = FileSinkConfig::default()
        .durability(Durability::GroupCommit { interval_ms: 2 })
        .max_segment_bytes(2_000)
        .checkpoint(CheckpointConfig::new(key.clone()).every_records(Some(50)));
    let b = boundary();
    let (sink, _) = FileSink::open(dir.path(), config.clone()).unwrap();
    for seq in 1..=200 {
        record(&sink, &b, "look", seq, t0());
    }
    let sink = Arc::new(sink);
    let now = SystemTime::now();
    let dropped = std::thread::scope(|s| {
        for t in 0..3u64 {
            let (sink, b) = (&sink, &b);
            s.spawn(move || {
                for i in 0..300 {
                    record(sink, b, "look", 1000 + t * 1000 + i, now);
                }
            });
        }
        let mut dropped = 0;
        for _ in 0..5 {
            let r = sink.retain(&policy(), now + DAY).unwrap();
            dropped += r.records_dropped;
            std::thread::sleep(Duration::from_millis(5));
        }
        dropped
    });
    assert!(dropped > 100, "{dropped}");
    Arc::try_unwrap(sink).unwrap().close().unwrap();
    let v = file::verify_keyed(dir.path(), &key).unwrap();
    assert!(v.first_seq > 100);
    assert!(v.fully_covered());
    let new_events = Query::new()
        .kind("run_finished")
        .since(now)
        .open(dir.path())
        .unwrap()
        .count();
    assert_eq!(new_events, 900, "every record written meanwhile is there");
    // Reopen and go on.
    let (sink, rec) = FileSink::open(dir.path(), config).unwrap();
    assert_eq!(rec.last_seq, v.last_seq);
    assert_eq!(rec.adopted_records, 0);
    record(&sink, &b, "look", 1, now);
    sink.close().unwrap();
    assert!(
        file::verify_keyed(dir.path(), &key)
            .unwrap()
            .fully_covered()
    );
}

#[test]
fn a_forged_declaration_appended_without_the_key_fails_keyed_verification() {
    let dir = temp_dir("forged");
    let key = CheckpointKey::new("k1", vec![9; 32]).unwrap();
    let config = one_per_segment().checkpoint(CheckpointConfig::new(key.clone()));
    let b = boundary();
    let (sink, _) = FileSink::open(dir.path(), config.clone()).unwrap();
    for seq in 1..=3 {
        record(&sink, &b, "look", seq, t0());
    }
    sink.close().unwrap(); // 3 events, checkpoint 4
    let head = file::verify(dir.path()).unwrap().head_hash;
    let first: serde_json::Value =
        serde_json::from_str(fs::read_to_string(dir.seg(1)).unwrap().trim_end()).unwrap();
    let hash1 = first["hash"].as_str().unwrap().to_owned();

    // Delete segment 1 and append a declaration for it, chained properly: no key needed.
    fs::remove_file(dir.seg(1)).unwrap();
    let event = format!(
        "{{\"event\":\"retention_applied\",\"time_unix_nano\":1,\
         \"tollgate.retention.evaluated_at\":1,\"tollgate.retention.dropped.first_seq\":1,\
         \"tollgate.retention.dropped.last_seq\":1,\"tollgate.retention.dropped.head\":\"{hash1}\",\
         \"tollgate.retention.dropped.first_segment\":1,\
         \"tollgate.retention.dropped.last_segment\":1,\"tollgate.retention.policy\":{{}}}}"
    );
    let mut h = Sha256::new();
    h.update(format!("{head}\n5\n{event}").as_bytes());
    let hash: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let last = *dir.segments().last().unwrap();
    let mut text = fs::read_to_string(dir.seg(last)).unwrap();
    text.push_str(&format!(
        "{{\"seq\":5,\"prev\":\"{head}\",\"hash\":\"{hash}\",\"event\":{event}}}\n"
    ));
    fs::write(dir.seg(last), text).unwrap();

    // The chain alone is fooled...
    let v = file::verify(dir.path()).unwrap();
    assert_eq!((v.first_seq, v.last_seq), (2, 5));
    // ...the key is not.
    match file::verify_keyed(dir.path(), &key).unwrap_err() {
        VerifyError::RetentionMismatch { seq, reason, .. } => {
            assert_eq!(seq, 5);
            assert!(reason.contains("no checkpoint"), "{reason}");
        }
        e => panic!("{e}"),
    }
    assert!(FileSink::open(dir.path(), config).is_err());
}
