//! One process joining its deployment: the guard of a policy document together with everything
//! its `[backend]` section shares with the other processes (the kill switch it follows, the
//! budgets it leases, the approval queue it waits on, the audit trail it writes), opened from
//! the section alone. The same code runs on files (`kind = "files"`, one host) and on PostgreSQL
//! (`kind = "postgres"`, a fleet): switching is a change of the section and a connection string.
//!
//! | part | `kind = "files"` (`dir = D`) | `kind = "postgres"` |
//! |---|---|---|
//! | kill switch | `D/kill-switch/` (or `[backend.kill_switch] dir`), polled | tables + `LISTEN/NOTIFY` |
//! | budgets of `[backend.leases]` | `D/leases/`, shared by the host's processes | leased from the database |
//! | approvals (with `[escalation]`) | `D/approvals/<host>.log`: one queue per process | one queue, notified across hosts |
//! | audit (with `[audit]`) | `D/audit/<host>/`: one chain per process | one chain per process |
//!
//! Key material stays in code: [`Bindings::approval_key`], [`Bindings::checkpoint_key`],
//! [`Bindings::redaction`]. A part the section opens must not also be bound in code (which would
//! split the trail or the queue): that is refused with [`DeployError::BoundTwice`].

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use super::BackendKind;
use super::kill::{KillError, KillFollower, KillSwitchStore};
use super::lease::{LeaseError, LeaseStats, LeasedBudgets};
use crate::Guard;
use crate::audit::AuditSink;
use crate::escalation::{ApprovalStore, FileApprovalStore, StoreError};
use crate::guard::ApprovalTicker;
use crate::policy::{BindError, Bindings, Policy};

/// How often the approval queue's deadlines are applied.
const APPROVAL_TICK: Duration = Duration::from_secs(1);

/// Why a process could not join its deployment. Nothing runs unchecked: the caller gets no
/// guard.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DeployError {
    /// The database of a `postgres` backend could not be configured or reached.
    #[cfg(feature = "postgres")]
    #[error("the database of `[backend]`: {0}")]
    Database(#[from] super::postgres::BackendError),
    /// The guard could not be built from the document and bindings.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The shared kill switch could not be opened.
    #[error("the kill switch of `[backend]`: {0}")]
    KillSwitch(#[from] KillError),
    /// The shared budgets of `[backend.leases]` could not be opened.
    #[error("the budgets of `[backend.leases]`: {0}")]
    Leases(#[from] LeaseError),
    /// The approval store could not be opened.
    #[error("the approval store of `[backend]`: {0}")]
    Approvals(#[from] StoreError),
    /// The audit sink could not be opened.
    #[error("the audit sink of `[backend]`: {0}")]
    Audit(String),
    /// A binding the section's part needs is missing.
    #[error("`[backend]` opens {part}: bind {binding}")]
    MissingBinding {
        /// Which part.
        part: &'static str,
        /// What to bind.
        binding: &'static str,
    },
    /// A part was bound in code and is also opened by the section.
    #[error(
        "{part} is opened from `[backend]`; do not also bind one in code (it would split the \
         deployment's {part})"
    )]
    BoundTwice {
        /// Which part.
        part: &'static str,
    },
    /// The process name is not 1-64 letters, digits, `.`, `_` or `-` (it names files and
    /// database rows), or is only dots.
    #[error("host name `{0}`: use 1-64 letters, digits, `.`, `_` or `-` (not only dots)")]
    BadHost(String),
    /// The document needs the `postgres` feature.
    #[error(
        "the document's backend is `postgres` but tollgate was built without the `postgres` feature"
    )]
    NoPostgres,
    /// Closing the deployment lost something (the audit trail could not be flushed, leases
    /// could not be returned).
    #[error("shutting down: {0}")]
    Shutdown(String),
}

/// What [`Deployment::shutdown`] did.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// The lease counters at the end (units returned unused among them).
    pub leases: Option<LeaseStats>,
}

