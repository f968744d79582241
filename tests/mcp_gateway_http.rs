//! The gateway as a streamable-HTTP MCP server in front of the real
//! `@modelcontextprotocol/server-filesystem` (from npm), driven by rmcp's streamable-HTTP client:
//! each bearer token is an identity of the policy, a request without a known token gets 401, a
//! session cannot be used with another token, and every refusal is in the audit trail.
#![cfg(feature = "mcp")]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::node::harness::{self, METADATA, is_error, text};
use rmcp::ServiceExt;
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate::audit::MemorySink;
use tollgate::integrations::mcp::{Gateway, GatewayError};
use tollgate::policy::Policy;

const READER_TOKEN: &str = "reader-token-5f1c9a7e0b2d4c6f";
const EDITOR_TOKEN: &str = "editor-token-8e3b1d2a9c7f6e50";

fn sha(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The filesystem server behind the gateway; `with_tokens`: the two token identities, else only
/// `[mcp.connection]` (a reader). `extra` goes into `[mcp]`.
fn policy(bin: &Path, root: &Path, with_tokens: bool, extra: &str) -> Policy {
    Policy::from_toml(&policy_text(bin, root, with_tokens, extra)).expect("policy")
}

fn policy_text(bin: &Path, root: &Path, with_tokens: bool, extra: &str) -> String {
    let root = root.display();
    let tokens = if with_tokens {
        format!(
            r#"
[[mcp.tokens]]
sha256 = "{reader}"
agent = "reader-bot"
role = "reader"

[[mcp.tokens]]
sha256 = "{editor}"
agent = "editor-bot"
role = "editor"
"#,
            reader = sha(READER_TOKEN),
            editor = sha(EDITOR_TOKEN)
        )
    } else {
        String::new()
    };
    format!(
        r#"{METADATA}
[tools.read_text_file]
effect = "read"
args.path = {{ type = "string", required = true, path_under = "{root}" }}

[tools.list_directory]
effect = "read"
args.path = {{ type = "string", required = true, path_under = "{root}" }}

[tools.write_file]
effect = "write"
args.path = {{ type = "string", required = true, path_under = "{root}" }}
args.content = {{ type = "string", required = true }}

[roles.reader]
tools = ["read_text_file", "list_directory"]

[roles.editor]
tools = ["read_text_file", "list_directory", "write_file"]

[mcp]
{extra}

[mcp.connection]
agent = "local"
role = "reader"

[mcp.servers.fs]
command = "{bin}"
args = ["{root}"]
{tokens}"#,
        bin = bin.display()
    )
}

/// A scratch root (`<temp dir>/root`, canonical) and its temp dir, removed on drop.
struct Root(
    PathBuf,
    #[expect(
        dead_code,
        reason = "held only so the directory lives as long as the root"
    )]
    tempfile::TempDir,
);

fn root(name: &str) -> Root {
    let base = common::tempdir::temp_dir("mcp-http", name);
    let root = base.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("notes.txt"), "hello over http").unwrap();
    Root(root.canonicalize().unwrap(), base)
}

/// A gateway serving HTTP on a free loopback port until dropped.
struct Served {
    gateway: Arc<Gateway>,
    audit: Arc<MemorySink>,
    addr: SocketAddr,
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), GatewayError>>>,
}

