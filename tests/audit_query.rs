//! Streaming queries over a file sink's directory: every filter alone and combined, the edges of
//! the time range, verification while reading (a tampered record surfaces as an error at its seq,
//! a deleted prefix at the end), and a large multi-segment log streamed in order.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tollgate::audit::file::{Durability, FileSink, FileSinkConfig, VerifyError};
use tollgate::audit::query::{Query, Record};
use tollgate::audit::{AuditEvent, AuditSink, Decision, EventKind};
use tollgate::boundary::{ActionBoundary, ToolSpec};
use tollgate::{AgentId, Denial, DenyCode, Outcome, RuleId, RunId, ToolCall};

#[path = "common/tempdir.rs"]
mod tempdir;

use tempfile::TempDir;

/// A fresh directory for one test under the system temp dir, deleted when the value drops.
fn temp_dir(name: &str) -> TempDir {
    tempdir::temp_dir("audit-query", name)
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

const T0_SECS: u64 = 1_700_000_000;

fn t(i: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0_SECS + i)
}

fn ns(i: u64) -> u64 {
    (T0_SECS + i) * 1_000_000_000
}

/// What the test knows about record `i + 1`.
#[derive(Debug, Clone)]
struct Model {
    seq: u64,
    run: &'static str,
    agent: &'static str,
    tool: Option<&'static str>,
    kind: &'static str,
    decision: Option<&'static str>,
    time: u64,
}

const RUNS: [&str; 3] = ["run-1", "run-2", "run-3"];
const AGENTS: [&str; 2] = ["agent-a", "agent-b"];

fn model(i: u64) -> Model {
    let run = RUNS[(i % 3) as usize];
    let agent = AGENTS[(i / 2 % 2) as usize];
    let (kind, tool, decision) = match i % 4 {
        0 => ("decision", Some("look"), Some("allow")),
        1 => ("decision", Some("pay"), Some("deny")),
        2 => ("outcome", Some("look"), None),
        _ => ("run_finished", None, None),
    };
    Model {
        seq: i + 1,
        run,
        agent,
        tool,
        kind,
        decision,
        time: ns(i),
    }
}

