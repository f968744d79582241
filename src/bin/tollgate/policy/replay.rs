//! `tollgate policy replay NEW --audit DIR`: what a candidate policy would have changed over a
//! recorded audit log.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use tollgate::policy::{Policy, ReplayError};

use crate::Failure;

#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// The candidate policy file.
    pub(super) new: PathBuf,
    /// The audit directory (a file sink's) whose calls are re-decided.
    #[arg(long)]
    audit: PathBuf,
    /// How many examples to show per change.
    #[arg(long, default_value_t = 5)]
    examples: usize,
    /// Do not verify the hash chain while reading (the results are then only as good as the
    /// log).
    #[arg(long)]
    no_verify: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReplayFormat::Text)]
    format: ReplayFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ReplayFormat {
    /// A summary for people.
    Text,
    /// The whole report as one JSON object.
    Json,
}

/// How often progress is redrawn on a terminal.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

pub(crate) fn run(policy: &Policy, a: ReplayArgs) -> Result<ExitCode, Failure> {
    let mut replay = policy
        .replay(&a.audit)
        .examples(a.examples)
        .verify(!a.no_verify);
    let tty = std::io::stderr().is_terminal();
    if tty {
        let mut shown = Duration::ZERO;
        replay = replay.on_progress(move |p| {
            if p.elapsed < shown + PROGRESS_INTERVAL {
                return;
            }
            shown = p.elapsed;
            eprint!(
                "\r{} records, {} decisions, {} changed, {:.0} records/s ",
                p.records,
                p.decisions,
                p.changed,
                p.records_per_sec()
            );
        });
    }
    let result = replay.run();
    if tty {
        // Clear the progress line.
        eprint!("\r\x1b[K");
    }
    let report = result.map_err(|e| match e {
        ReplayError::Log(_) => Failure::Input(format!("{}: {e}", a.audit.display())),
        e => Failure::Input(format!("error: {e}")),
    })?;
    match a.format {
        ReplayFormat::Text => print!("{report}"),
        ReplayFormat::Json => match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => return Err(Failure::Input(format!("error: {e}"))),
        },
    }
    Ok(ExitCode::SUCCESS)
}