impl Served {
    async fn start(policy: &Policy) -> Self {
        let (guard, audit) = harness::guard(policy);
        let gateway = Arc::new(Gateway::start(policy, guard).await.expect("gateway starts"));
        let listener = gateway
            .bind_http("127.0.0.1:0".parse().unwrap())
            .await
            .expect("binds");
        let addr = listener.local_addr();
        let url = listener.url();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(listener.serve_until(async move {
            let _ = stopped.await;
        }));
        Self {
            gateway,
            audit,
            addr,
            url,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn client(&self, token: &str) -> RunningService<rmcp::RoleClient, ()> {
        self.client_with(token, ()).await
    }

    async fn client_with<H: rmcp::ClientHandler>(
        &self,
        token: &str,
        handler: H,
    ) -> RunningService<rmcp::RoleClient, H> {
        let transport = StreamableHttpClientTransport::with_client(
            common::tls::http_client(),
            StreamableHttpClientTransportConfig::with_uri(self.url.as_str()).auth_header(token),
        );
        handler.serve(transport).await.expect("client initialises")
    }

    fn faults(&self, fault: &str) -> Vec<Value> {
        self.audit
            .events()
            .into_iter()
            .filter(|e| e["event"] == "protocol_fault" && e["tollgate.protocol.fault"] == fault)
            .collect()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("listener task")
                .expect("listener stops cleanly");
        }
        self.gateway.shutdown();
    }
}

/// The gateway with both tokens in front of the filesystem server over a fresh root (`None`
/// when Node.js is missing and not required).
async fn filesystem_gateway(label: &str) -> Option<(Served, Root)> {
    let node = common::node::servers()?;
    let root = root(label);
    let served = Served::start(&policy(
        &node.bin("mcp-server-filesystem"),
        &root.0,
        true,
        "",
    ))
    .await;
    Some((served, root))
}

async fn names(client: &rmcp::service::Peer<rmcp::RoleClient>) -> Vec<String> {
    let mut n: Vec<String> = client
        .list_all_tools()
        .await
        .expect("tools/list")
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    n.sort();
    n
}

/// One raw HTTP/1.1 request; returns the status and the response headers (lower-case names).
async fn raw(
    addr: SocketAddr,
    method: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "{method} /mcp HTTP/1.1\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: 127.0.0.1:{}\r\n", addr.port()));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.expect("send");
    stream.write_all(body.as_bytes()).await.expect("send");
    // Read the head only: a session's SSE stream may stay open.
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "connection closed before the response head");
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers)
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#;
const LIST: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{}}"#;

