//! The broker: grants per role, the live credentials of every run instance, and revocation.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use secrecy::SecretString;

use super::{
    AsyncCredentialProvider, CredentialError, CredentialGrant, CredentialPolicy,
    CredentialProvider, MAX_TTL, MIN_TTL, MintRequest, Operation, ProviderError, ResourcePattern,
    RevokeRequest, Rotated, Scope,
};
use crate::call::{AgentId, CredentialId, RoleName, RunId};

/// Why a broker could not be built. Names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {reason}")]
pub struct BrokerError {
    /// Where (`grants.intake[0].resource`).
    pub field: String,
    /// Why.
    pub reason: String,
}

enum ProviderSlot {
    Sync(Arc<dyn CredentialProvider>),
    Async(Arc<dyn AsyncCredentialProvider>),
}

struct CompiledGrant {
    provider: String,
    tools: Vec<String>,
    operations: Vec<Operation>,
    resource: String,
    ttl: u64,
    max_uses: Option<u32>,
}

/// Shared state of one live credential: what revocation flips.
#[derive(Debug)]
pub(crate) struct CredState {
    pub(crate) id: CredentialId,
    pub(crate) provider: String,
    pub(crate) expires_at_unix: u64,
    pub(crate) revoked: AtomicBool,
    /// The retention class of the records about it: its tool's, when it was minted.
    pub(crate) retention: Option<Arc<str>>,
}

/// The credentials issued to one run instance, and whose they are.
struct LiveRun {
    run: RunId,
    agent: AgentId,
    creds: Vec<Arc<CredState>>,
}

/// A credential revoked by [`CredentialBroker::revoke_run`], [`revoke_agent`] or
/// [`revoke_all`], for the caller to record.
///
/// [`revoke_agent`]: CredentialBroker::revoke_agent
/// [`revoke_all`]: CredentialBroker::revoke_all
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RevokedCredential {
    /// The credential.
    pub id: CredentialId,
    /// The provider that minted it.
    pub provider: String,
    /// The run it was issued to.
    pub run: RunId,
    /// That run's instance ([`Run::instance`](crate::Run::instance)).
    pub run_instance: u64,
    /// The run's agent.
    pub agent: AgentId,
    /// The retention class of the tool it was minted for, as the policy named it then (see
    /// [`AuditMarks::retention`](crate::audit::AuditMarks::retention)): the record of its
    /// revocation is kept as long as the records of its issue and use.
    pub retention: Option<Arc<str>>,
}

/// Configures a [`CredentialBroker`].
#[derive(Default)]
pub struct BrokerBuilder {
    providers: BTreeMap<String, ProviderSlot>,
    policy: CredentialPolicy,
}

impl BrokerBuilder {
    /// Registers a sync provider under `name`.
    pub fn provider(
        mut self,
        name: impl Into<String>,
        p: impl CredentialProvider + 'static,
    ) -> Self {
        self.providers
            .insert(name.into(), ProviderSlot::Sync(Arc::new(p)));
        self
    }

    /// Registers an async provider under `name`.
    pub fn async_provider(
        mut self,
        name: impl Into<String>,
        p: impl AsyncCredentialProvider + 'static,
    ) -> Self {
        self.providers
            .insert(name.into(), ProviderSlot::Async(Arc::new(p)));
        self
    }

    /// Adds a grant for `role`.
    pub fn grant(mut self, role: impl Into<String>, grant: CredentialGrant) -> Self {
        self.policy
            .grants
            .entry(role.into())
            .or_default()
            .push(grant);
        self
    }

    /// Adds every grant of a policy document.
    pub fn policy(mut self, policy: CredentialPolicy) -> Self {
        for (role, grants) in policy.grants {
            self.policy.grants.entry(role).or_default().extend(grants);
        }
        self
    }

