//! The audit trail in PostgreSQL: chains per writer, tampering found and named, retention that
//! drops whole partitions and declares them, failures that fail closed, several hosts at once.
#![cfg(feature = "postgres")]

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tollgate::audit::file::{CheckpointKey, RetentionPolicy};
use tollgate::audit::query::Query;
use tollgate::audit::{AuditEvent, AuditSink, EventKind};
use tollgate::backend::audit::{AuditBackpressure, AuditSection};
use tollgate::backend::postgres::PgBackend;
use tollgate::backend::postgres::audit::{
    PgAuditConfig, PgAuditError, PgAuditSink, PgVerifyError, query, verify,
};
use tollgate::boundary::{ActionBoundary, RoleSpec, ToolSpec};
use tollgate::clock::{Clock, ManualClock};
use tollgate::{DenyCode, Guard, RunContext, ToolCall};

use common::pg::fresh_backend;

fn key() -> CheckpointKey {
    CheckpointKey::new("fleet-k1", vec![9; 32]).unwrap()
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

fn settings() -> AuditSection {
    AuditSection {
        stall_timeout: Duration::from_secs(2),
        retry_interval: Duration::from_millis(100),
        ..AuditSection::default()
    }
}

fn open(b: &PgBackend, writer: &str, keyed: bool) -> PgAuditSink {
    let mut c = PgAuditConfig::new(writer).settings(settings());
    if keyed {
        c = c.checkpoint_key(key());
    }
    PgAuditSink::open(b, c).unwrap().0
}

fn write_n(sink: &PgAuditSink, n: u64) {
    for i in 1..=n {
        sink.record(&event(i)).unwrap();
    }
    sink.flush().unwrap();
}

fn sql(b: &PgBackend, stmt: &str) {
    let mut c = b.connect().unwrap();
    c.batch_execute(&stmt.replace("{s}", b.schema())).unwrap();
}

fn broken_at(r: Result<impl std::fmt::Debug, PgVerifyError>) -> (String, u64, String) {
    match r {
        Err(PgVerifyError::Broken {
            writer,
            seq,
            reason,
        }) => (writer, seq, reason),
        other => panic!("expected a broken record, got {other:?}"),
    }
}

#[test]
fn records_from_two_writers_verify_and_query_filters() {
    let Some(b) = fresh_backend("pga_basic") else {
        return;
    };
    let a = open(&b, "host-a", true);
    let c = open(&b, "host-c", true);
    write_n(&a, 50);
    write_n(&c, 30);
    a.close().unwrap();
    c.close().unwrap();
    let mut client = b.connect().unwrap();
    let r = verify(&mut client, b.schema(), &[key()]).unwrap();
    assert_eq!(r.writers, 2);
    assert_eq!(r.events, 80);
    assert!(r.checkpoints >= 2);
    assert_eq!(r.uncovered_records, 0, "close checkpoints");
    // Unkeyed verify passes too (structure only).
    verify(&mut client, b.schema(), &[]).unwrap();
    let mut seen = 0;
    let n = query(
        &mut client,
        b.schema(),
        &Query::new().kind("run_finished"),
        |rec| {
            seen += 1;
            assert_eq!(rec.event["event"], "run_finished");
            true
        },
    )
    .unwrap();
    assert_eq!((n, seen), (80, 80));
    let none = query(
        &mut client,
        b.schema(),
        &Query::new().kind("decision"),
        |_| true,
    )
    .unwrap();
    assert_eq!(none, 0);
}

#[test]
fn a_reopened_writer_continues_its_chain() {
    let Some(b) = fresh_backend("pga_reopen") else {
        return;
    };
    let a = open(&b, "w", true);
    write_n(&a, 5);
    drop(a);
    let (a, rec) = PgAuditSink::open(&b, PgAuditConfig::new("w").checkpoint_key(key())).unwrap();
    assert!(rec.last_seq >= 6, "{rec:?}");
    write_n(&a, 5);
    drop(a);
    let r = verify(&mut b.connect().unwrap(), b.schema(), &[key()]).unwrap();
    assert_eq!(r.events, 10);
}

#[test]
fn a_second_live_process_with_the_same_writer_name_is_refused() {
    let Some(b) = fresh_backend("pga_busy") else {
        return;
    };
    let _a = open(&b, "same", false);
    match PgAuditSink::open(&b, PgAuditConfig::new("same")) {
        Err(PgAuditError::WriterBusy { writer }) => assert_eq!(writer, "same"),
        other => panic!("expected WriterBusy, got {other:?}"),
    }
}

#[test]
fn an_updated_payload_is_found_and_named() {
    let Some(b) = fresh_backend("pga_update") else {
        return;
    };
    let a = open(&b, "w1", false);
    write_n(&a, 10);
    drop(a);
    sql(
        &b,
        "UPDATE {s}.audit_records SET event = convert_to(replace(convert_from(event, 'UTF8'), \
         'run_finished', 'run_finishe_'), 'UTF8') WHERE writer = 'w1' AND seq = 4",
    );
    let (w, seq, reason) = broken_at(verify(&mut b.connect().unwrap(), b.schema(), &[]));
    assert_eq!((w.as_str(), seq), ("w1", 4));
    assert!(reason.contains("hash"), "{reason}");
}

#[test]
fn a_deleted_row_is_found_at_the_next_record() {
    let Some(b) = fresh_backend("pga_delete") else {
        return;
    };
    let a = open(&b, "w1", false);
    write_n(&a, 10);
    drop(a);
    sql(
        &b,
        "DELETE FROM {s}.audit_records WHERE writer = 'w1' AND seq = 6",
    );
    let (w, seq, reason) = broken_at(verify(&mut b.connect().unwrap(), b.schema(), &[]));
    assert_eq!((w.as_str(), seq), ("w1", 7));
    assert!(reason.contains("missing"), "{reason}");
}

#[test]
fn reordered_rows_are_found() {
    let Some(b) = fresh_backend("pga_reorder") else {
        return;
    };
    let a = open(&b, "w1", false);
    write_n(&a, 10);
    drop(a);
    // Swap the seqs of records 3 and 5 (through a free seq).
    sql(
        &b,
        "UPDATE {s}.audit_records SET seq = -3 WHERE writer = 'w1' AND seq = 3;
         UPDATE {s}.audit_records SET seq = 3 WHERE writer = 'w1' AND seq = 5;
         UPDATE {s}.audit_records SET seq = 5 WHERE writer = 'w1' AND seq = -3;",
    );
    let (w, seq, _) = broken_at(verify(&mut b.connect().unwrap(), b.schema(), &[]));
    assert_eq!((w.as_str(), seq), ("w1", 3));
}

#[test]
fn a_rewritten_tail_with_recomputed_hashes_is_caught_by_the_checkpoint_key() {
    let Some(b) = fresh_backend("pga_rewrite") else {
        return;
    };
    let a = PgAuditSink::open(
        &b,
        PgAuditConfig::new("w1")
            .checkpoint_key(key())
            .settings(AuditSection {
                checkpoint_every_records: 1_000_000,
                checkpoint_every: Duration::from_secs(3600),
                ..settings()
            }),
    )
    .unwrap()
    .0;
    write_n(&a, 6); // seq 1..6, checkpoint at 7
    drop(a);
    // Rewrite record 3 and re-chain 3..=6 with correct hashes (the attacker knows the hash
    // function, not the key); the checkpoint at 7 still names the old head.
    let mut c = b.connect().unwrap();
    let s = b.schema();
    let rows = c
        .query(
            &format!(
                "SELECT seq, prev, event FROM {s}.audit_records WHERE writer='w1' ORDER BY seq"
            ),
            &[],
        )
        .unwrap();
    let mut prev: String = rows[2].get(1);
    for r in &rows[2..7] {
        let seq: i64 = r.get(0);
        let mut ev: Vec<u8> = r.get(2);
        if seq == 3 {
            ev = String::from_utf8(ev)
                .unwrap()
                .replace("run_finished", "run_finishe_")
                .into_bytes();
        }
        if seq == 7 {
            // The checkpoint: its head rewritten to the new hash of 6 (its MAC cannot be).
            let mut cp: serde_json::Value = serde_json::from_slice(&ev).unwrap();
            cp["tollgate.checkpoint.head"] = prev.clone().into();
            ev = serde_json::to_vec(&cp).unwrap();
        }
        let hash = test_hash("w1", &prev, seq as u64, &ev);
        c.execute(
            &format!("UPDATE {s}.audit_records SET prev=$1, hash=$2, event=$3 WHERE writer='w1' AND seq=$4"),
            &[&prev, &hash, &ev, &seq],
        )
        .unwrap();
        prev = hash;
    }
    // Without the key the rewrite passes (the documented limit) ...
    verify(&mut c, s, &[]).unwrap();
    // ... with it, the checkpoint names it.
    let (w, seq, reason) = broken_at(verify(&mut c, s, &[key()]));
    assert_eq!((w.as_str(), seq), ("w1", 7));
    assert!(reason.contains("MAC"), "{reason}");
}

/// The record hash, as the module docs state it.
fn test_hash(writer: &str, prev: &str, seq: u64, event: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"tollgate-pg-audit-v1\n");
    h.update(writer.as_bytes());
    h.update(b"\n");
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(seq.to_string().as_bytes());
    h.update(b"\n");
    h.update(event);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn retention_drops_whole_expired_partitions_and_declares_them() {
    let Some(b) = fresh_backend("pga_retention") else {
        return;
    };
    let day = Duration::from_secs(86_400);
    let clock = Arc::new(ManualClock::with_wall_origin(SystemTime::now() - 30 * day));
    let cfg = |w: &str| {
        PgAuditConfig::new(w)
            .checkpoint_key(key())
            .settings(settings())
            .clock(clock.clone())
    };
    let a = PgAuditSink::open(&b, cfg("a")).unwrap().0;
    let c = PgAuditSink::open(&b, cfg("c")).unwrap().0;
    let old = |s: &PgAuditSink, n: u64| {
        for i in 0..n {
            s.record(&AuditEvent::new(
                i,
                clock.wall(),
                None,
                None,
                EventKind::RunFinished {
                    duration: Duration::ZERO,
                },
            ))
            .unwrap();
        }
        s.flush().unwrap();
    };
    old(&a, 20);
    old(&c, 10);
    clock.step_wall_forward(30 * day);
    old(&a, 5);
    old(&c, 5);
    let report = a
        .retain(&RetentionPolicy::new(Some(7 * day)), clock.wall())
        .unwrap();
    assert_eq!(report.partitions_dropped.len(), 1, "{report:?}");
    assert_eq!(report.writers, 2);
    old(&c, 3);
    drop(a);
    drop(c);
    let mut client = b.connect().unwrap();
    let r = verify(&mut client, b.schema(), &[key()]).unwrap();
    assert_eq!(r.events, 13, "{r:?}");
    assert!(r.chains["c"].0 > 1 && r.chains["a"].0 > 1, "{r:?}");
    assert_eq!(r.declarations, 1);

    // Deleting more of a chain by hand is not explained by the declaration.
    sql(
        &b,
        &format!(
            "DELETE FROM {{s}}.audit_records WHERE writer = 'c' AND seq = {}",
            r.chains["c"].0
        ),
    );
    match verify(&mut client, b.schema(), &[key()]) {
        Err(PgVerifyError::SeqGap { writer, .. }) => assert_eq!(writer, "c"),
        other => panic!("expected SeqGap, got {other:?}"),
    }
}

#[test]
fn a_forged_retention_declaration_is_refused_with_the_key() {
    let Some(b) = fresh_backend("pga_forged_decl") else {
        return;
    };
    let a = open(&b, "a", true);
    write_n(&a, 10);
    drop(a);
    // Delete the first 4 records and append a correctly chained, unsigned declaration.
    let mut c = b.connect().unwrap();
    let s = b.schema();
    let head: (i64, String, i64) = {
        let r = c
            .query_one(&format!("SELECT seq, hash, part FROM {s}.audit_records WHERE writer='a' ORDER BY seq DESC LIMIT 1"), &[])
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    let h4: String = c
        .query_one(
            &format!("SELECT hash FROM {s}.audit_records WHERE writer='a' AND seq=4"),
            &[],
        )
        .unwrap()
        .get(0);
    let decl = format!(
        "{{\"event\":\"retention_applied\",\"time_unix_nano\":1,\"tollgate.retention.evaluated_at\":1,\
         \"tollgate.retention.partitions\":[0],\"tollgate.retention.dropped\":{{\"a\":{{\"last_seq\":4,\"head\":\"{h4}\"}}}}}}"
    )
    .into_bytes();
    let seq = head.0 + 1;
    let hash = test_hash("a", &head.1, seq as u64, &decl);
    c.execute(
        &format!("INSERT INTO {s}.audit_records (part, writer, seq, at_ns, kind, prev, hash, event) VALUES ($1, 'a', $2, 1, 'retention', $3, $4, $5)"),
        &[&head.2, &seq, &head.1, &hash, &decl],
    )
    .unwrap();
    c.execute(
        &format!("DELETE FROM {s}.audit_records WHERE writer='a' AND seq <= 4"),
        &[],
    )
    .unwrap();
    // Without the key the forgery passes (the documented limit) ...
    verify(&mut c, s, &[]).unwrap();
    // ... with it, it does not.
    assert!(matches!(
        verify(&mut c, s, &[key()]),
        Err(PgVerifyError::SeqGap { keyed: true, .. })
    ));
}

#[test]
fn the_database_down_at_start_refuses_to_open() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let b = PgBackend::from_url(
        &format!("host=127.0.0.1 port={port} user=postgres"),
        "nowhere",
        Duration::from_secs(2),
    )
    .unwrap();
    assert!(matches!(
        PgAuditSink::open(&b, PgAuditConfig::new("w")),
        Err(PgAuditError::Backend(_))
    ));
}

#[path = "fleet_audit_support/proxy.rs"]
mod proxy;
use proxy::through_proxy;

/// Counts the events the sink acknowledged to the guard.
struct Counting(Arc<PgAuditSink>, AtomicU64);

impl AuditSink for Counting {
    fn record(&self, event: &AuditEvent<'_>) -> Result<(), tollgate::audit::AuditError> {
        self.0.record(event)?;
        self.1.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn flush(&self) -> Result<(), tollgate::audit::AuditError> {
        self.0.flush()
    }
}

fn boundary() -> ActionBoundary {
    ActionBoundary::builder()
        .tool("look", ToolSpec::read())
        .role("r", RoleSpec::new().tools(["look"]))
        .build()
        .unwrap()
}

/// Records until one is refused (the writer noticed), at most for `within`.
fn until_refused(sink: &PgAuditSink, within: Duration) -> u64 {
    let start = Instant::now();
    let mut accepted = 0;
    while start.elapsed() < within {
        match sink.record(&event(accepted + 1)) {
            Ok(()) => accepted += 1,
            Err(_) => return accepted,
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("the sink never refused within {within:?}");
}

#[test]
fn a_lost_database_makes_the_guard_deny_and_nothing_acknowledged_is_lost() {
    let Some(b) = fresh_backend("pga_lost") else {
        return;
    };
    let (proxy, pb) = through_proxy(&b);
    let sink = Arc::new(open(&pb, "w", true));
    let counted = Arc::new(Counting(sink.clone(), AtomicU64::new(0)));
    let guard = Guard::builder(boundary())
        .audit(counted.clone())
        .build()
        .unwrap();
    let run = guard.start_run(RunContext::new("bot", "r")).unwrap();
    drop(guard.check(&run, &ToolCall::without_args("look")));
    sink.flush().unwrap();

    proxy.cut();
    // Acknowledged until the writer notices; refused from then on.
    let accepted = until_refused(&sink, Duration::from_secs(10));
    let code = guard
        .check(&run, &ToolCall::without_args("look"))
        .deny_code();
    assert_eq!(
        code,
        Some(DenyCode::AuditFailed),
        "the guard denies while the audit cannot be written"
    );
    assert!(sink.flush().is_err());

    proxy.heal();
    let start = Instant::now();
    while sink.flush().is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "never recovered");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        guard
            .check(&run, &ToolCall::without_args("look"))
            .is_allowed()
    );
    drop(run);
    drop(guard);
    sink.close().unwrap();
    let r = verify(&mut b.connect().unwrap(), b.schema(), &[key()]).unwrap();
    // Every event the sink acknowledged, to the guard or to this test, is in the trail.
    assert_eq!(
        r.events,
        counted.1.load(Ordering::Relaxed) + accepted,
        "{r:?}"
    );
}

#[test]
fn a_partitioned_host_denies_after_the_stall_timeout_and_recovers() {
    let Some(b) = fresh_backend("pga_partition") else {
        return;
    };
    let (proxy, pb) = through_proxy(&b);
    let sink = open(&pb, "w", false);
    write_n(&sink, 3);
    proxy.blackhole();
    let start = Instant::now();
    let accepted = until_refused(&sink, Duration::from_secs(15));
    // Not before the stall timeout (2 s): the writer was waiting on the silent connection.
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    proxy.heal();
    let start = Instant::now();
    while sink.flush().is_err() {
        assert!(start.elapsed() < Duration::from_secs(15), "never recovered");
        std::thread::sleep(Duration::from_millis(50));
    }
    sink.close().unwrap();
    let r = verify(&mut b.connect().unwrap(), b.schema(), &[]).unwrap();
    assert_eq!(r.events, 3 + accepted);
}

#[test]
fn a_full_queue_refuses_instead_of_dropping() {
    let Some(b) = fresh_backend("pga_full") else {
        return;
    };
    let (proxy, pb) = through_proxy(&b);
    let sink = PgAuditSink::open(
        &pb,
        PgAuditConfig::new("w").settings(AuditSection {
            queue_capacity: 4,
            max_batch: 1,
            backpressure: AuditBackpressure::Fail,
            stall_timeout: Duration::from_secs(30),
            ..settings()
        }),
    )
    .unwrap()
    .0;
    proxy.blackhole();
    let mut accepted = 0;
    let mut refused = None;
    for i in 1..=20 {
        match sink.record(&event(i)) {
            Ok(()) => accepted += 1,
            Err(e) => {
                refused = Some(e.to_string());
                break;
            }
        }
    }
    let refused = refused.expect("a full queue refuses");
    assert!(refused.contains("queue is full"), "{refused}");
    assert!(accepted <= 5, "{accepted}");
    proxy.heal();
    let start = Instant::now();
    while sink.flush().is_err() {
        assert!(start.elapsed() < Duration::from_secs(40), "never recovered");
        std::thread::sleep(Duration::from_millis(50));
    }
    sink.close().unwrap();
    let r = verify(&mut b.connect().unwrap(), b.schema(), &[]).unwrap();
    assert_eq!(r.events, accepted);
}

// ------------------------------------------------------------------------------------------------
// Several hosts: this test binary re-run as children, each a writer.
// ------------------------------------------------------------------------------------------------

const ROLE: &str = "TOLLGATE_FLEET_AUDIT_CHILD";

fn child_backend() -> Option<(PgBackend, String, u64)> {
    let role = std::env::var(ROLE).ok()?;
    let url = std::env::var("TOLLGATE_PG_URL").unwrap();
    let schema = std::env::var("TOLLGATE_FLEET_SCHEMA").unwrap();
    let n: u64 = std::env::var("TOLLGATE_FLEET_N").unwrap().parse().unwrap();
    Some((
        PgBackend::from_url(&url, &schema, Duration::from_secs(10)).unwrap(),
        role,
        n,
    ))
}

/// A host: writes `n` events as fast as it can, flushes, prints its rate. Does nothing unless
/// run as a child.
#[test]
fn child_audit_host() {
    let Some((b, writer, n)) = child_backend() else {
        return;
    };
    let sink = PgAuditSink::open(
        &b,
        PgAuditConfig::new(&writer)
            .checkpoint_key(key())
            .settings(AuditSection {
                backpressure: AuditBackpressure::Block,
                stall_timeout: Duration::from_secs(30),
                wait_for_commit: std::env::var_os("TOLLGATE_FLEET_COMMIT").is_some(),
                ..AuditSection::default()
            }),
    )
    .unwrap()
    .0;
    println!("READY");
    let start = Instant::now();
    for i in 1..=n {
        sink.record(&event(i)).unwrap();
        if i % 100 == 0 {
            // Progress for the parent (a host killed mid-run is killed mid-batch).
            println!("ACK {i}");
        }
    }
    sink.flush().unwrap();
    let secs = start.elapsed().as_secs_f64();
    println!("DONE {n} {secs:.3}");
    sink.close().unwrap();
}

fn spawn_host(b: &PgBackend, url: &str, writer: &str, n: u64, commit: bool) -> std::process::Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    if commit {
        cmd.env("TOLLGATE_FLEET_COMMIT", "1");
    }
    cmd.args([
        "--exact",
        "child_audit_host",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ROLE, writer)
    .env("TOLLGATE_PG_URL", url)
    .env("TOLLGATE_FLEET_SCHEMA", b.schema())
    .env("TOLLGATE_FLEET_N", n.to_string())
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap()
}

#[test]
fn four_hosts_write_one_trail_and_it_verifies() {
    let Some(b) = fresh_backend("pga_fleet") else {
        return;
    };
    let url = common::pg::pg_url().unwrap();
    let n: u64 = std::env::var("TOLLGATE_FLEET_AUDIT_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25_000);
    // Tables first, so the hosts do not all race on creating them.
    drop(open(&b, "setup", false));
    let start = Instant::now();
    let children: Vec<_> = (0..4)
        .map(|i| spawn_host(&b, &url, &format!("host-{i}"), n, false))
        .collect();
    let mut per_host = Vec::new();
    for mut c in children {
        let mut out = String::new();
        c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        assert!(c.wait().unwrap().success(), "{out}");
        let done = out
            .lines()
            .find(|l| l.starts_with("DONE"))
            .unwrap()
            .to_owned();
        per_host.push(done);
    }
    let wall = start.elapsed().as_secs_f64();
    let total = 4 * n;
    println!(
        "fleet audit: {total} records from 4 processes into one PostgreSQL in {wall:.2} s \
         (process start included) = {:.0} records/s; per host: {per_host:?}",
        total as f64 / wall
    );
    let r = verify(&mut b.connect().unwrap(), b.schema(), &[key()]).unwrap();
    assert_eq!(r.events, total);
    assert_eq!(r.writers, 4);
    assert_eq!(r.uncovered_records, 0);
}

#[test]
fn a_host_killed_mid_batch_loses_nothing_committed_and_the_trail_verifies() {
    let Some(b) = fresh_backend("pga_kill") else {
        return;
    };
    let url = common::pg::pg_url().unwrap();
    drop(open(&b, "setup", false));
    // Each event is acknowledged once committed.
    let mut child = spawn_host(&b, &url, "victim", 1_000_000, true);
    let mut out = child.stdout.take().unwrap();
    // Wait until it has acknowledged a few hundred events, then SIGKILL it mid-stream.
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("ACK 300\n") {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "child ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let mut client = b.connect().unwrap();
    let r = verify(&mut client, b.schema(), &[key()]).unwrap();
    let acked = seen
        .lines()
        .filter_map(|l| l.strip_prefix("ACK ")?.parse::<u64>().ok())
        .max()
        .unwrap();
    assert!(
        r.events >= acked,
        "{} events kept, {acked} acknowledged",
        r.events
    );
    // The writer name is free again (the lock died with the connection) and the chain goes on.
    let (sink, rec) =
        PgAuditSink::open(&b, PgAuditConfig::new("victim").checkpoint_key(key())).unwrap();
    assert_eq!(rec.last_seq, r.chains["victim"].1);
    write_n(&sink, 10);
    sink.close().unwrap();
    let r2 = verify(&mut client, b.schema(), &[key()]).unwrap();
    assert_eq!(r2.events, r.events + 10);
}

#[test]
fn the_documents_backend_audit_section_is_validated_with_located_errors() {
    let doc = |extra: &str| {
        format!(
            "[policy]\nname = \"fleet\"\nowner = \"ops\"\npurpose = \"t\"\nscope = \"t\"\n\
             liability_owner = \"ops\"\nreview_cadence = \"90d\"\ndata_handling = \"none\"\n\
             [tools.read]\neffect = \"read\"\n[roles.worker]\ntools = [\"read\"]\n\
             [backend]\nkind = \"postgres\"\nurl_env = \"TG_UNSET\"\n{extra}"
        )
    };
    let p = tollgate::policy::Policy::from_toml(&doc(
        "[backend.audit]\nwriter = \"host-1\"\nqueue_capacity = 1024\nstall_timeout = \"2s\"\n\
         [backend.approvals]\npoll = \"250ms\"\n",
    ))
    .unwrap();
    let section = p.document().backend.as_ref().unwrap();
    assert_eq!(section.audit.writer.as_deref(), Some("host-1"));
    assert_eq!(section.audit.stall_timeout, Duration::from_secs(2));
    assert_eq!(section.approvals.poll, Duration::from_millis(250));
    let e = tollgate::policy::Policy::from_toml(&doc("[backend.audit]\nmax_batch = 0\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("backend.audit.max_batch"), "{e}");
    let e = tollgate::policy::Policy::from_toml(&doc("[backend.audit]\nbatch = 5\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("batch"), "{e}");
}
