//! A looping agent: it keeps calling a failing tool with the same arguments. The circuit breaker
//! opens after the configured number of failures, the run's call budget caps what is left, and
//! the alert and the audit trail say why each call was refused. Run with
//! `cargo run --example runaway_agent`.

use std::sync::Arc;
use std::time::Duration;

use tollgate::audit::MemorySink;
use tollgate::boundary::{ActionBoundary, Arg, RoleSpec, ToolSpec};
use tollgate::breaker::{BreakerConfig, BreakerKey, ChannelAlerts, Window};
use tollgate::{Guard, Outcome, RunBudget, RunContext, ToolCall, Verdict};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let boundary = ActionBoundary::builder()
        .tool(
            "lookup_invoice",
            ToolSpec::read().arg("invoice", Arg::string().required()),
        )
        .tool("summarise", ToolSpec::read())
        .role(
            "billing_agent",
            RoleSpec::new().tools(["lookup_invoice", "summarise"]),
        )
        .build()?;
    let audit = Arc::new(MemorySink::new());
    let (alerts, alert_rx) = ChannelAlerts::new(64);
    let guard = Guard::builder(boundary)
        .audit(audit.clone())
        .alerts(Arc::new(alerts))
        .breakers(
            BreakerConfig {
                window: Window::Count(20),
                minimum_calls: 5,
                failure_rate: 60.0,
                wait_in_open: Duration::from_secs(30),
                max_wait_in_open: Duration::from_secs(300),
                backoff: 2.0,
                ..BreakerConfig::default()
            },
            BreakerKey::AgentTool,
            1024,
        )
        .run_budget(RunBudget {
            max_calls: Some(25),
            max_duration: Some(Duration::from_secs(600)),
            ..Default::default()
        })
        .build()?;

    let run =
        guard.start_run(RunContext::new("billing-bot", "billing_agent").for_task("month-end"))?;
    let stuck = ToolCall::new("lookup_invoice", r#"{"invoice": "INV-004711"}"#);
    let (mut ran, mut refused) = (0, 0);
    for step in 1..=40 {
        match guard.check(&run, &stuck) {
            Verdict::Allow(permit) => {
                ran += 1;
                // The upstream billing API is down: every call fails.
                permit.complete(Outcome::error("billing API: 503 Service Unavailable"))?;
            }
            Verdict::Deny(d) => {
                refused += 1;
                if refused == 1 {
                    println!("step {step}: first refusal: [{}] {}", d.code(), d.reason());
                }
            }
            Verdict::Escalate(_) => unreachable!("no escalation rules configured"),
        }
    }
    println!("the loop ran the tool {ran} times; {refused} further calls were refused");

    // Other work of the same run is not blocked by the open breaker, until the budget ends it.
    let mut other = 0;
    loop {
        match guard.check(&run, &ToolCall::without_args("summarise")) {
            Verdict::Allow(permit) => {
                other += 1;
                permit.complete(Outcome::success())?;
            }
            Verdict::Deny(d) => {
                println!(
                    "'summarise' ran {other} times, then: [{}] {}",
                    d.code(),
                    d.reason()
                );
                break;
            }
            Verdict::Escalate(_) => unreachable!("no escalation rules configured"),
        }
    }
    run.finish()?;

    println!("\nalerts (what an on-call engineer would be paged with):");
    for a in alert_rx.try_iter().take(3) {
        println!(
            "  {:?} agent={:?} tool={:?}: {}",
            a.kind,
            a.agent.unwrap_or_default(),
            a.tool.unwrap_or_default(),
            a.detail
        );
    }

    println!("\naudit: why calls stopped");
    for e in audit.events() {
        let kind = e["event"].as_str().unwrap_or_default();
        if kind == "breaker_transition" {
            println!("  {e}");
        }
    }
    let last_denial = audit
        .events()
        .into_iter()
        .rev()
        .find(|e| e["tollgate.decision"] == "deny");
    if let Some(e) = last_denial {
        println!("  {e}");
    }
    Ok(())
}
