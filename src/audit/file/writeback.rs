//! How the writer helps the kernel with the live segment, under the modes that do not fsync every
//! batch: early writeback (see
//! [`FileSinkConfig::writeback_bytes`](super::FileSinkConfig::writeback_bytes)): every so many
//! written bytes the writer asks the kernel to start writing them to disk, so the fsync that
//! closes a segment (or serves a `flush`) waits for the last few megabytes, not the whole
//! segment; and preallocation (see
//! [`FileSinkConfig::preallocate_segments`](super::FileSinkConfig::preallocate_segments)).

use std::fs::File;

/// Starts (does not wait for) the writeback of `file`'s bytes `from..to`, and lets the kernel
/// drop those pages from its cache once they are clean: nobody reads a log's fresh tail soon,
/// and a reader that does gets the same bytes from disk.
///
/// On Linux `POSIX_FADV_DONTNEED` writes back the range's dirty pages without waiting for them
/// (`WB_SYNC_NONE`) and discards only clean ones; a page still dirty or under writeback stays.
/// (`sync_file_range`, the call made for this, has no safe binding in rustix or nix; std has
/// neither.)
#[cfg(target_os = "linux")]
pub(super) fn start(file: &File, from: u64, to: u64) {
    let Some(len) = std::num::NonZeroU64::new(to.saturating_sub(from)) else {
        return;
    };
    // Advice only: a failure changes nothing the fsyncs (which report their own errors) do.
    let _ = rustix::fs::fadvise(file, from, Some(len), rustix::fs::Advice::DontNeed);
}

/// Elsewhere the fsyncs do all the work, as before.
#[cfg(not(target_os = "linux"))]
pub(super) fn start(_file: &File, _from: u64, _to: u64) {}

/// Reserves disk blocks for `file` up to `to` bytes without changing its length
/// (`fallocate(FALLOC_FL_KEEP_SIZE)`), so appends find their blocks allocated instead of
/// reserving each one as they go (ext4's delayed allocation was a tenth of the writer's CPU).
/// Readers see the same length and bytes; only the disk usage shows the reservation.
///
/// Best effort: a file system without `fallocate`, or without the space, refuses, and the
/// appends then allocate as they always did (a full disk is reported by the write that finds
/// it).
#[cfg(target_os = "linux")]
pub(super) fn preallocate(file: &File, len: u64, to: u64) {
    if to > len {
        let _ = rustix::fs::fallocate(file, rustix::fs::FallocateFlags::KEEP_SIZE, len, to - len);
    }
}

/// Only Linux has `FALLOC_FL_KEEP_SIZE`: elsewhere segments grow as they are written.
#[cfg(not(target_os = "linux"))]
pub(super) fn preallocate(_file: &File, _len: u64, _to: u64) {}
