//! Criterion benches for the boundary and the guard pipeline.
//!
//! Run with `cargo bench --bench guard`. Groups:
//! - `boundary`: `ActionBoundary::check` alone. `allow_{10,100,1000}_tools` call an argument-less
//!   tool in boundaries of that many tools (the lookup must stay flat); `args_3_rules` calls a tool
//!   with three argument rules (anchored regex, numeric bound, enum) in a 100-tool boundary with
//!   parsed `serde_json::Value` arguments, `args_3_rules_raw` with the raw JSON text;
//!   `deny_unknown` proposes a tool that does not exist.
//! - `credential`: `mint_derived` (check, mint an HMAC-signed token, complete), `verify_derived`
//!   (what the downstream service does), `expose_checked` (every check `expose` makes, no sink).
//! - `breaker`: `closed_check` (one atomic load), `record_outcome` (acquire + record into a
//!   100-call window), `budget_reserve` (argument-less allow reserving a call budget),
//!   `rate_limit_check` (the same with an agent and a tool rate limit), `loop_detect` (the
//!   `check_allow` call with loop detection scanning a full 1024-call memory).
//! - `audit`: `serialize_event` (one decision event written as JSON into a reused buffer),
//!   `record_memory` (caller-side cost of one record), `record_file_caller_side` (the same into
//!   an OS-buffered `FileSink` whose writer keeps up: bursts of 256 records, timed, then untimed
//!   until the writer has taken them), `pipeline_audited_caller_side` and `pipeline_unaudited`
//!   (the guard's check-and-complete of the raw 3-rule call with every runtime primitive on, in
//!   the same bursts, with and without that sink: half the difference is the caller-side cost
//!   of one of the pipeline's records), `record_file_buffered` (the same sustained: the writer's
//!   pace),
//!   `file_throughput_buffered` and `file_throughput_fsync_group` (records until durable, per
//!   record), `verify_throughput` (a 20 000-record log), `guard_check_file_log_empty` and
//!   `guard_check_file_log_1m` (the guard's check-and-complete with an OS-buffered file sink, on an
//!   empty log and on one holding a million records: the cost does not grow with the log);
//!   with `TOLLGATE_BENCH_LOG_RECORDS=N`, also `guard_check_file_log_reopened_N` on a log of N
//!   records written, closed and opened again (the time to open it is printed).
//! - `costs`: `system_time_now`, `instant_now`, `mutex_lock_unlock`, `arc_clone_drop`: what
//!   a clock read, an uncontended lock and a reference count cost here (what the hot path avoids
//!   or pays once per call).
//! - `guard`: `Guard::check` plus completing the permit, no audit sink: `check_allow` (the
//!   `args_3_rules` call), `check_allow_raw`, `check_allow_audited` (with an audit sink that takes
//!   every event without storing it), `check_deny` (an argument over its bound: the denial formats
//!   its reason).

#[path = "shared/mod.rs"]
mod shared;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use shared::{RAW, args, boundary, check_and_complete};
use tollgate::audit::{AuditError, AuditEvent, AuditSink};
use tollgate::{Guard, Outcome, RunContext, ToolCall, Verdict};

