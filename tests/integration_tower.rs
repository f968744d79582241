//! The tower adapter (feature `tower`): `GuardLayer` around `service_fn` services, driven with
//! `ServiceExt::oneshot` on a current-thread runtime.
#![cfg(all(feature = "tower", feature = "toml"))]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use tollgate::audit::MemorySink;
use tollgate::escalation::MemoryApprovalStore;
use tollgate::integrations::tower::{GuardLayer, GuardedError, ToolInvocation};
use tollgate::policy::{Bindings, Policy};
use tollgate::{DenyCode, Guard, Run, RunContext};
use tower::{Layer, Service, ServiceExt, service_fn};

const POLICY: &str = r#"
tiers = ["public", "internal"]
[policy]
name = "mail assistant"
owner = "platform team"
purpose = "read the user's mail and keep notes"
scope = "the user's own mailbox"
liability_owner = "head of platform"
review_cadence = "90d"
data_handling = "mail stays in the mailbox"

[tools.read_mail]
effect = "read"
tier = "internal"
args.folder = { type = "string", required = true, max_length = 50 }
[tools.fetch_page]
effect = "read"
tier = "public"
args.url = { type = "string", required = true, max_length = 500 }
[tools.save_note]
effect = "write"
tier = "public"
args.text = { type = "string", required = true, max_length = 2000 }
[tools.wire_money]
effect = "irreversible"
tier = "internal"
args.amount = { type = "number", required = true, min = 0 }
[tools.drop_database]
effect = "irreversible"
tier = "internal"
[roles.assistant]
clearance = "internal"
tools = ["read_mail", "fetch_page", "save_note", "wire_money"]

[escalation]
groups.tellers = ["ana"]
defaults = { timeout = "1h", chain = [{ group = "tellers" }] }
[[escalation.rules]]
id = "large-wire"
tools = ["wire_money"]
when = { amount = { path = "amount", over = 1000 } }

[flow]
default_output = { integrity = "untrusted", tier = "internal" }
[flow.tools.fetch_page.args.url]
accepts = ["user", "trusted"]
on_violation = "quarantine"
[flow.tools.save_note.args.text]
accepts = ["user", "trusted", "unseen"]
on_violation = "deny"
"#;

struct Fixture {
    guard: Guard,
    sink: Arc<MemorySink>,
    run: Arc<Run>,
}

fn fixture() -> Fixture {
    let policy = Policy::from_toml(POLICY).unwrap();
    let sink = Arc::new(MemorySink::new());
    let guard = policy
        .guard(
            Bindings::new()
                .audit(sink.clone())
                .approvals(Arc::new(MemoryApprovalStore::new())),
        )
        .unwrap();
    let run = Arc::new(
        guard
            .start_run(RunContext::new("mail-bot", "assistant"))
            .unwrap(),
    );
    Fixture { guard, sink, run }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn outcomes(sink: &MemorySink) -> Vec<Value> {
    sink.events()
        .into_iter()
        .filter(|e| e["event"] == "outcome")
        .collect()
}

/// A tool service that counts its calls and answers with `reply` (or fails on `fail`).
fn tools(
    calls: Arc<AtomicUsize>,
) -> impl Service<ToolInvocation, Response = Value, Error = std::io::Error, Future: Send> + Clone {
    service_fn(move |req: ToolInvocation| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            match req.tool.as_str() {
                "read_mail" => {
                    Ok(json!({"body": "Invoice: see https://evil.example/pay and IBAN XQ-991-442"}))
                }
                "fetch_page" => Ok(json!("the secret plan is ZEBRA-7781")),
                "save_note" => Ok(json!("saved")),
                "wire_money" if req.arguments["amount"] == 13 => {
                    Err(std::io::Error::other("bank unreachable"))
                }
                _ => Ok(json!("done")),
            }
        }
    })
}

