//! OpenTelemetry for the guard's decisions (feature `otel`): [`OtelSink`], an
//! [`AuditSink`] that turns decision and outcome events into spans and
//! metrics following the OpenTelemetry GenAI semantic conventions for tool execution.
//!
//! # Why a sink
//!
//! The guard already reports every decision and every outcome, in order, to its audit sink,
//! whichever entry point produced it (`check`, `resume`, the blocking and async waits, `execute`,
//! the tower and OpenAI adapters, a detached permit completed elsewhere). A sink therefore sees
//! all of them without wrapping each entry point, and composes with the durable audit trail
//! through [`Fanout`](crate::audit::Fanout). It runs on the thread that decided or completed the
//! call, so its spans are children of whatever span is current there (e.g. the framework's
//! `invoke_agent` span).
//!
//! Telemetry is not the audit trail: this sink never refuses an event (a broken exporter must
//! not deny calls) and never sees more than the audit record would show. Arguments, outputs
//! and error messages are **not** exported (they may carry secrets or personal data); the audit
//! trail keeps them, redacted per the policy.
//!
//! # What it emits
//!
//! - **A span per tool call**, named `execute_tool {gen_ai.tool.name}`, kind `INTERNAL`, with
//!   `gen_ai.operation.name = "execute_tool"`, `gen_ai.tool.name`, `gen_ai.tool.call.id`,
//!   `gen_ai.tool.type = "function"`, `gen_ai.agent.id`, `tollgate.run.id`, and the guardrail
//!   attributes `gen_ai.guardrail.name = "tollgate"`, `gen_ai.guardrail.verdict.type`
//!   (`allow`, `deny`, `escalate`), `gen_ai.guardrail.policy.id` (the policy version hash),
//!   `gen_ai.guardrail.rule.id` and `tollgate.deny.code`.
//!   - An allowed call's span is recorded when its outcome arrives, spanning the tool's execution
//!     (start = outcome time minus the measured latency); a failed or abandoned call has status
//!     `ERROR` and `error.type` `tool_error` or `abandoned`; token usage goes to
//!     `gen_ai.usage.input_tokens` / `gen_ai.usage.output_tokens`.
//!   - A denied call's span is instantaneous with status `ERROR` and `error.type` the deny code
//!     (the tool never ran); an escalated call's carries `tollgate.approval.id`.
//!   - Decisions in a mode other than enforce carry `tollgate.mode`.
//! - **Metrics**: the histogram `gen_ai.execute_tool.duration` (seconds, per tool and
//!   `error.type`) of executed calls, and the counter `tollgate.guard.decisions` (per tool,
//!   verdict and deny code).
//!
//! The GenAI tool-execution conventions are in development, and the guardrail ones are a
//! proposal (`gen_ai.guardrail.*` here, as the issue names them; the open proposal upstream
//! discusses `gen_ai.security.*` names): the names live in [`attr`] so a rename is one change.
//!
//! Tool names an agent makes up (denied as unknown tools) are not metric attributes: they are
//! counted under `_OTHER`, so a model cannot blow up the metrics' cardinality. Every exported
//! string is cut at [`OtelSink::with_max_value_len`] bytes.
//!
//! ```
//! use std::sync::Arc;
//! use tollgate::audit::{AuditSink, Fanout, MemorySink};
//! use tollgate::integrations::otel::OtelSink;
//! use tollgate::prelude::*;
//!
//! // With the application's providers installed globally (opentelemetry_sdk + an exporter):
//! let otel: Arc<dyn AuditSink> = Arc::new(OtelSink::global());
//! let trail: Arc<dyn AuditSink> = Arc::new(MemorySink::new()); // the durable audit sink
//! let boundary = ActionBoundary::builder()
//!     .tool("lookup", ToolSpec::read().allow_unknown_args())
//!     .role("reader", RoleSpec::new().tools(["lookup"]))
//!     .build()?;
//! let guard = Guard::builder(boundary)
//!     .audit(Arc::new(Fanout::new(vec![trail, otel])))
//!     .build()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use opentelemetry::global::BoxedTracer;
use opentelemetry::metrics::{Counter, Histogram, Meter};
use opentelemetry::trace::{Span, SpanKind, Status, Tracer};
use opentelemetry::{KeyValue, Value};

