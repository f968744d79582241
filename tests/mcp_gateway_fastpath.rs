//! The stdio gateway's fast path for `tools/call` (plain requests are read with a borrowed
//! struct and answered without rmcp's typed service loop), driven by a raw client writing
//! JSON-RPC lines: concurrent calls answered with their own ids, malformed calls answered as
//! protocol errors with nothing forwarded, calls before `initialize` refused, cancellation, the
//! kill switch and the call timeout on in-flight calls; and the downstream side's raw calls
//! (answers routed by the gateway's own ids past lines that are not JSON or answer nobody).
#![cfg(feature = "mcp")]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::node::harness::{self, METADATA, Raw};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tollgate::audit::MemorySink;
use tollgate::integrations::mcp::Gateway;
use tollgate::policy::Policy;

fn fake_server() -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let node = common::node::servers()?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/fake_server.mjs");
    Some((node.node, script))
}

fn policy(call_timeout: &str) -> Option<Policy> {
    Some(Policy::from_toml(&policy_text(call_timeout)?).expect("policy"))
}

fn policy_text(call_timeout: &str) -> Option<String> {
    let (node, script) = fake_server()?;
    let text = format!(
        r#"{METADATA}
[tools.echo]
effect = "read"
args.message = {{ type = "string" }}

[tools.hang]
effect = "read"

[tools.noise]
effect = "read"

[roles.agent]
tools = ["echo", "hang", "noise"]

[mcp]
call_timeout = "{call_timeout}"

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
    Some(text)
}

async fn start(call_timeout: &str) -> Option<(Arc<Gateway>, Arc<MemorySink>)> {
    let p = policy(call_timeout)?;
    let (guard, audit) = harness::guard(&p);
    Some((Arc::new(Gateway::start(&p, guard).await.unwrap()), audit))
}

fn events(audit: &MemorySink, event: &str) -> Vec<Value> {
    audit
        .events()
        .into_iter()
        .filter(|e| e["event"] == event)
        .collect()
}

fn text(answer: &Value) -> &str {
    answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_calls_are_answered_concurrently_each_with_its_own_id() {
    let Some((gateway, audit)) = start("3s").await else {
        return;
    };
    let mut c = Raw::connect(&gateway);
    c.initialize().await;
    // A call that never ends first: the others must not wait for it.
    c.call(r#""slow""#, "hang", json!({})).await;
    for i in 1..=5 {
        c.call(&i.to_string(), "echo", json!({"message": format!("m{i}")}))
            .await;
    }
    c.call(r#""s-6""#, "echo", json!({"message": "m6"})).await;
    let mut got = HashMap::new();
    for _ in 0..6 {
        let a = c.answer().await;
        got.insert(a["id"].to_string(), text(&a).to_owned());
    }
    for i in 1..=5 {
        assert_eq!(got[&i.to_string()], format!("m{i}"), "{got:?}");
    }
    assert_eq!(got["\"s-6\""], "m6", "{got:?}");
    let slow = c.answer().await;
    assert_eq!(slow["id"], "slow");
    assert_eq!(slow["result"]["isError"], true, "{slow}");
    assert!(text(&slow).contains("did not answer within"), "{slow}");
    assert_eq!(events(&audit, "outcome").len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_tools_calls_get_protocol_errors_and_nothing_is_forwarded() {
    let Some((gateway, audit)) = start("3s").await else {
        return;
    };
    let mut c = Raw::connect(&gateway);
    c.initialize().await;
    // What rmcp's typed path answered before the fast path existed (these lines still go
    // there): a `tools/call` whose params do not parse is an unknown request to rmcp, and an id
    // JSON-RPC does not allow is a protocol fault (recorded, answered with a null id).
    let not_a_call = |id: Value| (id, -32601);
    let cases = [
        // arguments not an object
        (
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo","arguments":"boom"}}"#,
            not_a_call(json!(4)),
        ),
        // no name
        (
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"arguments":{}}}"#,
            not_a_call(json!(5)),
        ),
        // a name that is not a string
        (
            r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":["echo"]}}"#,
            not_a_call(json!(6)),
        ),
        // ids of a type JSON-RPC does not allow: not echoed
        (
            r#"{"jsonrpc":"2.0","id":true,"method":"tools/call","params":{"name":"echo","arguments":{"message":"x"}}}"#,
            (Value::Null, -32600),
        ),
        (
            r#"{"jsonrpc":"2.0","id":{"a":1},"method":"tools/call","params":{"name":"echo","arguments":{"message":"x"}}}"#,
            (Value::Null, -32600),
        ),
    ];
    for (line, (id, code)) in cases {
        c.send(line).await;
        let a = c.answer().await;
        assert_eq!(a["error"]["code"], code, "{line} -> {a}");
        assert_eq!(a["id"], id, "{line} -> {a}");
    }
    assert_eq!(gateway.faults(), 2);
    assert!(events(&audit, "decision").is_empty());
    // The session goes on, on the fast path.
    c.call("8", "echo", json!({"message": "ok"})).await;
    let a = c.answer().await;
    assert_eq!((a["id"].clone(), text(&a)), (json!(8), "ok"), "{a}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tools_call_before_initialize_is_refused_and_reaches_no_server() {
    let Some((gateway, audit)) = start("3s").await else {
        return;
    };
    let mut c = Raw::connect(&gateway);
    c.call("1", "echo", json!({"message": "too early"})).await;
    let a = c.answer().await;
    assert_eq!(a["id"], 1, "{a}");
    assert!(a["error"].is_object(), "{a}");
    assert!(events(&audit, "decision").is_empty());
    c.initialize().await;
    c.call("2", "echo", json!({"message": "now"})).await;
    let a = c.answer().await;
    assert_eq!((a["id"].clone(), text(&a)), (json!(2), "now"), "{a}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_is_recorded_but_not_answered() {
    let Some((gateway, audit)) = start("500ms").await else {
        return;
    };
    let mut c = Raw::connect(&gateway);
    c.initialize().await;
    c.call("9", "hang", json!({})).await;
    c.send(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":9,"reason":"user"}}"#)
        .await;
    // The call still ends (its timeout) and is recorded ...
    let start = Instant::now();
    while events(&audit, "outcome").is_empty() {
        assert!(start.elapsed() < Duration::from_secs(20), "never recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... but its answer is dropped: the next line is the next call's.
    c.call("10", "echo", json!({"message": "after"})).await;
    let a = c.answer().await;
    assert_eq!((a["id"].clone(), text(&a)), (json!(10), "after"), "{a}");
    assert_eq!(c.answer_within(Duration::from_millis(300)).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_switch_stops_an_in_flight_call_and_the_next_one() {
    // Only the kill switch can end the hung call quickly.
    let Some((gateway, audit)) = start("60s").await else {
        return;
    };
    let mut c = Raw::connect(&gateway);
    c.initialize().await;
    c.call(r#""h""#, "hang", json!({})).await;
    let start = Instant::now();
    while !events(&audit, "decision")
        .iter()
        .any(|e| e["tollgate.decision"] == "allow")
    {
        assert!(start.elapsed() < Duration::from_secs(20), "never permitted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gateway.guard().suspend_all("operator").unwrap();
    let a = c.answer().await;
    assert_eq!(a["id"], "h");
    assert!(text(&a).contains("kill switch"), "{a}");
    assert!(start.elapsed() < Duration::from_secs(10));
    c.call("2", "echo", json!({"message": "x"})).await;
    let a = c.answer().await;
    assert_eq!(a["result"]["isError"], true, "{a}");
    let last = events(&audit, "decision").pop().unwrap();
    assert_eq!(last["tollgate.deny.code"], "suspended", "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downstream_lines_that_are_not_json_or_answer_nobody_are_skipped() {
    let Some((gateway, audit)) = start("5s").await else {
        return;
    };
    let mut c = Raw::connect(&gateway);
    c.initialize().await;
    c.call("1", "noise", json!({})).await;
    let a = c.answer().await;
    assert_eq!(
        (a["id"].clone(), text(&a)),
        (json!(1), "after the noise"),
        "{a}"
    );
    // The server's connection survived it: the next calls are answered by it.
    for i in 2..5 {
        c.call(&i.to_string(), "echo", json!({"message": format!("m{i}")}))
            .await;
        let a = c.answer().await;
        assert_eq!(
            (a["id"].clone(), text(&a)),
            (json!(i), format!("m{i}").as_str()),
            "{a}"
        );
    }
    assert_eq!(gateway.restarts("fake"), Some(0));
    let outcomes = events(&audit, "outcome");
    assert_eq!(outcomes.len(), 4);
    assert!(
        outcomes
            .iter()
            .all(|o| o["tollgate.outcome"]["status"] == "success"),
        "{outcomes:?}"
    );
}

/// `tollgate mcp` reads and writes stdin/stdout as asynchronous pipes where they are pipes (the
/// other tests spawn it with both piped); a stdout that is a plain file keeps tokio's blocking
/// writer, and the session is served the same.
#[cfg(feature = "cli")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_with_a_stdout_that_is_not_a_pipe() {
    let Some(p) = policy_text("5s") else {
        return;
    };
    let tmp = common::tempdir::temp_dir("mcp-fastpath", "stdout-file");
    let dir = tmp.path();
    let file = dir.join("gateway.toml");
    std::fs::write(&file, p).unwrap();
    let out = dir.join("stdout.jsonl");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("mcp")
        .arg("--no-audit")
        .arg("--policy")
        .arg(&file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::fs::File::create(&out).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let lines = [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"message":"into a file"}}}"#,
    ];
    for l in lines {
        stdin.write_all(format!("{l}\n").as_bytes()).await.unwrap();
    }
    let start = Instant::now();
    let answer = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if let Some(a) = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|a| a["id"] == 2)
        {
            break a;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no answer: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(text(&answer), "into a file", "{answer}");
    drop(stdin);
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
}
