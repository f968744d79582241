//! `ScopedCredential`: least-privilege, short-lived credentials minted per run.
//!
//! An agent never holds a standing secret. When a permitted call needs one, the permit asks the
//! [`CredentialBroker`] for a credential narrowed to that call: the permit's tool, its operation
//! (read or write), and a resource the role's grant covers, valid for the grant's TTL and at most
//! its number of uses. The value is reachable only through [`ScopedCredential::expose`], which
//! re-checks on every use that the permit belongs to the credential's run, that tool, operation and
//! resource are inside the scope, that the credential is neither expired, used up nor revoked.
//! Ending the run (or dropping it) revokes every credential it was issued.
//!
//! Secrets live in [`secrecy`] types: `Debug` prints a redaction, serialisation leaves the value
//! out, memory is zeroized on drop, and audit events carry the credential's id and scope only.
//!
//! ```
//! use std::sync::Arc;
//! use tollgate::boundary::{ActionBoundary, Arg, RoleSpec, ToolSpec};
//! use tollgate::credential::{CredentialBroker, CredentialGrant, DerivedTokenProvider, Operation};
//! use tollgate::credential::token::SigningKey;
//! use tollgate::{Guard, Outcome, RunContext, ToolCall, Verdict};
//!
//! let boundary = ActionBoundary::builder()
//!     .tool("read_document", ToolSpec::read().arg("path", Arg::string().required()))
//!     .role("intake", RoleSpec::new().tools(["read_document"]))
//!     .build()?;
//! let tokens = DerivedTokenProvider::new(SigningKey::generate("k1")?, 3600);
//! let verifier = tokens.verifier(); // what the document service holds
//! let broker = CredentialBroker::builder()
//!     .provider("docs", tokens)
//!     .grant("intake", CredentialGrant::new("docs", ["read_document"], [Operation::Read], "matter/{compartment}/*", 300))
//!     .build()?;
//! let guard = Guard::builder(boundary).credentials(broker).build();
//! let run = guard.start_run(RunContext::new("bot", "intake").in_compartment("M-1001"))?;
//!
//! let Verdict::Allow(permit) = guard.check(&run, &ToolCall::new("read_document", r#"{"path":"a.pdf"}"#)) else { panic!() };
//! let cred = permit.credential("docs", "matter/M-1001/*")?;
//! let token = cred.expose(&permit, "matter/M-1001/a.pdf")?; // hand this to the document service
//! assert!(verifier.verify(token, u64::MAX / 2).is_err()); // (far future: expired)
//! assert!(cred.expose(&permit, "matter/M-2002/a.pdf").is_err()); // another matter: refused
//! permit.complete(Outcome::success())?;
//! drop(run); // revokes the credential
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod scope;
pub mod token;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

pub use scope::{Operation, ResourceError, ResourcePattern, Scope};

use crate::audit::{AuditError, CredentialEvent};
use crate::call::{AgentId, CredentialId, RoleName, RunId};
use crate::clock::MonoTime;
use token::{SigningKey, TokenClaims, TokenSigner, TokenVerifier};

/// Longest TTL a grant may set (24 hours): credentials are meant to be short-lived.
pub const MAX_TTL_SECS: u64 = 24 * 3600;

