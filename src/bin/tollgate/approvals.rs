//! `tollgate approvals list|approve|deny`: the shared approval queue in the PostgreSQL database
//! a policy document's `[backend]` names (feature `postgres`).
//!
//! Exit status: 0 done, 1 refused (not pending, not eligible, separation of duties, a store
//! that does not verify, the database unreachable), 2 usage error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

/// `tollgate approvals ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum ApprovalsCommand {
    /// Print the pending requests, one JSON line each (id, tool, run, agent, trigger, group,
    /// reasons, deadline, arguments as shown to approvers).
    List(Common),
    /// Approve a pending request as PRINCIPAL (who must be in a group eligible at its level,
    /// and neither the run's trigger nor its agent).
    Approve(Decide),
    /// Deny a pending request as PRINCIPAL.
    Deny(Decide),
}

#[derive(Debug, Args)]
pub(crate) struct Common {
    /// The policy document: its `[backend]` (kind = "postgres") names the database, its
    /// `[escalation]` the approver groups and settings.
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// The approval store's key file (`<key id>:<hex secret>`), as the hosts have it: rows are
    /// verified and signed with it.
    #[arg(long = "key-file", value_name = "FILE")]
    key_file: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct Decide {
    #[command(flatten)]
    common: Common,
    /// The request id.
    #[arg(value_name = "ID")]
    id: String,
    /// Who decides.
    #[arg(long = "as", value_name = "PRINCIPAL")]
    principal: String,
    /// Why (recorded with the decision).
    #[arg(long, value_name = "TEXT", default_value = "")]
    reason: String,
}

pub(crate) fn run(cmd: ApprovalsCommand) -> ExitCode {
    imp::run(cmd)
}

#[cfg(feature = "postgres")]
mod imp {
    use std::process::ExitCode;
    use std::sync::Arc;

    use tollgate::backend::postgres::PgBackend;
    use tollgate::backend::postgres::approvals::PgApprovalStore;
    use tollgate::clock::SystemClock;
    use tollgate::escalation::{
        ApprovalId, ApprovalQueue, Approver, Decision, QueueConfig, StoreKey,
    };
    use tollgate::policy::Policy;

    use super::{ApprovalsCommand, Common};

    fn open(c: &Common) -> Result<ApprovalQueue, ExitCode> {
        let usage = |m: String| {
            eprintln!("tollgate: {m}");
            ExitCode::from(2)
        };
        let policy = Policy::from_file(&c.policy)
            .map_err(|e| usage(format!("{}: {e}", c.policy.display())))?;
        let key = StoreKey::from_key_file(&c.key_file).map_err(|e| usage(e.to_string()))?;
        let Some(section) = policy.document().backend.as_ref() else {
            return Err(usage(format!(
                "{}: no [backend] section (kind = \"postgres\")",
                c.policy.display()
            )));
        };
        let backend = PgBackend::from_section(section).map_err(|e| usage(e.to_string()))?;
        let failed = |m: String| {
            eprintln!("tollgate: FAILED: {m}");
            ExitCode::from(1)
        };
        let store =
            PgApprovalStore::open(&backend, &key, &[]).map_err(|e| failed(e.to_string()))?;
        let config = policy
            .escalation()
            .map(QueueConfig::for_gate)
            .unwrap_or_default();
        ApprovalQueue::open(Arc::new(store), Arc::new(SystemClock::new()), config)
            .map_err(|e| failed(e.to_string()))
    }

    pub(super) fn run(cmd: ApprovalsCommand) -> ExitCode {
        let (common, decide) = match &cmd {
            ApprovalsCommand::List(c) => (c, None),
            ApprovalsCommand::Approve(d) => (&d.common, Some((d, Decision::Approve))),
            ApprovalsCommand::Deny(d) => (&d.common, Some((d, Decision::Deny))),
        };
        let queue = match open(common) {
            Ok(q) => q,
            Err(code) => return code,
        };
        // Apply due timeouts first: an expired request is denied, never decided late.
        if let Err(e) = queue.tick() {
            eprintln!("tollgate: FAILED: {e}");
            return ExitCode::from(1);
        }
        match decide {
            None => match queue.pending() {
                Ok(list) => {
                    for r in list {
                        let line = serde_json::json!({
                            "id": r.id.as_str(),
                            "tool": r.tool,
                            "run": r.run.as_str(),
                            "agent": r.agent.as_str(),
                            "trigger": r.trigger.as_ref().map(|t| t.as_str()),
                            "group": r.current_group(),
                            "reasons": r.reasons,
                            "deadline_ms": r.deadline_ms,
                            "quorum": r.quorum,
                            "args": r.args,
                        });
                        println!("{line}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("tollgate: FAILED: {e}");
                    ExitCode::from(1)
                }
            },
            Some((d, decision)) => {
                let approver = Approver::new(d.principal.as_str()).via("cli");
                match queue.decide(&ApprovalId::new(&d.id), &approver, decision, &d.reason) {
                    Ok(o) => {
                        println!(
                            "{}: {} ({} of {} approvals)",
                            d.id, o.state, o.approvals, o.quorum
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("tollgate: refused: {e}");
                        ExitCode::from(1)
                    }
                }
            }
        }
    }
}

#[cfg(not(feature = "postgres"))]
mod imp {
    use std::process::ExitCode;

    use super::ApprovalsCommand;

    pub(super) fn run(_: ApprovalsCommand) -> ExitCode {
        eprintln!(
            "tollgate: `approvals` works on the shared queue in PostgreSQL: rebuild with feature \
             `postgres`"
        );
        ExitCode::from(2)
    }
}
