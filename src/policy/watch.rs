//! Reloading a guard from its policy file when the file changes.
//!
//! A [`PolicyWatcher`] polls the file (its contents, not only its timestamp) on its own thread.
//! A changed file that reads as a valid document is installed with [`Guard::reload`] (or
//! [`Guard::reload_signed`] with the file's detached signatures when the guard requires them),
//! recorded as reloaded by `file-watcher:<path>`. A file that is invalid, unsigned, or changes a
//! part bound at build time is not installed: the policy in force stays, and the guard's alert
//! sink gets a [`PolicyRejected`](crate::breaker::AlertKind::PolicyRejected) alert naming the
//! error. Polling (rather than OS notifications) keeps the watcher dependency-free and sees
//! editors that replace the file by renaming.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{Policy, SignatureFile};
use crate::Guard;
use crate::verdict::PolicyVersion;

/// What one look at the file found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchOutcome {
    /// The file is as it was when last looked at.
    Unchanged,
    /// A new policy is in force (the version replaced, the version installed).
    Reloaded {
        /// The version replaced.
        previous: PolicyVersion,
        /// The version now in force.
        current: PolicyVersion,
    },
    /// The changed file was not installed; the policy in force stays.
    Rejected(String),
}

/// Watches a policy file and reloads a guard from it. Stops when dropped.
#[derive(Debug)]
pub struct PolicyWatcher {
    state: Arc<parking_lot::Mutex<Watched>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Watched {
    guard: Guard,
    path: PathBuf,
    /// SHA-256 of the file (and its signature file) last seen.
    seen: Option<[u8; 32]>,
}

impl Watched {
    fn look(&mut self) -> WatchOutcome {
        let sig_path = SignatureFile::path_for(&self.path);
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) => return self.reject(&format!("cannot read: {e}")),
        };
        let sigs = std::fs::read(&sig_path).ok();
        let mut h = Sha256::new();
        h.update(&text);
        h.update(sigs.as_deref().unwrap_or_default());
        let digest: [u8; 32] = h.finalize().into();
        if self.seen == Some(digest) {
            return WatchOutcome::Unchanged;
        }
        self.seen = Some(digest);
        let policy = match Policy::from_file(&self.path) {
            Ok(p) => p,
            Err(e) => return self.reject(&e.to_string()),
        };
        if policy.version() == self.guard.policy_version() {
            return WatchOutcome::Unchanged;
        }
        let by = format!("file-watcher:{}", self.path.display());
        let reloaded = if self.guard.requires_signatures() {
            match SignatureFile::from_file(&sig_path) {
                Ok(sigs) => self.guard.reload_signed(&policy, &sigs, &by),
                Err(e) => return self.reject(&format!("signatures: {e}")),
            }
        } else {
            self.guard.reload(&policy, &by)
        };
        match reloaded {
            Ok(previous) => WatchOutcome::Reloaded {
                previous,
                current: policy.version(),
            },
            Err(e) => self.reject(&e.to_string()),
        }
    }

    fn reject(&self, why: &str) -> WatchOutcome {
        let detail = format!(
            "policy file `{}` not installed, the policy in force ({:#}) stays: {why}",
            self.path.display(),
            self.guard.policy_version()
        );
        tracing::warn!(target: "tollgate::policy", "{detail}");
        self.guard.alert_policy_rejected(detail.clone());
        WatchOutcome::Rejected(detail)
    }
}

impl PolicyWatcher {
    /// Watches `path` for `guard` without a thread: call [`check_now`](Self::check_now) to look.
    /// The file's current contents count as seen (the guard is assumed to run them).
    pub fn new(guard: Guard, path: impl AsRef<Path>) -> Self {
        let path = path.as_ref().to_owned();
        let mut watched = Watched {
            guard,
            path,
            seen: None,
        };
        let _ = watched.look();
        PolicyWatcher {
            state: Arc::new(parking_lot::Mutex::new(watched)),
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        }
    }

    /// Watches `path` for `guard`, looking every `interval` on a thread of its own.
    pub fn spawn(
        guard: Guard,
        path: impl AsRef<Path>,
        interval: Duration,
    ) -> std::io::Result<Self> {
        let mut w = Self::new(guard, path);
        let (state, stop) = (Arc::clone(&w.state), Arc::clone(&w.stop));
        let thread = std::thread::Builder::new()
            .name("tollgate-policy-watcher".into())
            .spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    std::thread::park_timeout(interval);
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let _ = state.lock().look();
                }
            })?;
        w.thread = Some(thread);
        Ok(w)
    }

    /// Looks at the file now.
    pub fn check_now(&self) -> WatchOutcome {
        self.state.lock().look()
    }
}

impl Drop for PolicyWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
