//! `tollgate policy replay --log DIR --policy FILE`: what a candidate policy would have changed
//! over a recorded audit log.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::builder::{PathBufValueParser, TypedValueParser};
use clap::{Args, ValueEnum};
use tollgate::audit::file::CheckpointKey;
use tollgate::policy::Policy;

use crate::Failure;
use crate::audit::{key_file, log_dir};
use crate::progress::{Meter, ProgressArgs};

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  tollgate policy replay --log /var/log/agent-audit --policy candidate.toml
  tollgate policy replay candidate.toml --audit /var/log/agent-audit --format json

Exit status: 0 the report was printed (whatever it says), 1 the policy is invalid or the log \
cannot be replayed (a tampered record is named), 2 usage error.")]
pub(crate) struct ReplayArgs {
    /// The candidate policy file (the same as --policy).
    #[arg(
        value_name = "POLICY",
        required_unless_present = "policy",
        conflicts_with = "policy"
    )]
    file: Option<PathBuf>,
    /// The candidate policy file (`.toml`, or JSON).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// The audit directory (a FileSink's) whose calls are re-decided, or one of its segment
    /// files (audit-NNNNNN.jsonl).
    #[arg(
        long = "log",
        visible_alias = "audit",
        value_name = "DIR",
        value_parser = PathBufValueParser::new().try_map(log_dir)
    )]
    log: PathBuf,
    /// Also check checkpoint MACs with this key while reading (repeat for retired keys).
    ///
    /// A key file holds one line: <key id>:<hex secret>.
    #[arg(long = "key-file", value_name = "FILE", value_parser = key_file())]
    keys: Vec<CheckpointKey>,
    /// How many examples to show per change (and of uncertain decisions).
    #[arg(long, value_name = "N", default_value_t = 5)]
    examples: usize,
    /// Do not verify the hash chain while reading (the results are then only as good as the
    /// log; not with --key-file).
    #[arg(long, conflicts_with = "keys")]
    no_verify: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReplayFormat::Text)]
    format: ReplayFormat,
    #[command(flatten)]
    progress: ProgressArgs,
}

impl ReplayArgs {
    /// The candidate policy file, given as POLICY or --policy.
    pub(super) fn policy_file(&self) -> &Path {
        match (&self.policy, &self.file) {
            (Some(p), _) | (None, Some(p)) => p,
            // clap requires one of them.
            (None, None) => Path::new(""),
        }
    }
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
        .replay(&a.log)
        .examples(a.examples)
        .verify(!a.no_verify);
    for key in a.keys {
        replay = replay.checkpoint_key(key);
    }
    // The report goes to standard output at the end, so a terminal on both is fine.
    let meter = Meter::new("replay", &a.progress, false);
    if let Some(m) = &meter {
        let m = Arc::clone(m);
        replay = replay.progress(move |p| m.update(p));
    }
    let result = replay.run();
    if let Some(m) = &meter {
        m.finish();
    }
    let report = result.map_err(|e| Failure::Input(format!("error: {e}")))?;
    match a.format {
        ReplayFormat::Text => print!("{report}"),
        ReplayFormat::Json => match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => return Err(Failure::Input(format!("error: {e}"))),
        },
    }
    Ok(ExitCode::SUCCESS)
}
