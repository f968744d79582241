//! Successes a closed breaker has not yet added to its window, counted per thread stripe.
//!
//! While a breaker's window holds no failure and no slow call, one more fast success changes
//! nothing a decision reads except how full the window is. Taking the breaker's lock for it made
//! every thread write the same cache line (the lock word) on every completion, which is what
//! kept a second thread from doubling throughput (`benches/scaling.rs`). Such successes are
//! instead counted here, each thread on its own cache line, and added to the window, in one
//! step, the next time the breaker takes its lock (any failure, slow call or state change).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Stripes per breaker: threads beyond this share one (still far fewer writers per line than
/// one lock for all).
const STRIPES: usize = 8;

/// One counter on its own cache line (128 bytes: adjacent-line prefetch pairs 64-byte lines).
#[derive(Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

/// Deferred successes, striped by thread.
#[derive(Default)]
pub(super) struct Deferred {
    stripes: [Padded; STRIPES],
}

/// Hands out stripe indices to threads in turn.
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static STRIPE: usize = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
}

impl Deferred {
    /// Counts one success of the calling thread.
    #[inline]
    pub(super) fn add(&self) {
        let i = STRIPE.with(|s| *s);
        self.stripes[i].0.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes every success counted so far (zeroing the counters). Called under the breaker's
    /// lock, so two takers never interleave; adders never block.
    pub(super) fn take(&self) -> u64 {
        self.stripes
            .iter()
            .map(|s| {
                // A cheap load first: most stripes are zero, and a swap would write their line.
                if s.0.load(Ordering::Relaxed) == 0 {
                    0
                } else {
                    s.0.swap(0, Ordering::AcqRel)
                }
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_add_from_every_thread_is_taken_exactly_once() {
        let d = std::sync::Arc::new(Deferred::default());
        let mut taken = 0;
        std::thread::scope(|s| {
            for _ in 0..12 {
                let d = &d;
                s.spawn(move || {
                    for _ in 0..10_000 {
                        d.add();
                    }
                });
            }
            // Taking while adders run loses nothing and counts nothing twice.
            for _ in 0..100 {
                taken += d.take();
            }
        });
        taken += d.take();
        assert_eq!(taken, 120_000);
        assert_eq!(d.take(), 0);
    }
}
