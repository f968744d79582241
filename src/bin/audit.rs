//! `audit`: verify, query and repair a tollgate audit directory (the hash-chained JSON Lines
//! segments a `tollgate::audit::file::FileSink` writes). Run `audit --help` for usage.
//!
//! Exit status: 0 success, 1 the log failed verification or could not be read (nothing printed
//! from it is to be trusted), 2 usage error.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use tollgate::audit::file::{
    self, CheckpointConfig, CheckpointKey, CheckpointKeyError, DirWitness, FileSink, RepairOptions,
    RepairPlan, VerifyError, VerifyOptions, VerifyReport, WitnessConfig,
};
use tollgate::audit::query::Query;

const HELP: &str = "\
audit - verify, query and repair a tollgate audit directory

USAGE:
    audit verify PATH [--key-file FILE]... [--witness-file FILE] [--require-covered]
                      [--require-clean]
    audit query PATH [FILTER]... [--key-file FILE]... [--no-verify]
    audit repair PATH [--key-file FILE]... [--witness-file FILE] [--cut-after SEQ]
                      [--reason TEXT] [--yes]
    audit --help

PATH is the audit directory. A path to one of its segment files (audit-NNNNNN.jsonl) stands
for that file's directory: the hash chain runs through every segment in order, so a segment
cannot be verified on its own.

