//! `tollgate audit verify|query|repair`: the hash-chained JSON Lines segments a
//! `tollgate::audit::file::FileSink` writes.
//!
//! Exit status: 0 success, 1 the log failed verification or could not be read (nothing printed
//! from it is to be trusted), 2 usage error (clap's, and a PATH, key file or TIME that cannot be
//! used, which are checked while parsing the command line).

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::builder::{PathBufValueParser, TypedValueParser};
use clap::{Args, Subcommand, ValueEnum};
use tollgate::audit::file::{
    self, CheckpointConfig, CheckpointKey, DirWitness, FileSink, RepairOptions, RepairPlan,
    VerifyOptions, VerifyReport, WitnessConfig,
};
use tollgate::audit::query::Query;

use crate::progress::{Meter, ProgressArgs};

/// The exit statuses, shown under every `tollgate audit` help.
pub(crate) const EXIT_STATUS: &str = "\
EXIT STATUS: 0 ok (repair: planned or done, or nothing to repair), 1 verification or repair \
failed or the log could not be read (nothing printed from it is to be trusted), 2 usage error.";

/// `tollgate audit ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Check every record: frame, seq order, hash links, checkpoints, retention declarations.
    ///
    /// Prints one summary line (records, segments, head hash, checkpoints) and exits 0, or
    /// prints the first bad record (file, line, seq, what is wrong) and exits 1.
    ///
    /// Then prints one `notice:` line for each thing the log declares about itself: records
    /// adopted on reopen, acknowledged events a failed writer lost, records a repair removed, a
    /// retention deletion not finished.
    #[command(
        after_help = EXIT_STATUS,
        override_usage = "tollgate audit verify [OPTIONS] <PATH>\n       tollgate audit verify [OPTIONS] --policy <FILE>"
    )]
    Verify(VerifyArgs),
    /// Print the records that match the filters, as JSON lines, verifying the chain as it reads.
    ///
    /// Prints each matching record as one JSON line {"seq":<record seq>,"event":{...}}, in log
    /// order, and a summary line on standard error. The chain is verified while reading: if
    /// tampering is met, what was printed is not to be trusted, the error goes to standard error
    /// and the exit status is 1.
    ///
    /// A filter given several times matches any of its values; different filters must all
    /// match.
    #[command(
        after_help = EXIT_STATUS,
        override_usage = "tollgate audit query [OPTIONS] <PATH>\n       tollgate audit query [OPTIONS] --policy <FILE>"
    )]
    Query(QueryArgs),
    /// Remove a damaged end of the log (which a FileSink refuses to open).
    ///
    /// Removes everything from the first record that fails verification (or from the record
    /// after --cut-after SEQ) to the end. Without --yes it only prints the plan: the cut, the
    /// lines, bytes and seqs it would remove. With --yes it carries the plan out: keeps the
    /// removed bytes in repair-<time>.removed in the directory, and writes a repair declaration
    /// into the chain (with a checkpoint, given a key) that verify reports. No sink may have the
    /// directory open.
    #[command(
        after_help = EXIT_STATUS,
        override_usage = "tollgate audit repair [OPTIONS] <PATH>"
    )]
    Repair(RepairArgs),
}

/// The audit directory, or the PostgreSQL database a policy document names.
#[derive(Debug, Args)]
pub(crate) struct LogPath {
    /// The audit directory, or one of its segment files (audit-NNNNNN.jsonl).
    ///
    /// A segment file stands for its directory: the hash chain runs through every segment in
    /// order, so a segment cannot be verified on its own.
    #[arg(
        value_name = "PATH",
        value_parser = PathBufValueParser::new().try_map(log_dir),
        required_unless_present = "policy"
    )]
    dir: Option<PathBuf>,
    /// Read the trail from PostgreSQL instead: the database and schema this policy document's
    /// `[backend]` section names (kind = "postgres"; the connection string is read from the
    /// environment variable its url_env names). Needs a tollgate built with feature postgres.
    #[arg(long, value_name = "FILE", conflicts_with = "dir")]
    policy: Option<PathBuf>,
}