/// A guard together with the shared parts of its `[backend]` (see the module docs). Dropping it
/// stops the background threads; [`shutdown`](Self::shutdown) also returns unused budget and
/// flushes the audit trail, and says whether that worked.
///
/// ```
/// use tollgate::backend::Deployment;
/// use tollgate::policy::{Bindings, Policy};
/// use tollgate::{RunContext, ToolCall, Verdict};
///
/// let dir = tempfile::tempdir()?;
/// let policy = Policy::from_toml(&format!(r#"
///     [policy]
///     name = "demo"
///     owner = "platform team"
///     purpose = "demonstrate a deployment"
///     scope = "docs"
///     liability_owner = "CTO"
///     review_cadence = "180d"
///     data_handling = "nothing sensitive"
///
///     [tools.search]
///     effect = "read"
///
///     [roles.agent]
///     tools = ["search"]
///
///     [backend]
///     kind = "files"
///     dir = {dir:?}
///
///     [[backend.leases.budgets]]
///     name = "calls"
///     per = "agent"
///     measure = "calls"
///     limit = 2
///     window = "1d"
///     chunk = 1
/// "#, dir = dir.path()))?;
/// let deployment = Deployment::open(&policy, Bindings::new().host("worker-1"))?;
/// let guard = deployment.guard();
/// let run = guard.start_run(RunContext::new("bot", "agent"))?;
/// let call = ToolCall::new("search", "{}");
/// for _ in 0..2 {
///     let Verdict::Allow(permit) = guard.check(&run, &call) else { panic!("within budget") };
///     permit.complete(tollgate::Outcome::success())?;
/// }
/// // Every process sharing `dir` spends the same two calls a day.
/// assert!(matches!(guard.check(&run, &call), Verdict::Deny(_)));
/// deployment.shutdown()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Deployment {
    guard: Guard,
    host: String,
    kill: Option<Arc<dyn KillSwitchStore>>,
    // Field order is drop order: the threads stop before the parts they use.
    follower: Option<KillFollower>,
    ticker: Option<ApprovalTicker>,
    #[cfg(feature = "postgres")]
    listener: Option<super::postgres::approvals::PgApprovalListener>,
    leases: Option<Arc<LeasedBudgets>>,
    sink: Option<Sink>,
}

enum Sink {
    File(Arc<crate::audit::file::FileSink>),
    #[cfg(feature = "postgres")]
    Pg(Arc<super::postgres::audit::PgAuditSink>),
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("host", &self.host)
            .field("guard", &self.guard)
            .field("kill_switch", &self.kill.is_some())
            .field("leases", &self.leases.is_some())
            .field("audit", &self.sink.is_some())
            .finish()
    }
}

/// `<hostname>-<pid>`, the hostname cut to 48 characters safe in file and writer names.
pub(crate) fn default_host() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    format!("{host}-{}", std::process::id())
}

