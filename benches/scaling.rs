//! Scaling: N threads checking through **one** guard with every runtime primitive on, without
//! and with a file sink (OS-buffered, and with group commit), each thread in its own run (as
//! agent workers are). Throughput should
//! not fall as threads are added: a per-call write to one cache line shared by every thread (a
//! global counter, one lock) would make it fall.
//!
//! `cargo bench --bench scaling`. Each sample: every thread runs `iters / threads` check +
//! complete calls (two audit records each) after a barrier; the time is the slowest thread's,
//! so criterion's figure is time per call across the whole group (lower is better; ideal
//! scaling on 2 cores halves it from 1 to 2 threads, and 8 threads on 2 cores should match 2).
//! The unaudited variant isolates the pipeline from the writer thread.
//!
//! After each group it prints the CPU time per call of the calling threads and of the audit
//! writer thread: on 2 cores, the sustained pace cannot beat the larger of the two.
//!
//! The audited variants write their log under the temporary directory (`TMPDIR`) and print the
//! log's bytes per call: sustained, its pace cannot beat the disk's write bandwidth divided by
//! that figure once the kernel's dirty-page limits are reached. `TMPDIR=/dev/shm` (tmpfs) takes
//! the disk out and measures the pipeline itself.

#[path = "shared/cpu.rs"]
mod cpu;
#[path = "shared/mod.rs"]
mod shared;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shared::{RAW, all_primitives, check_and_complete};
use tollgate::audit::AuditSink;
use tollgate::audit::file::{Durability, FileSink, FileSinkConfig};
use tollgate::{Guard, RunContext, ToolCall};

/// Calls made by [`spread`] so far (for the log's bytes per call).
static CALLS: AtomicU64 = AtomicU64::new(0);
/// CPU time (ns) the calling threads of [`spread`] spent in their calls so far.
static CALLER_CPU: AtomicU64 = AtomicU64::new(0);

/// CPU time (ns) the calling thread has run so far.
fn thread_cpu_ns() -> u64 {
    cpu::thread_ns().unwrap_or(0)
}

/// CPU time (ns) of this process's audit writer threads so far (named `tollgate-audit-*`).
fn writer_cpu_ns() -> u64 {
    cpu::threads_ns(Path::new("/proc/self/task"), |name| {
        name.starts_with("tollgate-audit")
    })
}

/// Total size of the files in `dir`.
fn bytes_in(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Runs `iters` calls split over `threads` threads through `guard`; returns the wall time from
/// the barrier to the last thread's end.
fn spread(guard: &Arc<Guard>, threads: u64, iters: u64) -> Duration {
    let per = iters.div_ceil(threads);
    CALLS.fetch_add(per * threads, Ordering::Relaxed);
    let barrier = Arc::new(Barrier::new(threads as usize + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let guard = Arc::clone(guard);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let run = guard
                    .start_run(RunContext::new(format!("agent-{t}"), "clerk"))
                    .unwrap();
                let call = ToolCall::new("pay_invoice", RAW);
                barrier.wait();
                let cpu = thread_cpu_ns();
                for _ in 0..per {
                    assert!(check_and_complete(&guard, &run, &call));
                }
                CALLER_CPU.fetch_add(thread_cpu_ns() - cpu, Ordering::Relaxed);
            })
        })
        .collect();
    barrier.wait();
    let t = Instant::now();
    for h in handles {
        h.join().unwrap();
    }
    t.elapsed()
}

fn bench_scaling(c: &mut Criterion) {
    // Under `TMPDIR`; removed when this function returns or a bench panics.
    let scratch_dir = tempfile::Builder::new()
        .prefix("tollgate-scaling-")
        .tempdir()
        .unwrap();
    let scratch = scratch_dir.path();
    // The unaudited pipeline, then the file sink OS-buffered and with group commit (an fsync at
    // least every 10 ms while records are unsynced).
    let variants = [
        ("unaudited", None),
        ("audited_file_sink", Some(Durability::OsBuffered)),
        (
            "audited_group_commit",
            Some(Durability::GroupCommit { interval_ms: 10 }),
        ),
    ];
    for (name, durability) in variants {
        let audited = durability.is_some();
        let mut g = c.benchmark_group(format!("scaling/{name}"));
        g.sample_size(20);
        g.measurement_time(Duration::from_secs(4));
        g.throughput(Throughput::Elements(1));
        for threads in [1u64, 2, 8] {
            let dir = scratch.join(format!("{name}-{threads}"));
            let _ = std::fs::remove_dir_all(&dir);
            let sink = durability.map(|durability| {
                let cfg = FileSinkConfig::default()
                    .durability(durability)
                    .queue_capacity(1 << 14);
                Arc::new(FileSink::open(&dir, cfg).unwrap().0)
            });
            let guard = Arc::new(all_primitives(
                sink.clone().map(|s| s as Arc<dyn AuditSink>),
            ));
            let calls_before = CALLS.load(Ordering::Relaxed);
            let (callers_before, writer_before) =
                (CALLER_CPU.load(Ordering::Relaxed), writer_cpu_ns());
            g.bench_function(format!("{threads}_threads"), |b| {
                b.iter_custom(|iters| spread(&guard, threads, iters))
            });
            // The writer's backlog is part of what the calls cost: wait until it is taken.
            while sink.as_ref().is_some_and(|s| s.queued_events() > 0) {
                std::thread::sleep(Duration::from_millis(1));
            }
            let writer_cpu = writer_cpu_ns().saturating_sub(writer_before);
            drop(guard);
            drop(sink);
            let calls = CALLS.load(Ordering::Relaxed) - calls_before;
            if let Some(callers) =
                (CALLER_CPU.load(Ordering::Relaxed) - callers_before).checked_div(calls)
            {
                // What each call costs the machine, whatever the scheduler made the callers wait:
                // on 2 cores, the pace cannot beat the larger of the two figures.
                print!("CPU per call: callers {callers} ns");
                if audited {
                    print!(", audit writer {} ns", writer_cpu / calls);
                }
                println!();
            }
            if audited && calls > 0 {
                let bytes = bytes_in(&dir);
                println!(
                    "audit log under {}: {} bytes per call (two records), {:.1} MB written",
                    scratch.display(),
                    bytes / calls,
                    bytes as f64 / 1e6
                );
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
        g.finish();
    }
    drop(scratch_dir);
}

criterion_group!(benches, bench_scaling);
criterion_main!(benches);
