//! The audit seam: every run start, decision, outcome and run end becomes one [`AuditEvent`] handed
//! to an [`AuditSink`].
//!
//! Events borrow from the caller's data (the tool name, the raw argument text, the denial), so a
//! sink serialises straight from them; a sink that keeps an event beyond [`AuditSink::record`]
//! copies what it needs. A sink that returns an error makes the guard **deny** the call it was
//! recording: no decision is acted on without its record (fail closed).
//!
//! This module ships [`MemorySink`] (tests, inspection). Durable, hash-chained file sinks,
//! redaction, verification and query are the audit issue's work and will extend this module.
//!
//! A custom sink is a dozen lines:
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use tollgate::audit::{AuditError, AuditEvent, AuditSink, EventKind};
//!
//! #[derive(Default)]
//! struct CountDenials(AtomicU64);
//!
//! impl AuditSink for CountDenials {
//!     fn record(&self, event: &AuditEvent<'_>) -> Result<(), AuditError> {
//!         if let EventKind::Decision { decision, .. } = &event.kind {
//!             if decision.is_deny() {
//!                 self.0.fetch_add(1, Ordering::Relaxed);
//!             }
//!         }
//!         Ok(())
//!     }
//!     fn flush(&self) -> Result<(), AuditError> { Ok(()) }
//! }
//! ```

pub mod file;
pub mod query;
mod sinks;

pub use sinks::{Fanout, TracingSink};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::breaker::Transition;
use crate::call::{AgentId, Args, CredentialId, RunContext, RunId, ToolCall};
use crate::credential::{CredentialError, Scope};
use crate::verdict::{ApprovalRequest, Denial, Outcome, PolicyVersion};

/// One thing that happened, with the run it belongs to.
#[derive(Debug)]
#[non_exhaustive]
pub struct AuditEvent<'a> {
    /// Position in the guard's event sequence (strictly increasing per guard, starting at 1).
    pub seq: u64,
    /// Wall-clock time of the event.
    pub at: SystemTime,
    /// The run; `None` for guard-wide events (policy reload, key rotation).
    pub run: Option<&'a RunId>,
    /// The agent acting in the run; `None` for guard-wide events.
    pub agent: Option<&'a AgentId>,
    /// What happened.
    pub kind: EventKind<'a>,
}

impl<'a> AuditEvent<'a> {
    /// An event, for testing or benchmarking a sink outside a guard (the guard numbers and
    /// timestamps its own events).
    pub fn new(
        seq: u64,
        at: SystemTime,
        run: Option<&'a RunId>,
        agent: Option<&'a AgentId>,
        kind: EventKind<'a>,
    ) -> Self {
        Self {
            seq,
            at,
            run,
            agent,
            kind,
        }
    }
}

/// The kinds of event. More kinds (escalations, breaker trips, credentials, reloads) arrive with
/// their primitives; match with a wildcard arm.
#[derive(Debug)]
#[non_exhaustive]
pub enum EventKind<'a> {
    /// A run started.
    RunStarted {
        /// Who, in which role, for what, in which compartment.
        context: &'a RunContext,
    },
    /// A proposed call was decided.
    Decision {
        /// The call as proposed (arguments included, as given).
        call: &'a ToolCall<'a>,
        /// The decision.
        decision: Decision<'a>,
        /// The policy version the decision was made under (`None` only if no policy was consulted).
        policy_version: Option<PolicyVersion>,
    },
    /// A permitted call ended (or its permit was dropped).
    Outcome {
        /// The tool.
        tool: &'a str,
        /// The framework's call id.
        call_id: Option<&'a str>,
        /// How it ended.
        outcome: &'a Outcome,
        /// Time from permit to outcome.
        latency: Duration,
        /// The policy version the call was permitted under.
        policy_version: PolicyVersion,
    },
    /// A run ended.
    RunFinished {
        /// How long the run lasted.
        duration: Duration,
    },
    /// The guard's policy was replaced.
    PolicyReloaded {
        /// The version replaced.
        previous: PolicyVersion,
        /// The version now in force.
        current: PolicyVersion,
    },
    /// A scoped credential was issued, used, refused or revoked, or a provider's key rotated.
    Credential(CredentialEvent<'a>),
    /// A circuit breaker changed state.
    BreakerTransition {
        /// The agent part of the breaker's key (empty when keyed by tool).
        agent: &'a str,
        /// The tool part of the breaker's key (empty when keyed by agent).
        tool: &'a str,
        /// The transition and the figures that caused it.
        transition: &'a Transition,
    },
    /// The kill switch suspended or resumed something.
    KillSwitch {
        /// `"suspend"` or `"resume"`.
        action: &'static str,
        /// `"global"`, `"agent"` or `"run"`.
        scope: &'static str,
        /// The agent or run id, for those scopes.
        target: Option<&'a str>,
        /// Who did it.
        by: &'a str,
    },
}

