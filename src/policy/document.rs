//! The policy document's sections, as serde types. Unknown fields are refused everywhere; maps
//! refuse duplicate keys; durations are strings with a unit and money is exact
//! ([`crate::units`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::boundary::spec::unique_keys;
use crate::boundary::{ArgLimits, RoleSpec, ToolSpec};
use crate::breaker::{BaselineConfig, BreakerConfig, BreakerKey, RateLimits, Window};
use crate::credential::Operation;
use crate::escalation::EscalationPolicy;
use crate::guard::LoopDetection;
use crate::units::Money;

/// The whole deployment in one document: who owns it and why, what the agents may do, and every
/// limit around them. See the [module docs](super) for an example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// What a compliance reviewer signs: purpose, scope, owners, data handling.
    pub policy: Metadata,
    /// Data tiers from least to most sensitive.
    #[serde(default)]
    pub tiers: Vec<String>,
    /// Limits on raw argument text.
    #[serde(default)]
    pub limits: ArgLimits,
    /// What one compartment is and what its ids look like.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compartments: Option<Compartments>,
    /// Every tool that exists, by exact name.
    #[serde(default, deserialize_with = "unique_keys")]
    pub tools: BTreeMap<String, ToolSpec>,
    /// Every role, by name.
    #[serde(default, deserialize_with = "unique_keys")]
    pub roles: BTreeMap<String, RoleSpec>,
    /// Rules that send a call to a human, approver groups and chains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<EscalationPolicy>,
    /// Credential providers (by name; their key material is bound in code) and grants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,
    /// Circuit breakers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breakers: Option<Breakers>,
    /// Per-run budgets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budgets: Option<Budgets>,
    /// Rate limits per agent and per tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<RateLimits>,
    /// Loop detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loops: Option<LoopDetection>,
    /// Baselines per task type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineSection>,
    /// The audit trail: durability, redaction, retention schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<Audit>,
    /// Information-flow labels on tool outputs and rules on where arguments may come from
    /// (see [`crate::flow`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<crate::flow::FlowPolicy>,
    /// Deployment modes per tool, role, task type or agent (see [`crate::mode`]): absent, every
    /// call is enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modes: Option<crate::mode::ModesSection>,
    /// How recommendations are compared with what humans did, per tool (see
    /// [`crate::agreement`]): absent, every tool is compared exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<crate::agreement::AgreementSection>,
    /// Staged rollout per task type: stages, promotion criteria and demotion triggers (see
    /// [`crate::rollout`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollout::RolloutSection>,
    /// Where state shared across processes and hosts lives (see [`crate::backend`]): absent,
    /// files and in-process state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<crate::backend::BackendSection>,
    /// The MCP gateway: downstream servers, tool names, who connections act as (see
    /// [`crate::integrations::mcp`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<crate::integrations::mcp::McpSection>,
}

/// The document's metadata: what legal and compliance staff sign off. Every field is required:
/// a policy nobody owns, or whose purpose is not written down, is not ready to deploy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// The policy's name (e.g. `"clinic-assistant 2026-11"`).
    pub name: String,
    /// Who maintains it (a team, with a contact).
    pub owner: String,
    /// What the agents are for.
    pub purpose: String,
    /// Where they act and where they do not.
    pub scope: String,
    /// Who answers for the agents' actions.
    pub liability_owner: String,
    /// How often the policy must be reviewed (`"90d"`).
    #[serde(with = "crate::units::duration")]
    pub review_cadence: Duration,
    /// What happens to the data the agents see (storage, redaction, retention, who may read it).
    pub data_handling: String,
}

/// What a compartment is (a matter, a patient, a tenant) and which ids a run may be bound to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compartments {
    /// What one compartment is, for people (`"patient"`, `"matter"`).
    pub kind: String,
    /// An anchored regular expression every compartment id must match (`"P-[0-9]{6}"`); a run
    /// bound to anything else is refused at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_pattern: Option<String>,
}

/// Credential providers and grants.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The providers, by name, with a description for reviewers. Their implementations (and key
    /// material) are bound in code under the same names.
    #[serde(default, deserialize_with = "unique_keys")]
    pub providers: BTreeMap<String, ProviderSpec>,
    /// The grants, each for one role.
    #[serde(default)]
    pub grants: Vec<GrantSpec>,
}

/// One declared credential provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    /// What it issues and for which system (for the access matrix).
    pub description: String,
}

/// One grant of credentials to a role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantSpec {
    /// The role that receives it.
    pub role: String,
    /// The provider's name.
    pub provider: String,
    /// Tools that may use such credentials.
    pub tools: Vec<String>,
    /// Operations they may perform.
    pub operations: Vec<Operation>,
    /// The widest resource pattern (`patients/{compartment}/*`).
    pub resource: String,
    /// Lifetime of each credential (`"5m"`; at most 24 h).
    #[serde(with = "crate::units::duration")]
    pub ttl: Duration,
    /// Most uses of each credential (default: unlimited within its TTL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<u32>,
}