/// Why a credential could not be minted or used. Each refusal has its own variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The guard has no credential broker.
    #[error("no credential broker is configured")]
    NoBroker,
    /// No provider of that name.
    #[error("no credential provider named `{0}`")]
    UnknownProvider(String),
    /// A sync mint was asked of an async provider (use `credential_async`).
    #[error("provider `{0}` is async: use `Permit::credential_async`")]
    ProviderIsAsync(String),
    /// No grant of the role covers this provider, tool, operation and resource.
    #[error(
        "role `{role}` has no grant for provider `{provider}`, tool `{tool}`, {operation} on `{resource}`"
    )]
    NotGranted {
        /// The run's role.
        role: String,
        /// The provider asked for.
        provider: String,
        /// The permitted tool.
        tool: String,
        /// The tool's operation.
        operation: &'static str,
        /// The resource asked for.
        resource: String,
    },
    /// The resource text is not acceptable.
    #[error("{0}")]
    InvalidResource(#[from] ResourceError),
    /// The provider failed to mint.
    #[error("provider `{provider}` failed: {reason}")]
    Provider {
        /// The provider.
        provider: String,
        /// Its explanation (never a secret).
        reason: String,
    },
    /// The permit belongs to another run.
    #[error("the credential belongs to run `{credential_run}`, the permit to run `{permit_run}`")]
    WrongRun {
        /// The credential's run.
        credential_run: String,
        /// The permit's run.
        permit_run: String,
    },
    /// The permit's tool is outside the scope.
    #[error("tool `{0}` is outside the credential's scope")]
    WrongTool(String),
    /// The permit's operation is outside the scope.
    #[error("operation `{0}` is outside the credential's scope")]
    WrongOperation(&'static str),
    /// The resource is outside the scope.
    #[error("resource `{0}` is outside the credential's scope")]
    WrongResource(String),
    /// Past its expiry.
    #[error("the credential expired")]
    Expired,
    /// Revoked (its run ended, or on request).
    #[error("the credential was revoked")]
    Revoked,
    /// Used as many times as allowed.
    #[error("the credential was already used {max} times, its maximum")]
    Exhausted {
        /// The maximum.
        max: u32,
    },
    /// The event could not be recorded, so the value is not released (fail closed).
    #[error("audit failed: {0}")]
    Audit(String),
    /// A kill switch holds the run (`global`, `agent` or `run`): nothing is minted or released
    /// while it does, even under a permit obtained before the suspension.
    #[error("the run is suspended by the {0} kill switch")]
    Suspended(&'static str),
}

impl CredentialError {
    /// A stable snake_case code for dashboards and audit.
    pub fn code(&self) -> &'static str {
        match self {
            CredentialError::NoBroker => "no_broker",
            CredentialError::UnknownProvider(_) => "unknown_provider",
            CredentialError::ProviderIsAsync(_) => "provider_is_async",
            CredentialError::NotGranted { .. } => "not_granted",
            CredentialError::InvalidResource(_) => "invalid_resource",
            CredentialError::Provider { .. } => "provider_failed",
            CredentialError::WrongRun { .. } => "wrong_run",
            CredentialError::WrongTool(_) => "wrong_tool",
            CredentialError::WrongOperation(_) => "wrong_operation",
            CredentialError::WrongResource(_) => "wrong_resource",
            CredentialError::Expired => "expired",
            CredentialError::Revoked => "revoked",
            CredentialError::Exhausted { .. } => "exhausted",
            CredentialError::Audit(_) => "audit_failed",
            CredentialError::Suspended(_) => "suspended",
        }
    }
}

impl From<AuditError> for CredentialError {
    fn from(e: AuditError) -> Self {
        CredentialError::Audit(e.to_string())
    }
}

/// A provider's failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProviderError(pub String);

/// What a provider is asked to mint. Carries no secret.
#[derive(Debug)]
#[non_exhaustive]
pub struct MintRequest<'a> {
    /// The new credential's id.
    pub id: &'a CredentialId,
    /// The run it belongs to.
    pub run: &'a RunId,
    /// The acting agent.
    pub agent: &'a AgentId,
    /// The agent's role.
    pub role: &'a RoleName,
    /// What it covers.
    pub scope: &'a Scope,
    /// Issue time, unix seconds.
    pub issued_at_unix: u64,
    /// Expiry, unix seconds.
    pub expires_at_unix: u64,
}

/// A signing-key rotation a provider performed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    /// The key retired.
    pub retired: String,
    /// The key now current.
    pub current: String,
}

