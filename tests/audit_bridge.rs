//! The async-sink bridge: ordered delivery, flush, sticky failures, backpressure, a dropped worker,
//! redaction, and many threads recording at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tollgate::audit::bridge::{Ack, AsyncAuditSink, AsyncBridge, BridgeConfig};
use tollgate::audit::file::Backpressure;
use tollgate::audit::{AuditError, AuditEvent, AuditSink, EventKind, SECRET_PLACEHOLDER};
use tollgate::boundary::{ActionBoundary, Arg, RoleSpec, ToolSpec};
use tollgate::{DenyCode, Guard, RunContext, ToolCall};

/// Collects events; fails from event number `fail_at` on; optionally waits on a gate per event.
#[derive(Default)]
struct Collector {
    events: Mutex<Vec<Value>>,
    flushes: AtomicUsize,
    fail_at: Option<usize>,
    gate: Option<Arc<Barrier>>,
    slow: bool,
}

#[async_trait::async_trait]
impl AsyncAuditSink for Collector {
    async fn record(&self, event_json: &[u8]) -> Result<(), AuditError> {
        if let Some(g) = &self.gate {
            g.wait();
        }
        if self.slow {
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut ev = self.events.lock().unwrap();
        if self.fail_at.is_some_and(|n| ev.len() + 1 >= n) {
            return Err(AuditError::Refused {
                sink: "collector",
                reason: "collector unreachable".into(),
            });
        }
        ev.push(serde_json::from_slice(event_json).expect("the bridge delivers valid JSON"));
        Ok(())
    }
    async fn flush(&self) -> Result<(), AuditError> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
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

fn start(
    c: Collector,
    cfg: BridgeConfig,
) -> (Arc<Collector>, AsyncBridge, std::thread::JoinHandle<()>) {
    let c = Arc::new(c);
    let (bridge, worker) = AsyncBridge::new(c.clone(), cfg);
    let t = std::thread::spawn(move || worker.run_blocking());
    (c, bridge, t)
}

#[test]
fn events_arrive_in_order_and_flush_waits_for_delivery_and_the_sinks_flush() {
    let (c, bridge, t) = start(
        Collector {
            slow: true,
            ..Default::default()
        },
        BridgeConfig::default(),
    );
    for i in 1..=20 {
        bridge.record(&event(i)).unwrap();
    }
    bridge.flush().unwrap();
    let seqs: Vec<u64> = c
        .events
        .lock()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=20).collect::<Vec<_>>(),
        "flush returned before every event was delivered"
    );
    assert!(c.flushes.load(Ordering::SeqCst) >= 1);
    drop(bridge);
    t.join().unwrap();
}

#[test]
fn a_delivery_failure_is_sticky_and_makes_the_guard_deny() {
    let (_c, bridge, t) = start(
        Collector {
            fail_at: Some(3),
            ..Default::default()
        },
        BridgeConfig::default(),
    );
    let bridge = Arc::new(bridge);
    let b = ActionBoundary::builder()
        .tool("look", ToolSpec::read())
        .role("r", RoleSpec::new().tools(["look"]))
        .build()
        .unwrap();
    let guard = Guard::builder(b).audit(bridge.clone()).build().unwrap();
    let run = guard.start_run(RunContext::new("a", "r")).unwrap();
    // Events 1 (run start) and 2 are delivered; 3 fails; from then on every record is refused.
    let _ = guard.check(&run, &ToolCall::without_args("look"));
    let _ = guard.check(&run, &ToolCall::without_args("look"));
    assert!(bridge.flush().is_err(), "the failure must surface at flush");
    let v = guard.check(&run, &ToolCall::without_args("look"));
    assert_eq!(v.deny_code(), Some(DenyCode::AuditFailed));
    drop(v);
    assert!(bridge.record(&event(99)).is_err());
    drop(run);
    drop(guard);
    drop(bridge);
    t.join().unwrap();
}

