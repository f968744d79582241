//! `tollgate rollout report`: agreement of recommend-mode recommendations with what humans did,
//! from an audit directory and the policy document's `[agreement]` comparators.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand, ValueEnum};
use tollgate::agreement::{Agreement, AgreementReport};
use tollgate::audit::query::Query;
use tollgate::policy::Policy;

use crate::Failure;
use crate::progress::{Meter, ProgressArgs};

/// `tollgate rollout ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum RolloutCommand {
    /// Agreement between the agent's recommendations and the humans' actions.
    ///
    /// Pairs every recommendation (a decision record carrying tollgate.recommendation.id) with
    /// the human_action record that answers it, compares them with the policy's [agreement]
    /// comparators (exact for tools it does not list), and prints agreement per task type and
    /// tool with 95% Wilson intervals, the disagreements by kind, and the calibration of the
    /// agent's confidence (reliability bins, Brier score). Recommendations no human answered are
    /// counted as unanswered. The log's hash chain is verified while reading: a log that does
    /// not verify gives no report (exit 1).
    Report(ReportArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    /// The audit directory (a FileSink's).
    #[arg(long = "log", value_name = "DIR")]
    log: PathBuf,
    /// The policy document whose [agreement] section holds the comparators.
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Write here instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    out: Option<PathBuf>,
    #[command(flatten)]
    progress: ProgressArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Tables for a terminal.
    Text,
    /// The report as one JSON object.
    Json,
    /// A self-contained HTML page with a reliability diagram and agreement over time (inline
    /// SVG, no script).
    Html,
}

pub(crate) fn run(cmd: RolloutCommand) -> Result<ExitCode, Failure> {
    match cmd {
        RolloutCommand::Report(a) => report(a),
    }
}

fn report(a: ReportArgs) -> Result<ExitCode, Failure> {
    let policy = Policy::from_file(&a.policy)
        .map_err(|e| Failure::Input(format!("{}: {e}", a.policy.display())))?;
    let exact = Agreement::exact();
    let agreement = policy.agreement().unwrap_or(&exact);
    let mut query = Query::new();
    let meter = Meter::new("report", &a.progress, a.out.is_none());
    if let Some(m) = &meter {
        let m = Arc::clone(m);
        query = query.progress(move |p| m.update(p));
    }
    let result = AgreementReport::from_log(&a.log, agreement, query);
    if let Some(m) = &meter {
        m.finish();
    }
    let report = result.map_err(|e| Failure::Input(format!("tollgate: FAILED: {e}")))?;
    let text = match a.format {
        Format::Text => report.to_text(),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&report)
                .map_err(|e| Failure::Input(format!("tollgate: cannot write the report: {e}")))?;
            s.push('\n');
            s
        }
        Format::Html => report.to_html(&format!(
            "Agreement report: {}",
            policy.document().policy.name
        )),
    };
    match &a.out {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| Failure::Input(format!("{}: {e}", path.display())))?,
        None => {
            let mut out = std::io::stdout().lock();
            if out
                .write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
            {
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