/// Mints secrets. Implement it for your secret store; sync form.
pub trait CredentialProvider: Send + Sync {
    /// Mints the secret for `req`.
    fn mint(&self, req: &MintRequest<'_>) -> Result<SecretString, ProviderError>;
    /// Invalidates a credential at the source (e.g. a vault lease). Default: nothing to do.
    fn revoke(&self, _id: &CredentialId) -> Result<(), ProviderError> {
        Ok(())
    }
    /// Rotates the provider's root key if its schedule says so at `now_unix`. Default: never.
    fn rotate_if_due(&self, _now_unix: u64) -> Result<Option<Rotated>, ProviderError> {
        Ok(None)
    }
    /// Rotates the provider's root key now (on demand). Default: the provider has no key to
    /// rotate (`Ok(None)`).
    fn rotate_now(&self, _now_unix: u64) -> Result<Option<Rotated>, ProviderError> {
        Ok(None)
    }
}

/// Mints secrets over the network (a vault, a cloud STS); async form, any executor.
///
/// Wrapping an external vault: ask it for a lease narrowed to the request's scope and TTL, and
/// revoke the lease when tollgate revokes the credential.
///
/// ```
/// use secrecy::SecretString;
/// use tollgate::call::CredentialId;
/// use tollgate::credential::{AsyncCredentialProvider, MintRequest, ProviderError};
///
/// /// Stand-in for a vault client (HashiCorp Vault, AWS STS, ...).
/// struct VaultClient;
/// impl VaultClient {
///     async fn issue_lease(&self, path: &str, ttl_secs: u64) -> Result<(String, String), String> {
///         Ok((format!("lease/{path}"), format!("s.{ttl_secs}")))
///     }
///     fn revoke_lease(&self, _lease: &str) {}
/// }
///
/// struct Vault(VaultClient);
///
/// #[async_trait::async_trait]
/// impl AsyncCredentialProvider for Vault {
///     async fn mint(&self, req: &MintRequest<'_>) -> Result<SecretString, ProviderError> {
///         let ttl = req.expires_at_unix.saturating_sub(req.issued_at_unix);
///         let path = req.scope.resource.to_string();
///         let (_lease, token) = self.0.issue_lease(&path, ttl).await.map_err(ProviderError)?;
///         Ok(SecretString::from(token))
///     }
///     fn revoke(&self, id: &CredentialId) -> Result<(), ProviderError> {
///         self.0.revoke_lease(id.as_str());
///         Ok(())
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait AsyncCredentialProvider: Send + Sync {
    /// Mints the secret for `req`.
    async fn mint(&self, req: &MintRequest<'_>) -> Result<SecretString, ProviderError>;
    /// Invalidates a credential at the source. Called from the thread ending the run, so it must
    /// not block for long; the default does nothing.
    fn revoke(&self, _id: &CredentialId) -> Result<(), ProviderError> {
        Ok(())
    }
}

/// Signed, self-describing tokens (HMAC-SHA256 over the scope, run, expiry and a nonce) that a
/// downstream service verifies with [`TokenVerifier`]. Optionally rotates its key on a schedule;
/// tokens signed with a retired key verify until the grace period ends.
pub struct DerivedTokenProvider {
    signer: TokenSigner,
    rotate_every: Option<u64>,
    last_rotation: AtomicU64,
    generation: AtomicU64,
}

impl fmt::Debug for DerivedTokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DerivedTokenProvider")
            .field("current_kid", &self.signer.current_kid())
            .field("rotate_every_secs", &self.rotate_every)
            .finish()
    }
}

impl DerivedTokenProvider {
    /// Signs with `key`; a retired key keeps verifying for `grace_secs` (set it to at least the
    /// longest TTL you grant).
    pub fn new(key: SigningKey, grace_secs: u64) -> Self {
        Self {
            signer: TokenSigner::new(key, grace_secs),
            rotate_every: None,
            last_rotation: AtomicU64::new(0),
            generation: AtomicU64::new(1),
        }
    }

    /// Rotates to a freshly generated key every `every` (checked when a credential is minted,
    /// against the guard's clock). The first mint starts the schedule.
    pub fn rotate_every(mut self, every: Duration) -> Self {
        self.rotate_every = Some(every.as_secs().max(1));
        self
    }

    /// A verifier that shares this provider's key ring (sees rotations at once).
    pub fn verifier(&self) -> TokenVerifier {
        self.signer.verifier()
    }

    /// Rotates now to `key`, retiring the current one at `now_unix`.
    pub fn rotate(&self, key: SigningKey, now_unix: u64) -> Result<Rotated, ProviderError> {
        let current = key.kid().to_owned();
        let retired = self
            .signer
            .rotate(key, now_unix)
            .map_err(|e| ProviderError(e.to_string()))?;
        self.last_rotation.store(now_unix, Ordering::Release);
        Ok(Rotated { retired, current })
    }
}

impl CredentialProvider for DerivedTokenProvider {
    fn mint(&self, req: &MintRequest<'_>) -> Result<SecretString, ProviderError> {
        let claims = TokenClaims {
            credential_id: req.id.to_string(),
            run: req.run.to_string(),
            tools: req.scope.tools.clone(),
            operations: req
                .scope
                .operations
                .iter()
                .map(|o| o.as_str().to_owned())
                .collect(),
            resource: req.scope.resource.to_string(),
            issued_at: req.issued_at_unix,
            expires_at: req.expires_at_unix,
            nonce: TokenSigner::nonce().map_err(|e| ProviderError(e.to_string()))?,
        };
        Ok(self.signer.sign(&claims))
    }

