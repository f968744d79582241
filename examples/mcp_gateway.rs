//! Put MCP servers behind tollgate from Rust: what `tollgate mcp` does, in code, for a
//! deployment that binds its own audit sink, approval store or kill-switch follower.
//!
//! ```text
//! cargo run --features mcp --example mcp_gateway -- examples/policies/mcp_filesystem.toml
//! ```
//!
//! The policy's `[mcp]` section names the downstream servers (spawned here) and who the client
//! acts as. The gateway then serves one MCP client on stdin/stdout: `tools/list` shows only what
//! the role may call, and every `tools/call` is checked, recorded in the hash-chained audit log
//! (here under the system's temporary directory) and, if allowed, forwarded. The guard stays in
//! the caller's hands: `gateway.guard().suspend_all(..)` stops in-flight and new calls.

use std::sync::Arc;
use std::time::Duration;

use tollgate::Guard;
use tollgate::audit::AuditSink;
use tollgate::audit::file::FileSink;
use tollgate::escalation::MemoryApprovalStore;
use tollgate::integrations::mcp::Gateway;
use tollgate::policy::{Bindings, Policy};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "examples/policies/mcp_filesystem.toml".into());
    let policy = Policy::from_file(&path)?;

    // The audit trail: a hash-chained log `tollgate audit verify` checks.
    let dir = std::env::temp_dir().join("tollgate-mcp-gateway-audit");
    let (sink, _recovery) = FileSink::open(&dir, policy.file_sink_config(None)?)?;
    let sink = Arc::new(sink);
    let mut bindings = Bindings::new().audit(sink.clone());
    if policy.document().escalation.is_some() {
        // Approvers decide through `guard.approvals()`; use a FileApprovalStore to survive
        // restarts.
        bindings = bindings.approvals(Arc::new(MemoryApprovalStore::new()));
    }
    let guard = Arc::new(Guard::from_policy(&policy, bindings)?);
    let _ticker = guard.spawn_approval_ticker(Duration::from_secs(1));

    let gateway = Gateway::start(&policy, guard).await?;
    eprintln!(
        "tollgate: serving MCP on stdio under policy {} (version {}); audit log in {}",
        policy.document().policy.name,
        policy.version(),
        dir.display()
    );
    let served = gateway.serve_stdio().await;
    gateway.shutdown();
    sink.flush()?;
    served?;
    Ok(())
}
