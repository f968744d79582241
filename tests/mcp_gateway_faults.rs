//! Faults around the gateway: malformed, invalid, oversized and unknown client messages; a
//! downstream server that crashes (restarted with backoff, its breaker trips) or hangs (the
//! call times out); and the kill switch stopping in-flight and new calls.
#![cfg(feature = "mcp")]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::node::harness::{self, METADATA, Raw, is_error, text};
use serde_json::{Value, json};
use tollgate::integrations::mcp::Gateway;
use tollgate::policy::Policy;

/// The in-repo fake server (no dependencies) run by `node`.
fn fake_server() -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let node = common::node::servers()?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/fake_server.mjs");
    Some((node.node, script))
}

fn policy(node: &std::path::Path, script: &std::path::Path, extra: &str) -> Policy {
    let text = format!(
        r#"{METADATA}
[tools.echo]
effect = "read"
args.message = {{ type = "string" }}

[tools.crash]
effect = "read"

[tools.hang]
effect = "read"

[tools.flood]
effect = "read"
args.bytes = {{ type = "integer" }}
args.id_last = {{ type = "boolean" }}

[roles.agent]
tools = ["echo", "crash", "hang", "flood"]

[breakers]
key = "tool"
max_keys = 16
window = {{ calls = 10 }}
minimum_calls = 100
failure_rate = 100.0
consecutive_failures = 2
wait_in_open = "300ms"

[mcp]
call_timeout = "700ms"
restart_backoff = "200ms"
max_message_bytes = 4096
{extra}

[mcp.connection]
agent = "agent-1"
role = "agent"

[mcp.servers.fake]
command = "{node}"
args = ["{script}"]
"#,
        node = node.display(),
        script = script.display(),
    );
    Policy::from_toml(&text).expect("policy")
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_server_is_restarted_with_backoff_and_its_breaker_trips() {
    let Some((node, script)) = fake_server() else {
        return;
    };
    let h = harness::start(&policy(&node, &script, "")).await;
    assert_eq!(
        h.text_of("echo", json!({"message": "before"})).await,
        "before"
    );

    // The server exits in the middle of the call: a tool error, a failed outcome, no crash.
    let crashed = h.call("crash", json!({})).await;
    assert!(is_error(&crashed), "{crashed:?}");
    assert!(
        text(&crashed).contains("closed the connection"),
        "{}",
        text(&crashed)
    );

    // While it is down, calls fail fast; two consecutive failures open echo's breaker.
    let mut texts = Vec::new();
    for _ in 0..3 {
        texts.push(text(&h.call("echo", json!({"message": "x"})).await));
    }
    let decisions = h.events("decision");
    let codes: Vec<&Value> = decisions.iter().map(|d| &d["tollgate.deny.code"]).collect();
    assert!(
        codes.iter().any(|c| *c == "circuit_open"),
        "breaker never opened: {codes:?} {texts:?}"
    );
    assert!(
        h.audit
            .events()
            .iter()
            .any(|e| e["event"] == "breaker_transition"),
        "no breaker transition recorded"
    );

    // Restarted with backoff; after the breaker's wait, calls go through again.
    let gw = h.gateway.clone();
    eventually("the server restarts", || gw.restarts("fake") == Some(1)).await;
    assert_eq!(h.gateway.is_up("fake"), Some(true));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        h.text_of("echo", json!({"message": "after"})).await,
        "after"
    );
    let failed = h
        .events("outcome")
        .iter()
        .filter(|o| o["tollgate.outcome"]["status"] == "error")
        .count();
    assert!(failed >= 2, "failures not recorded as outcomes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_server_call_times_out_and_the_gateway_keeps_serving() {
    let Some((node, script)) = fake_server() else {
        return;
    };
    let h = harness::start(&policy(&node, &script, "")).await;
    let start = Instant::now();
    let hung = h.call("hang", json!({})).await;
    assert!(is_error(&hung));
    assert!(
        text(&hung).contains("did not answer within"),
        "{}",
        text(&hung)
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    let outcomes = h.events("outcome");
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0]["tollgate.outcome"]["status"], "error");
    assert_eq!(
        h.text_of("echo", json!({"message": "still here"})).await,
        "still here"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answer_over_the_limit_fails_its_call_and_the_gateway_keeps_serving() {
    let Some((node, script)) = fake_server() else {
        return;
    };
    let h = harness::start(&policy(&node, &script, "max_server_message_bytes = 65536")).await;
    // Within the limit: delivered whole.
    let small = h.text_of("flood", json!({"bytes": 60000})).await;
    assert_eq!(small.len(), 60000);
    // Over it, with the id before the result (rmcp's order) and after it (the TypeScript
    // SDK's): that call fails at once with an error saying why, not by timing out.
    for id_last in [false, true] {
        let start = Instant::now();
        let big = h
            .call("flood", json!({"bytes": 300_000, "id_last": id_last}))
            .await;
        assert!(is_error(&big), "id_last={id_last}");
        assert!(
            text(&big).contains("more than 65536 bytes"),
            "id_last={id_last}: {}",
            text(&big)
        );
        assert!(
            start.elapsed() < Duration::from_millis(600),
            "failed by the limit, not the 700 ms call timeout"
        );
    }
    let outcomes = h.events("outcome");
    let errors: Vec<_> = outcomes
        .iter()
        .filter(|o| o["tollgate.outcome"]["status"] == "error")
        .collect();
    assert_eq!(errors.len(), 2, "both recorded as errors: {outcomes:?}");
    assert!(
        errors[0]["tollgate.outcome"]
            .to_string()
            .contains("max_server_message_bytes"),
        "{}",
        errors[0]
    );
    // The line that followed is read as usual.
    assert_eq!(
        h.text_of("echo", json!({"message": "still here"})).await,
        "still here"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_switch_stops_in_flight_and_new_calls() {
    let Some((node, script)) = fake_server() else {
        return;
    };
    // A long call timeout: only the kill switch can end the hung call quickly.
    let p = policy(&node, &script, "").document().clone();
    let mut doc = p;
    doc.mcp.as_mut().unwrap().call_timeout = Some(Duration::from_secs(60));
    let p = Policy::from_document(doc).unwrap();
    let h = harness::start(&p).await;
    let client = h.client.peer().clone();
    let in_flight = tokio::spawn(async move {
        let start = Instant::now();
        let r = client
            .call_tool(rmcp::model::CallToolRequestParams::new("hang"))
            .await
            .expect("answered");
        (r, start.elapsed())
    });
    let audit = h.audit.clone();
    eventually("the hung call is permitted", || {
        audit
            .events()
            .iter()
            .any(|e| e["tollgate.decision"] == "allow")
    })
    .await;
    h.gateway.guard().suspend_all("operator").unwrap();
    let (r, took) = in_flight.await.unwrap();
    assert!(is_error(&r));
    assert!(text(&r).contains("kill switch"), "{}", text(&r));
    assert!(took < Duration::from_secs(10), "{took:?}");
    let new = h.call("echo", json!({"message": "x"})).await;
    assert!(is_error(&new));
    let last = h.events("decision").pop().unwrap();
    assert_eq!(last["tollgate.deny.code"], "suspended", "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_invalid_oversized_and_unknown_messages_get_protocol_errors_and_the_session_goes_on()
 {
    let Some((node, script)) = fake_server() else {
        return;
    };
    let p = policy(&node, &script, "");
    let (guard, audit) = harness::guard(&p);
    let gateway = Arc::new(Gateway::start(&p, guard).await.unwrap());
    let mut c = Raw::connect(&gateway);

    c.send("this is not json").await;
    let a = c.answer().await;
    assert_eq!(a["error"]["code"], -32700, "{a}");
    assert_eq!(a["id"], Value::Null);

    c.send(r#"{"jsonrpc":"2.0","id":5,"params":{}}"#).await;
    let a = c.answer().await;
    assert_eq!(a["error"]["code"], -32600, "{a}");
    assert_eq!(a["id"], 5);

    c.send(&format!(
        r#"{{"jsonrpc":"2.0","id":6,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(10_000)
    ))
    .await;
    let a = c.answer().await;
    assert_eq!(a["error"]["code"], -32600, "{a}");
    assert!(
        a["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too large")
    );

    // The session still initialises and serves.
    c.send(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#).await;
    let a = c.answer().await;
    assert_eq!(a["result"]["serverInfo"]["name"], "tollgate", "{a}");
    c.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
        .await;
    c.send(r#"{"jsonrpc":"2.0","id":2,"method":"no/such/method","params":{}}"#)
        .await;
    let a = c.answer().await;
    assert_eq!(a["error"]["code"], -32601, "{a}");
    // Resources and prompts are not proxied: nothing reaches a server outside the guard.
    c.send(r#"{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"file:///etc/passwd"}}"#)
        .await;
    let a = c.answer().await;
    assert!(a["error"].is_object(), "{a}");
    // Arguments that are not an object: refused as a protocol error, nothing forwarded.
    c.send(r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo","arguments":"boom"}}"#)
        .await;
    let a = c.answer().await;
    assert!(
        a["error"].is_object() || a["result"]["isError"] == true,
        "{a}"
    );
    c.send(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"message":"ok"}}}"#)
        .await;
    let a = c.answer().await;
    assert_eq!(a["result"]["content"][0]["text"], "ok", "{a}");

    assert_eq!(gateway.faults(), 3);
    let faults: Vec<Value> = audit
        .events()
        .into_iter()
        .filter(|e| e["event"] == "protocol_fault")
        .collect();
    assert_eq!(faults.len(), 3, "{faults:?}");
    assert!(
        !audit
            .events()
            .iter()
            .any(|e| e["event"] == "outcome" && e["gen_ai.tool.name"] != "echo")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_shadows_another_servers_tool_gets_neither_routed() {
    let Some((node, script)) = fake_server() else {
        return;
    };
    // A second server exposing the same names (`echo`, ...) without a prefix: which one would
    // run is ambiguous, so neither does.
    let p = policy(
        &node,
        &script,
        &format!(
            "\n[mcp.servers.shadow]\ncommand = \"{}\"\nargs = [\"{}\"]\n",
            node.display(),
            script.display()
        ),
    );
    let h = harness::start(&p).await;
    assert!(h.tool_names().await.is_empty());
    let r = h.call("echo", json!({"message": "which one?"})).await;
    assert!(is_error(&r));
    assert_eq!(text(&r), "tool not available");
}

/// Within one server too: its own `echo` and its `pay` mapped to `echo` are one policy tool, so
/// which of the two a permitted `echo` would run is ambiguous (before, the last one listed won,
/// silently). The gateway refuses to start with the server, naming both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tools_of_one_server_under_one_policy_name_are_refused_at_start() {
    let Some((node, script)) = fake_server() else {
        return;
    };
    let p = policy(
        &node,
        &script,
        &format!(
            "\n[mcp.servers.twice]\ncommand = \"{}\"\nargs = [\"{}\"]\nprefix = \"t_\"\n\
             tools = {{ pay = \"t_echo\" }}\n\n[tools.t_echo]\neffect = \"read\"\n",
            node.display(),
            script.display()
        ),
    );
    let (guard, _audit) = harness::guard(&p);
    let Err(err) = Gateway::start(&p, guard).await else {
        panic!("a server with two tools under one name is refused");
    };
    let msg = err.to_string();
    assert!(
        msg.contains("mcp.servers.twice")
            && msg.contains("`echo` and `pay`")
            && msg.contains("`t_echo`"),
        "{msg}"
    );
}
