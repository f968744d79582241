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
//! Not for production: authentication is `trust` on loopback unless
//! [`ThrowawayOptions::password`] is given. [`ThrowawayOptions::tls`] serves TLS with a given
//! certificate (the backend's TLS tests), [`ThrowawayOptions::tls_only`] refuses TCP
//! connections without it.

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

/// How [`ThrowawayPostgres::start_with`] sets a server up. The default is
/// [`ThrowawayPostgres::start`]'s: plaintext, `trust` authentication.
///
/// ```no_run
/// use tollgate::backend::postgres::throwaway::{ThrowawayOptions, ThrowawayPostgres};
///
/// # let (cert_pem, key_pem) = (String::new(), String::new());
/// // A server for `localhost` that refuses plaintext TCP connections and wants a password.
/// let server = ThrowawayPostgres::start_with(
///     &ThrowawayOptions::new()
///         .tls(cert_pem, key_pem)
///         .tls_only()
///         .password("s3cret"),
/// )?;
/// println!("{}", server.url()); // host=127.0.0.1 port=... user=postgres dbname=postgres password=...
/// # Ok::<(), tollgate::backend::postgres::throwaway::ThrowawayError>(())
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct ThrowawayOptions {
    tls: Option<(String, String)>,
    tls_only: bool,
    password: Option<String>,
}

impl std::fmt::Debug for ThrowawayOptions {
    // Neither the key nor the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThrowawayOptions")
            .field("tls", &self.tls.is_some())
            .field("tls_only", &self.tls_only)
            .field("password", &self.password.is_some())
            .finish()
    }
}

impl ThrowawayOptions {
    /// The default: plaintext, `trust` authentication.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves TLS (`ssl = on`) with `cert_pem` (the server's certificate in PEM, optionally
    /// followed by its intermediates) and its private key `key_pem` (PEM; written owner-only
    /// and owned by the server's user, as PostgreSQL demands).
    pub fn tls(mut self, cert_pem: impl Into<String>, key_pem: impl Into<String>) -> Self {
        self.tls = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Refuses TCP connections without TLS: `pg_hba.conf`'s `host` lines become `hostssl`
    /// (needs [`tls`](Self::tls)).
    pub fn tls_only(mut self) -> Self {
        self.tls_only = true;
        self
    }

    /// TCP connections authenticate with `scram-sha-256` and this password of the `postgres`
    /// superuser (Unix-socket connections stay `trust`); [`ThrowawayPostgres::url`] carries it.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }
}

/// A running throwaway server. Dropping it stops the server and deletes its files.
pub struct ThrowawayPostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
    password: Option<String>,
}

impl std::fmt::Debug for ThrowawayPostgres {
    // Not the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThrowawayPostgres")
            .field("bin", &self.bin)
            .field("dir", &self.dir)
            .field("port", &self.port)
            .field("as_postgres", &self.as_postgres)
            .finish_non_exhaustive()
    }
}

impl ThrowawayPostgres {
    /// Creates and starts a server; returns once it accepts connections.
    pub fn start() -> Result<Self, ThrowawayError> {
        Self::start_with(&ThrowawayOptions::default())
    }

    /// Creates and starts a server set up as `options` say; returns once it accepts
    /// connections.
    pub fn start_with(options: &ThrowawayOptions) -> Result<Self, ThrowawayError> {
        if options.tls_only && options.tls.is_none() {
            return Err(ThrowawayError::Step {
                step: "options",
                detail: "`tls_only` needs `tls` (a certificate and key to serve)".into(),
            });
        }
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
            password: options.password.clone(),
        };
        if as_postgres {
            run(
                Command::new("chown").arg("postgres:").arg(&server.dir),
                "chown to postgres",
            )?;
        }
        server.watchdog();
        let data = server.dir.join("data");
        let mut initdb = server.command("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-E", "UTF8", "--no-instructions"]);
        let pwfile = server.dir.join("pwfile");
        match &options.password {
            Some(password) => {
                server.write_private(&pwfile, password.as_bytes())?;
                initdb
                    .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
                    .arg(format!("--pwfile={}", pwfile.display()));
            }
            None => {
                initdb.arg("--auth=trust");
            }
        }
        let initialised = run(&mut initdb, "initdb");
        let _ = std::fs::remove_file(&pwfile);
        initialised?;
        let mut server_options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            server.port,
            server.dir.display()
        );
        if let Some((cert_pem, key_pem)) = &options.tls {
            let cert = server.dir.join("server.crt");
            let key = server.dir.join("server.key");
            server.write_private(&cert, cert_pem.as_bytes())?;
            server.write_private(&key, key_pem.as_bytes())?;
            server_options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert.display(),
                key.display()
            ));
        }
        if options.tls_only {
            hba_tls_only(&data.join("pg_hba.conf"))?;
        }
        run(
            server
                .command("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(server.dir.join("server.log"))
                .args(["-w", "-t", "60", "-o", &server_options, "start"]),
            "pg_ctl start",
        )?;
        Ok(server)
    }

    /// The connection string (`host=127.0.0.1 port=... user=postgres dbname=postgres`, and
    /// `password=...` when the server has one).
    pub fn url(&self) -> String {
        let mut url = format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        );
        if let Some(password) = &self.password {
            let quoted = password.replace('\\', "\\\\").replace('\'', "\\'");
            url.push_str(&format!(" password='{quoted}'"));
        }
        url
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its directory (data files and `server.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `contents` to the new file `path`, owner-only, owned by the server's user.
    fn write_private(&self, path: &Path, contents: &[u8]) -> Result<(), ThrowawayError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let failed = |e: std::io::Error| ThrowawayError::Step {
            step: "writing the server's files",
            detail: format!("{}: {e}", path.display()),
        };
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut f| f.write_all(contents))
            .map_err(failed)?;
        if self.as_postgres {
            run(
                Command::new("chown").arg("postgres:").arg(path),
                "chown to postgres",
            )?;
        }
        Ok(())
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

/// Turns `pg_hba.conf`'s `host` lines (TCP, with or without TLS) into `hostssl` lines (TCP with
/// TLS only): a plaintext TCP connection then matches no line and is refused.
fn hba_tls_only(path: &Path) -> Result<(), ThrowawayError> {
    let failed = |e: std::io::Error| ThrowawayError::Step {
        step: "pg_hba.conf",
        detail: format!("{}: {e}", path.display()),
    };
    let hba = std::fs::read_to_string(path).map_err(failed)?;
    let rewritten: String = hba
        .lines()
        .map(|line| match line.strip_prefix("host") {
            Some(rest) if rest.starts_with([' ', '\t']) => format!("hostssl{rest}\n"),
            _ => format!("{line}\n"),
        })
        .collect();
    // Written in place: the file keeps its owner (the server's user) and mode.
    std::fs::write(path, rewritten).map_err(failed)
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
