//! `Guard`: the pipeline an agent framework wraps around its tool dispatch.
//!
//! ```text
//! check(run, call):
//!   run belongs to this guard        -> Deny(ForeignRun)
//!   ActionBoundary (policy snapshot) -> Deny(unknown tool, not allowed, tier, read-only, args, compartment)
//!   audit record of the verdict      -> Deny(AuditFailed) if the sink refuses it
//!   otherwise                        -> Allow(Permit)
//! permit.complete(outcome)           -> one audit event (latency, tokens)
//! permit dropped without outcome     -> one "abandoned" audit event
//! run finished or dropped            -> one run-end audit event
//! ```
//!
//! The stages that later primitives add slot into [`Guard::check`] in the order fixed by the design:
//! kill switch and circuit breaker *before* the boundary, budgets / rate limits / loop detection and
//! then the escalation gate *after* it, audit last. Each stage is a plain method call on the hot
//! path; nothing is boxed or dynamically dispatched except the audit sink and the clock.
//!
//! The boundary lives in an [`ArcSwap`] snapshot. [`Guard::reload`] swaps it atomically; a permit
//! holds the snapshot it was checked against, so a call already permitted finishes under the policy
//! generation that allowed it, and every verdict, permit and audit record carries that policy's
//! [`PolicyVersion`].
//!
//! ```
//! use tollgate::boundary::{ActionBoundary, Arg, RoleSpec, ToolSpec};
//! use tollgate::{Guard, Outcome, RunContext, ToolCall, Verdict};
//!
//! let boundary = ActionBoundary::builder()
//!     .tool("lookup", ToolSpec::read().arg("id", Arg::integer().required().min(1.0)))
//!     .role("reader", RoleSpec::new().tools(["lookup"]))
//!     .build()?;
//! let guard = Guard::builder(boundary).build();
//! let run = guard.start_run(RunContext::new("agent-7", "reader"))?;
//!
//! match guard.check(&run, &ToolCall::new("lookup", r#"{"id": 42}"#)) {
//!     Verdict::Allow(permit) => {
//!         // ... run the tool ...
//!         permit.complete(Outcome::success());
//!     }
//!     Verdict::Escalate(request) => println!("needs a human: {}", request.reason),
//!     Verdict::Deny(denial) => println!("{denial}"),
//! }
//!
//! // Or let the guard run the tool only if allowed and record the outcome itself:
//! let n: Result<u32, _> = guard.execute(&run, &ToolCall::new("lookup", r#"{"id": 0}"#), |_permit| {
//!     Ok::<u32, std::io::Error>(1)
//! });
//! assert!(n.is_err()); // id 0 is below the minimum: the closure never ran
//! run.finish()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;

use crate::audit::{AuditError, AuditEvent, AuditSink, CredentialEvent, Decision, EventKind};
use crate::boundary::{ActionBoundary, Admitted, Effect, ToolInfo};
use crate::call::{RuleId, RunContext, RunId, ToolCall};
use crate::clock::{Clock, MonoTime, SystemClock};
use crate::credential::{
    Asker, CredentialBroker, CredentialError, MintRequest, Operation, ScopedCredential, unix_secs,
};
use crate::verdict::{Denial, DenyCode, Outcome, PolicyVersion, Refusal, Verdict};

/// Errors from guard operations other than `check` (which never errors: it denies).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuardError {
    /// The run's role does not exist in the current policy.
    #[error("role `{0}` is not defined by the current policy")]
    UnknownRole(String),
    /// The audit sink refused a record the operation needs.
    #[error("audit failed: {0}")]
    Audit(#[from] AuditError),
}

struct Shared {
    boundary: ArcSwap<ActionBoundary>,
    clock: Arc<dyn Clock>,
    audit: Option<Arc<dyn AuditSink>>,
    credentials: Option<CredentialBroker>,
    seq: AtomicU64,
    runs: AtomicU64,
    rule_foreign: RuleId,
    rule_audit: RuleId,
}

impl Shared {
    fn record(&self, run: &Run, kind: EventKind<'_>) -> Result<(), AuditError> {
        self.record_for(Some(run), kind)
    }

