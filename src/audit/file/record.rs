//! The record format: one JSON line per record, its hash chain, and the sink's own records.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::reader::Line;
use super::verify::VerifyError;
use super::{CHECKPOINT_PREFIX, LOSS_PREFIX, REPAIR_PREFIX, RETENTION_PREFIX};

// ------------------------------------------------------------------------------------------------
// Record format
// ------------------------------------------------------------------------------------------------

pub(in crate::audit) type Hex64 = [u8; 64];

pub(super) const GENESIS_HEX: Hex64 = [b'0'; 64];

pub(in crate::audit) fn hex_str(h: &Hex64) -> String {
    // Always ASCII hex, written by this module.
    String::from_utf8_lossy(h).into_owned()
}

pub(super) fn hex64(digest: &[u8]) -> Hex64 {
    let mut out = [b'0'; 64];
    for (i, b) in digest.iter().take(32).enumerate() {
        out[2 * i] = crate::hex::DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = crate::hex::DIGITS[usize::from(b & 0x0f)];
    }
    out
}

/// 64 lowercase hex digits, as a [`Hex64`].
pub(super) fn parse_hex64(s: &str) -> Option<Hex64> {
    let b = s.as_bytes();
    if b.len() != 64 || !b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 64];
    out.copy_from_slice(b);
    Some(out)
}

pub(super) fn chain_hash(prev: &Hex64, seq: u64, event: &[u8]) -> Hex64 {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(b"\n");
    h.update(itoa::Buffer::new().format(seq).as_bytes());
    h.update(b"\n");
    h.update(event);
    hex64(&h.finalize())
}

pub(super) fn append_record(buf: &mut Vec<u8>, seq: u64, prev: &Hex64, hash: &Hex64, event: &[u8]) {
    buf.extend_from_slice(b"{\"seq\":");
    crate::audit::json::u64_to(buf, seq);
    buf.extend_from_slice(b",\"prev\":\"");
    buf.extend_from_slice(prev);
    buf.extend_from_slice(b"\",\"hash\":\"");
    buf.extend_from_slice(hash);
    buf.extend_from_slice(b"\",\"event\":");
    buf.extend_from_slice(event);
    buf.extend_from_slice(b"}\n");
}

/// One record line, split into its fields without re-serialising anything. `prev` and `hash`
/// are exactly 64 lowercase hex digits.
pub(super) struct Frame<'a> {
    pub(super) seq: u64,
    pub(super) prev: &'a Hex64,
    pub(super) hash: &'a Hex64,
    pub(super) event: &'a [u8],
}

/// A line that is not a record; carries the seq if that much could be read.
pub(super) struct Unparseable {
    pub(super) reason: String,
    pub(super) seq: Option<u64>,
}

pub(super) fn strip<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    s.strip_prefix(prefix)
}

/// Reads `{"seq":<digits>,` and returns the seq and the rest after the comma.
pub(super) fn parse_seq(line: &[u8]) -> Option<(u64, &[u8])> {
    let rest = strip(line, b"{\"seq\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 || (digits > 1 && rest[0] == b'0') {
        return None;
    }
    let mut seq: u64 = 0;
    for &d in &rest[..digits] {
        seq = seq.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    let rest = strip(&rest[digits..], b",")?;
    Some((seq, rest))
}

pub(super) fn take_hex64<'a>(s: &'a [u8], key: &[u8]) -> Option<(&'a Hex64, &'a [u8])> {
    let (hex, rest) = strip(s, key)?.split_first_chunk::<64>()?;
    let rest = rest.strip_prefix(b"\"")?;
    if !hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    Some((hex, rest))
}

