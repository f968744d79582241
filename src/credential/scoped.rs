//! [`ScopedCredential`]: the handle a permit's tool holds, bound to one run instance and agent.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use super::broker::{Binding, CredState, CredentialBroker, Prepared};
use super::{CredentialError, Operation, Scope};
use crate::audit::CredentialEvent;
use crate::call::{AgentId, CredentialId, RunId};
use crate::clock::MonoTime;

/// A short-lived secret for one run and one scope. Obtain it from
/// [`Permit::credential`](crate::Permit::credential); read it only through [`expose`](Self::expose).
///
/// It is bound to the run *instance* ([`Run::instance`](crate::Run::instance)) and the agent it
/// was issued to, not to the run id alone: a later run that reuses the id (after this one ended)
/// is a different instance, and its permits are refused.
///
/// `Debug` and `Display` show its id and scope; serialisation writes its metadata only; the value
/// is zeroized when the credential is dropped. Once [exposed](Self::expose), the run keeps a copy
/// (zeroized when the run and its detached permits are gone) to cut the value out of the
/// outcome texts its permits record.
pub struct ScopedCredential {
    state: Arc<CredState>,
    run: RunId,
    run_instance: u64,
    agent: AgentId,
    scope: Scope,
    expires: MonoTime,
    max_uses: Option<u32>,
    uses: AtomicU32,
    secret: SecretString,
}

impl fmt::Debug for ScopedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopedCredential")
            .field("id", &self.state.id)
            .field("provider", &self.state.provider)
            .field("run", &self.run)
            .field("run_instance", &self.run_instance)
            .field("agent", &self.agent)
            .field("scope", &self.scope)
            .field("expires_at_unix", &self.state.expires_at_unix)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

impl fmt::Display for ScopedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "credential {} ({}) [REDACTED]",
            self.state.id, self.scope
        )
    }
}

impl Serialize for ScopedCredential {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("ScopedCredential", 6)?;
        st.serialize_field("id", &self.state.id)?;
        st.serialize_field("provider", &self.state.provider)?;
        st.serialize_field("run", &self.run)?;
        st.serialize_field("agent", &self.agent)?;
        st.serialize_field("scope", &self.scope)?;
        st.serialize_field("expires_at_unix", &self.state.expires_at_unix)?;
        st.end()
    }
}

impl ScopedCredential {
    pub(crate) fn new(
        broker: &CredentialBroker,
        prepared: Prepared,
        binding: &Binding<'_>,
        expires: MonoTime,
        expires_at_unix: u64,
        secret: SecretString,
        retention: Option<Arc<str>>,
    ) -> Self {
        let state = broker.register(binding, &prepared, expires_at_unix, retention);
        Self {
            state,
            run: binding.run.clone(),
            run_instance: binding.instance,
            agent: binding.agent.clone(),
            scope: prepared.scope,
            expires,
            max_uses: prepared.max_uses,
            uses: AtomicU32::new(0),
            secret,
        }
    }

    /// The credential's id (safe to log; a minted JWT's `jti`).
    pub fn id(&self) -> &CredentialId {
        &self.state.id
    }

    /// What it covers.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The run it belongs to.
    pub fn run(&self) -> &RunId {
        &self.run
    }

    /// The instance of that run ([`Run::instance`](crate::Run::instance)).
    pub fn run_instance(&self) -> u64 {
        self.run_instance
    }

    /// The agent it was issued to.
    pub fn agent(&self) -> &AgentId {
        &self.agent
    }

    /// Expiry, unix seconds.
    pub fn expires_at_unix(&self) -> u64 {
        self.state.expires_at_unix
    }

    /// The provider that minted it.
    pub fn provider_name(&self) -> &str {
        &self.state.provider
    }

    /// Whether it was revoked.
    pub fn is_revoked(&self) -> bool {
        self.state.revoked.load(Ordering::Acquire)
    }

    /// The checks `expose` makes, counting a use if they pass. `permit_run` is the permit's run
    /// (id, instance, agent).
    pub(crate) fn check_use(
        &self,
        permit_run: &Binding<'_>,
        tool: &str,
        operation: Operation,
        resource: &str,
        now: MonoTime,
    ) -> Result<(), CredentialError> {
        if permit_run.instance != self.run_instance || permit_run.agent != &self.agent {
            return Err(CredentialError::WrongRun {
                credential_run: self.run.to_string(),
                credential_instance: self.run_instance,
                permit_run: permit_run.run.to_string(),
                permit_instance: permit_run.instance,
            });
        }
        if !self.scope.tools.iter().any(|t| t == tool) {
            return Err(CredentialError::WrongTool(tool.to_owned()));
        }
        if !self.scope.operations.contains(&operation) {
            return Err(CredentialError::WrongOperation(operation.as_str()));
        }
        if !self.scope.resource.covers(resource) {
            return Err(CredentialError::WrongResource(resource.to_owned()));
        }
        if self.is_revoked() {
            return Err(CredentialError::Revoked);
        }
        if now >= self.expires {
            return Err(CredentialError::Expired);
        }
        if let Some(max) = self.max_uses {
            self.uses
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                })
                .map_err(|_| CredentialError::Exhausted { max })?;
        }
        Ok(())
    }

    pub(crate) fn secret(&self) -> &str {
        self.secret.expose_secret()
    }

    pub(crate) fn event_used<'e>(
        &'e self,
        tool: &'e str,
        resource: &'e str,
    ) -> CredentialEvent<'e> {
        CredentialEvent::Used {
            id: &self.state.id,
            tool,
            resource,
        }
    }
}
