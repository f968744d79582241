//! Scoped credentials through the gateway: minted per permitted call under the run's grant,
//! handed to the downstream server in the request (its `_meta`, or for a streamable-HTTP server
//! an HTTP header of that one request), never to the client, and refused for a call no grant
//! covers.
#![cfg(feature = "mcp")]

mod common;

use std::sync::Arc;

use common::node::harness::{self, METADATA, is_error, text};
use parking_lot::Mutex;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use secrecy::SecretString;
use serde_json::json;
use sha2::{Digest, Sha256};
use tollgate::Guard;
use tollgate::audit::MemorySink;
use tollgate::credential::{CredentialProvider, MintRequest, ProviderError};
use tollgate::integrations::mcp::Gateway;
use tollgate::policy::{Bindings, Policy};

/// Mints a fresh random-looking token per call and remembers them.
#[derive(Clone, Default)]
struct Minted(Arc<Mutex<Vec<String>>>);

impl CredentialProvider for Minted {
    fn mint(&self, _req: &MintRequest<'_>) -> Result<SecretString, ProviderError> {
        let mut all = self.0.lock();
        let token = format!("tok-{:016x}", 0x5eed_0000_u64 + all.len() as u64);
        all.push(token.clone());
        Ok(SecretString::from(token))
    }
}

fn policy(grant_tools: &str) -> Option<Policy> {
    let node = common::node::servers()?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/fake_server.mjs");
    Some(document(
        grant_tools,
        &format!(
            r#"[mcp.servers.fake]
command = "{node}"
args = ["{script}"]
credential = {{ provider = "api", resource = "accounts/{{compartment}}/profile" }}"#,
            node = node.node.display(),
            script = script.display(),
        ),
    ))
}

/// The document with `server` as its `[mcp.servers.*]` table.
fn document(grant_tools: &str, server: &str) -> Policy {
    let text = format!(
        r#"{METADATA}
[tools.whoami]
effect = "read"

[tools.echo]
effect = "read"
args.message = {{ type = "string" }}

[roles.agent]
tools = ["whoami", "echo"]

[credentials.providers.api]
description = "Per-call tokens for the fake server."

[[credentials.grants]]
role = "agent"
provider = "api"
tools = {grant_tools}
operations = ["read"]
resource = "accounts/{{compartment}}/*"
ttl = "5m"

[mcp.connection]
agent = "agent-1"
role = "agent"
compartment = "A-1"

{server}
"#
    );
    Policy::from_toml(&text).expect("policy")
}

async fn start(p: &Policy) -> (harness::Harness, Minted) {
    let minted = Minted::default();
    let audit = Arc::new(MemorySink::new());
    let guard = Arc::new(
        Guard::from_policy(
            p,
            Bindings::new()
                .audit(audit.clone())
                .provider("api", minted.clone()),
        )
        .expect("guard"),
    );
    let gateway = Arc::new(Gateway::start(p, guard).await.expect("gateway"));
    let (client, served) = harness::connect(&gateway).await;
    (
        harness::Harness {
            gateway,
            audit,
            client,
            served,
        },
        minted,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_gets_a_fresh_credential_per_call_and_the_client_never_sees_it() {
    let Some(p) = policy(r#"["whoami", "echo"]"#) else {
        return;
    };
    let (h, minted) = start(&p).await;
    let a = h.call("whoami", json!({})).await;
    let b = h.call("whoami", json!({})).await;
    assert!(!is_error(&a) && !is_error(&b), "{a:?} {b:?}");
    let tokens = minted.0.lock().clone();
    assert_eq!(tokens.len(), 2, "one credential per call");
    assert_ne!(tokens[0], tokens[1]);
    for (r, token) in [(&a, &tokens[0]), (&b, &tokens[1])] {
        let t = text(r);
        // The server received exactly the minted token (its hash proves it) ...
        let sha: String = Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(t.contains(&format!("sha256={sha}")), "{t}");
        // ... and its echo of the token was cut out before the client saw it.
        assert!(
            !t.contains(token.as_str()),
            "the client saw the credential: {t}"
        );
    }
    // The audit trail records issue and use, never the value.
    let trail = serde_json::to_string(&h.audit.events()).unwrap();
    assert!(!trail.contains(&tokens[0]) && !trail.contains(&tokens[1]));
    assert!(
        trail.contains("credential"),
        "no credential events recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_no_grant_covers_gets_no_credential_and_does_not_run() {
    // The grant covers `whoami` only: `echo` must not run without its credential.
    let Some(p) = policy(r#"["whoami"]"#) else {
        return;
    };
    let (h, minted) = start(&p).await;
    let r = h.call("echo", json!({"message": "x"})).await;
    assert!(is_error(&r));
    assert!(text(&r).contains("no credential"), "{}", text(&r));
    assert!(minted.0.lock().is_empty());
    let outcomes = h.events("outcome");
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0]["tollgate.outcome"]["status"], "error");
}

/// What the HTTP downstream server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: &'static str,
    authorization: Option<String>,
    api_key: Option<String>,
    meta_has_credential: bool,
}

