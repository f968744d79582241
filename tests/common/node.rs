//! Real MCP servers from npm for the gateway's end-to-end tests: pinned versions, installed by
//! the tests themselves under `target/mcp-servers` (once, cached; a file lock keeps parallel test
//! binaries from racing), so the README's test command works on a fresh machine with Node.js.
//!
//! Without Node.js a test skips and says why; with `TOLLGATE_REQUIRE_NODE=1` (as `.ci/run` sets
//! it) a missing Node.js or a failed install fails the test instead.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The packages, pinned. Changing a version here reinstalls on the next run.
pub const PACKAGES: &[&str] = &[
    "@modelcontextprotocol/server-filesystem@2026.8.31",
    "@modelcontextprotocol/server-memory@2026.8.31",
    "@modelcontextprotocol/server-everything@2026.8.31",
    "@modelcontextprotocol/sdk@1.32.2",
];

/// The installed servers.
#[derive(Debug, Clone)]
pub struct NodeServers {
    /// `target/mcp-servers`.
    pub dir: PathBuf,
    /// The `node` program.
    pub node: PathBuf,
}

impl NodeServers {
    /// The command line of an installed server binary (`mcp-server-filesystem`, ...).
    pub fn bin(&self, name: &str) -> PathBuf {
        self.dir.join("node_modules").join(".bin").join(name)
    }

    /// `node_modules`, for scripts that import the SDK.
    pub fn node_modules(&self) -> PathBuf {
        self.dir.join("node_modules")
    }
}

fn required() -> bool {
    std::env::var_os("TOLLGATE_REQUIRE_NODE").is_some_and(|v| v == "1")
}

fn skip_or_fail(why: String) -> Option<NodeServers> {
    if required() {
        panic!("{why} (TOLLGATE_REQUIRE_NODE=1 requires Node.js and the MCP servers)");
    }
    eprintln!("SKIPPED: {why}; install Node.js (node and npm) to run this test");
    None
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|c| c.is_file())
}

