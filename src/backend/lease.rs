//! Budgets and rate limits shared by a fleet: per agent, tenant (the run's compartment), task
//! type or the whole fleet, per window (a day, a minute), in calls, tokens or cost, exact across
//! hosts without a database round trip per call.
//!
//! A host *leases* a chunk of a budget from the database (one row-locked `UPDATE` that never
//! lets the sum of what was handed out exceed the limit) and spends it locally with an atomic
//! decrement. A background thread leases the next chunk when the local one runs below
//! `refill_below_percent` of a chunk, so the check path only waits when it outruns the refills
//! (then it tries one lease itself and denies with
//! [`DenyCode::BudgetExhausted`](crate::DenyCode::BudgetExhausted) if that fails). A shared rate
//! limit is a budget of calls with a short window (a fixed window, not a sliding one).
//!
//! Unused units are returned when the host shuts down ([`LeasedBudgets`]'s `shutdown`, or when it
//! is dropped). A host that dies holding a lease stops renewing it; after `lease_timeout` the
//! lease is *reclaimed*: its row is removed and its units are **written off as spent**, because
//! the dead host may have spent any of them before dying and counting them unused could
//! overspend. A crash therefore costs the budget at most one chunk per key; `chunk` bounds that
//! loss (and the number of round trips: smaller chunks lose less, lease more often).
//!
//! ```toml
//! [backend.leases]
//! lease_timeout = "60s"
//! heartbeat = "10s"
//! refill_below_percent = 50
//!
//! [[backend.leases.budgets]]
//! name = "agent-daily-calls"
//! per = "agent"          # fleet | agent | tenant | task_type
//! measure = "calls"      # calls | tokens | cost_micros
//! limit = 10000
//! window = "1d"
//! chunk = 50
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::policy::DocumentError;

pub mod file;
mod local;

pub use file::FileLeases;
pub use local::{LeaseStats, LeasedBudgets};

/// Units leased from a budget for one key and window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// How many (0: the window's budget is all handed out).
    pub units: u64,
    /// The window, as its start in milliseconds since the Unix epoch (the source's clock).
    pub window: i64,
    /// How long the window still runs.
    pub window_left: Duration,
}

/// Why a lease could not be taken, renewed or given back. The check path turns it into a
/// denial: it never spends what it could not lease.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The database failed.
    #[cfg(feature = "postgres")]
    #[error("lease: {0}")]
    Backend(#[from] super::postgres::BackendError),
    /// The source refused (e.g. a budget whose window changed under it).
    #[error("lease of budget `{budget}`: {reason}")]
    Refused {
        /// The budget.
        budget: String,
        /// Why.
        reason: String,
    },
    /// The files backend's state file could not be read, written or trusted.
    #[error("lease state {}: {reason}", path.display())]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The background thread could not be started.
    #[error("lease thread: {0}")]
    Thread(String),
}

/// The shared budgets the document's `[backend]` section describes, leased for host `host` (a
/// name unique in the fleet), ready for
/// [`GuardBuilder::shared_budget`](crate::guard::GuardBuilder::shared_budget): `None` when the
/// section lists no budgets. With `kind = "postgres"` the budgets are shared by every host of
/// the fleet; with `kind = "files"` by every process of this host that shares `[backend] dir`
/// ([`FileLeases`]).
pub fn open(
    section: &super::BackendSection,
    host: &str,
) -> Result<Option<std::sync::Arc<LeasedBudgets>>, LeaseError> {
    if section.leases.budgets.is_empty() {
        return Ok(None);
    }
    match section.kind {
        #[cfg(feature = "postgres")]
        super::BackendKind::Postgres => {
            let backend = super::postgres::PgBackend::from_section(section)?;
            let source = super::postgres::lease::PgLeases::open(
                backend,
                host,
                section.leases.lease_timeout,
            )?;
            let clock = std::sync::Arc::new(crate::clock::SystemClock::new());
            Ok(Some(std::sync::Arc::new(LeasedBudgets::start(
                &section.leases,
                std::sync::Arc::new(source),
                clock,
            )?)))
        }
        super::BackendKind::Files => {
            let dir = section
                .state_dir("leases")
                .ok_or_else(|| LeaseError::Refused {
                    budget: section.leases.budgets[0].name.clone(),
                    reason: "the files backend keeps leases in `[backend] dir`: set it to the \
                         directory every process of this host shares"
                        .to_owned(),
                })?;
            let clock = std::sync::Arc::new(crate::clock::SystemClock::new());
            let source = FileLeases::open(dir, host, section.leases.lease_timeout, clock.clone())?;
            Ok(Some(std::sync::Arc::new(LeasedBudgets::start(
                &section.leases,
                std::sync::Arc::new(source),
                clock,
            )?)))
        }
        #[cfg(not(feature = "postgres"))]
        super::BackendKind::Postgres => {
            let _ = host;
            Err(LeaseError::Refused {
                budget: section.leases.budgets[0].name.clone(),
                reason: "the document's backend is `postgres` but tollgate was built without \
                         the `postgres` feature"
                    .to_owned(),
            })
        }
    }
}

/// Where budgets are leased from: the PostgreSQL source
/// (`tollgate::backend::postgres::lease::PgLeases`, feature `postgres`) or a test double.
pub trait LeaseSource: Send + Sync {
    /// Leases up to `want` units of `budget` for `key` in the current window, never more than
    /// the window's limit minus what is already handed out to every host.
    fn lease(&self, budget: &BudgetSpec, key: &str, want: u64) -> Result<Grant, LeaseError>;
    /// Closes this host's lease of `budget`/`key` in `window`: `unused` units go back to the
    /// budget, the rest of what the host held is counted as spent.
    fn release(
        &self,
        budget: &BudgetSpec,
        key: &str,
        window: i64,
        unused: u64,
    ) -> Result<(), LeaseError>;
    /// Renews this host's leases (a lease not renewed within the timeout is reclaimed).
    fn heartbeat(&self) -> Result<(), LeaseError>;
}