use crate::audit::{AuditError, AuditEvent, AuditSink, Decision, EventKind};
use crate::mode::Mode;
use crate::verdict::{DenyCode, OutcomeStatus, PolicyVersion};

/// The attribute, span and metric names this sink emits, in one place.
pub mod attr {
    /// `gen_ai.operation.name`: always [`EXECUTE_TOOL`].
    pub const OPERATION_NAME: &str = "gen_ai.operation.name";
    /// The operation name of a tool execution.
    pub const EXECUTE_TOOL: &str = "execute_tool";
    /// The tool's name.
    pub const TOOL_NAME: &str = "gen_ai.tool.name";
    /// The framework's id for the call.
    pub const TOOL_CALL_ID: &str = "gen_ai.tool.call.id";
    /// The kind of tool: always `function` here.
    pub const TOOL_TYPE: &str = "gen_ai.tool.type";
    /// The acting agent's id.
    pub const AGENT_ID: &str = "gen_ai.agent.id";
    /// Input tokens reported by the outcome.
    pub const USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
    /// Output tokens reported by the outcome.
    pub const USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
    /// The class of error: the deny code, `tool_error` or `abandoned`.
    pub const ERROR_TYPE: &str = "error.type";
    /// The guardrail's name: `tollgate`.
    pub const GUARDRAIL_NAME: &str = "gen_ai.guardrail.name";
    /// `allow`, `deny` or `escalate`.
    pub const GUARDRAIL_VERDICT: &str = "gen_ai.guardrail.verdict.type";
    /// The version hash of the policy that decided.
    pub const GUARDRAIL_POLICY_ID: &str = "gen_ai.guardrail.policy.id";
    /// The id of the rule that denied or escalated.
    pub const GUARDRAIL_RULE_ID: &str = "gen_ai.guardrail.rule.id";
    /// tollgate's deny code.
    pub const DENY_CODE: &str = "tollgate.deny.code";
    /// The run's id.
    pub const RUN_ID: &str = "tollgate.run.id";
    /// The approval request of an escalated call.
    pub const APPROVAL_ID: &str = "tollgate.approval.id";
    /// The decision's mode when it is not enforce (`shadow`, `recommend`, ...).
    pub const MODE: &str = "tollgate.mode";
    /// The histogram of executed calls' durations, in seconds.
    pub const DURATION_METRIC: &str = "gen_ai.execute_tool.duration";
    /// The counter of decisions.
    pub const DECISIONS_METRIC: &str = "tollgate.guard.decisions";
    /// What a tool name outside the policy is counted as in metrics.
    pub const OTHER: &str = "_OTHER";
}

/// The default cut for exported strings, in bytes.
pub const DEFAULT_MAX_VALUE_LEN: usize = 256;

/// Bucket boundaries of the duration histogram, in seconds (the GenAI conventions' advice for
/// operation durations).
const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// An audit sink that exports decisions and outcomes as OpenTelemetry spans and metrics. See
/// the [module docs](self).
pub struct OtelSink<T = BoxedTracer> {
    tracer: T,
    duration: Histogram<f64>,
    decisions: Counter<u64>,
    max_len: usize,
}

impl<T> std::fmt::Debug for OtelSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtelSink")
            .field("max_value_len", &self.max_len)
            .finish_non_exhaustive()
    }
}

impl OtelSink<BoxedTracer> {
    /// A sink on the globally installed tracer and meter providers (instrumentation scope
    /// `tollgate`).
    pub fn global() -> Self {
        Self::new(
            opentelemetry::global::tracer("tollgate"),
            &opentelemetry::global::meter("tollgate"),
        )
    }
}

