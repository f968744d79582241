//! The OpenTelemetry sink (feature `otel`): spans and metrics asserted by attribute through the
//! in-memory exporters of `opentelemetry_sdk`.
#![cfg(feature = "otel")]

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::json;
use tollgate::audit::{AuditSink, Fanout, MemorySink};
use tollgate::boundary::{ActionBoundary, Arg, RoleSpec, ToolSpec};
use tollgate::clock::ManualClock;
use tollgate::escalation::{
    ApprovalQueue, EscalationGate, EscalationPolicy, MemoryApprovalStore, QueueConfig,
};
use tollgate::integrations::otel::{OtelSink, attr};
use tollgate::{DenyCode, Guard, Outcome, RunContext, ToolCall, Verdict};

struct Fixture {
    guard: Guard,
    clock: Arc<ManualClock>,
    spans: InMemorySpanExporter,
    tracer_provider: SdkTracerProvider,
    metrics: InMemoryMetricExporter,
    meter_provider: SdkMeterProvider,
}

fn fixture() -> Fixture {
    let b = ActionBoundary::builder()
        .tool("lookup", ToolSpec::read().allow_unknown_args())
        .tool(
            "pay",
            ToolSpec::irreversible()
                .arg("amount", Arg::number().required().min(0.0))
                .arg("otp", Arg::string().secret()),
        )
        .tool("drop_database", ToolSpec::irreversible())
        .role("clerk", RoleSpec::new().tools(["lookup", "pay"]))
        .build()
        .unwrap();
    let policy = EscalationPolicy::from_json(
        r#"{
        "groups": { "finance": ["alice"] },
        "defaults": { "timeout": "10m", "chain": [ { "group": "finance" } ] },
        "rules": [ { "id": "large-payment", "tools": ["pay"],
                     "when": { "amount": { "path": "amount", "over": 1000 } } } ]
    }"#,
    )
    .unwrap();
    let gate = EscalationGate::for_boundary(policy, &b).unwrap();
    let clock = Arc::new(ManualClock::new());
    let queue = ApprovalQueue::open(
        Arc::new(MemoryApprovalStore::new()),
        clock.clone(),
        QueueConfig::for_gate(&gate),
    )
    .unwrap();

    let spans = InMemorySpanExporter::default();
    let tracer_provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let metrics = InMemoryMetricExporter::default();
    let meter_provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(metrics.clone()).build())
        .build();
    let otel = OtelSink::new(
        tracer_provider.tracer("tollgate"),
        &opentelemetry::metrics::MeterProvider::meter(&meter_provider, "tollgate"),
    );
    let trail: Arc<dyn AuditSink> = Arc::new(MemorySink::new());
    let guard = Guard::builder(b)
        .clock(clock.clone())
        .audit(Arc::new(Fanout::new(vec![trail, Arc::new(otel)])))
        .escalation(gate, queue)
        .build()
        .unwrap();
    Fixture {
        guard,
        clock,
        spans,
        tracer_provider,
        metrics,
        meter_provider,
    }
}

fn ctx() -> RunContext {
    RunContext::new("clerk-bot", "clerk").triggered_by("dave")
}

fn attr_of<'s>(span: &'s SpanData, key: &str) -> Option<&'s Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn s(v: &str) -> Value {
    Value::String(v.to_owned().into())
}

fn finished(f: &Fixture) -> Vec<SpanData> {
    f.spans.get_finished_spans().unwrap()
}

/// The data points of metric `name` as (attributes, value or count, sum).
fn points(f: &Fixture, name: &str) -> Vec<(Vec<KeyValue>, u64, f64)> {
    f.meter_provider.force_flush().unwrap();
    let mut out = Vec::new();
    for rm in f.metrics.get_finished_metrics().unwrap() {
        for sm in rm.scope_metrics() {
            for m in sm.metrics().filter(|m| m.name() == name) {
                match m.data() {
                    AggregatedMetrics::U64(MetricData::Sum(sum)) => {
                        for p in sum.data_points() {
                            out.push((p.attributes().cloned().collect(), p.value(), 0.0));
                        }
                    }
                    AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                        for p in h.data_points() {
                            out.push((p.attributes().cloned().collect(), p.count(), p.sum()));
                        }
                    }
                    other => panic!("unexpected data for {name}: {other:?}"),
                }
            }
        }
    }
    out
}

fn has(attrs: &[KeyValue], key: &str, value: &str) -> bool {
    attrs
        .iter()
        .any(|kv| kv.key.as_str() == key && kv.value == s(value))
}

