//! `tollgate kill`: throw or lift the shared kill switch of every guard that follows the
//! document's `[backend]` (the state file of `[backend.kill_switch] dir`, or PostgreSQL), and
//! show what is suspended.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use tollgate::backend::kill::{KillChange, KillScope, KillState, Suspension, open_store};
use tollgate::policy::Policy;

use crate::Failure;

/// `tollgate kill ...`
#[derive(Debug, Subcommand)]
pub(crate) enum KillCommand {
    /// Suspend every run (`--all`), one agent's runs or one run id, on every guard following
    /// the switch.
    Suspend(ChangeArgs),
    /// Lift a suspension set with `suspend` (the same `--all`, `--agent` or `--run`).
    Resume(ChangeArgs),
    /// Show the suspensions in force, who set them, when and why.
    Status(StatusArgs),
}

/// What to suspend or resume, and where the switch is.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("scope").required(true).args(["all", "agent", "run"])))]
pub(crate) struct ChangeArgs {
    /// Every run of every guard.
    #[arg(long)]
    all: bool,
    /// Every run of this agent.
    #[arg(long, value_name = "AGENT")]
    agent: Option<String>,
    /// Every run with this id.
    #[arg(long, value_name = "RUN")]
    run: Option<String>,
    /// The policy document whose `[backend]` section says where the switch is.
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// Who is throwing the switch (recorded; default: `$USER`).
    #[arg(long, value_name = "NAME")]
    by: Option<String>,
    /// Why (recorded).
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
}

/// `tollgate kill status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The policy document whose `[backend]` section says where the switch is.
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
}

pub(crate) fn run(cmd: KillCommand) -> Result<ExitCode, Failure> {
    match cmd {
        KillCommand::Suspend(a) => change(a, true),
        KillCommand::Resume(a) => change(a, false),
        KillCommand::Status(a) => status(&a.policy),
    }
}

fn store(
    policy: &std::path::Path,
) -> Result<std::sync::Arc<dyn tollgate::backend::kill::KillSwitchStore>, Failure> {
    let doc = Policy::from_file(policy)
        .map_err(|e| Failure::Input(format!("{}: {e}", policy.display())))?;
    let section = doc.document().backend.clone().unwrap_or_default();
    open_store(&section).map_err(|e| Failure::Input(format!("error: {e}")))
}

fn change(a: ChangeArgs, suspend: bool) -> Result<ExitCode, Failure> {
    let scope = match (a.all, a.agent, a.run) {
        (true, _, _) => KillScope::Global,
        (_, Some(agent), _) => KillScope::Agent(agent),
        (_, _, Some(run)) => KillScope::Run(run),
        // clap requires one of the three.
        _ => return Err(Failure::Input("error: give --all, --agent or --run".into())),
    };
    let by =
        a.by.or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "tollgate-cli".to_owned());
    let store = store(&a.policy)?;
    let mut c = if suspend {
        KillChange::suspend(scope.clone(), by)
    } else {
        KillChange::resume(scope.clone(), by)
    };
    if let Some(r) = a.reason {
        c = c.reason(r);
    }
    let applied = store
        .apply(&c)
        .map_err(|e| Failure::Input(format!("error: {e}")))?;
    let rev = applied.state.revision;
    match (suspend, applied.changed) {
        (true, true) => println!("suspended {scope} (revision {rev})"),
        (false, true) => println!("resumed {scope} (revision {rev})"),
        (true, false) => {
            let s = applied.state.get(&scope);
            println!(
                "{scope} was already suspended{}; nothing changed (revision {rev})",
                s.map(|s| format!(" ({})", describe(s))).unwrap_or_default()
            );
        }
        (false, false) => println!("{scope} was not suspended; nothing changed (revision {rev})"),
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(s: &Suspension) -> String {
    let at = i64::try_from(s.at_unix_ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map(|t| t.to_string())
        .unwrap_or_else(|| format!("{} ms", s.at_unix_ms));
    match &s.reason {
        Some(r) => format!("by {} at {at}, revision {}: {r}", s.by, s.revision),
        None => format!("by {} at {at}, revision {}", s.by, s.revision),
    }
}

fn status(policy: &std::path::Path) -> Result<ExitCode, Failure> {
    let state: KillState = store(policy)?
        .load()
        .map_err(|e| Failure::Input(format!("error: {e}")))?;
    println!("revision {}", state.revision);
    if state.global.is_none() && state.agents.is_empty() && state.runs.is_empty() {
        println!("nothing suspended");
    }
    if let Some(s) = &state.global {
        println!("global: suspended {}", describe(s));
    }
    for (a, s) in &state.agents {
        println!("agent {a}: suspended {}", describe(s));
    }
    for (r, s) in &state.runs {
        println!("run {r}: suspended {}", describe(s));
    }
    Ok(ExitCode::SUCCESS)
}
