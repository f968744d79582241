//! Binding what cannot be written in a document (key material, sinks, stores, clocks) and
//! building the whole guard from a [`Policy`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::Policy;
use crate::audit::AuditSink;
use crate::breaker::{AlertSink, Baseline, CallResult};
use crate::clock::{Clock, SystemClock};
use crate::credential::{
    AsyncCredentialProvider, BrokerBuilder, CredentialBroker, CredentialGrant, CredentialProvider,
};
use crate::escalation::{ApprovalQueue, ApprovalStore, QueueConfig};
use crate::guard::Guard;
use crate::verdict::Outcome;

/// Registers one bound provider with the broker being built.
type Provider = Box<dyn FnOnce(BrokerBuilder) -> BrokerBuilder>;

/// What code supplies to a [`Policy`]: everything a document must not contain.
///
/// ```
/// use std::sync::Arc;
/// use tollgate::audit::MemorySink;
/// use tollgate::policy::{Bindings, Policy};
///
/// let policy = Policy::from_toml(r#"
///     [policy]
///     name = "demo"
///     owner = "platform team"
///     purpose = "demonstrate bindings"
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
///     [audit]
/// "#)?;
/// let guard = tollgate::Guard::from_policy(
///     &policy,
///     Bindings::new().audit(Arc::new(MemorySink::new())),
/// )?;
/// assert_eq!(guard.policy_version(), policy.version());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Default)]
pub struct Bindings {
    clock: Option<Arc<dyn Clock>>,
    pub(crate) audit: Option<Arc<dyn AuditSink>>,
    alerts: Option<Arc<dyn AlertSink>>,
    providers: BTreeMap<String, Provider>,
    pub(crate) approvals: Option<Arc<dyn ApprovalStore>>,
    baseline: Option<Baseline>,
    classifier: Option<fn(&Outcome) -> CallResult>,
    signed: Option<(super::Trust, super::SignatureFile)>,
    pub(crate) shared_budget: Option<Arc<dyn crate::guard::SharedBudget>>,
    pub(crate) host: Option<String>,
    pub(crate) checkpoint_key: Option<crate::audit::file::CheckpointKey>,
    pub(crate) approval_key: Option<crate::escalation::StoreKey>,
    pub(crate) redaction: Option<crate::audit::Redaction>,
    /// Set by [`Deployment::open`](crate::backend::Deployment::open), which opens the
    /// `[backend]` section's parts itself.
    pub(crate) deployed: bool,
}

impl fmt::Debug for Bindings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bindings")
            .field("clock", &self.clock)
            .field("audit", &self.audit.is_some())
            .field("alerts", &self.alerts.is_some())
            .field("providers", &self.providers.keys().collect::<Vec<_>>())
            .field("approvals", &self.approvals.is_some())
            .field("baseline", &self.baseline.is_some())
            .field("shared_budget", &self.shared_budget.is_some())
            .field("host", &self.host)
            .field("checkpoint_key", &self.checkpoint_key.is_some())
            .field("approval_key", &self.approval_key.is_some())
            .finish()
    }
}

/// Why a policy and its bindings cannot make a guard.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The document declares a credential provider that no binding implements.
    #[error("credential provider `{0}` is declared in `credentials.providers` but not bound")]
    MissingProvider(String),
    /// A provider is bound that the document does not declare (a reviewer never saw it).
    #[error("credential provider `{0}` is bound but not declared in `credentials.providers`")]
    UndeclaredProvider(String),
    /// The document has an `[audit]` section but no audit sink is bound.
    #[error("the policy has an `[audit]` section: bind an audit sink with `Bindings::audit`")]
    MissingAuditSink,
    /// The document has an `[escalation]` section but no approval store is bound.
    #[error(
        "the policy has an `[escalation]` section: bind an approval store with `Bindings::approvals`"
    )]
    MissingApprovalStore,
    /// The bindings require reviewers' signatures and the document does not have them.
    #[error("the policy is not signed as required: {0}")]
    Unsigned(#[from] super::SignatureError),
    /// The bound audit sink is weaker than the document's `[audit]` section says.
    #[error(
        "the bound audit sink does not meet `audit.{field}`: the document says {document}, the sink does {sink}"
    )]
    WeakerSink {
        /// The `[audit]` field not met.
        field: &'static str,
        /// What the document requires.
        document: String,
        /// What the sink does.
        sink: String,
    },
    /// The approval queue could not be opened over the bound store.
    #[error("approval queue: {0}")]
    Queue(#[from] crate::escalation::QueueError),
    /// The document has a `[backend]` section whose shared parts (kill switch, budgets,
    /// approvals, audit) only [`Deployment::open`](crate::backend::Deployment::open) opens: a
    /// guard built without them would ignore the fleet's kill switch and budgets.
    #[error(
        "the policy has a `[backend]` section: open it with `tollgate::backend::Deployment::open` \
         (a guard built with `Guard::from_policy` would not follow its shared kill switch, \
         budgets, approvals and audit trail)"
    )]
    BackendNotOpened,
    /// A primitive refused its configuration (should have been caught by the document checks).
    #[error("`{field}`: {reason}")]
    Config {
        /// Where in the document.
        field: String,
        /// Why.
        reason: String,
    },
}

