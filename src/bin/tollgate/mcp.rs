//! `tollgate mcp`: the MCP gateway in front of the servers of a policy's `[mcp]` section.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tollgate::Guard;
use tollgate::audit::file::FileSink;
use tollgate::escalation::MemoryApprovalStore;
use tollgate::integrations::mcp::Gateway;
use tollgate::policy::{Bindings, Policy};

use crate::Failure;

/// How often the approval queue's deadlines are applied.
const APPROVAL_TICK: Duration = Duration::from_secs(1);

#[derive(Debug, Args)]
pub(crate) struct McpArgs {
    /// The policy document; its `[mcp]` section names the downstream servers.
    #[arg(long)]
    policy: PathBuf,
    /// Serve one MCP client over standard input and output (the default).
    #[arg(long)]
    stdio: bool,
    /// Serve MCP clients over streamable HTTP at http://ADDR/mcp instead (e.g. 127.0.0.1:8931;
    /// port 0 picks a free one, printed on stderr). Each session acts as the identity its bearer
    /// token names in `[[mcp.tokens]]`; without tokens only a loopback address is accepted.
    /// Stops on SIGINT or SIGTERM.
    #[arg(long, value_name = "ADDR", conflicts_with = "stdio")]
    http: Option<std::net::SocketAddr>,
    /// The audit directory (a hash-chained log, as `tollgate audit verify` reads it). Required
    /// when the policy has an `[audit]` section.
    #[arg(long, value_name = "DIR")]
    audit: Option<PathBuf>,
}

pub(crate) fn run(a: McpArgs) -> Result<ExitCode, Failure> {
    let policy = Policy::from_file(&a.policy)
        .map_err(|e| Failure::Input(format!("{}: {e}", a.policy.display())))?;
    let mut bindings = Bindings::new();
    let mut file_sink = None;
    match (&a.audit, policy.document().audit.is_some()) {
        (Some(dir), _) => {
            let cfg = policy
                .file_sink_config(None)
                .map_err(|e| Failure::Input(e.to_string()))?;
            let (sink, _recovery) = FileSink::open(dir, cfg)
                .map_err(|e| Failure::Input(format!("{}: {e}", dir.display())))?;
            let sink = Arc::new(sink);
            file_sink = Some(Arc::clone(&sink));
            bindings = bindings.audit(sink);
        }
        (None, true) => {
            return Err(Failure::Input(
                "the policy has an `[audit]` section: pass --audit DIR".into(),
            ));
        }
        (None, false) => {}
    }
    if policy.document().escalation.is_some() {
        // Approvers decide through the guard's queue in this process (the library API); a
        // durable, shared store is a deployment choice made in code.
        bindings = bindings.approvals(Arc::new(MemoryApprovalStore::new()));
    }
    let guard =
        Arc::new(Guard::from_policy(&policy, bindings).map_err(|e| Failure::Input(e.to_string()))?);
    // The shared kill switch of the document's `[backend]`: `tollgate kill ... --policy FILE`
    // reaches this gateway (and a switch the gateway cannot confirm suspends it). A `[backend]`
    // whose switch cannot be opened stops the gateway from starting rather than running unfollowed.
    let _follower = match &policy.document().backend {
        Some(section) => {
            let store = tollgate::backend::kill::open_store(section)
                .map_err(|e| Failure::Input(format!("the kill switch of `[backend]`: {e}")))?;
            Some(tollgate::backend::kill::KillFollower::start(
                (*guard).clone(),
                store,
                &section.kill_switch,
            ))
        }
        None => None,
    };
    let _ticker = guard.spawn_approval_ticker(APPROVAL_TICK);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Input(format!("cannot start the async runtime: {e}")))?;
    let served = runtime.block_on(async {
        let gateway = Gateway::start(&policy, guard).await?;
        let served = match a.http {
            Some(addr) => serve_http(&gateway, addr).await,
            None => gateway.serve_stdio().await,
        };
        gateway.shutdown();
        served
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    if let Some(sink) = file_sink {
        use tollgate::audit::AuditSink;
        sink.flush()
            .map_err(|e| Failure::Input(format!("audit flush failed: {e}")))?;
    }
    served.map_err(|e| Failure::Input(e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}

/// `--http ADDR`: the gateway's streamable-HTTP listener, until SIGINT or SIGTERM.
async fn serve_http(
    gateway: &Gateway,
    addr: std::net::SocketAddr,
) -> Result<(), tollgate::integrations::mcp::GatewayError> {
    let listener = gateway.bind_http(addr).await?;
    eprintln!("tollgate mcp: listening on {}", listener.url());
    listener
        .serve_until(async {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                match signal(SignalKind::terminate()) {
                    Ok(mut term) => {
                        tokio::select! {
                            _ = tokio::signal::ctrl_c() => {}
                            _ = term.recv() => {}
                        }
                    }
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            }
            #[cfg(not(unix))]
            {
                let _ = tokio::signal::ctrl_c().await;
            }
        })
        .await
}