    /// Validates the grants against the providers and builds the broker.
    pub fn build(self) -> Result<CredentialBroker, BrokerError> {
        // Credential ids are `jti`s that downstream revocation lists match on: 64 random bits per
        // broker keep them unique across brokers, processes and restarts.
        let mut tag = [0u8; 8];
        getrandom::fill(&mut tag).map_err(|e| BrokerError {
            field: "broker".into(),
            reason: format!("the OS random number generator failed: {e}"),
        })?;
        let mut grants: HashMap<String, Vec<CompiledGrant>> = HashMap::new();
        for (role, list) in &self.policy.grants {
            for (i, g) in list.iter().enumerate() {
                let field = |f: &str| format!("grants.{role}[{i}].{f}");
                let bad = |f: &str, reason: String| BrokerError {
                    field: field(f),
                    reason,
                };
                if !self.providers.contains_key(&g.provider) {
                    return Err(bad(
                        "provider",
                        format!("no provider named `{}`", g.provider),
                    ));
                }
                if g.tools.is_empty() {
                    return Err(bad("tools", "must name at least one tool".into()));
                }
                if g.operations.is_empty() {
                    return Err(bad("operations", "must name at least one operation".into()));
                }
                if g.ttl < MIN_TTL || g.ttl > MAX_TTL || g.ttl.subsec_nanos() != 0 {
                    return Err(bad(
                        "ttl",
                        format!(
                            "`{}`: must be whole seconds, from {} to {}",
                            crate::units::format_duration(g.ttl),
                            crate::units::format_duration(MIN_TTL),
                            crate::units::format_duration(MAX_TTL)
                        ),
                    ));
                }
                if g.max_uses == Some(0) {
                    return Err(bad("max_uses", "must be at least 1".into()));
                }
                // Validate the pattern with a stand-in compartment.
                let probe = g.resource.replace("{compartment}", "C");
                if probe.contains(['{', '}']) {
                    return Err(bad(
                        "resource",
                        "the only placeholder is `{compartment}`".into(),
                    ));
                }
                ResourcePattern::parse(&probe).map_err(|e| bad("resource", e.to_string()))?;
                grants.entry(role.clone()).or_default().push(CompiledGrant {
                    provider: g.provider.clone(),
                    tools: g.tools.clone(),
                    operations: g.operations.clone(),
                    resource: g.resource.clone(),
                    ttl: g.ttl.as_secs(),
                    max_uses: g.max_uses,
                });
            }
        }
        Ok(CredentialBroker {
            inner: Arc::new(BrokerInner {
                providers: self.providers,
                grants,
                live: Mutex::new(HashMap::new()),
                counter: AtomicU64::new(0),
                tag: crate::hex::encode(&tag),
            }),
        })
    }
}

struct BrokerInner {
    providers: BTreeMap<String, ProviderSlot>,
    grants: HashMap<String, Vec<CompiledGrant>>,
    /// Live credentials by run instance: never by run id, which a later run may reuse.
    live: Mutex<HashMap<u64, LiveRun>>,
    counter: AtomicU64,
    /// Random per broker, part of every credential id.
    tag: String,
}

/// Mints scoped credentials for permits and revokes them when their run ends. Cheap to clone.
#[derive(Clone)]
pub struct CredentialBroker {
    inner: Arc<BrokerInner>,
}

impl fmt::Debug for CredentialBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialBroker")
            .field(
                "providers",
                &self.inner.providers.keys().collect::<Vec<_>>(),
            )
            .field("live_credentials", &self.live_count())
            .finish()
    }
}

/// What the broker decided before calling a provider.
pub(crate) struct Prepared {
    pub(crate) id: CredentialId,
    pub(crate) provider: String,
    pub(crate) scope: Scope,
    pub(crate) ttl: u64,
    pub(crate) max_uses: Option<u32>,
}

/// Who is asking, from the permit.
pub(crate) struct Asker<'a> {
    pub(crate) role: &'a RoleName,
    pub(crate) compartment: Option<&'a str>,
    pub(crate) tool: &'a str,
    pub(crate) operation: Operation,
}

/// The run a credential is bound to: the instance and the agent, not the id string alone.
pub(crate) struct Binding<'a> {
    pub(crate) run: &'a RunId,
    pub(crate) instance: u64,
    pub(crate) agent: &'a AgentId,
}