/// Splits a line (without its newline) into a [`Frame`]. The frame is fixed — the writer emits
/// exactly this shape — so anything else is malformed. The event's JSON is checked separately.
pub(super) fn parse_frame(line: &[u8]) -> Result<Frame<'_>, Unparseable> {
    let bad = |reason: &str, seq| Unparseable {
        reason: reason.to_owned(),
        seq,
    };
    let Some((seq, rest)) = parse_seq(line) else {
        return Err(bad("line does not start with {\"seq\":<number>,", None));
    };
    let Some((prev, rest)) = take_hex64(rest, b"\"prev\":\"") else {
        return Err(bad(
            "`prev` is missing or not 64 lowercase hex digits",
            Some(seq),
        ));
    };
    let Some((hash, rest)) = take_hex64(rest, b",\"hash\":\"") else {
        return Err(bad(
            "`hash` is missing or not 64 lowercase hex digits",
            Some(seq),
        ));
    };
    let Some(rest) = strip(rest, b",\"event\":") else {
        return Err(bad("`event` is missing", Some(seq)));
    };
    let Some(event) = rest.strip_suffix(b"}") else {
        return Err(bad("record does not end with `}`", Some(seq)));
    };
    if event.first() != Some(&b'{') || event.last() != Some(&b'}') {
        return Err(bad("`event` is not a JSON object", Some(seq)));
    }
    Ok(Frame {
        seq,
        prev,
        hash,
        event,
    })
}

/// The deepest nesting an event may have: the event object around values that are never
/// written nested deeper than [`MAX_DEPTH_CAP`](crate::call::json::MAX_DEPTH_CAP). Every reader
/// (verify, query, retention, recovery) applies it, so a record one of them accepts, all of them
/// can read (serde_json's own limit, 128, is well above it).
pub(in crate::audit) const MAX_EVENT_DEPTH: usize = crate::call::json::MAX_DEPTH_CAP + 1;

/// Checks that `event` is one JSON value nested at most [`MAX_EVENT_DEPTH`] deep.
pub(super) fn event_is_json(event: &[u8]) -> Result<(), String> {
    event_depth_ok(event)?;
    serde_json::from_slice::<serde::de::IgnoredAny>(event)
        .map(|_| ())
        .map_err(|e| format!("`event` is not valid JSON: {e}"))
}

/// Checks that `event` is nested at most [`MAX_EVENT_DEPTH`] deep (not that it is JSON: see
/// [`event_is_json`]).
pub(super) fn event_depth_ok(event: &[u8]) -> Result<(), String> {
    match too_deep(event, MAX_EVENT_DEPTH) {
        Some(at) => Err(format!(
            "`event` is nested deeper than {MAX_EVENT_DEPTH} levels (at byte {at}), which no \
             writer produces and not every reader can read"
        )),
        None => Ok(()),
    }
}

