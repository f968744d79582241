//! The shared approval queue on PostgreSQL: hosts racing for one grant, decisions from another
//! host waking the waiting one, forged rows refused, timeouts that deny, and the round trip.
#![cfg(feature = "postgres")]

mod common;

use std::future::Future;
use std::io::Read;
use std::pin::pin;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tollgate::backend::postgres::PgBackend;
use tollgate::backend::postgres::approvals::{PgApprovalListener, PgApprovalStore};
use tollgate::boundary::Effect;
use tollgate::clock::{ManualClock, SystemClock};
use tollgate::escalation::{
    ApprovalId, ApprovalQueue, ApprovalStore, Approver, Condition, Decision, EscalationGate,
    EscalationPolicy, GateInput, LevelSpec, QueueConfig, QueueError, RuleParams, RuleSpec,
    StoreError, StoreKey, Submission,
};

use common::pg::{fresh_backend, pg_url};

fn store_key() -> StoreKey {
    StoreKey::new("fleet-approvals", vec![5; 32]).unwrap()
}

fn gate() -> EscalationGate {
    let policy = EscalationPolicy::new()
        .group("ops", ["alice", "bob"])
        .defaults(
            RuleParams::new()
                .timeout(Duration::from_secs(600))
                .chain([LevelSpec::new("ops")]),
        )
        .rule(RuleSpec::new("payments", Condition::amount_over("amount", 0)).tools(["pay"]));
    EscalationGate::compile(policy, &[]).unwrap()
}

fn queue_on(b: &PgBackend, clock: Arc<dyn tollgate::clock::Clock>) -> Arc<ApprovalQueue> {
    let store = Arc::new(PgApprovalStore::open(b, &store_key(), &[]).unwrap());
    let g = gate();
    Arc::new(ApprovalQueue::open(store, clock, QueueConfig::for_gate(&g)).unwrap())
}

fn submission(args: Value) -> Submission {
    let g = gate();
    let esc = g
        .check(&GateInput::new("pay", Effect::Irreversible, &args))
        .expect("escalates");
    Submission::new("run-1", "billing-bot", "pay", args, esc, g.version()).triggered_by("dave")
}

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// A minimal executor; panics after 20 s so a future never woken fails the test.
fn block_on<F: Future>(f: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    let start = Instant::now();
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "never resolved");
        thread::park_timeout(Duration::from_secs(1));
    }
}

#[test]
fn a_decision_on_another_host_wakes_the_waiting_host() {
    let Some(b) = fresh_backend("pgq_wake") else {
        return;
    };
    let host_a = queue_on(&b, Arc::new(SystemClock::new()));
    let _listen =
        PgApprovalListener::start(&b, Arc::downgrade(&host_a), Duration::from_secs(5)).unwrap();
    let host_b = queue_on(&b, Arc::new(SystemClock::new()));
    let args = json!({"amount": 10, "to": "ACME"});
    let req = host_a.submit(submission(args.clone())).unwrap();
    host_b.sync().unwrap();
    // Separation of duties holds across hosts: the run's trigger cannot approve it.
    assert!(matches!(
        host_b.decide(&req.id, &Approver::new("dave"), Decision::Approve, "mine"),
        Err(QueueError::NotEligible { .. } | QueueError::SelfApproval { .. })
    ));
    host_b
        .decide(&req.id, &Approver::new("alice"), Decision::Approve, "ok")
        .unwrap();
    let res = block_on(host_a.wait(&req.id)).unwrap();
    assert!(res.is_approved());
    let _grant = host_a.consume(&req.id, &args).unwrap();
    // Host B's view learns of the consumption, and cannot consume again.
    host_b.sync().unwrap();
    assert!(host_b.consume(&req.id, &args).is_err());
}

#[test]
fn a_timeout_and_a_decision_racing_on_two_hosts_resolve_once() {
    let Some(b) = fresh_backend("pgq_timeout") else {
        return;
    };
    let clock = Arc::new(ManualClock::with_wall_origin(SystemTime::now()));
    let host_a = queue_on(&b, clock.clone());
    let host_b = queue_on(&b, Arc::new(SystemClock::new()));
    let req = host_a.submit(submission(json!({"amount": 5}))).unwrap();
    host_b.sync().unwrap();
    // Host A's deadline passes: the timeout denies.
    clock.advance(Duration::from_secs(601));
    host_a.tick().unwrap();
    assert!(!host_a.status(&req.id).unwrap().state.is_pending());
    // Host B has not synced: its approval is refused by the shared store, not applied.
    let e = host_b
        .decide(&req.id, &Approver::new("alice"), Decision::Approve, "late")
        .unwrap_err();
    assert!(
        matches!(e, QueueError::Store(StoreError::Conflict { .. })),
        "{e}"
    );
    host_b.sync().unwrap();
    let st = host_b.status(&req.id).unwrap().state;
    assert!(!st.is_pending(), "{st}");
    assert!(host_b.consume(&req.id, &json!({"amount": 5})).is_err());
}

