//! `ScopedCredential`: least-privilege, short-lived credentials minted per run.
//!
//! An agent never holds a standing secret. When a permitted call needs one, the permit asks the
//! [`CredentialBroker`] for a credential narrowed to that call: the permit's tool, its operation
//! (read or write), and a resource the role's grant covers, valid for the grant's TTL and at most
//! its number of uses. The value is reachable only through [`ScopedCredential::expose`], which
//! re-checks on every use that the permit belongs to the credential's run instance and agent,
//! that tool, operation and resource are inside the scope, and that the credential is neither
//! expired, used up, revoked nor held by the kill switch.
//!
//! Ending the run (finishing or dropping it) revokes every credential it was issued, at once in
//! process and for every verifier that consults the provider's [`RevocationList`]: a token
//! copied out before the run ended fails verification afterwards (see [`revocation`] for the
//! bound downstream). Credentials are bound to the run *instance*, so a later run reusing the id
//! of an ended one can neither use nor revoke what was issued to it.
//!
//! [`JwtProvider`] mints JSON Web Tokens signed with Ed25519 that any service verifies with a
//! standard JWT library and the exported public keys ([`JwtProvider::jwks`]); services hold no
//! key that could mint. [`StaticSecretProvider`] wraps a legacy secret; vaults and cloud STSs
//! plug in through [`CredentialProvider`] / [`AsyncCredentialProvider`].
//!
//! Secrets live in [`secrecy`] types: `Debug` prints a redaction, serialisation leaves the value
//! out, memory is zeroized on drop, and audit events carry the credential's id and scope only.
//!
//! ```
//! use tollgate::boundary::{ActionBoundary, Arg, RoleSpec, ToolSpec};
//! use tollgate::credential::token::{SigningKey, VerifyError};
//! use tollgate::credential::{CredentialBroker, CredentialGrant, JwtProvider, Operation};
//! use tollgate::{Guard, Outcome, RunContext, ToolCall, Verdict};
//! use std::time::Duration;
//!
//! let boundary = ActionBoundary::builder()
//!     .tool("read_document", ToolSpec::read().arg("path", Arg::string().required()))
//!     .role("intake", RoleSpec::new().tools(["read_document"]))
//!     .build()?;
//! let tokens = JwtProvider::new(SigningKey::generate("k1")?, "document-service");
//! let verifier = tokens.verifier(); // what the document service holds: public keys only
//! let jwks = tokens.jwks_json(); // ... or this, for a service written in another language
//! let broker = CredentialBroker::builder()
//!     .provider("docs", tokens)
//!     .grant("intake", CredentialGrant::new("docs", ["read_document"], [Operation::Read], "matter/{compartment}/*", Duration::from_secs(300)))
//!     .build()?;
//! let guard = Guard::builder(boundary).credentials(broker).build()?;
//! let run = guard.start_run(RunContext::new("bot", "intake").in_compartment("M-1001"))?;
//!
//! let Verdict::Allow(permit) = guard.check(&run, &ToolCall::new("read_document", r#"{"path":"a.pdf"}"#)) else { panic!() };
//! let cred = permit.credential("docs", "matter/M-1001/*")?;
//! let token = cred.expose(&permit, "matter/M-1001/a.pdf")?.to_owned(); // to the document service
//! let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
//! assert_eq!(verifier.verify(&token, now)?.resource, "matter/M-1001/*");
//! assert!(cred.expose(&permit, "matter/M-2002/a.pdf").is_err()); // another matter: refused
//! permit.complete(Outcome::success())?;
//! run.finish()?; // revokes the credential: the copied token no longer verifies
//! assert!(matches!(verifier.verify(&token, now), Err(VerifyError::Revoked { .. })));
//! # let _ = jwks;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod broker;
mod exposed;
mod jwt;
pub mod revocation;
mod scope;
mod scoped;
pub mod token;

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

pub(crate) use broker::{Asker, Binding, Prepared};
pub use broker::{BrokerBuilder, BrokerError, CredentialBroker, RevokedCredential};
pub(crate) use exposed::ExposedSecrets;
pub use jwt::JwtProvider;
pub use revocation::RevocationList;
pub use scope::{Operation, ResourceError, ResourcePattern, Scope};
pub use scoped::ScopedCredential;

use crate::audit::AuditError;
use crate::call::{AgentId, CredentialId, RoleName, RunId};

