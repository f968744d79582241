//! The allow path of `Guard::check` allocates nothing: proven with a counting global allocator.
//!
//! Covers both argument representations (parsed `Value` and raw JSON text), nested arguments,
//! regex, enum, bounds, path and URL rules, and a compartment, with and without an audit sink that
//! itself does not allocate. Deny paths may allocate (they format a reason) and are not counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json;
use tollgate::audit::{AuditError, AuditEvent, AuditSink};
use tollgate::boundary::{ActionBoundary, Arg, RoleSpec, ToolSpec};
use tollgate::{Guard, Outcome, RunContext, ToolCall, Verdict};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
#[path = "common/tempdir.rs"]
mod tempdir;
use counting_alloc::allocations;

#[derive(Default)]
struct CountingSink(AtomicU64);

impl AuditSink for CountingSink {
    fn record(&self, _: &AuditEvent<'_>) -> Result<(), AuditError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn flush(&self) -> Result<(), AuditError> {
        Ok(())
    }
}

fn boundary() -> ActionBoundary {
    let mut b = ActionBoundary::builder().tiers(["public", "privileged"]);
    for i in 0..100 {
        b = b.tool(format!("filler_{i}"), ToolSpec::read().tier("public"));
    }
    b.tool(
        "pay",
        ToolSpec::irreversible()
            .tier("privileged")
            .compartment_arg("matter")
            .arg("matter", Arg::string().required().pattern("M-[0-9]{4}"))
            .arg(
                "payment.amount",
                Arg::number().required().min(0.01).max(500.0),
            )
            .arg("payment.currency", Arg::string().one_of(["USD", "EUR"]))
            .arg(
                "receipt",
                Arg::string().path_under("/matters/{compartment}/receipts"),
            )
            .arg("callback", Arg::string().url_hosts(["*.bank.example"]))
            .arg("memo", Arg::string().max_length(100)),
    )
    .role(
        "clerk",
        RoleSpec::new()
            .clearance("privileged")
            .tools(["pay", "filler_1"]),
    )
    .build()
    .unwrap()
}

const RAW: &str = r#"{"matter":"M-1001","payment":{"amount":45.5,"currency":"USD"},"receipt":"/matters/M-1001/receipts/r1.pdf","callback":"https://api.bank.example/cb?id=1","memo":"filing fee"}"#;

fn assert_allow_path_allocates_nothing(guard: &Guard) {
    let run = guard
        .start_run(RunContext::new("bot", "clerk").in_compartment("M-1001"))
        .unwrap();
    let value = serde_json::from_str::<serde_json::Value>(RAW).unwrap();
    let raw_call = ToolCall::new("pay", RAW).with_call_id("call_1");
    let value_call = ToolCall::new("pay", &value);
    let no_args = ToolCall::without_args("filler_1");
    // Warm up (lazy statics, thread-locals).
    for call in [&raw_call, &value_call, &no_args] {
        match guard.check(&run, call) {
            Verdict::Allow(p) => p.complete(Outcome::success()).unwrap(),
            other => panic!("expected allow, got {other:?}"),
        }
    }
    for call in [&raw_call, &value_call, &no_args] {
        let (allowed, n) = allocations(|| {
            let v = guard.check(&run, call);
            let ok = v.is_allowed();
            if let Verdict::Allow(p) = v {
                p.complete(Outcome::success()).unwrap();
            }
            ok
        });
        assert!(allowed);
        assert_eq!(
            n,
            0,
            "check + complete allocated {n} times for {:?}",
            call.tool()
        );
    }
}

#[test]
fn allow_path_allocates_nothing_without_audit() {
    let guard = Guard::builder(boundary()).build().unwrap();
    assert_allow_path_allocates_nothing(&guard);
}

#[test]
fn allow_path_allocates_nothing_with_a_non_allocating_sink() {
    let sink = Arc::new(CountingSink::default());
    let guard = Guard::builder(boundary())
        .audit(sink.clone())
        .build()
        .unwrap();
    assert_allow_path_allocates_nothing(&guard);
    assert!(
        sink.0.load(Ordering::Relaxed) > 0,
        "the sink saw the events"
    );
}

