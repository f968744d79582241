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
use crate::agreement::Agreement;
use crate::audit::{AuditError, EventKind};
use crate::boundary::ActionBoundary;
use crate::breaker::{Baseline, KeyedBreakers, RateLimiters, State as BreakerState};
use crate::policy::{Policy, SignatureError, SignatureFile};
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
    /// The guard requires reviewers' signatures and the new policy does not have them (or a
    /// code-built boundary was offered to a guard that only takes signed documents).
    #[error("the new policy is not signed as this guard requires: {0}")]
    Unsigned(#[from] SignatureError),
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
    /// Returns the version replaced. Refused by a guard that requires signed documents. See
    /// [`reload`](Self::reload) for the guarantees; `by` says who or what reloaded.
    pub fn reload_boundary(
        &self,
        boundary: ActionBoundary,
        by: &str,
    ) -> Result<PolicyVersion, ReloadError> {
        let shared = &*self.shared;
        let _serial = shared.reload_lock.lock();
        if shared.bound.lock().trust.is_some() {
            return Err(ReloadError::Unsigned(SignatureError::File {
                path: "<boundary>".into(),
                reason: "this guard takes only signed policy documents".into(),
            }));
        }
        let old = shared.policy.load_full();
        // The flow rules in force stay: they must label under the new boundary's tiers, and
        // read arguments within its limits.
        if let Some(rules) = &old.flow
            && rules.tiers() != boundary.document().tiers.as_slice()
        {
            return Err(ReloadError::Fixed("tiers"));
        }
        let flow = old
            .flow
            .clone()
            .map(|f| f.with_json_limits(boundary.json_limits()));
        let next = Snapshot {
            rate_tools: Snapshot::tool_table(old.rate.as_ref(), &boundary),
            boundary: Arc::new(boundary),
            budget: old.budget,
            loops: old.loops,
            breakers: old.breakers.clone(),
            rate: old.rate.clone(),
            gate: old.gate.clone(),
            baseline: old.baseline.clone(),
            flow,
            modes: old.modes.clone(),
            rollout: old.rollout.clone(),
        };
        self.swap(&old, next, by, false)
    }

    /// Replaces every part of the policy in one atomic swap: boundary, budgets, loop detection,
    /// breakers, rate limits, escalation rules and baseline parameters. Returns the version
    /// replaced; `by` (an operator, `file-watcher:<path>`) is recorded.
    ///
    /// Calls already permitted finish under the policy that allowed them; no call is ever decided
    /// by a mixture of the two. Breaker, rate-limit and baseline state carries over where its
    /// configuration is unchanged (breakers held open or disabled by hand stay so even when their
    /// settings change); run budgets and loop memory always do. The reload is recorded (old and
    /// new version, who) before it takes effect: if the record fails, nothing changes.
    ///
    /// What is bound when the guard is built cannot change by reload: the credential providers
    /// and grants, the audit settings, the `[backend]` section (kill switch, leased budgets,
    /// stores: opened once by `Deployment::open`), the approver groups and approval settings,
    /// and (once the guard has had flow rules, even if the document in force has none) the tier
    /// list runs' flow indexes are labelled with ([`ReloadError::Fixed`]); adding an escalation
    /// section to a guard built without an
    /// approval queue is refused ([`ReloadError::NeedsBinding`]). A guard built with
    /// [`Bindings::require_signed`](crate::policy::Bindings::require_signed) takes new documents
    /// only through [`reload_signed`](Self::reload_signed).
    pub fn reload(&self, policy: &Policy, by: &str) -> Result<PolicyVersion, ReloadError> {
        let _serial = self.shared.reload_lock.lock();
        if self.shared.bound.lock().trust.is_some() {
            return Err(ReloadError::Unsigned(SignatureError::File {
                path: "<reload>".into(),
                reason: "this guard requires signatures: use `reload_signed`".into(),
            }));
        }
        self.reload_locked(policy, by)
    }

    /// [`reload`](Self::reload) for a guard that requires signed documents: `signatures` must
    /// hold enough valid signatures of `policy` by the keys the guard trusts.
    pub fn reload_signed(
        &self,
        policy: &Policy,
        signatures: &SignatureFile,
        by: &str,
    ) -> Result<PolicyVersion, ReloadError> {
        let _serial = self.shared.reload_lock.lock();
        let trust = self.shared.bound.lock().trust.clone();
        if let Some(trust) = trust {
            trust.verify(policy, signatures)?;
        }
        self.reload_locked(policy, by)
    }

    /// `true` if new documents must come with reviewers' signatures
    /// ([`reload_signed`](Self::reload_signed)).
    pub fn requires_signatures(&self) -> bool {
        self.shared.bound.lock().trust.is_some()
    }

    /// Tells the guard's alert sink that a policy was not installed.
    pub(crate) fn alert_policy_rejected(&self, detail: String) {
        self.shared.alert(
            crate::breaker::AlertKind::PolicyRejected,
            None,
            None,
            || detail,
        );
    }

    /// The reload proper; the caller holds the reload lock.
    fn reload_locked(&self, policy: &Policy, by: &str) -> Result<PolicyVersion, ReloadError> {
        let shared = &*self.shared;
        let old = shared.policy.load_full();
        let doc = policy.document();
        {
            let bound = shared.bound.lock();
            match &bound.document {
                Some(prev) => {
                    let prev = prev.document();
                    if prev.credentials != doc.credentials {
                        return Err(ReloadError::Fixed("credentials"));
                    }
                    if prev.audit != doc.audit {
                        return Err(ReloadError::Fixed("audit"));
                    }
                    // The kill switch follower, the leased budgets and the stores were opened
                    // from it by `Deployment::open`: a reload cannot re-open them, so a changed
                    // section would be recorded as in force while the old one is enforced.
                    if prev.backend != doc.backend {
                        return Err(ReloadError::Fixed("backend"));
                    }
                    let esc = |d: &crate::policy::Document| {
                        d.escalation
                            .as_ref()
                            .map(|e| (e.groups.clone(), e.approvals.clone()))
                    };
                    let (before, after) = (esc(prev), esc(doc));
                    if before.as_ref().map(|e| &e.0) != after.as_ref().map(|e| &e.0) {
                        return Err(ReloadError::Fixed("escalation.groups"));
                    }
                    if before.as_ref().map(|e| &e.1) != after.as_ref().map(|e| &e.1) {
                        return Err(ReloadError::Fixed("escalation.approvals"));
                    }
                }
                None => {
                    if doc.credentials.is_some() {
                        return Err(ReloadError::NeedsBinding(
                            "credential providers bound from a policy document",
                        ));
                    }
                    if doc.escalation.is_some() {
                        return Err(ReloadError::NeedsBinding(
                            "approval settings bound from a policy document",
                        ));
                    }
                    if doc.backend.is_some() {
                        return Err(ReloadError::NeedsBinding(
                            "a `[backend]` section opened by `Deployment::open`",
                        ));
                    }
                }
            }
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
        // Runs' flow indexes hold tiers by position: the tier list may not move under them.
        // Compared with the list the indexed data was labelled under, which a document without
        // flow rules in between does not reset (runs keep their indexes through it).
        let flow = policy
            .flow()
            .cloned()
            .map(|f| f.with_json_limits(boundary.json_limits()));
        if let Some(after) = &flow
            && shared
                .bound
                .lock()
                .flow_tiers
                .as_ref()
                .is_some_and(|before| before.as_slice() != after.tiers())
        {
            return Err(ReloadError::Fixed("tiers"));
        }

        let mut breakers_reset = false;
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
                    previous => {
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
                        if let Some((_, prev)) = previous {
                            breakers_reset = true;
                            carry_manual_states(prev, &kb);
                        }
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
            rate_tools: Snapshot::tool_table(rate.as_ref(), &boundary),
            boundary: Arc::new(boundary),
            budget: crate::policy::run_budget(doc)
                .map_err(|(field, reason)| ReloadError::Config { field, reason })?,
            loops: doc.loops,
            breakers,
            rate,
            gate: gate.map(Arc::new),
            baseline,
            flow,
            modes: policy.modes().cloned(),
            // Live demotions belong to the version they were made under (see `rollout.rs`).
            rollout: policy.rollout().map(|r| match &old.rollout {
                Some(live) if live.version == policy.version() => Arc::clone(live),
                _ => Arc::new(super::rollout::LiveRollout::new(
                    r.clone(),
                    policy.agreement().cloned().unwrap_or_else(Agreement::exact),
                    policy.version(),
                )),
            }),
        };
        let flow_tiers = next.flow.as_ref().map(|f| f.tiers().to_vec());
        let previous = self.swap(&old, next, by, breakers_reset)?;
        let mut bound = shared.bound.lock();
        bound.document = Some(policy.clone());
        if bound.flow_tiers.is_none() {
            bound.flow_tiers = flow_tiers;
        }
        Ok(previous)
    }

    /// Records the reload, then swaps (the caller holds the reload lock).
    fn swap(
        &self,
        old: &Snapshot,
        next: Snapshot,
        by: &str,
        breakers_reset: bool,
    ) -> Result<PolicyVersion, ReloadError> {
        let previous = old.version();
        self.shared.record_for(
            None,
            EventKind::PolicyReloaded {
                previous,
                current: next.version(),
                by,
                breakers_reset,
            },
        )?;
        self.shared.install(next);
        Ok(previous)
    }
}

/// Breakers an operator forced open or disabled keep that state in the new set.
fn carry_manual_states(prev: &KeyedBreakers, next: &KeyedBreakers) {
    for keyed in prev.all() {
        let state = keyed.breaker.state();
        if matches!(state, BreakerState::ForcedOpen | BreakerState::Disabled)
            && let Some(k) = next.get_or_insert(keyed.agent(), keyed.tool())
        {
            match state {
                BreakerState::ForcedOpen => k.breaker.force_open(),
                _ => k.breaker.disable(),
            }
        }
    }
}
