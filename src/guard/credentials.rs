//! Scoped credentials through a permit: minting within the role's grants, every use checked
//! against the permit, the kill switch and the credential's own limits, everything recorded
//! with the tool's audit marks (its retention class), like the tool's decision and outcome.

use super::Guard;
use super::permit::Permit;
use crate::audit::{AuditError, AuditMarks, CredentialEvent, EventKind};
use crate::clock::MonoTime;
use crate::credential::{
    Asker, Binding, CredentialBroker, CredentialError, MintRequest, Operation, ScopedCredential,
    unix_secs,
};

impl Guard {
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
}

impl Permit<'_> {
    /// The policy's marks for this permit's tool (from the snapshot that allowed it).
    fn marks(&self) -> &AuditMarks {
        self.core.snap.boundary.marks_of(self.core.admitted)
    }

    /// Records a credential event about this permit's tool, carrying the tool's marks: a tool
    /// whose data tier names a retention class keeps the records of its credentials as long as
    /// its decisions.
    fn record_credential(&self, event: CredentialEvent<'_>) -> Result<(), AuditError> {
        self.run
            .shared
            .record_marked(Some(self.run), EventKind::Credential(event), || {
                Some(self.marks())
            })
    }

    fn asker(&self) -> Asker<'_> {
        Asker {
            role: self.run.ctx.role(),
            compartment: self.run.ctx.compartment().map(|c| c.as_str()),
            tool: self.tool(),
            operation: Operation::of(self.effect()),
        }
    }

    fn refuse(&self, resource: &str, e: CredentialError) -> CredentialError {
        let recorded = self.record_credential(CredentialEvent::Refused {
            id: None,
            tool: self.tool(),
            resource,
            reason: &e,
        });
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
        if let Some(scope) = shared.suspended(self.run) {
            return Err(self.refuse(resource, CredentialError::Suspended(scope)));
        }
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
        let binding = Binding {
            run: &self.run.id,
            instance: self.run.instance,
            agent: self.run.ctx.agent(),
        };
        let cred = ScopedCredential::new(
            broker,
            prepared,
            &binding,
            expires,
            expires_unix,
            secret,
            self.marks().retention_class().cloned(),
        );
        if let Some(scope) = self.run.shared.suspended(self.run) {
            // The kill switch was thrown while this was being minted (after `begin_mint` looked).
            // It is registered now, so revoking the run catches it whether or not the switch's own
            // revocation ran before the registration: revoke it instead of handing it out.
            let resource = cred.scope().resource.to_string();
            drop(cred);
            let revoked = self.run.revoke_credentials();
            let refused = self.refuse(&resource, CredentialError::Suspended(scope));
            return Err(revoked.map_or_else(Into::into, |()| refused));
        }
        let recorded = self.record_credential(CredentialEvent::Issued {
            id: cred.id(),
            provider: cred.provider_name(),
            scope: cred.scope(),
            expires_at_unix: expires_unix,
        });
        if let Err(e) = recorded {
            // Not recorded, not handed out: the credential is dropped (and zeroized) here.
            return Err(e.into());
        }
        Ok(cred)
    }
}

impl ScopedCredential {
    /// The secret, for `permit`'s tool to use on `resource`. Checked on every call: the kill
    /// switch must not hold the permit's run, the permit must belong to the credential's run
    /// instance and agent, its tool and operation and `resource` must be inside the scope, and
    /// the credential must be unexpired, unrevoked and not used up. Every use and every refusal
    /// is recorded; if the record fails the value is not released. Once released, the value is
    /// cut out of the error message and output of every outcome the run's permits record
    /// ([`CREDENTIAL_PLACEHOLDER`](crate::audit::CREDENTIAL_PLACEHOLDER)).
    pub fn expose<'c>(
        &'c self,
        permit: &Permit<'_>,
        resource: &str,
    ) -> Result<&'c str, CredentialError> {
        let shared = &permit.run.shared;
        let tool = permit.tool();
        let binding = Binding {
            run: &permit.run.id,
            instance: permit.run.instance,
            agent: permit.run.ctx.agent(),
        };
        let checked = match shared.suspended(permit.run) {
            // The kill switch holds the run: nothing is released, whatever the credential.
            Some(scope) => Err(CredentialError::Suspended(scope)),
            None => self.check_use(
                &binding,
                tool,
                Operation::of(permit.effect()),
                resource,
                shared.clock.now(),
            ),
        };
        match checked {
            Ok(()) => {
                permit.run.exposed.add(self.id(), self.secret());
                permit.record_credential(self.event_used(tool, resource))?;
                Ok(self.secret())
            }
            Err(e) => {
                permit.record_credential(CredentialEvent::Refused {
                    id: Some(self.id()),
                    tool,
                    resource,
                    reason: &e,
                })?;
                Err(e)
            }
        }
    }
}