verify
    Checks every record: frame, seq order, hash links, checkpoints, retention declarations.
    Prints one summary line (records, segments, head hash, checkpoints) and exits 0, or prints
    the first bad record (file, line, seq, what is wrong) and exits 1.
    Then prints one `notice:` line for each thing the log declares about itself: records
    adopted on reopen, acknowledged events a failed writer lost, records a repair removed, a
    retention deletion not finished.
    --key-file FILE     also check checkpoint MACs with this key (repeat for retired keys)
    --witness-file FILE the head a FileSink published to a DirWitness: the chain must reach it
                        with the same hash (without one, records cut off the end of the log are
                        not detected)
    --require-covered   fail if records follow the last checkpoint (a log closed cleanly has
                        none; a live log's tail is uncovered until its next checkpoint)
    --require-clean     fail if the log declares anything (see notices above)

query
    Prints each matching record as one JSON line {\"seq\":<record seq>,\"event\":{...}}, in log
    order. The chain is verified while reading: if tampering is met, what was printed is not to
    be trusted, the error goes to stderr and the exit status is 1.
    --run ID            tollgate.run.id equals ID
    --agent ID          gen_ai.agent.id equals ID
    --tool NAME         gen_ai.tool.name equals NAME
    --kind KIND         event kind: run_started, decision, outcome, run_finished, checkpoint,
                        retention_applied, ...
    --decision D        tollgate.decision: allow, escalate or deny
    --since TIME        time_unix_nano >= TIME
    --until TIME        time_unix_nano <  TIME
    --key-file FILE     also check checkpoint MACs with this key
    --no-verify         do not check the chain (lines must still parse)
    A filter given several times matches any of its values; different filters must all match.

repair
    Removes a damaged end of the log (which a FileSink refuses to open): everything from the
    first record that fails verification (or from the record after --cut-after SEQ) to the end.
    Without --yes it only prints the plan: the cut, the lines, bytes and seqs it would remove.
    With --yes it carries the plan out: keeps the removed bytes in repair-<time>.removed in the
    directory, and writes a repair declaration into the chain (with a checkpoint, given a key)
    that verify reports. No sink may have the directory open.
    --key-file FILE     the log's checkpoint key (the first signs; repeat for retired keys);
                        required for a log with checkpoints
    --witness-file FILE the log's DirWitness: a witnessed head the cut removes is declared gone,
                        and the new head is published
    --cut-after SEQ     cut after this record instead of at the first damage
    --reason TEXT       recorded in the declaration
    --yes               carry the plan out

TIME is unix nanoseconds (1700000000000000000), a whole number with a unit (1700000000s,
1700000000000ms, 1700000000000000us, 1700000000000000000ns), or RFC 3339 in UTC or with an
offset (2024-05-01T12:00:00Z, 2024-05-01T14:00:00.250+02:00).

A key file holds one line: <key id>:<hex secret>.

EXIT STATUS: 0 ok (repair: planned or done, or nothing to repair), 1 verification or repair
failed or the log could not be read, 2 usage error.
";

/// A command line that cannot be run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
enum UsageError {
    #[error("no command given (expected `verify`, `query` or `repair`)")]
    NoCommand,
    #[error("unknown command `{0}` (expected `verify`, `query` or `repair`)")]
    UnknownCommand(String),
    #[error("`{command}` needs a PATH (the audit directory)")]
    MissingPath { command: &'static str },
    #[error("`{command}` takes one PATH, but `{extra}` was given too")]
    ExtraArgument {
        command: &'static str,
        extra: String,
    },
    #[error("unknown option `{option}` for `{command}`")]
    UnknownOption {
        command: &'static str,
        option: String,
    },
    #[error("option `{0}` needs a value")]
    MissingValue(String),
    #[error("option `{option}`: {reason}")]
    BadValue { option: String, reason: String },
    #[error("option `{0}` given twice")]
    Repeated(String),
    #[error("{0}: no such file or directory")]
    NoSuchPath(PathBuf),
    #[error("{0} is a file but not an audit segment (audit-NNNNNN.jsonl)")]
    NotASegment(PathBuf),
    #[error(transparent)]
    Key(#[from] CheckpointKeyError),
}

enum Command {
    Help,
    Verify {
        dir: PathBuf,
        options: VerifyOptions,
        witness: Option<PathBuf>,
        require_clean: bool,
    },
    Query {
        dir: PathBuf,
        query: Query,
    },
    Repair {
        dir: PathBuf,
        options: RepairOptions,
        yes: bool,
    },
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args) {
        Ok(Command::Help) => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Ok(Command::Verify {
            dir,
            options,
            witness,
            require_clean,
        }) => run_verify(&dir, options, witness.as_deref(), require_clean),
        Ok(Command::Query { dir, query }) => run_query(&dir, &query),
        Ok(Command::Repair { dir, options, yes }) => run_repair(&dir, &options, yes),
        Err(e) => {
            eprintln!("audit: {e}\nRun `audit --help` for usage.");
            ExitCode::from(2)
        }
    }
}

fn parse(args: &[String]) -> Result<Command, UsageError> {
    let Some(command) = args.first() else {
        return Err(UsageError::NoCommand);
    };
    let command: &'static str = match command.as_str() {
        "-h" | "--help" | "help" => return Ok(Command::Help),
        "verify" => "verify",
        "query" => "query",
        "repair" => "repair",
        other => return Err(UsageError::UnknownCommand(other.to_owned())),
    };
    if args[1..].iter().any(|a| a == "-h" || a == "--help") {
        return Ok(Command::Help);
    }
    let mut path = None;
    let mut options = VerifyOptions::new();
    let mut query = Query::new();
    let mut since = false;
    let mut until = false;
    let mut keys: Vec<CheckpointKey> = Vec::new();
    let mut witness: Option<PathBuf> = None;
    let mut require_clean = false;
    let mut repair = RepairOptions::new();
    let mut yes = false;
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        let mut value = || {
            rest.next()
                .cloned()
                .ok_or_else(|| UsageError::MissingValue(arg.clone()))
        };
        match (command, arg.as_str()) {
            (_, "--key-file") => {
                let key = CheckpointKey::from_key_file(value()?)?;
                options = options.key(key.clone());
                query = query.checkpoint_key(key.clone());
                keys.push(key);
            }
            ("verify", "--require-covered") => options = options.require_coverage(true),
            ("verify", "--require-clean") => require_clean = true,
            ("verify" | "repair", "--witness-file") => {
                if witness.replace(PathBuf::from(value()?)).is_some() {
                    return Err(UsageError::Repeated(arg.clone()));
                }
            }
            ("repair", "--cut-after") => {
                let v = value()?;
                let seq = v.parse::<u64>().map_err(|_| UsageError::BadValue {
                    option: arg.clone(),
                    reason: format!("`{v}` is not a record seq"),
                })?;
                repair = repair.cut_after(seq);
            }
            ("repair", "--reason") => repair = repair.reason(value()?),
            ("repair", "--yes") => yes = true,
            ("query", "--run") => query = query.run(value()?),
            ("query", "--agent") => query = query.agent(value()?),
            ("query", "--tool") => query = query.tool(value()?),
            ("query", "--kind") => query = query.kind(value()?),
            ("query", "--decision") => {
                let d = value()?;
                if !matches!(d.as_str(), "allow" | "escalate" | "deny") {
                    return Err(UsageError::BadValue {
                        option: arg.clone(),
                        reason: format!("`{d}` is not allow, escalate or deny"),
                    });
                }
                query = query.decision(d);
            }
            ("query", "--since" | "--until") => {
                let is_since = arg == "--since";
                let seen = if is_since { &mut since } else { &mut until };
                if std::mem::replace(seen, true) {
                    return Err(UsageError::Repeated(arg.clone()));
                }
                let ns = parse_time(&value()?).map_err(|reason| UsageError::BadValue {
                    option: arg.clone(),
                    reason,
                })?;
                query = if is_since {
                    query.since_unix_nanos(ns)
                } else {
                    query.until_unix_nanos(ns)
                };
            }
            ("query", "--no-verify") => query = query.verify_while_reading(false),
            (_, option) if option.starts_with('-') && option != "-" => {
                return Err(UsageError::UnknownOption {
                    command,
                    option: option.to_owned(),
                });
            }
            (_, p) => {
                if path.is_some() {
                    return Err(UsageError::ExtraArgument {
                        command,
                        extra: p.to_owned(),
                    });
                }
                path = Some(PathBuf::from(p));
            }
        }
    }
    let Some(path) = path else {
        return Err(UsageError::MissingPath { command });
    };
    let dir = log_dir(&path)?;
    Ok(match command {
        "verify" => Command::Verify {
            dir,
            options,
            witness,
            require_clean,
        },
        "repair" => {
            if let Some((signing, retired)) = keys.split_first() {
                let mut cp = CheckpointConfig::new(signing.clone());
                for k in retired {
                    cp = cp.retired_key(k.clone());
                }
                repair = repair.checkpoint(cp);
            }
            if let Some(w) = witness {
                repair = repair.witness(WitnessConfig::new(Arc::new(DirWitness::new(w))));
            }
            Command::Repair {
                dir,
                options: repair,
                yes,
            }
        }
        _ => Command::Query { dir, query },
    })
}

/// The directory a PATH stands for: itself, or the directory of a segment file.
fn log_dir(path: &Path) -> Result<PathBuf, UsageError> {
    let meta = std::fs::metadata(path).map_err(|_| UsageError::NoSuchPath(path.to_owned()))?;
    if meta.is_dir() {
        return Ok(path.to_owned());
    }
    let is_segment = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("audit-"))
        .and_then(|n| n.strip_suffix(".jsonl"))
        .is_some_and(|d| d.len() >= 6 && d.bytes().all(|b| b.is_ascii_digit()));
    if !is_segment {
        return Err(UsageError::NotASegment(path.to_owned()));
    }
    Ok(match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    })
}

