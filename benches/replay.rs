//! Criterion bench for `Policy::replay`: throughput over a 1,000,000-record audit log and peak
//! memory at 100 000 and 1 000 000 records (flat in the log's size).
//!
//! Run with `cargo bench --bench replay`. Before the criterion groups it writes two logs with a
//! real guard and an OS-buffered file sink (a session mix: 8 interleaved runs at a time, 12
//! calls each: searches, record reads, one malformed record id, an update, an e-mail with a
//! redacted body and a confidence, two payments of which the large ones escalate; outcomes with
//! tokens), then replays each once under the candidate **in a child process** (this bench
//! re-run with `TOLLGATE_REPLAY_BENCH_CHILD=<log>`), so that the peak resident set it prints
//! (VmHWM, Linux) is the replay's and not the log writer's; flat memory shows as the same peak
//! at 100 000 and 1 000 000 records. Groups:
//!
//! - `replay/verified_1m`, `replay/verified_100k`: the whole replay with the hash chain verified
//!   while reading (throughput in records);
//! - `replay/unverified_1m`: the same without verification.
//!
//! The logs are written under the system temp directory and removed at the end; set
//! `TOLLGATE_BENCH_KEEP=1` to keep them (and reuse them next time), e.g. to measure the CLI:
//! `/usr/bin/time -v tollgate policy replay --policy <tmp>/tollgate-replay-bench/candidate.toml
//! --log <tmp>/tollgate-replay-bench/log-1000000`.

#[path = "shared/cpu.rs"]
mod cpu;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group};
use tollgate::audit::AuditSink;
use tollgate::audit::file::{Durability, FileSink, FileSinkConfig};
use tollgate::clock::ManualClock;
use tollgate::escalation::MemoryApprovalStore;
use tollgate::policy::{Bindings, Policy};
use tollgate::{Outcome, RunContext, RunId, ToolCall, Verdict};

const HEADER: &str = r#"
tiers = ["public", "internal", "phi"]

[policy]
name = "replay-bench"
owner = "platform"
purpose = "measure replays"
scope = "benchmarks"
liability_owner = "CTO"
review_cadence = "90d"
data_handling = "synthetic data only"
"#;

/// The policy the log is written under (`current`) or the candidate: a tighter payment limit
/// and search length, and an escalation rule for unsure e-mails.
fn policy_text(candidate: bool) -> String {
    let (search_max, pay_max, extra) = if candidate {
        (
            100,
            800,
            r#"
[[escalation.rules]]
id = "unsure-email"
reason = "Unsure e-mails go to a human."
tools = ["send_email"]
when.confidence = { below = 0.6 }
"#,
        )
    } else {
        (200, 5000, "")
    };
    format!(
        r#"{HEADER}
[tools.search]
effect = "read"
tier = "public"
args.q = {{ type = "string", required = true, max_length = {search_max} }}
args.limit = {{ type = "integer", min = 1, max = 50 }}

[tools.read_record]
effect = "read"
tier = "phi"
args.id = {{ type = "string", required = true, pattern = "R-[0-9]{{6}}" }}

[tools.update_record]
effect = "write"
tier = "phi"
args.id = {{ type = "string", required = true, pattern = "R-[0-9]{{6}}" }}
args.status = {{ type = "string", required = true, enum = ["open", "pending", "closed"] }}
args.note = {{ type = "string", max_length = 500 }}

[tools.send_email]
effect = "write"
tier = "internal"
args.to = {{ type = "string", required = true, max_length = 254 }}
args.subject = {{ type = "string", required = true, max_length = 200 }}
args.body = {{ type = "string", required = true, max_length = 5000, redact = "sensitive" }}

[tools.pay]
effect = "irreversible"
tier = "internal"
args.invoice = {{ type = "string", required = true, pattern = "INV-[0-9]{{6}}" }}
args.amount = {{ type = "number", required = true, min = 0, max = {pay_max} }}

[roles.agent]
clearance = "phi"
tools = ["search", "read_record", "update_record", "send_email", "pay"]

[escalation]
groups.finance = ["alice", "bob"]
defaults = {{ timeout = "1h", on_timeout = "deny", chain = [{{ group = "finance" }}] }}

[[escalation.rules]]
id = "pay-over-1000"
reason = "Large payments need finance."
tools = ["pay"]
when.amount = {{ path = "amount", over = 1000 }}
{extra}
[breakers]
key = "agent_tool"
max_keys = 4096
window = {{ calls = 50 }}
minimum_calls = 10
failure_rate = 50
consecutive_failures = 5
wait_in_open = "30s"
backoff = 2.0
max_wait_in_open = "10m"

[budgets]
max_calls = 100
max_duration = "1h"
max_tokens = 200000

[rate_limits]
per_agent = {{ max_calls = 600, per = "1m" }}

[loops]
max_repeats = 3
window = "60s"

[audit]
durability = "os_buffered"
"#
    )
}

