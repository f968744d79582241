//! A tool dispatcher written as a tower `Service`, guarded by `GuardLayer`: every request is
//! checked before the dispatcher sees it, denials and escalations come back as typed errors,
//! and each response completes the call's permit (success or failure) in the audit trail.
//!
//! Run with `cargo run --example tower_layer --features tower`.

use std::sync::Arc;

use serde_json::{Value, json};
use tollgate::audit::MemorySink;
use tollgate::clock::SystemClock;
use tollgate::escalation::{
    ApprovalQueue, EscalationGate, EscalationPolicy, MemoryApprovalStore, QueueConfig,
};
use tollgate::integrations::tower::{GuardLayer, GuardedError, ToolInvocation};
use tollgate::prelude::*;
use tower::{Layer, ServiceExt, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let boundary = ActionBoundary::builder()
        .tool(
            "get_invoice",
            ToolSpec::read().arg("id", Arg::string().required().pattern("INV-[0-9]{4}")),
        )
        .tool(
            "refund",
            ToolSpec::irreversible()
                .arg("invoice", Arg::string().required().pattern("INV-[0-9]{4}"))
                .arg("amount", Arg::number().required().min(0.0)),
        )
        .tool("delete_customer", ToolSpec::irreversible())
        .role("support", RoleSpec::new().tools(["get_invoice", "refund"]))
        .build()?;
    // Refunds above 200 need a supervisor.
    let policy = EscalationPolicy::from_json(
        r#"{
        "groups": { "supervisors": ["sam"] },
        "defaults": { "timeout": "30m", "chain": [ { "group": "supervisors" } ] },
        "rules": [ { "id": "large-refund", "tools": ["refund"],
                     "when": { "amount": { "path": "amount", "over": 200 } } } ]
    }"#,
    )?;
    let gate = EscalationGate::for_boundary(policy, &boundary)?;
    let queue = ApprovalQueue::open(
        Arc::new(MemoryApprovalStore::new()),
        Arc::new(SystemClock::new()),
        QueueConfig::for_gate(&gate),
    )?;
    let audit = Arc::new(MemorySink::new());
    let guard = Guard::builder(boundary)
        .audit(audit.clone())
        .escalation(gate, queue)
        .build()?;
    let run = Arc::new(guard.start_run(RunContext::new("support-bot", "support"))?);

    // The framework's tool dispatcher: a plain tower service.
    let dispatcher = service_fn(|req: ToolInvocation| async move {
        match req.tool.as_str() {
            "get_invoice" => Ok(json!({"id": req.arguments["id"], "total": 120.0})),
            "refund" if req.arguments["amount"].as_f64() == Some(13.0) => {
                Err(std::io::Error::other("payment provider timed out"))
            }
            "refund" => Ok(json!({"refunded": req.arguments["amount"]})),
            other => Err(std::io::Error::other(format!("no handler for {other}"))),
        }
    });
    let service = GuardLayer::new(guard.clone()).layer(dispatcher);

    let calls: [(&str, Value); 5] = [
        ("get_invoice", json!({"id": "INV-0042"})),
        ("refund", json!({"invoice": "INV-0042", "amount": 20})),
        ("refund", json!({"invoice": "INV-0042", "amount": 13})),
        ("refund", json!({"invoice": "INV-0042", "amount": 900})),
        ("delete_customer", json!({})),
    ];
    for (i, (tool, args)) in calls.into_iter().enumerate() {
        let req = ToolInvocation::new(&run, tool, args.clone()).with_call_id(format!("call-{i}"));
        let answer = match service.clone().oneshot(req).await {
            Ok(response) => format!("ok: {response}"),
            Err(GuardedError::Denied(d)) => {
                format!(
                    "denied [{}], the model is told: {}",
                    d.code(),
                    d.agent_message()
                )
            }
            Err(GuardedError::Escalated(r)) => {
                format!("waits for a supervisor (approval {})", r.id)
            }
            Err(GuardedError::Service(e)) => format!("tool failed: {e}"),
            Err(other) => format!("refused: {other}"),
        };
        println!("{tool}({args}) -> {answer}");
    }

    let pending = guard
        .approvals()
        .map_or(0, |q| q.pending().map_or(0, |p| p.len()));
    println!("pending approvals: {pending}");
    println!("audit events recorded: {}", audit.events().len());
    Ok(())
}
