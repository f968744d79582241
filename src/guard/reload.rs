//! Hot reload: a new policy replaces every part of the old one in one atomic swap.
//!
//! A reload compiles the whole new snapshot first (nothing changes if that fails), records the
//! reload in the audit trail (nothing changes if that fails either), then swaps. Checks running
//! during the swap finish under the snapshot they loaded; permits keep theirs until they
//! complete. State carries over where its key and configuration are unchanged: breakers whose
//! settings are equal keep their windows and states, rate-limit buckets whose quota is equal keep
//! their levels, a baseline with the same parameters keeps what it learned; run budgets, loop
//! memory and baseline counts live in the runs and are never lost. Reloads are serialised.

use std::sync::Arc;

use super::Guard;
use super::shared::{BaselineState, BreakerSettings, Snapshot};
use crate::audit::{AuditError, EventKind};
use crate::boundary::ActionBoundary;
use crate::breaker::{Baseline, KeyedBreakers, RateLimiters};
use crate::policy::Policy;
use crate::verdict::PolicyVersion;

/// Why a reload did not take effect (the policy in force stays).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The reload could not be recorded, so it was not made.
    #[error("the reload could not be recorded, so the policy in force is kept: {0}")]
    Audit(#[from] AuditError),
    /// The new policy needs something this guard was not built with.
    #[error("the new policy needs {0}, which this guard was built without: rebuild the guard")]
    NeedsBinding(&'static str),
    /// A part that cannot change while the guard runs differs (it is bound at build time).
    #[error("`{0}` differs from the policy the guard was built with and cannot change by reload")]
    Fixed(&'static str),
    /// A primitive refused its new configuration.
    #[error("`{field}`: {reason}")]
    Config {
        /// Where in the document.
        field: String,
        /// Why.
        reason: String,
    },
}

impl Guard {
    /// Replaces the boundary alone, keeping every other setting (for guards built in code).
    /// Returns the version replaced. See [`reload`](Self::reload) for the guarantees.
    pub fn reload_boundary(&self, boundary: ActionBoundary) -> Result<PolicyVersion, ReloadError> {
        let shared = &*self.shared;
        let _serial = shared.reload_lock.lock();
        let old = shared.policy.load_full();
        let next = Snapshot {
            boundary: Arc::new(boundary),
            budget: old.budget,
            loops: old.loops,
            breakers: old.breakers.clone(),
            rate: old.rate.clone(),
            gate: old.gate.clone(),
            baseline: old.baseline.clone(),
            policy: None,
        };
        self.swap(&old, next)
    }

    /// Replaces every part of the policy in one atomic swap: boundary, budgets, loop detection,
    /// breakers, rate limits, escalation rules and baseline parameters. Returns the version
    /// replaced.
    ///
    /// Calls already permitted finish under the policy that allowed them; no call is ever decided
    /// by a mixture of the two. Breaker, rate-limit and baseline state carries over where its
    /// configuration is unchanged; run budgets and loop memory always do. The reload is recorded
    /// (old and new version) before it takes effect: if the record fails, nothing changes.
    ///
    /// What is bound when the guard is built cannot change by reload: the credential providers
    /// and grants, the audit settings and the approver groups ([`ReloadError::Fixed`]); adding an
    /// escalation section to a guard built without an approval queue is refused
    /// ([`ReloadError::NeedsBinding`]).
    pub fn reload(&self, policy: &Policy) -> Result<PolicyVersion, ReloadError> {
        let shared = &*self.shared;
        let _serial = shared.reload_lock.lock();
        let old = shared.policy.load_full();
        let doc = policy.document();
        if let Some(prev) = &old.policy {
            let prev = prev.document();
            if prev.credentials != doc.credentials {
                return Err(ReloadError::Fixed("credentials"));
            }
            if prev.audit != doc.audit {
                return Err(ReloadError::Fixed("audit"));
            }
            if prev.escalation.as_ref().map(|e| &e.groups)
                != doc.escalation.as_ref().map(|e| &e.groups)
            {
                return Err(ReloadError::Fixed("escalation.groups"));
            }
        } else if doc.credentials.is_some() && shared.credentials.is_none() {
            return Err(ReloadError::NeedsBinding("a credential broker"));
        }
        let (boundary, gate) =
            crate::policy::compile_parts(doc, policy.version()).map_err(|e| {
                ReloadError::Config {
                    field: e.path().unwrap_or(".").to_owned(),
                    reason: e.to_string(),
                }
            })?;
        if gate.is_some() && shared.escalation.is_none() {
            return Err(ReloadError::NeedsBinding("an approval queue"));
        }

        let breakers = match &doc.breakers {
            None => None,
            Some(b) => {
                let settings = BreakerSettings {
                    config: b.config(),
                    key: b.key,
                    capacity: b.max_keys,
                };
                match &old.breakers {
                    Some((s, kb)) if *s == settings => Some((settings, Arc::clone(kb))),
                    _ => {
                        let kb = KeyedBreakers::new(
                            settings.config.clone(),
                            settings.key,
                            settings.capacity,
                            Arc::clone(&shared.clock),
                        )
                        .map_err(|e| ReloadError::Config {
                            field: format!("breakers.{}", e.field),
                            reason: e.reason.into(),
                        })?;
                        Some((settings, Arc::new(kb)))
                    }
                }
            }
        };
        let rate = match &doc.rate_limits {
            None => None,
            Some(cfg) => match &old.rate {
                Some((c, rl)) if c == cfg => Some((c.clone(), Arc::clone(rl))),
                previous => {
                    let rl = RateLimiters::new(cfg, Arc::clone(&shared.clock)).map_err(|e| {
                        ReloadError::Config {
                            field: e.field.into(),
                            reason: e.reason.into(),
                        }
                    })?;
                    if let Some((_, prev)) = previous {
                        rl.carry_over(prev);
                    }
                    Some((cfg.clone(), Arc::new(rl)))
                }
            },
        };
        let baseline = match &doc.baseline {
            None => None,
            Some(b) => match &old.baseline {
                Some(state) if state.config == b.config && state.learn == b.learn_online => {
                    Some(Arc::clone(state))
                }
                _ => {
                    let fresh = Baseline::new(b.config).map_err(|e| ReloadError::Config {
                        field: format!("baseline.config.{}", e.field),
                        reason: e.reason.into(),
                    })?;
                    Some(Arc::new(BaselineState::new(fresh, b.learn_online)))
                }
            },
        };
        let next = Snapshot {
            boundary: Arc::new(boundary),
            budget: crate::policy::run_budget(doc)
                .map_err(|(field, reason)| ReloadError::Config { field, reason })?,
            loops: doc.loops,
            breakers,
            rate,
            gate: gate.map(Arc::new),
            baseline,
            policy: Some(policy.clone()),
        };
        self.swap(&old, next)
    }

    /// Records the reload, then swaps (the caller holds the reload lock).
    fn swap(&self, old: &Snapshot, next: Snapshot) -> Result<PolicyVersion, ReloadError> {
        let previous = old.version();
        self.shared.record_for(
            None,
            EventKind::PolicyReloaded {
                previous,
                current: next.version(),
            },
        )?;
        self.shared.policy.store(Arc::new(next));
        Ok(previous)
    }
}
