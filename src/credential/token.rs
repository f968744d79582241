//! Tokens any downstream service can verify: JSON Web Tokens (RFC 7519) signed with EdDSA
//! (Ed25519, RFC 8037), through the maintained `jsonwebtoken` and `ed25519-dalek` crates.
//!
//! # Format
//!
//! A compact JWS, `base64url(header).base64url(claims).base64url(signature)`, with the header
//! `{"typ":"JWT","alg":"EdDSA","kid":"<key id>"}` and the claims of [`TokenClaims`]: the
//! registered `iss`, `sub` (the agent), `aud` (the service the token is for), `jti` (the
//! credential id, what revocation names), `iat`, `nbf` and `exp` (unix seconds), and the
//! scope: `run`, `role`, `tools`, `ops` and `resource`.
//!
//! # Security rationale
//!
//! * **Services hold no minting key.** Signing is asymmetric: the provider keeps the Ed25519
//!   private keys, verifiers get [`PublicKey`]s, exported as a JSON Web Key Set
//!   ([`TokenSigner::jwks`], RFC 7517) that a service in any language loads into its standard
//!   JWT library. A compromised service cannot forge a token for another.
//! * **One algorithm, chosen by the verifier.** [`TokenVerifier::verify`] accepts `EdDSA` only,
//!   whatever the header says, so `alg: none` and the HS256-with-the-public-key confusion cannot
//!   be used; a header that carries its own key (`jwk`, `jku`, `x5u`, `x5c`) or critical
//!   extensions (`crit`) is refused rather than ignored.
//! * **Authenticate, then read the claims.** After a length bound, only the header is parsed
//!   before the signature is checked (it names the key); the claims are parsed, strictly (no
//!   unknown fields), only from a token whose signature verified.
//! * **Key id in the token.** The verifier picks exactly one key by `kid`. Rotation
//!   ([`TokenSigner::rotate`]) makes a new key current and retires the old one, which keeps
//!   verifying exactly as long as a token it signed can still be unexpired (the ring tracks the
//!   latest `exp` each key signed), then fails with [`VerifyError::KeyRetired`] and is dropped at
//!   the next rotation. The rings live behind `ArcSwap`, so a rotation never blocks a verifier.
//! * **Revocation.** A verifier given a [`RevocationList`] refuses every `jti` on it
//!   ([`VerifyError::Revoked`]); see [`crate::credential::revocation`] for the bound.
//! * **Secrets never leak through formatting.** Private keys are zeroized on drop and redacted
//!   from `Debug`; a minted token is a [`SecretString`].
//!
//! # Time
//!
//! Nothing here reads the clock: times are unix seconds passed in. `exp` is exclusive (valid
//! while `now < exp`); `nbf` and `iat` may lie at most [`CLOCK_SKEW_SECS`] in the future.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parking_lot::Mutex;
use secrecy::SecretString;
use secrecy::zeroize::Zeroize;

use super::revocation::RevocationList;
use super::{Operation, ResourcePattern};

/// Longest token (in bytes) [`TokenVerifier::verify`] accepts; longer input is refused before
/// anything is parsed.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// How far in the future `nbf` and `iat` may lie before a token is "not yet valid".
pub const CLOCK_SKEW_SECS: u64 = 60;
/// Maximum length of a key id, in characters.
pub const MAX_KID_LEN: usize = 64;
/// The `iss` claim unless configured otherwise.
pub const DEFAULT_ISSUER: &str = "tollgate";

/// What a token authorises. These are the JWT's claims, serialised under these names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenClaims {
    /// Issuer (`iss`).
    pub iss: String,
    /// Subject (`sub`): the agent the credential was minted for.
    pub sub: String,
    /// Audience (`aud`): the service the token is for.
    pub aud: String,
    /// JWT id (`jti`): the credential's id, what revocation names.
    pub jti: String,
    /// Issued at (`iat`), unix seconds.
    pub iat: u64,
    /// Not before (`nbf`), unix seconds.
    pub nbf: u64,
    /// Expiry (`exp`), unix seconds, exclusive: valid while `now < exp`.
    pub exp: u64,
    /// The agent run the token was minted for.
    pub run: String,
    /// The agent's role.
    pub role: String,
    /// Tools the bearer may call.
    pub tools: Vec<String>,
    /// Permitted operations: `"read"`, `"write"`.
    pub ops: Vec<String>,
    /// The resource pattern covered, such as `"matter/M-1001/*"`.
    pub resource: String,
}

