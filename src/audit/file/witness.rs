//! Witnesses: the log's signed head, published outside the audit directory.
//!
//! The chain and the checkpoints live in the directory they protect. Whoever can write that
//! directory can cut records off its end (delete the last segment, truncate its tail) and the
//! log that remains is a perfectly valid shorter log. A [`Witness`] keeps the head somewhere
//! that attacker cannot reach: a second directory on another volume or host, a log shipper, an
//! append-only store. [`verify_with`](super::verify_with) and [`FileSink::open`](super::FileSink::open)
//! then require the chain to reach the witnessed head with the same hash.
//!
//! The sink publishes the head it has made durable (after the fsync, never before), at most
//! every [`WitnessConfig::every_ms`] while new records are durable, and always on
//! [`flush`](crate::audit::AuditSink::flush), after a checkpoint, on close and at the end of
//! `open`. With a checkpoint key the head carries an HMAC (`key_id`, `mac`), so whoever can
//! write the witness but lacks the key cannot forge a head. A witness that fails to take a
//! head does not stop the log: the failure is logged, raised as an
//! [`AlertKind::AuditWitnessFailed`](crate::breaker::AlertKind::AuditWitnessFailed) alert, and
//! the next publication retries.
//!
//! What a witness does **not** protect against: a witness rolled back to an older head of the
//! same log (keep it append-only, or compare its time), and records written after the last
//! publication (up to [`WitnessConfig::every_ms`] of them, unless the application flushes).

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hmac::Mac;
use serde::{Deserialize, Serialize};

use super::checkpoint::{CheckpointKey, HmacSha256};
use super::sink::sync_dir;

/// Domain separation for witnessed-head MACs.
const WITNESS_MAC_DOMAIN: &[u8] = b"tollgate-audit-witness-v1\n";

/// A head of the log as a witness keeps it: the last durable record's seq and hash, when it was
/// published and, for a keyed sink, an HMAC over all three.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WitnessedHead {
    /// The record's seq.
    pub seq: u64,
    /// The record's hash (64 lowercase hex digits).
    pub hash: String,
    /// When the head was published, unix nanoseconds.
    pub time_unix_nano: u64,
    /// The checkpoint key that signed it, if the sink had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// HMAC-SHA-256 under that key (64 lowercase hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

impl WitnessedHead {
    /// An unsigned head.
    pub fn new(seq: u64, hash: impl Into<String>, time_unix_nano: u64) -> Self {
        Self {
            seq,
            hash: hash.into(),
            time_unix_nano,
            key_id: None,
            mac: None,
        }
    }

    fn mac_of(&self, key: &CheckpointKey) -> HmacSha256 {
        let mut mac = key.hmac();
        mac.update(WITNESS_MAC_DOMAIN);
        mac.update(key.id().as_bytes());
        mac.update(b"\n");
        mac.update(self.seq.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(self.hash.as_bytes());
        mac.update(b"\n");
        mac.update(self.time_unix_nano.to_string().as_bytes());
        mac
    }

    /// The head signed with `key`.
    pub(super) fn signed(mut self, key: &CheckpointKey) -> Self {
        let tag = self.mac_of(key).finalize().into_bytes();
        self.key_id = Some(key.id().to_owned());
        self.mac = Some(crate::hex::encode(&tag));
        self
    }

    /// Checks the head's MAC with whichever of `keys` it names. `Ok(())` also for an unsigned
    /// head; `Err` says what is wrong.
    pub(super) fn check(&self, keys: &[CheckpointKey]) -> Result<(), String> {
        let (Some(id), Some(mac)) = (&self.key_id, &self.mac) else {
            return Ok(());
        };
        if keys.is_empty() {
            return Ok(());
        }
        let Some(key) = keys.iter().find(|k| k.id() == id) else {
            return Err(format!("it is signed with key `{id}`, which was not given"));
        };
        match crate::hex::decode(mac.as_bytes()) {
            Some(tag) if tag.len() == 32 && self.mac_of(key).verify_slice(&tag).is_ok() => Ok(()),
            _ => Err(format!("its MAC does not verify under key `{id}`")),
        }
    }
}

impl fmt::Display for WitnessedHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seq {} (hash {})", self.seq, self.hash)
    }
}