/// The offset of the first bracket that opens a container deeper than `max`, if any. Brackets
/// inside strings do not count. Hand-written because `IgnoredAny` does not apply serde_json's
/// recursion limit, and parsing every event into a `Value` just to learn its depth would cost
/// verification several times its speed; malformed text is left to the JSON check that follows.
/// Strings, most of an event's bytes, are skipped with `memchr2` to their next quote or
/// backslash (a byte at a time, this loop cost a replay of the log about a seventh of its time).
fn too_deep(text: &[u8], max: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        match b {
            b'"' => {
                // To the closing quote: past every escaped byte.
                i += 1;
                loop {
                    let rest = text.get(i..)?;
                    let j = memchr::memchr2(b'"', b'\\', rest)?;
                    if rest[j] == b'"' {
                        i += j + 1;
                        break;
                    }
                    i += j + 2;
                }
                continue;
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Some(i);
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Whether a line is a well-formed record at all (frame and event JSON), ignoring the chain.
#[cfg(test)]
pub(super) fn parseable(line: &[u8]) -> bool {
    parse_frame(line).is_ok_and(|f| event_is_json(f.event).is_ok())
}

/// Splits a line into its seq, stored hash and event bytes (frame and event JSON checked, chain
/// not checked).
pub(in crate::audit) fn split_record<'a>(
    line: &Line<'a>,
) -> Result<(u64, String, &'a [u8]), VerifyError> {
    let frame = parse_frame(line.content).map_err(|u| VerifyError::Malformed {
        at: line.location(u.seq),
        reason: u.reason,
    })?;
    event_is_json(frame.event).map_err(|reason| VerifyError::Malformed {
        at: line.location(Some(frame.seq)),
        reason,
    })?;
    Ok((
        frame.seq,
        String::from_utf8_lossy(frame.hash).into_owned(),
        frame.event,
    ))
}

/// Whether an event is one of the sink's own records (checkpoint, retention, repair or loss
/// declaration).
pub(in crate::audit) fn is_sink_record(event: &[u8]) -> bool {
    event.starts_with(CHECKPOINT_PREFIX)
        || event.starts_with(RETENTION_PREFIX)
        || event.starts_with(REPAIR_PREFIX)
        || event.starts_with(LOSS_PREFIX)
}

/// A checkpoint record's `event` object. Field order is the on-disk order.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CheckpointBody<'a> {
    pub(super) event: &'a str,
    pub(super) time_unix_nano: u64,
    #[serde(rename = "tollgate.checkpoint.seq")]
    pub(super) seq: u64,
    #[serde(rename = "tollgate.checkpoint.head", borrow)]
    pub(super) head: std::borrow::Cow<'a, str>,
    #[serde(rename = "tollgate.checkpoint.adopted")]
    pub(super) adopted: u64,
    #[serde(rename = "tollgate.checkpoint.key_id", borrow)]
    pub(super) key_id: std::borrow::Cow<'a, str>,
    #[serde(rename = "tollgate.checkpoint.mac", borrow)]
    pub(super) mac: std::borrow::Cow<'a, str>,
}

/// A retention declaration's `event` object. Field order is the on-disk order.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RetentionBody<'a> {
    pub(super) event: &'a str,
    pub(super) time_unix_nano: u64,
    #[serde(rename = "tollgate.retention.evaluated_at")]
    pub(super) evaluated_at: u64,
    #[serde(rename = "tollgate.retention.dropped.first_seq")]
    pub(super) first_seq: u64,
    #[serde(rename = "tollgate.retention.dropped.last_seq")]
    pub(super) last_seq: u64,
    #[serde(rename = "tollgate.retention.dropped.head", borrow)]
    pub(super) head: std::borrow::Cow<'a, str>,
    #[serde(rename = "tollgate.retention.dropped.first_segment")]
    pub(super) first_segment: u64,
    #[serde(rename = "tollgate.retention.dropped.last_segment")]
    pub(super) last_segment: u64,
    #[serde(rename = "tollgate.retention.policy")]
    pub(super) policy: PolicyField,
}

/// A repair declaration's `event` object (see [`FileSink::repair`](super::FileSink::repair)).
/// Field order is the on-disk order.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RepairBody<'a> {
    pub(super) event: &'a str,
    pub(super) time_unix_nano: u64,
    /// The last record kept.
    #[serde(rename = "tollgate.repair.after_seq")]
    pub(super) after_seq: u64,
    /// Every seq after `after_seq` up to this one is declared gone (the declaration's own seq
    /// is the next one).
    #[serde(rename = "tollgate.repair.removed_through_seq")]
    pub(super) removed_through_seq: u64,
    /// The seqs the removed lines claimed, where they could be read.
    #[serde(rename = "tollgate.repair.removed_first_seq")]
    pub(super) removed_first_seq: Option<u64>,
    #[serde(rename = "tollgate.repair.removed_last_seq")]
    pub(super) removed_last_seq: Option<u64>,
    #[serde(rename = "tollgate.repair.removed_lines")]
    pub(super) removed_lines: u64,
    #[serde(rename = "tollgate.repair.removed_bytes")]
    pub(super) removed_bytes: u64,
    /// SHA-256 of the removed bytes, in log order.
    #[serde(rename = "tollgate.repair.removed_sha256", borrow)]
    pub(super) removed_sha256: std::borrow::Cow<'a, str>,
    /// Where the cut started: `<segment file name>:<byte offset>`.
    #[serde(rename = "tollgate.repair.cut_at", borrow)]
    pub(super) cut_at: std::borrow::Cow<'a, str>,
    /// The file in the directory that keeps the removed bytes.
    #[serde(rename = "tollgate.repair.saved_as", borrow)]
    pub(super) saved_as: std::borrow::Cow<'a, str>,
    #[serde(rename = "tollgate.repair.reason", borrow)]
    pub(super) reason: std::borrow::Cow<'a, str>,
}

