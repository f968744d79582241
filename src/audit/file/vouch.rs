//! The part of checking a record that needs no other record, on several threads.
//!
//! A line vouches for itself when it is a record whose `hash` is the SHA-256 of its own `prev`,
//! seq and event, and whose event is JSON: that is most of the cost of checking a record (the
//! hash over ~600 bytes and the JSON scan), and it does not depend on the records before it.
//! [`walk`](super::reader::walk) reads a batch of lines once, has them vouched for here in
//! parallel, then runs the chain's checks in order on one thread over the same bytes (links,
//! seqs, declarations, checkpoints, the witness). A vouched line's hash needs no second
//! computation there: the chain checks that its `prev` is the previous record's hash, and with
//! that the vouched hash is the one the chain would compute. A line that does not vouch for
//! itself is checked in full, in order, so a damaged log is reported exactly as by one thread
//! (the first error in the log's order, with its location). The bytes are read from the file
//! once, so what is vouched for is what is chained.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::record::{chain_hash, event_is_json, parse_frame};

/// At most this many threads vouch for a batch (the chain's own checks, on one thread, bound
/// the gain beyond a few).
const MAX_THREADS: usize = 8;

/// Whether `line` (without its newline) vouches for itself (see the module docs).
pub(super) fn vouches(line: &[u8]) -> bool {
    let Ok(frame) = parse_frame(line) else {
        return false;
    };
    chain_hash(frame.prev, frame.seq, frame.event) == *frame.hash
        && event_is_json(frame.event).is_ok()
}

/// How many threads vouch for a batch, the one that reads included: the machine's
/// parallelism, at most [`MAX_THREADS`].
pub(super) fn threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .min(MAX_THREADS)
}

/// Lines taken this many at a time by whichever thread is free.
const SHARE_LINES: usize = 64;

/// A batch's lines to vouch for, taken [`SHARE_LINES`] at a time by any number of threads:
/// the reading thread joins in once it has read the next batch, so no core waits for another.
struct Shares<'a> {
    data: &'a [u8],
    ranges: &'a [(usize, usize)],
    out: &'a [AtomicBool],
    next: AtomicUsize,
}

impl<'a> Shares<'a> {
    /// `out` must hold one flag per range, all `false`: a line nobody vouched for (a thread
    /// that stopped) stays unvouched and is checked in full.
    fn new(data: &'a [u8], ranges: &'a [(usize, usize)], out: &'a [AtomicBool]) -> Self {
        Self {
            data,
            ranges,
            out,
            next: AtomicUsize::new(0),
        }
    }

    /// Vouches for shares until none is left.
    fn work(&self) {
        loop {
            let from = self.next.fetch_add(1, Ordering::Relaxed) * SHARE_LINES;
            if from >= self.ranges.len() {
                return;
            }
            let ranges = &self.ranges[from..(from + SHARE_LINES).min(self.ranges.len())];
            for (o, &(start, end)) in self.out[from..].iter().zip(ranges) {
                o.store(
                    self.data.get(start..end).is_some_and(vouches),
                    Ordering::Relaxed,
                );
            }
        }
    }
}

/// Sets `out[i]` to whether `data[ranges[i]]` vouches for itself, on up to `threads` threads
/// (the calling one included), while the calling thread first runs `meanwhile` (the walk reads
/// its next batch there) and then joins in. A thread that cannot be started leaves its shares
/// to the others.
pub(super) fn vouch_while<R>(
    data: &[u8],
    ranges: &[(usize, usize)],
    threads: usize,
    out: &mut Vec<AtomicBool>,
    meanwhile: impl FnOnce() -> R,
) -> R {
    reset(out, ranges.len());
    // No more threads than shares: a small log (or a batch's tail) starts none.
    let threads = threads.min(ranges.len().div_ceil(SHARE_LINES));
    let shares = Shares::new(data, ranges, out);
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads)
            .filter_map(|_| {
                std::thread::Builder::new()
                    .name("tollgate-verify".into())
                    .spawn_scoped(s, || shares.work())
                    .ok()
            })
            .collect();
        let r = meanwhile();
        shares.work();
        // Joined here so that a panic (not expected) leaves lines unvouched instead of
        // propagating: they are checked in full.
        for h in helpers {
            let _ = h.join();
        }
        r
    })
}

/// `out` as `len` flags, all `false`.
fn reset(out: &mut Vec<AtomicBool>, len: usize) {
    out.clear();
    out.resize_with(len, AtomicBool::default);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::file::record::{GENESIS_HEX, Hex64, test_line};

    /// A record line without its newline, and its hash.
    fn record(seq: u64, prev: &Hex64, event: &[u8]) -> (Vec<u8>, Hex64) {
        let (mut line, hash) = test_line(seq, prev, event);
        line.pop(); // the newline
        (line, hash)
    }

    #[test]
    fn a_record_vouches_for_itself_and_any_change_to_it_does_not() {
        let (line, _) = record(7, &GENESIS_HEX, br#"{"event":"decision","a":[1,2]}"#);
        assert!(vouches(&line));
        // Every single-byte change of the line is caught (the hash, the seq, the prev, the
        // event, the frame).
        for i in 0..line.len() {
            let mut changed = line.clone();
            changed[i] ^= 0x01;
            assert!(!vouches(&changed), "byte {i} changed and still vouched");
        }
        assert!(!vouches(&line[..line.len() - 1]));
        assert!(!vouches(b""));
        // A correct hash over an event that is not JSON does not vouch.
        let (bad_json, _) = record(8, &GENESIS_HEX, br#"{"event":"decision","a":[1,2}"#);
        assert!(!vouches(&bad_json));
    }

    #[test]
    fn every_thread_count_gives_the_same_answers() {
        let mut data = Vec::new();
        let mut ranges = Vec::new();
        let mut prev = GENESIS_HEX;
        let mut want = Vec::new();
        for seq in 1..=101u64 {
            let (mut line, hash) = record(seq, &prev, format!(r#"{{"n":{seq}}}"#).as_bytes());
            prev = hash;
            let good = seq % 7 != 3;
            if !good {
                // A digit of the event's number, changed.
                let at = line.len() - 3;
                line[at] = if line[at] == b'9' { b'8' } else { b'9' };
            }
            want.push(good);
            let start = data.len();
            data.extend_from_slice(&line);
            ranges.push((start, data.len()));
        }
        // A range outside the data is an answer too (not a panic).
        ranges.push((data.len(), data.len() + 10));
        want.push(false);
        let mut out = Vec::new();
        let read = |out: &[AtomicBool]| -> Vec<bool> {
            out.iter().map(|o| o.load(Ordering::Relaxed)).collect()
        };
        for threads in [0, 1, 2, 3, 8, 200] {
            let meanwhile = vouch_while(&data, &ranges, threads, &mut out, || threads);
            assert_eq!(meanwhile, threads);
            assert_eq!(read(&out), want, "{threads} threads");
        }
        vouch_while(&data, &[], 4, &mut out, || ());
        assert!(out.is_empty());
    }
}
