//! Reviewers' signatures over a policy document.
//!
//! A reviewer signs the document's [`PolicyVersion`] (the hash of its canonical form), so what
//! is signed is exactly what every decision records. The signed message is the UTF-8 text
//!
//! ```text
//! tollgate-policy-signature-v1:<policy version, 64 hex digits>:<reviewer name>
//! ```
//!
//! with Ed25519 (RFC 8032, through `ed25519-dalek`), so anyone can check a signature with a
//! standard tool (`openssl pkeyutl -verify -rawin`). Keys are PKCS#8 / SPKI PEM files, the format
//! `openssl genpkey -algorithm ed25519` writes. Signatures live in a detached JSON file beside
//! the policy (`clinic.toml.sig`) holding one entry per reviewer.
//!
//! A [`Trust`] names the reviewer keys a deployment accepts and how many distinct ones must have
//! signed; [`Bindings::require_signed`](super::Bindings::require_signed) makes
//! [`Guard::from_policy`](crate::Guard::from_policy) refuse a document without them.
//!
//! ```
//! use tollgate::policy::{Policy, ReviewerKey, SignatureFile, Trust};
//!
//! # let text = r#"
//! # [policy]
//! # name = "x"
//! # owner = "x"
//! # purpose = "x"
//! # scope = "x"
//! # liability_owner = "x"
//! # review_cadence = "90d"
//! # data_handling = "x"
//! # "#;
//! let policy = Policy::from_toml(text)?;
//! let alice = ReviewerKey::generate()?;
//! let bob = ReviewerKey::generate()?;
//! let mut sigs = SignatureFile::default();
//! sigs.add(alice.sign(&policy, "Alice Legal")?);
//!
//! let trust = Trust::new([alice.public(), bob.public()], 2)?;
//! assert!(trust.verify(&policy, &sigs).is_err()); // one of two
//! sigs.add(bob.sign(&policy, "Bob Compliance")?);
//! assert_eq!(trust.verify(&policy, &sigs)?, vec!["Alice Legal", "Bob Compliance"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Policy;
use crate::verdict::PolicyVersion;

/// The format tag of a signature file.
pub const SIGNATURE_FORMAT: &str = "tollgate-policy-signatures/1";
const MESSAGE_PREFIX: &str = "tollgate-policy-signature-v1";

/// Why a signature could not be made, read or accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// A key file is not an Ed25519 PKCS#8 (private) or SPKI (public) PEM.
    #[error("`{path}`: not an Ed25519 {kind} key in PEM form: {reason}")]
    Key {
        /// The file (or `<memory>`).
        path: String,
        /// `"private"` or `"public"`.
        kind: &'static str,
        /// Why.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("`{}`: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The signature file is not valid.
    #[error("signature file `{path}`: {reason}")]
    File {
        /// The file (or `<memory>`).
        path: String,
        /// Why.
        reason: String,
    },
    /// The operating system gave no randomness for a new key.
    #[error("no randomness for a new key: {0}")]
    Random(String),
    /// A reviewer's name is empty or holds a `:` or control character.
    #[error("reviewer name `{0}` must be non-empty, without `:` or control characters")]
    Reviewer(String),
    /// A trust needs at least one key, and a threshold between 1 and the number of keys.
    #[error("a trust of {keys} key(s) cannot require {threshold} signature(s)")]
    Threshold {
        /// Keys given.
        keys: usize,
        /// Signatures required.
        threshold: usize,
    },
    /// Fewer valid signatures from distinct trusted keys than the trust requires.
    #[error(
        "policy {version:#} has {valid} valid signature(s) from trusted keys, {required} required{}",
        if rejected.is_empty() { String::new() } else { format!(" (rejected: {})", rejected.join("; ")) }
    )]
    NotEnough {
        /// The policy's version.
        version: PolicyVersion,
        /// Valid signatures from distinct trusted keys.
        valid: usize,
        /// Required.
        required: usize,
        /// Why each other signature was not counted.
        rejected: Vec<String>,
    },
}

/// A reviewer's private signing key.
pub struct ReviewerKey(SigningKey);

impl fmt::Debug for ReviewerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReviewerKey({})", self.public().id())
    }
}