impl LogPath {
    /// The directory (clap guarantees one when `--policy` is absent).
    fn dir(&self) -> &std::path::Path {
        self.dir.as_deref().unwrap_or(std::path::Path::new("."))
    }
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    path: LogPath,
    /// Also check checkpoint MACs with this key (repeat for retired keys).
    ///
    /// A key file holds one line: <key id>:<hex secret>.
    #[arg(long = "key-file", value_name = "FILE", value_parser = key_file())]
    keys: Vec<CheckpointKey>,
    /// The head a FileSink published to a DirWitness: the chain must reach it with the same hash.
    ///
    /// Without one, records cut off the end of the log are not detected.
    #[arg(long = "witness-file", value_name = "FILE")]
    witness: Option<PathBuf>,
    /// Fail if records follow the last checkpoint.
    ///
    /// A log closed cleanly has none; a live log's tail is uncovered until its next checkpoint.
    #[arg(long)]
    require_covered: bool,
    /// Fail if the log declares anything (the `notice:` lines).
    #[arg(long)]
    require_clean: bool,
    #[command(flatten)]
    progress: ProgressArgs,
}

#[derive(Debug, Args)]
pub(crate) struct QueryArgs {
    #[command(flatten)]
    path: LogPath,
    /// Records whose tollgate.run.id equals ID.
    #[arg(long = "run", value_name = "ID")]
    runs: Vec<String>,
    /// Records whose gen_ai.agent.id equals ID.
    #[arg(long = "agent", value_name = "ID")]
    agents: Vec<String>,
    /// Records whose gen_ai.tool.name equals NAME.
    #[arg(long = "tool", value_name = "NAME")]
    tools: Vec<String>,
    /// Records of this event kind: run_started, decision, outcome, run_finished, checkpoint,
    /// retention_applied, ...
    #[arg(long = "kind", value_name = "KIND")]
    kinds: Vec<String>,
    /// Decisions with this tollgate.decision.
    #[arg(long = "decision", value_enum, value_name = "D")]
    decisions: Vec<DecisionArg>,
    /// Records with time_unix_nano >= TIME.
    ///
    /// TIME is unix nanoseconds (1700000000000000000), a whole number with a unit (1700000000s,
    /// 1700000000000ms, 1700000000000000us, 1700000000000000000ns), or RFC 3339 in UTC or with
    /// an offset (2024-05-01T12:00:00Z, 2024-05-01T14:00:00.250+02:00). A time without an
    /// offset is refused: it could be local time or UTC.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    since: Option<u64>,
    /// Records with time_unix_nano < TIME.
    ///
    /// TIME is unix nanoseconds (1700000000000000000), a whole number with a unit (1700000000s,
    /// 1700000000000ms, 1700000000000000us, 1700000000000000000ns), or RFC 3339 in UTC or with
    /// an offset (2024-05-01T12:00:00Z, 2024-05-01T14:00:00.250+02:00).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    until: Option<u64>,
    /// Also check checkpoint MACs with this key while reading (repeat for retired keys).
    ///
    /// A key file holds one line: <key id>:<hex secret>.
    #[arg(long = "key-file", value_name = "FILE", value_parser = key_file())]
    keys: Vec<CheckpointKey>,
    /// Do not check the chain (lines must still parse; not with --key-file).
    #[arg(long, conflicts_with = "keys")]
    no_verify: bool,
    #[command(flatten)]
    progress: ProgressArgs,
}

