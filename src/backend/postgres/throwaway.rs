//! A throwaway PostgreSQL server for tests and examples: `initdb` into a temporary directory,
//! started on a free loopback port from the server binaries installed on the machine, stopped
//! and deleted when dropped (or, if the owning process dies first, by a watchdog that outlives
//! it by at most a second).
//!
//! Binaries are looked up in `TOLLGATE_PG_BIN` (a directory holding `initdb` and `pg_ctl`), then
//! the newest `/usr/lib/postgresql/<version>/bin` (Debian's layout), then `PATH`. PostgreSQL
//! refuses to run as root: when the process is root, the server runs as the `postgres` user
//! (through `runuser`), which owns the temporary directory.
//!
//! Not for production: authentication is `trust` on loopback.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;

/// Why a throwaway server could not be started.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ThrowawayError {
    /// No `initdb`/`pg_ctl` found.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) not found in TOLLGATE_PG_BIN, \
         /usr/lib/postgresql/*/bin or PATH (Debian: apt-get install postgresql)"
    )]
    NotInstalled,
    /// A step failed.
    #[error("{step} failed: {detail}")]
    Step {
        /// Which step (`initdb`, `pg_ctl start`, ...).
        step: &'static str,
        /// Its output or error.
        detail: String,
    },
}

/// Creates a new directory under the temporary directory, owner-only, failing rather than
/// reusing one that exists: a name another user of a shared `/tmp` guessed and made first is
/// never taken over (the server would run its `trust`-authenticated socket there).
fn fresh_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let mut last = None;
    for attempt in 0..16u32 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "tollgate-pg-{}-{nanos:09}-{attempt}",
            std::process::id()
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free directory name")))
}

/// A running throwaway server. Dropping it stops the server and deletes its files.
#[derive(Debug)]
pub struct ThrowawayPostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl ThrowawayPostgres {
    /// Creates and starts a server; returns once it accepts connections.
    pub fn start() -> Result<Self, ThrowawayError> {
        let bin = find_bin().ok_or(ThrowawayError::NotInstalled)?;
        let as_postgres = is_root();
        let step = |step: &'static str| {
            move |e: std::io::Error| ThrowawayError::Step {
                step,
                detail: e.to_string(),
            }
        };
        let dir = fresh_dir().map_err(step("creating the directory"))?;
        let server = ThrowawayPostgres {
            bin,
            dir,
            port: free_port().map_err(step("finding a free port"))?,
            as_postgres,
        };
        if as_postgres {
            run(
                Command::new("chown").arg("postgres:").arg(&server.dir),
                "chown to postgres",
            )?;
        }
        server.watchdog();
        let data = server.dir.join("data");
        run(
            server.command("initdb").arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ]),
            "initdb",
        )?;
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            server.port,
            server.dir.display()
        );
        run(
            server
                .command("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(server.dir.join("server.log"))
                .args(["-w", "-t", "60", "-o", &options, "start"]),
            "pg_ctl start",
        )?;
        Ok(server)
    }

    /// The connection string (`host=127.0.0.1 port=... user=postgres dbname=postgres`).
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its directory (data files and `server.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        c.stdin(Stdio::null());
        c
    }

    /// Stops the server and deletes its files once this process is gone, even if it is killed
    /// before `Drop` runs (tests keep servers in statics, which are never dropped).
    fn watchdog(&self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = if self.as_postgres {
            format!("runuser -u postgres -- '{}'", pg_ctl.display())
        } else {
            format!("'{}'", pg_ctl.display())
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {stop} -D '{dir}/data' stop -m immediate >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            dir = self.dir.display(),
        );
        // Best effort: without the watchdog, Drop still cleans up on a normal exit.
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["stop", "-m", "immediate"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(command: &mut Command, step: &'static str) -> Result<(), ThrowawayError> {
    let out = command.output().map_err(|e| ThrowawayError::Step {
        step,
        detail: e.to_string(),
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(ThrowawayError::Step {
        step,
        detail: format!(
            "{}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ),
    })
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

fn find_bin() -> Option<PathBuf> {
    let has = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(d) = std::env::var_os("TOLLGATE_PG_BIN").map(PathBuf::from) {
        return has(&d).then_some(d);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let d = e.path().join("bin");
            has(&d).then_some((v, d))
        })
        .collect();
    versions.sort();
    if let Some((_, d)) = versions.pop() {
        return Some(d);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).find(|d| has(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn each_server_directory_is_new_and_owner_only() {
        let a = fresh_dir().unwrap();
        let b = fresh_dir().unwrap();
        assert_ne!(a, b);
        for d in [&a, &b] {
            let meta = std::fs::metadata(d).unwrap();
            assert!(meta.is_dir());
            assert_eq!(meta.permissions().mode() & 0o777, 0o700, "{}", d.display());
        }
        std::fs::remove_dir(&a).unwrap();
        std::fs::remove_dir(&b).unwrap();
    }
}