impl Deployment {
    /// Builds the guard `policy` describes and opens the shared parts of its `[backend]`
    /// section (see the module docs). A document without `[backend]` gives a guard like
    /// [`Policy::guard`], plus the approval ticker when it has `[escalation]`.
    ///
    /// Refuses to start, rather than run with a part missing: a database that is down, a store
    /// that is damaged, a missing key.
    pub fn open(policy: &Policy, mut bindings: Bindings) -> Result<Deployment, DeployError> {
        let doc = policy.document();
        let host = bindings.host.clone().unwrap_or_else(default_host);
        if !super::audit::is_writer_name(&host) || host.bytes().all(|b| b == b'.') {
            return Err(DeployError::BadHost(host));
        }
        let section = doc.backend.clone().unwrap_or_default();
        let wants_audit = doc.audit.is_some();
        let wants_approvals = doc.escalation.is_some();

        #[cfg(feature = "postgres")]
        let pg = match section.kind {
            BackendKind::Postgres => Some(super::postgres::PgBackend::from_section(&section)?),
            _ => None,
        };
        #[cfg(not(feature = "postgres"))]
        if section.kind == BackendKind::Postgres {
            return Err(DeployError::NoPostgres);
        }

        let opens_stores = section.opens_shared_stores();
        if opens_stores && wants_audit && bindings.audit.is_some() {
            return Err(DeployError::BoundTwice {
                part: "the audit trail",
            });
        }
        if opens_stores && wants_approvals && bindings.approvals.is_some() {
            return Err(DeployError::BoundTwice {
                part: "the approval queue",
            });
        }

        // The audit trail.
        let mut sink = None;
        if wants_audit {
            let opened = match section.kind {
                BackendKind::Files => match section.state_dir("audit") {
                    Some(dir) => {
                        // One chain per process, as on PostgreSQL (a file sink has one writer).
                        let dir = dir.join(&host);
                        let mut cfg = policy.file_sink_config(bindings.redaction.clone())?;
                        if let Some(key) = bindings.checkpoint_key.clone() {
                            cfg = cfg.checkpoint(crate::audit::file::CheckpointConfig::new(key));
                        }
                        let (s, _recovery) = crate::audit::file::FileSink::open(&dir, cfg)
                            .map_err(|e| DeployError::Audit(format!("{}: {e}", dir.display())))?;
                        Some(Sink::File(Arc::new(s)))
                    }
                    None => None,
                },
                #[cfg(feature = "postgres")]
                BackendKind::Postgres => {
                    let backend = pg.as_ref().ok_or(DeployError::NoPostgres)?;
                    let mut cfg =
                        super::postgres::audit::PgAuditConfig::from_section(&section.audit);
                    if section.audit.writer.is_none() {
                        cfg.writer = host.clone();
                    }
                    // The document's `[audit]` is the contract reviewers read: what a full
                    // queue does and whether a decision waits for its record's commit follow
                    // it on every backend (`[backend.audit]` tunes the rest).
                    let audit = doc.audit.clone().unwrap_or_default();
                    cfg.settings.backpressure = match audit.when_full {
                        crate::policy::WhenFull::Block => super::audit::AuditBackpressure::Block,
                        _ => super::audit::AuditBackpressure::Fail,
                    };
                    if audit.durability == crate::policy::AuditDurability::EveryRecord {
                        cfg.settings.wait_for_commit = true;
                    }
                    cfg.checkpoint_key = bindings.checkpoint_key.clone();
                    if let Some(r) = bindings.redaction.clone() {
                        cfg.redaction = r;
                    }
                    let (s, _recovery) = super::postgres::audit::PgAuditSink::open(backend, cfg)
                        .map_err(|e| DeployError::Audit(e.to_string()))?;
                    Some(Sink::Pg(Arc::new(s)))
                }
                #[cfg(not(feature = "postgres"))]
                BackendKind::Postgres => return Err(DeployError::NoPostgres),
            };
            if let Some(s) = &opened {
                bindings = bindings.audit(match s {
                    Sink::File(f) => Arc::clone(f) as Arc<dyn AuditSink>,
                    #[cfg(feature = "postgres")]
                    Sink::Pg(p) => Arc::clone(p) as Arc<dyn AuditSink>,
                });
            }
            sink = opened;
        }

        // The approval store.
        if wants_approvals {
            let store: Option<Arc<dyn ApprovalStore>> = match section.kind {
                BackendKind::Files => match section.state_dir("approvals") {
                    Some(dir) => {
                        // A file store has one writer: one queue per process.
                        let path = dir.join(format!("{host}.log"));
                        let key = approval_key(&bindings)?;
                        if let Some(parent) = path.parent() {
                            std::fs::create_dir_all(parent).map_err(|e| {
                                DeployError::Approvals(StoreError::Io {
                                    path: parent.to_path_buf(),
                                    source: e,
                                })
                            })?;
                        }
                        Some(Arc::new(FileApprovalStore::open(&path, &key)?))
                    }
                    None => None,
                },
                #[cfg(feature = "postgres")]
                BackendKind::Postgres => {
                    let key = approval_key(&bindings)?;
                    let backend = pg.as_ref().ok_or(DeployError::NoPostgres)?;
                    Some(Arc::new(
                        super::postgres::approvals::PgApprovalStore::open(backend, &key, &[])
                            .map_err(|e| {
                                DeployError::Approvals(StoreError::Database(e.to_string()))
                            })?,
                    ))
                }
                #[cfg(not(feature = "postgres"))]
                BackendKind::Postgres => return Err(DeployError::NoPostgres),
            };
            if let Some(store) = store {
                bindings = bindings.approvals(store);
            }
        }

        // The shared budgets.
        let leases = super::lease::open(&section, &host)?;
        if let Some(l) = &leases {
            if bindings.shared_budget.is_some() {
                return Err(DeployError::BoundTwice {
                    part: "the shared budgets",
                });
            }
            bindings = bindings.shared_budget(Arc::clone(l) as _);
        }

        // The kill switch: opened before the guard runs a single call.
        let kill = match (section.kind, section.state_dir("kill-switch")) {
            (BackendKind::Files, None) => None,
            _ => Some(super::kill::open_store(&section)?),
        };

        bindings.deployed = true;
        let guard = policy.guard(bindings)?;
        let follower = kill.as_ref().map(|store| {
            KillFollower::start(guard.clone(), Arc::clone(store), &section.kill_switch)
        });
        #[cfg(feature = "postgres")]
        let listener = match (&pg, guard.approvals()) {
            (Some(backend), Some(queue)) => Some(
                super::postgres::approvals::PgApprovalListener::from_section(
                    backend,
                    &section.approvals,
                    Arc::downgrade(queue),
                )
                .map_err(|e| DeployError::Approvals(StoreError::Database(e.to_string())))?,
            ),
            _ => None,
        };
        let ticker = guard.spawn_approval_ticker(APPROVAL_TICK);
        Ok(Deployment {
            guard,
            host,
            kill,
            follower,
            ticker,
            #[cfg(feature = "postgres")]
            listener,
            leases,
            sink,
        })
    }

