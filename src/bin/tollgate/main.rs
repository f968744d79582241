//! `tollgate`: the command-line tool around a tollgate deployment.
//!
//! - `tollgate policy check|explain|diff|matrix|keygen|sign|verify|replay` work on policy
//!   documents (`replay`: what a candidate would have changed over a recorded audit log);
//! - `tollgate audit verify|query|repair` verify, query and repair audit directories;
//! - `tollgate kill suspend|resume|status` throws, lifts or shows the shared kill switch;
//! - `tollgate rollout report` measures agreement of recommend-mode recommendations with what
//!   humans did.
//!
//! Exit status: 0 success, 1 the input failed (an invalid policy, a tampered log, a refused
//! signature), 2 usage error. Run `tollgate help` or `tollgate <command> --help`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod approvals;
mod audit;
mod kill;
#[cfg(feature = "mcp")]
mod mcp;
mod policy;
mod progress;
mod rollout;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Safety primitives for AI agents: policy documents and audit trails.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check, explain, diff, sign and export policy documents.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Verify, query and repair an audit directory (the hash-chained log a FileSink writes).
    ///
    /// PATH is the audit directory. A path to one of its segment files (audit-NNNNNN.jsonl)
    /// stands for that file's directory: the hash chain runs through every segment in order, so
    /// a segment cannot be verified on its own.
    ///
    /// Examples: `tollgate audit verify DIR --key-file ops.key`, `tollgate audit query DIR --run
    /// RUN --tool TOOL --since 2024-05-01T12:00:00Z`, `tollgate audit repair DIR --key-file
    /// ops.key`.
    #[command(subcommand, after_help = audit::EXIT_STATUS)]
    Audit(audit::AuditCommand),
    /// Measure how a deployment in recommend mode is doing: agreement with humans.
    ///
    /// Example: `tollgate rollout report --log DIR --policy policy.toml --format html --out
    /// agreement.html`.
    #[command(subcommand)]
    Rollout(rollout::RolloutCommand),
    /// List, approve and deny requests of the shared approval queue in PostgreSQL.
    ///
    /// Example: `tollgate approvals approve REQ --as alice --reason ok --policy fleet.toml
    /// --key-file approvals.key`.
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCommand),
    /// Put MCP servers behind the guard: `tollgate mcp --policy gateway.toml` serves one MCP
    /// client over stdio and checks each of its tool calls against the policy.
    #[cfg(feature = "mcp")]
    Mcp(mcp::McpArgs),
    /// Throw or lift the shared kill switch (the document's `[backend]`), or show it.
    ///
    /// Example: `tollgate kill suspend --agent billing-bot --policy policy.toml --reason
    /// "incident 42"`, `tollgate kill status --policy policy.toml`.
    #[command(subcommand)]
    Kill(kill::KillCommand),
}

/// What a command ended with: the exit status it maps to.
pub(crate) enum Failure {
    /// The input is bad (invalid document, refused signature): exit 1.
    Input(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Policy(cmd) => policy::run(cmd),
        Command::Audit(cmd) => Ok(audit::run(cmd)),
        Command::Rollout(cmd) => rollout::run(cmd),
        Command::Approvals(cmd) => Ok(approvals::run(cmd)),
        #[cfg(feature = "mcp")]
        Command::Mcp(args) => mcp::run(args),
        Command::Kill(cmd) => kill::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(Failure::Input(msg)) => {
            eprintln!("{msg}");
            ExitCode::from(1)
        }
    }
}