/// Credential lifecycle events. They carry the credential's id and scope, never its value.
#[derive(Debug)]
#[non_exhaustive]
pub enum CredentialEvent<'a> {
    /// A credential was minted for a permit.
    Issued {
        /// Its id.
        id: &'a CredentialId,
        /// The provider that minted it.
        provider: &'a str,
        /// What it covers.
        scope: &'a Scope,
        /// Expiry, unix seconds.
        expires_at_unix: u64,
    },
    /// A credential's value was handed to a tool.
    Used {
        /// Its id.
        id: &'a CredentialId,
        /// The tool using it.
        tool: &'a str,
        /// The resource it was used for.
        resource: &'a str,
    },
    /// Minting or using a credential was refused.
    Refused {
        /// The credential, if one existed.
        id: Option<&'a CredentialId>,
        /// The tool asking.
        tool: &'a str,
        /// The resource asked for.
        resource: &'a str,
        /// Why.
        reason: &'a CredentialError,
    },
    /// A credential was revoked (its run ended, or on request).
    Revoked {
        /// Its id.
        id: &'a CredentialId,
        /// The provider that minted it.
        provider: &'a str,
    },
    /// A provider's signing key rotated.
    KeyRotated {
        /// The provider.
        provider: &'a str,
        /// The key retired (still verifying during its grace period).
        retired: &'a str,
        /// The key now signing.
        current: &'a str,
    },
}

/// A decision as recorded.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Decision<'a> {
    /// The call was permitted.
    Allow,
    /// The call awaits a human.
    Escalate(&'a ApprovalRequest),
    /// The call was denied.
    Deny(&'a Denial),
}

impl Decision<'_> {
    /// `true` for [`Decision::Deny`].
    pub fn is_deny(&self) -> bool {
        matches!(self, Decision::Deny(_))
    }

    /// `"allow"`, `"escalate"` or `"deny"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Escalate(_) => "escalate",
            Decision::Deny(_) => "deny",
        }
    }
}

/// A sink could not take an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The sink is unavailable or refused the event.
    #[error("audit sink `{sink}` refused the event: {reason}")]
    Refused {
        /// Which sink.
        sink: &'static str,
        /// Why.
        reason: String,
    },
    /// An I/O error while writing or flushing.
    #[error("audit sink I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Receives every audit event. Implementations must be cheap to call from many threads.