    /// The guard (cheap to clone).
    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// This process's name in the deployment.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The shared kill switch, for an operator process that throws it (`None` for a files
    /// backend without a directory: then the guard's own switch is the only one).
    pub fn kill_switch(&self) -> Option<&Arc<dyn KillSwitchStore>> {
        self.kill.as_ref()
    }

    /// The kill-switch follower's view (revision applied, stale or not, last error).
    pub fn kill_switch_status(&self) -> Option<super::kill::FollowerStatus> {
        self.follower.as_ref().map(KillFollower::status)
    }

    /// The shared budgets of `[backend.leases]` as this process holds them (local balances,
    /// counters).
    pub fn leases(&self) -> Option<&LeasedBudgets> {
        self.leases.as_deref()
    }

    /// The shared budgets' counters so far.
    pub fn lease_stats(&self) -> Option<LeaseStats> {
        self.leases.as_ref().map(|l| l.stats())
    }

    /// The audit sink the section opened, if any.
    pub fn audit_sink(&self) -> Option<Arc<dyn AuditSink>> {
        self.sink.as_ref().map(|s| match s {
            Sink::File(f) => Arc::clone(f) as Arc<dyn AuditSink>,
            #[cfg(feature = "postgres")]
            Sink::Pg(p) => Arc::clone(p) as Arc<dyn AuditSink>,
        })
    }

    /// Leaves the deployment: stops following the kill switch and the approval queue, returns
    /// unused budget, writes out and closes the audit trail. An error says what could not be
    /// finished (e.g. records that could not be written): nothing is dropped silently.
    pub fn shutdown(mut self) -> Result<ShutdownReport, DeployError> {
        if let Some(f) = self.follower.take() {
            f.stop();
        }
        drop(self.ticker.take());
        #[cfg(feature = "postgres")]
        drop(self.listener.take());
        let mut report = ShutdownReport::default();
        let mut problems = Vec::new();
        if let Some(l) = self.leases.take() {
            match l.shutdown() {
                Ok(stats) => report.leases = Some(stats),
                Err(e) => problems.push(format!("returning leases: {e}")),
            }
        }
        match self.sink.take() {
            Some(Sink::File(f)) => {
                if let Err(e) = f.flush() {
                    problems.push(format!("flushing the audit trail: {e}"));
                }
            }
            #[cfg(feature = "postgres")]
            Some(Sink::Pg(p)) => {
                if let Err(e) = p.close() {
                    problems.push(format!("closing the audit trail: {e}"));
                }
            }
            None => {}
        }
        if problems.is_empty() {
            Ok(report)
        } else {
            Err(DeployError::Shutdown(problems.join("; ")))
        }
    }
}

fn approval_key(bindings: &Bindings) -> Result<crate::escalation::StoreKey, DeployError> {
    bindings
        .approval_key
        .clone()
        .ok_or(DeployError::MissingBinding {
            part: "the approval store",
            binding: "its key with `Bindings::approval_key`",
        })
}
