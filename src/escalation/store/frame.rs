//! The byte layout of the file store: one framed, chained and MAC'd record per line, and the
//! two-slot head file.
//!
//! Hand-written on purpose: the chain hash covers the *exact* record bytes in the file, and
//! `serde_json` (built without `raw_value`) cannot hand back the span of a nested value. The
//! frame is therefore fixed: the writer produces exactly
//!
//! ```text
//! {"seq":N,"prev":"<64 hex>","hash":"<64 hex>","key":"<key id>","mac":"<64 hex>","record":<record JSON>}
//! ```
//!
//! and the reader accepts exactly that (lower-case hex, no whitespace, no other field order):
//! any other byte sequence is damage. The record JSON is parsed by `serde_json`.

use sha2::{Digest, Sha256};

use super::key::{StoreKey, valid_id};

/// `prev` of the first record: 64 zeros.
pub(super) const GENESIS: [u8; 64] = [b'0'; 64];
/// Domain separation of the chain hash.
const CHAIN_DOMAIN: &[u8] = b"tollgate-approval-chain-v1\n";
/// Domain separation of a record's MAC.
pub(super) const RECORD_MAC: &[u8] = b"tollgate-approval-record-v1\n";
/// Domain separation of a head slot's MAC, one per slot position: a record MAC never passes as
/// a head MAC, and a slot copied to the other position does not authenticate there (otherwise
/// copying the older slot over the newer one would make the head vouch for a shorter file).
pub(super) const HEAD_MAC: [&[u8]; 2] = [
    b"tollgate-approval-head-v2\nslot 0\n",
    b"tollgate-approval-head-v2\nslot 1\n",
];
/// Bytes per head slot (two slots per head file).
pub(super) const SLOT: usize = 256;

/// `SHA-256(domain || prev || "\n" || seq || "\n" || record)` as lower-case hex.
pub(super) fn chain_hash(prev: &[u8; 64], seq: u64, record: &[u8]) -> [u8; 64] {
    let mut h = Sha256::new();
    h.update(CHAIN_DOMAIN);
    h.update(prev);
    h.update(b"\n");
    h.update(seq.to_string().as_bytes());
    h.update(b"\n");
    h.update(record);
    hex64(&h.finalize())
}

/// SHA-256 of `bytes` as lower-case hex.
pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    crate::hex::encode(&Sha256::digest(bytes))
}

fn hex64(digest: &[u8]) -> [u8; 64] {
    let mut out = Vec::with_capacity(64);
    crate::hex::encode_into(&mut out, digest);
    let mut hex = [0u8; 64];
    hex.copy_from_slice(&out);
    hex
}

/// One line, framed, with its newline.
pub(super) fn encode_line(
    seq: u64,
    prev: &[u8; 64],
    hash: &[u8; 64],
    key: &StoreKey,
    record: &[u8],
) -> Vec<u8> {
    let mac = key.sign(RECORD_MAC, seq, hash);
    let mut line = Vec::with_capacity(record.len() + 300);
    line.extend_from_slice(b"{\"seq\":");
    line.extend_from_slice(seq.to_string().as_bytes());
    line.extend_from_slice(b",\"prev\":\"");
    line.extend_from_slice(prev);
    line.extend_from_slice(b"\",\"hash\":\"");
    line.extend_from_slice(hash);
    line.extend_from_slice(b"\",\"key\":\"");
    line.extend_from_slice(key.id().as_bytes());
    line.extend_from_slice(b"\",\"mac\":\"");
    line.extend_from_slice(&mac);
    line.extend_from_slice(b"\",\"record\":");
    line.extend_from_slice(record);
    line.extend_from_slice(b"}\n");
    line
}

/// A decoded line (without its newline); nothing verified yet but the layout.
#[derive(Debug)]
pub(super) struct Frame<'a> {
    pub(super) seq: u64,
    pub(super) prev: [u8; 64],
    pub(super) hash: [u8; 64],
    pub(super) key: &'a str,
    pub(super) mac: &'a [u8],
    pub(super) record: &'a [u8],
}