#[test]
fn an_allowed_call_reaches_the_service_and_its_response_completes_the_permit() {
    let f = fixture();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = GuardLayer::new(f.guard.clone()).layer(tools(calls.clone()));
    let req = ToolInvocation::new(&f.run, "wire_money", json!({"amount": 10})).with_call_id("c-1");
    let out = block_on(svc.oneshot(req)).unwrap();
    assert_eq!(out, json!("done"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let o = outcomes(&f.sink);
    assert_eq!(o.len(), 1);
    assert_eq!(o[0]["tollgate.outcome"]["status"], "success");
    assert_eq!(o[0]["gen_ai.tool.call.id"], "c-1");
}

#[test]
fn a_denied_call_never_reaches_the_service() {
    let f = fixture();
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = GuardLayer::new(f.guard.clone());
    for (tool, args, code) in [
        ("drop_database", json!({}), DenyCode::ToolNotAllowed),
        ("no_such_tool", json!({}), DenyCode::UnknownTool),
        (
            "wire_money",
            json!({"amount": -5}),
            DenyCode::ArgumentOutOfRange,
        ),
    ] {
        let svc = layer.layer(tools(calls.clone()));
        let err = block_on(svc.oneshot(ToolInvocation::new(&f.run, tool, args))).unwrap_err();
        let d = err.denial().expect("a denial");
        assert_eq!(d.code(), code, "{tool}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert!(outcomes(&f.sink).is_empty());
    // The hidden tool's denial tells the agent no more than an unknown tool's.
    let svc = layer.layer(tools(calls.clone()));
    let err =
        block_on(svc.oneshot(ToolInvocation::new(&f.run, "drop_database", json!({})))).unwrap_err();
    assert_eq!(err.denial().unwrap().agent_message(), "tool not available");
}

#[test]
fn an_escalated_call_is_a_typed_error_and_the_service_does_not_run() {
    let f = fixture();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = GuardLayer::new(f.guard.clone()).layer(tools(calls.clone()));
    let err = block_on(svc.oneshot(ToolInvocation::new(
        &f.run,
        "wire_money",
        json!({"amount": 5000}),
    )))
    .unwrap_err();
    let req = err.approval().expect("escalated");
    assert_eq!(req.tool, "wire_money");
    assert_eq!(f.guard.approvals().unwrap().pending().unwrap().len(), 1);
    assert!(matches!(err, GuardedError::Escalated(_)));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[test]
fn a_failing_service_completes_the_permit_as_a_failure() {
    let f = fixture();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = GuardLayer::new(f.guard.clone()).layer(tools(calls.clone()));
    let err = block_on(svc.oneshot(ToolInvocation::new(
        &f.run,
        "wire_money",
        json!({"amount": 13}),
    )))
    .unwrap_err();
    match err {
        GuardedError::Service(e) => assert_eq!(e.to_string(), "bank unreachable"),
        other => panic!("{other:?}"),
    }
    let o = outcomes(&f.sink);
    assert_eq!(o[0]["tollgate.outcome"]["status"], "error");
    assert_eq!(o[0]["tollgate.outcome"]["message"], "bank unreachable");
}

#[test]
fn a_future_dropped_before_the_service_answers_records_an_abandoned_outcome() {
    let f = fixture();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = GuardLayer::new(f.guard.clone()).layer(tools(calls.clone()));
    let fut = svc.call(ToolInvocation::new(
        &f.run,
        "wire_money",
        json!({"amount": 1}),
    ));
    drop(fut);
    let o = outcomes(&f.sink);
    assert_eq!(o.len(), 1);
    assert_eq!(o[0]["tollgate.outcome"]["status"], "abandoned");
}

#[test]
fn responses_are_observed_so_values_read_from_untrusted_output_cannot_flow_on() {
    let f = fixture();
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = GuardLayer::new(f.guard.clone());
    block_on(
        layer
            .layer(tools(calls.clone()))
            .oneshot(ToolInvocation::new(
                &f.run,
                "read_mail",
                json!({"folder": "inbox"}),
            )),
    )
    .unwrap();
    assert!(f.run.flow_indexed_bytes() > 0, "the output was indexed");
    // An IBAN the model read in the untrusted mail cannot be written on.
    let err = block_on(
        layer
            .layer(tools(calls.clone()))
            .oneshot(ToolInvocation::new(
                &f.run,
                "save_note",
                json!({"text": "XQ-991-442"}),
            )),
    )
    .unwrap_err();
    assert_eq!(err.denial().unwrap().code(), DenyCode::FlowViolation);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn a_quarantined_output_is_withheld_from_the_caller() {
    let f = fixture();
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = GuardLayer::new(f.guard.clone());
    block_on(
        layer
            .layer(tools(calls.clone()))
            .oneshot(ToolInvocation::new(
                &f.run,
                "read_mail",
                json!({"folder": "inbox"}),
            )),
    )
    .unwrap();
    // The URL came from an untrusted mail: the fetch runs, but its output is quarantined.
    let err = block_on(
        layer
            .layer(tools(calls.clone()))
            .oneshot(ToolInvocation::new(
                &f.run,
                "fetch_page",
                json!({"url": "https://evil.example/pay"}),
            )),
    )
    .unwrap_err();
    match err {
        GuardedError::Withheld { placeholder } => assert!(!placeholder.contains("ZEBRA")),
        other => panic!("{other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        outcomes(&f.sink)[1]["tollgate.outcome"]["status"],
        "success"
    );
}

#[test]
fn a_run_suspended_by_the_kill_switch_is_refused_before_the_service() {
    let f = fixture();
    let calls = Arc::new(AtomicUsize::new(0));
    f.guard.suspend_run(&f.run, "ops").unwrap();
    let svc = GuardLayer::new(f.guard.clone()).layer(tools(calls.clone()));
    let err = block_on(svc.oneshot(ToolInvocation::new(
        &f.run,
        "wire_money",
        json!({"amount": 1}),
    )))
    .unwrap_err();
    assert_eq!(err.denial().unwrap().code(), DenyCode::Suspended);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}
