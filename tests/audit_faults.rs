//! Writer failures, with faults injected into the file sink's I/O (issue 10, findings 11 and
//! 12): a batch that fails half-way is rolled back so no denied call reads as allowed; a
//! rollback that cannot happen makes `open` refuse until an audited repair; in the asynchronous
//! modes the acknowledged events a failure lost are counted, alerted, and declared in the log on
//! reopen so `verify` reports the loss.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use serde_json::Value;
use tollgate::audit::file::{
    self, CheckpointConfig, CheckpointKey, Durability, FileSink, FileSinkConfig, Notice,
    RepairOptions,
};
use tollgate::audit::query::Query;
use tollgate::audit::{AuditEvent, AuditSink, EventKind};
use tollgate::boundary::{ActionBoundary, RoleSpec, ToolSpec};
use tollgate::breaker::{Alert, AlertKind, AlertSink};
use tollgate::{AgentId, DenyCode, Guard, RunContext, RunId, ToolCall};

#[path = "common/tempdir.rs"]
mod tempdir;

use tempfile::TempDir;

/// A fresh directory for one test under the system temp dir, deleted when the value drops.
fn temp_dir(name: &str) -> TempDir {
    tempdir::temp_dir("audit-faults", name)
}

#[derive(Default)]
struct Alerts(Mutex<Vec<Alert>>);

impl AlertSink for Alerts {
    fn alert(&self, alert: &Alert) {
        self.0.lock().push(alert.clone());
    }
}

impl Alerts {
    fn of(&self, kind: AlertKind) -> Vec<Alert> {
        self.0
            .lock()
            .iter()
            .filter(|a| a.kind == kind)
            .cloned()
            .collect()
    }
}

fn boundary() -> ActionBoundary {
    ActionBoundary::builder()
        .tool("look", ToolSpec::read())
        .role("r", RoleSpec::new().tools(["look"]))
        .build()
        .unwrap()
}

/// Waits (yielding, no sleep) until `n` events are queued behind the paused writer.
fn wait_queued(sink: &FileSink, n: usize) {
    let start = std::time::Instant::now();
    while sink.queued_events() < n {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "only {} of {n} events were queued",
            sink.queued_events()
        );
        std::thread::yield_now();
    }
}

fn decisions(dir: &Path) -> Vec<Value> {
    Query::new()
        .kind("decision")
        .open(dir)
        .unwrap()
        .map(|r| r.unwrap().event)
        .collect()
}

fn segment_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// Eight allowed calls that reach the writer as one batch, whose write or fsync `inject`
/// makes fail; returns their verdicts' deny codes.
fn failing_batch(
    sink: &Arc<FileSink>,
    guard: &Guard,
    run: &tollgate::Run,
    inject: impl FnOnce(&FileSink),
) -> Vec<Option<DenyCode>> {
    let pause = sink.pause_writer();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                s.spawn(move || {
                    let id = format!("phantom-{i}");
                    guard
                        .check(run, &ToolCall::without_args("look").with_call_id(&id))
                        .deny_code()
                })
            })
            .collect();
        wait_queued(sink, 8);
        inject(sink);
        drop(pause);
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    })
}

#[test]
fn a_batch_that_fails_half_way_is_rolled_back_so_no_denied_call_reads_as_allowed() {
    let dir = temp_dir("phantom");
    let alerts = Arc::new(Alerts::default());
    let config = FileSinkConfig::default().alerts(alerts.clone());
    let (sink, _) = FileSink::open(dir.path(), config).unwrap();
    let sink = Arc::new(sink);
    let guard = Guard::builder(boundary())
        .audit(sink.clone())
        .build()
        .unwrap();
    let run = guard.start_run(RunContext::new("bot", "r")).unwrap();
    let before = segment_bytes(dir.path());
    // The disk fills up after two and a half records of the batch.
    let codes = failing_batch(&sink, &guard, &run, |s| s.faults().fail_writes_after(1_500));
    assert_eq!(codes, vec![Some(DenyCode::AuditFailed); 8]);
    // Fail closed from now on.
    assert!(sink.flush().is_err());
    let err = sink.flush().unwrap_err().to_string();
    assert!(err.contains("rolled back to seq 1"), "{err}");
    assert!(err.contains("no acknowledged event was lost"), "{err}");
    let failed = alerts.of(AlertKind::AuditWriterFailed);
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].detail.contains("injected fault"),
        "{}",
        failed[0].detail
    );
    drop(run);
    drop(guard);
    drop(sink);

    // The log is exactly what it was before the batch: the run start, and no call of it.
    assert_eq!(segment_bytes(dir.path()), before);
    let (sink, rec) = FileSink::open(dir.path(), FileSinkConfig::default()).unwrap();
    assert_eq!(
        (rec.records, rec.declared_lost, rec.truncated_bytes),
        (1, 0, 0)
    );
    drop(sink);
    let report = file::verify(dir.path()).unwrap();
    assert!(report.is_clean(), "{:?}", report.notices);
    assert!(
        decisions(dir.path()).is_empty(),
        "a denied call reads as allowed"
    );
}

