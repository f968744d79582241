//! [`JwtProvider`]: per-credential JSON Web Tokens, signed with Ed25519, revocable.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use secrecy::SecretString;

use super::revocation::RevocationList;
use super::token::{DEFAULT_ISSUER, SigningKey, TokenClaims, TokenSigner, TokenVerifier};
use super::{CredentialProvider, MintRequest, ProviderError, RevokeRequest, Rotated};

/// Mints one JWT (RFC 7519, EdDSA) per credential for one audience (the downstream service),
/// and keeps the revocation list its verifiers consult.
///
/// * Claims: `iss` (default [`DEFAULT_ISSUER`]), `sub` = the agent, `aud` = the audience, `jti`
///   = the credential id, `iat` = `nbf` = issue time, `exp`, and the scope (`run`, `role`,
///   `tools`, `ops`, `resource`). Header: `alg` `EdDSA`, `kid` = the signing key's id.
/// * Revocation: when the broker revokes a credential (its run ended, the kill switch, or on
///   request), the provider puts its `jti` on its [`RevocationList`] until the token's `exp`.
///   [`verifier`](Self::verifier) shares that list; [`revocation_list`](Self::revocation_list)
///   is what to export to services elsewhere.
/// * Rotation: [`rotate_every`](Self::rotate_every) or on demand (`Guard::rotate_credential_key`);
///   a retired key keeps verifying until the last token it signed expires, no longer.
/// * Services elsewhere verify with the [`jwks`](Self::jwks) (public keys only).
pub struct JwtProvider {
    signer: TokenSigner,
    audience: String,
    issuer: String,
    revocations: RevocationList,
    rotate_every: Option<u64>,
    last_rotation: AtomicU64,
    generation: AtomicU64,
}

impl fmt::Debug for JwtProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtProvider")
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("signer", &self.signer)
            .field("revocations", &self.revocations)
            .field("rotate_every_secs", &self.rotate_every)
            .finish()
    }
}

impl JwtProvider {
    /// Signs with `key` tokens for `audience` (the `aud` claim: name the service that will
    /// verify them; its verifier refuses tokens meant for another).
    pub fn new(key: SigningKey, audience: impl Into<String>) -> Self {
        Self {
            signer: TokenSigner::new(key),
            audience: audience.into(),
            issuer: DEFAULT_ISSUER.to_owned(),
            revocations: RevocationList::new(),
            rotate_every: None,
            last_rotation: AtomicU64::new(0),
            generation: AtomicU64::new(1),
        }
    }

    /// Sets the `iss` claim (default [`DEFAULT_ISSUER`]).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }

    /// Puts revoked `jti`s on `list` instead of a list of its own (e.g. one list exported for
    /// several providers).
    pub fn revocations(mut self, list: RevocationList) -> Self {
        self.revocations = list;
        self
    }

    /// Rotates to a freshly generated key every `every` (checked when a credential is minted,
    /// against the guard's clock). The first mint starts the schedule.
    pub fn rotate_every(mut self, every: Duration) -> Self {
        self.rotate_every = Some(every.as_secs().max(1));
        self
    }

    /// A verifier for this provider's tokens: shares its public keys (sees rotations at once)
    /// and its revocation list (sees revocations at once). Holds no private key.
    pub fn verifier(&self) -> TokenVerifier {
        self.signer
            .verifier(&self.audience, self.revocations.clone())
            .issuer(&self.issuer)
    }

    /// The revocation list this provider fills; export it to services elsewhere
    /// ([`RevocationList::export_json`]).
    pub fn revocation_list(&self) -> &RevocationList {
        &self.revocations
    }

    /// The public keys that verify this provider's unexpired tokens, as a JWK Set (RFC 7517).
    pub fn jwks(&self) -> JwkSet {
        self.signer.jwks()
    }

    /// [`jwks`](Self::jwks) as JSON text, for a `/.well-known/jwks.json`-style endpoint.
    pub fn jwks_json(&self) -> String {
        serde_json::to_string(&self.jwks())
            .expect("a JWK Set holds only strings; JSON encoding cannot fail")
    }

    /// The audience (`aud`) of the tokens.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Id of the key new tokens are signed with.
    pub fn current_kid(&self) -> String {
        self.signer.current_kid()
    }

    /// Ids of the keys that still verify (current first) and, for retired ones, the time until
    /// which they do (the latest `exp` they signed). The signer itself is not handed out: whoever
    /// holds it can mint.
    pub fn kids(&self) -> Vec<(String, Option<u64>)> {
        self.signer.kids()
    }

    /// Rotates now to `key`, retiring the current one at `now_unix`.
    pub fn rotate(&self, key: SigningKey, now_unix: u64) -> Result<Rotated, ProviderError> {
        let current = key.kid().to_owned();
        let retired = self
            .signer
            .rotate(key, now_unix)
            .map_err(|e| ProviderError(e.to_string()))?;
        self.last_rotation.store(now_unix.max(1), Ordering::Release);
        Ok(Rotated { retired, current })
    }

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

impl CredentialProvider for JwtProvider {
    fn mint(&self, req: &MintRequest<'_>) -> Result<SecretString, ProviderError> {
        let claims = TokenClaims {
            iss: self.issuer.clone(),
            sub: req.agent.to_string(),
            aud: self.audience.clone(),
            jti: req.id.to_string(),
            iat: req.issued_at_unix,
            nbf: req.issued_at_unix,
            exp: req.expires_at_unix,
            run: req.run.to_string(),
            role: req.role.to_string(),
            tools: req.scope.tools.clone(),
            ops: req
                .scope
                .operations
                .iter()
                .map(|o| o.as_str().to_owned())
                .collect(),
            resource: req.scope.resource.to_string(),
        };
        self.signer
            .sign(&claims)
            .map_err(|e| ProviderError(e.to_string()))
    }

    fn revoke(&self, req: &RevokeRequest<'_>) -> Result<(), ProviderError> {
        self.revocations.revoke_and_prune(
            req.id.as_str(),
            req.expires_at_unix,
            req.revoked_at_unix,
        );
        Ok(())
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
