//! Configuring a guard in code. (A [`Policy`](crate::policy::Policy) document configures all of
//! it at once: see [`Guard::from_policy`].)

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64};

use arc_swap::ArcSwap;

use super::escalate;
use super::limits::{LoopDetection, RunBudget};
use super::shared::{
    BaselineState, Bound, BreakerSettings, Rules, Shared, Snapshot, default_classifier,
};
use super::{Guard, GuardError};
use crate::audit::AuditSink;
use crate::boundary::ActionBoundary;
use crate::breaker::{
    AlertSink, Baseline, BreakerConfig, BreakerKey, CallResult, ConfigError, KeyedBreakers,
    RateLimiters, RateLimits,
};
use crate::clock::{Clock, SystemClock};
use crate::credential::CredentialBroker;
use crate::escalation::EscalationGate;
use crate::verdict::Outcome;

/// Configures a [`Guard`].
pub struct GuardBuilder {
    boundary: ActionBoundary,
    clock: Arc<dyn Clock>,
    audit: Option<Arc<dyn AuditSink>>,
    credentials: Option<CredentialBroker>,
    breakers: Option<(BreakerConfig, BreakerKey, usize)>,
    classify: fn(&Outcome) -> CallResult,
    budget: RunBudget,
    loops: Option<LoopDetection>,
    alerts: Option<Arc<dyn AlertSink>>,
    pub(super) escalation: Option<(EscalationGate, escalate::Escalations)>,
    rate_limits: Option<RateLimits>,
    baseline: Option<(Baseline, bool)>,
    policy: Option<crate::policy::Policy>,
    trust: Option<crate::policy::Trust>,
    pub(super) flow: Option<crate::flow::FlowRules>,
    pub(super) modes: Option<crate::mode::Modes>,
    pub(super) rollout: Option<crate::rollout::Rollout>,
    pub(super) agreement: Option<crate::agreement::Agreement>,
    shared_budget: Option<Arc<dyn super::fleet::SharedBudget>>,
}

impl GuardBuilder {
    /// Budgets shared with other guards (other hosts), consulted after the run's own budgets:
    /// e.g. [`LeasedBudgets`](crate::backend::lease) on PostgreSQL.
    pub fn shared_budget(mut self, budget: Arc<dyn super::fleet::SharedBudget>) -> Self {
        self.shared_budget = Some(budget);
        self
    }

    /// Uses `clock` for every duration (default: [`SystemClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sends every event to `sink`. Without a sink nothing is recorded.
    pub fn audit(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.audit = Some(sink);
        self
    }

    /// Puts a circuit breaker in front of every call, one per `key` (tool, agent, or agent x
    /// tool), at most `capacity` of them. Outcomes are classified by
    /// [`classifier`](Self::classifier) (default: errors and abandoned calls are failures).
    /// The configuration is validated by [`build`](Self::build).
    pub fn breakers(mut self, cfg: BreakerConfig, key: BreakerKey, capacity: usize) -> Self {
        self.breakers = Some((cfg, key, capacity));
        self
    }

    /// Decides what counts as a failure for the breakers.
    pub fn classifier(mut self, f: fn(&Outcome) -> CallResult) -> Self {
        self.classify = f;
        self
    }

    /// Judges runs that have a task type against `baseline` (learned from recorded runs):
    /// denies calls past its call limit and alerts on (or denies) tools the task type never used.
    /// With `learn_online`, every finished run is added to the baseline.
    pub fn baseline(mut self, baseline: Baseline, learn_online: bool) -> Self {
        self.baseline = Some((baseline, learn_online));
        self
    }

    /// Rate limits per agent and per tool (on the guard's monotonic clock). Validated by
    /// [`build`](Self::build).
    pub fn rate_limits(mut self, cfg: RateLimits) -> Self {
        self.rate_limits = Some(cfg);
        self
    }

    /// Sends breaker openings and closings, budget exhaustion, loop detections and kill-switch
    /// actions to `sink` as they happen (they are audit events as well).
    pub fn alerts(mut self, sink: Arc<dyn AlertSink>) -> Self {
        self.alerts = Some(sink);
        self
    }

    /// Denies a call repeated (same tool, same arguments) more than `cfg.max_repeats` times within
    /// `cfg.window` in one run.
    pub fn loop_detection(mut self, cfg: LoopDetection) -> Self {
        self.loops = Some(cfg);
        self
    }

    /// Per-run budgets.
    pub fn run_budget(mut self, budget: RunBudget) -> Self {
        self.budget = budget;
        self
    }

    /// Lets permits obtain scoped credentials from `broker`; a run's credentials are revoked
    /// when it ends.
    pub fn credentials(mut self, broker: CredentialBroker) -> Self {
        self.credentials = Some(broker);
        self
    }