#[test]
fn a_full_queue_refuses_under_fail_backpressure() {
    let gate = Arc::new(Barrier::new(2));
    let (c, bridge, t) = start(
        Collector {
            gate: Some(gate.clone()),
            ..Default::default()
        },
        BridgeConfig::default()
            .capacity(1)
            .backpressure(Backpressure::Fail),
    );
    bridge.record(&event(1)).unwrap(); // taken by the worker, which now waits at the gate
    // Wait until the worker has dequeued it (the queue is then empty), then fill the queue.
    let mut filled = false;
    for _ in 0..1000 {
        if bridge.record(&event(2)).is_ok() {
            filled = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(filled);
    let full = bridge.record(&event(3));
    assert!(
        matches!(&full, Err(AuditError::Refused { reason, .. }) if reason.contains("full")),
        "{full:?}"
    );
    gate.wait(); // event 1 delivered
    gate.wait(); // event 2 delivered
    bridge.flush().unwrap();
    assert_eq!(c.events.lock().unwrap().len(), 2);
    drop(bridge);
    t.join().unwrap();
}

#[test]
fn without_a_running_worker_events_are_refused_not_queued_for_nobody() {
    let c = Arc::new(Collector::default());
    let (bridge, worker) = AsyncBridge::new(c, BridgeConfig::default());
    drop(worker);
    let r = bridge.record(&event(1));
    assert!(
        matches!(&r, Err(AuditError::Refused { reason, .. }) if reason.contains("worker")),
        "{r:?}"
    );
    assert!(bridge.flush().is_err());
}

#[test]
fn ack_delivered_returns_only_after_the_async_sink_took_the_event() {
    let (c, bridge, t) = start(
        Collector {
            slow: true,
            ..Default::default()
        },
        BridgeConfig::default().ack(Ack::Delivered),
    );
    for i in 1..=5 {
        bridge.record(&event(i)).unwrap();
        assert_eq!(c.events.lock().unwrap().len(), i as usize);
    }
    drop(bridge);
    t.join().unwrap();
}

#[test]
fn the_bridge_redacts_before_anything_leaves_the_process() {
    let (c, bridge, t) = start(Collector::default(), BridgeConfig::default());
    let bridge = Arc::new(bridge);
    let b = ActionBoundary::builder()
        .tool(
            "login",
            ToolSpec::write()
                .arg("user", Arg::string())
                .arg("password", Arg::string().secret()),
        )
        .role("r", RoleSpec::new().tools(["login"]))
        .build()
        .unwrap();
    let guard = Guard::builder(b).audit(bridge.clone()).build().unwrap();
    let run = guard.start_run(RunContext::new("a", "r")).unwrap();
    let args = json!({ "user": "u", "password": "s3cr3t-PLANTED" });
    assert!(
        guard
            .check(&run, &ToolCall::new("login", &args))
            .is_allowed()
    );
    bridge.flush().unwrap();
    let all = serde_json::to_string(&*c.events.lock().unwrap()).unwrap();
    assert!(!all.contains("PLANTED"), "{all}");
    assert!(all.contains(SECRET_PLACEHOLDER));
    drop(run);
    drop(guard);
    drop(bridge);
    t.join().unwrap();
}

#[test]
fn many_threads_recording_lose_and_duplicate_nothing() {
    let (c, bridge, t) = start(Collector::default(), BridgeConfig::default().capacity(64));
    let bridge = Arc::new(bridge);
    let threads: Vec<_> = (0..8u64)
        .map(|k| {
            let bridge = bridge.clone();
            std::thread::spawn(move || {
                for i in 0..500u64 {
                    bridge.record(&event(k * 1_000_000 + i)).unwrap();
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    bridge.flush().unwrap();
    let events = c.events.lock().unwrap();
    assert_eq!(events.len(), 8 * 500);
    for k in 0..8u64 {
        let mine: Vec<u64> = events
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .filter(|s| s / 1_000_000 == k)
            .collect();
        assert_eq!(
            mine,
            (0..500).map(|i| k * 1_000_000 + i).collect::<Vec<_>>()
        );
    }
    drop(events);
    drop(bridge);
    t.join().unwrap();
}
