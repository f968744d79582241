//! The kill switch shared by many guards: suspend and resume everything, one agent or one run
//! id, from any process or host or from `tollgate kill`.
//!
//! The shared state ([`KillState`]: who suspended what, when, why, and a revision number that
//! every change increments) lives in a [`KillSwitchStore`]:
//! - [`FileKillSwitch`]: a state file in a directory, replaced atomically under a lock file, for
//!   several processes on one host (the embedded default);
//! - `PgKillSwitch` (feature `postgres`): a table, with a `NOTIFY` on every change, for a fleet.
//!
//! A [`KillFollower`] per guard applies the shared state to the guard's fleet switches, kept
//! apart from the guard's own ([`Guard::suspend_all`](crate::Guard::suspend_all),
//! [`suspend_agent`](crate::Guard::suspend_agent), ...): a call is refused while either
//! suspends it, and a local resume never lifts a fleet suspension (nor the reverse). The check
//! path stays one atomic load. The shared state's revision only goes up: a follower refuses a
//! lower one (a state recreated or restored from an old copy) and keeps its guard suspended, and
//! the stores never recreate a state that was created once (see [`FileKillSwitch::open`]). It wakes on a change notification where the store has one and polls every
//! `poll_interval` otherwise, and it **fails closed**: when it has not confirmed the state for
//! longer than `staleness` (database down, partition, a corrupt or deleted state file) it
//! suspends the guard with the reason `kill-switch-stale`, and lifts only that suspension once
//! the state is confirmed again, never one an operator set.
//!
//! ```toml
//! [backend.kill_switch]
//! poll_interval = "500ms"
//! staleness = "5s"
//! dir = "/var/lib/tollgate/kill"   # the files backend: where the state file lives
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{BackendKind, BackendSection};
use crate::policy::DocumentError;

mod file;
mod follower;

pub use file::FileKillSwitch;
pub use follower::{FollowerStatus, KillFollower, REGRESSED_REASON, STALE_REASON};

/// The document's `[backend.kill_switch]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KillSwitchSection {
    /// How often a follower reads the shared state when no notification arrives (and how often
    /// the file backend looks at its file).
    #[serde(default = "default_poll", with = "crate::units::duration")]
    pub poll_interval: Duration,
    /// How long a follower may go without confirming the shared state before it suspends its
    /// guard (`kill-switch-stale`). Longer than twice `poll_interval`.
    #[serde(default = "default_staleness", with = "crate::units::duration")]
    pub staleness: Duration,
    /// For the files backend: the directory of the state file (`kill-switch.json`), shared by
    /// every process of the host. Relative paths are relative to the working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
}

fn default_poll() -> Duration {
    Duration::from_millis(500)
}

fn default_staleness() -> Duration {
    Duration::from_secs(5)
}

impl Default for KillSwitchSection {
    fn default() -> Self {
        KillSwitchSection {
            poll_interval: default_poll(),
            staleness: default_staleness(),
            dir: None,
        }
    }
}

impl KillSwitchSection {
    /// Checks the parameters: a poll interval above zero, a staleness bound above two of them.
    pub(crate) fn validate(&self) -> Result<(), DocumentError> {
        if self.poll_interval.is_zero() {
            return Err(DocumentError::invalid(
                "backend.kill_switch.poll_interval",
                "must be longer than zero",
            ));
        }
        if self.staleness <= self.poll_interval.saturating_mul(2) {
            return Err(DocumentError::invalid(
                "backend.kill_switch.staleness",
                format!(
                    "must be longer than twice `poll_interval` ({} ms): a follower confirms the \
                     state once per poll and dates each confirmation from before its wait, so a \
                     shorter bound would suspend a healthy guard",
                    self.poll_interval.as_millis()
                ),
            ));
        }
        if let Some(dir) = &self.dir
            && dir.as_os_str().is_empty()
        {
            return Err(DocumentError::invalid(
                "backend.kill_switch.dir",
                "must not be empty",
            ));
        }
        Ok(())
    }
}

/// What a suspension covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KillScope {
    /// Every run of every guard following the switch.
    Global,
    /// Every run of one agent.
    Agent(String),
    /// Every run with this id.
    Run(String),
}

impl KillScope {
    /// `global`, `agent` or `run`.
    pub fn kind(&self) -> &'static str {
        match self {
            KillScope::Global => "global",
            KillScope::Agent(_) => "agent",
            KillScope::Run(_) => "run",
        }
    }

    /// The agent or run id (empty for [`Global`](Self::Global)).
    pub fn target(&self) -> &str {
        match self {
            KillScope::Global => "",
            KillScope::Agent(t) | KillScope::Run(t) => t,
        }
    }
}

impl std::fmt::Display for KillScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KillScope::Global => f.write_str("global"),
            KillScope::Agent(a) => write!(f, "agent {a}"),
            KillScope::Run(r) => write!(f, "run {r}"),
        }
    }
}

/// One suspension in force: who set it, when, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suspension {
    /// Who suspended (the operator's name, a host).
    pub by: String,
    /// Why, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When, as milliseconds since the Unix epoch (the store's clock).
    pub at_unix_ms: u64,
    /// The revision that set it.
    pub revision: u64,
}

/// The shared kill-switch state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KillState {
    /// Incremented by every change.
    pub revision: u64,
    /// The global suspension, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Option<Suspension>,
    /// Suspended agents.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub agents: BTreeMap<String, Suspension>,
    /// Suspended run ids.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub runs: BTreeMap<String, Suspension>,
}

impl KillState {
    /// The suspension in force for `scope`, if any.
    pub fn get(&self, scope: &KillScope) -> Option<&Suspension> {
        match scope {
            KillScope::Global => self.global.as_ref(),
            KillScope::Agent(a) => self.agents.get(a),
            KillScope::Run(r) => self.runs.get(r),
        }
    }

