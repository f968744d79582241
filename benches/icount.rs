//! Instruction counts of the key paths, a regression guard that a noisy machine cannot fool.
//!
//! Wall-clock benches on a shared 2-core machine move by 2x from one run to the next; the
//! number of instructions a path executes does not. Under `valgrind --tool=callgrind` each path
//! runs `ITERS` times inside [`measured`], the only function whose instructions are collected
//! (`--collect-atstart=no --toggle-collect`), after a warm-up; the count divided by `ITERS` is
//! the path's cost per call. Only the calling thread's instructions count (the audit writer's
//! thread does its work outside `measured`): the file-sink paths measure the caller's side.
//!
//! ```text
//! cargo bench --bench icount -- --check     # compare with benches/icount_baseline.json (CI)
//! cargo bench --bench icount -- --write     # record a new baseline (after an intended change)
//! cargo bench --bench icount -- --run PATH  # one path, natively (what valgrind runs)
//! ```
//!
//! `--check` fails when a path costs more than the baseline's tolerance above its figure, and
//! says which; a path that became much cheaper is reported too (record the gain with
//! `--write`). Valgrind presents one virtual CPU on every host (no SHA or AVX-512 extensions),
//! so the counts do not depend on which machine runs CI.

#[path = "shared/mod.rs"]
mod shared;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use shared::{RAW, all_primitives, boundary, check_and_complete, generous_rate};
use tollgate::audit::file::{Durability, FileSink, FileSinkConfig};
use tollgate::{Guard, RunContext, ToolCall};

/// Calls per measured path.
const ITERS: u64 = 2_000;
/// Calls before measuring (caches, lazily built state, the writer's queue in steady state).
const WARMUP: u64 = 2_000;
/// Allowed growth over the baseline before `--check` fails.
const TOLERANCE: f64 = 0.05;

/// The paths guarded, by name.
const PATHS: [&str; 9] = [
    "boundary_args_3_rules_raw",
    "guard_check_allow_raw",
    "guard_check_no_args",
    "guard_leased_budget_no_args",
    "guard_rate_limit_check",
    "guard_all_primitives_raw",
    "guard_all_primitives_file_sink_raw",
    "audit_record_file_buffered",
    "audit_serialize_event",
];

/// Runs `f` `ITERS` times; the only function callgrind collects in.
#[inline(never)]
fn measured(f: &mut dyn FnMut() -> bool) -> u64 {
    let mut ok = 0;
    for _ in 0..ITERS {
        ok += u64::from(black_box(f()));
    }
    ok
}

/// A scratch directory, removed when dropped (also if the path panics).
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tollgate-icount-")
        .tempdir()
        .unwrap()
}

fn file_sink(dir: &Path) -> Arc<FileSink> {
    let cfg = FileSinkConfig::default()
        .durability(Durability::OsBuffered)
        .queue_capacity(1 << 16);
    Arc::new(FileSink::open(dir, cfg).unwrap().0)
}

