//! The progress hook of `verify_with` and `Query`: it sees every record read (matching or not),
//! every byte, the segment N of M (counted from 1 also after retention dropped the first ones),
//! stops where verification stops, and changes nothing about the result.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tollgate::audit::file::{
    self, CheckpointConfig, CheckpointKey, Durability, FileSink, FileSinkConfig, Progress,
    ProgressHook, RetentionPolicy, VerifyOptions,
};
use tollgate::audit::query::Query;
use tollgate::audit::{AuditEvent, AuditSink, EventKind};

#[path = "common/tempdir.rs"]
mod tempdir;

use tempfile::TempDir;

/// A fresh directory for one test under the system temp dir, deleted when the value drops.
fn temp_dir(name: &str) -> TempDir {
    tempdir::temp_dir("audit-progress", name)
}

const DAY: Duration = Duration::from_secs(86_400);

fn t(i: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000) + DAY * i as u32
}

fn key() -> CheckpointKey {
    CheckpointKey::new("ops-1", vec![7; 32]).unwrap()
}

fn config(max_segment_bytes: u64) -> FileSinkConfig {
    FileSinkConfig::default()
        .durability(Durability::OsBuffered)
        .max_segment_bytes(max_segment_bytes)
        .checkpoint(CheckpointConfig::new(key()).every_records(Some(4)))
}

/// `n` events a day apart, over segments of at most `max_segment_bytes`.
fn write_log(dir: &Path, n: u64, max_segment_bytes: u64) -> FileSink {
    let (sink, _) = FileSink::open(dir, config(max_segment_bytes)).unwrap();
    for i in 0..n {
        let kind = EventKind::RunFinished {
            duration: Duration::ZERO,
        };
        sink.record(&AuditEvent::new(i + 1, t(i), None, None, kind))
            .unwrap();
    }
    sink.flush().unwrap();
    sink
}

/// A hook that keeps every progress it is handed.
fn recorder() -> (ProgressHook, Arc<Mutex<Vec<Progress>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    (ProgressHook::new(move |p| s.lock().push(*p)), seen)
}