/// Keeps the log's head outside the audit directory (see [witnesses](super#witnesses)).
///
/// `publish` is called on the sink's writer thread: keep it short (a local file write, a
/// channel send). `latest` is called by `open` and `verify`.
pub trait Witness: Send + Sync {
    /// Takes a new head; it replaces the previous one.
    fn publish(&self, head: &WitnessedHead) -> io::Result<()>;
    /// The last head taken, if the witness can tell (`Ok(None)`: it has none, or it only
    /// forwards heads, like [`TracingWitness`]).
    fn latest(&self) -> io::Result<Option<WitnessedHead>>;
}

/// A witness that keeps the head as one JSON file, typically in a directory on another volume
/// (or a mount of another host) than the audit directory. Each head replaces the file
/// atomically (written to a temporary file, fsync'd, renamed, directory fsync'd).
///
/// ```
/// use tollgate::audit::file::{DirWitness, Witness, WitnessedHead};
///
/// let dir = tempfile::tempdir()?; // removed when dropped
/// let witness = DirWitness::new(dir.path().join("payments-audit.head.json"));
/// assert_eq!(witness.latest()?, None);
/// witness.publish(&WitnessedHead::new(7, "ab".repeat(32), 1))?;
/// assert_eq!(witness.latest()?.map(|h| h.seq), Some(7));
/// # dir.close()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct DirWitness {
    path: PathBuf,
}

impl DirWitness {
    /// A witness keeping the head in the file `path` (its directory must exist).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file holding the head.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Witness for DirWitness {
    fn publish(&self, head: &WitnessedHead) -> io::Result<()> {
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let mut text = serde_json::to_vec(head).map_err(io::Error::other)?;
        text.push(b'\n');
        f.write_all(&text)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &self.path)?;
        if let Some(parent) = self.path.parent() {
            sync_dir(parent);
        }
        Ok(())
    }

    fn latest(&self) -> io::Result<Option<WitnessedHead>> {
        let text = match fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        serde_json::from_slice(&text).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("witness file {}: {e}", self.path.display()),
            )
        })
    }
}

/// A witness that emits every head as a `tracing` event (target `tollgate::audit::witness`,
/// INFO, fields `seq`, `hash`, `time_unix_nano`, `key_id`, `mac`), for a log pipeline that ships
/// them off the host. It cannot read them back: give the last shipped head to
/// [`VerifyOptions::witnessed_head`](super::VerifyOptions::witnessed_head) to verify.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingWitness;

impl Witness for TracingWitness {
    fn publish(&self, head: &WitnessedHead) -> io::Result<()> {
        tracing::info!(
            target: "tollgate::audit::witness",
            seq = head.seq,
            hash = %head.hash,
            time_unix_nano = head.time_unix_nano,
            key_id = head.key_id.as_deref().unwrap_or(""),
            mac = head.mac.as_deref().unwrap_or(""),
            "audit log head"
        );
        Ok(())
    }

    fn latest(&self) -> io::Result<Option<WitnessedHead>> {
        Ok(None)
    }
}

/// A witness and how often the sink publishes to it.
#[derive(Clone)]
#[non_exhaustive]
pub struct WitnessConfig {
    /// Where heads go.
    pub witness: Arc<dyn Witness>,
    /// Publish at most this often while new records become durable, in milliseconds (default
    /// 1000). Flushes, checkpoints, close and open always publish.
    pub every_ms: u64,
}

impl WitnessConfig {
    /// Publishing to `witness` at the default cadence.
    pub fn new(witness: Arc<dyn Witness>) -> Self {
        Self {
            witness,
            every_ms: 1_000,
        }
    }

    /// Sets [`every_ms`](Self::every_ms).
    pub fn every_ms(mut self, ms: u64) -> Self {
        self.every_ms = ms;
        self
    }
}

impl fmt::Debug for WitnessConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WitnessConfig")
            .field("every_ms", &self.every_ms)
            .finish_non_exhaustive()
    }
}

impl PartialEq for WitnessConfig {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.witness, &other.witness) && self.every_ms == other.every_ms
    }
}

impl Eq for WitnessConfig {}