#[test]
fn allow_path_allocates_nothing_with_breakers_budgets_rate_limits_loops_and_kill_switch() {
    use std::num::NonZeroU32;
    use std::time::Duration;
    use tollgate::RunBudget;
    use tollgate::breaker::{BreakerConfig, BreakerKey, RateLimit, RateLimits};
    let generous = RateLimit {
        max_calls: NonZeroU32::new(1_000_000_000).unwrap(),
        per: Duration::from_secs(1),
        burst: NonZeroU32::new(u32::MAX),
    };
    let guard = Guard::builder(boundary())
        .audit(Arc::new(CountingSink::default()))
        .breakers(BreakerConfig::default(), BreakerKey::AgentTool, 64)
        .rate_limits(RateLimits {
            per_agent: Some(generous),
            default_per_tool: Some(generous),
            ..RateLimits::default()
        })
        .run_budget(RunBudget {
            max_calls: Some(u64::MAX),
            max_duration: Some(Duration::from_secs(3600)),
            max_tokens: Some(u64::MAX),
            tokens_per_call: 100,
            max_cost_micros: Some(u64::MAX),
            cost_micros_per_call: 10,
        })
        // Loop detection fingerprints every call (raw and parsed arguments alike).
        .loop_detection(tollgate::LoopDetection {
            max_repeats: 1_000_000,
            window: Duration::from_secs(60),
        })
        .build()
        .unwrap();
    // A suspended agent elsewhere makes the kill-switch stage search its set.
    guard
        .suspend_agent(&tollgate::AgentId::new("someone-else"), "test")
        .unwrap();
    // Warm-up (in the shared helper) creates the breaker and the rate-limit buckets; from then
    // on the allow path allocates nothing.
    assert_allow_path_allocates_nothing(&guard);
}

#[test]
fn boundary_check_alone_allocates_nothing() {
    let b = boundary();
    let ctx = RunContext::new("bot", "clerk").in_compartment("M-1001");
    let value = json!({"matter": "M-1001", "payment": {"amount": 1}});
    let _ = b.check(&ctx, &ToolCall::new("pay", RAW));
    let (ok, n) = allocations(|| {
        b.check(&ctx, &ToolCall::new("pay", RAW)).is_ok()
            && b.check(&ctx, &ToolCall::new("pay", &value)).is_ok()
    });
    assert!(ok);
    assert_eq!(n, 0);
}

#[test]
fn the_counter_does_see_allocations() {
    // Guards against a counter that never counts (which would make the tests above vacuous).
    let (_, n) = allocations(|| std::hint::black_box(vec![1u8; 64]));
    assert!(n >= 1);
    let b = boundary();
    let ctx = RunContext::new("bot", "clerk").in_compartment("M-1001");
    let (_, n) = allocations(|| {
        b.check(&ctx, &ToolCall::new("pay", r#"{"matter":"M-2002"}"#))
            .is_err()
    });
    assert!(n >= 1, "a denial formats its reason");
}

#[test]
fn audited_allow_path_with_a_file_sink_allocates_nothing_once_buffers_circulate() {
    // The file sink serialises each record into a buffer the writer emptied and handed back,
    // so in steady state the caller's side of an audited call (two records) allocates nothing.
    // Each measured call is followed, outside the count, by a flush so the writer has returned
    // the buffers (a caller that outruns the writer allocates fresh ones: that is not counted
    // as steady state).
    use tollgate::audit::file::{Durability, FileSink, FileSinkConfig};
    let dir = tempdir::temp_dir("alloc", "file-sink");
    let cfg = FileSinkConfig::default().durability(Durability::OsBuffered);
    let sink = Arc::new(FileSink::open(dir.path(), cfg).unwrap().0);
    let guard = Guard::builder(boundary())
        .audit(sink.clone())
        .build()
        .unwrap();
    let run = guard
        .start_run(RunContext::new("bot", "clerk").in_compartment("M-1001"))
        .unwrap();
    let raw_call = ToolCall::new("pay", RAW).with_call_id("call_1");
    let call = || match guard.check(&run, &raw_call) {
        Verdict::Allow(p) => p.complete(Outcome::success()).is_ok(),
        _ => false,
    };
    for _ in 0..50 {
        assert!(call());
        sink.flush().unwrap();
    }
    let mut total = 0;
    for _ in 0..50 {
        let (ok, n) = allocations(call);
        assert!(ok);
        total += n;
        sink.flush().unwrap();
    }
    assert_eq!(
        total, 0,
        "50 audited calls allocated {total} times on the caller"
    );
    drop(run);
    drop(guard);
    drop(sink);
}
