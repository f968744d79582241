//! Criterion benches for the library adapters (issue 15). Run with
//! `cargo bench --bench adapters --features openai,tower,otel`. Group `adapters`:
//! - `guard_check_complete`: the baseline, `Guard::check` of an allowed call with raw JSON
//!   arguments and `Permit::complete`, no audit sink.
//! - `openai_check_finish`: the same call as an OpenAI-style tool call: `openai::check` and
//!   `openai::finish` (flow delivery, outcome, the `role: "tool"` message).
//! - `tower_guarded_call`: the same call through `GuardLayer` around a `service_fn` whose
//!   future is ready at once, polled by hand (no runtime): check, detach, inner call, complete.
//! - `tower_bare_call`: the bare `service_fn`, for the layer's overhead.
//! - `otel_check_complete`: the baseline with an `OtelSink` as the guard's audit sink, on an SDK
//!   tracer provider with no exporter and an SDK meter provider with no reader: one span and
//!   two metric recordings per call.
//! - `blocking_wake`: from an approver's `decide` on another thread to the return of the
//!   thread blocked in `ApprovalQueue::wait_blocking` (the wake-up latency of the blocking API).

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::sync::mpsc::channel;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use opentelemetry::metrics::MeterProvider;
use opentelemetry::trace::TracerProvider;
use serde_json::{Value, json};
use tollgate::boundary::{ActionBoundary, Arg, RoleSpec, ToolSpec};
use tollgate::clock::ManualClock;
use tollgate::escalation::{
    ApprovalParams, ApprovalQueue, Approver, ApproverGroups, Decision, Escalation, EscalationGate,
    Level, MemoryApprovalStore, QueueConfig, Reason, Submission,
};
use tollgate::integrations::openai::{self, OpenAiToolCall, ToolCallOutcome};
use tollgate::integrations::otel::OtelSink;
use tollgate::integrations::tower::{GuardLayer, ToolInvocation};
use tollgate::{Guard, Outcome, RunContext, ToolCall};
use tower::{Layer, Service, service_fn};

fn boundary() -> ActionBoundary {
    ActionBoundary::builder()
        .tool(
            "get_weather",
            ToolSpec::read()
                .arg("city", Arg::string().required().max_length(80))
                .arg("days", Arg::integer().min(1.0).max(14.0)),
        )
        .role("assistant", RoleSpec::new().tools(["get_weather"]))
        .build()
        .unwrap()
}

const ARGS: &str = r#"{"city": "Lyon", "days": 3}"#;

/// Polls a future that is expected to be ready at once.
fn ready<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the bench's futures are ready at once"),
    }
}

fn adapters(c: &mut Criterion) {
    let mut g = c.benchmark_group("adapters");

    let guard = Guard::builder(boundary()).build().unwrap();
    let run = Arc::new(
        guard
            .start_run(RunContext::new("bench-bot", "assistant"))
            .unwrap(),
    );
    g.bench_function("guard_check_complete", |b| {
        b.iter(|| {
            let call = ToolCall::new("get_weather", black_box(ARGS)).with_call_id("call_1");
            let p = guard.check(&run, &call).into_permit().unwrap();
            p.complete(Outcome::success()).unwrap();
        })
    });

    let tc = OpenAiToolCall::function("call_1", "get_weather", ARGS);
    g.bench_function("openai_check_finish", |b| {
        b.iter(|| {
            let Ok(ToolCallOutcome::Allowed(p)) = openai::check(&guard, &run, black_box(&tc))
            else {
                panic!("allowed")
            };
            black_box(openai::finish(p, &tc, Ok("sunny")).unwrap());
        })
    });

    let args: Value = serde_json::from_str(ARGS).unwrap();
    let bare = service_fn(|req: ToolInvocation| async move {
        Ok::<_, std::io::Error>(json!({"city": req.arguments["city"], "sky": "sunny"}))
    });
    let mut guarded = GuardLayer::new(guard.clone()).layer(bare);
    let mut bare = bare;
    g.bench_function("tower_guarded_call", |b| {
        b.iter(|| {
            let req = ToolInvocation::new(&run, "get_weather", args.clone());
            black_box(ready(guarded.call(req)).unwrap());
        })
    });
    g.bench_function("tower_bare_call", |b| {
        b.iter(|| {
            let req = ToolInvocation::new(&run, "get_weather", args.clone());
            black_box(ready(bare.call(req)).unwrap());
        })
    });

    let tracer_provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let meter_provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder().build();
    let otel = OtelSink::new(
        tracer_provider.tracer("tollgate"),
        &meter_provider.meter("tollgate"),
    );
    let traced = Guard::builder(boundary())
        .audit(Arc::new(otel))
        .build()
        .unwrap();
    let traced_run = traced
        .start_run(RunContext::new("bench-bot", "assistant"))
        .unwrap();
    g.bench_function("otel_check_complete", |b| {
        b.iter(|| {
            let call = ToolCall::new("get_weather", black_box(ARGS)).with_call_id("call_1");
            let p = traced.check(&traced_run, &call).into_permit().unwrap();
            p.complete(Outcome::success()).unwrap();
        })
    });

    let queue = Arc::new(
        ApprovalQueue::open(
            Arc::new(MemoryApprovalStore::new()),
            Arc::new(ManualClock::new()),
            QueueConfig {
                max_pending: 1_000_000,
                ..QueueConfig::with_groups(ApproverGroups::new().with("ops", ["olga"]))
            },
        )
        .unwrap(),
    );
    let (to_approver, ids) = channel();
    let (to_waiter, times) = channel();
    let q = queue.clone();
    let approver = std::thread::spawn(move || {
        for id in ids {
            while q.waiting() == 0 {
                std::hint::spin_loop();
            }
            let t0 = Instant::now();
            q.decide(&id, &Approver::new("olga"), Decision::Approve, "ok")
                .unwrap();
            to_waiter.send(t0).unwrap();
        }
    });
    let version = EscalationGate::none().version();
    g.bench_function("blocking_wake", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let esc = Escalation::manual(
                    Reason::new("manual", "bench"),
                    ApprovalParams::new(
                        Duration::from_secs(600),
                        [Level::new("ops", Duration::ZERO)],
                    ),
                );
                let req = queue
                    .submit(Submission::new(
                        "run",
                        "bot",
                        "restart",
                        json!({}),
                        esc,
                        version,
                    ))
                    .unwrap();
                to_approver.send(req.id.clone()).unwrap();
                let r = queue
                    .wait_blocking(&req.id, Duration::from_secs(10))
                    .unwrap();
                let t1 = Instant::now();
                assert!(r.is_some_and(|r| r.is_approved()));
                total += t1.duration_since(times.recv().unwrap());
            }
            total
        })
    });
    drop(to_approver);
    approver.join().unwrap();
    g.finish();
}

criterion_group!(benches, adapters);
criterion_main!(benches);