/// A strict left-to-right reader of the fixed layout.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn lit(&mut self, s: &[u8], what: &str) -> Result<(), String> {
        match self.0.strip_prefix(s) {
            Some(rest) => {
                self.0 = rest;
                Ok(())
            }
            None => Err(format!("expected {what}")),
        }
    }

    fn seq(&mut self) -> Result<u64, String> {
        let n = self.0.iter().take_while(|b| b.is_ascii_digit()).count();
        let digits = &self.0[..n];
        if n == 0 || n > 20 || (digits[0] == b'0' && n > 1) {
            return Err("expected a sequence number".into());
        }
        let seq = std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or("sequence number out of range")?;
        self.0 = &self.0[n..];
        Ok(seq)
    }

    fn hex64(&mut self, what: &str) -> Result<[u8; 64], String> {
        match self.0.get(..64) {
            Some(h) if h.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
                let mut out = [0u8; 64];
                out.copy_from_slice(h);
                self.0 = &self.0[64..];
                Ok(out)
            }
            _ => Err(format!("expected {what} as 64 lower-case hex digits")),
        }
    }

    fn key_id(&mut self) -> Result<&'a str, String> {
        let n = self.0.iter().take_while(|&&b| b != b'"').count();
        let id = std::str::from_utf8(&self.0[..n])
            .ok()
            .filter(|id| valid_id(id))
            .ok_or("expected a key id")?;
        self.0 = &self.0[n..];
        Ok(id)
    }
}

/// Decodes a line's frame.
pub(super) fn decode_line(line: &[u8]) -> Result<Frame<'_>, String> {
    let mut c = Cursor(line);
    c.lit(b"{\"seq\":", "the record frame `{\"seq\":`")?;
    let seq = c.seq()?;
    c.lit(b",\"prev\":\"", "`\"prev\"`")?;
    let prev = c.hex64("`prev`")?;
    c.lit(b"\",\"hash\":\"", "`\"hash\"`")?;
    let hash = c.hex64("`hash`")?;
    c.lit(b"\",\"key\":\"", "`\"key\"`")?;
    let key = c.key_id()?;
    c.lit(b"\",\"mac\":\"", "`\"mac\"`")?;
    let mac_start = c.0;
    c.hex64("`mac`")?;
    let mac = &mac_start[..64];
    c.lit(b"\",\"record\":", "`\"record\"`")?;
    let record =
        c.0.strip_suffix(b"}")
            .filter(|r| !r.is_empty())
            .ok_or("expected the record and the closing `}`")?;
    Ok(Frame {
        seq,
        prev,
        hash,
        key,
        mac,
        record,
    })
}

/// One head slot for position `pos` (0 or 1): `{"seq":N,"hash":"<64 hex>","key":"<id>","mac":"<64 hex>"}`,
/// padded with spaces to [`SLOT`] bytes, the last one a newline. The MAC covers the position.
pub(super) fn encode_slot(pos: usize, seq: u64, hash: &[u8; 64], key: &StoreKey) -> [u8; SLOT] {
    let mac = key.sign(HEAD_MAC[pos % 2], seq, hash);
    let mut text = Vec::with_capacity(SLOT);
    text.extend_from_slice(b"{\"seq\":");
    text.extend_from_slice(seq.to_string().as_bytes());
    text.extend_from_slice(b",\"hash\":\"");
    text.extend_from_slice(hash);
    text.extend_from_slice(b"\",\"key\":\"");
    text.extend_from_slice(key.id().as_bytes());
    text.extend_from_slice(b"\",\"mac\":\"");
    text.extend_from_slice(&mac);
    text.extend_from_slice(b"\"}");
    // At most 7 + 20 + 10 + 64 + 9 + 64 + 9 + 64 + 2 = 249 bytes: always fits.
    let mut slot = [b' '; SLOT];
    let n = text.len().min(SLOT - 1);
    slot[..n].copy_from_slice(&text[..n]);
    slot[SLOT - 1] = b'\n';
    slot
}

