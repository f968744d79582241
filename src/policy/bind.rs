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
    audit: Option<Arc<dyn AuditSink>>,
    alerts: Option<Arc<dyn AlertSink>>,
    providers: BTreeMap<String, Provider>,
    approvals: Option<Arc<dyn ApprovalStore>>,
    baseline: Option<Baseline>,
    classifier: Option<fn(&Outcome) -> CallResult>,
    signed: Option<(super::Trust, super::SignatureFile)>,
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
    /// The approval queue could not be opened over the bound store.
    #[error("approval queue: {0}")]
    Queue(#[from] crate::escalation::QueueError),
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
        if let Some((trust, sigs)) = bindings.signed.take() {
            trust.verify(self, &sigs)?;
        }
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

        if let Some(sink) = bindings.audit.take() {
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
                Some(learned) => learned,
                None => Baseline::new(base.config)
                    .map_err(|e| config(format!("baseline.config.{}", e.field), e.reason))?,
            };
            b = b.baseline(baseline, base.learn_online);
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
                field: if field.starts_with("rate_limits") {
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
