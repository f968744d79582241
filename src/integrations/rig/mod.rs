//! rig agents (feature `rig`): [`GuardHook`], a rig [`AgentHook`] that checks every tool call a
//! rig agent is about to run through the guard, and feeds the tool's result back to the call's
//! permit and the run's flow rules.
//!
//! rig 0.44 replaced the `PromptHook` trait the issue names with `AgentHook` (in the
//! `rig-agent` crate, which now holds rig's agent runtime): a tool call is one *dispatch* of
//! the agent's effect bus, seen by [`AgentHook::on_dispatch`] before it reaches the tool, and
//! its result one *outcome*, seen by [`AgentHook::on_outcome`] before the model sees it. The
//! hook:
//!
//! - checks the call (tool name, the arguments' JSON text as the model sent them, its call id)
//!   with [`Guard::check`](crate::Guard::check);
//! - allowed: lets the call through and keeps its permit until the outcome;
//! - denied: skips it ([`DispatchAction::skip`]): the tool never runs and the model reads the
//!   denial's [agent-safe message](crate::Denial::agent_message) as the call's result; a
//!   kill-switch denial ([`DenyCode::Suspended`]) stops the whole
//!   run instead ([`DispatchAction::stop`]);
//! - escalated: skips it with a message naming the approval request (a human decides; resume
//!   the call later with its ticket);
//! - on the outcome: the tool's output goes through the run's flow rules
//!   ([`Permit::deliver`](crate::Permit::deliver)) and a quarantined output is replaced by the
//!   placeholder before the model sees it; the permit is completed (success, or error for a
//!   failed, refused or skipped tool).
//!
//! A hook registered *after* this one could still patch a call's arguments once checked; the
//! hook compares the arguments the tool ran with to those it checked, and on a difference
//! records the call as failed and stops the run (fail closed). Register it last.
//!
//! One hook serves one tollgate [`Run`]: attach it to the prompt of the task the run stands for
//! (`agent.prompt(..).add_hook(GuardHook::new(guard, run))`).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use rig_agent::agent::{
    AgentHook, DispatchAction, DispatchEvent, HookContext, OutcomeAction, OutcomeEvent,
};

use crate::call::ToolCall;
use crate::flow::Output;
use crate::guard::{Delivery, DetachedPermit, Guard, Run};
use crate::verdict::{DenyCode, Outcome, Verdict};

/// A permitted call between its dispatch and its outcome.
struct InFlight {
    permit: DetachedPermit,
    /// The arguments as checked: the tool must run with exactly these.
    args: String,
}

/// A rig [`AgentHook`] that puts every tool call of a rig agent through the guard. See the
/// [module docs](self).
pub struct GuardHook {
    guard: Guard,
    run: Arc<Run>,
    in_flight: Mutex<HashMap<u64, InFlight>>,
}

impl std::fmt::Debug for GuardHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardHook")
            .field("run", self.run.id())
            .field("in_flight", &self.in_flight.lock().len())
            .finish_non_exhaustive()
    }
}

impl GuardHook {
    /// A hook checking the calls of `run` with `guard`.
    pub fn new(guard: Guard, run: Arc<Run>) -> Self {
        Self {
            guard,
            run,
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// The run whose calls this hook checks.
    pub fn run(&self) -> &Arc<Run> {
        &self.run
    }

    /// Calls permitted and not yet answered (dropping the hook records them as abandoned).
    pub fn in_flight(&self) -> usize {
        self.in_flight.lock().len()
    }

    fn dispatch(&self, event: &DispatchEvent<'_>) -> DispatchAction {
        let (Some(tool), Some(args)) = (event.tool_name(), event.tool_args()) else {
            // Not a tool call (a completion, memory, ...): not the guard's business.
            return DispatchAction::proceed();
        };
        let call_id = event.call_id.map(|c| c.wire());
        let mut call = ToolCall::new(tool, args);
        if let Some(id) = call_id.as_deref() {
            call = call.with_call_id(id);
        }
        match self.guard.check(&self.run, &call) {
            Verdict::Allow(permit) => {
                let permit = permit.detach();
                self.in_flight.lock().insert(
                    event.id.as_u64(),
                    InFlight {
                        permit,
                        args: args.to_owned(),
                    },
                );
                DispatchAction::proceed()
            }
            Verdict::Deny(d) if d.code() == DenyCode::Suspended => {
                DispatchAction::stop(d.agent_message())
            }
            Verdict::Deny(d) => DispatchAction::skip(d.agent_message()),
            Verdict::Escalate(r) => DispatchAction::skip(format!(
                "not executed yet: the call waits for human approval (request {})",
                r.id
            )),
        }
    }

    fn outcome(&self, event: &OutcomeEvent<'_>) -> OutcomeAction {
        if event.tool_name().is_none() {
            return OutcomeAction::proceed();
        }
        // Denied and escalated calls were skipped: they have no permit.
        let Some(InFlight { permit, args }) = self.in_flight.lock().remove(&event.id.as_u64())
        else {
            return OutcomeAction::proceed();
        };
        if event.tool_args() != Some(args.as_str()) {
            let _ = permit.complete(Outcome::error(
                "the tool ran with arguments other than those the guard checked",
            ));
            return OutcomeAction::stop(
                "stopped: a hook changed the tool call's arguments after the guard checked them",
            );
        }
        let result = match event.outcome {
            Ok(_) => match event.tool_result() {
                Some(r) => r,
                None => {
                    let _ = permit.complete(Outcome::error("the tool call answered no result"));
                    return OutcomeAction::proceed();
                }
            },
            Err(report) => {
                let _ = permit.complete(Outcome::error(report.message.clone()));
                return OutcomeAction::proceed();
            }
        };
        let output = result.output();
        let delivered = match output.as_json() {
            Some(v) => permit.deliver(Output::Json(v)),
            None => permit.deliver(Output::Text(&output.render())),
        };
        let status = if result.is_success() {
            Outcome::success()
        } else {
            Outcome::error(format!("tool result: {}", result.status_name()))
        };
        match delivered {
            Ok(Delivery::Show) => {
                let _ = permit.complete(status);
                OutcomeAction::proceed()
            }
            Ok(Delivery::Withhold(placeholder)) => {
                let _ = permit.complete(status);
                OutcomeAction::rewrite_tool_result(event, placeholder)
            }
            Err(e) => {
                // Fail closed: an output the flow index could not record is not shown.
                let _ = permit.complete(Outcome::error(format!(
                    "the output could not be recorded: {e}"
                )));
                OutcomeAction::rewrite_tool_result(
                    event,
                    "output withheld: it could not be recorded",
                )
            }
        }
    }
}

impl AgentHook for GuardHook {
    fn name(&self) -> Option<String> {
        Some(format!("tollgate::GuardHook({})", self.run.id()))
    }

    async fn on_dispatch(&self, _ctx: &HookContext, event: DispatchEvent<'_>) -> DispatchAction {
        self.dispatch(&event)
    }

    async fn on_outcome(&self, _ctx: &HookContext, event: OutcomeEvent<'_>) -> OutcomeAction {
        self.outcome(&event)
    }
}