#[test]
fn a_failed_fsync_rolls_back_the_whole_batch_it_would_have_made_durable() {
    let dir = temp_dir("fsync");
    let (sink, _) = FileSink::open(dir.path(), FileSinkConfig::default()).unwrap();
    let sink = Arc::new(sink);
    let guard = Guard::builder(boundary())
        .audit(sink.clone())
        .build()
        .unwrap();
    let run = guard.start_run(RunContext::new("bot", "r")).unwrap();
    let codes = failing_batch(&sink, &guard, &run, |s| s.faults().fail_next_sync());
    assert_eq!(codes, vec![Some(DenyCode::AuditFailed); 8]);
    drop(run);
    drop(guard);
    drop(sink);
    let (sink, rec) = FileSink::open(dir.path(), FileSinkConfig::default()).unwrap();
    drop(sink);
    assert_eq!(rec.records, 1);
    assert!(decisions(dir.path()).is_empty());
}

#[test]
fn a_rollback_that_cannot_truncate_is_refused_on_open_until_an_audited_repair() {
    let dir = temp_dir("no-rollback");
    let (sink, _) = FileSink::open(dir.path(), FileSinkConfig::default()).unwrap();
    let sink = Arc::new(sink);
    let guard = Guard::builder(boundary())
        .audit(sink.clone())
        .build()
        .unwrap();
    let run = guard.start_run(RunContext::new("bot", "r")).unwrap();
    let codes = failing_batch(&sink, &guard, &run, |s| {
        s.faults().fail_writes_after(2_500);
        s.faults().fail_rollback();
    });
    assert_eq!(codes, vec![Some(DenyCode::AuditFailed); 8]);
    let err = sink.flush().unwrap_err().to_string();
    assert!(err.contains("rolling the log back to seq 1"), "{err}");
    drop(run);
    drop(guard);
    drop(sink);
    // The records of refused calls are on disk...
    let on_disk = fs::read_to_string(dir.path().join("audit-000001.jsonl")).unwrap();
    assert!(on_disk.contains("phantom-"));
    // ...but the writer's note makes open refuse, naming the cut to make.
    let err = FileSink::open(dir.path(), FileSinkConfig::default()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("could not roll the log back"), "{text}");
    assert!(text.contains("--cut-after 1"), "{text}");

    // The repair: planned (it takes the note's cut), carried out, declared.
    let options = RepairOptions::new().reason("test: remove the records of refused calls");
    let plan = FileSink::plan_repair(dir.path(), &options)
        .unwrap()
        .expect("there is something to repair");
    assert_eq!(plan.after_seq, 1);
    assert!(plan.removed_lines >= 2, "{plan:?}");
    let repaired = FileSink::repair(dir.path(), &options, &plan).unwrap();
    assert!(repaired.declaration_seq > 1);
    let (sink, _) = FileSink::open(dir.path(), FileSinkConfig::default()).unwrap();
    drop(sink);
    let report = file::verify(dir.path()).unwrap();
    assert!(
        report
            .notices
            .iter()
            .any(|n| matches!(n, Notice::Repaired { after_seq: 1, .. })),
        "{:?}",
        report.notices
    );
    assert!(
        decisions(dir.path()).is_empty(),
        "a denied call reads as allowed"
    );
}

fn event(seq: u64) -> AuditEvent<'static> {
    static RUN: std::sync::LazyLock<RunId> = std::sync::LazyLock::new(|| RunId::new("run-1"));
    static AGENT: std::sync::LazyLock<AgentId> = std::sync::LazyLock::new(|| AgentId::new("bot"));
    AuditEvent::new(
        seq,
        SystemTime::now(),
        Some(&RUN),
        Some(&AGENT),
        EventKind::RunFinished {
            duration: Duration::ZERO,
        },
    )
}

