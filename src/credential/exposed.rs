//! The secrets a run's permits were handed, kept so the run's outcome texts can be scrubbed of
//! them before anything is recorded.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use secrecy::{ExposeSecret, SecretString};

use crate::call::CredentialId;
use crate::verdict::Outcome;

/// The secrets of the credentials [`expose`](super::ScopedCredential::expose) released to one
/// run instance's permits. Lives with the run's state, so it outlives the credentials'
/// revocation (the kill switch, the end of the run) for as long as a permit of the run, detached
/// ones included, can still record an outcome. The copies are zeroized when the run's state is
/// dropped.
#[derive(Default)]
pub(crate) struct ExposedSecrets {
    /// Set once a secret was handed out: completion looks at nothing else before that.
    any: AtomicBool,
    secrets: Mutex<Vec<(CredentialId, SecretString)>>,
}

impl fmt::Debug for ExposedSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExposedSecrets")
            .field("count", &self.secrets.lock().len())
            .finish()
    }
}

impl ExposedSecrets {
    /// Notes that the credential `id`'s `secret` is being handed to a permit of the run.
    pub(crate) fn add(&self, id: &CredentialId, secret: &str) {
        let mut secrets = self.secrets.lock();
        if !secrets.iter().any(|(known, _)| known == id) {
            secrets.push((id.clone(), SecretString::from(secret.to_owned())));
        }
        drop(secrets);
        self.any.store(true, Ordering::Release);
    }

    /// `outcome` (or `scrubbed`, what earlier scrubbing made of it) with every secret handed to
    /// the run cut out of its texts; `scrubbed` when there is nothing to cut. Allocation-free
    /// until a secret was handed out.
    pub(crate) fn scrub(&self, scrubbed: Option<Outcome>, outcome: &Outcome) -> Option<Outcome> {
        if !self.any.load(Ordering::Acquire) {
            return scrubbed;
        }
        let secrets = self.secrets.lock();
        let texts: Vec<&str> = secrets.iter().map(|(_, s)| s.expose_secret()).collect();
        crate::audit::scrub_credentials(scrubbed.as_ref().unwrap_or(outcome), &texts).or(scrubbed)
    }
}