#[derive(Debug, Args)]
pub(crate) struct RepairArgs {
    #[command(flatten)]
    path: LogPath,
    /// The log's checkpoint key (the first signs; repeat for retired keys).
    ///
    /// Required for a log with checkpoints. A key file holds one line: <key id>:<hex secret>.
    #[arg(long = "key-file", value_name = "FILE", value_parser = key_file())]
    keys: Vec<CheckpointKey>,
    /// The log's DirWitness: a witnessed head the cut removes is declared gone, and the new head
    /// is published.
    #[arg(long = "witness-file", value_name = "FILE")]
    witness: Option<PathBuf>,
    /// Cut after this record instead of at the first damage.
    #[arg(long, value_name = "SEQ", value_parser = parse_seq)]
    cut_after: Option<u64>,
    /// Recorded in the declaration.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Carry the plan out (without it, only print it).
    #[arg(long)]
    yes: bool,
}

/// A `tollgate.decision` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DecisionArg {
    /// The call was allowed.
    Allow,
    /// The call was escalated for approval.
    Escalate,
    /// The call was denied.
    Deny,
}

impl DecisionArg {
    fn as_str(self) -> &'static str {
        match self {
            DecisionArg::Allow => "allow",
            DecisionArg::Escalate => "escalate",
            DecisionArg::Deny => "deny",
        }
    }
}

pub(crate) fn run(cmd: AuditCommand) -> ExitCode {
    match cmd {
        AuditCommand::Verify(a) => run_verify(a),
        AuditCommand::Query(a) => run_query(a),
        AuditCommand::Repair(a) => run_repair(a),
    }
}

/// The directory a PATH stands for: itself, or the directory of a segment file.
pub(crate) fn log_dir(path: PathBuf) -> Result<PathBuf, String> {
    let meta = std::fs::metadata(&path)
        .map_err(|_| format!("{}: no such file or directory", path.display()))?;
    if meta.is_dir() {
        return Ok(path);
    }
    let is_segment = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("audit-"))
        .and_then(|n| n.strip_suffix(".jsonl"))
        .is_some_and(|d| d.len() >= 6 && d.bytes().all(|b| b.is_ascii_digit()));
    if !is_segment {
        return Err(format!(
            "{} is a file but not an audit segment (audit-NNNNNN.jsonl)",
            path.display()
        ));
    }
    Ok(match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    })
}

/// Reads a `--key-file` while parsing: a key that cannot be read is a usage error.
pub(crate) fn key_file() -> impl TypedValueParser<Value = CheckpointKey> {
    PathBufValueParser::new().try_map(CheckpointKey::from_key_file)
}

fn parse_seq(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .map_err(|_| format!("`{s}` is not a record seq"))
}

