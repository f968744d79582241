//! OpenAI-style tool calls checked through the guard (feature `openai`).
#![cfg(feature = "openai")]

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use tollgate::audit::MemorySink;
use tollgate::boundary::{ActionBoundary, Arg, RoleSpec, ToolSpec};
use tollgate::clock::ManualClock;
use tollgate::escalation::{
    ApprovalQueue, Approver, Decision, EscalationGate, EscalationPolicy, MemoryApprovalStore,
    QueueConfig,
};
use tollgate::integrations::openai::{
    self, Arguments, OpenAiToolCall, ToolCallError, ToolCallOutcome, ToolMessage,
};
use tollgate::{DenyCode, Guard, RunContext};

fn boundary() -> ActionBoundary {
    ActionBoundary::builder()
        .tool(
            "get_weather",
            ToolSpec::read().arg("city", Arg::string().required().max_length(80)),
        )
        .tool("list_cities", ToolSpec::read())
        .tool(
            "pay",
            ToolSpec::irreversible().arg("amount", Arg::number().required().min(0.0)),
        )
        .tool("delete_account", ToolSpec::irreversible())
        .role(
            "assistant",
            RoleSpec::new().tools(["get_weather", "list_cities", "pay"]),
        )
        .build()
        .unwrap()
}

struct Setup {
    guard: Guard,
    audit: Arc<MemorySink>,
}

fn setup() -> Setup {
    let b = boundary();
    let policy = EscalationPolicy::from_json(
        r#"{
        "groups": { "finance": ["alice"] },
        "defaults": { "timeout": "10m", "chain": [ { "group": "finance" } ] },
        "rules": [ { "id": "large-payment", "tools": ["pay"],
                     "when": { "amount": { "path": "amount", "over": 100 } } } ]
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
    let audit = Arc::new(MemorySink::new());
    let guard = Guard::builder(b)
        .clock(clock)
        .audit(audit.clone())
        .escalation(gate, queue)
        .build()
        .unwrap();
    Setup { guard, audit }
}

fn ctx() -> RunContext {
    RunContext::new("travel-bot", "assistant").triggered_by("dave")
}

fn call(id: &str, name: &str, args: &str) -> Value {
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}})
}

fn decisions(audit: &MemorySink) -> Vec<Value> {
    audit
        .events()
        .into_iter()
        .filter(|e| e["event"] == "decision")
        .collect()
}

