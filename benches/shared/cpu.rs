//! CPU time from Linux's `schedstat` files (nanoseconds on a CPU), for benches that report what
//! a call costs the machine: on a shared machine the wall clock depends on the other load, this
//! much less. Every function gives 0 / `None` where there is no such file.
#![allow(dead_code)]

use std::path::Path;

/// The first field of a `schedstat` file: nanoseconds spent on a CPU.
fn schedstat_ns(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time of the calling thread so far.
pub fn thread_ns() -> Option<u64> {
    schedstat_ns(Path::new("/proc/thread-self/schedstat"))
}

/// CPU time so far of the threads under `tasks` (`/proc/<pid>/task`) whose name (`comm`)
/// `named` accepts.
pub fn threads_ns(tasks: &Path, named: impl Fn(&str) -> bool) -> u64 {
    let Ok(entries) = std::fs::read_dir(tasks) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| named(c.trim_end()))
        })
        .filter_map(|t| schedstat_ns(&t.path().join("schedstat")))
        .sum()
}