impl TokenClaims {
    /// Whether the token covers a request for `tool` doing `operation` on `resource`, by the same
    /// rules the broker applied when it narrowed the scope ([`ResourcePattern::covers`]: whole
    /// segments, and none of the disguised `..`, look-alike or white-space segments). A service
    /// calls this after [`TokenVerifier::verify`] with what the request actually asks for.
    pub fn permits(&self, tool: &str, operation: Operation, resource: &str) -> bool {
        self.tools.iter().any(|t| t == tool)
            && self.ops.iter().any(|o| o == operation.as_str())
            && ResourcePattern::parse(&self.resource).is_ok_and(|p| p.covers(resource))
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Not a JWT this verifier reads: too long, not three base64url segments, a header that is
    /// not JSON, an algorithm other than EdDSA, a missing or invalid `kid`, a header carrying its
    /// own key or `crit`, or (after the signature verified) claims that are not exactly
    /// [`TokenClaims`].
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// No key with this id is known to the verifier.
    #[error("unknown signing key id {0:?}")]
    UnknownKey(String),
    /// The signature does not verify: the token was tampered with or forged.
    #[error("bad token signature")]
    BadSignature,
    /// The signing key was retired and every token it signed has expired.
    #[error("signing key {kid:?} is retired")]
    KeyRetired {
        /// Id of the retired key.
        kid: String,
    },
    /// `iss` is not the expected issuer.
    #[error("token issuer {found:?} is not {expected:?}")]
    WrongIssuer {
        /// The verifier's issuer.
        expected: String,
        /// The token's `iss`.
        found: String,
    },
    /// `aud` is not this verifier's audience: a token for another service.
    #[error("token audience {found:?} is not {expected:?}")]
    WrongAudience {
        /// The verifier's audience.
        expected: String,
        /// The token's `aud`.
        found: String,
    },
    /// The token expired (`now >= exp`).
    #[error("token expired at {expired_at}")]
    Expired {
        /// The token's `exp`.
        expired_at: u64,
    },
    /// `nbf` or `iat` lies more than [`CLOCK_SKEW_SECS`] in the future.
    #[error("token not valid before {not_before}")]
    NotYetValid {
        /// The later of the token's `nbf` and `iat`.
        not_before: u64,
    },
    /// The token's `jti` is on the verifier's revocation list: its run ended or was stopped.
    #[error("token {jti:?} was revoked")]
    Revoked {
        /// The revoked credential id.
        jti: String,
    },
    /// No JWT crypto backend is usable in this build (both or neither of `jsonwebtoken`'s
    /// `rust_crypto` and `aws_lc_rs` features are enabled and none was installed).
    #[error("no JWT crypto backend is available")]
    NoCryptoBackend,
}

/// Errors creating or loading keys, rotating, or signing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The key id is empty, longer than [`MAX_KID_LEN`], or uses characters outside
    /// `[A-Za-z0-9_-]`.
    #[error("invalid key id {0:?}: need 1..=64 chars of [A-Za-z0-9_-]")]
    InvalidKeyId(String),
    /// A key with this id is already in the key ring.
    #[error("key id {0:?} is already in the key ring")]
    DuplicateKeyId(String),
    /// A JWK is not an Ed25519 public key (`kty` `OKP`, `crv` `Ed25519`, 32-byte `x`), has no
    /// `kid`, or a JWK Set is not valid JSON.
    #[error("invalid JWK{}: {reason}", kid.as_deref().map(|k| format!(" {k:?}")).unwrap_or_default())]
    InvalidJwk {
        /// The key's id, if it had one.
        kid: Option<String>,
        /// What is wrong.
        reason: String,
    },
    /// The OS random number generator failed.
    #[error("random number generator failed: {0}")]
    Random(String),
    /// Encoding the key or signing failed.
    #[error("signing failed: {0}")]
    Signing(String),
    /// No JWT crypto backend is usable in this build (see [`VerifyError::NoCryptoBackend`]).
    #[error("no JWT crypto backend is available")]
    NoCryptoBackend,
}

