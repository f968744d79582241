//! What the gateway's https and mutual-TLS tests share: the one-tool document for a remote
//! server, starting a gateway that must fail, waiting for a condition, and loading a document
//! that must be refused.

use std::time::{Duration, Instant};

use super::node::harness::{self, METADATA};
use tollgate::integrations::mcp::{Gateway, GatewayError};
use tollgate::policy::{DocumentError, Policy};

/// A document with one tool, `echo`, on the server `remote` at `url`, given `start_timeout`;
/// `server_extra` goes into `[mcp.servers.remote]`.
pub fn policy_text(url: &str, start_timeout: &str, server_extra: &str) -> String {
    format!(
        r#"{METADATA}
[tools.echo]
effect = "read"
args.message = {{ type = "string", required = true, max_length = 64 }}

[roles.reader]
tools = ["echo"]

[mcp]
start_timeout = "{start_timeout}"
restart_backoff = "20ms"
max_restart_backoff = "100ms"

[mcp.connection]
agent = "desktop"
role = "reader"

[mcp.servers.remote]
url = "{url}"
{server_extra}
"#
    )
}

/// Starts the gateway of `policy`, which must fail to connect; the server and the reason.
pub async fn start_error(policy: &Policy) -> (String, String) {
    let (guard, _audit) = harness::guard(policy);
    match Gateway::start(policy, guard).await {
        Err(GatewayError::Spawn { server, reason }) => (server, reason),
        Err(other) => panic!("expected a connection error, got {other}"),
        Ok(gateway) => {
            gateway.shutdown();
            panic!("the gateway started with a server whose TLS handshake must fail")
        }
    }
}

/// Waits until `check` holds, for at most 30 s.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not within 30 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The error of a document that must be refused.
pub fn load_error(text: &str) -> DocumentError {
    match Policy::from_toml(text) {
        Ok(_) => panic!("the document was accepted"),
        Err(e) => e,
    }
}