    fn record_for(&self, run: Option<&Run>, kind: EventKind<'_>) -> Result<(), AuditError> {
        let Some(sink) = &self.audit else {
            return Ok(());
        };
        let event = AuditEvent {
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            at: self.clock.wall(),
            run: run.map(|r| &r.id),
            agent: run.map(|r| r.ctx.agent()),
            kind,
        };
        sink.record(&event)
    }
}

/// Composes the primitives into one pipeline. Cheap to clone (one `Arc`); share it across threads.
#[derive(Clone)]
pub struct Guard {
    shared: Arc<Shared>,
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("policy_version", &self.policy_version())
            .field("audit", &self.shared.audit.is_some())
            .finish()
    }
}

/// Configures a [`Guard`].
pub struct GuardBuilder {
    boundary: ActionBoundary,
    clock: Arc<dyn Clock>,
    audit: Option<Arc<dyn AuditSink>>,
    credentials: Option<CredentialBroker>,
}

impl GuardBuilder {
    /// Uses `clock` for every duration (default: [`SystemClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sends every event to `sink`. Without a sink nothing is recorded.
    pub fn audit(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.audit = Some(sink);
        self
    }

    /// Lets permits obtain scoped credentials from `broker`; a run's credentials are revoked
    /// when it ends.
    pub fn credentials(mut self, broker: CredentialBroker) -> Self {
        self.credentials = Some(broker);
        self
    }

    /// Builds the guard.
    pub fn build(self) -> Guard {
        Guard {
            shared: Arc::new(Shared {
                boundary: ArcSwap::from_pointee(self.boundary),
                clock: self.clock,
                audit: self.audit,
                credentials: self.credentials,
                seq: AtomicU64::new(0),
                runs: AtomicU64::new(0),
                rule_foreign: RuleId::new("guard.run"),
                rule_audit: RuleId::new("guard.audit"),
            }),
        }
    }
}

impl Guard {
    /// Starts configuring a guard around `boundary`.
    pub fn builder(boundary: ActionBoundary) -> GuardBuilder {
        GuardBuilder {
            boundary,
            clock: Arc::new(SystemClock::new()),
            audit: None,
            credentials: None,
        }
    }

    /// The version of the policy currently in force.
    pub fn policy_version(&self) -> PolicyVersion {
        self.shared.boundary.load().version()
    }

    /// The boundary currently in force.
    pub fn boundary(&self) -> Arc<ActionBoundary> {
        self.shared.boundary.load_full()
    }

    /// Atomically replaces the policy. Calls checked from now on use `boundary`; permits already
    /// issued keep the policy that allowed them. The reload is recorded first: if the audit sink
    /// refuses the record, the policy is not replaced. Returns the replaced boundary.
    pub fn reload(&self, boundary: ActionBoundary) -> Result<Arc<ActionBoundary>, GuardError> {
        let previous = self.policy_version();
        self.shared.record_for(
            None,
            EventKind::PolicyReloaded {
                previous,
                current: boundary.version(),
            },
        )?;
        Ok(self.shared.boundary.swap(Arc::new(boundary)))
    }

    /// Rotates a credential provider's signing key now, without any human step, and records the
    /// rotation. Tokens signed with the retired key keep verifying until its grace period ends.
    /// Returns `Ok(None)` for providers that have no key to rotate.
    pub fn rotate_credential_key(
        &self,
        provider: &str,
    ) -> Result<Option<crate::credential::Rotated>, CredentialError> {
        let Some(broker) = &self.shared.credentials else {
            return Err(CredentialError::NoBroker);
        };
        let rotated = broker.rotate_now(provider, unix_secs(self.shared.clock.wall()))?;
        if let Some(r) = &rotated {
            self.shared.record_for(
                None,
                EventKind::Credential(CredentialEvent::KeyRotated {
                    provider,
                    retired: &r.retired,
                    current: &r.current,
                }),
            )?;
        }
        Ok(rotated)
    }