fn valid_kid(kid: &str) -> bool {
    (1..=MAX_KID_LEN).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn backend_available() -> bool {
    jsonwebtoken::crypto::CryptoProvider::try_get_default().is_some()
}

/// An Ed25519 signing key and its id. The private key is zeroized on drop and redacted from
/// `Debug`.
pub struct SigningKey {
    kid: String,
    /// PKCS#8 form, what `jsonwebtoken` signs with (zeroized on drop by `jsonwebtoken`).
    encoding: EncodingKey,
    public: PublicKey,
}

impl SigningKey {
    /// A fresh key from the OS random number generator. `kid` must be 1..=64 chars of
    /// `[A-Za-z0-9_-]`.
    pub fn generate(kid: impl Into<String>) -> Result<Self, TokenError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| TokenError::Random(e.to_string()))?;
        let key = Self::from_seed(kid, &seed);
        seed.zeroize();
        key
    }

    /// A key from its 32-byte Ed25519 seed (the RFC 8032 private key), e.g. loaded from a vault.
    pub fn from_seed(kid: impl Into<String>, seed: &[u8; 32]) -> Result<Self, TokenError> {
        let kid = kid.into();
        if !valid_kid(&kid) {
            return Err(TokenError::InvalidKeyId(kid));
        }
        let dalek = ed25519_dalek::SigningKey::from_bytes(seed);
        let der = dalek
            .to_pkcs8_der()
            .map_err(|e| TokenError::Signing(e.to_string()))?;
        let encoding = EncodingKey::from_ed_der(der.as_bytes());
        let public = PublicKey::new(kid.clone(), dalek.verifying_key())?;
        Ok(Self {
            kid,
            encoding,
            public,
        })
    }

    /// The key id written into the `kid` header of tokens signed with this key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half, for verifiers.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("private_key", &"[REDACTED]")
            .finish()
    }
}

/// An Ed25519 public key and its id: all a verifier needs. Cheap to clone.
#[derive(Clone)]
pub struct PublicKey {
    kid: String,
    key: ed25519_dalek::VerifyingKey,
    decoding: DecodingKey,
}

impl PublicKey {
    fn new(kid: String, key: ed25519_dalek::VerifyingKey) -> Result<Self, TokenError> {
        let x = URL_SAFE_NO_PAD.encode(key.as_bytes());
        let decoding = DecodingKey::from_ed_components(&x).map_err(|e| TokenError::InvalidJwk {
            kid: Some(kid.clone()),
            reason: e.to_string(),
        })?;
        Ok(Self { kid, key, decoding })
    }

    /// Reads an Ed25519 public key from its JWK (`kty` `OKP`, `crv` `Ed25519`, `x`, `kid`).
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, TokenError> {
        let kid = jwk.common.key_id.clone();
        let bad = |reason: &str| TokenError::InvalidJwk {
            kid: kid.clone(),
            reason: reason.to_owned(),
        };
        let Some(id) = kid.clone().filter(|k| valid_kid(k)) else {
            return Err(bad("no `kid`, or not 1..=64 chars of [A-Za-z0-9_-]"));
        };
        if jwk
            .common
            .key_algorithm
            .is_some_and(|a| a != KeyAlgorithm::EdDSA)
        {
            return Err(bad("`alg` is not EdDSA"));
        }
        let AlgorithmParameters::OctetKeyPair(p) = &jwk.algorithm else {
            return Err(bad("not an octet key pair (`kty` must be `OKP`)"));
        };
        if p.curve != EllipticCurve::Ed25519 {
            return Err(bad("`crv` is not Ed25519"));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(&p.x)
            .map_err(|_| bad("`x` is not base64url without padding"))?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| bad("`x` is not 32 bytes"))?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|_| bad("`x` is not an Ed25519 point"))?;
        Self::new(id, key)
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The 32-byte Ed25519 public key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.key.as_bytes()
    }

    /// The key as a JWK: `{"kty":"OKP","crv":"Ed25519","x":...,"kid":...,"alg":"EdDSA","use":"sig"}`.
    pub fn to_jwk(&self) -> Jwk {
        Jwk {
            common: CommonParameters {
                public_key_use: Some(PublicKeyUse::Signature),
                key_algorithm: Some(KeyAlgorithm::EdDSA),
                key_id: Some(self.kid.clone()),
                ..CommonParameters::default()
            },
            algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                key_type: OctetKeyPairType::OctetKeyPair,
                curve: EllipticCurve::Ed25519,
                x: URL_SAFE_NO_PAD.encode(self.key.as_bytes()),
            }),
        }
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.kid)
            .field("x", &URL_SAFE_NO_PAD.encode(self.key.as_bytes()))
            .finish()
    }
}

