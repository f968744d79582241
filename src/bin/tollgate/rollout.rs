//! `tollgate rollout report`: agreement of recommend-mode recommendations with what humans did,
//! from an audit directory and the policy document's `[agreement]` comparators.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use clap::{Args, Subcommand, ValueEnum};
use tollgate::agreement::{Agreement, AgreementReport};
use tollgate::audit::query::Query;
use tollgate::policy::Policy;
use tollgate::rollout::{self, Evidence, ProposalKind, Rollout, TaskStatus, Trigger};

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
    /// Where each task type of the policy's [rollout] stands.
    ///
    /// Reads the audit log (verifying its chain) and prints, per task type, its current stage
    /// (the mode its [modes] rule gives), the figures of the current stage (cases, agreement
    /// with its 95% Wilson interval, safety denials, budget overruns, human denials, breaker
    /// trips), every promotion criterion with what it asks and what the log shows, and the
    /// proposal: a demotion (due at once, back to the first stage) or a promotion (proposed
    /// only, unless the document sets auto_promote). With --write, the policy document with the
    /// changes that apply is written as JSON for the operator to sign and reload.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The audit directory (a FileSink's).
    #[arg(long = "log", value_name = "DIR")]
    log: PathBuf,
    /// The policy document with the [rollout] section.
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
    format: StatusFormat,
    /// Write the document with the changes that apply (demotions; promotions under
    /// auto_promote) here, as JSON. Nothing is written when nothing applies.
    #[arg(long, value_name = "FILE")]
    write: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StatusFormat {
    /// Text for a terminal.
    Text,
    /// One JSON object.
    Json,
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
    /// A Markdown evidence report for a reviewer's file: the policy's name and version,
    /// agreement per task type and tool, calibration, the disagreement catalogue, and (if the
    /// policy has `[rollout]`) each task type's stage with every criterion's required and actual
    /// figure.
    Md,
}

pub(crate) fn run(cmd: RolloutCommand) -> Result<ExitCode, Failure> {
    match cmd {
        RolloutCommand::Report(a) => report(a),
        RolloutCommand::Status(a) => status(a),
    }
}