/// Sets up `path`, warms it up, runs it under [`measured`]; panics if a call is not allowed.
fn run_path(path: &str) {
    let ctx = RunContext::new("agent-7", "clerk");
    let raw = ToolCall::new("pay_invoice", RAW);
    let guard_run = |guard: &Guard, call: &ToolCall<'_>| {
        let run = guard.start_run(ctx.clone()).unwrap();
        let mut f = || check_and_complete(guard, &run, call);
        for _ in 0..WARMUP {
            assert!(f(), "{path}: the bench call must be allowed");
        }
        assert_eq!(measured(&mut f), ITERS, "{path}: every call allowed");
    };
    match path {
        "boundary_args_3_rules_raw" => {
            let b = boundary(100);
            let mut f = || b.check(black_box(&ctx), black_box(&raw)).is_ok();
            for _ in 0..WARMUP {
                assert!(f());
            }
            assert_eq!(measured(&mut f), ITERS);
        }
        "guard_check_allow_raw" => {
            guard_run(&Guard::builder(boundary(100)).build().unwrap(), &raw);
        }
        "guard_rate_limit_check" => {
            let g = Guard::builder(boundary(100))
                .rate_limits(tollgate::breaker::RateLimits {
                    per_agent: Some(generous_rate()),
                    default_per_tool: Some(generous_rate()),
                    ..Default::default()
                })
                .build()
                .unwrap();
            guard_run(&g, &ToolCall::without_args("lookup"));
        }
        "guard_check_no_args" => {
            guard_run(
                &Guard::builder(boundary(100)).build().unwrap(),
                &ToolCall::without_args("lookup"),
            );
        }
        // The same call spending a fleet-wide budget leased from the files backend: the lease's
        // cost on the check path between refills (the difference from `guard_check_no_args`).
        "guard_leased_budget_no_args" => {
            use tollgate::backend::lease::{
                BudgetSpec, FileLeases, LeasedBudgets, LeasesSection, Measure, Per,
            };
            let dir = scratch();
            let clock = Arc::new(tollgate::clock::SystemClock::new());
            let section = LeasesSection {
                refill_below_percent: 1,
                budgets: vec![BudgetSpec {
                    name: "calls".into(),
                    per: Per::Fleet,
                    measure: Measure::Calls,
                    limit: 1 << 50,
                    window: std::time::Duration::from_secs(10_000 * 86_400),
                    chunk: Some(1 << 40),
                }],
                ..LeasesSection::default()
            };
            let source =
                FileLeases::open(dir.path(), "icount", section.lease_timeout, clock.clone())
                    .unwrap();
            let leases = Arc::new(LeasedBudgets::start(&section, Arc::new(source), clock).unwrap());
            let g = Guard::builder(boundary(100))
                .shared_budget(leases.clone())
                .build()
                .unwrap();
            guard_run(&g, &ToolCall::without_args("lookup"));
            leases.shutdown().unwrap();
        }
        "guard_all_primitives_raw" => guard_run(&all_primitives(None), &raw),
        "guard_all_primitives_file_sink_raw" => {
            let dir = scratch();
            let sink = file_sink(dir.path());
            guard_run(&all_primitives(Some(sink.clone())), &raw);
            drop(sink);
        }
        "audit_record_file_buffered" => {
            use tollgate::audit::{AuditEvent, AuditSink, Decision, EventKind};
            let dir = scratch();
            let sink = file_sink(dir.path());
            let (run, agent) = (
                tollgate::RunId::new("run-1"),
                tollgate::AgentId::new("agent-7"),
            );
            let version = boundary(10).version();
            let mut seq = 0;
            let mut f = || {
                seq += 1;
                let event = AuditEvent::new(
                    seq,
                    std::time::SystemTime::now(),
                    Some(&run),
                    Some(&agent),
                    EventKind::Decision {
                        call: &raw,
                        decision: Decision::Allow,
                        policy_version: Some(version),
                    },
                );
                sink.record(&event).is_ok()
            };
            for _ in 0..WARMUP {
                assert!(f());
            }
            assert_eq!(measured(&mut f), ITERS);
            drop(sink);
        }
        // `audit/serialize_event`: one decision event with parsed arguments and a call id
        // written as JSON into a reused buffer (the clock read included).
        "audit_serialize_event" => {
            use tollgate::audit::{AuditEvent, Decision, EventKind, Redaction};
            let (run, agent) = (
                tollgate::RunId::new("run-bench-1"),
                tollgate::AgentId::new("agent-7"),
            );
            let value = shared::args();
            let call = ToolCall::new("pay_invoice", &value).with_call_id("call_123");
            let version = boundary(10).version();
            let redaction = Redaction::placeholder();
            let mut buf = Vec::with_capacity(512);
            let mut f = || {
                let event = AuditEvent::new(
                    1,
                    std::time::SystemTime::now(),
                    Some(&run),
                    Some(&agent),
                    EventKind::Decision {
                        call: &call,
                        decision: Decision::Allow,
                        policy_version: Some(version),
                    },
                );
                buf.clear();
                event.write_json(&mut buf, &redaction);
                !buf.is_empty()
            };
            for _ in 0..WARMUP {
                assert!(f());
            }
            assert_eq!(measured(&mut f), ITERS);
        }
        other => panic!("unknown path `{other}`; known: {PATHS:?}"),
    }
}