/// A streamable-HTTP MCP server (rmcp's own, in this process) with the tools `whoami` and
/// `echo`, recording the headers of every `tools/list` and `tools/call` it serves; `whoami`
/// answers with the headers it got (so the test can check they are cut from the result).
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Seen>>>);

impl Recorder {
    fn note(&self, method: &'static str, ctx: &RequestContext<RoleServer>, meta: bool) -> Seen {
        let parts = ctx.extensions.get::<http::request::Parts>();
        let header = |name: &str| {
            parts
                .and_then(|p| p.headers.get(name))
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let seen = Seen {
            method,
            authorization: header("authorization"),
            api_key: header("x-api-key"),
            meta_has_credential: meta,
        };
        self.0.lock().push(seen.clone());
        seen
    }
}

impl ServerHandler for Recorder {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        self.note("tools/list", &ctx, false);
        let schema = |v: serde_json::Value| match v {
            serde_json::Value::Object(o) => Arc::new(o),
            _ => unreachable!(),
        };
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new("whoami", "headers", schema(json!({"type": "object"}))),
            Tool::new("echo", "echo", schema(json!({"type": "object"}))),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let meta = request
            .meta
            .as_ref()
            .is_some_and(|m| m.0.contains_key("tollgate/credential"));
        let seen = self.note("tools/call", &ctx, meta);
        if request.name == "echo" {
            let message = request
                .arguments
                .as_ref()
                .and_then(|a| a.get("message"))
                .and_then(|m| m.as_str())
                .unwrap_or_default();
            return Ok(CallToolResponse::Complete(CallToolResult::success(vec![
                ContentBlock::text(message),
            ])));
        }
        let said = format!(
            "authorization={} x-api-key={}",
            seen.authorization.unwrap_or_default(),
            seen.api_key.unwrap_or_default()
        );
        Ok(CallToolResponse::Complete(CallToolResult::success(vec![
            ContentBlock::text(said),
        ])))
    }
}

