//! The sustained audited call, long enough to see the disk: the peer bench's decision (every
//! runtime primitive on, raw JSON arguments, `FileSink` OS-buffered, check + complete: two
//! records) in rounds of many calls into one growing log, printing the time per call of each
//! round. Criterion's samples are too short to show when the disk's cache fills; this shows it
//! as the round where the time per call jumps.
//!
//! ```text
//! cargo bench --bench sustained                       # 5 rounds of 400 000 calls
//! cargo bench --bench sustained -- 7 1000000          # 7 rounds of 1 000 000
//! TOLLGATE_SUSTAINED_WRITEBACK=0 cargo bench --bench sustained    # no early writeback
//! TOLLGATE_SUSTAINED_PREALLOCATE=0 cargo bench --bench sustained  # no preallocation
//! ```
//!
//! The two variables set `FileSinkConfig::writeback_bytes` (bytes; 0 = off) and
//! `preallocate_segments` (0 = off), for A/B runs of the same build. The log is written under the
//! temporary directory (`TMPDIR`) and removed at the end.

#[path = "shared/peer_document.rs"]
mod peer_document;

use std::sync::Arc;
use std::time::Instant;

use peer_document::{AGENT, RAW, ROLE, TOOL, tollgate_document};
use tollgate::audit::AuditSink;
use tollgate::audit::file::{Durability, FileSink, FileSinkConfig};
use tollgate::policy::{Bindings, Policy};
use tollgate::{Guard, Outcome, RunContext, ToolCall, Verdict};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}: not a number: {v}"))
        })
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; the numbers are the rest.
    let numbers: Vec<u64> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .map(|a| a.parse().unwrap_or_else(|_| panic!("not a number: {a}")))
        .collect();
    let rounds = numbers.first().copied().unwrap_or(5);
    let calls = numbers.get(1).copied().unwrap_or(400_000);
    let defaults = FileSinkConfig::default();
    let writeback = env_u64("TOLLGATE_SUSTAINED_WRITEBACK", defaults.writeback_bytes);
    let preallocate = env_u64(
        "TOLLGATE_SUSTAINED_PREALLOCATE",
        u64::from(defaults.preallocate_segments),
    ) != 0;

    let dir = tempfile::Builder::new()
        .prefix("tollgate-sustained-")
        .tempdir()
        .expect("scratch dir");
    let cfg = FileSinkConfig::default()
        .durability(Durability::OsBuffered)
        .writeback_bytes(writeback)
        .preallocate_segments(preallocate);
    let (sink, _) = FileSink::open(dir.path(), cfg).expect("file sink");
    let sink = Arc::new(sink);
    let policy = Policy::from_toml(&tollgate_document(true, true, true)).expect("document");
    let guard = Guard::from_policy(&policy, Bindings::new().audit(sink.clone())).expect("guard");
    let run = guard.start_run(RunContext::new(AGENT, ROLE)).expect("run");
    let call = ToolCall::new(TOOL, RAW);
    println!(
        "sustained audited call: {rounds} rounds of {calls} calls, writeback_bytes {writeback}, \
         preallocate_segments {preallocate}, log in {}",
        dir.path().display()
    );
    for round in 1..=rounds {
        let started = Instant::now();
        for _ in 0..calls {
            match guard.check(&run, &call) {
                Verdict::Allow(p) => p.complete(Outcome::success()).expect("complete"),
                other => panic!("not allowed: {other:?}"),
            }
        }
        let per_call = started.elapsed().as_nanos() as f64 / calls as f64;
        println!("round {round}: {per_call:.0} ns per call");
    }
    sink.flush().expect("flush");
}