fn segment_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("audit-"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// Every record once, in order; bytes adding up to the whole log; segments 1..=M in order.
fn assert_walked_whole_log(seen: &[Progress], records: u64, segments: u64, bytes: u64) {
    assert_eq!(seen.len() as u64, records);
    for (i, p) in seen.iter().enumerate() {
        assert_eq!(p.records, i as u64 + 1);
        assert_eq!((p.segments, p.total_bytes), (segments, bytes));
        assert!(p.bytes <= p.total_bytes);
        assert!((1..=segments).contains(&p.segment), "{p:?}");
    }
    assert!(seen.windows(2).all(|w| w[0].bytes < w[1].bytes));
    assert!(seen.windows(2).all(|w| w[0].segment <= w[1].segment));
    let (first, last) = (seen[0], seen[seen.len() - 1]);
    assert_eq!(first.segment, 1);
    assert_eq!(last.segment, segments);
    assert_eq!(last.bytes, bytes);
}

#[test]
fn verify_progress_sees_every_record_byte_and_segment_and_changes_nothing() {
    let dir = temp_dir("verify");
    write_log(dir.path(), 30, 1024).close().unwrap();
    let plain = VerifyOptions::new().key(key());
    let (hook, seen) = recorder();
    let mut hooked = plain.clone();
    hooked.progress = Some(hook);
    let report = file::verify_with(dir.path(), &plain).unwrap();
    assert!(report.segments >= 3, "{report:?}");
    assert_eq!(file::verify_with(dir.path(), &hooked).unwrap(), report);
    assert_walked_whole_log(
        &seen.lock(),
        report.records,
        report.segments,
        segment_bytes(dir.path()),
    );
    // The builder sets the same field; options compare equal only with the same hook.
    let counter = Arc::new(AtomicU64::new(0));
    let c = Arc::clone(&counter);
    let built = plain.clone().progress(move |_| {
        c.fetch_add(1, Ordering::Relaxed);
    });
    assert_ne!(built, plain);
    assert_eq!(built.clone(), built);
    assert_ne!(built, hooked);
    file::verify_with(dir.path(), &built).unwrap();
    assert_eq!(counter.load(Ordering::Relaxed), report.records);
}

#[test]
fn query_progress_counts_records_it_does_not_yield() {
    let dir = temp_dir("query");
    write_log(dir.path(), 30, 1024).close().unwrap();
    let report = file::verify_keyed(dir.path(), &key()).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    // Nothing matches: the iterator reads the whole log without yielding once.
    let mut records = Query::new()
        .checkpoint_key(key())
        .tool("no-such-tool")
        .progress(move |p| s.lock().push(*p))
        .open(dir.path())
        .unwrap();
    assert!(records.next().is_none());
    assert_eq!(records.report(), Some(&report));
    assert_walked_whole_log(
        &seen.lock(),
        report.records,
        report.segments,
        segment_bytes(dir.path()),
    );

    // Without verification too; and the yielded records are those without the hook.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let unverified = Query::new().verify_while_reading(false);
    let with: Vec<u64> = unverified
        .clone()
        .progress(move |p| s.lock().push(*p))
        .open(dir.path())
        .unwrap()
        .map(|r| r.unwrap().seq)
        .collect();
    let without: Vec<u64> = unverified
        .open(dir.path())
        .unwrap()
        .map(|r| r.unwrap().seq)
        .collect();
    assert_eq!(with, without);
    assert_eq!(with.len() as u64, report.records);
    assert_walked_whole_log(
        &seen.lock(),
        report.records,
        report.segments,
        segment_bytes(dir.path()),
    );
}

#[test]
fn progress_stops_at_the_tampered_record_and_the_error_is_unchanged() {
    let dir = temp_dir("tamper");
    write_log(dir.path(), 30, 1024).close().unwrap();
    let seg2 = dir.path().join("audit-000002.jsonl");
    let text = fs::read_to_string(&seg2).unwrap();
    // The first event in segment 2 (it may start with a checkpoint) becomes another event.
    let line = text
        .lines()
        .find(|l| l.contains("\"run_finished\""))
        .unwrap();
    let bad_seq = serde_json::from_str::<serde_json::Value>(line).unwrap()["seq"]
        .as_u64()
        .unwrap();
    fs::write(
        &seg2,
        text.replacen("\"run_finished\"", "\"run_finishes\"", 1),
    )
    .unwrap();

    let plain = VerifyOptions::new();
    let (hook, seen) = recorder();
    let mut hooked = plain.clone();
    hooked.progress = Some(hook);
    let without = file::verify_with(dir.path(), &plain)
        .unwrap_err()
        .to_string();
    let with = file::verify_with(dir.path(), &hooked)
        .unwrap_err()
        .to_string();
    assert_eq!(with, without);
    assert!(
        with.contains(&format!("seq {bad_seq}: record modified")),
        "{with}"
    );
    // The records before the bad one, and not the bad one.
    let seen = seen.lock();
    assert_eq!(seen.len() as u64, bad_seq - 1);
    assert_eq!(
        seen.last().unwrap().segment,
        if text.starts_with(line) { 1 } else { 2 }
    );
}

#[test]
fn segments_are_counted_from_1_after_retention_dropped_the_first() {
    let dir = temp_dir("retention");
    // One record per segment.
    let sink = write_log(dir.path(), 12, 1);
    let r = sink
        .retain(&RetentionPolicy::new(Some(7 * DAY)), t(9))
        .unwrap();
    assert!(r.segments_dropped >= 1, "{r:?}");
    sink.close().unwrap();
    let report = file::verify_keyed(dir.path(), &key()).unwrap();
    assert!(report.first_seq > 1);
    let (hook, seen) = recorder();
    let mut options = VerifyOptions::new();
    options.progress = Some(hook);
    file::verify_with(dir.path(), &options).unwrap();
    assert_walked_whole_log(
        &seen.lock(),
        report.records,
        report.segments,
        segment_bytes(dir.path()),
    );
}
