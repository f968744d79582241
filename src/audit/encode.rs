//! The JSON encoding of audit events: [`AuditEvent::write_json`] (what every shipped sink writes)
//! and [`AuditEvent::to_json`], with their private helpers.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

use super::json::{self, k, kv};
use super::values::Omitted;
use super::{
    AuditEvent, AuditMarks, CredentialEvent, Decision, EventKind, Redaction,
    UNPARSEABLE_PLACEHOLDER, file,
};
use crate::call::json::{JsonError, JsonLimits, RawJson};
use crate::call::{AgentId, Args, CredentialId, RunId};
use crate::escalation::TransitionKind;
use crate::verdict::{ApprovalRequest, OutcomeStatus};

impl AuditEvent<'_> {
    /// Appends the event as one compact JSON object (no line break) to `out`, redacting marked
    /// arguments as `redaction` says. This is what sinks write; it serialises straight from the
    /// borrowed data, so a sink that reuses `out` allocates nothing for most events.
    ///
    /// Field names follow the OpenTelemetry GenAI conventions where one exists
    /// (`gen_ai.tool.name`, `gen_ai.tool.call.id`, `gen_ai.agent.id`, `gen_ai.usage.*`); the rest
    /// are `tollgate.*`. Every event has `seq`, `time_unix_nano`, `tollgate.run.id`,
    /// `gen_ai.agent.id` (`null` when the event belongs to no run or agent) and `event` (its
    /// kind), and `tollgate.retention` when its tool's tier has a retention class. Other fields
    /// with no value (a call without an id, an outcome without token counts or cost, a decision
    /// without confidence or reasoning) are left out rather than written as `null`, as
    /// OpenTelemetry leaves unset attributes out: a reader treats a missing field as absent.
    ///
    /// ```
    /// use tollgate::audit::{AuditEvent, Decision, EventKind, Redaction};
    /// use tollgate::{AgentId, RunId, ToolCall};
    ///
    /// let call = ToolCall::without_args("lookup");
    /// let (run, agent) = (RunId::new("run-1"), AgentId::new("agent-7"));
    /// let event = AuditEvent::new(
    ///     1,
    ///     std::time::UNIX_EPOCH,
    ///     Some(&run),
    ///     Some(&agent),
    ///     EventKind::Decision { call: &call, decision: Decision::Allow, policy_version: None },
    /// );
    /// let mut out = Vec::new();
    /// event.write_json(&mut out, &Redaction::default());
    /// let json: serde_json::Value = serde_json::from_slice(&out)?;
    /// assert_eq!(json["tollgate.run.id"], "run-1");
    /// assert_eq!(json["tollgate.decision"], "allow");
    /// // No call id, confidence or reasoning was given: those fields are not written.
    /// assert!(json.get("gen_ai.tool.call.id").is_none());
    /// assert!(json.get("tollgate.confidence").is_none());
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn write_json(&self, out: &mut Vec<u8>, redaction: &Redaction) {
        let mut o = json::Obj::begin(out, redaction);
        o.u64(k!("seq"), self.seq);
        let at = self.at.duration_since(UNIX_EPOCH).unwrap_or_default();
        o.u64(
            k!("time_unix_nano"),
            u64::try_from(at.as_nanos()).unwrap_or(u64::MAX),
        );
        o.str_or_null(k!("tollgate.run.id"), self.run.map(RunId::as_str));
        o.str_or_null(k!("gen_ai.agent.id"), self.agent.map(AgentId::as_str));
        if let Some(class) = self.marks.and_then(AuditMarks::retention) {
            o.str(k!("tollgate.retention"), class);
        }
        match &self.kind {
            EventKind::RunStarted { context } => {
                o.lit(kv!("event", "run_started"));
                o.str(k!("tollgate.role"), context.role().as_str());
                o.opt_str(
                    k!("tollgate.task_type"),
                    context.task_type().map(|t| t.as_str()),
                );
                o.opt_str(
                    k!("tollgate.trigger"),
                    context.trigger().map(|t| t.as_str()),
                );
                o.opt_str(
                    k!("tollgate.compartment"),
                    context.compartment().map(|c| c.as_str()),
                );
                o.bool(k!("tollgate.read_only"), context.is_read_only());
            }
            EventKind::Decision {
                call,
                decision,
                policy_version,
            } => {
                o.lit(kv!("event", "decision"));
                o.str(k!("gen_ai.tool.name"), call.tool());
                o.opt_str(k!("gen_ai.tool.call.id"), call.call_id());
                write_args(
                    &mut o,
                    call.args(),
                    self.marks,
                    redaction,
                    self.args_checked,
                );
                o.word(k!("tollgate.decision"), decision.as_str());
                match decision {
                    Decision::Deny(d) => {
                        o.word(k!("tollgate.deny.code"), d.code().as_str());
                        o.str(k!("tollgate.rule"), d.rule().as_str());
                        o.str(k!("tollgate.reason"), d.reason());
                    }
                    Decision::Escalate(r) => {
                        if let Some(first) = r.reasons.first() {
                            o.str(k!("tollgate.rule"), first.rule.as_str());
                        }
                        write_approval(&mut o, r);
                        o.ser(k!("tollgate.approval.reasons"), &r.reasons);
                        o.u64(k!("tollgate.approval.deadline_ms"), r.deadline_ms);
                        o.u64(k!("tollgate.approval.quorum"), u64::from(r.quorum));
                        o.opt_str(k!("tollgate.approval.group"), r.current_group());
                    }
                    Decision::Allow => {}
                }
                if let Some(v) = policy_version {
                    o.digest(k!("tollgate.policy.version"), v.as_bytes());
                }
                if let Some(c) = call.confidence() {
                    o.ser(k!("tollgate.confidence"), &c);
                }
                o.opt_str(k!("tollgate.reasoning"), call.reasoning());
                if !call.flags().is_empty() {
                    o.ser(k!("tollgate.flags"), call.flags());
                }
                if let Decision::Deny(d) = decision
                    && let Some(r) = d.recommendation()
                {
                    o.str(k!("tollgate.recommendation.id"), &r.id);
                }
                if self.mode != crate::mode::Mode::Enforce {
                    o.word(k!("tollgate.mode"), self.mode.as_str());
                }
                if let Some(stage) = self.rollout_stage {
                    o.word(k!("tollgate.rollout.stage"), stage.as_str());
                }
                if let Some(w) = self.would_be {
                    o.str(k!("tollgate.shadow.decision"), w.as_str());
                    if let Some(code) = w.deny_code() {
                        o.str(k!("tollgate.shadow.deny.code"), code.as_str());
                    }
                    if let Some(rule) = w.rule() {
                        o.str(k!("tollgate.shadow.rule"), rule.as_str());
                    }
                    if let Some(reason) = w.reason() {
                        o.str(k!("tollgate.shadow.reason"), &reason);
                    }
                }
            }
            EventKind::Outcome {
                tool,
                call_id,
                outcome,
                latency,
                policy_version,
            } => {
                o.lit(kv!("event", "outcome"));
                o.str(k!("gen_ai.tool.name"), tool);
                o.opt_str(k!("gen_ai.tool.call.id"), *call_id);
                match &outcome.status {
                    // Written by hand (as serde would) so the message alone is bounded.
                    OutcomeStatus::Error { message } => {
                        let how = o.redaction();
                        let out = o.key(k!("tollgate.outcome"));
                        out.extend_from_slice(b"{\"status\":\"error\",\"message\":");
                        json::bounded_string(out, message, how);
                        out.push(b'}');
                    }
                    // The common statuses as literals (what serde writes for them).
                    OutcomeStatus::Success => {
                        o.lit(concat!(k!("tollgate.outcome"), r#"{"status":"success"}"#));
                    }
                    OutcomeStatus::Abandoned => {
                        o.lit(concat!(k!("tollgate.outcome"), r#"{"status":"abandoned"}"#));
                    }
                }
                o.opt_u64(k!("gen_ai.usage.input_tokens"), outcome.input_tokens);
                o.opt_u64(k!("gen_ai.usage.output_tokens"), outcome.output_tokens);
                o.opt_u64(k!("tollgate.cost_micros"), outcome.cost_micros);
                if let Some(out) = &outcome.output {
                    o.str(k!("tollgate.output"), out);
                }
                o.u64(k!("tollgate.latency_ns"), nanos(*latency));
                o.digest(k!("tollgate.policy.version"), policy_version.as_bytes());
            }
            EventKind::Escalation {
                request,
                transition,
            } => write_escalation(&mut o, request, transition),
            EventKind::Reasoning { text } => {
                o.lit(kv!("event", "reasoning"));
                o.str(k!("tollgate.reasoning"), text);
            }
            EventKind::RunFinished { duration } => {
                o.lit(kv!("event", "run_finished"));
                o.u64(k!("tollgate.duration_ns"), nanos(*duration));
            }
            EventKind::PolicyReloaded {
                previous,
                current,
                by,
                breakers_reset,
            } => {
                o.lit(kv!("event", "policy_reloaded"));
                o.hex(k!("tollgate.policy.previous"), previous.as_bytes());
                o.hex(k!("tollgate.policy.version"), current.as_bytes());
                o.str(k!("tollgate.reloaded_by"), by);
                o.bool(k!("tollgate.breakers_reset"), *breakers_reset);
            }
            EventKind::Credential(c) => credential_json(c, &mut o),
            EventKind::RolloutDemoted {
                task_type,
                from,
                to,
                trigger,
                rule,
                detail,
            } => {
                o.lit(kv!("event", "rollout_demoted"));
                o.str(k!("tollgate.task_type"), task_type);
                o.str(k!("tollgate.rollout.from"), from.as_str());
                o.str(k!("tollgate.rollout.to"), to.as_str());
                o.str(k!("tollgate.rollout.trigger"), trigger);
                o.str(k!("tollgate.rule"), rule);
                o.str(k!("tollgate.rollout.detail"), detail);
            }
            EventKind::RolloutLifted {
                task_type,
                from,
                to,
                by,
            } => {
                o.lit(kv!("event", "rollout_lifted"));
                o.str(k!("tollgate.task_type"), task_type);
                o.str(k!("tollgate.rollout.from"), from.as_str());
                o.str(k!("tollgate.rollout.to"), to.as_str());
                o.str(k!("tollgate.rollout.lifted_by"), by);
            }
            EventKind::BreakerTransition {
                agent,
                tool,
                transition,
            } => {
                o.lit(kv!("event", "breaker_transition"));
                o.str(k!("tollgate.breaker.agent"), agent);
                o.str(k!("gen_ai.tool.name"), tool);
                o.ser(k!("tollgate.breaker.from"), &transition.from);
                o.ser(k!("tollgate.breaker.to"), &transition.to);
                o.f64(k!("tollgate.breaker.failure_rate"), transition.failure_rate);
                o.f64(
                    k!("tollgate.breaker.slow_call_rate"),
                    transition.slow_call_rate,
                );
                o.u64(k!("tollgate.breaker.calls"), u64::from(transition.calls));
            }
            EventKind::Flow {
                tool,
                call_id,
                report,
            } => {
                o.lit(kv!("event", "flow_check"));
                o.str(k!("gen_ai.tool.name"), tool);
                o.opt_str(k!("gen_ai.tool.call.id"), *call_id);
                o.ser(k!("tollgate.flow"), report);
            }
            EventKind::FlowEndorsed {
                id,
                by,
                reason,
                scope,
            } => {
                o.lit(kv!("event", "flow_endorsed"));
                o.u64(k!("tollgate.flow.endorsement"), u64::from(*id));
                o.str(k!("tollgate.flow.endorsed_by"), by);
                o.str(k!("tollgate.flow.reason"), reason);
                o.str(k!("tollgate.flow.scope"), scope);
            }
            EventKind::FlowUnindexed {
                tool,
                call_id,
                bytes,
            } => {
                o.lit(kv!("event", "flow_unindexed"));
                o.opt_str(k!("gen_ai.tool.name"), *tool);
                o.opt_str(k!("gen_ai.tool.call.id"), *call_id);
                o.u64(k!("tollgate.flow.bytes"), *bytes);
            }
            EventKind::HumanAction {
                recommendation,
                tool,
                args,
                note,
            } => {
                o.lit(kv!("event", "human_action"));
                o.str(k!("tollgate.recommendation.id"), recommendation);
                o.opt_str(k!("gen_ai.tool.name"), *tool);
                if let Some(v) = args {
                    write_args(&mut o, Args::Value(v), self.marks, redaction, false);
                }
                o.opt_str(k!("tollgate.human.note"), *note);
            }
            EventKind::KillSwitch {
                action,
                scope,
                target,
                by,
            } => {
                o.lit(kv!("event", "kill_switch"));
                o.str(k!("tollgate.kill.action"), action);
                o.str(k!("tollgate.kill.scope"), scope);
                o.opt_str(k!("tollgate.kill.target"), *target);
                o.str(k!("tollgate.kill.by"), by);
            }
            EventKind::ProtocolFault {
                source,
                fault,
                detail,
            } => {
                o.lit(kv!("event", "protocol_fault"));
                o.str(k!("tollgate.protocol.source"), source);
                o.str(k!("tollgate.protocol.fault"), fault);
                o.str(k!("tollgate.protocol.detail"), detail);
            }
        }
        o.end();
    }

    /// The event as a JSON value, with sensitive arguments as placeholders (see
    /// [`write_json`](Self::write_json) for the fields).
    pub fn to_json(&self) -> Value {
        let mut buf = Vec::with_capacity(256);
        self.write_json(&mut buf, &Redaction::placeholder());
        // The writer only produces valid JSON; should that ever fail, say so in the value rather
        // than lose the event.
        serde_json::from_slice(&buf).unwrap_or_else(|e| {
            serde_json::json!({ "seq": self.seq, "tollgate.serialisation_error": e.to_string() })
        })
    }
}

/// The request an event is about: its id only. Its `args_hash` is left out on purpose: it covers
/// every argument, secret ones included, and the audit trail is read (and kept) far more widely
/// than the approval store. It is keyed, so nobody without the store's key can test a guess
/// against it; but it adds nothing the id does not identify, and a record that never holds it
/// cannot leak it should that key ever be exposed.
fn write_approval(o: &mut json::Obj<'_>, r: &ApprovalRequest) {
    o.str(k!("tollgate.approval.id"), r.id.as_str());
}

fn write_escalation(o: &mut json::Obj<'_>, r: &ApprovalRequest, t: &TransitionKind<'_>) {
    let kind = match t {
        TransitionKind::Requested { .. } => "escalation_requested",
        TransitionKind::Escalated { .. } => "escalation_routed",
        TransitionKind::Decided { .. } => "escalation_decided",
        TransitionKind::Edited { .. } => "escalation_edited",
        TransitionKind::TimedOut { .. } => "escalation_expired",
        TransitionKind::Consumed { .. } => "escalation_resumed",
    };
    o.str(k!("event"), kind);
    o.str(k!("gen_ai.tool.name"), &r.tool);
    write_approval(o, r);
    match t {
        TransitionKind::Requested { group } => {
            o.str(k!("tollgate.approval.group"), group);
            o.ser(k!("tollgate.approval.reasons"), &r.reasons);
            o.u64(k!("tollgate.approval.deadline_ms"), r.deadline_ms);
            o.u64(k!("tollgate.approval.quorum"), u64::from(r.quorum));
        }
        TransitionKind::Escalated { from, to, group } => {
            o.u64(k!("tollgate.approval.from_level"), *from as u64);
            o.u64(k!("tollgate.approval.level"), *to as u64);
            o.str(k!("tollgate.approval.group"), group);
        }
        TransitionKind::Decided {
            approver,
            decision,
            reason,
            wait,
            approvals,
            resolution,
        } => {
            o.str(k!("tollgate.approval.approver"), approver.id.as_str());
            o.opt_str(k!("tollgate.approval.channel"), approver.channel.as_deref());
            o.ser(k!("tollgate.approval.decision"), decision);
            o.str(k!("tollgate.reason"), reason);
            o.u64(k!("tollgate.approval.wait_ms"), millis(*wait));
            o.u64(k!("tollgate.approval.approvals"), u64::from(*approvals));
            match resolution {
                Some(res) => o.ser(k!("tollgate.approval.resolution"), res),
                None => o.null(k!("tollgate.approval.resolution")),
            }
        }
        TransitionKind::Edited {
            approver,
            reason,
            args: _,
            changed,
            wait,
            approvals,
            resolution,
        } => {
            // The edited values are not written here: the resumed call's own record carries
            // them, redacted as the tool's arguments always are.
            o.str(k!("tollgate.approval.approver"), approver.id.as_str());
            o.opt_str(k!("tollgate.approval.channel"), approver.channel.as_deref());
            o.lit(kv!("tollgate.approval.decision", "edit"));
            o.ser(k!("tollgate.approval.changed"), changed);
            o.str(k!("tollgate.reason"), reason);
            o.u64(k!("tollgate.approval.wait_ms"), millis(*wait));
            o.u64(k!("tollgate.approval.approvals"), u64::from(*approvals));
            match resolution {
                Some(res) => o.ser(k!("tollgate.approval.resolution"), res),
                None => o.null(k!("tollgate.approval.resolution")),
            }
        }
        TransitionKind::TimedOut { resolution, wait } => {
            o.ser(k!("tollgate.approval.resolution"), resolution);
            o.u64(k!("tollgate.approval.wait_ms"), millis(*wait));
        }
        TransitionKind::Consumed { wait } => {
            o.u64(k!("tollgate.approval.wait_ms"), millis(*wait));
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Writes `gen_ai.tool.call.arguments`, redacted per `marks` and bounded (see
/// [`values`](super::values)): nothing nested deeper than `MAX_DEPTH_CAP` is written as JSON,
/// nothing larger than the value limit is written whole, and no hash or prefix is ever taken of
/// text that still holds a marked value.
///
/// `checked`: raw text the guard's boundary already validated strictly (see
/// [`AuditEvent::args_checked`]) is copied without a second scan; only its size is checked here.
fn write_args(
    o: &mut json::Obj<'_>,
    args: Args<'_>,
    marks: Option<&AuditMarks>,
    how: &Redaction,
    checked: bool,
) {
    const KEY: &str = k!("gen_ai.tool.call.arguments");
    let marks = marks.filter(|m| m.redacts());
    match (args, marks) {
        (Args::None, _) => o.key(KEY).extend_from_slice(b"{}"),
        (Args::Value(v), None) => o.value(KEY, v),
        (Args::Value(v), Some(m)) => {
            let mut v = v.clone();
            m.apply(&mut v, how);
            o.value(KEY, &v);
        }
        (Args::Json(text), None) => {
            if text.len() > how.value_limit() {
                return o.omitted(KEY, Omitted::TooLarge, text.as_bytes());
            }
            if checked && text.len() <= AUDIT_JSON_LIMITS.max_bytes {
                return json::minified(o.key(KEY), text);
            }
            match RawJson::parse(text, AUDIT_JSON_LIMITS) {
                // No longer than the text, so within the limit.
                Ok(_) => json::minified(o.key(KEY), text),
                Err(JsonError::TooDeep { .. }) => o.omitted(KEY, Omitted::TooDeep, text.as_bytes()),
                Err(_) => unparsed(o, text),
            }
        }
        (Args::Json(text), Some(m)) => {
            if text.len() > file::MAX_EVENT_BYTES {
                // Not even parsed: too large to redact, so neither hashed nor quoted.
                let out = o.key(KEY);
                return Redaction::write_omitted_unredactable(out, Omitted::TooLarge, text.len());
            }
            // Strictly valid text, or text only too deep for the strict scanner (serde_json
            // reads up to 128 levels): parsed, redacted, then bounded like any value.
            let readable = match RawJson::parse(text, AUDIT_JSON_LIMITS) {
                Ok(_) | Err(JsonError::TooDeep { .. }) => serde_json::from_str::<Value>(text).ok(),
                Err(_) => None,
            };
            match readable {
                Some(mut v) => {
                    m.apply(&mut v, how);
                    o.value(KEY, &v);
                }
                None => unparsed(o, UNPARSEABLE_PLACEHOLDER),
            }
        }
    }

    fn unparsed(o: &mut json::Obj<'_>, text: &str) {
        let how = o.redaction();
        let out = o.key(KEY);
        out.extend_from_slice(b"{\"unparsed\":");
        json::bounded_string(out, text, how);
        out.push(b'}');
    }
}

/// Raw argument text is embedded verbatim only if it is one strict JSON value within these
/// limits (the value limit bounds its size before it is scanned).
const AUDIT_JSON_LIMITS: JsonLimits = JsonLimits {
    max_bytes: file::MAX_EVENT_BYTES,
    max_depth: crate::call::json::MAX_DEPTH_CAP,
};

fn credential_json(c: &CredentialEvent<'_>, o: &mut json::Obj<'_>) {
    match c {
        CredentialEvent::Issued {
            id,
            provider,
            scope,
            expires_at_unix,
        } => {
            o.lit(kv!("event", "credential_issued"));
            o.str(k!("tollgate.credential.id"), id.as_str());
            o.str(k!("tollgate.credential.provider"), provider);
            o.ser(k!("tollgate.credential.scope"), scope);
            o.u64(k!("tollgate.credential.expires_at"), *expires_at_unix);
        }
        CredentialEvent::Used { id, tool, resource } => {
            o.lit(kv!("event", "credential_used"));
            o.str(k!("tollgate.credential.id"), id.as_str());
            o.str(k!("gen_ai.tool.name"), tool);
            o.str(k!("tollgate.credential.resource"), resource);
        }
        CredentialEvent::Refused {
            id,
            tool,
            resource,
            reason,
        } => {
            o.lit(kv!("event", "credential_refused"));
            o.opt_str(k!("tollgate.credential.id"), id.map(CredentialId::as_str));
            o.str(k!("gen_ai.tool.name"), tool);
            o.str(k!("tollgate.credential.resource"), resource);
            o.str(k!("tollgate.credential.refusal"), reason.code());
            o.str(k!("tollgate.reason"), &reason.to_string());
        }
        CredentialEvent::Revoked { id, provider } => {
            o.lit(kv!("event", "credential_revoked"));
            o.str(k!("tollgate.credential.id"), id.as_str());
            o.str(k!("tollgate.credential.provider"), provider);
        }
        CredentialEvent::KeyRotated {
            provider,
            retired,
            current,
        } => {
            o.lit(kv!("event", "key_rotated"));
            o.str(k!("tollgate.credential.provider"), provider);
            o.str(k!("tollgate.key.retired"), retired);
            o.str(k!("tollgate.key.current"), current);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::{Outcome, PolicyVersion};

    /// The statuses written as literals read back exactly as serde writes them.
    #[test]
    fn outcome_statuses_are_written_as_serde_writes_them() {
        for status in [
            OutcomeStatus::Success,
            OutcomeStatus::Abandoned,
            OutcomeStatus::Error {
                message: "boom \"quoted\"\n".into(),
            },
        ] {
            let mut outcome = Outcome::success();
            outcome.status = status;
            let event = AuditEvent::new(
                7,
                UNIX_EPOCH,
                None,
                None,
                EventKind::Outcome {
                    tool: "pay_invoice",
                    call_id: None,
                    outcome: &outcome,
                    latency: Duration::from_nanos(5),
                    policy_version: PolicyVersion([7; 32]),
                },
            );
            let mut out = Vec::new();
            event.write_json(&mut out, &Redaction::placeholder());
            let v: Value = serde_json::from_slice(&out).expect("valid JSON");
            assert_eq!(
                v["tollgate.outcome"],
                serde_json::to_value(&outcome.status).unwrap()
            );
            assert_eq!(v["event"], "outcome");
            assert_eq!(v["tollgate.policy.version"], "07".repeat(32));
        }
    }
}
