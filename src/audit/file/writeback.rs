//! Early writeback of the live segment (see
//! [`FileSinkConfig::writeback_bytes`](super::FileSinkConfig::writeback_bytes)): every so many
//! written bytes the writer asks the kernel to start writing them to disk, so the fsync that
//! closes a segment (or serves a `flush`) waits for the last few megabytes, not the whole
//! segment.

use std::fs::File;

/// Starts (does not wait for) the writeback of `file`'s bytes `from..to`, and lets the kernel
/// drop those pages from its cache once they are clean: nobody reads a log's fresh tail soon,
/// and a reader that does gets the same bytes from disk.
///
/// On Linux `POSIX_FADV_DONTNEED` writes back the range's dirty pages without waiting for them
/// (`WB_SYNC_NONE`) and discards only clean ones; a page still dirty or under writeback stays.
/// (`sync_file_range`, the call made for this, has no safe binding in rustix or nix; std has
/// neither.)
#[cfg(unix)]
pub(super) fn start(file: &File, from: u64, to: u64) {
    let Some(len) = std::num::NonZeroU64::new(to.saturating_sub(from)) else {
        return;
    };
    // Advice only: a failure changes nothing the fsyncs (which report their own errors) do.
    let _ = rustix::fs::fadvise(file, from, Some(len), rustix::fs::Advice::DontNeed);
}

/// Elsewhere the fsyncs do all the work, as before.
#[cfg(not(unix))]
pub(super) fn start(_file: &File, _from: u64, _to: u64) {}