impl ReviewerKey {
    /// A new random key (from the operating system's generator).
    pub fn generate() -> Result<Self, SignatureError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| SignatureError::Random(e.to_string()))?;
        let key = SigningKey::from_bytes(&seed);
        seed.fill(0);
        Ok(ReviewerKey(key))
    }

    /// Reads a PKCS#8 PEM private key.
    pub fn from_pem(pem: &str) -> Result<Self, SignatureError> {
        SigningKey::from_pkcs8_pem(pem)
            .map(ReviewerKey)
            .map_err(|e| SignatureError::Key {
                path: "<memory>".into(),
                kind: "private",
                reason: e.to_string(),
            })
    }

    /// Reads a PKCS#8 PEM private key file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, SignatureError> {
        let path = path.as_ref();
        let text = read(path)?;
        Self::from_pem(&text).map_err(|e| with_path(e, path))
    }

    /// The key as PKCS#8 PEM (keep it secret).
    pub fn to_pem(&self) -> Result<secrecy::SecretString, SignatureError> {
        self.0
            .to_pkcs8_pem(LineEnding::LF)
            .map(|z| secrecy::SecretString::from(z.as_str().to_owned()))
            .map_err(|e| SignatureError::Key {
                path: "<memory>".into(),
                kind: "private",
                reason: e.to_string(),
            })
    }

    /// The matching public key.
    pub fn public(&self) -> ReviewerPublicKey {
        ReviewerPublicKey(self.0.verifying_key())
    }

    /// Signs `policy` as `reviewer`.
    pub fn sign(&self, policy: &Policy, reviewer: &str) -> Result<Signature, SignatureError> {
        check_reviewer(reviewer)?;
        let version = policy.version();
        let sig = self.0.sign(message(version, reviewer).as_bytes());
        Ok(Signature {
            reviewer: reviewer.to_owned(),
            key_id: self.public().id(),
            policy_version: version.to_string(),
            signature: B64.encode(sig.to_bytes()),
        })
    }
}

/// A reviewer's public key: what a deployment trusts.
#[derive(Clone, PartialEq, Eq)]
pub struct ReviewerPublicKey(VerifyingKey);

impl fmt::Debug for ReviewerPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReviewerPublicKey({})", self.id())
    }
}

impl ReviewerPublicKey {
    /// Reads an SPKI PEM public key.
    pub fn from_pem(pem: &str) -> Result<Self, SignatureError> {
        VerifyingKey::from_public_key_pem(pem)
            .map(ReviewerPublicKey)
            .map_err(|e| SignatureError::Key {
                path: "<memory>".into(),
                kind: "public",
                reason: e.to_string(),
            })
    }

    /// Reads an SPKI PEM public key file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, SignatureError> {
        let path = path.as_ref();
        let text = read(path)?;
        Self::from_pem(&text).map_err(|e| with_path(e, path))
    }

    /// The key as SPKI PEM.
    pub fn to_pem(&self) -> String {
        self.0
            .to_public_key_pem(LineEnding::LF)
            .expect("an Ed25519 public key always encodes")
    }

    /// `ed25519:` and the first 16 hex digits of the SHA-256 of the raw key: how signatures name
    /// their key.
    pub fn id(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        let mut s = String::from("ed25519:");
        for b in &digest[..8] {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

/// One reviewer's signature over a policy version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// Who signed (part of the signed message).
    pub reviewer: String,
    /// The signing key's [`id`](ReviewerPublicKey::id).
    pub key_id: String,
    /// The policy version signed (64 hex digits).
    pub policy_version: String,
    /// The Ed25519 signature, base64.
    pub signature: String,
}

/// The detached signature file: every reviewer's signature of one document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    /// Always [`SIGNATURE_FORMAT`].
    pub format: String,
    /// The signatures.
    pub signatures: Vec<Signature>,
}

impl Default for SignatureFile {
    fn default() -> Self {
        SignatureFile {
            format: SIGNATURE_FORMAT.into(),
            signatures: Vec::new(),
        }
    }
}