    /// Starts a run: records its start (who, role, task, trigger, compartment) and returns the
    /// handle every check of the run needs. Fails if the role is unknown or the start cannot be
    /// recorded.
    pub fn start_run(&self, ctx: RunContext) -> Result<Run, GuardError> {
        self.start_run_with_id(ctx, None)
    }

    /// Like [`start_run`](Self::start_run) with a caller-chosen run id (e.g. the framework's own).
    pub fn start_run_with_id(&self, ctx: RunContext, id: Option<RunId>) -> Result<Run, GuardError> {
        if !self.shared.boundary.load().has_role(ctx.role().as_str()) {
            return Err(GuardError::UnknownRole(ctx.role().to_string()));
        }
        let n = self.shared.runs.fetch_add(1, Ordering::Relaxed) + 1;
        let id = id.unwrap_or_else(|| {
            let wall = self
                .shared
                .clock
                .wall()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            RunId::new(format!("run-{:x}-{n}", wall.as_millis()))
        });
        let run = Run {
            shared: Arc::clone(&self.shared),
            id,
            ctx,
            started: self.shared.clock.now(),
            finished: AtomicBool::new(false),
        };
        self.shared
            .record(&run, EventKind::RunStarted { context: &run.ctx })?;
        Ok(run)
    }

    /// The tools this run's agent may see: allowlisted for its role, within its clearance, and
    /// read-only tools only in a read-only run or role.
    pub fn visible_tools(&self, run: &Run) -> Vec<String> {
        self.shared
            .boundary
            .load()
            .visible_tools_for(run.ctx.role().as_str(), run.ctx.is_read_only())
            .map(|t| t.name().to_owned())
            .collect()
    }

    /// Decides one proposed call. Never panics and never errors: anything that cannot be decided
    /// is a denial. Only [`Verdict::Allow`] carries the [`Permit`] a tool runs under.
    pub fn check<'a>(&self, run: &'a Run, call: &ToolCall<'a>) -> Verdict<'a> {
        if !Arc::ptr_eq(&run.shared, &self.shared) {
            // Not recorded through this guard's sink: the run is not ours.
            return Verdict::Deny(Denial::new(
                DenyCode::ForeignRun,
                self.shared.rule_foreign.clone(),
                "the run was started by a different guard",
            ));
        }
        let shared = &*self.shared;
        // Stage: action boundary. (Kill switch and breaker stages will precede it; budgets, rate,
        // loop detection and the escalation gate will follow it.)
        let boundary = shared.boundary.load_full();
        let verdict = boundary.check(&run.ctx, call);
        let version = boundary.version();
        // Stage: audit. A decision that cannot be recorded is not acted on.
        match verdict {
            Ok(admitted) => {
                let recorded = shared.record(
                    run,
                    EventKind::Decision {
                        call,
                        decision: Decision::Allow,
                        policy_version: Some(version),
                    },
                );
                if let Err(e) = recorded {
                    return Verdict::Deny(audit_denial(shared, e, version));
                }
                Verdict::Allow(Permit {
                    run,
                    boundary,
                    admitted,
                    call_id: call.call_id(),
                    // Latency is observed only through the audit trail: without a sink, reading
                    // the clock (two reads, ~25 ns each) would be dead work.
                    started: shared.audit.is_some().then(|| shared.clock.now()),
                    done: false,
                })
            }
            Err(denial) => {
                let recorded = shared.record(
                    run,
                    EventKind::Decision {
                        call,
                        decision: Decision::Deny(&denial),
                        policy_version: Some(version),
                    },
                );
                match recorded {
                    Ok(()) => Verdict::Deny(denial),
                    Err(e) => Verdict::Deny(audit_denial(shared, e, version)),
                }
            }
        }
    }