/// Initialises a session with the `Authorization` value `auth`; returns its session id.
async fn open_session(addr: SocketAddr, auth: &str) -> String {
    let (status, headers) = raw(addr, "POST", &[("Authorization", auth)], INITIALIZE).await;
    assert_eq!(status, 200);
    headers
        .iter()
        .find(|(k, _)| k == "mcp-session-id")
        .map(|(_, v)| v.clone())
        .expect("a session id")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tokens_with_two_roles_see_different_tools() {
    let Some((served, root)) = filesystem_gateway("list").await else {
        return;
    };
    let reader = served.client(READER_TOKEN).await;
    let editor = served.client(EDITOR_TOKEN).await;
    assert_eq!(names(&reader).await, ["list_directory", "read_text_file"]);
    assert_eq!(
        names(&editor).await,
        ["list_directory", "read_text_file", "write_file"]
    );
    // Each session is a run of its token's agent.
    let path = root.0.join("notes.txt");
    let r = harness::call(
        &reader,
        "read_text_file",
        json!({"path": path.to_str().unwrap()}),
    )
    .await;
    assert_eq!(text(&r), "hello over http");
    let starts: Vec<String> = served
        .audit
        .events()
        .into_iter()
        .filter(|e| e["event"] == "run_started")
        .map(|e| e["gen_ai.agent.id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(starts.contains(&"reader-bot".to_owned()), "{starts:?}");
    assert!(starts.contains(&"editor-bot".to_owned()), "{starts:?}");
    assert!(
        !starts.contains(&"local".to_owned()),
        "no session fell back to [mcp.connection]"
    );
    reader.cancel().await.ok();
    editor.cancel().await.ok();
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_roles_write_is_denied_and_the_editors_goes_through() {
    let Some((served, root)) = filesystem_gateway("write").await else {
        return;
    };
    let reader = served.client(READER_TOKEN).await;
    let editor = served.client(EDITOR_TOKEN).await;
    let target = root.0.join("new.txt");
    let args = json!({"path": target.to_str().unwrap(), "content": "written"});
    let denied = harness::call(&reader, "write_file", args.clone()).await;
    assert!(is_error(&denied), "{denied:?}");
    assert!(!target.exists(), "the reader's write reached the server");
    let written = harness::call(&editor, "write_file", args).await;
    assert!(!is_error(&written), "{written:?}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "written");
    reader.cancel().await.ok();
    editor.cancel().await.ok();
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_known_token_get_401_and_an_audit_record() {
    let Some((served, _root)) = filesystem_gateway("401").await else {
        return;
    };
    let (none, headers) = raw(served.addr, "POST", &[], INITIALIZE).await;
    assert_eq!(none, 401);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "www-authenticate" && v == "Bearer"),
        "{headers:?}"
    );
    let wrong = bearer("not-a-token");
    let (unknown, _) = raw(
        served.addr,
        "POST",
        &[("Authorization", &wrong)],
        INITIALIZE,
    )
    .await;
    assert_eq!(unknown, 401);
    // The token's digest as the token, another scheme, a token prefixed to a valid one.
    let digest_as_token = bearer(&sha(READER_TOKEN));
    let basic = format!("Basic {READER_TOKEN}");
    let longer = bearer(&format!("{READER_TOKEN}x"));
    for auth in [&digest_as_token, &basic, &longer] {
        let (status, _) = raw(served.addr, "POST", &[("Authorization", auth)], INITIALIZE).await;
        assert_eq!(status, 401, "{auth}");
    }
    // rmcp's own client with a wrong token cannot initialise.
    let transport = StreamableHttpClientTransport::with_client(
        common::tls::http_client(),
        StreamableHttpClientTransportConfig::with_uri(served.url.as_str()).auth_header("nope"),
    );
    assert!(().serve(transport).await.is_err());
    // Without a token: `unauthenticated` (also the Basic one); with an unknown one: `unknown_token`.
    assert_eq!(served.faults("unauthenticated").len(), 2);
    assert!(served.faults("unknown_token").len() >= 4);
    let recorded = served.audit.events();
    let trail = serde_json::to_string(&recorded).unwrap();
    assert!(
        !trail.contains(READER_TOKEN),
        "a token reached the audit trail"
    );
    assert!(
        recorded.iter().all(|e| e["event"] != "run_started"),
        "a refused request started a run"
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_opened_with_one_token_refuses_another() {
    let Some((served, _root)) = filesystem_gateway("hijack").await else {
        return;
    };
    let reader = bearer(READER_TOKEN);
    let editor = bearer(EDITOR_TOKEN);
    let session = open_session(served.addr, &reader).await;
    // The editor's token on the reader's session: refused, and recorded in that session's run.
    let (hijack, _) = raw(
        served.addr,
        "POST",
        &[
            ("Authorization", &editor),
            ("Mcp-Session-Id", &session),
            ("MCP-Protocol-Version", "2025-06-18"),
        ],
        LIST,
    )
    .await;
    assert_eq!(hijack, 403);
    let (anonymous, _) = raw(served.addr, "POST", &[("Mcp-Session-Id", &session)], LIST).await;
    assert_eq!(anonymous, 401);
    let (deleted, _) = raw(
        served.addr,
        "DELETE",
        &[("Authorization", &editor), ("Mcp-Session-Id", &session)],
        "",
    )
    .await;
    assert_eq!(
        deleted, 403,
        "another token cannot close the session either"
    );
    let mismatches = served.faults("session_token_mismatch");
    assert_eq!(mismatches.len(), 2, "{mismatches:?}");
    assert_eq!(mismatches[0]["gen_ai.agent.id"], "reader-bot");
    // The session's own token still reaches it (the stream opens).
    let (own, _) = raw(
        served.addr,
        "POST",
        &[
            ("Authorization", &reader),
            ("Mcp-Session-Id", &session),
            ("MCP-Protocol-Version", "2025-06-18"),
        ],
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    )
    .await;
    assert_eq!(own, 202);
    // A session id this listener never issued.
    let (unknown, _) = raw(
        served.addr,
        "POST",
        &[("Authorization", &reader), ("Mcp-Session-Id", "made-up")],
        LIST,
    )
    .await;
    assert_eq!(unknown, 404);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_gets_413_and_an_audit_record() {
    let Some(node) = common::node::servers() else {
        return;
    };
    let root = root("413");
    let served = Served::start(&policy(
        &node.bin("mcp-server-filesystem"),
        &root.0,
        true,
        "max_message_bytes = 2048",
    ))
    .await;
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{{}},"clientInfo":{{"name":"{}","version":"0"}}}}}}"#,
        "x".repeat(4096)
    );
    let reader = bearer(READER_TOKEN);
    let (status, _) = raw(served.addr, "POST", &[("Authorization", &reader)], &big).await;
    assert_eq!(status, 413);
    assert_eq!(served.faults("oversized").len(), 1);
    // A small one still goes through.
    let (ok, _) = raw(
        served.addr,
        "POST",
        &[("Authorization", &reader)],
        INITIALIZE,
    )
    .await;
    assert_eq!(ok, 200);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_only_loopback_is_served_as_the_fixed_connection() {
    let Some(node) = common::node::servers() else {
        return;
    };
    let root = root("open");
    let policy = policy(&node.bin("mcp-server-filesystem"), &root.0, false, "");
    let (guard, _audit) = harness::guard(&policy);
    let gateway = Gateway::start(&policy, guard)
        .await
        .expect("gateway starts");
    for open in ["0.0.0.0:0", "[::]:0"] {
        let refused = gateway.bind_http(open.parse().unwrap()).await;
        assert!(
            matches!(refused, Err(GatewayError::Bind { .. })),
            "{open}: {refused:?}"
        );
    }
    gateway.shutdown();
    let served = Served::start(&policy).await;
    // Any (or no) token: the fixed reader.
    let client = served.client("anything").await;
    assert_eq!(names(&client).await, ["list_directory", "read_text_file"]);
    // But not a page in a browser on this host: with no `allowed_origins`, any `Origin` is
    // refused (a loopback gateway without tokens is exactly what a web page would try).
    let (page, _) = raw(
        served.addr,
        "POST",
        &[("Origin", "http://localhost:3000")],
        INITIALIZE,
    )
    .await;
    assert_eq!(page, 403);
    assert_eq!(served.faults("forbidden_host_or_origin").len(), 1);
    client.cancel().await.ok();
    served.stop().await;
}

/// `@modelcontextprotocol/server-everything` in its streamable-HTTP mode on a free loopback
/// port; killed on drop.
struct EverythingHttp {
    child: std::process::Child,
    port: u16,
}

impl Drop for EverythingHttp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn everything_http(node: &common::node::NodeServers) -> EverythingHttp {
    use std::io::BufRead;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut child = std::process::Command::new(node.bin("mcp-server-everything"))
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("server-everything starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let server = EverythingHttp { child, port };
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("listening on port") => break,
            Some(Ok(_)) => {}
            other => panic!("server-everything did not start: {other:?}"),
        }
    }
    // Keep draining its stderr so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_streamable_http_server_is_called_through_the_gateway() {
    let Some(node) = common::node::servers() else {
        return;
    };
    let everything = everything_http(&node);
    let text_policy = format!(
        r#"{METADATA}
[tools.echo]
effect = "read"
args.message = {{ type = "string", required = true, max_length = 64 }}

[roles.reader]
tools = ["echo"]

[mcp.connection]
agent = "desktop"
role = "reader"

[mcp.servers.everything]
url = "http://127.0.0.1:{port}/mcp"
"#,
        port = everything.port
    );
    let policy = Policy::from_toml(&text_policy).expect("policy");
    let h = harness::start(&policy).await;
    // Only the tool the policy names is listed, out of the dozen the server has; the argument
    // rule applies before the remote server is asked.
    h.assert_only_echo_is_forwarded("over http").await;
    h.gateway.shutdown();
}

/// A client that counts `notifications/tools/list_changed`.
#[derive(Clone, Default)]
struct ListChanged(Arc<tokio::sync::Notify>);

impl rmcp::ClientHandler for ListChanged {
    async fn on_tool_list_changed(
        &self,
        _context: rmcp::service::NotificationContext<rmcp::RoleClient>,
    ) {
        self.0.notify_one();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downstream_tool_list_change_reaches_only_the_clients_whose_own_listing_changed() {
    let Some(node) = common::node::servers() else {
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/fake_server.mjs");
    let text_policy = format!(
        r#"{METADATA}
[tools.echo]
effect = "read"

[tools.grow]
effect = "read"

[tools.extra]
effect = "read"

[roles.full]
tools = ["echo", "grow", "extra"]

[roles.narrow]
tools = ["echo", "grow"]

[mcp.servers.fake]
command = "{node}"
args = ["{script}"]

[[mcp.tokens]]
sha256 = "{reader}"
agent = "full-bot"
role = "full"

[[mcp.tokens]]
sha256 = "{editor}"
agent = "narrow-bot"
role = "narrow"
"#,
        node = node.node.display(),
        script = script.display(),
        reader = sha(READER_TOKEN),
        editor = sha(EDITOR_TOKEN)
    );
    let policy = Policy::from_toml(&text_policy).expect("policy");
    let served = Served::start(&policy).await;
    let (full_seen, narrow_seen) = (ListChanged::default(), ListChanged::default());
    let full = served.client_with(READER_TOKEN, full_seen.clone()).await;
    let narrow = served.client_with(EDITOR_TOKEN, narrow_seen.clone()).await;
    assert_eq!(names(&full).await, ["echo", "grow"]);
    assert_eq!(names(&narrow).await, ["echo", "grow"]);
    let before = harness::call_peer(full.peer(), "extra", json!({})).await;
    assert!(
        is_error(&before),
        "not routed before the server lists it: {before:?}"
    );

    let grown = harness::call_peer(full.peer(), "grow", json!({})).await;
    assert_eq!(text(&grown), "grown");
    let wait = std::time::Duration::from_secs(20);
    tokio::time::timeout(wait, full_seen.0.notified())
        .await
        .expect("the full client is told");
    assert_eq!(names(&full).await, ["echo", "extra", "grow"]);
    // The narrow role's listing did not change: it is not told (that would say a tool it may
    // not see appeared), and it still sees only what it may call.
    assert!(
        tokio::time::timeout(std::time::Duration::from_secs(2), narrow_seen.0.notified())
            .await
            .is_err(),
        "the narrow client was told about a change it cannot see"
    );
    assert_eq!(names(&narrow).await, ["echo", "grow"]);
    let ran = harness::call_peer(full.peer(), "extra", json!({})).await;
    assert_eq!(text(&ran), "extra ran", "{ran:?}");
    let refused = harness::call_peer(narrow.peer(), "extra", json!({})).await;
    assert!(is_error(&refused), "{refused:?}");
    full.cancel().await.ok();
    narrow.cancel().await.ok();
    served.stop().await;
}

#[cfg(feature = "cli")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tollgate_mcp_binary_serves_http_with_tokens_and_stops_on_sigterm() {
    use tokio::io::AsyncBufReadExt;

    let Some(node) = common::node::servers() else {
        return;
    };
    let root = root("cli");
    let bin = node.bin("mcp-server-filesystem");
    let file = root.0.parent().unwrap().join("gateway.toml");
    std::fs::write(&file, policy_text(&bin, &root.0, true, "")).unwrap();
    let audit = root.0.parent().unwrap().join("audit");

    // An open address without tokens is refused before anything starts.
    let open = root.0.parent().unwrap().join("open.toml");
    std::fs::write(&open, policy_text(&bin, &root.0, false, "")).unwrap();
    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["mcp", "--no-audit", "--http", "0.0.0.0:0", "--policy"])
        .arg(&open)
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("loopback"),
        "{refused:?}"
    );
    // Neither `--audit` nor a `[backend]` trail, and no `--no-audit`: refused before anything
    // starts, rather than serving with no record of any decision.
    let unaudited = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["mcp", "--http", "127.0.0.1:0", "--policy"])
        .arg(&file)
        .output()
        .await
        .unwrap();
    assert!(!unaudited.status.success());
    let said = String::from_utf8_lossy(&unaudited.stderr);
    assert!(
        said.contains("no audit trail") && said.contains("--no-audit"),
        "{unaudited:?}"
    );

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["mcp", "--http", "127.0.0.1:0", "--policy"])
        .arg(&file)
        .arg("--audit")
        .arg(&audit)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = stderr
            .next_line()
            .await
            .unwrap()
            .expect("the gateway says where it listens");
        if let Some(url) = line.strip_prefix("tollgate mcp: listening on ") {
            break url.to_owned();
        }
    };
    let transport = StreamableHttpClientTransport::with_client(
        common::tls::http_client(),
        StreamableHttpClientTransportConfig::with_uri(url.as_str()).auth_header(EDITOR_TOKEN),
    );
    let client = ().serve(transport).await.expect("client initialises");
    assert_eq!(
        names(&client).await,
        ["list_directory", "read_text_file", "write_file"]
    );
    client.cancel().await.ok();
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .parse()
        .unwrap();
    let (unknown, _) = raw(addr, "POST", &[("Authorization", "Bearer x")], INITIALIZE).await;
    assert_eq!(unknown, 401);

    let pid = child.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait())
        .await
        .expect("stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    // The trail was flushed on the way out: the editor's run and the refused request are in it.
    let mut trail = String::new();
    for entry in std::fs::read_dir(&audit).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            trail.push_str(&std::fs::read_to_string(path).unwrap());
        }
    }
    assert!(trail.contains("editor-bot"), "{trail}");
    assert!(trail.contains("unknown_token"), "{trail}");
    assert!(!trail.contains(EDITOR_TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_origins_and_rebound_host_names_are_refused_and_recorded() {
    let Some(node) = common::node::servers() else {
        return;
    };
    let root = root("origin");
    let served = Served::start(&policy(
        &node.bin("mcp-server-filesystem"),
        &root.0,
        true,
        r#"allowed_origins = ["http://localhost:*"]"#,
    ))
    .await;
    let reader = bearer(READER_TOKEN);
    // A page elsewhere, with a valid token (e.g. one the page stole): refused.
    let (evil, _) = raw(
        served.addr,
        "POST",
        &[
            ("Authorization", &reader),
            ("Origin", "http://evil.example"),
        ],
        INITIALIZE,
    )
    .await;
    assert_eq!(evil, 403);
    // DNS rebinding: the attacker's name resolving to 127.0.0.1.
    let (rebound, _) = raw(
        served.addr,
        "POST",
        &[("Authorization", &reader), ("Host", "evil.example")],
        INITIALIZE,
    )
    .await;
    assert_eq!(rebound, 403);
    let records = served.faults("forbidden_host_or_origin");
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(records[0].to_string().contains("evil.example"));
    // The listed origin, and no origin at all (a non-browser client), go through.
    let (listed, _) = raw(
        served.addr,
        "POST",
        &[
            ("Authorization", &reader),
            ("Origin", "http://localhost:6274"),
        ],
        INITIALIZE,
    )
    .await;
    assert_eq!(listed, 200);
    let (plain, _) = raw(
        served.addr,
        "POST",
        &[("Authorization", &reader)],
        INITIALIZE,
    )
    .await;
    assert_eq!(plain, 200);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_is_closed_after_the_documents_idle_timeout_and_its_run_ends() {
    let Some(node) = common::node::servers() else {
        return;
    };
    let root = root("idle");
    let served = Served::start(&policy(
        &node.bin("mcp-server-filesystem"),
        &root.0,
        true,
        "session_idle_timeout = \"1s\"",
    ))
    .await;
    let reader = bearer(READER_TOKEN);
    let session = open_session(served.addr, &reader).await;
    let finished = || {
        served
            .audit
            .events()
            .iter()
            .filter(|e| e["event"] == "run_finished" && e["gen_ai.agent.id"] == "reader-bot")
            .count()
    };
    assert_eq!(finished(), 0, "the session's run is open while it lives");
    // rmcp's fixed default was 5 minutes; the document says 1 s.
    let t = std::time::Instant::now();
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let (status, _) = raw(
            served.addr,
            "POST",
            &[
                ("Authorization", &reader),
                ("Mcp-Session-Id", &session),
                ("MCP-Protocol-Version", "2025-06-18"),
            ],
            LIST,
        )
        .await;
        if status == 404 {
            break;
        }
        // Each request above resets the idle clock: back off so the session can expire.
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        assert!(
            t.elapsed() < std::time::Duration::from_secs(60),
            "the session never expired (last status {status})"
        );
    }
    let t = std::time::Instant::now();
    while finished() == 0 {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(30),
            "its run never ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    served.stop().await;
}

/// One raw HTTP/1.1 request read to its end (`Connection: close`); returns the status and the
/// body.
async fn raw_whole(addr: SocketAddr, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n",
        addr.port(),
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.expect("send");
    stream.write_all(body.as_bytes()).await.expect("send");
    let mut out = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        stream.read_to_end(&mut out),
    )
    .await
    .expect("the answer within 20 s")
    .expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A request of the session-less protocol revision (2026-07-28) would be served by rmcp with a
/// handler, and so a run, of its own: flow labels, budgets, breakers and pending approvals would
/// start afresh on every request. The gateway refuses every session-less request that is not an
/// `initialize` (400, a JSON-RPC error, an audit record), and the call never reaches the guard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_less_requests_are_refused_so_a_run_spans_its_session() {
    let Some((served, root)) = filesystem_gateway("sessionless").await else {
        return;
    };
    let reader = bearer(READER_TOKEN);
    let path = root.0.join("notes.txt");
    let call = json!({
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {
            "name": "read_text_file",
            "arguments": { "path": path.display().to_string() },
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": { "name": "raw", "version": "0" }
            }
        }
    })
    .to_string();
    let headers = [
        ("Authorization", reader.as_str()),
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", "tools/call"),
        ("Mcp-Name", "read_text_file"),
    ];
    let (status, body) = raw_whole(served.addr, &headers, &call).await;
    assert_eq!(status, 400, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("a JSON-RPC error");
    assert_eq!(answer["id"], 7, "{answer}");
    assert_eq!(answer["error"]["code"], -32600, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("requires a session")),
        "{answer}"
    );
    assert!(!body.contains("hello over http"), "the tool ran: {body}");
    // Without the version header, and a bare `tools/list`: refused the same way.
    let (status, _) = raw_whole(served.addr, &[("Authorization", &reader)], LIST).await;
    assert_eq!(status, 400);
    let (status, _) = raw_whole(served.addr, &[("Authorization", &reader)], "[1,2]").await;
    assert_eq!(status, 400);
    assert_eq!(served.faults("sessionless").len(), 3);
    let decisions = served
        .audit
        .events()
        .into_iter()
        .filter(|e| e["event"] == "decision")
        .count();
    assert_eq!(decisions, 0, "a session-less call reached the guard");
    // A session opens as before, and its calls are served.
    let session = open_session(served.addr, &reader).await;
    assert!(!session.is_empty());
    // A call naming the session-less revision is routed by it (rmcp reads the version, not the
    // session id): refused and recorded too, even with a session id.
    let with_session = [
        ("Authorization", reader.as_str()),
        ("Mcp-Session-Id", session.as_str()),
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", "tools/call"),
        ("Mcp-Name", "read_text_file"),
    ];
    let (status, body) = raw_whole(served.addr, &with_session, &call).await;
    assert_eq!(status, 400, "{body}");
    assert!(!body.contains("hello over http"), "the tool ran: {body}");
    assert_eq!(served.faults("sessionless").len(), 4);
    let decisions = served
        .audit
        .events()
        .into_iter()
        .filter(|e| e["event"] == "decision")
        .count();
    assert_eq!(decisions, 0, "a session-less call reached the guard");
    let client = served.client(READER_TOKEN).await;
    let r = harness::call_peer(
        client.peer(),
        "read_text_file",
        json!({ "path": path.display().to_string() }),
    )
    .await;
    assert!(
        !is_error(&r) && text(&r).contains("hello over http"),
        "{r:?}"
    );
    drop(client);
    served.stop().await;
}

/// Reads until the peer closes; `true` if it did within `within` (EOF or reset), `false` if the
/// connection was still open then. Whatever it sent before closing goes to `out`.
async fn closed_within(
    stream: &mut tokio::net::TcpStream,
    within: std::time::Duration,
    out: &mut Vec<u8>,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Refused requests are recorded one by one up to `refused_records_per_minute`; past it they
/// are counted and the count is recorded (here when the listener stops): anyone who can reach the
/// port cannot fill the audit trail with 401 records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_past_their_bound_are_counted_not_recorded_one_by_one() {
    let Some(node) = common::node::servers() else {
        return;
    };
    let root = root("refusal-flood");
    let served = Served::start(&policy(
        &node.bin("mcp-server-filesystem"),
        &root.0,
        true,
        "refused_records_per_minute = 3",
    ))
    .await;
    for _ in 0..10 {
        let (status, _) = raw(served.addr, "POST", &[], INITIALIZE).await;
        assert_eq!(status, 401);
    }
    assert_eq!(served.faults("unauthenticated").len(), 3);
    let audit = Arc::clone(&served.audit);
    served.stop().await;
    let counted: Vec<_> = audit
        .events()
        .into_iter()
        .filter(|e| e["tollgate.protocol.fault"] == "refused_unrecorded")
        .collect();
    assert_eq!(counted.len(), 1, "{counted:?}");
    let detail = counted[0]["tollgate.protocol.detail"]
        .as_str()
        .unwrap_or_default();
    assert!(detail.starts_with("7 refused requests"), "{detail}");
}

/// Before any token is looked at, a client must not be able to hold connections: a request head
/// not complete within `header_read_timeout` closes the connection (hyper's timeout needs a
/// timer, which the listener had not set: such a head was held forever), and connections beyond
/// `max_connections` are answered 503 and closed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_request_heads_are_closed_and_connections_are_capped() {
    let Some(node) = common::node::servers() else {
        return;
    };
    let root = root("slowloris");
    let served = Served::start(&policy(
        &node.bin("mcp-server-filesystem"),
        &root.0,
        true,
        "header_read_timeout = \"1s\"\nmax_connections = 2",
    ))
    .await;
    let half = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(served.addr).await.unwrap();
        s.write_all(half).await.unwrap();
        held.push(s);
    }
    // Let the listener accept both before the third arrives.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // A third connection is over the cap: 503 and closed, without sending anything.
    let mut third = tokio::net::TcpStream::connect(served.addr).await.unwrap();
    let mut answer = Vec::new();
    assert!(
        closed_within(&mut third, std::time::Duration::from_secs(5), &mut answer).await,
        "a connection over max_connections stayed open"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    // The two half-sent heads are closed once the header read timeout passes.
    for s in &mut held {
        let mut out = Vec::new();
        assert!(
            closed_within(s, std::time::Duration::from_secs(10), &mut out).await,
            "a half-sent request head was held past header_read_timeout"
        );
    }
    // Their slots are free again: a complete request is served.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let reader = bearer(READER_TOKEN);
    let (status, _) = raw(
        served.addr,
        "POST",
        &[("Authorization", &reader)],
        INITIALIZE,
    )
    .await;
    assert_eq!(status, 200);
    served.stop().await;
}
