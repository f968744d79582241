//! The vocabulary of a proposed tool call: [`ToolCall`], its [`Args`], the [`RunContext`] it runs in
//! and the cheap-to-clone ids they carry.
//!
//! Everything on the hot path borrows: a [`ToolCall`] holds the framework's own `&str` tool name and
//! its arguments either as a parsed `&serde_json::Value` or as the raw JSON text (`&str`) that
//! LLM APIs return. Raw text is validated strictly (duplicate keys, lone surrogates, trailing data,
//! oversized or over-deep documents are all refused) by a scanner that does not allocate.

pub mod canonical;
pub(crate) mod json;

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use json::{JsonError, JsonLimits};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Cloning is a reference-count increment; the text is never copied.
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Wraps `s` as this id.
            pub fn new(s: impl AsRef<str>) -> Self {
                Self(Arc::from(s.as_ref()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self::new(s)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(Arc::from(s))
            }
        }
    };
}

id_type!(
    /// The agent making calls (one deployed agent, e.g. `intake-bot`).
    AgentId
);
id_type!(
    /// A role named in the policy; decides which tools an agent may see and call.
    RoleName
);
id_type!(
    /// The kind of task a run serves (e.g. `client-intake`); later issues learn baselines per task type.
    TaskType
);
id_type!(
    /// The user or system that triggered a run (accountability: who caused this agent to act).
    Principal
);
id_type!(
    /// One isolation unit: a legal matter, a patient, a client account. A run bound to one
    /// compartment can never touch another.
    CompartmentId
);
id_type!(
    /// One run of an agent (one task), unique within a process.
    RunId
);
id_type!(
    /// The id of one scoped credential (for audit; never the secret).
    CredentialId
);
id_type!(
    /// The id of the policy rule that produced a decision, e.g. `tools.send_email.args.to.url`.
    RuleId
);

/// The arguments of a tool call, borrowed from the caller.
#[derive(Debug, Clone, Copy)]
pub enum Args<'a> {
    /// The tool takes no arguments (treated as the empty object `{}`).
    None,
    /// Arguments already parsed by the framework.
    Value(&'a Value),
    /// Arguments as the raw JSON text an LLM API returned. Parsed strictly, without allocating.
    Json(&'a str),
}

impl<'a> From<&'a Value> for Args<'a> {
    fn from(v: &'a Value) -> Self {
        Args::Value(v)
    }
}

impl<'a> From<&'a str> for Args<'a> {
    fn from(s: &'a str) -> Self {
        Args::Json(s)
    }
}

impl<'a> From<&'a String> for Args<'a> {
    fn from(s: &'a String) -> Self {
        Args::Json(s.as_str())
    }
}

/// A tool call an agent proposes, borrowed from the framework's own data.
///
/// ```
/// use serde_json::json;
/// use tollgate::ToolCall;
///
/// // Arguments as the raw JSON text an LLM API returns...
/// let call = ToolCall::new("read_document", r#"{"matter_id":"M-1001","path":"/matters/M-1001/intake.pdf"}"#)
///     .with_call_id("call_abc123")
///     .with_confidence(0.93);
/// assert_eq!(call.tool(), "read_document");
///
/// // ...or already parsed.
/// let args = json!({"query": "adverse possession"});
/// let call = ToolCall::new("search_case_law", &args);
/// assert_eq!(call.call_id(), None);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ToolCall<'a> {
    tool: &'a str,
    args: Args<'a>,
    call_id: Option<&'a str>,
    confidence: Option<f32>,
    reasoning: Option<&'a str>,
    token_estimate: Option<u64>,
    cost_estimate_micros: Option<u64>,
    flags: &'a [&'a str],
}

impl<'a> ToolCall<'a> {
    /// A call of `tool` with `args` (`&serde_json::Value`, raw JSON `&str`, or [`Args::None`]).
    pub fn new(tool: &'a str, args: impl Into<Args<'a>>) -> Self {
        Self {
            tool,
            args: args.into(),
            call_id: None,
            confidence: None,
            reasoning: None,
            token_estimate: None,
            cost_estimate_micros: None,
            flags: &[],
        }
    }

    /// A call of `tool` without arguments.
    pub fn without_args(tool: &'a str) -> Self {
        Self::new(tool, Args::None)
    }

    /// The framework's id for this call (e.g. OpenAI's `call_...`), carried into audit records.
    pub fn with_call_id(mut self, id: &'a str) -> Self {
        self.call_id = Some(id);
        self
    }