    /// Checks `call` and runs `tool` only if it is allowed, recording the outcome (`Ok` = success,
    /// `Err(e)` = error with `e`'s message). A denial or escalation is returned without running it.
    pub fn execute<'a, T, E, F>(
        &self,
        run: &'a Run,
        call: &ToolCall<'a>,
        tool: F,
    ) -> Result<T, ExecuteError<E>>
    where
        F: FnOnce(&Permit<'a>) -> Result<T, E>,
        E: fmt::Display,
    {
        let permit = self.check(run, call).into_permit()?;
        let result = tool(&permit);
        finish_execute(permit, result)
    }

    /// The async form of [`execute`](Self::execute); works on any executor. If the returned future
    /// is dropped before the tool finishes, the permit records an abandoned outcome.
    pub async fn execute_async<'a, T, E, F>(
        &self,
        run: &'a Run,
        call: &ToolCall<'a>,
        tool: F,
    ) -> Result<T, ExecuteError<E>>
    where
        F: AsyncFnOnce(&Permit<'a>) -> Result<T, E>,
        E: fmt::Display,
    {
        let permit = self.check(run, call).into_permit()?;
        let result = tool(&permit).await;
        finish_execute(permit, result)
    }
}

fn finish_execute<T, E: fmt::Display>(
    permit: Permit<'_>,
    result: Result<T, E>,
) -> Result<T, ExecuteError<E>> {
    let outcome = match &result {
        Ok(_) => Outcome::success(),
        Err(e) => Outcome::error(e.to_string()),
    };
    permit.complete(outcome).map_err(ExecuteError::Audit)?;
    result.map_err(ExecuteError::Tool)
}

fn audit_denial(shared: &Shared, e: AuditError, version: PolicyVersion) -> Denial {
    Denial::new(
        DenyCode::AuditFailed,
        shared.rule_audit.clone(),
        format!("the decision could not be recorded, so it is not acted on: {e}"),
    )
    .with_version(version)
}

/// Why [`Guard::execute`] did not return the tool's value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecuteError<E> {
    /// The guard refused the call; the tool did not run.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The tool ran and failed.
    #[error("tool failed: {0}")]
    Tool(E),
    /// The tool ran (its side effects happened) but its outcome could not be recorded.
    #[error("the tool ran but its outcome could not be recorded: {0}")]
    Audit(AuditError),
}

impl<E> ExecuteError<E> {
    /// The denial, if the guard denied the call.
    pub fn denial(&self) -> Option<&Denial> {
        match self {
            ExecuteError::Refused(Refusal::Denied(d)) => Some(d),
            _ => None,
        }
    }
}

/// One agent task. All per-task state lives here. Dropping it (or [`finish`](Self::finish)) ends
/// the run and records its end.
pub struct Run {
    shared: Arc<Shared>,
    id: RunId,
    ctx: RunContext,
    started: MonoTime,
    finished: AtomicBool,
}

impl fmt::Debug for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Run")
            .field("id", &self.id)
            .field("context", &self.ctx)
            .finish()
    }
}

impl Run {
    /// The run's id.
    pub fn id(&self) -> &RunId {
        &self.id
    }

    /// The run's context.
    pub fn context(&self) -> &RunContext {
        &self.ctx
    }

    /// Ends the run and records its end; returns the audit error if that record fails.
    pub fn finish(self) -> Result<(), AuditError> {
        self.end()
    }

    /// Revokes every credential issued to this run so far (ending the run does this by itself).
    /// Returns the first audit error, after revoking all of them.
    pub fn revoke_credentials(&self) -> Result<(), AuditError> {
        let Some(broker) = &self.shared.credentials else {
            return Ok(());
        };
        let mut first = Ok(());
        for (id, provider) in broker.revoke_run(&self.id) {
            let r = self.shared.record(
                self,
                EventKind::Credential(CredentialEvent::Revoked {
                    id: &id,
                    provider: &provider,
                }),
            );
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    fn end(&self) -> Result<(), AuditError> {
        if self.finished.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Revocation first: it must happen even if the records below fail.
        let revoked = self.revoke_credentials();
        let duration = self.shared.clock.now().duration_since(self.started);
        let finished = self
            .shared
            .record(self, EventKind::RunFinished { duration });
        revoked.and(finished)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        // Best effort: a sink failing here has no caller to report to; `finish` reports it.
        let _ = self.end();
    }
}

/// Permission to run one tool call, issued only by [`Verdict::Allow`].
///
/// Report how the call ended with [`complete`](Self::complete); a permit dropped without an outcome
/// is recorded as *abandoned*. The permit keeps the policy snapshot it was issued under.
#[must_use = "a permit records an abandoned outcome if dropped without `complete`"]
pub struct Permit<'a> {
    run: &'a Run,
    boundary: Arc<ActionBoundary>,
    admitted: Admitted,
    call_id: Option<&'a str>,
    started: Option<MonoTime>,
    done: bool,
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("run", &self.run.id)
            .field("tool", &self.tool())
            .field("policy_version", &self.policy_version())
            .finish()
    }
}

