//! # tollgate
//!
//! Safety primitives for autonomous AI agents, wrapped around an agent framework's tool dispatch.
//! An agent proposes a tool call; tollgate decides whether it may run, before a single side effect
//! happens, and records the decision.
//!
//! What exists today:
//!
//! - [`ActionBoundary`]: default-deny tool allowlists per role, argument
//!   rules (type, enum, bounds, length, anchored regex, path-under-root, URL host allowlist, nested
//!   and per-element paths), ordered data tiers against role clearance, read / write / irreversible
//!   effects, a read-only mode, compartments (one matter or patient per run), and the filtered
//!   tool list an agent may see. Built in code or from TOML / JSON policy documents.
//! - [`Guard`]: the pipeline. `guard.check(&run, &call)` returns a [`Verdict`]; only `Allow`
//!   carries the [`Permit`] a tool runs under. The policy sits in an atomically swappable snapshot
//!   whose content hash ([`PolicyVersion`]) is carried by every verdict, permit and audit record.
//! - [`credential`]: short-lived credentials minted per permit, narrowed to its tool, operation
//!   and resource, revoked when the run ends; EdDSA-signed JWTs any service verifies, with key
//!   rotation and a revocation list.
//! - [`breaker`]: circuit breakers (per tool, agent or agent x tool), rate limits, baselines and
//!   alerts, plus the guard's kill switch, loop detection and per-run budgets.
//! - [`escalation`]: rules that send a call to a human ([`Verdict::Escalate`]), an approval queue
//!   with identity-bound, single-use grants, quorum, chains and timeouts that deny, and a durable
//!   approval store; [`Guard::resume`] runs an approved call exactly once.
//! - [`audit`]: the event seam ([`AuditSink`](audit::AuditSink)); memory, tracing, fan-out and
//!   async-bridge sinks; a hash-chained file sink with keyed checkpoints, retention, verification
//!   and streaming query; redaction of secret and sensitive arguments.
//! - [`policy`]: one signed policy document for the whole guard, with check / explain / diff /
//!   replay / access-matrix tools.
//! - [`backend`]: the state many processes share (kill switch, leased budgets, approval queue,
//!   audit trail) on one host's files or a PostgreSQL fleet; [`Deployment::open`](backend::Deployment::open)
//!   joins a process to it from the document's `[backend]` section alone.
//! - [`clock`]: injectable monotonic time.
//!
//! ## Quick start
//!
//! ```
//! use serde_json::json;
//! use tollgate::prelude::*;
//!
//! let policy = r#"
//!     tiers = ["public", "privileged"]
//!
//!     [tools.search_case_law]
//!     effect = "read"
//!     tier = "public"
//!     args.query = { type = "string", required = true, max_length = 500 }
//!
//!     [tools.read_document]
//!     effect = "read"
//!     tier = "privileged"
//!     compartment_arg = "matter_id"
//!     args.matter_id = { type = "string", required = true, pattern = "M-[0-9]{4}" }
//!     args.path = { type = "string", required = true, path_under = "/matters/{compartment}" }
//!
//!     [roles.intake]
//!     clearance = "privileged"
//!     tools = ["search_case_law", "read_document"]
//! "#;
//! let guard = Guard::builder(ActionBoundary::from_toml(policy)?).build()?;
//! let run = guard.start_run(RunContext::new("intake-bot", "intake").in_compartment("M-1001"))?;
//!
//! // Allowed: the path stays inside the run's own matter.
//! let args = json!({"matter_id": "M-1001", "path": "/matters/M-1001/intake.pdf"});
//! let verdict = guard.check(&run, &ToolCall::new("read_document", &args));
//! assert!(verdict.is_allowed());
//! if let Verdict::Allow(permit) = verdict {
//!     permit.complete(Outcome::success())?;
//! }
//!
//! // Denied: another matter, a path escape, an unknown tool.
//! let other = r#"{"matter_id": "M-2002", "path": "/matters/M-2002/intake.pdf"}"#;
//! assert_eq!(guard.check(&run, &ToolCall::new("read_document", other)).deny_code(),
//!            Some(DenyCode::CrossCompartment));
//! let escape = r#"{"matter_id": "M-1001", "path": "/matters/M-1001/../M-2002/intake.pdf"}"#;
//! assert_eq!(guard.check(&run, &ToolCall::new("read_document", escape)).deny_code(),
//!            Some(DenyCode::PathEscape));
//! assert_eq!(guard.check(&run, &ToolCall::new("delete_matter", "{}")).deny_code(),
//!            Some(DenyCode::UnknownTool));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod agreement;
pub mod audit;
pub mod backend;
pub mod boundary;
pub mod breaker;
pub mod call;
pub mod clock;
pub mod credential;
#[cfg(any(feature = "mcp", feature = "postgres"))]
mod error_chain;
pub mod escalation;
pub mod flow;
pub mod guard;
mod hex;
pub mod integrations;
pub mod mode;
#[cfg(any(feature = "mcp", feature = "postgres"))]
mod pem_files;
pub mod policy;
pub mod rollout;
pub mod units;
pub mod verdict;

pub use boundary::ActionBoundary;
pub use call::{
    AgentId, Args, CompartmentId, Principal, RoleName, RuleId, RunContext, RunId, TaskType,
    ToolCall,
};
pub use guard::{
    Cancellation, Delivery, DetachedPermit, ExecuteError, Guard, GuardBuilder, GuardError,
    LoopDetection, Permit, Run, RunBudget,
};
pub use verdict::{
    ApprovalRequest, Denial, DenyCode, Outcome, OutcomeStatus, PolicyVersion, Refusal, Verdict,
};

/// The README's examples, compiled and run as doctests so they cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The names most users need, in one import.
pub mod prelude {
    pub use crate::boundary::{ActionBoundary, Arg, Effect, RoleSpec, ToolSpec};
    pub use crate::{Denial, DenyCode, Guard, Outcome, Permit, Run, RunContext, ToolCall, Verdict};
}
