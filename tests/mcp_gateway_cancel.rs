//! A forwarded call the gateway gives up on (the call timeout passed, the kill switch stopped
//! the run) is cancelled downstream: the server gets exactly one `notifications/cancelled`
//! naming the id the gateway sent the request under, and an answered call gets none. Both ways
//! a call reaches a server are covered: a stdio server (the gateway's own relay writes the
//! request, under a `"tollgate-<n>"` id) and a streamable-HTTP server (rmcp's client sends it).
//! The server is `tests/mcp/cancel_server.mjs`, which logs every call and cancellation it gets.
#![cfg(feature = "mcp")]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::node::harness::{self, METADATA, is_error, text};
use serde_json::{Value, json};
use tollgate::policy::Policy;

#[derive(Clone, Copy, Debug)]
enum Transport {
    /// A child process on stdio: forwarded calls go through the gateway's relay.
    Stdio,
    /// A streamable-HTTP server: forwarded calls go through rmcp's client.
    Http,
}

/// The test server, running or to be spawned by the gateway, and the file it logs to.
struct Server {
    /// The server's part of the policy (`[mcp.servers.slowpoke]`).
    spec: String,
    log: PathBuf,
    /// The HTTP server's process (the gateway spawns the stdio one); killed on drop.
    child: Option<std::process::Child>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/cancel_server.mjs")
}

/// Starts (HTTP) or describes (stdio) the test server, or `None` to skip without Node.js.
fn server(transport: Transport, label: &str) -> Option<Server> {
    let node = common::node::servers()?;
    let dir = common::tempdir::temp_dir("mcp-cancel", label);
    let log = dir.path().join("cancel.log");
    std::fs::write(&log, "").unwrap();
    Some(match transport {
        Transport::Stdio => Server {
            spec: format!(
                "command = \"{node}\"\nargs = [\"{script}\"]\nenv = {{ CANCEL_LOG = \"{log}\" }}\n",
                node = node.node.display(),
                script = script().display(),
                log = log.display()
            ),
            log,
            child: None,
            _dir: dir,
        },
        Transport::Http => {
            use std::io::BufRead;
            let mut child = std::process::Command::new(&node.node)
                .arg(script())
                .arg("--http")
                .env("CANCEL_LOG", &log)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("the HTTP test server starts");
            let stdout = child.stdout.take().expect("stdout");
            let mut first = String::new();
            std::io::BufReader::new(stdout)
                .read_line(&mut first)
                .expect("the HTTP test server prints its port");
            let port = first
                .trim()
                .strip_prefix("PORT ")
                .unwrap_or_else(|| panic!("unexpected first line: {first}"));
            Server {
                spec: format!("url = \"http://127.0.0.1:{port}/mcp\"\n"),
                log,
                child: Some(child),
                _dir: dir,
            }
        }
    })
}

impl Server {
    fn entries(&self, event: &str) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("a log line is JSON"))
            .filter(|e| e["event"] == event)
            .collect()
    }

    /// The `tools/call` requests the server received, in order.
    fn calls(&self) -> Vec<Value> {
        self.entries("call")
    }

    /// The `notifications/cancelled` the server received, in order.
    fn cancels(&self) -> Vec<Value> {
        self.entries("cancelled")
    }

    /// Waits until the server received `n` cancellations, then a while longer: a second
    /// notification for one call would have come by then.
    async fn settled_cancels(&self, n: usize) -> Vec<Value> {
        let start = Instant::now();
        while self.cancels().len() < n {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the server got {} notifications/cancelled, not {n}; its log: {}",
                self.cancels().len(),
                std::fs::read_to_string(&self.log).unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.cancels()
    }
}

fn policy(server: &Server, call_timeout: &str) -> Policy {
    let text = format!(
        r#"{METADATA}
[tools.quick]
effect = "read"

[tools.slow]
effect = "read"
args.ms = {{ type = "integer" }}
args.late = {{ type = "boolean" }}

[roles.agent]
tools = ["quick", "slow"]

[mcp]
call_timeout = "{call_timeout}"

[mcp.connection]
agent = "agent-1"
role = "agent"

[mcp.servers.slowpoke]
{spec}"#,
        spec = server.spec,
    );
    Policy::from_toml(&text).expect("policy")
}