/// Serves a [`Recorder`] over streamable HTTP on a free loopback port; returns its port.
async fn recording_server(recorder: Recorder) -> u16 {
    let service = StreamableHttpService::new(
        move || Ok(recorder.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = service.clone();
            tokio::spawn(async move {
                let handler = hyper::service::service_fn(move |req| {
                    let service = service.clone();
                    async move { Ok::<_, std::convert::Infallible>(service.handle(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), handler)
                    .await;
            });
        }
    });
    port
}

fn http_policy(port: u16, header: &str) -> Policy {
    http_policy_with(port, header, "")
}

fn http_policy_with(port: u16, header: &str, mcp: &str) -> Policy {
    document(
        r#"["whoami", "echo"]"#,
        &format!(
            r#"[mcp]
{mcp}

[mcp.servers.remote]
url = "http://127.0.0.1:{port}/mcp"
credential = {{ provider = "api", resource = "accounts/{{compartment}}/profile", header = "{header}" }}"#
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_server_gets_the_per_call_credential_as_a_header_of_that_call_only() {
    for header in ["Authorization", "X-Api-Key"] {
        let recorder = Recorder::default();
        let port = recording_server(recorder.clone()).await;
        let (h, minted) = start(&http_policy(port, header)).await;
        let a = h.call("whoami", json!({})).await;
        let b = h.call("whoami", json!({})).await;
        assert!(!is_error(&a) && !is_error(&b), "{header}: {a:?} {b:?}");
        let tokens = minted.0.lock().clone();
        assert_eq!(tokens.len(), 2, "{header}: one credential per call");
        let seen = recorder.0.lock().clone();
        let calls: Vec<&Seen> = seen.iter().filter(|s| s.method == "tools/call").collect();
        assert_eq!(calls.len(), 2, "{header}: {seen:?}");
        for (call, token) in calls.iter().zip(&tokens) {
            let got = if header == "Authorization" {
                call.authorization.clone()
            } else {
                call.api_key.clone()
            };
            let want = if header == "Authorization" {
                format!("Bearer {token}")
            } else {
                token.clone()
            };
            assert_eq!(got, Some(want), "{header}: {call:?}");
            // In the header instead of the body, not in both.
            assert!(!call.meta_has_credential, "{header}: {call:?}");
        }
        // Requests other than the calls carry no credential.
        for s in seen.iter().filter(|s| s.method != "tools/call") {
            assert_eq!(
                (&s.authorization, &s.api_key),
                (&None, &None),
                "{header}: {s:?}"
            );
        }
        // The server's echo of the header was cut out before the client saw it.
        for (r, token) in [(&a, &tokens[0]), (&b, &tokens[1])] {
            assert!(!text(r).contains(token.as_str()), "{header}: {}", text(r));
        }
        h.gateway.shutdown();
    }
}

#[test]
fn a_credential_header_is_refused_for_stdio_servers_and_transport_headers() {
    let err = |server: &str| {
        let text = format!(
            "{METADATA}\n[tools.whoami]\neffect = \"read\"\n[roles.agent]\ntools = [\"whoami\"]\n\
             [credentials.providers.api]\ndescription = \"x\"\n[mcp.connection]\nagent = \"a\"\n\
             role = \"agent\"\n{server}\n"
        );
        Policy::from_toml(&text).expect_err("refused")
    };
    let e = err(
        "[mcp.servers.s]\ncommand = \"x\"\ncredential = { provider = \"api\", resource = \"r\", \
         header = \"Authorization\" }",
    );
    assert_eq!(e.path(), Some("mcp.servers.s.credential.header"), "{e}");
    assert!(e.to_string().contains("streamable-HTTP"), "{e}");
    for bad in [
        "Mcp-Session-Id",
        "content-type",
        "Mcp-Param-x",
        "X Api Key",
        "",
    ] {
        let e = err(&format!(
            "[mcp.servers.s]\nurl = \"http://127.0.0.1:9/mcp\"\ncredential = {{ provider = \
             \"api\", resource = \"r\", header = \"{bad}\" }}"
        ));
        assert_eq!(
            e.path(),
            Some("mcp.servers.s.credential.header"),
            "{bad}: {e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_servers_answer_over_max_server_message_bytes_fails_its_call() {
    let recorder = Recorder::default();
    let port = recording_server(recorder.clone()).await;
    let (h, _) = start(&http_policy_with(
        port,
        "Authorization",
        "max_server_message_bytes = 8192",
    ))
    .await;
    let small = "s".repeat(4000);
    assert_eq!(h.text_of("echo", json!({ "message": small })).await, small);
    let big = h
        .call("echo", json!({ "message": "b".repeat(20_000) }))
        .await;
    assert!(is_error(&big), "{big:?}");
    assert!(!text(&big).contains("bbbb"), "{}", text(&big));
    eprintln!("over the limit: {}", text(&big));
    // rmcp's HTTP client ends its connection on an oversized body; the gateway reconnects
    // (with backoff) and serves the server's calls again.
    let start = std::time::Instant::now();
    loop {
        let r = h.call("echo", json!({ "message": "after" })).await;
        if !is_error(&r) {
            assert_eq!(text(&r), "after");
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "not served again: {}",
            text(&r)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    h.gateway.shutdown();
}

/// Mints tokens with the characters URL encoders rewrite (`+`, `/`, `=`), so a percent-encoded
/// echo differs from the token as given.
#[derive(Clone, Default)]
struct Encodable(Arc<Mutex<Vec<String>>>);

impl CredentialProvider for Encodable {
    fn mint(&self, _req: &MintRequest<'_>) -> Result<SecretString, ProviderError> {
        let mut all = self.0.lock();
        let token = format!("sk+Ab/Cd={:08}", all.len());
        all.push(token.clone());
        Ok(SecretString::from(token))
    }
}

/// Every form of the token a server may echo: as given and percent-encoded (upper and lower
/// case hex).
fn forms(token: &str) -> Vec<String> {
    let upper = token
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    vec![token.to_owned(), upper.clone(), upper.to_lowercase()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_echoed_in_an_error_or_percent_encoded_never_reaches_the_client() {
    let Some(node) = common::node::servers() else {
        return;
    };
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/echoing_server.mjs");
    let text_doc = format!(
        r#"{METADATA}
[tools.leak_err]
effect = "read"
[tools.leak_pct]
effect = "read"
[tools.leak_structured]
effect = "read"
[roles.agent]
tools = ["leak_err", "leak_pct", "leak_structured"]
[credentials.providers.api]
description = "Per-call tokens for the echoing server."
[[credentials.grants]]
role = "agent"
provider = "api"
tools = ["leak_err", "leak_pct", "leak_structured"]
operations = ["read"]
resource = "accounts/{{compartment}}/*"
ttl = "5m"
[mcp.connection]
agent = "agent-1"
role = "agent"
compartment = "A-1"
[mcp.servers.echoing]
command = "{node}"
args = ["{script}"]
credential = {{ provider = "api", resource = "accounts/{{compartment}}/profile" }}
"#,
        node = node.node.display(),
        script = script.display(),
    );
    let p = Policy::from_toml(&text_doc).expect("policy");
    let minted = Encodable::default();
    let audit = Arc::new(MemorySink::new());
    let guard = Arc::new(
        Guard::from_policy(
            &p,
            Bindings::new()
                .audit(audit.clone())
                .provider("api", minted.clone()),
        )
        .expect("guard"),
    );
    let gateway = Arc::new(Gateway::start(&p, guard).await.expect("gateway"));
    let (client, served) = harness::connect(&gateway).await;
    let h = harness::Harness {
        gateway,
        audit,
        client,
        served,
    };
    let err = h.call("leak_err", json!({})).await;
    let pct = h.call("leak_pct", json!({})).await;
    let structured = h.call("leak_structured", json!({})).await;
    let tokens = minted.0.lock().clone();
    assert_eq!(tokens.len(), 3, "one credential per call");
    assert!(is_error(&err), "{err:?}");
    assert!(
        !is_error(&pct) && !is_error(&structured),
        "{pct:?} {structured:?}"
    );
    for (r, token) in [
        (&err, &tokens[0]),
        (&pct, &tokens[1]),
        (&structured, &tokens[2]),
    ] {
        let all = serde_json::to_string(r).unwrap();
        for form in forms(token) {
            assert!(
                !all.contains(&form),
                "the client saw the credential ({form}): {all}"
            );
        }
        assert!(all.contains("[REDACTED:credential]"), "{all}");
    }
    // Still what the server said, less the credential.
    assert!(text(&err).contains("invalid api key"), "{}", text(&err));
    assert!(
        text(&pct).contains("GET https://api.example/v1?key="),
        "{}",
        text(&pct)
    );
    let trail = serde_json::to_string(&h.audit.events()).unwrap();
    for token in &tokens {
        for form in forms(token) {
            assert!(
                !trail.contains(&form),
                "the trail holds the credential ({form})"
            );
        }
    }
    h.gateway.shutdown();
}

/// The names of the variables a spawned server sees, with `inherit_env` set as given.
async fn server_env(node: &common::node::NodeServers, inherit: &str) -> Vec<String> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/env_server.mjs");
    let text_doc = format!(
        r#"{METADATA}
[tools.env]
effect = "read"
[roles.agent]
tools = ["env"]
[mcp.connection]
agent = "agent-1"
role = "agent"
[mcp.servers.env]
command = "{node}"
args = ["{script}"]
env = {{ SERVER_SETTING = "from-the-policy" }}
{inherit}
"#,
        node = node.node.display(),
        script = script.display(),
    );
    let h = harness::start(&Policy::from_toml(&text_doc).expect("policy")).await;
    let r = h.call("env", json!({})).await;
    assert!(!is_error(&r), "{r:?}");
    let s = r.structured_content.expect("structured content");
    assert_eq!(
        s["path"].as_str(),
        std::env::var("PATH").ok().as_deref(),
        "PATH is passed on"
    );
    h.gateway.shutdown();
    s["names"]
        .as_array()
        .expect("names")
        .iter()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect()
}

/// A spawned server gets `PATH`, `HOME` and the like and its configured `env`, not the gateway's
/// whole environment (which may hold the gateway's own secrets); `inherit_env = true` restores
/// the whole environment for a server that needs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawned_server_gets_an_explicit_environment_not_the_gateways() {
    let Some(node) = common::node::servers() else {
        return;
    };
    let allowed = tollgate::integrations::mcp::config::INHERITED_ENV;
    // Variables of this process a server must not see (cargo sets several for a test run).
    let ours: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| !allowed.contains(&k.as_str()))
        .collect();
    assert!(
        !ours.is_empty(),
        "no variable outside the allowlist to test with"
    );
    let names = server_env(&node, "").await;
    assert!(names.contains(&"SERVER_SETTING".to_owned()), "{names:?}");
    assert!(names.contains(&"PATH".to_owned()), "{names:?}");
    for k in &ours {
        assert!(!names.contains(k), "the server inherited `{k}`: {names:?}");
    }
    let inherited = server_env(&node, "inherit_env = true").await;
    assert!(inherited.contains(&"SERVER_SETTING".to_owned()));
    for k in &ours {
        assert!(inherited.contains(k), "inherit_env = true lost `{k}`");
    }
}