/// Five durable events, then twenty acknowledged ones whose write fails half-way.
fn lose_twenty(dir: &Path, config: FileSinkConfig) -> String {
    let (sink, _) = FileSink::open(dir, config).unwrap();
    for seq in 1..=5 {
        sink.record(&event(seq)).unwrap();
    }
    sink.flush().unwrap();
    let pause = sink.pause_writer();
    for seq in 101..=120 {
        // Acknowledged: queued, not yet written.
        sink.record(&event(seq)).unwrap();
    }
    sink.faults().fail_writes_after(700);
    drop(pause);
    let err = sink.flush().unwrap_err().to_string();
    // Every later call fails: nothing more is acknowledged.
    assert!(sink.record(&event(121)).is_err());
    err
}

#[test]
fn loss_in_the_asynchronous_modes_is_alerted_and_declared_on_reopen() {
    for durability in [
        Durability::GroupCommit {
            interval_ms: 60_000,
        },
        Durability::OsBuffered,
    ] {
        let dir = temp_dir("loss");
        let alerts = Arc::new(Alerts::default());
        let config = FileSinkConfig::default()
            .durability(durability)
            .alerts(alerts.clone());
        let err = lose_twenty(dir.path(), config.clone());
        assert!(
            err.contains("20 acknowledged event(s) were lost (guard event seqs 101..=120)"),
            "{durability:?}: {err}"
        );
        let failed = alerts.of(AlertKind::AuditWriterFailed);
        assert_eq!(failed.len(), 1, "{durability:?}");
        assert!(
            failed[0]
                .detail
                .contains("20 acknowledged event(s) were lost")
                && failed[0].detail.contains("101..=120"),
            "{}",
            failed[0].detail
        );
        // The log alone still reads as a clean chain of the five durable events...
        assert_eq!(file::verify(dir.path()).unwrap().records, 5);

        // ...until the next open declares the loss.
        let (sink, rec) = FileSink::open(dir.path(), config.clone()).unwrap();
        assert_eq!(rec.declared_lost, 20, "{durability:?}");
        assert_eq!(rec.records, 6);
        drop(sink);
        let report = file::verify(dir.path()).unwrap();
        assert!(!report.is_clean());
        let lost: Vec<&Notice> = report
            .notices
            .iter()
            .filter(|n| matches!(n, Notice::Lost { .. }))
            .collect();
        assert_eq!(lost.len(), 1);
        match lost[0] {
            Notice::Lost {
                count,
                after_seq,
                event_seqs,
                error,
                ..
            } => {
                assert_eq!((*count, *after_seq), (20, 5));
                assert_eq!(event_seqs.clone(), Some(101..=120));
                assert!(error.contains("injected fault"), "{error}");
            }
            _ => unreachable!(),
        }
        assert!(
            lost[0]
                .to_string()
                .contains("20 acknowledged event(s) lost")
        );
        // Declared once: reopening again adds nothing.
        let (sink, rec) = FileSink::open(dir.path(), config).unwrap();
        assert_eq!(rec.declared_lost, 0);
        drop(sink);
        assert_eq!(
            file::verify(dir.path())
                .unwrap()
                .notices
                .iter()
                .filter(|n| matches!(n, Notice::Lost { .. }))
                .count(),
            1
        );
    }
}

#[test]
fn a_keyed_log_covers_its_loss_declaration_with_a_checkpoint() {
    let dir = temp_dir("loss-keyed");
    let key = CheckpointKey::new("k1", vec![2; 32]).unwrap();
    let config = FileSinkConfig::default()
        .durability(Durability::OsBuffered)
        .checkpoint(CheckpointConfig::new(key.clone()).every_records(None));
    lose_twenty(dir.path(), config.clone());
    let (sink, rec) = FileSink::open(dir.path(), config).unwrap();
    assert_eq!((rec.declared_lost, rec.adopted_records), (20, 0));
    sink.close().unwrap();
    let report = file::verify_keyed(dir.path(), &key).unwrap();
    assert!(report.fully_covered());
    assert!(
        report
            .notices
            .iter()
            .any(|n| matches!(n, Notice::Lost { count: 20, .. }))
    );
}