/// A head slot that verifies under one of `keys` at position `pos`: the seq and hash it vouches
/// for.
pub(super) fn decode_slot(
    pos: usize,
    bytes: &[u8],
    find: impl Fn(&str) -> Option<StoreKey>,
) -> Option<(u64, [u8; 64])> {
    let text = bytes.strip_suffix(b"\n")?;
    let end = text.iter().rposition(|&b| b != b' ')? + 1;
    let mut c = Cursor(&text[..end]);
    c.lit(b"{\"seq\":", "").ok()?;
    let seq = c.seq().ok()?;
    c.lit(b",\"hash\":\"", "").ok()?;
    let hash = c.hex64("").ok()?;
    c.lit(b"\",\"key\":\"", "").ok()?;
    let key = c.key_id().ok()?;
    c.lit(b"\",\"mac\":\"", "").ok()?;
    let mac = c.0.get(..64)?;
    c.hex64("").ok()?;
    c.lit(b"\"}", "").ok()?;
    if !c.0.is_empty() {
        return None;
    }
    let key = find(key)?;
    key.verify(HEAD_MAC[pos % 2], seq, &hash, mac)
        .then_some((seq, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> StoreKey {
        StoreKey::new("k1", vec![7; 32]).unwrap()
    }

    #[test]
    fn lines_round_trip_and_any_other_layout_is_refused() {
        let k = key();
        let rec = br#"{"record":"consumed","id":"ab","at_ms":1}"#;
        let hash = chain_hash(&GENESIS, 1, rec);
        let line = encode_line(1, &GENESIS, &hash, &k, rec);
        let body = line.strip_suffix(b"\n").unwrap();
        let f = decode_line(body).unwrap();
        assert_eq!(
            (f.seq, f.prev, f.hash, f.key, f.record),
            (1, GENESIS, hash, "k1", &rec[..])
        );
        assert!(k.verify(RECORD_MAC, 1, &f.hash, f.mac));
        assert!(!k.verify(HEAD_MAC[0], 1, &f.hash, f.mac));
        assert!(!k.verify(HEAD_MAC[1], 1, &f.hash, f.mac));
        let text = std::str::from_utf8(body).unwrap();
        for bad in [
            text.replacen("{\"seq\":1", "{\"seq\":01", 1),
            text.replacen("{\"seq\":1", "{ \"seq\":1", 1),
            text.replacen("\"prev\":\"0", "\"prev\":\"O", 1),
            text.replacen("\"key\":\"k1\"", "\"key\":\"k 1\"", 1),
            text.replacen("\"record\":{", "\"record\": {", 1)
                .replace("}}", "} }"),
            format!("{text} "),
            text.replacen("\"mac\":\"", "\"mac\":\"A", 1),
        ] {
            let parsed = decode_line(bad.as_bytes());
            let same = parsed
                .as_ref()
                .is_ok_and(|f| f.record == rec && k.verify(RECORD_MAC, f.seq, &f.hash, f.mac));
            assert!(!same, "{bad}");
        }
    }

    #[test]
    fn head_slots_verify_only_under_their_key() {
        let k = key();
        let other = StoreKey::new("k1", vec![8; 32]).unwrap();
        let slot = encode_slot(0, 42, &GENESIS, &k);
        assert_eq!(
            decode_slot(0, &slot, |_| Some(k.clone())),
            Some((42, GENESIS))
        );
        assert_eq!(decode_slot(0, &slot, |_| Some(other.clone())), None);
        assert_eq!(decode_slot(0, &slot, |_| None), None);
        let zero = encode_slot(1, 0, &GENESIS, &k);
        assert_eq!(
            decode_slot(1, &zero, |_| Some(k.clone())),
            Some((0, GENESIS))
        );
        let mut flipped = slot;
        flipped[8] ^= 1;
        assert_eq!(decode_slot(0, &flipped, |_| Some(k.clone())), None);
        assert_eq!(decode_slot(0, &[0u8; SLOT], |_| Some(k.clone())), None);
    }

    #[test]
    fn a_head_slot_authenticates_only_at_its_own_position() {
        let k = key();
        for pos in [0, 1] {
            let slot = encode_slot(pos, 7, &GENESIS, &k);
            assert_eq!(
                decode_slot(pos, &slot, |_| Some(k.clone())),
                Some((7, GENESIS))
            );
            assert_eq!(decode_slot(1 - pos, &slot, |_| Some(k.clone())), None);
        }
    }
}
