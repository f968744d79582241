//! The one temporary-directory helper of the integration tests, on the `tempfile` crate.
//!
//! A test binary that does not pull in the whole `common` module includes just this file with
//! `#[path = "common/tempdir.rs"] mod tempdir;` (the rest of `common` would be dead code there);
//! one that has `mod common;` reaches it as `common::tempdir`.
//!
//! The returned [`tempfile::TempDir`] deletes the directory when it is dropped, so a test keeps
//! the value bound (not `_`) for as long as a sink, a child process or a reopen still needs the
//! directory.

/// Creates a fresh, empty directory `<system temp dir>/tollgate-<area>-<name>-<random>`.
///
/// `area` names the test file (so a leftover directory says where it came from) and `name` the
/// test; the random suffix from `tempfile` makes it unique across tests, threads and runs, and
/// `tempfile` creates it exclusively, so no stale directory from an earlier run is ever reused.
///
/// # Panics
///
/// If the directory cannot be created (a test cannot run without it).
pub fn temp_dir(area: &str, name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("tollgate-{area}-{name}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temp dir for {area}/{name}: {e}"))
}
