//! The file sink's writer gathers records into batches (`FileSinkConfig::write_delay`) only
//! while nobody waits for them: a flush, an `EveryRecord` caller and a half-full queue are
//! served at once; a gathered record still reaches the file by itself; and the caller's side of
//! an OS-buffered record allocates nothing once the queue's buffers have grown.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tollgate::audit::file::{Backpressure, Durability, FileSink, FileSinkConfig, verify};
use tollgate::audit::{AuditEvent, AuditSink, EventKind};
use tollgate::boundary::{ActionBoundary, Arg, RoleSpec, ToolSpec};
use tollgate::{AgentId, Guard, Outcome, RunContext, RunId, ToolCall, Verdict};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::count;

#[path = "common/tempdir.rs"]
mod tempdir;

use tempfile::TempDir;

/// A fresh directory for one test under the system temp dir, deleted when the value drops.
fn temp_dir(name: &str) -> TempDir {
    tempdir::temp_dir("write-delay", name)
}

/// Record lines in the directory's segments right now.
fn lines_on_disk(dir: &Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .map(|p| fs::read(p).unwrap().iter().filter(|&&b| b == b'\n').count())
        .sum()
}

fn record_one(sink: &FileSink, seq: u64) {
    let run = RunId::new("run-1");
    let agent = AgentId::new("agent-1");
    let context = RunContext::new("agent-1", "r");
    sink.record(&AuditEvent::new(
        seq,
        SystemTime::now(),
        Some(&run),
        Some(&agent),
        EventKind::RunStarted { context: &context },
    ))
    .unwrap();
}

/// A delay far longer than any test runs: only what bypasses gathering can make progress.
const FOREVER: Duration = Duration::from_secs(3600);

#[test]
fn flush_is_served_at_once_however_long_the_write_delay() {
    let dir = temp_dir("flush");
    let cfg = FileSinkConfig::default()
        .durability(Durability::OsBuffered)
        .write_delay(FOREVER);
    let (sink, _) = FileSink::open(dir.path(), cfg).unwrap();
    for seq in 1..=10 {
        record_one(&sink, seq);
    }
    let t = Instant::now();
    sink.flush().unwrap();
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    assert_eq!(lines_on_disk(dir.path()), 10);
}

#[test]
fn every_record_callers_do_not_wait_for_the_write_delay() {
    let dir = temp_dir("every");
    let cfg = FileSinkConfig::default()
        .durability(Durability::EveryRecord)
        .write_delay(FOREVER);
    let (sink, _) = FileSink::open(dir.path(), cfg).unwrap();
    for seq in 1..=5 {
        record_one(&sink, seq);
        // Durable when `record` returns: on disk already.
        assert_eq!(lines_on_disk(dir.path()), seq as usize);
    }
}

#[test]
fn a_half_full_queue_is_written_without_waiting_for_the_write_delay() {
    let dir = temp_dir("half");
    let cfg = FileSinkConfig::default()
        .durability(Durability::OsBuffered)
        .queue_capacity(8)
        .write_delay(FOREVER);
    let (sink, _) = FileSink::open(dir.path(), cfg).unwrap();
    // Half of the queue (4 events) makes the writer write: with the delay it would otherwise
    // take, the records could only appear through that rule.
    for seq in 1..=4 {
        record_one(&sink, seq);
    }
    let t = Instant::now();
    while lines_on_disk(dir.path()) < 4 {
        assert!(t.elapsed() < Duration::from_secs(60), "never written");
        std::thread::sleep(Duration::from_millis(5));
    }
    // A blocking caller on a full queue is never stuck behind the delay either.
    for seq in 5..=200 {
        record_one(&sink, seq);
    }
    sink.flush().unwrap();
    assert_eq!(lines_on_disk(dir.path()), 200);
}

#[test]
fn a_gathered_record_reaches_the_file_by_itself_after_the_write_delay() {
    let dir = temp_dir("gathered");
    let cfg = FileSinkConfig::default()
        .durability(Durability::OsBuffered)
        .write_delay(Duration::from_millis(20));
    let (sink, _) = FileSink::open(dir.path(), cfg).unwrap();
    record_one(&sink, 1);
    record_one(&sink, 2);
    let t = Instant::now();
    while lines_on_disk(dir.path()) < 2 {
        assert!(t.elapsed() < Duration::from_secs(60), "never written");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(sink);
    assert_eq!(verify(dir.path()).unwrap().records, 2);
}

fn boundary() -> ActionBoundary {
    ActionBoundary::builder()
        .tool(
            "pay",
            ToolSpec::irreversible()
                .arg("invoice", Arg::string().required().pattern("INV-[0-9]{6}"))
                .arg("amount", Arg::number().required().max(10_000.0)),
        )
        .role("r", RoleSpec::new().tools(["pay"]))
        .build()
        .unwrap()
}

#[test]
fn the_callers_side_of_an_os_buffered_audited_call_allocates_nothing() {
    for (name, delay) in [
        ("gathering", Duration::from_millis(1)),
        ("eager", Duration::ZERO),
    ] {
        let dir = temp_dir(name);
        let cfg = FileSinkConfig::default()
            .durability(Durability::OsBuffered)
            .backpressure(Backpressure::Block)
            .queue_capacity(64)
            .write_delay(delay);
        let sink = Arc::new(FileSink::open(dir.path(), cfg).unwrap().0);
        let guard = Guard::builder(boundary())
            .audit(sink.clone())
            .build()
            .unwrap();
        let run = guard.start_run(RunContext::new("agent", "r")).unwrap();
        let call = ToolCall::new("pay", r#"{"invoice":"INV-004711","amount":1250.5}"#);
        let once = || match guard.check(&run, &call) {
            Verdict::Allow(p) => p.complete(Outcome::success()).unwrap(),
            other => panic!("{other:?}"),
        };
        // Warm-up: this thread's serialisation buffer and both queue buffers reach their size
        // (at most 64 queued events).
        for _ in 0..5_000 {
            once();
        }
        let before = count();
        for _ in 0..2_000 {
            once();
        }
        let allocated = count() - before;
        assert_eq!(
            allocated, 0,
            "{name}: {allocated} allocations in 2,000 calls"
        );
        drop(run);
        drop(guard);
        sink.flush().unwrap();
        assert_eq!(verify(dir.path()).unwrap().records, 2 + 2 * 7_000);
    }
}
