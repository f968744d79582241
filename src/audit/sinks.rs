//! The in-process sinks: [`MemorySink`] (every event kept as JSON, for tests and inspection),
//! [`Fanout`] (one event, several sinks) and [`TracingSink`] (events as `tracing` spans and
//! events carrying OpenTelemetry GenAI attribute names).

use std::borrow::Cow;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;

use super::{AuditError, AuditEvent, AuditSink, Decision, EventKind, Redaction};
use crate::verdict::OutcomeStatus;

/// Keeps every event in memory as JSON (see [`AuditEvent::to_json`]). For tests and inspection;
/// it grows without bound.
#[derive(Debug, Default)]
pub struct MemorySink {
    events: Mutex<Vec<Value>>,
    redaction: Redaction,
}

impl MemorySink {
    /// An empty sink writing sensitive values as placeholders.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty sink writing sensitive values as `redaction` says.
    pub fn with_redaction(redaction: Redaction) -> Self {
        Self {
            events: Mutex::default(),
            redaction,
        }
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

    fn lock(&self) -> parking_lot::MutexGuard<'_, Vec<Value>> {
        // A panic while holding the lock cannot leave a half-written Vec<Value> behind (push is
        // the only mutation).
        self.events.lock()
    }
}

impl AuditSink for MemorySink {
    fn record(&self, event: &AuditEvent<'_>) -> Result<(), AuditError> {
        let mut buf = Vec::with_capacity(256);
        event.write_json(&mut buf, &self.redaction);
        let v = serde_json::from_slice(&buf).map_err(|e| AuditError::Refused {
            sink: "memory",
            reason: format!("the event could not be serialised: {e}"),
        })?;
        self.lock().push(v);
        Ok(())
    }

    fn flush(&self) -> Result<(), AuditError> {
        Ok(())
    }
}