/// Circuit breakers: what one breaker covers, how many may exist, and their thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Breakers {
    /// One breaker per `tool`, `agent` or `agent_tool`.
    #[serde(default)]
    pub key: BreakerKey,
    /// Most breakers kept at once (unknown keys beyond it share the fail-closed path).
    pub max_keys: usize,
    /// The sliding window (`{ calls = 100 }` or `{ time = "60s" }`).
    pub window: Window,
    /// Calls the window must hold before rates are judged.
    pub minimum_calls: u32,
    /// Failure rate, in percent, at or above which the breaker opens.
    pub failure_rate: f64,
    /// Slow-call rate, in percent, at or above which the breaker opens (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_call_rate: Option<f64>,
    /// A call at least this long is slow (default 60 s).
    #[serde(
        default,
        with = "crate::units::duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub slow_call_duration: Option<Duration>,
    /// Consecutive failures that open the breaker whatever the rates (default: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// How long the breaker stays open before probing.
    #[serde(with = "crate::units::duration")]
    pub wait_in_open: Duration,
    /// Multiplier of the wait on each re-opening (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<f64>,
    /// Upper bound of the wait with backoff (default: `wait_in_open`).
    #[serde(
        default,
        with = "crate::units::duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_wait_in_open: Option<Duration>,
    /// Probe calls admitted in half-open (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_open_calls: Option<u32>,
}

impl Breakers {
    /// The breaker configuration these settings describe.
    pub fn config(&self) -> BreakerConfig {
        let d = BreakerConfig::default();
        BreakerConfig {
            window: self.window,
            minimum_calls: self.minimum_calls,
            failure_rate: self.failure_rate,
            slow_call_rate: self.slow_call_rate.unwrap_or(d.slow_call_rate),
            slow_call_duration: self.slow_call_duration.unwrap_or(d.slow_call_duration),
            consecutive_failures: self.consecutive_failures.unwrap_or(d.consecutive_failures),
            wait_in_open: self.wait_in_open,
            backoff: self.backoff.unwrap_or(d.backoff),
            max_wait_in_open: self.max_wait_in_open.unwrap_or(self.wait_in_open),
            half_open_calls: self.half_open_calls.unwrap_or(d.half_open_calls),
        }
    }
}

/// Per-run budgets. Each limit is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    /// Most tool calls a run may be allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_calls: Option<u64>,
    /// Longest a run may keep calling tools, from its start (`"30m"`).
    #[serde(
        default,
        with = "crate::units::duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_duration: Option<Duration>,
    /// Most tokens (input + output) a run may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Tokens reserved for a call that declares no estimate (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_call: Option<u64>,
    /// Most a run may cost, in the deployment's currency (`"5.00"`; at most 6 decimals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost: Option<Money>,
    /// Cost reserved for a call that declares no estimate (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_call: Option<Money>,
}

/// Baselines per task type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineSection {
    /// The thresholds.
    #[serde(default)]
    pub config: BaselineConfig,
    /// Learn from every finished run (default true).
    #[serde(default = "yes")]
    pub learn_online: bool,
}

fn yes() -> bool {
    true
}

/// The audit trail's settings. The sink itself (a directory, a database) and its keys are bound
/// in code; the document says how it must behave.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    /// When a decision may be acted on relative to its record reaching the disk.
    #[serde(default)]
    pub durability: AuditDurability,
    /// What a full writer queue does: `block` (wait) or `deny` (the call is denied).
    #[serde(default)]
    pub when_full: WhenFull,
    /// How sensitive values are written: `placeholder` or `keyed_hash` (the key is bound in code).
    #[serde(default)]
    pub redaction: RedactionMode,
    /// The retention schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
}

/// When a decision may be acted on relative to its record reaching the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AuditDurability {
    /// Only once the record is fsync'd (the default).
    #[default]
    EveryRecord,
    /// Once queued; fsync'd within `interval`.
    GroupCommit {
        /// Longest a written record stays unsynced (`"5ms"`).
        #[serde(with = "crate::units::duration")]
        interval: Duration,
    },
    /// Once queued; fsync'd on flush, rotation and close.
    OsBuffered,
}

/// What a full audit queue does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait for room.
    #[default]
    Block,
    /// Refuse the record: the call is denied.
    Deny,
}

/// How sensitive argument values are written to the audit trail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedactionMode {
    /// `"[REDACTED:sensitive]"`.
    #[default]
    Placeholder,
    /// An HMAC-SHA-256 of the value under a key bound in code.
    KeyedHash,
}

/// The retention schedule: which class each tier's records belong to, and how long each class
/// is kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// The retention class of each tier's records (`phi = "hipaa"`).
    #[serde(default, deserialize_with = "unique_keys")]
    pub tiers: BTreeMap<String, String>,
    /// How long each class is kept (`hipaa = "6y"`), or `"forever"`. The class `default` covers
    /// records of tiers not listed and records about no tool.
    #[serde(default, deserialize_with = "unique_keys")]
    pub keep: BTreeMap<String, Keep>,
}

/// How long a retention class is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Never deleted by retention.
    Forever,
    /// Deleted once older than this.
    For(Duration),
}

impl Serialize for Keep {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Keep::Forever => s.serialize_str("forever"),
            Keep::For(d) => s.serialize_str(&crate::units::format_duration(*d)),
        }
    }
}

impl<'de> Deserialize<'de> for Keep {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Keep;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration with a unit (\"6y\") or \"forever\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Keep, E> {
                if v == "forever" {
                    return Ok(Keep::Forever);
                }
                crate::units::parse_duration(v)
                    .map(Keep::For)
                    .map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Keep, E> {
                Err(E::custom(crate::units::DurationError::NoUnit(
                    v.to_string(),
                )))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Keep, E> {
                Err(E::custom(crate::units::DurationError::NoUnit(
                    v.to_string(),
                )))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Keep, E> {
                Err(E::custom(crate::units::DurationError::NoUnit(
                    v.to_string(),
                )))
            }
        }
        d.deserialize_any(V)
    }
}