const WORDS: [&str; 16] = [
    "invoice",
    "refund",
    "status",
    "customer",
    "overdue",
    "policy",
    "renewal",
    "claim",
    "address",
    "contract",
    "payment",
    "schedule",
    "report",
    "quarterly",
    "ticket",
    "escalation",
];

/// A deterministic pseudo-random stream (xorshift), so every log has the same content.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn words(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| WORDS[self.below(16) as usize])
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Writes a log of about `records` records under the current policy into `dir`.
fn write_log(dir: &Path, records: u64) {
    let (sink, _) = FileSink::open(
        dir,
        FileSinkConfig::default()
            .durability(Durability::OsBuffered)
            .queue_capacity(8192),
    )
    .unwrap();
    let sink = Arc::new(sink);
    let clock = Arc::new(ManualClock::new());
    let policy = Policy::from_toml(&policy_text(false)).unwrap();
    let guard = policy
        .guard(
            Bindings::new()
                .audit(sink.clone())
                .clock(clock.clone())
                .approvals(Arc::new(MemoryApprovalStore::new())),
        )
        .unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut written = 0u64;
    let mut run_no = 0u64;
    while written < records {
        let runs: Vec<_> = (0..8)
            .map(|_| {
                run_no += 1;
                let agent = format!("agent-{}", run_no % 50);
                guard
                    .start_run_with_id(
                        RunContext::new(agent, "agent")
                            .for_task("support")
                            .triggered_by("user:42"),
                        Some(RunId::new(format!("run-{run_no}"))),
                    )
                    .unwrap()
            })
            .collect();
        // Their starts and ends.
        written += 16;
        for step in 0..12u32 {
            for run in &runs {
                clock.advance(Duration::from_millis(50));
                let id = format!("R-{:06}", rng.below(1_000_000));
                let (tool, args, confidence) = match step {
                    0 | 3 | 6 | 9 => {
                        let n = 3 + rng.below(20) as usize;
                        let q = rng.words(n);
                        (
                            "search",
                            format!(r#"{{"q":"{q}","limit":{}}}"#, 1 + rng.below(20)),
                            None,
                        )
                    }
                    1 | 4 | 7 => ("read_record", format!(r#"{{"id":"{id}"}}"#), None),
                    // A malformed id: denied.
                    10 => ("read_record", r#"{"id":"R-12"}"#.to_owned(), None),
                    2 => (
                        "update_record",
                        format!(
                            r#"{{"id":"{id}","status":"pending","note":"{}"}}"#,
                            rng.words(6)
                        ),
                        None,
                    ),
                    5 => (
                        "send_email",
                        format!(
                            r#"{{"to":"customer{}@example.com","subject":"{}","body":"{}"}}"#,
                            rng.below(10_000),
                            rng.words(4),
                            rng.words(30)
                        ),
                        Some(0.5 + rng.below(50) as f32 / 100.0),
                    ),
                    _ => (
                        "pay",
                        format!(
                            r#"{{"invoice":"INV-{:06}","amount":{}.{:02}}}"#,
                            rng.below(1_000_000),
                            50 + rng.below(1500),
                            rng.below(100)
                        ),
                        None,
                    ),
                };
                let call_id = format!("call-{run_no}-{step}-{}", rng.below(1 << 20));
                let mut call = ToolCall::new(tool, args.as_str()).with_call_id(&call_id);
                if let Some(c) = confidence {
                    call = call.with_confidence(c);
                }
                written += 1;
                match guard.check(run, &call) {
                    Verdict::Allow(p) => {
                        clock.advance(Duration::from_millis(20 + rng.below(200)));
                        let outcome = if rng.below(50) == 0 {
                            Outcome::error("upstream timed out")
                        } else {
                            Outcome::success()
                                .with_tokens(200 + rng.below(800), 20 + rng.below(200))
                        };
                        p.complete(outcome).unwrap();
                        written += 1;
                    }
                    // The decision and the escalation request.
                    Verdict::Escalate(_) => written += 1,
                    Verdict::Deny(_) => {}
                }
            }
        }
        for run in runs {
            run.finish().unwrap();
        }
    }
    sink.flush().unwrap();
    drop(guard);
    drop(sink);
}

fn bench_dir() -> PathBuf {
    std::env::temp_dir().join("tollgate-replay-bench")
}

fn keep() -> bool {
    std::env::var_os("TOLLGATE_BENCH_KEEP").is_some_and(|v| v == "1")
}

/// The log of about `records` records, written unless a kept one is there.
fn log(records: u64) -> PathBuf {
    let dir = bench_dir().join(format!("log-{records}"));
    let done = bench_dir().join(format!("log-{records}.done"));
    if keep() && done.exists() {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let t = Instant::now();
    write_log(&dir, records);
    eprintln!(
        "wrote {} ({records} records) in {:.1} s",
        dir.display(),
        t.elapsed().as_secs_f64()
    );
    std::fs::write(&done, b"").unwrap();
    dir
}

/// The process's peak resident set (VmHWM) and current one (VmRSS), in KiB.
fn rss_kib() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// Time this thread has spent on a CPU (`/proc/thread-self/schedstat`, Linux), in seconds: on
/// a shared machine the wall-clock rate depends on the other load, this does much less.
fn cpu_secs() -> Option<f64> {
    Some(cpu::thread_ns()? as f64 / 1e9)
}

/// Set in the child process that measures one replay's peak memory: the log to replay.
const CHILD: &str = "TOLLGATE_REPLAY_BENCH_CHILD";

/// The child: replays one log under the candidate in a fresh process, so that its peak
/// resident set is the replay's (and the program's), not the bench's or the log writer's, and
/// prints `records decisions changed uncertain secs rss_before_kib peak_kib cpu_secs`.
fn child(dir: &Path) {
    let text = std::fs::read_to_string(bench_dir().join("candidate.toml")).unwrap();
    let candidate = Policy::from_toml(&text).unwrap();
    let (_, before) = rss_kib().unwrap_or((0, 0));
    let cpu = cpu_secs();
    let report = candidate.replay(dir).run().unwrap();
    let cpu = cpu.zip(cpu_secs()).map_or(f64::NAN, |(a, b)| b - a);
    let (peak, _) = rss_kib().unwrap_or((0, 0));
    println!(
        "{} {} {} {} {} {before} {peak} {cpu}",
        report.records,
        report.decisions,
        report.changed(),
        report.uncertain.total(),
        report.elapsed.as_secs_f64(),
    );
}

/// Replays `dir` in a child process; prints what it measured.
fn measure_in_child(name: &str, dir: &Path) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env(CHILD, dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = text.split_whitespace().collect();
    let n = |i: usize| f[i].parse::<f64>().unwrap();
    eprintln!(
        "replay {name} (own process, chain verified): {} records, {} decisions, {} changed, {} uncertain in {:.2} s = {:.0} records/s ({:.2} s on a CPU = {:.0} records per CPU-second); peak RSS {} KiB ({} KiB before the replay)",
        f[0],
        f[1],
        f[2],
        f[3],
        n(4),
        n(0) / n(4),
        n(7),
        n(0) / n(7),
        f[6],
        f[5],
    );
}

fn bench(c: &mut Criterion) {
    std::fs::create_dir_all(bench_dir()).unwrap();
    let candidate_text = policy_text(true);
    std::fs::write(bench_dir().join("candidate.toml"), &candidate_text).unwrap();
    let candidate = Policy::from_toml(&candidate_text).unwrap();
    let small = log(100_000);
    let large = log(1_000_000);

    for (name, dir) in [("100k", &small), ("1m", &large)] {
        measure_in_child(name, dir);
    }

    let records = |dir: &Path| candidate.replay(dir).verify(false).run().unwrap().records;
    let (n_small, n_large) = (records(&small), records(&large));
    let mut g = c.benchmark_group("replay");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(30));
    g.throughput(Throughput::Elements(n_large));
    g.bench_function("verified_1m", |b| {
        b.iter(|| candidate.replay(&large).run().unwrap())
    });
    g.bench_function("unverified_1m", |b| {
        b.iter(|| candidate.replay(&large).verify(false).run().unwrap())
    });
    g.throughput(Throughput::Elements(n_small));
    g.bench_function("verified_100k", |b| {
        b.iter(|| candidate.replay(&small).run().unwrap())
    });
    g.finish();

    if !keep() {
        let _ = std::fs::remove_dir_all(bench_dir());
    }
}

criterion_group!(benches, bench);

fn main() {
    if let Some(dir) = std::env::var_os(CHILD) {
        child(Path::new(&dir));
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