fn status(a: StatusArgs) -> Result<ExitCode, Failure> {
    let policy = Policy::from_file(&a.policy)
        .map_err(|e| Failure::Input(format!("{}: {e}", a.policy.display())))?;
    let Some(rollout) = policy.rollout() else {
        return Err(Failure::Input(format!(
            "{}: the policy has no [rollout] section",
            a.policy.display()
        )));
    };
    let exact = Agreement::exact();
    let agreement = policy.agreement().unwrap_or(&exact);
    let evidence = Evidence::from_log(&a.log, rollout, agreement, Query::new())
        .map_err(|e| Failure::Input(format!("tollgate: FAILED: {e}")))?;
    let now = SystemTime::now();
    let statuses = rollout::status(rollout, &evidence, now);
    let proposals: Vec<_> = statuses.iter().filter_map(|s| s.proposal.clone()).collect();
    let written = match &a.write {
        Some(path) => match rollout::apply(policy.document(), &proposals) {
            Some(doc) => {
                let next = Policy::from_document(doc).map_err(|e| {
                    Failure::Input(format!(
                        "tollgate: the changed document does not compile: {e}"
                    ))
                })?;
                let mut text = serde_json::to_string_pretty(next.document())
                    .map_err(|e| Failure::Input(format!("tollgate: {e}")))?;
                text.push('\n');
                std::fs::write(path, text)
                    .map_err(|e| Failure::Input(format!("{}: {e}", path.display())))?;
                Some((path.clone(), next.version()))
            }
            None => None,
        },
        None => None,
    };
    let text = match a.format {
        StatusFormat::Json => {
            let v = serde_json::json!({
                "policy": policy.document().policy.name,
                "policy_version": policy.version().to_string(),
                "records": evidence.records,
                "auto_promote": rollout.auto_promote(),
                "task_types": statuses,
                "written": written.as_ref().map(|(p, v)| serde_json::json!({
                    "path": p.display().to_string(),
                    "policy_version": v.to_string(),
                })),
            });
            let mut s = serde_json::to_string_pretty(&v)
                .map_err(|e| Failure::Input(format!("tollgate: {e}")))?;
            s.push('\n');
            s
        }
        StatusFormat::Text => status_text(
            &policy,
            rollout,
            evidence.records,
            &statuses,
            written.as_ref(),
        ),
    };
    let mut out = std::io::stdout().lock();
    if out
        .write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn status_text(
    policy: &Policy,
    rollout: &Rollout,
    records: u64,
    statuses: &[TaskStatus],
    written: Option<&(PathBuf, tollgate::verdict::PolicyVersion)>,
) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "rollout of {} ({} records used; promotions {})",
        policy.document().policy.name,
        records,
        if rollout.auto_promote() {
            "apply automatically"
        } else {
            "are proposed only"
        }
    );
    for t in statuses {
        let e = &t.evidence;
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{}: stage {} of {} ({}){}",
            t.task_type,
            t.stage_index + 1,
            t.stages.len(),
            t.stage,
            t.next.map(|n| format!(", next {n}")).unwrap_or_default()
        );
        let agreement = match (e.agreement_lower, e.agreement_upper) {
            (Some(l), Some(u)) => format!(
                "{}/{} agree ({:.1} %, 95% CI {:.1}-{:.1} %)",
                e.agreements,
                e.cases,
                100.0 * e.agreements as f64 / e.cases.max(1) as f64,
                100.0 * l,
                100.0 * u
            ),
            _ => "no answered cases".into(),
        };
        let _ = writeln!(
            s,
            "  evidence: {} decisions in this stage, {agreement}; edits {}, safety denials {}, budget overruns {}, human denials {}, breaker trips {}",
            e.decisions,
            e.edits,
            e.safety_denials,
            e.budget_overruns,
            e.human_denials,
            e.breaker_trips
        );
        if t.criteria.is_empty() {
            let _ = writeln!(s, "  promotion: none from this stage");
        }
        for c in &t.criteria {
            let _ = writeln!(
                s,
                "  [{}] {} {}: {}",
                if c.met { "met" } else { "UNMET" },
                c.name,
                c.required,
                c.actual
            );
        }
        for tr in &t.triggers {
            let _ = match tr {
                Trigger::Event(ev) => writeln!(
                    s,
                    "  trigger: {} ({}) at seq {} in run {}",
                    ev.kind, ev.detail, ev.seq, ev.run
                ),
                Trigger::AgreementBelow {
                    bound,
                    lower,
                    cases,
                } => writeln!(
                    s,
                    "  trigger: agreement lower bound {lower:.4} < {bound} over {cases} cases"
                ),
                _ => writeln!(s, "  trigger: {tr:?}"),
            };
        }
        match &t.proposal {
            Some(p) if p.kind == ProposalKind::Demote => {
                let _ = writeln!(s, "  DEMOTE {} -> {} (applies at once)", p.from, p.to);
            }
            Some(p) => {
                let _ = writeln!(
                    s,
                    "  PROMOTE {} -> {} ({})",
                    p.from,
                    p.to,
                    if p.applies {
                        "auto_promote: applies"
                    } else {
                        "proposed: sign and reload a policy with the change"
                    }
                );
            }
            None => {
                let _ = writeln!(s, "  no change");
            }
        }
    }
    if let Some((path, v)) = written {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "wrote {} (policy version {v}): sign it if you sign policies, and reload the guard",
            path.display()
        );
    }
    s
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
        Format::Md => {
            let statuses = match policy.rollout() {
                Some(rollout) => {
                    let evidence = Evidence::from_log(&a.log, rollout, agreement, Query::new())
                        .map_err(|e| Failure::Input(format!("tollgate: FAILED: {e}")))?;
                    Some((
                        evidence.records,
                        rollout::status(rollout, &evidence, SystemTime::now()),
                    ))
                }
                None => None,
            };
            markdown(&policy, &report, statuses.as_ref())
        }
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

/// A Markdown table cell: no pipes or line breaks inside.
fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn md_pct(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |x| format!("{:.1}%", x * 100.0))
}

fn md_rate_row(s: &mut String, task: &str, tool: &str, r: &tollgate::agreement::Rate) {
    use std::fmt::Write as _;
    let interval = match (r.lower, r.upper) {
        (Some(l), Some(u)) => format!("{:.1}% to {:.1}%", l * 100.0, u * 100.0),
        _ => "-".into(),
    };
    let _ = writeln!(
        s,
        "| {} | {} | {} | {} | {} | {} | {} |",
        md_cell(task),
        md_cell(tool),
        r.cases,
        r.agreements,
        md_pct(r.rate),
        interval,
        r.unanswered
    );
}

