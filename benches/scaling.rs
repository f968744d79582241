//! Scaling: N threads checking through **one** guard with every runtime primitive on and an
//! OS-buffered file sink, each thread in its own run (as agent workers are). Throughput should
//! not fall as threads are added: a per-call write to one cache line shared by every thread (a
//! global counter, one lock) would make it fall.
//!
//! `cargo bench --bench scaling`. Each sample: every thread runs `iters / threads` check +
//! complete calls (two audit records each) after a barrier; the time is the slowest thread's,
//! so criterion's figure is time per call across the whole group (lower is better; ideal
//! scaling on 2 cores halves it from 1 to 2 threads, and 8 threads on 2 cores should match 2).
//! The unaudited variant isolates the pipeline from the writer thread.

#[path = "shared/mod.rs"]
mod shared;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shared::{RAW, all_primitives, check_and_complete};
use tollgate::audit::AuditSink;
use tollgate::audit::file::{Durability, FileSink, FileSinkConfig};
use tollgate::{Guard, RunContext, ToolCall};

/// Runs `iters` calls split over `threads` threads through `guard`; returns the wall time from
/// the barrier to the last thread's end.
fn spread(guard: &Arc<Guard>, threads: u64, iters: u64) -> Duration {
    let per = iters.div_ceil(threads);
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
                for _ in 0..per {
                    assert!(check_and_complete(&guard, &run, &call));
                }
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
    let scratch = std::env::temp_dir().join(format!("tollgate-scaling-{}", std::process::id()));
    for audited in [false, true] {
        let name = if audited {
            "audited_file_sink"
        } else {
            "unaudited"
        };
        let mut g = c.benchmark_group(format!("scaling/{name}"));
        g.sample_size(20);
        g.measurement_time(Duration::from_secs(4));
        g.throughput(Throughput::Elements(1));
        for threads in [1u64, 2, 8] {
            let dir = scratch.join(format!("{name}-{threads}"));
            let _ = std::fs::remove_dir_all(&dir);
            let sink: Option<Arc<dyn AuditSink>> = audited.then(|| {
                let cfg = FileSinkConfig::default()
                    .durability(Durability::OsBuffered)
                    .queue_capacity(1 << 14);
                Arc::new(FileSink::open(&dir, cfg).unwrap().0) as Arc<dyn AuditSink>
            });
            let guard = Arc::new(all_primitives(sink));
            g.bench_function(format!("{threads}_threads"), |b| {
                b.iter_custom(|iters| spread(&guard, threads, iters))
            });
            drop(guard);
            let _ = std::fs::remove_dir_all(&dir);
        }
        g.finish();
    }
    let _ = std::fs::remove_dir_all(&scratch);
}

criterion_group!(benches, bench_scaling);
criterion_main!(benches);
