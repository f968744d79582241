//! `tollgate mcp`: the MCP gateway in front of the servers of a policy's `[mcp]` section.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tollgate::audit::file::{CheckpointConfig, CheckpointKey, FileSink};
use tollgate::backend::Deployment;
use tollgate::escalation::{MemoryApprovalStore, StoreKey};
use tollgate::integrations::mcp::Gateway;
use tollgate::policy::{Bindings, Policy};

use crate::Failure;

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
    /// unless the policy's `[backend]` opens the audit trail or `--no-audit` is given.
    #[arg(long, value_name = "DIR")]
    audit: Option<PathBuf>,
    /// Run without an audit trail (no record of any decision, call or refusal). Without it,
    /// `tollgate mcp` refuses to start when neither `--audit` nor the policy's `[backend]`
    /// provides one.
    #[arg(long = "no-audit", conflicts_with = "audit")]
    no_audit: bool,
    /// The approval store's key file (`<key id>:<hex secret>`), needed when the policy's
    /// `[backend]` keeps a durable approval queue (every process of the deployment, and
    /// `tollgate approvals`, use the same key).
    #[arg(long = "approval-key-file", value_name = "FILE")]
    approval_key_file: Option<PathBuf>,
    /// The audit trail's checkpoint key file (`<key id>:<hex secret>`): signs checkpoints.
    #[arg(long = "checkpoint-key-file", value_name = "FILE")]
    checkpoint_key_file: Option<PathBuf>,
}

pub(crate) fn run(a: McpArgs) -> Result<ExitCode, Failure> {
    let policy = Policy::from_file(&a.policy)
        .map_err(|e| Failure::Input(format!("{}: {e}", a.policy.display())))?;
    let doc = policy.document();
    // The document's `[backend]` opens the shared stores itself (PostgreSQL, or files under
    // `[backend] dir`); otherwise they are given here.
    let section_opens = doc
        .backend
        .as_ref()
        .is_some_and(|b| b.opens_shared_stores());
    let mut bindings = Bindings::new();
    if let Some(f) = &a.approval_key_file {
        let key = StoreKey::from_key_file(f)
            .map_err(|e| Failure::Input(format!("{}: {e}", f.display())))?;
        bindings = bindings.approval_key(key);
    }
    let checkpoint_key = match &a.checkpoint_key_file {
        Some(f) => Some(
            CheckpointKey::from_key_file(f)
                .map_err(|e| Failure::Input(format!("{}: {e}", f.display())))?,
        ),
        None => None,
    };
    if let Some(key) = &checkpoint_key {
        bindings = bindings.checkpoint_key(key.clone());
    }
    let mut file_sink = None;
    match (&a.audit, doc.audit.is_some()) {
        (Some(_), _) if section_opens => {
            return Err(Failure::Input(
                "the policy's `[backend]` opens the audit trail: drop --audit".into(),
            ));
        }
        (Some(dir), _) => {
            let mut cfg = policy
                .file_sink_config(None)
                .map_err(|e| Failure::Input(e.to_string()))?;
            if let Some(key) = &checkpoint_key {
                cfg = cfg.checkpoint(CheckpointConfig::new(key.clone()));
            }
            let (sink, _recovery) = FileSink::open(dir, cfg)
                .map_err(|e| Failure::Input(format!("{}: {e}", dir.display())))?;
            let sink = Arc::new(sink);
            file_sink = Some(Arc::clone(&sink));
            bindings = bindings.audit(sink);
        }
        (None, true) if !section_opens => {
            return Err(Failure::Input(
                "the policy has an `[audit]` section: pass --audit DIR (or set `[backend] dir`)"
                    .into(),
            ));
        }
        (None, false) if !section_opens && !a.no_audit => {
            return Err(Failure::Input(
                "no audit trail: pass --audit DIR (or set `[backend] dir`), or --no-audit to run \
                 the gateway without any record of its decisions"
                    .into(),
            ));
        }
        (None, _) => {}
    }
    if doc.escalation.is_some() && !section_opens {
        // Approvers decide through the guard's queue in this process (the library API); a
        // durable store shared with `tollgate approvals` comes from `[backend]`.
        bindings = bindings.approvals(Arc::new(MemoryApprovalStore::new()));
    }
    // Opens the shared kill switch, budgets, approval queue and audit trail of `[backend]`:
    // `tollgate kill ... --policy FILE` reaches this gateway (and a switch it cannot confirm
    // suspends it); a part that cannot be opened stops the gateway from starting.
    let deployment =
        Deployment::open(&policy, bindings).map_err(|e| Failure::Input(e.to_string()))?;
    let guard = Arc::new(deployment.guard().clone());
    // One stdio connection is one sequential stream of calls: a current-thread runtime serves
    // it without cross-thread wake-ups between the gateway's tasks (measured with the mcp
    // bench's probe: 1 context switch per forwarded call instead of 5, fewer instructions).
    // HTTP serves many sessions at once and keeps the multi-thread runtime.
    let mut builder = match a.http {
        Some(_) => tokio::runtime::Builder::new_multi_thread(),
        None => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = builder
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
    deployment
        .shutdown()
        .map_err(|e| Failure::Input(e.to_string()))?;
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
