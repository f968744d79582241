//! `tollgate policy replay NEW --audit DIR`: what a candidate policy would have changed over a
//! recorded audit log.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use tollgate::policy::{Policy, ReplayError};

use crate::Failure;
use crate::progress::{Meter, ProgressArgs};

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
    #[command(flatten)]
    progress: ProgressArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ReplayFormat {
    /// A summary for people.
    Text,
    /// The whole report as one JSON object.
    Json,
}

pub(crate) fn run(policy: &Policy, a: ReplayArgs) -> Result<ExitCode, Failure> {
    let mut replay = policy
        .replay(&a.audit)
        .examples(a.examples)
        .verify(!a.no_verify);
    let meter = Meter::new("replay", &a.progress, false);
    if let Some(m) = &meter {
        let m = Arc::clone(m);
        replay = replay.progress(move |p| m.update(p));
    }
    let result = replay.run();
    if let Some(m) = &meter {
        m.finish();
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