/// Longest TTL a grant may set (24 hours): credentials are meant to be short-lived.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// Shortest TTL a grant may set (1 second): credentials expire on whole seconds (`exp`).
pub const MIN_TTL: Duration = Duration::from_secs(1);

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
    /// The permit belongs to another run: another run id, or a later run that reuses the id
    /// (another instance), or another agent.
    #[error(
        "the credential belongs to run `{credential_run}` (instance {credential_instance}), the permit to run `{permit_run}` (instance {permit_instance})"
    )]
    WrongRun {
        /// The credential's run.
        credential_run: String,
        /// The credential's run instance.
        credential_instance: u64,
        /// The permit's run.
        permit_run: String,
        /// The permit's run instance.
        permit_instance: u64,
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
    /// Revoked (its run ended, the kill switch revoked it, or on request).
    #[error("the credential was revoked")]
    Revoked,
    /// The kill switch holds the run, its agent or everything: nothing is minted or released.
    #[error("the run is suspended by the kill switch ({0})")]
    Suspended(&'static str),
    /// Used as many times as allowed.
    #[error("the credential was already used {max} times, its maximum")]
    Exhausted {
        /// The maximum.
        max: u32,
    },
    /// The event could not be recorded, so the value is not released (fail closed).
    #[error("audit failed: {0}")]
    Audit(String),
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
            CredentialError::Suspended(_) => "suspended",
            CredentialError::Exhausted { .. } => "exhausted",
            CredentialError::Audit(_) => "audit_failed",
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

/// What a provider is asked to revoke at its source. Carries no secret.
#[derive(Debug)]
#[non_exhaustive]
pub struct RevokeRequest<'a> {
    /// The credential's id (a minted JWT's `jti`).
    pub id: &'a CredentialId,
    /// The run it was issued to.
    pub run: &'a RunId,
    /// The run's agent.
    pub agent: &'a AgentId,
    /// The credential's expiry, unix seconds: a revocation entry is not needed after it.
    pub expires_at_unix: u64,
    /// The time of the revocation, unix seconds.
    pub revoked_at_unix: u64,
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
    /// Invalidates a credential at the source (a vault lease, a token's `jti` on a revocation
    /// list). Called when its run ends or the kill switch revokes it, from the thread doing so,
    /// so it must not block for long. Default: nothing to do.
    fn revoke(&self, _req: &RevokeRequest<'_>) -> Result<(), ProviderError> {
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
/// use tollgate::credential::{AsyncCredentialProvider, MintRequest, ProviderError, RevokeRequest};
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
///     fn revoke(&self, req: &RevokeRequest<'_>) -> Result<(), ProviderError> {
///         self.0.revoke_lease(req.id.as_str());
///         Ok(())
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait AsyncCredentialProvider: Send + Sync {
    /// Mints the secret for `req`.
    async fn mint(&self, req: &MintRequest<'_>) -> Result<SecretString, ProviderError>;
    /// Invalidates a credential at the source. Called from the thread ending the run (or
    /// throwing the kill switch), so it must not block for long; the default does nothing.
    fn revoke(&self, _req: &RevokeRequest<'_>) -> Result<(), ProviderError> {
        Ok(())
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
/// cannot use such a grant, nor can one whose compartment id is not ASCII or holds `/`, `?`, `#`
/// or `;`, any of which could make the pattern name another compartment's resources). A grant never yields more than it names: the minted scope is the
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
    /// Lifetime of each credential (`ttl = "5m"`): whole seconds, 1 s to 24 h. Credentials
    /// carry their expiry in whole unix seconds, so a fraction of a second (`"1500ms"`) is
    /// refused rather than rounded.
    #[serde(with = "crate::units::duration")]
    pub ttl: Duration,
    /// Most uses of each credential (default: unlimited within its TTL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<u32>,
}

impl CredentialGrant {
    /// A grant of `provider` credentials for `tools`, `operations` and `resource`, living `ttl`
    /// each (checked when the broker is built: whole seconds, [`MIN_TTL`] to [`MAX_TTL`]).
    pub fn new<T: Into<String>>(
        provider: impl Into<String>,
        tools: impl IntoIterator<Item = T>,
        operations: impl IntoIterator<Item = Operation>,
        resource: impl Into<String>,
        ttl: Duration,
    ) -> Self {
        Self {
            provider: provider.into(),
            tools: tools.into_iter().map(Into::into).collect(),
            operations: operations.into_iter().collect(),
            resource: resource.into(),
            ttl,
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

pub(crate) fn unix_secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}