/// Answered calls get no cancellation; the call that passes the call timeout gets exactly one,
/// naming the id the server received it under, and its audit outcome still says it timed out.
async fn timed_out_call_is_cancelled_once(transport: Transport) {
    let Some(server) = server(transport, &format!("cancel-timeout-{transport:?}")) else {
        return;
    };
    let h = harness::start(&policy(&server, "500ms")).await;
    assert_eq!(h.text_of("quick", json!({})).await, "quick done");
    assert_eq!(h.text_of("slow", json!({"ms": 50})).await, "slept 50");

    let started = Instant::now();
    let r = h.call("slow", json!({"ms": 30_000})).await;
    assert!(is_error(&r), "{r:?}");
    assert!(text(&r).contains("did not answer within"), "{}", text(&r));
    assert!(started.elapsed() < Duration::from_secs(10));

    let cancels = server.settled_cancels(1).await;
    let calls = server.calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(cancels.len(), 1, "exactly one cancellation: {cancels:?}");
    assert_eq!(
        cancels[0]["requestId"], calls[2]["id"],
        "the cancellation names the timed-out call's id: {cancels:?} {calls:?}"
    );
    for answered in &calls[..2] {
        assert_ne!(cancels[0]["requestId"], answered["id"]);
    }
    let reason = cancels[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("call timeout"), "{reason}");

    // The trail still says what happened to the call: it timed out.
    let outcomes = h.events("outcome");
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    let last = &outcomes[2]["tollgate.outcome"];
    assert_eq!(last["status"], "error", "{last}");
    assert!(
        last["message"]
            .as_str()
            .is_some_and(|m| m.contains("did not answer within")),
        "{last}"
    );

    // The connection goes on; still nothing more is cancelled.
    assert_eq!(h.text_of("quick", json!({})).await, "quick done");
    assert_eq!(server.settled_cancels(1).await.len(), 1);
    h.gateway.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_stdio_call_is_cancelled_downstream_once() {
    timed_out_call_is_cancelled_once(Transport::Stdio).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_http_call_is_cancelled_downstream_once() {
    timed_out_call_is_cancelled_once(Transport::Http).await;
}

/// A call in flight when the kill switch stops the run is cancelled downstream, with the kill
/// switch as its reason; the client's answer and the trail say the kill switch stopped it.
async fn killed_call_is_cancelled(transport: Transport) {
    let Some(server) = server(transport, &format!("cancel-kill-{transport:?}")) else {
        return;
    };
    // A long call timeout: only the kill switch ends the call.
    let h = harness::start(&policy(&server, "60s")).await;
    let peer = h.client.peer().clone();
    let in_flight =
        tokio::spawn(async move { harness::call_peer(&peer, "slow", json!({"ms": 60_000})).await });
    let start = Instant::now();
    while server.calls().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the call never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.gateway.guard().suspend_all("operator").unwrap();
    let r = in_flight.await.unwrap();
    assert!(is_error(&r), "{r:?}");
    assert!(text(&r).contains("kill switch"), "{}", text(&r));

    let cancels = server.settled_cancels(1).await;
    let calls = server.calls();
    assert_eq!(cancels.len(), 1, "{cancels:?}");
    assert_eq!(cancels[0]["requestId"], calls[0]["id"]);
    let reason = cancels[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("kill switch"), "{reason}");
    let outcomes = h.events("outcome");
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert!(
        outcomes[0]["tollgate.outcome"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("kill switch")),
        "{outcomes:?}"
    );
    h.gateway.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_call_stopped_by_the_kill_switch_is_cancelled_downstream() {
    killed_call_is_cancelled(Transport::Stdio).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_call_stopped_by_the_kill_switch_is_cancelled_downstream() {
    killed_call_is_cancelled(Transport::Http).await;
}

/// A server that answers a call after it was cancelled: the late answer is dropped (no
/// panic, not taken for another call's answer) and the connection keeps serving.
async fn a_late_answer_is_dropped(transport: Transport) {
    let Some(server) = server(transport, &format!("cancel-late-{transport:?}")) else {
        return;
    };
    let h = harness::start(&policy(&server, "300ms")).await;
    let r = h.call("slow", json!({"ms": 700, "late": true})).await;
    assert!(text(&r).contains("did not answer within"), "{}", text(&r));
    assert_eq!(server.settled_cancels(1).await.len(), 1);
    // By now the late answer came (700 ms after the call) and was dropped.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(h.text_of("slow", json!({"ms": 10})).await, "slept 10");
    assert_eq!(h.text_of("quick", json!({})).await, "quick done");
    assert_eq!(h.gateway.is_up("slowpoke"), Some(true));
    assert_eq!(server.cancels().len(), 1);
    h.gateway.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_stdio_answer_after_the_cancellation_is_dropped() {
    a_late_answer_is_dropped(Transport::Stdio).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_http_answer_after_the_cancellation_is_dropped() {
    a_late_answer_is_dropped(Transport::Http).await;
}