pub trait AuditSink: Send + Sync {
    /// Takes one event. An error makes the guard deny the call being recorded.
    fn record(&self, event: &AuditEvent<'_>) -> Result<(), AuditError>;
    /// Returns once every event recorded before the call is durable (for in-memory sinks: now).
    fn flush(&self) -> Result<(), AuditError>;
}

impl AuditEvent<'_> {
    /// The event as a JSON object. Field names follow the OpenTelemetry GenAI conventions where one
    /// exists (`gen_ai.tool.name`, `gen_ai.tool.call.id`, `gen_ai.agent.id`, `gen_ai.usage.*`).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("seq".into(), json!(self.seq));
        let at = self.at.duration_since(UNIX_EPOCH).unwrap_or_default();
        m.insert("time_unix_nano".into(), json!(at.as_nanos() as u64));
        m.insert("tollgate.run.id".into(), json!(self.run.map(RunId::as_str)));
        m.insert(
            "gen_ai.agent.id".into(),
            json!(self.agent.map(AgentId::as_str)),
        );
        match &self.kind {
            EventKind::RunStarted { context } => {
                m.insert("event".into(), json!("run_started"));
                m.insert("tollgate.role".into(), json!(context.role().as_str()));
                m.insert(
                    "tollgate.task_type".into(),
                    json!(context.task_type().map(|t| t.as_str())),
                );
                m.insert(
                    "tollgate.trigger".into(),
                    json!(context.trigger().map(|t| t.as_str())),
                );
                m.insert(
                    "tollgate.compartment".into(),
                    json!(context.compartment().map(|c| c.as_str())),
                );
                m.insert("tollgate.read_only".into(), json!(context.is_read_only()));
            }
            EventKind::Decision {
                call,
                decision,
                policy_version,
            } => {
                m.insert("event".into(), json!("decision"));
                m.insert("gen_ai.tool.name".into(), json!(call.tool()));
                m.insert("gen_ai.tool.call.id".into(), json!(call.call_id()));
                let args = match call.args() {
                    Args::None => json!({}),
                    Args::Value(v) => v.clone(),
                    Args::Json(t) => {
                        serde_json::from_str(t).unwrap_or_else(|_| json!({ "unparsed": t }))
                    }
                };
                m.insert("gen_ai.tool.call.arguments".into(), args);
                m.insert("tollgate.decision".into(), json!(decision.as_str()));
                if let Decision::Deny(d) = decision {
                    m.insert("tollgate.deny.code".into(), json!(d.code().as_str()));
                    m.insert("tollgate.rule".into(), json!(d.rule().as_str()));
                    m.insert("tollgate.reason".into(), json!(d.reason()));
                }
                if let Decision::Escalate(r) = decision {
                    m.insert("tollgate.rule".into(), json!(r.rule.as_str()));
                    m.insert("tollgate.reason".into(), json!(r.reason));
                }
                m.insert(
                    "tollgate.policy.version".into(),
                    json!(policy_version.map(|v| v.to_string())),
                );
                m.insert("tollgate.confidence".into(), json!(call.confidence()));
                m.insert("tollgate.reasoning".into(), json!(call.reasoning()));
            }
            EventKind::Outcome {
                tool,
                call_id,
                outcome,
                latency,
                policy_version,
            } => {
                m.insert("event".into(), json!("outcome"));
                m.insert("gen_ai.tool.name".into(), json!(tool));
                m.insert("gen_ai.tool.call.id".into(), json!(call_id));
                m.insert(
                    "tollgate.outcome".into(),
                    serde_json::to_value(&outcome.status).unwrap_or(Value::Null),
                );
                m.insert(
                    "gen_ai.usage.input_tokens".into(),
                    json!(outcome.input_tokens),
                );
                m.insert(
                    "gen_ai.usage.output_tokens".into(),
                    json!(outcome.output_tokens),
                );
                m.insert("tollgate.cost_micros".into(), json!(outcome.cost_micros));
                m.insert(
                    "tollgate.latency_ns".into(),
                    json!(latency.as_nanos() as u64),
                );
                m.insert(
                    "tollgate.policy.version".into(),
                    json!(policy_version.to_string()),
                );
            }
            EventKind::RunFinished { duration } => {
                m.insert("event".into(), json!("run_finished"));
                m.insert(
                    "tollgate.duration_ns".into(),
                    json!(duration.as_nanos() as u64),
                );
            }
            EventKind::PolicyReloaded { previous, current } => {
                m.insert("event".into(), json!("policy_reloaded"));
                m.insert(
                    "tollgate.policy.previous".into(),
                    json!(previous.to_string()),
                );
                m.insert("tollgate.policy.version".into(), json!(current.to_string()));
            }
            EventKind::Credential(c) => credential_json(c, &mut m),
            EventKind::BreakerTransition {
                agent,
                tool,
                transition,
            } => {
                m.insert("event".into(), json!("breaker_transition"));
                m.insert("tollgate.breaker.agent".into(), json!(agent));
                m.insert("gen_ai.tool.name".into(), json!(tool));
                m.insert("tollgate.breaker.from".into(), json!(transition.from));
                m.insert("tollgate.breaker.to".into(), json!(transition.to));
                m.insert(
                    "tollgate.breaker.failure_rate".into(),
                    json!(transition.failure_rate),
                );
                m.insert(
                    "tollgate.breaker.slow_call_rate".into(),
                    json!(transition.slow_call_rate),
                );
                m.insert("tollgate.breaker.calls".into(), json!(transition.calls));
            }
            EventKind::KillSwitch {
                action,
                scope,
                target,
                by,
            } => {
                m.insert("event".into(), json!("kill_switch"));
                m.insert("tollgate.kill.action".into(), json!(action));
                m.insert("tollgate.kill.scope".into(), json!(scope));
                m.insert("tollgate.kill.target".into(), json!(target));
                m.insert("tollgate.kill.by".into(), json!(by));
            }
        }
        Value::Object(m)
    }
}

