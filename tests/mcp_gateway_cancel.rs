//! A forwarded call the gateway gives up on (the call timeout passed, the kill switch stopped
//! the run), the client cancels, or whose client's session ends (its input closed) is cancelled
//! downstream: the server gets exactly one `notifications/cancelled` naming the id the gateway
//! sent the request under, and an answered call gets none. Both ways a call reaches a server are
//! covered: a stdio server (the gateway's own relay writes the request, under a `"tollgate-<n>"`
//! id) and a streamable-HTTP server (rmcp's client sends it). The server is
//! `tests/mcp/cancel_server.mjs`, which logs every call and cancellation it gets.
//!
//! The gateway runs in process ([`harness`]), its client a raw JSON-RPC writer; the client's two
//! paths ([`Client`]) differ only in the request: a plain `tools/call` is read by the gateway's
//! own fast path, one whose `_meta` holds a key the fast path leaves to rmcp goes through rmcp's
//! typed service. With the `cli` feature, the session's end is also checked on `tollgate mcp`
//! itself, over its real stdin and stdout.
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
    policy_with(server, call_timeout, "", "")
}

/// The test policy with `sections` before `[mcp]` and `mcp` lines in it.
fn policy_with(server: &Server, call_timeout: &str, sections: &str, mcp: &str) -> Policy {
    Policy::from_toml(&policy_text(server, call_timeout, sections, mcp)).expect("policy")
}