    /// The agent's own confidence in this step, in `0.0..=1.0`.
    pub fn with_confidence(mut self, confidence: f32) -> Self {
        self.confidence = Some(confidence);
        self
    }

    /// The reasoning the agent gave for this step, recorded with the decision.
    pub fn with_reasoning(mut self, reasoning: &'a str) -> Self {
        self.reasoning = Some(reasoning);
        self
    }

    /// The most tokens this step may consume; a run's token budget reserves this much before the
    /// call and settles to the actual usage when the permit completes.
    pub fn with_token_estimate(mut self, tokens: u64) -> Self {
        self.token_estimate = Some(tokens);
        self
    }

    /// The most this step may cost, in millionths of the budget's currency unit; reserved like
    /// tokens.
    pub fn with_cost_estimate_micros(mut self, micros: u64) -> Self {
        self.cost_estimate_micros = Some(micros);
        self
    }

    /// Named conditions the framework observed about this step (`"ambiguous"`, `"anomaly"`,
    /// `"user_disputed"`, ...); escalation rules can route flagged calls to a human.
    pub fn with_flags(mut self, flags: &'a [&'a str]) -> Self {
        self.flags = flags;
        self
    }

    /// The flags set with [`with_flags`](Self::with_flags).
    pub fn flags(&self) -> &'a [&'a str] {
        self.flags
    }

    /// The declared token estimate, if any.
    pub fn token_estimate(&self) -> Option<u64> {
        self.token_estimate
    }

    /// The declared cost estimate, if any.
    pub fn cost_estimate_micros(&self) -> Option<u64> {
        self.cost_estimate_micros
    }

    /// The tool name exactly as proposed (no normalisation is ever applied).
    pub fn tool(&self) -> &'a str {
        self.tool
    }

    /// The arguments.
    pub fn args(&self) -> Args<'a> {
        self.args
    }

    /// The framework's call id, if given.
    pub fn call_id(&self) -> Option<&'a str> {
        self.call_id
    }

    /// The agent's confidence, if given.
    pub fn confidence(&self) -> Option<f32> {
        self.confidence
    }

    /// The reasoning snapshot, if given.
    pub fn reasoning(&self) -> Option<&'a str> {
        self.reasoning
    }
}

/// Who is acting, in which role, for which task and compartment: the context of one run.
///
/// ```
/// use tollgate::RunContext;
///
/// let ctx = RunContext::new("intake-bot", "intake")
///     .for_task("client-intake")
///     .triggered_by("paralegal:jdoe")
///     .in_compartment("M-1001");
/// assert_eq!(ctx.compartment().map(|c| c.as_str()), Some("M-1001"));
/// assert!(!ctx.is_read_only());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunContext {
    agent: AgentId,
    role: RoleName,
    task_type: Option<TaskType>,
    trigger: Option<Principal>,
    compartment: Option<CompartmentId>,
    #[serde(default)]
    read_only: bool,
}

impl RunContext {
    /// A run of `agent` acting in `role`.
    pub fn new(agent: impl Into<AgentId>, role: impl Into<RoleName>) -> Self {
        Self {
            agent: agent.into(),
            role: role.into(),
            task_type: None,
            trigger: None,
            compartment: None,
            read_only: false,
        }
    }

    /// The kind of task this run serves.
    pub fn for_task(mut self, t: impl Into<TaskType>) -> Self {
        self.task_type = Some(t.into());
        self
    }

    /// The user or system that caused this run.
    pub fn triggered_by(mut self, p: impl Into<Principal>) -> Self {
        self.trigger = Some(p.into());
        self
    }

    /// Binds the run to one compartment (matter, patient): calls naming another are denied.
    pub fn in_compartment(mut self, c: impl Into<CompartmentId>) -> Self {
        self.compartment = Some(c.into());
        self
    }

    /// Read-only (validation / sandbox) mode: every write or irreversible tool is denied.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// The acting agent.
    pub fn agent(&self) -> &AgentId {
        &self.agent
    }

    /// The role the agent acts in.
    pub fn role(&self) -> &RoleName {
        &self.role
    }

    /// The task type, if given.
    pub fn task_type(&self) -> Option<&TaskType> {
        self.task_type.as_ref()
    }

    /// The triggering principal, if given.
    pub fn trigger(&self) -> Option<&Principal> {
        self.trigger.as_ref()
    }

    /// The compartment the run is bound to, if any.
    pub fn compartment(&self) -> Option<&CompartmentId> {
        self.compartment.as_ref()
    }

    /// Whether the run is in read-only mode.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }
}
