//! The directory lock: one writer per audit directory, across threads and processes.
//!
//! [`FileSink::open`](super::FileSink::open) (and [`FileSink::repair`](super::FileSink::repair))
//! take an exclusive OS lock (`flock` on Unix, `LockFileEx` on Windows, through std's
//! [`File::try_lock`]) on the file `audit.lock` in the directory, and hold it until the sink is
//! closed or dropped (or the process dies: the OS releases it). Once locked, the holder writes
//! `pid=<pid> host=<host> since=<unix seconds>` into the file, so a refused opener can say who
//! holds it. The lock is advisory: it stops every tollgate writer, not a process that ignores it.
//!
//! Within one process a registry of open directories refuses a second sink at once. It also
//! tells apart a lock this process really holds from one a child process briefly inherited: an
//! OS lock belongs to the open file, which a child forked by any thread shares until it execs,
//! so a directory closed and reopened at that moment still looks locked "by this process". Such
//! a lock is waited for (at most [`INHERITED_LOCK_WAIT`]) instead of refused.

use std::collections::HashSet;
use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::audit::AuditError;

/// The lock file's name inside the audit directory.
pub const LOCK_FILE: &str = "audit.lock";

/// Who holds an audit directory's lock, as its lock file says.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockHolder {
    /// The holder's process id.
    pub pid: u32,
    /// The holder's host name (`unknown` where it cannot be read).
    pub host: String,
    /// When the holder took the lock, unix seconds.
    pub since_unix: u64,
}

impl LockHolder {
    fn current() -> Self {
        Self {
            pid: std::process::id(),
            host: host_name(),
            since_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    fn parse(text: &str) -> Option<Self> {
        let (mut pid, mut host, mut since) = (None, None, None);
        for field in text.split_whitespace() {
            match field.split_once('=')? {
                ("pid", v) => pid = v.parse().ok(),
                ("host", v) => host = Some(v.to_owned()),
                ("since", v) => since = v.parse().ok(),
                _ => {}
            }
        }
        Some(Self {
            pid: pid?,
            host: host?,
            since_unix: since?,
        })
    }

    /// Whether the holder is this process.
    pub fn is_this_process(&self) -> bool {
        self.pid == std::process::id() && self.host == host_name()
    }
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "process {} on host {} (since unix time {})",
            self.pid, self.host, self.since_unix
        )?;
        if self.is_this_process() {
            f.write_str(", which is this process: another sink on the same directory is open")?;
        }
        Ok(())
    }
}

/// The host name, without a dependency: what the OS exposes in a file or the environment.
fn host_name() -> String {
    let from_file = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    from_file("/proc/sys/kernel/hostname")
        .or_else(|| from_file("/etc/hostname"))
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.replace(char::is_whitespace, "_"))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// How long an OS lock that this process does not hold, but that names this process, is waited
/// for: a child forked while this process held it keeps it until the child execs.
pub const INHERITED_LOCK_WAIT: Duration = Duration::from_secs(2);

/// The directories this process has open (canonical paths).
static OPEN_HERE: LazyLock<Mutex<HashSet<PathBuf>>> = LazyLock::new(Default::default);

/// An exclusive lock on an audit directory; released when dropped.
#[derive(Debug)]
pub(super) struct DirLock {
    _file: File,
    key: PathBuf,
}

impl Drop for DirLock {
    fn drop(&mut self) {
        OPEN_HERE.lock().remove(&self.key);
    }
}

/// Takes the lock on `dir` (which must exist), or says who holds it.
pub(super) fn lock(dir: &Path) -> Result<DirLock, AuditError> {
    let key = dir.canonicalize()?;
    let here = |holder| AuditError::DirectoryLocked {
        dir: dir.to_owned(),
        holder,
    };
    if !OPEN_HERE.lock().insert(key.clone()) {
        let mut text = String::new();
        let holder = File::open(dir.join(LOCK_FILE))
            .and_then(|mut f| f.read_to_string(&mut text))
            .ok()
            .and_then(|_| LockHolder::parse(&text));
        return Err(here(holder.or_else(|| Some(LockHolder::current()))));
    }
    // Registered: undo it unless the lock is taken.
    let registered = Registered(Some(key));
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    let started = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                file.seek(SeekFrom::Start(0))?;
                // The holder writes its line right after locking; in that instant it may be
                // empty.
                let holder = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| LockHolder::parse(&text));
                let inherited = holder.as_ref().is_some_and(LockHolder::is_this_process);
                if !inherited || started.elapsed() >= INHERITED_LOCK_WAIT {
                    return Err(here(holder));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(TryLockError::Error(e)) => {
                return Err(AuditError::Io(io::Error::new(
                    e.kind(),
                    format!("locking {}: {e}", path.display()),
                )));
            }
        }
    }
    let me = LockHolder::current();
    let line = format!("pid={} host={} since={}\n", me.pid, me.host, me.since_unix);
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(line.as_bytes())?;
    file.sync_data()?;
    Ok(DirLock {
        _file: file,
        key: registered.keep(),
    })
}

/// A registration in [`OPEN_HERE`] that is undone unless kept.
struct Registered(Option<PathBuf>);

impl Registered {
    fn keep(mut self) -> PathBuf {
        self.0.take().unwrap_or_default()
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(key) = self.0.take() {
            OPEN_HERE.lock().remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_lines_round_trip_and_junk_is_none() {
        let me = LockHolder::current();
        let line = format!("pid={} host={} since={}\n", me.pid, me.host, me.since_unix);
        assert_eq!(LockHolder::parse(&line), Some(me.clone()));
        assert!(me.is_this_process());
        assert!(me.to_string().contains("this process"));
        assert_eq!(LockHolder::parse(""), None);
        assert_eq!(LockHolder::parse("pid=x host=h since=1"), None);
        assert_eq!(LockHolder::parse("garbage"), None);
    }
}
