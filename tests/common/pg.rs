//! PostgreSQL for the fleet tests: `TOLLGATE_PG_URL` when set, otherwise one throwaway server
//! per test binary started from the machine's server binaries. Each test takes its own schema.
//! Without a server a local run says why it skips; with `TOLLGATE_REQUIRE_PG=1` (set by
//! `.ci/run`) it fails instead.
#![cfg(feature = "postgres")]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tollgate::backend::postgres::PgBackend;
use tollgate::backend::postgres::throwaway::ThrowawayPostgres;

enum Server {
    External(String),
    Throwaway(ThrowawayPostgres),
    Missing(String),
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        if let Ok(url) = std::env::var("TOLLGATE_PG_URL") {
            return Server::External(url);
        }
        match ThrowawayPostgres::start() {
            Ok(s) => Server::Throwaway(s),
            Err(e) => Server::Missing(e.to_string()),
        }
    })
}

/// The connection string of the tests' server, or `None` (with the reason printed) when there is
/// none and `TOLLGATE_REQUIRE_PG` is not `1`.
pub fn pg_url() -> Option<String> {
    match server() {
        Server::External(url) => Some(url.clone()),
        Server::Throwaway(s) => Some(s.url()),
        Server::Missing(why) => {
            if std::env::var_os("TOLLGATE_REQUIRE_PG").is_some_and(|v| v == "1") {
                panic!("PostgreSQL is required (TOLLGATE_REQUIRE_PG=1) but unavailable: {why}");
            }
            eprintln!("PostgreSQL not found, skipping: {why}");
            None
        }
    }
}

/// A backend on a schema no other test (or earlier run) uses.
pub fn fresh_backend(label: &str) -> Option<PgBackend> {
    static N: AtomicU32 = AtomicU32::new(0);
    let url = pg_url()?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let schema = format!(
        "t_{label}_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos % 1_000_000_000
    );
    Some(PgBackend::from_url(&url, &schema, Duration::from_secs(10)).expect("test backend"))
}