impl Bindings {
    /// Nothing bound yet: the system clock, no sink, no providers.
    pub fn new() -> Self {
        Self::default()
    }

    /// The clock (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The audit sink (required when the document has an `[audit]` section).
    pub fn audit(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.audit = Some(sink);
        self
    }

    /// Where alerts (breaker trips, budget exhaustion, loops, kill-switch actions) go.
    pub fn alerts(mut self, sink: Arc<dyn AlertSink>) -> Self {
        self.alerts = Some(sink);
        self
    }

    /// Implements the document's credential provider `name` (with its key material).
    pub fn provider(
        mut self,
        name: impl Into<String>,
        provider: impl CredentialProvider + 'static,
    ) -> Self {
        let name = name.into();
        let key = name.clone();
        self.providers.insert(
            key,
            Box::new(move |b: BrokerBuilder| b.provider(name, provider)),
        );
        self
    }

    /// Implements the document's credential provider `name` asynchronously (e.g. a vault).
    pub fn async_provider(
        mut self,
        name: impl Into<String>,
        provider: impl AsyncCredentialProvider + 'static,
    ) -> Self {
        let name = name.into();
        let key = name.clone();
        self.providers.insert(
            key,
            Box::new(move |b: BrokerBuilder| b.async_provider(name, provider)),
        );
        self
    }

    /// Where approval requests and decisions are kept (required with an `[escalation]`
    /// section).
    pub fn approvals(mut self, store: Arc<dyn ApprovalStore>) -> Self {
        self.approvals = Some(store);
        self
    }

    /// A baseline already learned from recorded runs (default: an empty one with the document's
    /// parameters).
    pub fn baseline(mut self, baseline: Baseline) -> Self {
        self.baseline = Some(baseline);
        self
    }

    /// Refuses to build a guard unless `signatures` hold enough valid signatures of the
    /// document by the keys `trust` names (see [`Trust`](super::Trust)).
    pub fn require_signed(mut self, trust: super::Trust, signatures: super::SignatureFile) -> Self {
        self.signed = Some((trust, signatures));
        self
    }

    /// Budgets shared beyond this guard (see [`crate::backend::lease`]); set by
    /// [`Deployment::open`](crate::backend::Deployment::open) from `[backend.leases]`.
    pub fn shared_budget(mut self, budget: Arc<dyn crate::guard::SharedBudget>) -> Self {
        self.shared_budget = Some(budget);
        self
    }

    /// This process's name in its deployment, unique among the processes sharing a backend:
    /// its leases and (on PostgreSQL, unless `[backend.audit] writer` names one) its audit chain
    /// go by it. Default `<hostname>-<pid>`. Used by
    /// [`Deployment::open`](crate::backend::Deployment::open).
    pub fn host(mut self, name: impl Into<String>) -> Self {
        self.host = Some(name.into());
        self
    }

    /// Signs the audit trail's checkpoints when
    /// [`Deployment::open`](crate::backend::Deployment::open) opens the sink of `[backend]`.
    pub fn checkpoint_key(mut self, key: crate::audit::file::CheckpointKey) -> Self {
        self.checkpoint_key = Some(key);
        self
    }

    /// Authenticates the approval store
    /// [`Deployment::open`](crate::backend::Deployment::open) opens for `[escalation]` (every
    /// process of the deployment needs the same key).
    pub fn approval_key(mut self, key: crate::escalation::StoreKey) -> Self {
        self.approval_key = Some(key);
        self
    }

    /// The keyed redaction the audit sink of `[backend]` uses when the document says
    /// `redaction = "keyed_hash"`.
    pub fn redaction(mut self, redaction: crate::audit::Redaction) -> Self {
        self.redaction = Some(redaction);
        self
    }

    /// For offline evaluation (explain, replay): build the guard without the shared parts of
    /// `[backend]`, which such a guard must not touch.
    pub(crate) fn offline(mut self) -> Self {
        self.deployed = true;
        self
    }

    /// How outcomes count for the breakers (default: errors are failures).
    pub fn classifier(mut self, f: fn(&Outcome) -> CallResult) -> Self {
        self.classifier = Some(f);
        self
    }
}

fn config(field: impl Into<String>, reason: impl fmt::Display) -> BindError {
    BindError::Config {
        field: field.into(),
        reason: reason.to_string(),
    }
}