/// Writes `n` events whose fields follow [`model`]; record `i + 1` is event `i`, at `t(i)`.
fn write_log(dir: &Path, n: u64, config: FileSinkConfig) {
    let (sink, _) = FileSink::open(dir, config).unwrap();
    let runs: Vec<RunId> = RUNS.iter().map(|r| RunId::new(*r)).collect();
    let agents: Vec<AgentId> = AGENTS.iter().map(|a| AgentId::new(*a)).collect();
    let look = ToolCall::new("look", r#"{"q":"x"}"#);
    let pay = ToolCall::new("pay", r#"{"amount":1000}"#);
    let denial = Denial::new(
        DenyCode::ArgumentOutOfRange,
        RuleId::new("tools.pay.args.amount"),
        "amount above 100",
    );
    let version = ActionBoundary::builder()
        .tool("look", ToolSpec::read())
        .build()
        .unwrap()
        .version();
    let outcome = Outcome::success();
    for i in 0..n {
        let m = model(i);
        let run = &runs[(i % 3) as usize];
        let agent = &agents[(i / 2 % 2) as usize];
        let kind = match i % 4 {
            0 => EventKind::Decision {
                call: &look,
                decision: Decision::Allow,
                policy_version: Some(version),
            },
            1 => EventKind::Decision {
                call: &pay,
                decision: Decision::Deny(&denial),
                policy_version: Some(version),
            },
            2 => EventKind::Outcome {
                tool: "look",
                call_id: None,
                outcome: &outcome,
                latency: Duration::from_millis(3),
                policy_version: version,
            },
            _ => EventKind::RunFinished {
                duration: Duration::from_secs(1),
            },
        };
        let event = AuditEvent::new(m.seq, t(i), Some(run), Some(agent), kind);
        sink.record(&event).unwrap();
    }
    sink.close().unwrap();
}

fn small_segments() -> FileSinkConfig {
    FileSinkConfig::default()
        .durability(Durability::OsBuffered)
        .max_segment_bytes(4 * 1024)
}

fn run_query(q: &Query, dir: &Path) -> Vec<Record> {
    q.open(dir).unwrap().collect::<Result<Vec<_>, _>>().unwrap()
}

fn seqs(q: &Query, dir: &Path) -> Vec<u64> {
    run_query(q, dir).iter().map(|r| r.seq).collect()
}

fn expect(n: u64, keep: impl Fn(&Model) -> bool) -> Vec<u64> {
    (0..n)
        .map(model)
        .filter(|m| keep(m))
        .map(|m| m.seq)
        .collect()
}

const N: u64 = 240;

#[test]
fn every_filter_alone_and_combined_matches_the_model() {
    let dir = temp_dir("filters");
    write_log(dir.path(), N, small_segments());
    assert!(dir.seg(3).exists(), "the log spans several segments");

    let all = run_query(&Query::new(), dir.path());
    assert_eq!(all.len() as u64, N);
    for (i, r) in all.iter().enumerate() {
        let m = model(i as u64);
        assert_eq!(r.seq, m.seq);
        assert_eq!(r.event["event"], m.kind);
        assert_eq!(r.event["tollgate.run.id"], m.run);
        assert_eq!(r.event["time_unix_nano"], m.time);
        assert_eq!(r.hash.len(), 64);
        assert!(r.segment >= 1 && r.line >= 1);
    }

    assert_eq!(
        seqs(&Query::new().run("run-2"), dir.path()),
        expect(N, |m| m.run == "run-2")
    );
    assert_eq!(
        seqs(&Query::new().agent("agent-b"), dir.path()),
        expect(N, |m| m.agent == "agent-b")
    );
    assert_eq!(
        seqs(&Query::new().tool("look"), dir.path()),
        expect(N, |m| m.tool == Some("look"))
    );
    assert_eq!(
        seqs(&Query::new().kind("outcome"), dir.path()),
        expect(N, |m| m.kind == "outcome")
    );
    assert_eq!(
        seqs(&Query::new().decision("deny"), dir.path()),
        expect(N, |m| m.decision == Some("deny"))
    );
    assert_eq!(
        seqs(&Query::new().decision("escalate"), dir.path()),
        Vec::<u64>::new()
    );
    // Several values of one filter are alternatives...
    assert_eq!(
        seqs(&Query::new().run("run-1").run("run-3"), dir.path()),
        expect(N, |m| m.run != "run-2")
    );
    assert_eq!(
        seqs(
            &Query::new().kind("outcome").kind("run_finished"),
            dir.path()
        ),
        expect(N, |m| m.kind == "outcome" || m.kind == "run_finished")
    );
    // ...different filters must all hold.
    let q = Query::new()
        .run("run-1")
        .agent("agent-a")
        .tool("pay")
        .kind("decision")
        .decision("deny")
        .since(t(50))
        .until(t(200));
    let want = expect(N, |m| {
        m.run == "run-1"
            && m.agent == "agent-a"
            && m.tool == Some("pay")
            && m.decision == Some("deny")
            && (ns(50)..ns(200)).contains(&m.time)
    });
    assert!(!want.is_empty());
    assert_eq!(seqs(&q, dir.path()), want);
    // A field that is absent never matches a filter on it.
    assert!(run_query(&Query::new().tool("look").kind("run_finished"), dir.path()).is_empty());
    assert!(run_query(&Query::new().run("nope"), dir.path()).is_empty());
}

#[test]
fn the_time_range_is_half_open() {
    let dir = temp_dir("time");
    write_log(dir.path(), 40, small_segments());
    let q = |q: Query| seqs(&q, dir.path());
    // [since, until): event i is at t(i) and is record i + 1.
    assert_eq!(q(Query::new().since(t(10)).until(t(13))), [11, 12, 13]);
    assert_eq!(
        q(Query::new().since_unix_nanos(ns(10) + 1).until(t(13))),
        [12, 13]
    );
    assert_eq!(
        q(Query::new().since(t(10)).until_unix_nanos(ns(13) + 1)),
        [11, 12, 13, 14]
    );
    assert_eq!(q(Query::new().since(t(10)).until(t(10))), Vec::<u64>::new());
    assert_eq!(q(Query::new().since(t(20)).until(t(10))), Vec::<u64>::new());
    assert_eq!(q(Query::new().since(t(38))), [39, 40]);
    assert_eq!(q(Query::new().until(t(2))), [1, 2]);
    assert_eq!(q(Query::new().since(t(0))).len(), 40);
    assert_eq!(q(Query::new().until(t(40))).len(), 40);
    assert_eq!(q(Query::new().since(UNIX_EPOCH)).len(), 40);
}

#[test]
fn matches_works_on_a_single_event() {
    let event: Value = serde_json::json!({
        "event": "decision", "tollgate.run.id": "r", "gen_ai.agent.id": null,
        "gen_ai.tool.name": "pay", "tollgate.decision": "deny", "time_unix_nano": 100u64,
    });
    assert!(Query::new().matches(&event));
    assert!(
        Query::new()
            .run("r")
            .tool("pay")
            .decision("deny")
            .matches(&event)
    );
    assert!(!Query::new().agent("a").matches(&event)); // null is no agent
    assert!(
        Query::new()
            .since_unix_nanos(100)
            .until_unix_nanos(101)
            .matches(&event)
    );
    assert!(!Query::new().until_unix_nanos(100).matches(&event));
    let timeless = serde_json::json!({"event": "decision"});
    assert!(!Query::new().since_unix_nanos(0).matches(&timeless));
}

#[test]
fn a_tampered_record_surfaces_as_an_error_at_its_seq() {
    let dir = temp_dir("tamper");
    write_log(dir.path(), N, small_segments());
    // Change record 150's run id (the JSON stays valid, the hash does not).
    let target = 150u64;
    let mut hit = None;
    for index in 1.. {
        let path = dir.seg(index);
        let Ok(text) = fs::read_to_string(&path) else {
            break;
        };
        let prefix = format!("{{\"seq\":{target},");
        if let Some(line_no) = text.lines().position(|l| l.starts_with(&prefix)) {
            let changed: Vec<String> = text
                .lines()
                .enumerate()
                .map(|(i, l)| {
                    if i == line_no {
                        l.replacen("\"run-3\"", "\"run-9\"", 1)
                    } else {
                        l.to_owned()
                    }
                })
                .collect();
            assert_ne!(changed.join("\n") + "\n", text);
            fs::write(&path, changed.join("\n") + "\n").unwrap();
            hit = Some((path, line_no as u64 + 1));
            break;
        }
    }
    let (path, line) = hit.expect("record 150 found");
    assert_eq!(model(target - 1).run, "run-3");

    // Verifying (the default): the records before it, then the error naming it, then nothing.
    let mut it = Query::new().open(dir.path()).unwrap();
    let mut before = Vec::new();
    let err = loop {
        match it.next().expect("an error before the end") {
            Ok(r) => before.push(r.seq),
            Err(e) => break e,
        }
    };
    assert_eq!(before, (1..target).collect::<Vec<_>>());
    match &err {
        VerifyError::Modified { at } => {
            assert_eq!(at.seq, Some(target));
            assert_eq!(at.file, path);
            assert_eq!(at.line, line);
        }
        e => panic!("{e}"),
    }
    assert!(it.next().is_none(), "the stream ends at the error");
    assert!(it.report().is_none());

    // A filter that does not match the tampered record still meets the error.
    let filtered: Vec<_> = Query::new()
        .run("run-1")
        .open(dir.path())
        .unwrap()
        .collect();
    let last = filtered.last().unwrap();
    assert!(
        matches!(last, Err(VerifyError::Modified { at }) if at.seq == Some(target)),
        "{last:?}"
    );

    // Without verification the forged value comes through unflagged.
    let forged = run_query(
        &Query::new().run("run-9").verify_while_reading(false),
        dir.path(),
    );
    assert_eq!(forged.iter().map(|r| r.seq).collect::<Vec<_>>(), [target]);
}

#[test]
fn a_deleted_prefix_is_an_error_once_the_log_is_read() {
    let dir = temp_dir("prefix");
    write_log(dir.path(), N, small_segments());
    let first_of_two: Value = serde_json::from_str(
        fs::read_to_string(dir.seg(2))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let s = first_of_two["seq"].as_u64().unwrap();
    fs::remove_file(dir.seg(1)).unwrap();
    let items: Vec<_> = Query::new().open(dir.path()).unwrap().collect();
    let (ok, err): (Vec<_>, Vec<_>) = items.into_iter().partition(Result::is_ok);
    assert_eq!(ok.len() as u64, N - s + 1);
    assert_eq!(err.len(), 1);
    match &err[0] {
        Err(VerifyError::SeqGap {
            at,
            expected,
            found,
        }) => {
            assert_eq!((*expected, *found, at.line), (1, s, 1));
            assert_eq!(at.file, dir.seg(2));
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn malformed_lines_and_bad_directories_are_typed_errors() {
    let dir = temp_dir("malformed");
    write_log(dir.path(), 10, FileSinkConfig::default());
    let mut text = fs::read_to_string(dir.seg(1)).unwrap();
    text.push_str("not a record\n");
    fs::write(dir.seg(1), &text).unwrap();
    for q in [Query::new(), Query::new().verify_while_reading(false)] {
        let items: Vec<_> = q.open(dir.path()).unwrap().collect();
        assert_eq!(items.len(), 11);
        assert!(
            matches!(&items[10], Err(VerifyError::Malformed { at, .. }) if at.line == 11),
            "{:?}",
            items[10]
        );
    }
    // A torn last line.
    fs::write(dir.seg(1), &text[..text.len() - 20]).unwrap();
    let last = Query::new().open(dir.path()).unwrap().last().unwrap();
    assert!(
        matches!(last, Err(VerifyError::Truncated { .. })),
        "{last:?}"
    );

    assert!(matches!(
        Query::new().open(dir.path().join("missing")),
        Err(VerifyError::Io { .. })
    ));
    assert!(matches!(
        Query::new().open(dir.seg(1)),
        Err(VerifyError::NotADirectory(_))
    ));
}

#[test]
fn the_report_is_available_after_a_verified_stream() {
    let dir = temp_dir("report");
    write_log(dir.path(), 30, FileSinkConfig::default());
    let mut it = Query::new().kind("outcome").open(dir.path()).unwrap();
    assert!(it.report().is_none());
    let n = it.by_ref().count();
    assert_eq!(n as u64, expect(30, |m| m.kind == "outcome").len() as u64);
    let report = it.report().expect("verified");
    assert_eq!((report.records, report.last_seq), (30, 30));
    assert_eq!(
        report.head_hash,
        tollgate::audit::file::verify(dir.path()).unwrap().head_hash
    );
    let mut unverified = Query::new()
        .verify_while_reading(false)
        .open(dir.path())
        .unwrap();
    assert_eq!(unverified.by_ref().count(), 30);
    assert!(unverified.report().is_none());
}

#[test]
fn a_large_log_streams_in_order_across_many_segments() {
    // Large enough for many segments, small enough for a debug-build test run.
    const BIG: u64 = 50_000;
    let dir = temp_dir("large");
    write_log(
        dir.path(),
        BIG,
        FileSinkConfig::default()
            .durability(Durability::OsBuffered)
            .queue_capacity(1 << 14)
            .max_segment_bytes(1024 * 1024),
    );
    let mut next = 1;
    let mut denied = 0u64;
    let mut it = Query::new().open(dir.path()).unwrap();
    for r in it.by_ref() {
        let r = r.unwrap();
        assert_eq!(r.seq, next);
        next += 1;
        if r.event["tollgate.decision"] == "deny" {
            denied += 1;
        }
    }
    assert_eq!(next, BIG + 1);
    assert_eq!(denied, BIG / 4);
    assert!(it.report().unwrap().segments >= 5);
    let window = seqs(&Query::new().since(t(43_456)).until(t(43_460)), dir.path());
    assert_eq!(window, [43_457, 43_458, 43_459, 43_460]);
}