/// When a key stops verifying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Current (signing) key, or a key a standalone verifier was given.
    Active,
    /// Retired at this time; verifies while `now < latest_exp`.
    Retired { at: u64 },
}

/// One key as verifiers see it.
#[derive(Debug, Clone)]
struct VerifyEntry {
    public: PublicKey,
    status: Status,
    /// The latest `exp` of any token this key signed (shared with the signer's entry).
    latest_exp: Arc<AtomicU64>,
}

/// The public keys a verifier consults. Shared through `Arc<ArcSwap<_>>` so a rotation is a
/// pointer swap.
#[derive(Debug, Default)]
struct PublicRing {
    entries: Vec<VerifyEntry>,
}

impl PublicRing {
    fn find(&self, kid: &str) -> Option<&VerifyEntry> {
        self.entries.iter().find(|e| e.public.kid == kid)
    }
}

/// One key as the signer holds it.
struct SignEntry {
    key: Arc<SigningKey>,
    latest_exp: Arc<AtomicU64>,
}

/// Keys rotate under this lock (writers only; signers and verifiers never take it).
struct Rings {
    /// The current signing key.
    current: ArcSwap<SignEntry>,
    /// What verifiers see: the current key and the retired keys whose tokens may be unexpired.
    public: Arc<ArcSwap<PublicRing>>,
    rotation: Mutex<()>,
}

/// Signs tokens with the current key of a rotating key ring; hands out verifiers and the JWKS.
/// Cheap to clone (clones share the ring).
#[derive(Clone)]
pub struct TokenSigner {
    rings: Arc<Rings>,
}

impl TokenSigner {
    /// A signer whose current key is `key`.
    pub fn new(key: SigningKey) -> Self {
        let latest_exp = Arc::new(AtomicU64::new(0));
        let public = PublicRing {
            entries: vec![VerifyEntry {
                public: key.public.clone(),
                status: Status::Active,
                latest_exp: Arc::clone(&latest_exp),
            }],
        };
        Self {
            rings: Arc::new(Rings {
                current: ArcSwap::from_pointee(SignEntry {
                    key: Arc::new(key),
                    latest_exp,
                }),
                public: Arc::new(ArcSwap::from_pointee(public)),
                rotation: Mutex::new(()),
            }),
        }
    }

    /// Signs `claims` with the current key (header `{"typ":"JWT","alg":"EdDSA","kid":...}`).
    pub fn sign(&self, claims: &TokenClaims) -> Result<SecretString, TokenError> {
        if !backend_available() {
            return Err(TokenError::NoCryptoBackend);
        }
        let current = self.rings.current.load();
        // Before signing: a rotation that retires this key sees this token's expiry.
        current.latest_exp.fetch_max(claims.exp, Ordering::AcqRel);
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(current.key.kid.clone());
        let mut token = jsonwebtoken::encode(&header, claims, &current.key.encoding)
            .map_err(|e| TokenError::Signing(e.to_string()))?;
        // Copy into an exact-size box and wipe the original, so no spare capacity keeps a copy.
        let boxed: Box<str> = token.as_str().into();
        token.zeroize();
        Ok(SecretString::from(boxed))
    }