#[test]
fn an_allowed_call_is_an_execute_tool_span_spanning_its_execution_and_a_duration() {
    let f = fixture();
    let run = f.guard.start_run(ctx()).unwrap();
    let call = ToolCall::new("lookup", r#"{"q": "x"}"#).with_call_id("call-7");
    let permit = f.guard.check(&run, &call).into_permit().unwrap();
    assert!(finished(&f).is_empty(), "recorded with the outcome");
    f.clock.advance(Duration::from_millis(250));
    permit
        .complete(Outcome::success().with_tokens(12, 34))
        .unwrap();

    let spans = finished(&f);
    assert_eq!(spans.len(), 1);
    let sp = &spans[0];
    assert_eq!(sp.name, "execute_tool lookup");
    assert_eq!(sp.span_kind, SpanKind::Internal);
    assert_eq!(sp.status, Status::Unset);
    assert_eq!(
        sp.end_time.duration_since(sp.start_time).unwrap(),
        Duration::from_millis(250)
    );
    let expect = [
        (attr::OPERATION_NAME, s("execute_tool")),
        (attr::TOOL_NAME, s("lookup")),
        (attr::TOOL_CALL_ID, s("call-7")),
        (attr::TOOL_TYPE, s("function")),
        (attr::AGENT_ID, s("clerk-bot")),
        (attr::RUN_ID, s(run.id().as_str())),
        (attr::GUARDRAIL_NAME, s("tollgate")),
        (attr::GUARDRAIL_VERDICT, s("allow")),
        (
            attr::GUARDRAIL_POLICY_ID,
            s(&f.guard.policy_version().to_string()),
        ),
        (attr::USAGE_INPUT_TOKENS, Value::I64(12)),
        (attr::USAGE_OUTPUT_TOKENS, Value::I64(34)),
    ];
    for (k, v) in expect {
        assert_eq!(attr_of(sp, k), Some(&v), "{k}");
    }
    assert_eq!(attr_of(sp, attr::ERROR_TYPE), None);

    let durations = points(&f, attr::DURATION_METRIC);
    assert_eq!(durations.len(), 1);
    let (attrs, count, sum) = &durations[0];
    assert_eq!((*count, *sum), (1, 0.25));
    assert!(has(attrs, attr::TOOL_NAME, "lookup"));
    assert!(!attrs.iter().any(|kv| kv.key.as_str() == attr::ERROR_TYPE));
    let decisions = points(&f, attr::DECISIONS_METRIC);
    assert!(
        decisions
            .iter()
            .any(|(a, n, _)| *n == 1 && has(a, attr::GUARDRAIL_VERDICT, "allow"))
    );
}

#[test]
fn a_denied_call_span_carries_the_verdict_deny_code_rule_and_policy() {
    let f = fixture();
    let run = f.guard.start_run(ctx()).unwrap();
    let v = f.guard.check(
        &run,
        &ToolCall::new("drop_database", "{}").with_call_id("call-9"),
    );
    assert_eq!(v.deny_code(), Some(DenyCode::ToolNotAllowed));
    let rule = v.denial().unwrap().rule().as_str().to_owned();
    let spans = finished(&f);
    assert_eq!(spans.len(), 1);
    let sp = &spans[0];
    assert_eq!(sp.name, "execute_tool drop_database");
    assert_eq!(sp.status, Status::error("tool_not_allowed"));
    assert_eq!(attr_of(sp, attr::GUARDRAIL_VERDICT), Some(&s("deny")));
    assert_eq!(attr_of(sp, attr::DENY_CODE), Some(&s("tool_not_allowed")));
    assert_eq!(attr_of(sp, attr::ERROR_TYPE), Some(&s("tool_not_allowed")));
    assert_eq!(attr_of(sp, attr::GUARDRAIL_RULE_ID), Some(&s(&rule)));
    assert_eq!(attr_of(sp, attr::TOOL_CALL_ID), Some(&s("call-9")));
    assert_eq!(
        attr_of(sp, attr::GUARDRAIL_POLICY_ID),
        Some(&s(&f.guard.policy_version().to_string()))
    );
    let decisions = points(&f, attr::DECISIONS_METRIC);
    assert!(decisions.iter().any(|(a, n, _)| *n == 1
        && has(a, attr::GUARDRAIL_VERDICT, "deny")
        && has(a, attr::DENY_CODE, "tool_not_allowed")
        && has(a, attr::TOOL_NAME, "drop_database")));
    // Nothing ran: no duration.
    assert!(points(&f, attr::DURATION_METRIC).is_empty());
}

#[test]
fn an_escalated_call_span_carries_the_rule_and_the_approval_id() {
    let f = fixture();
    let run = f.guard.start_run(ctx()).unwrap();
    let args = json!({"amount": 5000});
    let req = match f.guard.check(&run, &ToolCall::new("pay", &args)) {
        Verdict::Escalate(r) => r,
        v => panic!("{v:?}"),
    };
    let spans = finished(&f);
    let sp = &spans[0];
    assert_eq!(attr_of(sp, attr::GUARDRAIL_VERDICT), Some(&s("escalate")));
    assert_eq!(
        attr_of(sp, attr::GUARDRAIL_RULE_ID),
        Some(&s("large-payment"))
    );
    assert_eq!(attr_of(sp, attr::APPROVAL_ID), Some(&s(req.id.as_str())));
    assert_eq!(sp.status, Status::Unset);
    assert!(
        points(&f, attr::DECISIONS_METRIC)
            .iter()
            .any(|(a, n, _)| *n == 1 && has(a, attr::GUARDRAIL_VERDICT, "escalate"))
    );
}

#[test]
fn failed_and_abandoned_calls_are_error_spans_and_durations_with_error_type() {
    let f = fixture();
    let run = f.guard.start_run(ctx()).unwrap();
    let p = f
        .guard
        .check(&run, &ToolCall::new("lookup", "{}"))
        .into_permit()
        .unwrap();
    p.complete(Outcome::error("upstream timed out")).unwrap();
    let p = f
        .guard
        .check(&run, &ToolCall::new("lookup", "{}"))
        .into_permit()
        .unwrap();
    drop(p);
    let spans = finished(&f);
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0].status, Status::error("tool_error"));
    assert_eq!(attr_of(&spans[0], attr::ERROR_TYPE), Some(&s("tool_error")));
    assert_eq!(spans[1].status, Status::error("abandoned"));
    assert_eq!(attr_of(&spans[1], attr::ERROR_TYPE), Some(&s("abandoned")));
    let d = points(&f, attr::DURATION_METRIC);
    assert!(
        d.iter()
            .any(|(a, _, _)| has(a, attr::ERROR_TYPE, "tool_error"))
    );
    assert!(
        d.iter()
            .any(|(a, _, _)| has(a, attr::ERROR_TYPE, "abandoned"))
    );
}

