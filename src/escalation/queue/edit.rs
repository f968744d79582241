//! Approve with an edit: the approver changes the proposed arguments (a smaller amount, the
//! right recipient) and approves the changed call. The grant then binds the edited arguments,
//! and only the edited call can consume it, through the whole pipeline again.

use serde_json::Value;

use super::{ApprovalQueue, DecideOutcome, MAX_REASON_BYTES, invalid};
use crate::call::canonical::MAX_DEPTH;
use crate::escalation::error::QueueError;
use crate::escalation::notify::{NotificationKind, Transition, TransitionKind};
use crate::escalation::request::{ApprovalId, Approver, Decision, RequestState, Resolution};
use crate::escalation::store::{StoreRecord, depth_exceeds};

/// At most this many changed paths are listed in an edit's record (the rest are summarised).
const MAX_CHANGED_PATHS: usize = 64;

impl ApprovalQueue {
    /// Approves request `id` with **edited arguments**: `args` replace the proposal, and the
    /// grant authorises exactly them. Recorded as its own transition
    /// ([`TransitionKind::Edited`], audit event `escalation_edited`, with the changed argument
    /// paths) and store record ([`StoreRecord::Edited`]).
    ///
    /// The editor must be allowed to decide the request as for
    /// [`decide`](Self::decide) (pending, eligible, not its trigger or agent). The edited call is
    /// a new proposal: approvals cast before the edit approved other arguments and no longer
    /// count; the editor's approval is the first of the new quorum (a quorum of one approves at
    /// once). The request's `args` (see [`status`](Self::status)) are the edited ones from now
    /// on, and its [`ticket`](crate::escalation::ApprovalRequest::ticket) carries their hash: the
    /// framework resumes the *edited* call with it
    /// ([`Guard::resume`](crate::Guard::resume)), which runs the whole pipeline again, so an
    /// edit cannot take a call outside the boundary, budgets or limits.
    ///
    /// Refused ([`QueueError::InvalidSubmission`]) when `args` is not a JSON object, is nested
    /// too deeply, changes nothing (approve instead), or when the proposal was shown to
    /// approvers with secret values redacted (an edit would silently drop them: deny, and let
    /// the agent propose again).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use serde_json::json;
    /// use tollgate::boundary::Effect;
    /// use tollgate::clock::ManualClock;
    /// use tollgate::escalation::{
    ///     ApprovalQueue, Approver, Condition, EscalationGate, EscalationPolicy, GateInput,
    ///     LevelSpec, MemoryApprovalStore, QueueConfig, RequestState, RuleParams, RuleSpec,
    ///     Submission,
    /// };
    ///
    /// let policy = EscalationPolicy::new()
    ///     .group("finance", ["alice"])
    ///     .defaults(RuleParams::new().chain([LevelSpec::new("finance")]))
    ///     .rule(RuleSpec::new("refund-review", Condition::amount_over("amount", 100)).tools(["refund"]));
    /// let gate = EscalationGate::compile(policy, &[])?;
    /// let mut config = QueueConfig::default();
    /// config.groups = gate.groups().clone();
    /// let queue = ApprovalQueue::open(
    ///     Arc::new(MemoryApprovalStore::new()),
    ///     Arc::new(ManualClock::new()),
    ///     config,
    /// )?;
    /// let args = json!({"invoice": "INV-7", "amount": 900});
    /// let esc = gate
    ///     .check(&GateInput::new("refund", Effect::Irreversible, &args))
    ///     .expect("a refund over 100 is reviewed");
    /// let request = queue.submit(Submission::new("run-1", "billing-bot", "refund", args, esc, gate.version()))?;
    ///
    /// let alice = Approver::new("alice");
    /// let edited = json!({"invoice": "INV-7", "amount": 90});
    /// let out = queue.edit(&request.id, &alice, edited, "the invoice says 90")?;
    /// assert!(matches!(out.state, RequestState::Approved { .. }));
    /// let now = queue.status(&request.id)?;
    /// assert_eq!(now.request.args["amount"], 90);
    /// assert_ne!(now.request.ticket().args_hash, request.args_hash); // the grant binds the edit
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn edit(
        &self,
        id: &ApprovalId,
        approver: &Approver,
        args: Value,
        reason: &str,
    ) -> Result<DecideOutcome, QueueError> {
        let now = self.now();
        let at_ms = now.wall_ms();
        if !args.is_object() {
            return Err(invalid("args", "edited arguments must be a JSON object"));
        }
        if depth_exceeds(&args, MAX_DEPTH) {
            return Err(invalid(
                "args",
                format!("nested deeper than {MAX_DEPTH} levels; no record could hold them"),
            ));
        }
        if reason.len() > MAX_REASON_BYTES {
            return Err(invalid(
                "reason",
                format!("at most {MAX_REASON_BYTES} bytes"),
            ));
        }
        let args_hash = self
            .args_hash(&args)
            .map_err(|e| invalid("args", e.to_string()))?;
        self.with_inner(|inner, fx| {
            self.settle(inner, fx, id, &now)?;
            let e = inner
                .entries
                .get(id)
                .ok_or_else(|| QueueError::NotFound { id: id.clone() })?;
            self.check_decider(inner, e, id, approver)?;
            let req = &e.request;
            // What approvers were shown is what the grant bound, unless secret values were
            // masked for them: then an edit of the shown arguments would drop the hidden ones.
            let shown = self
                .args_hash(&req.args)
                .map_err(|e| invalid("args", e.to_string()))?;
            if shown != req.args_hash {
                return Err(invalid(
                    "args",
                    "the proposal was shown with secret values redacted, so it cannot be edited \
                     (the edit would drop them): deny it and let the agent propose again",
                ));
            }
            if args_hash == req.args_hash {
                return Err(invalid(
                    "args",
                    "the edit changes nothing: approve the request instead",
                ));
            }
            let changed = changed_paths(&req.args, &args);
            let approvals = 1;
            let resolution = (approvals >= req.quorum).then(|| Resolution::Approved {
                by: vec![approver.id.clone()],
                by_timeout: false,
            });
            let t = Transition {
                at_ms,
                request: req,
                kind: TransitionKind::Edited {
                    approver,
                    reason,
                    args: &args,
                    changed: &changed,
                    wait: now.mono.duration_since(e.created),
                    approvals,
                    resolution: resolution.clone(),
                },
            };
            let quorum = req.quorum;
            let rec = StoreRecord::Edited {
                id: id.clone(),
                approver: approver.clone(),
                args: args.clone(),
                args_hash,
                reason: reason.to_owned(),
                at_ms,
            };
            self.observe(&t)?;
            self.persist(inner, fx, &now, rec)?;
            let kind = match resolution {
                Some(r) => NotificationKind::Resolved(r),
                None => NotificationKind::Decided {
                    approver: approver.clone(),
                    decision: Decision::Approve,
                    approvals,
                },
            };
            Self::note(inner, fx, id, at_ms, kind);
            let state = inner
                .entries
                .get(id)
                .map(|e| e.state.clone())
                .unwrap_or(RequestState::Pending);
            Ok(DecideOutcome {
                state,
                approvals,
                quorum,
            })
        })
    }
}