/// Sends every event to several sinks, in order. Every sink is tried; if any refuses, the first
/// error is returned (so the guard denies), even though the other sinks have the event.
pub struct Fanout {
    sinks: Vec<Arc<dyn AuditSink>>,
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout")
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

impl Fanout {
    /// A fanout over `sinks`.
    pub fn new(sinks: Vec<Arc<dyn AuditSink>>) -> Self {
        Self { sinks }
    }
}

impl AuditSink for Fanout {
    fn record(&self, event: &AuditEvent<'_>) -> Result<(), AuditError> {
        let mut first = Ok(());
        for s in &self.sinks {
            let r = s.record(event);
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    fn flush(&self) -> Result<(), AuditError> {
        let mut first = Ok(());
        for s in &self.sinks {
            let r = s.flush();
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

/// Emits events through `tracing` (target `tollgate::audit`), so any subscriber, including a
/// `tracing-opentelemetry` layer, receives them.
///
/// - A permitted call's outcome becomes an `execute_tool` span (OTel GenAI operation name) with
///   `gen_ai.operation.name`, `gen_ai.tool.name`, `gen_ai.tool.call.id`, `gen_ai.agent.id`,
///   `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`, the status and the latency in
///   nanoseconds. (The span is recorded when the outcome is known, so its own duration is not the
///   tool's; `tollgate.latency_ns` is.)
/// - Decisions, run start/end, credential, breaker and kill-switch events become `tracing` events
///   (INFO; denials and kill-switch actions WARN) with fields `seq`, `gen_ai.agent.id`,
///   `tollgate.run.id`, and the event as [`AuditEvent::to_json`](super::AuditEvent::to_json)
///   renders it in `tollgate.event`.
///
/// Tool arguments are part of the decision's JSON, redacted as the policy marks them (secret values
/// never appear; sensitive ones as [`TracingSink::with_redaction`] says, by default a placeholder).
///
/// Every value is bounded as the file sink bounds it ([`Redaction::value_limit`]): the event JSON
/// is written by the same writer, and each string field of the `execute_tool` span (tool name,
/// call id, agent and run ids, and `tollgate.outcome`, the outcome status as the same JSON the
/// file sink writes, `{"status":"error","message":...}`) is written as it is or, if its JSON form
/// would exceed the limit, as the same `{"tollgate.omitted":"too_large",...}` placeholder.
#[derive(Debug, Default, Clone)]
pub struct TracingSink {
    redaction: Redaction,
}

impl TracingSink {
    /// A sink writing sensitive values as placeholders.
    pub fn new() -> Self {
        Self::default()
    }

    /// A sink writing sensitive values as `redaction` says.
    pub fn with_redaction(redaction: Redaction) -> Self {
        Self { redaction }
    }

    /// `v` as it is, or the placeholder of a value too large to write (what the file sink writes
    /// instead of it).
    fn bounded<'v>(&self, v: &'v str) -> Cow<'v, str> {
        // An escaped byte takes at most 6 (`\u00XX`): short strings need no look.
        if v.len().saturating_mul(6) <= self.redaction.value_limit() {
            return Cow::Borrowed(v);
        }
        let mut buf = Vec::new();
        super::json::bounded_string(&mut buf, v, &self.redaction);
        if buf.first() == Some(&b'"') {
            // Written as a JSON string: within the limit.
            Cow::Borrowed(v)
        } else {
            Cow::Owned(String::from_utf8_lossy(&buf).into_owned())
        }
    }

    /// The outcome status as the file sink writes `tollgate.outcome`, the message bounded.
    fn status(&self, status: &OutcomeStatus) -> String {
        let mut buf = Vec::with_capacity(64);
        match status {
            OutcomeStatus::Error { message } => {
                buf.extend_from_slice(b"{\"status\":\"error\",\"message\":");
                super::json::bounded_string(&mut buf, message, &self.redaction);
                buf.push(b'}');
            }
            other => {
                if serde_json::to_writer(&mut buf, other).is_err() {
                    buf.clear();
                    buf.extend_from_slice(b"null");
                }
            }
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    fn json(&self, event: &AuditEvent<'_>) -> String {
        let mut buf = Vec::with_capacity(256);
        event.write_json(&mut buf, &self.redaction);
        // The writer emits UTF-8 JSON; a lossy conversion could only ever replace nothing.
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl AuditSink for TracingSink {
    fn record(&self, event: &AuditEvent<'_>) -> Result<(), AuditError> {
        let agent = self.bounded(event.agent.map(|a| a.as_str()).unwrap_or(""));
        let run = self.bounded(event.run.map(|r| r.as_str()).unwrap_or(""));
        let (agent, run) = (&*agent, &*run);
        match &event.kind {
            EventKind::Outcome {
                tool,
                call_id,
                outcome,
                latency,
                policy_version,
            } => {
                let tool = self.bounded(tool);
                let call_id = self.bounded(call_id.unwrap_or(""));
                let status = self.status(&outcome.status);
                let span = tracing::info_span!(
                    target: "tollgate::audit",
                    "execute_tool",
                    gen_ai.operation.name = "execute_tool",
                    gen_ai.tool.name = %tool,
                    gen_ai.tool.call.id = &*call_id,
                    gen_ai.agent.id = agent,
                    gen_ai.usage.input_tokens = outcome.input_tokens,
                    gen_ai.usage.output_tokens = outcome.output_tokens,
                    tollgate.run.id = run,
                    tollgate.seq = event.seq,
                    tollgate.outcome = %status,
                    tollgate.latency_ns = latency.as_nanos() as u64,
                    tollgate.policy.version = %policy_version,
                );
                drop(span.enter());
            }
            EventKind::Decision {
                decision: Decision::Deny(_),
                ..
            }
            | EventKind::KillSwitch { .. } => {
                let json = self.json(event);
                tracing::warn!(
                    target: "tollgate::audit",
                    seq = event.seq,
                    gen_ai.agent.id = agent,
                    tollgate.run.id = run,
                    tollgate.event = %json,
                    "audit event"
                );
            }
            _ => {
                let json = self.json(event);
                tracing::info!(
                    target: "tollgate::audit",
                    seq = event.seq,
                    gen_ai.agent.id = agent,
                    tollgate.run.id = run,
                    tollgate.event = %json,
                    "audit event"
                );
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), AuditError> {
        Ok(())
    }
}