fn bench_boundary(c: &mut Criterion) {
    let mut g = c.benchmark_group("boundary");
    let ctx = RunContext::new("agent", "clerk");
    for n in [10, 100, 1000] {
        let b = boundary(n);
        assert_eq!(b.tool_count(), n);
        let call = ToolCall::without_args("lookup");
        assert!(b.check(&ctx, &call).is_ok());
        g.bench_function(format!("allow_{n}_tools"), |bench| {
            bench.iter(|| {
                black_box(&b)
                    .check(black_box(&ctx), black_box(&call))
                    .is_ok()
            })
        });
    }
    let b = boundary(100);
    let unknown = ToolCall::without_args("tool_9999");
    assert!(b.check(&ctx, &unknown).is_err());
    g.bench_function("deny_unknown", |bench| {
        bench.iter(|| {
            black_box(&b)
                .check(black_box(&ctx), black_box(&unknown))
                .is_err()
        })
    });
    let value = args();
    let call = ToolCall::new("pay_invoice", &value);
    assert!(b.check(&ctx, &call).is_ok());
    g.bench_function("args_3_rules", |bench| {
        bench.iter(|| {
            black_box(&b)
                .check(black_box(&ctx), black_box(&call))
                .is_ok()
        })
    });
    let raw = ToolCall::new("pay_invoice", RAW);
    assert!(b.check(&ctx, &raw).is_ok());
    g.bench_function("args_3_rules_raw", |bench| {
        bench.iter(|| {
            black_box(&b)
                .check(black_box(&ctx), black_box(&raw))
                .is_ok()
        })
    });
    g.finish();
}

struct NullSink;

impl AuditSink for NullSink {
    fn record(&self, event: &AuditEvent<'_>) -> Result<(), AuditError> {
        black_box(event.seq);
        Ok(())
    }
    fn flush(&self) -> Result<(), AuditError> {
        Ok(())
    }
}

fn bench_guard(c: &mut Criterion) {
    let mut g = c.benchmark_group("guard");
    let guard = Guard::builder(boundary(100)).build().unwrap();
    let run = guard.start_run(RunContext::new("agent", "clerk")).unwrap();
    let value = args();
    let call = ToolCall::new("pay_invoice", &value);
    assert!(check_and_complete(&guard, &run, &call));
    g.bench_function("check_allow", |bench| {
        bench.iter(|| check_and_complete(black_box(&guard), &run, black_box(&call)))
    });
    let raw = ToolCall::new("pay_invoice", RAW);
    assert!(check_and_complete(&guard, &run, &raw));
    g.bench_function("check_allow_raw", |bench| {
        bench.iter(|| check_and_complete(black_box(&guard), &run, black_box(&raw)))
    });
    // The same, with an audit sink that takes every event without storing it: the cost of
    // building the events, numbering them and reading the clock for the outcome's latency.
    let audited = Guard::builder(boundary(100))
        .audit(std::sync::Arc::new(NullSink))
        .build()
        .unwrap();
    let audited_run = audited
        .start_run(RunContext::new("agent", "clerk"))
        .unwrap();
    assert!(check_and_complete(&audited, &audited_run, &call));
    g.bench_function("check_allow_audited", |bench| {
        bench.iter(|| check_and_complete(black_box(&audited), &audited_run, black_box(&call)))
    });
    let over = json!({"invoice": "INV-004711", "amount": 99_999, "currency": "EUR"});
    let deny = ToolCall::new("pay_invoice", &over);
    assert!(!check_and_complete(&guard, &run, &deny));
    g.bench_function("check_deny", |bench| {
        bench.iter(|| check_and_complete(black_box(&guard), &run, black_box(&deny)))
    });
    g.finish();
}