#[test]
fn a_forged_approval_row_is_refused() {
    let Some(b) = fresh_backend("pgq_forged") else {
        return;
    };
    let host_a = queue_on(&b, Arc::new(SystemClock::new()));
    let req = host_a.submit(submission(json!({"amount": 7}))).unwrap();
    // A database writer without the key inserts "alice approved" and moves the head.
    let mut c = b.connect().unwrap();
    let s = b.schema();
    let head = c
        .query_one(&format!("SELECT seq, hash FROM {s}.approval_head"), &[])
        .unwrap();
    let (seq, prev): (i64, String) = (head.get(0), head.get(1));
    let record = serde_json::to_vec(&json!({
        "record": "decided", "id": req.id.as_str(),
        "approver": {"id": "alice"}, "decision": "approve", "reason": "forged", "at_ms": 1
    }))
    .unwrap();
    c.execute(
        &format!(
            "INSERT INTO {s}.approval_records (seq, prev, hash, key_id, mac, request_id, kind, record) \
             VALUES ($1, $2, $3, 'fleet-approvals', $4, $5, 'decided', $6)"
        ),
        &[&(seq + 1), &prev, &"0".repeat(64), &"0".repeat(64), &req.id.as_str(), &record],
    )
    .unwrap();
    c.execute(
        &format!("UPDATE {s}.approval_head SET seq = $1"),
        &[&(seq + 1)],
    )
    .unwrap();
    // The running host refuses it on sync; a new host refuses to open over it.
    assert!(matches!(
        host_a.sync(),
        Err(QueueError::Store(StoreError::Tampered { .. }))
    ));
    assert!(host_a.status(&req.id).unwrap().state.is_pending());
    let store = Arc::new(PgApprovalStore::open(&b, &store_key(), &[]).unwrap());
    match store.load() {
        Err(StoreError::Tampered { seq: at, .. }) => assert_eq!(at as i64, seq + 1),
        other => panic!("expected Tampered, got {other:?}"),
    }
}

#[test]
fn the_database_down_at_start_refuses_to_open() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
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
    assert!(PgApprovalStore::open(&b, &store_key(), &[]).is_err());
}

#[path = "fleet_audit_support/proxy.rs"]
mod proxy;

#[test]
fn a_lost_database_times_pending_approvals_out_as_denials() {
    let Some(b) = fresh_backend("pgq_lost") else {
        return;
    };
    let (proxy, pb) = proxy::through_proxy(&b);
    let clock = Arc::new(ManualClock::with_wall_origin(SystemTime::now()));
    let host = queue_on(&pb, clock.clone());
    let args = json!({"amount": 3});
    let req = host.submit(submission(args.clone())).unwrap();
    proxy.cut();
    // An approver on another host cannot reach the database either: nothing is decided.
    let other = queue_on(&b, Arc::new(SystemClock::new()));
    other.sync().unwrap();
    // The deadline passes while the database is away: the waiting host gets an error (the
    // guard denies), never an approval, and the grant cannot be consumed.
    clock.advance(Duration::from_secs(601));
    assert!(block_on(host.wait(&req.id)).is_err());
    assert!(host.consume(&req.id, &args).is_err());
    // Back: the timeout is recorded as a denial, for every host.
    proxy.heal();
    let start = Instant::now();
    while host.tick().is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "never recovered");
        thread::sleep(Duration::from_millis(50));
    }
    let res = block_on(host.wait(&req.id)).unwrap();
    assert!(!res.is_approved());
    other.sync().unwrap();
    assert!(!other.status(&req.id).unwrap().state.is_pending());
    assert!(
        other
            .decide(&req.id, &Approver::new("alice"), Decision::Approve, "late")
            .is_err()
    );
}

// ------------------------------------------------------------------------------------------------
// Several hosts as processes.
// ------------------------------------------------------------------------------------------------

const ROLE: &str = "TOLLGATE_FLEET_APPROVAL_CHILD";