/// Keeps every event in memory as JSON (see [`AuditEvent::to_json`]). For tests and inspection;
/// it grows without bound.
#[derive(Debug, Default)]
pub struct MemorySink {
    events: Mutex<Vec<Value>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of every event recorded so far, in order.
    pub fn events(&self) -> Vec<Value> {
        self.lock().clone()
    }

    /// Number of events recorded.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Value>> {
        // A panic while holding the lock cannot leave a half-written Vec<Value> behind (push is
        // the only mutation), so the data stays trustworthy after poisoning.
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl AuditSink for MemorySink {
    fn record(&self, event: &AuditEvent<'_>) -> Result<(), AuditError> {
        let v = event.to_json();
        self.lock().push(v);
        Ok(())
    }

    fn flush(&self) -> Result<(), AuditError> {
        Ok(())
    }
}

fn credential_json(c: &CredentialEvent<'_>, m: &mut Map<String, Value>) {
    match c {
        CredentialEvent::Issued {
            id,
            provider,
            scope,
            expires_at_unix,
        } => {
            m.insert("event".into(), json!("credential_issued"));
            m.insert("tollgate.credential.id".into(), json!(id.as_str()));
            m.insert("tollgate.credential.provider".into(), json!(provider));
            m.insert(
                "tollgate.credential.scope".into(),
                serde_json::to_value(scope).unwrap_or(Value::Null),
            );
            m.insert(
                "tollgate.credential.expires_at".into(),
                json!(expires_at_unix),
            );
        }
        CredentialEvent::Used { id, tool, resource } => {
            m.insert("event".into(), json!("credential_used"));
            m.insert("tollgate.credential.id".into(), json!(id.as_str()));
            m.insert("gen_ai.tool.name".into(), json!(tool));
            m.insert("tollgate.credential.resource".into(), json!(resource));
        }
        CredentialEvent::Refused {
            id,
            tool,
            resource,
            reason,
        } => {
            m.insert("event".into(), json!("credential_refused"));
            m.insert(
                "tollgate.credential.id".into(),
                json!(id.map(CredentialId::as_str)),
            );
            m.insert("gen_ai.tool.name".into(), json!(tool));
            m.insert("tollgate.credential.resource".into(), json!(resource));
            m.insert("tollgate.credential.refusal".into(), json!(reason.code()));
            m.insert("tollgate.reason".into(), json!(reason.to_string()));
        }
        CredentialEvent::Revoked { id, provider } => {
            m.insert("event".into(), json!("credential_revoked"));
            m.insert("tollgate.credential.id".into(), json!(id.as_str()));
            m.insert("tollgate.credential.provider".into(), json!(provider));
        }
        CredentialEvent::KeyRotated {
            provider,
            retired,
            current,
        } => {
            m.insert("event".into(), json!("key_rotated"));
            m.insert("tollgate.credential.provider".into(), json!(provider));
            m.insert("tollgate.key.retired".into(), json!(retired));
            m.insert("tollgate.key.current".into(), json!(current));
        }
    }
}