#[test]
fn arguments_secrets_outputs_and_error_messages_are_never_exported() {
    let f = fixture();
    let run = f.guard.start_run(ctx()).unwrap();
    let args = json!({"amount": 10, "otp": "SECRET-OTP-991"});
    let p = f
        .guard
        .check(&run, &ToolCall::new("pay", &args))
        .into_permit()
        .unwrap();
    p.complete(Outcome::error("card 4111-1111-1111-1111 refused").with_output("OUTPUT-PAYLOAD-77"))
        .unwrap();
    for sp in finished(&f) {
        for kv in &sp.attributes {
            let v = kv.value.as_str();
            for leaked in ["SECRET-OTP-991", "4111-1111", "OUTPUT-PAYLOAD-77", "amount"] {
                assert!(!v.contains(leaked), "{} = {v}", kv.key);
            }
        }
        if let Status::Error { description } = &sp.status {
            assert!(!description.contains("4111"));
        }
    }
}

#[test]
fn made_up_tool_names_cannot_blow_up_metric_cardinality_or_span_size() {
    let f = fixture();
    let run = f.guard.start_run(ctx()).unwrap();
    let long = format!("tool_{}", "é".repeat(400));
    let mut names: Vec<String> = (0..50).map(|i| format!("invented_tool_{i}")).collect();
    names.push(long.clone());
    for n in &names {
        assert_eq!(
            f.guard.check(&run, &ToolCall::new(n, "{}")).deny_code(),
            Some(DenyCode::UnknownTool)
        );
    }
    let decisions = points(&f, attr::DECISIONS_METRIC);
    let tools: std::collections::BTreeSet<String> = decisions
        .iter()
        .flat_map(|(a, _, _)| a.iter())
        .filter(|kv| kv.key.as_str() == attr::TOOL_NAME)
        .map(|kv| kv.value.as_str().into_owned())
        .collect();
    assert_eq!(tools.into_iter().collect::<Vec<_>>(), ["_OTHER"]);
    let total: u64 = decisions.iter().map(|(_, n, _)| n).sum();
    assert_eq!(total, 51);
    // Spans keep the name, cut at the limit on a character boundary.
    let spans = finished(&f);
    let last = spans.last().unwrap();
    let name = attr_of(last, attr::TOOL_NAME).unwrap().as_str();
    assert!(name.len() <= 256 && long.starts_with(name.as_ref()));
    assert!(last.name.len() <= "execute_tool ".len() + 256);
}

#[test]
fn decision_spans_are_children_of_the_callers_current_span() {
    let f = fixture();
    let run = f.guard.start_run(ctx()).unwrap();
    let agent_tracer = f.tracer_provider.tracer("agent-framework");
    let parent_id = agent_tracer.in_span("invoke_agent clerk-bot", |cx| {
        let v = f.guard.check(&run, &ToolCall::new("drop_database", "{}"));
        assert!(v.denial().is_some());
        cx.span().span_context().span_id()
    });
    let spans = finished(&f);
    let tool_span = spans
        .iter()
        .find(|s| s.name == "execute_tool drop_database")
        .unwrap();
    assert_eq!(tool_span.parent_span_id, parent_id);
    assert_eq!(
        tool_span.span_context.trace_id(),
        spans
            .iter()
            .find(|s| s.name == "invoke_agent clerk-bot")
            .unwrap()
            .span_context
            .trace_id()
    );
}

#[test]
fn a_shut_down_exporter_never_denies_a_call() {
    let f = fixture();
    f.tracer_provider.shutdown().unwrap();
    f.meter_provider.shutdown().unwrap();
    let run = f.guard.start_run(ctx()).unwrap();
    let p = f
        .guard
        .check(&run, &ToolCall::new("lookup", "{}"))
        .into_permit()
        .expect("telemetry is not the audit trail: the call proceeds");
    p.complete(Outcome::success()).unwrap();
}