impl Policy {
    /// Builds the whole guard this policy describes, with `bindings` for what the document does
    /// not hold. Every decision of the guard carries [`Policy::version`].
    pub fn guard(&self, mut bindings: Bindings) -> Result<Guard, BindError> {
        let doc = self.document();
        if doc.backend.as_ref().is_some_and(|b| b.shares_state()) && !bindings.deployed {
            return Err(BindError::BackendNotOpened);
        }
        let trust = match bindings.signed.take() {
            Some((trust, sigs)) => {
                trust.verify(self, &sigs)?;
                Some(trust)
            }
            None => None,
        };
        let clock = bindings
            .clock
            .take()
            .unwrap_or_else(|| Arc::new(SystemClock::new()));
        // Fresh compiled parts for this guard (the same document compiled again cannot fail).
        let (boundary, gate) = super::compile_parts(doc, self.version())
            .map_err(|e| config(e.path().unwrap_or(".").to_owned(), &e))?;
        let mut b = Guard::builder(boundary)
            .clock(Arc::clone(&clock))
            .policy_document(self.clone());
        if let Some(trust) = trust {
            b = b.trust(trust);
        }

        if let Some(sink) = bindings.audit.take() {
            if let (Some(audit), Some(g)) = (&doc.audit, sink.guarantees()) {
                check_sink(audit, g)?;
            }
            b = b.audit(sink);
        } else if doc.audit.is_some() {
            return Err(BindError::MissingAuditSink);
        }
        if let Some(alerts) = bindings.alerts.take() {
            b = b.alerts(alerts);
        }
        if let Some(f) = bindings.classifier {
            b = b.classifier(f);
        }

        // Credentials: exactly the declared providers, each bound.
        let declared = doc
            .credentials
            .as_ref()
            .map(|c| c.providers.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        if let Some(extra) = bindings.providers.keys().find(|k| !declared.contains(k)) {
            return Err(BindError::UndeclaredProvider(extra.clone()));
        }
        if let Some(missing) = declared
            .iter()
            .find(|k| !bindings.providers.contains_key(*k))
        {
            return Err(BindError::MissingProvider(missing.clone()));
        }
        if let Some(cred) = &doc.credentials {
            let mut broker = CredentialBroker::builder();
            for (_, add) in std::mem::take(&mut bindings.providers) {
                broker = add(broker);
            }
            for g in &cred.grants {
                let mut grant = CredentialGrant::new(
                    g.provider.clone(),
                    g.tools.iter().cloned(),
                    g.operations.iter().copied(),
                    g.resource.clone(),
                    g.ttl,
                );
                if let Some(n) = g.max_uses {
                    grant = grant.max_uses(n);
                }
                broker = broker.grant(g.role.clone(), grant);
            }
            let broker = broker
                .build()
                .map_err(|e| config(format!("credentials.{}", e.field), e.reason))?;
            b = b.credentials(broker);
        }

        if let Some(shared) = bindings.shared_budget.take() {
            b = b.shared_budget(shared);
        }
        if let Some(br) = &doc.breakers {
            b = b.breakers(br.config(), br.key, br.max_keys);
        }
        if doc.budgets.is_some() {
            b = b.run_budget(super::run_budget(doc).map_err(|(f, r)| config(f, r))?);
        }
        if let Some(r) = &doc.rate_limits {
            b = b.rate_limits(r.clone());
        }
        if let Some(l) = doc.loops {
            b = b.loop_detection(l);
        }
        if let Some(base) = &doc.baseline {
            let baseline = match bindings.baseline.take() {
                Some(learned) if *learned.config() != base.config => {
                    return Err(BindError::Config {
                        field: "baseline.config".into(),
                        reason: "the bound baseline was learned with other parameters than the \
                                 document's: rebuild it with the document's `baseline.config`"
                            .into(),
                    });
                }
                Some(learned) => learned,
                None => Baseline::new(base.config)
                    .map_err(|e| config(format!("baseline.config.{}", e.field), e.reason))?,
            };
            b = b.baseline(baseline, base.learn_online);
        }
        if let Some(rules) = self.flow() {
            b = b.flow(rules.clone());
        }
        if let Some(modes) = self.modes() {
            b = b.modes(modes.clone());
        }
        if let Some(rollout) = self.rollout() {
            b = b.rollout(rollout.clone());
            if let Some(agreement) = self.agreement() {
                b = b.rollout_agreement(agreement.clone());
            }
        }
        if let Some(gate) = gate {
            let store = bindings
                .approvals
                .take()
                .ok_or(BindError::MissingApprovalStore)?;
            let queue =
                ApprovalQueue::open(store, Arc::clone(&clock), QueueConfig::for_gate(&gate))?;
            b = b.escalation(gate, queue);
        }
        b.build().map_err(|e| match e {
            crate::guard::GuardError::Config { field, reason } => BindError::Config {
                field: if field.starts_with("rate_limits") || field.starts_with("modes") {
                    field
                } else {
                    format!("breakers.{field}")
                },
                reason,
            },
            other => config(".", other),
        })
    }
}

/// Refuses a sink that reports weaker guarantees than the document's `[audit]` section.
fn check_sink(audit: &super::Audit, g: crate::audit::SinkGuarantees) -> Result<(), BindError> {
    use super::{AuditDurability, RedactionMode, WhenFull};
    use crate::audit::SinkDurability;
    let rank = |d: SinkDurability| match d {
        SinkDurability::EveryRecord => (0, std::time::Duration::ZERO),
        SinkDurability::GroupCommit(i) => (1, i),
        SinkDurability::OsBuffered => (2, std::time::Duration::MAX),
    };
    let wanted = match audit.durability {
        AuditDurability::EveryRecord => SinkDurability::EveryRecord,
        AuditDurability::GroupCommit { interval } => SinkDurability::GroupCommit(interval),
        AuditDurability::OsBuffered => SinkDurability::OsBuffered,
    };
    if rank(g.durability) > rank(wanted) {
        return Err(BindError::WeakerSink {
            field: "durability",
            document: format!("{wanted:?}"),
            sink: format!("{:?}", g.durability),
        });
    }
    if audit.when_full == WhenFull::Block && g.refuses_when_full {
        return Err(BindError::WeakerSink {
            field: "when_full",
            document: "block (wait for room)".into(),
            sink: "deny when full".into(),
        });
    }
    if audit.redaction == RedactionMode::KeyedHash && !g.keyed_hash {
        return Err(BindError::WeakerSink {
            field: "redaction",
            document: "keyed_hash".into(),
            sink: "placeholder".into(),
        });
    }
    Ok(())
}

impl Policy {
    /// The file sink configuration the `[audit]` section describes: durability, what a full
    /// queue does, and redaction (`keyed_hash` needs `redaction`, a
    /// [`Redaction::keyed_hash`](crate::audit::Redaction::keyed_hash); `placeholder` refuses one
    /// to keep reviewers' expectations exact). Checkpoints, witness and alerts are added by the
    /// caller. A guard built with a sink opened from this configuration meets the document.
    pub fn file_sink_config(
        &self,
        redaction: Option<crate::audit::Redaction>,
    ) -> Result<crate::audit::file::FileSinkConfig, BindError> {
        use super::{AuditDurability, RedactionMode, WhenFull};
        use crate::audit::file::{Backpressure, Durability, FileSinkConfig};
        let audit = self.document().audit.clone().unwrap_or_default();
        let durability = match audit.durability {
            AuditDurability::EveryRecord => Durability::EveryRecord,
            AuditDurability::GroupCommit { interval } => Durability::GroupCommit {
                interval_ms: u64::try_from(interval.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            },
            AuditDurability::OsBuffered => Durability::OsBuffered,
        };
        let mut cfg = FileSinkConfig::default()
            .durability(durability)
            .backpressure(match audit.when_full {
                WhenFull::Block => Backpressure::Block,
                WhenFull::Deny => Backpressure::Fail,
            });
        match (audit.redaction, redaction) {
            (RedactionMode::KeyedHash, Some(r)) if r.is_keyed() => cfg = cfg.redaction(r),
            (RedactionMode::Placeholder, None) => {}
            (mode, _) => {
                return Err(BindError::Config {
                    field: "audit.redaction".into(),
                    reason: format!(
                        "the document says `{}`: pass {}",
                        match mode {
                            RedactionMode::KeyedHash => "keyed_hash",
                            RedactionMode::Placeholder => "placeholder",
                        },
                        match mode {
                            RedactionMode::KeyedHash => "a keyed Redaction",
                            RedactionMode::Placeholder => "no redaction key",
                        }
                    ),
                });
            }
        }
        Ok(cfg)
    }

    /// The retention schedule of `[audit.retention]` for
    /// [`FileSink::retain`](crate::audit::file::FileSink::retain): each class kept as long as
    /// the document says (`"forever"`: never deleted), records of no class as `default` says.
    pub fn retention_policy(&self) -> crate::audit::file::RetentionPolicy {
        use super::Keep;
        let keep = |k: &Keep| match k {
            Keep::Forever => None,
            Keep::For(d) => Some(*d),
        };
        let retention = self
            .document()
            .audit
            .as_ref()
            .and_then(|a| a.retention.as_ref());
        let default = retention.and_then(|r| r.keep.get("default")).and_then(keep);
        let mut policy = crate::audit::file::RetentionPolicy::new(default);
        if let Some(r) = retention {
            for (class, k) in &r.keep {
                if class != "default" {
                    policy = policy.class(class.clone(), keep(k));
                }
            }
        }
        policy
    }
}
