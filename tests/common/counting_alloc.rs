//! A global allocator that counts the current thread's allocations (and reallocations), for the
//! tests that prove a path allocates nothing. Included with
//! `#[path = "common/counting_alloc.rs"] mod counting_alloc;` by each such test binary (a global
//! allocator is per binary). Counting per thread keeps other test threads, and the audit
//! writer's thread, out of the figure.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The counting allocator (wraps the system allocator).
pub struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations this thread has made so far.
pub fn count() -> u64 {
    ALLOCS.with(Cell::get)
}

/// Runs `f` and returns its result with the allocations this thread made meanwhile.
#[allow(dead_code)]
pub fn allocations<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = count();
    let r = f();
    (r, count() - before)
}