/// The Markdown evidence report.
fn markdown(
    policy: &Policy,
    r: &AgreementReport,
    rollout: Option<&(u64, Vec<TaskStatus>)>,
) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let name = &policy.document().policy.name;
    let _ = writeln!(s, "# Evidence report: {}\n", md_cell(name));
    let _ = writeln!(s, "- Policy: {}", md_cell(name));
    let _ = writeln!(s, "- Policy version: {}", policy.version());
    if !r.policy_versions.is_empty() {
        let _ = writeln!(
            s,
            "- Versions the recommendations were made under: {}",
            r.policy_versions.join(", ")
        );
    }
    let _ = writeln!(s, "- Records read: {}", r.records);
    let _ = writeln!(
        s,
        "- Recommendations: {} ({} answered by a human, {} unanswered)",
        r.recommendations, r.overall.cases, r.overall.unanswered
    );
    if r.orphan_actions > 0 {
        let _ = writeln!(
            s,
            "- Human actions without their recommendation: {}",
            r.orphan_actions
        );
    }

    s.push_str("\n## Agreement\n\n");
    s.push_str("| task type | tool | cases | agreed | rate | 95% Wilson interval | unanswered |\n");
    s.push_str("|---|---|--:|--:|--:|---|--:|\n");
    for g in &r.groups {
        md_rate_row(
            &mut s,
            g.task_type.as_deref().unwrap_or("(none)"),
            &g.tool,
            &g.figures,
        );
    }
    md_rate_row(&mut s, "(all)", "", &r.overall);

    let c = &r.calibration;
    s.push_str("\n## Calibration\n\n");
    let _ = writeln!(
        s,
        "- Brier score: {}",
        c.brier.map_or_else(|| "-".into(), |b| format!("{b:.4}"))
    );
    let _ = writeln!(s, "- Cases with a confidence: {}", c.cases);
    let _ = writeln!(s, "- Cases without a confidence: {}", c.without_confidence);
    let _ = writeln!(s, "- Largest bin gap: {}\n", md_pct(c.max_gap));
    s.push_str("| confidence | cases | agreed | mean confidence | observed agreement |\n");
    s.push_str("|---|--:|--:|--:|--:|\n");
    for b in &c.bins {
        let _ = writeln!(
            s,
            "| [{:.2}, {:.2}{} | {} | {} | {} | {} |",
            b.from,
            b.to,
            if b.to >= 1.0 { "]" } else { ")" },
            b.cases,
            b.agreements,
            b.mean_confidence
                .map_or_else(|| "-".into(), |m| format!("{m:.3}")),
            md_pct(b.observed)
        );
    }

    s.push_str("\n## Disagreements\n\n");
    let total: u64 = r.catalogue.iter().map(|e| e.count).sum();
    let _ = writeln!(
        s,
        "{} disagreements in {} kinds.\n",
        total,
        r.catalogue.len()
    );
    if !r.catalogue.is_empty() {
        s.push_str("| tool | kind | argument / tool | count |\n");
        s.push_str("|---|---|---|--:|\n");
        for e in &r.catalogue {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                md_cell(&e.tool),
                md_cell(&e.kind),
                md_cell(e.detail.as_deref().unwrap_or("")),
                e.count
            );
        }
    }

    s.push_str("\n## Rollout\n\n");
    match rollout {
        None => s.push_str("The policy has no `[rollout]` section.\n"),
        Some((records, statuses)) => {
            let _ = writeln!(s, "{records} records used.");
            for t in statuses {
                let _ = writeln!(
                    s,
                    "\n### {}: stage {} of {} ({}){}\n",
                    md_cell(&t.task_type),
                    t.stage_index + 1,
                    t.stages.len(),
                    t.stage,
                    t.next.map(|n| format!(", next {n}")).unwrap_or_default()
                );
                if t.criteria.is_empty() {
                    s.push_str("No promotion from this stage.\n");
                } else {
                    s.push_str("| criterion | required | actual | met |\n");
                    s.push_str("|---|---|---|---|\n");
                    for c in &t.criteria {
                        let _ = writeln!(
                            s,
                            "| {} | {} | {} | {} |",
                            c.name,
                            md_cell(&c.required),
                            md_cell(&c.actual),
                            if c.met { "yes" } else { "no" }
                        );
                    }
                }
                for tr in &t.triggers {
                    let _ = match tr {
                        Trigger::Event(ev) => writeln!(
                            s,
                            "- Demotion trigger: {} ({}) at seq {} in run {}",
                            ev.kind,
                            md_cell(&ev.detail),
                            ev.seq,
                            ev.run
                        ),
                        Trigger::AgreementBelow {
                            bound,
                            lower,
                            cases,
                        } => writeln!(
                            s,
                            "- Demotion trigger: agreement lower bound {lower:.4} < {bound} over {cases} cases"
                        ),
                        _ => writeln!(s, "- Demotion trigger: {tr:?}"),
                    };
                }
                match &t.proposal {
                    Some(p) if p.kind == ProposalKind::Demote => {
                        let _ = writeln!(s, "- Proposal: demote {} to {}", p.from, p.to);
                    }
                    Some(p) => {
                        let _ = writeln!(s, "- Proposal: promote {} to {}", p.from, p.to);
                    }
                    None => {}
                }
            }
        }
    }
    s
}