fn bench_credential(c: &mut Criterion) {
    use tollgate::credential::token::SigningKey;
    use tollgate::credential::{CredentialBroker, CredentialGrant, JwtProvider, Operation};
    let mut g = c.benchmark_group("credential");
    let tokens = JwtProvider::new(SigningKey::generate("k1").unwrap(), "docs");
    let verifier = tokens.verifier();
    let broker = CredentialBroker::builder()
        .provider("docs", tokens)
        .grant(
            "clerk",
            CredentialGrant::new(
                "docs",
                ["lookup"],
                [Operation::Read],
                "matter/{compartment}/*",
                std::time::Duration::from_secs(300),
            ),
        )
        .build()
        .unwrap();
    let guard = Guard::builder(boundary(100))
        .credentials(broker)
        .build()
        .unwrap();
    let ctx = RunContext::new("agent", "clerk").in_compartment("M-1001");
    let call = ToolCall::without_args("lookup");
    // mint_jwt: check + mint (an EdDSA-signed JWT) + complete, one fresh run per iteration (run
    // creation and teardown, which revokes, are outside the timing).
    g.bench_function("mint_jwt", |bench| {
        bench.iter_batched(
            || guard.start_run(ctx.clone()).unwrap(),
            |run| {
                if let Verdict::Allow(p) = guard.check(&run, &call) {
                    let c = p.credential("docs", "matter/M-1001/*").unwrap();
                    black_box(c.id());
                    drop(c);
                    p.complete(Outcome::success()).unwrap();
                }
                run
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let run = guard.start_run(ctx.clone()).unwrap();
    let Verdict::Allow(permit) = guard.check(&run, &call) else {
        panic!("allowed")
    };
    let cred = permit.credential("docs", "matter/M-1001/*").unwrap();
    let token = cred
        .expose(&permit, "matter/M-1001/a.pdf")
        .unwrap()
        .to_owned();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(verifier.verify(&token, now).is_ok());
    g.bench_function("verify_jwt", |bench| {
        bench.iter(|| verifier.verify(black_box(&token), now).is_ok())
    });
    g.bench_function("expose_checked", |bench| {
        bench.iter(|| {
            cred.expose(black_box(&permit), black_box("matter/M-1001/a.pdf"))
                .is_ok()
        })
    });
    g.finish();
}

fn bench_breaker(c: &mut Criterion) {
    use std::time::Duration;
    use tollgate::breaker::{BreakerConfig, CallResult, CircuitBreaker};
    use tollgate::clock::SystemClock;
    let mut g = c.benchmark_group("breaker");
    let b = CircuitBreaker::new(
        BreakerConfig::default(),
        std::sync::Arc::new(SystemClock::new()),
    )
    .unwrap();
    g.bench_function("closed_check", |bench| {
        bench.iter(|| black_box(&b).try_acquire().is_ok())
    });
    g.bench_function("record_outcome", |bench| {
        bench.iter(|| {
            let t = b.try_acquire().unwrap();
            black_box(b.record(t, CallResult::Success, Duration::from_millis(3)))
        })
    });
    // Budget reservation as the guard does it: allow path with a max_calls budget high enough
    // never to run out (compare with guard/check_allow).
    let guard = Guard::builder(boundary(100))
        .run_budget(tollgate::RunBudget {
            max_calls: Some(u64::MAX),
            max_duration: None,
            ..Default::default()
        })
        .build()
        .unwrap();
    let run = guard.start_run(RunContext::new("agent", "clerk")).unwrap();
    let call = ToolCall::without_args("lookup");
    g.bench_function("budget_reserve", |bench| {
        bench.iter(|| check_and_complete(black_box(&guard), &run, black_box(&call)))
    });
    // Rate limits: the argument-less allow with an agent and a tool bucket large enough never
    // to run dry (compare with budget_reserve).
    let generous = tollgate::breaker::RateLimit {
        max_calls: std::num::NonZeroU32::new(1_000_000_000).unwrap(),
        per: std::time::Duration::from_secs(1),
        burst: std::num::NonZeroU32::new(u32::MAX),
    };
    let limited = Guard::builder(boundary(100))
        .rate_limits(tollgate::breaker::RateLimits {
            per_agent: Some(generous),
            default_per_tool: Some(generous),
            ..Default::default()
        })
        .build()
        .unwrap();
    let rrun = limited
        .start_run(RunContext::new("agent", "clerk"))
        .unwrap();
    assert!(check_and_complete(&limited, &rrun, &call));
    g.bench_function("rate_limit_check", |bench| {
        bench.iter(|| check_and_complete(black_box(&limited), &rrun, black_box(&call)))
    });
    // Loop detection at its worst: the run's memory full (1024 remembered calls) and a limit
    // never reached, so every check fingerprints the call and scans the whole memory.
    let looped = Guard::builder(boundary(100))
        .loop_detection(tollgate::LoopDetection {
            max_repeats: u32::MAX,
            window: Duration::from_secs(3600),
        })
        .build()
        .unwrap();
    let lrun = looped.start_run(RunContext::new("agent", "clerk")).unwrap();
    let value = args();
    let lcall = ToolCall::new("pay_invoice", &value);
    for _ in 0..1100 {
        assert!(check_and_complete(&looped, &lrun, &lcall));
    }
    g.bench_function("loop_detect", |bench| {
        bench.iter(|| check_and_complete(black_box(&looped), &lrun, black_box(&lcall)))
    });
    g.finish();
}

/// Runs `f` `iters` times in bursts of `burst`, timing only the bursts: between two, untimed,
/// it waits until `sink`'s writer has taken every queued event, so the bursts measure what the
/// caller's thread pays while the writer keeps up.
fn in_bursts(
    iters: u64,
    burst: u64,
    sink: Option<&tollgate::audit::file::FileSink>,
    mut f: impl FnMut(),
) -> std::time::Duration {
    let mut took = std::time::Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(burst);
        let t = std::time::Instant::now();
        for _ in 0..n {
            f();
        }
        took += t.elapsed();
        left -= n;
        while sink.is_some_and(|s| s.queued_events() > 0) {
            std::thread::sleep(std::time::Duration::from_micros(20));
        }
    }
    took
}

fn bench_audit(c: &mut Criterion) {
    use std::time::{Duration, Instant, SystemTime};
    use tollgate::audit::file::{Durability, FileSink, FileSinkConfig, verify};
    use tollgate::audit::{Decision, EventKind, MemorySink};
    use tollgate::{AgentId, RunId};

    let run = RunId::new("run-bench-1");
    let agent = AgentId::new("agent-7");
    let value = args();
    let call = ToolCall::new("pay_invoice", &value).with_call_id("call_123");
    let version = boundary(10).version();
    let event = |seq| {
        AuditEvent::new(
            seq,
            SystemTime::now(),
            Some(&run),
            Some(&agent),
            EventKind::Decision {
                call: &call,
                decision: Decision::Allow,
                policy_version: Some(version),
            },
        )
    };
    // Removed when this function returns or a bench panics.
    let scratch_dir = tempfile::Builder::new()
        .prefix("tollgate-bench-")
        .tempdir()
        .unwrap();
    let scratch = scratch_dir.path();
    let fresh = |name: &str| {
        let d = scratch.join(name);
        let _ = std::fs::remove_dir_all(&d);
        d
    };

    let mut g = c.benchmark_group("audit");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(4));
    // Serialising one decision event into a reused buffer (what every shipped sink does first).
    g.bench_function("serialize_event", |bench| {
        let mut buf = Vec::with_capacity(512);
        let redaction = tollgate::audit::Redaction::placeholder();
        bench.iter(|| {
            buf.clear();
            black_box(&event(1)).write_json(&mut buf, &redaction);
            buf.len()
        })
    });
    // Caller-side cost of one record: the memory sink (serialises to a JSON value and stores it)...
    g.bench_function("record_memory", |bench| {
        bench.iter_custom(|iters| {
            let sink = MemorySink::new();
            let t = Instant::now();
            for i in 0..iters {
                sink.record(&event(i + 1)).unwrap();
            }
            t.elapsed()
        })
    });
    // ...and the file sink in OS-buffered mode: serialise on the caller, enqueue for the writer.
    g.throughput(criterion::Throughput::Elements(1));
    g.bench_function("record_file_buffered", |bench| {
        bench.iter_custom(|iters| {
            let dir = fresh("buffered-caller");
            let cfg = FileSinkConfig::default()
                .durability(Durability::OsBuffered)
                .queue_capacity(1 << 16);
            let (sink, _) = FileSink::open(&dir, cfg).unwrap();
            let t = Instant::now();
            for i in 0..iters {
                sink.record(&event(i + 1)).unwrap();
            }
            let took = t.elapsed();
            drop(sink);
            let _ = std::fs::remove_dir_all(&dir);
            took
        })
    });
    // What the caller's thread pays per record while the writer keeps up (the issue's
    // caller-side cost): bursts of 256 records, each burst timed, then untimed until the writer
    // has taken them (the default 1,024-event queue never fills, so no caller waits for room;
    // the burst's first record wakes the idle writer, and that wake-up is counted).
    // `record_file_buffered` above is the sustained case: the writer's pace.
    g.bench_function("record_file_caller_side", |bench| {
        const BURST: u64 = 256;
        let dir = fresh("caller-side");
        let cfg = FileSinkConfig::default().durability(Durability::OsBuffered);
        let (sink, _) = FileSink::open(&dir, cfg).unwrap();
        let mut seq = 0;
        bench.iter_custom(|iters| {
            in_bursts(iters, BURST, Some(&sink), || {
                seq += 1;
                sink.record(&event(seq)).unwrap();
            })
        });
        drop(sink);
        let _ = std::fs::remove_dir_all(&dir);
    });
    // The audited pipeline's own records (raw JSON arguments the boundary already validated,
    // every runtime primitive on): the same bursts through the guard, with an OS-buffered file
    // sink and without a sink, so the caller-side cost of its two records is the difference
    // (`pipeline_audited_caller_side` - `pipeline_unaudited`) / 2. The writer's draining is not
    // timed.
    {
        use shared::all_primitives;
        const BURST: u64 = 128;
        let dir = fresh("pipeline-caller-side");
        let cfg = FileSinkConfig::default().durability(Durability::OsBuffered);
        let sink = std::sync::Arc::new(FileSink::open(&dir, cfg).unwrap().0);
        let audited = all_primitives(Some(sink.clone()));
        let unaudited = all_primitives(None);
        let raw = ToolCall::new("pay_invoice", RAW);
        for (name, guard, drain) in [
            ("pipeline_audited_caller_side", &audited, Some(&sink)),
            ("pipeline_unaudited", &unaudited, None),
        ] {
            let grun = guard.start_run(RunContext::new("agent", "clerk")).unwrap();
            assert!(check_and_complete(guard, &grun, &raw));
            g.bench_function(name, |bench| {
                bench.iter_custom(|iters| {
                    in_bursts(iters, BURST, drain.map(|s| &**s), || {
                        assert!(check_and_complete(black_box(guard), &grun, black_box(&raw)));
                    })
                })
            });
        }
        drop((audited, unaudited, sink));
        let _ = std::fs::remove_dir_all(&dir);
    }
    // Sustained throughput until durable: records, then flush (all written and fsync'd).
    for (name, durability) in [
        ("file_throughput_buffered", Durability::OsBuffered),
        (
            "file_throughput_fsync_group",
            Durability::GroupCommit { interval_ms: 5 },
        ),
    ] {
        g.bench_function(name, |bench| {
            bench.iter_custom(|iters| {
                let dir = fresh(name);
                let cfg = FileSinkConfig::default()
                    .durability(durability)
                    .queue_capacity(1 << 16);
                let (sink, _) = FileSink::open(&dir, cfg).unwrap();
                let t = Instant::now();
                for i in 0..iters {
                    sink.record(&event(i + 1)).unwrap();
                }
                sink.flush().unwrap();
                let took = t.elapsed();
                drop(sink);
                let _ = std::fs::remove_dir_all(&dir);
                took
            })
        });
    }
    // Verification speed over a 20 000-record log.
    let dir = fresh("verify");
    {
        let cfg = FileSinkConfig::default().durability(Durability::OsBuffered);
        let (sink, _) = FileSink::open(&dir, cfg).unwrap();
        for i in 0..20_000 {
            sink.record(&event(i + 1)).unwrap();
        }
        sink.flush().unwrap();
    }
    g.throughput(criterion::Throughput::Elements(20_000));
    g.bench_function("verify_throughput", |bench| {
        bench.iter(|| verify(&dir).unwrap().records)
    });
    // The guard's whole check with a file sink stays flat as the log grows: the same
    // check-and-complete (two records) against an empty log and against one already holding
    // 1 000 000 records. Steady state, so each figure is bounded by the writer's pace too.
    // Opt-in, as the log takes gigabytes: `TOLLGATE_BENCH_LOG_RECORDS=10000000` adds a log of
    // that many records, closed and opened again as a restarted process would (the time to
    // open it is printed).
    g.throughput(criterion::Throughput::Elements(1));
    let mut cases = vec![
        ("guard_check_file_log_empty".to_owned(), 0u64, false),
        ("guard_check_file_log_1m".to_owned(), 1_000_000, false),
    ];
    if let Some(n) = std::env::var("TOLLGATE_BENCH_LOG_RECORDS")
        .ok()
        .and_then(|n| n.parse::<u64>().ok())
    {
        cases.push((format!("guard_check_file_log_reopened_{n}"), n, true));
    }
    for (name, prefill, reopen) in cases {
        let dir = fresh(&name);
        let cfg = FileSinkConfig::default()
            .durability(Durability::OsBuffered)
            .queue_capacity(1 << 12);
        let started = std::time::Instant::now();
        let (mut sink, _) = FileSink::open(&dir, cfg.clone()).unwrap();
        for i in 0..prefill {
            sink.record(&event(i + 1)).unwrap();
        }
        sink.flush().unwrap();
        if reopen {
            drop(sink);
            let written = started.elapsed();
            let bytes: u64 = std::fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum();
            let started = std::time::Instant::now();
            sink = FileSink::open(&dir, cfg).unwrap().0;
            eprintln!(
                "{name}: {prefill} records ({:.2} GB) written in {:.1} s; reopened in {:.1} ms",
                bytes as f64 / 1e9,
                written.as_secs_f64(),
                started.elapsed().as_secs_f64() * 1e3
            );
        }
        let sink = std::sync::Arc::new(sink);
        let guard = Guard::builder(boundary(100))
            .audit(sink.clone())
            .build()
            .unwrap();
        let grun = guard.start_run(RunContext::new("agent", "clerk")).unwrap();
        assert!(check_and_complete(&guard, &grun, &call));
        g.bench_function(name, |bench| {
            // Asserted: a sink that failed (a full disk) would make every call a fast refusal.
            bench.iter(|| {
                assert!(check_and_complete(
                    black_box(&guard),
                    &grun,
                    black_box(&call)
                ))
            })
        });
        drop(grun);
        drop(guard);
        drop(sink);
        let _ = std::fs::remove_dir_all(&dir);
    }
    g.finish();
    drop(scratch_dir);
}

/// What the hot path avoids or pays once per call, on this machine: a clock read of each kind,
/// an uncontended lock taken and released, a reference count taken and dropped (the run view's
/// cost per check before views were borrowed: one of each of the last two).
fn bench_costs(c: &mut Criterion) {
    use std::sync::Arc;
    let mut g = c.benchmark_group("costs");
    g.bench_function("system_time_now", |b| b.iter(std::time::SystemTime::now));
    g.bench_function("instant_now", |b| b.iter(std::time::Instant::now));
    let lock = parking_lot::Mutex::new(0u64);
    g.bench_function("mutex_lock_unlock", |b| b.iter(|| *black_box(&lock).lock()));
    let shared = Arc::new(0u64);
    g.bench_function("arc_clone_drop", |b| {
        b.iter(|| drop(black_box(Arc::clone(black_box(&shared)))))
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_boundary,
    bench_guard,
    bench_credential,
    bench_breaker,
    bench_audit,
    bench_costs
);
criterion_main!(benches);