    /// Makes `key` current. The previous key is retired at `now`: it keeps verifying while a
    /// token it signed can be unexpired (until the latest `exp` it signed), then yields
    /// [`VerifyError::KeyRetired`]. Retired keys whose tokens have all expired by `now` are
    /// dropped. Returns the retired key's id. Refuses a `kid` still in the ring.
    pub fn rotate(&self, key: SigningKey, now: u64) -> Result<String, TokenError> {
        let _writer = self.rings.rotation.lock();
        let old = self.rings.public.load_full();
        let current = self.rings.current.load_full();
        let mut entries = Vec::with_capacity(old.entries.len() + 1);
        for e in &old.entries {
            let status = match e.status {
                Status::Active if e.public.kid == current.key.kid => Status::Retired { at: now },
                Status::Active => e.status,
                Status::Retired { .. } if e.latest_exp.load(Ordering::Acquire) <= now => continue,
                Status::Retired { .. } => e.status,
            };
            entries.push(VerifyEntry {
                status,
                ..e.clone()
            });
        }
        if entries.iter().any(|e| e.public.kid == key.kid) {
            return Err(TokenError::DuplicateKeyId(key.kid));
        }
        let latest_exp = Arc::new(AtomicU64::new(0));
        entries.insert(
            0,
            VerifyEntry {
                public: key.public.clone(),
                status: Status::Active,
                latest_exp: Arc::clone(&latest_exp),
            },
        );
        let retired = current.key.kid.clone();
        // Verifiers learn the new key before anything is signed with it.
        self.rings.public.store(Arc::new(PublicRing { entries }));
        self.rings.current.store(Arc::new(SignEntry {
            key: Arc::new(key),
            latest_exp,
        }));
        Ok(retired)
    }

    /// Id of the key new tokens are signed with.
    pub fn current_kid(&self) -> String {
        self.rings.current.load().key.kid.clone()
    }

    /// Ids of every key that still verifies (current first), and for retired ones, until when.
    pub fn kids(&self) -> Vec<(String, Option<u64>)> {
        self.rings
            .public
            .load()
            .entries
            .iter()
            .map(|e| {
                let until = match e.status {
                    Status::Active => None,
                    Status::Retired { .. } => Some(e.latest_exp.load(Ordering::Acquire)),
                };
                (e.public.kid.clone(), until)
            })
            .collect()
    }

    /// The public keys of the current and the still-verifying retired keys as a JSON Web Key
    /// Set (RFC 7517): what a downstream service loads into its JWT library, and polls to learn
    /// rotations. Holds no private key.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: self
                .rings
                .public
                .load()
                .entries
                .iter()
                .map(|e| e.public.to_jwk())
                .collect(),
        }
    }

    /// A verifier for tokens with this `aud` and the default issuer, sharing this signer's
    /// public ring (it sees rotations at once) and consulting `revocations`.
    pub fn verifier(&self, audience: &str, revocations: RevocationList) -> TokenVerifier {
        TokenVerifier {
            ring: Arc::clone(&self.rings.public),
            audience: audience.to_owned(),
            issuer: DEFAULT_ISSUER.to_owned(),
            revocations: Some(revocations),
        }
    }
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigner")
            .field("current_kid", &self.current_kid())
            .field("ring", &**self.rings.public.load())
            .finish_non_exhaustive()
    }
}

/// Verifies tokens for one audience; holds public keys only. Cheap to clone.
///
/// In the process that mints, get one from the provider (it shares the key ring and the
/// revocation list). A Rust service elsewhere builds one from the JWKS
/// ([`TokenVerifier::from_jwks`]) and the revocation export it polls
/// ([`RevocationList::merge`]); a service in another language uses its own JWT library with the
/// JWKS, `alg` fixed to `EdDSA`, and checks `aud`, `iss`, `exp`, `nbf` and the polled `jti` list.
#[derive(Clone)]
pub struct TokenVerifier {
    ring: Arc<ArcSwap<PublicRing>>,
    audience: String,
    issuer: String,
    revocations: Option<RevocationList>,
}

impl TokenVerifier {
    /// A standalone verifier of tokens for `audience`, trusting `keys` (all active).
    pub fn from_public_keys(keys: Vec<PublicKey>, audience: &str) -> Self {
        let mut entries: Vec<VerifyEntry> = Vec::with_capacity(keys.len());
        for public in keys {
            if entries.iter().all(|e| e.public.kid != public.kid) {
                entries.push(VerifyEntry {
                    public,
                    status: Status::Active,
                    latest_exp: Arc::new(AtomicU64::new(u64::MAX)),
                });
            }
        }
        Self {
            ring: Arc::new(ArcSwap::from_pointee(PublicRing { entries })),
            audience: audience.to_owned(),
            issuer: DEFAULT_ISSUER.to_owned(),
            revocations: None,
        }
    }