impl<T> OtelSink<T>
where
    T: Tracer + Send + Sync,
    T::Span: Send + Sync + 'static,
{
    /// A sink recording spans with `tracer` and metrics with `meter`.
    pub fn new(tracer: T, meter: &Meter) -> Self {
        let duration = meter
            .f64_histogram(attr::DURATION_METRIC)
            .with_unit("s")
            .with_description("Duration of tool executions permitted by the guard.")
            .with_boundaries(DURATION_BUCKETS.to_vec())
            .build();
        let decisions = meter
            .u64_counter(attr::DECISIONS_METRIC)
            .with_unit("{decision}")
            .with_description("Decisions of the guard on proposed tool calls, per verdict.")
            .build();
        Self {
            tracer,
            duration,
            decisions,
            max_len: DEFAULT_MAX_VALUE_LEN,
        }
    }

    /// Cuts every exported string at `n` bytes (on a character boundary; default
    /// [`DEFAULT_MAX_VALUE_LEN`]).
    pub fn with_max_value_len(mut self, n: usize) -> Self {
        self.max_len = n;
        self
    }

    fn cut(&self, s: &str) -> Value {
        Value::String(cut(s, self.max_len).into_owned().into())
    }

    /// The attributes every span of a call carries.
    fn call_attrs(
        &self,
        event: &AuditEvent<'_>,
        tool: &str,
        call_id: Option<&str>,
        verdict: &'static str,
        policy: Option<PolicyVersion>,
    ) -> Vec<KeyValue> {
        let mut a = vec![
            KeyValue::new(attr::OPERATION_NAME, attr::EXECUTE_TOOL),
            KeyValue::new(attr::TOOL_NAME, self.cut(tool)),
            KeyValue::new(attr::TOOL_TYPE, "function"),
            KeyValue::new(attr::GUARDRAIL_NAME, "tollgate"),
            KeyValue::new(attr::GUARDRAIL_VERDICT, verdict),
        ];
        if let Some(id) = call_id {
            a.push(KeyValue::new(attr::TOOL_CALL_ID, self.cut(id)));
        }
        if let Some(agent) = event.agent {
            a.push(KeyValue::new(attr::AGENT_ID, self.cut(agent.as_str())));
        }
        if let Some(run) = event.run {
            a.push(KeyValue::new(attr::RUN_ID, self.cut(run.as_str())));
        }
        if let Some(v) = policy {
            a.push(KeyValue::new(attr::GUARDRAIL_POLICY_ID, v.to_string()));
        }
        if event.mode != Mode::Enforce {
            a.push(KeyValue::new(attr::MODE, event.mode.as_str()));
        }
        a
    }

    fn span_name(&self, tool: &str) -> String {
        format!("{} {}", attr::EXECUTE_TOOL, cut(tool, self.max_len))
    }

    /// A denied or escalated call: an instantaneous span and a count.
    fn decision(
        &self,
        event: &AuditEvent<'_>,
        call: &crate::call::ToolCall<'_>,
        d: &Decision<'_>,
        policy: Option<PolicyVersion>,
    ) {
        let tool = call.tool();
        let verdict = d.as_str();
        let unknown = matches!(d, Decision::Deny(den) if den.code() == DenyCode::UnknownTool);
        let metric_tool = if unknown { attr::OTHER } else { tool };
        let mut counted = vec![
            KeyValue::new(attr::TOOL_NAME, self.cut(metric_tool)),
            KeyValue::new(attr::GUARDRAIL_VERDICT, verdict),
        ];
        if let Decision::Deny(den) = d {
            counted.push(KeyValue::new(attr::DENY_CODE, den.code().as_str()));
        }
        self.decisions.add(1, &counted);
        // An allowed call's span is recorded with its outcome, which knows how long it ran.
        if matches!(d, Decision::Allow) {
            return;
        }
        let mut attrs = self.call_attrs(event, tool, call.call_id(), verdict, policy);
        let status = match d {
            Decision::Deny(den) => {
                attrs.push(KeyValue::new(attr::DENY_CODE, den.code().as_str()));
                attrs.push(KeyValue::new(
                    attr::GUARDRAIL_RULE_ID,
                    self.cut(den.rule().as_str()),
                ));
                attrs.push(KeyValue::new(attr::ERROR_TYPE, den.code().as_str()));
                Status::error(den.code().as_str())
            }
            Decision::Escalate(r) => {
                if let Some(first) = r.reasons.first() {
                    attrs.push(KeyValue::new(
                        attr::GUARDRAIL_RULE_ID,
                        self.cut(first.rule.as_str()),
                    ));
                }
                attrs.push(KeyValue::new(attr::APPROVAL_ID, self.cut(r.id.as_str())));
                Status::Unset
            }
            Decision::Allow => Status::Unset,
        };
        let mut span = self
            .tracer
            .span_builder(self.span_name(tool))
            .with_kind(SpanKind::Internal)
            .with_start_time(event.at)
            .with_attributes(attrs)
            .start(&self.tracer);
        span.set_status(status);
        span.end_with_timestamp(event.at);
    }

    /// A permitted call ended: its span, spanning the execution, and its duration.
    fn outcome(
        &self,
        event: &AuditEvent<'_>,
        tool: &str,
        call_id: Option<&str>,
        outcome: &crate::verdict::Outcome,
        latency: Duration,
        policy: PolicyVersion,
    ) {
        let error = match &outcome.status {
            OutcomeStatus::Success => None,
            OutcomeStatus::Error { .. } => Some("tool_error"),
            OutcomeStatus::Abandoned => Some("abandoned"),
        };
        let mut measured = vec![
            KeyValue::new(attr::OPERATION_NAME, attr::EXECUTE_TOOL),
            KeyValue::new(attr::TOOL_NAME, self.cut(tool)),
        ];
        if let Some(e) = error {
            measured.push(KeyValue::new(attr::ERROR_TYPE, e));
        }
        self.duration.record(latency.as_secs_f64(), &measured);

        let mut attrs = self.call_attrs(event, tool, call_id, "allow", Some(policy));
        if let Some(n) = outcome.input_tokens {
            attrs.push(KeyValue::new(attr::USAGE_INPUT_TOKENS, saturating_i64(n)));
        }
        if let Some(n) = outcome.output_tokens {
            attrs.push(KeyValue::new(attr::USAGE_OUTPUT_TOKENS, saturating_i64(n)));
        }
        if let Some(e) = error {
            attrs.push(KeyValue::new(attr::ERROR_TYPE, e));
        }
        let start = event
            .at
            .checked_sub(latency)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut span = self
            .tracer
            .span_builder(self.span_name(tool))
            .with_kind(SpanKind::Internal)
            .with_start_time(start)
            .with_attributes(attrs)
            .start(&self.tracer);
        // The error message is not exported: it may carry what the audit trail redacts.
        span.set_status(match error {
            Some(e) => Status::error(e),
            None => Status::Unset,
        });
        span.end_with_timestamp(event.at);
    }
}

impl<T> AuditSink for OtelSink<T>
where
    T: Tracer + Send + Sync,
    T::Span: Send + Sync + 'static,
{
    fn record(&self, event: &AuditEvent<'_>) -> Result<(), AuditError> {
        match &event.kind {
            EventKind::Decision {
                call,
                decision,
                policy_version,
            } => self.decision(event, call, decision, *policy_version),
            EventKind::Outcome {
                tool,
                call_id,
                outcome,
                latency,
                policy_version,
            } => self.outcome(event, tool, *call_id, outcome, *latency, *policy_version),
            _ => {}
        }
        // Telemetry never denies a call.
        Ok(())
    }

    fn flush(&self) -> Result<(), AuditError> {
        // Exporting is the providers' job (their own flush and shutdown); nothing is buffered
        // here.
        Ok(())
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `s` cut at `max` bytes, on a character boundary.
fn cut(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Borrowed(&s[..end])
}
