//! A rig agent whose every tool call goes through the guard: a support agent with three tools,
//! driven by a scripted model (rig's OpenAI Chat Completions wire over a canned HTTP transport,
//! so no network and no API key), with `GuardHook` on the prompt.
//!
//! The model reads a ticket, tries to refund far more than the policy lets it refund alone
//! (escalated to a supervisor), then tries a tool its role may not call (denied). Each denial
//! reaches the model only as its agent-safe message; the audit trail has every decision.
//!
//! Run with `cargo run --example rig_agent --features rig`.

#[path = "support/scripted_openai.rs"]
mod scripted_openai;

use std::sync::Arc;

use rig_agent::AgentBuilder;
use rig_agent::tool::{Tool, ToolContext};
use scripted_openai::{ScriptedOpenAi, Turn};
use serde_json::{Value, json};
use tollgate::audit::MemorySink;
use tollgate::clock::SystemClock;
use tollgate::escalation::{
    ApprovalQueue, EscalationGate, EscalationPolicy, MemoryApprovalStore, QueueConfig,
};
use tollgate::integrations::rig::GuardHook;
use tollgate::prelude::*;

#[derive(Debug, thiserror::Error)]
#[error("tool failed")]
struct ToolFailed;

/// A support tool that answers a fixed text (a real one would call the ticketing system).
macro_rules! tool {
    ($ty:ident, $name:literal, $reply:literal) => {
        struct $ty;

        impl Tool for $ty {
            const NAME: &'static str = $name;
            type Args = Value;
            type Output = String;
            type Error = ToolFailed;

            fn description(&self) -> String {
                concat!("the ", $name, " tool").to_owned()
            }

            fn parameters(&self) -> Value {
                json!({"type": "object"})
            }

            async fn call(&self, _: &mut ToolContext, args: Value) -> Result<String, ToolFailed> {
                println!("    [tool {} ran with {args}]", $name);
                Ok($reply.to_owned())
            }
        }
    };
}

tool!(
    GetTicket,
    "get_ticket",
    "Ticket T-17: customer asks for a refund of order O-88 (49.90)"
);
tool!(Refund, "refund", "refunded");
tool!(CloseAccount, "close_account", "closed");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let boundary = ActionBoundary::builder()
        .tool(
            "get_ticket",
            ToolSpec::read().arg("id", Arg::string().required()),
        )
        .tool(
            "refund",
            ToolSpec::irreversible()
                .arg("order", Arg::string().required())
                .arg("amount", Arg::number().required().min(0.0)),
        )
        .tool("close_account", ToolSpec::irreversible())
        .role("support", RoleSpec::new().tools(["get_ticket", "refund"]))
        .build()?;
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

    // What the model will answer, turn by turn.
    let model = ScriptedOpenAi::new([
        Turn::call("call_1", "get_ticket", json!({"id": "T-17"})),
        Turn::call("call_2", "refund", json!({"order": "O-88", "amount": 4990})),
        Turn::call("call_3", "close_account", json!({})),
        Turn::Text("I asked a supervisor to approve the refund."),
    ]);
    let agent = AgentBuilder::new(model.model())
        .preamble("You are a support agent.")
        .tool(GetTicket)
        .tool(Refund)
        .tool(CloseAccount)
        .build();

    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            agent
                .prompt("Handle ticket T-17")
                .add_hook(GuardHook::new(guard.clone(), run.clone()))
                .max_turns(6)
                .await
        })?;

    println!("what the model was told about each call:");
    for (id, content) in model.last_tool_results() {
        println!("  {id}: {content}");
    }
    println!("final answer: {}", answer.output());
    let pending = guard
        .approvals()
        .map_or(0, |q| q.pending().map_or(0, |p| p.len()));
    println!("approvals pending: {pending}");
    for e in audit.events().iter().filter(|e| e["event"] == "decision") {
        println!(
            "audit: {} {} {}",
            e["gen_ai.tool.name"].as_str().unwrap_or(""),
            e["tollgate.decision"].as_str().unwrap_or(""),
            e["tollgate.deny.code"].as_str().unwrap_or("")
        );
    }
    Ok(())
}
