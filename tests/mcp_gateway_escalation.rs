//! Escalation through the gateway: a call that needs a human either waits for the approval up
//! to the configured time, or is answered with the pending approval id and resumed when the same
//! call (same tool, same arguments) is retried, exactly once.
#![cfg(feature = "mcp")]

mod common;

use std::time::{Duration, Instant};

use common::node::harness::{self, METADATA, is_error, text};
use rmcp::model::CallToolResult;
use serde_json::json;
use tollgate::escalation::{ApprovalId, Approver, Decision};
use tollgate::policy::Policy;

fn policy(extra_mcp: &str) -> Option<Policy> {
    let node = common::node::servers()?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/fake_server.mjs");
    let text = format!(
        r#"{METADATA}
[tools.pay]
effect = "write"
args.amount = {{ type = "number", required = true }}

[roles.agent]
tools = ["pay"]

[escalation]
groups.finance = ["alice"]
defaults = {{ timeout = "1h", on_timeout = "deny", chain = [{{ group = "finance" }}] }}

[[escalation.rules]]
id = "large-payment"
reason = "Payments over 100 need finance."
tools = ["pay"]
when.amount = {{ path = "amount", over = 100 }}

[mcp]
{extra_mcp}

[mcp.connection]
agent = "agent-1"
role = "agent"

[mcp.servers.fake]
command = "{node}"
args = ["{script}"]
"#,
        node = node.node.display(),
        script = script.display(),
    );
    Some(Policy::from_toml(&text).expect("policy"))
}

fn approval_id(r: &CallToolResult) -> ApprovalId {
    let id = r.structured_content.as_ref().expect("structured answer")["tollgate"]["approval_id"]
        .as_str()
        .expect("approval id")
        .to_owned();
    ApprovalId::new(id)
}

fn decide(h: &harness::Harness, id: &ApprovalId, d: Decision) {
    h.gateway
        .guard()
        .approvals()
        .expect("queue")
        .decide(id, &Approver::new("alice"), d, "checked")
        .expect("decided");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_call_resumes_on_retry_with_the_same_arguments_exactly_once() {
    let Some(p) = policy("") else { return };
    let h = harness::start(&p).await;
    // Small amounts run at once.
    assert_eq!(h.text_of("pay", json!({"amount": 5})).await, "paid 5");

    let first = h.call("pay", json!({"amount": 500})).await;
    assert!(is_error(&first));
    assert!(
        text(&first).contains("approval pending"),
        "{}",
        text(&first)
    );
    let id = approval_id(&first);

    // Retried before anyone decided: still pending, same request.
    let again = h.call("pay", json!({"amount": 500})).await;
    assert_eq!(approval_id(&again), id);

    decide(&h, &id, Decision::Approve);
    // Other arguments are another call: not covered by the approval.
    let other = h.call("pay", json!({"amount": 501})).await;
    assert!(is_error(&other));
    assert_ne!(approval_id(&other), id);

    // The same call now runs, once.
    assert_eq!(h.text_of("pay", json!({"amount": 500})).await, "paid 500");
    let replay = h.call("pay", json!({"amount": 500})).await;
    assert!(is_error(&replay), "the approval was used twice: {replay:?}");
    assert_ne!(approval_id(&replay), id);
    let paid_500 = h
        .events("outcome")
        .iter()
        .filter(|o| o["tollgate.outcome"]["status"] == "success")
        .count();
    assert_eq!(paid_500, 2, "the 5 and the approved 500, nothing else");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_request_is_not_resumed_on_retry() {
    let Some(p) = policy("") else { return };
    let h = harness::start(&p).await;
    let first = h.call("pay", json!({"amount": 900})).await;
    let id = approval_id(&first);
    decide(&h, &id, Decision::Deny);
    let retry = h.call("pay", json!({"amount": 900})).await;
    assert!(is_error(&retry));
    assert!(text(&retry).contains("denied"), "{}", text(&retry));
    assert!(h.events("outcome").is_empty(), "a denied payment ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_waits_for_the_approval_up_to_the_configured_time() {
    let Some(p) = policy(r#"escalation_wait = "20s""#) else {
        return;
    };
    let h = harness::start(&p).await;
    let client = h.client.peer().clone();
    let call =
        tokio::spawn(
            async move { harness::call_peer(&client, "pay", json!({"amount": 700})).await },
        );
    let queue = h.gateway.guard().approvals().unwrap().clone();
    let start = Instant::now();
    let id = loop {
        if let Some(r) = queue.pending().unwrap().first() {
            break r.id.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no request raised"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    decide(&h, &id, Decision::Approve);
    let r = call.await.unwrap();
    assert!(!is_error(&r), "{r:?}");
    assert_eq!(text(&r), "paid 700");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_answers_pending_after_the_wait_and_the_retry_resumes() {
    let Some(p) = policy(r#"escalation_wait = "200ms""#) else {
        return;
    };
    let h = harness::start(&p).await;
    let start = Instant::now();
    let first = h.call("pay", json!({"amount": 300})).await;
    assert!(start.elapsed() >= Duration::from_millis(200));
    let id = approval_id(&first);
    decide(&h, &id, Decision::Approve);
    assert_eq!(h.text_of("pay", json!({"amount": 300})).await, "paid 300");
}