/// Unix nanoseconds from `1700000000000000000`, `1700000000s` (also `ms`, `us`, `ns`) or
/// RFC 3339 with `Z` or an offset.
///
/// RFC 3339 is parsed by `jiff` (`humantime`, already a dependency, reads only UTC times and
/// takes a time without an offset as UTC, where it could as well be local time). The number
/// forms are split by hand: `tollgate::units::parse_duration` would read a bare number (the
/// main form here, as in `time_unix_nano`) as an error and accept `5h` or `1h 30m` since 1970,
/// which no one means by a point in time.
fn parse_time(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = s.split_at(digits);
    if unit.contains(['-', ':']) {
        return parse_rfc3339(s);
    }
    if num.is_empty() {
        return Err(format!(
            "`{s}` is neither a number of nanoseconds, a number with a unit nor RFC 3339"
        ));
    }
    let scale: u64 = match unit {
        "" | "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        other => return Err(format!("unknown unit `{other}` (use s, ms, us or ns)")),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("`{s}` is out of range"))
}

fn parse_rfc3339(s: &str) -> Result<u64, String> {
    let t: jiff::Timestamp = s
        .parse()
        .map_err(|e| format!("`{s}` is not RFC 3339 (e.g. 2024-05-01T12:00:00Z): {e}"))?;
    u64::try_from(t.as_nanosecond()).map_err(|_| {
        if t.as_nanosecond() < 0 {
            format!("`{s}` is before 1970")
        } else {
            format!("`{s}` is out of range")
        }
    })
}

fn run_verify(a: VerifyArgs) -> ExitCode {
    if let Some(policy) = &a.path.policy {
        return pg::verify(policy, &a.keys, a.require_covered);
    }
    let mut options = VerifyOptions::new().require_coverage(a.require_covered);
    for key in a.keys {
        options = options.key(key);
    }
    if let Some(w) = &a.witness {
        options = match options.witness(&DirWitness::new(w)) {
            Ok(o) => o,
            Err(e) => {
                println!("FAILED: {e}");
                return ExitCode::from(1);
            }
        };
    }
    let meter = Meter::new("verify", &a.progress, false);
    if let Some(m) = &meter {
        let m = Arc::clone(m);
        options = options.progress(move |p| m.update(p));
    }
    let result = file::verify_with(a.path.dir(), &options);
    if let Some(m) = &meter {
        m.finish();
    }
    match result {
        Ok(report) => {
            println!("{}", summary(&report, &options));
            for n in &report.notices {
                println!("notice: {n}");
            }
            if a.require_clean && !report.is_clean() {
                println!(
                    "FAILED: the log declares {} notice(s) and --require-clean was given",
                    report.notices.len()
                );
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            // The error's own text names the file, line, seq and what is wrong.
            println!("FAILED: {e}");
            ExitCode::from(1)
        }
    }
}

fn summary(r: &VerifyReport, options: &VerifyOptions) -> String {
    let mut s = format!(
        "ok: {} records (seq {}..={}) in {} segments, head {}",
        r.records, r.first_seq, r.last_seq, r.segments, r.head_hash
    );
    if let Some(w) = r.witnessed_seq {
        s.push_str(&format!(", reaches the witnessed head (seq {w})"));
    }
    if r.dropped_through > 0 {
        s.push_str(&format!(
            ", seq 1..={} dropped by declared retention",
            r.dropped_through
        ));
    }
    s.push_str(&format!(", {} checkpoints", r.checkpoints));
    if r.macs_verified {
        let ids: Vec<&str> = options.keys.iter().map(CheckpointKey::id).collect();
        s.push_str(&format!(
            " (MACs verified with {}), {} trailing records not covered by a checkpoint, {} \
             adopted on reopen",
            ids.join(", "),
            r.uncovered_records,
            r.adopted_records
        ));
    } else if r.checkpoints > 0 {
        s.push_str(" (MACs not checked: no --key-file)");
    }
    s
}

fn run_query(a: QueryArgs) -> ExitCode {
    let policy = a.path.policy.clone();
    let keys = a.keys.clone();
    let mut query = Query::new();
    for v in a.runs {
        query = query.run(v);
    }
    for v in a.agents {
        query = query.agent(v);
    }
    for v in a.tools {
        query = query.tool(v);
    }
    for v in a.kinds {
        query = query.kind(v);
    }
    for d in a.decisions {
        query = query.decision(d.as_str());
    }
    if let Some(ns) = a.since {
        query = query.since_unix_nanos(ns);
    }
    if let Some(ns) = a.until {
        query = query.until_unix_nanos(ns);
    }
    for key in a.keys {
        query = query.checkpoint_key(key);
    }
    if a.no_verify {
        query = query.verify_while_reading(false);
    }
    if let Some(policy) = &policy {
        return pg::query(policy, &query, &keys, !a.no_verify);
    }
    let meter = Meter::new("query", &a.progress, true);
    if let Some(m) = &meter {
        let m = Arc::clone(m);
        query = query.progress(move |p| m.update(p));
    }
    let finish = || {
        if let Some(m) = &meter {
            m.finish();
        }
    };
    let mut records = match query.open(a.path.dir()) {
        Ok(r) => r,
        Err(e) => {
            finish();
            eprintln!("tollgate: FAILED: {e}");
            return ExitCode::from(1);
        }
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut matched = 0u64;
    for item in records.by_ref() {
        match item {
            Ok(rec) => {
                matched += 1;
                let line = serde_json::json!({ "seq": rec.seq, "event": rec.event });
                let written = serde_json::to_writer(&mut out, &line)
                    .map_err(io::Error::from)
                    .and_then(|()| out.write_all(b"\n"));
                if written.is_err() {
                    // The reader went away (e.g. `| head`): stop; the log was not fully checked.
                    finish();
                    return ExitCode::from(1);
                }
            }
            Err(e) => {
                let _ = out.flush();
                finish();
                eprintln!(
                    "tollgate: FAILED after {matched} matching records (do not trust them): {e}"
                );
                return ExitCode::from(1);
            }
        }
    }
    finish();
    if out.flush().is_err() {
        return ExitCode::from(1);
    }
    match records.report() {
        Some(r) => eprintln!(
            "tollgate: {matched} matching records; chain verified ({} records, head {})",
            r.records, r.head_hash
        ),
        None => {
            eprintln!("tollgate: {matched} matching records; chain NOT verified (--no-verify)")
        }
    }
    ExitCode::SUCCESS
}

fn run_repair(a: RepairArgs) -> ExitCode {
    if a.path.policy.is_some() {
        eprintln!(
            "repair works on audit directories; a PostgreSQL trail is never cut (verify names \
             the first bad record)"
        );
        return ExitCode::from(2);
    }
    let mut options = RepairOptions::new();
    if let Some(seq) = a.cut_after {
        options = options.cut_after(seq);
    }
    if let Some(reason) = a.reason {
        options = options.reason(reason);
    }
    if let Some((signing, retired)) = a.keys.split_first() {
        let mut cp = CheckpointConfig::new(signing.clone());
        for k in retired {
            cp = cp.retired_key(k.clone());
        }
        options = options.checkpoint(cp);
    }
    if let Some(w) = a.witness {
        options = options.witness(WitnessConfig::new(Arc::new(DirWitness::new(w))));
    }
    let dir = a.path.dir();
    let plan = match FileSink::plan_repair(dir, &options) {
        Ok(Some(plan)) => plan,
        Ok(None) => {
            println!("nothing to repair: the log verifies");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            println!("FAILED: {e}");
            return ExitCode::from(1);
        }
    };
    print_plan(&plan);
    if !a.yes {
        println!("planned only: run again with --yes to carry this out");
        return ExitCode::SUCCESS;
    }
    match FileSink::repair(dir, &options, &plan) {
        Ok(done) => {
            println!(
                "repaired: declaration at seq {}, removed bytes kept in {}, log ends at seq {}",
                done.declaration_seq,
                done.saved_as.display(),
                done.last_seq
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("FAILED: {e}");
            ExitCode::from(1)
        }
    }
}

fn print_plan(plan: &RepairPlan) {
    println!("problem: {}", plan.problem);
    println!(
        "cut: {} from byte {} (line {}), keeping records up to seq {}",
        plan.cut_file.display(),
        plan.cut_offset,
        plan.cut_line,
        plan.after_seq
    );
    for s in &plan.removed_segments {
        println!("remove segment: {}", s.display());
    }
    println!(
        "removes {} line(s), {} bytes, sha256 {}; seqs they claim: {}; declares seqs {}..={} gone",
        plan.removed_lines,
        plan.removed_bytes,
        plan.removed_sha256,
        plan.removed_seqs
            .as_ref()
            .map_or("none readable".to_owned(), |r| format!(
                "{}..={}",
                r.start(),
                r.end()
            )),
        plan.after_seq + 1,
        plan.removed_through_seq
    );
}

/// The PostgreSQL source of `verify` and `query` (`--policy FILE`).
#[cfg(feature = "postgres")]
mod pg {
    use std::io::{self, Write};
    use std::path::Path;
    use std::process::ExitCode;

    use tollgate::audit::file::CheckpointKey;
    use tollgate::audit::query::Query;
    use tollgate::backend::postgres::PgBackend;
    use tollgate::backend::postgres::audit::{self, PgVerifyReport};
    use tollgate::policy::Policy;

    /// Connects to the database the document's `[backend]` names; `Err`: the exit code.
    fn connect(policy: &Path) -> Result<(postgres::Client, String), ExitCode> {
        let doc = Policy::from_file(policy).map_err(|e| {
            eprintln!("tollgate: {}: {e}", policy.display());
            ExitCode::from(2)
        })?;
        let Some(section) = doc.document().backend.as_ref() else {
            eprintln!(
                "tollgate: {}: the document has no [backend] section (kind = \"postgres\")",
                policy.display()
            );
            return Err(ExitCode::from(2));
        };
        let backend = PgBackend::from_section(section).map_err(|e| {
            eprintln!("tollgate: {e}");
            ExitCode::from(2)
        })?;
        let client = backend.connect().map_err(|e| {
            eprintln!("tollgate: FAILED: {e}");
            ExitCode::from(1)
        })?;
        Ok((client, backend.schema().to_owned()))
    }

    fn summary(r: &PgVerifyReport, keyed: bool) -> String {
        format!(
            "OK: {} records ({} events) in {} writer chains, {} checkpoints{}, {} retention \
             declarations, {} records after the last checkpoint of their chain",
            r.records,
            r.events,
            r.writers,
            r.checkpoints,
            if keyed {
                " (MACs verified)"
            } else {
                " (MACs not checked: no --key-file)"
            },
            r.declarations,
            r.uncovered_records
        )
    }

    pub(super) fn verify(policy: &Path, keys: &[CheckpointKey], require_covered: bool) -> ExitCode {
        let (mut client, schema) = match connect(policy) {
            Ok(c) => c,
            Err(code) => return code,
        };
        match audit::verify(&mut client, &schema, keys) {
            Ok(r) => {
                println!("{}", summary(&r, !keys.is_empty()));
                for (w, (first, last)) in &r.chains {
                    println!("chain `{w}`: seq {first}..={last}");
                }
                if require_covered && r.uncovered_records > 0 {
                    println!(
                        "FAILED: {} records follow the last checkpoint of their chain",
                        r.uncovered_records
                    );
                    return ExitCode::from(1);
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                println!("FAILED: {e}");
                ExitCode::from(1)
            }
        }
    }

    pub(super) fn query(
        policy: &Path,
        q: &Query,
        keys: &[CheckpointKey],
        verify_first: bool,
    ) -> ExitCode {
        let (mut client, schema) = match connect(policy) {
            Ok(c) => c,
            Err(code) => return code,
        };
        if verify_first && let Err(e) = audit::verify(&mut client, &schema, keys) {
            eprintln!("tollgate: FAILED: {e}");
            return ExitCode::from(1);
        }
        let stdout = io::stdout();
        let mut out = io::BufWriter::new(stdout.lock());
        let mut broken = false;
        let result = audit::query(&mut client, &schema, q, |rec| {
            let line =
                serde_json::json!({ "writer": rec.writer, "seq": rec.seq, "event": rec.event });
            let ok = serde_json::to_writer(&mut out, &line)
                .map_err(io::Error::from)
                .and_then(|()| out.write_all(b"\n"))
                .is_ok();
            broken |= !ok;
            ok
        });
        let _ = out.flush();
        match result {
            Ok(_) if broken => ExitCode::from(1),
            Ok(n) => {
                eprintln!(
                    "{n} records matched{}",
                    if verify_first {
                        " (trail verified first)"
                    } else {
                        " (not verified)"
                    }
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tollgate: FAILED: {e}");
                ExitCode::from(1)
            }
        }
    }
}

/// Without feature `postgres`, `--policy` is refused.
#[cfg(not(feature = "postgres"))]
mod pg {
    use std::path::Path;
    use std::process::ExitCode;

    use tollgate::audit::file::CheckpointKey;
    use tollgate::audit::query::Query;

    fn unavailable() -> ExitCode {
        eprintln!("tollgate: --policy reads a PostgreSQL trail: rebuild with feature `postgres`");
        ExitCode::from(2)
    }

    pub(super) fn verify(_: &Path, _: &[CheckpointKey], _: bool) -> ExitCode {
        unavailable()
    }

    pub(super) fn query(_: &Path, _: &Query, _: &[CheckpointKey], _: bool) -> ExitCode {
        unavailable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn times_parse() {
        assert_eq!(
            parse_time("1700000000000000000"),
            Ok(1_700_000_000_000_000_000)
        );
        assert_eq!(parse_time("1700000000s"), Ok(1_700_000_000_000_000_000));
        assert_eq!(parse_time("1700000000000ms"), Ok(1_700_000_000_000_000_000));
        assert_eq!(parse_time("5us"), Ok(5_000));
        assert_eq!(parse_time("5µs"), Ok(5_000));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z"),
            Ok(1_700_000_000_000_000_000)
        );
        assert_eq!(
            parse_time("2023-11-15T00:13:20.5+02:00"),
            Ok(1_700_000_000_500_000_000)
        );
        assert_eq!(
            parse_time("2000-02-29T00:00:00Z"),
            Ok(951_782_400_000_000_000)
        );
        // Forms jiff reads that the hand-written parser refused; each names one instant.
        assert_eq!(
            parse_time("2023-11-15T00:13:20+0200"),
            Ok(1_700_000_000_000_000_000)
        );
        assert_eq!(
            parse_time("2023-11-14 22:13:20z"),
            Ok(1_700_000_000_000_000_000)
        );
    }

    #[test]
    fn ambiguous_impossible_or_unsigned_times_are_refused() {
        for (bad, why) in [
            ("", "neither"),
            ("soon", "neither"),
            ("12h", "unknown unit `h`"),
            ("1h 30m", "unknown unit"),
            ("1.5s", "unknown unit `.5s`"),
            ("-5s", "not RFC 3339"),
            ("99999999999999999999", "out of range"),
            ("18446744073709551616", "out of range"),
            ("18446744074s", "out of range"),
            ("2023-02-29T00:00:00Z", "not RFC 3339"),
            // No offset: local time or UTC? Refused rather than guessed.
            ("2023-11-14T22:13:20", "not RFC 3339"),
            ("2023-11-14T25:13:20Z", "not RFC 3339"),
            ("1969-12-31T23:59:59Z", "before 1970"),
            ("1970-01-01T00:30:00+01:00", "before 1970"),
            ("2023-11-14T22:13:20.Z", "not RFC 3339"),
            // Ten fraction digits would be cut to nine silently.
            ("2023-11-14T22:13:20.1234567891Z", "not RFC 3339"),
            ("2023-11-14", "not RFC 3339"),
            ("2600-01-01T00:00:00Z", "out of range"),
        ] {
            let err = parse_time(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    proptest! {
        #[test]
        fn every_unix_nanosecond_reads_back_in_each_form(ns in 0u64..=i64::MAX as u64) {
            prop_assert_eq!(parse_time(&ns.to_string()), Ok(ns));
            prop_assert_eq!(parse_time(&format!("{ns}ns")), Ok(ns));
            let secs = ns / 1_000_000_000;
            prop_assert_eq!(parse_time(&format!("{secs}s")), Ok(secs * 1_000_000_000));
            let t = jiff::Timestamp::from_nanosecond(i128::from(ns)).unwrap();
            // RFC 3339 in UTC and at another offset name the same instant.
            prop_assert_eq!(parse_time(&t.to_string()), Ok(ns));
            let offset = jiff::tz::Offset::from_seconds(5 * 3600 + 30 * 60).unwrap();
            let shifted = t.display_with_offset(offset).to_string();
            prop_assert_eq!(parse_time(&shifted), Ok(ns), "{}", shifted);
        }
    }
}