#[test]
fn every_call_of_an_assistant_message_gets_one_typed_outcome_in_order() {
    let s = setup();
    let run = s.guard.start_run(ctx()).unwrap();
    let message = json!({
        "role": "assistant",
        "content": null,
        "tool_calls": [
            call("call_a", "get_weather", r#"{"city": "Lyon"}"#),
            call("call_b", "pay", r#"{"amount": 5000}"#),
            call("call_c", "get_weather", r#"{"city": 7}"#),
            call("call_d", "get_weather", r#"{"city": "Lyon""#),
        ]
    });
    let calls = openai::tool_calls(&message).unwrap();
    assert_eq!(calls.len(), 4);
    let outcomes = openai::check_all(&s.guard, &run, &calls);
    assert_eq!(outcomes.len(), 4);
    let mut it = outcomes.into_iter();

    let Ok(ToolCallOutcome::Allowed(permit)) = it.next().unwrap() else {
        panic!("call_a should be allowed")
    };
    let reply = openai::finish(permit, &calls[0], Ok("sunny")).unwrap();
    assert_eq!(
        reply.to_value(),
        json!({"role": "tool", "tool_call_id": "call_a", "content": "sunny"})
    );

    let escalated = it.next().unwrap().unwrap();
    let ToolCallOutcome::Escalated(req) = &escalated else {
        panic!("call_b should be escalated: {escalated:?}")
    };
    let text = escalated.agent_message().unwrap();
    assert!(text.contains(req.id.as_str()), "{text}");
    assert_eq!(escalated.message(&calls[1]).unwrap().tool_call_id, "call_b");

    let denied = it.next().unwrap().unwrap();
    let ToolCallOutcome::Denied(d) = &denied else {
        panic!("call_c should be denied: {denied:?}")
    };
    assert_eq!(d.code(), DenyCode::ArgumentType);
    let msg = denied.message(&calls[2]).unwrap();
    assert_eq!(msg.tool_call_id, "call_c");
    assert_eq!(msg.content, d.agent_message());

    match it.next().unwrap() {
        Err(ToolCallError::MalformedArguments { id, tool, denial }) => {
            assert_eq!((id.as_str(), tool.as_str()), ("call_d", "get_weather"));
            assert_eq!(denial.code(), DenyCode::MalformedArgs);
        }
        other => panic!("call_d has broken JSON: {other:?}"),
    }

    // Every decision was recorded with the framework's call id.
    let ids: Vec<Value> = decisions(&s.audit)
        .iter()
        .map(|e| e["gen_ai.tool.call.id"].clone())
        .collect();
    assert_eq!(ids, ["call_a", "call_b", "call_c", "call_d"]);
}

#[test]
fn a_hidden_tools_denial_tells_the_agent_nothing_more_than_an_unknown_tool() {
    let s = setup();
    let run = s.guard.start_run(ctx()).unwrap();
    let hidden = OpenAiToolCall::function("c1", "delete_account", "{}");
    let unknown = OpenAiToolCall::function("c2", "no_such_tool", "{}");
    let a = openai::check(&s.guard, &run, &hidden).unwrap();
    let b = openai::check(&s.guard, &run, &unknown).unwrap();
    assert_eq!(a.agent_message(), b.agent_message());
    assert_eq!(a.message(&hidden).unwrap().content, "tool not available");
}

#[test]
fn malformed_argument_strings_are_typed_errors_recorded_as_denials() {
    let s = setup();
    let run = s.guard.start_run(ctx()).unwrap();
    for bad in [
        r#"{"city": "Lyon""#,
        r#"{"city": "Lyon"} trailing"#,
        r#"{"city": "Lyon", "city": "Paris"}"#,
        r#"["Lyon"]"#,
        "42",
        "\"Lyon\"",
        "{'city': 'Lyon'}",
        "\u{0}",
    ] {
        let c = OpenAiToolCall::function("c", "get_weather", bad);
        match openai::check(&s.guard, &run, &c) {
            Err(e @ ToolCallError::MalformedArguments { .. }) => {
                assert!(e.agent_message().contains("valid JSON"), "{bad}");
            }
            other => panic!("{bad:?} should be malformed arguments: {other:?}"),
        }
    }
    let recorded = decisions(&s.audit);
    assert_eq!(recorded.len(), 8);
    assert!(
        recorded
            .iter()
            .all(|e| e["tollgate.deny.code"] == "malformed_args")
    );
}

#[test]
fn duplicate_keys_cannot_smuggle_a_second_value_past_the_check() {
    // serde_json would keep the last `city`; the guard's scanner refuses the ambiguity.
    let s = setup();
    let run = s.guard.start_run(ctx()).unwrap();
    let long = "x".repeat(200);
    let args = format!(r#"{{"city": "Lyon", "city": "{long}"}}"#);
    let c = OpenAiToolCall::function("c", "get_weather", args);
    assert!(matches!(
        openai::check(&s.guard, &run, &c),
        Err(ToolCallError::MalformedArguments { .. })
    ));
}

#[test]
fn other_call_types_and_malformed_messages_are_errors_naming_where() {
    let s = setup();
    let run = s.guard.start_run(ctx()).unwrap();
    let custom: OpenAiToolCall = OpenAiToolCall::from_value(&json!({
        "id": "c9", "type": "custom", "function": {"name": "get_weather", "arguments": "{}"}
    }))
    .unwrap();
    match openai::check(&s.guard, &run, &custom) {
        Err(ToolCallError::UnsupportedType { id, kind, .. }) => {
            assert_eq!((id.as_str(), kind.as_str()), ("c9", "custom"));
        }
        other => panic!("{other:?}"),
    }
    // Nothing was checked, so nothing was recorded.
    assert!(decisions(&s.audit).is_empty());

    let shapes = [
        (json!("text"), "message"),
        (json!({"tool_calls": {"id": "x"}}), "tool_calls"),
        (
            json!({"tool_calls": [call("ok", "get_weather", "{}"), {"id": "c2", "type": "function"}]}),
            "tool_calls[1]",
        ),
        (
            json!({"tool_calls": [{"id": "c", "function": {"name": 5, "arguments": "{}"}}]}),
            "tool_calls[0]",
        ),
    ];
    for (msg, expected) in shapes {
        match openai::tool_calls(&msg) {
            Err(ToolCallError::Shape { where_, .. }) => assert_eq!(where_, expected, "{msg}"),
            other => panic!("{msg} should be a shape error: {other:?}"),
        }
    }
    assert!(
        openai::tool_calls(&json!({"role": "assistant", "content": "hi"}))
            .unwrap()
            .is_empty()
    );
    assert!(
        openai::tool_calls(&json!({"role": "assistant", "tool_calls": null}))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn arguments_sent_as_an_object_or_empty_text_are_read_too() {
    let s = setup();
    let run = s.guard.start_run(ctx()).unwrap();
    let as_object = OpenAiToolCall::from_value(&json!({
        "id": "c1", "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Lyon"}}
    }))
    .unwrap();
    assert!(matches!(
        as_object.function.arguments,
        Arguments::Value(Value::Object(_))
    ));
    let o = openai::check(&s.guard, &run, &as_object).unwrap();
    assert!(o.is_allowed());
    drop(o);

    // Empty text: no arguments. Fine for a tool without parameters...
    let empty = OpenAiToolCall::function("c2", "list_cities", "");
    assert!(openai::check(&s.guard, &run, &empty).unwrap().is_allowed());
    // ...and a denial (not a pass) for one whose argument is required.
    let missing = OpenAiToolCall::function("c3", "get_weather", "  ");
    match openai::check(&s.guard, &run, &missing).unwrap() {
        ToolCallOutcome::Denied(d) => assert_eq!(d.code(), DenyCode::MissingArgument),
        other => panic!("{other:?}"),
    }
    // A missing `arguments` member reads as empty too.
    let absent = OpenAiToolCall::from_value(&json!({
        "id": "c4", "type": "function", "function": {"name": "get_weather"}
    }))
    .unwrap();
    assert!(!openai::check(&s.guard, &run, &absent).unwrap().is_allowed());
}

#[test]
fn a_failed_tool_is_recorded_as_an_error_and_its_text_answers_the_call() {
    let s = setup();
    let run = s.guard.start_run(ctx()).unwrap();
    let c = OpenAiToolCall::function("c1", "get_weather", r#"{"city": "Lyon"}"#);
    let Ok(ToolCallOutcome::Allowed(permit)) = openai::check(&s.guard, &run, &c) else {
        panic!("allowed")
    };
    let reply = openai::finish(permit, &c, Err("weather service unavailable")).unwrap();
    assert_eq!(reply, ToolMessage::new("c1", "weather service unavailable"));
    let outcome = s
        .audit
        .events()
        .into_iter()
        .find(|e| e["event"] == "outcome")
        .unwrap();
    assert_eq!(outcome["tollgate.outcome"]["status"], "error");
    assert_eq!(outcome["gen_ai.tool.call.id"], "c1");
    assert_eq!(
        serde_json::to_value(&reply).unwrap(),
        json!({"role": "tool", "tool_call_id": "c1", "content": "weather service unavailable"})
    );
}

#[test]
fn an_escalated_call_runs_once_approved_with_the_same_arguments() {
    let s = setup();
    let run = s.guard.start_run(ctx()).unwrap();
    let c = OpenAiToolCall::function("c1", "pay", r#"{"amount": 500}"#);
    let Ok(ToolCallOutcome::Escalated(req)) = openai::check(&s.guard, &run, &c) else {
        panic!("escalated")
    };
    s.guard
        .approvals()
        .unwrap()
        .decide(&req.id, &Approver::new("alice"), Decision::Approve, "ok")
        .unwrap();
    // Other arguments under the same call id do not get the grant.
    let tampered = OpenAiToolCall::function("c1", "pay", r#"{"amount": 50000}"#);
    let v = s
        .guard
        .wait_and_resume_blocking(&run, &tampered.as_tool_call(), &req, Duration::ZERO);
    assert_eq!(v.deny_code(), Some(DenyCode::ApprovalInvalid));
    let v = s
        .guard
        .wait_and_resume_blocking(&run, &c.as_tool_call(), &req, Duration::ZERO);
    let permit = v.into_permit().expect("approved");
    openai::finish(permit, &c, Ok("paid")).unwrap();
}

#[test]
fn tool_calls_round_trip_through_serde() {
    let c = OpenAiToolCall::function("call_1", "get_weather", r#"{"city":"Lyon"}"#);
    let v = serde_json::to_value(&c).unwrap();
    assert_eq!(v, call("call_1", "get_weather", r#"{"city":"Lyon"}"#));
    assert_eq!(OpenAiToolCall::from_value(&v).unwrap(), c);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever text a model puts in `arguments`, checking never panics, and a call is allowed
    /// only if its text is one JSON object whose `city` is a string.
    #[test]
    fn arbitrary_argument_text_never_panics_and_never_passes_unless_valid(
        text in prop_oneof![
            any::<String>(),
            "\\{\"city\": \"[a-z]{0,10}\"[,}\\]]{0,2}",
            "[{}\\[\\]\":, a-z0-9\\\\]{0,40}",
        ]
    ) {
        let s = setup();
        let run = s.guard.start_run(ctx()).unwrap();
        let c = OpenAiToolCall::function("p", "get_weather", text.clone());
        let allowed = matches!(openai::check(&s.guard, &run, &c), Ok(o) if o.is_allowed());
        if allowed {
            let v: Value = serde_json::from_str(&text).expect("allowed text is valid JSON");
            prop_assert!(v.get("city").is_some_and(Value::is_string));
        }
    }
}