    fn rotate_if_due(&self, now_unix: u64) -> Result<Option<Rotated>, ProviderError> {
        let Some(every) = self.rotate_every else {
            return Ok(None);
        };
        let last = self.last_rotation.load(Ordering::Acquire);
        if last == 0 {
            // First use starts the schedule.
            let _ = self.last_rotation.compare_exchange(
                0,
                now_unix.max(1),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            return Ok(None);
        }
        if now_unix < last.saturating_add(every) {
            return Ok(None);
        }
        // One thread wins the rotation; the others keep signing with the current key.
        if self
            .last_rotation
            .compare_exchange(last, now_unix, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Ok(None);
        }
        self.rotate_generated(now_unix).map(Some)
    }

    fn rotate_now(&self, now_unix: u64) -> Result<Option<Rotated>, ProviderError> {
        self.last_rotation.store(now_unix.max(1), Ordering::Release);
        self.rotate_generated(now_unix).map(Some)
    }
}

impl DerivedTokenProvider {
    fn rotate_generated(&self, now_unix: u64) -> Result<Rotated, ProviderError> {
        let n = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let key = SigningKey::generate(format!("k{n}-{now_unix:x}"))
            .map_err(|e| ProviderError(e.to_string()))?;
        let current = key.kid().to_owned();
        let retired = self
            .signer
            .rotate(key, now_unix)
            .map_err(|e| ProviderError(e.to_string()))?;
        Ok(Rotated { retired, current })
    }
}

/// A fixed secret for a legacy API that cannot mint per-call tokens. The secret itself cannot be
/// narrowed, but the agent still only ever holds a scoped, expiring, revocable, use-counted handle
/// to it, and the value never appears in any log.
pub struct StaticSecretProvider {
    secret: SecretString,
}

impl fmt::Debug for StaticSecretProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticSecretProvider([REDACTED])")
    }
}

impl StaticSecretProvider {
    /// Wraps `secret`.
    pub fn new(secret: SecretString) -> Self {
        Self { secret }
    }
}

impl CredentialProvider for StaticSecretProvider {
    fn mint(&self, _req: &MintRequest<'_>) -> Result<SecretString, ProviderError> {
        Ok(self.secret.clone())
    }
}

/// One role's permission to obtain credentials from one provider.
///
/// `resource` may contain `{compartment}`, replaced by the run's compartment (a run bound to none
/// cannot use such a grant). A grant never yields more than it names: the minted scope is the
/// permit's single tool and operation and a resource the grant's pattern includes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialGrant {
    /// The provider's name.
    pub provider: String,
    /// Tools that may use such credentials.
    pub tools: Vec<String>,
    /// Operations they may perform.
    pub operations: Vec<Operation>,
    /// The widest resource pattern (`matter/{compartment}/*`, `https://api.example/v1/*`, `*`).
    pub resource: String,
    /// Lifetime of each credential, in seconds (1 to 86 400).
    pub ttl_secs: u64,
    /// Most uses of each credential (default: unlimited within its TTL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<u32>,
}

impl CredentialGrant {
    /// A grant of `provider` credentials for `tools`, `operations` and `resource`, living
    /// `ttl_secs` each.
    pub fn new<T: Into<String>>(
        provider: impl Into<String>,
        tools: impl IntoIterator<Item = T>,
        operations: impl IntoIterator<Item = Operation>,
        resource: impl Into<String>,
        ttl_secs: u64,
    ) -> Self {
        Self {
            provider: provider.into(),
            tools: tools.into_iter().map(Into::into).collect(),
            operations: operations.into_iter().collect(),
            resource: resource.into(),
            ttl_secs,
            max_uses: None,
        }
    }

    /// Limits each credential to `n` uses.
    pub fn max_uses(mut self, n: u32) -> Self {
        self.max_uses = Some(n);
        self
    }
}

/// A credential policy document: grants per role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialPolicy {
    /// Grants by role name.
    #[serde(default)]
    pub grants: BTreeMap<String, Vec<CredentialGrant>>,
}

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
struct CredState {
    id: CredentialId,
    provider: String,
    revoked: AtomicBool,
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
                if g.ttl_secs == 0 || g.ttl_secs > MAX_TTL_SECS {
                    return Err(bad(
                        "ttl_secs",
                        format!("must be between 1 and {MAX_TTL_SECS} seconds"),
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
                    ttl: g.ttl_secs,
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
            }),
        })
    }
}

struct BrokerInner {
    providers: BTreeMap<String, ProviderSlot>,
    grants: HashMap<String, Vec<CompiledGrant>>,
    live: Mutex<HashMap<RunId, Vec<Arc<CredState>>>>,
    counter: AtomicU64,
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
    pub(crate) run: &'a RunId,
    pub(crate) role: &'a RoleName,
    pub(crate) compartment: Option<&'a str>,
    pub(crate) tool: &'a str,
    pub(crate) operation: Operation,
}