impl CredentialBroker {
    /// Starts configuring a broker.
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder::default()
    }

    /// Number of credentials issued and not yet revoked.
    pub fn live_count(&self) -> usize {
        self.inner.live.lock().values().map(|r| r.creds.len()).sum()
    }

    /// Checks the grant and narrows the scope; no provider call yet.
    pub(crate) fn prepare(
        &self,
        who: &Asker<'_>,
        provider: &str,
        resource: &str,
    ) -> Result<Prepared, CredentialError> {
        if !self.inner.providers.contains_key(provider) {
            return Err(CredentialError::UnknownProvider(provider.to_owned()));
        }
        let requested = ResourcePattern::parse(resource)?;
        let not_granted = || CredentialError::NotGranted {
            role: who.role.to_string(),
            provider: provider.to_owned(),
            tool: who.tool.to_owned(),
            operation: who.operation.as_str(),
            resource: resource.to_owned(),
        };
        let grants = self
            .inner
            .grants
            .get(who.role.as_str())
            .ok_or_else(not_granted)?;
        let grant = grants
            .iter()
            .find(|g| {
                g.provider == provider
                    && g.tools.iter().any(|t| t == who.tool)
                    && g.operations.contains(&who.operation)
                    && grant_pattern(g, who.compartment).is_some_and(|p| p.includes(&requested))
            })
            .ok_or_else(not_granted)?;
        let n = self.inner.counter.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Prepared {
            id: CredentialId::new(format!("cred-{}-{n}", self.inner.tag)),
            provider: provider.to_owned(),
            scope: Scope {
                tools: vec![who.tool.to_owned()],
                operations: vec![who.operation],
                resource: requested,
            },
            ttl: grant.ttl,
            max_uses: grant.max_uses,
        })
    }

    pub(crate) fn rotate_if_due(
        &self,
        provider: &str,
        now_unix: u64,
    ) -> Result<Option<Rotated>, CredentialError> {
        self.rotate_with(provider, |p| p.rotate_if_due(now_unix))
    }

    pub(crate) fn rotate_now(
        &self,
        provider: &str,
        now_unix: u64,
    ) -> Result<Option<Rotated>, CredentialError> {
        self.rotate_with(provider, |p| p.rotate_now(now_unix))
    }

    fn rotate_with(
        &self,
        provider: &str,
        f: impl FnOnce(&dyn CredentialProvider) -> Result<Option<Rotated>, ProviderError>,
    ) -> Result<Option<Rotated>, CredentialError> {
        match self.inner.providers.get(provider) {
            Some(ProviderSlot::Sync(p)) => f(p.as_ref()).map_err(|e| CredentialError::Provider {
                provider: provider.to_owned(),
                reason: e.0,
            }),
            Some(ProviderSlot::Async(_)) => Ok(None),
            None => Err(CredentialError::UnknownProvider(provider.to_owned())),
        }
    }

    pub(crate) fn mint_sync(
        &self,
        prepared: &Prepared,
        req: &MintRequest<'_>,
    ) -> Result<SecretString, CredentialError> {
        match self.inner.providers.get(&prepared.provider) {
            Some(ProviderSlot::Sync(p)) => p.mint(req).map_err(|e| provider_err(prepared, e)),
            Some(ProviderSlot::Async(_)) => {
                Err(CredentialError::ProviderIsAsync(prepared.provider.clone()))
            }
            None => Err(CredentialError::UnknownProvider(prepared.provider.clone())),
        }
    }

    pub(crate) async fn mint_async(
        &self,
        prepared: &Prepared,
        req: &MintRequest<'_>,
    ) -> Result<SecretString, CredentialError> {
        let slot = match self.inner.providers.get(&prepared.provider) {
            Some(ProviderSlot::Sync(p)) => {
                return p.mint(req).map_err(|e| provider_err(prepared, e));
            }
            Some(ProviderSlot::Async(p)) => Arc::clone(p),
            None => return Err(CredentialError::UnknownProvider(prepared.provider.clone())),
        };
        slot.mint(req).await.map_err(|e| provider_err(prepared, e))
    }

    /// Registers a minted credential under its run instance and returns its shared state.
    /// `retention` is the retention class of its tool's records, kept for the record of its
    /// revocation.
    pub(crate) fn register(
        &self,
        binding: &Binding<'_>,
        prepared: &Prepared,
        expires_at_unix: u64,
        retention: Option<Arc<str>>,
    ) -> Arc<CredState> {
        let state = Arc::new(CredState {
            id: prepared.id.clone(),
            provider: prepared.provider.clone(),
            expires_at_unix,
            revoked: AtomicBool::new(false),
            retention,
        });
        self.inner
            .live
            .lock()
            .entry(binding.instance)
            .or_insert_with(|| LiveRun {
                run: binding.run.clone(),
                agent: binding.agent.clone(),
                creds: Vec::new(),
            })
            .creds
            .push(Arc::clone(&state));
        state
    }

    /// Revokes every credential issued to the run instance `instance` (see
    /// [`Run::instance`](crate::Run::instance)); idempotent. `now_unix` is the revocation time
    /// (providers use it to prune their revocation lists). Returns each credential revoked now.
    ///
    /// The local flag that every use checks is set first; then each provider revokes at its
    /// source (a JWT provider adds the `jti` to its revocation list, so verifiers refuse the
    /// token from then on). Provider errors are not returned: the local flag is what makes the
    /// revocation certain in process.
    pub fn revoke_run(&self, instance: u64, now_unix: u64) -> Vec<RevokedCredential> {
        let removed = self.inner.live.lock().remove(&instance);
        removed
            .map(|r| self.revoke_live(instance, r, now_unix))
            .unwrap_or_default()
    }

    /// Revokes every credential of every run of `agent` (the kill switch for one agent).
    pub fn revoke_agent(&self, agent: &AgentId, now_unix: u64) -> Vec<RevokedCredential> {
        let removed: Vec<(u64, LiveRun)> = {
            let mut live = self.inner.live.lock();
            let instances: Vec<u64> = live
                .iter()
                .filter(|(_, r)| &r.agent == agent)
                .map(|(&i, _)| i)
                .collect();
            instances
                .into_iter()
                .filter_map(|i| live.remove(&i).map(|r| (i, r)))
                .collect()
        };
        removed
            .into_iter()
            .flat_map(|(i, r)| self.revoke_live(i, r, now_unix))
            .collect()
    }

    /// Revokes every credential of every run instance with id `run` (the kill switch for a run
    /// suspended by id, e.g. from another host).
    pub fn revoke_run_id(&self, run: &RunId, now_unix: u64) -> Vec<RevokedCredential> {
        let removed: Vec<(u64, LiveRun)> = {
            let mut live = self.inner.live.lock();
            let instances: Vec<u64> = live
                .iter()
                .filter(|(_, r)| &r.run == run)
                .map(|(&i, _)| i)
                .collect();
            instances
                .into_iter()
                .filter_map(|i| live.remove(&i).map(|r| (i, r)))
                .collect()
        };
        removed
            .into_iter()
            .flat_map(|(i, r)| self.revoke_live(i, r, now_unix))
            .collect()
    }

    /// Revokes every live credential this broker issued (the global kill switch).
    pub fn revoke_all(&self, now_unix: u64) -> Vec<RevokedCredential> {
        let removed: Vec<(u64, LiveRun)> = self.inner.live.lock().drain().collect();
        removed
            .into_iter()
            .flat_map(|(i, r)| self.revoke_live(i, r, now_unix))
            .collect()
    }

    /// Flags, then revokes at the source, the credentials of one removed run (no lock held, so
    /// a slow provider blocks no other run).
    fn revoke_live(&self, instance: u64, r: LiveRun, now_unix: u64) -> Vec<RevokedCredential> {
        let fresh: Vec<Arc<CredState>> = r
            .creds
            .into_iter()
            .filter(|s| !s.revoked.swap(true, Ordering::AcqRel))
            .collect();
        fresh
            .into_iter()
            .map(|s| {
                let req = RevokeRequest {
                    id: &s.id,
                    run: &r.run,
                    agent: &r.agent,
                    expires_at_unix: s.expires_at_unix,
                    revoked_at_unix: now_unix,
                };
                match self.inner.providers.get(&s.provider) {
                    Some(ProviderSlot::Sync(p)) => {
                        let _ = p.revoke(&req);
                    }
                    Some(ProviderSlot::Async(p)) => {
                        let _ = p.revoke(&req);
                    }
                    None => {}
                }
                RevokedCredential {
                    id: s.id.clone(),
                    provider: s.provider.clone(),
                    run: r.run.clone(),
                    run_instance: instance,
                    agent: r.agent.clone(),
                    retention: s.retention.clone(),
                }
            })
            .collect()
    }
}

fn provider_err(p: &Prepared, e: ProviderError) -> CredentialError {
    CredentialError::Provider {
        provider: p.provider.clone(),
        reason: e.0,
    }
}

fn grant_pattern(g: &CompiledGrant, compartment: Option<&str>) -> Option<ResourcePattern> {
    let text = if g.resource.contains("{compartment}") {
        let c = compartment?;
        // A compartment id that could reshape the pattern never matches: one with a `/`, or
        // with a character that ends a path segment for some parser (`docs/{compartment}/x`
        // with `a;v` is `docs/a/x` to a servlet container, with `a#` or `a?` it is `docs/a`
        // to a URL parser, and with `aé` it is `docs/a?/x` after a lossy ASCII conversion).
        ResourcePattern::validate_resource(c).ok()?;
        if !c.is_ascii() || c.contains(['/', '?', '#', ';']) {
            return None;
        }
        g.resource.replace("{compartment}", c)
    } else {
        g.resource.clone()
    };
    ResourcePattern::parse(&text).ok()
}