/// Whose budget: one for the whole fleet, or one per agent, tenant or task type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Per {
    /// One budget for every run.
    Fleet,
    /// One per agent.
    Agent,
    /// One per tenant: the run's compartment (runs without one are not counted).
    Tenant,
    /// One per task type (runs without one are not counted).
    TaskType,
}

/// What a budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Measure {
    /// Tool calls (a rate limit when the window is short).
    Calls,
    /// Tokens (the call's estimate, or the run budget's `tokens_per_call`, settled to the
    /// reported use).
    Tokens,
    /// Cost in millionths of a currency unit (like tokens).
    CostMicros,
}

impl Measure {
    /// `calls`, `tokens` or `cost_micros`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Measure::Calls => "calls",
            Measure::Tokens => "tokens",
            Measure::CostMicros => "cost_micros",
        }
    }
}

/// One shared budget (`[[backend.leases.budgets]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    /// Its name (the rule id of its denials is `fleet.budget.<name>`).
    pub name: String,
    /// Whose budget.
    pub per: Per,
    /// What it counts.
    pub measure: Measure,
    /// How much per window (per key).
    pub limit: u64,
    /// The window (`"1d"`, `"1m"`); windows are aligned on the database's clock.
    #[serde(with = "crate::units::duration")]
    pub window: Duration,
    /// How much a host leases at a time (default: a hundredth of the limit, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<u64>,
}

impl BudgetSpec {
    /// The lease size.
    pub fn chunk(&self) -> u64 {
        self.chunk
            .unwrap_or((self.limit / 100).max(1))
            .min(self.limit.max(1))
    }
}

/// The document's `[backend.leases]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeasesSection {
    /// How long a lease lives without a heartbeat before it is reclaimed (written off).
    #[serde(default = "default_timeout", with = "crate::units::duration")]
    pub lease_timeout: Duration,
    /// How often a host renews its leases (shorter than `lease_timeout`).
    #[serde(default = "default_heartbeat", with = "crate::units::duration")]
    pub heartbeat: Duration,
    /// Lease the next chunk when the local one falls below this percentage of a chunk (1-100).
    #[serde(default = "default_refill")]
    pub refill_below_percent: u8,
    /// The budgets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<BudgetSpec>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_heartbeat() -> Duration {
    Duration::from_secs(10)
}

fn default_refill() -> u8 {
    50
}

impl Default for LeasesSection {
    fn default() -> Self {
        LeasesSection {
            lease_timeout: default_timeout(),
            heartbeat: default_heartbeat(),
            refill_below_percent: default_refill(),
            budgets: Vec::new(),
        }
    }
}

impl LeasesSection {
    /// Checks the parameters, naming the field at fault.
    pub(crate) fn validate(&self) -> Result<(), DocumentError> {
        if self.heartbeat.is_zero() || self.heartbeat >= self.lease_timeout {
            return Err(DocumentError::invalid(
                "backend.leases.heartbeat",
                "must be above zero and shorter than `lease_timeout` (a live host would lose its \
                 leases)",
            ));
        }
        if !(1..=100).contains(&self.refill_below_percent) {
            return Err(DocumentError::invalid(
                "backend.leases.refill_below_percent",
                "must be between 1 and 100",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, b) in self.budgets.iter().enumerate() {
            let at = |f: &str| format!("backend.leases.budgets[{i}].{f}");
            if !super::is_identifier(&b.name.replace('-', "_")) {
                return Err(DocumentError::invalid(
                    at("name"),
                    format!(
                        "`{}` is not a budget name (lower-case letters, digits, `_` and `-`)",
                        b.name
                    ),
                ));
            }
            if !seen.insert(&b.name) {
                return Err(DocumentError::invalid(
                    at("name"),
                    format!("budget `{}` is defined twice", b.name),
                ));
            }
            if b.limit == 0 {
                return Err(DocumentError::invalid(at("limit"), "must be above zero"));
            }
            if b.window < Duration::from_secs(1) {
                return Err(DocumentError::invalid(at("window"), "must be at least 1s"));
            }
            if b.chunk == Some(0) || b.chunk.is_some_and(|c| c > b.limit) {
                return Err(DocumentError::invalid(
                    at("chunk"),
                    "must be above zero and at most `limit`",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod section_tests {
    use super::*;

    #[test]
    fn a_heartbeat_slower_than_the_lease_timeout_is_refused() {
        let s = LeasesSection {
            heartbeat: Duration::from_secs(60),
            ..LeasesSection::default()
        };
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("backend.leases.heartbeat"), "{e}");
    }

    #[test]
    fn a_chunk_larger_than_the_limit_or_a_duplicate_budget_is_refused() {
        let b = BudgetSpec {
            name: "calls".into(),
            per: Per::Agent,
            measure: Measure::Calls,
            limit: 10,
            window: Duration::from_secs(60),
            chunk: Some(11),
        };
        let mut s = LeasesSection {
            budgets: vec![b.clone()],
            ..LeasesSection::default()
        };
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("budgets[0].chunk"), "{e}");
        s.budgets = vec![
            BudgetSpec {
                chunk: None,
                ..b.clone()
            },
            BudgetSpec { chunk: None, ..b },
        ];
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("budgets[1].name"), "{e}");
    }
}