impl CredentialBroker {
    /// Starts configuring a broker.
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder::default()
    }

    /// Number of credentials issued and not yet revoked.
    pub fn live_count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RunId, Vec<Arc<CredState>>>> {
        // The map is only ever pushed to or drained; a panic elsewhere cannot leave it torn.
        self.inner.live.lock().unwrap_or_else(|p| p.into_inner())
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
            id: CredentialId::new(format!("cred-{}-{n}", who.run)),
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
            Some(ProviderSlot::Sync(p)) => p.mint(req).map_err(|e| CredentialError::Provider {
                provider: prepared.provider.clone(),
                reason: e.0,
            }),
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

    /// Registers a minted credential under its run and returns its shared state.
    fn register(&self, run: &RunId, id: &CredentialId, provider: &str) -> Arc<CredState> {
        let state = Arc::new(CredState {
            id: id.clone(),
            provider: provider.to_owned(),
            revoked: AtomicBool::new(false),
        });
        self.lock()
            .entry(run.clone())
            .or_default()
            .push(Arc::clone(&state));
        state
    }

    /// Revokes every credential of `run` (idempotent); returns `(id, provider)` of each one
    /// revoked now. Provider-side revocation errors are ignored here: the local flag, checked on
    /// every use, is what makes revocation certain.
    pub(crate) fn revoke_run(&self, run: &RunId) -> Vec<(CredentialId, String)> {
        let states = self.lock().remove(run).unwrap_or_default();
        states
            .into_iter()
            .filter(|s| !s.revoked.swap(true, Ordering::AcqRel))
            .map(|s| {
                match self.inner.providers.get(&s.provider) {
                    Some(ProviderSlot::Sync(p)) => {
                        let _ = p.revoke(&s.id);
                    }
                    Some(ProviderSlot::Async(p)) => {
                        let _ = p.revoke(&s.id);
                    }
                    None => {}
                }
                (s.id.clone(), s.provider.clone())
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
        // A compartment id that could reshape the pattern never matches.
        ResourcePattern::validate_resource(c).ok()?;
        if c.contains('/') {
            return None;
        }
        g.resource.replace("{compartment}", c)
    } else {
        g.resource.clone()
    };
    ResourcePattern::parse(&text).ok()
}

pub(crate) fn unix_secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// A short-lived secret for one run and one scope. Obtain it from
/// [`Permit::credential`](crate::Permit::credential); read it only through [`expose`](Self::expose).
///
/// `Debug` and `Display` show its id and scope; serialisation writes its metadata only; the value
/// is zeroized when the credential is dropped.
pub struct ScopedCredential {
    state: Arc<CredState>,
    run: RunId,
    scope: Scope,
    expires: MonoTime,
    expires_at_unix: u64,
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
            .field("scope", &self.scope)
            .field("expires_at_unix", &self.expires_at_unix)
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
        let mut st = s.serialize_struct("ScopedCredential", 5)?;
        st.serialize_field("id", &self.state.id)?;
        st.serialize_field("provider", &self.state.provider)?;
        st.serialize_field("run", &self.run)?;
        st.serialize_field("scope", &self.scope)?;
        st.serialize_field("expires_at_unix", &self.expires_at_unix)?;
        st.end()
    }
}

impl ScopedCredential {
    pub(crate) fn new(
        broker: &CredentialBroker,
        prepared: Prepared,
        run: &RunId,
        expires: MonoTime,
        expires_at_unix: u64,
        secret: SecretString,
    ) -> Self {
        let state = broker.register(run, &prepared.id, &prepared.provider);
        Self {
            state,
            run: run.clone(),
            scope: prepared.scope,
            expires,
            expires_at_unix,
            max_uses: prepared.max_uses,
            uses: AtomicU32::new(0),
            secret,
        }
    }

    /// The credential's id (safe to log).
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

    /// Expiry, unix seconds.
    pub fn expires_at_unix(&self) -> u64 {
        self.expires_at_unix
    }

    /// The provider that minted it.
    pub fn provider_name(&self) -> &str {
        &self.state.provider
    }

    /// Whether it was revoked.
    pub fn is_revoked(&self) -> bool {
        self.state.revoked.load(Ordering::Acquire)
    }

    /// The checks `expose` makes, without counting a use.
    pub(crate) fn check_use(
        &self,
        permit_run: &RunId,
        tool: &str,
        operation: Operation,
        resource: &str,
        now: MonoTime,
    ) -> Result<(), CredentialError> {
        if permit_run != &self.run {
            return Err(CredentialError::WrongRun {
                credential_run: self.run.to_string(),
                permit_run: permit_run.to_string(),
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