fn child_env() -> Option<(String, PgBackend)> {
    let role = std::env::var(ROLE).ok()?;
    let url = std::env::var("TOLLGATE_PG_URL").unwrap();
    let schema = std::env::var("TOLLGATE_FLEET_SCHEMA").unwrap();
    Some((
        role,
        PgBackend::from_url(&url, &schema, Duration::from_secs(10)).unwrap(),
    ))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A host: `consume` races for the grant of request `TOLLGATE_FLEET_ID` at `TOLLGATE_FLEET_GO`
/// (unix ms); `approve` approves every pending request it hears of until it has approved
/// `TOLLGATE_FLEET_N`. Does nothing unless run as a child.
#[test]
fn child_approval_host() {
    let Some((role, b)) = child_env() else {
        return;
    };
    let queue = queue_on(&b, Arc::new(SystemClock::new()));
    match role.as_str() {
        "consume" => {
            let id = ApprovalId::new(std::env::var("TOLLGATE_FLEET_ID").unwrap());
            let go: u64 = std::env::var("TOLLGATE_FLEET_GO").unwrap().parse().unwrap();
            while now_ms() < go {
                thread::sleep(Duration::from_millis(1));
            }
            match queue.consume(&id, &json!({"amount": 99})) {
                Ok(_) => println!("RESULT consumed"),
                Err(e) => println!("RESULT refused: {e}"),
            }
        }
        "approve" => {
            let n: usize = std::env::var("TOLLGATE_FLEET_N").unwrap().parse().unwrap();
            let _l = PgApprovalListener::start(&b, Arc::downgrade(&queue), Duration::from_secs(1))
                .unwrap();
            println!("READY");
            let mut done = 0;
            let start = Instant::now();
            while done < n && start.elapsed() < Duration::from_secs(60) {
                for r in queue.pending().unwrap() {
                    if queue
                        .decide(&r.id, &Approver::new("bob"), Decision::Approve, "ok")
                        .is_ok()
                    {
                        done += 1;
                    }
                }
                thread::sleep(Duration::from_micros(200));
            }
        }
        other => panic!("unknown role {other}"),
    }
}

fn spawn(b: &PgBackend, role: &str, env: &[(&str, String)]) -> std::process::Child {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        "child_approval_host",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ROLE, role)
    .env("TOLLGATE_PG_URL", pg_url().unwrap())
    .env("TOLLGATE_FLEET_SCHEMA", b.schema())
    .stdout(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

#[test]
fn processes_racing_for_one_grant_consume_it_exactly_once() {
    let Some(b) = fresh_backend("pgq_race") else {
        return;
    };
    let host = queue_on(&b, Arc::new(SystemClock::new()));
    let args = json!({"amount": 99});
    let req = host.submit(submission(args.clone())).unwrap();
    host.decide(&req.id, &Approver::new("alice"), Decision::Approve, "ok")
        .unwrap();
    let go = now_ms() + 3_000;
    let children: Vec<_> = (0..4)
        .map(|_| {
            spawn(
                &b,
                "consume",
                &[
                    ("TOLLGATE_FLEET_ID", req.id.as_str().to_owned()),
                    ("TOLLGATE_FLEET_GO", go.to_string()),
                ],
            )
        })
        .collect();
    let mut results = Vec::new();
    for mut c in children {
        let mut out = String::new();
        c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        assert!(c.wait().unwrap().success(), "{out}");
        results.push(
            out.lines()
                .find_map(|l| l.split("RESULT ").nth(1).map(str::to_owned))
                .unwrap_or_else(|| panic!("no result: {out}")),
        );
    }
    let consumed = results.iter().filter(|r| *r == "consumed").count();
    assert_eq!(consumed, 1, "{results:?}");
    // The parent's view agrees, after syncing.
    host.sync().unwrap();
    assert!(host.consume(&req.id, &args).is_err());
}

#[test]
fn approval_round_trip_across_hosts() {
    let Some(b) = fresh_backend("pgq_rtt") else {
        return;
    };
    let n: usize = std::env::var("TOLLGATE_FLEET_APPROVAL_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let host_a = queue_on(&b, Arc::new(SystemClock::new()));
    let _l =
        PgApprovalListener::start(&b, Arc::downgrade(&host_a), Duration::from_secs(1)).unwrap();
    let mut approver = spawn(&b, "approve", &[("TOLLGATE_FLEET_N", n.to_string())]);
    let mut out = approver.stdout.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 256];
    while !seen.contains("READY") {
        let k = out.read(&mut buf).unwrap();
        assert!(k > 0, "approver ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..k]));
    }
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let args = json!({"amount": 100 + i});
        let t = Instant::now();
        let req = host_a.submit(submission(args.clone())).unwrap();
        let res = block_on(host_a.wait(&req.id)).unwrap();
        assert!(res.is_approved());
        let _grant = host_a.consume(&req.id, &args).unwrap();
        times.push(t.elapsed());
    }
    assert!(approver.wait().unwrap().success());
    times.sort();
    let p = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "approval round trip across hosts (submit on A, approve on B, A woken and consumes), \
         {n} requests: p50 {:?}, p99 {:?}, max {:?}",
        p(0.50),
        p(0.99),
        times[times.len() - 1]
    );
}