/// A loss declaration's `event` object: acknowledged events that never reached the log.
/// Field order is the on-disk order.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LossBody<'a> {
    pub(super) event: &'a str,
    pub(super) time_unix_nano: u64,
    #[serde(rename = "tollgate.loss.id", borrow)]
    pub(super) id: std::borrow::Cow<'a, str>,
    #[serde(rename = "tollgate.loss.count")]
    pub(super) count: u64,
    /// The last record written before the loss.
    #[serde(rename = "tollgate.loss.after_seq")]
    pub(super) after_seq: u64,
    /// The guard's event seqs (the `seq` inside `event`) of the lost events, lowest and highest.
    #[serde(rename = "tollgate.loss.event_seq_first")]
    pub(super) event_seq_first: Option<u64>,
    #[serde(rename = "tollgate.loss.event_seq_last")]
    pub(super) event_seq_last: Option<u64>,
    #[serde(rename = "tollgate.loss.first_time_unix_nano")]
    pub(super) first_time_unix_nano: Option<u64>,
    #[serde(rename = "tollgate.loss.last_time_unix_nano")]
    pub(super) last_time_unix_nano: Option<u64>,
    #[serde(rename = "tollgate.loss.failed_at_unix_nano")]
    pub(super) failed_at_unix_nano: u64,
    #[serde(rename = "tollgate.loss.error", borrow)]
    pub(super) error: std::borrow::Cow<'a, str>,
}

/// The guard's `seq` and `time_unix_nano` at the start of an event written by
/// [`AuditEvent::write_json`](crate::audit::AuditEvent::write_json) (`{"seq":N,"time_unix_nano":T,`),
/// if it starts that way.
pub(super) fn event_seq_and_time(event: &[u8]) -> (Option<u64>, Option<u64>) {
    fn number(s: &[u8]) -> Option<(u64, &[u8])> {
        let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
        let n = std::str::from_utf8(&s[..digits]).ok()?.parse().ok()?;
        Some((n, &s[digits..]))
    }
    let Some((seq, rest)) = event.strip_prefix(b"{\"seq\":").and_then(number) else {
        return (None, None);
    };
    let time = rest
        .strip_prefix(b",\"time_unix_nano\":")
        .and_then(number)
        .map(|(t, _)| t);
    (Some(seq), time)
}

/// The policy summary in a retention declaration: written from the policy, ignored on reading.
pub(super) enum PolicyField {
    Write(BTreeMap<String, Option<f64>>),
    Read,
}

impl Serialize for PolicyField {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PolicyField::Write(m) => m.serialize(s),
            PolicyField::Read => s.serialize_unit(),
        }
    }
}

impl<'de> Deserialize<'de> for PolicyField {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::<String, Option<f64>>::deserialize(d).map(|_| PolicyField::Read)
    }
}

