//! The chain's arithmetic, shared by the writer and by verify: the record hash, the checkpoint
//! MAC, and the sink's own records (checkpoints, retention declarations).

use hmac::Mac;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::file::CheckpointKey;

/// Domain of the record hash.
const HASH_DOMAIN: &[u8] = b"tollgate-pg-audit-v1\n";
/// Domain of the checkpoint MAC.
const MAC_DOMAIN: &[u8] = b"tollgate-pg-audit-checkpoint-v1\n";

/// The `prev` of a writer's first record: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The exact start of a checkpoint record's event.
pub(super) const CHECKPOINT_PREFIX: &[u8] = b"{\"event\":\"checkpoint\",";
/// The exact start of a retention declaration's event.
pub(super) const RETENTION_PREFIX: &[u8] = b"{\"event\":\"retention_applied\",";

/// What a row is, by its event's first bytes (a guard event never starts with `{"event":`:
/// it starts with `{"seq":`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Event,
    Checkpoint,
    Retention,
}

impl Kind {
    pub(super) fn of(event: &[u8]) -> Kind {
        if event.starts_with(CHECKPOINT_PREFIX) {
            Kind::Checkpoint
        } else if event.starts_with(RETENTION_PREFIX) {
            Kind::Retention
        } else {
            Kind::Event
        }
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Kind::Event => "event",
            Kind::Checkpoint => "checkpoint",
            Kind::Retention => "retention",
        }
    }
}

/// `SHA-256("tollgate-pg-audit-v1\n" || writer || "\n" || prev || "\n" || seq || "\n" || event)`,
/// lowercase hex. The writer's name is inside, so a chain cannot be relabelled as another
/// writer's.
pub(super) fn record_hash(writer: &str, prev: &str, seq: u64, event: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(HASH_DOMAIN);
    h.update(writer.as_bytes());
    h.update(b"\n");
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(seq.to_string().as_bytes());
    h.update(b"\n");
    h.update(event);
    crate::hex::encode(&h.finalize())
}

fn checkpoint_mac(
    key: &CheckpointKey,
    writer: &str,
    seq: u64,
    head: &str,
    time_unix_nano: u64,
) -> hmac::Hmac<Sha256> {
    let mut mac = key.hmac();
    mac.update(MAC_DOMAIN);
    mac.update(key.id().as_bytes());
    mac.update(b"\n");
    mac.update(writer.as_bytes());
    mac.update(b"\n");
    mac.update(seq.to_string().as_bytes());
    mac.update(b"\n");
    mac.update(head.as_bytes());
    mac.update(b"\n");
    mac.update(time_unix_nano.to_string().as_bytes());
    mac
}

/// A checkpoint's event: "record `seq` of `writer` had hash `head`", signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Checkpoint {
    pub(super) event: String,
    pub(super) time_unix_nano: u64,
    #[serde(rename = "tollgate.checkpoint.writer")]
    pub(super) writer: String,
    #[serde(rename = "tollgate.checkpoint.seq")]
    pub(super) seq: u64,
    #[serde(rename = "tollgate.checkpoint.head")]
    pub(super) head: String,
    #[serde(rename = "tollgate.checkpoint.key_id")]
    pub(super) key_id: String,
    #[serde(rename = "tollgate.checkpoint.mac")]
    pub(super) mac: String,
}

impl Checkpoint {
    pub(super) fn sign(
        key: &CheckpointKey,
        writer: &str,
        seq: u64,
        head: &str,
        time_unix_nano: u64,
    ) -> Checkpoint {
        let tag = checkpoint_mac(key, writer, seq, head, time_unix_nano)
            .finalize()
            .into_bytes();
        Checkpoint {
            event: "checkpoint".into(),
            time_unix_nano,
            writer: writer.into(),
            seq,
            head: head.into(),
            key_id: key.id().into(),
            mac: crate::hex::encode(&tag),
        }
    }

    /// Whether one of `keys` (found by id) signed this checkpoint.
    pub(super) fn verifies(&self, keys: &[CheckpointKey]) -> bool {
        let Some(key) = keys.iter().find(|k| k.id() == self.key_id) else {
            return false;
        };
        match crate::hex::decode(self.mac.as_bytes()) {
            Some(tag) if tag.len() == 32 => {
                checkpoint_mac(key, &self.writer, self.seq, &self.head, self.time_unix_nano)
                    .verify_slice(&tag)
                    .is_ok()
            }
            _ => false,
        }
    }
}

/// What one writer lost to a retention: every record up to `last_seq`, the last of which had
/// hash `head`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Dropped {
    pub(super) last_seq: u64,
    pub(super) head: String,
}

/// A retention declaration's event: which partitions were dropped and, per writer, the end of
/// the prefix of its chain they held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Declaration {
    pub(super) event: String,
    pub(super) time_unix_nano: u64,
    #[serde(rename = "tollgate.retention.evaluated_at")]
    pub(super) evaluated_at: u64,
    #[serde(rename = "tollgate.retention.partitions")]
    pub(super) partitions: Vec<i64>,
    #[serde(rename = "tollgate.retention.dropped")]
    pub(super) dropped: std::collections::BTreeMap<String, Dropped>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialised_sink_records_start_with_their_prefix() {
        let key = CheckpointKey::new("k", vec![7; 32]).unwrap();
        let c = Checkpoint::sign(&key, "w", 3, GENESIS, 9);
        let bytes = serde_json::to_vec(&c).unwrap();
        assert_eq!(Kind::of(&bytes), Kind::Checkpoint);
        let d = Declaration {
            event: "retention_applied".into(),
            time_unix_nano: 1,
            evaluated_at: 1,
            partitions: vec![1],
            dropped: Default::default(),
        };
        assert_eq!(Kind::of(&serde_json::to_vec(&d).unwrap()), Kind::Retention);
        assert_eq!(Kind::of(b"{\"seq\":1}"), Kind::Event);
    }

    #[test]
    fn a_checkpoint_mac_binds_writer_seq_head_time_and_key() {
        let key = CheckpointKey::new("k", vec![7; 32]).unwrap();
        let other = CheckpointKey::new("k", vec![8; 32]).unwrap();
        let c = Checkpoint::sign(&key, "w", 3, GENESIS, 9);
        assert!(c.verifies(std::slice::from_ref(&key)));
        assert!(!c.verifies(&[other]));
        for forged in [
            Checkpoint {
                writer: "v".into(),
                ..c.clone()
            },
            Checkpoint {
                seq: 4,
                ..c.clone()
            },
            Checkpoint {
                head: "1".repeat(64),
                ..c.clone()
            },
            Checkpoint {
                time_unix_nano: 10,
                ..c.clone()
            },
        ] {
            assert!(!forged.verifies(std::slice::from_ref(&key)));
        }
    }

    #[test]
    fn the_hash_binds_the_writer() {
        assert_ne!(
            record_hash("a", GENESIS, 1, b"{}"),
            record_hash("b", GENESIS, 1, b"{}")
        );
    }
}