/// The text of [`policy_with`]'s document.
fn policy_text(server: &Server, call_timeout: &str, sections: &str, mcp: &str) -> String {
    format!(
        r#"{METADATA}
{sections}

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
{mcp}

[mcp.connection]
agent = "agent-1"
role = "agent"

[mcp.servers.slowpoke]
{spec}"#,
        spec = server.spec,
    )
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
    until_calls(&server, 1).await;
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

/// How the client reaches the gateway, for the client's own cancellation.
#[derive(Clone, Copy, Debug)]
enum Client {
    /// Over stdio with a plain `tools/call`: the gateway's own fast path reads it.
    Fast,
    /// Over stdio with a `tools/call` whose `_meta` the fast path leaves to rmcp: rmcp's typed
    /// path runs it (the handler's `RequestContext::ct`).
    Typed,
}

impl Client {
    /// The `tools/call` line of `slow` with `args`, under the JSON id `id`.
    fn call_line(self, id: &str, tool: &str, args: Value) -> String {
        let mut params = json!({"name": tool, "arguments": args});
        if let Client::Typed = self {
            params["_meta"] = json!({"progressToken": 1, "test.tollgate/typed": true});
        }
        json!({
            "jsonrpc": "2.0",
            "id": serde_json::from_str::<Value>(id).unwrap(),
            "method": "tools/call",
            "params": params,
        })
        .to_string()
    }
}

/// A `notifications/cancelled` line for the JSON id `id`.
fn cancel_line(id: &str) -> String {
    json!({
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": {"requestId": serde_json::from_str::<Value>(id).unwrap(), "reason": "user pressed stop"},
    })
    .to_string()
}

/// Waits until the server received `n` calls.
async fn until_calls(server: &Server, n: usize) {
    let start = Instant::now();
    while server.calls().len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the server got {} calls, not {n}",
            server.calls().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the trail holds `n` outcomes, and returns them.
async fn until_outcomes(h: &harness::Harness, n: usize) -> Vec<Value> {
    let start = Instant::now();
    while h.events("outcome").len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the trail holds {} outcomes, not {n}: {:?}",
            h.events("outcome").len(),
            h.events("outcome")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.events("outcome")
}

/// The client cancels its own in-flight call: the gateway stops waiting for it, the server
/// gets exactly one `notifications/cancelled` for the gateway's id of it (saying the client
/// cancelled it), the client gets no answer for it, the trail says the client cancelled it, and
/// the session goes on.
async fn client_cancellation_is_passed_on(client: Client, transport: Transport, id: &str) {
    let Some(server) = server(
        transport,
        &format!("client-cancel-{client:?}-{transport:?}"),
    ) else {
        return;
    };
    // A long call timeout: only the client's cancellation ends the call in time.
    let h = harness::start(&policy(&server, "60s")).await;
    let mut c = harness::Raw::connect(&h.gateway);
    c.initialize().await;
    c.send(&client.call_line(id, "slow", json!({"ms": 60_000})))
        .await;
    until_calls(&server, 1).await;
    let started = Instant::now();
    c.send(&cancel_line(id)).await;

    let cancels = server.settled_cancels(1).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the cancellation was passed on at once, not at a timeout"
    );
    let calls = server.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(cancels.len(), 1, "exactly one cancellation: {cancels:?}");
    assert_eq!(
        cancels[0]["requestId"], calls[0]["id"],
        "the cancellation names the gateway's id of the call: {cancels:?} {calls:?}"
    );
    let reason = cancels[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("client cancelled"), "{reason}");

    let outcomes = until_outcomes(&h, 1).await;
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    let outcome = &outcomes[0]["tollgate.outcome"];
    assert_eq!(outcome["status"], "error", "{outcome}");
    assert!(
        outcome["message"]
            .as_str()
            .is_some_and(|m| m.contains("the client cancelled the call")),
        "{outcome}"
    );

    // The session goes on; the next line the client reads is the next call's answer, and no
    // answer for the cancelled id comes after it.
    c.send(&client.call_line("\"next\"", "quick", json!({})))
        .await;
    let a = c.answer().await;
    assert_eq!(a["id"], "next", "{a}");
    assert_eq!(a["result"]["content"][0]["text"], "quick done", "{a}");
    assert_eq!(c.answer_within(Duration::from_millis(500)).await, None);
    assert_eq!(server.cancels().len(), 1);
    assert_eq!(h.events("outcome").len(), 2);
    h.gateway.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_path_call_the_client_cancels_is_cancelled_on_a_stdio_server() {
    client_cancellation_is_passed_on(Client::Fast, Transport::Stdio, "7").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_path_call_the_client_cancels_is_cancelled_on_an_http_server() {
    client_cancellation_is_passed_on(Client::Fast, Transport::Http, "\"c-1\"").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_path_call_the_client_cancels_is_cancelled_on_a_stdio_server() {
    client_cancellation_is_passed_on(Client::Typed, Transport::Stdio, "\"c-2\"").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_path_call_the_client_cancels_is_cancelled_on_an_http_server() {
    client_cancellation_is_passed_on(Client::Typed, Transport::Http, "8").await;
}

/// Cancellations naming no call in flight (an unknown id, an id of another type, a call
/// already answered) change nothing: the in-flight call is answered, nothing is cancelled
/// downstream, its outcome is a success.
async fn unknown_cancellations_change_nothing(client: Client) {
    let Some(server) = server(
        Transport::Stdio,
        &format!("client-cancel-unknown-{client:?}"),
    ) else {
        return;
    };
    let h = harness::start(&policy(&server, "60s")).await;
    let mut c = harness::Raw::connect(&h.gateway);
    c.initialize().await;
    c.send(&client.call_line("1", "quick", json!({}))).await;
    assert_eq!(c.answer().await["id"], 1);
    c.send(&client.call_line("2", "slow", json!({"ms": 800})))
        .await;
    until_calls(&server, 2).await;
    // Unknown ids, the same number as a string, the call already answered, no id at all.
    for line in [
        cancel_line("999"),
        cancel_line("\"2\""),
        cancel_line("1"),
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"reason":"none"}}"#
            .to_owned(),
    ] {
        c.send(&line).await;
    }
    let a = c.answer().await;
    assert_eq!(a["id"], 2, "{a}");
    assert_eq!(a["result"]["content"][0]["text"], "slept 800", "{a}");
    // The answered call cancelled afterwards: nothing either.
    c.send(&cancel_line("2")).await;
    c.send(&client.call_line("3", "quick", json!({}))).await;
    assert_eq!(c.answer().await["id"], 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(server.cancels().is_empty(), "{:?}", server.cancels());
    let outcomes = until_outcomes(&h, 3).await;
    assert!(
        outcomes
            .iter()
            .all(|o| o["tollgate.outcome"]["status"] == "success"),
        "{outcomes:?}"
    );
    h.gateway.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellations_of_unknown_or_finished_fast_path_ids_change_nothing() {
    unknown_cancellations_change_nothing(Client::Fast).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellations_of_unknown_or_finished_typed_path_ids_change_nothing() {
    unknown_cancellations_change_nothing(Client::Typed).await;
}

/// A call the client cancels while it waits for a human's approval is never forwarded, even
/// once approved: nothing reaches the server, nothing is answered, nothing is cancelled
/// downstream (nothing was sent), and the session goes on.
async fn an_escalated_call_the_client_cancels_is_never_forwarded(client: Client) {
    let Some(server) = server(
        Transport::Stdio,
        &format!("client-cancel-escalated-{client:?}"),
    ) else {
        return;
    };
    let p = policy_with(
        &server,
        "60s",
        r#"
[escalation]
groups.ops = ["alice"]
defaults = { timeout = "1h", on_timeout = "deny", chain = [{ group = "ops" }] }

[[escalation.rules]]
id = "long-sleep"
reason = "Long sleeps need ops."
tools = ["slow"]
when.amount = { path = "ms", over = 50000 }
"#,
        r#"escalation_wait = "20s""#,
    );
    let h = harness::start(&p).await;
    let mut c = harness::Raw::connect(&h.gateway);
    c.initialize().await;
    c.send(&client.call_line("\"e-1\"", "slow", json!({"ms": 60_000})))
        .await;
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
    c.send(&cancel_line("\"e-1\"")).await;
    // The cancellation is read before the approval comes (the next call's answer proves it).
    c.send(&client.call_line("\"q\"", "quick", json!({}))).await;
    assert_eq!(c.answer().await["id"], "q");
    h.gateway
        .guard()
        .approvals()
        .unwrap()
        .decide(
            &id,
            &tollgate::escalation::Approver::new("alice"),
            tollgate::escalation::Decision::Approve,
            "ok",
        )
        .expect("decided");
    assert_eq!(c.answer_within(Duration::from_millis(800)).await, None);
    let calls = server.calls();
    assert_eq!(
        calls.len(),
        1,
        "only the quick call was forwarded: {calls:?}"
    );
    assert_eq!(calls[0]["tool"], "quick");
    assert!(server.cancels().is_empty(), "{:?}", server.cancels());
    assert_eq!(h.events("outcome").len(), 1, "{:?}", h.events("outcome"));
    // The same call sent again is a new call: the approval given for the withdrawn one does
    // not run it; it waits for an approval of its own.
    c.send(&client.call_line("\"e-2\"", "slow", json!({"ms": 60_000})))
        .await;
    let start = Instant::now();
    loop {
        let pending = queue.pending().unwrap();
        if pending.iter().any(|r| r.id != id) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the resent call raised no request of its own: {pending:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.calls().len(), 1, "{:?}", server.calls());
    h.gateway.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalated_fast_path_call_the_client_cancels_is_never_forwarded() {
    an_escalated_call_the_client_cancels_is_never_forwarded(Client::Fast).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalated_typed_path_call_the_client_cancels_is_never_forwarded() {
    an_escalated_call_the_client_cancels_is_never_forwarded(Client::Typed).await;
}

/// A client of the gateway's streamable-HTTP endpoint (rmcp's server over HTTP) cancels its
/// call with rmcp's own `RequestHandle::cancel`: cancelled downstream once, recorded as
/// cancelled by the client, and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_an_http_client_cancels_is_cancelled_downstream() {
    use rmcp::ServiceExt;
    use rmcp::model::{CallToolRequest, CallToolRequestParams, ClientRequest};
    use rmcp::service::PeerRequestOptions;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    use tollgate::integrations::mcp::Gateway;

    let Some(server) = server(Transport::Stdio, "client-cancel-http-client") else {
        return;
    };
    let p = policy(&server, "60s");
    let (guard, audit) = harness::guard(&p);
    let gateway = std::sync::Arc::new(Gateway::start(&p, guard).await.expect("gateway starts"));
    let listener = gateway
        .bind_http("127.0.0.1:0".parse().unwrap())
        .await
        .expect("binds");
    let url = listener.url();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(listener.serve_until(async move {
        let _ = stopped.await;
    }));
    let transport = StreamableHttpClientTransport::with_client(
        common::tls::http_client(),
        StreamableHttpClientTransportConfig::with_uri(url.as_str()),
    );
    let client = ().serve(transport).await.expect("client initialises");
    let Value::Object(args) = json!({"ms": 60_000}) else {
        unreachable!()
    };
    let request = ClientRequest::CallToolRequest(CallToolRequest::new(
        CallToolRequestParams::new("slow").with_arguments(args),
    ));
    let handle = client
        .peer()
        .send_cancellable_request(request, PeerRequestOptions::no_options())
        .await
        .expect("sent");
    until_calls(&server, 1).await;
    handle
        .cancel(Some("user pressed stop".to_owned()))
        .await
        .expect("cancellation sent");

    let cancels = server.settled_cancels(1).await;
    let calls = server.calls();
    assert_eq!(cancels.len(), 1, "{cancels:?}");
    assert_eq!(cancels[0]["requestId"], calls[0]["id"]);
    let reason = cancels[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("client cancelled"), "{reason}");
    let outcomes = || -> Vec<Value> {
        audit
            .events()
            .into_iter()
            .filter(|e| e["event"] == "outcome")
            .collect()
    };
    let start = Instant::now();
    while outcomes().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(20), "never recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let o = &outcomes()[0]["tollgate.outcome"];
    assert_eq!(o["status"], "error", "{o}");
    assert!(
        o["message"]
            .as_str()
            .is_some_and(|m| m.contains("the client cancelled the call")),
        "{o}"
    );
    assert_eq!(
        text(&harness::call(&client, "quick", json!({})).await),
        "quick done"
    );
    assert_eq!(server.cancels().len(), 1);
    client.cancel().await.ok();
    let _ = stop.send(());
    serving
        .await
        .expect("listener task")
        .expect("listener stops cleanly");
    gateway.shutdown();
}

/// The client's session ends (it closes its stdin) while a typed-path call is in flight: rmcp
/// cancels the call's handler token as it would for the client's own cancellation, but the
/// client cancelled nothing. The server gets exactly one `notifications/cancelled` saying the
/// client's session ended, and the trail says so too, not that the client cancelled the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_path_call_in_flight_when_the_client_session_ends_is_recorded_as_such() {
    let Some(server) = server(Transport::Stdio, "session-ends-typed") else {
        return;
    };
    // A long call timeout: only the session's end stops the call.
    let h = harness::start(&policy(&server, "60s")).await;
    let mut c = harness::Raw::connect(&h.gateway);
    c.initialize().await;
    c.send(&Client::Typed.call_line("\"s-1\"", "slow", json!({"ms": 60_000})))
        .await;
    until_calls(&server, 1).await;
    // The client goes away: its stdin (the gateway's input) closes. rmcp waits up to 5 s for
    // handlers still running before it cancels them.
    drop(c);

    let cancels = server.settled_cancels(1).await;
    let calls = server.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(cancels.len(), 1, "exactly one cancellation: {cancels:?}");
    assert_eq!(
        cancels[0]["requestId"], calls[0]["id"],
        "{cancels:?} {calls:?}"
    );
    let reason = cancels[0]["reason"].as_str().unwrap_or_default();
    assert_eq!(
        reason, "tollgate: the client's session ended",
        "{cancels:?}"
    );

    let outcomes = until_outcomes(&h, 1).await;
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    let outcome = &outcomes[0]["tollgate.outcome"];
    assert_eq!(outcome["status"], "error", "{outcome}");
    assert_eq!(
        outcome["message"], "cancelled: the client's session ended",
        "{outcome}"
    );
    h.gateway.shutdown();
}

/// How long a session may take to end once its client closed the gateway's input, with a call
/// in flight whose call timeout is a minute: on the fast path the call is stopped at once; rmcp's
/// typed path first waits up to 5 s for its handlers to answer (its drain), then stops them.
fn session_end_bound(client: Client) -> Duration {
    match client {
        Client::Fast => Duration::from_secs(3),
        Client::Typed => Duration::from_secs(10),
    }
}

/// The client's session ends (it closes the gateway's input) with a call in flight and one
/// answered before: the session's serving ends well before the call's timeout, and by then the
/// call in flight is stopped and recorded (outcome "cancelled: the client's session ended");
/// it is never answered; the server gets exactly one `notifications/cancelled`, naming that
/// call's request and saying the session ended, and none for the answered call.
async fn session_end_stops_the_call_in_flight(client: Client, transport: Transport) {
    let Some(server) = server(transport, &format!("session-ends-{client:?}-{transport:?}")) else {
        return;
    };
    // A long call timeout: only the session's end stops the call in time.
    let h = harness::start(&policy(&server, "60s")).await;
    let mut c = harness::Raw::connect(&h.gateway);
    c.initialize().await;
    c.send(&client.call_line("1", "quick", json!({}))).await;
    let a = c.answer().await;
    assert_eq!(a["id"], 1, "{a}");
    assert_eq!(a["result"]["content"][0]["text"], "quick done", "{a}");
    c.send(&client.call_line("\"s-2\"", "slow", json!({"ms": 60_000})))
        .await;
    until_calls(&server, 2).await;

    let started = Instant::now();
    c.close_input().await;
    let bound = session_end_bound(client);
    let served = tokio::time::timeout(bound, &mut c.served)
        .await
        .unwrap_or_else(|_| panic!("the session still served {bound:?} after its input closed"));
    served
        .expect("serve task")
        .expect("the session ends cleanly");
    eprintln!(
        "session ended {:?} after the input closed",
        started.elapsed()
    );
    // Nothing more was written: the stopped call is not answered.
    let rest = c.rest(Duration::from_secs(5)).await;
    assert!(rest.is_empty(), "written after the input closed: {rest:?}");

    // Recorded before the session's serving returned: no waiting here.
    let outcomes = h.events("outcome");
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert_eq!(outcomes[0]["tollgate.outcome"]["status"], "success");
    assert_eq!(outcomes[1]["gen_ai.tool.call.id"], "s-2", "{outcomes:?}");
    let outcome = &outcomes[1]["tollgate.outcome"];
    assert_eq!(outcome["status"], "error", "{outcome}");
    assert_eq!(
        outcome["message"], "cancelled: the client's session ended",
        "{outcome}"
    );

    let cancels = server.settled_cancels(1).await;
    let calls = server.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(cancels.len(), 1, "exactly one cancellation: {cancels:?}");
    assert_eq!(
        cancels[0]["requestId"], calls[1]["id"],
        "the cancellation names the call in flight: {cancels:?} {calls:?}"
    );
    assert_eq!(
        cancels[0]["reason"], "tollgate: the client's session ended",
        "{cancels:?}"
    );
    h.gateway.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_path_call_in_flight_when_the_session_ends_is_cancelled_on_a_stdio_server() {
    session_end_stops_the_call_in_flight(Client::Fast, Transport::Stdio).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_path_call_in_flight_when_the_session_ends_is_cancelled_on_an_http_server() {
    session_end_stops_the_call_in_flight(Client::Fast, Transport::Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_path_call_in_flight_when_the_session_ends_is_stopped_before_the_session_returns() {
    session_end_stops_the_call_in_flight(Client::Typed, Transport::Stdio).await;
}

/// A fast-path call waiting for a human's approval when the client's session ends is never
/// forwarded, even once approved: the session ends without waiting for the approval, and nothing
/// reaches the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalated_fast_path_call_is_never_forwarded_once_the_session_ended() {
    let Some(server) = server(Transport::Stdio, "session-ends-escalated") else {
        return;
    };
    let p = policy_with(
        &server,
        "60s",
        r#"
[escalation]
groups.ops = ["alice"]
defaults = { timeout = "1h", on_timeout = "deny", chain = [{ group = "ops" }] }

[[escalation.rules]]
id = "long-sleep"
reason = "Long sleeps need ops."
tools = ["slow"]
when.amount = { path = "ms", over = 50000 }
"#,
        r#"escalation_wait = "30s""#,
    );
    let h = harness::start(&p).await;
    let mut c = harness::Raw::connect(&h.gateway);
    c.initialize().await;
    c.send(&Client::Fast.call_line("\"e-1\"", "slow", json!({"ms": 60_000})))
        .await;
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
    c.close_input().await;
    let bound = session_end_bound(Client::Fast);
    tokio::time::timeout(bound, &mut c.served)
        .await
        .unwrap_or_else(|_| panic!("the session waited for the approval past {bound:?}"))
        .expect("serve task")
        .expect("the session ends cleanly");
    h.gateway
        .guard()
        .approvals()
        .unwrap()
        .decide(
            &id,
            &tollgate::escalation::Approver::new("alice"),
            tollgate::escalation::Decision::Approve,
            "ok",
        )
        .expect("decided");
    assert!(c.rest(Duration::from_secs(5)).await.is_empty());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(server.calls().is_empty(), "{:?}", server.calls());
    assert!(server.cancels().is_empty(), "{:?}", server.cancels());
    assert!(h.events("outcome").is_empty(), "{:?}", h.events("outcome"));
    h.gateway.shutdown();
}

/// `tollgate mcp` itself: the client closes its stdin with a call in flight (a minute's call
/// timeout, behind a streamable-HTTP server the gateway does not own, so the server outlives the
/// gateway and its log says what reached it). The process exits well before the call's timeout,
/// successfully; the call is not answered; its audit outcome in the log directory says the
/// session ended; the server got exactly one `notifications/cancelled`, for that call only.
#[cfg(feature = "cli")]
async fn the_binary_stops_the_call_in_flight_at_eof(client: Client) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

    let Some(server) = server(Transport::Http, &format!("binary-eof-{client:?}")) else {
        return;
    };
    let tmp = common::tempdir::temp_dir("mcp-cancel", &format!("binary-eof-{client:?}"));
    let file = tmp.path().join("gateway.toml");
    std::fs::write(&file, policy_text(&server, "60s", "", "")).unwrap();
    let audit = tmp.path().join("audit");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("mcp")
        .arg("--policy")
        .arg(&file)
        .arg("--audit")
        .arg(&audit)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut answer = async || -> Value {
        let line = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
            .await
            .expect("an answer within 30 s")
            .unwrap()
            .expect("the gateway answers");
        serde_json::from_str(&line).unwrap()
    };
    for line in [
        r#"{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#.to_owned(),
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_owned(),
        client.call_line("1", "quick", json!({})),
    ] {
        stdin.write_all(format!("{line}\n").as_bytes()).await.unwrap();
    }
    assert_eq!(answer().await["id"], "init");
    let a = answer().await;
    assert_eq!(a["result"]["content"][0]["text"], "quick done", "{a}");
    stdin
        .write_all(format!("{}\n", client.call_line("2", "slow", json!({"ms": 60_000}))).as_bytes())
        .await
        .unwrap();
    until_calls(&server, 2).await;

    let started = Instant::now();
    drop(stdin);
    let bound = session_end_bound(client) + Duration::from_secs(2);
    let status = tokio::time::timeout(bound, child.wait())
        .await
        .unwrap_or_else(|_| panic!("the gateway still ran {bound:?} after its stdin closed"))
        .unwrap();
    assert!(status.success(), "{status:?}");
    eprintln!(
        "gateway exited {:?} after its stdin closed",
        started.elapsed()
    );
    let mut rest = Vec::new();
    while let Some(line) = stdout.next_line().await.unwrap() {
        rest.push(line);
    }
    assert!(rest.is_empty(), "written after stdin closed: {rest:?}");

    // The log's records (each one's `event` is the event, as the memory sink holds it).
    let mut records = Vec::new();
    for entry in std::fs::read_dir(&audit).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            records.extend(
                std::fs::read_to_string(&path)
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str::<Value>(l).unwrap()["event"].take()),
            );
        }
    }
    let outcomes: Vec<&Value> = records.iter().filter(|r| r["event"] == "outcome").collect();
    assert_eq!(outcomes.len(), 2, "{records:?}");
    assert_eq!(outcomes[0]["tollgate.outcome"]["status"], "success");
    assert_eq!(outcomes[1]["gen_ai.tool.call.id"], "2", "{outcomes:?}");
    assert_eq!(
        outcomes[1]["tollgate.outcome"]["message"], "cancelled: the client's session ended",
        "{outcomes:?}"
    );

    let cancels = server.settled_cancels(1).await;
    let calls = server.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(cancels.len(), 1, "exactly one cancellation: {cancels:?}");
    assert_eq!(
        cancels[0]["requestId"], calls[1]["id"],
        "{cancels:?} {calls:?}"
    );
    assert_eq!(
        cancels[0]["reason"], "tollgate: the client's session ended",
        "{cancels:?}"
    );
}

#[cfg(feature = "cli")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_stops_a_fast_path_call_in_flight_when_its_stdin_closes() {
    the_binary_stops_the_call_in_flight_at_eof(Client::Fast).await;
}

#[cfg(feature = "cli")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_stops_a_typed_path_call_in_flight_when_its_stdin_closes() {
    the_binary_stops_the_call_in_flight_at_eof(Client::Typed).await;
}

/// The fast path's calls stop when the client's input ends, not after rmcp's drain of its own
/// handlers (up to 5 s): with a typed-path call in flight too, the fast-path call is cancelled
/// downstream and recorded at once, and the session ends once both are stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_path_call_stops_at_the_end_of_input_while_rmcp_drains_a_typed_one() {
    let Some(server) = server(Transport::Stdio, "session-ends-mixed") else {
        return;
    };
    let h = harness::start(&policy(&server, "60s")).await;
    let mut c = harness::Raw::connect(&h.gateway);
    c.initialize().await;
    c.send(&Client::Typed.call_line("\"t-1\"", "slow", json!({"ms": 60_000})))
        .await;
    until_calls(&server, 1).await;
    c.send(&Client::Fast.call_line("\"f-2\"", "slow", json!({"ms": 60_000})))
        .await;
    until_calls(&server, 2).await;
    let calls = server.calls();

    let started = Instant::now();
    c.close_input().await;
    let cancels = server.settled_cancels(1).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the fast-path call was stopped only {:?} after the input ended",
        started.elapsed()
    );
    assert_eq!(cancels.len(), 1, "{cancels:?}");
    assert_eq!(
        cancels[0]["requestId"], calls[1]["id"],
        "{cancels:?} {calls:?}"
    );
    let outcomes = h.events("outcome");
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes[0]["gen_ai.tool.call.id"], "f-2", "{outcomes:?}");

    let bound = session_end_bound(Client::Typed);
    tokio::time::timeout(bound, &mut c.served)
        .await
        .unwrap_or_else(|_| panic!("the session still served {bound:?} after its input closed"))
        .expect("serve task")
        .expect("the session ends cleanly");
    let cancels = server.settled_cancels(2).await;
    assert_eq!(cancels.len(), 2, "{cancels:?}");
    assert_eq!(
        cancels[1]["requestId"], calls[0]["id"],
        "{cancels:?} {calls:?}"
    );
    let outcomes = until_outcomes(&h, 2).await;
    assert_eq!(outcomes[1]["gen_ai.tool.call.id"], "t-1", "{outcomes:?}");
    for o in &outcomes {
        assert_eq!(
            o["tollgate.outcome"]["message"], "cancelled: the client's session ended",
            "{outcomes:?}"
        );
    }
    h.gateway.shutdown();
}