pub(super) fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Test helper: the record line (with its newline) chaining `event` as `seq` after `prev`, and
/// its hash.
#[cfg(test)]
pub(super) fn test_line(seq: u64, prev: &Hex64, event: &[u8]) -> (Vec<u8>, Hex64) {
    let hash = chain_hash(prev, seq, event);
    let mut buf = Vec::new();
    append_record(&mut buf, seq, prev, &hash, event);
    (buf, hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::file::chain::ChainCheck;
    use crate::audit::file::reader::Line;
    use crate::audit::file::{CHECKPOINT_PREFIX, GENESIS, RETENTION_PREFIX};
    use std::path::Path;

    use super::test_line as line;

    fn at<'a>(content: &'a [u8], segment: u64, n: u64) -> Line<'a> {
        Line {
            content,
            file: Path::new("audit-000001.jsonl"),
            segment,
            line: n,
            offset: 0,
        }
    }

    #[test]
    fn hash_is_sha256_of_prev_seq_and_event_bytes() {
        let event = br#"{"a":1}"#;
        let h = chain_hash(&GENESIS_HEX, 7, event);
        let mut d = Sha256::new();
        d.update(format!("{GENESIS}\n7\n{{\"a\":1}}").as_bytes());
        let want: String = d.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex_str(&h), want);
    }

    #[test]
    fn record_line_has_the_documented_shape_and_is_json() {
        let (l, hash) = line(1, &GENESIS_HEX, br#"{"event":"x","n":[1,2]}"#);
        let text = std::str::from_utf8(&l).unwrap();
        assert!(text.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["seq"], 1);
        assert_eq!(v["prev"], GENESIS);
        assert_eq!(v["hash"], hex_str(&hash));
        assert_eq!(v["event"]["n"][1], 2);
        let mut check = ChainCheck::new(Vec::new());
        assert!(check.check(&at(&l[..l.len() - 1], 1, 1)).is_ok());
        assert_eq!(check.chain.next_seq, 2);
        assert_eq!(check.chain.prev, hash);
    }

    #[test]
    fn sink_records_are_recognised_by_their_exact_prefix() {
        let body = CheckpointBody {
            event: "checkpoint",
            time_unix_nano: 1,
            seq: 2,
            head: GENESIS.into(),
            adopted: 0,
            key_id: "k".into(),
            mac: GENESIS.into(),
        };
        let bytes = serde_json::to_vec(&body).unwrap();
        assert!(
            bytes.starts_with(CHECKPOINT_PREFIX),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        assert!(is_sink_record(&bytes));
        assert!(!is_sink_record(br#"{"seq":1,"event":"checkpoint"}"#));
        let decl = RetentionBody {
            event: "retention_applied",
            time_unix_nano: 1,
            evaluated_at: 1,
            first_seq: 1,
            last_seq: 2,
            head: GENESIS.into(),
            first_segment: 1,
            last_segment: 1,
            policy: PolicyField::Write(BTreeMap::from([("default".into(), Some(1.5))])),
        };
        let bytes = serde_json::to_vec(&decl).unwrap();
        assert!(bytes.starts_with(RETENTION_PREFIX));
        let back: RetentionBody<'_> = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.last_seq, 2);
    }

    #[test]
    fn frame_parser_rejects_near_misses_without_panicking() {
        let (l, _) = line(12, &GENESIS_HEX, br#"{"k":"v"}"#);
        let l = &l[..l.len() - 1];
        for cut in 0..l.len() {
            assert!(parse_frame(&l[..cut]).is_err() || !parseable(&l[..cut]));
        }
        assert!(parse_seq(b"{\"seq\":012,").is_none());
        assert!(parse_seq(b"{\"seq\":99999999999999999999,").is_none());
        assert_eq!(parse_seq(b"{\"seq\":0,").map(|s| s.0), Some(0));
        let upper =
            String::from_utf8(l.to_vec())
                .unwrap()
                .replacen("\"prev\":\"0", "\"prev\":\"A", 1);
        assert!(parse_frame(upper.as_bytes()).is_err());
    }

    /// The byte-at-a-time scan `too_deep` replaced, as the reference.
    fn too_deep_reference(text: &[u8], max: usize) -> Option<usize> {
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        for (i, &b) in text.iter().enumerate() {
            if in_string {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    depth += 1;
                    if depth > max {
                        return Some(i);
                    }
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        None
    }

    proptest::proptest! {
        #[test]
        fn too_deep_agrees_with_the_byte_at_a_time_scan(
            text in proptest::collection::vec(
                proptest::sample::select(vec![b'"', b'\\', b'{', b'}', b'[', b']', b'a', b':', b',']),
                0..64,
            ),
            max in 0usize..6,
        ) {
            proptest::prop_assert_eq!(too_deep(&text, max), too_deep_reference(&text, max));
        }
    }

    #[test]
    fn event_depth_is_bounded_outside_strings_only() {
        let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let ok = format!(r#"{{"a":{}}}"#, nest(MAX_EVENT_DEPTH - 1));
        assert!(event_is_json(ok.as_bytes()).is_ok());
        let deep = format!(r#"{{"a":{}}}"#, nest(MAX_EVENT_DEPTH));
        let e = event_is_json(deep.as_bytes()).unwrap_err();
        assert!(e.contains("nested deeper"), "{e}");
        let quoted = format!(r#"{{"a":"{}\"{}"}}"#, "[".repeat(200), "{".repeat(200));
        assert!(event_is_json(quoted.as_bytes()).is_ok());
    }
}