/// The JSON pointers (RFC 6901) at which `after` differs from `before`: keys added, removed or
/// changed, descending into objects both sides have; arrays of different lengths or any scalar
/// change are reported at their own path. At most [`MAX_CHANGED_PATHS`], then `"…"`.
pub(crate) fn changed_paths(before: &Value, after: &Value) -> Vec<String> {
    fn escape(key: &str) -> String {
        key.replace('~', "~0").replace('/', "~1")
    }
    fn walk(path: &mut String, a: &Value, b: &Value, out: &mut Vec<String>) {
        if out.len() > MAX_CHANGED_PATHS {
            return;
        }
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let len = path.len();
                    path.push('/');
                    path.push_str(&escape(k));
                    match (x.get(k), y.get(k)) {
                        (Some(p), Some(q)) => walk(path, p, q, out),
                        _ => out.push(path.clone()),
                    }
                    path.truncate(len);
                }
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                for (i, (p, q)) in x.iter().zip(y).enumerate() {
                    let len = path.len();
                    path.push('/');
                    path.push_str(&i.to_string());
                    walk(path, p, q, out);
                    path.truncate(len);
                }
            }
            _ if a == b => {}
            _ => out.push(if path.is_empty() {
                "/".to_owned()
            } else {
                path.clone()
            }),
        }
    }
    let mut out = Vec::new();
    walk(&mut String::new(), before, after, &mut out);
    if out.len() > MAX_CHANGED_PATHS {
        out.truncate(MAX_CHANGED_PATHS);
        out.push("…".to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::changed_paths;
    use serde_json::json;

    #[test]
    fn changed_paths_name_every_difference_and_nothing_else() {
        let a =
            json!({"amount": 900, "to": {"iban": "X", "name": "A"}, "tags": [1, 2], "memo": "m"});
        let b =
            json!({"amount": 90, "to": {"iban": "Y", "name": "A"}, "tags": [1, 2, 3], "note": "n"});
        assert_eq!(
            changed_paths(&a, &b),
            ["/amount", "/memo", "/note", "/tags", "/to/iban"]
        );
        assert!(changed_paths(&a, &a).is_empty());
        assert_eq!(
            changed_paths(&json!({"a/b": 1}), &json!({"a/b": 2})),
            ["/a~1b"]
        );
    }

    #[test]
    fn changed_paths_are_capped() {
        let a =
            serde_json::Value::Object((0..200).map(|i| (format!("k{i:03}"), json!(i))).collect());
        let b = serde_json::Value::Object(
            (0..200)
                .map(|i| (format!("k{i:03}"), json!(-i - 1)))
                .collect(),
        );
        let p = changed_paths(&a, &b);
        assert_eq!(p.len(), 65);
        assert_eq!(p.last().unwrap(), "…");
    }
}