impl SignatureFile {
    /// Adds a signature, replacing an earlier one by the same key.
    pub fn add(&mut self, sig: Signature) {
        self.signatures.retain(|s| s.key_id != sig.key_id);
        self.signatures.push(sig);
    }

    /// Reads a signature file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, SignatureError> {
        let path = path.as_ref();
        let text = read(path)?;
        Self::from_json(&text).map_err(|e| match e {
            SignatureError::File { reason, .. } => SignatureError::File {
                path: path.display().to_string(),
                reason,
            },
            other => other,
        })
    }

    /// Parses a signature file.
    pub fn from_json(text: &str) -> Result<Self, SignatureError> {
        let file: SignatureFile = serde_json::from_str(text).map_err(|e| SignatureError::File {
            path: "<memory>".into(),
            reason: e.to_string(),
        })?;
        if file.format != SIGNATURE_FORMAT {
            return Err(SignatureError::File {
                path: "<memory>".into(),
                reason: format!("format `{}` is not `{SIGNATURE_FORMAT}`", file.format),
            });
        }
        Ok(file)
    }

    /// Writes the file (pretty JSON).
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), SignatureError> {
        let path = path.as_ref();
        let text = serde_json::to_string_pretty(self).expect("serialisable") + "\n";
        std::fs::write(path, text).map_err(|source| SignatureError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// The conventional signature file of a policy file: the same path with `.sig` appended.
    pub fn path_for(policy_path: &Path) -> PathBuf {
        let mut p = policy_path.as_os_str().to_owned();
        p.push(".sig");
        PathBuf::from(p)
    }
}

/// The reviewer keys a deployment accepts, and how many distinct ones must sign.
#[derive(Debug, Clone)]
pub struct Trust {
    keys: Vec<ReviewerPublicKey>,
    threshold: usize,
}

impl Trust {
    /// Trusts `keys`, requiring `threshold` distinct ones to have signed.
    pub fn new(
        keys: impl IntoIterator<Item = ReviewerPublicKey>,
        threshold: usize,
    ) -> Result<Self, SignatureError> {
        let mut list: Vec<ReviewerPublicKey> = Vec::new();
        for k in keys {
            if !list.contains(&k) {
                list.push(k);
            }
        }
        if threshold == 0 || threshold > list.len() {
            return Err(SignatureError::Threshold {
                keys: list.len(),
                threshold,
            });
        }
        Ok(Trust {
            keys: list,
            threshold,
        })
    }

    /// Checks `sigs` over `policy`: returns the reviewers whose signatures count, or why too few
    /// do. A signature counts if its key is trusted, it names this policy's version and it
    /// verifies (strict Ed25519); each key counts once.
    pub fn verify(
        &self,
        policy: &Policy,
        sigs: &SignatureFile,
    ) -> Result<Vec<String>, SignatureError> {
        let version = policy.version();
        let hex = version.to_string();
        let mut counted: Vec<&ReviewerPublicKey> = Vec::new();
        let mut reviewers = Vec::new();
        let mut rejected = Vec::new();
        for s in &sigs.signatures {
            let Some(key) = self.keys.iter().find(|k| k.id() == s.key_id) else {
                rejected.push(format!("{}: key {} is not trusted", s.reviewer, s.key_id));
                continue;
            };
            if s.policy_version != hex {
                rejected.push(format!(
                    "{}: signed another version ({})",
                    s.reviewer,
                    s.policy_version.get(..12).unwrap_or(&s.policy_version)
                ));
                continue;
            }
            let valid = check_reviewer(&s.reviewer).is_ok()
                && B64
                    .decode(&s.signature)
                    .ok()
                    .and_then(|b| ed25519_dalek::Signature::from_slice(&b).ok())
                    .is_some_and(|sig| {
                        key.0
                            .verify_strict(message(version, &s.reviewer).as_bytes(), &sig)
                            .is_ok()
                    });
            if !valid {
                rejected.push(format!("{}: signature does not verify", s.reviewer));
                continue;
            }
            if counted.contains(&key) {
                continue;
            }
            counted.push(key);
            reviewers.push(s.reviewer.clone());
        }
        if counted.len() < self.threshold {
            return Err(SignatureError::NotEnough {
                version,
                valid: counted.len(),
                required: self.threshold,
                rejected,
            });
        }
        Ok(reviewers)
    }
}

fn message(version: PolicyVersion, reviewer: &str) -> String {
    format!("{MESSAGE_PREFIX}:{version}:{reviewer}")
}

fn check_reviewer(name: &str) -> Result<(), SignatureError> {
    if name.trim().is_empty() || name.contains(':') || name.chars().any(char::is_control) {
        return Err(SignatureError::Reviewer(name.to_owned()));
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, SignatureError> {
    std::fs::read_to_string(path).map_err(|source| SignatureError::Io {
        path: path.to_owned(),
        source,
    })
}

fn with_path(e: SignatureError, path: &Path) -> SignatureError {
    match e {
        SignatureError::Key { kind, reason, .. } => SignatureError::Key {
            path: path.display().to_string(),
            kind,
            reason,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(purpose: &str) -> Policy {
        Policy::from_json(&format!(
            r#"{{"policy": {{"name": "x", "owner": "x", "purpose": "{purpose}", "scope": "x",
                "liability_owner": "x", "review_cadence": "90d", "data_handling": "x"}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn keys_round_trip_through_pem_and_signatures_bind_version_and_reviewer() {
        let key = ReviewerKey::generate().unwrap();
        let pem = key.to_pem().unwrap();
        let again = ReviewerKey::from_pem(secrecy::ExposeSecret::expose_secret(&pem)).unwrap();
        assert_eq!(again.public(), key.public());
        let public = ReviewerPublicKey::from_pem(&key.public().to_pem()).unwrap();
        assert_eq!(public, key.public());

        let p = policy("a");
        let trust = Trust::new([public], 1).unwrap();
        let mut file = SignatureFile::default();
        file.add(key.sign(&p, "Alice").unwrap());
        assert_eq!(trust.verify(&p, &file).unwrap(), vec!["Alice"]);

        // Another document: the signature names another version.
        assert!(trust.verify(&policy("b"), &file).is_err());
        // A reviewer name swapped after signing.
        let mut forged = file.clone();
        forged.signatures[0].reviewer = "Mallory".into();
        assert!(trust.verify(&p, &forged).is_err());
        // A flipped signature byte.
        let mut bad = file.clone();
        let mut raw = B64.decode(&bad.signatures[0].signature).unwrap();
        raw[5] ^= 1;
        bad.signatures[0].signature = B64.encode(raw);
        assert!(trust.verify(&p, &bad).is_err());
        // An untrusted key.
        let other = ReviewerKey::generate().unwrap();
        let mut untrusted = SignatureFile::default();
        untrusted.add(other.sign(&p, "Alice").unwrap());
        let err = trust.verify(&p, &untrusted).unwrap_err();
        assert!(err.to_string().contains("not trusted"), "{err}");
    }

    #[test]
    fn the_same_key_counts_once_and_thresholds_are_checked() {
        let a = ReviewerKey::generate().unwrap();
        let b = ReviewerKey::generate().unwrap();
        let p = policy("a");
        let trust = Trust::new([a.public(), b.public()], 2).unwrap();
        let mut file = SignatureFile::default();
        file.signatures.push(a.sign(&p, "Alice").unwrap());
        file.signatures.push(a.sign(&p, "Alice again").unwrap());
        assert!(matches!(
            trust.verify(&p, &file),
            Err(SignatureError::NotEnough {
                valid: 1,
                required: 2,
                ..
            })
        ));
        assert!(Trust::new([a.public()], 2).is_err());
        assert!(Trust::new([a.public(), a.public()], 2).is_err());
        assert!(Trust::new(Vec::new(), 0).is_err());
        assert!(a.sign(&p, "Eve: admin").is_err());
    }

    #[test]
    fn signature_files_refuse_other_formats_and_unknown_fields() {
        assert!(SignatureFile::from_json(r#"{"format": "x", "signatures": []}"#).is_err());
        assert!(
            SignatureFile::from_json(
                r#"{"format": "tollgate-policy-signatures/1", "signatures": [], "extra": 1}"#
            )
            .is_err()
        );
        assert!(
            ReviewerPublicKey::from_pem(
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
            )
            .is_err()
        );
    }
}