    /// Remembers the document the guard is built from (reloads compare against it).
    pub(crate) fn policy_document(mut self, policy: crate::policy::Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Requires every document a reload installs to be signed under `trust`.
    pub(crate) fn trust(mut self, trust: crate::policy::Trust) -> Self {
        self.trust = Some(trust);
        self
    }

    /// Builds the guard. Every setting that can be wrong is checked here (the setters never
    /// fail), and the first error names the field.
    pub fn build(self) -> Result<Guard, GuardError> {
        let breakers = match self.breakers {
            None => None,
            Some((config, key, capacity)) => {
                let kb = KeyedBreakers::new(config.clone(), key, capacity, Arc::clone(&self.clock))
                    .map_err(config_error)?;
                Some((
                    BreakerSettings {
                        config,
                        key,
                        capacity,
                    },
                    Arc::new(kb),
                ))
            }
        };
        let rate = match self.rate_limits {
            None => None,
            Some(cfg) => {
                let rl = RateLimiters::new(&cfg, Arc::clone(&self.clock)).map_err(config_error)?;
                Some((cfg, Arc::new(rl)))
            }
        };
        let (gate, escalation) = match self.escalation {
            Some((gate, esc)) => (Some(Arc::new(gate)), Some(esc)),
            None => (None, None),
        };
        if let Some(rules) = &self.flow {
            super::flow::check_tiers(rules, &self.boundary.document().tiers)?;
        }
        // The flow layer reads every argument the boundary reads (its limits, not the defaults).
        let flow = self
            .flow
            .map(|f| f.with_json_limits(self.boundary.json_limits()));
        let flow_tiers = flow.as_ref().map(|f| f.tiers().to_vec());
        if let Some(modes) = &self.modes {
            super::mode::check_modes(modes, &self.boundary, gate.as_deref())?;
        }
        let version = self.boundary.version();
        let rate_tools = Snapshot::tool_table(rate.as_ref(), &self.boundary);
        let snapshot = Snapshot {
            rollout: self.rollout.map(|r| {
                let agreement = self
                    .agreement
                    .unwrap_or_else(crate::agreement::Agreement::exact);
                Arc::new(super::rollout::LiveRollout::new(r, agreement, version))
            }),
            modes: self.modes,
            flow,
            boundary: Arc::new(self.boundary),
            budget: self.budget,
            loops: self.loops,
            breakers,
            rate,
            rate_tools,
            gate,
            baseline: self
                .baseline
                .map(|(b, learn)| Arc::new(BaselineState::new(b, learn))),
        };
        let guard = Guard {
            shared: Arc::new(Shared {
                policy: ArcSwap::from_pointee(snapshot),
                generation: AtomicU64::new(0),
                reload_lock: parking_lot::Mutex::new(()),
                bound: parking_lot::Mutex::new(Bound {
                    document: self.policy,
                    trust: self.trust,
                    flow_tiers,
                }),
                clock: self.clock,
                audit: self.audit,
                alerts: self.alerts,
                credentials: self.credentials,
                escalation,
                classify: self.classify,
                seq: AtomicU64::new(0),
                runs: AtomicU64::new(0),
                recommendations: AtomicU64::new(0),
                live_runs: parking_lot::Mutex::new(Default::default()),
                kill_flags: AtomicU8::new(0),
                suspended_agents: ArcSwap::from_pointee(HashSet::new()),
                suspended_runs: ArcSwap::from_pointee(HashSet::new()),
                fleet_agents: ArcSwap::from_pointee(HashSet::new()),
                fleet_runs: ArcSwap::from_pointee(HashSet::new()),
                any_set_suspension: AtomicBool::new(false),
                suspension_sets: parking_lot::Mutex::new(()),
                shared_budget: self.shared_budget,
                rules: Rules::default(),
            }),
        };
        if let Some(e) = &guard.shared.escalation {
            e.attach(&guard.shared);
        }
        Ok(guard)
    }
}

fn config_error(e: ConfigError) -> GuardError {
    GuardError::Config {
        field: e.field.to_owned(),
        reason: e.reason.to_owned(),
    }
}

impl Guard {
    /// Starts configuring a guard around `boundary`.
    pub fn builder(boundary: ActionBoundary) -> GuardBuilder {
        GuardBuilder {
            boundary,
            clock: Arc::new(SystemClock::new()),
            audit: None,
            credentials: None,
            breakers: None,
            classify: default_classifier,
            budget: RunBudget::default(),
            loops: None,
            alerts: None,
            escalation: None,
            rate_limits: None,
            baseline: None,
            policy: None,
            trust: None,
            flow: None,
            modes: None,
            rollout: None,
            agreement: None,
            shared_budget: None,
        }
    }
}