    /// Applies `change` (made at `at_unix_ms`); returns whether anything changed. A change
    /// increments the revision; suspending what is suspended or resuming what is not changes
    /// nothing (the first suspension's who, when and why are kept).
    pub fn apply(&mut self, change: &KillChange, at_unix_ms: u64) -> bool {
        let revision = self.revision + 1;
        let suspension = || Suspension {
            by: change.by.clone(),
            reason: change.reason.clone(),
            at_unix_ms,
            revision,
        };
        let changed = match (&change.action, &change.scope) {
            (KillAction::Suspend, KillScope::Global) => {
                self.global.is_none() && {
                    self.global = Some(suspension());
                    true
                }
            }
            (KillAction::Resume, KillScope::Global) => self.global.take().is_some(),
            (KillAction::Suspend, KillScope::Agent(a)) => insert(&mut self.agents, a, suspension),
            (KillAction::Resume, KillScope::Agent(a)) => self.agents.remove(a).is_some(),
            (KillAction::Suspend, KillScope::Run(r)) => insert(&mut self.runs, r, suspension),
            (KillAction::Resume, KillScope::Run(r)) => self.runs.remove(r).is_some(),
        };
        if changed {
            self.revision = revision;
        }
        changed
    }
}

fn insert(
    map: &mut BTreeMap<String, Suspension>,
    key: &str,
    make: impl FnOnce() -> Suspension,
) -> bool {
    if map.contains_key(key) {
        return false;
    }
    map.insert(key.to_owned(), make());
    true
}

/// Suspend or resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillAction {
    /// Suspend.
    Suspend,
    /// Resume (lift a suspension).
    Resume,
}

/// One change to the shared state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillChange {
    /// Suspend or resume.
    pub action: KillAction,
    /// What.
    pub scope: KillScope,
    /// Who.
    pub by: String,
    /// Why.
    pub reason: Option<String>,
}

impl KillChange {
    /// A suspension of `scope` by `by`.
    pub fn suspend(scope: KillScope, by: impl Into<String>) -> Self {
        KillChange {
            action: KillAction::Suspend,
            scope,
            by: by.into(),
            reason: None,
        }
    }

    /// Lifting the suspension of `scope`, by `by`.
    pub fn resume(scope: KillScope, by: impl Into<String>) -> Self {
        KillChange {
            action: KillAction::Resume,
            scope,
            by: by.into(),
            reason: None,
        }
    }

    /// With a reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// The result of [`KillSwitchStore::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The state after the change.
    pub state: KillState,
    /// Whether the change changed anything (suspending what is suspended does not).
    pub changed: bool,
}

/// Why the shared state could not be read or changed. A follower that meets one keeps its guard
/// as it was until the staleness bound passes, then suspends it.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KillError {
    /// Reading or writing a file failed.
    #[error("kill switch file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The state file exists but is not a kill-switch state (never read as "nothing
    /// suspended").
    #[error("kill switch file {path} is damaged: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The state is gone (the state file or table was removed after it was created): denies
    /// rather than reading as "nothing suspended".
    #[error("kill switch state {0} is missing")]
    Missing(String),
    /// The document's backend cannot host a kill switch as configured.
    #[error("kill switch configuration: {0}")]
    Config(String),
    /// The database failed.
    #[cfg(feature = "postgres")]
    #[error("kill switch: {0}")]
    Backend(#[from] super::postgres::BackendError),
}

/// Where the shared kill-switch state lives.
pub trait KillSwitchStore: Send + Sync + std::fmt::Debug {
    /// Reads the current state.
    fn load(&self) -> Result<KillState, KillError>;
    /// Applies one change atomically (concurrent changes from other processes are serialised)
    /// and wakes the followers.
    fn apply(&self, change: &KillChange) -> Result<Applied, KillError>;
    /// A watcher for one follower (it may hold its own connection).
    fn watch(&self) -> Box<dyn KillWatch>;
}

/// A follower's view of a store: waits for a change, then reads the state.
pub trait KillWatch: Send {
    /// Waits up to `wait` for a change notification (returns at once on the first call), then
    /// reads and returns the current state. An `Ok` is a confirmation of the state as read.
    fn next(&mut self, wait: Duration) -> Result<KillState, KillError>;
}

/// The kill-switch store the document's `[backend]` section names: the files backend's
/// directory (`[backend.kill_switch] dir`, created when missing) or the PostgreSQL database
/// (feature `postgres`; its tables are created when missing).
pub fn open_store(section: &BackendSection) -> Result<Arc<dyn KillSwitchStore>, KillError> {
    match section.kind {
        BackendKind::Files => {
            let dir = section.state_dir("kill-switch").ok_or_else(|| {
                KillError::Config(
                    "the files backend needs `[backend] dir` (or `[backend.kill_switch] dir`): \
                     the directory every process of the host shares"
                        .to_owned(),
                )
            })?;
            Ok(Arc::new(FileKillSwitch::open(dir)?))
        }
        #[cfg(feature = "postgres")]
        BackendKind::Postgres => {
            let backend = super::postgres::PgBackend::from_section(section)?;
            Ok(Arc::new(super::postgres::kill::PgKillSwitch::open(
                backend,
            )?))
        }
        #[cfg(not(feature = "postgres"))]
        BackendKind::Postgres => Err(KillError::Config(
            "the document's backend is `postgres` but tollgate was built without the \
             `postgres` feature"
                .to_owned(),
        )),
    }
}

/// Milliseconds since the Unix epoch of `t`.
pub(crate) fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
