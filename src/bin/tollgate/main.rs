//! `tollgate`: the command-line tool around a tollgate deployment.
//!
//! - `tollgate policy check|explain|diff|matrix|keygen|sign|verify` work on policy documents;
//! - `tollgate audit ...` verifies and queries audit directories.
//!
//! Exit status: 0 success, 1 the input failed (an invalid policy, a tampered log, a refused
//! signature), 2 usage error. Run `tollgate help` or `tollgate <command> --help`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod policy;

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
    };
    match result {
        Ok(code) => code,
        Err(Failure::Input(msg)) => {
            eprintln!("{msg}");
            ExitCode::from(1)
        }
    }
}