impl<'a> Permit<'a> {
    fn info(&self) -> &ToolInfo {
        self.boundary.tool_info(self.admitted)
    }

    /// The permitted tool's exact name.
    pub fn tool(&self) -> &str {
        self.info().name()
    }

    /// The tool's effect.
    pub fn effect(&self) -> Effect {
        self.info().effect()
    }

    /// The version of the policy that allowed the call.
    pub fn policy_version(&self) -> PolicyVersion {
        self.boundary.version()
    }

    /// The run the permit belongs to.
    pub fn run(&self) -> &'a Run {
        self.run
    }

    fn asker(&self) -> Asker<'_> {
        Asker {
            run: &self.run.id,
            role: self.run.ctx.role(),
            compartment: self.run.ctx.compartment().map(|c| c.as_str()),
            tool: self.tool(),
            operation: Operation::of(self.effect()),
        }
    }

    fn refuse(&self, resource: &str, e: CredentialError) -> CredentialError {
        let recorded = self.run.shared.record(
            self.run,
            EventKind::Credential(CredentialEvent::Refused {
                id: None,
                tool: self.tool(),
                resource,
                reason: &e,
            }),
        );
        match recorded {
            Ok(()) => e,
            Err(a) => a.into(),
        }
    }

    /// Mints a credential from `provider` for this permit's tool and operation and `resource`
    /// (an exact resource or a `prefix/*` pattern), if a grant of the run's role covers it.
    pub fn credential(
        &self,
        provider: &str,
        resource: &str,
    ) -> Result<ScopedCredential, CredentialError> {
        let (broker, prepared, expires, issued_unix, expires_unix) =
            self.begin_mint(provider, resource)?;
        let req = self.mint_request(&prepared, issued_unix, expires_unix);
        let secret = broker
            .mint_sync(&prepared, &req)
            .map_err(|e| self.refuse(resource, e))?;
        self.issue(broker, prepared, expires, expires_unix, secret)
    }

    /// The async form of [`credential`](Self::credential), for async providers (a vault, an STS).
    pub async fn credential_async(
        &self,
        provider: &str,
        resource: &str,
    ) -> Result<ScopedCredential, CredentialError> {
        let (broker, prepared, expires, issued_unix, expires_unix) =
            self.begin_mint(provider, resource)?;
        let secret = {
            let req = self.mint_request(&prepared, issued_unix, expires_unix);
            broker.mint_async(&prepared, &req).await
        }
        .map_err(|e| self.refuse(resource, e))?;
        self.issue(broker, prepared, expires, expires_unix, secret)
    }

    /// Grant check, scheduled key rotation and validity window: everything before the provider.
    #[allow(clippy::type_complexity)]
    fn begin_mint(
        &self,
        provider: &str,
        resource: &str,
    ) -> Result<
        (
            &CredentialBroker,
            crate::credential::Prepared,
            MonoTime,
            u64,
            u64,
        ),
        CredentialError,
    > {
        let shared = &self.run.shared;
        let Some(broker) = &shared.credentials else {
            return Err(CredentialError::NoBroker);
        };
        let prepared = broker
            .prepare(&self.asker(), provider, resource)
            .map_err(|e| self.refuse(resource, e))?;
        self.rotate_if_due(broker, provider)?;
        let now = shared.clock.now();
        let issued_unix = unix_secs(shared.clock.wall());
        let expires = now.saturating_add(std::time::Duration::from_secs(prepared.ttl));
        let expires_unix = issued_unix.saturating_add(prepared.ttl);
        Ok((broker, prepared, expires, issued_unix, expires_unix))
    }

    fn rotate_if_due(
        &self,
        broker: &CredentialBroker,
        provider: &str,
    ) -> Result<(), CredentialError> {
        let shared = &self.run.shared;
        if let Some(r) = broker.rotate_if_due(provider, unix_secs(shared.clock.wall()))? {
            shared.record(
                self.run,
                EventKind::Credential(CredentialEvent::KeyRotated {
                    provider,
                    retired: &r.retired,
                    current: &r.current,
                }),
            )?;
        }
        Ok(())
    }

    fn mint_request<'r>(
        &'r self,
        prepared: &'r crate::credential::Prepared,
        issued_at_unix: u64,
        expires_at_unix: u64,
    ) -> MintRequest<'r> {
        MintRequest {
            id: &prepared.id,
            run: &self.run.id,
            agent: self.run.ctx.agent(),
            role: self.run.ctx.role(),
            scope: &prepared.scope,
            issued_at_unix,
            expires_at_unix,
        }
    }

    fn issue(
        &self,
        broker: &CredentialBroker,
        prepared: crate::credential::Prepared,
        expires: MonoTime,
        expires_unix: u64,
        secret: secrecy::SecretString,
    ) -> Result<ScopedCredential, CredentialError> {
        let cred = ScopedCredential::new(
            broker,
            prepared,
            &self.run.id,
            expires,
            expires_unix,
            secret,
        );
        let recorded = self.run.shared.record(
            self.run,
            EventKind::Credential(CredentialEvent::Issued {
                id: cred.id(),
                provider: &cred_provider(&cred),
                scope: cred.scope(),
                expires_at_unix: expires_unix,
            }),
        );
        if let Err(e) = recorded {
            // Not recorded, not handed out: the credential is dropped (and zeroized) here.
            return Err(e.into());
        }
        Ok(cred)
    }

    /// Records how the call ended. Returns the audit error if the record fails.
    pub fn complete(mut self, outcome: Outcome) -> Result<(), AuditError> {
        self.done = true;
        self.record(&outcome)
    }

    fn record(&self, outcome: &Outcome) -> Result<(), AuditError> {
        let shared = &self.run.shared;
        let Some(started) = self.started else {
            // No sink: nothing to record.
            return Ok(());
        };
        let latency = shared.clock.now().duration_since(started);
        shared.record(
            self.run,
            EventKind::Outcome {
                tool: self.tool(),
                call_id: self.call_id,
                outcome,
                latency,
                policy_version: self.boundary.version(),
            },
        )
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.record(&Outcome::abandoned());
        }
    }
}

fn cred_provider(c: &ScopedCredential) -> String {
    c.provider_name().to_owned()
}

impl ScopedCredential {
    /// The secret, for `permit`'s tool to use on `resource`. Checked on every call: the permit
    /// must belong to the credential's run, its tool and operation and `resource` must be inside
    /// the scope, and the credential must be unexpired, unrevoked and not used up. Every use and
    /// every refusal is recorded; if the record fails the value is not released.
    pub fn expose<'c>(
        &'c self,
        permit: &Permit<'_>,
        resource: &str,
    ) -> Result<&'c str, CredentialError> {
        let shared = &permit.run.shared;
        let tool = permit.tool();
        let checked = self.check_use(
            &permit.run.id,
            tool,
            Operation::of(permit.effect()),
            resource,
            shared.clock.now(),
        );
        match checked {
            Ok(()) => {
                shared.record(
                    permit.run,
                    EventKind::Credential(self.event_used(tool, resource)),
                )?;
                Ok(self.secret())
            }
            Err(e) => {
                shared.record(
                    permit.run,
                    EventKind::Credential(CredentialEvent::Refused {
                        id: Some(self.id()),
                        tool,
                        resource,
                        reason: &e,
                    }),
                )?;
                Err(e)
            }
        }
    }
}