    /// A standalone verifier from a JWK Set's JSON text (what [`TokenSigner::jwks`] exports).
    /// Every key must be an Ed25519 public key with a `kid`.
    pub fn from_jwks(jwks_json: &str, audience: &str) -> Result<Self, TokenError> {
        let set: JwkSet = serde_json::from_str(jwks_json).map_err(|e| TokenError::InvalidJwk {
            kid: None,
            reason: e.to_string(),
        })?;
        let keys = set
            .keys
            .iter()
            .map(PublicKey::from_jwk)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_public_keys(keys, audience))
    }

    /// Expects `iss` to be `issuer` instead of [`DEFAULT_ISSUER`].
    pub fn issuer(mut self, issuer: &str) -> Self {
        self.issuer = issuer.to_owned();
        self
    }

    /// Refuses every token whose `jti` is on `list` (shared: revocations added later count).
    pub fn with_revocations(mut self, list: RevocationList) -> Self {
        self.revocations = Some(list);
        self
    }

    /// The audience this verifier accepts.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Ids of the keys this verifier trusts.
    pub fn kids(&self) -> Vec<String> {
        let ring = self.ring.load();
        ring.entries.iter().map(|e| e.public.kid.clone()).collect()
    }

    /// Checks, in this order: length; header (JSON, `alg` EdDSA, a known `kid`, no embedded key
    /// or `crit`); the signature; the key's retirement; then the claims (strictly parsed): `iss`,
    /// `aud`, `exp` (`now < exp`), `nbf` and `iat` (at most [`CLOCK_SKEW_SECS`] ahead), and
    /// last the revocation list.
    pub fn verify(&self, token: &str, now: u64) -> Result<TokenClaims, VerifyError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(VerifyError::Malformed("token too long"));
        }
        if !backend_available() {
            return Err(VerifyError::NoCryptoBackend);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::InvalidAlgorithmName => VerifyError::Malformed("algorithm is not EdDSA"),
            _ => VerifyError::Malformed("header is not a JWT header"),
        })?;
        if header.alg != Algorithm::EdDSA {
            return Err(VerifyError::Malformed("algorithm is not EdDSA"));
        }
        if header.jwk.is_some()
            || header.jku.is_some()
            || header.x5u.is_some()
            || header.x5c.is_some()
            || header.crit.is_some()
        {
            return Err(VerifyError::Malformed(
                "header carries a key, a key URL or critical extensions",
            ));
        }
        let kid = header
            .kid
            .filter(|k| valid_kid(k))
            .ok_or(VerifyError::Malformed("missing or invalid key id"))?;
        let ring = self.ring.load();
        let entry = ring
            .find(&kid)
            .ok_or_else(|| VerifyError::UnknownKey(kid.clone()))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        // Time, audience and issuer are checked below against the caller's clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<TokenClaims>(token, &entry.public.decoding, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => VerifyError::BadSignature,
                ErrorKind::InvalidAlgorithm => VerifyError::Malformed("algorithm is not EdDSA"),
                ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
                    VerifyError::Malformed("claims are not valid token claims")
                }
                _ => VerifyError::Malformed("token is not a valid JWS"),
            })?;
        if let Status::Retired { .. } = entry.status
            && now >= entry.latest_exp.load(Ordering::Acquire)
        {
            return Err(VerifyError::KeyRetired { kid });
        }
        drop(ring);
        let claims = data.claims;
        if claims.iss != self.issuer {
            return Err(VerifyError::WrongIssuer {
                expected: self.issuer.clone(),
                found: claims.iss,
            });
        }
        if claims.aud != self.audience {
            return Err(VerifyError::WrongAudience {
                expected: self.audience.clone(),
                found: claims.aud,
            });
        }
        if now >= claims.exp {
            return Err(VerifyError::Expired {
                expired_at: claims.exp,
            });
        }
        let not_before = claims.nbf.max(claims.iat);
        if not_before > now.saturating_add(CLOCK_SKEW_SECS) {
            return Err(VerifyError::NotYetValid { not_before });
        }
        if let Some(list) = &self.revocations
            && list.is_revoked(&claims.jti)
        {
            return Err(VerifyError::Revoked { jti: claims.jti });
        }
        Ok(claims)
    }
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("kids", &self.kids())
            .field("revocation_list", &self.revocations.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests;