fn run_verify(
    dir: &Path,
    mut options: VerifyOptions,
    witness: Option<&Path>,
    require_clean: bool,
) -> ExitCode {
    if let Some(w) = witness {
        options = match options.witness(&DirWitness::new(w)) {
            Ok(o) => o,
            Err(e) => {
                println!("FAILED: {}", describe(&e));
                return ExitCode::from(1);
            }
        };
    }
    match file::verify_with(dir, &options) {
        Ok(report) => {
            println!("{}", summary(&report, &options));
            for n in &report.notices {
                println!("notice: {n}");
            }
            if require_clean && !report.is_clean() {
                println!(
                    "FAILED: the log declares {} notice(s) and --require-clean was given",
                    report.notices.len()
                );
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("FAILED: {}", describe(&e));
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

fn run_repair(dir: &Path, options: &RepairOptions, yes: bool) -> ExitCode {
    let plan = match FileSink::plan_repair(dir, options) {
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
    if !yes {
        println!("planned only: run again with --yes to carry this out");
        return ExitCode::SUCCESS;
    }
    match FileSink::repair(dir, options, &plan) {
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

/// The error's own text names the file, line, seq and what is wrong.
fn describe(e: &VerifyError) -> String {
    e.to_string()
}

fn run_query(dir: &Path, query: &Query) -> ExitCode {
    let records = match query.open(dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("audit: FAILED: {}", describe(&e));
            return ExitCode::from(1);
        }
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut matched = 0u64;
    let mut records = records;
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
                    return ExitCode::from(1);
                }
            }
            Err(e) => {
                let _ = out.flush();
                eprintln!(
                    "audit: FAILED after {matched} matching records (do not trust them): {}",
                    describe(&e)
                );
                return ExitCode::from(1);
            }
        }
    }
    if out.flush().is_err() {
        return ExitCode::from(1);
    }
    match records.report() {
        Some(r) => eprintln!(
            "audit: {matched} matching records; chain verified ({} records, head {})",
            r.records, r.head_hash
        ),
        None => eprintln!("audit: {matched} matching records; chain NOT verified (--no-verify)"),
    }
    ExitCode::SUCCESS
}

/// Unix nanoseconds from `1700000000000000000`, `1700000000s` (also `ms`, `us`, `ns`) or RFC 3339.
fn parse_time(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s.contains(['-', ':', 'T', 't']) && s.len() >= 19 {
        return parse_rfc3339(s);
    }
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = s.split_at(digits);
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

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`, at or after 1970.
fn parse_rfc3339(s: &str) -> Result<u64, String> {
    let bad = || format!("`{s}` is not RFC 3339 (e.g. 2024-05-01T12:00:00Z)");
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Result<i64, String> {
        let part = b.get(from..from + len).ok_or_else(bad)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        std::str::from_utf8(part)
            .ok()
            .and_then(|p| p.parse().ok())
            .ok_or_else(bad)
    };
    let sep = |at: usize, allowed: &[u8]| {
        if b.get(at).is_some_and(|c| allowed.contains(c)) {
            Ok(())
        } else {
            Err(bad())
        }
    };
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    sep(4, b"-")?;
    sep(7, b"-")?;
    sep(10, b"Tt ")?;
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    sep(13, b":")?;
    sep(16, b":")?;
    let mut i = 19;
    let mut nanos: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let frac = &s[start..i];
        if frac.is_empty() || frac.len() > 9 {
            return Err(format!(
                "`{s}`: the fraction of a second needs 1 to 9 digits"
            ));
        }
        nanos = format!("{frac:0<9}").parse().map_err(|_| bad())?;
    }
    let offset_secs = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() => {
            sep(i + 3, b":")?;
            let (oh, om) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if oh > 23 || om > 59 {
                return Err(bad());
            }
            let o = oh * 3600 + om * 60;
            if sign == b'+' { o } else { -o }
        }
        _ => return Err(bad()),
    };
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap(year) => 29,
        2 => 28,
        _ => return Err(format!("`{s}`: month {month} does not exist")),
    };
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 60 {
        return Err(format!("`{s}`: no such date or time"));
    }
    // Days from 1970-01-01 (H. Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset_secs;
    if secs < 0 {
        return Err(format!("`{s}` is before 1970"));
    }
    u64::try_from(secs)
        .ok()
        .and_then(|s| s.checked_mul(1_000_000_000))
        .and_then(|ns| ns.checked_add(nanos as u64))
        .ok_or_else(|| format!("`{s}` is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse() {
        assert_eq!(
            parse_time("1700000000000000000"),
            Ok(1_700_000_000_000_000_000)
        );
        assert_eq!(parse_time("1700000000s"), Ok(1_700_000_000_000_000_000));
        assert_eq!(parse_time("1700000000000ms"), Ok(1_700_000_000_000_000_000));
        assert_eq!(parse_time("5us"), Ok(5_000));
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
        for bad in [
            "",
            "soon",
            "12h",
            "99999999999999999999",
            "2023-02-29T00:00:00Z",
            "2023-11-14T22:13:20",
            "2023-11-14T25:13:20Z",
            "1969-12-31T23:59:59Z",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20+0200",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