/// Installs (once) and returns the pinned servers, or `None` to skip the test.
pub fn servers() -> Option<NodeServers> {
    let Some(node) = on_path("node") else {
        return skip_or_fail("`node` is not on PATH".into());
    };
    let Some(npm) = on_path("npm") else {
        return skip_or_fail("`npm` is not on PATH".into());
    };
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let dir = target.join("mcp-servers");
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return skip_or_fail(format!("cannot create {}: {e}", dir.display()));
    }
    // One installer at a time across test binaries; the others wait, then see the stamp.
    let lock = File::create(target.join("mcp-servers.lock")).expect("lock file");
    lock.lock().expect("lock");
    let stamp = dir.join("installed.txt");
    let wanted = PACKAGES.join("\n");
    let done = std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted);
    if !done {
        let out = Command::new(&npm)
            .arg("install")
            .arg("--prefix")
            .arg(&dir)
            .args(["--no-audit", "--no-fund", "--loglevel=error"])
            .args(PACKAGES)
            .output();
        match out {
            Ok(o) if o.status.success() => {
                let mut f = File::create(&stamp).expect("stamp");
                f.write_all(wanted.as_bytes()).expect("stamp");
            }
            Ok(o) => {
                return skip_or_fail(format!(
                    "npm install failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                ));
            }
            Err(e) => return skip_or_fail(format!("npm could not run: {e}")),
        }
    }
    drop(lock);
    Some(NodeServers { dir, node })
}

/// An in-process gateway with an rmcp client connected to it over a duplex pipe.
#[cfg(feature = "mcp")]
pub mod harness {
    use std::sync::Arc;

    use rmcp::model::{CallToolRequestParams, CallToolResult};
    use rmcp::service::RunningService;
    use rmcp::{RoleClient, ServiceExt};
    use serde_json::Value;
    use tollgate::Guard;
    use tollgate::audit::MemorySink;
    use tollgate::escalation::MemoryApprovalStore;
    use tollgate::integrations::mcp::{Gateway, GatewayError};
    use tollgate::policy::{Bindings, Policy};

    /// A running gateway, its audit trail, and a connected client.
    pub struct Harness {
        pub gateway: Arc<Gateway>,
        pub audit: Arc<MemorySink>,
        pub client: RunningService<RoleClient, ()>,
        pub served: tokio::task::JoinHandle<Result<(), GatewayError>>,
    }

    /// A raw JSON-RPC client over a duplex pipe to `gateway.serve`: writes lines as given
    /// (malformed ones too) and reads answer lines.
    pub struct Raw {
        write: tokio::io::WriteHalf<tokio::io::DuplexStream>,
        read: tokio::io::BufReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
        /// The last line sent, named when an answer does not come.
        last: String,
        /// The gateway's serving of this session: ends when the session does.
        pub served: tokio::task::JoinHandle<Result<(), GatewayError>>,
    }

    impl Raw {
        /// Connects a new session to `gateway`.
        pub fn connect(gateway: &Arc<Gateway>) -> Self {
            let (client, server) = tokio::io::duplex(1 << 20);
            let (g_read, g_write) = tokio::io::split(server);
            let gw = gateway.clone();
            let served = tokio::spawn(async move { gw.serve(g_read, g_write).await });
            let (read, write) = tokio::io::split(client);
            Self {
                write,
                read: tokio::io::BufReader::new(read),
                last: String::new(),
                served,
            }
        }

        /// Closes the client's side of the connection for writing (the gateway's input ends, as
        /// when a client closes the gateway's stdin); the gateway's answers can still be read.
        pub async fn close_input(&mut self) {
            use tokio::io::AsyncWriteExt;
            self.write.shutdown().await.unwrap();
        }

        /// Every line the gateway writes until it closes its side of the connection, which
        /// must happen within `within`.
        pub async fn rest(&mut self, within: std::time::Duration) -> Vec<Value> {
            use tokio::io::AsyncBufReadExt;
            let mut lines = Vec::new();
            let read = async {
                loop {
                    let mut line = String::new();
                    if self.read.read_line(&mut line).await.unwrap() == 0 {
                        break;
                    }
                    lines.push(serde_json::from_str(&line).expect("the answer is JSON"));
                }
            };
            tokio::time::timeout(within, read)
                .await
                .unwrap_or_else(|_| panic!("the gateway kept the connection open past {within:?}"));
            lines
        }

        /// Sends one line (a newline is added).
        pub async fn send(&mut self, line: &str) {
            use tokio::io::AsyncWriteExt;
            self.last = line.to_string();
            self.write.write_all(line.as_bytes()).await.unwrap();
            self.write.write_all(b"\n").await.unwrap();
        }

        /// The next answer line within `within`, or `None`.
        pub async fn answer_within(&mut self, within: std::time::Duration) -> Option<Value> {
            use tokio::io::AsyncBufReadExt;
            let mut line = String::new();
            match tokio::time::timeout(within, self.read.read_line(&mut line)).await {
                Err(_) => None,
                Ok(r) => {
                    assert!(r.unwrap() > 0, "the gateway closed the connection");
                    Some(serde_json::from_str(&line).expect("the answer is JSON"))
                }
            }
        }

        /// The next answer line. The bound is generous (a loaded CI machine once took more
        /// than 10 s); on expiry the panic names the last request sent.
        pub async fn answer(&mut self) -> Value {
            match self.answer_within(std::time::Duration::from_secs(30)).await {
                Some(a) => a,
                None => {
                    let sent = &self.last[..self.last.len().min(120)];
                    panic!("no answer within 30 s to: {sent}")
                }
            }
        }

        /// `initialize` (answered by the gateway) and `notifications/initialized`.
        pub async fn initialize(&mut self) {
            self.send(r#"{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#).await;
            let a = self.answer().await;
            assert_eq!(a["result"]["serverInfo"]["name"], "tollgate", "{a}");
            self.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
                .await;
        }

        /// A `tools/call` of `tool` with `args`, under the JSON id `id`.
        pub async fn call(&mut self, id: &str, tool: &str, args: Value) {
            let line = serde_json::json!({
                "jsonrpc": "2.0", "id": serde_json::from_str::<Value>(id).unwrap(),
                "method": "tools/call", "params": {"name": tool, "arguments": args},
            });
            self.send(&line.to_string()).await;
        }
    }

    /// The guard a test policy describes, recording into a memory sink.
    pub fn guard(policy: &Policy) -> (Arc<Guard>, Arc<MemorySink>) {
        let audit = Arc::new(MemorySink::new());
        let mut b = Bindings::new().audit(audit.clone());
        if policy.document().escalation.is_some() {
            b = b.approvals(Arc::new(MemoryApprovalStore::new()));
        }
        (
            Arc::new(Guard::from_policy(policy, b).expect("guard")),
            audit,
        )
    }

    /// Starts the gateway of `policy` and connects a client to it.
    pub async fn start(policy: &Policy) -> Harness {
        let (guard, audit) = guard(policy);
        let gateway = Arc::new(Gateway::start(policy, guard).await.expect("gateway starts"));
        let (client, served) = connect(&gateway).await;
        Harness {
            gateway,
            audit,
            client,
            served,
        }
    }

    /// One more client connection to `gateway`.
    pub async fn connect(
        gateway: &Arc<Gateway>,
    ) -> (
        RunningService<RoleClient, ()>,
        tokio::task::JoinHandle<Result<(), GatewayError>>,
    ) {
        let (client_io, gateway_io) = tokio::io::duplex(1 << 20);
        let (g_read, g_write) = tokio::io::split(gateway_io);
        let gw = gateway.clone();
        let served = tokio::spawn(async move { gw.serve(g_read, g_write).await });
        let client = ().serve(client_io).await.expect("client initialises");
        (client, served)
    }

    impl Harness {
        /// Calls `tool` with `args` (a JSON object).
        pub async fn call(&self, tool: &str, args: Value) -> CallToolResult {
            call(&self.client, tool, args).await
        }

        /// Calls `tool`, asserts it succeeded, returns its text.
        pub async fn text_of(&self, tool: &str, args: Value) -> String {
            let r = self.call(tool, args).await;
            assert!(!is_error(&r), "{tool} failed: {r:?}");
            text(&r)
        }

        /// The tool names the client is shown.
        pub async fn tool_names(&self) -> Vec<String> {
            let mut names: Vec<String> = self
                .client
                .list_all_tools()
                .await
                .expect("tools/list")
                .into_iter()
                .map(|t| t.name.to_string())
                .collect();
            names.sort();
            names
        }

        /// For a remote server whose policy admits only `echo`, its `message` shorter than 100
        /// characters (the HTTP and TLS tests' policies): only `echo` is listed, a call comes
        /// back as the server's `Echo: <message>`, and one over the rule is refused before the
        /// server is asked (a single outcome recorded).
        pub async fn assert_only_echo_is_forwarded(&self, message: &str) {
            assert_eq!(self.tool_names().await, ["echo"]);
            assert_eq!(
                self.text_of("echo", serde_json::json!({ "message": message }))
                    .await,
                format!("Echo: {message}")
            );
            let long = self
                .call("echo", serde_json::json!({"message": "x".repeat(100)}))
                .await;
            assert!(is_error(&long), "{long:?}");
            assert_eq!(
                self.events("outcome").len(),
                1,
                "only the allowed call was forwarded"
            );
        }

        /// Audit events of kind `event` (`decision`, `outcome`, ...).
        pub fn events(&self, event: &str) -> Vec<Value> {
            self.audit
                .events()
                .into_iter()
                .filter(|e| e["event"] == event)
                .collect()
        }
    }

    /// Calls `tool` with `args` on `client`.
    pub async fn call(
        client: &RunningService<RoleClient, ()>,
        tool: &str,
        args: Value,
    ) -> CallToolResult {
        let Value::Object(args) = args else {
            panic!("arguments must be an object")
        };
        client
            .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
            .await
            .expect("tools/call answered")
    }

    /// Calls `tool` with `args` through a client peer (for calls made from another task).
    pub async fn call_peer(
        peer: &rmcp::service::Peer<RoleClient>,
        tool: &str,
        args: Value,
    ) -> CallToolResult {
        let Value::Object(args) = args else {
            panic!("arguments must be an object")
        };
        peer.call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
            .await
            .expect("tools/call answered")
    }

    /// The text of a result's first text block.
    pub fn text(r: &CallToolResult) -> String {
        r.content
            .iter()
            .find_map(|c| c.as_text().map(|t| t.text.clone()))
            .unwrap_or_default()
    }

    /// Whether the result is a tool error.
    pub fn is_error(r: &CallToolResult) -> bool {
        r.is_error == Some(true)
    }

    /// The `[policy]` metadata every test document needs.
    pub const METADATA: &str = r#"
[policy]
name = "mcp gateway test"
owner = "tests"
purpose = "exercise the MCP gateway"
scope = "tests"
liability_owner = "tests"
review_cadence = "90d"
data_handling = "test data only"
"#;
}