/// Instructions per call of `path`, counted by callgrind in a child process.
fn count(path: &str) -> Result<f64, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out_dir = scratch();
    let out_file = out_dir.path().join(format!("{path}.callgrind"));
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg("--collect-atstart=no")
        .arg("--toggle-collect=*icount::measured*")
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(&exe)
        .args(["--run", path])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(|e| {
            format!("cannot run valgrind ({e}): install it (Debian: apt-get install valgrind)")
        })?;
    if !status.status.success() {
        return Err(format!(
            "valgrind on `{path}` failed: {}",
            String::from_utf8_lossy(&status.stderr)
        ));
    }
    let text = std::fs::read_to_string(&out_file).map_err(|e| e.to_string())?;
    let total = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| format!("no instruction total in callgrind's output for `{path}`"))?;
    if total == 0 {
        return Err(format!(
            "callgrind collected nothing for `{path}`: was `measured` inlined or renamed?"
        ));
    }
    Ok(total as f64 / ITERS as f64)
}

fn baseline_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/icount_baseline.json")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    if let Some(i) = args.iter().position(|a| a == "--run") {
        let path = args.get(i + 1).expect("--run PATH");
        run_path(path);
        return;
    }
    let (check, write) = (flag("--check"), flag("--write"));
    if !check && !write {
        // `cargo bench` without arguments (or criterion's `--bench`): print the counts only.
        eprintln!("icount: pass --check or --write (see the file's docs); printing counts");
    }
    let mut counts = BTreeMap::new();
    for path in PATHS {
        match count(path) {
            Ok(n) => {
                println!("{path:<38} {n:>10.0} instructions per call");
                counts.insert(path.to_owned(), n.round() as u64);
            }
            Err(e) => {
                eprintln!("icount: {e}");
                std::process::exit(2);
            }
        }
    }
    if write {
        let text = serde_json::to_string_pretty(&counts).unwrap() + "\n";
        std::fs::write(baseline_path(), text).unwrap();
        println!("wrote {}", baseline_path().display());
        return;
    }
    if check {
        let text = std::fs::read_to_string(baseline_path()).unwrap_or_else(|e| {
            eprintln!("icount: cannot read {}: {e}", baseline_path().display());
            std::process::exit(2);
        });
        let base: BTreeMap<String, u64> = serde_json::from_str(&text).unwrap_or_else(|e| {
            eprintln!(
                "icount: {} is not a map of counts: {e}",
                baseline_path().display()
            );
            std::process::exit(2);
        });
        let mut failed = false;
        println!(
            "\n{:<38} {:>10} {:>10} {:>8}",
            "path", "baseline", "now", "change"
        );
        for (path, now) in &counts {
            let Some(&was) = base.get(path) else {
                println!(
                    "{path:<38} {:>10} {now:>10}   (new: record it with --write)",
                    "-"
                );
                failed = true;
                continue;
            };
            let change = *now as f64 / was as f64 - 1.0;
            let verdict = if change > TOLERANCE {
                failed = true;
                "REGRESSION"
            } else if change < -TOLERANCE {
                "faster: record it with --write"
            } else {
                "ok"
            };
            println!(
                "{path:<38} {was:>10} {now:>10} {:>+7.1}%  {verdict}",
                100.0 * change
            );
        }
        if failed {
            eprintln!(
                "icount: a path costs more than {:.0}% above its baseline (or has none)",
                100.0 * TOLERANCE
            );
            std::process::exit(1);
        }
    }
}
